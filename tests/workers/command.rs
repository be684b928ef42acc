//! `triggers work` (the real binary) running shell scripts against the real
//! server: results, failures with the stderr tail, a cascade into a second task,
//! and a graceful stop on SIGTERM that finishes the running task and claims no
//! more.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support::{kinds, spawn_app, TestApp, TestDb, PATIENCE, S};

on_both_backends!(
    triggers_work_runs_a_script_per_task_and_cascades,
    triggers_work_finishes_its_running_task_on_sigterm_and_claims_no_more,
    a_killed_triggers_work_loses_its_task_to_another_worker,
);

const BIN: &str = env!("CARGO_BIN_EXE_triggers");

/// The worker script: echoes its input for `jobs.first`/`jobs.second`, fails for
/// `jobs.bad`, and for `jobs.slow` waits until the file `release` exists.
const SCRIPT: &str = r#"#!/bin/sh
input=$(cat)
dir=$(dirname "$0")
case "$TRIGGERS_RUN" in
  jobs.bad)
    echo "starting" >&2
    echo "ValueError: the input was bad" >&2
    exit 3 ;;
  jobs.slow)
    touch "$dir/started"
    while [ ! -e "$dir/release" ]; do sleep 0.05; done
    echo '{"slow": true}' ;;
  *)
    printf '{"ok": true, "input": %s}\n' "$input" ;;
esac
"#;

fn write_script(dir: &Path) -> PathBuf {
    let path = dir.join("worker.sh");
    std::fs::write(&path, SCRIPT).expect("write the script");
    path
}

/// Starts `triggers work` against `app` running the script. Its log goes to
/// `<name>.log` beside the script, out of the test output.
fn start_worker(app: &TestApp, name: &str, script: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(script.with_file_name(format!("{name}.log")))
        .expect("create the worker's log file");
    Command::new(BIN)
        .arg("work")
        .args(["--server", &app.address, "--worker", name])
        .args(["--max-poll-interval", "0.2"])
        .args(extra)
        .args(["--", "sh"])
        .arg(script)
        .env("RUST_LOG", "info")
        .env_remove("TRIGGERS_API_TOKEN")
        .env_remove("TRIGGERS_QUEUE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start triggers work")
}

/// Waits until `instance` has `status`; the instance.
async fn wait_status(app: &TestApp, instance: &str, status: &str) -> Value {
    app.wait_until(
        &format!("{instance} {status}"),
        "query($s: String!, $i: String!) { session(uid: $s) { instance(name: $i) {
           name status result metadata kwargs } } }",
        json!({"s": S, "i": instance}),
        |d| d["session"]["instance"]["status"] == status,
    )
    .await["session"]["instance"]
        .clone()
}

