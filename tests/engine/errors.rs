//! Every refusal (docs/configuration.md, docs/graphql.md "Errors"): the error variant, its
//! `extensions.code`, a message that names what was wrong, and, in every case,
//! nothing written (the session's version and log are unchanged).

use std::fmt::Debug;

use serde_json::{json, Value};
use triggers::domain::{DomainError, InstanceStatus, SessionUid, TriggerName};
use triggers::engine::Error;
use triggers::Engine;

use crate::scenario::Scenario;
use crate::support::*;
use triggers::testkit::names::{self, trigger, uid};

/// The error of a call that had to fail.
fn refused<T: Debug>(what: &str, result: Result<T, Error>) -> Error {
    match result {
        Ok(value) => panic!("{what} should have been refused, got {value:?}"),
        Err(err) => err,
    }
}

/// Configures `doc` on [`S`], which must be refused as BAD_CONFIGURATION
/// (`bad` names the case in failures); returns the error's message.
async fn refused_configuration(engine: &Engine, bad: &Value, doc: &Value) -> String {
    let err = refused(
        &format!("configure {bad}"),
        engine.configure(&uid(S), doc).await,
    );
    assert!(
        matches!(err, Error::Domain(DomainError::BadConfiguration(_))),
        "{bad}: {err:?}"
    );
    assert_eq!(err.code(), "BAD_CONFIGURATION");
    err.to_string()
}

/// The session's version and event count, to prove nothing was written.
async fn footprint(engine: &Engine, session: &str) -> (u64, usize) {
    engine.clear_cache();
    let version = engine.session(&uid(session)).await.unwrap().version();
    let events = engine.events(&uid(session), 0, None).await.unwrap().len();
    (version, events)
}

async fn mutations_naming_an_unknown_session_or_instance_are_not_found(db: TestDb) {
    // Given a session with one failed instance.
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}}))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    let before = footprint(engine, S).await;

    // When any mutation names an instance that does not exist.
    for (session, name) in [(S, "t#9"), (S, "nope#0"), ("nobody", "t#0")] {
        let errors = [
            refused(
                "replay",
                engine
                    .replay_failed_instance(&uid(session), &names::instance(name), None)
                    .await,
            ),
            refused(
                "skip",
                engine
                    .skip_failed_instance(&uid(session), &names::instance(name), true, None)
                    .await,
            ),
            refused(
                "update status",
                engine
                    .update_instance_status(
                        &uid(session),
                        &names::instance(name),
                        InstanceStatus::Finished,
                        None,
                        true,
                        None,
                    )
                    .await,
            ),
            refused(
                "update metadata",
                engine
                    .update_instance_metadata(
                        &uid(session),
                        &names::instance(name),
                        json!({"x": 1}),
                    )
                    .await,
            ),
            refused(
                "logs resolved",
                engine
                    .mark_instance_logs_resolved(&uid(session), &names::instance(name))
                    .await,
            ),
        ];
        // Then each is NOT_FOUND and names the instance.
        for err in errors {
            assert!(
                matches!(err, Error::Domain(DomainError::NotFound(_))),
                "{session}/{name}: {err:?}"
            );
            assert_eq!(err.code(), "NOT_FOUND");
            assert!(
                err.to_string().contains(name),
                "the message names {name}: {err}"
            );
        }
    }
    assert!(matches!(
        engine
            .instance_causes(&uid(S), &names::instance("t#9"))
            .await,
        Err(Error::Domain(DomainError::NotFound(_)))
    ));

    // And nothing was written anywhere.
    assert_eq!(footprint(engine, S).await, before);
    assert_eq!(footprint(engine, "nobody").await, (0, 0));
    let uids = session_uids(engine).await;
    assert_eq!(uids, [S]);
}

async fn replaying_or_skipping_an_instance_that_has_not_failed_is_an_invalid_state(db: TestDb) {
    // Given instances in every status but failed.
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_finished": {"after": ["a"], "run": DEVNULL},
            "t_scheduled": {"after": ["a"], "run": EXTERNAL},
            "t_unstarted": {"after": ["a", "b"], "run": DEVNULL},
            "t_abandoned": {"after": ["c"], "unless": ["a"], "run": DEVNULL},
            "t_skipped": {"after": ["a"], "run": SELF_SKIPPING},
            "t_replayed": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 1},
        }))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    let st = s.state().await;
    let cases = [
        ("t_finished#0", InstanceStatus::Finished),
        ("t_scheduled#0", InstanceStatus::Scheduled),
        ("t_unstarted#0", InstanceStatus::Unstarted),
        ("t_abandoned#0", InstanceStatus::Abandoned),
        ("t_skipped#0", InstanceStatus::Skipped),
        ("t_replayed#0", InstanceStatus::Replayed),
    ];
    for (name, expected) in cases {
        assert_eq!(status(&st, name), expected, "setup of {name}");
    }
    let before = footprint(engine, S).await;

    // When each is replayed or skipped.
    for (name, current) in cases {
        let replay = refused(
            "replay",
            engine
                .replay_failed_instance(&uid(S), &names::instance(name), None)
                .await,
        );
        let skip = refused(
            "skip",
            engine
                .skip_failed_instance(&uid(S), &names::instance(name), false, None)
                .await,
        );
        // Then the refusal is INVALID_STATE and says why.
        for err in [replay, skip] {
            assert!(
                matches!(err, Error::Domain(DomainError::InvalidState(_))),
                "{name}: {err:?}"
            );
            assert_eq!(err.code(), "INVALID_STATE");
            let message = err.to_string();
            assert!(message.contains(name), "{message}");
            assert!(message.contains(current.as_str()), "{message}");
        }
    }

    // And nothing was written.
    assert_eq!(footprint(engine, S).await, before);
    assert_eq!(*s.state().await, *st);
}

