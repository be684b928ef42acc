//! Shared test support: a fresh database per test on each backend, engines built
//! on it with test-sized options, and waiting for conditions without fixed sleeps.
//!
//! Every behavioural test is an `async fn name(db: TestDb)`; [`on_both_backends!`]
//! turns it into a module `name` with two tests, `name::sqlite` and
//! `name::postgres`. SQLite gets a fresh file in a temporary directory; PostgreSQL
//! (only when `TRIGGERS_TEST_POSTGRES_URL` is set) gets a fresh schema, selected
//! through the connection's `search_path`, and dropped when the test ends.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use triggers::domain::{Event, Instance, InstanceStatus, JsonObject, SessionState};
use triggers::engine::{EngineBuilder, EngineOptions, FireResult};
use triggers::Engine;

/// Names the PostgreSQL server the postgres variants run on.
pub(crate) const POSTGRES_ENV: &str = "TRIGGERS_TEST_POSTGRES_URL";

/// The session most tests use (each test has its own database, so one name is enough).
pub(crate) const S: &str = "questionnaire:1";

/// How long a test waits for a condition before failing (generous: CI machines are slow).
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test.
pub(crate) struct TestDb {
    /// The URL engines open.
    pub(crate) url: String,
    /// Which backend it is.
    pub(crate) backend: Backend,
    /// The PostgreSQL schema the test runs in.
    pub(crate) schema: Option<String>,
    /// The PostgreSQL URL without the `search_path` option (for inspection).
    pub(crate) admin_url: Option<String>,
    /// Keeps the SQLite file alive for as long as the test runs.
    _dir: Option<tempfile::TempDir>,
}

/// Drops a test's PostgreSQL schema once the test passed.
pub(crate) struct SchemaGuard {
    admin_url: String,
    schema: String,
}

impl SchemaGuard {
    /// Runs a test in the schema (within the time limit), drops the schema
    /// whatever happened, then passes a failure on.
    pub(crate) async fn run(self, test: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(within_time(test)).catch_unwind().await;
        self.drop_schema().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn drop_schema(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let _ = conn.execute("SET lock_timeout = '5s'").await;
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = conn.execute(sql.as_str()).await;
            let _ = conn.close().await;
        }
    }
}

/// Options small enough for tests: short leases and a fast sweeper, so that
/// recovery happens within a couple of seconds.
pub(crate) fn test_options() -> EngineOptions {
    EngineOptions {
        inline_lease: Duration::from_secs(2),
        sweep_interval: Some(Duration::from_millis(200)),
        ..EngineOptions::default()
    }
}

impl TestDb {
    /// A fresh SQLite file.
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("triggers.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            schema: None,
            admin_url: None,
            _dir: Some(dir),
        }
    }

    /// A fresh schema on the PostgreSQL server named by `TRIGGERS_TEST_POSTGRES_URL`,
    /// or `None` (with a note on stderr) when the variable is not set.
    pub(crate) async fn postgres(test: &str) -> Option<(TestDb, SchemaGuard)> {
        let base = match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                skipped(test);
                return None;
            }
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}={base}: {e}"));
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create the test schema");
        conn.close().await.ok();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        let guard = SchemaGuard {
            admin_url: base.clone(),
            schema: schema.clone(),
        };
        let db = TestDb {
            url,
            backend: Backend::Postgres,
            schema: Some(schema),
            admin_url: Some(base),
            _dir: None,
        };
        Some((db, guard))
    }
}

/// Says on the real stderr (not the captured one, so that it shows in a normal
/// `cargo test` run) that a PostgreSQL test did not run.
pub(crate) fn skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {POSTGRES_ENV} not set; PostgreSQL test {test} did not run"
    );
}

impl TestDb {
    /// An engine on this database with [`test_options`] and no extra handlers.
    pub(crate) async fn engine(&self) -> Engine {
        self.engine_with(|builder| builder).await
    }

    /// An engine on this database with [`test_options`], adjusted by `build`.
    pub(crate) async fn engine_with(
        &self,
        build: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Engine {
        build(Engine::builder(self.url.clone()).options(test_options()))
            .open()
            .await
            .unwrap_or_else(|e| panic!("open an engine on {}: {e}", self.url))
    }
}

/// Instantiates each named `async fn(TestDb)` once per backend, as
/// `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::support::TestDb::sqlite();
                $crate::support::within_time(super::$name(db)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some((db, guard)) = $crate::support::TestDb::postgres(module_path!()).await else {
                    return;
                };
                guard.run(super::$name(db)).await;
            }
        }
    )+};
}

/// Fails a test that hangs instead of letting it block the suite.
pub(crate) async fn within_time(test: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .expect("the test did not finish within 90 s");
}

/// Waits until no inline run is in flight (bounded by [`PATIENCE`]).
pub(crate) async fn settle(engine: &Engine) {
    tokio::time::timeout(PATIENCE, engine.wait_idle())
        .await
        .expect("the engine did not become idle in time");
}

