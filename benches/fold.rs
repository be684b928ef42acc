//! The read side of the log: how fast events become state.
//!
//! - `fold`: `SessionState::fold` over events held in memory. The events are
//!   real: an engine on `sqlite::memory:` ticks one session of
//!   [`common::three_tasks`] `TRIGGERS_BENCH_FOLD_TICKS` times (default 5,000,
//!   about 40,000 events: fires, creations, schedules, starts, finishes and
//!   cascades) and the log is read back. `fold/session` folds that one session;
//!   `fold/1M` folds it into fresh states until at least 1,000,000 events have
//!   been folded (one iteration), the unit.
//! - `rebuild`: `Engine::rebuild` (what `triggers rebuild` runs) over a database of
//!   `TRIGGERS_BENCH_REBUILD_SESSIONS` sessions (default 100) of
//!   `TRIGGERS_BENCH_REBUILD_TICKS` ticks each (default 100), events/s. It reads
//!   every log, folds it, and puts every projection and snapshot right: over
//!   projections that are already right (`rebuild/<db>`, the usual case, which
//!   writes only what differs) and over emptied ones (`rebuild/<db>-empty`:
//!   instances, queue and snapshots deleted before each run, outside the clock,
//!   so every row is written). Built with SQLite `synchronous = OFF`, rebuilt
//!   with the durable default.

mod common;

use std::time::{Duration, Instant};

use common::Database;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use triggers::domain::{Event, SessionState};
use triggers::Engine;

/// The unit for `fold`.
const MILLION: usize = 1_000_000;

/// A real event stream: one session ticked `ticks` times, read back from the log.
async fn event_stream(ticks: u64) -> Vec<Event> {
    let engine = Engine::builder("sqlite::memory:")
        .options(common::options())
        .open()
        .await
        .expect("in-memory engine");
    let session = &common::uid("fold");
    engine
        .configure(session, &common::three_tasks())
        .await
        .expect("configure");
    let started = Instant::now();
    for n in 0..ticks {
        common::tick(&engine, session, n).await;
    }
    let events = engine.events(session, 0, None).await.expect("events");
    eprintln!(
        "fold: {} events from {ticks} ticks in {:.1?}",
        events.len(),
        started.elapsed()
    );
    events
}

fn fold(c: &mut Criterion, rt: &Runtime) {
    let ticks = common::number_from_env("TRIGGERS_BENCH_FOLD_TICKS", 5_000);
    let events = rt.block_on(event_stream(ticks));
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("session", |b| {
        b.iter(|| SessionState::fold("fold", &events).expect("folds"))
    });
    let copies = MILLION.div_ceil(events.len().max(1));
    group.throughput(Throughput::Elements((copies * events.len()) as u64));
    group.bench_function("1M", |b| {
        b.iter(|| {
            for _ in 0..copies {
                let state = SessionState::fold("fold", &events).expect("folds");
                criterion::black_box(state);
            }
        })
    });
    group.finish();
}

/// Fills `db` with sessions for `rebuild`; returns the number of events.
async fn rebuild_data(db: &Database, sessions: u64, ticks: u64) -> u64 {
    let engine = db.fast_engine().await;
    let started = Instant::now();
    let mut handles = Vec::new();
    // Two writers at a time: enough to keep the database busy on two cores.
    for lane in 0..2 {
        let engine = engine.clone();
        handles.push(tokio::spawn(async move {
            let mut events = 0;
            for s in (lane..sessions).step_by(2) {
                let session = common::uid(&format!("rebuild:{s}"));
                engine
                    .configure(&session, &common::three_tasks())
                    .await
                    .expect("configure");
                for n in 0..ticks {
                    engine
                        .fire(&session, common::tick_trigger(), common::kwargs(n), None)
                        .await
                        .expect("fire");
                }
                engine.wait_idle().await;
                events += engine.session(&session).await.expect("state").version();
            }
            events
        }));
    }
    let mut events = 0;
    for handle in handles {
        events += handle.await.expect("builder");
    }
    eprintln!(
        "rebuild/{}: {sessions} sessions, {events} events built in {:.1?}",
        db.label,
        started.elapsed()
    );
    events
}

fn rebuild(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let sessions = common::number_from_env("TRIGGERS_BENCH_REBUILD_SESSIONS", 100);
    let ticks = common::number_from_env("TRIGGERS_BENCH_REBUILD_TICKS", 100);
    let mut group = c.benchmark_group("rebuild");
    for db in dbs {
        let events = rt.block_on(rebuild_data(db, sessions, ticks));
        let engine = rt.block_on(db.engine());
        group.throughput(Throughput::Elements(events));
        for empty in [false, true] {
            let id = if empty {
                format!("{}-empty", db.label)
            } else {
                db.label.to_owned()
            };
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let engine = engine.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            if empty {
                                db.empty_projections().await;
                            }
                            let report = engine.rebuild().await.expect("rebuild");
                            assert_eq!(report.events, events, "rebuild folds every event");
                            total += report.elapsed;
                        }
                        total
                    }
                })
            });
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    fold(c, &rt);
    let dbs = rt.block_on(Database::all());
    rebuild(c, &rt, &dbs);
}

criterion_group! {
    name = fold_and_rebuild;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(fold_and_rebuild);
