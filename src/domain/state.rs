//! Per-session state: the fold of a session's events (docs/events.md).
//!
//! [`SessionState`] holds the configured tasks, every instance, the latest
//! kwargs of each trigger and the idempotency keys seen, with the indexes the
//! rules look things up by. It is only ever changed by [`SessionState::apply`]
//! (in `apply.rs`), which holds no rules: it records what an event says
//! happened. All rules live in `decide`, which emits events and applies each one
//! as it goes, so the state after a decision is by construction the fold of the
//! log.
//!
//! - `apply.rs`: the fold, one function per group of events.
//! - `snapshot.rs`: saving and restoring a state, so a long session is not
//!   folded from its first event on every load.
//! - `timestamps.rs`: the RFC 3339 form every time in metadata and the log takes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod apply;
mod snapshot;
mod timestamps;

pub use timestamps::{parse_timestamp, timestamp};

use super::{DomainError, Event, Instance, JsonObject, TaskConfig};
use timestamps::Stamp;

/// The most recent firing of a trigger in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestFire {
    /// Its kwargs.
    pub kwargs: JsonObject,
    /// The seq of its `TriggerFired` event.
    pub seq: u64,
}

/// What a fire with an idempotency key did, to answer repeats of the key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyedFire {
    /// The trigger that fired.
    pub trigger: String,
    /// The seq of the `TriggerFired` event.
    pub seq: u64,
    /// Instances that fire scheduled.
    pub scheduled: Vec<String>,
    /// Instances that fire abandoned.
    pub abandoned: Vec<String>,
}

/// The name indexes: keys are short strings the fold looks up on every event,
/// where `std`'s SipHash showed up in profiles.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Indexes of one task's instances.
#[derive(Debug, Clone, Default, PartialEq)]
struct TaskInstances {
    /// Positions in `SessionState::instances`, creation order.
    all: Vec<usize>,
    /// The unstarted ones: the only instances a fire can touch, kept apart so a
    /// fire costs the same however many finished instances a task has.
    unstarted: BTreeSet<usize>,
}

/// Everything known about one session: the fold of its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    uid: String,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    tasks: BTreeMap<String, Arc<TaskConfig>>,
    /// Trigger -> tasks whose `after` or `unless` contains it (sorted, derived from `tasks`).
    by_trigger: HashMap<String, Vec<String>>,
    instances: Vec<Instance>,
    by_name: HashMap<String, usize>,
    by_task: HashMap<String, TaskInstances>,
    latest: BTreeMap<String, LatestFire>,
    keyed: HashMap<String, KeyedFire>,
    /// Seq and key of the latest keyed fire, to attribute what it scheduled.
    last_keyed: Option<(u64, String)>,
    stamp: Stamp,
}

impl SessionState {
    /// The empty state of a session never used (version 0).
    pub fn new(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            ..Self::default()
        }
    }

    /// Folds `events` into a fresh state.
    pub fn fold<'a>(
        uid: impl Into<String>,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self, DomainError> {
        let mut state = Self::new(uid);
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// The session UID.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The seq of the last event applied (0 for a session never used).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the last event was decided.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// Configured tasks by name.
    pub fn tasks(&self) -> impl Iterator<Item = (&str, &TaskConfig)> {
        self.tasks
            .iter()
            .map(|(name, task)| (name.as_str(), task.as_ref()))
    }

    /// One configured task.
    pub fn task(&self, name: &str) -> Option<&TaskConfig> {
        self.tasks.get(name).map(Arc::as_ref)
    }

    /// Shared handle on a task's configuration (cheap to keep across mutation).
    pub fn task_arc(&self, name: &str) -> Option<Arc<TaskConfig>> {
        self.tasks.get(name).cloned()
    }

    /// Names of tasks that listen to `trigger` (in `after` or `unless`), sorted.
    pub fn tasks_listening_to(&self, trigger: &str) -> &[String] {
        self.by_trigger
            .get(trigger)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every instance in creation order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// One instance by name.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.by_name.get(name).map(|&i| &self.instances[i])
    }

    /// A task's instances in creation order.
    pub fn instances_of<'a>(&'a self, task: &str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.by_task
            .get(task)
            .into_iter()
            .flat_map(|t| t.all.iter().map(|&i| &self.instances[i]))
    }

    /// How many instances a task has had (the next instance number).
    pub fn instance_count(&self, task: &str) -> usize {
        self.by_task.get(task).map_or(0, |t| t.all.len())
    }

    /// Names of a task's unstarted instances, in creation order.
    pub fn unstarted_of(&self, task: &str) -> Vec<String> {
        self.by_task.get(task).map_or_else(Vec::new, |t| {
            t.unstarted
                .iter()
                .map(|&i| self.instances[i].name.clone())
                .collect()
        })
    }

    /// Tasks with no instance yet, or with an unresolved instance.
    pub fn unresolved_tasks(&self) -> Vec<&str> {
        self.tasks
            .keys()
            .filter(|name| {
                let mut instances = self.instances_of(name).peekable();
                instances.peek().is_none() || instances.any(|i| !i.is_resolved())
            })
            .map(String::as_str)
            .collect()
    }

    /// Instances that are not resolved.
    pub fn unresolved_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| !i.is_resolved())
    }

    /// Instances whose error logs nobody has marked resolved.
    pub fn instances_with_unresolved_logs(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.has_unresolved_logs())
    }

    /// The most recent firing of each trigger.
    pub fn latest_fires(&self) -> &BTreeMap<String, LatestFire> {
        &self.latest
    }

    /// `latestKwargs`: trigger -> most recent kwargs.
    pub fn latest_kwargs(&self) -> JsonObject {
        self.latest
            .iter()
            .map(|(trigger, fire)| (trigger.clone(), Value::Object(fire.kwargs.clone())))
            .collect()
    }

    /// What the fire with this idempotency key did, if it happened.
    pub fn keyed_fire(&self, key: &str) -> Option<&KeyedFire> {
        self.keyed.get(key)
    }

    fn reindex_triggers(&mut self) {
        let mut by_trigger: HashMap<String, Vec<String>> = HashMap::default();
        for (name, task) in &self.tasks {
            let listened: BTreeSet<&str> = task.triggers().collect();
            for trigger in listened {
                by_trigger
                    .entry(trigger.to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        self.by_trigger = by_trigger;
    }
}
