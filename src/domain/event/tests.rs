//! Storing and reading back payloads of every kind and format.

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::domain::DomainError;

fn scheduled(runner: Runner, not_before: Option<DateTime<Utc>>) -> EventPayload {
    EventPayload::InstanceScheduled {
        instance: "t#1".into(),
        runner,
        not_before,
    }
}

fn corrupt_message(result: Result<EventPayload, DomainError>) -> String {
    match result {
        Err(DomainError::Corrupt(message)) => message,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_fired_trigger_keeps_its_kwargs_under_kwargs() {
    let payload = EventPayload::TriggerFired {
        trigger: "page".into(),
        kwargs: json!({"n": 1}).as_object().cloned().unwrap(),
        idempotency_key: None,
    };
    let data = payload.to_data();
    assert_eq!(data, json!({"trigger": "page", "kwargs": {"n": 1}}));
    assert_eq!(
        EventPayload::from_data("TriggerFired", PAYLOAD_FORMAT, data).unwrap(),
        payload
    );
    assert_eq!(payload.kind(), "TriggerFired");
    assert_eq!(payload.trigger(), Some("page"));
}

#[test]
fn a_scheduled_instance_stores_its_runner_as_the_using_directive_spells_it() {
    let cases = [
        (Runner::Inline, json!("inline")),
        (Runner::Worker("default".into()), json!("worker:default")),
        (
            Runner::Worker("gpu:large".into()),
            json!("worker:gpu:large"),
        ),
    ];
    for (runner, stored) in cases {
        let payload = scheduled(runner, None);
        let data = payload.to_data();
        assert_eq!(data, json!({"instance": "t#1", "runner": stored}));
        assert_eq!(
            EventPayload::from_data("InstanceScheduled", 2, data).unwrap(),
            payload
        );
    }
}

#[test]
fn format_1_runner_objects_are_upcast_to_the_using_spelling() {
    let not_before = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let cases = [
        (json!({"runner": "inline"}), Runner::Inline, "inline", None),
        (
            json!({"runner": "worker", "queue": "default"}),
            Runner::Worker("default".into()),
            "worker:default",
            None,
        ),
        (
            json!({"runner": "worker", "queue": "q"}),
            Runner::Worker("q".into()),
            "worker:q",
            Some(not_before),
        ),
    ];
    for (old_runner, runner, spelled, not_before) in cases {
        let mut data = json!({"instance": "t#1", "runner": old_runner});
        if let Some(at) = not_before {
            data["notBefore"] = serde_json::to_value(at).unwrap();
        }
        let payload = EventPayload::from_data("InstanceScheduled", 1, data.clone()).unwrap();
        assert_eq!(payload, scheduled(runner, not_before));
        // Read back, it is what this build writes: only the runner changed.
        data["runner"] = json!(spelled);
        assert_eq!(payload.to_data(), data);
    }
}

#[test]
fn format_1_events_of_other_kinds_load_unchanged() {
    let data = json!({
        "instance": "t#0",
        "actualKwargs": {"a": {"runner": "inline"}},
        "attempt": 1,
        "worker": "w"
    });
    let payload = EventPayload::from_data("InstanceStarted", 1, data.clone()).unwrap();
    assert_eq!(payload.to_data(), data);
}

#[test]
fn a_malformed_format_1_runner_is_reported_as_corrupt_naming_the_format() {
    let runners = [
        json!("inline"),
        json!({"runner": "celery"}),
        json!({"runner": "worker"}),
        json!({"runner": "worker", "queue": 5}),
        json!({"runner": "worker", "queue": ""}),
        json!(null),
    ];
    for runner in runners {
        let data = json!({"instance": "t#1", "runner": runner});
        let message = corrupt_message(EventPayload::from_data("InstanceScheduled", 1, data));
        assert!(
            message.contains("InstanceScheduled payload of format 1: runner"),
            "{runner}: {message}"
        );
    }
    let missing = json!({"instance": "t#1"});
    let message = corrupt_message(EventPayload::from_data("InstanceScheduled", 1, missing));
    assert!(message.contains("missing field `runner`"), "{message}");
}

#[test]
fn a_format_2_runner_that_is_not_a_using_spelling_is_reported_as_corrupt() {
    for runner in [
        json!({"runner": "inline"}),
        json!("celery"),
        json!("worker:"),
    ] {
        let data = json!({"instance": "t#1", "runner": runner});
        let message = corrupt_message(EventPayload::from_data("InstanceScheduled", 2, data));
        assert!(
            message.contains("InstanceScheduled payload: runner")
                && message.contains(r#"is not "inline" or "worker:<queue>""#),
            "{message}"
        );
    }
}

/// One payload of every kind, with the optional fields filled in.
fn one_of_each_kind() -> Vec<EventPayload> {
    let o = json!({"k": [1, 2.5, "v", null, {"deep": true}]});
    [
        json!({"kind": "SessionConfigured", "tasks": {}}),
        json!({"kind": "TriggerFired", "trigger": "a", "kwargs": o, "idempotencyKey": "k1"}),
        json!({"kind": "InstanceCreated", "instance": "t#0", "task": "t", "kwargs": o,
               "kwargsSources": {"a": 2}, "abandonState": ["u"], "abandonSources": {"u": 3},
               "parent": "t#1", "depth": 2}),
        json!({"kind": "TriggerApplied", "instance": "t#0", "trigger": "a", "role": "unless"}),
        json!({"kind": "InstanceScheduled", "instance": "t#0", "runner": "worker:q",
               "notBefore": "2026-11-25T08:00:00.123456Z"}),
        json!({"kind": "InstanceStarted", "instance": "t#0", "actualKwargs": o, "attempt": 2,
               "worker": "w", "leaseExpiresAt": "2026-11-25T08:00:00Z"}),
        json!({"kind": "InstanceFinished", "instance": "t#0", "result": o, "logLevel": 20}),
        json!({"kind": "InstanceFailed", "instance": "t#0", "exceptionType": "E",
               "exceptionInfo": "line\n\"quoted\" \u{e9}", "exceptionContext": o,
               "logLevel": 40, "cooldown": 0.1}),
        json!({"kind": "InstanceSkipped", "instance": "t#0", "metadata": o}),
        json!({"kind": "InstanceReplayed", "instance": "t#0", "clone": "t#2",
               "replacementKwargs": o}),
        json!({"kind": "InstanceAbandoned", "instance": "t#0"}),
        json!({"kind": "InstanceStatusChanged", "instance": "t#0", "status": "failed",
               "metadata": o}),
        json!({"kind": "InstanceMetadataUpdated", "instance": "t#0", "metadata": o}),
        json!({"kind": "InstanceLogsResolved", "instance": "t#0"}),
        json!({"kind": "InstanceLeaseExpired", "instance": "t#0", "worker": "w"}),
    ]
    .into_iter()
    .map(|tagged| serde_json::from_value(tagged).unwrap())
    .collect()
}

#[test]
fn stored_text_decodes_to_the_payload_that_was_written() {
    let payloads = one_of_each_kind();
    assert_eq!(payloads.len(), 15, "one per kind");
    for payload in payloads {
        let kind = payload.kind();
        let data = payload.to_data();
        for text in [
            data.to_string(),
            serde_json::to_string_pretty(&data).unwrap(),
        ] {
            assert_eq!(
                EventPayload::from_data_text(kind, PAYLOAD_FORMAT, &text).unwrap(),
                payload,
                "{text}"
            );
        }
        assert_eq!(
            EventPayload::from_data(kind, PAYLOAD_FORMAT, data).unwrap(),
            payload
        );
    }
}

#[test]
fn stored_text_in_an_older_format_is_upcast() {
    let text = r#"{"instance": "t#1", "runner": {"runner": "worker", "queue": "q"}}"#;
    assert_eq!(
        EventPayload::from_data_text("InstanceScheduled", 1, text).unwrap(),
        scheduled(Runner::Worker("q".into()), None)
    );
    let message = corrupt_message(EventPayload::from_data_text("InstanceScheduled", 1, "{"));
    assert!(
        message.starts_with("InstanceScheduled payload: "),
        "{message}"
    );
}

#[test]
fn stored_text_that_does_not_fit_its_kind_is_reported_as_corrupt() {
    let cases = [
        ("InstanceAbandoned", "[1]", "is not an object"),
        ("InstanceAbandoned", "\"t#0\"", "is not an object"),
        ("InstanceAbandoned", "{}", "missing field `instance`"),
        ("InstanceAbandoned", " { } ", "missing field `instance`"),
        ("InstanceAbandoned", r#"{"instance": 5}"#, "invalid type"),
        (
            "InstanceAbandoned",
            r#"{"instance": "t#0"} x"#,
            "trailing characters",
        ),
        ("InstanceAbandoned", r#"{"instance": "t#0""#, "EOF"),
        ("Nope", r#"{"instance": "t#0"}"#, "unknown variant `Nope`"),
        (
            "InstanceAbandoned",
            r#"{"kind": "InstanceLogsResolved", "instance": "t#0"}"#,
            "duplicate field `kind`",
        ),
    ];
    for (kind, text, expected) in cases {
        let message = corrupt_message(EventPayload::from_data_text(kind, PAYLOAD_FORMAT, text));
        assert!(
            message.starts_with(&format!("{kind} payload")) && message.contains(expected),
            "{kind} {text}: {message}"
        );
    }
}

#[test]
fn unknown_kinds_and_unknown_or_newer_formats_are_reported_as_corrupt() {
    assert!(EventPayload::from_data("Nope", 1, json!({})).is_err());
    let newer = corrupt_message(EventPayload::from_data(
        "InstanceAbandoned",
        PAYLOAD_FORMAT + 1,
        json!({"instance": "t#0"}),
    ));
    assert!(newer.contains("newer than this build"), "{newer}");
    for format in [0, -1] {
        let never = corrupt_message(EventPayload::from_data(
            "InstanceAbandoned",
            format,
            json!({"instance": "t#0"}),
        ));
        assert!(never.contains("never written"), "{never}");
    }
}
