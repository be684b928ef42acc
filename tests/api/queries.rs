//! Reads: `session` and every field of `Session`, `TaskConfig` and
//! `TaskInstance`; `/health`; the GraphiQL page.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestDb, DEVNULL, FAILING, PASSTHRU, S};

on_both_backends!(
    a_session_never_used_is_empty_and_answers_every_read,
    health_reports_the_database_and_graphiql_is_served,
    task_configs_read_back_every_directive,
    instances_expose_their_state_and_what_they_can_do,
    session_instances_filter_by_status_and_task,
    unresolved_tasks_instances_and_logs_are_listed,
    sessions_are_isolated_from_each_other,
    test_databases_are_isolated_from_each_other,
);

const FULL_SESSION: &str = "query($s: String!) {
  session(uid: $s) {
    uid version latestKwargs
    tasks { name after andEvery unless run using withParams maxRetries extras instances { name } }
    task(name: \"t_none\") { name }
    instances { name }
    instance(name: \"t_none#0\") { name }
    unresolvedTasks { name }
    unresolvedInstances { name }
    instancesWithUnresolvedLogs { name }
    events { seq }
    asOf(version: 0) { version tasks { name } }
  }
}";

async fn a_session_never_used_is_empty_and_answers_every_read(db: TestDb) {
    let app = spawn_app(&db).await;

    let data = app.data(FULL_SESSION, json!({"s": "never:used"})).await;

    assert_eq!(
        data["session"],
        json!({
            "uid": "never:used", "version": 0, "latestKwargs": {},
            "tasks": [], "task": null, "instances": [], "instance": null,
            "unresolvedTasks": [], "unresolvedInstances": [], "instancesWithUnresolvedLogs": [],
            "events": [], "asOf": {"version": 0, "tasks": []}
        })
    );
}

async fn health_reports_the_database_and_graphiql_is_served(db: TestDb) {
    let app = spawn_app(&db).await;

    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let expected = match db.backend {
        crate::support::Backend::Sqlite => "sqlite",
        crate::support::Backend::Postgres => "postgres",
    };
    assert_eq!(body["database"], expected);

    let page = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")));
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("graphiql"), "{html}");
}

async fn task_configs_read_back_every_directive(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_everything": {
                "after": ["b", "a"],
                "andEvery": "page",
                "unless": ["z", "y"],
                "run": "app.tasks.Everything",
                "using": "worker:imports",
                "withParams": {"scoring": {"model": "Psych 01"}},
                "maxRetries": 5,
                "priority": "high",
                "tags": ["x"]
            },
            "t_minimal": {"after": [], "run": DEVNULL}
        }),
    )
    .await;

    let data = app
        .data(
            "query($s: String!) { session(uid: $s) {
               tasks { name after andEvery unless run using withParams maxRetries extras instances { name } }
               task(name: \"t_minimal\") { name run after unless andEvery using withParams maxRetries extras }
             } }",
            json!({"s": S}),
        )
        .await;

    assert_eq!(
        data["session"]["tasks"],
        json!([
            {
                "name": "t_everything", "after": ["a", "b", "page"], "andEvery": "page",
                "unless": ["y", "z"], "run": "app.tasks.Everything", "using": "worker:imports",
                "withParams": {"scoring": {"model": "Psych 01"}}, "maxRetries": 5,
                "extras": {"priority": "high", "tags": ["x"]}, "instances": []
            },
            {
                "name": "t_minimal", "after": [], "andEvery": null, "unless": [], "run": DEVNULL,
                "using": null, "withParams": {}, "maxRetries": 3, "extras": {}, "instances": []
            }
        ])
    );
    assert_eq!(data["session"]["task"]["name"], "t_minimal");
    assert_eq!(data["session"]["task"]["maxRetries"], 3);
}

const INSTANCE_FIELDS: &str =
    "session name task status kwargs abandonState metadata result logLevel
  isResolved canRun canAbandon canReplay canSkip parent depth";

