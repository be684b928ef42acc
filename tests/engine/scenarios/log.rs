//! The log: causes, `asOf`, `causedBy`, timestamps and reads.

use crate::scenario::Scenario;
use crate::support::*;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeSet;
use triggers::domain::{InstanceStatus, SessionState};
use triggers::store::InstanceQuery;
use triggers::testkit::names;
use triggers::Engine;

async fn causes_include_inherited_kwargs_pointing_at_the_original_fires(db: TestDb) {
    // Given an andEvery task whose later instances inherit an earlier fire.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t": {"after": ["settings"], "andEvery": "page", "unless": ["stop", "halt"], "run": EXTERNAL},
        }),
    )
    .await;
    let settings = fire(&engine, S, "settings", json!({"v": 1})).await;
    let page1 = fire(&engine, S, "page", json!({"n": 1})).await;
    let stop = fire(&engine, S, "stop", json!({})).await;
    let page2 = fire(&engine, S, "page", json!({"n": 2})).await;

    // Then each instance's causes are the TriggerFired events its kwargs and
    // abandon state came from, inherited ones included.
    let seqs = |events: Vec<triggers::domain::Event>| -> Vec<u64> {
        assert!(events.iter().all(|e| e.payload.kind() == "TriggerFired"));
        events.iter().map(|e| e.seq).collect()
    };
    assert_eq!(
        seqs(
            engine
                .instance_causes(&names::uid(S), &names::instance("t#0"))
                .await
                .unwrap()
        ),
        [settings.seq, page1.seq]
    );
    assert_eq!(
        seqs(
            engine
                .instance_causes(&names::uid(S), &names::instance("t#1"))
                .await
                .unwrap()
        ),
        [settings.seq, stop.seq, page2.seq]
    );
    let causes = engine
        .instance_causes(&names::uid(S), &names::instance("t#1"))
        .await
        .unwrap();
    let settings_event = causes
        .iter()
        .find(|e| e.payload.trigger() == Some("settings"))
        .unwrap();
    assert_eq!(settings_event.caused_by, None);
    assert_eq!(settings_event.payload, settings.event.unwrap().payload);
}

async fn as_of_a_version_is_the_fold_of_the_events_up_to_it(db: TestDb) {
    // Given a session with cascades, failures, abandons and manual changes.
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "unless": ["stop"], "run": PASSTHRU},
            "t_fail": {"after": ["a"], "run": FAILING},
        }))
        .await
        .when_fired_with("page", json!({"n": 1}))
        .when_fired(&["a", "stop"])
        .await
        .when_fired_with("page", json!({"n": 2}))
        .await;
    let engine = s.engine();
    engine
        .replay_failed_instance(&names::uid(S), &names::instance("t_fail#0"), None)
        .await
        .unwrap();
    settle(engine).await;
    engine
        .update_instance_metadata(
            &names::uid(S),
            &names::instance("t_a#0"),
            json!({"note": 1}),
        )
        .await
        .unwrap();

    // Then asOf(k) is exactly the fold of events 1..k, for every k.
    let events = events(engine, S).await;
    let live = s.state().await;
    assert_eq!(live.version(), events.len() as u64);
    for k in 0..=events.len() {
        let as_of = engine
            .session_as_of(&names::uid(S), k as u64)
            .await
            .unwrap();
        let folded = SessionState::fold(S, &events[..k]).unwrap();
        assert_eq!(as_of.version(), k as u64);
        assert!(as_of == folded, "asOf({k}) differs from the fold of 1..{k}");
    }
    // And at the latest version it is the live state.
    let latest = engine
        .session_as_of(&names::uid(S), live.version())
        .await
        .unwrap();
    assert!(latest == *live, "asOf(latest) differs from the live state");
}

