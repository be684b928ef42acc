//! The PostgreSQL backend: the [`Store`] trait as SQL over a `PgPool`.
//!
//! Owns the pool settings, the SQL of every store operation and the decoding of
//! its rows. Several server processes may share one database: the session row's
//! version (checked and advanced first in every commit, under its row lock) and
//! the unique key on (session, seq) keep their appends from interleaving, and
//! queue leases are taken by conditional `UPDATE`s inside the same transaction.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{
    group_logs, Commit, InstanceRow, LockedSession, QueueEntry, QueueOp, Rebuilt, SessionSummary,
    Store, StoreError, StoreResult, StoredSnapshot,
};
use crate::domain::{Event, EventPayload, InstanceStatus};

mod one_trip;

const PING: &str = "SELECT 1";

/// The guard of a session's first commit: fails (0 rows) if someone else created it.
const CREATE_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (uid) DO NOTHING";

/// The guard of every later commit: fails (0 rows) if the version moved on. A
/// concurrent writer waits on the row lock, then sees the new version.
const ADVANCE_SESSION: &str =
    "UPDATE sessions SET version = $1, updated_at = $2 WHERE uid = $3 AND version = $4";

/// `replace_projections`: the version is whatever the log says.
const PUT_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (uid) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at";

/// Followed by `VALUES (..), (..)`.
const INSERT_EVENTS: &str =
    "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, trigger_name, at) ";

const SESSION_VERSION: &str = "SELECT version FROM sessions WHERE uid = $1";

/// A NULL limit means none.
/// `lock_session`: the session's row lock, held until the transaction ends.
const LOCK_SESSION: &str = "SELECT version FROM sessions WHERE uid = $1 FOR UPDATE";

const EVENTS_AFTER: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3";

const EVENTS_BY_SEQ: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq = ANY($2) ORDER BY seq";

const INSTANCE_EVENTS: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND instance = $2 ORDER BY seq";

const SNAPSHOT: &str = "SELECT version, state FROM snapshots WHERE session = $1";

/// Never replaces a newer snapshot with an older one.
const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (session, version, state) VALUES ($1, $2, $3) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE excluded.version >= snapshots.version";

/// `replace_projections`: a rebuilt snapshot is always right, whatever was there
/// (an identical one is left alone).
const PUT_SNAPSHOT: &str = "INSERT INTO snapshots (session, version, state) VALUES ($1, $2, $3) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE (snapshots.version, snapshots.state) IS DISTINCT FROM (excluded.version, excluded.state)";

/// UIDs are never empty, so `uid > ''` lists them all.
const SESSIONS: &str = "SELECT uid, version, updated_at FROM sessions \
     WHERE uid > $1 ORDER BY uid LIMIT $2";

/// Sessions with a sessions row, and any with events but no row (a crash
/// cannot leave one, but `rebuild` should repair it if it happens).
const SESSION_UIDS: &str = "SELECT uid FROM sessions UNION SELECT session FROM events ORDER BY 1";

const SESSION_LOGS: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session = ANY($1) ORDER BY session, seq";

/// Followed by `VALUES (..), (..)` and [`UPSERT_INSTANCES_END`].
const UPSERT_INSTANCES: &str =
    "INSERT INTO instances (session, name, task, status, created_seq, updated_at, body) ";
/// A row that would not change is left alone (no new row version), so a
/// `rebuild` over projections that were right writes next to nothing.
const UPSERT_INSTANCES_END: &str = " ON CONFLICT (session, name) DO UPDATE SET \
     task = excluded.task, status = excluded.status, created_seq = excluded.created_seq, \
     updated_at = excluded.updated_at, body = excluded.body \
     WHERE (instances.task, instances.status, instances.created_seq, instances.updated_at, \
     instances.body) IS DISTINCT FROM (excluded.task, excluded.status, excluded.created_seq, \
     excluded.updated_at, excluded.body)";

/// `replace_projections`: drops the session's instances not in `$2`.
const DELETE_INSTANCES_BUT: &str = "DELETE FROM instances WHERE session = $1 AND name <> ALL($2)";

