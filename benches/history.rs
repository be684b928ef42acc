//! `fire_history`: the `fire_one_session` fire (see `fire.rs`) measured at
//! session versions 10, 10,000 and 100,000 (`TRIGGERS_BENCH_HISTORY=10,10000,100000`
//! to change them). A fire should cost the same however long the session's log.
//!
//! The long histories are built before measuring, with the same fire (so
//! instances pile up as they would in production), on SQLite with
//! `synchronous = OFF` to save time; the measured engine is then reopened with the
//! durable default and its cache warmed by one fire. Versions below 1,000 use a
//! fresh session per measured fire, so the measurement cannot drift the version
//! it names; the large ones drift by the fires measured (printed at the end).
//!
//! Runs on a fresh SQLite file, and on a fresh PostgreSQL schema when
//! `TRIGGERS_TEST_POSTGRES_URL` is set.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Database;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use triggers::domain::SessionUid;
use triggers::Engine;

/// Versions below this get a fresh session per measured fire.
const FRESH_BELOW: u64 = 1_000;

fn fire_history(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let sizes = common::sizes_from_env("TRIGGERS_BENCH_HISTORY", &[10, 10_000, 100_000]);
    let mut group = c.benchmark_group("fire_history");
    group.throughput(Throughput::Elements(1));
    for db in dbs {
        // Build the long histories first, fast, then measure on a durable engine.
        rt.block_on(async {
            let builder = db.fast_engine().await;
            for &size in sizes.iter().filter(|&&s| s >= FRESH_BELOW) {
                common::build_history(&builder, &common::uid(&format!("history:{size}")), size)
                    .await;
            }
        });
        let engine = rt.block_on(db.engine());
        for &size in &sizes {
            let id = BenchmarkId::new(db.label, size);
            let n = AtomicU64::new(0);
            if size < FRESH_BELOW {
                let fresh = AtomicU64::new(0);
                group.bench_function(id, |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let engine = engine.clone();
                        let first = fresh.fetch_add(iters, Ordering::Relaxed);
                        async move {
                            let mut total = Duration::ZERO;
                            for i in first..first + iters {
                                let session = common::uid(&format!("fresh:{size}:{i}"));
                                quiet_build(&engine, &session, size).await;
                                let started = Instant::now();
                                common::tick(&engine, &session, i).await;
                                total += started.elapsed();
                            }
                            total
                        }
                    })
                });
                eprintln!(
                    "fire_history/{}/{size}: {} fresh sessions",
                    db.label,
                    fresh.load(Ordering::Relaxed)
                );
            } else {
                let session = common::uid(&format!("history:{size}"));
                // Load the snapshot and tail into the cache outside the measurement.
                rt.block_on(common::tick(&engine, &session, 0));
                let before = rt.block_on(engine.session(&session)).expect("state");
                group.bench_function(id, |b| {
                    b.to_async(rt)
                        .iter(|| common::tick(&engine, &session, n.fetch_add(1, Ordering::Relaxed)))
                });
                let after = rt.block_on(engine.session(&session)).expect("state");
                eprintln!(
                    "fire_history/{}/{size}: measured from version {} to {} ({} instances at the end)",
                    db.label,
                    before.version(),
                    after.version(),
                    after.instances().len()
                );
            }
        }
    }
    group.finish();
}

/// A session at (at least) `version`, built with the engine's durable settings.
async fn quiet_build(engine: &Engine, session: &SessionUid, version: u64) {
    engine
        .configure(session, &common::three_tasks())
        .await
        .expect("configure");
    let mut n = 0;
    while engine.session(session).await.expect("state").version() < version {
        common::tick(engine, session, n).await;
        n += 1;
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dbs = rt.block_on(Database::all());
    fire_history(c, &rt, &dbs);
}

criterion_group! {
    name = history;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(history);