async fn every_derived_event_names_the_event_that_caused_it(db: TestDb) {
    // Given a session with cascades, abandons, failures and self-retries.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "unless": ["stop"], "run": PASSTHRU},
            "t_retry": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 1},
            "t_fail": {"after": ["a"], "run": FAILING},
        }),
    )
    .await;
    let api_fires = [
        fire_and_settle(&engine, S, "page", json!({"n": 1}))
            .await
            .seq,
        fire_and_settle(&engine, S, "a", json!({})).await.seq,
        fire_and_settle(&engine, S, "stop", json!({})).await.seq,
        fire_and_settle(&engine, S, "page", json!({"n": 2}))
            .await
            .seq,
    ];

    let events = events(&engine, S).await;
    assert_gap_free(&events);
    for e in &events {
        let cause = e.caused_by.map(|c| event(&events, c));
        if let Some(cause) = cause {
            assert!(cause.seq < e.seq, "{e:?} is caused by a later event");
        }
        let cause_kind = cause.map(|c| c.payload.kind());
        match e.payload.kind() {
            "SessionConfigured" => assert_eq!(e.caused_by, None),
            "TriggerFired" if api_fires.contains(&e.seq) => {
                assert_eq!(e.caused_by, None, "an API fire has no cause")
            }
            "TriggerFired" => {
                // A cascade: caused by the InstanceFinished of an instance of that task.
                let cause = cause.expect("a cascade has a cause");
                assert_eq!(cause.payload.kind(), "InstanceFinished", "{e:?}");
                let finished = cause.payload.instance().unwrap();
                let task = state(&engine, S)
                    .await
                    .instance(finished)
                    .unwrap()
                    .task
                    .clone();
                assert_eq!(e.payload.trigger(), Some(task.as_str()));
            }
            "TriggerApplied" => {
                let cause = cause.expect("TriggerApplied has a cause");
                assert_eq!(cause.payload.kind(), "TriggerFired");
                assert_eq!(cause.payload.trigger(), e.payload.trigger());
            }
            "InstanceCreated" => assert!(
                matches!(cause_kind, Some("TriggerFired" | "InstanceReplayed")),
                "{e:?}"
            ),
            "InstanceScheduled" => assert!(
                matches!(cause_kind, Some("TriggerFired" | "InstanceCreated")),
                "{e:?}"
            ),
            "InstanceAbandoned" => assert_eq!(cause_kind, Some("TriggerFired"), "{e:?}"),
            "InstanceStarted" => {
                let cause = cause.expect("a start has a cause");
                assert_eq!(cause.payload.instance(), e.payload.instance());
            }
            "InstanceFinished" | "InstanceFailed" | "InstanceSkipped" => {
                let cause = cause.expect("an outcome has a cause");
                assert_eq!(cause.payload.kind(), "InstanceStarted", "{e:?}");
                assert_eq!(cause.payload.instance(), e.payload.instance());
            }
            "InstanceReplayed" => assert_eq!(cause_kind, Some("InstanceFailed"), "{e:?}"),
            other => panic!("unexpected event kind {other} in this scenario"),
        }
    }
    // The scenario did produce the interesting kinds.
    let seen: BTreeSet<&str> = kinds(&events).into_iter().collect();
    for kind in [
        "TriggerApplied",
        "InstanceCreated",
        "InstanceScheduled",
        "InstanceStarted",
        "InstanceFinished",
        "InstanceFailed",
        "InstanceReplayed",
        "InstanceAbandoned",
    ] {
        assert!(seen.contains(kind), "the scenario should produce {kind}");
    }
}

async fn a_simple_run_appends_the_expected_events(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": PASSTHRU}})).await;

    let fired_a = fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let events = events(&engine, S).await;
    assert_eq!(
        kinds(&events),
        [
            "SessionConfigured",
            "TriggerFired",
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished",
            "TriggerFired",
        ]
    );
    let causes: Vec<Option<u64>> = events.iter().map(|e| e.caused_by).collect();
    assert_eq!(
        causes,
        [
            None,
            None,
            Some(2),
            Some(2),
            Some(2),
            Some(5),
            Some(6),
            Some(7)
        ]
    );
    // The API fire's event is what the log holds.
    assert_eq!(fired_a.seq, 2);
    assert_eq!(fired_a.event.as_ref(), Some(&events[1]));
    assert_eq!(events[1].payload.trigger(), Some("a"));
    let data = events[1].payload.to_data();
    assert_eq!(data["kwargs"], json!({"n": 1}));
    assert_eq!(events[7].payload.trigger(), Some("t"));
    assert_eq!(
        events[7].payload.to_data()["kwargs"],
        passthru(json!({"a": {"n": 1}}))
    );
    // History: every event about the instance.
    let history = engine
        .instance_history(&names::uid(S), &names::instance("t#0"))
        .await
        .unwrap();
    assert_eq!(
        kinds(&history),
        [
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished",
        ]
    );
}

