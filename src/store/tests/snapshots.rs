//! Snapshots and rebuilds of the conformance suite, and decisions that enqueue and lease at once.

use super::*;

pub(super) async fn snapshots_round_trip_and_never_go_back(store: Arc<dyn Store>) {
    let session = unique("snap");
    assert!(store.snapshot(&uid(&session)).await.unwrap().is_none());
    let v5 = StoredSnapshot {
        version: 5,
        state: json!({"tasks": {"z": 1, "a": 2}, "version": 5}).to_string(),
    };
    store.save_snapshot(&uid(&session), &v5).await.unwrap();
    let read = store.snapshot(&uid(&session)).await.unwrap().unwrap();
    // Read back as written, key order included.
    assert_eq!((read.version, &read.state), (5, &v5.state));

    let v3 = StoredSnapshot {
        version: 3,
        state: json!({"old": true}).to_string(),
    };
    store.save_snapshot(&uid(&session), &v3).await.unwrap();
    assert_eq!(
        store
            .snapshot(&uid(&session))
            .await
            .unwrap()
            .unwrap()
            .version,
        5
    );

    let v9 = StoredSnapshot {
        version: 9,
        state: json!({"new": true}).to_string(),
    };
    store.save_snapshot(&uid(&session), &v9).await.unwrap();
    let read = store.snapshot(&uid(&session)).await.unwrap().unwrap();
    assert_eq!((read.version, read.state), (9, v9.state));
}

pub(super) async fn replacing_projections_keeps_an_existing_lease(store: Arc<dyn Store>) {
    let session = unique("rebuild");
    let queue = unique("q");
    let token = unique("token");
    let events = [
        fired(1, "page", json!({})),
        created(2, "a#0", 1),
        created(3, "b#0", 1),
    ];
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &events,
            instances: vec![
                // Stale: the rebuilt row differs in status and body.
                InstanceRow {
                    body: json!({"stale": true}).to_string(),
                    ..instance_row(&session, "a#0", &queue, InstanceStatus::Scheduled, 2)
                },
                instance_row(&session, "stray#0", &queue, InstanceStatus::Failed, 7),
            ],
            queue: vec![
                enqueue("a#0", &queue, at(0)),
                enqueue("stray#0", &queue, at(0)),
                lease("a#0", &token, at(1000), at(0), None),
            ],
        })
        .await
        .unwrap();
    store
        .save_snapshot(
            &uid(&session),
            &StoredSnapshot {
                version: 99,
                state: json!({"bogus": true}).to_string(),
            },
        )
        .await
        .unwrap();

    let rows = vec![
        instance_row(&session, "a#0", &queue, InstanceStatus::Running, 2),
        instance_row(&session, "b#0", &queue, InstanceStatus::Scheduled, 3),
    ];
    let rebuilt_queue = vec![
        QueueEntry {
            session: session.clone(),
            instance: "a#0".into(),
            queue: queue.clone(),
            run: "job.Run".into(),
            available_at: at(0),
            lease_owner: Some("from-the-log".into()),
            lease_token: None,
            lease_expires_at: Some(at(1000)),
        },
        QueueEntry {
            session: session.clone(),
            instance: "b#0".into(),
            queue: queue.clone(),
            run: "job.Other".into(),
            available_at: at(40),
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
        },
    ];
    store
        .replace_projections(&[Rebuilt {
            session: session.clone(),
            version: 3,
            updated_at: at(3),
            instances: rows.clone(),
            queue: rebuilt_queue.clone(),
            snapshot: StoredSnapshot {
                version: 3,
                state: json!({"rebuilt": true}).to_string(),
            },
        }])
        .await
        .unwrap();

    assert_eq!(store.instances(of_task(&queue, 10)).await.unwrap(), rows);
    let held = store
        .lease(&token)
        .await
        .unwrap()
        .expect("the lease survives");
    assert_eq!(held.instance, "a#0");
    assert_eq!(held.lease_owner, Some(format!("owner-of-{token}")));
    assert_eq!(held.lease_expires_at, Some(at(1000)));
    assert_eq!(
        store.claimable(&queue, at(999), 10).await.unwrap(),
        [rebuilt_queue[1].clone()]
    );
    let snapshot = store.snapshot(&uid(&session)).await.unwrap().unwrap();
    assert_eq!(
        (snapshot.version, snapshot.state),
        (3, json!({"rebuilt": true}).to_string())
    );
    let summary = store
        .sessions(1, Some(&session[..session.len() - 1]))
        .await
        .unwrap();
    assert_eq!(
        (
            summary[0].uid.as_str(),
            summary[0].version,
            summary[0].updated_at
        ),
        (session.as_str(), 3, at(3))
    );
    // The log is untouched and the session carries on from it.
    assert_eq!(store.events(&uid(&session), 0, None).await.unwrap(), events);
    append(&*store, &session, 3, &[fired(4, "page", json!({}))])
        .await
        .unwrap();

    // Rebuilding a session with no projections yet creates them.
    let fresh = unique("fresh");
    store
        .replace_projections(&[Rebuilt {
            session: fresh.clone(),
            version: 1,
            updated_at: at(1),
            instances: Vec::new(),
            queue: Vec::new(),
            snapshot: StoredSnapshot {
                version: 1,
                state: json!({}).to_string(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(store.version(&uid(&fresh)).await.unwrap(), 1);
}

pub(super) async fn session_logs_reads_many_logs_in_the_order_asked(store: Arc<dyn Store>) {
    let (a, b) = (unique("logs-a"), unique("logs-b"));
    let log_a = vec![
        fired(1, "x", json!({"n": 1})),
        fired(2, "y", json!({"n": 2})),
    ];
    let log_b = vec![fired(1, "z", json!({"n": 3}))];
    append(&*store, &a, 0, &log_a).await.unwrap();
    append(&*store, &b, 0, &log_b).await.unwrap();

    let asked = [b.clone(), unique("logs-none"), a.clone()];
    let logs = store.session_logs(&asked).await.unwrap();
    assert_eq!(logs, [log_b, Vec::new(), log_a]);
    assert!(store.session_logs(&[]).await.unwrap().is_empty());
}

pub(super) async fn replacing_projections_of_many_sessions_writes_each(store: Arc<dyn Store>) {
    let sessions: Vec<String> = (0..3).map(|n| unique(&format!("many-{n}"))).collect();
    let rebuilt: Vec<Rebuilt> = sessions
        .iter()
        .zip(1..)
        .map(|(session, version)| Rebuilt {
            session: session.clone(),
            version,
            updated_at: at(version as i64),
            instances: Vec::new(),
            queue: Vec::new(),
            snapshot: StoredSnapshot {
                version,
                state: json!({ "session": session }).to_string(),
            },
        })
        .collect();
    store.replace_projections(&rebuilt).await.unwrap();
    for (session, version) in sessions.iter().zip(1..) {
        assert_eq!(store.version(&uid(session)).await.unwrap(), version);
        let snapshot = store.snapshot(&uid(session)).await.unwrap().unwrap();
        assert_eq!(snapshot.state, json!({ "session": session }).to_string());
    }
}

/// What an inline start commits: events, the row enqueued and leased at once, and
/// another instance's row removed, in one decision (one statement on PostgreSQL).
pub(super) async fn a_decision_that_enqueues_and_leases_leaves_one_leased_row(
    store: Arc<dyn Store>,
) {
    let session = unique("start");
    let queue = unique("q-start");
    let token = unique("token");
    let events = [fired(1, "page", json!({})), created(2, "a#0", 1)];
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &events,
            instances: vec![instance_row(
                &session,
                "a#0",
                "a",
                InstanceStatus::Running,
                2,
            )],
            queue: vec![
                enqueue("a#0", &queue, at(1)),
                enqueue("b#0", &queue, at(1)),
                lease("a#0", &token, at(900), at(2), None),
                QueueOp::Remove {
                    instance: "b#0".to_owned(),
                },
            ],
        })
        .await
        .unwrap();
    let held = store.lease(&token).await.unwrap().expect("leased");
    assert_eq!(
        (
            held.instance.as_str(),
            held.lease_expires_at,
            held.available_at
        ),
        ("a#0", Some(at(900)), at(1))
    );
    assert_eq!(held.lease_owner, Some(format!("owner-of-{token}")));
    assert!(store.claimable(&queue, at(2), 10).await.unwrap().is_empty());
    assert_eq!(store.events(&uid(&session), 0, None).await.unwrap(), events);

    // Enqueued again by a later decision: the lease is dropped.
    store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[fired(3, "page", json!({}))],
            instances: Vec::new(),
            queue: vec![enqueue("a#0", &queue, at(3))],
        })
        .await
        .unwrap();
    assert_eq!(store.lease(&token).await.unwrap(), None);
    let claimable = store.claimable(&queue, at(3), 10).await.unwrap();
    assert_eq!(claimable.len(), 1);
    assert_eq!(claimable[0].instance, "a#0");
}