async fn triggers_work_runs_a_script_per_task_and_cascades(db: TestDb) {
    let app = spawn_app(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    app.configure(
        S,
        json!({
            "t_first": {"after": ["go"], "run": "jobs.first", "using": "worker",
                        "withParams": {"go": {"model": "m1"}}},
            "t_second": {"after": ["t_first"], "run": "jobs.second"},
            "t_bad": {"after": ["go"], "run": "jobs.bad", "using": "worker"},
        }),
    )
    .await;
    let mut worker = start_worker(&app, "script-worker", &script, &["--concurrency", "2"]);
    app.fire(S, "go", json!({"id": 7})).await;

    let first = wait_status(&app, "t_first#0", "FINISHED").await;
    assert_eq!(
        first["result"],
        json!({"ok": true, "input": {
            "session": S, "instance": "t_first#0", "run": "jobs.first",
            "kwargs": {"go": {"model": "m1", "id": 7}}, "attempt": 1,
        }})
    );
    // The cascade: t_second ran with t_first's result as its kwargs.
    let second = wait_status(&app, "t_second#0", "FINISHED").await;
    assert_eq!(second["result"]["input"]["run"], "jobs.second");
    assert_eq!(
        second["result"]["input"]["kwargs"]["t_first"],
        first["result"]
    );
    let bad = wait_status(&app, "t_bad#0", "FAILED").await;
    assert_eq!(
        bad["metadata"]["exceptionType"], "triggers.work.CommandFailed",
        "{bad:#}"
    );
    let info = bad["metadata"]["exceptionInfo"]
        .as_str()
        .unwrap_or_default();
    assert!(info.ends_with("ValueError: the input was bad"), "{bad:#}");
    assert_eq!(
        bad["metadata"]["exceptionContext"]["exitCode"], 3,
        "{bad:#}"
    );

    terminate(&worker);
    exits_cleanly(&mut worker).await;
    app.stop().await;
}

async fn triggers_work_finishes_its_running_task_on_sigterm_and_claims_no_more(db: TestDb) {
    let app = spawn_app(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    app.configure(
        S,
        json!({
            "t_slow": {"after": ["go"], "run": "jobs.slow", "using": "worker"},
            "t_later": {"after": ["later"], "run": "jobs.first", "using": "worker"},
        }),
    )
    .await;
    let mut worker = start_worker(&app, "script-worker", &script, &["--lease-seconds", "2"]);
    app.fire(S, "go", json!({})).await;
    wait_for_file(&dir.path().join("started")).await;

    terminate(&worker);
    // Work that arrives after the signal is left for other workers.
    app.fire(S, "later", json!({})).await;
    // Outlast the 2 s lease: only the heartbeats (every 2/3 s) keep the task
    // ours, and a claim of `t_later` would have had time to happen.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        worker.try_wait().expect("poll the worker").is_none(),
        "the worker exited before its task finished"
    );
    std::fs::write(dir.path().join("release"), b"").unwrap();
    exits_cleanly(&mut worker).await;

    let slow = wait_status(&app, "t_slow#0", "FINISHED").await;
    assert_eq!(slow["result"], json!({"slow": true}));
    let later = wait_status(&app, "t_later#0", "SCHEDULED").await;
    assert_eq!(later["status"], "SCHEDULED");
    app.stop().await;
}

async fn a_killed_triggers_work_loses_its_task_to_another_worker(db: TestDb) {
    let app = spawn_app(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path());
    app.configure(
        S,
        json!({"t_slow": {"after": ["go"], "run": "jobs.slow", "using": "worker"}}),
    )
    .await;
    let mut doomed = start_worker(&app, "doomed", &script, &["--lease-seconds", "1"]);
    app.fire(S, "go", json!({})).await;
    wait_for_file(&dir.path().join("started")).await;
    doomed.kill().await.expect("SIGKILL the first worker");
    // Its orphaned script may now finish: nobody is left to report for it.
    std::fs::write(dir.path().join("release"), b"").unwrap();

    let mut rescuer = start_worker(&app, "rescuer", &script, &["--lease-seconds", "30"]);
    let slow = wait_status(&app, "t_slow#0", "FINISHED").await;
    assert_eq!(slow["result"], json!({"slow": true}));
    let instance = app.instance(S, "t_slow#0").await;
    let kinds = kinds(&instance);
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("InstanceStarted"), 2, "{kinds:?}");
    assert_eq!(count("InstanceLeaseExpired"), 1, "{kinds:?}");
    assert_eq!(count("InstanceFinished"), 1, "{kinds:?}");
    let history = instance["history"].to_string();
    assert!(
        history.contains("doomed") && history.contains("rescuer"),
        "{history}"
    );

    terminate(&rescuer);
    exits_cleanly(&mut rescuer).await;
    app.stop().await;
}

/// Sends SIGTERM to the worker process.
fn terminate(worker: &Child) {
    let pid = worker.id().expect("the worker is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Waits (at most [`PATIENCE`]) for the worker to exit, which it must do
/// successfully.
async fn exits_cleanly(worker: &mut Child) {
    let status = tokio::time::timeout(PATIENCE, worker.wait())
        .await
        .expect("the worker stopped in time")
        .expect("wait for the worker");
    assert!(status.success(), "the worker exited with {status}");
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
