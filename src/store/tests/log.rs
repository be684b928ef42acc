//! The log of the conformance suite: appends, version guards, reads of events, sessions and instance rows.

use super::*;

pub(super) async fn appended_events_read_back_byte_identical(store: Arc<dyn Store>) {
    let session = unique("bytes");
    // Keys deliberately out of alphabetical order, nested, with awkward values.
    let kwargs = json!({
        "zulu": 1,
        "alpha": {"yankee": [3, 1, 2], "bravo": null, "é": "ünï\u{1F600}"},
        "mike": 1.5,
        "big": 9_007_199_254_740_993_u64,
        "quote": "a \"b\" \\ c\n",
    });
    let mut events = vec![fired(1, "page", kwargs), created(2, "task#0", 1)];
    events[0].at =
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    events[1].at = Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0).unwrap() + Duration::microseconds(1);
    append(&*store, &session, 0, &events).await.unwrap();

    let read = store.events(&uid(&session), 0, None).await.unwrap();
    assert_eq!(read, events);
    for (read, written) in read.iter().zip(&events) {
        assert_eq!(data_text(read), data_text(written));
        assert_eq!(read.at, written.at);
    }
    let EventPayload::TriggerFired { kwargs, .. } = &read[0].payload else {
        panic!("not a TriggerFired: {:?}", read[0]);
    };
    assert_eq!(
        kwargs.keys().collect::<Vec<_>>(),
        ["zulu", "alpha", "mike", "big", "quote"]
    );
    assert_eq!(
        kwargs["alpha"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["yankee", "bravo", "é"]
    );
    assert_eq!(read[1].caused_by, Some(1));
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 2);

    let listed = store
        .sessions(1, Some(&session[..session.len() - 1]))
        .await
        .unwrap();
    assert_eq!(listed[0].uid, session);
    assert_eq!(listed[0].version, 2);
    assert_eq!(listed[0].updated_at, events[1].at);
    assert!(store.session_uids().await.unwrap().contains(&session));
    store.ping().await.unwrap();
}

pub(super) async fn a_stale_first_append_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("first");
    let winner = [fired(1, "page", json!({"who": "winner"}))];
    append(&*store, &session, 0, &winner).await.unwrap();

    let task = unique("task");
    let queue = unique("q");
    let loser = [
        fired(1, "page", json!({"who": "loser"})),
        created(2, &format!("{task}#0"), 1),
    ];
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &loser,
            instances: vec![instance_row(
                &session,
                &format!("{task}#0"),
                &task,
                InstanceStatus::Scheduled,
                2,
            )],
            queue: vec![enqueue(&format!("{task}#0"), &queue, at(0))],
        })
        .await;
    assert_conflict(result, &session, 0);

    assert_eq!(store.events(&uid(&session), 0, None).await.unwrap(), winner);
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 1);
    assert_no_rows(&*store, &task, &queue).await;
}

pub(super) async fn a_stale_later_append_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("later");
    append(
        &*store,
        &session,
        0,
        &[fired(1, "page", json!({})), fired(2, "page", json!({}))],
    )
    .await
    .unwrap();
    let winner = [fired(3, "page", json!({"who": "winner"}))];
    append(&*store, &session, 2, &winner).await.unwrap();

    let queue = unique("q");
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[
                fired(3, "page", json!({"who": "loser"})),
                created(4, "t#0", 3),
            ],
            instances: vec![instance_row(
                &session,
                "t#0",
                &queue,
                InstanceStatus::Scheduled,
                4,
            )],
            queue: vec![enqueue("t#0", &queue, at(0))],
        })
        .await;
    assert_conflict(result, &session, 2);

    // A writer that is behind by more than one is refused too.
    assert_conflict(
        append(&*store, &session, 1, &[fired(2, "page", json!({}))]).await,
        &session,
        1,
    );
    // So is one that claims to be ahead.
    assert_conflict(
        append(&*store, &session, 7, &[fired(8, "page", json!({}))]).await,
        &session,
        7,
    );

    assert_eq!(store.version(&uid(&session)).await.unwrap(), 3);
    assert_eq!(store.events(&uid(&session), 2, None).await.unwrap(), winner);
    assert_no_rows(&*store, &queue, &queue).await;
}

