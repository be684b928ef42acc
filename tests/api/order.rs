//! Response fields come in the order the query selected them, at every level,
//! for every object type of the schema (found by introspection, so a new type
//! without a way to reach it here fails the test).

use serde_json::{json, Value};

use crate::support::{spawn_app, TestApp, TestDb, PASSTHRU, S};

on_both_backends!(
    every_object_type_answers_in_the_order_of_the_selection,
    fire_and_instance_answers_keep_the_order_people_write,
);

const INTROSPECTION: &str = "{ __schema { types { name kind fields {
    name
    args { name type { kind } }
    type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
} } } }";

/// A field of an object type, as introspection describes it.
struct Field {
    name: String,
    /// Names of its required arguments.
    required_args: Vec<String>,
    /// The object type it returns (through lists and non-nulls), if any.
    object: Option<String>,
}

/// Object type name -> its fields, in declaration order.
async fn object_types(app: &TestApp) -> Vec<(String, Vec<Field>)> {
    let data = app.data(INTROSPECTION, json!({})).await;
    let types = data["__schema"]["types"].as_array().expect("types");
    let objects: Vec<&str> = types
        .iter()
        .filter(|t| t["kind"] == "OBJECT")
        .filter_map(|t| t["name"].as_str())
        .collect();
    types
        .iter()
        .filter(|t| t["kind"] == "OBJECT")
        .filter(|t| !t["name"].as_str().unwrap().starts_with("__"))
        .map(|t| {
            let fields = t["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|f| {
                    let mut ty = &f["type"];
                    while ty["name"].is_null() {
                        ty = &ty["ofType"];
                    }
                    let returned = ty["name"].as_str().unwrap();
                    Field {
                        name: f["name"].as_str().unwrap().to_owned(),
                        required_args: f["args"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|a| a["type"]["kind"] == "NON_NULL")
                            .map(|a| a["name"].as_str().unwrap().to_owned())
                            .collect(),
                        object: objects.contains(&returned).then(|| returned.to_owned()),
                    }
                })
                .collect();
            (t["name"].as_str().unwrap().to_owned(), fields)
        })
        .collect()
}

/// Values for the required arguments of the fields this test selects.
fn argument(field: &str, arg: &str) -> Option<&'static str> {
    match (field, arg) {
        ("task", "name") => Some("\"t_a\""),
        ("instance", "name") => Some("\"t_a#0\""),
        ("asOf", "version") => Some("2"),
        ("session", "uid") => Some("\"questionnaire:1\""),
        _ => None,
    }
}

/// A selection (response key and sub-selection), rendered and then checked
/// against the answer.
struct Selection {
    key: String,
    text: String,
    children: Vec<Selection>,
}

/// The fields of `fields` this test can select, in the order `arrange` gives;
/// object-typed ones select the leaf fields of their type, also arranged.
fn select(
    types: &[(String, Vec<Field>)],
    fields: &[Field],
    arrange: fn(Vec<&Field>) -> Vec<&Field>,
    nested: bool,
) -> Vec<Selection> {
    let selectable: Vec<&Field> = fields
        .iter()
        .filter(|f| {
            f.required_args
                .iter()
                .all(|a| argument(&f.name, a).is_some())
        })
        .filter(|f| nested || f.object.is_none())
        .collect();
    arrange(selectable)
        .into_iter()
        .map(|f| {
            let args: Vec<String> = f
                .required_args
                .iter()
                .map(|a| format!("{a}: {}", argument(&f.name, a).unwrap()))
                .collect();
            let mut text = f.name.clone();
            if !args.is_empty() {
                text = format!("{text}({})", args.join(", "));
            }
            let children = match &f.object {
                Some(object) => {
                    let (_, inner) = types.iter().find(|(n, _)| n == object).unwrap();
                    select(types, inner, arrange, false)
                }
                None => Vec::new(),
            };
            if !children.is_empty() {
                text = format!("{text} {{ {} }}", render(&children));
            }
            Selection {
                key: f.name.clone(),
                text,
                children,
            }
        })
        .collect()
}

fn render(selections: &[Selection]) -> String {
    selections
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts that every object in `value` has exactly the keys of `selections`, in order.
fn assert_in_order(path: &str, value: &Value, selections: &[Selection]) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_in_order(&format!("{path}[{i}]"), item, selections);
            }
        }
        Value::Object(map) if !selections.is_empty() => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            let wanted: Vec<&str> = selections.iter().map(|s| s.key.as_str()).collect();
            assert_eq!(keys, wanted, "the keys of {path}");
            for selection in selections {
                assert_in_order(
                    &format!("{path}.{}", selection.key),
                    &map[&selection.key],
                    &selection.children,
                );
            }
        }
        _ => {}
    }
}

