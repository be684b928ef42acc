//! `parse_tasks` over thousands of arbitrary documents: it never panics, an
//! accepted document means what it says, and every refusal is a
//! `BadConfiguration` whose message names the task and the directive at fault.
//!
//! Deterministic (a fixed seed, no failure persistence); set
//! `TRIGGERS_FUZZ_SEED=<u64>` to explore other inputs.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Map, Number, Value};

// The directive names `parse_task` interprets; anything else is an extra.
use super::diagnostics::DIRECTIVES;
use super::*;

fn runner(cases: u32) -> TestRunner {
    let seed = std::env::var("TRIGGERS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7219_6e67_7273);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2_000,
        ..Config::default()
    })
}

/// Strings that tend to break things: empty, whitespace, unicode, meta-characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => "[ \t\n]{1,3}",
        4 => "[a-z_]{1,8}",
        4 => "\\PC{1,12}",
        1 => Just("'; DROP TABLE events; --".to_owned()),
        1 => Just("\u{0}\u{7f}\u{200b}\u{202e}".to_owned()),
        1 => (1usize..20_000).prop_map(|n| "é".repeat(n)),
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
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A value for `directive`: usually of the right type, often not.
fn directive_value(directive: &'static str) -> BoxedStrategy<Value> {
    let names = prop::collection::vec(text(), 0..4).prop_map(|v| json!(v));
    let right = match directive {
        "after" | "unless" => names.boxed(),
        "run" | "andEvery" => text().prop_map(Value::String).boxed(),
        "using" => prop_oneof![
            Just(json!("inline")),
            Just(json!("worker")),
            text().prop_map(|q| json!(format!("worker:{q}"))),
            text().prop_map(Value::String),
        ]
        .boxed(),
        "maxRetries" => prop_oneof![
            (0u64..10).prop_map(Value::from),
            Just(json!(u64::from(u32::MAX))),
            Just(json!(u64::from(u32::MAX) + 1)),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(json!("3")),
        ]
        .boxed(),
        _ => prop::collection::vec((text(), prop_oneof![json_value(), Just(json!({}))]), 0..3)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
            .boxed(),
    };
    prop_oneof![3 => right, 1 => json_value()].boxed()
}

/// The directives of one task: each present or not, plus a few extras.
fn directives() -> impl Strategy<Value = Value> {
    let present: Vec<_> = DIRECTIVES
        .iter()
        .map(|d| prop::option::weighted(0.7, directive_value(d)))
        .collect();
    (present, prop::collection::vec((text(), json_value()), 0..3)).prop_map(|(present, extras)| {
        let mut map = Map::new();
        for (key, value) in extras {
            map.insert(key, value);
        }
        for (directive, value) in DIRECTIVES.iter().zip(present) {
            if let Some(value) = value {
                map.insert((*directive).to_owned(), value);
            }
        }
        Value::Object(map)
    })
}

/// A whole `tasks` document: mostly task name -> directives, sometimes anything.
fn document() -> impl Strategy<Value = Value> {
    let task = prop_oneof![6 => directives(), 1 => json_value()];
    prop_oneof![
        6 => prop::collection::vec((text(), task), 0..4)
            .prop_map(|tasks| Value::Object(tasks.into_iter().collect())),
        1 => json_value(),
    ]
}

/// What an accepted task must look like, given its directives.
fn check_accepted(name: &str, directives: &Value, task: &TaskConfig) {
    assert!(crate::domain::names::name_problem("task name", name).is_none());
    let directives = directives
        .as_object()
        .expect("accepted directives are an object");
    let list = |key: &str| -> Vec<String> {
        directives.get(key).map_or_else(Vec::new, |v| {
            v.as_array()
                .expect("accepted lists are lists")
                .iter()
                .map(|s| s.as_str().expect("accepted names are strings").to_owned())
                .collect()
        })
    };
    let mut after = list("after");
    after.extend(task.and_every.clone());
    after.sort();
    after.dedup();
    assert_eq!(
        task.after, after,
        "after is sorted, deduplicated, with andEvery"
    );
    let mut unless = list("unless");
    unless.sort();
    unless.dedup();
    assert_eq!(task.unless, unless);
    assert_eq!(Some(&json!(task.run)), directives.get("run"));
    let is_name = |s: &String| crate::domain::names::name_problem("", s).is_none();
    assert!(is_name(&task.run));
    assert!(task.after.iter().chain(&task.unless).all(is_name));
    assert!(task.using.iter().all(is_name));
    if let Some(using) = &task.using {
        assert!(
            Runner::parse_using(using).is_some(),
            "{using:?} was accepted"
        );
    }
    let expected_retries = directives
        .get("maxRetries")
        .map_or(u64::from(DEFAULT_MAX_RETRIES), |v| v.as_u64().unwrap());
    assert_eq!(u64::from(task.max_retries), expected_retries);
    assert!(task.with_params.values().all(Value::is_object));
    let extras: Map<String, Value> = directives
        .iter()
        .filter(|(key, _)| !DIRECTIVES.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    assert_eq!(
        task.extras, extras,
        "every other directive is kept verbatim"
    );
}

/// What a refusal must say: which task (or the document) and why.
fn check_refused(document: &Value, message: &str) {
    assert!(!message.is_empty());
    let Some(tasks) = document.as_object() else {
        assert!(message.contains("must be a JSON object"), "{message}");
        return;
    };
    // The first task that is bad on its own is the one named.
    let (name, directives) = tasks
        .iter()
        .find(|(name, directives)| parse_tasks(&json!({ name.as_str(): directives })).is_err())
        .expect("a refused document has a task that is bad on its own");
    if let Some(problem) = crate::domain::names::name_problem("task name", name) {
        assert_eq!(message, problem);
        return;
    }
    assert!(
        message.starts_with(&format!("task {name:?}: ")),
        "{message:?} should name task {name:?}"
    );
    if !directives.is_object() {
        assert!(
            message.contains("directives must be a JSON object"),
            "{message}"
        );
        return;
    }
    assert!(
        DIRECTIVES
            .iter()
            .any(|d| message.contains(&format!("directive \"{d}\""))),
        "{message:?} should name the directive"
    );
}

#[test]
fn parse_tasks_never_panics_and_explains_every_refusal() {
    let mut runner = runner(6_000);
    let tried = std::cell::Cell::new((0u32, 0u32));
    let outcome = runner.run(&document(), |document| {
        let (accepted, refused) = tried.get();
        match parse_tasks(&document) {
            Ok(tasks) => {
                tried.set((accepted + 1, refused));
                let given = document.as_object().expect("only objects are accepted");
                assert_eq!(tasks.len(), given.len());
                for (name, directives) in given {
                    check_accepted(name, directives, &tasks[name]);
                }
            }
            Err(DomainError::BadConfiguration(message)) => {
                tried.set((accepted, refused + 1));
                check_refused(&document, &message);
            }
            Err(other) => panic!("{document}: refused as {other:?}, not BadConfiguration"),
        }
        Ok(())
    });
    let (accepted, refused) = tried.get();
    eprintln!(
        "fuzz[parser] configuration documents: {} inputs tried ({accepted} accepted, {refused} refused)",
        accepted + refused
    );
    if let Err(err) = outcome {
        panic!("{err}");
    }
    assert!(
        accepted > 100 && refused > 1_000,
        "the strategy explores both sides"
    );
}
