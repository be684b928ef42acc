//! What every bench shares: the databases they run on (a fresh SQLite file in
//! WAL mode; a fresh PostgreSQL schema of the test kit when
//! `TRIGGERS_TEST_POSTGRES_URL` is set), the workflows they fire, and engines
//! opened with bench-friendly options.
//!
//! Each bench binary uses a subset of these helpers, hence the `dead_code` allow.
#![allow(dead_code)]

pub(crate) mod profile;

/// The allocator `triggers serve` runs with (src/main.rs), so the benches measure
/// the engine as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triggers::domain::{JsonObject, SessionUid, TriggerName};
use triggers::engine::EngineOptions;
use triggers::store::{StoreOptions, Synchronous};
use triggers::testkit::db::{create_schema, execute_sql, postgres_server};
use triggers::testkit::TestDb;
use triggers::Engine;

/// The SQLite `synchronous` mode the benches run with (`FULL` unless set), the
/// variable `triggers serve` reads too.
pub(crate) const SQLITE_SYNCHRONOUS_ENV: &str = "TRIGGERS_SQLITE_SYNCHRONOUS";

/// Most decisions per group commit, on both backends, unless set (the default).
pub(crate) const MAX_GROUP_ENV: &str = "TRIGGERS_MAX_GROUP";

/// The store settings the benches run with: the defaults, with the synchronous
/// mode and group size from [`SQLITE_SYNCHRONOUS_ENV`] and [`MAX_GROUP_ENV`].
pub(crate) fn store_options() -> StoreOptions {
    let mut options = StoreOptions::default();
    if let Ok(mode) = std::env::var(SQLITE_SYNCHRONOUS_ENV) {
        options.sqlite.synchronous = mode.parse().expect(SQLITE_SYNCHRONOUS_ENV);
    }
    if let Ok(n) = std::env::var(MAX_GROUP_ENV) {
        let n: usize = n.parse().expect(MAX_GROUP_ENV);
        options.sqlite.max_group = n;
        options.postgres.max_group = n;
    }
    options
}

/// One database a bench runs on. Dropping it removes the SQLite file (the
/// PostgreSQL schema is left for inspection; it is named `b_<uuid>`).
pub(crate) struct Database {
    /// `sqlite` or `postgres`: the bench id's suffix.
    pub(crate) label: &'static str,
    /// The URL to open it with.
    pub(crate) url: String,
    /// Keeps the SQLite file's directory alive.
    _sqlite: Option<TestDb>,
}

impl Database {
    /// A fresh SQLite file (WAL mode; `synchronous` as the environment says,
    /// `FULL` by default) in a temporary directory.
    pub(crate) fn sqlite() -> Database {
        let db = TestDb::sqlite();
        Database {
            label: "sqlite",
            url: db.url.clone(),
            _sqlite: Some(db),
        }
    }

    /// A fresh schema on the PostgreSQL server named by
    /// [`triggers::testkit::POSTGRES_ENV`], if set.
    pub(crate) async fn postgres() -> Option<Database> {
        let base = postgres_server()?;
        let (url, _schema) = create_schema(&base, "b").await;
        Some(Database {
            label: "postgres",
            url,
            _sqlite: None,
        })
    }

    /// SQLite always, PostgreSQL when configured.
    pub(crate) async fn all() -> Vec<Database> {
        let mut all = vec![Database::sqlite()];
        all.extend(Database::postgres().await);
        all
    }

    /// Opens an engine on this database with [`options`].
    pub(crate) async fn engine(&self) -> Engine {
        self.engine_with(store_options()).await
    }

    /// Opens an engine on this database with [`options`] and these store settings.
    pub(crate) async fn engine_with(&self, store: StoreOptions) -> Engine {
        Engine::builder(self.url.clone())
            .options(options())
            .store_options(store)
            .open()
            .await
            .expect("the bench database opens")
    }

    /// Deletes every instance row, queue row and snapshot behind the engines'
    /// backs, so that a `rebuild` has all of them to write. The log and the
    /// sessions' versions stay.
    pub(crate) async fn empty_projections(&self) {
        const EMPTY: &str = "DELETE FROM instances; DELETE FROM queue; DELETE FROM snapshots";
        execute_sql(&self.url, EMPTY).await.expect(EMPTY);
    }