async fn status_changes_are_timestamped_in_metadata(db: TestDb) {
    let engine = db
        .engine_configured(S, json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}))
        .await;

    fire(&engine, S, "a", json!({})).await;
    fire_and_settle(&engine, S, "b", json!({})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    let stamps = inst.metadata["timestamps"].as_object().expect("timestamps");
    for key in [
        "created",
        "lastModified",
        "scheduled",
        "running",
        "finished",
    ] {
        assert!(
            stamps.contains_key(key),
            "timestamps lack {key}: {stamps:?}"
        );
    }
    let created = ts(inst, "created");
    let scheduled = ts(inst, "scheduled");
    let running = ts(inst, "running");
    let finished = ts(inst, "finished");
    assert!(created <= scheduled && scheduled <= running && running <= finished);
    assert_eq!(ts(inst, "lastModified"), finished);
    // They are the times of the events that changed the status.
    let events = events(&engine, S).await;
    assert_eq!(about(&events, "InstanceFinished", "t#0")[0].at, finished);
    assert_eq!(about(&events, "InstanceCreated", "t#0")[0].at, created);
    assert!(created < scheduled, "b fired after a");
}

async fn events_after_a_version_are_exclusive_and_limited_by_first(db: TestDb) {
    let engine = db.engine().await;
    for n in 0..6 {
        fire(&engine, S, "a", json!({"n": n})).await;
    }

    let page: Vec<u64> = engine
        .events(&names::uid(S), 2, Some(3))
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let rest: Vec<u64> = engine
        .events(&names::uid(S), 4, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();

    assert_eq!(page, [3, 4, 5]);
    assert_eq!(rest, [5, 6]);
    assert!(engine
        .events(&names::uid(S), 6, None)
        .await
        .unwrap()
        .is_empty());
}

async fn a_session_never_used_is_empty_and_readable(db: TestDb) {
    let engine = db.engine().await;
    fire(&engine, "someone-else", "a", json!({})).await;

    let st = state(&engine, "nobody").await;

    assert_eq!(st.version(), 0);
    assert_eq!(st.tasks().count(), 0);
    assert!(st.instances().is_empty());
    assert!(st.unresolved_tasks().is_empty());
    assert!(st.latest_kwargs().is_empty());
    assert!(st.instance("t#0").is_none() && st.task("t").is_none());
    assert!(events(&engine, "nobody").await.is_empty());
    assert!(engine
        .instance_history(&names::uid("nobody"), &names::instance("t#0"))
        .await
        .unwrap()
        .is_empty());
    assert!(
        engine
            .session_as_of(&names::uid("nobody"), 0)
            .await
            .unwrap()
            == SessionState::new("nobody")
    );
    let listed = session_uids(&engine).await;
    assert_eq!(
        listed,
        ["someone-else"],
        "reading a session does not create it"
    );
}

async fn sessions_and_instances_are_listed_across_sessions(db: TestDb) {
    let engine = db.engine().await;
    for uid in ["s:1", "s:2", "s:3"] {
        configure(
            &engine,
            uid,
            json!({"t_ok": {"after": ["a"], "run": DEVNULL}, "t_bad": {"after": ["a"], "run": FAILING}}),
        )
        .await;
        fire(&engine, uid, "a", json!({})).await;
    }
    settle(&engine).await;

    let first_two = engine.sessions(2, None).await.unwrap();
    let rest = engine.sessions(2, Some("s:2")).await.unwrap();
    let failed = engine
        .instances(InstanceQuery {
            statuses: &[InstanceStatus::Failed],
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let ok_page = engine
        .instances(InstanceQuery {
            task: Some("t_ok"),
            first: 2,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let ok_rest = engine
        .instances(InstanceQuery {
            task: Some("t_ok"),
            first: 2,
            after: Some(("s:2", "t_ok#0")),
            ..InstanceQuery::default()
        })
        .await
        .unwrap();

    let uids: Vec<&str> = first_two.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(uids, ["s:1", "s:2"]);
    let uids: Vec<&str> = rest.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(uids, ["s:3"]);
    let s1 = state(&engine, "s:1").await;
    assert_eq!(first_two[0].version, s1.version());
    let failed: Vec<(&str, &str)> = failed
        .iter()
        .map(|r| (r.session.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        failed,
        [("s:1", "t_bad#0"), ("s:2", "t_bad#0"), ("s:3", "t_bad#0")]
    );
    let ok: Vec<(&str, InstanceStatus)> = ok_page
        .iter()
        .chain(ok_rest.iter())
        .map(|r| (r.session.as_str(), r.status))
        .collect();
    assert_eq!(
        ok,
        [
            ("s:1", InstanceStatus::Finished),
            ("s:2", InstanceStatus::Finished),
            ("s:3", InstanceStatus::Finished)
        ]
    );
    // The listing holds the same instance as the session.
    let row = &ok_page[0];
    let inst: triggers::domain::Instance = serde_json::from_str(&row.body).unwrap();
    assert_eq!(&inst, instance(&s1, "t_ok#0"));
}

async fn rebuild_recomputes_the_same_state_from_the_log(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "run": PASSTHRU},
            "t_queued": {"after": ["a"], "run": EXTERNAL},
        }))
        .when_fired(&["a", "page"])
        .await;
    let engine = s.engine();
    configure(
        engine,
        "other",
        json!({"t": {"after": ["x"], "run": FAILING}}),
    )
    .await;
    fire_and_settle(engine, "other", "x", json!({})).await;
    let before = s.state().await;
    let listed_before = engine
        .instances(InstanceQuery {
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();

    let report = engine.rebuild().await.unwrap();

    assert_eq!(report.sessions, 2);
    assert_eq!(
        report.events,
        before.version() + state(engine, "other").await.version()
    );
    assert_eq!(report.instances, before.instances().len() + 1);
    assert_eq!(report.queued, 1, "only the worker instance is queued");
    engine.clear_cache();
    let after = s.state().await;
    assert!(*after == *before, "rebuild changed the state");
    let listed_after = engine
        .instances(InstanceQuery {
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let key = |rows: &[triggers::store::InstanceRow]| -> Vec<(String, String, InstanceStatus)> {
        rows.iter()
            .map(|r| (r.session.clone(), r.name.clone(), r.status))
            .collect()
    };
    assert_eq!(key(&listed_after), key(&listed_before));
}

async fn the_database_is_isolated_per_test(db: TestDb) {
    let engine = db.engine().await;
    fire(&engine, S, "a", json!({})).await;
    assert_eq!(
        state(&engine, S).await.version(),
        1,
        "the database starts empty"
    );
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            assert!(std::path::Path::new(path).exists());
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let schema = db.schema.clone().unwrap();
            let mut conn = sqlx::PgConnection::connect(db.admin_url.as_deref().unwrap())
                .await
                .unwrap();
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(&schema)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let tables: BTreeSet<String> = tables.into_iter().map(|(t,)| t).collect();
            assert!(
                tables.contains("_sqlx_migrations") && tables.len() > 1,
                "migrations and tables land in the test schema {schema}: {tables:?}"
            );
        }
    }
}

async fn a_repeated_idempotency_key_answers_with_the_first_fire_whatever_is_fired(db: TestDb) {
    // Given a keyed fire that abandoned an instance.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": ["a", "b"], "unless": ["stop"], "run": PASSTHRU}}),
        )
        .await;
    fire(&engine, S, "a", json!({})).await;
    let first = fire_keyed(&engine, S, "stop", json!({"why": "user"}), Some("cancel-1")).await;
    assert_eq!(first.abandoned, ["t#0"]);
    let version = state(&engine, S).await.version();

    // When the key is used again, for another trigger.
    let again = fire_keyed(&engine, S, "b", json!({}), Some("cancel-1")).await;

    // Then the answer is the first fire's, consistently, and nothing was written.
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.abandoned, ["t#0"]);
    assert_eq!(
        again.event.as_ref().and_then(|e| e.payload.trigger()),
        Some("stop")
    );
    assert_eq!(
        again.trigger, "stop",
        "FireResult.trigger must name the trigger of the event it returns"
    );
    assert_eq!(state(&engine, S).await.version(), version);
    assert!(state(&engine, S).await.latest_kwargs().get("b").is_none());
}

async fn kwargs_round_trip_through_the_log_exactly(db: TestDb) {
    // Given kwargs with awkward values.
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": PASSTHRU}})).await;
    let kwargs = json!({
        "nul": "a\u{0}b",
        "unicode": "Grüße, 世界 🎉",
        "quotes": "it's \"quoted\" \\ back\\slashed",
        "big": u64::MAX,
        "small": i64::MIN,
        "float": 0.1,
        "exp": 1.5e300,
        "bools": [true, false, null],
        "empty": {},
        "nested": {"deeper": {"deepest": [[], [{}]]}},
        "": "empty key"
    });

    // When it is fired, run, and read back from the log alone.
    fire_and_settle(&engine, S, "a", kwargs.clone()).await;
    engine.clear_cache();
    let st = state(&engine, S).await;

    // Then every value is what was fired.
    assert_eq!(st.latest_kwargs()["a"], kwargs);
    assert_eq!(result(instance(&st, "t#0")), passthru(json!({"a": kwargs})));
    let events = events(&engine, S).await;
    assert_eq!(fired(&events, "a")[0].payload.to_data()["kwargs"], kwargs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_engine_runs_a_session_end_to_end() {
    // Given an engine on a private in-memory SQLite database.
    let engine = Engine::builder("sqlite::memory:")
        .options(test_options())
        .open()
        .await
        .unwrap();
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "run": PASSTHRU},
        }),
    )
    .await;

    // When triggers fire, concurrently with reads.
    let reader = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                engine.session(&names::uid(S)).await.unwrap();
                engine.events(&names::uid(S), 0, None).await.unwrap();
            }
        })
    };
    fire(&engine, S, "a", json!({})).await;
    for n in 0..5 {
        fire(&engine, S, "page", json!({"n": n})).await;
    }
    settle(&engine).await;
    reader.await.unwrap();

    // Then everything ran, and the log explains it.
    let st = state(&engine, S).await;
    assert_eq!(st.instances().len(), 6);
    assert!(st
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Finished));
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    assert!(SessionState::fold(S, &events).unwrap() == *st);
}

