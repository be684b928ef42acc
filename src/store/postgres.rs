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

use super::browse::{self, EventQuery, RecentSessions};
use super::codec::{decode_event, decode_instance, decode_queue_entry, to_i64, to_u64, Columns};
use super::group::{GroupStore, Grouped, Writer};
use super::options::PostgresOptions;
use super::plan::{self, Decision, Exec, Step, Writes};
use super::sql::*;
use super::{
    group_logs, Commit, InstanceRow, LockedSession, QueueEntry, Rebuilt, SessionSummary, Store,
    StoreError, StoreResult, StoredSnapshot,
};
use crate::domain::{Event, InstanceStatus};

mod write;

/// `lock_session`: the session's row lock, held until the transaction ends.
const LOCK_SESSION: &str = "SELECT version FROM sessions WHERE uid = $1 FOR UPDATE";

const EVENTS_BY_SEQ: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq = ANY($2) ORDER BY seq";

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
        let pool = PgPoolOptions::new()
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
        let mut tx = match self.pool.begin_with(BEGIN_WRITE).await {
            Ok(tx) => tx,
            Err(err) => return Grouped::Failed(err.into()),
        };
        let outcomes = match plan::write_group(&mut PgExec(&mut tx), group).await {
            Ok(outcomes) => outcomes,
            Err(err) => return Grouped::Failed(err),
        };
        if plan::nothing_stands(&outcomes) {
            // Dropping the transaction rolls it back.
            plan::count_statements(2);
            return Grouped::Written {
                outcomes,
                commit: Ok(()),
            };
        }
        plan::count_statements(2);
        let commit = tx.commit().await.map_err(Into::into);
        Grouped::Written { outcomes, commit }
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

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn commit(&self, commit: Commit<'_>) -> StoreResult<()> {
        // Encode everything before queueing for the writer.
        let Some(decision) = Decision::encode(commit)? else {
            return Ok(());
        };
        self.writer.commit(self, decision, self.timeout).await
    }

    async fn lock_session(&self, session: &str) -> StoreResult<Box<dyn LockedSession + '_>> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // No row yet (version 0): nothing to lock; a racing first commit is
        // still caught by the guard's unique key.
        sqlx::query(LOCK_SESSION)
            .bind(session)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(Box::new(LockedPg {
            session: session.to_owned(),
            tx,
        }))
    }

    async fn version(&self, session: &str) -> StoreResult<u64> {
        let version: Option<i64> = sqlx::query_scalar(SESSION_VERSION)
            .bind(session)
            .fetch_optional(&self.pool)
            .await?;
        version.map_or(Ok(0), |v| to_u64(v, "session version"))
    }

    async fn events(
        &self,
        session: &str,
        after: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Event>> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(session)
            .bind(to_i64(after)?)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| decode_event(session, row)).collect()
    }

    async fn events_by_seq(&self, session: &str, seqs: &[u64]) -> StoreResult<Vec<Event>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = seqs
            .iter()
            .map(|&seq| to_i64(seq))
            .collect::<StoreResult<BTreeSet<_>>>()?
            .into_iter()
            .collect::<Vec<_>>();
        let rows = sqlx::query(EVENTS_BY_SEQ)
            .bind(session)
            .bind(seqs)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| decode_event(session, row)).collect()
    }

    async fn instance_events(&self, session: &str, instance: &str) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(INSTANCE_EVENTS)
            .bind(session)
            .bind(instance)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| decode_event(session, row)).collect()
    }

    async fn snapshot(&self, session: &str) -> StoreResult<Option<StoredSnapshot>> {
        let Some(row) = sqlx::query(SNAPSHOT)
            .bind(session)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let version = to_u64(row.try_get("version")?, "snapshot version")?;
        let state: String = row.try_get("state")?;
        Ok(Some(StoredSnapshot { version, state }))
    }

    async fn save_snapshot(&self, session: &str, snapshot: &StoredSnapshot) -> StoreResult<()> {
        sqlx::query(SAVE_SNAPSHOT)
            .bind(session)
            .bind(to_i64(snapshot.version)?)
            .bind(&snapshot.state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sessions(&self, first: u32, after: Option<&str>) -> StoreResult<Vec<SessionSummary>> {
        let rows = sqlx::query(SESSIONS)
            .bind(after.unwrap_or(""))
            .bind(i64::from(first))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| -> StoreResult<SessionSummary> {
                Ok(SessionSummary {
                    uid: row.try_get("uid")?,
                    version: to_u64(row.try_get("version")?, "session version")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>> {
        let mut select = browse::recent_sessions::<Postgres, _>(query, |at| at);
        let rows = select.build().fetch_all(&self.pool).await?;
        rows.iter().map(browse::decode_summary).collect()
    }

    async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
        let rows = match browse::instance_counts::<Postgres>(sessions) {
            Some(mut select) => select.build().fetch_all(&self.pool).await?,
            None => Vec::new(),
        };
        let rows = rows.iter().map(browse::decode_count);
        browse::group_counts(sessions, rows.collect::<StoreResult<Vec<_>>>()?)
    }

    async fn session_events(
        &self,
        session: &str,
        query: &EventQuery<'_>,
    ) -> StoreResult<Vec<Event>> {
        let Some((mut select, reverse)) = browse::session_events::<Postgres>(session, query)?
        else {
            return Ok(Vec::new());
        };
        let rows = select.build().fetch_all(&self.pool).await?;
        browse::decode_events(session, &rows, reverse)
    }

    async fn instances(
        &self,
        statuses: &[InstanceStatus],
        task: Option<&str>,
        first: u32,
        after: Option<(&str, &str)>,
    ) -> StoreResult<Vec<InstanceRow>> {
        let mut select = QueryBuilder::<Postgres>::new(INSTANCES);
        if let Some((session, name)) = after {
            select
                .push(INSTANCES_AFTER)
                .push_bind(session)
                .push(INSTANCES_AFTER_NAME)
                .push_bind(name)
                .push(")");
        }
        if !statuses.is_empty() {
            let statuses: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
            select
                .push(" AND status = ANY(")
                .push_bind(statuses)
                .push(")");
        }
        if let Some(task) = task {
            select.push(" AND task = ").push_bind(task);
        }
        select.push(INSTANCES_END).push_bind(i64::from(first));
        let rows = select.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_instance).collect()
    }

    async fn claimable(
        &self,
        queue: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueueEntry>> {
        let rows = sqlx::query(CLAIMABLE)
            .bind(queue)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_queue_entry).collect()
    }

    async fn lease(&self, token: &str) -> StoreResult<Option<QueueEntry>> {
        let row = sqlx::query(LEASED)
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_queue_entry).transpose()
    }

    async fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<QueueEntry>> {
        let rows = sqlx::query(EXPIRED_LEASES)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_queue_entry).collect()
    }

    async fn session_uids(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(SESSION_UIDS)
            .fetch_all(&self.pool)
            .await?)
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
        let mut tx = self.pool.begin().await?;
        super::replace::write_rebuilt(&mut PgExec(&mut tx), rebuilt).await?;
        tx.commit().await?;
        plan::count_statements(2);
        Ok(())
    }
}

