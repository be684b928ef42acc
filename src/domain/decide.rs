//! The rules: commands in, events out (docs/configuration.md, "How a fire reaches a task"; docs/graphql.md).
//!
//! A [`Decider`] borrows a session's state, checks a command against it, and emits
//! events, applying each to the state as it goes. Checks come before the first
//! emit, so a refused command leaves the state untouched; the engine discards the
//! state of a decision whose commit fails.
//!
//! - this file: the decider, `configure`, and `fire`: how a fire reaches the
//!   tasks that listen to it, creates, abandons and schedules their instances;
//! - `run.rs`: a run's life: start, complete (and its cascade), fail, skip,
//!   retry, and the replay of a failed instance;
//! - `manual.rs`: the changes operators make from outside a run, and lease expiry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

mod manual;
mod run;

use super::{
    DomainError, Event, EventPayload, Instance, InstanceName, InstanceStatus, JsonObject, Runner,
    SessionState, TaskConfig, TriggerRole,
};

/// Log level recorded for a failure when the job names none (ERROR).
pub const DEFAULT_FAILURE_LOG_LEVEL: i64 = 40;
/// Log level recorded for a success when the job names none (INFO).
pub const DEFAULT_SUCCESS_LOG_LEVEL: i64 = 20;
/// Log level recorded for the failed attempt of a self-retry (WARNING).
pub const RETRY_LOG_LEVEL: i64 = 30;
/// `exceptionType` of a retry asked for at `depth >= maxRetries`.
pub const MAX_RETRIES_EXCEEDED: &str = "MaxRetriesExceeded";

/// Tells the domain which `run` names have an in-process handler, so a task with
/// no `using` can be routed inline or to the worker queue.
pub trait RunnerResolver: Sync {
    /// Whether a handler named `run` is registered in this process.
    fn is_registered(&self, run: &str) -> bool;
}

impl<F: Fn(&str) -> bool + Sync> RunnerResolver for F {
    fn is_registered(&self, run: &str) -> bool {
        self(run)
    }
}

/// What one fire decided; the engine's `FireResult` is this in its session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FireOutcome {
    /// The fired trigger.
    pub trigger: String,
    /// Seq of its `TriggerFired` event (of the first firing, for a duplicate).
    pub seq: u64,
    /// What caused it (`None` for a fire made by a caller).
    pub caused_by: Option<u64>,
    /// Instances this fire scheduled, in order.
    pub scheduled: Vec<String>,
    /// Instances this fire abandoned, in order.
    pub abandoned: Vec<String>,
    /// The idempotency key was seen before: nothing was appended.
    pub duplicate: bool,
}

/// What a job receives when its instance starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedJob {
    /// The instance.
    pub instance: String,
    /// Its task.
    pub task: String,
    /// The handler or job name.
    pub run: String,
    /// `withParams` deep-merged under the instance's kwargs.
    pub kwargs: JsonObject,
    /// Attempt number (0 for an original instance).
    pub depth: u32,
    /// The task's `maxRetries`.
    pub max_retries: u32,
}

/// A failure reported by a job or worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The exception class.
    pub exception_type: String,
    /// Message and traceback.
    pub exception_info: String,
    /// Structured context.
    pub exception_context: JsonObject,
    /// Log level (defaults to ERROR).
    pub log_level: Option<i64>,
}

/// The result of a step: every fire it made (first the command's own, then cascades).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// Fires made while deciding, in order.
    pub fires: Vec<FireOutcome>,
}

/// Decides commands against one session's state.
pub struct Decider<'a> {
    state: &'a mut SessionState,
    now: DateTime<Utc>,
    resolver: &'a dyn RunnerResolver,
    events: Vec<Event>,
    fires: Vec<FireOutcome>,
}

impl<'a> Decider<'a> {
    /// Starts a decision at `now` (the time every emitted event records).
    pub fn new(
        state: &'a mut SessionState,
        now: DateTime<Utc>,
        resolver: &'a dyn RunnerResolver,
    ) -> Self {
        Self {
            state,
            now,
            resolver,
            events: Vec::new(),
            fires: Vec::new(),
        }
    }

    /// The state as decided so far.
    pub fn state(&self) -> &SessionState {
        self.state
    }

