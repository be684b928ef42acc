//! The questionnaire example, end to end.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::json;
use triggers::domain::InstanceStatus;
use triggers::workload::questionnaire_run_by;

async fn the_questionnaire_example_runs_end_to_end(db: TestDb) {
    // Given the questionnaire workflow.
    let engine = db
        .engine_configured(S, questionnaire_run_by(PASSTHRU))
        .await;

    // When a respondent goes through it.
    let first = fire_and_settle(
        &engine,
        S,
        "firstPageReceived",
        json!({"subject": {"id": 42}, "browser": "Firefox"}),
    )
    .await;
    fire_and_settle(
        &engine,
        S,
        "pageReceived",
        json!({"page": 1, "responses": [1, 2]}),
    )
    .await;
    fire_and_settle(
        &engine,
        S,
        "pageReceived",
        json!({"page": 2, "responses": [3]}),
    )
    .await;
    let complete =
        fire_and_settle(&engine, S, "questionnaireComplete", json!({"at": "noon"})).await;
    let abandoned_late = fire_and_settle(&engine, S, "questionnaireAbandoned", json!({})).await;

    // Then every import ran once per what it waits for, and scoring ran.
    assert_eq!(first.scheduled, ["t_importSubject#0"]);
    assert_eq!(
        complete.scheduled,
        ["t_importBrowserMetadata#0", "t_scoreResponses#0"]
    );
    assert!(
        abandoned_late.abandoned.is_empty(),
        "scoring had already run"
    );
    let st = state(&engine, S).await;
    assert!(
        st.unresolved_tasks().is_empty(),
        "{:?}",
        st.unresolved_tasks()
    );
    assert!(st
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Finished));
    let subject = json!({"subject": {"id": 42}, "browser": "Firefox"});
    assert_eq!(
        result(instance(&st, "t_importSubject#0")),
        passthru(json!({"firstPageReceived": subject}))
    );
    assert_eq!(
        names_of(&st, "t_importResponses"),
        ["t_importResponses#0", "t_importResponses#1"]
    );
    assert_eq!(
        result(instance(&st, "t_importResponses#1")),
        passthru(
            json!({"firstPageReceived": subject, "pageReceived": {"page": 2, "responses": [3]}})
        )
    );
    assert_eq!(
        result(instance(&st, "t_importBrowserMetadata#0")),
        passthru(json!({"firstPageReceived": subject, "questionnaireComplete": {"at": "noon"}}))
    );
    assert_eq!(
        result(instance(&st, "t_scoreResponses#0")),
        passthru(json!({
            "t_importSubject": passthru(json!({"firstPageReceived": subject})),
            "questionnaireComplete": {"at": "noon"},
            "scoring": {"model": "Psych 01"}
        }))
    );
}

async fn a_questionnaire_abandoned_before_completion_is_not_scored(db: TestDb) {
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_importSubject": {"after": ["firstPageReceived"], "run": PASSTHRU},
            "t_scoreResponses": {
                "after": ["t_importSubject", "questionnaireComplete"],
                "unless": ["questionnaireAbandoned"],
                "run": PASSTHRU
            },
        }))
        .when_fired(&["firstPageReceived"])
        .await;
    let engine = s.engine();
    let abandoned = fire_and_settle(engine, S, "questionnaireAbandoned", json!({})).await;
    let complete = fire_and_settle(engine, S, "questionnaireComplete", json!({})).await;

    assert_eq!(abandoned.abandoned, ["t_scoreResponses#0"]);
    assert!(complete.scheduled.is_empty());
    let st = s.state().await;
    assert_eq!(status(&st, "t_scoreResponses#0"), InstanceStatus::Abandoned);
    assert!(st.unresolved_tasks().is_empty());
}

on_both_backends!(
    the_questionnaire_example_runs_end_to_end,
    a_questionnaire_abandoned_before_completion_is_not_scored,
);
