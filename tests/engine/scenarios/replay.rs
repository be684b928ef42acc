//! Replay and skip of failed instances, and jobs that skip or retry themselves.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::json;
use std::collections::BTreeSet;
use triggers::domain::InstanceStatus;
use triggers::engine::{Job, Outcome};
use triggers::testkit::names::{self, uid};

async fn a_failing_job_fails_its_instance_with_its_exception(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}, "t_next": {"after": ["t"], "run": DEVNULL}}))
        .when_fired_with("a", json!({"n": 1}))
        .await;
    let engine = s.engine();

    let st = s.state().await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Failed);
    assert_eq!(
        inst.metadata["exceptionType"],
        json!("triggers.testing.Failure")
    );
    assert!(inst.metadata["exceptionInfo"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(inst.metadata["exceptionContext"].is_object());
    assert_eq!(inst.log_level(), 40);
    assert!(inst.can_replay() && inst.can_skip());
    // A failure does not cascade.
    assert!(names_of(&st, "t_next").is_empty());
    assert!(fired(&events(engine, S).await, "t").is_empty());
}

async fn replaying_a_failed_instance_runs_a_clone_with_the_same_kwargs(db: TestDb) {
    // Given a failed instance.
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}}))
        .await
        .when_fired_with("a", json!({"n": 1}))
        .await;
    let engine = s.engine();

    // When it is replayed.
    let clone = s.when_replayed("t#0", None).await;

    // Then a clone t#1 holds the same kwargs, points at its parent, and ran.
    assert_eq!(clone.name, "t#1");
    assert_eq!(clone.parent.as_deref(), Some("t#0"));
    assert_eq!(clone.depth, 1);
    assert_eq!(clone.metadata["parent"], json!("t#0"));
    assert_eq!(clone.metadata["depth"], json!(1));
    assert_eq!(clone.kwargs, obj(json!({"a": {"n": 1}})));
    let st = s.state().await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Replayed);
    assert_eq!(
        status(&st, "t#1"),
        InstanceStatus::Failed,
        "Failing fails again"
    );
    assert_eq!(
        instance(&st, "t#1").metadata["actualKwargs"],
        json!({"a": {"n": 1}})
    );
    // Only the clone's error still needs attention.
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t#1"]);
    // The replay is one API decision: Replayed -> Created -> Scheduled.
    let events = events(engine, S).await;
    let replayed = about(&events, "InstanceReplayed", "t#0")[0];
    assert_eq!(replayed.caused_by, None);
    let created = about(&events, "InstanceCreated", "t#1")[0];
    assert_eq!(created.caused_by, Some(replayed.seq));
    let scheduled = about(&events, "InstanceScheduled", "t#1")[0];
    assert_eq!(scheduled.caused_by, Some(created.seq));
    // The clone's kwargs still point at the original firing.
    let causes = engine
        .instance_causes(&uid(S), &names::instance("t#1"))
        .await
        .unwrap();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].payload.trigger(), Some("a"));
}

async fn a_replayed_clone_can_fail_and_be_replayed_again(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}}))
        .when_fired(&["a"])
        .await;

    s.when_replayed("t#0", None).await;
    let second = s.when_replayed("t#1", None).await;

    assert_eq!(second.name, "t#2");
    assert_eq!(second.parent.as_deref(), Some("t#1"));
    assert_eq!(second.depth, 2);
    s.then_summary(&[
        ("t#0", InstanceStatus::Replayed),
        ("t#1", InstanceStatus::Replayed),
        ("t#2", InstanceStatus::Failed),
    ])
    .await;
}

async fn replay_uses_the_tasks_current_configuration(db: TestDb) {
    // Given a failed instance, and a task reconfigured since.
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}}))
        .await
        .when_fired_with("a", json!({"n": 1}))
        .given(json!({"t": {"after": ["a"], "run": PASSTHRU, "withParams": {"extra": {"k": 1}}}}))
        .await;

    // When it is replayed.
    s.when_replayed("t#0", None).await;

    // Then the clone ran the new handler with the new params.
    let st = s.state().await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Replayed);
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(
        result(clone),
        passthru(json!({"a": {"n": 1}, "extra": {"k": 1}}))
    );
    assert_eq!(
        fired(&events(s.engine(), S).await, "t").len(),
        1,
        "the clone cascades"
    );
}

