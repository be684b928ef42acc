//! Bad input, fuzzed, through the real server: random configuration documents,
//! kwargs, raw bodies with duplicate JSON keys, and session, task and trigger
//! names. For every input the answer is HTTP 200 (or the 400/413 of the edge
//! limits), never a 5xx; every error carries a client code (never `INTERNAL`);
//! a refusal leaves the session's version unchanged; an acceptance is coherent
//! (the version grew, and what was sent is stored and returned verbatim).
//!
//! Each class is one proptest run against one server (one database), with the
//! session varied per case. The seed is fixed so that runs repeat; set
//! `TRIGGERS_FUZZ_SEED=<u64>` to explore other inputs. Failures are not
//! persisted. Each run prints how many inputs it tried (`--nocapture`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Map, Number, Value};
use triggers::domain::names::name_problem;
use triggers::domain::{parse_tasks, DomainError};

use crate::support::{spawn_app, Backend, TestApp, TestDb, DEVNULL, PASSTHRU};

mod configuration;
mod duplicates;
mod kwargs;
mod names;

/// Every code a client may see for its own mistakes. `INTERNAL` is not one.
const CLIENT_CODES: [&str; 6] = [
    "BAD_CONFIGURATION",
    "BAD_INPUT",
    "NOT_FOUND",
    "INVALID_STATE",
    "CONFLICT",
    "UNAUTHORIZED",
];

/// The server's default limits (`ServerConfig::default()`), which decide
/// which refusal an input gets: body bytes, JSON argument bytes and depth.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_JSON_BYTES: usize = 256 * 1024;
const MAX_JSON_DEPTH: usize = 64;

const CONFIGURE: &str =
    "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }";
const FIRE: &str = "mutation($s: String!, $t: String!, $k: JSON) {
  fire(session: $s, trigger: $t, kwargs: $k) { event { seq kind trigger data } session { version } }
}";

// ---------------------------------------------------------------------------
// Judging answers

/// What the server answered to one request, once judged sane.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// HTTP 200 without errors: the `data`.
    Accepted(Value),
    /// Refused: the HTTP status and the code and message of the first error.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

impl Answer {
    /// The `data` of an accepted request; panics (showing the refusal) otherwise.
    pub(crate) fn data(&self) -> &Value {
        match self {
            Answer::Accepted(data) => data,
            refused => panic!("expected an acceptance, got {refused:?}"),
        }
    }

    /// `(status, code)` of a refusal, `None` when accepted.
    pub(crate) fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            Answer::Accepted(_) => None,
            Answer::Refused { status, code, .. } => Some((*status, code)),
        }
    }

    /// The message of a refusal ("" when accepted).
    pub(crate) fn message(&self) -> &str {
        match self {
            Answer::Accepted(_) => "",
            Answer::Refused { message, .. } => message,
        }
    }

    /// How a tally files this answer: `accepted`, or `CODE` / `CODE (HTTP n)`.
    fn label(&self) -> String {
        match self {
            Answer::Accepted(_) => "accepted".to_owned(),
            Answer::Refused {
                status: 200, code, ..
            } => code.clone(),
            Answer::Refused { status, code, .. } => format!("{code} (HTTP {status})"),
        }
    }
}

/// Checks what every answer must be, whatever the input: HTTP 200, or 400,
/// 401 or 413 from the edge (never a 5xx), a JSON body, and errors that each
/// carry a client code and a message.
pub(crate) fn judge(status: u16, text: &str) -> Answer {
    assert!(
        matches!(status, 200 | 400 | 401 | 413),
        "HTTP {status}: {text:.600}"
    );
    let body: Value = serde_json::from_str(text).unwrap_or_else(|err| {
        panic!("HTTP {status} with a body that is not JSON ({err}): {text:.600}")
    });
    let Some(errors) = body.get("errors") else {
        assert_eq!(status, 200, "{text:.600}");
        return Answer::Accepted(body["data"].clone());
    };
    let errors = errors.as_array().expect("errors is a list");
    assert!(!errors.is_empty(), "{text:.600}");
    for error in errors {
        let code = error["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error without extensions.code: {text:.600}"));
        assert!(
            CLIENT_CODES.contains(&code),
            "{code} answers bad input: {text:.600}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error without a message: {text:.600}"
        );
    }
    Answer::Refused {
        status,
        code: errors[0]["extensions"]["code"].as_str().unwrap().to_owned(),
        message: errors[0]["message"].as_str().unwrap().to_owned(),
    }
}

