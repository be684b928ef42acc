//! The PostgreSQL backend: the [`Store`] trait as SQL over a `PgPool`.
//!
//! Owns the pool settings, the SQL of the reads PostgreSQL spells its own way,
//! and how a group of decisions reaches the database: one transaction per
//! group, its statements from [`write`] (the logic is the shared
//! [`plan`](super::plan)). Several server processes may share one database:
//! the session row's version (locked, checked and advanced in every commit) and
//! the unique key on (session, seq) keep their appends from interleaving, and
//! queue leases are checked on rows locked by the same transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::browse::{self, EventQuery, InstanceQuery, RecentSessions};
use super::codec::{decode_event, decode_instance, decode_queue_entry, to_i64, to_u64, Columns};
use super::group::{GroupStore, Grouped, Writer};
use super::options::PostgresOptions;
use super::plan::{self, Decision, Exec, Step, Writes};
use super::sql::*;
use super::{
    group_logs, Commit, InstanceRow, LockedSession, QueueEntry, Rebuilt, SessionSummary, Store,
    StoreError, StoreResult, StoredSnapshot,
};
use crate::domain::{Event, InstanceName, InstanceStatus, SessionUid};

mod admin;
mod write;

/// `lock_session`: the session's row lock, held until the transaction ends.
const LOCK_SESSION: &str = "SELECT version FROM sessions WHERE uid = $1 FOR UPDATE";

const SESSION_LOGS: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session = ANY($1) ORDER BY session, seq";

/// Opens every write transaction. The planner takes a JSON row set for 100
/// rows and would rather scan a small or bloated `queue` (every instance that
/// left it leaves a dead row until vacuumed) than probe its key that many
/// times; the writes only ever find rows by their whole key, so scans and
/// hash or merge joins are ruled out for the transaction (`EXPLAIN`: an index
/// scan on `queue_pkey` with both key columns as its condition). One round
/// trip, like a plain `BEGIN`.
const BEGIN_WRITE: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// How often a group whose transaction was chosen as a deadlock victim (or
/// failed to serialise) is written again before its decisions fail.
const GROUP_ATTEMPTS: usize = 3;

