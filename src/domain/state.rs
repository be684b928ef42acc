//! Per-session state and the fold `state + event -> state` (docs/events.md).
//!
//! `apply` holds no rules: it records what an event says happened. All rules live
//! in `decide`, which emits events and applies each one as it goes, so the state
//! after a decision is by construction the fold of the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::merge::merge_into;
use super::{
    DomainError, Event, EventPayload, Instance, InstanceStatus, JsonObject, TaskConfig, TriggerRole,
};

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

/// The last timestamp `apply` formatted. The events of one decision share their
/// time, so most events reuse it instead of formatting it again.
#[derive(Clone, Default)]
struct Stamp {
    at: Option<DateTime<Utc>>,
    text: String,
}

impl Stamp {
    fn of(&mut self, at: DateTime<Utc>) -> Value {
        if self.at != Some(at) {
            self.at = Some(at);
            self.text = timestamp(at);
        }
        Value::String(self.text.clone())
    }
}

/// A cache, not state: two states are equal whatever they last formatted.
impl PartialEq for Stamp {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stamp")
    }
}

/// The persisted form of a state (snapshots). Indexes are rebuilt on load.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotV1 {
    uid: String,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    tasks: BTreeMap<String, TaskConfig>,
    instances: Vec<Instance>,
    latest: BTreeMap<String, LatestFire>,
    keyed: HashMap<String, KeyedFire>,
    last_keyed: Option<(u64, String)>,
}

/// [`SnapshotV1`] borrowed from a live state, to write one without copying it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRef<'a> {
    uid: &'a str,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "tasks_by_value")]
    tasks: &'a BTreeMap<String, Arc<TaskConfig>>,
    instances: &'a [Instance],
    latest: &'a BTreeMap<String, LatestFire>,
    keyed: &'a HashMap<String, KeyedFire>,
    last_keyed: &'a Option<(u64, String)>,
}

fn tasks_by_value<S: serde::Serializer>(
    tasks: &BTreeMap<String, Arc<TaskConfig>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tasks.iter().map(|(name, task)| (name, task.as_ref())))
}

/// RFC 3339 with microseconds, the precision both databases keep:
/// `2026-11-25T03:04:05.123456Z`. Written by hand for four-digit years (what
/// chrono's `to_rfc3339_opts(Micros, true)` writes, at a fraction of its cost:
/// the fold formats one per event); chrono writes the rest and leap seconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return at.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, mut value: u32, width: usize| {
        for at in (end - width..end).rev() {
            text[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, at.year().unsigned_abs(), 4);
    put(7, at.month(), 2);
    put(10, at.day(), 2);
    put(13, at.hour(), 2);
    put(16, at.minute(), 2);
    put(19, at.second(), 2);
    put(26, nanos / 1000, 6);
    text.iter().map(|&b| char::from(b)).collect()
}