    /// Events emitted so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The emitted events and every fire made.
    pub fn finish(self) -> (Vec<Event>, Vec<FireOutcome>) {
        (self.events, self.fires)
    }

    fn emit(&mut self, caused_by: Option<u64>, payload: EventPayload) -> Result<u64, DomainError> {
        let event = Event {
            seq: self.state.version() + 1,
            at: self.now,
            caused_by,
            payload,
        };
        self.state.apply(&event)?;
        let seq = event.seq;
        self.events.push(event);
        Ok(seq)
    }

    /// Adds or replaces tasks. Never creates instances or re-applies old fires.
    pub fn configure(&mut self, tasks: BTreeMap<String, TaskConfig>) -> Result<u64, DomainError> {
        for (name, task) in &tasks {
            if task.configured_runner() == Some(Runner::Inline)
                && !self.resolver.is_registered(&task.run)
            {
                return Err(DomainError::BadConfiguration(format!(
                    "task {name:?}: directive \"using\" is \"inline\" but no handler named {:?} is registered",
                    task.run
                )));
            }
        }
        self.emit(None, EventPayload::SessionConfigured { tasks })
    }

    /// Fires `trigger` (docs/configuration.md, "How a fire reaches a task"). A repeated idempotency key appends nothing
    /// and answers what the first firing did.
    pub fn fire(
        &mut self,
        trigger: &str,
        kwargs: JsonObject,
        caused_by: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<FireOutcome, DomainError> {
        if let Some(previous) = idempotency_key.and_then(|key| self.state.keyed_fire(key)) {
            return Ok(FireOutcome {
                trigger: previous.trigger.clone(),
                seq: previous.seq,
                caused_by: None,
                scheduled: previous.scheduled.clone(),
                abandoned: previous.abandoned.clone(),
                duplicate: true,
            });
        }
        let fired = self.emit(
            caused_by,
            EventPayload::TriggerFired {
                trigger: trigger.to_owned(),
                kwargs,
                idempotency_key: idempotency_key.map(str::to_owned),
            },
        )?;
        let mut outcome = FireOutcome {
            trigger: trigger.to_owned(),
            seq: fired,
            caused_by,
            ..FireOutcome::default()
        };
        for task_name in self.state.tasks_listening_to(trigger).to_vec() {
            let task = self
                .state
                .task_arc(&task_name)
                .ok_or_else(|| DomainError::Corrupt(format!("task {task_name:?} vanished")))?;
            self.apply_to_task(&task_name, &task, trigger, fired)?;
            self.settle(&task_name, &task, fired, &mut outcome)?;
        }
        self.fires.push(outcome.clone());
        Ok(outcome)
    }

    /// Steps 1-3: offer the trigger to the task's unstarted instances; create one if needed.
    fn apply_to_task(
        &mut self,
        task_name: &str,
        task: &TaskConfig,
        trigger: &str,
        fired: u64,
    ) -> Result<(), DomainError> {
        let in_after = task.is_after(trigger);
        let in_unless = task.is_unless(trigger);
        let create = if self.state.instance_count(task_name) == 0 {
            true
        } else {
            let mut accepted = false;
            for name in self.state.unstarted_of(task_name) {
                accepted |= self.offer(&name, trigger, in_after, in_unless, fired)?;
            }
            !accepted && task.and_every.as_deref() == Some(trigger)
        };
        if create {
            let name = self.create_instance(task_name, task, trigger, fired)?;
            self.offer(&name, trigger, in_after, in_unless, fired)?;
        }
        Ok(())
    }

    /// Applies the trigger to one unstarted instance, if it does not hold it yet.
    fn offer(
        &mut self,
        instance: &str,
        trigger: &str,
        in_after: bool,
        in_unless: bool,
        fired: u64,
    ) -> Result<bool, DomainError> {
        let inst = self.instance(instance)?;
        let take_after = in_after && !inst.kwargs.contains_key(trigger);
        let take_unless = in_unless && !inst.abandon_state.contains(trigger);
        for (take, role) in [
            (take_after, TriggerRole::After),
            (take_unless, TriggerRole::Unless),
        ] {
            if take {
                self.emit(
                    Some(fired),
                    EventPayload::TriggerApplied {
                        instance: instance.to_owned(),
                        trigger: trigger.to_owned(),
                        role,
                    },
                )?;
            }
        }
        Ok(take_after || take_unless)
    }

    /// A new instance inherits the latest kwargs of the task's other triggers.
    fn create_instance(
        &mut self,
        task_name: &str,
        task: &TaskConfig,
        trigger: &str,
        fired: u64,
    ) -> Result<String, DomainError> {
        let latest = self.state.latest_fires();
        let mut kwargs = JsonObject::new();
        let mut kwargs_sources = BTreeMap::new();
        for other in task.after.iter().filter(|t| *t != trigger) {
            if let Some(fire) = latest.get(other) {
                kwargs.insert(other.clone(), Value::Object(fire.kwargs.clone()));
                kwargs_sources.insert(other.clone(), fire.seq);
            }
        }
        let mut abandon_state = Vec::new();
        let mut abandon_sources = BTreeMap::new();
        for other in task.unless.iter().filter(|t| *t != trigger) {
            if let Some(fire) = latest.get(other) {
                abandon_state.push(other.clone());
                abandon_sources.insert(other.clone(), fire.seq);
            }
        }
        let name = String::from(InstanceName::numbered(
            task_name,
            self.state.instance_count(task_name),
        ));
        self.emit(
            Some(fired),
            EventPayload::InstanceCreated {
                instance: name.clone(),
                task: task_name.to_owned(),
                kwargs,
                kwargs_sources,
                abandon_state,
                abandon_sources,
                parent: None,
                depth: 0,
            },
        )?;
        Ok(name)
    }

    /// Step 4: abandon what can be abandoned (abandoning wins), schedule what is complete.
    fn settle(
        &mut self,
        task_name: &str,
        task: &TaskConfig,
        fired: u64,
        outcome: &mut FireOutcome,
    ) -> Result<(), DomainError> {
        for name in self.state.unstarted_of(task_name) {
            let inst = self.instance(&name)?;
            if inst.can_abandon(task) {
                self.emit(
                    Some(fired),
                    EventPayload::InstanceAbandoned {
                        instance: name.clone(),
                    },
                )?;
                outcome.abandoned.push(name);
            } else if inst.after_complete(task) {
                self.schedule(&name, task, Some(fired), None)?;
                outcome.scheduled.push(name);
            }
        }
        Ok(())
    }

    fn schedule(
        &mut self,
        instance: &str,
        task: &TaskConfig,
        caused_by: Option<u64>,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<u64, DomainError> {
        let runner = self.runner_for(task);
        self.emit(
            caused_by,
            EventPayload::InstanceScheduled {
                instance: instance.to_owned(),
                runner,
                not_before,
            },
        )
    }

    /// `using` when given; otherwise inline for a registered handler, else the default queue.
    fn runner_for(&self, task: &TaskConfig) -> Runner {
        task.runner(self.resolver.is_registered(&task.run))
    }

    fn instance(&self, name: &str) -> Result<&Instance, DomainError> {
        self.state.instance(name).ok_or_else(|| {
            DomainError::NotFound(format!(
                "session {:?} has no instance {name:?}",
                self.state.uid()
            ))
        })
    }

    fn running(&self, name: &str, what: &str) -> Result<&Instance, DomainError> {
        let inst = self.instance(name)?;
        if inst.status != InstanceStatus::Running {
            return Err(invalid(inst, what));
        }
        Ok(inst)
    }

    fn task_of(&self, inst: &Instance) -> Result<std::sync::Arc<TaskConfig>, DomainError> {
        self.state.task_arc(&inst.task).ok_or_else(|| {
            DomainError::NotFound(format!(
                "session {:?} has no task {:?} (instance {:?})",
                self.state.uid(),
                inst.task,
                inst.name
            ))
        })
    }
}

fn invalid(inst: &Instance, what: &str) -> DomainError {
    let needs = match what {
        "replay" | "skip" => "only failed instances can be",
        "start" => "only scheduled instances can be",
        _ => "only running instances can",
    };
    let verb = match what {
        "replay" => "replayed".to_owned(),
        "skip" => "skipped".to_owned(),
        "start" => "started".to_owned(),
        other => other.to_owned(),
    };
    DomainError::InvalidState(format!(
        "instance {:?} is {}: {needs} {verb}",
        inst.name, inst.status
    ))
}
