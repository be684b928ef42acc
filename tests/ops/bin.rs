//! Running the `triggers` binary: a command to completion, a second database
//! beside a test's own, and a workload that leaves every kind of state.

use serde_json::{json, Value};
use std::path::Path;
use tokio::process::Command;

use crate::common::TestDb;
use crate::support::{TestApp, FAILING, PASSTHRU, PATIENCE};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_triggers");

/// A `triggers` command in `dir`, without the environment's database or token.
pub(crate) fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("TRIGGERS_DATABASE_URL")
        .env_remove("TRIGGERS_API_TOKEN")
        .env_remove("TRIGGERS_LOG_FORMAT")
        .env_remove("TRIGGERS_PURGED_BY")
        .kill_on_drop(true);
    command
}

/// Runs a command to completion: success, stdout, stderr.
pub(crate) async fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(PATIENCE, command(dir).args(args).output())
        .await
        .expect("the command finished in time")
        .expect("run triggers");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; its stdout and stderr.
pub(crate) async fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let (success, stdout, stderr) = run(dir, args).await;
    assert!(success, "triggers {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Runs a command that must fail; its stdout and stderr.
pub(crate) async fn fails(dir: &Path, args: &[&str]) -> (String, String) {
    let (success, stdout, stderr) = run(dir, args).await;
    assert!(!success, "triggers {args:?} succeeded:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Another empty database on the same backend as `db`, and what drops it.
pub(crate) async fn another(db: &TestDb, name: &str) -> Other {
    match &db.admin_url {
        None => Other {
            url: format!("sqlite://{}", db.dir().join(format!("{name}.db")).display()),
            schema: None,
        },
        Some(base) => other_postgres(base).await,
    }
}

/// A fresh schema on the PostgreSQL server at `base`.
pub(crate) async fn other_postgres(base: &str) -> Other {
    use sqlx::{Connection, Executor};
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect");
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create a schema");
    conn.close().await.ok();
    Other {
        url: crate::common::with_search_path(base, &schema),
        schema: Some((base.to_owned(), schema)),
    }
}

/// A second database of a test.
pub(crate) struct Other {
    pub(crate) url: String,
    schema: Option<(String, String)>,
}

impl Other {
    /// Drops it (PostgreSQL; a SQLite file goes with the test's directory).
    pub(crate) async fn drop(self) {
        use sqlx::{Connection, Executor};
        if let Some((base, schema)) = self.schema {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                let _ = conn
                    .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                    .await;
            }
        }
    }
}

/// Everything a client can read of a session.
pub(crate) const EVERYTHING: &str = "query($s: String!) { session(uid: $s) {
  uid version latestKwargs
  tasks { name after andEvery unless run using withParams maxRetries extras }
  instances { session name task status kwargs abandonState metadata result logLevel
              isResolved canRun canAbandon canReplay canSkip parent depth
              history { seq } causes { seq } }
  unresolvedTasks { name } unresolvedInstances { name } instancesWithUnresolvedLogs { name }
  events(first: 1000) { seq kind at data causedBy instance trigger }
} }";

/// The sessions [`workload`] writes.
pub(crate) const SESSIONS: [&str; 3] = ["questionnaire:1", "questionnaire:2", "applicant:7"];

/// Configures and fires into [`SESSIONS`]: finished, failed, abandoned and
/// unstarted instances, cascades, and a worker task left scheduled in queue
/// `mail`; waits for the inline runs.
pub(crate) async fn workload(app: &TestApp) {
    for session in SESSIONS {
        app.configure(
            session,
            json!({
                "t_import": {"after": ["page"], "andEvery": "page", "run": PASSTHRU},
                "t_score": {"after": ["t_import"], "run": PASSTHRU, "withParams": {"t_import": {"model": "Psych 01"}}},
                "t_fails": {"after": ["page"], "run": FAILING},
                "t_never": {"after": ["page", "never"], "unless": ["cancel"], "run": PASSTHRU},
                "t_mail": {"after": ["done"], "run": "app.mail", "using": "worker:mail"},
                "t_custom": {"after": ["x"], "run": PASSTHRU, "ui": {"colour": "blue"}},
            }),
        )
        .await;
        app.fire(
            session,
            "page",
            json!({"n": 1, "text": "caf\u{e9} \u{1f600}"}),
        )
        .await;
        app.fire(session, "page", json!({"n": 2})).await;
    }
    app.fire(SESSIONS[0], "done", json!({})).await;
    app.fire(SESSIONS[1], "cancel", json!({})).await;
    app.settle().await;
    for session in SESSIONS {
        app.wait_until(
            "no inline instance scheduled or running",
            "query($s: String!) { session(uid: $s) { instances(status: [SCHEDULED, RUNNING]) { name } } }",
            json!({"s": session}),
            |d| {
                d["session"]["instances"]
                    .as_array()
                    .is_some_and(|i| i.iter().all(|i| i["name"] == "t_mail#0"))
            },
        )
        .await;
    }
}

/// What a client reads of every [`SESSIONS`] session.
pub(crate) async fn everything(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for session in SESSIONS {
        all.push(app.data(EVERYTHING, json!({"s": session})).await);
    }
    all
}

/// Starts a server over `url` (a second database of a test).
pub(crate) async fn app_on(url: &str) -> TestApp {
    let backend = if url.starts_with("sqlite:") {
        crate::common::Backend::Sqlite
    } else {
        crate::common::Backend::Postgres
    };
    crate::support::spawn_app(&TestDb::at(url.to_owned(), backend)).await
}
