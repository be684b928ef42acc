//! Kwargs (fuzz class 2).

use super::*;

on_both_backends!(random_kwargs_are_stored_verbatim_or_refused_with_a_code,);

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
