//! Hooks: user code called after commits, and the `FinalizeSession` recipe, which
//! fires `sessionFinalized` exactly once when every other task is resolved, so that
//! a task `after: ["sessionFinalized"]` can wrap the session up.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use triggers::domain::{InstanceName, InstanceStatus, SessionUid};
use triggers::engine::{FinalizeSession, FireResult, Hook};
use triggers::Engine;

use crate::scenario::Scenario;
use crate::support::*;

const FINALIZED: &str = "sessionFinalized";

async fn finalizing_engine(db: &TestDb) -> Engine {
    db.engine_with(|b| b.hook(FinalizeSession::default())).await
}

async fn finalized_count(engine: &Engine) -> usize {
    fired(&events(engine, S).await, FINALIZED).len()
}

/// Asserts that only the wrap-up task is unresolved and the session was
/// finalized once.
async fn assert_only_wrap_up_unresolved_and_finalized_once(s: &Scenario) {
    assert!(s
        .state()
        .await
        .unresolved_tasks()
        .iter()
        .all(|t| *t == "t_wrapUp"));
    assert_eq!(finalized_count(s.engine()).await, 1);
}

async fn the_session_is_finalized_once_every_other_task_is_resolved(db: TestDb) {
    // Given two tasks and a wrap-up task after sessionFinalized.
    let s = Scenario::on(finalizing_engine(&db).await).given(json!({
        "t_a": {"after": ["a"], "run": DEVNULL},
        "t_b": {"after": ["b"], "run": PASSTHRU},
        "t_wrapUp": {"after": [FINALIZED], "run": PASSTHRU},
    }));

    // When only one task has run, the session is not finalized.
    let s = s.when_fired(&["a"]).await;
    assert_eq!(finalized_count(s.engine()).await, 0);

    // When the other runs too.
    let s = s.when_fired(&["b"]).await;

    // Then sessionFinalized fired once and the wrap-up task ran.
    assert_eq!(finalized_count(s.engine()).await, 1);
    let st = s.state().await;
    assert_eq!(status(&st, "t_wrapUp#0"), InstanceStatus::Finished);
    assert!(st.unresolved_tasks().is_empty());

    // And later activity does not finalize it again.
    let s = s.when_fired(&["a", "b"]).await;
    assert_eq!(finalized_count(s.engine()).await, 1);
    assert_eq!(names_of(&*s.state().await, "t_wrapUp"), ["t_wrapUp#0"]);
}

async fn instances_finishing_together_finalize_the_session_once(db: TestDb) {
    // Given six tasks started by one trigger, finishing at about the same time.
    let engine = finalizing_engine(&db).await;
    let mut tasks = serde_json::Map::new();
    for i in 0..6 {
        tasks.insert(format!("t_{i}"), json!({"after": ["go"], "run": DEVNULL}));
    }
    tasks.insert(
        "t_wrapUp".into(),
        json!({"after": [FINALIZED], "run": DEVNULL}),
    );
    configure(&engine, S, serde_json::Value::Object(tasks)).await;

    fire_and_settle(&engine, S, "go", json!({})).await;

    assert_eq!(finalized_count(&engine).await, 1);
    assert_eq!(
        names_of(&*state(&engine, S).await, "t_wrapUp"),
        ["t_wrapUp#0"]
    );
}

async fn an_abandoned_task_counts_as_resolved_for_finalization(db: TestDb) {
    let s = Scenario::on(finalizing_engine(&db).await)
        .given(json!({
            "t_score": {"after": ["complete"], "unless": ["abandon"], "run": DEVNULL},
            "t_import": {"after": ["page"], "run": DEVNULL},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }))
        .when_fired(&["page"])
        .await;
    assert_eq!(
        finalized_count(s.engine()).await,
        0,
        "t_score has no instance yet"
    );
    let s = s.when_fired(&["abandon"]).await;

    assert_eq!(finalized_count(s.engine()).await, 1);
    s.then_statuses(&[("t_wrapUp#0", InstanceStatus::Finished)])
        .await;
}

