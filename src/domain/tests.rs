//! Given events, when a command, then events: the rules without a database.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::decide::*;
use super::*;

fn registered(run: &str) -> bool {
    run.starts_with("triggers.testing.")
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn given(tasks: serde_json::Value) -> SessionState {
    let mut state = SessionState::new("s");
    Decider::new(&mut state, at(), &registered)
        .configure(parse_tasks(&tasks).unwrap())
        .unwrap();
    state
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.payload.kind()).collect()
}

fn obj(value: serde_json::Value) -> JsonObject {
    value.as_object().cloned().unwrap()
}

#[test]
fn a_complete_after_set_creates_applies_and_schedules_with_causes() {
    let mut state = given(json!({"t": {"after": ["a"], "run": "triggers.testing.DevNull"}}));
    let mut decider = Decider::new(&mut state, at(), &registered);
    let outcome = decider.fire("a", obj(json!({"n": 1})), None, None).unwrap();
    let (events, _) = decider.finish();
    assert_eq!(
        kinds(&events),
        [
            "TriggerFired",
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled"
        ]
    );
    assert!(events[1..].iter().all(|e| e.caused_by == Some(2)));
    assert_eq!(outcome.scheduled, ["t#0"]);
    let inst = state.instance("t#0").unwrap();
    assert_eq!(inst.kwargs, obj(json!({"a": {"n": 1}})));
    assert_eq!(inst.runner, Some(Runner::Inline));
}

#[test]
fn when_after_and_unless_both_complete_abandoning_wins() {
    let mut state = given(json!({"t": {"after": ["a"], "unless": ["a"], "run": "x"}}));
    let outcome = Decider::new(&mut state, at(), &registered)
        .fire("a", JsonObject::new(), None, None)
        .unwrap();
    assert_eq!(outcome.abandoned, ["t#0"]);
    assert!(outcome.scheduled.is_empty());
    assert_eq!(
        state.instance("t#0").unwrap().status,
        InstanceStatus::Abandoned
    );
}

#[test]
fn a_one_shot_task_never_gets_a_second_instance_from_firing() {
    let mut state = given(json!({"t": {"after": ["a"], "run": "x"}}));
    for _ in 0..3 {
        Decider::new(&mut state, at(), &registered)
            .fire("a", JsonObject::new(), None, None)
            .unwrap();
    }
    assert_eq!(state.instances().len(), 1);
    assert_eq!(
        state.instances()[0].runner,
        Some(Runner::Worker("default".into()))
    );
}

#[test]
fn a_repeated_idempotency_key_appends_nothing_and_answers_the_first_fire() {
    let mut state = given(json!({"t": {"after": [], "andEvery": "a", "run": "x"}}));
    let first = Decider::new(&mut state, at(), &registered)
        .fire("a", JsonObject::new(), None, Some("k"))
        .unwrap();
    let version = state.version();
    let mut decider = Decider::new(&mut state, at(), &registered);
    let again = decider
        .fire("b", JsonObject::new(), None, Some("k"))
        .unwrap();
    assert!(decider.events().is_empty());
    assert!(again.duplicate);
    assert_eq!((again.trigger.as_str(), again.seq), ("a", first.seq));
    assert_eq!(again.scheduled, first.scheduled);
    assert_eq!(state.version(), version);
}

#[test]
fn a_retry_at_max_retries_fails_with_max_retries_exceeded() {
    let mut state = given(json!({"t": {"after": ["a"], "run": "x", "maxRetries": 0}}));
    let mut decider = Decider::new(&mut state, at(), &registered);
    decider.fire("a", JsonObject::new(), None, None).unwrap();
    decider.start("t#0", None, None, false).unwrap();
    let failure = Failure {
        exception_type: "E".into(),
        exception_info: "boom".into(),
        exception_context: JsonObject::new(),
        log_level: None,
    };
    assert_eq!(decider.retry("t#0", failure, None, None).unwrap(), None);
    let inst = state.instance("t#0").unwrap();
    assert_eq!(inst.status, InstanceStatus::Failed);
    assert_eq!(inst.metadata["exceptionType"], json!(MAX_RETRIES_EXCEEDED));
}

#[test]
fn a_refused_command_emits_nothing() {
    let mut state = given(json!({"t": {"after": ["a"], "run": "x"}}));
    let version = state.version();
    let mut decider = Decider::new(&mut state, at(), &registered);
    assert!(matches!(
        decider.replay_failed("t#9", None),
        Err(DomainError::NotFound(_))
    ));
    assert!(decider.events().is_empty());
    assert_eq!(state.version(), version);
}

mod timestamps {
    use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
    use proptest::prelude::*;

    use crate::domain::state::{parse_timestamp, timestamp};

    proptest! {
        /// The hand-written formatter writes what chrono writes, and the fast
        /// parser reads it back, for any microsecond from year 0 to 9999.
        #[test]
        fn written_as_chrono_writes_and_read_back(micros in -62_167_219_200_000_000_i64..253_402_300_800_000_000) {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let text = timestamp(at);
            prop_assert_eq!(&text, &at.to_rfc3339_opts(SecondsFormat::Micros, true));
            prop_assert_eq!(parse_timestamp(&text), Some(at));
        }
    }

    #[test]
    fn other_spellings_are_left_to_the_full_parser() {
        for text in [
            "2026-11-25T03:04:05.123456+00:00",
            "2026-11-25T03:04:05Z",
            "2026-11-25 03:04:05.123456Z",
            "2026-13-25T03:04:05.123456Z",
            "2026-11-25T03:04:05.12345xZ",
            "+2026-11-25T03:04:05.12345Z",
            "",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text:?}");
        }
        let far = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            timestamp(far),
            far.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
    }
}