async fn replaying_with_replacement_kwargs_replaces_them_whole(db: TestDb) {
    // Given a failed instance that held a and b, and a fixed handler.
    let engine = db
        .engine_configured(S, json!({"t": {"after": ["a", "b"], "run": FAILING}}))
        .await;
    fire(&engine, S, "a", json!({"n": 1})).await;
    fire_and_settle(&engine, S, "b", json!({"m": 2})).await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}),
    )
    .await;

    // When it is replayed with replacement kwargs lacking b.
    let s = Scenario::on(engine);
    let clone = s.when_replayed("t#0", Some(json!({"a": {"n": 99}}))).await;

    // Then the clone holds exactly the replacement, and is scheduled anyway.
    assert_eq!(clone.kwargs, obj(json!({"a": {"n": 99}})));
    let st = s.state().await;
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(result(clone), passthru(json!({"a": {"n": 99}})));
    assert_eq!(
        instance(&st, "t#0").kwargs,
        obj(json!({"a": {"n": 1}, "b": {"m": 2}})),
        "the failed instance keeps its kwargs"
    );
}

async fn a_replay_keeps_the_abandon_state(db: TestDb) {
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": ["a"], "unless": ["x", "y"], "run": FAILING}}),
        )
        .await;
    fire(&engine, S, "x", json!({})).await;
    let s = Scenario::on(engine).when_fired(&["a"]).await;
    s.then_statuses(&[("t#0", InstanceStatus::Failed)]).await;

    let clone = s.when_replayed("t#0", None).await;

    assert_eq!(clone.abandon_state, BTreeSet::from(["x".to_owned()]));
}

/// `t` failed on `a`, with `t_next` (a pass-through) after it.
async fn failed_with_a_task_downstream(db: &TestDb) -> Scenario {
    Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}, "t_next": {"after": ["t"], "run": PASSTHRU}}))
        .when_fired(&["a"])
        .await
}

async fn skipping_a_failed_instance_without_cascade_resolves_it_quietly(db: TestDb) {
    // Given a failed instance with a task downstream.
    let s = failed_with_a_task_downstream(&db).await;

    // When it is skipped without cascade.
    let skipped = s.when_skipped("t#0", false, None).await;

    // Then it is skipped and nothing downstream happens.
    assert_eq!(skipped.status, InstanceStatus::Skipped);
    assert_eq!(skipped.metadata["cascade"], json!(false));
    assert_eq!(skipped.metadata["result"], json!({}));
    let st = s.state().await;
    assert!(names_of(&st, "t_next").is_empty());
    assert!(fired(&events(s.engine(), S).await, "t").is_empty());
    assert!(st.instances_with_unresolved_logs().next().is_none());
    assert_eq!(st.unresolved_tasks(), ["t_next"]);
}

async fn skipping_a_failed_instance_with_cascade_fires_the_task_with_the_result(db: TestDb) {
    let s = failed_with_a_task_downstream(&db).await;

    let skipped = s.when_skipped("t#0", true, Some(json!({"rows": 0}))).await;

    assert_eq!(skipped.metadata["cascade"], json!(true));
    assert_eq!(skipped.metadata["result"], json!({"rows": 0}));
    let st = s.state().await;
    assert_eq!(
        result(instance(&st, "t_next#0")),
        passthru(json!({"t": {"rows": 0}}))
    );
    let events = events(s.engine(), S).await;
    let skip_event = about(&events, "InstanceSkipped", "t#0")[0];
    assert_eq!(skip_event.caused_by, None);
    assert_eq!(fired(&events, "t")[0].caused_by, Some(skip_event.seq));
}

async fn a_job_can_skip_itself(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t": {"after": ["a"], "run": SELF_SKIPPING, "withParams": {"p": {"q": 1}}},
            "t_next": {"after": ["t"], "run": PASSTHRU},
        }))
        .when_fired_with("a", json!({"n": 1}))
        .await;

    let st = s.state().await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Skipped);
    assert_eq!(
        inst.metadata["kwargs"],
        json!({"a": {"n": 1}, "p": {"q": 1}})
    );
    assert!(
        names_of(&st, "t_next").is_empty(),
        "a self-skip does not cascade"
    );
    assert!(inst.is_resolved());
}

