//! Running the `triggers` binary: a command to completion, a second database
//! beside a test's own, and a workload that leaves every kind of state.

use serde_json::{json, Value};
use std::path::Path;
use tokio::process::Command;
use triggers::testkit::app::everything_query;
use triggers::testkit::db::{create_schema, drop_schema};
use triggers::testkit::process::{run_to_completion, triggers_command};
use triggers::testkit::{spawn_app, Backend, TestApp, TestDb, FAILING, PASSTHRU, PATIENCE};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_triggers");

/// A `triggers` command in `dir`, without the environment's database or token.
pub(crate) fn command(dir: &Path) -> Command {
    triggers_command(BIN, dir)
}

/// Runs a command to completion: success, stdout, stderr.
pub(crate) async fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run_to_completion(command(dir).args(args), PATIENCE).await
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
    let (url, schema) = create_schema(base, "t").await;
    Other {
        url,
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
        if let Some((base, schema)) = self.schema {
            drop_schema(&base, &schema).await;
        }
    }
}

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
    let everything = everything_query("");
    let mut all = Vec::new();
    for session in SESSIONS {
        all.push(app.data(&everything, json!({"s": session})).await);
    }
    all
}

/// The version of `session` in the database at `url`, read by a store of its own.
pub(crate) async fn version(url: &str, session: &str) -> u64 {
    let store = triggers::store::open(url).await.expect("open the store");
    store
        .version(&triggers::testkit::names::uid(session))
        .await
        .expect("a version")
}

/// Starts a server over `url` (a second database of a test).
pub(crate) async fn app_on(url: &str) -> TestApp {
    spawn_app(&TestDb::at(url.to_owned(), Backend::of(url))).await
}
