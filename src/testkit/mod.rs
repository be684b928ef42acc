//! The test kit: what the test suites, the store's unit tests, the benches and
//! the examples set up alike, in one place. Compiled for the crate's own unit
//! tests and with the `testkit` feature (which the crate's self-dev-dependency
//! turns on for `tests/`, `benches/` and `examples/`); never in the shipped
//! binary.
//!
//! - [`db`]: a fresh database per test on each backend (a SQLite file in a
//!   temporary directory; a PostgreSQL schema of its own on the server named by
//!   `TRIGGERS_TEST_POSTGRES_URL`), running a test on each, and
//!   [`on_both_backends!`](crate::on_both_backends).
//! - [`app`]: the real server on `127.0.0.1:0` over a test database, and
//!   [`TestApp`], its GraphQL client with waits that poll instead of sleeping.
//! - [`process`]: the `triggers` binary as a child process: `serve` up to its
//!   `listening on` line, client commands run to completion.
//! - Here: the session, handler names, patience and engine options the suites
//!   share.
//!
//! The workload the benches and `triggers loadgen` drive is runtime code, in
//! [`crate::workload`].

pub mod app;
pub mod db;
pub mod names;
pub mod process;

use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::{EngineBuilder, EngineOptions};
use crate::Engine;

pub use app::{
    spawn_app, spawn_app_with, spawn_app_with_limits, spawn_app_with_options, spawn_app_with_token,
    strs, u64s, TestApp,
};
pub use db::{run_postgres, run_sqlite, skipped, within, Backend, TestDb, POSTGRES_ENV};
pub use process::ServerProcess;

/// The session most tests use (each test has its own database, so one name is enough).
pub const S: &str = "questionnaire:1";

/// How long a test waits for a condition before failing (generous: CI machines are slow).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Built-in handler: returns `{"kwargs": <kwargs>}`.
pub const PASSTHRU: &str = "triggers.testing.PassThru";
/// Built-in handler: returns `{}`.
pub const DEVNULL: &str = "triggers.testing.DevNull";
/// Built-in handler: fails with `triggers.testing.Failure`.
pub const FAILING: &str = "triggers.testing.Failing";
/// Built-in handler: skips itself with metadata `{"kwargs": <kwargs>}`.
pub const SELF_SKIPPING: &str = "triggers.testing.SelfSkipping";
/// Built-in handler: retries itself while `depth < retries.max`.
pub const SELF_RETRYING: &str = "triggers.testing.SelfRetrying";

/// What `triggers.testing.PassThru` returns for `kwargs`.
pub fn passthru(kwargs: Value) -> Value {
    json!({ "kwargs": kwargs })
}

/// Options small enough for tests: short leases and a fast sweeper, so that
/// recovery happens within a couple of seconds.
pub fn test_options() -> EngineOptions {
    EngineOptions {
        inline_lease: Duration::from_secs(2),
        sweep_interval: Some(Duration::from_millis(200)),
        ..EngineOptions::default()
    }
}

impl TestDb {
    /// An engine on this database with [`test_options`] and no extra handlers.
    pub async fn engine(&self) -> Engine {
        self.engine_with(|builder| builder).await
    }

    /// An engine on this database with [`test_options`], and `tasks`
    /// configured on `session` (which must succeed).
    pub async fn engine_configured(&self, session: &str, tasks: Value) -> Engine {
        let engine = self.engine().await;
        engine
            .configure(&names::uid(session), &tasks)
            .await
            .unwrap_or_else(|e| panic!("configure {tasks}: {e}"));
        engine
    }

    /// An engine on this database with [`test_options`], adjusted by `build`.
    pub async fn engine_with(&self, build: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Engine {
        build(Engine::builder(self.url.clone()).options(test_options()))
            .open()
            .await
            .unwrap_or_else(|e| panic!("open an engine on {}: {e}", self.url))
    }
}

/// Checks that a test binary's PostgreSQL half was compiled to run exactly
/// when `TRIGGERS_TEST_POSTGRES_URL` is set (`compiled` is the binary's
/// `cfg!(postgres_tests)`), so that it is never reported as passed without
/// running.
pub fn assert_postgres_cfg_matches_the_environment(compiled: bool) {
    let set = std::env::var(POSTGRES_ENV).is_ok_and(|url| !url.is_empty());
    assert_eq!(
        compiled,
        set,
        "{POSTGRES_ENV} is {} now but was {} when this test binary was built: rebuild it",
        if set { "set" } else { "unset" },
        if compiled { "set" } else { "unset" },
    );
}

/// Defines the test `postgres_tests_run_exactly_when_the_variable_is_set`
/// in a test binary: its PostgreSQL half is compiled to run exactly when
/// `TRIGGERS_TEST_POSTGRES_URL` is set, never reported as passed without
/// running (see [`assert_postgres_cfg_matches_the_environment`]).
#[macro_export]
macro_rules! postgres_tests_match_the_environment {
    () => {
        #[test]
        fn postgres_tests_run_exactly_when_the_variable_is_set() {
            $crate::testkit::assert_postgres_cfg_matches_the_environment(cfg!(postgres_tests));
        }
    };
}

/// Instantiates each named `async fn(TestDb)` once per backend, as
/// `<name>::sqlite` and `<name>::postgres`, each bounded by `$seconds` (120 s
/// unless given). Without `TRIGGERS_TEST_POSTGRES_URL` at build time (the
/// build script's cfg `postgres_tests`), each postgres test is `#[ignore]`d
/// with the reason.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $crate::on_both_backends!(seconds = 120; $($name),+);
    };
    (seconds = $seconds:literal; $($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testkit::run_sqlite(std::time::Duration::from_secs($seconds), super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
            async fn postgres() {
                $crate::testkit::run_postgres(
                    std::time::Duration::from_secs($seconds),
                    module_path!(),
                    super::$name,
                ).await;
            }
        }
    )+};
}
