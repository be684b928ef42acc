//! Hostile requests: SQL meta-characters in every name (stored and returned
//! verbatim, never interpreted, never matching other rows like a `LIKE`
//! pattern), very wide queries and mutations, extreme page sizes, and every
//! mutation and query without the right token. Complements `limits.rs` (body
//! size, depth, complexity with a small limit, JSON argument size, the token on
//! `configure`) and `listings.rs` (page sizes just over the limit).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::fuzz::{backend_name, request, send, Answer};
use crate::support::{spawn_app, spawn_app_with_token, strs, TestApp, TestDb, DEVNULL, FAILING};

on_both_backends!(
    sql_meta_characters_in_names_are_stored_and_returned_verbatim,
    names_that_look_like_patterns_match_only_themselves,
    very_wide_queries_are_answered_or_refused_by_the_complexity_limit,
    deeply_nested_documents_are_refused_before_they_are_parsed,
    fragment_bombs_are_refused_without_being_expanded,
    nul_characters_and_overlong_names_are_bad_input_on_both_backends,
    very_wide_mutations_are_refused_whole_before_anything_is_written,
    extreme_page_sizes_are_bad_input,
    every_request_without_the_right_token_is_unauthorized_and_writes_nothing,
);

/// Names that mean something to SQL (quotes, comments, `LIKE` wildcards, escape
/// characters, placeholders of both backends) or to a careless decoder
/// (unicode, zero-width, right-to-left, a byte-order mark), and look-alikes of
/// SQL keywords and JSON literals. No NUL: PostgreSQL text cannot hold it.
const HOSTILE: [&str; 30] = [
    "'; DROP TABLE events; --",
    "\"; DELETE FROM sessions; --",
    "' OR '1'='1",
    "') OR 1=1 --",
    "/* comment */",
    "%",
    "_",
    "a%",
    "a_c",
    "%%",
    "\\",
    "\\%",
    "\\_",
    "'",
    "''",
    "\"",
    "`",
    "$1",
    "?",
    "?1",
    ":name",
    "@p1",
    "[a-z]*",
    ".*",
    "\u{1f600} \u{fc}n\u{ef}c\u{f8}d\u{e9}",
    "\u{642}\u{627}\u{626}\u{645}\u{629} \u{202e}rtl",
    "e\u{301} \u{200b}zero-width",
    "\u{feff}bom",
    "NULL",
    "null",
];

/// Prints how many inputs of `class` a test tried (the suite reports them).
fn tried(db: &TestDb, class: &str, inputs: usize) {
    eprintln!(
        "hostile[{}] {class}: {inputs} inputs tried",
        backend_name(db)
    );
}

/// Plain names the patterns above would match if they were interpreted.
const PLAIN: [&str; 3] = ["abc", "a", "ab"];

fn all_names() -> Vec<&'static str> {
    HOSTILE.iter().chain(PLAIN.iter()).copied().collect()
}

/// Configures session `name` with a task `name` waiting on trigger `name`
/// (plus a task `plain` on the same trigger), and fires it with kwargs keyed by
/// `name`.
async fn populate(app: &TestApp, name: &str) {
    app.configure(
        name,
        json!({
            name: {"after": [name], "run": DEVNULL},
            "plain": {"after": [name], "run": DEVNULL},
        }),
    )
    .await;
    let fired = app.fire(name, name, json!({ name: name })).await;
    assert_eq!(fired["event"]["trigger"], name);
    assert_eq!(fired["event"]["data"]["kwargs"], json!({ name: name }));
}

