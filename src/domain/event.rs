//! Events: the facts of the log (docs/events.md). Past-tense kinds with pinned
//! names, a payload format version, and `causedBy` where an event is derived.
//!
//! Stored rows are never rewritten: a payload keeps the format it was written
//! in, and [`EventPayload::from_data`] upcasts it on read, one format at a time,
//! to the format this build writes ([`PAYLOAD_FORMAT`]).
//!
//! # Payload formats
//! - 1: the first format.
//! - 2: `InstanceScheduled.runner` is spelled like the `using` directive,
//!   `"inline"` or `"worker:<queue>"`, instead of format 1's nested
//!   `{"runner": "inline"}` or `{"runner": "worker", "queue": "<queue>"}`.
//!
//! A new format: freeze a fixture of the current one first (see
//! `tests/engine/upgrade.rs`), then bump [`PAYLOAD_FORMAT`], add the step from
//! the old format to the end of `UPCASTS` (the compiler checks that there is one
//! step per format), and add a line to the list above.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod kinds;
pub use kinds::EVENT_KINDS;

use super::{DomainError, InstanceStatus, JsonObject, Runner, TaskConfig};

/// The payload format written today. Older formats are upcast on read (see the
/// module documentation for what each format changed).
pub const PAYLOAD_FORMAT: i32 = 2;

/// One event of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Gap-free per-session sequence number, from 1: the session's version after it.
    pub seq: u64,
    /// When the decision was taken (the fold uses it for metadata timestamps).
    pub at: DateTime<Utc>,
    /// The sequence number of the event that led to this one.
    pub caused_by: Option<u64>,
    /// What happened.
    pub payload: EventPayload,
}

/// Whether an applied trigger filled an `after` slot or an `unless` slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerRole {
    /// The trigger's kwargs were stored in the instance's kwargs.
    After,
    /// The trigger was added to the instance's abandon state.
    Unless,
}

