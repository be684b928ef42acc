//! The write side of the library API: configure, fire, and the manual changes of
//! operators (docs/graphql.md). Each takes its names parsed (`domain/names.rs`),
//! checks its JSON input, then runs one decision through the pipeline of
//! `execute.rs`.

use serde_json::Value;

use super::{Engine, Error, Result};
use crate::domain::config::diagnostics::{self, ConfigWarning};
use crate::domain::config::json_type;
use crate::domain::{
    parse_tasks, Event, FireOutcome, Instance, InstanceName, InstanceStatus, JsonObject,
    SessionUid, TriggerName,
};

/// What a fire did, as the library API and hooks see it: the domain's
/// [`FireOutcome`] (trigger, seq, scheduled, abandoned, duplicate; read through
/// as `result.scheduled` and so on) placed in its session, with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct FireResult {
    /// The session.
    pub session: String,
    /// The `TriggerFired` event, when it is at hand (always for a fresh fire).
    pub event: Option<Event>,
    /// What the fire decided.
    pub outcome: FireOutcome,
}

impl std::ops::Deref for FireResult {
    type Target = FireOutcome;

    fn deref(&self) -> &FireOutcome {
        &self.outcome
    }
}

impl FireResult {
    pub(crate) fn from_outcome(session: &str, fire: &FireOutcome, events: &[Event]) -> Self {
        Self {
            session: session.to_owned(),
            event: events.iter().find(|e| e.seq == fire.seq).cloned(),
            outcome: fire.clone(),
        }
    }
}

/// What a `configure` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    /// The session's version after it.
    pub version: u64,
    /// What was accepted but is likely a mistake (unknown directives, a `run`
    /// that goes to a worker queue for want of a handler).
    pub warnings: Vec<ConfigWarning>,
}

/// Parses an optional JSON value that must be an object (`None` and `null` -> `{}`).
pub(crate) fn object_or_empty(value: Option<Value>, what: &str) -> Result<JsonObject> {
    match value {
        None | Some(Value::Null) => Ok(JsonObject::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(Error::bad_input(format!(
            "{what} must be a JSON object, got {}",
            json_type(&other)
        ))),
    }
}

/// Parses an optional JSON value that, when present, must be an object.
pub(crate) fn optional_object(value: Option<Value>, what: &str) -> Result<Option<JsonObject>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        other => object_or_empty(other, what).map(Some),
    }
}

impl Engine {
    /// Adds or replaces tasks (`tasks`: task name -> directives). Bad configuration
    /// is rejected as a whole and nothing is written.
    pub async fn configure(&self, session: &SessionUid, tasks: &Value) -> Result<u64> {
        Ok(self.configure_checked(session, tasks, false).await?.version)
    }

    /// [`Engine::configure`], answering with its warnings too. With `strict`, an
    /// unknown directive is `BadConfiguration` (and nothing is written) rather
    /// than a warning.
    #[tracing::instrument(skip(self, tasks), err(level = "debug"))]
    pub async fn configure_checked(
        &self,
        session: &SessionUid,
        tasks: &Value,
        strict: bool,
    ) -> Result<Configured> {
        let tasks = parse_tasks(tasks)?;
        if strict {
            diagnostics::refuse_unknown_directives(&tasks)?;
        }
        let warnings = diagnostics::diagnose(&tasks, |run| self.registry().contains(run));
        let executed = self
            .execute(session, |d| d.configure(tasks.clone()), |_| Vec::new())
            .await?;
        Ok(Configured {
            version: executed.value,
            warnings,
        })
    }

    /// Fires `trigger` with `kwargs` (docs/configuration.md). With an idempotency key, a
    /// repeat returns the first outcome with `duplicate` set and appends nothing.
    #[tracing::instrument(skip(self, kwargs), err(level = "debug"))]
    pub async fn fire(
        &self,
        session: &SessionUid,
        trigger: &TriggerName,
        kwargs: JsonObject,
        idempotency_key: Option<&str>,
    ) -> Result<FireResult> {
        if idempotency_key.is_some_and(str::is_empty) {
            return Err(Error::bad_input("idempotencyKey must not be empty"));
        }
        let executed = self
            .execute(
                session,
                |d| d.fire(trigger.as_str(), kwargs.clone(), None, idempotency_key),
                |_| Vec::new(),
            )
            .await?;
        let mut result =
            FireResult::from_outcome(session.as_str(), &executed.value, &executed.events);
        if !result.duplicate {
            self.inner.metrics.fires.inc();
        }
        if result.event.is_none() {
            result.event = self
                .inner
                .store
                .events_by_seq(session, &[result.seq])
                .await?
                .into_iter()
                .next();
        }
        Ok(result)
    }

