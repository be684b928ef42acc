//! Writes: `configure`, `fire` (with idempotency keys), the manual changes of
//! operators (docs/graphql.md), and the worker protocol.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestDb, DEVNULL, FAILING, PASSTHRU, S};

on_both_backends!(
    configure_answers_the_session_with_its_tasks,
    fire_answers_its_event_and_what_it_scheduled_and_abandoned,
    a_repeated_idempotency_key_returns_the_first_result_and_appends_nothing,
    replay_failed_instance_schedules_a_clone_with_the_replacement_kwargs,
    skip_failed_instance_skips_and_optionally_cascades,
    update_instance_status_sets_status_merges_metadata_and_cascades,
    update_instance_metadata_merges_and_logs_can_be_marked_resolved,
    a_worker_claims_heartbeats_and_completes_a_task,
    a_worker_can_fail_retry_and_skip_tasks,
);

const INSTANCE: &str = "name status kwargs metadata result parent depth isResolved session";

async fn configure_answers_the_session_with_its_tasks(db: TestDb) {
    let app = spawn_app(&db).await;

    let data = app
        .data(
            "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) {
               uid version tasks { name after run } } }",
            json!({"s": S, "t": {"t_a": {"after": ["x"], "run": DEVNULL}}}),
        )
        .await;
    assert_eq!(
        data["configure"],
        json!({"uid": S, "version": 1, "tasks": [{"name": "t_a", "after": ["x"], "run": DEVNULL}]})
    );

    // Tasks with the same name are replaced; others are kept.
    let data = app
        .data(
            "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version tasks { name run } } }",
            json!({"s": S, "t": {"t_a": {"after": ["x"], "run": PASSTHRU}, "t_b": {"after": [], "run": DEVNULL}}}),
        )
        .await;
    assert_eq!(
        data["configure"],
        json!({"version": 2, "tasks": [{"name": "t_a", "run": PASSTHRU}, {"name": "t_b", "run": DEVNULL}]})
    );
}

async fn fire_answers_its_event_and_what_it_scheduled_and_abandoned(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_go": {"after": ["go"], "run": "app.tasks.Later", "using": "worker"},
            "t_stop": {"after": ["go", "more"], "unless": ["stop"], "run": DEVNULL},
        }),
    )
    .await;

    let fired = app.fire(S, "go", json!({"n": 1})).await;
    assert_eq!(fired["duplicate"], false);
    assert_eq!(fired["event"]["kind"], "TriggerFired");
    assert_eq!(fired["event"]["trigger"], "go");
    assert_eq!(
        fired["event"]["causedBy"],
        Value::Null,
        "a fire made through the API"
    );
    assert_eq!(fired["event"]["seq"], 2);
    assert_eq!(fired["event"]["data"]["kwargs"], json!({"n": 1}));
    assert_eq!(
        fired["scheduled"],
        json!([{"name": "t_go#0", "status": "SCHEDULED"}])
    );
    assert_eq!(fired["abandoned"], json!([]));
    let version = fired["session"]["version"].as_u64().unwrap();
    assert!(version > 2, "the fire appended its derived events too");

    let stopped = app.fire(S, "stop", json!({})).await;
    assert_eq!(stopped["scheduled"], json!([]));
    assert_eq!(
        stopped["abandoned"],
        json!([{"name": "t_stop#0", "status": "ABANDONED"}])
    );

    // Kwargs are optional (default {}).
    let data = app
        .data(
            "mutation($s: String!) { fire(session: $s, trigger: \"other\") { event { data } } }",
            json!({"s": S}),
        )
        .await;
    assert_eq!(data["fire"]["event"]["data"]["kwargs"], json!({}));
}

