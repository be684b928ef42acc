//! PostgreSQL's SQL for the operator's operations ([`Admin`]): export pages,
//! appends of imported events, purges and the queue aggregate.
//!
//! A purge locks each session row it removes (`FOR UPDATE`), so a server
//! writing to the session at the same time waits, then finds it gone and
//! starts it again. Timestamps are `timestamptz`, exported in the fixed form.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::super::admin::{
    age, Admin, Append, PurgeCandidate, PurgeRecord, QueueStat, RawEvent, UNRESOLVED,
};
use super::super::codec::{parse_timestamp, timestamp, to_i64, to_u64};
use super::PostgresStore;
use crate::store::{StoreError, StoreResult};

const EXPORT_ALL: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session >= $1 AND (session > $1 OR seq > $2) ORDER BY session, seq LIMIT $3";

const EXPORT_ONE: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3";

const VERSIONS: &str = "SELECT uid, version FROM sessions WHERE uid = ANY($1)";

/// First appends: `$1` uids, `$2` versions, `$3` times; returns those created.
const CREATE_SESSIONS: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) \
     ON CONFLICT (uid) DO NOTHING RETURNING uid";

/// Later appends, each if its session is at `$4`; returns those advanced.
const ADVANCE_SESSIONS: &str = "UPDATE sessions AS s SET version = v.version, updated_at = v.at \
     FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::bigint[]) \
     AS v(uid, version, at, expected) WHERE s.uid = v.uid AND s.version = v.expected \
     RETURNING s.uid";

/// Every event of a batch in one statement, a column per array.
const INSERT_EVENTS: &str = "INSERT INTO events (session, seq, kind, format, data, caused_by, \
     instance, trigger_name, at) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], \
     $4::int[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::timestamptz[])";

/// Events per `INSERT` (bounds the statement's size).
const INSERT_CHUNK: usize = 10_000;

fn candidates_sql() -> String {
    format!(
        "SELECT uid, version, updated_at FROM sessions AS s \
         WHERE updated_at < $1 AND uid > $2 AND NOT EXISTS \
         (SELECT 1 FROM instances AS i WHERE i.session = s.uid AND i.status IN ({UNRESOLVED})) \
         ORDER BY uid LIMIT $3"
    )
}

/// The session, if it is still at `$2` with every instance resolved.
fn still_purgeable_sql() -> String {
    format!(
        "SELECT uid FROM sessions AS s WHERE uid = $1 AND version = $2 AND NOT EXISTS \
         (SELECT 1 FROM instances AS i WHERE i.session = s.uid AND i.status IN ({UNRESOLVED})) \
         FOR UPDATE OF s"
    )
}

const RECORD_PURGE: &str = "INSERT INTO purges \
     (session, events, last_event_at, resolved_before, purged_at, purged_by, in_progress) \
     VALUES ($1, $2, $3, $4, $5, $6, TRUE)";

/// What a purge removes of a session, the log first (allowed while its
/// `purges` row is in progress).
const PURGE_ROWS: [&str; 5] = [
    "DELETE FROM events WHERE session = $1",
    "DELETE FROM instances WHERE session = $1",
    "DELETE FROM queue WHERE session = $1",
    "DELETE FROM snapshots WHERE session = $1",
    "DELETE FROM sessions WHERE uid = $1",
];

const PURGES_DONE: &str = "UPDATE purges SET in_progress = FALSE WHERE in_progress";

const PURGES: &str = "SELECT session, events, last_event_at, resolved_before, purged_at, \
     purged_by FROM purges ORDER BY id";

const QUEUE_STATS: &str = "SELECT queue, COUNT(*) AS depth, \
     MIN(CASE WHEN available_at <= $1 THEN available_at END) AS oldest FROM queue \
     WHERE lease_token IS NULL OR lease_expires_at <= $1 GROUP BY queue ORDER BY queue";

fn raw_event(row: &PgRow) -> StoreResult<RawEvent> {
    let session: String = row.try_get("session")?;
    let seq = to_u64(row.try_get("seq")?, "seq")?;
    let at: DateTime<Utc> = row.try_get("at")?;
    Ok(RawEvent {
        kind: row.try_get("kind")?,
        format: row.try_get("format")?,
        data: row.try_get("data")?,
        caused_by: row
            .try_get::<Option<i64>, _>("caused_by")?
            .map(|n| to_u64(n, "causedBy"))
            .transpose()?,
        at: timestamp(at),
        session,
        seq,
    })
}

#[async_trait]
impl Admin for PostgresStore {
    async fn export_page(
        &self,
        only: Option<&str>,
        after: (&str, u64),
        limit: u32,
    ) -> StoreResult<Vec<RawEvent>> {
        let query = match only {
            Some(session) => sqlx::query(EXPORT_ONE).bind(session),
            None => sqlx::query(EXPORT_ALL).bind(after.0),
        };
        let rows = query
            .bind(to_i64(after.1)?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(raw_event).collect()
    }

    async fn versions(&self, sessions: &[String]) -> StoreResult<Vec<u64>> {
        let rows = sqlx::query(VERSIONS)
            .bind(sessions)
            .fetch_all(&self.pool)
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let uid: String = row.try_get("uid")?;
            found.insert(uid, to_u64(row.try_get("version")?, "session version")?);
        }
        Ok(sessions
            .iter()
            .map(|s| found.get(s).copied().unwrap_or(0))
            .collect())
    }