/// A transaction holding a session's row lock (`SELECT ... FOR UPDATE`).
struct LockedPg {
    session: String,
    tx: sqlx::Transaction<'static, Postgres>,
}

#[async_trait]
impl LockedSession for LockedPg {
    async fn events_after(&mut self, after: u64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(&self.session)
            .bind(to_i64(after)?)
            .bind(None::<i64>)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|row| decode_event(&self.session, row))
            .collect()
    }

    async fn commit(mut self: Box<Self>, commit: Commit<'_>) -> StoreResult<()> {
        debug_assert_eq!(commit.session, self.session);
        let Some(decision) = Decision::encode(commit)? else {
            return Ok(());
        };
        let mut outcomes = plan::write_group(&mut PgExec(&mut self.tx), &[&decision]).await?;
        // Refused: dropping the transaction rolls it back.
        outcomes.pop().expect("one outcome")?;
        self.tx.commit().await?;
        plan::count_statements(2);
        Ok(())
    }
}

/// The write plan's statements on one connection.
struct PgExec<'c>(&'c mut PgConnection);

#[async_trait]
impl Exec for PgExec<'_> {
    async fn ints(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<i64>>> {
        plan::count_statements(1);
        let ints = sqlx::query_scalar(write::sql(step))
            .bind(rows)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(Some(ints))
    }

    async fn texts(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<String>>> {
        plan::count_statements(1);
        let texts = sqlx::query_scalar(write::sql(step))
            .bind(rows)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(Some(texts))
    }

    async fn run(&mut self, step: Step, rows: String) -> StoreResult<()> {
        plan::count_statements(1);
        sqlx::query(write::sql(step))
            .bind(rows)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
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
}

impl Columns for PgRow {
    super::codec::plain_columns!();

    fn timestamp(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        Ok(self.try_get(column)?)
    }

    fn opt_timestamp(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(column)?)
    }
}