/// A lease that only the stored row can grant (a cooldown not over yet) fails
/// the whole decision, events included.
pub(super) async fn a_decision_whose_lease_fails_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("cooling");
    let queue = unique("q-cooling");
    let err = store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({}))],
            instances: Vec::new(),
            queue: vec![
                enqueue("a#0", &queue, at(50)),
                lease("a#0", &unique("token"), at(900), at(2), None),
            ],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 0);
    assert!(store
        .events(&uid(&session), 0, None)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claimable(&queue, at(60), 10)
        .await
        .unwrap()
        .is_empty());
}

/// What an outcome commits: events, the row removed, under the lease its holder
/// reports (one statement on PostgreSQL). An expired or foreign token refuses the
/// whole decision with `LeaseLost`; a stale version is a `Conflict` first.
pub(super) async fn an_outcome_reported_under_a_lost_lease_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("outcome");
    let queue = unique("q-outcome");
    let token = unique("token");
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, "t#0", 1)],
            instances: Vec::new(),
            queue: vec![
                enqueue("t#0", &queue, at(0)),
                lease("t#0", &token, at(100), at(0), None),
            ],
        })
        .await
        .unwrap();
    let report = |version: u64, now: DateTime<Utc>, under: &str| Commit {
        session: &session,
        expected_version: version,
        events: &[],
        instances: Vec::new(),
        queue: vec![
            lease("t#0", under, at(200), now, Some(under)),
            QueueOp::Remove {
                instance: "t#0".to_owned(),
            },
        ],
    };
    let events = [applied(3, "t#0", 1)];
    for (version, now, under, lost) in [
        (2, at(100), token.as_str(), true),  // expired
        (2, at(50), "someone-else", true),   // not the holder
        (1, at(100), token.as_str(), false), // stale and expired: stale first
    ] {
        let result = store
            .commit(Commit {
                events: &events,
                ..report(version, now, under)
            })
            .await;
        match result {
            Err(StoreError::LeaseLost { instance, .. }) if lost => assert_eq!(instance, "t#0"),
            Err(StoreError::Conflict { .. }) if !lost => {}
            other => panic!("version {version}, {under} at {now}: {other:?}"),
        }
        assert_eq!(store.version(&uid(&session)).await.unwrap(), 2);
        assert!(store.lease(&token).await.unwrap().is_some());
    }
    store
        .commit(Commit {
            events: &events,
            ..report(2, at(50), &token)
        })
        .await
        .unwrap();
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 3);
    assert_eq!(store.lease(&token).await.unwrap(), None);
}
