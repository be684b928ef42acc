//! A database of its own for each test, bench or example run, on each backend.
//!
//! SQLite gets a fresh file in a temporary directory; PostgreSQL (only when
//! `TRIGGERS_TEST_POSTGRES_URL` is set) gets a fresh schema, selected through
//! the connection's `search_path`. [`run_postgres`] drops the schema
//! afterwards, whatever happened; the store's unit tests and the benches leave
//! theirs. Without the variable each postgres test is compiled `#[ignore]`d
//! (the build script sets the cfg `postgres_tests` when it is set), so `cargo
//! test` lists it as ignored, with the reason; run with `--ignored` and no
//! variable, it still says `SKIPPED: ...` on stderr.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

/// Names the PostgreSQL server the postgres variants run on.
pub const POSTGRES_ENV: &str = "TRIGGERS_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL schema.
    Postgres,
}

impl Backend {
    /// The backend of a database URL.
    pub fn of(url: &str) -> Backend {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }
}

/// A database of its own for one test.
pub struct TestDb {
    /// The URL servers and engines open.
    pub url: String,
    /// Which backend it is.
    pub backend: Backend,
    /// The PostgreSQL server URL without the `search_path` option.
    pub admin_url: Option<String>,
    /// The PostgreSQL schema the test runs in.
    pub schema: Option<String>,
    /// The temporary directory holding the SQLite file (a scratch directory for
    /// PostgreSQL tests too).
    dir: tempfile::TempDir,
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite() -> TestDb {
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

    /// A fresh schema (`t_<uuid>`) on the server named by
    /// `TRIGGERS_TEST_POSTGRES_URL`, or `None` (with a note on stderr) when it
    /// is not set.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let Some(base) = postgres_server() else {
            skipped(test);
            return None;
        };
        let (url, schema) = create_schema(&base, "t").await;
        Some(TestDb {
            url,
            backend: Backend::Postgres,
            admin_url: Some(base),
            schema: Some(schema),
            dir: tempfile::tempdir().expect("a temporary directory"),
        })
    }

    /// A handle on another database `url` of the same test (dropping it is the
    /// test's business).
    pub fn at(url: String, backend: Backend) -> TestDb {
        TestDb {
            url,
            backend,
            admin_url: None,
            schema: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Runs `sql` on this database behind the engines' backs (see
    /// [`execute_sql`]).
    pub async fn execute_sql(&self, sql: &str) -> Result<(), sqlx::Error> {
        execute_sql(&self.url, sql).await
    }

    /// A scratch directory that lives as long as the test.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// Runs `sql` (one statement or several) on the database at `url`, behind the
/// back of any engine or server on it, over a connection of its own; what the
/// database answered.
pub async fn execute_sql(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match Backend::of(url) {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(url).await?;
            let done = sqlx::raw_sql(sql).execute(&mut conn).await.map(drop);
            conn.close().await.ok();
            done
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(url).await?;
            let done = sqlx::raw_sql(sql).execute(&mut conn).await.map(drop);
            conn.close().await.ok();
            done
        }
    }
}

/// The server URL in `TRIGGERS_TEST_POSTGRES_URL`, if set and not empty.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Creates a fresh schema `<prefix>_<uuid>` on the PostgreSQL server at
/// `base`; the URL that selects it, and its name.
pub async fn create_schema(base: &str, prefix: &str) -> (String, String) {
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {base}: {e}"));
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create the schema");
    conn.close().await.ok();
    (with_search_path(base, &schema), schema)
}

/// Drops a schema made by [`create_schema`] (errors ignored: best effort).
pub async fn drop_schema(base: &str, schema: &str) {
    if let Ok(mut conn) = PgConnection::connect(base).await {
        let _ = conn.execute("SET lock_timeout = '5s'").await;
        let _ = conn
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await;
        let _ = conn.close().await;
    }
}

/// `base` with the connection option selecting `schema`.
pub fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// Says on the real stderr that a PostgreSQL test did not run.
pub fn skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {POSTGRES_ENV} not set; PostgreSQL test {test} did not run"
    );
}

/// Runs a test on a fresh SQLite file.
pub async fn run_sqlite<F, Fut>(limit: Duration, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    within(limit, test(TestDb::sqlite())).await;
}

/// Runs a test in a fresh PostgreSQL schema (dropped afterwards, whatever happened).
pub async fn run_postgres<F, Fut>(limit: Duration, name: &str, test: F)
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
pub async fn within(limit: Duration, test: impl Future<Output = ()>) {
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
}