/// Reads back what [`timestamp`] writes, `None` for any other text (callers fall
/// back to a full RFC 3339 parser). Stored logs hold one per event, and chrono's
/// general parser was a visible part of reading them.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() != 27 || &bytes[4..5] != b"-" || &bytes[10..11] != b"T" || bytes[26] != b'Z' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0_u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [(7, b'-'), (13, b':'), (16, b':'), (19, b'.')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?;
    let time = date.and_hms_micro_opt(
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 26)?,
    )?;
    Some(time.and_utc())
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

    /// Applies one event. Infallible for events `decide` produced; an error means the
    /// stored log does not fit this state (corruption or a newer writer).
    pub fn apply(&mut self, event: &Event) -> Result<(), DomainError> {
        if event.seq != self.version + 1 {
            return Err(DomainError::Corrupt(format!(
                "session {:?}: event seq {} follows version {}",
                self.uid, event.seq, self.version
            )));
        }
        let at = event.at;
        match &event.payload {
            EventPayload::SessionConfigured { tasks } => {
                for (name, config) in tasks {
                    self.tasks.insert(name.clone(), Arc::new(config.clone()));
                }
                self.reindex_triggers();
            }
            EventPayload::TriggerFired {
                trigger,
                kwargs,
                idempotency_key,
            } => {
                let fire = LatestFire {
                    kwargs: kwargs.clone(),
                    seq: event.seq,
                };
                match self.latest.get_mut(trigger) {
                    Some(latest) => *latest = fire,
                    None => {
                        self.latest.insert(trigger.clone(), fire);
                    }
                }
                if let Some(key) = idempotency_key {
                    self.keyed.insert(
                        key.clone(),
                        KeyedFire {
                            trigger: trigger.clone(),
                            seq: event.seq,
                            ..KeyedFire::default()
                        },
                    );
                    self.last_keyed = Some((event.seq, key.clone()));
                }
            }
            EventPayload::InstanceCreated {
                instance,
                task,
                kwargs,
                kwargs_sources,
                abandon_state,
                abandon_sources,
                parent,
                depth,
            } => {
                if self.by_name.contains_key(instance) {
                    return Err(corrupt(instance, "created twice"));
                }
                let mut metadata = JsonObject::new();
                let stamp = self.stamp.of(at);
                let timestamps: JsonObject = [
                    ("created".to_owned(), stamp.clone()),
                    ("lastModified".to_owned(), stamp.clone()),
                    (InstanceStatus::Unstarted.as_str().to_owned(), stamp),
                ]
                .into_iter()
                .collect();
                metadata.insert("timestamps".into(), Value::Object(timestamps));
                if let Some(parent) = parent {
                    metadata.insert("parent".into(), Value::String(parent.clone()));
                }
                metadata.insert("depth".into(), Value::from(*depth));
                let position = self.instances.len();
                self.instances.push(Instance {
                    name: instance.clone(),
                    task: task.clone(),
                    status: InstanceStatus::Unstarted,
                    kwargs: kwargs.clone(),
                    kwargs_sources: kwargs_sources.clone(),
                    abandon_state: abandon_state.iter().cloned().collect(),
                    abandon_sources: abandon_sources.clone(),
                    metadata,
                    parent: parent.clone(),
                    depth: *depth,
                    runner: None,
                    created_seq: event.seq,
                    last_seq: event.seq,
                });
                self.by_name.insert(instance.clone(), position);
                let entry = self.by_task.entry(task.clone()).or_default();
                entry.all.push(position);
                entry.unstarted.insert(position);
            }
            EventPayload::TriggerApplied {
                instance,
                trigger,
                role,
            } => {
                let source = event
                    .caused_by
                    .ok_or_else(|| corrupt(instance, "TriggerApplied without causedBy"))?;
                let kwargs = match self.latest.get(trigger) {
                    Some(fire) if fire.seq == source => fire.kwargs.clone(),
                    _ => {
                        return Err(corrupt(
                            instance,
                            "TriggerApplied does not follow its TriggerFired",
                        ))
                    }
                };
                let stamp = self.stamp.of(at);
                let inst = self.instance_mut(instance)?;
                match role {
                    TriggerRole::After => {
                        inst.kwargs.insert(trigger.clone(), Value::Object(kwargs));
                        inst.kwargs_sources.insert(trigger.clone(), source);
                    }
                    TriggerRole::Unless => {
                        inst.abandon_state.insert(trigger.clone());
                        inst.abandon_sources.insert(trigger.clone(), source);
                    }
                }
                touch(inst, stamp);
            }
            EventPayload::InstanceScheduled {
                instance,
                runner,
                not_before,
            } => {
                let inst = self.set_status(instance, InstanceStatus::Scheduled, at)?;
                inst.runner = Some(runner.clone());
                if let Some(not_before) = not_before {
                    inst.metadata
                        .insert("notBefore".into(), Value::String(timestamp(*not_before)));
                }
                self.attribute_to_keyed_fire(event.caused_by, instance, true);
            }
            EventPayload::InstanceStarted {
                instance,
                actual_kwargs,
                attempt,
                worker,
                ..
            } => {
                let inst = self.set_status(instance, InstanceStatus::Running, at)?;
                inst.metadata
                    .insert("actualKwargs".into(), Value::Object(actual_kwargs.clone()));
                inst.metadata
                    .insert("attempt".into(), Value::from(*attempt));
                if let Some(worker) = worker {
                    inst.metadata
                        .insert("worker".into(), Value::String(worker.clone()));
                }
            }
            EventPayload::InstanceFinished {
                instance,
                result,
                log_level,
            } => {
                let inst = self.set_status(instance, InstanceStatus::Finished, at)?;
                inst.metadata
                    .insert("result".into(), Value::Object(result.clone()));
                inst.metadata
                    .insert("logLevel".into(), Value::from(*log_level));
            }
            EventPayload::InstanceFailed {
                instance,
                exception_type,
                exception_info,
                exception_context,
                log_level,
                cooldown,
            } => {
                let inst = self.set_status(instance, InstanceStatus::Failed, at)?;
                let m = &mut inst.metadata;
                m.insert(
                    "exceptionType".into(),
                    Value::String(exception_type.clone()),
                );
                m.insert(
                    "exceptionInfo".into(),
                    Value::String(exception_info.clone()),
                );
                m.insert(
                    "exceptionContext".into(),
                    Value::Object(exception_context.clone()),
                );
                m.insert("logLevel".into(), Value::from(*log_level));
                if let Some(cooldown) = cooldown {
                    m.insert("cooldown".into(), Value::from(*cooldown));
                }
            }
            EventPayload::InstanceSkipped { instance, metadata } => {
                let inst = self.set_status(instance, InstanceStatus::Skipped, at)?;
                merge_metadata(inst, metadata);
            }
            EventPayload::InstanceReplayed { instance, .. } => {
                self.set_status(instance, InstanceStatus::Replayed, at)?;
            }
            EventPayload::InstanceAbandoned { instance } => {
                self.set_status(instance, InstanceStatus::Abandoned, at)?;
                self.attribute_to_keyed_fire(event.caused_by, instance, false);
            }
            EventPayload::InstanceStatusChanged {
                instance,
                status,
                metadata,
            } => {
                let inst = self.set_status(instance, *status, at)?;
                merge_metadata(inst, metadata);
            }
            EventPayload::InstanceMetadataUpdated { instance, metadata } => {
                let stamp = self.stamp.of(at);
                let inst = self.instance_mut(instance)?;
                merge_metadata(inst, metadata);
                touch(inst, stamp);
            }
            EventPayload::InstanceLogsResolved { instance } => {
                let stamp = self.stamp.of(at);
                let inst = self.instance_mut(instance)?;
                inst.metadata
                    .insert("logsResolved".into(), Value::Bool(true));
                touch(inst, stamp);
            }
            EventPayload::InstanceLeaseExpired { instance, .. } => {
                self.set_status(instance, InstanceStatus::Scheduled, at)?;
            }
        }
        if let Some(name) = event.payload.instance() {
            self.instance_mut(name)?.last_seq = event.seq;
        }
        self.version = event.seq;
        self.updated_at = Some(at);
        Ok(())
    }

    fn instance_mut(&mut self, name: &str) -> Result<&mut Instance, DomainError> {
        let position = *self
            .by_name
            .get(name)
            .ok_or_else(|| corrupt(name, "unknown instance"))?;
        Ok(&mut self.instances[position])
    }

    fn set_status(
        &mut self,
        name: &str,
        status: InstanceStatus,
        at: DateTime<Utc>,
    ) -> Result<&mut Instance, DomainError> {
        let position = *self
            .by_name
            .get(name)
            .ok_or_else(|| corrupt(name, "unknown instance"))?;
        if let Some(entry) = self.by_task.get_mut(self.instances[position].task.as_str()) {
            if status == InstanceStatus::Unstarted {
                entry.unstarted.insert(position);
            } else {
                entry.unstarted.remove(&position);
            }
        }
        let stamp = self.stamp.of(at);
        let inst = &mut self.instances[position];
        inst.status = status;
        let timestamps = timestamps(inst);
        set(timestamps, "lastModified", stamp.clone());
        set(timestamps, status.as_str(), stamp);
        Ok(inst)
    }

    fn attribute_to_keyed_fire(&mut self, caused_by: Option<u64>, instance: &str, scheduled: bool) {
        let Some((seq, key)) = &self.last_keyed else {
            return;
        };
        if caused_by != Some(*seq) {
            return;
        }
        if let Some(fire) = self.keyed.get_mut(key) {
            let list = if scheduled {
                &mut fire.scheduled
            } else {
                &mut fire.abandoned
            };
            list.push(instance.to_owned());
        }
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

    /// Serialises the state for a snapshot.
    pub fn to_snapshot(&self) -> String {
        let snapshot = SnapshotRef {
            uid: &self.uid,
            version: self.version,
            updated_at: self.updated_at,
            tasks: &self.tasks,
            instances: &self.instances,
            latest: &self.latest,
            keyed: &self.keyed,
            last_keyed: &self.last_keyed,
        };
        serde_json::to_string(&snapshot).expect("session state always serialises")
    }

    /// Restores a state saved by [`SessionState::to_snapshot`].
    pub fn from_snapshot(text: &str) -> Result<Self, DomainError> {
        let snapshot: SnapshotV1 = serde_json::from_str(text)
            .map_err(|err| DomainError::Corrupt(format!("snapshot: {err}")))?;
        let mut state = Self {
            uid: snapshot.uid,
            version: snapshot.version,
            updated_at: snapshot.updated_at,
            tasks: snapshot
                .tasks
                .into_iter()
                .map(|(name, task)| (name, Arc::new(task)))
                .collect(),
            instances: snapshot.instances,
            latest: snapshot.latest,
            keyed: snapshot.keyed,
            last_keyed: snapshot.last_keyed,
            ..Self::default()
        };
        state.reindex_triggers();
        for (position, inst) in state.instances.iter().enumerate() {
            state.by_name.insert(inst.name.clone(), position);
            let entry = state.by_task.entry(inst.task.clone()).or_default();
            entry.all.push(position);
            if inst.status == InstanceStatus::Unstarted {
                entry.unstarted.insert(position);
            }
        }
        Ok(state)
    }
}

fn corrupt(instance: &str, what: &str) -> DomainError {
    DomainError::Corrupt(format!("instance {instance:?}: {what}"))
}

fn timestamps(inst: &mut Instance) -> &mut JsonObject {
    let entry = inst
        .metadata
        .entry("timestamps")
        .or_insert_with(|| Value::Object(JsonObject::new()));
    if !entry.is_object() {
        *entry = Value::Object(JsonObject::new());
    }
    entry.as_object_mut().expect("just made an object")
}

fn touch(inst: &mut Instance, stamp: Value) {
    set(timestamps(inst), "lastModified", stamp);
}

/// Inserts or replaces `key`, allocating the key only when it is new.
fn set(object: &mut JsonObject, key: &str, value: Value) {
    match object.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            object.insert(key.to_owned(), value);
        }
    }
}

fn merge_metadata(inst: &mut Instance, metadata: &JsonObject) {
    merge_into(&mut inst.metadata, metadata);
}