    async fn append(&self, appends: &[Append]) -> StoreResult<()> {
        let appends: Vec<&Append> = appends.iter().filter(|a| !a.events.is_empty()).collect();
        if appends.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for first in [true, false] {
            let guarded: Vec<&Append> = appends
                .iter()
                .copied()
                .filter(|a| (a.expected_version == 0) == first)
                .collect();
            if guarded.is_empty() {
                continue;
            }
            let mut uids = Vec::with_capacity(guarded.len());
            let mut versions = Vec::with_capacity(guarded.len());
            let mut ats = Vec::with_capacity(guarded.len());
            let mut expected = Vec::with_capacity(guarded.len());
            for append in &guarded {
                let last = &append.events.last().expect("non-empty").event;
                uids.push(append.session.as_str());
                versions.push(to_i64(last.seq)?);
                ats.push(parse_timestamp(&last.at)?);
                expected.push(to_i64(append.expected_version)?);
            }
            let query = if first {
                sqlx::query_scalar(CREATE_SESSIONS)
            } else {
                sqlx::query_scalar(ADVANCE_SESSIONS)
            };
            let mut query = query.bind(&uids).bind(&versions).bind(&ats);
            if !first {
                query = query.bind(&expected);
            }
            let passed: Vec<String> = query.fetch_all(&mut *tx).await?;
            if passed.len() != guarded.len() {
                let passed: std::collections::HashSet<&str> =
                    passed.iter().map(String::as_str).collect();
                let stale = guarded
                    .iter()
                    .find(|a| !passed.contains(a.session.as_str()))
                    .expect("one did not pass");
                return Err(StoreError::Conflict {
                    session: stale.session.clone(),
                    expected: stale.expected_version,
                });
            }
        }
        let events: Vec<&crate::store::AppendedEvent> =
            appends.iter().flat_map(|a| &a.events).collect();
        for chunk in events.chunks(INSERT_CHUNK) {
            insert_events(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_candidates(
        &self,
        before: DateTime<Utc>,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<PurgeCandidate>> {
        let rows = sqlx::query(&candidates_sql())
            .bind(before)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PurgeCandidate {
                    session: row.try_get("uid")?,
                    version: to_u64(row.try_get("version")?, "session version")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn purge(
        &self,
        sessions: &[PurgeCandidate],
        resolved_before: DateTime<Utc>,
        by: &str,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let still = still_purgeable_sql();
        let now = crate::engine::now();
        let mut purged = Vec::with_capacity(sessions.len());
        for candidate in sessions {
            let found = sqlx::query(&still)
                .bind(&candidate.session)
                .bind(to_i64(candidate.version)?)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                continue;
            }
            sqlx::query(RECORD_PURGE)
                .bind(&candidate.session)
                .bind(to_i64(candidate.version)?)
                .bind(candidate.updated_at)
                .bind(resolved_before)
                .bind(now)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            for sql in PURGE_ROWS {
                sqlx::query(sql)
                    .bind(&candidate.session)
                    .execute(&mut *tx)
                    .await?;
            }
            purged.push(candidate.session.clone());
        }
        sqlx::query(PURGES_DONE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(purged)
    }

    async fn purges(&self) -> StoreResult<Vec<PurgeRecord>> {
        let rows = sqlx::query(PURGES).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(PurgeRecord {
                    session: row.try_get("session")?,
                    events: to_u64(row.try_get("events")?, "purged events")?,
                    last_event_at: row.try_get("last_event_at")?,
                    resolved_before: row.try_get("resolved_before")?,
                    purged_at: row.try_get("purged_at")?,
                    purged_by: row.try_get("purged_by")?,
                })
            })
            .collect()
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<QueueStat>> {
        let rows = sqlx::query(QUEUE_STATS)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueStat {
                    queue: row.try_get("queue")?,
                    depth: to_u64(row.try_get("depth")?, "queue depth")?,
                    oldest_age: age(now, row.try_get("oldest")?),
                })
            })
            .collect()
    }
}

/// One `INSERT` of events, their columns as arrays.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[&crate::store::AppendedEvent],
) -> StoreResult<()> {
    let mut columns = EventColumns::default();
    for appended in events {
        let event = &appended.event;
        columns.session.push(event.session.as_str());
        columns.seq.push(to_i64(event.seq)?);
        columns.kind.push(event.kind.as_str());
        columns.format.push(event.format);
        columns.data.push(event.data.as_str());
        columns
            .caused_by
            .push(event.caused_by.map(to_i64).transpose()?);
        columns.instance.push(appended.instance.as_deref());
        columns.trigger.push(appended.trigger.as_deref());
        columns.at.push(parse_timestamp(&event.at)?);
    }
    sqlx::query(INSERT_EVENTS)
        .bind(&columns.session)
        .bind(&columns.seq)
        .bind(&columns.kind)
        .bind(&columns.format)
        .bind(&columns.data)
        .bind(&columns.caused_by)
        .bind(&columns.instance)
        .bind(&columns.trigger)
        .bind(&columns.at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The columns of [`INSERT_EVENTS`].
#[derive(Default)]
struct EventColumns<'a> {
    session: Vec<&'a str>,
    seq: Vec<i64>,
    kind: Vec<&'a str>,
    format: Vec<i32>,
    data: Vec<&'a str>,
    caused_by: Vec<Option<i64>>,
    instance: Vec<Option<&'a str>>,
    trigger: Vec<Option<&'a str>>,
    at: Vec<DateTime<Utc>>,
}
