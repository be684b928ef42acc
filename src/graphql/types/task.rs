//! The GraphQL `TaskConfig` type ([`TaskConfigObject`]): a configured task, read
//! from one session view.

use std::sync::Arc;

use async_graphql::{Context, Object};

use super::TaskInstance;
use crate::domain::{self, SessionState};
use crate::graphql::engine;
use crate::graphql::scalars::JsonRef;

/// A configured task, read from one session view (the domain's `TaskConfig`
/// with its name and session).
pub struct TaskConfigObject {
    state: Arc<SessionState>,
    name: String,
    config: Arc<domain::TaskConfig>,
}

impl TaskConfigObject {
    pub(super) fn in_state(state: &Arc<SessionState>, name: &str) -> Option<Self> {
        Some(Self {
            config: state.task_arc(name)?,
            state: state.clone(),
            name: name.to_owned(),
        })
    }
}

/// A named rule of a session: which triggers must fire, and what then runs.
#[Object(name = "TaskConfig")]
impl TaskConfigObject {
    /// The task name (conventionally `t_...`).
    async fn name(&self) -> &str {
        &self.name
    }

    /// Triggers that must all fire before an instance can run; sorted, and
    /// includes `andEvery`.
    async fn after(&self) -> &[String] {
        &self.config.after
    }

    /// Every firing of this trigger makes (or completes) an instance.
    async fn and_every(&self) -> Option<&str> {
        self.config.and_every.as_deref()
    }

    /// Once all of these fired for an unstarted instance, it is abandoned; sorted.
    async fn unless(&self) -> &[String] {
        &self.config.unless
    }

    /// The handler or job to run.
    async fn run(&self) -> &str {
        &self.config.run
    }

    /// The runner: `inline`, `worker` or `worker:<queue>`; null for the default.
    async fn using(&self) -> Option<&str> {
        self.config.using.as_deref()
    }

    /// Where this server sends its instances: `inline`, or `worker:<queue>`
    /// (a `run` with no handler here and no `using` goes to `worker:default`).
    async fn runner(&self, ctx: &Context<'_>) -> String {
        let has_handler = engine(ctx).registry().contains(&self.config.run);
        self.config.runner(has_handler).to_string()
    }

    /// Static kwargs merged under the trigger kwargs when an instance runs.
    async fn with_params(&self) -> JsonRef<'_> {
        (&self.config.with_params).into()
    }

    /// How many times an instance may retry itself.
    async fn max_retries(&self) -> i64 {
        i64::from(self.config.max_retries)
    }

    /// Every other directive, verbatim.
    async fn extras(&self) -> JsonRef<'_> {
        (&self.config.extras).into()
    }

    /// This task's instances in creation order.
    async fn instances(&self) -> Vec<TaskInstance> {
        self.state
            .instances()
            .iter()
            .enumerate()
            .filter(|(_, i)| i.task == self.name)
            .map(|(position, _)| TaskInstance::in_state(self.state.clone(), position))
            .collect()
    }
}
