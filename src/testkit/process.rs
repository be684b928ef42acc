//! The `triggers` binary as a child process: `triggers serve` on a random port,
//! ready once it logged its `listening on` line and answers `/health`; and
//! commands run to completion.
//!
//! The binary's path is the caller's: `env!("CARGO_BIN_EXE_triggers")` is only
//! set when cargo compiles an integration test.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The variables of the environment a `triggers` command would otherwise pick
/// up from the one the tests run in.
const CLEARED: [&str; 6] = [
    "TRIGGERS_DATABASE_URL",
    "TRIGGERS_LISTEN",
    "TRIGGERS_SERVER",
    "TRIGGERS_API_TOKEN",
    "TRIGGERS_LOG_FORMAT",
    "TRIGGERS_PURGED_BY",
];

/// The binary at `bin` run in `dir`, without the environment's database,
/// address, server, token or log settings, killed when dropped.
pub fn triggers_command(bin: &str, dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command.current_dir(dir).kill_on_drop(true);
    for name in CLEARED {
        command.env_remove(name);
    }
    command
}

/// Runs `command` to completion within `patience`: success, stdout, stderr.
pub async fn run_to_completion(
    command: &mut Command,
    patience: Duration,
) -> (bool, String, String) {
    let output = tokio::time::timeout(patience, command.output())
        .await
        .expect("the command finished in time")
        .expect("run triggers");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `triggers serve` child process.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    log: Arc<Mutex<Vec<String>>>,
    patience: Duration,
}

impl ServerProcess {
    /// Starts `command` (a [`triggers_command`] with `serve` and its database
    /// flags) with `--listen 127.0.0.1:0` and `RUST_LOG=info` unless set, and
    /// waits, at most `patience`, until it says where it listens and answers
    /// `/health`.
    pub async fn start(mut command: Command, patience: Duration) -> ServerProcess {
        let logging = command
            .as_std()
            .get_envs()
            .any(|(name, _)| name == "RUST_LOG");
        if !logging {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start triggers serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                keep.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + patience;
        let address = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no 'listening on' line; log: {:#?}", log.lock().unwrap())
                })
                .unwrap_or_else(|| panic!("the server exited; log: {:#?}", log.lock().unwrap()));
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        let server = ServerProcess {
            child,
            address,
            log,
            patience,
        };
        let http = reqwest::Client::new();
        loop {
            let health = http.get(format!("{}/health", server.address)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "never healthy; log: {:#?}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Runs a GraphQL operation that must succeed; its `data`.
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/graphql", self.address))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("JSON");
        assert!(body.get("errors").is_none(), "{body:#}");
        body["data"].clone()
    }

    /// SIGKILL: no shutdown, no flushing, no goodbye.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("send SIGKILL");
        self.child.wait().await.expect("reap the server");
    }

    /// Sends SIGTERM and waits for a clean exit; what the server logged.
    pub async fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let exit = tokio::time::timeout(self.patience, self.child.wait())
            .await
            .expect("stopped in time after SIGTERM")
            .expect("wait for the server");
        let log = self.log();
        assert!(exit.success(), "exit {exit:?}; log: {log:#?}");
        log
    }
}
