//! Storage: the append-only event log and the projections folded from it, behind
//! one trait. The generic logic (deciding, folding, retrying on conflict) lives in
//! the engine above. Below the trait, the store's own logic is written once: the
//! row codec (`codec`), the write plan that puts a group of decisions in a
//! constant number of statements (`plan`, `replace`), and the group committer
//! (`group`); `sqlite` and `postgres` hold only their SQL and how their
//! transactions reach the database. Their settings come in as [`StoreOptions`].
//!
//! Tables (see `migrations/`): `events` (the log, unique on session + seq),
//! `sessions` (version per session: the optimistic-concurrency guard),
//! `instances` (one row per instance, for cross-session listings), `queue`
//! (scheduled and running instances with their leases) and `snapshots` (folded
//! state at a seq; an optimisation only), and the operator's `purges` (what
//! retention removed). The operator's operations (export, import, purge, the
//! queue aggregate of the metrics) are the [`Admin`] trait, beside [`Store`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Event, InstanceName, InstanceStatus, SessionUid};

#[macro_use]
mod shared;
mod admin;
mod browse;
mod codec;
mod group;
mod location;
mod open;
mod options;
mod plan;
pub mod postgres;
mod queue_plan;
mod replace;
mod sql;
pub mod sqlite;
#[cfg(test)]
mod tests;

pub use admin::{Admin, Append, AppendedEvent, PurgeCandidate, PurgeRecord, QueueStat, RawEvent};
pub use browse::{EventQuery, EventWindow, InstanceQuery, RecentSessions};
pub use location::{redact, sqlite_file};
pub use open::{open, open_with};
pub use options::{PostgresOptions, SqliteOptions, StoreOptions, Synchronous, DEFAULT_MAX_GROUP};
pub use plan::write_counts;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the session first: re-decide on fresh state.
    #[error("session {session:?} moved past version {expected}")]
    Conflict {
        /// The session.
        session: String,
        /// The version the writer expected.
        expected: u64,
    },
    /// A `QueueOp::Lease` found the queue row gone, or leased to someone else.
    #[error("instance {instance:?} of session {session:?} is not claimable")]
    LeaseLost {
        /// The session.
        session: String,
        /// The instance.
        instance: String,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The group commit this decision was written in failed as a whole.
    #[error("the group commit failed: {message}")]
    GroupFailed {
        /// What failed.
        message: String,
        /// Whether the failure was transient.
        transient: bool,
    },
    /// This process's writers queued longer than the busy timeout (SQLite).
    #[error("the database stayed busy for {0:?}")]
    Busy(std::time::Duration),
    /// The database URL is not one we can open.
    #[error("unsupported database URL {0:?}: expected sqlite://..., sqlite::memory:, postgres://... or postgresql://...")]
    BadUrl(String),
    /// The database said no.
    #[error(transparent)]
    Backend(#[from] sqlx::Error),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database could not be opened: which one, why, and what to check.
    #[error("cannot open {target}: {}the driver said: {source}", if hint.is_empty() { String::new() } else { format!("{hint}; ") })]
    CannotOpen {
        /// The file or server, named for a person.
        target: String,
        /// The likely cause.
        hint: String,
        /// The failure.
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// Whether the failure is the database being unreachable, restarting or busy:
    /// the same request may well succeed in a moment. (A commit that failed this
    /// way may or may not have landed; a retry with the same idempotency key is
    /// applied at most once.)
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::GroupFailed { transient, .. } => *transient,
            StoreError::Backend(err) => is_transient_sqlx(err),
            _ => false,
        }
    }

    /// A short name of the kind of failure, for metrics (`triggers_store_errors_total{class}`).
    pub fn class(&self) -> &'static str {
        match self {
            StoreError::Conflict { .. } => "conflict",
            StoreError::LeaseLost { .. } => "lease_lost",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::GroupFailed { .. } => "group_failed",
            StoreError::Busy(_) => "busy",
            StoreError::BadUrl(_) => "bad_url",
            StoreError::Backend(err) if is_transient_sqlx(err) => "unavailable",
            StoreError::Backend(_) => "backend",
            StoreError::Migrate(_) => "migrate",
            StoreError::CannotOpen { .. } => "cannot_open",
        }
    }
}

/// Told the number of decisions each group commit made durable
/// ([`Store::observe_groups`]).
pub type GroupObserver = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

/// Connection loss, pool exhaustion, server shutdown, SQLite busy or locked.
fn is_transient_sqlx(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08xxx), too many connections,
            // administrator shutdown / crash / starting up, deadlock, serialization.
            code.starts_with("08")
                || matches!(&*code, "53300" | "57P01" | "57P02" | "57P03" | "40P01" | "40001")
                // SQLite: BUSY (5) and LOCKED (6), with their extended codes.
                || code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Folded state saved at a version.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// The seq of the last event folded into it.
    pub version: u64,
    /// `SessionState::to_snapshot()`: JSON text, stored and read back as is
    /// (an unreadable one is the engine's to ignore).
    pub state: String,
}