async fn a_repeated_idempotency_key_returns_the_first_result_and_appends_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({"t_go": {"after": ["go"], "run": "app.tasks.Later", "using": "worker"}}),
    )
    .await;
    let fire = "mutation($s: String!, $k: JSON) {
      fire(session: $s, trigger: \"go\", kwargs: $k, idempotencyKey: \"req-1\") {
        duplicate event { seq data } scheduled { name } abandoned { name } session { version }
      }
    }";

    let first = app.data(fire, json!({"s": S, "k": {"n": 1}})).await["fire"].clone();
    let version = app.version(S).await;
    let again = app.data(fire, json!({"s": S, "k": {"n": 2}})).await["fire"].clone();

    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event"], first["event"]);
    assert_eq!(again["scheduled"], json!([{"name": "t_go#0"}]));
    assert_eq!(again["abandoned"], json!([]));
    assert_eq!(app.version(S).await, version, "a duplicate appends nothing");
}

async fn replay_failed_instance_schedules_a_clone_with_the_replacement_kwargs(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_bad": {"after": ["go"], "run": FAILING}}))
        .await;
    app.fire(S, "go", json!({"n": 1})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    let data = app
        .data(
            &format!(
                "mutation($s: String!) {{ replayFailedInstance(session: $s, instance: \"t_bad#0\",
                   replacementKwargs: {{go: {{n: 2}}}}) {{ {INSTANCE} }} }}"
            ),
            json!({"s": S}),
        )
        .await;
    let clone = &data["replayFailedInstance"];
    assert_eq!(clone["name"], "t_bad#1");
    assert_eq!(clone["session"], S);
    assert_eq!(clone["parent"], "t_bad#0");
    assert_eq!(clone["depth"], 1);
    assert_eq!(clone["kwargs"], json!({"go": {"n": 2}}));
    app.settle().await;
    app.wait_quiet(S).await;
    assert_eq!(
        app.statuses(S).await,
        [
            ("t_bad#0".into(), "REPLAYED".into()),
            ("t_bad#1".into(), "FAILED".into())
        ]
    );
}

async fn skip_failed_instance_skips_and_optionally_cascades(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_bad": {"after": ["go"], "andEvery": "go", "run": FAILING},
            "t_next": {"after": ["t_bad"], "run": PASSTHRU},
        }),
    )
    .await;
    app.fire(S, "go", json!({})).await;
    app.fire(S, "go", json!({})).await;
    app.settle().await;
    app.wait_quiet(S).await;

    let quiet = app
        .data(
            &format!("mutation($s: String!) {{ skipFailedInstance(session: $s, instance: \"t_bad#0\") {{ {INSTANCE} }} }}"),
            json!({"s": S}),
        )
        .await;
    assert_eq!(quiet["skipFailedInstance"]["status"], "SKIPPED");
    assert_eq!(quiet["skipFailedInstance"]["metadata"]["cascade"], false);

    let loud = app
        .data(
            &format!(
                "mutation($s: String!) {{ skipFailedInstance(session: $s, instance: \"t_bad#1\",
                   cascade: true, result: {{fallback: true}}) {{ {INSTANCE} }} }}"
            ),
            json!({"s": S}),
        )
        .await;
    assert_eq!(loud["skipFailedInstance"]["status"], "SKIPPED");
    assert_eq!(
        loud["skipFailedInstance"]["metadata"]["result"],
        json!({"fallback": true})
    );
    app.settle().await;
    app.wait_quiet(S).await;
    let data = app
        .read_session(S, "instance(name: \"t_next#0\") { status result }")
        .await;
    assert_eq!(
        data["session"]["instance"],
        json!({"status": "FINISHED", "result": {"kwargs": {"t_bad": {"fallback": true}}}})
    );
}

