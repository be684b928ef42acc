//! The queue of the conformance suite: leases, claims, expiry, and commits that hold or lose them.

use super::*;

pub(super) async fn a_lease_is_taken_renewed_and_refused_to_others(store: Arc<dyn Store>) {
    let session = unique("lease");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    queue_ops(&*store, &session, vec![enqueue("t#0", &queue, at(100))])
        .await
        .unwrap();

    // Not before it is available.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &token, at(500), at(99), None)],
        )
        .await,
    );
    // Nor when there is no row.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#9", &token, at(500), at(200), None)],
        )
        .await,
    );

    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &token, at(500), at(100), None)],
    )
    .await
    .unwrap();
    let held = store.lease(&token).await.unwrap().expect("leased row");
    assert_eq!(
        held,
        QueueEntry {
            session: session.clone(),
            instance: "t#0".into(),
            queue: queue.clone(),
            run: "job.Run".into(),
            available_at: at(100),
            lease_owner: Some(format!("owner-of-{token}")),
            lease_token: Some(token.clone()),
            lease_expires_at: Some(at(500)),
        }
    );

    // Someone else, while it is held: refused, with or without a (wrong) token.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(900), at(499), None)],
        )
        .await,
    );
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(900), at(499), Some(&rival))],
        )
        .await,
    );
    assert!(store.lease(&rival).await.unwrap().is_none());

    // Once expired, the token is refused even though nobody re-claimed the row.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &token, at(1500), at(600), Some(&token))],
        )
        .await,
    );
    // In time, the holder renews under its token.
    let renewed = unique("renewed");
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &renewed, at(1500), at(450), Some(&token))],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    let held = store.lease(&renewed).await.unwrap().unwrap();
    assert_eq!(held.lease_expires_at, Some(at(1500)));
    // Renewing under the same token works too.
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &renewed, at(2500), at(700), Some(&renewed))],
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .lease(&renewed)
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at,
        Some(at(2500))
    );
    assert!(store
        .claimable(&queue, at(2499), 10)
        .await
        .unwrap()
        .is_empty());
}

pub(super) async fn a_lost_lease_rolls_back_the_whole_commit(store: Arc<dyn Store>) {
    let session = unique("rollback");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, "t#0", 1)],
            instances: vec![instance_row(
                &session,
                "t#0",
                &queue,
                InstanceStatus::Scheduled,
                2,
            )],
            queue: vec![
                enqueue("t#0", &queue, at(0)),
                lease("t#0", &token, at(100), at(0), None),
            ],
        })
        .await
        .unwrap();
    let before = store.instances(of_task(&queue, 10)).await.unwrap();

    let mut running = instance_row(&session, "t#0", &queue, InstanceStatus::Running, 2);
    running.body = json!({"changed": true}).to_string();
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[applied(3, "t#0", 1)],
            instances: vec![running],
            queue: vec![
                enqueue("t#1", &queue, at(0)),
                lease("t#0", &rival, at(200), at(50), None),
            ],
        })
        .await;
    assert_lease_lost(result);

    assert_eq!(store.version(&uid(&session)).await.unwrap(), 2);
    assert_eq!(store.events(&uid(&session), 2, None).await.unwrap(), []);
    assert_eq!(store.instances(of_task(&queue, 10)).await.unwrap(), before);
    assert!(store.lease(&rival).await.unwrap().is_none());
    assert_eq!(store.lease(&token).await.unwrap().unwrap().instance, "t#0");
    assert!(store
        .claimable(&queue, at(50), 10)
        .await
        .unwrap()
        .is_empty());
}