async fn sql_meta_characters_in_names_are_stored_and_returned_verbatim(db: TestDb) {
    let app = spawn_app(&db).await;
    for name in all_names() {
        populate(&app, name).await;
    }
    app.settle().await;
    for name in all_names() {
        app.wait_quiet(name).await;
    }
    // Read from the database, not the cache.
    app.engine.clear_cache();

    let query = "query($s: String!, $i: String!) { session(uid: $s) {
        uid version latestKwargs
        tasks { name after }
        task(name: $s) { name after run }
        instance(name: $i) { session name task status kwargs history { kind instance } }
        instances(task: $s) { name }
        events(first: 1) { kind trigger data }
      } }";
    for name in all_names() {
        let instance = format!("{name}#0");
        let data = app.data(query, json!({"s": name, "i": instance})).await;
        let session = &data["session"];
        assert_eq!(session["uid"], name);
        // Both tasks cascade under their own names (DevNull: `{}`), and one of
        // them is named like the trigger.
        assert_eq!(session["latestKwargs"], json!({ name: {}, "plain": {} }));
        let mut tasks = vec![
            json!({"name": name, "after": [name]}),
            json!({"name": "plain", "after": [name]}),
        ];
        tasks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        assert_eq!(session["tasks"], json!(tasks), "{name}");
        assert_eq!(
            session["task"],
            json!({"name": name, "after": [name], "run": DEVNULL})
        );
        assert_eq!(session["instance"]["session"], name);
        assert_eq!(session["instance"]["name"], instance);
        assert_eq!(session["instance"]["task"], name);
        assert_eq!(session["instance"]["status"], "FINISHED");
        assert_eq!(
            session["instance"]["kwargs"],
            json!({ name: { name: name } })
        );
        assert!(session["instance"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["instance"] == instance.as_str()));
        assert_eq!(session["instances"], json!([{ "name": instance }]));
        let configured = &session["events"][0];
        assert_eq!(configured["kind"], "SessionConfigured");
        assert_eq!(configured["trigger"], Value::Null);
        assert_eq!(configured["data"]["tasks"][name]["after"], json!([name]));
    }

    // Manual changes find the instance by its verbatim name and store
    // metadata verbatim.
    for name in HOSTILE {
        let instance = format!("{name}#0");
        let data = app
            .data(
                "mutation($s: String!, $i: String!, $m: JSON!) {
                   updateInstanceMetadata(session: $s, instance: $i, metadata: $m) { name metadata }
                 }",
                json!({"s": name, "i": instance, "m": { name: name }}),
            )
            .await;
        assert_eq!(data["updateInstanceMetadata"]["name"], instance);
        assert_eq!(data["updateInstanceMetadata"]["metadata"][name], name);
    }

    // The listings hold every session, in code point order, exactly once.
    let data = app
        .data("{ sessions(first: 1000) { uid version } }", json!({}))
        .await;
    let listed: Vec<&str> = strs(&data["sessions"], "uid");
    let expected: Vec<&str> = all_names()
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(listed, expected);
    // And page by page, with each hostile name as the cursor.
    for pair in expected.windows(2) {
        let data = app
            .data(
                "query($a: String) { sessions(first: 1, after: $a) { uid } }",
                json!({"a": pair[0]}),
            )
            .await;
        assert_eq!(
            data["sessions"],
            json!([{ "uid": pair[1] }]),
            "after {:?}",
            pair[0]
        );
    }
    let data = app
        .data(
            "query($a: String) { instances(task: \"plain\", first: 1000, after: $a) { session } }",
            json!({"a": json!([expected[0], "plain#0"]).to_string()}),
        )
        .await;
    let rest: Vec<&str> = strs(&data["instances"], "session");
    assert_eq!(rest, expected[1..]);
    tried(
        &db,
        "names with SQL meta-characters (each a session, task, trigger and instance name)",
        all_names().len(),
    );
}