pub(super) async fn of_two_concurrent_commits_at_one_version_exactly_one_wins(
    store: Arc<dyn Store>,
) {
    let session = unique("race");
    let mut version = 0;
    for round in 0..10 {
        let seq = version + 1;
        let a = [fired(seq, "page", json!({"writer": "a", "round": round}))];
        let b = [fired(seq, "page", json!({"writer": "b", "round": round}))];
        let (ra, rb) = tokio::join!(
            append(&*store, &session, version, &a),
            append(&*store, &session, version, &b)
        );
        let stored = store.events(&uid(&session), version, None).await.unwrap();
        match (ra, rb) {
            (Ok(()), Err(StoreError::Conflict { .. })) => assert_eq!(stored, a),
            (Err(StoreError::Conflict { .. }), Ok(())) => assert_eq!(stored, b),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        }
        version = seq;
        assert_eq!(store.version(&uid(&session)).await.unwrap(), version);
    }
}

pub(super) async fn concurrent_writers_retrying_on_conflict_lose_no_append(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 5;
    let session = unique("writers");
    let writers = (0..WRITERS).map(|writer| {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let mut conflicts = 0;
            for append_no in 0..APPENDS {
                loop {
                    // Re-read the version, as the engine re-decides on fresh state.
                    let version = store.version(&uid(&session)).await.unwrap();
                    let event = fired(
                        version + 1,
                        "page",
                        json!({"writer": writer, "n": append_no}),
                    );
                    match append(&*store, &session, version, &[event]).await {
                        Ok(()) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("writer {writer}: {other}"),
                    }
                }
            }
            conflicts
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    let events = store.events(&uid(&session), 0, None).await.unwrap();
    let total = (WRITERS * APPENDS) as u64;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(store.version(&uid(&session)).await.unwrap(), total);
    for writer in 0..WRITERS {
        let mine: Vec<_> = events
            .iter()
            .filter_map(|event| match &event.payload {
                EventPayload::TriggerFired { kwargs, .. } if kwargs["writer"] == json!(writer) => {
                    Some(kwargs["n"].clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(mine, (0..APPENDS).map(|n| json!(n)).collect::<Vec<_>>());
    }
}

pub(super) async fn events_are_paged_by_seq(store: Arc<dyn Store>) {
    let session = unique("paged");
    let events: Vec<_> = (1..=7)
        .map(|seq| fired(seq, "page", json!({"n": seq})))
        .collect();
    append(&*store, &session, 0, &events[..3]).await.unwrap();
    append(&*store, &session, 3, &events[3..]).await.unwrap();

    assert_eq!(store.events(&uid(&session), 0, None).await.unwrap(), events);
    assert_eq!(
        store.events(&uid(&session), 2, Some(3)).await.unwrap(),
        events[2..5]
    );
    assert_eq!(
        store.events(&uid(&session), 5, Some(100)).await.unwrap(),
        events[5..]
    );
    assert_eq!(store.events(&uid(&session), 0, Some(0)).await.unwrap(), []);
    assert_eq!(store.events(&uid(&session), 7, None).await.unwrap(), []);
    assert_eq!(
        store
            .events(&uid(&session), 0, Some(u64::MAX))
            .await
            .unwrap(),
        events
    );
}

pub(super) async fn events_are_found_by_seq_and_by_instance(store: Arc<dyn Store>) {
    let session = unique("lookup");
    let events = two_pages(6);
    append(&*store, &session, 0, &events).await.unwrap();

    let by_seq = store
        .events_by_seq(&uid(&session), &[6, 1, 4, 4, 99])
        .await
        .unwrap();
    assert_eq!(
        by_seq,
        [events[0].clone(), events[3].clone(), events[5].clone()]
    );
    assert_eq!(store.events_by_seq(&uid(&session), &[]).await.unwrap(), []);
    let many: Vec<u64> = (1..=2500).collect();
    assert_eq!(
        store.events_by_seq(&uid(&session), &many).await.unwrap(),
        events
    );

    let of_a = store
        .instance_events(&uid(&session), &instance("a#0"))
        .await
        .unwrap();
    assert_eq!(
        of_a,
        [events[1].clone(), events[2].clone(), events[5].clone()]
    );
    assert_eq!(
        store
            .instance_events(&uid(&session), &instance("b#0"))
            .await
            .unwrap(),
        [events[3].clone()]
    );
    assert_eq!(
        store
            .instance_events(&uid(&session), &instance("c#0"))
            .await
            .unwrap(),
        []
    );
    // Another session's instance of the same name is not mixed in.
    assert_eq!(
        store
            .instance_events(&uid(&unique("other")), &instance("a#0"))
            .await
            .unwrap(),
        []
    );
}

pub(super) async fn an_unused_session_is_empty(store: Arc<dyn Store>) {
    let session = unique("unused");
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 0);
    assert_eq!(store.events(&uid(&session), 0, None).await.unwrap(), []);
    assert_eq!(
        store.events_by_seq(&uid(&session), &[1, 2]).await.unwrap(),
        []
    );
    assert!(store.snapshot(&uid(&session)).await.unwrap().is_none());
    assert!(!store.session_uids().await.unwrap().contains(&session));
    // A commit with nothing in it writes nothing.
    append(&*store, &session, 0, &[]).await.unwrap();
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 0);
}

pub(super) async fn sessions_are_listed_by_uid_in_pages(store: Arc<dyn Store>) {
    let prefix = unique("sessions");
    // Every uid that sorts between `prefix` and these starts with `prefix`.
    let uids: Vec<String> = ["c", "a", "e", "b", "d"]
        .iter()
        .map(|s| format!("{prefix}/{s}"))
        .collect();
    for (i, uid) in uids.iter().enumerate() {
        let seq = i as u64 + 1;
        let events: Vec<_> = (1..=seq).map(|s| fired(s, "page", json!({}))).collect();
        append(&*store, uid, 0, &events).await.unwrap();
    }
    let mut sorted = uids.clone();
    sorted.sort();

    let page1 = store.sessions(2, Some(&prefix)).await.unwrap();
    assert_eq!(
        page1.iter().map(|s| &s.uid).collect::<Vec<_>>(),
        [&sorted[0], &sorted[1]]
    );
    let page2 = store.sessions(2, Some(&page1[1].uid)).await.unwrap();
    assert_eq!(
        page2.iter().map(|s| &s.uid).collect::<Vec<_>>(),
        [&sorted[2], &sorted[3]]
    );
    let page3 = store.sessions(1, Some(&page2[1].uid)).await.unwrap();
    assert_eq!(page3[0].uid, sorted[4]);

    let a = &page1[0];
    assert_eq!((a.version, a.updated_at), (2, at(2)));
    let e = &page3[0];
    assert_eq!((e.version, e.updated_at), (3, at(3)));

    let all = store.sessions(u32::MAX, None).await.unwrap();
    let ours: Vec<_> = all
        .iter()
        .filter(|s| s.uid.starts_with(&prefix))
        .map(|s| &s.uid)
        .collect();
    assert_eq!(ours, sorted.iter().collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].uid < w[1].uid));
    assert!(store.sessions(0, None).await.unwrap().is_empty());

    let uids_listed = store.session_uids().await.unwrap();
    assert!(sorted.iter().all(|uid| uids_listed.contains(uid)));
    assert!(uids_listed.windows(2).all(|w| w[0] < w[1]));
}

pub(super) async fn instance_rows_are_upserted(store: Arc<dyn Store>) {
    let session = unique("upsert");
    let task = unique("task");
    let name = format!("{task}#0");
    let mut row = instance_row(&session, &name, &task, InstanceStatus::Unstarted, 2);
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, &name, 1)],
            instances: vec![row.clone()],
            queue: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.instances(of_task(&task, 10)).await.unwrap(),
        [row.clone()]
    );

    let stale = row.clone();
    row.status = InstanceStatus::Scheduled;
    row.updated_at = at(99);
    row.body = json!({"second": true, "first": false}).to_string();
    store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[applied(3, &name, 1)],
            // The same row twice in one commit: the last one wins.
            instances: vec![stale, row.clone()],
            queue: Vec::new(),
        })
        .await
        .unwrap();
    let listed = store.instances(of_task(&task, 10)).await.unwrap();
    assert_eq!(listed, [row]);
    assert_eq!(listed[0].body, r#"{"second":true,"first":false}"#);
}

