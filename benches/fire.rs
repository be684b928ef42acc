//! The write path, measured side by side with the database's own ceiling.
//!
//! - `raw_commit`: one transaction inserting one event-shaped row into a scratch
//!   table, through a pool opened exactly as the store opens its own.
//! - `fire_one_session`: sequential `tick` fires on one session of
//!   [`common::three_tasks`], each followed by `wait_idle` (the inline DevNull run
//!   and its cascade commit before the next fire).
//! - `fire_many_sessions`: 1 and 32 tokio tasks, each taking a fresh session of
//!   the questionnaire workflow through its five fires, then `wait_idle`.
//!   Throughput is fires; the 32/1 ratio is the concurrency gain. SQLite runs
//!   twice: as configured (`FULL` by default) and as `sqlite-normal`.
//!
//! Runs on a fresh SQLite file (WAL, `synchronous = FULL` unless
//! `TRIGGERS_SQLITE_SYNCHRONOUS` says otherwise), and on a fresh PostgreSQL
//! schema when `TRIGGERS_TEST_POSTGRES_URL` is set.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Database;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use triggers::domain::{SessionUid, TriggerName};
use triggers::store::postgres::PostgresStore;
use triggers::store::sqlite::SqliteStore;
use triggers::Engine;

/// The scratch table `raw_commit` appends to: the columns of `events`.
const RAW_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (\
     session TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, \
     format INTEGER NOT NULL, data TEXT NOT NULL, caused_by INTEGER, instance TEXT, \
     trigger_name TEXT, at TEXT NOT NULL, PRIMARY KEY (session, seq))";
const RAW_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (\
     session TEXT COLLATE \"C\" NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, \
     format INTEGER NOT NULL, data TEXT NOT NULL, caused_by BIGINT, \
     instance TEXT COLLATE \"C\", trigger_name TEXT, at TIMESTAMPTZ NOT NULL, \
     PRIMARY KEY (session, seq))";
const RAW_INSERT_SQLITE: &str = "INSERT INTO bench_raw_events \
     (session, seq, kind, format, data, caused_by, instance, trigger_name, at) \
     VALUES (?1, ?2, 'TriggerFired', 1, ?3, NULL, NULL, 'tick', ?4)";
const RAW_INSERT_POSTGRES: &str = "INSERT INTO bench_raw_events \
     (session, seq, kind, format, data, caused_by, instance, trigger_name, at) \
     VALUES ($1, $2, 'TriggerFired', 1, $3, NULL, NULL, 'tick', $4)";

/// A typical `TriggerFired` payload.
const RAW_DATA: &str =
    r#"{"trigger":"tick","kwargs":{"page":1,"answers":{"q1":"yes","q2":3}},"causedBy":null}"#;

/// Concurrent tasks of `fire_many_sessions`.
const CONCURRENCY: [usize; 2] = [1, 32];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The raw ceiling: one row, one transaction, same pool settings as the store.
enum Raw {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Raw {
    async fn open(db: &Database) -> Raw {
        if db.label == "sqlite" {
            let store = SqliteStore::connect(&db.url, &common::store_options().sqlite)
                .await
                .expect("sqlite opens");
            sqlx::query(RAW_TABLE_SQLITE)
                .execute(store.pool())
                .await
                .expect("scratch table");
            Raw::Sqlite(store)
        } else {
            let store = PostgresStore::connect(&db.url, &common::store_options().postgres)
                .await
                .expect("postgres opens");
            sqlx::query(RAW_TABLE_POSTGRES)
                .execute(store.pool())
                .await
                .expect("scratch table");
            Raw::Postgres(store)
        }
    }

    async fn commit(&self, seq: i64) {
        let at = chrono::Utc::now();
        match self {
            Raw::Sqlite(store) => {
                // The store takes the write lock up front the same way.
                let mut tx = store
                    .pool()
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .expect("begin");
                sqlx::query(RAW_INSERT_SQLITE)
                    .bind("raw")
                    .bind(seq)
                    .bind(RAW_DATA)
                    .bind(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            }
            Raw::Postgres(store) => {
                let mut tx = store.pool().begin().await.expect("begin");
                sqlx::query(RAW_INSERT_POSTGRES)
                    .bind("raw")
                    .bind(seq)
                    .bind(RAW_DATA)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            }
        }
    }
}

fn raw_commit(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let mut group = c.benchmark_group("raw_commit");
    group.throughput(Throughput::Elements(1));
    for db in dbs {
        let raw = rt.block_on(Raw::open(db));
        let seq = AtomicU64::new(0);
        group.bench_function(BenchmarkId::from_parameter(db.label), |b| {
            b.to_async(rt).iter(|| {
                let seq = seq.fetch_add(1, Ordering::Relaxed) as i64;
                raw.commit(seq)
            })
        });
    }
    group.finish();
}

fn fire_one_session(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let mut group = c.benchmark_group("fire_one_session");
    group.throughput(Throughput::Elements(1));
    for db in dbs {
        let engine = rt.block_on(db.engine());
        let session = &common::uid("one");
        rt.block_on(async {
            engine
                .configure(session, &common::three_tasks())
                .await
                .expect("configure");
        });
        let n = AtomicU64::new(0);
        group.bench_function(BenchmarkId::from_parameter(db.label), |b| {
            b.to_async(rt)
                .iter(|| common::tick(&engine, session, n.fetch_add(1, Ordering::Relaxed)))
        });
        let state = rt.block_on(engine.session(session)).expect("state");
        let ticks = n.load(Ordering::Relaxed).max(1);
        eprintln!(
            "fire_one_session/{}: {} ticks took the session to version {} ({:.1} events per tick)",
            db.label,
            ticks,
            state.version(),
            (state.version() - 1) as f64 / ticks as f64
        );
    }
    group.finish();
}

fn fire_many_sessions(c: &mut Criterion, rt: &Runtime, dbs: &[Database]) {
    let mut group = c.benchmark_group("fire_many_sessions");
    // SQLite also with `synchronous = NORMAL`, on a file of its own.
    let normal = Database::sqlite();
    let mut engines = Vec::new();
    for db in dbs {
        engines.push((db.label.to_owned(), rt.block_on(db.engine())));
        if db.label == "sqlite" {
            let mut store = common::store_options();
            store.sqlite.synchronous = triggers::store::Synchronous::Normal;
            let engine = rt.block_on(normal.engine_with(store));
            engines.push(("sqlite-normal".to_owned(), engine));
        }
    }
    for (label, engine) in engines {
        let next = Arc::new(AtomicU64::new(0));
        for tasks in CONCURRENCY {
            let fires = (tasks * triggers::workload::JOURNEY.len()) as u64;
            group.throughput(Throughput::Elements(fires));
            group.bench_function(BenchmarkId::new(&label, tasks), |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let engine = engine.clone();
                    let next = next.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += respondents(&engine, &next, tasks).await;
                        }
                        total
                    }
                })
            });
        }
    }
    group.finish();
}

