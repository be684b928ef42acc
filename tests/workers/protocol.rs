//! The claim protocol over GraphQL: exactly-once claims under contention, lease
//! expiry and re-claim, stale tokens, retries with a cooldown, queue routing, and
//! a report that outlives a server restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triggers::engine::EngineOptions;

use crate::support::{kinds, spawn_app, spawn_app_with_options, test_options, TestApp, TestDb, S};

on_both_backends!(
    concurrent_claimers_get_each_instance_exactly_once,
    a_worker_that_stops_reporting_loses_the_task_to_another_worker,
    stale_lease_tokens_are_refused_and_write_nothing,
    a_retry_with_a_cooldown_is_claimable_only_after_the_cooldown,
    a_retry_beyond_max_retries_fails_with_max_retries_exceeded,
    worker_queues_route_by_name_and_null_means_default,
    a_lease_outlives_a_server_restart,
);

/// Options without the sweeper: only the test writes to the log.
fn without_sweeper() -> EngineOptions {
    EngineOptions {
        sweep_interval: None,
        ..test_options()
    }
}

/// A worker task `t_work` that makes one instance per `tick`.
async fn configure_ticks(app: &TestApp, session: &str, extra: Value) {
    let mut task = json!({"after": [], "andEvery": "tick", "run": "jobs.work", "using": "worker"});
    task.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.configure(session, json!({ "t_work": task })).await;
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

async fn concurrent_claimers_get_each_instance_exactly_once(db: TestDb) {
    let app = Arc::new(spawn_app(&db).await);
    let sessions: Vec<String> = (0..4).map(|i| format!("batch:{i}")).collect();
    for session in &sessions {
        configure_ticks(&app, session, json!({})).await;
        for n in 0..10 {
            app.fire(session, "tick", json!({ "n": n })).await;
        }
    }
    let claimed = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut claimers = Vec::new();
    for w in 0..8 {
        let (app, claimed) = (app.clone(), claimed.clone());
        claimers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while claimed.lock().unwrap().len() < 40 {
                assert!(Instant::now() < deadline, "the claimers did not finish");
                let claims = app.claim(&format!("w{w}"), None, 3, 30).await;
                if claims.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                for claim in claims {
                    let key = (
                        claim["session"].as_str().unwrap().to_owned(),
                        claim["instance"].as_str().unwrap().to_owned(),
                    );
                    assert_eq!(claim["attempt"], 1);
                    claimed.lock().unwrap().push(key);
                    let token = claim["leaseToken"].as_str().unwrap();
                    let (_, body) = app.complete(token, json!({ "by": w })).await;
                    assert!(body.get("errors").is_none(), "completeTask: {body:#}");
                }
            }
        }));
    }
    for claimer in claimers {
        claimer.await.expect("a claimer panicked");
    }
    let claimed = claimed.lock().unwrap().clone();
    let distinct: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 40, "claims: {claimed:?}");
    assert_eq!(
        distinct.len(),
        40,
        "an instance was claimed twice: {claimed:?}"
    );
    for session in &sessions {
        for n in 0..10 {
            let instance = app.instance(session, &format!("t_work#{n}")).await;
            assert_eq!(instance["status"], "FINISHED", "{instance:#}");
            assert_eq!(
                count(&kinds(&instance), "InstanceStarted"),
                1,
                "{instance:#}"
            );
        }
    }
    assert!(app.claim("late", None, 10, 30).await.is_empty());
}

