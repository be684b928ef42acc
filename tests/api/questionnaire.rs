//! The questionnaire example, as a client would run it: configure, fire pages,
//! complete, then read statuses, results, the timeline, and why each task ran.

use serde_json::{json, Value};

use triggers::workload::questionnaire_run_by;

use crate::support::{passthru, spawn_app, strs, TestDb, PASSTHRU, S};

on_both_backends!(the_questionnaire_example_runs_end_to_end_over_graphql);

async fn the_questionnaire_example_runs_end_to_end_over_graphql(db: TestDb) {
    let app = spawn_app(&db).await;

    // Given the questionnaire workflow.
    app.configure(S, questionnaire_run_by(PASSTHRU)).await;

    // When a respondent goes through it.
    let subject = json!({"subject": {"id": 42}, "browser": "Firefox"});
    let first = app.fire(S, "firstPageReceived", subject.clone()).await;
    app.settle().await;
    app.fire(S, "pageReceived", json!({"page": 1, "responses": [1, 2]}))
        .await;
    app.settle().await;
    app.fire(S, "pageReceived", json!({"page": 2, "responses": [3]}))
        .await;
    app.settle().await;
    let complete = app
        .fire(S, "questionnaireComplete", json!({"at": "noon"}))
        .await;
    app.settle().await;
    app.wait_resolved(S).await;

    // Then each fire scheduled what it completed...
    let names = |fired: &Value| -> Vec<String> {
        fired["scheduled"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&first), ["t_importSubject#0"]);
    assert_eq!(
        names(&complete),
        ["t_importBrowserMetadata#0", "t_scoreResponses#0"]
    );

    // ...every task ran, once per what it waits for...
    let data = app
        .data(
            "query($s: String!) { session(uid: $s) {
               unresolvedTasks { name }
               instances { name status result }
             } }",
            json!({"s": S}),
        )
        .await;
    let session = &data["session"];
    assert_eq!(session["unresolvedTasks"], json!([]));
    let instances: Vec<(String, String, Value)> = session["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
                i["result"].clone(),
            )
        })
        .collect();
    let result_of = |name: &str| {
        instances
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no instance {name}: {instances:?}"))
            .2
            .clone()
    };
    assert!(
        instances.iter().all(|(_, status, _)| status == "FINISHED"),
        "{instances:?}"
    );
    let mut all: Vec<&str> = instances.iter().map(|(n, _, _)| n.as_str()).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        [
            "t_importBrowserMetadata#0",
            "t_importResponses#0",
            "t_importResponses#1",
            "t_importSubject#0",
            "t_scoreResponses#0"
        ]
    );
    assert_eq!(
        result_of("t_importSubject#0"),
        passthru(json!({"firstPageReceived": subject}))
    );
    assert_eq!(
        result_of("t_importResponses#1"),
        passthru(
            json!({"firstPageReceived": subject, "pageReceived": {"page": 2, "responses": [3]}})
        )
    );
    assert_eq!(
        result_of("t_scoreResponses#0"),
        passthru(json!({
            "t_importSubject": passthru(json!({"firstPageReceived": subject})),
            "questionnaireComplete": {"at": "noon"},
            "scoring": {"model": "Psych 01"}
        }))
    );

    // ...the timeline tells the story in order...
    let data = app
        .read_session(
            S,
            "version events(first: 1000) { seq kind instance trigger causedBy }",
        )
        .await;
    let events = data["session"]["events"].as_array().unwrap();
    assert_eq!(
        events.len() as u64,
        data["session"]["version"].as_u64().unwrap()
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i + 1, "gap-free seqs");
    }
    assert_eq!(events[0]["kind"], "SessionConfigured");
    let fired: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "TriggerFired" && e["causedBy"].is_null())
        .map(|e| e["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(
        fired,
        [
            "firstPageReceived",
            "pageReceived",
            "pageReceived",
            "questionnaireComplete"
        ]
    );
    // The cascade of t_importSubject is a TriggerFired caused by its InstanceFinished.
    let finished = events
        .iter()
        .find(|e| e["kind"] == "InstanceFinished" && e["instance"] == "t_importSubject#0")
        .expect("t_importSubject#0 finished");
    let cascade = events
        .iter()
        .find(|e| e["kind"] == "TriggerFired" && e["trigger"] == "t_importSubject")
        .expect("the cascade");
    assert_eq!(cascade["causedBy"], finished["seq"]);

    // ...and "why did t_importSubject run" has an answer.
    let data = app
        .data(
            "query($s: String!) { session(uid: $s) { instance(name: \"t_importSubject#0\") {
               causes { seq kind trigger data }
               history { kind causedBy }
             } } }",
            json!({"s": S}),
        )
        .await;
    let instance = &data["session"]["instance"];
    assert_eq!(
        instance["causes"],
        json!([{
            "seq": first["event"]["seq"], "kind": "TriggerFired", "trigger": "firstPageReceived",
            "data": {"trigger": "firstPageReceived", "kwargs": subject}
        }])
    );
    let history: Vec<&str> = strs(&instance["history"], "kind");
    assert_eq!(
        history,
        [
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished"
        ]
    );
}