/// Many sessions committing at once (SQLite groups them into shared
/// transactions): a stale append or a lost lease fails alone, with its own
/// reason and nothing of it written, and every other commit lands whole.
pub(super) async fn concurrent_commits_to_many_sessions_each_get_their_own_answer(
    store: Arc<dyn Store>,
) {
    const SESSIONS: usize = 24;
    let sessions: Vec<String> = (0..SESSIONS)
        .map(|i| unique(&format!("group{i}")))
        .collect();
    let queue = unique("q");
    for session in &sessions {
        append(&*store, session, 0, &[fired(1, "page", json!({}))])
            .await
            .unwrap();
    }
    let commits = sessions.iter().enumerate().map(|(i, session)| {
        let store = store.clone();
        let session = session.clone();
        let queue = queue.clone();
        async move {
            let (expected, ops) = match i % 3 {
                0 => (1, vec![enqueue("t#0", &queue, at(0))]),
                // Stale: the session is at version 1.
                1 => (0, vec![enqueue("t#0", &queue, at(0))]),
                // A lease on a row that does not exist.
                _ => (
                    1,
                    vec![lease("t#9", &unique("token"), at(100), at(0), None)],
                ),
            };
            let events = [created(2, "t#0", 1), applied(3, "t#0", 1)];
            let result = store
                .commit(Commit {
                    session: &session,
                    expected_version: expected,
                    events: &events,
                    instances: vec![instance_row(
                        &session,
                        "t#0",
                        "t",
                        InstanceStatus::Scheduled,
                        2,
                    )],
                    queue: ops,
                })
                .await;
            (i, session, result)
        }
    });
    for (i, session, result) in futures::future::join_all(commits).await {
        let version = store.version(&uid(&session)).await.unwrap();
        let rows = store
            .instances(InstanceQuery {
                first: 1000,
                ..InstanceQuery::default()
            })
            .await
            .unwrap();
        let has_row = rows.iter().any(|row| row.session == session);
        match i % 3 {
            0 => {
                result.unwrap();
                assert_eq!(version, 3, "{session}");
                assert!(has_row);
                assert_eq!(
                    store.events(&uid(&session), 1, None).await.unwrap().len(),
                    2
                );
            }
            1 => {
                assert_conflict(result, &session, 0);
                assert_eq!(version, 1, "{session}");
                assert!(!has_row);
            }
            _ => {
                assert_lease_lost(result);
                assert_eq!(version, 1, "{session}");
                assert!(!has_row);
            }
        }
    }
    let claimable = store.claimable(&queue, at(1), 100).await.unwrap();
    assert_eq!(
        claimable.len(),
        SESSIONS / 3,
        "one queue row per landed commit"
    );
}

/// `lock_session`: the holder reads what others committed, decides and commits;
/// a writer of the same session meanwhile waits, then fails its guard.
pub(super) async fn a_locked_session_makes_other_writers_wait_then_lose(store: Arc<dyn Store>) {
    let session = unique("locked");
    append(&*store, &session, 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();

    let mut locked = store.lock_session(&uid(&session)).await.unwrap();
    let rival = {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(
            async move { append(&*store, &session, 1, &[fired(2, "rival", json!({}))]).await },
        )
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!rival.is_finished(), "the rival waits for the lock");

    let seen = locked.events_after(0).await.unwrap();
    assert_eq!(seen.len(), 1);
    locked
        .commit(Commit {
            session: &session,
            expected_version: 1,
            events: &[fired(2, "holder", json!({}))],
            instances: Vec::new(),
            queue: Vec::new(),
        })
        .await
        .unwrap();
    assert_conflict(rival.await.unwrap(), &session, 1);
    let events = store.events(&uid(&session), 0, None).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].payload.trigger(), Some("holder"));

    // Dropping a lock rolls back and lets others through.
    let dropped = store.lock_session(&uid(&session)).await.unwrap();
    drop(dropped);
    append(&*store, &session, 2, &[fired(3, "after", json!({}))])
        .await
        .unwrap();
}

pub(super) async fn an_expired_lease_can_be_taken_over(store: Arc<dyn Store>) {
    let session = unique("takeover");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("t#0", &queue, at(0)),
            lease("t#0", &token, at(100), at(0), None),
        ],
    )
    .await
    .unwrap();
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(300), at(99), None)],
        )
        .await,
    );
    // At the instant it expires, it is up for grabs.
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &rival, at(300), at(100), None)],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    // The old holder's token no longer renews.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease(
                "t#0",
                &unique("late"),
                at(400),
                at(150),
                Some(&token),
            )],
        )
        .await,
    );
    assert_eq!(
        store.lease(&rival).await.unwrap().unwrap().lease_expires_at,
        Some(at(300))
    );
}

