//! A [`Store`] that forwards to another and counts each call and the time spent
//! in it: how many round trips and commits one fire costs, and what share of its
//! wall time the database takes. Used by `fire.rs` to print a profile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use triggers::domain::{Event, InstanceName, InstanceStatus, SessionUid};
use triggers::store::{
    Commit, EventQuery, InstanceQuery, InstanceRow, LockedSession, QueueEntry, Rebuilt,
    RecentSessions, SessionSummary, Store, StoreResult, StoredSnapshot,
};

/// The calls counted, in the order printed.
const CALLS: [&str; 8] = [
    "commit",
    "version",
    "events",
    "events_by_seq",
    "snapshot",
    "save_snapshot",
    "claimable",
    "other",
];

/// Counts and times every call to the store it wraps.
pub(crate) struct Counting {
    inner: Arc<dyn Store>,
    calls: [AtomicU64; CALLS.len()],
    nanos: [AtomicU64; CALLS.len()],
}

impl Counting {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Counting {
        Counting {
            inner,
            calls: Default::default(),
            nanos: Default::default(),
        }
    }

    /// Clears the counters.
    pub(crate) fn reset(&self) {
        for i in 0..CALLS.len() {
            self.calls[i].store(0, Ordering::Relaxed);
            self.nanos[i].store(0, Ordering::Relaxed);
        }
    }

    /// `name: calls per unit (ms per unit)` for every call made, and the total
    /// milliseconds spent in the store.
    pub(crate) fn report(&self, units: u64) -> (String, f64) {
        let units = units.max(1) as f64;
        let mut parts = Vec::new();
        let mut total = 0.0;
        for (i, name) in CALLS.iter().enumerate() {
            let calls = self.calls[i].load(Ordering::Relaxed);
            if calls == 0 {
                continue;
            }
            let ms = self.nanos[i].load(Ordering::Relaxed) as f64 / 1e6;
            total += ms;
            parts.push(format!(
                "{name} {:.2}/fire ({:.3} ms/fire)",
                calls as f64 / units,
                ms / units
            ));
        }
        (parts.join(", "), total / units)
    }

    async fn timed<T>(&self, call: &str, future: impl std::future::Future<Output = T>) -> T {
        let i = CALLS
            .iter()
            .position(|c| *c == call)
            .unwrap_or(CALLS.len() - 1);
        let started = Instant::now();
        let value = future.await;
        self.calls[i].fetch_add(1, Ordering::Relaxed);
        self.nanos[i].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        value
    }
}

#[async_trait]
impl Store for Counting {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn admin(&self) -> &dyn triggers::store::Admin {
        self.inner.admin()
    }

    fn observe_groups(&self, observer: triggers::store::GroupObserver) {
        self.inner.observe_groups(observer);
    }

    async fn ping(&self) -> StoreResult<()> {
        self.timed("other", self.inner.ping()).await
    }

    async fn commit(&self, commit: Commit<'_>) -> StoreResult<()> {
        self.timed("commit", self.inner.commit(commit)).await
    }

    async fn version(&self, session: &SessionUid) -> StoreResult<u64> {
        self.timed("version", self.inner.version(session)).await
    }

    async fn events(
        &self,
        session: &SessionUid,
        after: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Event>> {
        self.timed("events", self.inner.events(session, after, limit))
            .await
    }

    async fn events_by_seq(&self, session: &SessionUid, seqs: &[u64]) -> StoreResult<Vec<Event>> {
        self.timed("events_by_seq", self.inner.events_by_seq(session, seqs))
            .await
    }

    async fn instance_events(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> StoreResult<Vec<Event>> {
        self.timed("other", self.inner.instance_events(session, instance))
            .await
    }

    async fn snapshot(&self, session: &SessionUid) -> StoreResult<Option<StoredSnapshot>> {
        self.timed("snapshot", self.inner.snapshot(session)).await
    }

    async fn save_snapshot(
        &self,
        session: &SessionUid,
        snapshot: &StoredSnapshot,
    ) -> StoreResult<()> {
        self.timed("save_snapshot", self.inner.save_snapshot(session, snapshot))
            .await
    }

    async fn sessions(&self, first: u32, after: Option<&str>) -> StoreResult<Vec<SessionSummary>> {
        self.timed("other", self.inner.sessions(first, after)).await
    }

    async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>> {
        self.timed("other", self.inner.recent_sessions(query)).await
    }

    async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
        self.timed("other", self.inner.instance_counts(sessions))
            .await
    }

    async fn session_events(
        &self,
        session: &SessionUid,
        query: &EventQuery<'_>,
    ) -> StoreResult<Vec<Event>> {
        self.timed("events", self.inner.session_events(session, query))
            .await
    }

    async fn instances(&self, query: InstanceQuery<'_>) -> StoreResult<Vec<InstanceRow>> {
        self.timed("other", self.inner.instances(query)).await
    }

    async fn claimable(
        &self,
        queue: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueueEntry>> {
        self.timed("claimable", self.inner.claimable(queue, now, limit))
            .await
    }

    async fn lease(&self, token: &str) -> StoreResult<Option<QueueEntry>> {
        self.timed("other", self.inner.lease(token)).await
    }

    async fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<QueueEntry>> {
        self.timed("other", self.inner.expired_leases(now, limit))
            .await
    }

    async fn session_uids(&self) -> StoreResult<Vec<String>> {
        self.timed("other", self.inner.session_uids()).await
    }

    async fn session_logs(&self, sessions: &[String]) -> StoreResult<Vec<Vec<Event>>> {
        self.timed("other", self.inner.session_logs(sessions)).await
    }

    async fn replace_projections(&self, rebuilt: &[Rebuilt]) -> StoreResult<()> {
        self.timed("other", self.inner.replace_projections(rebuilt))
            .await
    }

    async fn lock_session(&self, session: &SessionUid) -> StoreResult<Box<dyn LockedSession + '_>> {
        self.timed("lock_session", self.inner.lock_session(session))
            .await
    }
}