async fn update_instance_status_sets_status_merges_metadata_and_cascades(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_manual": {"after": ["go"], "run": "app.tasks.Manual", "using": "worker"},
            "t_next": {"after": ["t_manual"], "run": PASSTHRU},
        }),
    )
    .await;
    app.fire(S, "go", json!({})).await;

    let data = app
        .data(
            &format!(
                "mutation($s: String!) {{ updateInstanceStatus(session: $s, instance: \"t_manual#0\",
                   status: FINISHED, metadata: {{by: \"operator\"}}, cascade: true,
                   cascadeKwargs: {{done: 1}}) {{ {INSTANCE} }} }}"
            ),
            json!({"s": S}),
        )
        .await;
    let updated = &data["updateInstanceStatus"];
    assert_eq!(updated["status"], "FINISHED");
    assert_eq!(updated["metadata"]["by"], "operator");
    assert!(updated["metadata"]["timestamps"]["finished"].is_string());
    app.settle().await;
    app.wait_quiet(S).await;
    let data = app
        .read_session(S, "instance(name: \"t_next#0\") { status kwargs }")
        .await;
    assert_eq!(
        data["session"]["instance"],
        json!({"status": "FINISHED", "kwargs": {"t_manual": {"done": 1}}})
    );

    // Without cascade nothing else happens.
    let before = app.version(S).await;
    app.data(
        "mutation($s: String!) { updateInstanceStatus(session: $s, instance: \"t_next#0\", status: FAILED) { status } }",
        json!({"s": S}),
    )
    .await;
    assert_eq!(app.version(S).await, before + 1);
}

async fn update_instance_metadata_merges_and_logs_can_be_marked_resolved(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure_fire_settle(S, json!({"t_bad": {"after": ["go"], "run": FAILING}}), "go")
        .await;
    app.wait_quiet(S).await;

    let data = app
        .data(
            "mutation($s: String!) {
               updateInstanceMetadata(session: $s, instance: \"t_bad#0\", metadata: {ticket: \"OPS-1\", nested: {a: 1}}) {
                 status metadata
               }
             }",
            json!({"s": S}),
        )
        .await;
    let metadata = &data["updateInstanceMetadata"]["metadata"];
    assert_eq!(data["updateInstanceMetadata"]["status"], "FAILED");
    assert_eq!(metadata["ticket"], "OPS-1");
    assert_eq!(metadata["nested"], json!({"a": 1}));
    assert_eq!(
        metadata["exceptionType"], "triggers.testing.Failure",
        "merged, not replaced"
    );

    let logs = "query($s: String!) { session(uid: $s) { instancesWithUnresolvedLogs { name } } }";
    assert_eq!(
        app.data(logs, json!({"s": S})).await["session"]["instancesWithUnresolvedLogs"],
        json!([{"name": "t_bad#0"}])
    );
    let data = app
        .data(
            "mutation($s: String!) { markInstanceLogsResolved(session: $s, instance: \"t_bad#0\") { name metadata } }",
            json!({"s": S}),
        )
        .await;
    assert_eq!(
        data["markInstanceLogsResolved"]["metadata"]["logsResolved"],
        true
    );
    assert_eq!(
        app.data(logs, json!({"s": S})).await["session"]["instancesWithUnresolvedLogs"],
        json!([])
    );
}

