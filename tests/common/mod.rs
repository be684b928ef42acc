//! Test support shared by the integration-test binaries (`#[path]`-included): a
//! fresh database per test on each backend and the `on_both_backends!` macro.
//!
//! Every backend test is an `async fn name(db: TestDb)`; [`on_both_backends!`]
//! turns it into a module `name` with two tests, `name::sqlite` and
//! `name::postgres`. SQLite gets a fresh file in a temporary directory;
//! PostgreSQL (only when `TRIGGERS_TEST_POSTGRES_URL` is set) gets a fresh
//! schema, selected through the connection's `search_path`, dropped afterwards.
//! Without the variable each postgres test is compiled `#[ignore]`d (the build
//! script sets the cfg `postgres_tests` when it is set), so `cargo test` lists
//! it as ignored, with the reason; run with `--ignored` and no variable, it
//! still says `SKIPPED: ...` on stderr.

#![allow(dead_code)] // Each binary uses its own part of this module.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use sqlx::{Connection, Executor, PgConnection};

pub(crate) mod names;

/// Names the PostgreSQL server the postgres variants run on.
pub(crate) const POSTGRES_ENV: &str = "TRIGGERS_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test.
pub(crate) struct TestDb {
    /// The URL servers and engines open.
    pub(crate) url: String,
    /// Which backend it is.
    pub(crate) backend: Backend,
    /// The PostgreSQL server URL without the `search_path` option.
    pub(crate) admin_url: Option<String>,
    /// The PostgreSQL schema the test runs in.
    pub(crate) schema: Option<String>,
    /// The temporary directory holding the SQLite file (a scratch directory for
    /// PostgreSQL tests too).
    dir: tempfile::TempDir,
}

impl TestDb {
    /// A fresh SQLite file.
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("triggers.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            admin_url: None,
            schema: None,
            dir,
        }
    }

    /// A fresh schema on the server named by `TRIGGERS_TEST_POSTGRES_URL`, or
    /// `None` (with a note on stderr) when it is not set.
    pub(crate) async fn postgres(test: &str) -> Option<TestDb> {
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
        Some(TestDb {
            url: with_search_path(&base, &schema),
            backend: Backend::Postgres,
            admin_url: Some(base),
            schema: Some(schema),
            dir: tempfile::tempdir().expect("a temporary directory"),
        })
    }

    /// A handle on another database `url` of the same test (dropping it is the
    /// test's business).
    pub(crate) fn at(url: String, backend: Backend) -> TestDb {
        TestDb {
            url,
            backend,
            admin_url: None,
            schema: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A scratch directory that lives as long as the test.
    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// Drops a test's PostgreSQL schema.
async fn drop_schema(base: &str, schema: &str) {
    if let Ok(mut conn) = PgConnection::connect(base).await {
        let _ = conn.execute("SET lock_timeout = '5s'").await;
        let _ = conn
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await;
        let _ = conn.close().await;
    }
}

/// `base` with the connection option selecting `schema`.
pub(crate) fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// Says on the real stderr that a PostgreSQL test did not run.
pub(crate) fn skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {POSTGRES_ENV} not set; PostgreSQL test {test} did not run"
    );
}

/// Runs a test on a fresh SQLite file.
pub(crate) async fn run_sqlite<F, Fut>(limit: Duration, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    within(limit, test(TestDb::sqlite())).await;
}

/// Runs a test in a fresh PostgreSQL schema (dropped afterwards, whatever happened).
pub(crate) async fn run_postgres<F, Fut>(limit: Duration, name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::postgres(name).await else {
        return;
    };
    let base = db.admin_url.clone().expect("a PostgreSQL test database");
    let schema = db.schema.clone().expect("a PostgreSQL test schema");
    let outcome = AssertUnwindSafe(within(limit, test(db)))
        .catch_unwind()
        .await;
    drop_schema(&base, &schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Fails a test that hangs instead of letting it block the suite.
pub(crate) async fn within(limit: Duration, test: impl Future<Output = ()>) {
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
}

/// Instantiates each named `async fn(TestDb)` once per backend, as
/// `<name>::sqlite` and `<name>::postgres`, each bounded by `$seconds` (120 s
/// unless given).
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        on_both_backends!(seconds = 120; $($name),+);
    };
    (seconds = $seconds:literal; $($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::run_sqlite(std::time::Duration::from_secs($seconds), super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
            async fn postgres() {
                $crate::common::run_postgres(
                    std::time::Duration::from_secs($seconds),
                    module_path!(),
                    super::$name,
                ).await;
            }
        }
    )+};
}

/// The PostgreSQL half of the suite is compiled to run exactly when the
/// variable is set: never reported as passed without running.
#[test]
fn postgres_tests_run_exactly_when_the_variable_is_set() {
    let set = std::env::var(POSTGRES_ENV).is_ok_and(|url| !url.is_empty());
    assert_eq!(
        cfg!(postgres_tests),
        set,
        "{POSTGRES_ENV} is {} now but was {} when this test binary was built: rebuild it",
        if set { "set" } else { "unset" },
        if cfg!(postgres_tests) { "set" } else { "unset" },
    );
}