    /// [`Engine::fire`] with kwargs as any JSON value (must be an object or absent).
    pub async fn fire_json(
        &self,
        session: &SessionUid,
        trigger: &TriggerName,
        kwargs: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<FireResult> {
        let kwargs = object_or_empty(kwargs, "kwargs")?;
        self.fire(session, trigger, kwargs, idempotency_key).await
    }

    /// Replays a failed instance as a new clone (scheduled at once); returns the clone.
    #[tracing::instrument(skip(self, replacement_kwargs), err(level = "debug"))]
    pub async fn replay_failed_instance(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
        replacement_kwargs: Option<Value>,
    ) -> Result<Instance> {
        let replacement = optional_object(replacement_kwargs, "replacementKwargs")?;
        self.on_instance(session, |d| {
            let clone = d.replay_failed(instance.as_str(), replacement.clone())?;
            Ok(clone)
        })
        .await
    }

    /// Skips a failed instance; with `cascade`, fires the task name with `result`.
    #[tracing::instrument(skip(self, result), err(level = "debug"))]
    pub async fn skip_failed_instance(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
        cascade: bool,
        result: Option<Value>,
    ) -> Result<Instance> {
        let result = object_or_empty(result, "result")?;
        self.on_instance(session, |d| {
            d.skip_failed(instance.as_str(), cascade, result.clone())?;
            Ok(instance.as_str().to_owned())
        })
        .await
    }

    /// Sets any status, merges metadata, optionally cascades `cascade_kwargs`.
    #[tracing::instrument(skip(self, metadata, cascade_kwargs), err(level = "debug"))]
    pub async fn update_instance_status(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
        status: InstanceStatus,
        metadata: Option<Value>,
        cascade: bool,
        cascade_kwargs: Option<Value>,
    ) -> Result<Instance> {
        let metadata = object_or_empty(metadata, "metadata")?;
        let cascade_kwargs = object_or_empty(cascade_kwargs, "cascadeKwargs")?;
        self.on_instance(session, |d| {
            let cascade = cascade.then(|| cascade_kwargs.clone());
            d.update_status(instance.as_str(), status, metadata.clone(), cascade)?;
            Ok(instance.as_str().to_owned())
        })
        .await
    }

    /// Merges metadata into an instance's metadata.
    #[tracing::instrument(skip(self, metadata), err(level = "debug"))]
    pub async fn update_instance_metadata(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
        metadata: Value,
    ) -> Result<Instance> {
        let metadata = object_or_empty(Some(metadata), "metadata")?;
        self.on_instance(session, |d| {
            d.update_metadata(instance.as_str(), metadata.clone())?;
            Ok(instance.as_str().to_owned())
        })
        .await
    }

    /// Sets metadata `logsResolved: true`.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn mark_instance_logs_resolved(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> Result<Instance> {
        self.on_instance(session, |d| {
            d.mark_logs_resolved(instance.as_str())?;
            Ok(instance.as_str().to_owned())
        })
        .await
    }

    /// Runs a decision that names an instance, and returns that instance as committed.
    async fn on_instance(
        &self,
        session: &SessionUid,
        mut decide: impl FnMut(
            &mut crate::domain::Decider<'_>,
        ) -> Result<String, crate::domain::DomainError>,
    ) -> Result<Instance> {
        let executed = self
            .execute(
                session,
                |d| {
                    let name = decide(d)?;
                    d.state().instance(&name).cloned().ok_or_else(|| {
                        crate::domain::DomainError::NotFound(format!("no instance {name:?}"))
                    })
                },
                |_| Vec::new(),
            )
            .await?;
        Ok(executed.value)
    }
}
