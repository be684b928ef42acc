//! The SQLite backend: the [`Store`] trait as SQL over a `SqlitePool`.
//!
//! Owns the SQLite connection settings (WAL, busy timeout, synchronous mode), the
//! SQL of every store operation and the decoding of its rows. Timestamps are
//! stored as TEXT in one fixed UTC format with six fractional digits, so that
//! comparing the text compares the instants (`available_at <= ?`).
//!
//! Write transactions start with `BEGIN IMMEDIATE`: the write lock is taken up
//! front (waiting up to the busy timeout), never upgraded from a read snapshot
//! that another writer may have made stale, which SQLite would refuse at once.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{
    Commit, InstanceRow, LockedSession, QueueEntry, QueueOp, Rebuilt, SessionSummary, Store,
    StoreError, StoreResult, StoredSnapshot,
};
use crate::domain::{Event, EventPayload, InstanceStatus};

mod group;

/// Opens every write transaction, taking the write lock at once.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

const PING: &str = "SELECT 1";

/// The guard of a session's first commit: fails (0 rows) if someone else created it.
const CREATE_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (uid) DO NOTHING";

/// The guard of every later commit: fails (0 rows) if the version moved on.
const ADVANCE_SESSION: &str =
    "UPDATE sessions SET version = ?1, updated_at = ?2 WHERE uid = ?3 AND version = ?4";

/// `replace_projections`: the version is whatever the log says.
const PUT_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (uid) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at";

/// Followed by `VALUES (..), (..)`.
const INSERT_EVENTS: &str =
    "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, trigger_name, at) ";

const SESSION_VERSION: &str = "SELECT version FROM sessions WHERE uid = ?1";

/// A negative limit means none in SQLite.
const EVENTS_AFTER: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// Followed by `(?, ?, ..)` and [`EVENTS_BY_SEQ_END`].
const EVENTS_BY_SEQ: &str =
    "SELECT seq, kind, format, data, caused_by, at FROM events WHERE session = ";
const EVENTS_BY_SEQ_END: &str = " ORDER BY seq";

const INSTANCE_EVENTS: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = ?1 AND instance = ?2 ORDER BY seq";

const SNAPSHOT: &str = "SELECT version, state FROM snapshots WHERE session = ?1";

/// Never replaces a newer snapshot with an older one.
const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (session, version, state) VALUES (?1, ?2, ?3) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE excluded.version >= snapshots.version";

/// `replace_projections`: a rebuilt snapshot is always right, whatever was there
/// (an identical one is left alone).
const PUT_SNAPSHOT: &str = "INSERT INTO snapshots (session, version, state) VALUES (?1, ?2, ?3) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE (snapshots.version, snapshots.state) IS NOT (excluded.version, excluded.state)";

/// UIDs are never empty, so `uid > ''` lists them all.
const SESSIONS: &str = "SELECT uid, version, updated_at FROM sessions \
     WHERE uid > ?1 ORDER BY uid LIMIT ?2";

/// Sessions with a sessions row, and any with events but no row (a crash
/// cannot leave one, but `rebuild` should repair it if it happens).
const SESSION_UIDS: &str = "SELECT uid FROM sessions UNION SELECT session FROM events ORDER BY 1";

/// `session_logs`: the sessions are a JSON array in `?1`. Each log comes back as
/// one row holding a JSON array of `[seq, kind, format, data, caused_by, at]`:
/// rows cross from sqlx's SQLite thread one at a time, so a row per event
/// costs a thread hand-off per event, which dominated `rebuild`. The array is
/// put together as text: `data` is stored JSON, so SQLite's JSON functions would
/// only parse and re-print it.
const SESSION_LOGS: &str = "SELECT session, '[' || group_concat('[' || seq || ',' || \
     json_quote(kind) || ',' || format || ',' || data || ',' || ifnull(caused_by, 'null') || \
     ',' || json_quote(at) || ']', ',' ORDER BY seq) || ']' AS log \
     FROM events WHERE session IN (SELECT value FROM json_each(?1)) GROUP BY session";