async fn a_session_is_finalized_once_its_last_failure_is_skipped(db: TestDb) {
    // Given a session whose only unresolved task failed.
    let s = Scenario::on(finalizing_engine(&db).await)
        .given(json!({
            "t_ok": {"after": ["a"], "run": DEVNULL},
            "t_bad": {"after": ["a"], "run": FAILING},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .await;
    assert_eq!(
        finalized_count(s.engine()).await,
        0,
        "a failed task is unresolved"
    );

    // When an operator skips the failure (without cascade).
    s.when_skipped("t_bad#0", false, None).await;

    // Then every task is resolved, so the session is finalized.
    assert_only_wrap_up_unresolved_and_finalized_once(&s).await;
}

async fn a_session_is_finalized_once_its_last_failure_is_replayed_successfully(db: TestDb) {
    let s = Scenario::on(finalizing_engine(&db).await)
        .given(json!({
            "t_bad": {"after": ["a"], "run": FAILING},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .given(json!({"t_bad": {"after": ["a"], "run": DEVNULL}}))
        .await;

    s.when_replayed("t_bad#0", None).await;

    assert_eq!(finalized_count(s.engine()).await, 1);
    s.then_statuses(&[("t_wrapUp#0", InstanceStatus::Finished)])
        .await;
}

async fn a_session_without_tasks_is_never_finalized(db: TestDb) {
    let engine = finalizing_engine(&db).await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    assert_eq!(finalized_count(&engine).await, 0);
}

async fn a_session_is_finalized_once_an_operator_finishes_its_last_task(db: TestDb) {
    // Given a session waiting only on an external job.
    let s = Scenario::on(finalizing_engine(&db).await)
        .given(json!({
            "t_ok": {"after": ["a"], "run": DEVNULL},
            "t_external": {"after": ["a"], "run": EXTERNAL},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .await;
    assert_eq!(finalized_count(s.engine()).await, 0);

    // When an operator marks it finished (without cascade).
    s.when_marked("t_external#0", InstanceStatus::Finished)
        .await;

    // Then the session is finalized.
    assert_only_wrap_up_unresolved_and_finalized_once(&s).await;
}

async fn a_session_whose_last_task_skips_itself_is_finalized(db: TestDb) {
    let s = Scenario::on(finalizing_engine(&db).await)
        .given(json!({
            "t_skips": {"after": ["a"], "run": SELF_SKIPPING},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .await;

    s.then_statuses(&[("t_skips#0", InstanceStatus::Skipped)])
        .await;
    assert_eq!(finalized_count(s.engine()).await, 1);
}

async fn two_engines_finalize_a_session_once(db: TestDb) {
    // Given two engines with the recipe, each running one of the tasks.
    let first = finalizing_engine(&db).await;
    let second = finalizing_engine(&db).await;
    configure(
        &first,
        S,
        json!({
            "t_a": {"after": ["a"], "run": DEVNULL},
            "t_b": {"after": ["b"], "run": DEVNULL},
            "t_wrapUp": {"after": [FINALIZED], "run": DEVNULL},
        }),
    )
    .await;

    // When both tasks finish at about the same time, in different engines.
    let (x, y) = tokio::join!(
        fire(&first, S, "a", json!({})),
        fire(&second, S, "b", json!({}))
    );
    assert_eq!((x.scheduled.len(), y.scheduled.len()), (1, 1));
    settle(&first).await;
    settle(&second).await;
    let st = wait_for(&first, S, "the wrap-up task to finish", |st| {
        st.instance("t_wrapUp#0")
            .is_some_and(|i| i.status == InstanceStatus::Finished)
    })
    .await;

    // Then it was finalized exactly once.
    assert_eq!(finalized_count(&first).await, 1);
    assert_eq!(names_of(&st, "t_wrapUp"), ["t_wrapUp#0"]);
}

/// Records what the engine told it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Hook for Recorder {
    async fn after_fire(&self, _engine: &Engine, session: &SessionUid, fire: &FireResult) {
        let line = format!(
            "{session} fire {} scheduled {:?}",
            fire.trigger, fire.scheduled
        );
        self.0.lock().unwrap().push(line);
    }

    async fn after_replay(
        &self,
        _engine: &Engine,
        session: &SessionUid,
        failed: &InstanceName,
        clone: &InstanceName,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{session} replay {failed} as {clone}"));
    }

    async fn after_skip(&self, _engine: &Engine, session: &SessionUid, instance: &InstanceName) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{session} skip {instance}"));
    }
}

async fn a_hook_hears_every_committed_fire_replay_and_skip(db: TestDb) {
    // Given a hook that records what it hears.
    let recorder = Recorder::default();
    let hook = recorder.clone();
    let s = Scenario::on(db.engine_with(move |b| b.hook(hook)).await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}, "t_self": {"after": ["b"], "run": SELF_SKIPPING}}));

    // When triggers fire, an instance is replayed, one skips itself, one is skipped.
    let s = s.when_fired(&["a"]).await;
    s.when_replayed("t#0", None).await;
    let s = s.when_fired(&["b"]).await;
    s.when_skipped("t#1", true, None).await;
    // A duplicate fire is not a commit.
    fire_keyed(s.engine(), S, "c", json!({}), Some("k")).await;
    fire_keyed(s.engine(), S, "c", json!({}), Some("k")).await;

    // Then it heard each once, including the cascade of the skip. (Within one
    // commit the order is fire, replay, skip; across commits runs race.)
    let mut heard = recorder.0.lock().unwrap().clone();
    heard.sort();
    let mut expected = vec![
        format!("{S} fire a scheduled [\"t#0\"]"),
        format!("{S} replay t#0 as t#1"),
        format!("{S} fire b scheduled [\"t_self#0\"]"),
        format!("{S} skip t_self#0"),
        format!("{S} fire t scheduled []"),
        format!("{S} skip t#1"),
        format!("{S} fire c scheduled []"),
    ];
    expected.sort();
    assert_eq!(heard, expected);
}

on_both_backends!(
    the_session_is_finalized_once_every_other_task_is_resolved,
    instances_finishing_together_finalize_the_session_once,
    an_abandoned_task_counts_as_resolved_for_finalization,
    a_session_is_finalized_once_its_last_failure_is_skipped,
    a_session_is_finalized_once_its_last_failure_is_replayed_successfully,
    a_session_without_tasks_is_never_finalized,
    a_session_is_finalized_once_an_operator_finishes_its_last_task,
    a_session_whose_last_task_skips_itself_is_finalized,
    two_engines_finalize_a_session_once,
    a_hook_hears_every_committed_fire_replay_and_skip,
);
