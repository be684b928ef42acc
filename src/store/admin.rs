//! The operator's side of the store: the log as stored rows (export, import),
//! retention (purge), and the queue aggregate the metrics read. Kept apart
//! from [`Store`](super::Store), which serves the engine's decisions, so that
//! neither grows two reasons to change; each backend implements it in its
//! `admin.rs` next to its other SQL.
//!
//! Events cross this interface as [`RawEvent`]s, their payload the exact text
//! stored: an exported and re-imported log is the same bytes, whatever format
//! its events were written in (they are upcast only when folded).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The session.
    pub session: String,
    /// Its seq.
    pub seq: u64,
    /// The event kind.
    pub kind: String,
    /// The payload's format.
    pub format: i32,
    /// The payload (without its kind), exactly as stored.
    pub data: String,
    /// The event it derives from.
    pub caused_by: Option<u64>,
    /// When it was decided, in the fixed UTC form (`...T..:..:..ffffffZ`).
    pub at: String,
}

/// A [`RawEvent`] with the lookup columns the log copies out of its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    /// The event.
    pub event: RawEvent,
    /// The instance the payload names.
    pub instance: Option<String>,
    /// The trigger the payload names.
    pub trigger: Option<String>,
}

/// Events to append to one session, if it is still at `expected_version`.
#[derive(Debug, Clone)]
pub struct Append {
    /// The session.
    pub session: String,
    /// Its version before these events.
    pub expected_version: u64,
    /// Seq `expected_version + 1 ..`, ascending.
    pub events: Vec<AppendedEvent>,
}

/// A session `purge` may remove: every instance resolved, nothing newer than
/// the cut-off.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeCandidate {
    /// The session.
    pub session: String,
    /// Its version (events it holds).
    pub version: u64,
    /// When its last event was decided.
    pub updated_at: DateTime<Utc>,
}

/// A row of the `purges` table: one purged session.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeRecord {
    /// The session UID (it may since have started again).
    pub session: String,
    /// The events removed.
    pub events: u64,
    /// When its last removed event had been decided.
    pub last_event_at: DateTime<Utc>,
    /// The `--resolved-before` cut-off of the purge.
    pub resolved_before: DateTime<Utc>,
    /// When it was purged.
    pub purged_at: DateTime<Utc>,
    /// Who purged it.
    pub purged_by: String,
}

/// The waiting rows of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStat {
    /// `inline` or a worker queue name.
    pub queue: String,
    /// Rows not leased, or whose lease ended.
    pub depth: u64,
    /// How long the oldest claimable one has been claimable (`None`: none is
    /// claimable yet, all wait for a cooldown).
    pub oldest_age: Option<Duration>,
}

/// The operator's operations on a store.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Up to `limit` events after `(session, seq)` in (session, seq) order,
    /// only of `session` when given: one keyset page of an export.
    async fn export_page(
        &self,
        only: Option<&str>,
        after: (&str, u64),
        limit: u32,
    ) -> StoreResult<Vec<RawEvent>>;

    /// The versions of `sessions` (0 for one never used), in the order given.
    async fn versions(&self, sessions: &[String]) -> StoreResult<Vec<u64>>;

    /// Appends the events of every `Append`, all in one transaction, each
    /// session's version guarded (`Conflict` if one moved): the log only; the
    /// caller rebuilds the projections.
    async fn append(&self, appends: &[Append]) -> StoreResult<()>;

    /// Sessions whose every instance is resolved and whose last event was
    /// decided before `before`, by uid after `after`, at most `limit`.
    async fn purge_candidates(
        &self,
        before: DateTime<Utc>,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<PurgeCandidate>>;

    /// Removes the sessions (log, projections, snapshot) and records each in
    /// `purges`, in one transaction; a session that changed since it was listed
    /// (its version, or an instance no longer resolved) is left alone. Returns
    /// the sessions purged.
    async fn purge(
        &self,
        sessions: &[PurgeCandidate],
        resolved_before: DateTime<Utc>,
        by: &str,
    ) -> StoreResult<Vec<String>>;

    /// Every row of `purges`, oldest first.
    async fn purges(&self) -> StoreResult<Vec<PurgeRecord>>;

    /// Depth and oldest claimable age of each queue with waiting rows, at `now`.
    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<QueueStat>>;
}

/// Statuses of an instance that still needs something (the rest are resolved):
/// a session holding one is not purged.
pub(super) const UNRESOLVED: &str = "'unstarted', 'scheduled', 'running', 'failed'";

/// Age at `now` of a queue's oldest claimable row.
pub(super) fn age(now: DateTime<Utc>, oldest: Option<DateTime<Utc>>) -> Option<Duration> {
    oldest.map(|at| (now - at).to_std().unwrap_or_default())
}