/// Followed by `VALUES (..), (..)` and [`UPSERT_INSTANCES_END`].
const UPSERT_INSTANCES: &str =
    "INSERT INTO instances (session, name, task, status, created_seq, updated_at, body) ";
/// A row that would not change is left alone: its pages stay clean, so a
/// `rebuild` over projections that were right writes next to nothing.
const UPSERT_INSTANCES_END: &str = " ON CONFLICT (session, name) DO UPDATE SET \
     task = excluded.task, status = excluded.status, created_seq = excluded.created_seq, \
     updated_at = excluded.updated_at, body = excluded.body \
     WHERE (instances.task, instances.status, instances.created_seq, instances.updated_at, \
     instances.body) IS NOT (excluded.task, excluded.status, excluded.created_seq, \
     excluded.updated_at, excluded.body)";

/// `replace_projections`: drops the session's instances not in `?2` (a JSON array).
const DELETE_INSTANCES_BUT: &str = "DELETE FROM instances WHERE session = ?1 \
     AND name NOT IN (SELECT value FROM json_each(?2))";

/// Followed by the filters built in `instances`, then [`INSTANCES_END`].
const INSTANCES: &str =
    "SELECT session, name, task, status, created_seq, updated_at, body FROM instances WHERE 1 = 1";
/// The cursor is the (session, name) of the last row returned: its row places
/// it in the listing's order. Followed by the session, [`INSTANCES_AFTER_NAME`]
/// and the name.
const INSTANCES_AFTER: &str = " AND (session, created_seq, name) > \
     (SELECT session, created_seq, name FROM instances WHERE session = ";
const INSTANCES_AFTER_NAME: &str = " AND name = ";
const INSTANCES_END: &str = " ORDER BY session, created_seq, name LIMIT ";

/// Enqueueing drops any lease: the instance starts over in the queue.
const ENQUEUE: &str = "INSERT INTO queue \
     (session, instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL) \
     ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, run = excluded.run, \
     available_at = excluded.available_at, \
     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

/// An enqueue and the lease taken on it in the same commit, as one row.
const ENQUEUE_LEASED: &str = "INSERT INTO queue \
     (session, instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, run = excluded.run, \
     available_at = excluded.available_at, lease_owner = excluded.lease_owner, \
     lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at";

const DEQUEUE: &str = "DELETE FROM queue WHERE session = ?1 AND instance = ?2";

/// Takes a free or expired lease (no `?7`), or renews one still held under token
/// `?7`; 0 rows means it is lost. An expired token is refused even if nobody
/// re-claimed the row yet.
const LEASE: &str = "UPDATE queue SET lease_owner = ?1, lease_token = ?2, lease_expires_at = ?3 \
     WHERE session = ?4 AND instance = ?5 AND available_at <= ?6 \
     AND ((?7 IS NULL AND (lease_token IS NULL OR lease_expires_at <= ?6)) \
     OR (lease_token = ?7 AND lease_expires_at > ?6))";

const QUEUE_COLUMNS: &str =
    "session, instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at";

const CLAIMABLE: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE queue = ?1 AND available_at <= ?2 AND (lease_token IS NULL OR lease_expires_at <= ?2) \
     ORDER BY available_at, session, instance LIMIT ?3";

const LEASED: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue WHERE lease_token = ?1";

const EXPIRED_LEASES: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE lease_token IS NOT NULL AND lease_expires_at <= ?1 \
     ORDER BY lease_expires_at, session, instance LIMIT ?2";

/// `replace_projections`: drops the session's rows not in `?2` (a JSON array).
const DEQUEUE_ALL_BUT: &str = "DELETE FROM queue WHERE session = ?1 \
     AND instance NOT IN (SELECT value FROM json_each(?2))";