pub(super) async fn enqueueing_again_drops_the_lease_and_removing_deletes_the_row(
    store: Arc<dyn Store>,
) {
    let session = unique("requeue");
    let queue = unique("q");
    let other_queue = unique("q2");
    let token = unique("token");
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("t#0", &queue, at(0)),
            lease("t#0", &token, at(1000), at(0), None),
        ],
    )
    .await
    .unwrap();
    // A retry with a cooldown: back in the queue, unleased, later, maybe elsewhere.
    queue_ops(
        &*store,
        &session,
        vec![enqueue("t#0", &other_queue, at(50))],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    assert!(store
        .claimable(&queue, at(60), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claimable(&other_queue, at(49), 10)
        .await
        .unwrap()
        .is_empty());
    let row = store.claimable(&other_queue, at(50), 10).await.unwrap();
    assert_eq!(
        row,
        [QueueEntry {
            session: session.clone(),
            instance: "t#0".into(),
            queue: other_queue.clone(),
            run: "job.Run".into(),
            available_at: at(50),
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
        }]
    );

    queue_ops(
        &*store,
        &session,
        vec![
            lease("t#0", &token, at(1000), at(60), None),
            QueueOp::Remove {
                instance: "t#0".into(),
            },
        ],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    assert!(store
        .claimable(&other_queue, at(5000), 10)
        .await
        .unwrap()
        .is_empty());
    // Removing what is not there is fine.
    queue_ops(
        &*store,
        &session,
        vec![QueueOp::Remove {
            instance: "t#0".into(),
        }],
    )
    .await
    .unwrap();
}

pub(super) async fn claimable_lists_available_unleased_or_expired_rows_oldest_first(
    store: Arc<dyn Store>,
) {
    let s1 = unique("claim-a");
    let s2 = unique("claim-b");
    let queue = unique("q");
    let elsewhere = unique("elsewhere");
    let (held, expired) = (unique("held"), unique("expired"));
    queue_ops(
        &*store,
        &s1,
        vec![
            enqueue("late#0", &queue, at(300)),
            enqueue("held#0", &queue, at(10)),
            enqueue("expired#0", &queue, at(20)),
            enqueue("other#0", &elsewhere, at(0)),
            lease("held#0", &held, at(1000), at(100), None),
            lease("expired#0", &expired, at(150), at(100), None),
        ],
    )
    .await
    .unwrap();
    queue_ops(
        &*store,
        &s2,
        vec![
            enqueue("b#0", &queue, at(20)),
            enqueue("a#0", &queue, at(5)),
        ],
    )
    .await
    .unwrap();

    let claimable = |now: i64, limit: u32| {
        let store = store.clone();
        let queue = queue.clone();
        async move {
            let rows = store.claimable(&queue, at(now), limit).await.unwrap();
            rows.into_iter()
                .map(|row| (row.session, row.instance))
                .collect::<Vec<_>>()
        }
    };
    let a = (s2.clone(), "a#0".to_owned());
    let b = (s2.clone(), "b#0".to_owned());
    let expired_row = (s1.clone(), "expired#0".to_owned());
    let late = (s1.clone(), "late#0".to_owned());
    // Rows available at the same time come by session, then instance.
    let mut at_20 = vec![b.clone(), expired_row];
    at_20.sort();

    assert_eq!(claimable(4, 10).await, []);
    // At 100 "expired" is still held, and "held" stays held throughout.
    assert_eq!(claimable(100, 10).await, [a.clone(), b]);
    assert_eq!(
        claimable(200, 10).await,
        [vec![a.clone()], at_20.clone()].concat()
    );
    assert_eq!(claimable(200, 2).await, [a.clone(), at_20[0].clone()]);
    assert_eq!(
        claimable(300, 10).await,
        [vec![a], at_20, vec![late]].concat()
    );

    let other = store.claimable(&elsewhere, at(0), 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].session.as_str(), other[0].instance.as_str()),
        (s1.as_str(), "other#0")
    );
}

pub(super) async fn expired_leases_lists_only_leases_that_ran_out(store: Arc<dyn Store>) {
    let session = unique("expired");
    let (q1, q2) = (unique("q1"), unique("q2"));
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("a#0", &q1, at(0)),
            enqueue("b#0", &q2, at(0)),
            enqueue("c#0", &q1, at(0)),
            enqueue("free#0", &q1, at(0)),
            lease("a#0", &a, at(200), at(0), None),
            lease("b#0", &b, at(100), at(0), None),
            lease("c#0", &c, at(900), at(0), None),
        ],
    )
    .await
    .unwrap();
    // Other tests share a PostgreSQL database: look at our rows only.
    let ours = |rows: Vec<QueueEntry>| -> Vec<String> {
        rows.into_iter()
            .filter(|row| row.session == session)
            .map(|row| row.instance)
            .collect()
    };
    assert_eq!(
        ours(store.expired_leases(at(99), 100_000).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ours(store.expired_leases(at(100), 100_000).await.unwrap()),
        ["b#0"]
    );
    assert_eq!(
        ours(store.expired_leases(at(500), 100_000).await.unwrap()),
        ["b#0", "a#0"]
    );
    let expired = store.expired_leases(at(500), 100_000).await.unwrap();
    let b_row = expired
        .iter()
        .find(|row| row.lease_token.as_deref() == Some(&b))
        .unwrap();
    assert_eq!(b_row.lease_expires_at, Some(at(100)));
    assert_eq!(b_row.queue, q2);

    // Leave nothing behind for other tests' sweeps.
    queue_ops(
        &*store,
        &session,
        ["a#0", "b#0", "c#0", "free#0"]
            .into_iter()
            .map(|instance| QueueOp::Remove {
                instance: instance.into(),
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        ours(store.expired_leases(at(10_000), 100_000).await.unwrap()),
        Vec::<String>::new()
    );
}
