//! The fold `state + event -> state`, one function per group of events:
//! configuring, firing, an instance's life (created, scheduled, started, and
//! how it ended), and the manual changes of operators.
//!
//! Nothing here decides anything: each function records what its event says
//! happened, and reports an event that does not fit the state as corrupt.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::timestamps::timestamp;
use super::{KeyedFire, LatestFire, SessionState};
use crate::domain::merge::merge_into;
use crate::domain::{
    DomainError, Event, EventPayload, Instance, InstanceStatus, JsonObject, TriggerRole,
};

impl SessionState {
    /// Applies one event. Infallible for events `decide` produced; an error means the
    /// stored log does not fit this state (corruption or a newer writer).
    pub fn apply(&mut self, event: &Event) -> Result<(), DomainError> {
        if event.seq != self.version + 1 {
            return Err(DomainError::Corrupt(format!(
                "session {:?}: event seq {} follows version {}",
                self.uid, event.seq, self.version
            )));
        }
        match &event.payload {
            EventPayload::SessionConfigured { .. } => self.apply_configured(event),
            EventPayload::TriggerFired { .. } | EventPayload::TriggerApplied { .. } => {
                self.apply_fire(event)?
            }
            EventPayload::InstanceStatusChanged { .. }
            | EventPayload::InstanceMetadataUpdated { .. }
            | EventPayload::InstanceLogsResolved { .. } => self.apply_manual_change(event)?,
            EventPayload::InstanceCreated { .. }
            | EventPayload::InstanceScheduled { .. }
            | EventPayload::InstanceStarted { .. }
            | EventPayload::InstanceFinished { .. }
            | EventPayload::InstanceFailed { .. }
            | EventPayload::InstanceSkipped { .. }
            | EventPayload::InstanceReplayed { .. }
            | EventPayload::InstanceAbandoned { .. }
            | EventPayload::InstanceLeaseExpired { .. } => self.apply_lifecycle(event)?,
        }
        if let Some(name) = event.payload.instance() {
            self.instance_mut(name)?.last_seq = event.seq;
        }
        self.version = event.seq;
        self.updated_at = Some(event.at);
        Ok(())
    }

    /// `SessionConfigured`: tasks added or replaced.
    fn apply_configured(&mut self, event: &Event) {
        let EventPayload::SessionConfigured { tasks } = &event.payload else {
            unreachable!("apply routes only SessionConfigured here")
        };
        for (name, config) in tasks {
            self.tasks.insert(name.clone(), Arc::new(config.clone()));
        }
        self.reindex_triggers();
    }

    /// `TriggerFired` (the latest kwargs, an idempotency key) and
    /// `TriggerApplied` (a fired trigger taken by an instance).
    fn apply_fire(&mut self, event: &Event) -> Result<(), DomainError> {
        match &event.payload {
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
                let stamp = self.stamp.of(event.at);
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
            other => unreachable!("apply routes only fires here, not {}", other.kind()),
        }
        Ok(())
    }

    /// An instance's life: created, scheduled, started, and how its run ended
    /// (finished, failed, skipped, replayed), abandoned, or its lease expired.
    fn apply_lifecycle(&mut self, event: &Event) -> Result<(), DomainError> {
        let at = event.at;
        match &event.payload {
            EventPayload::InstanceCreated { .. } => self.create_instance(event)?,
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
                merge_into(&mut inst.metadata, metadata);
            }
            EventPayload::InstanceReplayed { instance, .. } => {
                self.set_status(instance, InstanceStatus::Replayed, at)?;
            }
            EventPayload::InstanceAbandoned { instance } => {
                self.set_status(instance, InstanceStatus::Abandoned, at)?;
                self.attribute_to_keyed_fire(event.caused_by, instance, false);
            }
            EventPayload::InstanceLeaseExpired { instance, .. } => {
                self.set_status(instance, InstanceStatus::Scheduled, at)?;
            }
            other => unreachable!(
                "apply routes only an instance's life here, not {}",
                other.kind()
            ),
        }
        Ok(())
    }

    /// `InstanceCreated`: a new unstarted instance with what it inherited.
    fn create_instance(&mut self, event: &Event) -> Result<(), DomainError> {
        let EventPayload::InstanceCreated {
            instance,
            task,
            kwargs,
            kwargs_sources,
            abandon_state,
            abandon_sources,
            parent,
            depth,
        } = &event.payload
        else {
            unreachable!("apply routes only InstanceCreated here")
        };
        if self.by_name.contains_key(instance) {
            return Err(corrupt(instance, "created twice"));
        }
        let mut metadata = JsonObject::new();
        let stamp = self.stamp.of(event.at);
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
        Ok(())
    }

    /// What operators change from outside a run: a status, metadata, logs looked at.
    fn apply_manual_change(&mut self, event: &Event) -> Result<(), DomainError> {
        let at = event.at;
        match &event.payload {
            EventPayload::InstanceStatusChanged {
                instance,
                status,
                metadata,
            } => {
                let inst = self.set_status(instance, *status, at)?;
                merge_into(&mut inst.metadata, metadata);
            }
            EventPayload::InstanceMetadataUpdated { instance, metadata } => {
                let stamp = self.stamp.of(at);
                let inst = self.instance_mut(instance)?;
                merge_into(&mut inst.metadata, metadata);
                touch(inst, stamp);
            }
            EventPayload::InstanceLogsResolved { instance } => {
                let stamp = self.stamp.of(at);
                let inst = self.instance_mut(instance)?;
                inst.metadata
                    .insert("logsResolved".into(), Value::Bool(true));
                touch(inst, stamp);
            }
            other => unreachable!(
                "apply routes only manual changes here, not {}",
                other.kind()
            ),
        }
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