    /// Opens an engine with SQLite's `synchronous = OFF` (for building history
    /// fast outside the measurement; the measured engine is opened afterwards
    /// with the durable default). No effect on PostgreSQL.
    pub(crate) async fn fast_engine(&self) -> Engine {
        let mut store = store_options();
        store.sqlite.synchronous = Synchronous::Off;
        self.engine_with(store).await
    }
}

/// Server defaults, except no background sweeper (it would add noise to the
/// measured commits; the benches never let a lease expire).
pub(crate) fn options() -> EngineOptions {
    EngineOptions {
        sweep_interval: None,
        ..EngineOptions::default()
    }
}

/// The trigger every `fire_*` bench fires on the three-task workflow.
pub(crate) const TICK: &str = "tick";

/// Three tasks: an andEvery task run inline by DevNull (each `tick` creates,
/// schedules, runs and finishes an instance, then cascades `t_every`), a
/// one-shot task also waiting on a trigger never fired, and a one-shot task
/// with `unless`. `tick` touches all three.
pub(crate) fn three_tasks() -> Value {
    json!({
        "t_every": {"after": [], "andEvery": TICK, "run": "triggers.testing.DevNull"},
        "t_waiting": {"after": [TICK, "neverFired"], "run": "triggers.testing.DevNull"},
        "t_unless": {
            "after": [TICK, "neverFired"],
            "unless": ["cancelled"],
            "run": "triggers.testing.DevNull"
        }
    })
}

/// Small kwargs, like a page of answers.
pub(crate) fn kwargs(n: u64) -> JsonObject {
    let mut kwargs = JsonObject::new();
    kwargs.insert("page".into(), json!(n));
    kwargs.insert("answers".into(), json!({"q1": "yes", "q2": 3}));
    kwargs
}

/// `name` as the engine takes a session uid.
pub(crate) fn uid(name: &str) -> SessionUid {
    SessionUid::parse(name).expect("a session uid")
}

/// `name` as the engine takes a trigger name.
pub(crate) fn trigger(name: &str) -> TriggerName {
    TriggerName::parse(name).expect("a trigger name")
}

/// [`TICK`] as the engine takes it, parsed once.
pub(crate) fn tick_trigger() -> &'static TriggerName {
    static PARSED: std::sync::OnceLock<TriggerName> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| trigger(TICK))
}

/// Fires `tick` and waits for the inline run and its cascade to commit.
pub(crate) async fn tick(engine: &Engine, session: &SessionUid, n: u64) {
    engine
        .fire(session, tick_trigger(), kwargs(n), None)
        .await
        .expect("tick fires");
    engine.wait_idle().await;
}

/// A session configured with [`three_tasks`] and ticked until its version is at
/// least `version`; prints how long that took.
pub(crate) async fn build_history(engine: &Engine, session: &SessionUid, version: u64) -> u64 {
    let started = Instant::now();
    engine
        .configure(session, &three_tasks())
        .await
        .expect("configure");
    let mut n = 0;
    let mut current = engine.session(session).await.expect("state").version();
    while current < version {
        tick(engine, session, n).await;
        n += 1;
        current = engine.session(session).await.expect("state").version();
    }
    eprintln!(
        "built {session}: version {current} ({n} ticks) in {:.1?}",
        started.elapsed()
    );
    current
}

/// Reads a comma-separated list of numbers from `var`, or `default`.
pub(crate) fn sizes_from_env(var: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(var) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: {s:?} is not a number"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

/// A number from `var`, or `default`.
pub(crate) fn number_from_env(var: &str, default: u64) -> u64 {
    sizes_from_env(var, &[default])
        .first()
        .copied()
        .unwrap_or(default)
}

/// p-th percentile (0..=100) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints p50/p95/p99/max of `samples` under `label`.
pub(crate) fn print_latencies(label: &str, samples: &mut [Duration]) {
    samples.sort();
    eprintln!(
        "{label}: n={} p50={:.3?} p95={:.3?} p99={:.3?} max={:.3?}",
        samples.len(),
        percentile(samples, 50.0),
        percentile(samples, 95.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or_default()
    );
}
