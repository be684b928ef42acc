//! Handlers: Rust functions that run jobs in the engine's process (the `inline`
//! runner), the registry that names them, and the built-in `triggers.testing.*`
//! handlers (docs/concepts.md, "Runners").

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::domain::decide::{Failure, StartedJob};
use crate::domain::JsonObject;

/// What a handler is given: the started job (instance, task, `run`, kwargs,
/// depth, `maxRetries`), read through as `job.kwargs` and so on, and its session.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The session.
    pub session: String,
    /// What the domain started.
    pub started: StartedJob,
}

impl std::ops::Deref for Job {
    type Target = StartedJob;

    fn deref(&self) -> &StartedJob {
        &self.started
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success: the result must be a JSON object (anything else fails the instance).
    Finished {
        /// The result; it cascades as the task name's kwargs.
        result: Value,
        /// The highest log level of the run (INFO when `None`).
        log_level: Option<i64>,
    },
    /// Failure.
    Failed(Failure),
    /// The job skipped itself, with metadata of its choice.
    Skipped {
        /// Merged into the instance's metadata.
        metadata: JsonObject,
    },
    /// The job asks to run again (within `maxRetries`).
    Retry {
        /// Why, recorded as `exceptionInfo` of the failed attempt.
        reason: String,
        /// Replaces the instance's kwargs in the clone.
        replacement_kwargs: Option<JsonObject>,
        /// Seconds before the clone may run.
        cooldown_seconds: Option<f64>,
    },
}

impl Outcome {
    /// A success with `result` (a JSON object).
    pub fn finished(result: Value) -> Self {
        Outcome::Finished {
            result,
            log_level: None,
        }
    }

    /// A failure of type `exception_type`.
    pub fn failed(exception_type: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome::Failed(Failure {
            exception_type: exception_type.into(),
            exception_info: message.into(),
            exception_context: JsonObject::new(),
            log_level: None,
        })
    }
}

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// Runs jobs. Implemented for every `Fn(Job) -> impl Future<Output = Outcome>`.
pub trait Handler: Send + Sync + 'static {
    /// Runs one job.
    fn call(&self, job: Job) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, job: Job) -> HandlerFuture {
        Box::pin(self(job))
    }
}

/// Handlers by `run` name. The built-in testing handlers are always registered.
#[derive(Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut registry = Registry {
            handlers: HashMap::new(),
        };
        registry.register("triggers.testing.PassThru", |job: Job| async move {
            Outcome::finished(json!({ "kwargs": job.kwargs }))
        });
        registry.register("triggers.testing.DevNull", |_job: Job| async move {
            Outcome::finished(json!({}))
        });
        registry.register("triggers.testing.Failing", |job: Job| async move {
            let mut context = JsonObject::new();
            context.insert("kwargs".into(), Value::Object(job.started.kwargs));
            Outcome::Failed(Failure {
                exception_type: "triggers.testing.Failure".into(),
                exception_info: format!(
                    "triggers.testing.Failing always fails (instance {})",
                    job.started.instance
                ),
                exception_context: context,
                log_level: None,
            })
        });
        registry.register("triggers.testing.SelfSkipping", |job: Job| async move {
            let mut metadata = JsonObject::new();
            metadata.insert("kwargs".into(), Value::Object(job.started.kwargs));
            Outcome::Skipped { metadata }
        });
        registry.register("triggers.testing.SelfRetrying", |job: Job| async move {
            let max = job
                .kwargs
                .get("retries")
                .and_then(|r| r.get("max"))
                .and_then(Value::as_u64)
                .unwrap_or(u64::from(job.max_retries));
            if u64::from(job.depth) < max {
                Outcome::Retry {
                    reason: format!("retrying at depth {} of {max}", job.depth),
                    replacement_kwargs: None,
                    cooldown_seconds: None,
                }
            } else {
                Outcome::finished(json!({ "count": job.depth }))
            }
        });
        registry
    }
}

impl Registry {
    /// Registers (or replaces) the handler for `run`.
    pub fn register(&mut self, run: impl Into<String>, handler: impl Handler) {
        self.handlers.insert(run.into(), Arc::new(handler));
    }

    /// The handler for `run`.
    pub fn get(&self, run: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(run).cloned()
    }

    /// Whether a handler is registered for `run`.
    pub fn contains(&self, run: &str) -> bool {
        self.handlers.contains_key(run)
    }
}