async fn a_worker_that_stops_reporting_loses_the_task_to_another_worker(db: TestDb) {
    let app = spawn_app(&db).await;
    configure_ticks(&app, S, json!({})).await;
    app.fire(S, "tick", json!({"page": 1})).await;
    let first = app.claim("crashed", None, 1, 1).await;
    assert_eq!(first.len(), 1);
    let first = &first[0];
    // "crashed" never reports; once its 1 s lease ends another worker gets it.
    let second = app.claim_eventually("healthy", None, 30).await;
    assert_eq!(second["instance"], first["instance"]);
    assert_eq!(second["attempt"], 1, "the same instance, run again");
    assert_eq!(second["kwargs"], first["kwargs"]);
    let (_, body) = app
        .complete(second["leaseToken"].as_str().unwrap(), json!({"rows": 10}))
        .await;
    assert_eq!(
        body["data"]["completeTask"]["status"], "FINISHED",
        "{body:#}"
    );

    let instance = app.instance(S, "t_work#0").await;
    let kinds = kinds(&instance);
    assert_eq!(count(&kinds, "InstanceStarted"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "InstanceLeaseExpired"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "InstanceFinished"), 1, "{kinds:?}");
    let started: Vec<&Value> = instance["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "InstanceStarted")
        .collect();
    let workers: Vec<String> = started.iter().map(|e| e["data"].to_string()).collect();
    assert!(workers[0].contains("crashed"), "{workers:?}");
    assert!(workers[1].contains("healthy"), "{workers:?}");
    assert_eq!(instance["result"], json!({"rows": 10}));

    // The first worker wakes up and reports: refused, nothing written.
    let version = app.version(S).await;
    let (_, body) = app
        .complete(first["leaseToken"].as_str().unwrap(), json!({"late": true}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body:#}"
    );
    assert_eq!(app.version(S).await, version);
    app.stop().await;
}

async fn stale_lease_tokens_are_refused_and_write_nothing(db: TestDb) {
    let app = spawn_app_with_options(&db, without_sweeper()).await;
    configure_ticks(&app, S, json!({})).await;
    app.fire(S, "tick", json!({})).await;
    let claim = app.claim("w1", None, 1, 1).await.remove(0);
    let token = claim["leaseToken"].as_str().unwrap().to_owned();
    // The one fixed wait: for the lease to run out (no sweeper runs here).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let version = app.version(S).await;

    let refusals = [
        (
            "completeTask",
            "mutation($t: String!) { completeTask(leaseToken: $t, result: {}) { name } }",
        ),
        (
            "failTask",
            "mutation($t: String!) { failTask(leaseToken: $t, error: \"x\") { name } }",
        ),
        (
            "skipTask",
            "mutation($t: String!) { skipTask(leaseToken: $t) { name } }",
        ),
        (
            "heartbeat",
            "mutation($t: String!) { heartbeat(leaseToken: $t) }",
        ),
    ];
    for (what, query) in refusals {
        for token in [token.as_str(), "no-such-token"] {
            let (code, message) = app.error(query, json!({ "t": token })).await;
            assert_eq!(code, "CONFLICT", "{what} with {token}: {message}");
        }
    }
    assert_eq!(app.version(S).await, version, "a refused report wrote");
    let instance = app.instance(S, "t_work#0").await;
    assert_eq!(instance["status"], "RUNNING");

    // Re-claimed: the new token works, the old one still does not.
    let again = app.claim("w2", None, 1, 30).await.remove(0);
    assert_eq!(again["instance"], "t_work#0");
    let version = app.version(S).await;
    let (_, body) = app.complete(&token, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body:#}"
    );
    assert_eq!(app.version(S).await, version);
    let (_, body) = app
        .complete(again["leaseToken"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(
        body["data"]["completeTask"]["status"], "FINISHED",
        "{body:#}"
    );
    // A token is spent once its report is recorded.
    let (_, body) = app
        .complete(again["leaseToken"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body:#}"
    );
    app.stop().await;
}

const FAIL_RETRY: &str = "mutation($t: String!, $c: Int) {
  failTask(leaseToken: $t, error: \"busy\", errorType: \"app.Busy\", retry: true,
           cooldownSeconds: $c) { name status metadata }
}";

async fn a_retry_with_a_cooldown_is_claimable_only_after_the_cooldown(db: TestDb) {
    let app = spawn_app(&db).await;
    configure_ticks(&app, S, json!({"withParams": {"tick": {"model": "m1"}}})).await;
    app.fire(S, "tick", json!({"page": 1})).await;
    let claim = app.claim("w1", None, 1, 30).await.remove(0);
    assert_eq!(claim["attempt"], 1);
    assert_eq!(claim["kwargs"], json!({"tick": {"model": "m1", "page": 1}}));
    let failed_at = Instant::now();
    let data = app
        .data(FAIL_RETRY, json!({"t": claim["leaseToken"], "c": 1}))
        .await;
    // The failed attempt is replayed at once (the clone waits for its cooldown).
    assert_eq!(data["failTask"]["status"], "REPLAYED", "{data:#}");
    assert!(
        app.claim("w2", None, 1, 30).await.is_empty(),
        "the clone was claimable during its cooldown"
    );
    let clone = app.claim_eventually("w2", None, 30).await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(900),
        "claimed after {:?}",
        failed_at.elapsed()
    );
    assert_eq!(clone["instance"], "t_work#1");
    assert_eq!(clone["attempt"], 2);
    assert_eq!(clone["kwargs"], claim["kwargs"]);
    let replayed = app.instance(S, "t_work#0").await;
    assert_eq!(replayed["status"], "REPLAYED", "{replayed:#}");
    let clone_instance = app.instance(S, "t_work#1").await;
    assert_eq!(clone_instance["parent"], "t_work#0");
    assert_eq!(clone_instance["depth"], 1);
    app.stop().await;
}

async fn a_retry_beyond_max_retries_fails_with_max_retries_exceeded(db: TestDb) {
    let app = spawn_app(&db).await;
    configure_ticks(&app, S, json!({"maxRetries": 1})).await;
    app.fire(S, "tick", json!({})).await;
    let first = app.claim("w", None, 1, 30).await.remove(0);
    app.data(FAIL_RETRY, json!({"t": first["leaseToken"], "c": 0}))
        .await;
    let second = app.claim_eventually("w", None, 30).await;
    assert_eq!(second["attempt"], 2);
    let version = app.version(S).await;
    app.data(FAIL_RETRY, json!({"t": second["leaseToken"], "c": 0}))
        .await;
    assert!(app.version(S).await > version);
    let last = app.instance(S, "t_work#1").await;
    assert_eq!(last["status"], "FAILED", "{last:#}");
    assert_eq!(
        last["metadata"]["exceptionType"], "MaxRetriesExceeded",
        "{last:#}"
    );
    assert!(
        app.instance(S, "t_work#2").await.is_null(),
        "no third attempt"
    );
    assert!(app.claim("w", None, 10, 30).await.is_empty());
    app.stop().await;
}

async fn worker_queues_route_by_name_and_null_means_default(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_plain": {"after": ["go"], "run": "jobs.plain", "using": "worker"},
            "t_gpu": {"after": ["go"], "run": "jobs.render", "using": "worker:gpu"},
            "t_unknown": {"after": ["go"], "run": "jobs.nobody.registered"},
        }),
    )
    .await;
    app.fire(S, "go", json!({})).await;
    let gpu = app.claim("g", Some("gpu"), 10, 30).await;
    let gpu: Vec<&str> = gpu
        .iter()
        .map(|c| c["instance"].as_str().unwrap())
        .collect();
    assert_eq!(gpu, ["t_gpu#0"]);
    let default = app.claim("d", None, 10, 30).await;
    let mut default: Vec<&str> = default
        .iter()
        .map(|c| c["instance"].as_str().unwrap())
        .collect();
    default.sort();
    assert_eq!(default, ["t_plain#0", "t_unknown#0"]);
    assert!(app.claim("d", Some("default"), 10, 30).await.is_empty());
    assert!(app.claim("g", Some("gpu"), 10, 30).await.is_empty());
    let (code, _) = app
        .error(
            "mutation { claimTasks(worker: \"x\", queue: \"inline\") { leaseToken } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    app.stop().await;
}

async fn a_lease_outlives_a_server_restart(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_fetch": {"after": ["go"], "run": "jobs.fetch", "using": "worker"},
            "t_next": {"after": ["t_fetch"], "run": "jobs.next", "using": "worker"},
        }),
    )
    .await;
    app.fire(S, "go", json!({"id": 7})).await;
    let claim = app.claim("w", None, 1, 60).await.remove(0);
    app.stop().await;

    let app = spawn_app(&db).await;
    let (_, body) = app
        .complete(claim["leaseToken"].as_str().unwrap(), json!({"rows": 3}))
        .await;
    assert_eq!(
        body["data"]["completeTask"]["status"], "FINISHED",
        "{body:#}"
    );
    assert_eq!(body["data"]["completeTask"]["session"], S);
    let next = app.claim("w", None, 1, 60).await.remove(0);
    assert_eq!(next["instance"], "t_next#0");
    assert_eq!(next["kwargs"], json!({"t_fetch": {"rows": 3}}));
    app.stop().await;
}
