//! `graphql_session`: the session query a dashboard polls,
//! `{ session(uid) { instances { name status kwargs } unresolvedTasks { name } } }`,
//! for a session with 1,000 instances (`TRIGGERS_BENCH_INSTANCES` to change it).
//!
//! Measured two ways: `in_process` executes the schema of `triggers::graphql`
//! directly (resolvers, engine cache, serialisation); `http` posts the query to
//! `triggers::http::serve` on 127.0.0.1:0 (adds axum, JSON over a keep-alive
//! loopback connection). Besides criterion's means, each prints p50/p95/p99 over
//! `LATENCY_SAMPLES` sequential queries, the issue's unit (p99 < 10 ms on SQLite).

mod common;

use std::time::{Duration, Instant};

use common::Database;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use triggers::graphql::TriggersSchema;

/// The session every query reads.
const SESSION: &str = "dashboard";

/// Sequential queries behind each printed percentile line.
const LATENCY_SAMPLES: usize = 500;

fn query() -> String {
    format!(
        r#"{{ session(uid: "{SESSION}") {{ instances {{ name status kwargs }} unresolvedTasks {{ name }} }} }}"#
    )
}

/// Runs the query in process; panics on a GraphQL error.
async fn in_process(schema: &TriggersSchema, query: &str) -> usize {
    let response = schema.execute(query).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    match response.data {
        async_graphql::Value::Object(ref data) => data.len(),
        _ => 0,
    }
}

/// Posts the query over HTTP; returns the number of instances answered.
async fn over_http(client: &reqwest::Client, endpoint: &str, query: &str) -> usize {
    let body: Value = client
        .post(endpoint)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a GraphQL body");
    assert!(body.get("errors").is_none(), "{body}");
    body.pointer("/data/session/instances")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn graphql_session(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let instances = common::number_from_env("TRIGGERS_BENCH_INSTANCES", 1_000);
    let query = query();
    let mut group = c.benchmark_group("graphql_session");
    for db in dbs {
        rt.block_on(async {
            let session = &common::uid(SESSION);
            let builder = db.fast_engine().await;
            builder
                .configure(session, &common::three_tasks())
                .await
                .expect("configure");
            let started = Instant::now();
            // Each tick adds one t_every instance; the two one-shot tasks add one each.
            for n in 0..instances.saturating_sub(2) {
                common::tick(&builder, session, n).await;
            }
            let state = builder.session(session).await.expect("state");
            eprintln!(
                "graphql_session/{}: {} instances, version {}, built in {:.1?}",
                db.label,
                state.instances().len(),
                state.version(),
                started.elapsed()
            );
        });
        let engine = rt.block_on(db.engine());
        let schema = triggers::graphql::schema(engine.clone(), Default::default());

        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let endpoint = format!(
            "http://{}/graphql",
            listener.local_addr().expect("an address")
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(triggers::http::serve(
            engine.clone(),
            listener,
            Default::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();
        let answered = rt.block_on(over_http(&client, &endpoint, &query));
        assert_eq!(answered as u64, instances, "the query sees every instance");

        rt.block_on(async {
            let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
            for _ in 0..LATENCY_SAMPLES {
                let started = Instant::now();
                in_process(&schema, &query).await;
                samples.push(started.elapsed());
            }
            common::print_latencies(
                &format!("graphql_session/in_process/{}", db.label),
                &mut samples,
            );
            let mut samples: Vec<Duration> = Vec::with_capacity(LATENCY_SAMPLES);
            for _ in 0..LATENCY_SAMPLES {
                let started = Instant::now();
                over_http(&client, &endpoint, &query).await;
                samples.push(started.elapsed());
            }
            common::print_latencies(&format!("graphql_session/http/{}", db.label), &mut samples);
        });

        group.bench_function(BenchmarkId::new("in_process", db.label), |b| {
            b.to_async(rt).iter(|| in_process(&schema, &query))
        });
        group.bench_function(BenchmarkId::new("http", db.label), |b| {
            b.to_async(rt)
                .iter(|| over_http(&client, &endpoint, &query))
        });
        let _ = stop.send(());
        rt.block_on(server)
            .expect("the server task")
            .expect("the server stops cleanly");
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dbs = rt.block_on(Database::all());
    graphql_session(c, &rt, &dbs);
}

criterion_group! {
    name = graphql;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(graphql);
