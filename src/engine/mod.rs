//! The engine: load -> decide -> append -> dispatch.
//!
//! Every command runs under its session's in-process lock: the cached state is
//! brought up to date (snapshot + later events), the domain decides and emits
//! events, and the events commit in one transaction together with the projection
//! rows and queue rows they imply, if the session is still at the version the
//! decision was taken on. A writer that lost the race (another process on the
//! same PostgreSQL) gets a conflict and re-decides on fresh state. After the
//! commit, inline instances are dispatched, subscribers notified and hooks run.

mod builder;
mod cache;
mod commands;
mod dispatch;
mod error;
mod handler;
mod hooks;
mod observe;
mod queries;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::domain::{
    Decider, DomainError, Event, EventPayload, FireOutcome, InstanceStatus, Runner, SessionState,
};
use crate::store::{Commit, InstanceRow, QueueOp, Store, StoreError, StoredSnapshot};

pub use builder::EngineBuilder;
pub use commands::{Configured, FireResult};
pub use error::{Error, Result};
pub use handler::{Handler, HandlerFuture, Job, Outcome, Registry};
pub use hooks::{FinalizeSession, Hook};
pub use queries::RebuildReport;
pub use workers::{Claim, DEFAULT_LEASE_SECONDS, MAX_CLAIM, MAX_LEASE_SECONDS};

use cache::{Cache, Slot};

/// How many times a command re-decides after losing a version race.
const MAX_ATTEMPTS: usize = 64;

/// Tunables of an engine. The defaults suit a server.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Inline jobs running at once in this process.
    pub inline_concurrency: usize,
    /// Lease an inline run holds (renewed while it runs); after a crash the
    /// instance is re-run once it expires.
    pub inline_lease: Duration,
    /// How often expired leases are returned to the queue and orphaned inline
    /// work is picked up. `None` disables the sweeper.
    pub sweep_interval: Option<Duration>,
    /// Sessions whose state is kept in memory.
    pub cache_capacity: usize,
    /// A snapshot is saved once this many events (or as many as the session has
    /// instances, if more) have been appended since the last one.
    pub snapshot_every: u64,
    /// Run inline instances left scheduled by a previous process at open.
    pub recover_on_open: bool,
    /// Names this process in leases and logs.
    pub process_id: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            inline_concurrency: 64,
            inline_lease: Duration::from_secs(30),
            sweep_interval: Some(Duration::from_secs(1)),
            cache_capacity: 10_000,
            snapshot_every: 1_000,
            recover_on_open: true,
            process_id: format!(
                "triggers:{}:{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }
}

/// Events one commit appended to a session (what subscribers receive).
#[derive(Debug, Clone)]
pub struct Committed {
    /// The session.
    pub session: String,
    /// The new events, ascending.
    pub events: Vec<Event>,
}

/// The triggers engine. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// What `/metrics` shows; the store underneath reports to it too.
    metrics: Arc<crate::metrics::Metrics>,
    cache: Cache,
    registry: Registry,
    hooks: Vec<Arc<dyn Hook>>,
    options: EngineOptions,
    /// Serves subscriptions: every commit of this process.
    committed: broadcast::Sender<Arc<Committed>>,
    /// Inline runs spawned and not yet done (for `wait_idle`).
    inflight: watch::Sender<usize>,
    permits: Arc<Semaphore>,
    /// Set by `shutdown`: the sweeper stops.
    stopping: AtomicBool,
}

/// What `execute` hands back after a commit.
pub(crate) struct Executed<T> {
    value: T,
    events: Vec<Event>,
}

impl Engine {
    /// A builder for an engine on `url` (`sqlite://...`, `sqlite::memory:`, `postgres://...`).
    pub fn builder(url: impl Into<String>) -> EngineBuilder {
        EngineBuilder::new(url.into())
    }

    /// Opens an engine on `url` with the built-in handlers and default options.
    pub async fn open(url: &str) -> Result<Engine> {
        Self::builder(url).open().await
    }

