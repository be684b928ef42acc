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

use super::browse::{self, EventQuery, InstanceQuery, RecentSessions};
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
use crate::domain::{Event, InstanceName, InstanceStatus, SessionUid};

mod admin;
mod logs;
mod write;

use super::sql::*;
use logs::decode_log;

/// Opens every write transaction, taking the write lock at once.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

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
    timeout: Duration,
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
            super::open::checked_when_idle(SqlitePoolOptions::new())
                .max_connections(POOL_SIZE)
                .connect_with(connect)
                .await?
        };
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::new(Writer::new(options.max_group)),
            timeout: options.busy_timeout,
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

    /// A snapshot write waits for this process's writers like any write.
    async fn snapshot_turn(&self) -> StoreResult<tokio::sync::OwnedMutexGuard<()>> {
        self.write_turn().await
    }

    /// Waits for this process's earlier writers, at most the busy timeout.
    async fn write_turn(&self) -> StoreResult<tokio::sync::OwnedMutexGuard<()>> {
        self.writer.turn(self.timeout).await
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

/// A timestamp as SQLite stores it: fixed-width text, so `<=` compares instants.
fn at(at: DateTime<Utc>) -> String {
    timestamp(at)
}

/// A row limit: SQLite reads a negative one as none.
fn limit(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl_store!(SqliteStore, Sqlite {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn lock_session(&self, session: &SessionUid) -> StoreResult<Box<dyn LockedSession + '_>> {
        // This process's writers first, then the database's write lock.
        let writer = self.write_turn().await?;
        let tx = self.pool.begin_with(BEGIN_WRITE).await?;
        Ok(Box::new(LockedSqlite {
            session: session.as_str().to_owned(),
            tx,
            _writer: writer,
        }))
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
});

#[async_trait]
impl GroupStore for SqliteStore {
    async fn commit_group(&self, group: &[&Decision]) -> Grouped {
        match self.pool.begin_with(BEGIN_WRITE).await {
            Ok(tx) => write_group_in!(tx, SqliteExec, group),
            Err(err) => Grouped::Failed(err.into()),
        }
    }
}

/// The write plan's statements on one connection.
struct SqliteExec<'c>(&'c mut SqliteConnection);

impl_exec!(SqliteExec, Sqlite {
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
});

/// A write transaction (`BEGIN IMMEDIATE`: the database's write lock) with this
/// process's writer turn.
struct LockedSqlite {
    session: String,
    tx: sqlx::Transaction<'static, Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl_locked_session!(LockedSqlite, SqliteExec);

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
