//! Every error code, with a human message, and nothing written when it happens
//! (the session's version is unchanged). Internal errors are answered generically.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestApp, TestDb, DEVNULL, FAILING, S};

on_both_backends!(
    bad_configuration_is_refused_as_a_whole_and_writes_nothing,
    bad_input_is_refused_and_writes_nothing,
    unknown_instances_are_not_found_and_write_nothing,
    replaying_or_skipping_an_instance_that_did_not_fail_is_invalid_state,
    a_lease_token_that_is_unknown_or_used_is_a_conflict,
    malformed_graphql_gets_a_code_too,
    internal_errors_are_logged_and_answered_generically,
);

/// Runs `query` (which must fail with `code`), and checks the version did not move.
async fn refused(app: &TestApp, query: &str, variables: Value, code: &str) -> String {
    let before = app.version(S).await;
    let (got, message) = app.error(query, variables.clone()).await;
    assert_eq!(got, code, "{query} with {variables}: {message}");
    assert!(!message.is_empty());
    assert_eq!(
        app.version(S).await,
        before,
        "{query} with {variables} wrote something"
    );
    message
}

const CONFIGURE: &str =
    "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }";
const FIRE: &str =
    "mutation($s: String!, $t: String!, $k: JSON) { fire(session: $s, trigger: $t, kwargs: $k) { duplicate } }";

async fn bad_configuration_is_refused_as_a_whole_and_writes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_ok": {"after": [], "run": DEVNULL}}))
        .await;

    let cases = [
        (
            json!({"t_good": {"after": [], "run": DEVNULL}, "t_bad": {"after": ["x"]}}),
            "t_bad",
        ),
        (json!({"t_bad": {"run": DEVNULL}}), "after"),
        (json!({"t_bad": {"after": "x", "run": DEVNULL}}), "after"),
        (
            json!({"t_bad": {"after": [], "run": DEVNULL, "withParams": {"x": 1}}}),
            "withParams",
        ),
        (
            json!({"t_bad": {"after": [], "run": DEVNULL, "using": "carrier-pigeon"}}),
            "using",
        ),
        (json!({"": {"after": [], "run": DEVNULL}}), "empty"),
        (json!(["not", "an", "object"]), "object"),
    ];
    for (tasks, mentions) in cases {
        let message = refused(
            &app,
            CONFIGURE,
            json!({"s": S, "t": tasks}),
            "BAD_CONFIGURATION",
        )
        .await;
        assert!(
            message.contains(mentions),
            "{message:?} should mention {mentions:?}"
        );
    }
    let data = app.read_session(S, "tasks { name }").await;
    assert_eq!(
        data["session"]["tasks"],
        json!([{"name": "t_ok"}]),
        "nothing of a refused configure applies"
    );
}

