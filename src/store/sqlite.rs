//! The SQLite backend: the [`Store`] trait as SQL over a `SqlitePool`.
//!
//! Owns the SQLite connection settings (WAL, busy timeout, synchronous mode), the
//! SQL of every read, and how a group of decisions reaches the database: one
//! write transaction per group, its statements from [`write`] (the logic is the
//! shared [`plan`](super::plan)). Timestamps are stored as TEXT in one fixed UTC
//! format with six fractional digits (see [`codec`](super::codec)), so that
//! comparing the text compares the instants (`available_at <= ?`).
//!
//! Write transactions start with `BEGIN IMMEDIATE`: the write lock is taken up
//! front (waiting up to the busy timeout), never upgraded from a read snapshot
//! that another writer may have made stale, which SQLite would refuse at once.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::browse::{self, EventQuery, RecentSessions};
use super::codec::{
    decode_event, decode_instance, decode_queue_entry, encode_error, parse_timestamp, timestamp,
    to_i64, to_u64, Columns,
};
use super::group::{GroupStore, Grouped, Writer};
use super::options::{SqliteOptions, Synchronous};
use super::plan::{self, Decision, Exec, Step, Writes};
use super::{
    Commit, InstanceRow, LockedSession, QueueEntry, Rebuilt, SessionSummary, Store, StoreResult,
    StoredSnapshot,
};
use crate::domain::{Event, InstanceStatus};

mod logs;
mod write;

use super::sql::*;
use logs::decode_log;

/// Opens every write transaction, taking the write lock at once.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Followed by `(?, ?, ..)` and [`EVENTS_BY_SEQ_END`].
const EVENTS_BY_SEQ: &str =
    "SELECT seq, kind, format, data, caused_by, at FROM events WHERE session = ";
const EVENTS_BY_SEQ_END: &str = " ORDER BY seq";

/// `session_logs`: the sessions are a JSON array in `$1`. Each log comes back as
/// one row holding a JSON array of `[seq, kind, format, data, caused_by, at]`:
/// rows cross from sqlx's SQLite thread one at a time, so a row per event
/// costs a thread hand-off per event, which dominated `rebuild`. The array is
/// put together as text: `data` is stored JSON, so SQLite's JSON functions would
/// only parse and re-print it.
const SESSION_LOGS: &str = "SELECT session, '[' || group_concat('[' || seq || ',' || \
     json_quote(kind) || ',' || format || ',' || data || ',' || ifnull(caused_by, 'null') || \
     ',' || json_quote(at) || ']', ',' ORDER BY seq) || ']' AS log \
     FROM events WHERE session IN (SELECT value FROM json_each($1)) GROUP BY session";

/// Bound parameters per `IN (..)` list.
const IN_CHUNK: usize = 1000;

/// Connections per file database (one writer at a time; readers in parallel).
const POOL_SIZE: u32 = 8;

/// The store on a SQLite database file (or in memory).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Every operation takes a connection from here; writes hold one for their
    /// transaction.
    pool: SqlitePool,
    /// Serialises this process's writers before they reach SQLite's write lock:
    /// SQLite makes a blocked writer sleep and poll (busy handler), which under
    /// many concurrent writers costs more than the writes; a FIFO queue here
    /// does not. Other processes are still arbitrated by the busy timeout.
    /// Decisions waiting for it are committed together (see [`super::group`]).
    writer: Arc<Writer>,
    /// How long a writer waits, first for this process's other writers, then
    /// for SQLite's write lock (another process); then it fails as busy.
    busy_timeout: Duration,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` and brings its schema
    /// up to date.
    ///
    /// Accepts `sqlite::memory:`, `sqlite://relative.db`, `sqlite:///abs/path.db`
    /// and `sqlite:path`. Files use WAL journaling, `options`' busy timeout (a
    /// writer that waits longer fails as busy) and synchronous mode (`FULL`, the
    /// default, makes every commit durable; `NORMAL` is durable up to the last
    /// checkpoint on power loss, and much faster). An in-memory database lives
    /// in its one connection, so its pool holds exactly one that never closes.
    ///
    /// # Errors
    /// A malformed URL, a database that cannot be opened, or a failed migration.
    pub async fn connect(url: &str, options: &SqliteOptions) -> StoreResult<Self> {
        let synchronous = match options.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Off => SqliteSynchronous::Off,
        };
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(options.busy_timeout)
            .synchronous(synchronous);
        let pool = if is_in_memory(url) {
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(connect)
                .await?
        } else {
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(connect)
                .await?
        };
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::new(Writer::new(options.max_group)),
            busy_timeout: options.busy_timeout,
        })
    }

    /// The committer (tests hold it to make a group form).
    #[cfg(test)]
    pub(super) fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }

    /// The connection pool (for benchmarks and tooling).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for this process's earlier writers, at most the busy timeout.
    async fn write_turn(&self) -> StoreResult<tokio::sync::OwnedMutexGuard<()>> {
        self.writer.turn(self.busy_timeout).await
    }
}

