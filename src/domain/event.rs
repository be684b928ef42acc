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
//! the old format to the end of `UPCASTS` in `stored.rs` (the compiler checks
//! that there is one step per format), and add a line to the list above.
//!
//! - this file: the event and its payload kinds;
//! - `stored.rs`: a payload as stored, and the upcasts that read old formats;
//! - `kinds.rs`: every kind's pinned name.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod kinds;
mod stored;
#[cfg(test)]
mod tests;

pub use kinds::EVENT_KINDS;
use stored::runner_as_using;

use super::{InstanceStatus, JsonObject, Runner, TaskConfig};

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
}