/// POSTs `body` to `/graphql` byte for byte and judges the answer.
pub(crate) async fn send(app: &TestApp, body: impl Into<Vec<u8>>) -> Answer {
    let body = body.into();
    if body.len() > MAX_BODY_BYTES {
        return send_oversized(app, &body).await;
    }
    let response = app.post_body(body).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    judge(status, &text)
}

/// POSTs a body over the limit on a connection of its own: the server answers
/// 413 and closes without reading it all, which an HTTP client reports as a
/// failed write. Writes what it can, then reads the answer.
async fn send_oversized(app: &TestApp, body: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, text) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:.300}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    judge(status, text)
}

/// Sends a GraphQL request with `variables` and judges the answer.
pub(crate) async fn request(app: &TestApp, query: &str, variables: Value) -> Answer {
    let body = json!({"query": query, "variables": variables});
    send(app, serde_json::to_vec(&body).expect("serialisable")).await
}

/// The refusal the server's edge gives a request body, if any: 413 past the
/// body limit, 400 when its JSON reader refuses it (serde_json's nesting limit
/// of 128; the same reader is asked here).
fn edge_refusal(body: &[u8]) -> Option<(u16, &'static str)> {
    if body.len() > MAX_BODY_BYTES {
        return Some((413, "BAD_INPUT"));
    }
    if serde_json::from_slice::<Value>(body).is_err() {
        return Some((400, "BAD_INPUT"));
    }
    None
}

/// Bytes of `value` serialised, as the server measures JSON arguments.
fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value).expect("serialisable").len()
}

/// Levels of objects and lists (`{}` is 1), as the server measures them.
fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a JSON argument is over the server's size or depth limit.
fn over_json_limits(value: &Value) -> bool {
    json_len(value) > MAX_JSON_BYTES || json_depth(value) > MAX_JSON_DEPTH
}

async fn version(app: &TestApp, session: &str) -> u64 {
    let answer = request(
        app,
        "query($s: String!) { session(uid: $s) { version } }",
        json!({"s": session}),
    )
    .await;
    answer.data()["session"]["version"]
        .as_u64()
        .expect("a version")
}

// ---------------------------------------------------------------------------
// Driving proptest from an async test

/// Inputs tried in one class, by outcome.
#[derive(Debug, Default)]
struct Tally(BTreeMap<String, u32>);

impl Tally {
    fn total(&self) -> u32 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} inputs tried (", self.total())?;
        for (i, (label, n)) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{label}: {n}")?;
        }
        write!(f, ")")
    }
}

pub(crate) fn backend_name(db: &TestDb) -> &'static str {
    match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// A deterministic runner: fixed seed (or `TRIGGERS_FUZZ_SEED`), no failure
/// persistence, a bounded shrink.
fn runner(cases: u32) -> TestRunner {
    let seed = std::env::var("TRIGGERS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7472_6967_6765_7273);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Runs `cases` inputs of `strategy` through `case` (which makes its own
/// assertions and returns the decisive answer), shrinking a failure to a small
/// input, and prints the tally of `class`. Blocks this worker thread; the
/// server keeps running on the others.
fn fuzz<S, F, Fut>(db: &TestDb, class: &str, cases: u32, strategy: S, case: F) -> Tally
where
    S: Strategy,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Answer>,
{
    let tally = RefCell::new(Tally::default());
    let outcome = tokio::task::block_in_place(|| {
        let handle = tokio::runtime::Handle::current();
        runner(cases).run(&strategy, |input| {
            let answer = handle
                .block_on(tokio::time::timeout(Duration::from_secs(60), case(input)))
                .expect("one input is answered within 60 s");
            *tally.borrow_mut().0.entry(answer.label()).or_default() += 1;
            Ok(())
        })
    });
    let tally = tally.into_inner();
    eprintln!("fuzz[{}] {class}: {tally}", backend_name(db));
    if let Err(err) = outcome {
        panic!("{class}: {err}");
    }
    tally
}

// ---------------------------------------------------------------------------
// Strategies

/// Strings that tend to break things: empty, whitespace, unicode (combining,
/// right-to-left, zero-width, astral), NUL, quotes, SQL meta-characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => "[ \t\n\r]{1,3}",
        4 => "[a-z_]{1,8}",
        4 => "\\PC{1,16}",
        1 => Just("e\u{301}\u{202e}\u{200b}\u{1f600}\u{10ffff}".to_owned()),
        1 => Just("nul\u{0}inside".to_owned()),
        1 => Just("'; DROP TABLE events; --".to_owned()),
        1 => Just("%_\\\"$1?".to_owned()),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a finite number", |f| Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// `leaf` wrapped in `depth` alternating objects and lists.
fn nest(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, level| {
        if level % 2 == 0 {
            json!({ "k": inner })
        } else {
            json!([inner])
        }
    })
}

/// Deeply nested values, on both sides of the JSON argument depth limit (64)
/// and of serde_json's nesting limit (128) once wrapped in a request body.
fn deep() -> impl Strategy<Value = Value> {
    (
        prop_oneof![1usize..40, 55usize..75, 100usize..140, 140usize..400],
        json_value(),
    )
        .prop_map(|(depth, leaf)| nest(depth, leaf))
}

/// A huge string, measured as JSON writes it: under the JSON argument limit,
/// just over it, or over the body limit.
fn huge() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            3 => 1_000usize..100_000,
            1 => Just(MAX_JSON_BYTES - 100),
            2 => MAX_JSON_BYTES..MAX_JSON_BYTES + 10_000,
            1 => MAX_BODY_BYTES..MAX_BODY_BYTES + 10_000,
        ],
        prop::sample::select(vec!["x", "é", "\u{1f600}", "\"", "\u{0}"]),
    )
        .prop_map(|(bytes, unit)| {
            let written = json!(unit).to_string().len() - 2;
            unit.repeat(bytes / written)
        })
}