/// Followed by `VALUES (..), (..)` and [`RESTORE_QUEUE_END`]: existing rows keep
/// their lease.
const RESTORE_QUEUE: &str = "INSERT INTO queue ";
const RESTORE_QUEUE_END: &str = " ON CONFLICT (session, instance) DO UPDATE SET \
     queue = excluded.queue, run = excluded.run, available_at = excluded.available_at \
     WHERE (queue.queue, queue.run, queue.available_at) \
     IS NOT (excluded.queue, excluded.run, excluded.available_at)";

/// Rows per multi-row INSERT, well under SQLite's 32766 bound parameters.
const CHUNK: usize = 500;

/// Bound parameters per `IN (..)` list.
const IN_CHUNK: usize = 1000;

/// How timestamps are written: fixed width, so text order is time order.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// How long a writer waits for another's write lock before giving up, unless
/// [`BUSY_TIMEOUT_ENV`] says otherwise.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Overrides the busy timeout, in milliseconds.
pub const BUSY_TIMEOUT_ENV: &str = "TRIGGERS_SQLITE_BUSY_TIMEOUT_MS";

/// Connections per file database (one writer at a time; readers in parallel).
const POOL_SIZE: u32 = 8;

/// Most decisions committed in one transaction (default 64; 1 turns grouping off).
pub const MAX_GROUP_ENV: &str = "TRIGGERS_SQLITE_MAX_GROUP";

/// Overrides the `synchronous` pragma: `NORMAL`, `FULL` (the default) or `OFF`.
pub const SYNCHRONOUS_ENV: &str = "TRIGGERS_SQLITE_SYNCHRONOUS";

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
    /// Decisions waiting for it are committed together (see [`group`]).
    writer: std::sync::Arc<group::Writer>,
    /// How long a writer waits, first for this process's other writers, then
    /// for SQLite's write lock (another process); then it fails as busy.
    busy_timeout: Duration,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` and brings its schema
    /// up to date.
    ///
    /// Accepts `sqlite::memory:`, `sqlite://relative.db`, `sqlite:///abs/path.db`
    /// and `sqlite:path`. Files use WAL journaling, a 5 s busy timeout (or
    /// `TRIGGERS_SQLITE_BUSY_TIMEOUT_MS`; a writer that waits longer fails as busy) and
    /// `synchronous = FULL` (every commit is durable), unless the environment
    /// variable `TRIGGERS_SQLITE_SYNCHRONOUS` says `NORMAL` (durable up to the last
    /// checkpoint on power loss, much faster) or `OFF`. An in-memory database lives
    /// in its one connection, so its pool holds exactly one that never closes.
    ///
    /// # Errors
    /// A malformed URL or synchronous mode, a database that cannot be opened, or a
    /// failed migration.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let synchronous = synchronous_from_env()?;
        let busy_timeout = busy_timeout_from_env()?;
        let max_group = max_group_from_env()?;
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(busy_timeout)
            .synchronous(synchronous);
        let pool = if is_in_memory(url) {
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(options)
                .await?
        };
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            writer: std::sync::Arc::new(group::Writer::new(max_group)),
            busy_timeout,
        })
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

/// Reads [`MAX_GROUP_ENV`].
fn max_group_from_env() -> StoreResult<usize> {
    let Ok(value) = std::env::var(MAX_GROUP_ENV) else {
        return Ok(group::DEFAULT_MAX_GROUP);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(StoreError::Backend(sqlx::Error::Configuration(
            format!("{MAX_GROUP_ENV}={value:?}: expected a positive number of decisions").into(),
        ))),
    }
}

/// Reads [`BUSY_TIMEOUT_ENV`].
fn busy_timeout_from_env() -> StoreResult<Duration> {
    let Ok(value) = std::env::var(BUSY_TIMEOUT_ENV) else {
        return Ok(DEFAULT_BUSY_TIMEOUT);
    };
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(StoreError::Backend(sqlx::Error::Configuration(
            format!("{BUSY_TIMEOUT_ENV}={value:?}: expected a positive number of milliseconds")
                .into(),
        ))),
    }
}