    /// An engine over an already opened store.
    pub async fn with_store(
        store: Arc<dyn Store>,
        registry: Registry,
        hooks: Vec<Arc<dyn Hook>>,
        options: EngineOptions,
    ) -> Engine {
        let (committed, _) = broadcast::channel(4096);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let engine = Engine {
            inner: Arc::new(Inner {
                store: observe::Observed::wrap(store, metrics.clone()),
                metrics,
                cache: Cache::new(options.cache_capacity),
                permits: Arc::new(Semaphore::new(options.inline_concurrency.max(1))),
                registry,
                hooks,
                committed,
                inflight: watch::Sender::new(0),
                stopping: AtomicBool::new(false),
                options,
            }),
        };
        if engine.inner.options.recover_on_open {
            engine.recover().await;
        }
        if let Some(interval) = engine.inner.options.sweep_interval {
            dispatch::start_sweeper(&engine, interval);
        }
        engine
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This engine's metrics (the queue gauges as of the last [`Engine::render_metrics`]).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Every metric in the Prometheus text format, the queue gauges read from
    /// the store now (one aggregate query).
    pub async fn render_metrics(&self) -> Result<String> {
        let stats = self.inner.store.admin().queue_stats(now()).await?;
        self.inner.metrics.set_queues(&stats);
        Ok(self.inner.metrics.render())
    }

    /// The handler registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The options in force.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Every commit this process makes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.inner.committed.subscribe()
    }

