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

on_both_backends!(
    random_configuration_documents_are_applied_whole_or_refused_with_a_code,
    random_kwargs_are_stored_verbatim_or_refused_with_a_code,
    duplicate_json_keys_keep_the_last_value_everywhere,
    random_names_are_stored_verbatim_or_refused_with_a_code,
);

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
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /graphql");
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

// ---------------------------------------------------------------------------
// Class 1: configuration documents

/// What `configure` must answer for `document`, judged by the edge limits and
/// the parser itself.
fn expected_configure(body: &[u8], document: &Value) -> Option<(u16, String)> {
    if let Some((status, code)) = edge_refusal(body) {
        return Some((status, code.to_owned()));
    }
    if over_json_limits(document) {
        return Some((200, "BAD_INPUT".to_owned()));
    }
    configuration_error(document).map(|_| (200, "BAD_CONFIGURATION".to_owned()))
}

/// Why `configure` refuses `document` as `BAD_CONFIGURATION`: what the parser
/// says, or (once parsed) the first task, in name order, that asks for the
/// inline runner without a registered handler (only the built-in
/// `triggers.testing.*` handlers are).
fn configuration_error(document: &Value) -> Option<String> {
    let tasks = match parse_tasks(document) {
        Ok(tasks) => tasks,
        Err(DomainError::BadConfiguration(message)) => return Some(message),
        Err(other) => panic!("the parser refused with {other:?}"),
    };
    let registered = [
        "PassThru",
        "DevNull",
        "Failing",
        "SelfSkipping",
        "SelfRetrying",
    ]
    .map(|h| format!("triggers.testing.{h}"));
    tasks
        .iter()
        .find(|(_, task)| task.using.as_deref() == Some("inline") && !registered.contains(&task.run))
        .map(|(name, task)| {
            format!(
                "task {name:?}: directive \"using\" is \"inline\" but no handler named {:?} is registered",
                task.run
            )
        })
}

async fn random_configuration_documents_are_applied_whole_or_refused_with_a_code(db: TestDb) {
    let app = spawn_app(&db).await;
    let strategy = (0..3usize, tasks_document());
    let tally = fuzz(
        &db,
        "configure documents",
        300,
        strategy,
        |(n, document)| {
            let app = &app;
            async move {
                let session = format!("fuzz:configure:{n}");
                let before = version(app, &session).await;
                let body = serde_json::to_vec(
                    &json!({"query": CONFIGURE, "variables": {"s": session, "t": document}}),
                )
                .unwrap();
                let expected = expected_configure(&body, &document);
                let answer = send(app, body).await;
                assert_eq!(
                    answer.refusal().map(|(s, c)| (s, c.to_owned())),
                    expected,
                    "configure answered {answer:?}"
                );
                if let Some((_, code)) = answer.refusal() {
                    if code == "BAD_CONFIGURATION" {
                        let message = configuration_error(&document);
                        assert_eq!(Some(answer.message()), message.as_deref(), "the message");
                    }
                    assert_eq!(version(app, &session).await, before, "a refusal wrote");
                    return answer;
                }
                assert_eq!(answer.data()["configure"]["version"], before + 1);
                check_configured(app, &session, before, &document).await;
                answer
            }
        },
    );
    assert!(tally.0.contains_key("accepted") && tally.0.contains_key("BAD_CONFIGURATION"));
}

