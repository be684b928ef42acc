//! A run's life (docs/concepts.md, "Instances"): a runner starts a scheduled
//! instance, and the job's report ends it: finished (and its cascade fired),
//! failed, skipped by itself, or retried as a replay. Replaying a failed instance
//! by hand shares the replay step.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    invalid, Decider, Failure, FireOutcome, StartedJob, DEFAULT_FAILURE_LOG_LEVEL,
    DEFAULT_SUCCESS_LOG_LEVEL, MAX_RETRIES_EXCEEDED, RETRY_LOG_LEVEL,
};
use crate::domain::merge::deep_merge;
use crate::domain::{DomainError, EventPayload, InstanceName, InstanceStatus, JsonObject};

impl Decider<'_> {
    /// A runner starts a scheduled instance (or re-runs a running one whose lease
    /// ended, when `restart` is set). Returns what the job receives.
    pub fn start(
        &mut self,
        instance: &str,
        worker: Option<String>,
        lease_expires_at: Option<DateTime<Utc>>,
        restart: bool,
    ) -> Result<StartedJob, DomainError> {
        let inst = self.instance(instance)?;
        let startable = inst.status == InstanceStatus::Scheduled
            || (restart && inst.status == InstanceStatus::Running);
        if !startable {
            return Err(invalid(inst, "start"));
        }
        let task = self.task_of(inst)?;
        let job = StartedJob {
            instance: inst.name.clone(),
            task: inst.task.clone(),
            run: task.run.clone(),
            kwargs: deep_merge(&task.with_params, &inst.kwargs),
            depth: inst.depth,
            max_retries: task.max_retries,
        };
        let mut cause = inst.last_seq;
        if inst.status == InstanceStatus::Running {
            // The previous runner's lease ran out: record that before the new attempt.
            let previous = inst
                .metadata
                .get("worker")
                .and_then(Value::as_str)
                .map(str::to_owned);
            cause = self.emit(
                Some(cause),
                EventPayload::InstanceLeaseExpired {
                    instance: instance.to_owned(),
                    worker: previous,
                },
            )?;
        }
        self.emit(
            Some(cause),
            EventPayload::InstanceStarted {
                instance: instance.to_owned(),
                actual_kwargs: job.kwargs.clone(),
                attempt: job.depth + 1,
                worker,
                lease_expires_at,
            },
        )?;
        Ok(job)
    }

    /// The job returned `result`: finish, then cascade (fire the task's name).
    pub fn complete(
        &mut self,
        instance: &str,
        result: JsonObject,
        log_level: Option<i64>,
    ) -> Result<FireOutcome, DomainError> {
        let inst = self.running(instance, "complete")?;
        let (task, started) = (inst.task.clone(), inst.last_seq);
        let finished = self.emit(
            Some(started),
            EventPayload::InstanceFinished {
                instance: instance.to_owned(),
                result: result.clone(),
                log_level: log_level.unwrap_or(DEFAULT_SUCCESS_LOG_LEVEL),
            },
        )?;
        self.fire(&task, result, Some(finished), None)
    }

    /// The job failed.
    pub fn fail(&mut self, instance: &str, failure: Failure) -> Result<(), DomainError> {
        let started = self.running(instance, "fail")?.last_seq;
        self.emit(Some(started), failed_event(instance, failure, None))?;
        Ok(())
    }

    /// The job skipped itself.
    pub fn skip_self(&mut self, instance: &str, metadata: JsonObject) -> Result<(), DomainError> {
        let started = self.running(instance, "skip")?.last_seq;
        self.emit(
            Some(started),
            EventPayload::InstanceSkipped {
                instance: instance.to_owned(),
                metadata,
            },
        )?;
        Ok(())
    }

    /// The job asked to retry: fail and replay at once, or fail with
    /// `MaxRetriesExceeded` when `depth >= maxRetries`. Returns the clone, if any.
    pub fn retry(
        &mut self,
        instance: &str,
        failure: Failure,
        replacement_kwargs: Option<JsonObject>,
        cooldown_seconds: Option<f64>,
    ) -> Result<Option<String>, DomainError> {
        let inst = self.running(instance, "retry")?;
        let started = inst.last_seq;
        let depth = inst.depth;
        let max_retries = self.task_of(inst)?.max_retries;
        if depth >= max_retries {
            let exceeded = Failure {
                exception_type: MAX_RETRIES_EXCEEDED.to_owned(),
                exception_info: format!(
                    "retry asked for at attempt depth {depth}, but the task allows maxRetries {max_retries}: {}",
                    failure.exception_info
                ),
                exception_context: failure.exception_context,
                log_level: Some(DEFAULT_FAILURE_LOG_LEVEL),
            };
            self.emit(Some(started), failed_event(instance, exceeded, None))?;
            return Ok(None);
        }
        let cooldown = cooldown_seconds.filter(|c| *c > 0.0);
        let failure = Failure {
            log_level: failure.log_level.or(Some(RETRY_LOG_LEVEL)),
            ..failure
        };
        let failed = self.emit(
            Some(started),
            failed_event(instance, failure, Some(cooldown.unwrap_or(0.0))),
        )?;
        let not_before =
            cooldown.map(|c| self.now + chrono::Duration::milliseconds((c * 1000.0) as i64));
        self.replay(instance, replacement_kwargs, Some(failed), not_before)
            .map(Some)
    }

    /// `replayFailedInstance`: only for failed instances. Returns the clone's name.
    pub fn replay_failed(
        &mut self,
        instance: &str,
        replacement_kwargs: Option<JsonObject>,
    ) -> Result<String, DomainError> {
        let inst = self.instance(instance)?;
        if !inst.can_replay() {
            return Err(invalid(inst, "replay"));
        }
        self.replay(instance, replacement_kwargs, None, None)
    }

    fn replay(
        &mut self,
        instance: &str,
        replacement_kwargs: Option<JsonObject>,
        caused_by: Option<u64>,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<String, DomainError> {
        let inst = self.instance(instance)?;
        let task = self.task_of(inst)?;
        let clone = String::from(InstanceName::numbered(
            &inst.task,
            self.state.instance_count(&inst.task),
        ));
        let (kwargs, kwargs_sources) = match &replacement_kwargs {
            Some(replacement) => (replacement.clone(), BTreeMap::new()),
            None => (inst.kwargs.clone(), inst.kwargs_sources.clone()),
        };
        let created = InstanceCreatedArgs {
            task: inst.task.clone(),
            abandon_state: inst.abandon_state.iter().cloned().collect(),
            abandon_sources: inst.abandon_sources.clone(),
            depth: inst.depth + 1,
        };
        let replayed = self.emit(
            caused_by,
            EventPayload::InstanceReplayed {
                instance: instance.to_owned(),
                clone: clone.clone(),
                replacement_kwargs,
            },
        )?;
        let created_seq = self.emit(
            Some(replayed),
            EventPayload::InstanceCreated {
                instance: clone.clone(),
                task: created.task,
                kwargs,
                kwargs_sources,
                abandon_state: created.abandon_state,
                abandon_sources: created.abandon_sources,
                parent: Some(instance.to_owned()),
                depth: created.depth,
            },
        )?;
        self.schedule(&clone, &task, Some(created_seq), not_before)?;
        Ok(clone)
    }
}

struct InstanceCreatedArgs {
    task: String,
    abandon_state: Vec<String>,
    abandon_sources: BTreeMap<String, u64>,
    depth: u32,
}

fn failed_event(instance: &str, failure: Failure, cooldown: Option<f64>) -> EventPayload {
    EventPayload::InstanceFailed {
        instance: instance.to_owned(),
        exception_type: failure.exception_type,
        exception_info: failure.exception_info,
        exception_context: failure.exception_context,
        log_level: failure.log_level.unwrap_or(DEFAULT_FAILURE_LOG_LEVEL),
        cooldown,
    }
}
