//! How the engine sees its store for the metrics: a [`Store`] that forwards
//! every call to the real one, counting what it fails with (by class), the
//! events it commits and how long each commit waited, and that hands the
//! store's group committer the group-size histogram.
//!
//! Counting at this one seam catches the errors of every caller (commands,
//! inline runs, the sweeper, GraphQL reads) without touching each of them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Event, InstanceName, InstanceStatus, SessionUid};
use crate::metrics::Metrics;
use crate::store::{
    Admin, Commit, EventQuery, GroupObserver, InstanceQuery, InstanceRow, LockedSession,
    QueueEntry, Rebuilt, RecentSessions, SessionSummary, Store, StoreResult, StoredSnapshot,
};

/// The engine's store, observed.
pub(super) struct Observed {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Observed {
    /// Wraps `inner`, and has its group committer report to `metrics`.
    pub(super) fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        let groups = metrics.clone();
        let observer: GroupObserver = Arc::new(move |n| groups.group_committed(n));
        inner.observe_groups(observer);
        Arc::new(Observed { inner, metrics })
    }

    /// Counts the error of a failed call.
    fn seen<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(err) = &result {
            self.metrics
                .store_errors
                .with_label_values(&[err.class()])
                .inc();
        }
        result
    }

    /// Counts a commit of `events` events that started at `started`.
    fn committed(
        &self,
        events: usize,
        started: Instant,
        result: StoreResult<()>,
    ) -> StoreResult<()> {
        if result.is_ok() {
            self.metrics.events_appended.inc_by(events as u64);
            if events > 0 {
                self.metrics.commit_took(started.elapsed());
            }
        }
        self.seen(result)
    }
}

#[async_trait]
impl Store for Observed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn admin(&self) -> &dyn Admin {
        self.inner.admin()
    }

    fn observe_groups(&self, observer: GroupObserver) {
        self.inner.observe_groups(observer);
    }

    async fn ping(&self) -> StoreResult<()> {
        self.seen(self.inner.ping().await)
    }

    async fn commit(&self, commit: Commit<'_>) -> StoreResult<()> {
        let events = commit.events.len();
        let started = Instant::now();
        let result = self.inner.commit(commit).await;
        self.committed(events, started, result)
    }

    async fn version(&self, session: &SessionUid) -> StoreResult<u64> {
        self.seen(self.inner.version(session).await)
    }

    async fn events(
        &self,
        session: &SessionUid,
        after: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Event>> {
        self.seen(self.inner.events(session, after, limit).await)
    }

    async fn events_by_seq(&self, session: &SessionUid, seqs: &[u64]) -> StoreResult<Vec<Event>> {
        self.seen(self.inner.events_by_seq(session, seqs).await)
    }

    async fn instance_events(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> StoreResult<Vec<Event>> {
        self.seen(self.inner.instance_events(session, instance).await)
    }

    async fn snapshot(&self, session: &SessionUid) -> StoreResult<Option<StoredSnapshot>> {
        self.seen(self.inner.snapshot(session).await)
    }

    async fn save_snapshot(
        &self,
        session: &SessionUid,
        snapshot: &StoredSnapshot,
    ) -> StoreResult<()> {
        self.seen(self.inner.save_snapshot(session, snapshot).await)
    }

    async fn sessions(&self, first: u32, after: Option<&str>) -> StoreResult<Vec<SessionSummary>> {
        self.seen(self.inner.sessions(first, after).await)
    }

    async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>> {
        self.seen(self.inner.recent_sessions(query).await)
    }

    async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
        self.seen(self.inner.instance_counts(sessions).await)
    }

    async fn session_events(
        &self,
        session: &SessionUid,
        query: &EventQuery<'_>,
    ) -> StoreResult<Vec<Event>> {
        self.seen(self.inner.session_events(session, query).await)
    }

    async fn instances(&self, query: InstanceQuery<'_>) -> StoreResult<Vec<InstanceRow>> {
        self.seen(self.inner.instances(query).await)
    }

    async fn claimable(
        &self,
        queue: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueueEntry>> {
        self.seen(self.inner.claimable(queue, now, limit).await)
    }

    async fn lease(&self, token: &str) -> StoreResult<Option<QueueEntry>> {
        self.seen(self.inner.lease(token).await)
    }

    async fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<QueueEntry>> {
        self.seen(self.inner.expired_leases(now, limit).await)
    }

    async fn session_uids(&self) -> StoreResult<Vec<String>> {
        self.seen(self.inner.session_uids().await)
    }

    async fn session_logs(&self, sessions: &[String]) -> StoreResult<Vec<Vec<Event>>> {
        self.seen(self.inner.session_logs(sessions).await)
    }

    async fn replace_projections(&self, rebuilt: &[Rebuilt]) -> StoreResult<()> {
        self.seen(self.inner.replace_projections(rebuilt).await)
    }

    async fn lock_session(&self, session: &SessionUid) -> StoreResult<Box<dyn LockedSession + '_>> {
        let locked = self.seen(self.inner.lock_session(session).await)?;
        Ok(Box::new(ObservedLock {
            inner: locked,
            store: self,
        }))
    }
}

/// A session's write lock, its commit observed like any other.
struct ObservedLock<'a> {
    inner: Box<dyn LockedSession + 'a>,
    store: &'a Observed,
}

#[async_trait]
impl LockedSession for ObservedLock<'_> {
    async fn events_after(&mut self, after: u64) -> StoreResult<Vec<Event>> {
        let events = self.inner.events_after(after).await;
        self.store.seen(events)
    }

    async fn commit(self: Box<Self>, commit: Commit<'_>) -> StoreResult<()> {
        let events = commit.events.len();
        let started = Instant::now();
        let result = self.inner.commit(commit).await;
        self.store.committed(events, started, result)
    }
}
