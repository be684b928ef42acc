//! Measures external-worker throughput: claims + completions per second over
//! HTTP, with N concurrent workers, on SQLite and (when
//! `TRIGGERS_TEST_POSTGRES_URL` is set) PostgreSQL.
//!
//! For each backend and each N it starts the real server on a fresh database
//! (the test kit's), enqueues the instances (`THROUGHPUT_SESSIONS`, default 20,
//! sessions, each with one `worker` task that makes an instance per `tick`),
//! then runs N loops of `claimTasks(max: BATCH)` +
//! `completeTask` per claim until every instance is finished, and prints the
//! rate and how many claims came back empty before the end.
//!
//! ```text
//! cargo run --release --example claim_throughput
//! THROUGHPUT_INSTANCES=2000 THROUGHPUT_SESSIONS=20 THROUGHPUT_WORKERS=1,4,8 THROUGHPUT_BATCH=1 \
//!   TRIGGERS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release --example claim_throughput
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triggers::domain::{SessionUid, TriggerName};
use triggers::testkit::db::{create_schema, drop_schema, postgres_server};
use triggers::testkit::{TestApp, TestDb};
use triggers::Engine;

const CLAIM: &str = "mutation($w: String!, $m: Int) {
  claimTasks(worker: $w, max: $m, leaseSeconds: 60) { leaseToken }
}";
const COMPLETE: &str = "mutation($t: String!) {
  completeTask(leaseToken: $t, result: {ok: true}) { status }
}";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let instances: usize = env_or("THROUGHPUT_INSTANCES", 2000);
    let batch: u32 = env_or("THROUGHPUT_BATCH", 1);
    let sessions: usize = env_or("THROUGHPUT_SESSIONS", 20);
    let workers: Vec<usize> = std::env::var("THROUGHPUT_WORKERS")
        .unwrap_or_else(|_| "1,4,8".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let postgres = postgres_server();
    println!(
        "{instances} worker instances in {sessions} sessions, claimTasks(max: {batch}) + completeTask over HTTP, \
         nproc {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &n in &workers {
        let db = TestDb::sqlite();
        measure("sqlite", &db.url, instances, sessions, n, batch).await?;
    }
    match &postgres {
        Some(base) => {
            for &n in &workers {
                let (url, schema) = create_schema(base, "throughput").await;
                let outcome = measure("postgres", &url, instances, sessions, n, batch).await;
                drop_schema(base, &schema).await;
                outcome?;
            }
        }
        None => println!("postgres: skipped (TRIGGERS_TEST_POSTGRES_URL not set)"),
    }
    Ok(())
}

/// One run: a fresh server over `url`, `instances` queued, `workers` loops.
async fn measure(
    backend: &str,
    url: &str,
    instances: usize,
    sessions: usize,
    workers: usize,
    batch: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::open(url).await?;
    let tasks =
        json!({"t_work": {"after": [], "andEvery": "tick", "run": "jobs.work", "using": "worker"}});
    let uids = (0..sessions)
        .map(|s| SessionUid::parse(format!("load:{s}")))
        .collect::<Result<Vec<_>, _>>()?;
    for uid in &uids {
        engine.configure(uid, &tasks).await?;
    }
    let tick = TriggerName::parse("tick")?;
    for i in 0..instances {
        engine
            .fire_json(&uids[i % sessions], &tick, Some(json!({"i": i})), None)
            .await?;
    }
    let app = TestApp::serve(engine, Default::default()).await;
    let endpoint = app.url("/graphql");

    let http = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    // Claims that came back empty before every instance was finished: contention
    // (every candidate taken by a faster worker) or, at the very end, a queue
    // whose last instances are claimed but not yet completed.
    let empty = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut loops = Vec::new();
    for w in 0..workers {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        let (done, empty) = (done.clone(), empty.clone());
        let total = instances as u64;
        loops.push(tokio::spawn(async move {
            let worker = format!("bench-{w}");
            while done.load(Ordering::Relaxed) < total {
                let data = post(&http, &endpoint, CLAIM, json!({"w": worker, "m": batch})).await?;
                let claims = data["claimTasks"].as_array().cloned().unwrap_or_default();
                if claims.is_empty() {
                    empty.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for claim in claims {
                    post(
                        &http,
                        &endpoint,
                        COMPLETE,
                        json!({"t": claim["leaseToken"]}),
                    )
                    .await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        }));
    }
    for handle in loops {
        handle.await??;
    }
    let elapsed = started.elapsed();
    let completed = done.load(Ordering::Relaxed);
    let empty = empty.load(Ordering::Relaxed);
    app.stop().await;
    if completed as usize != instances {
        return Err(format!("completed {completed} of {instances}").into());
    }
    let seconds = elapsed.as_secs_f64();
    println!(
        "{backend:8} N={workers:<2} {completed} instances in {seconds:6.2} s: \
         {:7.0} claims+completions/s ({:6.0} instances/s), {empty} empty claims",
        2.0 * completed as f64 / seconds,
        completed as f64 / seconds,
    );
    Ok(())
}

/// One GraphQL request; its `data`, or the first error as text.
async fn post(
    http: &reqwest::Client,
    endpoint: &str,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let body: Value = http
        .post(endpoint)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(error) = body.get("errors") {
        return Err(error.to_string());
    }
    Ok(body["data"].clone())
}