async fn names_that_look_like_patterns_match_only_themselves(db: TestDb) {
    let app = spawn_app(&db).await;
    for name in all_names() {
        populate(&app, name).await;
    }
    app.settle().await;

    let mut inputs = 0;
    let query = "query($t: String!) { instances(task: $t, first: 1000) { session name task } }";
    for name in all_names() {
        inputs += 1;
        let data = app.data(query, json!({"t": name})).await;
        assert_eq!(
            data["instances"],
            json!([{"session": name, "name": format!("{name}#0"), "task": name}]),
            "instances(task: {name:?}) matched other rows"
        );
    }
    // Names that are no task's name match nothing, whatever they look like.
    for pattern in ["%", "_"].map(|p| format!("{p}{p}{p}")).iter().chain(
        ["a%c", "%#0", "_#_", "*", "' OR 1=1 --", "ABC"]
            .map(str::to_owned)
            .iter(),
    ) {
        inputs += 1;
        let data = app.data(query, json!({"t": pattern})).await;
        assert_eq!(data["instances"], json!([]), "instances(task: {pattern:?})");
    }

    // Lookups by a pattern-like name find nothing (and write nothing).
    let lookups = "query($s: String!, $n: String!) {
        session(uid: $s) { version task(name: $n) { name } instance(name: $n) { name } instances(task: $n) { name } }
      }";
    for (session, name) in [
        ("abc", "%"),
        ("abc", "a_c"),
        ("abc", "abc#%"),
        ("abc", "abc#_"),
        ("%", "abc#0"),
        ("_", "%#0"),
    ] {
        inputs += 1;
        let data = app.data(lookups, json!({"s": session, "n": name})).await;
        assert_eq!(data["session"]["task"], Value::Null, "{session} / {name}");
        assert_eq!(
            data["session"]["instance"],
            Value::Null,
            "{session} / {name}"
        );
        assert_eq!(
            data["session"]["instances"],
            json!([]),
            "{session} / {name}"
        );
    }
    // A session named like a pattern is not an existing one.
    for uid in ["%%%", "a%c", "___"] {
        inputs += 1;
        assert_eq!(app.version(uid).await, 0, "{uid}");
    }
    let before = app.version("abc").await;
    for instance in ["%", "_", "abc#%", "abc#_", "%#0"] {
        inputs += 1;
        let (code, message) = app
            .error(
                "mutation($i: String!) { markInstanceLogsResolved(session: \"abc\", instance: $i) { name } }",
                json!({"i": instance}),
            )
            .await;
        assert_eq!(code, "NOT_FOUND", "{message}");
        assert!(message.contains(instance), "{message}");
    }
    assert_eq!(app.version("abc").await, before, "nothing was written");
    tried(
        &db,
        "pattern-like lookups (LIKE wildcards, globs, case)",
        inputs,
    );
}

