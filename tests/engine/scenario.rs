//! `Scenario`: a given/when/then builder over one engine and the session
//! [`S`], for the tests whose bodies are "configure these tasks, fire these
//! triggers, act as an operator, check the statuses":
//!
//! ```ignore
//! let s = Scenario::on(db.engine().await)
//!     .given(json!({"t": {"after": ["a"], "run": FAILING}}))
//!     .when_fired(&["a"])
//!     .await;
//! s.then_statuses(&[("t#0", InstanceStatus::Failed)]).await;
//! let clone = s.when_replayed("t#0", None).await;
//! ```
//!
//! The given and when-fired steps run when the scenario is awaited; every
//! step that acts waits until the engine is idle, so the "then" steps
//! read settled state. [`Scenario::engine`] gives the engine back for what
//! the steps do not cover.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};
use triggers::domain::{Instance, InstanceStatus, SessionState};
use triggers::Engine;

use crate::support::*;
use triggers::testkit::names::{self, uid};

/// One engine and the session [`S`], driven step by step. The given and
/// when-fired steps queue up and run in order when the scenario is awaited.
pub(crate) struct Scenario {
    engine: Engine,
    steps: Vec<Step>,
}

/// A queued step of a [`Scenario`].
enum Step {
    /// Configure these tasks.
    Given(Value),
    /// Fire this trigger with these kwargs, and settle.
    Fire(String, Value),
}

impl Scenario {
    /// A scenario on `engine`, about the session [`S`].
    pub(crate) fn on(engine: Engine) -> Self {
        Self {
            engine,
            steps: Vec::new(),
        }
    }

    /// The engine, for the steps the scenario does not cover.
    pub(crate) fn engine(&self) -> &Engine {
        assert!(
            self.steps.is_empty(),
            "await the scenario before looking at it"
        );
        &self.engine
    }

    /// Given `tasks` configured on the session (which must succeed).
    pub(crate) fn given(mut self, tasks: Value) -> Self {
        self.steps.push(Step::Given(tasks));
        self
    }

    /// When each of `triggers` is fired in turn with no kwargs, each waited
    /// on until everything it set off is done.
    pub(crate) fn when_fired(mut self, triggers: &[&str]) -> Self {
        for trigger in triggers {
            self.steps
                .push(Step::Fire((*trigger).to_owned(), json!({})));
        }
        self
    }

    /// When `trigger` is fired with `kwargs`, waited on until everything it
    /// set off is done.
    pub(crate) fn when_fired_with(mut self, trigger: &str, kwargs: Value) -> Self {
        self.steps.push(Step::Fire(trigger.to_owned(), kwargs));
        self
    }

    /// Runs the queued steps in order.
    async fn run(mut self) -> Self {
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Given(tasks) => {
                    configure(&self.engine, S, tasks).await;
                }
                Step::Fire(trigger, kwargs) => {
                    fire_and_settle(&self.engine, S, &trigger, kwargs).await;
                }
            }
        }
        self
    }

    /// When an operator replays the failed `instance` (which must succeed);
    /// returns the clone once the engine is idle.
    pub(crate) async fn when_replayed(&self, instance: &str, kwargs: Option<Value>) -> Instance {
        let clone = self
            .engine()
            .replay_failed_instance(&uid(S), &names::instance(instance), kwargs)
            .await
            .unwrap_or_else(|e| panic!("replay {instance}: {e}"));
        settle(self.engine()).await;
        clone
    }

    /// When an operator skips the failed `instance` (which must succeed);
    /// returns the skipped instance once the engine is idle.
    pub(crate) async fn when_skipped(
        &self,
        instance: &str,
        cascade: bool,
        result: Option<Value>,
    ) -> Instance {
        let skipped = self
            .engine()
            .skip_failed_instance(&uid(S), &names::instance(instance), cascade, result)
            .await
            .unwrap_or_else(|e| panic!("skip {instance}: {e}"));
        settle(self.engine()).await;
        skipped
    }

    /// When an operator sets the status of `instance` without metadata or
    /// cascade (which must succeed); returns it once the engine is idle.
    pub(crate) async fn when_marked(&self, instance: &str, status: InstanceStatus) -> Instance {
        let marked = self
            .engine()
            .update_instance_status(
                &uid(S),
                &names::instance(instance),
                status,
                None,
                false,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("mark {instance} {status:?}: {e}"));
        settle(self.engine()).await;
        marked
    }

    /// The current state of the session.
    pub(crate) async fn state(&self) -> Arc<SessionState> {
        state(self.engine(), S).await
    }

    /// Then the session holds exactly these instances, in creation order,
    /// with these statuses.
    pub(crate) async fn then_summary(&self, expected: &[(&str, InstanceStatus)]) {
        let expected: Vec<(String, InstanceStatus)> = expected
            .iter()
            .map(|(name, status)| ((*name).to_owned(), *status))
            .collect();
        assert_eq!(summary(&*self.state().await), expected);
    }

    /// Then each named instance has its status.
    pub(crate) async fn then_statuses(&self, expected: &[(&str, InstanceStatus)]) {
        let st = self.state().await;
        for (name, want) in expected {
            assert_eq!(status(&st, name), *want, "status of {name}");
        }
    }
}

impl IntoFuture for Scenario {
    type Output = Scenario;
    type IntoFuture = Pin<Box<dyn Future<Output = Scenario> + Send>>;

    /// Runs the queued given and when-fired steps, then gives the scenario
    /// back for the operator steps and the checks.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
