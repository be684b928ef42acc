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

use super::codec::{timestamp, to_u64, Columns};
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

/// An export page of every session, after `($1, $2)`, at most `$3` rows.
pub(super) const EXPORT_ALL: &str = "SELECT session, seq, kind, format, data, caused_by, at \
     FROM events WHERE session >= $1 AND (session > $1 OR seq > $2) ORDER BY session, seq LIMIT $3";

/// An export page of session `$1` after seq `$2`, at most `$3` rows.
pub(super) const EXPORT_ONE: &str = "SELECT session, seq, kind, format, data, caused_by, at \
     FROM events WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// What a purge removes of session `$1`, the log first (allowed while its
/// `purges` row is in progress).
pub(super) const PURGE_ROWS: [&str; 5] = [
    "DELETE FROM events WHERE session = $1",
    "DELETE FROM instances WHERE session = $1",
    "DELETE FROM queue WHERE session = $1",
    "DELETE FROM snapshots WHERE session = $1",
    "DELETE FROM sessions WHERE uid = $1",
];

/// Every purge record, oldest first.
pub(super) const PURGES: &str = "SELECT session, events, last_event_at, resolved_before, \
     purged_at, purged_by FROM purges ORDER BY id";

/// Each queue's claimable rows at `$1`, with the oldest one's availability.
pub(super) const QUEUE_STATS: &str = "SELECT queue, COUNT(*) AS depth, \
     MIN(CASE WHEN available_at <= $1 THEN available_at END) AS oldest FROM queue \
     WHERE lease_token IS NULL OR lease_expires_at <= $1 GROUP BY queue ORDER BY queue";

/// Sessions purgeable before `$1`, by uid after `$2`, at most `$3`.
pub(super) fn candidates_sql() -> String {
    format!(
        "SELECT uid, version, updated_at FROM sessions AS s \
         WHERE updated_at < $1 AND uid > $2 AND NOT EXISTS \
         (SELECT 1 FROM instances AS i WHERE i.session = s.uid AND i.status IN ({UNRESOLVED})) \
         ORDER BY uid LIMIT $3"
    )
}

/// Session `$1`, if it is still at `$2` with every instance resolved; `suffix`
/// is what the backend appends (a row lock).
pub(super) fn still_purgeable_sql(suffix: &str) -> String {
    format!(
        "SELECT uid FROM sessions AS s WHERE uid = $1 AND version = $2 AND NOT EXISTS \
         (SELECT 1 FROM instances AS i WHERE i.session = s.uid AND i.status IN ({UNRESOLVED})){suffix}"
    )
}

/// An exported event row; its time in the one fixed form, whatever the stored spelling.
pub(super) fn decode_raw_event(row: &impl Columns) -> StoreResult<RawEvent> {
    Ok(RawEvent {
        session: row.text("session")?.to_owned(),
        seq: to_u64(row.int("seq")?, "seq")?,
        kind: row.text("kind")?.to_owned(),
        format: row.int32("format")?,
        data: row.text("data")?.to_owned(),
        caused_by: row
            .opt_int("caused_by")?
            .map(|n| to_u64(n, "causedBy"))
            .transpose()?,
        at: timestamp(row.timestamp("at")?),
    })
}

/// A row of [`candidates_sql`].
pub(super) fn decode_candidate(row: &impl Columns) -> StoreResult<PurgeCandidate> {
    Ok(PurgeCandidate {
        session: row.text("uid")?.to_owned(),
        version: to_u64(row.int("version")?, "session version")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

/// A row of [`PURGES`].
pub(super) fn decode_purge(row: &impl Columns) -> StoreResult<PurgeRecord> {
    Ok(PurgeRecord {
        session: row.text("session")?.to_owned(),
        events: to_u64(row.int("events")?, "purged events")?,
        last_event_at: row.timestamp("last_event_at")?,
        resolved_before: row.timestamp("resolved_before")?,
        purged_at: row.timestamp("purged_at")?,
        purged_by: row.text("purged_by")?.to_owned(),
    })
}

/// A row of [`QUEUE_STATS`] read at `now`.
pub(super) fn decode_queue_stat(row: &impl Columns, now: DateTime<Utc>) -> StoreResult<QueueStat> {
    Ok(QueueStat {
        queue: row.text("queue")?.to_owned(),
        depth: to_u64(row.int("depth")?, "queue depth")?,
        oldest_age: age(now, row.opt_timestamp("oldest")?),
    })
}

/// The versions of `sessions` in their order from `(uid, version)` rows (0 for
/// a session with no row).
pub(super) fn versions_in_order(
    sessions: &[String],
    rows: &[impl Columns],
) -> StoreResult<Vec<u64>> {
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        found.insert(
            row.text("uid")?,
            to_u64(row.int("version")?, "session version")?,
        );
    }
    Ok(sessions
        .iter()
        .map(|s| found.get(s.as_str()).copied().unwrap_or(0))
        .collect())
}
