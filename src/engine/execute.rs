//! The pipeline every command runs through, one stage a function:
//!
//! 1. [`load`](Engine::load): the session's state from the cache, brought up
//!    to the log (latest snapshot + later events); after a lost version race,
//!    under the session's write lock;
//! 2. [`decide`](Engine::decide): the domain checks the command and emits
//!    events onto the state (`domain::decide`); inline instances it scheduled
//!    to run now are started in the same decision while run permits are free;
//! 3. [`plan`]: the instance rows and queue changes the events
//!    imply, as one [`Plan`];
//! 4. [`commit`](Engine::commit): the plan in one transaction, if the session
//!    is still at the version the decision was taken on;
//! 5. [`publish`](Engine::publish): a snapshot when due, then subscribers,
//!    inline runs and hooks.
//!
//! `Engine::execute` (in `mod.rs`) is the loop over them: a refusal decided on
//! a stale cache, or a commit that lost a race to another process on the same
//! PostgreSQL, goes round again on fresh state.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::MutexGuard;

use super::cache::Slot;
use super::inline::{self, Prestart, Prestarted};
use super::{instance_row, now, Committed, Engine, Executed, FireResult, Result};
use crate::domain::{
    Decider, DomainError, Event, EventPayload, FireOutcome, InstanceName, InstanceStatus, Runner,
    SessionState, SessionUid,
};
use crate::store::{Commit, InstanceRow, LockedSession, QueueOp, StoreError, StoredSnapshot};

/// A command the domain accepted.
pub(super) struct Decision<T> {
    /// When it was decided: the time every event records.
    now: DateTime<Utc>,
    /// The session's version it was decided on.
    expected_version: u64,
    /// What the command answers.
    pub(super) value: T,
    /// The events emitted (already applied to the cached state).
    pub(super) events: Vec<Event>,
    /// Every fire made: the command's own, then cascades.
    fires: Vec<FireOutcome>,
    /// Inline instances started within the decision.
    prestart: Prestart,
}

/// A command the domain refused.
pub(super) struct Refusal {
    /// Why.
    pub(super) error: DomainError,
    /// The session's version it was refused on.
    expected_version: u64,
}

/// A decision ready to commit, and what publishing it needs.
pub(super) struct Plan<T> {
    /// What the command answers once committed.
    value: T,
    /// The session's version the decision was taken on.
    pub(super) expected_version: u64,
    /// The events to append.
    events: Vec<Event>,
    /// Every fire made, for the hooks.
    fires: Vec<FireOutcome>,
    /// Inline runs to spawn once committed.
    prestarted: Vec<Prestarted>,
    /// The projection rows of every instance the events touched.
    instances: Vec<InstanceRow>,
    /// Queue changes: the caller's ops, those the events imply, then the
    /// leases of prestarted runs.
    queue: Vec<QueueOp>,
}

/// One instance's part in a batch of events, for its queue row.
struct Touched<'a> {
    instance: &'a str,
    /// When it became claimable (scheduled, or back from a lease or an operator).
    claimable_at: Option<DateTime<Utc>>,
    /// It left the queue (ended, or an operator moved it).
    left_queue: bool,
    /// The batch scheduled it.
    newly_scheduled: bool,
}