async fn very_wide_queries_are_answered_or_refused_by_the_complexity_limit(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure("w", json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
        .await;
    let fields =
        |n: usize, field: &str| -> String { (0..n).map(|i| format!("f{i}: {field} ")).collect() };

    // Hundreds of aliased fields, within the default complexity (5000): answered.
    let data = app
        .data(
            &format!("{{ session(uid: \"w\") {{ {} }} }}", fields(400, "version")),
            json!({}),
        )
        .await;
    assert_eq!(data["session"].as_object().unwrap().len(), 400);
    assert!(data["session"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v == 1));
    let data = app
        .data(
            &format!(
                "{{ {} }}",
                fields(300, "session(uid: \"w\") { version tasks { name } }")
            ),
            json!({}),
        )
        .await;
    assert_eq!(data.as_object().unwrap().len(), 300);

    // Thousands: refused by the complexity limit, with a code.
    let mut inputs = 2;
    for query in [
        format!(
            "{{ session(uid: \"w\") {{ {} }} }}",
            fields(6_000, "version")
        ),
        format!(
            "{{ {} }}",
            fields(2_000, "session(uid: \"w\") { version uid }")
        ),
        format!("{{ {} }}", fields(6_000, "__typename")),
    ] {
        inputs += 1;
        let answer = send(&app, json!({"query": query}).to_string()).await;
        assert_eq!(answer.refusal(), Some((200, "BAD_INPUT")), "{answer:?}");
        assert!(
            answer.message().to_lowercase().contains("complex"),
            "{answer:?}"
        );
    }
    // The same field repeated (no aliases) merges into one; thousands of
    // repeats are still refused by complexity rather than computed.
    let answer = send(
        &app,
        json!({"query": format!("{{ session(uid: \"w\") {{ {} }} }}", "version ".repeat(6_000))})
            .to_string(),
    )
    .await;
    assert_eq!(answer.refusal(), Some((200, "BAD_INPUT")), "{answer:?}");
    tried(&db, "very wide queries (300 to 6000 fields)", inputs + 1);
}

/// Whether the server still answers (it would not after a stack overflow,
/// which aborts the whole process, this test included).
async fn still_serving(app: &TestApp) {
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert!(health.status().is_success());
    app.data("{ session(uid: \"alive\") { version } }", json!({}))
        .await;
}

async fn deeply_nested_documents_are_refused_before_they_are_parsed(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut inputs = 0;
    // GraphQL's parser recurses per bracket: tens of thousands of levels (a
    // few hundred kilobytes) would overflow its stack and abort the process.
    for depth in [130, 2_000, 20_000, 100_000] {
        let nested = |open: &str, close: &str, inner: &str| {
            format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
        };
        for query in [
            format!(
                "mutation {{ fire(session: \"d\", trigger: \"go\", kwargs: {}) {{ duplicate }} }}",
                nested("{a: ", "}", "1")
            ),
            format!(
                "mutation {{ fire(session: \"d\", trigger: \"go\", kwargs: {}) {{ duplicate }} }}",
                nested("[", "]", "1")
            ),
            format!("{{ {} }}", nested("session(uid: \"d\") { ", "}", "version")),
            format!("query($v: {}) {{ __typename }}", nested("[", "]", "Int")),
        ] {
            let body = json!({"query": query}).to_string();
            if body.len() > 1024 * 1024 {
                continue; // the body limit (413) would answer instead
            }
            inputs += 1;
            let answer = send(&app, body).await;
            assert_eq!(
                answer.refusal(),
                Some((200, "BAD_INPUT")),
                "{depth}: {answer:?}"
            );
            assert!(answer.message().contains("nested"), "{answer:?}");
        }
    }
    // Brackets inside strings and comments do not count.
    let quoted = "[".repeat(50_000);
    let data = app
        .data(
            &format!("# {quoted}\nmutation {{ fire(session: \"d\", trigger: \"go\", kwargs: {{q: \"{quoted}\"}}) {{ event {{ data }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(data["fire"]["event"]["data"]["kwargs"]["q"], quoted);
    // Within the limits, a literal is as deep as the JSON depth limit allows.
    let literal = |depth: usize| format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
    app.data(
        &format!(
            "mutation {{ fire(session: \"d\", trigger: \"go\", kwargs: {}) {{ duplicate }} }}",
            literal(64)
        ),
        json!({}),
    )
    .await;
    let (code, message) = app
        .error(
            &format!(
                "mutation {{ fire(session: \"d\", trigger: \"go\", kwargs: {}) {{ duplicate }} }}",
                literal(65)
            ),
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    assert!(
        message.contains("kwargs is nested 65 levels deep"),
        "{message}"
    );
    assert_eq!(
        app.version("d").await,
        2,
        "two fires were accepted, nothing else written"
    );
    still_serving(&app).await;
    tried(
        &db,
        "deeply nested documents (130 to 100 000 levels), plus 3 within the limits",
        inputs + 3,
    );
}

async fn fragment_bombs_are_refused_without_being_expanded(db: TestDb) {
    let app = spawn_app(&db).await;
    // Each fragment spreads the next twice: 2^n fields once expanded, which
    // async-graphql's own checks would expand (minutes at n = 30).
    let bomb = |n: usize, spread: &str| {
        let mut query = String::from("{ session(uid: \"b\") { ...F0 } } ");
        for i in 0..n {
            query.push_str(&format!(
                "fragment F{i} on Session {{ version {spread} }} ",
                spread = spread.replace("NEXT", &format!("F{}", i + 1))
            ));
        }
        query.push_str(&format!("fragment F{n} on Session {{ version }}"));
        query
    };
    let mut inputs = 0;
    for n in [13, 30, 64, 1_000] {
        for spread in [
            "...NEXT ...NEXT",
            "...NEXT ... on Session { ...NEXT } a: tasks { name }",
        ] {
            inputs += 1;
            let started = std::time::Instant::now();
            let answer = send(&app, json!({"query": bomb(n, spread)}).to_string()).await;
            assert_eq!(
                answer.refusal(),
                Some((200, "BAD_INPUT")),
                "{n}: {answer:?}"
            );
            assert!(
                answer.message().contains("too complex") || answer.message().contains("recursion"),
                "{answer:?}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "n = {n} took {:?}",
                started.elapsed()
            );
        }
    }
    // A few levels are fine: 2^8 fields is within the complexity limit.
    let data = app.data(&bomb(8, "...NEXT ...NEXT"), json!({})).await;
    assert_eq!(data["session"]["version"], 0);
    still_serving(&app).await;
    tried(
        &db,
        "fragment bombs (13 to 1000 levels, and one of 8 that is answered)",
        inputs + 1,
    );
}

async fn nul_characters_and_overlong_names_are_bad_input_on_both_backends(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        "n",
        json!({"t_a": {"after": ["go"], "run": "app.Job", "using": "worker"}}),
    )
    .await;
    app.fire("n", "go", json!({})).await;
    let before = app.version("n").await;
    let long = "\u{4e00}".repeat(200); // 600 bytes that do not compress
    let refused = [
        ("{ session(uid: \"a\\u0000b\") { version } }", json!({})),
        (
            "query($s: String!) { session(uid: $s) { version } }",
            json!({"s": long}),
        ),
        (
            "mutation($s: String!) { configure(session: $s, tasks: {}) { version } }",
            json!({"s": "a\u{0}"}),
        ),
        (
            "mutation($s: String!) { configure(session: $s, tasks: {}) { version } }",
            json!({"s": long}),
        ),
        (
            "mutation($t: String!) { fire(session: \"n\", trigger: $t) { duplicate } }",
            json!({"t": "go\u{0}"}),
        ),
        (
            "mutation($t: String!) { fire(session: \"n\", trigger: $t) { duplicate } }",
            json!({"t": long}),
        ),
        (
            "query($t: String!) { instances(task: $t) { name } }",
            json!({"t": "t_a\u{0}"}),
        ),
        (
            "query($a: String!) { sessions(after: $a) { uid } }",
            json!({"a": "\u{0}"}),
        ),
        (
            "query($a: String!) { instances(after: $a) { name } }",
            json!({"a": json!(["n\u{0}", "t_a#0"]).to_string()}),
        ),
        (
            "query($a: String!) { instances(after: $a) { name } }",
            json!({"a": "n/t_a#0\u{0}"}),
        ),
        (
            "mutation($w: String!) { claimTasks(worker: $w) { instance } }",
            json!({"w": "w\u{0}"}),
        ),
        (
            "mutation($q: String!) { claimTasks(worker: \"w\", queue: $q) { instance } }",
            json!({"q": "default\u{0}"}),
        ),
        (
            "mutation($t: String!) { heartbeat(leaseToken: $t) }",
            json!({"t": "\u{0}"}),
        ),
        (
            "mutation($t: String!) { completeTask(leaseToken: $t) { name } }",
            json!({"t": "\u{0}"}),
        ),
        (
            "mutation($t: String!) { failTask(leaseToken: $t, error: \"x\") { name } }",
            json!({"t": "\u{0}"}),
        ),
        (
            "mutation($t: String!) { skipTask(leaseToken: $t) { name } }",
            json!({"t": "\u{0}"}),
        ),
    ];
    let mut inputs = 1;
    for (query, variables) in refused {
        inputs += 1;
        let answer = request(&app, query, variables.clone()).await;
        assert_eq!(
            answer.refusal(),
            Some((200, "BAD_INPUT")),
            "{query} {variables:.80}: {answer:?}"
        );
    }
    let configurations = [
        json!({"t\u{0}": {"after": [], "run": DEVNULL}}),
        json!({ long.clone(): {"after": [], "run": DEVNULL} }),
        json!({"t_b": {"after": ["go\u{0}"], "run": DEVNULL}}),
        json!({"t_b": {"after": [long.clone()], "run": DEVNULL}}),
        json!({"t_b": {"after": [], "unless": ["x\u{0}"], "run": DEVNULL}}),
        json!({"t_b": {"after": [], "andEvery": "x\u{0}", "run": DEVNULL}}),
        json!({"t_b": {"after": [], "run": "app.\u{0}"}}),
        json!({"t_b": {"after": [], "run": "app.Job", "using": "worker:q\u{0}"}}),
        json!({"t_b": {"after": [], "run": "app.Job", "using": format!("worker:{long}")}}),
    ];
    for tasks in configurations {
        inputs += 1;
        let answer = request(
            &app,
            "mutation($t: JSON!) { configure(session: \"n\", tasks: $t) { version } }",
            json!({"t": tasks}),
        )
        .await;
        assert_eq!(
            answer.refusal(),
            Some((200, "BAD_CONFIGURATION")),
            "{tasks:.80}: {answer:?}"
        );
    }
    assert_eq!(app.version("n").await, before, "nothing was written");
    // At the limit, a name is fine.
    let at_limit = "n".repeat(triggers::domain::names::MAX_NAME_BYTES);
    app.configure(
        &at_limit,
        json!({ at_limit.clone(): {"after": [at_limit.clone()], "run": DEVNULL} }),
    )
    .await;
    app.fire(&at_limit, &at_limit, json!({})).await;
    app.settle().await;
    tried(
        &db,
        "NUL characters and over-long names, plus one at the limit",
        inputs,
    );
    assert_eq!(
        app.statuses(&at_limit).await,
        [(format!("{at_limit}#0"), "FINISHED".to_owned())]
    );
}

async fn very_wide_mutations_are_refused_whole_before_anything_is_written(db: TestDb) {
    let app = spawn_app(&db).await;
    let fires = |n: usize| -> String {
        let fields: String = (0..n)
            .map(|i| format!("f{i}: fire(session: \"w\", trigger: \"t{i}\") {{ duplicate }} "))
            .collect();
        format!("mutation {{ {fields} }}")
    };
    // Over the complexity limit: refused before the first fire runs.
    let answer = send(&app, json!({"query": fires(3_000)}).to_string()).await;
    assert_eq!(answer.refusal(), Some((200, "BAD_INPUT")), "{answer:?}");
    assert_eq!(
        app.version("w").await,
        0,
        "no fire of a refused request ran"
    );

    // Within it: every aliased fire runs, in order.
    let data = app.data(&fires(200), json!({})).await;
    assert_eq!(data.as_object().unwrap().len(), 200);
    assert_eq!(app.version("w").await, 200);
    let events = app
        .query("{ session(uid: \"w\") { events(first: 1000) { seq trigger } } }")
        .await;
    let triggers: Vec<String> = events["session"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["trigger"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        triggers,
        (0..200).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );

    // One bad fire among good ones: the good ones before it commit (GraphQL
    // runs mutation fields in order, each its own decision); it and nothing
    // else is refused.
    let answer = send(
        &app,
        json!({"query": "mutation {
            a: fire(session: \"w\", trigger: \"ok\") { duplicate }
            b: fire(session: \"w\", trigger: \"\") { duplicate }
        }"})
        .to_string(),
    )
    .await;
    assert_eq!(answer.refusal(), Some((200, "BAD_INPUT")), "{answer:?}");
    assert_eq!(app.version("w").await, 201);
    tried(
        &db,
        "very wide mutations (200 and 3000 aliased fires, one mixed)",
        3,
    );
}

async fn extreme_page_sizes_are_bad_input(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure("p", json!({})).await;
    let lists = [
        "query($f: Int) { sessions(first: $f) { uid } }",
        "query($f: Int) { instances(first: $f) { name } }",
        "query($f: Int) { session(uid: \"p\") { events(first: $f) { seq } } }",
    ];
    let mut inputs = 0;
    for query in lists {
        for first in [
            json!(i32::MAX),
            json!(i32::MIN),
            json!(i64::from(i32::MAX) + 1),
            json!(u64::MAX),
            json!(1e300),
            json!(1.5),
            json!("1000"),
            json!(true),
            json!([10]),
        ] {
            inputs += 1;
            let answer = request(&app, query, json!({"f": first})).await;
            assert_eq!(
                answer.refusal(),
                Some((200, "BAD_INPUT")),
                "{query} with first = {first}: {answer:?}"
            );
        }
        // Inline literals too, including ones no Int can hold.
        for first in [
            "2147483647",
            "-2147483648",
            "2147483648",
            "99999999999999999999",
            "1e3",
        ] {
            let inline = query.replace("query($f: Int) ", "").replace("$f", first);
            inputs += 1;
            let answer = send(&app, json!({"query": inline}).to_string()).await;
            assert_eq!(
                answer.refusal(),
                Some((200, "BAD_INPUT")),
                "{inline}: {answer:?}"
            );
        }
    }
    assert_eq!(app.version("p").await, 1, "nothing was written");
    tried(&db, "extreme page sizes (variables and literals)", inputs);
}

/// Every mutation of the schema (and a query), with arguments that would
/// succeed if the token were right.
fn every_mutation(lease: &str) -> Vec<String> {
    [
        "configure(session: \"s\", tasks: {t_x: {after: [], run: \"x\"}}) { version }".to_owned(),
        "fire(session: \"s\", trigger: \"go\") { duplicate }".to_owned(),
        "replayFailedInstance(session: \"s\", instance: \"t_f#0\") { name }".to_owned(),
        "skipFailedInstance(session: \"s\", instance: \"t_f#0\") { name }".to_owned(),
        "updateInstanceStatus(session: \"s\", instance: \"t_f#0\", status: FINISHED) { name }"
            .to_owned(),
        "updateInstanceMetadata(session: \"s\", instance: \"t_f#0\", metadata: {a: 1}) { name }"
            .to_owned(),
        "markInstanceLogsResolved(session: \"s\", instance: \"t_f#0\") { name }".to_owned(),
        "claimTasks(worker: \"thief\") { leaseToken }".to_owned(),
        format!("heartbeat(leaseToken: \"{lease}\")"),
        format!("completeTask(leaseToken: \"{lease}\") {{ name }}"),
        format!("failTask(leaseToken: \"{lease}\", error: \"x\") {{ name }}"),
        format!("skipTask(leaseToken: \"{lease}\") {{ name }}"),
    ]
    .into_iter()
    .map(|m| format!("mutation {{ {m} }}"))
    .chain(["{ session(uid: \"s\") { version } }".to_owned()])
    .collect()
}

async fn every_request_without_the_right_token_is_unauthorized_and_writes_nothing(db: TestDb) {
    let app = spawn_app_with_token(&db, "s3cret").await;
    // `app` sends the right token: set up a failed instance and a leased one.
    app.configure(
        "s",
        json!({
            "t_f": {"after": ["go"], "run": FAILING},
            "t_w": {"after": ["go"], "andEvery": "go", "run": "app.Job", "using": "worker"},
        }),
    )
    .await;
    app.fire("s", "go", json!({})).await;
    app.fire("s", "go", json!({})).await;
    app.settle().await;
    let data = app
        .query("mutation { claimTasks(worker: \"w\") { leaseToken instance } }")
        .await;
    let lease = data["claimTasks"][0]["leaseToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.version("s").await;
    let statuses = app.statuses("s").await;

    let wrong = [
        None,
        Some("Bearer wrong"),
        Some("Bearer S3CRET"),
        Some("Bearer s3cret2"),
        Some("Bearer s3cre"),
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic s3cret"),
        Some("Basic czNjcmV0"),
        Some("s3cret"),
        Some("Token s3cret"),
        Some("Bearer s3cret, Bearer s3cret"),
        Some("Bearer 's3cret' OR '1'='1'"),
    ];
    let mut inputs = 0;
    for query in every_mutation(&lease) {
        for auth in wrong {
            let mut post = app
                .http
                .post(app.url("/graphql"))
                .json(&json!({"query": query}));
            if let Some(auth) = auth {
                post = post.header("authorization", auth);
            }
            let response = post.send().await.unwrap();
            let status = response.status().as_u16();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer")
            );
            let answer: Answer = crate::fuzz::judge(status, &response.text().await.unwrap());
            assert_eq!(
                answer.refusal(),
                Some((401, "UNAUTHORIZED")),
                "{query} with {auth:?}: {answer:?}"
            );
            inputs += 1;
        }
    }
    tried(
        &db,
        "requests without the right token (13 operations x 13 headers)",
        inputs,
    );

    // Nothing was written: same version and statuses, the failed instance is
    // still failed, the lease is still held (and no thief got the queue).
    assert_eq!(app.version("s").await, before);
    assert_eq!(app.statuses("s").await, statuses);
    app.data(
        "mutation($t: String!) { heartbeat(leaseToken: $t) }",
        json!({"t": lease}),
    )
    .await;
    let data = app
        .query("mutation { claimTasks(worker: \"w\", max: 10) { instance } }")
        .await;
    assert_eq!(
        data["claimTasks"].as_array().unwrap().len(),
        1,
        "one unclaimed instance left"
    );
}