async fn instances_expose_their_state_and_what_they_can_do(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_waiting": {"after": ["a", "b"], "unless": ["stop", "halt"], "run": DEVNULL},
            "t_done": {"after": ["a"], "run": PASSTHRU},
            "t_broken": {"after": ["a"], "run": FAILING},
        }),
    )
    .await;
    app.fire(S, "stop", json!({"why": "test"})).await;
    app.fire(S, "a", json!({"n": 1})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    let query = format!(
        "query($s: String!) {{ session(uid: $s) {{
           waiting: instance(name: \"t_waiting#0\") {{ {INSTANCE_FIELDS} }}
           done: instance(name: \"t_done#0\") {{ {INSTANCE_FIELDS} }}
           broken: instance(name: \"t_broken#0\") {{ {INSTANCE_FIELDS} }}
         }} }}"
    );
    let data = app.data(&query, json!({"s": S})).await;
    let session = &data["session"];

    let waiting = &session["waiting"];
    assert_eq!(waiting["session"], S);
    assert_eq!(waiting["task"], "t_waiting");
    assert_eq!(waiting["status"], "UNSTARTED");
    assert_eq!(waiting["kwargs"], json!({"a": {"n": 1}}));
    assert_eq!(waiting["abandonState"], json!(["stop"]));
    assert_eq!(waiting["result"], Value::Null);
    assert_eq!(waiting["logLevel"], 0);
    assert_eq!(
        (
            waiting["isResolved"].clone(),
            waiting["canRun"].clone(),
            waiting["canAbandon"].clone()
        ),
        (json!(false), json!(false), json!(false))
    );
    assert_eq!(
        (waiting["parent"].clone(), waiting["depth"].clone()),
        (Value::Null, json!(0))
    );
    assert!(waiting["metadata"]["timestamps"]["created"].is_string());
    assert!(waiting["metadata"]["timestamps"]["unstarted"].is_string());

    let done = &session["done"];
    assert_eq!(done["status"], "FINISHED");
    assert_eq!(done["result"], json!({"kwargs": {"a": {"n": 1}}}));
    assert_eq!(done["metadata"]["result"], done["result"]);
    assert_eq!(done["metadata"]["actualKwargs"], json!({"a": {"n": 1}}));
    for key in [
        "created",
        "lastModified",
        "scheduled",
        "running",
        "finished",
    ] {
        assert!(
            done["metadata"]["timestamps"][key].is_string(),
            "timestamps.{key}: {done:#}"
        );
    }
    assert_eq!(done["isResolved"], true);
    assert_eq!(done["canReplay"], false);
    assert_eq!(done["canSkip"], false);

    let broken = &session["broken"];
    assert_eq!(broken["status"], "FAILED");
    assert_eq!(broken["logLevel"], 40);
    assert_eq!(
        broken["metadata"]["exceptionType"],
        "triggers.testing.Failure"
    );
    assert_eq!(broken["isResolved"], false);
    assert_eq!(broken["canReplay"], true);
    assert_eq!(broken["canSkip"], true);
    assert_eq!(broken["canRun"], false);

    // One more unless trigger completes the abandon set of the waiting instance: it
    // is abandoned at once (the fire does it), so canAbandon is observable only
    // through the fire's answer.
    let fired = app.fire(S, "halt", json!({})).await;
    assert_eq!(
        fired["abandoned"],
        json!([{"name": "t_waiting#0", "status": "ABANDONED"}])
    );
}