async fn bad_configuration_is_rejected_whole_naming_the_task_and_directive(db: TestDb) {
    // Given a configured session.
    let engine = db
        .engine_configured(S, json!({"t_ok": {"after": ["a"], "run": DEVNULL}}))
        .await;
    let before = footprint(&engine, S).await;

    // When a document with one bad task among good ones is configured.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"run": DEVNULL}), "after"),
        (json!({"after": []}), "run"),
        (json!({"after": "a", "run": DEVNULL}), "after"),
        (json!({"after": ["a", 1], "run": DEVNULL}), "after"),
        (json!({"after": null, "run": DEVNULL}), "after"),
        (json!({"after": [], "run": 5}), "run"),
        (
            json!({"after": [], "run": DEVNULL, "andEvery": ["page"]}),
            "andEvery",
        ),
        (
            json!({"after": [], "run": DEVNULL, "unless": "stop"}),
            "unless",
        ),
        (
            json!({"after": [], "run": DEVNULL, "unless": ["stop", null]}),
            "unless",
        ),
        (
            json!({"after": [], "run": DEVNULL, "withParams": [1]}),
            "withParams",
        ),
        (
            json!({"after": [], "run": DEVNULL, "withParams": {"scoring": 1}}),
            "withParams",
        ),
        (
            json!({"after": [], "run": DEVNULL, "withParams": {"a": {}, "b": "x"}}),
            "withParams",
        ),
        (
            json!({"after": [], "run": DEVNULL, "using": "celery"}),
            "using",
        ),
        (json!({"after": [], "run": DEVNULL, "using": 3}), "using"),
        (
            json!({"after": [], "run": "app.NotRegistered", "using": "inline"}),
            "using",
        ),
        (
            json!({"after": [], "run": DEVNULL, "maxRetries": -1}),
            "maxRetries",
        ),
        (
            json!({"after": [], "run": DEVNULL, "maxRetries": "3"}),
            "maxRetries",
        ),
        (
            json!({"after": [], "run": DEVNULL, "maxRetries": 1.5}),
            "maxRetries",
        ),
        (json!("triggers.testing.DevNull"), ""),
        (json!(["a"]), ""),
    ];
    for (bad, directive) in cases {
        let doc = json!({
            "t_good": {"after": ["b"], "run": DEVNULL},
            "t_bad": bad.clone(),
            "t_ok": {"after": ["z"], "run": PASSTHRU},
        });
        // Then it is BAD_CONFIGURATION, naming the task and the directive.
        let message = refused_configuration(&engine, &bad, &doc).await;
        assert!(
            message.contains("t_bad"),
            "{bad}: the message names the task: {message}"
        );
        assert!(
            message.contains(directive),
            "{bad}: the message names {directive}: {message}"
        );
    }

    // And none of the documents was written, not even its good tasks.
    assert_eq!(footprint(&engine, S).await, before);
    let st = state(&engine, S).await;
    assert!(st.task("t_good").is_none());
    assert_eq!(st.task("t_ok").unwrap().run, DEVNULL);
}

async fn a_configuration_that_is_not_an_object_of_tasks_is_rejected(db: TestDb) {
    let engine = db
        .engine_configured(S, json!({"t_ok": {"after": ["a"], "run": DEVNULL}}))
        .await;
    let before = footprint(&engine, S).await;

    for bad in [
        json!([{"after": [], "run": DEVNULL}]),
        json!("t_ok"),
        json!(null),
        json!(42),
        json!({"": {"after": [], "run": DEVNULL}}),
    ] {
        let message = refused_configuration(&engine, &bad, &bad).await;
        assert!(!message.is_empty());
    }

    assert_eq!(footprint(&engine, S).await, before);
}