    /// Forgets every cached state; the next read reloads from snapshots and the log.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Stops the sweeper and waits (up to `deadline`) for inline runs in flight.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        if tokio::time::timeout(deadline, self.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                inflight = *self.inner.inflight.borrow(),
                "shutdown deadline passed with inline runs in flight; their leases will expire and they will run again"
            );
        }
    }

    /// Runs one command on a session: decide on the current state, commit, retry on
    /// a version conflict, then dispatch, notify and run hooks.
    pub(crate) async fn execute<T>(
        &self,
        session: &str,
        mut decide: impl FnMut(&mut Decider<'_>) -> Result<T, DomainError>,
        ops: impl Fn(DateTime<Utc>) -> Vec<QueueOp>,
    ) -> Result<Executed<T>> {
        let slot = self.inner.cache.slot(session);
        let mut slot = slot.lock().await;
        // After a version conflict, re-decide holding the session's write lock:
        // a writer that keeps losing races to another process makes progress.
        let mut under_lock = false;
        for _ in 0..MAX_ATTEMPTS {
            self.ensure_loaded(session, &mut slot).await?;
            let mut locked = None;
            if under_lock {
                let mut lock = self.inner.store.lock_session(session).await?;
                let known = slot.state.as_ref().expect("loaded above").version();
                let newer = lock.events_after(known).await?;
                apply_newer(&mut slot, &newer)?;
                locked = Some(lock);
            }
            let now = now();
            let state = slot.state.as_mut().expect("loaded above");
            let expected_version = state.version();
            let state = Arc::make_mut(state);
            let resolver = |run: &str| self.inner.registry.contains(run);
            let mut decider = Decider::new(state, now, &resolver);
            let decided = decide(&mut decider);
            let (prestarted, lease_ops) = match decided {
                Ok(_) => dispatch::prestart(
                    &mut decider,
                    &self.inner.permits,
                    &self.inner.options.process_id,
                    self.inner.options.inline_lease,
                    now,
                ),
                Err(_) => Default::default(),
            };
            let (events, fires) = decider.finish();
            let value = match decided {
                Ok(value) => value,
                Err(err) => {
                    if !events.is_empty() {
                        // A rule refused half-way: the state holds uncommitted events.
                        slot.state = None;
                    }
                    // The refusal may come from a stale cache (another process
                    // appended since): decide again on the current log if so.
                    // (Under the lock, the state is the log's.)
                    if locked.is_none()
                        && self.inner.store.version(session).await? != expected_version
                    {
                        self.catch_up(session, &mut slot).await?;
                        continue;
                    }
                    return Err(err.into());
                }
            };
            if events.is_empty() {
                return Ok(Executed { value, events });
            }
            let state = slot.state.as_deref().expect("loaded above");
            let mut queue = ops(now);
            let instances = self.projection_rows(session, state, &events, &mut queue);
            queue.extend(lease_ops);
            let commit = Commit {
                session,
                expected_version,
                events: &events,
                instances,
                queue,
            };
            let committed = {
                // Until the commit has landed, the cached state holds events that
                // may never be committed. If this future is dropped mid-commit (a
                // client went away), the guard forgets the state.
                let mut uncommitted = ForgetOnDrop(Some(&mut slot.state));
                let committed = match locked {
                    Some(locked) => locked.commit(commit).await,
                    None => self.inner.store.commit(commit).await,
                };
                if committed.is_ok() {
                    uncommitted.0 = None;
                }
                committed
            };
            match committed {
                Ok(()) => {
                    self.maybe_snapshot(session, &mut slot).await;
                    let to_run =
                        dispatch::inline_work(slot.state.as_deref().expect("loaded"), &events);
                    drop(slot);
                    self.spawn_prestarted(session, prestarted);
                    self.after_commit(session, &events, &fires, to_run).await;
                    return Ok(Executed { value, events });
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(
                        session,
                        expected_version,
                        "version conflict; re-deciding on fresh state under the session's lock"
                    );
                    slot.state = None;
                    under_lock = true;
                }
                Err(err) => {
                    slot.state = None;
                    return Err(err.into());
                }
            }
        }
        Err(Error::Contended(session.to_owned()))
    }

    /// Loads the session's state if the slot has none: latest snapshot + later events.
    async fn ensure_loaded(&self, session: &str, slot: &mut Slot) -> Result<()> {
        if slot.state.is_some() {
            return Ok(());
        }
        let store = &self.inner.store;
        let (mut state, snapshot_version) = match store.snapshot(session).await? {
            Some(snapshot) => match SessionState::from_snapshot(&snapshot.state) {
                Ok(state) if state.version() == snapshot.version => (state, snapshot.version),
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        session,
                        "ignoring an unreadable snapshot; folding the whole log"
                    );
                    (SessionState::new(session), 0)
                }
            },
            None => (SessionState::new(session), 0),
        };
        for event in store.events(session, state.version(), None).await? {
            state.apply(&event)?;
        }
        slot.snapshot_version = snapshot_version;
        slot.state = Some(Arc::new(state));
        Ok(())
    }

    /// Brings a cached state up to the log (another process may have appended).
    async fn catch_up(&self, session: &str, slot: &mut Slot) -> Result<()> {
        self.ensure_loaded(session, slot).await?;
        let known = slot.state.as_ref().expect("loaded above").version();
        let newer = self.inner.store.events(session, known, None).await?;
        apply_newer(slot, &newer)
    }

    /// The instance rows the events touched, and the queue changes they imply:
    /// an instance that ends the batch `scheduled` (newly, or back from a lease) is
    /// enqueued; one that left scheduled/running is removed. Leases are taken by
    /// the caller's own ops, which run first.
    fn projection_rows(
        &self,
        session: &str,
        state: &SessionState,
        events: &[Event],
        queue: &mut Vec<QueueOp>,
    ) -> Vec<InstanceRow> {
        // (instance, made claimable at, left the queue, newly scheduled)
        let mut touched: Vec<(&str, Option<DateTime<Utc>>, bool, bool)> = Vec::new();
        for event in events {
            let Some(name) = event.payload.instance() else {
                continue;
            };
            let position = match touched.iter().position(|(n, ..)| *n == name) {
                Some(position) => position,
                None => {
                    touched.push((name, None, false, false));
                    touched.len() - 1
                }
            };
            let entry = &mut touched[position];
            match &event.payload {
                EventPayload::InstanceScheduled { not_before, .. } => {
                    entry.1 = Some(not_before.unwrap_or(event.at));
                    entry.3 = true;
                }
                EventPayload::InstanceLeaseExpired { .. } => entry.1 = Some(event.at),
                EventPayload::InstanceStatusChanged { .. } => {
                    entry.1 = Some(event.at);
                    entry.2 = true;
                }
                EventPayload::InstanceFinished { .. }
                | EventPayload::InstanceFailed { .. }
                | EventPayload::InstanceSkipped { .. } => entry.2 = true,
                _ => {}
            }
        }
        let mut rows = Vec::with_capacity(touched.len());
        for (name, scheduled_at, left, newly) in touched {
            let Some(inst) = state.instance(name) else {
                continue;
            };
            // An instance started in the commit that scheduled it still needs its
            // row: the lease ops that follow take it.
            let enqueue = match inst.status {
                InstanceStatus::Scheduled => true,
                InstanceStatus::Running => newly,
                _ => false,
            };
            match (enqueue, scheduled_at) {
                (true, Some(available_at)) => queue.push(QueueOp::Enqueue {
                    instance: name.to_owned(),
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
                _ if left && inst.status != InstanceStatus::Scheduled => {
                    queue.push(QueueOp::Remove {
                        instance: name.to_owned(),
                    })
                }
                _ => {}
            }
            rows.push(instance_row(session, inst));
        }
        rows
    }

    /// Saves a snapshot when enough events accumulated since the last one. Cost is
    /// proportional to the state, so the interval grows with it: amortised O(1).
    async fn maybe_snapshot(&self, session: &str, slot: &mut Slot) {
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
                tracing::warn!(session, error = %err, "could not save a snapshot (it is only an optimisation)")
            }
        }
    }

    async fn after_commit(
        &self,
        session: &str,
        events: &[Event],
        fires: &[FireOutcome],
        to_run: Vec<dispatch::InlineWork>,
    ) {
        let _ = self.inner.committed.send(Arc::new(Committed {
            session: session.to_owned(),
            events: events.to_vec(),
        }));
        for work in to_run {
            self.spawn_inline(session.to_owned(), work);
        }
        if self.inner.hooks.is_empty() {
            return;
        }
        for fire in fires {
            let result = FireResult::from_outcome(session, fire, events);
            for hook in &self.inner.hooks {
                hook.after_fire(self, session, &result).await;
            }
        }
        for event in events {
            match &event.payload {
                EventPayload::InstanceReplayed {
                    instance, clone, ..
                } => {
                    for hook in &self.inner.hooks {
                        hook.after_replay(self, session, instance, clone).await;
                    }
                }
                EventPayload::InstanceSkipped { instance, .. } => {
                    for hook in &self.inner.hooks {
                        hook.after_skip(self, session, instance).await;
                    }
                }
                EventPayload::InstanceStatusChanged {
                    instance, status, ..
                } => {
                    for hook in &self.inner.hooks {
                        hook.after_status_change(self, session, instance, *status)
                            .await;
                    }
                }
                _ => {}
            }
        }
    }
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

/// Forgets a cached state when dropped while armed (`Some`): see `execute`.
struct ForgetOnDrop<'a>(Option<&'a mut Option<Arc<SessionState>>>);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            *state = None;
        }
    }
}

/// An instance as its projection row.
pub(crate) fn instance_row(session: &str, inst: &crate::domain::Instance) -> InstanceRow {
    let updated_at = inst
        .metadata
        .get("timestamps")
        .and_then(|t| t.get("lastModified"))
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(now, |t| t.with_timezone(&Utc));
    InstanceRow {
        session: session.to_owned(),
        name: inst.name.clone(),
        task: inst.task.clone(),
        status: inst.status,
        created_seq: inst.created_seq,
        updated_at,
        body: serde_json::to_string(inst).expect("instances always serialise"),
    }
}

/// The current time at the microsecond precision both databases keep, so that a
/// state folded from stored events equals the live one.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(chrono::Duration::microseconds(1))
        .unwrap_or(now)
}