/// The store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Every operation takes a connection from here; a group commit holds one
    /// for its transaction.
    pool: PgPool,
    /// This process's one committer: decisions waiting for it are committed
    /// together (see [`super::group`]).
    writer: Arc<Writer>,
    /// How long a writer waits for its turn.
    timeout: Duration,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`) and
    /// brings its schema up to date, with a pool of `options.pool_size`
    /// connections. Several processes may connect at once: migrations run under
    /// an advisory lock.
    ///
    /// # Errors
    /// A malformed URL, a database that does not answer, or a failed migration.
    pub async fn connect(url: &str, options: &PostgresOptions) -> StoreResult<Self> {
        let pool = super::open::checked_when_idle(PgPoolOptions::new())
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::new(Writer::new(options.max_group)),
            timeout: options.acquire_timeout,
        })
    }

    /// The committer (tests hold it to make a group form).
    #[cfg(test)]
    pub(super) fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }

    /// The connection pool (for benchmarks and tooling).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A snapshot write waits for nothing: it is one upsert, and PostgreSQL
    /// arbitrates its writers itself.
    async fn snapshot_turn(&self) -> StoreResult<()> {
        Ok(())
    }

    /// One attempt at a group's write: one statement on its own (atomic, no
    /// `BEGIN`/`COMMIT`) when it is only guards and new rows, as every fire's
    /// decision is; a transaction when leases or stored queue rows are checked
    /// or changed.
    async fn try_group(&self, group: &[&Decision]) -> Grouped {
        if !plan::needs_transaction(group) {
            let mut conn = match self.pool.acquire().await {
                Ok(conn) => conn,
                Err(err) => return Grouped::Failed(err.into()),
            };
            return match plan::write_group(&mut PgExec(&mut conn), group).await {
                Ok(outcomes) => Grouped::Written {
                    outcomes,
                    commit: Ok(()),
                },
                Err(err) => Grouped::Failed(err),
            };
        }
        match self.pool.begin_with(BEGIN_WRITE).await {
            Ok(tx) => write_group_in!(tx, PgExec, group),
            Err(err) => Grouped::Failed(err.into()),
        }
    }
}

#[async_trait]
impl GroupStore for PostgresStore {
    async fn commit_group(&self, group: &[&Decision]) -> Grouped {
        let mut attempt = 1;
        loop {
            let grouped = self.try_group(group).await;
            let retry = match &grouped {
                Grouped::Failed(err)
                | Grouped::Written {
                    commit: Err(err), ..
                } => is_rolled_back(err),
                Grouped::Written { .. } => false,
            };
            if !retry || attempt == GROUP_ATTEMPTS {
                return grouped;
            }
            attempt += 1;
        }
    }
}

/// A timestamp as PostgreSQL binds it (`timestamptz`).
fn at(at: DateTime<Utc>) -> DateTime<Utc> {
    at
}

/// A row limit: NULL is none.
fn limit(limit: Option<u64>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A deadlock victim or a serialisation failure: the whole transaction was
/// rolled back, so writing it again is safe.
fn is_rolled_back(err: &StoreError) -> bool {
    match err {
        StoreError::Backend(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

impl_store!(PostgresStore, Postgres {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn lock_session(&self, session: &SessionUid) -> StoreResult<Box<dyn LockedSession + '_>> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // No row yet (version 0): nothing to lock; a racing first commit is
        // still caught by the guard's unique key.
        sqlx::query(LOCK_SESSION)
            .bind(session.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        Ok(Box::new(LockedPg {
            session: session.as_str().to_owned(),
            tx,
        }))
    }

    async fn session_logs(&self, sessions: &[String]) -> StoreResult<Vec<Vec<Event>>> {
        let rows = sqlx::query(SESSION_LOGS)
            .bind(sessions)
            .fetch_all(&self.pool)
            .await?;
        group_logs(sessions, &rows, |row| {
            let session: String = row.try_get("session")?;
            let event = decode_event(&session, row)?;
            Ok((session, event))
        })
    }

    async fn replace_projections(&self, rebuilt: &[Rebuilt]) -> StoreResult<()> {
        // Its statements too find rows by key only: without this, on a large
        // log (an import of a million events) they were planned as scans.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        super::replace::write_rebuilt(&mut PgExec(&mut tx), rebuilt).await?;
        tx.commit().await?;
        plan::count_statements(2);
        Ok(())
    }
});

/// A transaction holding a session's row lock (`SELECT ... FOR UPDATE`).
struct LockedPg {
    session: String,
    tx: sqlx::Transaction<'static, Postgres>,
}

impl_locked_session!(LockedPg, PgExec);

/// The write plan's statements on one connection.
struct PgExec<'c>(&'c mut PgConnection);

impl_exec!(PgExec, Postgres {
    async fn guard_and_write(&mut self, writes: &Writes) -> StoreResult<Vec<String>> {
        let rows = |rows: &Option<String>| rows.as_deref().unwrap_or("[]").to_owned();
        plan::count_statements(1);
        Ok(sqlx::query_scalar(write::GUARD_AND_WRITE)
            .bind(rows(&writes.creates))
            .bind(rows(&writes.advances))
            .bind(super::codec::to_json(&writes.unguarded)?)
            .bind(rows(&writes.events))
            .bind(rows(&writes.instances))
            .bind(rows(&writes.puts))
            .bind(rows(&writes.relets))
            .bind(rows(&writes.deletes))
            .fetch_all(&mut *self.0)
            .await?)
    }
});

impl Columns for PgRow {
    super::codec::plain_columns!();

    fn timestamp(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        Ok(self.try_get(column)?)
    }

    fn opt_timestamp(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(column)?)
    }
}
