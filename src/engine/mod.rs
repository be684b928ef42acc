//! The engine: every command runs as load -> decide -> plan -> commit ->
//! publish (`execute.rs`), under its session's in-process lock.
//!
//! The cached state is brought up to date (snapshot + later events), the domain
//! decides and emits events, and the events commit in one transaction together
//! with the projection rows and queue rows they imply, if the session is still
//! at the version the decision was taken on. A writer that lost the race
//! (another process on the same PostgreSQL) gets a conflict and re-decides on
//! fresh state. After the commit, inline instances are dispatched, subscribers
//! notified and hooks run.
//!
//! - `commands.rs`: configure, fire and the manual changes (the write API);
//! - `queries.rs`: reads, history and rebuild;
//! - `execute.rs`: the pipeline every write goes through;
//! - `inline.rs`: the inline runner (handlers in this process, under a lease);
//! - `lease.rs`: the `Lease` runners hold on queue rows;
//! - `report.rs`: how a run ended, recorded under its lease;
//! - `recovery.rs`: work left by a crashed process, and the lease sweeper;
//! - `workers.rs`: the external worker protocol (claim, heartbeat, report);
//! - `handler.rs`, `hooks.rs`: what applications plug in;
//! - `cache.rs`, `observe.rs`, `builder.rs`, `error.rs`: the plumbing.

mod builder;
mod cache;
mod commands;
mod error;
mod execute;
mod handler;
mod hooks;
mod inline;
mod lease;
mod observe;
mod queries;
mod recovery;
mod report;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::domain::{Decider, DomainError, Event, SessionUid};
use crate::store::{InstanceRow, QueueOp, Store, StoreError};

pub use builder::EngineBuilder;
pub use commands::{Configured, FireResult};
pub use error::{Error, Result};
pub use handler::{Handler, HandlerFuture, Job, Outcome, Registry};
pub use hooks::{FinalizeSession, Hook};
pub use queries::RebuildReport;
pub use workers::{Claim, WorkerFailure, DEFAULT_LEASE_SECONDS, MAX_CLAIM, MAX_LEASE_SECONDS};

use cache::Cache;

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
            recovery::start_sweeper(&engine, interval);
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

    /// Runs one command on a session through the pipeline of `execute.rs`:
    /// load, decide, plan, commit, publish. A refusal decided on a stale cache
    /// is decided again on the log; a commit that lost a version race is
    /// decided again under the session's write lock, so that a writer that keeps
    /// losing races to another process makes progress.
    pub(crate) async fn execute<T>(
        &self,
        session: &SessionUid,
        mut decide: impl FnMut(&mut Decider<'_>) -> Result<T, DomainError>,
        ops: impl Fn(DateTime<Utc>) -> Vec<QueueOp>,
    ) -> Result<Executed<T>> {
        let slot = self.inner.cache.slot(session.as_str());
        let mut slot = slot.lock().await;
        let mut under_lock = false;
        for _ in 0..MAX_ATTEMPTS {
            let locked = self.load(session, &mut slot, under_lock).await?;
            let decision = match self.decide(&mut slot, &mut decide) {
                Ok(decision) => decision,
                Err(refusal) => {
                    let locked = locked.is_some();
                    if self
                        .refused_on_stale_state(session, &mut slot, locked, &refusal)
                        .await?
                    {
                        continue;
                    }
                    return Err(refusal.error.into());
                }
            };
            if decision.events.is_empty() {
                return Ok(Executed {
                    value: decision.value,
                    events: decision.events,
                });
            }
            let state = slot.state.as_deref().expect("loaded above");
            let mut plan = execute::plan(session.as_str(), state, decision, &ops);
            match self
                .commit(session, &mut slot.state, locked, &mut plan)
                .await
            {
                Ok(()) => return Ok(self.publish(session, slot, plan).await),
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(
                        session = session.as_str(),
                        expected_version = plan.expected_version,
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
        Err(Error::Contended(session.as_str().to_owned()))
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