impl Engine {
    /// Load: the slot's state, loaded if absent. With `under_lock`, the
    /// session's write lock is taken and the events committed before it applied.
    pub(super) async fn load(
        &self,
        session: &SessionUid,
        slot: &mut Slot,
        under_lock: bool,
    ) -> Result<Option<Box<dyn LockedSession + '_>>> {
        self.ensure_loaded(session, slot).await?;
        if !under_lock {
            return Ok(None);
        }
        let mut lock = self.inner.store.lock_session(session).await?;
        let known = slot.state.as_ref().expect("loaded above").version();
        let newer = lock.events_after(known).await?;
        apply_newer(slot, &newer)?;
        Ok(Some(lock))
    }

    /// Decide: runs the command on the slot's state. A refusal after the first
    /// emit leaves the state holding uncommitted events, so it is forgotten.
    pub(super) fn decide<T>(
        &self,
        slot: &mut Slot,
        decide: &mut impl FnMut(&mut Decider<'_>) -> std::result::Result<T, DomainError>,
    ) -> std::result::Result<Decision<T>, Refusal> {
        let now = now();
        let state = slot.state.as_mut().expect("loaded above");
        let expected_version = state.version();
        let state = Arc::make_mut(state);
        let resolver = |run: &str| self.inner.registry.contains(run);
        let mut decider = Decider::new(state, now, &resolver);
        let value = decide(&mut decider);
        let prestart = match value {
            Ok(_) => inline::prestart(&mut decider, &self.inner.permits, &self.inner.options, now),
            Err(_) => Prestart::default(),
        };
        let (events, fires) = decider.finish();
        match value {
            Ok(value) => Ok(Decision {
                now,
                expected_version,
                value,
                events,
                fires,
                prestart,
            }),
            Err(error) => {
                if !events.is_empty() {
                    slot.state = None;
                }
                Err(Refusal {
                    error,
                    expected_version,
                })
            }
        }
    }

    /// Whether a refusal may come from a stale cache (another process appended
    /// since): then the state is caught up and the command is decided again.
    /// Under the lock, the state is the log's.
    pub(super) async fn refused_on_stale_state(
        &self,
        session: &SessionUid,
        slot: &mut Slot,
        locked: bool,
        refusal: &Refusal,
    ) -> Result<bool> {
        if locked || self.inner.store.version(session).await? == refusal.expected_version {
            return Ok(false);
        }
        self.catch_up(session, slot).await?;
        Ok(true)
    }

    /// Commit: the plan in one transaction (the locked one, if any). Until it
    /// has landed, the cached state holds events that may never be committed:
    /// if this future is dropped mid-commit (a client went away), or the commit
    /// fails, the state is forgotten.
    pub(super) async fn commit<T>(
        &self,
        session: &SessionUid,
        state: &mut Option<Arc<SessionState>>,
        locked: Option<Box<dyn LockedSession + '_>>,
        plan: &mut Plan<T>,
    ) -> std::result::Result<(), StoreError> {
        let commit = Commit {
            session: session.as_str(),
            expected_version: plan.expected_version,
            events: &plan.events,
            instances: std::mem::take(&mut plan.instances),
            queue: std::mem::take(&mut plan.queue),
        };
        let mut uncommitted = ForgetOnDrop(Some(state));
        let committed = match locked {
            Some(locked) => locked.commit(commit).await,
            None => self.inner.store.commit(commit).await,
        };
        if committed.is_ok() {
            uncommitted.0 = None;
        }
        committed
    }

    /// Publish: after the commit, a snapshot if due; then, with the session
    /// unlocked, the prestarted and newly scheduled inline runs, subscribers
    /// and hooks.
    pub(super) async fn publish<T>(
        &self,
        session: &SessionUid,
        mut slot: MutexGuard<'_, Slot>,
        plan: Plan<T>,
    ) -> Executed<T> {
        self.maybe_snapshot(session, &mut slot).await;
        let to_run = inline::inline_work(slot.state.as_deref().expect("loaded"), &plan.events);
        drop(slot);
        self.spawn_prestarted(session, plan.prestarted);
        // Only subscriptions listen: with none open, the events are not copied.
        if self.inner.committed.receiver_count() > 0 {
            let _ = self.inner.committed.send(Arc::new(Committed {
                session: session.as_str().to_owned(),
                events: plan.events.clone(),
            }));
        }
        for work in to_run {
            self.spawn_inline(session.clone(), work);
        }
        self.run_hooks(session, &plan.events, &plan.fires).await;
        Executed {
            value: plan.value,
            events: plan.events,
        }
    }

    /// Loads the session's state if the slot has none: latest snapshot + later events.
    pub(super) async fn ensure_loaded(&self, session: &SessionUid, slot: &mut Slot) -> Result<()> {
        if slot.state.is_some() {
            return Ok(());
        }
        let store = &self.inner.store;
        let (mut state, snapshot_version) = match store.snapshot(session).await? {
            Some(snapshot) => match SessionState::from_snapshot(&snapshot.state) {
                Ok(state) if state.version() == snapshot.version => (state, snapshot.version),
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        session = session.as_str(),
                        "ignoring an unreadable snapshot; folding the whole log"
                    );
                    (SessionState::new(session.as_str()), 0)
                }
            },
            None => (SessionState::new(session.as_str()), 0),
        };
        for event in store.events(session, state.version(), None).await? {
            state.apply(&event)?;
        }
        slot.snapshot_version = snapshot_version;
        slot.state = Some(Arc::new(state));
        Ok(())
    }

    /// Brings a cached state up to the log (another process may have appended).
    pub(super) async fn catch_up(&self, session: &SessionUid, slot: &mut Slot) -> Result<()> {
        self.ensure_loaded(session, slot).await?;
        let known = slot.state.as_ref().expect("loaded above").version();
        let newer = self.inner.store.events(session, known, None).await?;
        apply_newer(slot, &newer)
    }

    /// Saves a snapshot when enough events accumulated since the last one. Cost is
    /// proportional to the state, so the interval grows with it: amortised O(1).
    async fn maybe_snapshot(&self, session: &SessionUid, slot: &mut Slot) {
        let Some(state) = slot.state.as_deref() else {
            return;
        };
        let due = self
            .inner
            .options
            .snapshot_every
            .max(state.instances().len() as u64);
        if state.version() - slot.snapshot_version < due {
            return;
        }
        let snapshot = StoredSnapshot {
            version: state.version(),
            state: state.to_snapshot(),
        };
        match self.inner.store.save_snapshot(session, &snapshot).await {
            Ok(()) => slot.snapshot_version = snapshot.version,
            Err(err) => {
                tracing::warn!(session = session.as_str(), error = %err, "could not save a snapshot (it is only an optimisation)")
            }
        }
    }

    /// The hooks: every fire, then the replays, skips and status changes.
    async fn run_hooks(&self, session: &SessionUid, events: &[Event], fires: &[FireOutcome]) {
        if self.inner.hooks.is_empty() {
            return;
        }
        for fire in fires {
            let result = FireResult::from_outcome(session.as_str(), fire, events);
            for hook in &self.inner.hooks {
                hook.after_fire(self, session, &result).await;
            }
        }
        for event in events {
            match &event.payload {
                EventPayload::InstanceReplayed {
                    instance, clone, ..
                } => {
                    let (instance, clone) =
                        (InstanceName::stored(instance), InstanceName::stored(clone));
                    for hook in &self.inner.hooks {
                        hook.after_replay(self, session, &instance, &clone).await;
                    }
                }
                EventPayload::InstanceSkipped { instance, .. } => {
                    let instance = InstanceName::stored(instance);
                    for hook in &self.inner.hooks {
                        hook.after_skip(self, session, &instance).await;
                    }
                }
                EventPayload::InstanceStatusChanged {
                    instance, status, ..
                } => {
                    let instance = InstanceName::stored(instance);
                    for hook in &self.inner.hooks {
                        hook.after_status_change(self, session, &instance, *status)
                            .await;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Plan: the rows and queue changes the decision's events imply. `ops` are
/// the caller's own queue changes (leases), which run first.
pub(super) fn plan<T>(
    session: &str,
    state: &SessionState,
    decision: Decision<T>,
    ops: impl Fn(DateTime<Utc>) -> Vec<QueueOp>,
) -> Plan<T> {
    let mut queue = ops(decision.now);
    let instances = projection_rows(session, state, &decision.events, &mut queue);
    queue.extend(decision.prestart.lease_ops);
    Plan {
        value: decision.value,
        expected_version: decision.expected_version,
        events: decision.events,
        fires: decision.fires,
        prestarted: decision.prestart.runs,
        instances,
        queue,
    }
}

/// The instance rows the events touched, and the queue changes they imply:
/// an instance that ends the batch `scheduled` (newly, or back from a lease) is
/// enqueued; one that left scheduled/running is removed. Leases are taken by
/// the caller's own ops, which run first.
fn projection_rows(
    session: &str,
    state: &SessionState,
    events: &[Event],
    queue: &mut Vec<QueueOp>,
) -> Vec<InstanceRow> {
    let mut touched: Vec<Touched<'_>> = Vec::new();
    for event in events {
        let Some(name) = event.payload.instance() else {
            continue;
        };
        let position = match touched.iter().position(|t| t.instance == name) {
            Some(position) => position,
            None => {
                touched.push(Touched {
                    instance: name,
                    claimable_at: None,
                    left_queue: false,
                    newly_scheduled: false,
                });
                touched.len() - 1
            }
        };
        let entry = &mut touched[position];
        match &event.payload {
            EventPayload::InstanceScheduled { not_before, .. } => {
                entry.claimable_at = Some(not_before.unwrap_or(event.at));
                entry.newly_scheduled = true;
            }
            EventPayload::InstanceLeaseExpired { .. } => entry.claimable_at = Some(event.at),
            EventPayload::InstanceStatusChanged { .. } => {
                entry.claimable_at = Some(event.at);
                entry.left_queue = true;
            }
            EventPayload::InstanceFinished { .. }
            | EventPayload::InstanceFailed { .. }
            | EventPayload::InstanceSkipped { .. } => entry.left_queue = true,
            _ => {}
        }
    }
    let mut rows = Vec::with_capacity(touched.len());
    for entry in touched {
        let Some(inst) = state.instance(entry.instance) else {
            continue;
        };
        // An instance started in the commit that scheduled it still needs its
        // row: the lease ops that follow take it.
        let enqueue = match inst.status {
            InstanceStatus::Scheduled => true,
            InstanceStatus::Running => entry.newly_scheduled,
            _ => false,
        };
        match (enqueue, entry.claimable_at) {
            (true, Some(available_at)) => queue.push(QueueOp::Enqueue {
                instance: entry.instance.to_owned(),
                queue: inst
                    .runner
                    .as_ref()
                    .map_or(Runner::DEFAULT_QUEUE, Runner::queue_name)
                    .to_owned(),
                run: state
                    .task(&inst.task)
                    .map(|t| t.run.clone())
                    .unwrap_or_default(),
                available_at,
            }),
            _ if entry.left_queue && inst.status != InstanceStatus::Scheduled => {
                queue.push(QueueOp::Remove {
                    instance: entry.instance.to_owned(),
                })
            }
            _ => {}
        }
        rows.push(instance_row(session, inst));
    }
    rows
}

/// Folds events others committed into the slot's (loaded) state; a log that does
/// not fold leaves the slot empty.
fn apply_newer(slot: &mut Slot, newer: &[Event]) -> Result<()> {
    if newer.is_empty() {
        return Ok(());
    }
    let state = Arc::make_mut(slot.state.as_mut().expect("loaded"));
    for event in newer {
        if let Err(err) = state.apply(event) {
            slot.state = None;
            return Err(err.into());
        }
    }
    Ok(())
}

/// Forgets a cached state when dropped while armed (`Some`): see `Engine::commit`.
struct ForgetOnDrop<'a>(Option<&'a mut Option<Arc<SessionState>>>);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            *state = None;
        }
    }
}