/// After an accepted configure, read back from the database (not the cache):
/// one `SessionConfigured` event, and each task exactly as parsed.
async fn check_configured(app: &TestApp, session: &str, before: u64, document: &Value) {
    let parsed = parse_tasks(document).unwrap();
    app.engine.clear_cache();
    let names: Vec<&String> = parsed.keys().collect();
    let selections: String = (0..names.len())
        .map(|i| {
            format!(
                "t{i}: task(name: $n{i}) {{ name after andEvery unless run using maxRetries withParams extras }} "
            )
        })
        .collect();
    let declarations: String = (0..names.len())
        .map(|i| format!(", $n{i}: String!"))
        .collect();
    let query = format!(
        "query($s: String!, $v: Int!{declarations}) {{ session(uid: $s) {{ version events(after: $v) {{ kind }} {selections} }} }}"
    );
    let mut variables = json!({"s": session, "v": before});
    for (i, name) in names.iter().enumerate() {
        variables[format!("n{i}")] = json!(name);
    }
    let answer = request(app, &query, variables).await;
    let read = &answer.data()["session"];
    assert_eq!(read["version"], before + 1);
    assert_eq!(read["events"], json!([{"kind": "SessionConfigured"}]));
    for (i, (name, task)) in parsed.iter().enumerate() {
        let got = &read[format!("t{i}")];
        let expected = json!({
            "name": name,
            "after": task.after,
            "andEvery": task.and_every,
            "unless": task.unless,
            "run": task.run,
            "using": task.using,
            "maxRetries": task.max_retries,
            "withParams": task.with_params,
            "extras": task.extras,
        });
        assert!(
            got == &expected,
            "task {name:?} reads back as {got}, expected {expected}"
        );
    }
}

// ---------------------------------------------------------------------------
// Class 2: kwargs

/// kwargs to fire with: anything, objects with odd keys, deep, huge, or absent.
fn kwargs() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => json_value(),
        4 => prop::collection::vec((text(), json_value()), 0..5)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        3 => deep(),
        3 => (50usize..400).prop_map(|depth| nest(depth, json!(1))),
        1 => huge().prop_map(|s| json!({ "big": s })),
        1 => Just(Value::Null),
    ]
}

/// `value` as a GraphQL input literal, when it has one: object keys must be
/// GraphQL names; strings are written as JSON strings (valid GraphQL strings);
/// numbers as JSON writes them (an integer past `i64` is refused by the
/// GraphQL parser: "number out of range").
fn graphql_literal(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => value.to_string(),
        Value::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(graphql_literal).collect();
            format!("[{}]", items?.join(", "))
        }
        Value::Object(map) => {
            let fields: Option<Vec<String>> = map
                .iter()
                .map(|(key, value)| {
                    let is_name = key
                        .chars()
                        .next()
                        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                        && key.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
                    is_name
                        .then(|| graphql_literal(value).map(|v| format!("{key}: {v}")))
                        .flatten()
                })
                .collect();
            format!("{{{}}}", fields?.join(", "))
        }
    })
}

/// Sessions of the kwargs class: each runs a PassThru on every `go`, whose
/// result cascades into a DevNull, so kwargs travel through instances,
/// results and cascades.
fn kwargs_tasks() -> Value {
    json!({
        "t_pass": {"after": [], "andEvery": "go", "run": PASSTHRU},
        "t_next": {"after": [], "andEvery": "t_pass", "run": DEVNULL},
    })
}

async fn random_kwargs_are_stored_verbatim_or_refused_with_a_code(db: TestDb) {
    let app = spawn_app(&db).await;
    for n in 0..3 {
        app.configure(&format!("fuzz:kwargs:{n}"), kwargs_tasks())
            .await;
    }
    let strategy = (0..3usize, kwargs(), any::<bool>());
    let tally = fuzz(&db, "fire kwargs", 300, strategy, |(n, kwargs, inline)| {
        let app = &app;
        async move {
            let session = format!("fuzz:kwargs:{n}");
            // Work left running by an earlier failed case (while shrinking)
            // would move the version under this one.
            app.settle().await;
            let before = version(app, &session).await;
            let literal = inline.then(|| graphql_literal(&kwargs)).flatten();
            let (body, expected) = match &literal {
                Some(literal) => {
                    let query = format!(
                        "mutation($s: String!) {{ fire(session: $s, trigger: \"go\", kwargs: {literal}) {{ event {{ seq kind trigger data }} session {{ version }} }} }}"
                    );
                    let body =
                        serde_json::to_vec(&json!({"query": query, "variables": {"s": session}}))
                            .unwrap();
                    let expected = if has_big_int(&kwargs) {
                        edge_refusal(&body).or(Some((200, "BAD_INPUT")))
                    } else {
                        expected_fire(&body, &kwargs)
                    };
                    (body, expected)
                }
                None => {
                    let body = serde_json::to_vec(&json!({
                        "query": FIRE,
                        "variables": {"s": session, "t": "go", "k": kwargs},
                    }))
                    .unwrap();
                    let expected = expected_fire(&body, &kwargs);
                    (body, expected)
                }
            };
            let answer = send(app, body).await;
            assert_eq!(
                answer.refusal(),
                expected,
                "fire answered {answer:?} (inline: {})",
                literal.is_some()
            );
            if answer.refusal().is_some() {
                assert_eq!(version(app, &session).await, before, "a refusal wrote");
                return answer;
            }
            check_fired(app, &session, before, answer.data(), &kwargs).await;
            answer
        }
    });
    assert!(tally.0.contains_key("accepted") && tally.0.contains_key("BAD_INPUT"));
}