async fn a_worker_claims_heartbeats_and_completes_a_task(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_remote": {"after": ["go"], "run": "app.tasks.Remote", "using": "worker",
                         "withParams": {"go": {"model": "m1"}}},
            "t_next": {"after": ["t_remote"], "run": PASSTHRU},
        }),
    )
    .await;
    app.fire(S, "go", json!({"n": 1})).await;

    let data = app
        .data(
            "mutation { claimTasks(worker: \"w1\", max: 5, leaseSeconds: 60) {
               leaseToken session instance run kwargs attempt leaseExpiresAt } }",
            json!({}),
        )
        .await;
    let claims = data["claimTasks"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "{data:#}");
    let claim = &claims[0];
    assert_eq!(claim["session"], S);
    assert_eq!(claim["instance"], "t_remote#0");
    assert_eq!(claim["run"], "app.tasks.Remote");
    assert_eq!(claim["kwargs"], json!({"go": {"model": "m1", "n": 1}}));
    assert_eq!(claim["attempt"], 1);
    let token = claim["leaseToken"].as_str().unwrap().to_owned();
    let first_expiry = parse_time(&claim["leaseExpiresAt"]);
    assert_eq!(
        app.statuses(S).await[0],
        ("t_remote#0".into(), "RUNNING".into())
    );

    // Nothing else to claim.
    let data = app
        .query("mutation { claimTasks(worker: \"w2\") { instance } }")
        .await;
    assert_eq!(data["claimTasks"], json!([]));

    let data = app
        .data(
            "mutation($t: String!) { heartbeat(leaseToken: $t, leaseSeconds: 120) }",
            json!({"t": token}),
        )
        .await;
    assert!(parse_time(&data["heartbeat"]) > first_expiry);

    let data = app
        .data(
            "mutation($t: String!) { completeTask(leaseToken: $t, result: {score: 7}, logLevel: 20) {
               session name status result logLevel } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(
        data["completeTask"],
        json!({"session": S, "name": "t_remote#0", "status": "FINISHED", "result": {"score": 7}, "logLevel": 20})
    );
    app.settle().await;
    app.wait_quiet(S).await;
    assert_eq!(
        app.statuses(S).await[1],
        ("t_next#0".into(), "FINISHED".into())
    );
}

async fn a_worker_can_fail_retry_and_skip_tasks(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_flaky": {"after": ["go"], "run": "app.tasks.Flaky", "using": "worker:flaky", "maxRetries": 1},
            "t_skippy": {"after": ["go"], "run": "app.tasks.Skippy", "using": "worker:skippy"},
        }),
    )
    .await;
    app.fire(S, "go", json!({"n": 1})).await;
    let app = &app;
    let claim = |queue: &str| {
        let query = format!("mutation {{ claimTasks(worker: \"w\", queue: \"{queue}\") {{ leaseToken instance attempt }} }}");
        async move {
            let data = app.data(&query, json!({})).await;
            data["claimTasks"][0].clone()
        }
    };

    let first = claim("flaky").await;
    assert_eq!(first["instance"], "t_flaky#0");
    let data = app
        .data(
            "mutation($t: String!) { failTask(leaseToken: $t, error: \"timeout\", errorType: \"app.Timeout\",
               context: {host: \"h1\"}, logLevel: 40, retry: true, cooldownSeconds: 0,
               replacementKwargs: {go: {n: 2}}) { name status metadata } }",
            json!({"t": first["leaseToken"]}),
        )
        .await;
    let failed = &data["failTask"];
    assert_eq!(
        failed["status"], "REPLAYED",
        "a retry replays the failed attempt at once: {failed:#}"
    );
    assert_eq!(failed["metadata"]["exceptionType"], "app.Timeout");
    assert_eq!(
        failed["metadata"]["exceptionContext"],
        json!({"host": "h1"})
    );

    let second = claim("flaky").await;
    assert_eq!(second["instance"], "t_flaky#1");
    assert_eq!(second["attempt"], 2);
    let data = app
        .data(
            "mutation($t: String!) { failTask(leaseToken: $t, error: \"again\", retry: true) { name status metadata } }",
            json!({"t": second["leaseToken"]}),
        )
        .await;
    assert_eq!(data["failTask"]["status"], "FAILED");
    assert_eq!(
        data["failTask"]["metadata"]["exceptionType"],
        "MaxRetriesExceeded"
    );

    let skippy = claim("skippy").await;
    let data = app
        .data(
            "mutation($t: String!) { skipTask(leaseToken: $t, metadata: {reason: \"not needed\"}) { session name status metadata } }",
            json!({"t": skippy["leaseToken"]}),
        )
        .await;
    assert_eq!(data["skipTask"]["session"], S);
    assert_eq!(data["skipTask"]["status"], "SKIPPED");
    assert_eq!(data["skipTask"]["metadata"]["reason"], "not needed");
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a DateTime string"))
        .expect("an RFC 3339 DateTime")
}
