//! Manual changes (status, metadata, resolved logs) and the unresolved queries.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::json;
use triggers::domain::InstanceStatus;
use triggers::engine::{Job, Outcome};
use triggers::testkit::names::{self, uid};

async fn an_operator_can_set_any_status_and_merge_metadata(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": DEVNULL}}))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();

    let changed = engine
        .update_instance_status(
            &uid(S),
            &names::instance("t#0"),
            InstanceStatus::Failed,
            Some(json!({"reason": "bad data"})),
            false,
            None,
        )
        .await
        .unwrap();

    assert_eq!(changed.status, InstanceStatus::Failed);
    assert_eq!(changed.metadata["reason"], json!("bad data"));
    assert_eq!(
        changed.metadata["result"],
        json!({}),
        "earlier metadata is kept"
    );
    assert!(changed.metadata["timestamps"]["failed"].is_string());
    let events = events(engine, S).await;
    let change = about(&events, "InstanceStatusChanged", "t#0")[0];
    assert_eq!(change.caused_by, None);
    assert_eq!(fired(&events, "t").len(), 1, "no cascade without asking");
    // A failed instance, whatever made it fail, can be replayed.
    let clone = s.when_replayed("t#0", None).await;
    assert_eq!(
        status(&*s.state().await, &clone.name),
        InstanceStatus::Finished
    );
}

async fn setting_a_status_with_cascade_fires_the_task_name(db: TestDb) {
    // Given two instances waiting for an external worker, each with a task downstream.
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_ext": {"after": ["a"], "run": EXTERNAL},
            "t_quiet": {"after": ["a"], "run": EXTERNAL},
            "t_next": {"after": ["t_ext"], "run": PASSTHRU},
            "t_after_quiet": {"after": ["t_quiet"], "run": PASSTHRU},
        }))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();

    // When an operator finishes one with cascade and the other without.
    let done = engine
        .update_instance_status(
            &uid(S),
            &names::instance("t_ext#0"),
            InstanceStatus::Finished,
            Some(json!({"result": {"rows": 3}})),
            true,
            Some(json!({"rows": 3})),
        )
        .await
        .unwrap();
    engine
        .update_instance_status(
            &uid(S),
            &names::instance("t_quiet#0"),
            InstanceStatus::Finished,
            None,
            false,
            None,
        )
        .await
        .unwrap();
    settle(engine).await;

    // Then only the first set its downstream task off, with the cascade kwargs.
    assert_eq!(done.status, InstanceStatus::Finished);
    let st = s.state().await;
    assert_eq!(
        result(instance(&st, "t_next#0")),
        passthru(json!({"t_ext": {"rows": 3}}))
    );
    assert!(names_of(&st, "t_after_quiet").is_empty());
    let events = events(engine, S).await;
    let change = about(&events, "InstanceStatusChanged", "t_ext#0")[0];
    assert_eq!(fired(&events, "t_ext")[0].caused_by, Some(change.seq));
    assert!(fired(&events, "t_quiet").is_empty());
}

async fn updating_metadata_merges_it_and_bumps_only_last_modified(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": DEVNULL}}))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    let before = instance(&*s.state().await, "t#0").clone();

    let after = engine
        .update_instance_metadata(
            &uid(S),
            &names::instance("t#0"),
            json!({"note": "checked", "ticket": 12}),
        )
        .await
        .unwrap();

    assert_eq!(after.status, InstanceStatus::Finished);
    assert_eq!(after.metadata["note"], json!("checked"));
    assert_eq!(after.metadata["ticket"], json!(12));
    assert_eq!(after.metadata["result"], before.metadata["result"]);
    let mut old_ts = before.metadata["timestamps"].as_object().unwrap().clone();
    let mut new_ts = after.metadata["timestamps"].as_object().unwrap().clone();
    assert!(ts(&after, "lastModified") >= ts(&before, "lastModified"));
    old_ts.remove("lastModified");
    new_ts.remove("lastModified");
    assert_eq!(old_ts, new_ts, "only lastModified moves");
    assert_eq!(
        kinds(&engine.events(&uid(S), before.last_seq, None).await.unwrap()).last(),
        Some(&"InstanceMetadataUpdated")
    );
}

async fn marking_logs_resolved_takes_an_instance_off_the_unresolved_logs(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}}))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    let st = s.state().await;
    let with_logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(with_logs, ["t#0"]);

    let marked = engine
        .mark_instance_logs_resolved(&uid(S), &names::instance("t#0"))
        .await
        .unwrap();

    assert_eq!(marked.metadata["logsResolved"], json!(true));
    assert_eq!(
        marked.status,
        InstanceStatus::Failed,
        "the status is not changed"
    );
    let st = s.state().await;
    assert!(st.instances_with_unresolved_logs().next().is_none());
    let unresolved: Vec<&str> = st.unresolved_instances().map(|i| i.name.as_str()).collect();
    assert_eq!(unresolved, ["t#0"], "still unresolved as an instance");
}

async fn the_unresolved_queries_answer_what_still_needs_attention(db: TestDb) {
    // Given tasks that finish, fail, wait for a worker, and never start.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_done": {"after": ["a"], "run": DEVNULL},
            "t_failed": {"after": ["a"], "run": FAILING},
            "t_queued": {"after": ["a"], "run": EXTERNAL},
            "t_waiting": {"after": ["a", "b"], "run": DEVNULL},
            "t_never": {"after": ["z"], "run": DEVNULL},
        }),
    )
    .await;
    let st = state(&engine, S).await;
    assert_eq!(
        st.unresolved_tasks().len(),
        5,
        "tasks with no instance are unresolved"
    );

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(
        st.unresolved_tasks(),
        ["t_failed", "t_never", "t_queued", "t_waiting"]
    );
    let unresolved: Vec<&str> = st.unresolved_instances().map(|i| i.name.as_str()).collect();
    assert_eq!(unresolved, ["t_failed#0", "t_queued#0", "t_waiting#0"]);
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t_failed#0"]);

    // When the failure is skipped and the waiting task completes.
    engine
        .skip_failed_instance(&uid(S), &names::instance("t_failed#0"), false, None)
        .await
        .unwrap();
    fire_and_settle(&engine, S, "b", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(st.unresolved_tasks(), ["t_never", "t_queued"]);
    assert!(st.instances_with_unresolved_logs().next().is_none());
}

async fn an_error_logged_by_a_finished_job_needs_attention(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.Noisy", |_job: Job| async move {
                Outcome::Finished {
                    result: json!({"ok": true}),
                    log_level: Some(40),
                }
            })
        })
        .await;
    let s = Scenario::on(engine)
        .given(json!({"t": {"after": ["a"], "run": "app.Noisy"}}))
        .when_fired(&["a"])
        .await;

    let st = s.state().await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Finished);
    assert_eq!(inst.log_level(), 40);
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t#0"]);
}

on_both_backends!(
    an_operator_can_set_any_status_and_merge_metadata,
    setting_a_status_with_cascade_fires_the_task_name,
    updating_metadata_merges_it_and_bumps_only_last_modified,
    marking_logs_resolved_takes_an_instance_off_the_unresolved_logs,
    the_unresolved_queries_answer_what_still_needs_attention,
    an_error_logged_by_a_finished_job_needs_attention,
);