/// Whether the URL names an in-memory database (one per connection).
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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
        self.writer.commit(self, decision, self.busy_timeout).await
    }

    async fn lock_session(&self, session: &str) -> StoreResult<Box<dyn LockedSession + '_>> {
        // This process's writers first, then the database's write lock.
        let writer = self.write_turn().await?;
        let tx = self.pool.begin_with(BEGIN_WRITE).await?;
        Ok(Box::new(LockedSqlite {
            session: session.to_owned(),
            tx,
            _writer: writer,
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
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(session)
            .bind(to_i64(after)?)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| decode_event(session, row)).collect()
    }

    async fn events_by_seq(&self, session: &str, seqs: &[u64]) -> StoreResult<Vec<Event>> {
        let seqs = seqs
            .iter()
            .map(|&seq| to_i64(seq))
            .collect::<StoreResult<BTreeSet<_>>>()?
            .into_iter()
            .collect::<Vec<_>>();
        let mut events = Vec::with_capacity(seqs.len());
        // Chunks of an ascending list, each read in order: the whole is in order.
        for chunk in seqs.chunks(IN_CHUNK) {
            let mut select = QueryBuilder::<Sqlite>::new(EVENTS_BY_SEQ);
            select.push_bind(session).push(" AND seq IN (");
            let mut list = select.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            select.push(")").push(EVENTS_BY_SEQ_END);
            for row in select.build().fetch_all(&self.pool).await? {
                events.push(decode_event(session, &row)?);
            }
        }
        Ok(events)
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
        let _writer = self.write_turn().await?;
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
                    updated_at: parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>> {
        let mut select = browse::recent_sessions::<Sqlite, _>(query, timestamp);
        let rows = select.build().fetch_all(&self.pool).await?;
        rows.iter().map(browse::decode_summary).collect()
    }

    async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
        let rows = match browse::instance_counts::<Sqlite>(sessions) {
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
        let Some((mut select, reverse)) = browse::session_events::<Sqlite>(session, query)? else {
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
        let mut select = QueryBuilder::<Sqlite>::new(INSTANCES);
        if let Some((session, name)) = after {
            select
                .push(INSTANCES_AFTER)
                .push_bind(session)
                .push(INSTANCES_AFTER_NAME)
                .push_bind(name)
                .push(")");
        }
        if !statuses.is_empty() {
            select.push(" AND status IN (");
            let mut list = select.separated(", ");
            for status in statuses {
                list.push_bind(status.as_str());
            }
            select.push(")");
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
            .bind(timestamp(now))
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
            .bind(timestamp(now))
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
        let list = serde_json::to_string(sessions).map_err(encode_error)?;
        let rows = sqlx::query(SESSION_LOGS)
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        // Decoding is most of the work: each log on a blocking thread, in parallel.
        let mut decoding = Vec::with_capacity(rows.len());
        for row in rows {
            let session: String = row.try_get("session")?;
            let log: String = row.try_get("log")?;
            decoding.push(tokio::task::spawn_blocking(move || {
                let events = decode_log(&session, &log);
                (session, events)
            }));
        }
        let mut logs: HashMap<String, Vec<Event>> = HashMap::with_capacity(decoding.len());
        for decoded in decoding {
            let (session, events) = match decoded.await {
                Ok(decoded) => decoded,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            };
            logs.insert(session, events?);
        }
        Ok(sessions
            .iter()
            .map(|session| logs.remove(session).unwrap_or_default())
            .collect())
    }

    async fn replace_projections(&self, rebuilt: &[Rebuilt]) -> StoreResult<()> {
        let _writer = self.write_turn().await?;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        super::replace::write_rebuilt(&mut SqliteExec(&mut tx), rebuilt).await?;
        tx.commit().await?;
        plan::count_statements(2);
        Ok(())
    }
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn commit_group(&self, group: &[&Decision]) -> Grouped {
        let mut tx = match self.pool.begin_with(BEGIN_WRITE).await {
            Ok(tx) => tx,
            Err(err) => return Grouped::Failed(err.into()),
        };
        let outcomes = match plan::write_group(&mut SqliteExec(&mut tx), group).await {
            Ok(outcomes) => outcomes,
            // Dropping the transaction rolls it back.
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

/// The write plan's statements on one connection.
struct SqliteExec<'c>(&'c mut SqliteConnection);

#[async_trait]
impl Exec for SqliteExec<'_> {
    async fn ints(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<i64>>> {
        let Some(sql) = write::sql(step) else {
            return Ok(None);
        };
        plan::count_statements(1);
        let ints = sqlx::query_scalar(sql)
            .bind(rows)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(Some(ints))
    }

    async fn texts(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<String>>> {
        let Some(sql) = write::sql(step) else {
            return Ok(None);
        };
        plan::count_statements(1);
        let texts = sqlx::query_scalar(sql)
            .bind(rows)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(Some(texts))
    }

    async fn run(&mut self, step: Step, rows: String) -> StoreResult<()> {
        if let Some(sql) = write::sql(step) {
            plan::count_statements(1);
            sqlx::query(sql).bind(rows).execute(&mut *self.0).await?;
        }
        Ok(())
    }

    /// The guards (one statement each, for first and later commits), then
    /// every write in one hop.
    async fn guard_and_write(&mut self, writes: &Writes) -> StoreResult<Vec<String>> {
        let mut passed: Vec<String> = Vec::new();
        for (sql, rows) in [
            (write::CREATE, &writes.creates),
            (write::ADVANCE, &writes.advances),
        ] {
            if let Some(rows) = rows {
                plan::count_statements(1);
                let uids: Vec<String> = sqlx::query_scalar(sql)
                    .bind(rows.as_str())
                    .fetch_all(&mut *self.0)
                    .await?;
                passed.extend(uids);
            }
        }
        if !writes.has_rows() {
            return Ok(passed);
        }
        let mut sessions: Vec<&str> = passed.iter().map(String::as_str).collect();
        sessions.extend(writes.unguarded.iter().map(String::as_str));
        let rows = |rows: &Option<String>| rows.clone().unwrap_or_else(|| "[]".to_owned());
        plan::count_statements(1);
        sqlx::query(write::WRITES)
            .bind(rows(&writes.events))
            .bind(rows(&writes.instances))
            .bind(rows(&writes.puts))
            .bind(rows(&writes.relets))
            .bind(rows(&writes.deletes))
            .bind(super::codec::to_json(&sessions)?)
            .execute(&mut *self.0)
            .await?;
        Ok(passed)
    }
}

/// A write transaction (`BEGIN IMMEDIATE`: the database's write lock) with this
/// process's writer turn.
struct LockedSqlite {
    session: String,
    tx: sqlx::Transaction<'static, Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl LockedSession for LockedSqlite {
    async fn events_after(&mut self, after: u64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(&self.session)
            .bind(to_i64(after)?)
            .bind(-1_i64)
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
        let mut outcomes = plan::write_group(&mut SqliteExec(&mut self.tx), &[&decision]).await?;
        // Refused: dropping the transaction rolls it back.
        outcomes.pop().expect("one outcome")?;
        self.tx.commit().await?;
        plan::count_statements(2);
        Ok(())
    }
}

impl Columns for SqliteRow {
    super::codec::plain_columns!();

    fn timestamp(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        parse_timestamp(self.try_get(column)?)
    }

    fn opt_timestamp(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let text: Option<&str> = self.try_get(column)?;
        text.map(parse_timestamp).transpose()
    }
}