/// Whether `value` holds an integer that GraphQL's `Int` syntax cannot (past
/// `i64`).
fn has_big_int(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_u64() && n.as_i64().is_none(),
        Value::Array(items) => items.iter().any(has_big_int),
        Value::Object(map) => map.values().any(has_big_int),
        _ => false,
    }
}

/// What `fire` must answer for `kwargs` sent in `body`. (Inline, a literal
/// nested deeper than the document's bracket limit (128) is refused before
/// parsing, also as `BAD_INPUT`: it is over the JSON depth limit anyway.)
fn expected_fire(body: &[u8], kwargs: &Value) -> Option<(u16, &'static str)> {
    if let Some(refusal) = edge_refusal(body) {
        return Some(refusal);
    }
    if over_json_limits(kwargs) || !(kwargs.is_object() || kwargs.is_null()) {
        return Some((200, "BAD_INPUT"));
    }
    None
}

/// After an accepted fire: the event holds the kwargs verbatim, the version
/// grew, and once the PassThru and its cascade ran, the whole session reads
/// back from the database (not the cache) with the kwargs where they belong.
async fn check_fired(app: &TestApp, session: &str, before: u64, fired: &Value, kwargs: &Value) {
    let kwargs = if kwargs.is_null() {
        json!({})
    } else {
        kwargs.clone()
    };
    let event = &fired["fire"]["event"];
    assert_eq!(event["kind"], "TriggerFired");
    assert_eq!(event["trigger"], "go");
    assert_eq!(event["seq"], before + 1);
    assert!(
        event["data"]["kwargs"] == kwargs,
        "the event holds {}, not {kwargs}",
        event["data"]["kwargs"]
    );
    assert!(fired["fire"]["session"]["version"].as_u64().unwrap() > before + 1);

    app.settle().await;
    app.engine.clear_cache();
    let answer = request(
        app,
        "query($s: String!, $v: Int!) { session(uid: $s) {
           version latestKwargs events(after: $v, first: 1000) { kind data }
           unresolvedInstances { name }
         } }",
        json!({"s": session, "v": before}),
    )
    .await;
    let read = &answer.data()["session"];
    assert!(
        read["latestKwargs"]["go"] == kwargs,
        "latestKwargs holds {}, not {kwargs}",
        read["latestKwargs"]["go"]
    );
    let finished: Vec<&Value> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "InstanceFinished")
        .collect();
    assert_eq!(
        finished.len(),
        2,
        "t_pass and t_next ran: {:#}",
        read["events"]
    );
    assert!(
        finished[0]["data"]["result"] == json!({"kwargs": {"go": kwargs}}),
        "PassThru's result: {}",
        finished[0]["data"]["result"]
    );
    assert_eq!(read["unresolvedInstances"], json!([]));
}

// ---------------------------------------------------------------------------
// Class 3: duplicate keys in raw bodies

