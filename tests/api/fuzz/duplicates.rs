//! Duplicate keys in raw bodies (fuzz class 3).

use super::*;

on_both_backends!(duplicate_json_keys_keep_the_last_value_everywhere,);

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
