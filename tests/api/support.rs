//! Support of the API suite: the real server on a random port over a test
//! database (`tests/common`: a fresh one per test on each backend, and
//! `on_both_backends!`), GraphQL over HTTP, and waiting for conditions without
//! fixed sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use triggers::engine::EngineOptions;
use triggers::http::ServerConfig;
use triggers::Engine;

pub(crate) use crate::common::{Backend, TestDb};

/// The session most tests use (each test has its own database).
pub(crate) const S: &str = "questionnaire:1";

/// Handler names of the built-in testing handlers.
pub(crate) const PASSTHRU: &str = "triggers.testing.PassThru";
pub(crate) const DEVNULL: &str = "triggers.testing.DevNull";
pub(crate) const FAILING: &str = "triggers.testing.Failing";

/// How long a test waits for a condition before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Runs a test in a fresh PostgreSQL schema (dropped afterwards, whatever happened).
pub(crate) async fn run_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    crate::common::run_postgres(Duration::from_secs(120), name, test).await;
}

/// Engine options for tests: short leases and a fast sweeper.
pub(crate) fn test_options() -> EngineOptions {
    EngineOptions {
        inline_lease: Duration::from_secs(2),
        sweep_interval: Some(Duration::from_millis(200)),
        ..EngineOptions::default()
    }
}

/// A server under test, with an HTTP client for it.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// The engine behind the server (for waiting on inline work).
    pub(crate) engine: Engine,
    pub(crate) http: reqwest::Client,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the real server on a random port over `db`, with the default config.
pub(crate) async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, ServerConfig::default()).await
}

/// Starts the real server on a random port over `db`, with `config`.
pub(crate) async fn spawn_app_with(db: &TestDb, config: ServerConfig) -> TestApp {
    let engine = Engine::builder(db.url.clone())
        .options(test_options())
        .open()
        .await
        .unwrap_or_else(|e| panic!("open an engine on {}: {e}", db.url));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let token = config.api_token.clone();
    let server = tokio::spawn(triggers::http::serve(
        engine.clone(),
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    TestApp {
        address,
        engine,
        http: reqwest::Client::new(),
        token,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// `address` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The WebSocket URL of `/graphql`.
    pub(crate) fn ws_url(&self) -> String {
        format!("{}/graphql", self.address.replacen("http", "ws", 1))
    }

    /// POSTs a GraphQL request (with the app's token, if any); status and body.
    pub(crate) async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        let status = response.status().as_u16();
        let body = response.json().await.expect("a JSON body");
        (status, body)
    }

    /// Runs an operation that must succeed; its `data`.
    pub(crate) async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables.clone()).await;
        assert!(
            body.get("errors").is_none() && status == 200,
            "expected success for {query} with {variables}, got HTTP {status}: {body:#}"
        );
        body["data"].clone()
    }

    /// Runs an operation that must fail with exactly one error; its code and message.
    pub(crate) async fn error(&self, query: &str, variables: Value) -> (String, String) {
        let (_, body) = self.post(query, variables.clone()).await;
        let errors = body["errors"].as_array().unwrap_or_else(|| {
            panic!("expected an error for {query} with {variables}, got {body:#}")
        });
        assert_eq!(errors.len(), 1, "expected one error, got {body:#}");
        let error = &errors[0];
        (
            error["extensions"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("an error without extensions.code: {body:#}"))
                .to_owned(),
            error["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Configures `tasks` on `session`; the new version.
    pub(crate) async fn configure(&self, session: &str, tasks: Value) -> u64 {
        let data = self
            .data(
                "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }",
                json!({"s": session, "t": tasks}),
            )
            .await;
        data["configure"]["version"].as_u64().expect("a version")
    }

    /// Fires a trigger; the `fire` answer (event, scheduled, abandoned, duplicate).
    pub(crate) async fn fire(&self, session: &str, trigger: &str, kwargs: Value) -> Value {
        let data = self
            .data(
                "mutation($s: String!, $t: String!, $k: JSON) {
                   fire(session: $s, trigger: $t, kwargs: $k) {
                     duplicate
                     event { seq kind trigger causedBy data }
                     scheduled { name status }
                     abandoned { name status }
                     session { version }
                   }
                 }",
                json!({"s": session, "t": trigger, "k": kwargs}),
            )
            .await;
        data["fire"].clone()
    }

    /// The session's version.
    pub(crate) async fn version(&self, session: &str) -> u64 {
        let data = self
            .data(
                "query($s: String!) { session(uid: $s) { version } }",
                json!({"s": session}),
            )
            .await;
        data["session"]["version"].as_u64().expect("a version")
    }

    /// Instance name -> status (upper case), in creation order.
    pub(crate) async fn statuses(&self, session: &str) -> Vec<(String, String)> {
        let data = self
            .data(
                "query($s: String!) { session(uid: $s) { instances { name status } } }",
                json!({"s": session}),
            )
            .await;
        data["session"]["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until inline runs of this server's engine are done.
    pub(crate) async fn settle(&self) {
        tokio::time::timeout(PATIENCE, self.engine.wait_idle())
            .await
            .expect("the engine did not become idle in time");
    }

    /// Waits until `ready` holds for the answer of `query`.
    pub(crate) async fn wait_until(
        &self,
        what: &str,
        query: &str,
        variables: Value,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let data = self.data(query, variables.clone()).await;
            if ready(&data) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last answer: {data:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every instance of `session` is resolved (finished, ...).
    pub(crate) async fn wait_resolved(&self, session: &str) -> Value {
        self.wait_until(
            "every instance resolved",
            "query($s: String!) { session(uid: $s) { version unresolvedInstances { name status } } }",
            json!({"s": session}),
            |d| d["session"]["unresolvedInstances"].as_array().is_some_and(Vec::is_empty),
        )
        .await
    }

    /// Waits until no instance of `session` is scheduled or running.
    pub(crate) async fn wait_quiet(&self, session: &str) {
        self.wait_until(
            "no instance scheduled or running",
            "query($s: String!) { session(uid: $s) { instances(status: [SCHEDULED, RUNNING]) { name } } }",
            json!({"s": session}),
            |d| d["session"]["instances"].as_array().is_some_and(Vec::is_empty),
        )
        .await;
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .expect("the server stopped in time")
                .expect("the server task did not panic")
                .expect("the server ended without an I/O error");
        }
        self.engine.shutdown(Duration::from_secs(5)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