pub(super) async fn instances_are_listed_across_sessions_filtered_and_paged(store: Arc<dyn Store>) {
    let task = unique("task");
    let other_task = unique("other");
    let prefix = unique("s");
    let s1 = format!("{prefix}/1");
    let s2 = format!("{prefix}/2");
    use InstanceStatus::*;
    // Session 2 is written first: the listing orders by session, not by time.
    let rows2 = vec![
        instance_row(&s2, &format!("{task}#1"), &task, Failed, 5),
        instance_row(&s2, &format!("{task}#0"), &task, Finished, 2),
        instance_row(&s2, &format!("{other_task}#0"), &other_task, Failed, 3),
    ];
    let rows1 = vec![
        instance_row(&s1, &format!("{task}#0"), &task, Scheduled, 4),
        instance_row(&s1, &format!("{task}#1"), &task, Failed, 9),
        instance_row(&s1, &format!("{task}#2"), &task, Running, 12),
    ];
    for (session, rows) in [(&s2, rows2.clone()), (&s1, rows1.clone())] {
        store
            .commit(Commit {
                session,
                expected_version: 0,
                events: &[fired(1, "page", json!({}))],
                instances: rows,
                queue: Vec::new(),
            })
            .await
            .unwrap();
    }
    let in_order = vec![
        rows1[0].clone(),
        rows1[1].clone(),
        rows1[2].clone(),
        rows2[1].clone(),
        rows2[0].clone(),
    ];

    assert_eq!(
        store.instances(of_task(&task, 100)).await.unwrap(),
        in_order
    );

    // Paged, with the cursor of the last row returned.
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(s, n)| (s.as_str(), n.as_str()));
        let page = store
            .instances(InstanceQuery {
                task: Some(&task),
                first: 2,
                after: cursor,
                ..InstanceQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap();
        after = Some((last.session.clone(), last.name.clone()));
        paged.extend(page);
    }
    assert_eq!(paged, in_order);

    // Filtered by status (any of).
    let failed = store
        .instances(InstanceQuery {
            statuses: &[Failed],
            task: Some(&task),
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed, [rows1[1].clone(), rows2[0].clone()]);
    let active = store
        .instances(InstanceQuery {
            statuses: &[Scheduled, Running],
            task: Some(&task),
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(active, [rows1[0].clone(), rows1[2].clone()]);
    let failed_after = store
        .instances(InstanceQuery {
            statuses: &[Failed],
            task: Some(&task),
            first: 100,
            after: Some((&s1, &rows1[1].name)),
        })
        .await
        .unwrap();
    assert_eq!(failed_after, [rows2[0].clone()]);
    assert_eq!(
        store
            .instances(InstanceQuery {
                statuses: &[Skipped],
                task: Some(&task),
                first: 100,
                ..InstanceQuery::default()
            })
            .await
            .unwrap(),
        []
    );

    // Without a task filter, our rows still come in order among everyone's.
    let everything = store
        .instances(InstanceQuery {
            first: 100,
            after: Some((&s1, &rows1[0].name)),
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let ours: Vec<_> = everything
        .into_iter()
        .filter(|row| row.session.starts_with(&prefix))
        .collect();
    assert_eq!(ours[..2], [rows1[1].clone(), rows1[2].clone()]);
    assert_eq!(
        store
            .instances(InstanceQuery {
                statuses: &[Failed],
                task: Some(&other_task),
                first: 100,
                ..InstanceQuery::default()
            })
            .await
            .unwrap(),
        [rows2[2].clone()]
    );
}
