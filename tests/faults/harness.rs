//! The pieces every fault test uses: `triggers serve` as a child process (the
//! kit's `ServerProcess`), a
//! GraphQL client that tells acknowledged fires from failed ones, clients that
//! retry unacknowledged fires with the same idempotency key, and the audit of the
//! log afterwards.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triggers::testkit::process::{run_to_completion, triggers_command};
pub(crate) use triggers::testkit::ServerProcess;
use triggers::testkit::{DEVNULL, PASSTHRU};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_triggers");

/// How long a test waits for a condition before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// The workflow every fault test drives: each `page` fire runs `count` inline
/// (andEvery), whose cascade runs `echo` (andEvery); `first` runs once per session.
pub(crate) fn workflow() -> Value {
    json!({
        "count": {"after": ["page"], "andEvery": "page", "run": PASSTHRU},
        "echo": {"after": ["count"], "andEvery": "count", "run": DEVNULL},
        "first": {"after": ["page"], "run": PASSTHRU},
    })
}

/// Starts `triggers serve` on a random port over `database_url` (with `env`
/// added) and waits until it answers `/health`.
pub(crate) async fn start_server(
    database_url: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> ServerProcess {
    let mut command = triggers_command(BIN, dir);
    command.args(["serve", "--database-url", database_url]);
    for (key, value) in env {
        command.env(key, value);
    }
    ServerProcess::start(command, PATIENCE).await
}

/// Runs `triggers rebuild` on `database_url` to completion; its stdout.
pub(crate) async fn rebuild(database_url: &str, dir: &Path) -> String {
    let mut command = triggers_command(BIN, dir);
    command
        .args(["rebuild", "--database-url", database_url])
        .env("RUST_LOG", "warn");
    let (success, stdout, stderr) = run_to_completion(&mut command, PATIENCE).await;
    assert!(success, "rebuild failed: {stdout}{stderr}");
    stdout
}

/// What one POST /graphql came to.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `data` without errors.
    Data(Value),
    /// A GraphQL error: its code and message.
    Refused { code: String, message: String },
    /// No answer: connection refused or reset, timeout, a non-JSON body.
    Lost(String),
}

/// A GraphQL client of whichever server `target` names at the moment.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    target: Arc<RwLock<String>>,
}

