//! A task instance: one execution of a task, `<task>#<n>`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InstanceStatus, JsonObject, Runner, TaskConfig};

/// Log level from which an instance's logs need attention (Python's ERROR).
pub const ERROR_LOG_LEVEL: i64 = 40;

/// One execution of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `<task>#<n>`.
    pub name: String,
    /// The task it belongs to.
    pub task: String,
    /// Where it is in its life.
    pub status: InstanceStatus,
    /// The kwargs of its `after` triggers, keyed by trigger name.
    pub kwargs: JsonObject,
    /// For each key of `kwargs`, the seq of the `TriggerFired` it came from (audit).
    pub kwargs_sources: BTreeMap<String, u64>,
    /// The `unless` triggers that fired for it.
    pub abandon_state: BTreeSet<String>,
    /// For each trigger of `abandon_state`, the seq of its `TriggerFired`.
    pub abandon_sources: BTreeMap<String, u64>,
    /// Timestamps, results, errors and operator metadata.
    pub metadata: JsonObject,
    /// The failed instance this one replays.
    pub parent: Option<String>,
    /// Attempt number, 0 for an original instance.
    pub depth: u32,
    /// Which runner it was handed to, once scheduled.
    pub runner: Option<Runner>,
    /// Seq of the event that created it.
    pub created_seq: u64,
    /// Seq of the last event about it.
    pub last_seq: u64,
}

impl Instance {
    /// The result recorded when it finished (or was skipped with one).
    pub fn result(&self) -> Option<&Value> {
        self.metadata.get("result")
    }

    /// The recorded log level, 0 (NOTSET) when none was recorded.
    pub fn log_level(&self) -> i64 {
        self.metadata
            .get("logLevel")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// Resolved instances need nothing more.
    pub fn is_resolved(&self) -> bool {
        self.status.is_resolved()
    }

    /// Unstarted, with its whole `after` set present.
    pub fn after_complete(&self, task: &TaskConfig) -> bool {
        task.after.iter().all(|t| self.kwargs.contains_key(t))
    }

    /// Unstarted, with a non-empty `unless` set that has fully fired.
    pub fn can_abandon(&self, task: &TaskConfig) -> bool {
        self.status == InstanceStatus::Unstarted
            && !task.unless.is_empty()
            && task.unless.iter().all(|t| self.abandon_state.contains(t))
    }

    /// Unstarted, complete, and not about to be abandoned.
    pub fn can_run(&self, task: &TaskConfig) -> bool {
        self.status == InstanceStatus::Unstarted
            && self.after_complete(task)
            && !self.can_abandon(task)
    }

    /// Only failed instances can be replayed.
    pub fn can_replay(&self) -> bool {
        self.status == InstanceStatus::Failed
    }

    /// Only failed instances can be skipped.
    pub fn can_skip(&self) -> bool {
        self.status == InstanceStatus::Failed
    }

    /// ERROR or worse, not abandoned/replayed/skipped, and not yet marked resolved.
    pub fn has_unresolved_logs(&self) -> bool {
        self.log_level() >= ERROR_LOG_LEVEL
            && !matches!(
                self.status,
                InstanceStatus::Abandoned | InstanceStatus::Replayed | InstanceStatus::Skipped
            )
            && self.metadata.get("logsResolved") != Some(&Value::Bool(true))
    }

    /// Every `TriggerFired` seq behind its kwargs and abandon state, ascending.
    pub fn cause_seqs(&self) -> Vec<u64> {
        let seqs: BTreeSet<u64> = self
            .kwargs_sources
            .values()
            .chain(self.abandon_sources.values())
            .copied()
            .collect();
        seqs.into_iter().collect()
    }
}