async fn a_self_retrying_job_retries_up_to_the_default_max_retries(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": SELF_RETRYING}}))
        .when_fired_with("a", json!({"n": 1}))
        .await;
    let engine = s.engine();

    let st = s.state().await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Replayed),
            ("t#1".to_owned(), InstanceStatus::Replayed),
            ("t#2".to_owned(), InstanceStatus::Replayed),
            ("t#3".to_owned(), InstanceStatus::Finished),
        ]
    );
    let last = instance(&st, "t#3");
    assert_eq!(result(last), json!({"count": 3}));
    assert_eq!(last.depth, 3);
    assert_eq!(last.parent.as_deref(), Some("t#2"));
    assert_eq!(last.kwargs, obj(json!({"a": {"n": 1}})));
    for n in 0..3 {
        let attempt = instance(&st, &format!("t#{n}"));
        assert!(
            attempt.metadata.contains_key("cooldown"),
            "a retry records its cooldown"
        );
        assert!(attempt.metadata.contains_key("exceptionType"));
        assert_eq!(attempt.depth, n);
    }
    // Failure, replay and the clone's scheduling commit as one chain of causes.
    let events = events(engine, S).await;
    let failed = about(&events, "InstanceFailed", "t#0")[0];
    let replayed = about(&events, "InstanceReplayed", "t#0")[0];
    assert_eq!(replayed.caused_by, Some(failed.seq));
    assert_eq!(replayed.seq, failed.seq + 1);
    assert_eq!(
        about(&events, "InstanceCreated", "t#1")[0].caused_by,
        Some(replayed.seq)
    );
    assert!(st.instances_with_unresolved_logs().next().is_none());
}

async fn a_self_retrying_job_stops_at_its_own_limit(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 5, "withParams": {"retries": {"max": 1}}}}))
        .when_fired(&["a"])
        .await;

    let st = s.state().await;
    assert_eq!(names_of(&st, "t"), ["t#0", "t#1"]);
    assert_eq!(result(instance(&st, "t#1")), json!({"count": 1}));
}

async fn asking_to_retry_beyond_max_retries_fails_with_max_retries_exceeded(db: TestDb) {
    // Given a job that wants 5 retries in a task that allows 1.
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 1, "withParams": {"retries": {"max": 5}}}}))
        .when_fired(&["a"])
        .await;

    // Then the second attempt fails for good.
    let st = s.state().await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Replayed),
            ("t#1".to_owned(), InstanceStatus::Failed),
        ]
    );
    let last = instance(&st, "t#1");
    assert_eq!(last.metadata["exceptionType"], json!("MaxRetriesExceeded"));
    assert!(last.log_level() >= 40);
    let unresolved: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(unresolved, ["t#1"]);
}

async fn a_retry_can_replace_kwargs_and_wait_a_cooldown(db: TestDb) {
    // Given a handler that retries its first attempt with fixed kwargs after 300 ms.
    let engine = db
        .engine_with(|b| {
            b.handler("app.Flaky", |job: Job| async move {
                if job.depth == 0 {
                    Outcome::Retry {
                        reason: "upstream busy".into(),
                        replacement_kwargs: Some(obj(json!({"a": {"fixed": true}}))),
                        cooldown_seconds: Some(0.3),
                    }
                } else {
                    Outcome::finished(json!({"got": job.kwargs}))
                }
            })
        })
        .await;
    let s = Scenario::on(engine)
        .given(json!({"t": {"after": ["a"], "run": "app.Flaky"}}))
        .when_fired_with("a", json!({"broken": true}))
        .await;

    let st = s.state().await;
    let first = instance(&st, "t#0");
    assert_eq!(first.status, InstanceStatus::Replayed);
    assert_eq!(first.metadata["cooldown"].as_f64(), Some(0.3));
    assert_eq!(first.metadata["exceptionInfo"], json!("upstream busy"));
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(clone.kwargs, obj(json!({"a": {"fixed": true}})));
    assert_eq!(result(clone), json!({"got": {"a": {"fixed": true}}}));
    let scheduled = ts(clone, "scheduled");
    let running = ts(clone, "running");
    assert!(
        running - scheduled >= chrono::Duration::milliseconds(290),
        "the clone waited its cooldown: scheduled {scheduled}, running {running}"
    );
}

on_both_backends!(
    a_failing_job_fails_its_instance_with_its_exception,
    replaying_a_failed_instance_runs_a_clone_with_the_same_kwargs,
    a_replayed_clone_can_fail_and_be_replayed_again,
    replay_uses_the_tasks_current_configuration,
    replaying_with_replacement_kwargs_replaces_them_whole,
    a_replay_keeps_the_abandon_state,
    skipping_a_failed_instance_without_cascade_resolves_it_quietly,
    skipping_a_failed_instance_with_cascade_fires_the_task_with_the_result,
    a_job_can_skip_itself,
    a_self_retrying_job_retries_up_to_the_default_max_retries,
    a_self_retrying_job_stops_at_its_own_limit,
    asking_to_retry_beyond_max_retries_fails_with_max_retries_exceeded,
    a_retry_can_replace_kwargs_and_wait_a_cooldown,
);
