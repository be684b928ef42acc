//! The real server on a random port of `127.0.0.1` over a test database, and
//! [`TestApp`], a client of its GraphQL API over HTTP: operations that must
//! succeed or fail, the calls most tests make (configure, fire, statuses), the
//! worker protocol (claim, complete), and waits that poll with a deadline
//! instead of sleeping for fixed delays.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{test_options, TestDb, PATIENCE};
use crate::engine::EngineOptions;
use crate::http::ServerConfig;
use crate::Engine;

/// A server under test, with an HTTP client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The engine behind the server (for waiting on inline work).
    pub engine: Engine,
    /// The HTTP client the helpers use (for requests of a test's own).
    pub http: reqwest::Client,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Everything a client can read of a session, as a selection of `session`.
const SESSION_FIELDS: &str = "
  uid version latestKwargs
  tasks { name after andEvery unless run using withParams maxRetries extras }
  instances { session name task status kwargs abandonState metadata result logLevel
              isResolved canRun canAbandon canReplay canSkip parent depth
              history { seq } causes { seq } }
  unresolvedTasks { name } unresolvedInstances { name } instancesWithUnresolvedLogs { name }
  events(first: 1000) { seq kind at data causedBy instance trigger }";

/// A query of everything a client can read of the session `$s`, then of the
/// top-level fields `more` (empty for none): to compare a database before and
/// after a restart, a rebuild or a round trip.
pub fn everything_query(more: &str) -> String {
    format!("query($s: String!) {{ session(uid: $s) {{{SESSION_FIELDS}\n}} {more} }}")
}

/// Starts the real server on a random port over `db`, with the test options
/// and the default config.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, ServerConfig::default()).await
}

/// Starts the real server on a random port over `db`, with the test options
/// and `config`.
pub async fn spawn_app_with(db: &TestDb, config: ServerConfig) -> TestApp {
    TestApp::serve(open_engine(db, test_options()).await, config).await
}

/// Starts the real server on a random port over `db`, with the test options
/// and the API token `token`, which [`TestApp::post`] sends.
pub async fn spawn_app_with_token(db: &TestDb, token: &str) -> TestApp {
    let config = ServerConfig {
        api_token: Some(token.to_owned()),
        ..ServerConfig::default()
    };
    spawn_app_with(db, config).await
}

/// Starts the real server on a random port over `db`, with the test options
/// and the GraphQL limits `graphql`.
pub async fn spawn_app_with_limits(db: &TestDb, graphql: crate::graphql::Config) -> TestApp {
    let config = ServerConfig {
        graphql,
        ..ServerConfig::default()
    };
    spawn_app_with(db, config).await
}

/// Starts the real server on a random port over `db`, with `options` (e.g. no
/// sweeper, so that nothing but the test writes to the log) and the default
/// config.
pub async fn spawn_app_with_options(db: &TestDb, options: EngineOptions) -> TestApp {
    TestApp::serve(open_engine(db, options).await, ServerConfig::default()).await
}

async fn open_engine(db: &TestDb, options: EngineOptions) -> Engine {
    Engine::builder(db.url.clone())
        .options(options)
        .open()
        .await
        .unwrap_or_else(|e| panic!("open an engine on {}: {e}", db.url))
}