/// `tasks` respondents at once, each on a fresh questionnaire session (configured
/// before the clock starts); the time until every fire and inline run committed.
async fn respondents(engine: &Engine, next: &AtomicU64, tasks: usize) -> Duration {
    let first = next.fetch_add(tasks as u64, Ordering::Relaxed);
    let sessions: Vec<SessionUid> = (first..first + tasks as u64)
        .map(|i| common::uid(&format!("respondent:{i}")))
        .collect();
    let journey: Vec<TriggerName> = triggers::workload::JOURNEY
        .iter()
        .map(|t| common::trigger(t))
        .collect();
    let configured = sessions.iter().map(|s| {
        let engine = engine.clone();
        let s = s.clone();
        tokio::spawn(async move {
            engine
                .configure(&s, &triggers::workload::questionnaire())
                .await
                .expect("configure")
        })
    });
    for handle in futures::future::join_all(configured).await {
        handle.expect("configure task");
    }
    let started = Instant::now();
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let engine = engine.clone();
            let journey = journey.clone();
            tokio::spawn(async move {
                for (i, trigger) in journey.iter().enumerate() {
                    engine
                        .fire(&session, trigger, common::kwargs(i as u64), None)
                        .await
                        .expect("fire");
                }
            })
        })
        .collect();
    for handle in futures::future::join_all(handles).await {
        handle.expect("respondent task");
    }
    engine.wait_idle().await;
    started.elapsed()
}

/// Fires measured through a counting store: store calls, commits and store time
/// per `fire_one_session` tick, printed before the benches run.
async fn profile_fires(db: &Database) {
    const WARM: u64 = 50;
    const TICKS: u64 = 500;
    let store = triggers::store::open_with(&db.url, &common::store_options())
        .await
        .expect("store opens");
    let counting = Arc::new(common::profile::Counting::new(store));
    let engine = Engine::with_store(
        counting.clone(),
        triggers::engine::Registry::default(),
        Vec::new(),
        common::options(),
    )
    .await;
    let session = &common::uid("profile");
    engine
        .configure(session, &common::three_tasks())
        .await
        .expect("configure");
    for n in 0..WARM {
        common::tick(&engine, session, n).await;
    }
    counting.reset();
    let (statements_before, decisions_before) = triggers::store::write_counts();
    let started = Instant::now();
    for n in WARM..WARM + TICKS {
        common::tick(&engine, session, n).await;
    }
    let wall = started.elapsed().as_secs_f64() * 1e3 / TICKS as f64;
    let (statements, decisions) = triggers::store::write_counts();
    let (statements, decisions) = (statements - statements_before, decisions - decisions_before);
    let (calls, in_store) = counting.report(TICKS);
    eprintln!(
        "profile/{}: {wall:.3} ms/fire wall, {in_store:.3} ms/fire in the store ({:.0}%): {calls}",
        db.label,
        100.0 * in_store / wall
    );
    eprintln!(
        "profile/{}: {:.2} write statements per decision ({statements} for {decisions} \
         decisions, BEGIN and COMMIT included), {:.2} per fire",
        db.label,
        statements as f64 / decisions.max(1) as f64,
        statements as f64 / TICKS as f64
    );
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let dbs = rt.block_on(Database::all());
    for db in &dbs {
        rt.block_on(profile_fires(db));
    }
    raw_commit(c, &rt, &dbs);
    fire_one_session(c, &rt, &dbs);
    fire_many_sessions(c, &rt, &dbs);
}

criterion_group! {
    name = fire;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(fire);