async fn every_status_reached_is_timestamped(db: TestDb) {
    // Given instances that fail, get replayed, skipped and abandoned.
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_fail": {"after": ["a"], "run": FAILING},
            "t_skip": {"after": ["a"], "run": FAILING},
            "t_gone": {"after": ["never"], "unless": ["a"], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    engine
        .replay_failed_instance(&names::uid(S), &names::instance("t_fail#0"), None)
        .await
        .unwrap();
    engine
        .skip_failed_instance(&names::uid(S), &names::instance("t_skip#0"), false, None)
        .await
        .unwrap();
    settle(engine).await;

    // Then each status it reached has a timestamp, and lastModified is the latest.
    let st = s.state().await;
    let expectations = [
        (
            "t_fail#0",
            &["created", "scheduled", "running", "failed", "replayed"][..],
        ),
        (
            "t_skip#0",
            &["created", "scheduled", "running", "failed", "skipped"][..],
        ),
        ("t_gone#0", &["created", "abandoned"][..]),
        (
            "t_fail#1",
            &["created", "scheduled", "running", "failed"][..],
        ),
    ];
    for (name, keys) in expectations {
        let inst = instance(&st, name);
        let stamps: Vec<DateTime<Utc>> = keys.iter().map(|k| ts(inst, k)).collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "{name}: {keys:?} are not in order: {stamps:?}"
        );
        assert_eq!(ts(inst, "lastModified"), *stamps.last().unwrap(), "{name}");
    }
}

on_both_backends!(
    a_repeated_idempotency_key_answers_with_the_first_fire_whatever_is_fired,
    kwargs_round_trip_through_the_log_exactly,
    causes_include_inherited_kwargs_pointing_at_the_original_fires,
    as_of_a_version_is_the_fold_of_the_events_up_to_it,
    every_derived_event_names_the_event_that_caused_it,
    a_simple_run_appends_the_expected_events,
    status_changes_are_timestamped_in_metadata,
    every_status_reached_is_timestamped,
    events_after_a_version_are_exclusive_and_limited_by_first,
    a_session_never_used_is_empty_and_readable,
    sessions_and_instances_are_listed_across_sessions,
    rebuild_recomputes_the_same_state_from_the_log,
    the_database_is_isolated_per_test,
);
