//! Idempotency keys, runners and handlers.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::json;
use std::collections::BTreeSet;
use triggers::domain::{InstanceStatus, Runner};
use triggers::engine::{Job, Outcome};
use triggers::store::InstanceQuery;

async fn repeating_an_idempotency_key_returns_the_first_result_and_appends_nothing(db: TestDb) {
    // Given a fire made with a key.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": [], "andEvery": "page", "run": PASSTHRU}}),
        )
        .await;
    let first = fire_keyed(&engine, S, "page", json!({"n": 1}), Some("page-1")).await;
    settle(&engine).await;
    let version = state(&engine, S).await.version();

    // When the same key is used again (even with other kwargs).
    let again = fire_keyed(&engine, S, "page", json!({"n": 2}), Some("page-1")).await;
    settle(&engine).await;

    // Then the first result comes back, marked duplicate, and nothing was written.
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.scheduled, first.scheduled);
    assert_eq!(again.scheduled, ["t#0"]);
    assert_eq!(again.abandoned, first.abandoned);
    let event = again.event.expect("a duplicate still names its event");
    assert_eq!(event.seq, first.seq);
    assert_eq!(event.payload, first.event.unwrap().payload);
    let st = state(&engine, S).await;
    assert_eq!(st.version(), version);
    assert_eq!(names_of(&st, "t"), ["t#0"]);

    // And the key is per session; a new key fires again.
    let elsewhere = fire_keyed(&engine, "other-session", "page", json!({}), Some("page-1")).await;
    assert!(!elsewhere.duplicate);
    let fresh = fire_keyed(&engine, S, "page", json!({"n": 2}), Some("page-2")).await;
    assert!(!fresh.duplicate);
    assert_eq!(fresh.scheduled, ["t#1"]);
    settle(&engine).await;
}

async fn a_task_whose_handler_is_not_registered_waits_in_the_worker_queue(db: TestDb) {
    // Given tasks for external workers (implicitly and explicitly) and one inline.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_external": {"after": ["a"], "run": EXTERNAL},
            "t_gpu": {"after": ["a"], "run": PASSTHRU, "using": "worker:gpu"},
            "t_worker": {"after": ["a"], "run": PASSTHRU, "using": "worker"},
            "t_inline": {"after": ["a"], "run": PASSTHRU, "using": "inline"},
        }),
    )
    .await;

    // When their trigger fires.
    let fired_a = fire_and_settle(&engine, S, "a", json!({})).await;

    // Then the worker tasks stay scheduled in their queues; the inline one ran.
    assert_eq!(fired_a.scheduled.len(), 4);
    let st = state(&engine, S).await;
    let ext = instance(&st, "t_external#0");
    assert_eq!(ext.status, InstanceStatus::Scheduled);
    assert_eq!(ext.runner, Some(Runner::Worker("default".into())));
    let gpu = instance(&st, "t_gpu#0");
    assert_eq!(gpu.status, InstanceStatus::Scheduled);
    assert_eq!(gpu.runner, Some(Runner::Worker("gpu".into())));
    assert_eq!(
        instance(&st, "t_worker#0").runner,
        Some(Runner::Worker("default".into()))
    );
    assert_eq!(status(&st, "t_worker#0"), InstanceStatus::Scheduled);
    assert_eq!(status(&st, "t_inline#0"), InstanceStatus::Finished);
    let queued = engine
        .instances(InstanceQuery {
            statuses: &[InstanceStatus::Scheduled],
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let names: BTreeSet<&str> = queued.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["t_external#0", "t_gpu#0", "t_worker#0"])
    );
}

async fn a_job_returning_something_other_than_an_object_fails_its_instance(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.ReturnsAList", |_job: Job| async move {
                Outcome::finished(json!([1, 2]))
            })
        })
        .await;
    let s = Scenario::on(engine)
        .given(json!({"t": {"after": ["a"], "run": "app.ReturnsAList"}, "t_next": {"after": ["t"], "run": DEVNULL}}))
        .when_fired(&["a"])
        .await;

    let st = s.state().await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Failed);
    let info = inst.metadata["exceptionInfo"].as_str().unwrap_or_default();
    assert!(info.contains("object"), "a clear error: {info}");
    assert!(names_of(&st, "t_next").is_empty());
}

async fn a_handler_that_panics_fails_its_instance(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.Panics", |_job: Job| async move {
                if true {
                    panic!("boom");
                }
                Outcome::finished(json!({}))
            })
        })
        .await;
    let s = Scenario::on(engine)
        .given(json!({"t": {"after": ["a"], "run": "app.Panics"}}))
        .when_fired(&["a"])
        .await;

    let st = s.state().await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Failed);
    assert!(instance(&st, "t#0").log_level() >= 40);
}

async fn a_custom_handler_receives_the_job_it_runs(db: TestDb) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let engine = db
        .engine_with(move |b| {
            b.handler("app.Record", move |job: Job| {
                let tx = tx.clone();
                async move {
                    tx.send(job).ok();
                    Outcome::finished(json!({"ok": true}))
                }
            })
        })
        .await;
    Scenario::on(engine)
        .given(json!({"t": {"after": ["a"], "run": "app.Record", "maxRetries": 4, "withParams": {"p": {"x": 1}}}}))
        .when_fired_with("a", json!({"n": 1}))
        .await;

    let job = rx.try_recv().expect("the handler ran");
    assert_eq!(job.session, S);
    assert_eq!(job.instance, "t#0");
    assert_eq!(job.task, "t");
    assert_eq!(job.run, "app.Record");
    assert_eq!(job.kwargs, obj(json!({"a": {"n": 1}, "p": {"x": 1}})));
    assert_eq!(job.depth, 0);
    assert_eq!(job.max_retries, 4);
    assert!(rx.try_recv().is_err(), "it ran once");
}

on_both_backends!(
    repeating_an_idempotency_key_returns_the_first_result_and_appends_nothing,
    a_task_whose_handler_is_not_registered_waits_in_the_worker_queue,
    a_job_returning_something_other_than_an_object_fails_its_instance,
    a_handler_that_panics_fails_its_instance,
    a_custom_handler_receives_the_job_it_runs,
);
