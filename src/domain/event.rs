//! Events: the facts of the log (SPEC section 8). Past-tense kinds with pinned
//! names, a payload format version, and `causedBy` where an event is derived.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, InstanceStatus, JsonObject, TaskConfig};

/// The payload format written today. Older formats are upcast on read.
pub const PAYLOAD_FORMAT: i32 = 1;

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
        /// `inline`, or the worker queue.
        runner: super::Runner,
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

    /// Reads a stored payload back, upcasting older formats.
    pub fn from_data(kind: &str, format: i32, data: Value) -> Result<Self, DomainError> {
        if format > PAYLOAD_FORMAT {
            return Err(DomainError::Corrupt(format!(
                "event format {format} is newer than this build understands ({PAYLOAD_FORMAT})"
            )));
        }
        let Value::Object(mut map) = data else {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload is not an object"
            )));
        };
        map.insert("kind".to_owned(), Value::String(kind.to_owned()));
        serde_json::from_value(Value::Object(map))
            .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
            EventPayload::from_data("TriggerFired", 1, data).unwrap(),
            payload
        );
        assert_eq!(payload.kind(), "TriggerFired");
        assert_eq!(payload.trigger(), Some("page"));
    }

    #[test]
    fn unknown_kinds_and_newer_formats_are_reported_as_corrupt() {
        assert!(EventPayload::from_data("Nope", 1, json!({})).is_err());
        assert!(
            EventPayload::from_data("InstanceAbandoned", 99, json!({"instance": "t#0"})).is_err()
        );
    }
}