impl Client {
    pub(crate) fn new(address: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("an HTTP client"),
            target: Arc::new(RwLock::new(address.to_owned())),
        }
    }

    /// Points this client (and its clones) at another server.
    pub(crate) fn retarget(&self, address: &str) {
        *self.target.write().unwrap() = address.to_owned();
    }

    pub(crate) async fn post(&self, query: &str, variables: Value) -> Answer {
        let address = self.target.read().unwrap().clone();
        let response = self
            .http
            .post(format!("{address}/graphql"))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => return Answer::Lost(err.to_string()),
        };
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(err) => return Answer::Lost(format!("HTTP {status}: {err}")),
        };
        assert!(
            !status.is_server_error(),
            "a server error is never the answer: HTTP {status} {body:#}"
        );
        match body.get("errors").and_then(|e| e.get(0)) {
            Some(error) => Answer::Refused {
                code: error["extensions"]["code"]
                    .as_str()
                    .unwrap_or("<no code>")
                    .to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            },
            None => Answer::Data(body["data"].clone()),
        }
    }

    /// A query that must succeed (retried while the server is away).
    pub(crate) async fn data(&self, query: &str, variables: Value) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.post(query, variables.clone()).await {
                Answer::Data(data) => return data,
                other => assert!(Instant::now() < deadline, "{query} kept failing: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn configure(&self, session: &str, tasks: Value) {
        self.data(
            "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }",
            json!({"s": session, "t": tasks}),
        )
        .await;
    }

    /// Every event of `session`, page by page.
    pub(crate) async fn events(&self, session: &str) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        loop {
            let after = events.len();
            let data = self
                .data(
                    "query($s: String!, $a: Int) { session(uid: $s) { \
                       events(after: $a, first: 1000) { seq kind causedBy trigger instance data } } }",
                    json!({"s": session, "a": after}),
                )
                .await;
            let page = data["session"]["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    }

    /// What a user sees of `session`: its version and every instance.
    pub(crate) async fn state(&self, session: &str) -> Value {
        self.data(
            "query($s: String!) { session(uid: $s) { version \
               instances { name task status kwargs result logLevel metadata abandonState parent depth } } }",
            json!({"s": session}),
        )
        .await["session"]
            .clone()
    }

    /// Waits until no instance anywhere is `scheduled` or `running`.
    pub(crate) async fn wait_quiet(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let data = self
                .data(
                    "{ instances(status: [SCHEDULED, RUNNING], first: 1000) { session name status } }",
                    json!({}),
                )
                .await;
            let busy = data["instances"].as_array().unwrap();
            if busy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instances still not done after {patience:?}: {busy:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the firing clients did.
#[derive(Debug, Default)]
pub(crate) struct Fired {
    /// Acknowledged fires: idempotency key -> session.
    pub(crate) acked: HashMap<String, String>,
    /// Acknowledgements that said `duplicate: true` (a retry of a fire that had
    /// been applied but whose answer was lost).
    pub(crate) duplicates: usize,
    /// Attempts that got no answer or a retryable error, by code (`LOST` for no answer).
    pub(crate) failures: BTreeMap<String, usize>,
}

impl Fired {
    pub(crate) fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// `clients` concurrent clients firing `page` into `sessions` (client `c`'s
/// n-th fire goes to session `(c + n) % len`, key `c<c>-<n>`), each through
/// `clients_of[c % len]`, until `stop` is set or each made `per_client` fires.
/// A fire that gets no answer or `UNAVAILABLE` is retried with the same key
/// until acknowledged; any other refusal fails the test.
pub(crate) async fn fire_until(
    clients_of: &[Client],
    clients: usize,
    sessions: &[String],
    per_client: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Fired {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = clients_of[c % clients_of.len()].clone();
        let sessions = sessions.to_vec();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut fired = Fired::default();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && per_client.is_none_or(|limit| n < limit) {
                let session = &sessions[(c + n) % sessions.len()];
                let key = format!("c{c}-{n}");
                let deadline = Instant::now() + PATIENCE;
                loop {
                    let answer = client
                        .post(
                            "mutation($s: String!, $k: JSON, $key: String) { \
                               fire(session: $s, trigger: \"page\", kwargs: $k, idempotencyKey: $key) \
                               { duplicate event { seq } } }",
                            json!({"s": session, "k": {"client": c, "n": n}, "key": key}),
                        )
                        .await;
                    let (code, reason) = match answer {
                        Answer::Data(data) => {
                            if data["fire"]["duplicate"] == true {
                                fired.duplicates += 1;
                            }
                            fired.acked.insert(key.clone(), session.clone());
                            break;
                        }
                        Answer::Refused { code, message } if code == "UNAVAILABLE" => {
                            (code, message)
                        }
                        Answer::Refused { code, message } => {
                            panic!("fire {key} refused with {code}: {message}")
                        }
                        Answer::Lost(reason) => ("LOST".to_owned(), reason),
                    };
                    *fired.failures.entry(code).or_default() += 1;
                    assert!(
                        Instant::now() < deadline,
                        "fire {key} never acknowledged (last: {reason})"
                    );
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                n += 1;
            }
            fired
        }));
    }
    let mut all = Fired::default();
    for task in tasks {
        let fired = task.await.expect("a firing client panicked");
        all.acked.extend(fired.acked);
        all.duplicates += fired.duplicates;
        for (code, count) in fired.failures {
            *all.failures.entry(code).or_default() += count;
        }
    }
    all
}

/// `n` sessions named `<prefix>:<i>`, each configured with [`workflow`].
pub(crate) async fn configured_sessions(client: &Client, prefix: &str, n: usize) -> Vec<String> {
    let sessions: Vec<String> = (0..n).map(|i| format!("{prefix}:{i}")).collect();
    for session in &sessions {
        client.configure(session, workflow()).await;
    }
    sessions
}

/// Clients firing in the background (see [`fire_until`]) until stopped.
pub(crate) struct Firing {
    stop: Arc<AtomicBool>,
    clients: tokio::task::JoinHandle<Fired>,
}

impl Firing {
    /// `clients` clients firing into `sessions` through `client`.
    pub(crate) fn start(client: &Client, clients: usize, sessions: &[String]) -> Firing {
        let stop = Arc::new(AtomicBool::new(false));
        let through = [client.clone()];
        let sessions = sessions.to_vec();
        let flag = stop.clone();
        let clients =
            tokio::spawn(async move { fire_until(&through, clients, &sessions, None, flag).await });
        Firing { stop, clients }
    }

    /// Stops new fires; waits until every fire made is acknowledged.
    pub(crate) async fn stop(self) -> Fired {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.await.expect("the firing clients")
    }
}

/// What the audit of the sessions' logs found.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// Caller fires of `page` found in the logs.
    pub(crate) fires: usize,
    /// Events in the logs.
    pub(crate) events: usize,
}

/// Audits the logs and states of `sessions` against what the clients were told:
/// gap-free seq; every acknowledged key exactly once (in its session) and no key
/// twice; one `count` and one `echo` per fire, all finished; one `first`.
pub(crate) async fn audit(client: &Client, sessions: &[String], fired: &Fired) -> Audit {
    let mut audit = Audit::default();
    let mut found: HashMap<String, String> = HashMap::new();
    for session in sessions {
        let events = client.events(session).await;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event["seq"],
                json!(i + 1),
                "session {session}: seq must be gap-free"
            );
        }
        let mut fires = 0;
        for event in &events {
            if event["kind"] == "TriggerFired" && event["causedBy"].is_null() {
                assert_eq!(event["trigger"], "page");
                let key = event["data"]["idempotencyKey"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a fire without its key: {event}"))
                    .to_owned();
                if let Some(other) = found.insert(key.clone(), session.clone()) {
                    panic!("fire {key} applied twice (sessions {other} and {session})");
                }
                fires += 1;
            }
        }
        let state = client.state(session).await;
        assert_eq!(state["version"], json!(events.len()), "version = last seq");
        let instances = state["instances"].as_array().unwrap();
        for task in ["count", "echo", "first"] {
            let of_task: Vec<&Value> = instances.iter().filter(|i| i["task"] == task).collect();
            let expected = if task == "first" { 1 } else { fires };
            assert_eq!(
                of_task.len(),
                expected,
                "session {session}: {task} instances for {fires} fires"
            );
            for instance in of_task {
                assert_eq!(instance["status"], "FINISHED", "{instance:#}");
            }
        }
        audit.fires += fires;
        audit.events += events.len();
    }
    for (key, session) in &fired.acked {
        assert_eq!(
            found.get(key),
            Some(session),
            "acknowledged fire {key} is not in the log of {session}"
        );
    }
    audit
}

/// Everything a user sees of `sessions`.
pub(crate) async fn states(client: &Client, sessions: &[String]) -> Vec<Value> {
    let mut states = Vec::new();
    for session in sessions {
        states.push(client.state(session).await);
    }
    states
}

/// A small deterministic generator (xorshift), seeded per run and printed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> (Rng, u64) {
        let seed = std::env::var("TRIGGERS_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        (Rng(seed), seed)
    }

    /// A number in `low..high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}