async fn session_instances_filter_by_status_and_task(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_ok": {"after": ["go"], "andEvery": "go", "run": DEVNULL},
            "t_bad": {"after": ["go"], "run": FAILING},
            "t_later": {"after": ["go", "never"], "run": DEVNULL},
        }),
    )
    .await;
    app.fire(S, "go", json!({})).await;
    app.fire(S, "go", json!({})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    let data = app
        .data(
            "query($s: String!) { session(uid: $s) {
               all: instances { name }
               finished: instances(status: [FINISHED]) { name }
               failedOrUnstarted: instances(status: [FAILED, UNSTARTED]) { name }
               ok: instances(task: \"t_ok\") { name }
               okFailed: instances(task: \"t_ok\", status: [FAILED]) { name }
               none: instances(status: []) { name }
               byTask: task(name: \"t_ok\") { instances { name status } }
             } }",
            json!({"s": S}),
        )
        .await;
    let names = |key: &str| -> Vec<String> {
        data["session"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("all"), ["t_bad#0", "t_later#0", "t_ok#0", "t_ok#1"]);
    assert_eq!(names("finished"), ["t_ok#0", "t_ok#1"]);
    assert_eq!(names("failedOrUnstarted"), ["t_bad#0", "t_later#0"]);
    assert_eq!(names("ok"), ["t_ok#0", "t_ok#1"]);
    assert!(names("okFailed").is_empty());
    assert_eq!(
        names("none"),
        names("all"),
        "an empty status list does not filter"
    );
    assert_eq!(
        data["session"]["byTask"]["instances"],
        json!([{"name": "t_ok#0", "status": "FINISHED"}, {"name": "t_ok#1", "status": "FINISHED"}])
    );
}

async fn unresolved_tasks_instances_and_logs_are_listed(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_ok": {"after": ["go"], "run": DEVNULL},
            "t_bad": {"after": ["go"], "run": FAILING},
            "t_idle": {"after": ["never"], "run": DEVNULL},
        }),
    )
    .await;
    app.fire(S, "go", json!({"x": 1})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    let data = app
        .data(
            "query($s: String!) { session(uid: $s) {
               unresolvedTasks { name }
               unresolvedInstances { name status }
               instancesWithUnresolvedLogs { name logLevel }
               latestKwargs
             } }",
            json!({"s": S}),
        )
        .await;
    let session = &data["session"];
    assert_eq!(
        session["unresolvedTasks"],
        json!([{"name": "t_bad"}, {"name": "t_idle"}])
    );
    assert_eq!(
        session["unresolvedInstances"],
        json!([{"name": "t_bad#0", "status": "FAILED"}])
    );
    assert_eq!(
        session["instancesWithUnresolvedLogs"],
        json!([{"name": "t_bad#0", "logLevel": 40}])
    );
    assert_eq!(session["latestKwargs"], json!({"go": {"x": 1}, "t_ok": {}}));
}

async fn sessions_are_isolated_from_each_other(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure_fire_settle(
        "s:1",
        json!({"t_a": {"after": ["go"], "run": DEVNULL}}),
        "go",
    )
    .await;

    let data = app.query("{ other: session(uid: \"s:2\") { version tasks { name } instances { name } latestKwargs } }").await;
    assert_eq!(
        data["other"],
        json!({"version": 0, "tasks": [], "instances": [], "latestKwargs": {}})
    );
}

/// The fixture itself: two test databases (two PostgreSQL schemas, or two SQLite
/// files) never see each other's sessions.
async fn test_databases_are_isolated_from_each_other(db: TestDb) {
    let other = match db.backend {
        crate::support::Backend::Sqlite => Some(TestDb::sqlite()),
        crate::support::Backend::Postgres => None,
    };
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
        .await;
    let check = |other_db: TestDb| async move {
        let other_app = spawn_app(&other_db).await;
        let data = other_app
            .data(
                "query($s: String!) { session(uid: $s) { version } sessions { uid } }",
                json!({"s": S}),
            )
            .await;
        assert_eq!(data, json!({"session": {"version": 0}, "sessions": []}));
    };
    match other {
        Some(other_db) => check(other_db).await,
        None => {
            crate::support::run_postgres(
                "test_databases_are_isolated_from_each_other::inner",
                check,
            )
            .await
        }
    }
    assert_eq!(app.version(S).await, 1);
}