/// What happened, by kind. Variant names are the pinned event kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum EventPayload {
    /// Tasks were added or replaced.
    SessionConfigured {
        /// The configured tasks, normalised.
        tasks: BTreeMap<String, TaskConfig>,
    },
    /// A trigger fired: by a caller (`causedBy` null) or as a cascade.
    TriggerFired {
        /// The trigger's name.
        trigger: String,
        /// The fired kwargs.
        kwargs: JsonObject,
        /// The caller's idempotency key, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// A new instance of a task, with what it inherited from earlier firings.
    InstanceCreated {
        /// `<task>#<n>`.
        instance: String,
        /// The task it belongs to.
        task: String,
        /// Inherited kwargs, keyed by trigger.
        kwargs: JsonObject,
        /// For each inherited trigger, the seq of the `TriggerFired` it came from.
        #[serde(default)]
        kwargs_sources: BTreeMap<String, u64>,
        /// Inherited `unless` triggers.
        #[serde(default)]
        abandon_state: Vec<String>,
        /// For each inherited `unless` trigger, the seq of its `TriggerFired`.
        #[serde(default)]
        abandon_sources: BTreeMap<String, u64>,
        /// The failed instance this one replays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        /// The attempt number: 0 for an original instance, parent's + 1 for a replay.
        #[serde(default)]
        depth: u32,
    },
    /// The trigger `causedBy` points at was applied to an instance.
    TriggerApplied {
        /// The instance.
        instance: String,
        /// The trigger.
        trigger: String,
        /// Which slot it filled.
        role: TriggerRole,
    },
    /// The instance was handed to its runner.
    InstanceScheduled {
        /// The instance.
        instance: String,
        /// Who runs it, stored as `"inline"` or `"worker:<queue>"`.
        #[serde(with = "runner_as_using")]
        runner: Runner,
        /// A cooldown: not to be run before this time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<DateTime<Utc>>,
    },
    /// A runner started the instance.
    InstanceStarted {
        /// The instance.
        instance: String,
        /// The kwargs handed to the job (`withParams` merged under the trigger kwargs).
        actual_kwargs: JsonObject,
        /// The attempt number (`depth` + 1).
        attempt: u32,
        /// The worker (or server process) that runs it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
        /// When the runner's lease ends unless renewed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// The job returned a result.
    InstanceFinished {
        /// The instance.
        instance: String,
        /// The result object (also the cascade's kwargs).
        result: JsonObject,
        /// The highest log level of the run.
        log_level: i64,
    },
    /// The job failed (or retried itself: then `cooldown` is set and a replay follows).
    InstanceFailed {
        /// The instance.
        instance: String,
        /// The exception class, e.g. `triggers.testing.Failure`.
        exception_type: String,
        /// Message and traceback.
        exception_info: String,
        /// Structured context of the failure.
        exception_context: JsonObject,
        /// The log level recorded (ERROR = 40 by default).
        log_level: i64,
        /// Seconds before the retry may run, when the job asked to retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cooldown: Option<f64>,
    },
    /// The instance was skipped, by the job or an operator.
    InstanceSkipped {
        /// The instance.
        instance: String,
        /// Metadata merged into the instance's metadata.
        metadata: JsonObject,
    },
    /// A failed instance was replayed as `clone`.
    InstanceReplayed {
        /// The failed instance.
        instance: String,
        /// The new instance.
        clone: String,
        /// Kwargs given to replace the failed instance's, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replacement_kwargs: Option<JsonObject>,
    },
    /// Its `unless` set completed before it started.
    InstanceAbandoned {
        /// The instance.
        instance: String,
    },
    /// An operator set the status.
    InstanceStatusChanged {
        /// The instance.
        instance: String,
        /// The new status.
        status: InstanceStatus,
        /// Metadata merged into the instance's metadata.
        metadata: JsonObject,
    },
    /// Metadata merged into the instance's metadata.
    InstanceMetadataUpdated {
        /// The instance.
        instance: String,
        /// What was merged.
        metadata: JsonObject,
    },
    /// The instance's error logs were looked at.
    InstanceLogsResolved {
        /// The instance.
        instance: String,
    },
    /// A worker's lease ran out before it reported; the instance is claimable again.
    InstanceLeaseExpired {
        /// The instance.
        instance: String,
        /// The worker that held the lease.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
}

impl EventPayload {
    /// The pinned kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionConfigured { .. } => "SessionConfigured",
            Self::TriggerFired { .. } => "TriggerFired",
            Self::InstanceCreated { .. } => "InstanceCreated",
            Self::TriggerApplied { .. } => "TriggerApplied",
            Self::InstanceScheduled { .. } => "InstanceScheduled",
            Self::InstanceStarted { .. } => "InstanceStarted",
            Self::InstanceFinished { .. } => "InstanceFinished",
            Self::InstanceFailed { .. } => "InstanceFailed",
            Self::InstanceSkipped { .. } => "InstanceSkipped",
            Self::InstanceReplayed { .. } => "InstanceReplayed",
            Self::InstanceAbandoned { .. } => "InstanceAbandoned",
            Self::InstanceStatusChanged { .. } => "InstanceStatusChanged",
            Self::InstanceMetadataUpdated { .. } => "InstanceMetadataUpdated",
            Self::InstanceLogsResolved { .. } => "InstanceLogsResolved",
            Self::InstanceLeaseExpired { .. } => "InstanceLeaseExpired",
        }
    }

    /// The instance this event is about, if any.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Self::SessionConfigured { .. } | Self::TriggerFired { .. } => None,
            Self::InstanceCreated { instance, .. }
            | Self::TriggerApplied { instance, .. }
            | Self::InstanceScheduled { instance, .. }
            | Self::InstanceStarted { instance, .. }
            | Self::InstanceFinished { instance, .. }
            | Self::InstanceFailed { instance, .. }
            | Self::InstanceSkipped { instance, .. }
            | Self::InstanceReplayed { instance, .. }
            | Self::InstanceAbandoned { instance }
            | Self::InstanceStatusChanged { instance, .. }
            | Self::InstanceMetadataUpdated { instance, .. }
            | Self::InstanceLogsResolved { instance }
            | Self::InstanceLeaseExpired { instance, .. } => Some(instance),
        }
    }

    /// The trigger this event is about, if any.
    pub fn trigger(&self) -> Option<&str> {
        match self {
            Self::TriggerFired { trigger, .. } | Self::TriggerApplied { trigger, .. } => {
                Some(trigger)
            }
            _ => None,
        }
    }

    /// The payload as stored: a JSON object without the `kind` tag.
    pub fn to_data(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("event payloads always serialise");
        if let Value::Object(map) = &mut value {
            map.remove("kind");
        }
        value
    }

    /// Reads a stored payload back: `data` as written in payload format
    /// `format`, upcast to [`PAYLOAD_FORMAT`] first. A format this build does not
    /// know (newer, or never written), or a payload that does not fit its format,
    /// is reported as corrupt.
    pub fn from_data(kind: &str, format: i32, data: Value) -> Result<Self, DomainError> {
        if format > PAYLOAD_FORMAT {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload has format {format}, newer than this build understands ({PAYLOAD_FORMAT})"
            )));
        }
        if format < 1 {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload has format {format}, which was never written (formats start at 1)"
            )));
        }
        let Value::Object(mut map) = data else {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload is not an object"
            )));
        };
        for (from, upcast) in (format..).zip(&UPCASTS[(format - 1) as usize..]) {
            upcast(kind, &mut map).map_err(|what| {
                DomainError::Corrupt(format!("{kind} payload of format {from}: {what}"))
            })?;
        }
        map.insert("kind".to_owned(), Value::String(kind.to_owned()));
        serde_json::from_value(Value::Object(map))
            .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))
    }
}