/// Reads [`SYNCHRONOUS_ENV`].
fn synchronous_from_env() -> StoreResult<SqliteSynchronous> {
    let Ok(value) = std::env::var(SYNCHRONOUS_ENV) else {
        return Ok(SqliteSynchronous::Full);
    };
    match value.to_ascii_uppercase().as_str() {
        "" | "FULL" => Ok(SqliteSynchronous::Full),
        "NORMAL" => Ok(SqliteSynchronous::Normal),
        "OFF" => Ok(SqliteSynchronous::Off),
        _ => Err(StoreError::Backend(sqlx::Error::Configuration(
            format!("{SYNCHRONOUS_ENV}={value:?}: expected NORMAL, FULL or OFF").into(),
        ))),
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
        if commit.events.is_empty() && commit.instances.is_empty() && commit.queue.is_empty() {
            return Ok(());
        }
        // Encode everything before queueing for the writer.
        let decision = encode(commit)?;
        self.writer
            .commit(&self.pool, decision, self.busy_timeout)
            .await
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
        let encoded = rebuilt
            .iter()
            .map(|r| Ok((r, NewInstance::all(&r.instances)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let _writer = self.write_turn().await?;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        for (rebuilt, instances) in &encoded {
            replace_session(&mut tx, rebuilt, instances).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// One session's part of `replace_projections`.
async fn replace_session(
    conn: &mut SqliteConnection,
    rebuilt: &Rebuilt,
    instances: &[NewInstance],
) -> StoreResult<()> {
    let session = rebuilt.session.as_str();
    let queue = dedup_queue(&rebuilt.queue);
    let keep = serde_json::to_string(&queue.iter().map(|e| &e.instance).collect::<Vec<_>>())
        .map_err(encode_error)?;
    sqlx::query(PUT_SESSION)
        .bind(session)
        .bind(to_i64(rebuilt.version)?)
        .bind(timestamp(rebuilt.updated_at))
        .execute(&mut *conn)
        .await?;
    let names = serde_json::to_string(&instances.iter().map(|i| &i.name).collect::<Vec<_>>())
        .map_err(encode_error)?;
    sqlx::query(DELETE_INSTANCES_BUT)
        .bind(session)
        .bind(names)
        .execute(&mut *conn)
        .await?;
    upsert_instances(&mut *conn, instances).await?;
    sqlx::query(DEQUEUE_ALL_BUT)
        .bind(session)
        .bind(keep)
        .execute(&mut *conn)
        .await?;
    for chunk in queue.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(RESTORE_QUEUE);
        insert.push("(").push(QUEUE_COLUMNS).push(") ");
        insert.push_values(chunk, |mut row, entry| {
            row.push_bind(session)
                .push_bind(&entry.instance)
                .push_bind(&entry.queue)
                .push_bind(&entry.run)
                .push_bind(timestamp(entry.available_at))
                .push_bind(&entry.lease_owner)
                .push_bind(&entry.lease_token)
                .push_bind(entry.lease_expires_at.map(timestamp));
        });
        insert.push(RESTORE_QUEUE_END);
        insert.build().execute(&mut *conn).await?;
    }
    sqlx::query(PUT_SNAPSHOT)
        .bind(session)
        .bind(to_i64(rebuilt.snapshot.version)?)
        .bind(&rebuilt.snapshot.state)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A commit, encoded and owned.
fn encode(commit: Commit<'_>) -> StoreResult<group::Decision> {
    Ok(group::Decision {
        session: commit.session.to_owned(),
        expected_version: commit.expected_version,
        events: commit
            .events
            .iter()
            .map(NewEvent::new)
            .collect::<StoreResult<Vec<_>>>()?,
        instances: NewInstance::all(&commit.instances)?,
        queue: commit.queue,
    })
}

/// Writes one decision inside the caller's write transaction: the version guard,
/// the events, the instance rows and the queue changes. `Conflict` when the
/// session moved on; `LeaseLost` when a lease op finds the row gone.
async fn write_decision(
    conn: &mut SqliteConnection,
    decision: &group::Decision,
) -> StoreResult<()> {
    let session = decision.session.as_str();
    let conflict = || StoreError::Conflict {
        session: session.to_owned(),
        expected: decision.expected_version,
    };
    if let Some(last) = decision.events.last() {
        let guard = if decision.expected_version == 0 {
            sqlx::query(CREATE_SESSION)
                .bind(session)
                .bind(last.seq)
                .bind(&last.at)
                .execute(&mut *conn)
                .await?
        } else {
            sqlx::query(ADVANCE_SESSION)
                .bind(last.seq)
                .bind(&last.at)
                .bind(session)
                .bind(to_i64(decision.expected_version)?)
                .execute(&mut *conn)
                .await?
        };
        if guard.rows_affected() == 0 {
            return Err(conflict());
        }
        for chunk in decision.events.chunks(CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(INSERT_EVENTS);
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(session)
                    .push_bind(event.seq)
                    .push_bind(event.kind)
                    .push_bind(event.format)
                    .push_bind(&event.data)
                    .push_bind(event.caused_by)
                    .push_bind(event.instance.as_deref())
                    .push_bind(event.trigger.as_deref())
                    .push_bind(&event.at);
            });
            match insert.build().execute(&mut *conn).await {
                Err(err) if is_unique_violation(&err) => return Err(conflict()),
                other => other?,
            };
        }
    }
    upsert_instances(&mut *conn, &decision.instances).await?;
    let mut ops = decision.queue.iter().peekable();
    while let Some(op) = ops.next() {
        match ops.next_if(|next| leases_fresh_row(op, next)) {
            Some(lease) => enqueue_leased(&mut *conn, session, op, lease).await?,
            None => apply_queue_op(&mut *conn, session, op).await?,
        }
    }
    Ok(())
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
        let decision = encode(commit)?;
        write_decision(&mut self.tx, &decision).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// An event, encoded for its row.
struct NewEvent {
    seq: i64,
    kind: &'static str,
    format: i32,
    data: String,
    caused_by: Option<i64>,
    instance: Option<String>,
    trigger: Option<String>,
    at: String,
}

impl NewEvent {
    fn new(event: &Event) -> StoreResult<Self> {
        Ok(Self {
            seq: to_i64(event.seq)?,
            kind: event.payload.kind(),
            format: crate::domain::event::PAYLOAD_FORMAT,
            data: to_json(&event.payload.to_data())?,
            caused_by: event.caused_by.map(to_i64).transpose()?,
            instance: event.payload.instance().map(str::to_owned),
            trigger: event.payload.trigger().map(str::to_owned),
            at: timestamp(event.at),
        })
    }
}

/// An instance row, encoded.
struct NewInstance {
    session: String,
    name: String,
    task: String,
    status: &'static str,
    created_seq: i64,
    updated_at: String,
    body: String,
}

impl NewInstance {
    /// Encodes the rows, keeping only the last of each (session, name): one
    /// multi-row upsert may not touch a row twice.
    fn all(rows: &[InstanceRow]) -> StoreResult<Vec<Self>> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            if seen.insert((row.session.as_str(), row.name.as_str())) {
                out.push(Self {
                    session: row.session.clone(),
                    name: row.name.clone(),
                    task: row.task.clone(),
                    status: row.status.as_str(),
                    created_seq: to_i64(row.created_seq)?,
                    updated_at: timestamp(row.updated_at),
                    body: row.body.clone(),
                });
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// The last entry of each instance, in order.
fn dedup_queue(entries: &[QueueEntry]) -> Vec<&QueueEntry> {
    let mut seen = HashSet::new();
    let mut out: Vec<_> = entries
        .iter()
        .rev()
        .filter(|entry| seen.insert(entry.instance.as_str()))
        .collect();
    out.reverse();
    out
}

async fn upsert_instances(conn: &mut SqliteConnection, rows: &[NewInstance]) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(UPSERT_INSTANCES);
        insert.push_values(chunk, |mut row, instance| {
            row.push_bind(instance.session.as_str())
                .push_bind(instance.name.as_str())
                .push_bind(instance.task.as_str())
                .push_bind(instance.status)
                .push_bind(instance.created_seq)
                .push_bind(&instance.updated_at)
                .push_bind(&instance.body);
        });
        insert.push(UPSERT_INSTANCES_END);
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// An enqueue followed by the lease its committer takes on the fresh row at once
/// (an inline start): [`enqueue_leased`] writes both in one statement.
fn leases_fresh_row(op: &QueueOp, next: &QueueOp) -> bool {
    matches!(
        (op, next),
        (
            QueueOp::Enqueue { instance, available_at, .. },
            QueueOp::Lease { instance: leased, now, current_token: None, .. },
        ) if instance == leased && available_at <= now
    )
}

/// The row an enqueue and then its lease would leave: the lease's conditions
/// hold by construction on a row just enqueued and available.
async fn enqueue_leased(
    conn: &mut SqliteConnection,
    session: &str,
    enqueue: &QueueOp,
    lease: &QueueOp,
) -> StoreResult<()> {
    let (
        QueueOp::Enqueue {
            instance,
            queue,
            run,
            available_at,
        },
        QueueOp::Lease {
            owner,
            token,
            expires_at,
            ..
        },
    ) = (enqueue, lease)
    else {
        unreachable!("checked by leases_fresh_row");
    };
    sqlx::query(ENQUEUE_LEASED)
        .bind(session)
        .bind(instance)
        .bind(queue)
        .bind(run)
        .bind(timestamp(*available_at))
        .bind(owner)
        .bind(token)
        .bind(timestamp(*expires_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn apply_queue_op(
    conn: &mut SqliteConnection,
    session: &str,
    op: &QueueOp,
) -> StoreResult<()> {
    match op {
        QueueOp::Enqueue {
            instance,
            queue,
            run,
            available_at,
        } => {
            sqlx::query(ENQUEUE)
                .bind(session)
                .bind(instance)
                .bind(queue)
                .bind(run)
                .bind(timestamp(*available_at))
                .execute(&mut *conn)
                .await?;
        }
        QueueOp::Remove { instance } => {
            sqlx::query(DEQUEUE)
                .bind(session)
                .bind(instance)
                .execute(&mut *conn)
                .await?;
        }
        QueueOp::Lease {
            instance,
            owner,
            token,
            expires_at,
            now,
            current_token,
        } => {
            let leased = sqlx::query(LEASE)
                .bind(owner)
                .bind(token)
                .bind(timestamp(*expires_at))
                .bind(session)
                .bind(instance)
                .bind(timestamp(*now))
                .bind(current_token)
                .execute(&mut *conn)
                .await?;
            if leased.rows_affected() == 0 {
                return Err(StoreError::LeaseLost {
                    session: session.to_owned(),
                    instance: instance.clone(),
                });
            }
        }
    }
    Ok(())
}

fn decode_event(session: &str, row: &SqliteRow) -> StoreResult<Event> {
    EventRow {
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        format: row.try_get("format")?,
        data: row.try_get("data")?,
        caused_by: row.try_get("caused_by")?,
        at: row.try_get("at")?,
    }
    .decode(session)
}

/// A log as [`SESSION_LOGS`] aggregates it. Each payload is decoded from its
/// slice of the log's text, without a JSON tree of the log built first.
fn decode_log(session: &str, log: &str) -> StoreResult<Vec<Event>> {
    let logged: Vec<LoggedEvent> = serde_json::from_str(log)
        .map_err(|err| StoreError::Corrupt(format!("log of session {session:?}: {err}")))?;
    logged
        .iter()
        .map(|LoggedEvent(seq, kind, format, data, caused_by, at)| {
            EventRow {
                seq: *seq,
                kind,
                format: *format,
                data: data.get(),
                caused_by: *caused_by,
                at,
            }
            .decode(session)
        })
        .collect()
}

/// An event of an aggregated log: `[seq, kind, format, data, caused_by, at]`,
/// borrowed from the log's text wherever JSON escaping allows.
#[derive(serde::Deserialize)]
struct LoggedEvent<'a>(
    i64,
    #[serde(borrow)] Cow<'a, str>,
    i32,
    #[serde(borrow)] &'a RawValue,
    Option<i64>,
    #[serde(borrow)] Cow<'a, str>,
);

/// An event row as read, its text columns borrowed.
struct EventRow<'a> {
    seq: i64,
    kind: &'a str,
    format: i32,
    data: &'a str,
    caused_by: Option<i64>,
    at: &'a str,
}

impl EventRow<'_> {
    fn decode(self, session: &str) -> StoreResult<Event> {
        let EventRow {
            seq,
            kind,
            format,
            data,
            caused_by,
            at,
        } = self;
        let corrupt = |what: String| {
            StoreError::Corrupt(format!("event {seq} of session {session:?}: {what}"))
        };
        Ok(Event {
            seq: u64::try_from(seq).map_err(|_| corrupt("negative seq".into()))?,
            at: parse_timestamp(at).map_err(|err| corrupt(err.to_string()))?,
            caused_by: caused_by
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("negative causedBy".into()))?,
            payload: EventPayload::from_data_text(kind, format, data)
                .map_err(|err| corrupt(err.to_string()))?,
        })
    }
}

fn decode_instance(row: &SqliteRow) -> StoreResult<InstanceRow> {
    let session: String = row.try_get("session")?;
    let name: String = row.try_get("name")?;
    let corrupt = |what: String| {
        StoreError::Corrupt(format!("instance {name:?} of session {session:?}: {what}"))
    };
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<InstanceStatus>()
        .map_err(|err| corrupt(err.to_string()))?;
    let created_seq: i64 = row.try_get("created_seq")?;
    let created_seq =
        u64::try_from(created_seq).map_err(|_| corrupt("negative created_seq".into()))?;
    let updated_at = parse_timestamp(&row.try_get::<String, _>("updated_at")?)?;
    let body: String = row.try_get("body")?;
    let task = row.try_get("task")?;
    Ok(InstanceRow {
        session,
        name,
        task,
        status,
        created_seq,
        updated_at,
        body,
    })
}

fn decode_queue_entry(row: &SqliteRow) -> StoreResult<QueueEntry> {
    let lease_expires_at: Option<String> = row.try_get("lease_expires_at")?;
    Ok(QueueEntry {
        session: row.try_get("session")?,
        instance: row.try_get("instance")?,
        queue: row.try_get("queue")?,
        run: row.try_get("run")?,
        available_at: parse_timestamp(&row.try_get::<String, _>("available_at")?)?,
        lease_owner: row.try_get("lease_owner")?,
        lease_token: row.try_get("lease_token")?,
        lease_expires_at: lease_expires_at
            .as_deref()
            .map(parse_timestamp)
            .transpose()?,
    })
}

/// A timestamp as stored: UTC, microseconds, fixed width.
fn timestamp(at: DateTime<Utc>) -> String {
    at.format(TIMESTAMP_FORMAT).to_string()
}

fn parse_timestamp(text: &str) -> StoreResult<DateTime<Utc>> {
    if let Some(at) = crate::domain::state::parse_timestamp(text) {
        return Ok(at);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt(format!("timestamp {text:?}: {err}")))
}

fn to_json(value: &Value) -> StoreResult<String> {
    serde_json::to_string(value).map_err(encode_error)
}

fn to_i64(n: u64) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| encode_error(format!("{n} does not fit a 64-bit integer column")))
}

fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what} {n}")))
}

fn encode_error(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(sqlx::Error::Encode(err.into()))
}

/// `SQLITE_CONSTRAINT_PRIMARYKEY` (1555) or `SQLITE_CONSTRAINT_UNIQUE` (2067).
fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("1555" | "2067")),
        _ => false,
    }
}