async fn bad_input_is_refused_and_writes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure_fire_settle(S, json!({"t_bad": {"after": ["go"], "run": FAILING}}), "go")
        .await;
    app.wait_quiet(S).await;

    for kwargs in [json!([1, 2]), json!("text"), json!(3)] {
        let message = refused(
            &app,
            FIRE,
            json!({"s": S, "t": "go", "k": kwargs}),
            "BAD_INPUT",
        )
        .await;
        assert!(message.contains("kwargs"), "{message}");
    }
    refused(&app, FIRE, json!({"s": S, "t": "", "k": {}}), "BAD_INPUT").await;
    refused(
        &app,
        FIRE,
        json!({"s": "", "t": "go", "k": {}}),
        "BAD_INPUT",
    )
    .await;
    refused(&app, CONFIGURE, json!({"s": "", "t": {}}), "BAD_INPUT").await;
    refused(
        &app,
        "mutation($s: String!) { updateInstanceMetadata(session: $s, instance: \"t_bad#0\", metadata: [1]) { name } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "mutation($s: String!) { replayFailedInstance(session: $s, instance: \"t_bad#0\", replacementKwargs: 5) { name } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "mutation($s: String!) { skipFailedInstance(session: $s, instance: \"t_bad#0\", result: \"ok\") { name } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "mutation($s: String!) { updateInstanceStatus(session: $s, instance: \"t_bad#0\", status: FINISHED, metadata: true) { name } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "mutation { claimTasks(worker: \"w\", leaseSeconds: 0) { instance } }",
        json!({}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "mutation { claimTasks(worker: \"w\", max: -1) { instance } }",
        json!({}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "{ session(uid: \"\") { version } }",
        json!({}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "query($s: String!) { session(uid: $s) { asOf(version: 999) { version } } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "query($s: String!) { session(uid: $s) { asOf(version: -1) { version } } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    refused(
        &app,
        "query($s: String!) { session(uid: $s) { events(after: -1) { seq } } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
    // An unknown status is refused by the schema itself.
    refused(
        &app,
        "mutation($s: String!) { updateInstanceStatus(session: $s, instance: \"t_bad#0\", status: DONE) { name } }",
        json!({"s": S}),
        "BAD_INPUT",
    )
    .await;
}

async fn unknown_instances_are_not_found_and_write_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
        .await;

    let mutations = [
        "replayFailedInstance(session: $s, instance: $i) { name }",
        "skipFailedInstance(session: $s, instance: $i) { name }",
        "updateInstanceStatus(session: $s, instance: $i, status: FINISHED) { name }",
        "updateInstanceMetadata(session: $s, instance: $i, metadata: {a: 1}) { name }",
        "markInstanceLogsResolved(session: $s, instance: $i) { name }",
    ];
    for mutation in mutations {
        let query = format!("mutation($s: String!, $i: String!) {{ {mutation} }}");
        let message = refused(&app, &query, json!({"s": S, "i": "t_a#7"}), "NOT_FOUND").await;
        assert!(message.contains("t_a#7"), "{message}");
        // A session never used: NOT_FOUND as well, and it stays unused.
        let (code, _) = app
            .error(&query, json!({"s": "never:used", "i": "t_a#0"}))
            .await;
        assert_eq!(code, "NOT_FOUND");
        assert_eq!(app.version("never:used").await, 0);
    }
}

async fn replaying_or_skipping_an_instance_that_did_not_fail_is_invalid_state(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({"t_a": {"after": ["go"], "run": DEVNULL}, "t_b": {"after": ["x"], "run": DEVNULL}}),
    )
    .await;
    app.fire(S, "go", json!({})).await;
    app.fire(S, "x", json!({})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    for instance in ["t_a#0", "t_b#0"] {
        for mutation in [
            "replayFailedInstance(session: $s, instance: $i) { name }",
            "skipFailedInstance(session: $s, instance: $i) { name }",
        ] {
            let query = format!("mutation($s: String!, $i: String!) {{ {mutation} }}");
            let message = refused(
                &app,
                &query,
                json!({"s": S, "i": instance}),
                "INVALID_STATE",
            )
            .await;
            assert!(message.contains(instance), "{message}");
        }
    }
}

async fn a_lease_token_that_is_unknown_or_used_is_a_conflict(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({"t_w": {"after": ["go"], "run": "app.Job", "using": "worker"}}),
    )
    .await;
    app.fire(S, "go", json!({})).await;
    let data = app
        .query("mutation { claimTasks(worker: \"w\") { leaseToken } }")
        .await;
    let token = data["claimTasks"][0]["leaseToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.data(
        "mutation($t: String!) { completeTask(leaseToken: $t) { name } }",
        json!({"t": token}),
    )
    .await;

    for report in [
        "completeTask(leaseToken: $t) { name }",
        "failTask(leaseToken: $t, error: \"x\") { name }",
        "skipTask(leaseToken: $t) { name }",
    ] {
        let query = format!("mutation($t: String!) {{ {report} }}");
        refused(&app, &query, json!({"t": token}), "CONFLICT").await;
        refused(&app, &query, json!({"t": "no-such-token"}), "CONFLICT").await;
    }
    let (code, _) = app
        .error(
            "mutation($t: String!) { heartbeat(leaseToken: $t) }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(code, "CONFLICT");
}

async fn malformed_graphql_gets_a_code_too(db: TestDb) {
    let app = spawn_app(&db).await;
    for query in [
        "{ session(uid: \"x\") { version ",
        "{ session(uid: \"x\") { noSuchField } }",
        "{ session { version } }",
        "mutation { fire(session: \"x\", trigger: 5) { duplicate } }",
    ] {
        let (status, body) = app.post(query, json!({})).await;
        assert_eq!(status, 200, "{body:#}");
        let error = &body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "BAD_INPUT",
            "{query}: {body:#}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(app.version("x").await, 0);
}

async fn internal_errors_are_logged_and_answered_generically(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure_fire_settle(S, json!({"t_a": {"after": ["go"], "run": DEVNULL}}), "go")
        .await;

    // Break the database under the running server.
    db.execute_sql("ALTER TABLE events RENAME TO events_gone")
        .await
        .unwrap();

    let (_, body) = app
        .post(
            "query($s: String!) { session(uid: $s) { events { seq } } }",
            json!({"s": S}),
        )
        .await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{body:#}");
    assert_eq!(error["message"], "internal error");
    assert!(error["extensions"]["errorId"].is_string());
    let text = body.to_string();
    for internal in [
        "events_gone",
        "no such table",
        "relation",
        "sqlx",
        "storage",
    ] {
        assert!(
            !text.contains(internal),
            "leaks internals ({internal}): {text}"
        );
    }

    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert!(
        health.status().is_success(),
        "the database still answers pings"
    );
}