/// Directive names the configuration parser interprets.
const DIRECTIVES: [&str; 7] = [
    "after",
    "run",
    "andEvery",
    "unless",
    "withParams",
    "using",
    "maxRetries",
];

/// A value for `directive`: usually the right type (with hostile contents),
/// sometimes anything at all.
fn directive_value(directive: &'static str) -> BoxedStrategy<Value> {
    let names = prop::collection::vec(text(), 0..3).prop_map(|v| json!(v));
    let right = match directive {
        "after" | "unless" => names.boxed(),
        "run" => prop_oneof![
            3 => Just(json!(DEVNULL)),
            1 => Just(json!("app.Job")),
            1 => text().prop_map(Value::String),
        ]
        .boxed(),
        "andEvery" => text().prop_map(Value::String).boxed(),
        "using" => prop_oneof![
            Just(json!("inline")),
            Just(json!("worker")),
            text().prop_map(|q| json!(format!("worker:{q}"))),
            text().prop_map(Value::String),
        ]
        .boxed(),
        "maxRetries" => prop_oneof![
            (0u64..10).prop_map(Value::from),
            Just(json!(u64::from(u32::MAX) + 1)),
            Just(json!(-1)),
            Just(json!(2.5)),
            Just(json!("3")),
        ]
        .boxed(),
        _ => prop::collection::vec((text(), prop_oneof![json_value(), Just(json!({}))]), 0..3)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
            .boxed(),
    };
    prop_oneof![4 => right, 1 => json_value()].boxed()
}

/// One task's directives: `after` and `run` mostly present, the others
/// sometimes, plus extras that may be deep or huge.
fn directives() -> impl Strategy<Value = Value> {
    let present: Vec<_> = DIRECTIVES
        .iter()
        .map(|d| {
            let weight = if matches!(*d, "after" | "run") {
                0.9
            } else {
                0.3
            };
            prop::option::weighted(weight, directive_value(d))
        })
        .collect();
    let extra = prop_oneof![
        6 => json_value(),
        2 => deep(),
        1 => huge().prop_map(Value::String),
    ];
    (present, prop::collection::vec((text(), extra), 0..2)).prop_map(|(present, extras)| {
        let mut map: Map<String, Value> = extras.into_iter().collect();
        for (directive, value) in DIRECTIVES.iter().zip(present) {
            if let Some(value) = value {
                map.insert((*directive).to_owned(), value);
            }
        }
        Value::Object(map)
    })
}

/// A task name: anything [`text`] gives, or a long one.
fn task_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => text(),
        1 => "\\PC{200,400}",
    ]
}

/// A `tasks` document: mostly task name -> directives, sometimes any value.
fn tasks_document() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::collection::vec((task_name(), directives()), 0..4)
            .prop_map(|tasks| Value::Object(tasks.into_iter().collect())),
        1 => json_value(),
        1 => deep(),
    ]
}
