//! `configure`'s diagnostics: unknown directives and `run`s that go to a
//! worker queue for want of a handler are accepted with warnings in
//! `extensions.warnings`; `strict: true` refuses unknown directives and
//! writes nothing.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestDb, PASSTHRU, S};

on_both_backends!(
    unknown_directives_are_kept_with_a_warning_naming_the_nearest_one,
    a_run_without_handler_or_using_warns_that_it_goes_to_the_default_queue,
    strict_configuration_refuses_unknown_directives_and_writes_nothing,
    a_configuration_without_findings_has_no_warnings,
);

const CONFIGURE: &str = "mutation($s: String!, $t: JSON!, $strict: Boolean) {
  configure(session: $s, tasks: $t, strict: $strict) { version task(name: \"t_a\") { extras runner } }
}";

async fn unknown_directives_are_kept_with_a_warning_naming_the_nearest_one(db: TestDb) {
    let app = spawn_app(&db).await;
    let (status, body) = app
        .post(
            CONFIGURE,
            json!({"s": S, "t": {"t_a": {
                "after": ["a"], "afterr": ["b"], "unles": ["c"], "andevery": "d",
                "run": PASSTHRU, "owner": "team-x"
            }}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(
        body["data"]["configure"]["task"]["extras"],
        json!({"afterr": ["b"], "unles": ["c"], "andevery": "d", "owner": "team-x"})
    );
    let warnings = body["extensions"]["warnings"].as_array().expect("warnings");
    let found: Vec<(&str, &str)> = warnings
        .iter()
        .map(|w| {
            (
                w["task"].as_str().unwrap(),
                w["directive"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("t_a", "afterr"),
            ("t_a", "unles"),
            ("t_a", "andevery"),
            ("t_a", "owner")
        ]
    );
    let message = |i: usize| warnings[i]["message"].as_str().unwrap();
    assert!(
        message(0).contains("did you mean \"after\"?"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("did you mean \"unless\"?"),
        "{}",
        message(1)
    );
    assert!(
        message(2).contains("did you mean \"andEvery\"?"),
        "{}",
        message(2)
    );
    assert!(!message(3).contains("did you mean"), "{}", message(3));
    assert!(
        message(3).contains("kept in the task's extras"),
        "{}",
        message(3)
    );
    assert_eq!(
        warnings[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["task", "directive", "message"]
    );
}

async fn a_run_without_handler_or_using_warns_that_it_goes_to_the_default_queue(db: TestDb) {
    let app = spawn_app(&db).await;
    let (_, body) = app
        .post(
            CONFIGURE,
            json!({"s": S, "t": {
                "t_a": {"after": ["a"], "run": "app.tasks.Scroe"},
                "t_named": {"after": ["a"], "run": "app.tasks.Other", "using": "worker"},
            }}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(
        body["data"]["configure"]["task"]["runner"],
        "worker:default"
    );
    let warnings = body["extensions"]["warnings"].as_array().expect("warnings");
    assert_eq!(
        warnings.len(),
        1,
        "only the task with no using: {warnings:#?}"
    );
    assert_eq!(warnings[0]["task"], "t_a");
    assert_eq!(warnings[0]["directive"], "run");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(message.contains("\"app.tasks.Scroe\""), "{message}");
    assert!(message.contains("worker queue \"default\""), "{message}");
}

async fn strict_configuration_refuses_unknown_directives_and_writes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    let (code, message) = app
        .error(
            CONFIGURE,
            json!({"s": S, "strict": true, "t": {"t_a": {"after": ["a"], "unles": ["c"], "run": PASSTHRU}}}),
        )
        .await;
    assert_eq!(code, "BAD_CONFIGURATION");
    assert!(message.contains("\"t_a\""), "{message}");
    assert!(
        message.contains("\"unles\" (did you mean \"unless\"?)"),
        "{message}"
    );
    assert_eq!(app.version(S).await, 0, "nothing was written");
    // Strict mode accepts known directives (an unhandled run stays a warning).
    let data = app
        .data(
            CONFIGURE,
            json!({"s": S, "strict": true, "t": {"t_a": {"after": ["a"], "run": PASSTHRU}}}),
        )
        .await;
    assert_eq!(data["configure"]["version"], 1);
}

async fn a_configuration_without_findings_has_no_warnings(db: TestDb) {
    let app = spawn_app(&db).await;
    let (_, body) = app
        .post(
            CONFIGURE,
            json!({"s": S, "t": {"t_a": {"after": ["a"], "run": PASSTHRU, "withParams": {"a": {"x": 1}}}}}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert_eq!(body["data"]["configure"]["task"]["runner"], "inline");
    let extensions = body.get("extensions").cloned().unwrap_or(Value::Null);
    assert!(extensions.get("warnings").is_none(), "{body:#}");
}
