//! `unless`: which instances an abandoning trigger reaches, and which it leaves alone.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::json;
use std::collections::BTreeSet;
use triggers::domain::InstanceStatus;
use triggers::testkit::names::{self, uid};

async fn an_unless_trigger_abandons_an_unstarted_instance(db: TestDb) {
    // Given an instance waiting for b, with an unless trigger.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": ["a", "b"], "unless": ["stop"], "run": PASSTHRU}}),
        )
        .await;
    fire(&engine, S, "a", json!({})).await;

    // When the unless trigger fires.
    let stopped = fire(&engine, S, "stop", json!({"why": "cancelled"})).await;

    // Then the instance is abandoned, and b no longer runs anything.
    assert_eq!(stopped.abandoned, ["t#0"]);
    assert!(stopped.scheduled.is_empty());
    let after_b = fire_and_settle(&engine, S, "b", json!({})).await;
    assert!(after_b.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0"]);
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Abandoned);
    assert_eq!(inst.abandon_state, BTreeSet::from(["stop".to_owned()]));
    assert!(inst.kwargs.contains_key("a"));
    assert!(st.unresolved_tasks().is_empty(), "abandoned is resolved");
}

async fn an_unless_trigger_fired_first_abandons_the_instance_it_creates(db: TestDb) {
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": ["a"], "unless": ["stop"], "run": PASSTHRU}}),
        )
        .await;

    let stopped = fire(&engine, S, "stop", json!({})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    assert_eq!(stopped.abandoned, ["t#0"]);
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [("t#0".to_owned(), InstanceStatus::Abandoned)]
    );
    let kinds_about: Vec<&str> = engine
        .instance_history(&uid(S), &names::instance("t#0"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.kind())
        .collect();
    assert_eq!(
        kinds_about,
        ["InstanceCreated", "TriggerApplied", "InstanceAbandoned"]
    );
}

async fn an_instance_is_abandoned_only_once_all_its_unless_triggers_fired(db: TestDb) {
    // Given two tasks with two unless triggers each.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_stopped": {"after": ["a", "b"], "unless": ["x", "y"], "run": PASSTHRU},
            "t_runs": {"after": ["a", "c"], "unless": ["x", "y"], "run": PASSTHRU},
        }),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;

    // When one unless trigger fires, nothing is abandoned.
    let x = fire(&engine, S, "x", json!({})).await;
    assert!(x.abandoned.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_stopped#0"), InstanceStatus::Unstarted);
    assert_eq!(
        instance(&st, "t_stopped#0").abandon_state,
        BTreeSet::from(["x".to_owned()])
    );

    // When t_runs completes before the second one fires, it runs; t_stopped is abandoned.
    fire_and_settle(&engine, S, "c", json!({})).await;
    let y = fire_and_settle(&engine, S, "y", json!({})).await;
    assert_eq!(y.abandoned, ["t_stopped#0"]);
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_stopped#0"), InstanceStatus::Abandoned);
    assert_eq!(status(&st, "t_runs#0"), InstanceStatus::Finished);
}

async fn an_and_every_task_abandons_every_later_instance_once_its_unless_fired(db: TestDb) {
    // Given an andEvery task with an unless trigger, that ran once.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": [], "andEvery": "page", "unless": ["closed"], "run": PASSTHRU}}),
        )
        .await;
    fire_and_settle(&engine, S, "page", json!({"n": 1})).await;

    // When the unless trigger fires, then more pages.
    let closed = fire(&engine, S, "closed", json!({})).await;
    let page2 = fire(&engine, S, "page", json!({"n": 2})).await;
    let page3 = fire(&engine, S, "page", json!({"n": 3})).await;
    settle(&engine).await;

    // Then the finished instance is untouched and each later one is abandoned at once.
    assert!(closed.abandoned.is_empty());
    assert_eq!(page2.abandoned, ["t#1"]);
    assert_eq!(page3.abandoned, ["t#2"]);
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Finished),
            ("t#1".to_owned(), InstanceStatus::Abandoned),
            ("t#2".to_owned(), InstanceStatus::Abandoned),
        ]
    );
    assert!(instance(&st, "t#0").abandon_state.is_empty());
    assert_eq!(instance(&st, "t#2").kwargs, obj(json!({"page": {"n": 3}})));
}

async fn an_unless_trigger_does_not_affect_an_instance_that_already_started(db: TestDb) {
    // Given one instance waiting in the worker queue and one finished inline.
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_queued": {"after": ["a"], "unless": ["stop"], "run": EXTERNAL},
            "t_done": {"after": ["a"], "unless": ["stop"], "run": PASSTHRU},
        }))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();

    // When the unless trigger fires.
    let stopped = fire_and_settle(engine, S, "stop", json!({})).await;

    // Then neither is affected, and no new instance is made.
    assert!(stopped.abandoned.is_empty() && stopped.scheduled.is_empty());
    let st = s.state().await;
    assert_eq!(status(&st, "t_queued#0"), InstanceStatus::Scheduled);
    assert_eq!(status(&st, "t_done#0"), InstanceStatus::Finished);
    assert!(instance(&st, "t_queued#0").abandon_state.is_empty());
    assert!(instance(&st, "t_done#0").abandon_state.is_empty());
    assert_eq!(st.instances().len(), 2);
}

async fn abandoning_wins_when_after_and_unless_complete_together(db: TestDb) {
    // Given a task whose last after trigger is also its unless trigger.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": ["a", "done"], "unless": ["done"], "run": PASSTHRU}}),
        )
        .await;
    fire(&engine, S, "a", json!({})).await;

    // When that trigger fires.
    let done = fire_and_settle(&engine, S, "done", json!({})).await;

    // Then the instance is abandoned, not scheduled.
    assert_eq!(done.abandoned, ["t#0"]);
    assert!(done.scheduled.is_empty());
    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Abandoned);
    assert!(inst.after_complete(st.task("t").unwrap()));
    let events = events(&engine, S).await;
    let done_kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.caused_by == Some(done.seq))
        .map(|e| e.payload.kind())
        .collect();
    assert_eq!(
        done_kinds,
        ["TriggerApplied", "TriggerApplied", "InstanceAbandoned"]
    );
    assert!(about(&events, "InstanceScheduled", "t#0").is_empty());
}

on_both_backends!(
    an_unless_trigger_abandons_an_unstarted_instance,
    an_unless_trigger_fired_first_abandons_the_instance_it_creates,
    an_instance_is_abandoned_only_once_all_its_unless_triggers_fired,
    an_and_every_task_abandons_every_later_instance_once_its_unless_fired,
    an_unless_trigger_does_not_affect_an_instance_that_already_started,
    abandoning_wins_when_after_and_unless_complete_together,
);