async fn kwargs_results_and_metadata_that_are_not_objects_are_bad_input(db: TestDb) {
    // Given a session with a failed instance and a finished one.
    let s = Scenario::on(db.engine().await)
        .given(json!({"t": {"after": ["a"], "run": FAILING}, "t_ok": {"after": ["a"], "run": DEVNULL}}))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();
    let before = footprint(engine, S).await;

    // When non-objects are passed where objects are expected.
    let mut errors = Vec::new();
    for bad in [json!([1]), json!("text"), json!(3), json!(true)] {
        errors.push(refused(
            "fire",
            engine
                .fire_json(&uid(S), &trigger("a"), Some(bad.clone()), None)
                .await,
        ));
        errors.push(refused(
            "replay",
            engine
                .replay_failed_instance(&uid(S), &names::instance("t#0"), Some(bad.clone()))
                .await,
        ));
        errors.push(refused(
            "skip",
            engine
                .skip_failed_instance(&uid(S), &names::instance("t#0"), true, Some(bad.clone()))
                .await,
        ));
        errors.push(refused(
            "status metadata",
            engine
                .update_instance_status(
                    &uid(S),
                    &names::instance("t_ok#0"),
                    InstanceStatus::Failed,
                    Some(bad.clone()),
                    false,
                    None,
                )
                .await,
        ));
        errors.push(refused(
            "cascade kwargs",
            engine
                .update_instance_status(
                    &uid(S),
                    &names::instance("t_ok#0"),
                    InstanceStatus::Finished,
                    None,
                    true,
                    Some(bad.clone()),
                )
                .await,
        ));
        errors.push(refused(
            "metadata",
            engine
                .update_instance_metadata(&uid(S), &names::instance("t_ok#0"), bad.clone())
                .await,
        ));
    }

    // Then each is BAD_INPUT and nothing was written.
    for err in errors {
        assert!(
            matches!(err, Error::Domain(DomainError::BadInput(_))),
            "{err:?}"
        );
        assert_eq!(err.code(), "BAD_INPUT");
        assert!(err.to_string().contains("object"), "{err}");
    }
    assert_eq!(footprint(engine, S).await, before);
    s.then_statuses(&[("t#0", InstanceStatus::Failed)]).await;
}

async fn an_empty_session_uid_or_trigger_name_is_bad_input(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": DEVNULL}})).await;
    let before = footprint(&engine, S).await;

    // An empty name is refused where it is parsed, before any engine call.
    let errors = [
        refused(
            "fire with no session",
            SessionUid::parse("").map_err(Error::from),
        ),
        refused(
            "fire with no trigger",
            TriggerName::parse("").map_err(Error::from),
        ),
        refused(
            "configure with no session",
            SessionUid::parse("").map_err(Error::from),
        ),
        refused(
            "replay with no session",
            SessionUid::parse("").map_err(Error::from),
        ),
        refused(
            "empty idempotency key",
            engine
                .fire_json(&uid(S), &trigger("a"), None, Some(""))
                .await,
        ),
    ];

    for err in errors {
        assert!(
            matches!(err, Error::Domain(DomainError::BadInput(_))),
            "{err:?}"
        );
        assert_eq!(err.code(), "BAD_INPUT");
    }
    assert_eq!(footprint(&engine, S).await, before);
    let uids = session_uids(&engine).await;
    assert_eq!(uids, [S]);
}

async fn a_refused_command_leaves_the_session_usable(db: TestDb) {
    // Given refusals of every kind on a session.
    let engine = db
        .engine_configured(
            S,
            json!({"t": {"after": [], "andEvery": "page", "run": PASSTHRU}}),
        )
        .await;
    fire_and_settle(&engine, S, "page", json!({"n": 0})).await;
    let _ = engine
        .replay_failed_instance(&uid(S), &names::instance("t#0"), None)
        .await
        .unwrap_err();
    let _ = engine
        .configure(&uid(S), &json!({"t": {"run": 1}}))
        .await
        .unwrap_err();
    let _ = engine
        .fire_json(&uid(S), &trigger("page"), Some(json!([])), None)
        .await
        .unwrap_err();
    let _ = engine
        .update_instance_metadata(&uid(S), &names::instance("t#7"), json!({}))
        .await
        .unwrap_err();

    // When the session is used again.
    let next = fire_and_settle(&engine, S, "page", json!({"n": 1})).await;

    // Then it carries on from where it was, and the log still folds into the state.
    assert_eq!(next.scheduled, ["t#1"]);
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    let live = state(&engine, S).await;
    let folded = triggers::domain::SessionState::fold(S, &events).unwrap();
    assert!(folded == *live);
    assert_eq!(status(&live, "t#1"), InstanceStatus::Finished);
}

on_both_backends!(
    mutations_naming_an_unknown_session_or_instance_are_not_found,
    replaying_or_skipping_an_instance_that_has_not_failed_is_an_invalid_state,
    bad_configuration_is_rejected_whole_naming_the_task_and_directive,
    a_configuration_that_is_not_an_object_of_tasks_is_rejected,
    kwargs_results_and_metadata_that_are_not_objects_are_bad_input,
    an_empty_session_uid_or_trigger_name_is_bad_input,
    a_refused_command_leaves_the_session_usable,
);