/// Polls the session until `ready` holds, and returns that state.
pub(crate) async fn wait_for(
    engine: &Engine,
    session: &str,
    what: &str,
    ready: impl Fn(&SessionState) -> bool,
) -> Arc<SessionState> {
    wait_for_within(PATIENCE, engine, session, what, ready).await
}

/// [`wait_for`] with a patience of its own.
pub(crate) async fn wait_for_within(
    patience: Duration,
    engine: &Engine,
    session: &str,
    what: &str,
    ready: impl Fn(&SessionState) -> bool,
) -> Arc<SessionState> {
    let deadline = Instant::now() + patience;
    loop {
        let state = engine.session(session).await.expect("read the session");
        if ready(&state) {
            return state;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; instances: {:#?}",
                summary(&state)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON object literal.
pub(crate) fn obj(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// Configures `tasks` on `session`, which must succeed.
pub(crate) async fn configure(engine: &Engine, session: &str, tasks: Value) -> u64 {
    engine
        .configure(session, &tasks)
        .await
        .unwrap_or_else(|e| panic!("configure {tasks}: {e}"))
}

/// Fires `trigger` with `kwargs`, which must succeed.
pub(crate) async fn fire(
    engine: &Engine,
    session: &str,
    trigger: &str,
    kwargs: Value,
) -> FireResult {
    engine
        .fire(session, trigger, obj(kwargs), None)
        .await
        .unwrap_or_else(|e| panic!("fire {trigger}: {e}"))
}

/// Fires and waits until everything it set off is done.
pub(crate) async fn fire_and_settle(
    engine: &Engine,
    session: &str,
    trigger: &str,
    kwargs: Value,
) -> FireResult {
    let result = fire(engine, session, trigger, kwargs).await;
    settle(engine).await;
    result
}

/// The current state of `session`.
pub(crate) async fn state(engine: &Engine, session: &str) -> Arc<SessionState> {
    engine.session(session).await.expect("read the session")
}

/// Every event of `session`.
pub(crate) async fn events(engine: &Engine, session: &str) -> Vec<Event> {
    engine
        .events(session, 0, None)
        .await
        .expect("read the events")
}

/// The instance, which must exist.
pub(crate) fn instance<'a>(state: &'a SessionState, name: &str) -> &'a Instance {
    state
        .instance(name)
        .unwrap_or_else(|| panic!("no instance {name}; instances: {:#?}", summary(state)))
}

/// The status of an instance, which must exist.
pub(crate) fn status(state: &SessionState, name: &str) -> InstanceStatus {
    instance(state, name).status
}

/// `(name, status)` of every instance, in creation order.
pub(crate) fn summary(state: &SessionState) -> Vec<(String, InstanceStatus)> {
    state
        .instances()
        .iter()
        .map(|i| (i.name.clone(), i.status))
        .collect()
}

/// Names of the instances of `task`, in creation order.
pub(crate) fn names_of(state: &SessionState, task: &str) -> Vec<String> {
    state.instances_of(task).map(|i| i.name.clone()).collect()
}

/// The kinds of `events`, in order.
pub(crate) fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.payload.kind()).collect()
}

/// The event with this seq, which must exist.
pub(crate) fn event(events: &[Event], seq: u64) -> &Event {
    events
        .iter()
        .find(|e| e.seq == seq)
        .unwrap_or_else(|| panic!("no event {seq}"))
}

/// The `TriggerFired` events of `trigger`, in order.
pub(crate) fn fired<'a>(events: &'a [Event], trigger: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.payload.kind() == "TriggerFired" && e.payload.trigger() == Some(trigger))
        .collect()
}

/// The events of `kind` about `instance`, in order.
pub(crate) fn about<'a>(events: &'a [Event], kind: &str, instance: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.payload.kind() == kind && e.payload.instance() == Some(instance))
        .collect()
}

/// Asserts that seqs run 1, 2, 3, ... without gaps or repeats.
pub(crate) fn assert_gap_free(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs must be gap-free from 1");
}

/// An instance's result, `null` if none.
pub(crate) fn result(inst: &Instance) -> Value {
    inst.result().cloned().unwrap_or(Value::Null)
}

/// What `triggers.testing.PassThru` returns for `kwargs`.
pub(crate) fn passthru(kwargs: Value) -> Value {
    json!({ "kwargs": kwargs })
}

/// Built-in handler: returns `{"kwargs": <kwargs>}`.
pub(crate) const PASSTHRU: &str = "triggers.testing.PassThru";
/// Built-in handler: returns `{}`.
pub(crate) const DEVNULL: &str = "triggers.testing.DevNull";
/// Built-in handler: fails with `triggers.testing.Failure`.
pub(crate) const FAILING: &str = "triggers.testing.Failing";
/// Built-in handler: skips itself with metadata `{"kwargs": <kwargs>}`.
pub(crate) const SELF_SKIPPING: &str = "triggers.testing.SelfSkipping";
/// Built-in handler: retries itself while `depth < retries.max`.
pub(crate) const SELF_RETRYING: &str = "triggers.testing.SelfRetrying";
/// A `run` no handler is registered for: such tasks go to the worker queue.
pub(crate) const EXTERNAL: &str = "app.ExternalJob";