/// Followed by the filters built in `instances`, then [`INSTANCES_END`].
const INSTANCES: &str =
    "SELECT session, name, task, status, created_seq, updated_at, body FROM instances WHERE TRUE";
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
     VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL) \
     ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, run = excluded.run, \
     available_at = excluded.available_at, \
     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

const DEQUEUE: &str = "DELETE FROM queue WHERE session = $1 AND instance = $2";

/// Takes a free or expired lease (no `$7`), or renews one still held under token
/// `$7`; 0 rows means it is lost. An expired token is refused even if nobody
/// re-claimed the row yet.
const LEASE: &str = "UPDATE queue SET lease_owner = $1, lease_token = $2, lease_expires_at = $3 \
     WHERE session = $4 AND instance = $5 AND available_at <= $6 \
     AND (($7::text IS NULL AND (lease_token IS NULL OR lease_expires_at <= $6)) \
     OR (lease_token = $7 AND lease_expires_at > $6))";

const QUEUE_COLUMNS: &str =
    "session, instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at";

const CLAIMABLE: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE queue = $1 AND available_at <= $2 AND (lease_token IS NULL OR lease_expires_at <= $2) \
     ORDER BY available_at, session, instance LIMIT $3";

const LEASED: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue WHERE lease_token = $1";

const EXPIRED_LEASES: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE lease_token IS NOT NULL AND lease_expires_at <= $1 \
     ORDER BY lease_expires_at, session, instance LIMIT $2";

/// `replace_projections`: drops the session's rows not in `$2`.
const DEQUEUE_ALL_BUT: &str = "DELETE FROM queue WHERE session = $1 AND instance <> ALL($2)";

/// Followed by `VALUES (..), (..)` and [`RESTORE_QUEUE_END`]: existing rows keep
/// their lease.
const RESTORE_QUEUE: &str = "INSERT INTO queue ";
const RESTORE_QUEUE_END: &str = " ON CONFLICT (session, instance) DO UPDATE SET \
     queue = excluded.queue, run = excluded.run, available_at = excluded.available_at \
     WHERE (queue.queue, queue.run, queue.available_at) \
     IS DISTINCT FROM (excluded.queue, excluded.run, excluded.available_at)";

/// Rows per multi-row INSERT, well under PostgreSQL's 65535 bound parameters.
const CHUNK: usize = 500;

/// Overrides the pool's maximum number of connections (default 16).
pub const POOL_SIZE_ENV: &str = "TRIGGERS_PG_POOL_SIZE";

/// How long a request waits for a connection (including reconnecting after the
/// server went away) before it fails as `UNAVAILABLE`.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections per process unless [`POOL_SIZE_ENV`] says otherwise.
const DEFAULT_POOL_SIZE: u32 = 16;