/// JSON as written on the wire, where an object may repeat a key.
#[derive(Debug, Clone)]
enum Raw {
    Leaf(Value),
    List(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl Raw {
    /// The JSON text, every pair written, repeats included.
    fn text(&self) -> String {
        match self {
            Raw::Leaf(value) => value.to_string(),
            Raw::List(items) => {
                let items: Vec<String> = items.iter().map(Raw::text).collect();
                format!("[{}]", items.join(","))
            }
            Raw::Object(pairs) => {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("{}:{}", json!(key), value.text()))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
        }
    }

    /// The value when a repeated key keeps its last value.
    fn last_wins(&self) -> Value {
        match self {
            Raw::Leaf(value) => value.clone(),
            Raw::List(items) => Value::Array(items.iter().map(Raw::last_wins).collect()),
            Raw::Object(pairs) => {
                let mut map = Map::new();
                for (key, value) in pairs {
                    map.insert(key.clone(), value.last_wins());
                }
                Value::Object(map)
            }
        }
    }
}

/// Objects over a three-key alphabet, so that keys repeat often.
fn raw_object() -> impl Strategy<Value = Raw> {
    let key = prop::sample::select(vec!["a", "b", "\u{e9}"]).prop_map(str::to_owned);
    let leaf = prop_oneof![
        any::<i32>().prop_map(|n| Raw::Leaf(json!(n))),
        text().prop_map(|s| Raw::Leaf(json!(s))),
        Just(Raw::Leaf(Value::Null)),
    ];
    let value = leaf.prop_recursive(2, 12, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Raw::List),
            prop::collection::vec((key.clone(), inner), 1..5).prop_map(Raw::Object),
        ]
    });
    let key = prop::sample::select(vec!["a", "b", "\u{e9}"]).prop_map(str::to_owned);
    prop::collection::vec((key, value), 2..6).prop_map(Raw::Object)
}

/// A task's directives with repeats: `run` twice, `after` maybe twice (once
/// wrong), so which one wins decides whether the task is valid.
fn raw_directives() -> impl Strategy<Value = Raw> {
    let run = prop::sample::select(vec![DEVNULL, "app.Job", ""]).prop_map(|r| Raw::Leaf(json!(r)));
    let after = prop_oneof![
        Just(Raw::Leaf(json!(["x"]))),
        Just(Raw::Leaf(json!([]))),
        Just(Raw::Leaf(json!("not a list"))),
    ];
    (run.clone(), run, after.clone(), after, any::<bool>()).prop_map(
        |(run1, run2, after1, after2, after_first)| {
            let mut pairs = vec![("run".to_owned(), run1), ("after".to_owned(), after1)];
            pairs.push(("run".to_owned(), run2));
            if after_first {
                pairs.insert(0, ("after".to_owned(), after2));
            } else {
                pairs.push(("after".to_owned(), after2));
            }
            Raw::Object(pairs)
        },
    )
}

/// One request with repeated keys somewhere.
#[derive(Debug, Clone)]
enum Duplicate {
    /// Repeated keys inside the kwargs object of a variable.
    InKwargs(Raw),
    /// The variable `k` itself given twice (or three times).
    RepeatedVariable(Vec<Raw>),
    /// Repeated task names and repeated directives in a `tasks` document.
    InTasks(Vec<(String, Raw)>),
    /// A repeated field in an inline GraphQL object literal.
    InLiteral(i32, i32),
    /// `query` given twice at the top level of the request.
    RepeatedQuery,
}

fn duplicate() -> impl Strategy<Value = Duplicate> {
    let task = prop::sample::select(vec!["t_a", "t_b"]).prop_map(str::to_owned);
    prop_oneof![
        4 => raw_object().prop_map(Duplicate::InKwargs),
        3 => prop::collection::vec(
                prop_oneof![raw_object(), Just(Raw::Leaf(json!([1])))], 2..4)
            .prop_map(Duplicate::RepeatedVariable),
        4 => prop::collection::vec((task, raw_directives()), 1..4).prop_map(Duplicate::InTasks),
        1 => (any::<i32>(), any::<i32>()).prop_map(|(a, b)| Duplicate::InLiteral(a, b)),
        1 => Just(Duplicate::RepeatedQuery),
    ]
}