impl EventPayload {
    /// [`Self::from_data`] from the stored text. A payload in today's format is
    /// parsed once, straight into its variant (the text with the `kind` tag put
    /// in front); an older one goes through [`Self::from_data`]'s upcasts. Every
    /// read of a log decodes this way, so it is what `rebuild` and catch-up reads
    /// spend most of their time on.
    pub fn from_data_text(kind: &str, format: i32, data: &str) -> Result<Self, DomainError> {
        if format != PAYLOAD_FORMAT {
            let data = serde_json::from_str(data)
                .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))?;
            return Self::from_data(kind, format, data);
        }
        let Some(fields) = data.trim_start().strip_prefix('{') else {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload is not an object"
            )));
        };
        let mut tagged = String::with_capacity(data.len() + kind.len() + 12);
        tagged.push_str("{\"kind\":");
        tagged.push_str(&Value::from(kind).to_string());
        if !fields.trim_start().starts_with('}') {
            tagged.push(',');
        }
        tagged.push_str(fields);
        serde_json::from_str(&tagged)
            .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))
    }
}

/// Rewrites the data of a `kind` event from one payload format to the next, or
/// says what in it does not fit the older format.
type Upcast = fn(kind: &str, data: &mut JsonObject) -> Result<(), String>;

/// `UPCASTS[n - 1]` takes a payload from format `n` to `n + 1`.
const UPCASTS: [Upcast; PAYLOAD_FORMAT as usize - 1] = [format_1_runner_to_using];

/// Format 1 -> 2: `InstanceScheduled.runner` from `{"runner": "inline"}` or
/// `{"runner": "worker", "queue": "<queue>"}` to `"inline"` or `"worker:<queue>"`.
fn format_1_runner_to_using(kind: &str, data: &mut JsonObject) -> Result<(), String> {
    /// How format 1 spelled a runner (serde's adjacently tagged `Runner`, frozen).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", tag = "runner", content = "queue")]
    enum RunnerV1 {
        Inline,
        Worker(String),
    }

    if kind != "InstanceScheduled" {
        return Ok(());
    }
    // A missing runner is left for deserialisation to report.
    let Some(runner) = data.get_mut("runner") else {
        return Ok(());
    };
    if !runner.is_object() {
        return Err(format!(
            "runner {runner} is not a format-1 runner object \
             ({{\"runner\": \"inline\"}} or {{\"runner\": \"worker\", \"queue\": \"<queue>\"}})"
        ));
    }
    let old = RunnerV1::deserialize(&*runner)
        .map_err(|err| format!("runner {runner} is not a format-1 runner: {err}"))?;
    let new = match old {
        RunnerV1::Inline => Runner::Inline,
        RunnerV1::Worker(queue) if queue.is_empty() => {
            return Err(format!("runner {runner} names an empty worker queue"));
        }
        RunnerV1::Worker(queue) => Runner::Worker(queue),
    };
    *runner = Value::String(runner_as_using::spell(&new));
    Ok(())
}

/// `InstanceScheduled.runner` as stored since format 2: the `using` spelling.
/// Spelled out here rather than borrowed from `Runner`'s `Display`, so that how
/// runners print can never change what the log holds.
mod runner_as_using {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use super::Runner;

    /// `"inline"` or `"worker:<queue>"`.
    pub(super) fn spell(runner: &Runner) -> String {
        match runner {
            Runner::Inline => "inline".to_owned(),
            Runner::Worker(queue) => format!("worker:{queue}"),
        }
    }

    pub(super) fn serialize<S: Serializer>(
        runner: &Runner,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&spell(runner))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Runner, D::Error> {
        let value = Value::deserialize(deserializer)?;
        value.as_str().and_then(Runner::parse_using).ok_or_else(|| {
            D::Error::custom(format!(
                "runner {value} is not \"inline\" or \"worker:<queue>\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

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
}
