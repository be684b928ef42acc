//! `TRIGGERS_LOG_FORMAT=json`: every line the server logs is one JSON object,
//! and what happens in a request or an inline run carries the request id, the
//! session and the instance.

use std::process::Stdio;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use triggers::testkit::{PASSTHRU, PATIENCE};

use crate::bin::command;

/// Whether any span of a JSON log line has `field` (equal to `value` if given).
fn in_spans(line: &Value, field: &str, value: Option<&str>) -> bool {
    line["spans"].as_array().is_some_and(|spans| {
        spans.iter().any(|span| match (&span[field], value) {
            (Value::String(v), Some(expected)) => v == expected,
            (Value::String(_), None) => true,
            _ => false,
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_request_session_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let mut child = command(dir.path())
        .args(["serve", "--database-url", &url, "--listen", "127.0.0.1:0"])
        .env("TRIGGERS_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,triggers=debug,tower_http=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start triggers serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + PATIENCE;
    let mut next = async || -> Value {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("log lines in time")
            .unwrap()
            .expect("the server is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let address = loop {
        let line = next().await;
        let message = line["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(rest) = message.strip_prefix("listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let http = reqwest::Client::new();
    let post = |query: &str| {
        http.post(format!("{address}/graphql"))
            .header("x-request-id", "req-42")
            .json(&json!({"query": query}))
            .send()
    };
    let configure = format!(
        "mutation {{ configure(session: \"log:1\", tasks: {{t_run: {{after: [\"go\"], run: \"{PASSTHRU}\"}}}}) {{ version }} }}"
    );
    assert!(post(&configure).await.unwrap().status().is_success());
    let fire = "mutation { fire(session: \"log:1\", trigger: \"go\") { duplicate } }";
    let answer = post(fire).await.unwrap();
    assert!(answer.status().is_success());
    assert_eq!(
        answer.headers()["x-request-id"],
        "req-42",
        "the caller's id comes back"
    );
    let health = http.get(format!("{address}/health")).send().await.unwrap();
    let made = health.headers()["x-request-id"].to_str().unwrap();
    assert!(!made.is_empty() && made != "req-42", "{made}");

    let (mut request, mut session, mut instance) = (false, false, false);
    while !(request && session && instance) {
        let line = next().await;
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        request |= in_spans(&line, "request_id", Some("req-42"));
        session |= in_spans(&line, "session", Some("log:1"));
        instance |= in_spans(&line, "instance", Some("t_run#0"));
    }
    child.kill().await.unwrap();
}