/// The store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Every operation takes a connection from here; writes hold one for their
    /// transaction.
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`) and
    /// brings its schema up to date.
    ///
    /// The pool holds at most 16 connections, or as many as the environment
    /// variable `TRIGGERS_PG_POOL_SIZE` says. Several processes may connect at once:
    /// migrations run under an advisory lock.
    ///
    /// # Errors
    /// A malformed URL or pool size, a database that does not answer, or a failed
    /// migration.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size_from_env()?)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool (for benchmarks and tooling).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Reads [`POOL_SIZE_ENV`].
fn pool_size_from_env() -> StoreResult<u32> {
    let Ok(value) = std::env::var(POOL_SIZE_ENV) else {
        return Ok(DEFAULT_POOL_SIZE);
    };
    match value.trim().parse::<u32>() {
        Ok(size) if size > 0 => Ok(size),
        _ => Err(StoreError::Backend(sqlx::Error::Configuration(
            format!("{POOL_SIZE_ENV}={value:?}: expected a positive number of connections").into(),
        ))),
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
        if commit.events.is_empty() && commit.instances.is_empty() && commit.queue.is_empty() {
            return Ok(());
        }
        if one_trip::commit(&self.pool, &commit).await? {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        write_decision(&mut tx, &commit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn lock_session(&self, session: &str) -> StoreResult<Box<dyn LockedSession + '_>> {
        let mut tx = self.pool.begin().await?;
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
        for rebuilt in rebuilt {
            replace_session(&mut tx, rebuilt).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// One session's part of `replace_projections`.
async fn replace_session(conn: &mut PgConnection, rebuilt: &Rebuilt) -> StoreResult<()> {
    let session = rebuilt.session.as_str();
    let instances = NewInstance::all(&rebuilt.instances)?;
    let queue = dedup_queue(&rebuilt.queue);
    let keep: Vec<&str> = queue.iter().map(|entry| entry.instance.as_str()).collect();
    let state = rebuilt.snapshot.state.as_str();
    sqlx::query(PUT_SESSION)
        .bind(session)
        .bind(to_i64(rebuilt.version)?)
        .bind(rebuilt.updated_at)
        .execute(&mut *conn)
        .await?;
    let names: Vec<&str> = instances.iter().map(|i| i.name).collect();
    sqlx::query(DELETE_INSTANCES_BUT)
        .bind(session)
        .bind(names)
        .execute(&mut *conn)
        .await?;
    upsert_instances(&mut *conn, &instances).await?;
    sqlx::query(DEQUEUE_ALL_BUT)
        .bind(session)
        .bind(keep)
        .execute(&mut *conn)
        .await?;
    for chunk in queue.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Postgres>::new(RESTORE_QUEUE);
        insert.push("(").push(QUEUE_COLUMNS).push(") ");
        insert.push_values(chunk, |mut row, entry| {
            row.push_bind(session)
                .push_bind(&entry.instance)
                .push_bind(&entry.queue)
                .push_bind(&entry.run)
                .push_bind(entry.available_at)
                .push_bind(&entry.lease_owner)
                .push_bind(&entry.lease_token)
                .push_bind(entry.lease_expires_at);
        });
        insert.push(RESTORE_QUEUE_END);
        insert.build().execute(&mut *conn).await?;
    }
    sqlx::query(PUT_SNAPSHOT)
        .bind(session)
        .bind(to_i64(rebuilt.snapshot.version)?)
        .bind(state)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes one decision inside the caller's transaction: the version guard, the
/// events, the instance rows and the queue changes. `Conflict` when the session
/// moved on; `LeaseLost` when a lease op finds the row gone.
async fn write_decision(conn: &mut PgConnection, decision: &Commit<'_>) -> StoreResult<()> {
    let session = decision.session;
    let conflict = || StoreError::Conflict {
        session: session.to_owned(),
        expected: decision.expected_version,
    };
    let events = decision
        .events
        .iter()
        .map(NewEvent::new)
        .collect::<StoreResult<Vec<_>>>()?;
    let instances = NewInstance::all(&decision.instances)?;

    if let Some(last) = events.last() {
        let guard = if decision.expected_version == 0 {
            sqlx::query(CREATE_SESSION)
                .bind(session)
                .bind(last.seq)
                .bind(last.at)
                .execute(&mut *conn)
                .await?
        } else {
            sqlx::query(ADVANCE_SESSION)
                .bind(last.seq)
                .bind(last.at)
                .bind(session)
                .bind(to_i64(decision.expected_version)?)
                .execute(&mut *conn)
                .await?
        };
        if guard.rows_affected() == 0 {
            return Err(conflict());
        }
        for chunk in events.chunks(CHUNK) {
            let mut insert = QueryBuilder::<Postgres>::new(INSERT_EVENTS);
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(session)
                    .push_bind(event.seq)
                    .push_bind(event.kind)
                    .push_bind(event.format)
                    .push_bind(&event.data)
                    .push_bind(event.caused_by)
                    .push_bind(event.instance)
                    .push_bind(event.trigger)
                    .push_bind(event.at);
            });
            match insert.build().execute(&mut *conn).await {
                Err(err) if is_unique_violation(&err) => return Err(conflict()),
                other => other?,
            };
        }
    }
    upsert_instances(&mut *conn, &instances).await?;
    for op in &decision.queue {
        apply_queue_op(&mut *conn, session, op).await?;
    }
    Ok(())
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
        write_decision(&mut self.tx, &commit).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// An event, encoded for its row.
struct NewEvent<'a> {
    seq: i64,
    kind: &'static str,
    format: i32,
    data: String,
    caused_by: Option<i64>,
    instance: Option<&'a str>,
    trigger: Option<&'a str>,
    at: DateTime<Utc>,
}

impl<'a> NewEvent<'a> {
    fn new(event: &'a Event) -> StoreResult<Self> {
        Ok(Self {
            seq: to_i64(event.seq)?,
            kind: event.payload.kind(),
            format: crate::domain::event::PAYLOAD_FORMAT,
            data: to_json(&event.payload.to_data())?,
            caused_by: event.caused_by.map(to_i64).transpose()?,
            instance: event.payload.instance(),
            trigger: event.payload.trigger(),
            at: event.at,
        })
    }
}

/// An instance row, encoded.
struct NewInstance<'a> {
    session: &'a str,
    name: &'a str,
    task: &'a str,
    status: &'static str,
    created_seq: i64,
    updated_at: DateTime<Utc>,
    body: &'a str,
}

impl<'a> NewInstance<'a> {
    /// Encodes the rows, keeping only the last of each (session, name): one
    /// multi-row upsert may not touch a row twice.
    fn all(rows: &'a [InstanceRow]) -> StoreResult<Vec<Self>> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            if seen.insert((row.session.as_str(), row.name.as_str())) {
                out.push(Self {
                    session: &row.session,
                    name: &row.name,
                    task: &row.task,
                    status: row.status.as_str(),
                    created_seq: to_i64(row.created_seq)?,
                    updated_at: row.updated_at,
                    body: &row.body,
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

async fn upsert_instances(conn: &mut PgConnection, rows: &[NewInstance<'_>]) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Postgres>::new(UPSERT_INSTANCES);
        insert.push_values(chunk, |mut row, instance| {
            row.push_bind(instance.session)
                .push_bind(instance.name)
                .push_bind(instance.task)
                .push_bind(instance.status)
                .push_bind(instance.created_seq)
                .push_bind(instance.updated_at)
                .push_bind(instance.body);
        });
        insert.push(UPSERT_INSTANCES_END);
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

async fn apply_queue_op(conn: &mut PgConnection, session: &str, op: &QueueOp) -> StoreResult<()> {
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
                .bind(available_at)
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
                .bind(expires_at)
                .bind(session)
                .bind(instance)
                .bind(now)
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

fn decode_event(session: &str, row: &PgRow) -> StoreResult<Event> {
    let seq: i64 = row.try_get("seq")?;
    let corrupt =
        |what: String| StoreError::Corrupt(format!("event {seq} of session {session:?}: {what}"));
    let kind: &str = row.try_get("kind")?;
    let format: i32 = row.try_get("format")?;
    let data: &str = row.try_get("data")?;
    let caused_by: Option<i64> = row.try_get("caused_by")?;
    Ok(Event {
        seq: u64::try_from(seq).map_err(|_| corrupt("negative seq".into()))?,
        at: row.try_get("at")?,
        caused_by: caused_by
            .map(u64::try_from)
            .transpose()
            .map_err(|_| corrupt("negative causedBy".into()))?,
        payload: EventPayload::from_data_text(kind, format, data)
            .map_err(|err| corrupt(err.to_string()))?,
    })
}

fn decode_instance(row: &PgRow) -> StoreResult<InstanceRow> {
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
    let body: String = row.try_get("body")?;
    Ok(InstanceRow {
        task: row.try_get("task")?,
        status,
        created_seq,
        updated_at: row.try_get("updated_at")?,
        body,
        session,
        name,
    })
}

fn decode_queue_entry(row: &PgRow) -> StoreResult<QueueEntry> {
    Ok(QueueEntry {
        session: row.try_get("session")?,
        instance: row.try_get("instance")?,
        queue: row.try_get("queue")?,
        run: row.try_get("run")?,
        available_at: row.try_get("available_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_token: row.try_get("lease_token")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
    })
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

/// `unique_violation` (SQLSTATE 23505).
/// A unique violation of the log's (session, seq) key: another writer took the seq.
fn is_event_collision(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some("events_pkey")
        }
        _ => false,
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().as_deref() == Some("23505"),
        _ => false,
    }
}
