//! The `triggers` binary end to end: `serve` on a random port, the client
//! commands over HTTP, SIGTERM, `rebuild`, and a restart that answers exactly as
//! before.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::Command;
use triggers::testkit::app::everything_query;
use triggers::testkit::process::{run_to_completion, triggers_command};

use crate::support::{Backend, ServerProcess, TestDb, PASSTHRU, PATIENCE, S};

on_both_backends!(the_command_line_serves_fires_shows_rebuilds_and_restarts);

const BIN: &str = env!("CARGO_BIN_EXE_triggers");

/// The database flags for `db`: none for SQLite, to exercise the default
/// `sqlite://triggers.db` in the working directory.
fn database_args(db: &TestDb) -> Vec<String> {
    match db.backend {
        Backend::Sqlite => Vec::new(),
        Backend::Postgres => vec!["--database-url".into(), db.url.clone()],
    }
}

/// A `triggers` command in `dir`, logging at `info`.
fn command(dir: &Path) -> Command {
    let mut command = triggers_command(BIN, dir);
    command.env("RUST_LOG", "info");
    command
}

/// Starts `triggers serve --listen 127.0.0.1:0` and waits until it is healthy.
async fn start(db: &TestDb, dir: &Path) -> ServerProcess {
    let mut serve = command(dir);
    serve.arg("serve").args(database_args(db));
    ServerProcess::start(serve, PATIENCE).await
}

/// Runs a client (or `rebuild`) command to completion: status, stdout, stderr.
async fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run_to_completion(command(dir).args(args), PATIENCE).await
}

async fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = run(dir, args).await;
    assert!(success, "triggers {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Everything a client can read of `$s` and of the lists of sessions and instances.
fn everything() -> String {
    everything_query("sessions { uid version updatedAt } instances { session name status }")
}

async fn the_command_line_serves_fires_shows_rebuilds_and_restarts(db: TestDb) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let server = start(&db, dir).await;
    if db.backend == Backend::Sqlite {
        assert!(
            dir.join("triggers.db").exists(),
            "the default database is created in the working directory"
        );
        let file = dir.join("triggers.db").display().to_string();
        let log = server.log();
        assert!(
            log.iter()
                .any(|l| l.contains("created the SQLite database file") && l.contains(&file)),
            "serve logs the absolute path of the file it created: {log:#?}"
        );
    }
    let url = server.address.clone();

    // configure from a file
    let tasks = dir.join("tasks.json");
    std::fs::write(
        &tasks,
        json!({
            "t_importSubject": {"after": ["firstPageReceived"], "run": PASSTHRU},
            "t_importResponses": {"after": ["firstPageReceived"], "andEvery": "pageReceived", "run": PASSTHRU},
            "t_later": {"after": ["never"], "run": PASSTHRU},
            "t_fails": {"after": ["firstPageReceived"], "run": "triggers.testing.Failing"}
        })
        .to_string(),
    )
    .unwrap();
    let out = ok(
        dir,
        &["configure", S, tasks.to_str().unwrap(), "--server", &url],
    )
    .await;
    assert!(
        out.contains("configured") && out.contains("t_importSubject"),
        "{out}"
    );

    // configure warns about likely mistakes on stderr; --strict refuses them
    let typo = dir.join("typo.json");
    std::fs::write(
        &typo,
        json!({"t_typo": {"after": ["never"], "unles": ["x"], "run": "app.tasks.Nowhere"}})
            .to_string(),
    )
    .unwrap();
    let typo = typo.to_str().unwrap();
    let (success, _, stderr) = run(
        dir,
        &["configure", "other", typo, "--strict", "--server", &url],
    )
    .await;
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains("BAD_CONFIGURATION") && stderr.contains("did you mean \"unless\"?"),
        "{stderr}"
    );
    let (success, out, stderr) = run(dir, &["configure", "other", typo, "--server", &url]).await;
    assert!(
        success && out.contains("configured t_typo"),
        "{out}{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: task \"t_typo\": unknown directive \"unles\" (did you mean \"unless\"?)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("worker queue \"default\""), "{stderr}");
    let out = ok(dir, &["show", "other", "--server", &url]).await;
    assert!(out.contains("app.tasks.Nowhere (worker:default)"), "{out}");

    // fire, with kwargs and an idempotency key
    let out = ok(
        dir,
        &[
            "fire",
            S,
            "firstPageReceived",
            "--kwargs",
            r#"{"subject": {"id": 42}}"#,
            "--server",
            &url,
        ],
    )
    .await;
    assert!(
        out.contains("scheduled: t_fails#0, t_importSubject#0"),
        "{out}"
    );
    let page = [
        "fire",
        S,
        "pageReceived",
        "--kwargs",
        r#"{"page": 1}"#,
        "--idempotency-key",
        "p1",
        "--server",
        &url,
    ];
    ok(dir, &page).await;
    let out = ok(dir, &page).await;
    assert!(out.contains("nothing was appended"), "{out}");

    // errors are reported with their code, and a non-zero exit
    let (success, _, stderr) =
        run(dir, &["fire", S, "x", "--kwargs", "[1]", "--server", &url]).await;
    assert!(!success);
    assert!(stderr.contains("BAD_INPUT"), "{stderr}");
    let (success, _, stderr) = run(
        dir,
        &["fire", S, "x", "--kwargs", "{not json", "--server", &url],
    )
    .await;
    assert!(
        !success && stderr.contains("--kwargs is not valid JSON"),
        "{stderr}"
    );

    // wait for the inline runs
    let deadline = Instant::now() + PATIENCE;
    loop {
        let data = server
            .query("query($s: String!) { session(uid: $s) { instances(status: [SCHEDULED, RUNNING]) { name } } }", json!({"s": S}))
            .await;
        if data["session"]["instances"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instances still running: {data:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // show and events
    // `--server host:port` without a scheme is http
    let bare = url.trim_start_matches("http://");
    let out = ok(dir, &["show", S, "--server", bare]).await;
    for expected in [
        "TASK",
        "t_importSubject",
        "t_importSubject#0",
        "finished",
        "t_later",
        "none yet",
        "INSTANCE",
        "STATUS",
    ] {
        assert!(out.contains(expected), "show lacks {expected:?}:\n{out}");
    }
    // each instance's result or error, shortened, and counts in good English
    assert!(out.contains("4 tasks, 3 instances (1 unresolved)"), "{out}");
    assert!(
        out.contains("RESULT / ERROR") && out.contains("{\"kwargs\":{\"firstPageReceived\""),
        "{out}"
    );
    assert!(out.contains("triggers.testing.Failure: "), "{out}");
    let json_out = ok(dir, &["show", S, "--json", "--server", &url]).await;
    let shown: Value = serde_json::from_str(&json_out).expect("show --json prints JSON");
    assert_eq!(shown["uid"], S);
    let failed = shown["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "t_fails#0")
        .expect("t_fails#0 in show --json");
    assert_eq!(
        failed["metadata"]["exceptionType"],
        "triggers.testing.Failure"
    );
    let out = ok(dir, &["events", S, "--server", &url]).await;
    for expected in [
        "SEQ",
        "SessionConfigured",
        "TriggerFired",
        "firstPageReceived",
        "InstanceFinished",
        "t_importSubject#0",
    ] {
        assert!(out.contains(expected), "events lacks {expected:?}:\n{out}");
    }
    let out = ok(dir, &["events", S, "--after", "1", "--server", &url]).await;
    assert!(!out.contains("SessionConfigured"), "{out}");

    // stop with SIGTERM, rebuild, restart: the same answers
    let before = server.query(&everything(), json!({"s": S})).await;
    let log = server.terminate().await;
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:#?}");

    let mut rebuild = vec!["rebuild"];
    let db_args = database_args(&db);
    rebuild.extend(db_args.iter().map(String::as_str));
    let out = ok(dir, &rebuild).await;
    let events: u64 = before["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .sum();
    assert!(
        out.contains(&format!("rebuilt 2 sessions from {events} events")),
        "{out}"
    );
    assert!(out.contains("events/s"), "{out}");

    let server = start(&db, dir).await;
    if db.backend == Backend::Sqlite {
        let log = server.log();
        assert!(
            log.iter()
                .any(|l| l.contains("opened the SQLite database file")),
            "{log:#?}"
        );
    }
    let after = server.query(&everything(), json!({"s": S})).await;
    assert_eq!(after, before);
    server.terminate().await;

    // a client with no server to talk to says so
    let (success, _, stderr) = run(dir, &["show", S, "--server", &url]).await;
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the server at {url}/graphql: connection refused"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn errors_name_the_database_file_or_the_port_and_the_likely_cause() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let missing = dir.join("no-such-dir").join("triggers.db");
    let url = format!("sqlite://{}", missing.display());

    // rebuild refuses a SQLite file that does not exist, and creates nothing
    let (success, out, stderr) = run(dir, &["rebuild", "--database-url", &url]).await;
    assert!(!success, "{out}");
    assert!(
        stderr.contains(&format!("there is no database at {}", missing.display())),
        "{stderr}"
    );
    assert!(!missing.exists());
    let relative = run(dir, &["rebuild", "--database-url", "sqlite://gone.db"]).await;
    assert!(!relative.0);
    assert!(
        relative
            .2
            .contains(&dir.join("gone.db").display().to_string()),
        "a relative URL is named by its absolute path: {}",
        relative.2
    );
    assert!(!dir.join("gone.db").exists());

    // serve names the file it cannot open and why
    let (success, _, stderr) = run(
        dir,
        &["serve", "--database-url", &url, "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(!success);
    assert!(
        stderr.contains(&format!(
            "cannot open the SQLite database {}",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "the directory {} does not exist",
            missing.parent().unwrap().display()
        )),
        "{stderr}"
    );

    // a PostgreSQL server that does not answer is named (password hidden)
    let nowhere = "postgres://app:s3cret@127.0.0.1:1/triggers";
    let (success, _, stderr) = run(
        dir,
        &[
            "serve",
            "--database-url",
            nowhere,
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert!(!success);
    assert!(
        stderr.contains(
            "cannot open the PostgreSQL database postgres://app:***@127.0.0.1:1/triggers"
        ) && stderr.contains("is PostgreSQL running"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");

    // a port in use fails before the database is opened (or created)
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let fresh = dir.join("fresh.db");
    let (success, _, stderr) = run(
        dir,
        &[
            "serve",
            "--database-url",
            &format!("sqlite://{}", fresh.display()),
            "--listen",
            &address,
        ],
    )
    .await;
    assert!(!success);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(!stderr.contains("opening the database"), "{stderr}");
    assert!(
        !fresh.exists(),
        "the database was created before the port was bound"
    );

    // a --server that is not an http URL says what is expected
    let (success, _, stderr) = run(dir, &["show", S, "--server", "ftp://example"]).await;
    assert!(!success);
    assert!(
        stderr.contains("expected a URL such as http://127.0.0.1:8080"),
        "{stderr}"
    );
}