// What the server does with repeated keys, found out by this test:
//
// - In JSON (request variables, kwargs objects, `tasks` documents, a task's
//   directives), the last occurrence of a key wins, silently: the body is read
//   by serde_json into an order-preserving map, whose insert replaces the
//   value (keeping the first occurrence's position). A repeated variable
//   likewise: `{"k": {...}, "k": [1]}` means `k = [1]`.
// - A repeated top-level field of the request (`"query"` twice) is not a
//   GraphQL request: HTTP 400, `BAD_INPUT` ("duplicate field `query`").
// - In an inline GraphQL object literal (`kwargs: {a: 1, a: 2}`), the last
//   one wins as well: async-graphql does not apply GraphQL's input object
//   field uniqueness rule to the values of a custom scalar (`JSON`).
async fn duplicate_json_keys_keep_the_last_value_everywhere(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        "fuzz:dup",
        json!({"t_w": {"after": ["go"], "andEvery": "go", "run": "app.Job"}}),
    )
    .await;
    fuzz(&db, "duplicate keys", 200, duplicate(), |case| {
        let app = &app;
        async move {
            let session = "fuzz:dup";
            let before = version(app, session).await;
            let quoted = json!(FIRE).to_string();
            match case {
                Duplicate::InKwargs(raw) => {
                    let body = format!(
                        r#"{{"query":{quoted},"variables":{{"s":"{session}","t":"go","k":{}}}}}"#,
                        raw.text()
                    );
                    let answer = send(app, body).await;
                    let stored = &answer.data()["fire"]["event"]["data"]["kwargs"];
                    assert!(
                        *stored == raw.last_wins(),
                        "{} stored as {stored}",
                        raw.text()
                    );
                    answer
                }
                Duplicate::RepeatedVariable(raws) => {
                    let repeats: Vec<String> = raws
                        .iter()
                        .map(|raw| format!(r#""k":{}"#, raw.text()))
                        .collect();
                    let body = format!(
                        r#"{{"query":{quoted},"variables":{{"s":"{session}","t":"go",{}}}}}"#,
                        repeats.join(",")
                    );
                    let answer = send(app, body).await;
                    let last = raws.last().unwrap().last_wins();
                    if last.is_object() {
                        let stored = &answer.data()["fire"]["event"]["data"]["kwargs"];
                        assert!(*stored == last, "stored {stored}, the last k is {last}");
                    } else {
                        assert_eq!(answer.refusal(), Some((200, "BAD_INPUT")));
                        assert_eq!(version(app, session).await, before);
                    }
                    answer
                }
                Duplicate::InTasks(tasks) => {
                    let raw = Raw::Object(tasks);
                    let body = format!(
                        r#"{{"query":{},"variables":{{"s":"{session}","t":{}}}}}"#,
                        json!(CONFIGURE),
                        raw.text()
                    );
                    let answer = send(app, body).await;
                    let document = raw.last_wins();
                    match parse_tasks(&document) {
                        Ok(parsed) => {
                            assert_eq!(answer.data()["configure"]["version"], before + 1);
                            let read = request(
                                app,
                                "query($s: String!) { session(uid: $s) { tasks { name run after } } }",
                                json!({"s": session}),
                            )
                            .await;
                            for task in read.data()["session"]["tasks"].as_array().unwrap() {
                                if let Some(config) = parsed.get(task["name"].as_str().unwrap()) {
                                    assert_eq!(task["run"], json!(config.run));
                                    assert_eq!(task["after"], json!(config.after));
                                }
                            }
                        }
                        Err(DomainError::BadConfiguration(message)) => {
                            assert_eq!(answer.refusal(), Some((200, "BAD_CONFIGURATION")));
                            assert_eq!(answer.message(), message);
                            assert_eq!(version(app, session).await, before);
                        }
                        Err(other) => panic!("{other:?}"),
                    }
                    answer
                }
                Duplicate::InLiteral(a, b) => {
                    let query = format!(
                        "mutation {{ fire(session: \"{session}\", trigger: \"go\", kwargs: {{a: {a}, b: [], a: {b}}}) {{ event {{ data }} }} }}"
                    );
                    let answer = send(app, json!({"query": query}).to_string()).await;
                    let stored = &answer.data()["fire"]["event"]["data"]["kwargs"];
                    assert_eq!(*stored, json!({"a": b, "b": []}));
                    answer
                }
                Duplicate::RepeatedQuery => {
                    let body = format!(
                        r#"{{"query":{quoted},"query":"{{ __typename }}","variables":{{"s":"{session}","t":"go"}}}}"#
                    );
                    let answer = send(app, body).await;
                    assert_eq!(answer.refusal(), Some((400, "BAD_INPUT")), "{answer:?}");
                    assert!(answer.message().contains("duplicate field"), "{answer:?}");
                    assert_eq!(version(app, session).await, before);
                    answer
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Class 4: session, task and trigger names

/// Names: empty, whitespace, unicode, meta-characters, NUL, or long (on both
/// sides of the 512-byte limit, compressible or not).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => "[ \t\n]{1,4}",
        4 => "\\PC{1,24}",
        1 => Just("e\u{301}\u{202e}\u{200b}\u{1f600}".to_owned()),
        1 => Just("'; DROP TABLE events; --".to_owned()),
        1 => Just("%".to_owned()),
        1 => Just("_".to_owned()),
        1 => Just("\\".to_owned()),
        1 => "[a-z]{0,3}\u{0}[a-z]{0,3}",
        1 => "\\PC{100,200}",
        1 => "\\PC{400,1500}",
        1 => (500usize..530).prop_map(|n| "n".repeat(n)),
        1 => (1_000usize..4_000).prop_map(|n| "n".repeat(n)),
    ]
}

/// Whether `name` can name a session, task or trigger.
fn is_name(name: &str) -> bool {
    name_problem("name", name).is_none()
}

async fn random_names_are_stored_verbatim_or_refused_with_a_code(db: TestDb) {
    let app = spawn_app(&db).await;
    let strategy = (name(), name(), name());
    fuzz(
        &db,
        "session/task/trigger names",
        150,
        strategy,
        |(session, task, trigger)| {
            let app = &app;
            async move {
                app.settle().await;
                let read = "query($s: String!) { session(uid: $s) { version } }";
                if !is_name(&session) {
                    let answer = request(app, read, json!({"s": session})).await;
                    assert_eq!(
                        answer.refusal(),
                        Some((200, "BAD_INPUT")),
                        "session: {answer:?}"
                    );
                }
                let before = if is_name(&session) {
                    version(app, &session).await
                } else {
                    0
                };
                let configure = request(
                app,
                CONFIGURE,
                json!({"s": session, "t": {task.clone(): {"after": [trigger], "run": DEVNULL}}}),
            )
            .await;
                let expected = if !is_name(&session) {
                    Some((200, "BAD_INPUT"))
                } else if !is_name(&task) || !is_name(&trigger) {
                    Some((200, "BAD_CONFIGURATION"))
                } else {
                    None
                };
                assert_eq!(configure.refusal(), expected, "configure: {configure:?}");
                let fire = request(app, FIRE, json!({"s": session, "t": trigger, "k": {}})).await;
                let expected =
                    (!is_name(&session) || !is_name(&trigger)).then_some((200, "BAD_INPUT"));
                assert_eq!(fire.refusal(), expected, "fire: {fire:?}");
                if !is_name(&session) {
                    return configure;
                }
                app.settle().await;
                let after = version(app, &session).await;
                if configure.refusal().is_some() && fire.refusal().is_some() {
                    assert_eq!(after, before, "refusals wrote");
                    return configure;
                }
                assert!(after > before);
                if configure.refusal().is_none() {
                    check_named(app, &session, &task, &trigger, after).await;
                }
                configure
            }
        },
    );
}

/// The session, its task and the task's first instance read back under their
/// own names, in the session and in the listings across sessions.
async fn check_named(app: &TestApp, session: &str, task: &str, trigger: &str, version: u64) {
    let instance = format!("{task}#0");
    let answer = request(
        app,
        "query($s: String!, $t: String!, $i: String!) {
           session(uid: $s) { uid version task(name: $t) { name after } instance(name: $i) { name task session } }
           instances(task: $t, first: 1000) { session name }
           sessions(first: 1000) { uid version }
         }",
        json!({"s": session, "t": task, "i": instance}),
    )
    .await;
    let data = answer.data();
    let read = &data["session"];
    assert_eq!(read["uid"], session);
    assert_eq!(read["version"], version);
    assert_eq!(read["task"], json!({"name": task, "after": [trigger]}));
    assert_eq!(
        read["instance"],
        json!({"name": instance, "task": task, "session": session}),
        "the fire made {instance:?}"
    );
    let listed: Vec<&Value> = data["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["session"] == session)
        .collect();
    assert_eq!(listed, [&json!({"session": session, "name": instance})]);
    let sessions: Vec<&Value> = data["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["uid"] == session)
        .collect();
    assert_eq!(sessions, [&json!({"uid": session, "version": version})]);
}
