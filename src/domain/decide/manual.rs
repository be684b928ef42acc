//! Operator commands (docs/graphql.md, "Mutations") (skip, status, metadata, logs) and lease
//! expiry: changes made to an instance from outside its run.

use serde_json::Value;

use super::{invalid, Decider};
use crate::domain::{DomainError, EventPayload, InstanceStatus, JsonObject};

impl Decider<'_> {
    /// `skipFailedInstance`: only for failed instances; optionally cascades `result`.
    pub fn skip_failed(
        &mut self,
        instance: &str,
        cascade: bool,
        result: JsonObject,
    ) -> Result<(), DomainError> {
        let inst = self.instance(instance)?;
        if !inst.can_skip() {
            return Err(invalid(inst, "skip"));
        }
        let task = inst.task.clone();
        let mut metadata = JsonObject::new();
        metadata.insert("cascade".into(), Value::Bool(cascade));
        metadata.insert("result".into(), Value::Object(result.clone()));
        let skipped = self.emit(
            None,
            EventPayload::InstanceSkipped {
                instance: instance.to_owned(),
                metadata,
            },
        )?;
        if cascade {
            self.fire(&task, result, Some(skipped), None)?;
        }
        Ok(())
    }

    /// `updateInstanceStatus`: sets any status, merges metadata, optionally cascades.
    pub fn update_status(
        &mut self,
        instance: &str,
        status: InstanceStatus,
        metadata: JsonObject,
        cascade_kwargs: Option<JsonObject>,
    ) -> Result<(), DomainError> {
        let task = self.instance(instance)?.task.clone();
        let changed = self.emit(
            None,
            EventPayload::InstanceStatusChanged {
                instance: instance.to_owned(),
                status,
                metadata,
            },
        )?;
        if let Some(kwargs) = cascade_kwargs {
            self.fire(&task, kwargs, Some(changed), None)?;
        }
        Ok(())
    }

    /// `updateInstanceMetadata`: merges metadata, bumps `lastModified` only.
    pub fn update_metadata(
        &mut self,
        instance: &str,
        metadata: JsonObject,
    ) -> Result<(), DomainError> {
        self.instance(instance)?;
        self.emit(
            None,
            EventPayload::InstanceMetadataUpdated {
                instance: instance.to_owned(),
                metadata,
            },
        )?;
        Ok(())
    }

    /// `markInstanceLogsResolved`.
    pub fn mark_logs_resolved(&mut self, instance: &str) -> Result<(), DomainError> {
        self.instance(instance)?;
        self.emit(
            None,
            EventPayload::InstanceLogsResolved {
                instance: instance.to_owned(),
            },
        )?;
        Ok(())
    }

    /// A runner's lease ran out: the running instance goes back to `scheduled`.
    pub fn expire_lease(
        &mut self,
        instance: &str,
        worker: Option<String>,
    ) -> Result<(), DomainError> {
        let started = self.running(instance, "expire the lease of")?.last_seq;
        self.emit(
            Some(started),
            EventPayload::InstanceLeaseExpired {
                instance: instance.to_owned(),
                worker,
            },
        )?;
        Ok(())
    }
}