/// One row of the `sessions` listing.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    /// The session UID.
    pub uid: String,
    /// Its version (last seq).
    pub version: u64,
    /// When its last event was decided.
    pub updated_at: DateTime<Utc>,
}

/// One row of the `instances` projection.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    /// The session.
    pub session: String,
    /// The instance name.
    pub name: String,
    /// Its task.
    pub task: String,
    /// Its status.
    pub status: InstanceStatus,
    /// Seq of the event that created it (orders a session's instances).
    pub created_seq: u64,
    /// `lastModified`.
    pub updated_at: DateTime<Utc>,
    /// The whole `Instance` as JSON text, stored and read back as is.
    pub body: String,
}

/// A scheduled or running instance waiting in (or leased from) the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// The session.
    pub session: String,
    /// The instance.
    pub instance: String,
    /// `inline` or a worker queue name.
    pub queue: String,
    /// The job name.
    pub run: String,
    /// Not claimable before this time (cooldowns).
    pub available_at: DateTime<Utc>,
    /// Who holds the lease, if anyone.
    pub lease_owner: Option<String>,
    /// The lease token, if leased.
    pub lease_token: Option<String>,
    /// When the lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A change to the queue table, committed with the events that cause it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueOp {
    /// Insert (or reset, dropping any lease) the instance's row.
    Enqueue {
        /// The instance.
        instance: String,
        /// `inline` or a worker queue name.
        queue: String,
        /// The job name.
        run: String,
        /// Not claimable before this time.
        available_at: DateTime<Utc>,
    },
    /// Delete the instance's row (it left scheduled/running).
    Remove {
        /// The instance.
        instance: String,
    },
    /// Take or renew the lease. Fails the whole commit with `LeaseLost` unless the
    /// row exists, is available at `now`, and either (no `current_token`) is
    /// unleased or expired at `now`, or is leased under `current_token` and not
    /// yet expired.
    Lease {
        /// The instance.
        instance: String,
        /// The new holder.
        owner: String,
        /// The new token.
        token: String,
        /// The new expiry.
        expires_at: DateTime<Utc>,
        /// The time the check is made at.
        now: DateTime<Utc>,
        /// The token the caller holds (renewing or reporting under its own lease).
        current_token: Option<String>,
    },
}

/// Everything one decision writes, in one transaction.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// The session.
    pub session: &'a str,
    /// The version the decision was taken on; the commit fails with `Conflict` if
    /// the session is no longer there.
    pub expected_version: u64,
    /// The new events, seq `expected_version + 1 ..` in order.
    pub events: &'a [Event],
    /// Upserts of every instance the events touched.
    pub instances: Vec<InstanceRow>,
    /// Queue changes, applied after the events and instance rows.
    pub queue: Vec<QueueOp>,
}

/// A session's projections recomputed from its log (`triggers rebuild`).
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The session.
    pub session: String,
    /// Its version.
    pub version: u64,
    /// When its last event was decided.
    pub updated_at: DateTime<Utc>,
    /// Every instance row.
    pub instances: Vec<InstanceRow>,
    /// Every queue row that should exist (scheduled/running instances). Rows that
    /// exist already keep their lease; others are deleted.
    pub queue: Vec<QueueEntry>,
    /// A fresh snapshot.
    pub snapshot: StoredSnapshot,
}

/// Deals rows of several sessions' logs (ordered by session, then seq) out to one
/// log per session of `sessions`, in that order (`Store::session_logs`).
fn group_logs<R>(
    sessions: &[String],
    rows: &[R],
    decode: impl Fn(&R) -> StoreResult<(String, Event)>,
) -> StoreResult<Vec<Vec<Event>>> {
    let position: std::collections::HashMap<&str, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, session)| (session.as_str(), i))
        .collect();
    let mut logs = vec![Vec::new(); sessions.len()];
    for row in rows {
        let (session, event) = decode(row)?;
        if let Some(&i) = position.get(session.as_str()) {
            logs[i].push(event);
        }
    }
    Ok(logs)
}