impl TestApp {
    /// Serves `engine` with `config` on a random port of `127.0.0.1`, until
    /// [`TestApp::stop`] or until dropped.
    pub async fn serve(engine: Engine, config: ServerConfig) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let token = config.api_token.clone();
        let server = tokio::spawn(crate::http::serve(
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

    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The WebSocket URL of `/graphql`.
    pub fn ws_url(&self) -> String {
        format!("{}/graphql", self.address.replacen("http", "ws", 1))
    }

    /// POSTs a GraphQL request (with the app's token, if any); status and body.
    pub async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
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

    /// POSTs `body` to `/graphql` as it is, declared as JSON, without a
    /// token; the response, whatever its status.
    pub async fn post_body(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /graphql")
    }

    /// Runs an operation that must succeed; its `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables.clone()).await;
        assert!(
            body.get("errors").is_none() && status == 200,
            "expected success for {query} with {variables}, got HTTP {status}: {body:#}"
        );
        body["data"].clone()
    }

    /// Runs an operation without variables that must succeed; its `data`.
    pub async fn query(&self, operation: &str) -> Value {
        self.data(operation, json!({})).await
    }

    /// Reads `selection` of `session`
    /// (`query($s: String!) { session(uid: $s) { <selection> } }`), which must
    /// succeed; its `data`.
    pub async fn read_session(&self, session: &str, selection: &str) -> Value {
        let query = format!("query($s: String!) {{ session(uid: $s) {{ {selection} }} }}");
        self.data(&query, json!({"s": session})).await
    }

    /// Runs an operation that must fail with exactly one error; its code and message.
    pub async fn error(&self, query: &str, variables: Value) -> (String, String) {
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
    pub async fn configure(&self, session: &str, tasks: Value) -> u64 {
        let data = self
            .data(
                "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }",
                json!({"s": session, "t": tasks}),
            )
            .await;
        data["configure"]["version"].as_u64().expect("a version")
    }

    /// Configures `tasks` on `session`, fires `trigger` (no kwargs) and waits
    /// until the inline runs it set off are done.
    pub async fn configure_fire_settle(&self, session: &str, tasks: Value, trigger: &str) {
        self.configure(session, tasks).await;
        self.fire(session, trigger, json!({})).await;
        self.settle().await;
    }

    /// Fires a trigger; the `fire` answer (event, scheduled, abandoned, duplicate).
    pub async fn fire(&self, session: &str, trigger: &str, kwargs: Value) -> Value {
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
    pub async fn version(&self, session: &str) -> u64 {
        let data = self.read_session(session, "version").await;
        data["session"]["version"].as_u64().expect("a version")
    }

    /// Instance name -> status (upper case), in creation order.
    pub async fn statuses(&self, session: &str) -> Vec<(String, String)> {
        let data = self
            .read_session(session, "instances { name status }")
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
    pub async fn settle(&self) {
        tokio::time::timeout(PATIENCE, self.engine.wait_idle())
            .await
            .expect("the engine did not become idle in time");
    }

    /// Waits until `ready` holds for the answer of `query`.
    pub async fn wait_until(
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
    pub async fn wait_resolved(&self, session: &str) -> Value {
        self.wait_until(
            "every instance resolved",
            "query($s: String!) { session(uid: $s) { version unresolvedInstances { name status } } }",
            json!({"s": session}),
            |d| d["session"]["unresolvedInstances"].as_array().is_some_and(Vec::is_empty),
        )
        .await
    }

    /// Waits until no instance of `session` is scheduled or running.
    pub async fn wait_quiet(&self, session: &str) {
        self.wait_until(
            "no instance scheduled or running",
            "query($s: String!) { session(uid: $s) { instances(status: [SCHEDULED, RUNNING]) { name } } }",
            json!({"s": session}),
            |d| d["session"]["instances"].as_array().is_some_and(Vec::is_empty),
        )
        .await;
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
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

/// The worker protocol, as a client speaks it.
impl TestApp {
    /// `claimTasks`; the claims (`leaseToken session instance run kwargs attempt
    /// leaseExpiresAt`).
    pub async fn claim(
        &self,
        worker: &str,
        queue: Option<&str>,
        max: u32,
        lease_seconds: u32,
    ) -> Vec<Value> {
        let data = self
            .data(
                "mutation($w: String!, $q: String, $m: Int, $l: Int) {
                   claimTasks(worker: $w, queue: $q, max: $m, leaseSeconds: $l) {
                     leaseToken session instance run kwargs attempt leaseExpiresAt
                   }
                 }",
                json!({"w": worker, "q": queue, "m": max, "l": lease_seconds}),
            )
            .await;
        data["claimTasks"].as_array().expect("claims").clone()
    }

    /// Claims until something is claimable (e.g. a lease or a cooldown ran out).
    pub async fn claim_eventually(
        &self,
        worker: &str,
        queue: Option<&str>,
        lease_seconds: u32,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(claim) = self
                .claim(worker, queue, 1, lease_seconds)
                .await
                .into_iter()
                .next()
            {
                return claim;
            }
            assert!(
                Instant::now() < deadline,
                "nothing became claimable in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `completeTask` request (status and body, success or not).
    pub async fn complete(&self, token: &str, result: Value) -> (u16, Value) {
        self.post(
            "mutation($t: String!, $r: JSON) {
               completeTask(leaseToken: $t, result: $r) { session name status result }
             }",
            json!({"t": token, "r": result}),
        )
        .await
    }

    /// One instance: `name status kwargs metadata depth parent history { seq kind data }`.
    pub async fn instance(&self, session: &str, name: &str) -> Value {
        let data = self
            .data(
                "query($s: String!, $i: String!) { session(uid: $s) { instance(name: $i) {
                   name status kwargs metadata result depth parent
                   history { seq kind data }
                 } } }",
                json!({"s": session, "i": name}),
            )
            .await;
        data["session"]["instance"].clone()
    }
}

/// The kinds of an instance's history, in order.
pub fn kinds(instance: &Value) -> Vec<String> {
    instance["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|e| e["kind"].as_str().expect("a kind").to_owned())
        .collect()
}

/// The string `key` of every object in the JSON list `list`, in order.
pub fn strs<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    items(list)
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key:?} in {item}"))
        })
        .collect()
}

/// The number `key` of every object in the JSON list `list`, in order.
pub fn u64s(list: &Value, key: &str) -> Vec<u64> {
    items(list)
        .map(|item| {
            item[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no number {key:?} in {item}"))
        })
        .collect()
}

fn items(list: &Value) -> std::slice::Iter<'_, Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {list}"))
        .iter()
}