/// The operation that reaches an object type with `selection` inside, and
/// the JSON pointer of the object (or list of them) in its answer.
fn reach(type_name: &str, selection: &str) -> Option<(String, &'static str)> {
    let session = format!("session(uid: \"{S}\")");
    Some(match type_name {
        "Query" => (format!("{{ {selection} }}"), ""),
        "Session" => (format!("{{ {session} {{ {selection} }} }}"), "/session"),
        "TaskConfig" => (
            format!("{{ {session} {{ tasks {{ {selection} }} }} }}"),
            "/session/tasks",
        ),
        "TaskInstance" => (
            format!("{{ {session} {{ instances {{ {selection} }} }} }}"),
            "/session/instances",
        ),
        "Event" => (
            format!("{{ {session} {{ events {{ {selection} }} }} }}"),
            "/session/events",
        ),
        "SessionSummary" => (format!("{{ sessions {{ {selection} }} }}"), "/sessions"),
        "StatusCount" => (
            format!("{{ {session} {{ instanceCounts {{ {selection} }} }} }}"),
            "/session/instanceCounts",
        ),
        "FireResult" => (
            format!("mutation {{ fire(session: \"{S}\", trigger: \"page\", kwargs: {{n: 9}}) {{ {selection} }} }}"),
            "/fire",
        ),
        "TaskClaim" => (
            format!("mutation {{ claimTasks(worker: \"w\", max: 1) {{ {selection} }} }}"),
            "/claimTasks",
        ),
        // The roots of mutations and subscriptions run one field at a time,
        // in order, by definition; their answers are checked through the
        // types they return.
        "Mutation" | "Subscription" => return None,
        other => panic!("no way to reach the object type {other} in this test: add one"),
    })
}

fn reversed(fields: Vec<&Field>) -> Vec<&Field> {
    fields.into_iter().rev().collect()
}

fn rotated(mut fields: Vec<&Field>) -> Vec<&Field> {
    let half = fields.len() / 2;
    fields.rotate_left(half);
    fields
}

async fn every_object_type_answers_in_the_order_of_the_selection(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_a": {"after": ["page"], "andEvery": "page", "run": PASSTHRU},
            "t_w": {"after": ["page"], "andEvery": "page", "run": "jobs.elsewhere", "using": "worker"},
        }),
    )
    .await;
    // A finished inline instance and enough scheduled worker ones for every claim.
    for n in 0..4 {
        app.fire(S, "page", json!({ "n": n })).await;
    }
    app.settle().await;

    let types = object_types(&app).await;
    let mut checked = Vec::new();
    for (type_name, fields) in &types {
        for arrange in [reversed as fn(Vec<&Field>) -> Vec<&Field>, rotated] {
            let selections = select(&types, fields, arrange, true);
            let Some((query, pointer)) = reach(type_name, &render(&selections)) else {
                continue;
            };
            let data = app.data(&query, json!({})).await;
            let answer = data.pointer(pointer).expect("the answer");
            let nonempty = match answer {
                Value::Array(items) => !items.is_empty(),
                Value::Object(_) => true,
                _ => false,
            };
            assert!(nonempty, "{type_name}: nothing to check in {data:#}");
            assert_in_order(type_name, answer, &selections);
        }
        checked.push(type_name.as_str());
    }
    for expected in [
        "Session",
        "TaskConfig",
        "TaskInstance",
        "Event",
        "FireResult",
        "TaskClaim",
    ] {
        assert!(checked.contains(&expected), "{expected} was not checked");
    }
}

async fn fire_and_instance_answers_keep_the_order_people_write(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_a": {"after": ["page"], "run": PASSTHRU}}))
        .await;
    let (_, body) = app
        .post(
            "mutation { fire(session: \"questionnaire:1\", trigger: \"page\") { scheduled { name } duplicate event { seq } } }",
            json!({}),
        )
        .await;
    let fire = body["data"]["fire"].as_object().expect("a fire answer");
    assert_eq!(
        fire.keys().collect::<Vec<_>>(),
        ["scheduled", "duplicate", "event"]
    );
    app.settle().await;
    let (_, body) = app
        .post(
            "{ session(uid: \"questionnaire:1\") { instance(name: \"t_a#0\") { causes { seq } history { seq } name } } }",
            json!({}),
        )
        .await;
    let instance = body["data"]["session"]["instance"]
        .as_object()
        .expect("an instance");
    assert_eq!(
        instance.keys().collect::<Vec<_>>(),
        ["causes", "history", "name"]
    );
}