/// The storage backend: the log, its projections, and the queue.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The operator's operations (export, import, purge, queue aggregate).
    fn admin(&self) -> &dyn Admin;

    /// Has `observer` told the size of every group commit from now on (the
    /// engine's metrics). Only the first observer set is kept.
    fn observe_groups(&self, observer: GroupObserver);

    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Appends events and writes projections atomically, if the session is still
    /// at `expected_version`.
    async fn commit(&self, commit: Commit<'_>) -> StoreResult<()>;

    /// The session's current version (0 if never used).
    async fn version(&self, session: &SessionUid) -> StoreResult<u64>;

    /// Events with seq > `after`, ascending, at most `limit`.
    async fn events(
        &self,
        session: &SessionUid,
        after: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Event>>;

    /// The events with these seqs, ascending.
    async fn events_by_seq(&self, session: &SessionUid, seqs: &[u64]) -> StoreResult<Vec<Event>>;

    /// Every event naming this instance, ascending.
    async fn instance_events(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> StoreResult<Vec<Event>>;

    /// The latest snapshot of a session.
    async fn snapshot(&self, session: &SessionUid) -> StoreResult<Option<StoredSnapshot>>;

    /// Saves a snapshot (replacing an older one).
    async fn save_snapshot(
        &self,
        session: &SessionUid,
        snapshot: &StoredSnapshot,
    ) -> StoreResult<()>;

    /// Sessions ordered by UID, after `after`, at most `first`.
    async fn sessions(&self, first: u32, after: Option<&str>) -> StoreResult<Vec<SessionSummary>>;

    /// Sessions most recently updated first (ties by UID, descending), only
    /// those whose UID starts with `query.prefix`, after the keyset cursor.
    async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>>;

    /// Each of `sessions`' instances counted by status (statuses with none left
    /// out, the others in [`InstanceStatus::ALL`]'s order), in the order given.
    async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>>;

    /// One page of a session's events, filtered by kind and instance, ascending.
    async fn session_events(
        &self,
        session: &SessionUid,
        query: &EventQuery<'_>,
    ) -> StoreResult<Vec<Event>>;

    /// Instances across sessions, ordered by (session, created_seq), filtered by
    /// status (any of, when non-empty) and task, after the `(session, name)` cursor.
    async fn instances(&self, query: InstanceQuery<'_>) -> StoreResult<Vec<InstanceRow>>;

    /// Queue rows of `queue` claimable at `now` (available, and unleased or
    /// expired), oldest first, at most `limit`.
    async fn claimable(
        &self,
        queue: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueueEntry>>;

    /// The queue row holding this lease token.
    async fn lease(&self, token: &str) -> StoreResult<Option<QueueEntry>>;

    /// Leased rows (any queue) whose lease ended before `now`, at most `limit`.
    async fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<QueueEntry>>;

    /// Every session UID with events.
    async fn session_uids(&self) -> StoreResult<Vec<String>>;

    /// The whole log of each of `sessions`, in the order given (empty for a
    /// session without events): one read for many sessions (`rebuild`).
    async fn session_logs(&self, sessions: &[String]) -> StoreResult<Vec<Vec<Event>>>;

    /// Replaces sessions' projections (sessions row, instance rows, queue rows,
    /// snapshot), all of them in one transaction.
    async fn replace_projections(&self, rebuilt: &[Rebuilt]) -> StoreResult<()>;

    /// Opens a write transaction holding the session's write lock: until it
    /// commits or is dropped, other writers of the session wait, or fail their
    /// version guard. A writer that keeps losing optimistic races (another
    /// process appending to the same session back to back) re-decides under the
    /// lock instead, which always makes progress.
    async fn lock_session(&self, session: &SessionUid) -> StoreResult<Box<dyn LockedSession + '_>>;
}

/// A write transaction holding one session's write lock ([`Store::lock_session`]).
/// Dropping it rolls back.
#[async_trait]
pub trait LockedSession: Send {
    /// The session's events after `after`, as committed before the lock was taken.
    async fn events_after(&mut self, after: u64) -> StoreResult<Vec<Event>>;

    /// Writes `commit` (its session must be the locked one) and commits.
    async fn commit(self: Box<Self>, commit: Commit<'_>) -> StoreResult<()>;
}

#[cfg(test)]
mod transient_tests {
    use std::time::Duration;

    use super::StoreError;

    #[test]
    fn each_failure_has_a_short_class_for_the_metrics() {
        let cases = [
            (StoreError::Busy(Duration::from_millis(5)), "busy"),
            (
                StoreError::Backend(sqlx::Error::PoolTimedOut),
                "unavailable",
            ),
            (StoreError::Backend(sqlx::Error::RowNotFound), "backend"),
            (StoreError::Corrupt("bad row".into()), "corrupt"),
            (
                StoreError::Conflict {
                    session: "s".into(),
                    expected: 1,
                },
                "conflict",
            ),
            (
                StoreError::CannotOpen {
                    target: "the file x.db".into(),
                    hint: String::new(),
                    source: Box::new(StoreError::BadUrl("x".into())),
                },
                "cannot_open",
            ),
        ];
        for (err, class) in cases {
            assert_eq!(err.class(), class, "{err}");
        }
    }

    #[test]
    fn lost_connections_and_busy_databases_are_transient_and_nothing_else_is() {
        let transient = [
            StoreError::Busy(Duration::from_millis(500)),
            StoreError::Backend(sqlx::Error::PoolTimedOut),
            StoreError::Backend(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        ];
        for err in transient {
            assert!(err.is_transient(), "{err}");
        }
        let permanent = [
            StoreError::Corrupt("bad row".into()),
            StoreError::Backend(sqlx::Error::RowNotFound),
            StoreError::Conflict {
                session: "s".into(),
                expected: 1,
            },
        ];
        for err in permanent {
            assert!(!err.is_transient(), "{err}");
        }
    }
}
