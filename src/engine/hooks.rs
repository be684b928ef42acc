//! Hooks: user code called after the engine committed a fire, a replay or a skip,
//! and the "finalise a session" recipe built on them.

use async_trait::async_trait;

use super::{Engine, FireResult};
use crate::domain::{InstanceName, InstanceStatus, JsonObject, SessionUid, TriggerName};

/// Called after commits, outside the session lock, so a hook may call the engine.
/// Errors are the hook's own business: log them.
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// After every committed fire (by a caller or a cascade).
    async fn after_fire(&self, _engine: &Engine, _session: &SessionUid, _fire: &FireResult) {}

    /// After a failed instance was replayed as `clone`.
    async fn after_replay(
        &self,
        _engine: &Engine,
        _session: &SessionUid,
        _failed: &InstanceName,
        _clone: &InstanceName,
    ) {
    }

    /// After an instance was skipped (by an operator or by itself).
    async fn after_skip(&self, _engine: &Engine, _session: &SessionUid, _instance: &InstanceName) {}

    /// After an operator set an instance's status.
    async fn after_status_change(
        &self,
        _engine: &Engine,
        _session: &SessionUid,
        _instance: &InstanceName,
        _status: InstanceStatus,
    ) {
    }
}

/// The recipe: fire `trigger` (default `sessionFinalized`) once every other task of
/// the session is resolved. Tasks waiting on the trigger itself do not count.
pub struct FinalizeSession {
    trigger: TriggerName,
}

impl Default for FinalizeSession {
    fn default() -> Self {
        Self::new(TriggerName::stored("sessionFinalized"))
    }
}

impl FinalizeSession {
    /// Fires `trigger` when the session settles.
    pub fn new(trigger: TriggerName) -> Self {
        Self { trigger }
    }
}

impl FinalizeSession {
    /// Fires the trigger if the session just settled.
    async fn settle(&self, engine: &Engine, session: &SessionUid) {
        let state = match engine.session(session).await {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(session = session.as_str(), error = %err, "finalize hook could not load the session");
                return;
            }
        };
        if state.latest_fires().contains_key(self.trigger.as_str())
            || state.tasks().next().is_none()
        {
            return;
        }
        let waiting_on_us = |task: &str| {
            state
                .task(task)
                .is_some_and(|t| t.is_after(self.trigger.as_str()))
        };
        if !state.unresolved_tasks().into_iter().all(waiting_on_us) {
            return;
        }
        drop(state);
        // The key makes concurrent hooks (several instances finishing at once) fire once.
        let key = format!("triggers.finalize:{}", self.trigger);
        if let Err(err) = engine
            .fire(session, &self.trigger, JsonObject::new(), Some(&key))
            .await
        {
            tracing::warn!(session = session.as_str(), error = %err, "finalize hook could not fire");
        }
    }
}

#[async_trait]
impl Hook for FinalizeSession {
    async fn after_fire(&self, engine: &Engine, session: &SessionUid, fire: &FireResult) {
        if fire.trigger != self.trigger.as_str() {
            self.settle(engine, session).await;
        }
    }

    async fn after_skip(&self, engine: &Engine, session: &SessionUid, _instance: &InstanceName) {
        self.settle(engine, session).await;
    }

    async fn after_status_change(
        &self,
        engine: &Engine,
        session: &SessionUid,
        _instance: &InstanceName,
        _status: InstanceStatus,
    ) {
        self.settle(engine, session).await;
    }
}
