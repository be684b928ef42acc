//! SQLite's SQL for the operator's operations ([`Admin`]): export pages,
//! appends of imported events, purges and the queue aggregate.
//!
//! Writes take this process's writer turn and `BEGIN IMMEDIATE`, like every
//! other write of this backend. Timestamps are the stored fixed-form text,
//! passed through as they are.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::super::admin::{
    age, Admin, Append, PurgeCandidate, PurgeRecord, QueueStat, RawEvent, UNRESOLVED,
};
use super::super::codec::{encode_error, parse_timestamp, timestamp, to_i64, to_u64};
use super::{SqliteStore, BEGIN_WRITE};
use crate::store::{StoreError, StoreResult};

const EXPORT_ALL: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session >= $1 AND (session > $1 OR seq > $2) ORDER BY session, seq LIMIT $3";

const EXPORT_ONE: &str = "SELECT session, seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3";

const VERSIONS: &str =
    "SELECT uid, version FROM sessions WHERE uid IN (SELECT value FROM json_each($1))";

const CREATE_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (uid) DO NOTHING";

const ADVANCE_SESSION: &str =
    "UPDATE sessions SET version = $2, updated_at = $3 WHERE uid = $1 AND version = $4";

/// Rows per multi-row `INSERT` (9 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 500;

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
         (SELECT 1 FROM instances AS i WHERE i.session = s.uid AND i.status IN ({UNRESOLVED}))"
    )
}

const RECORD_PURGE: &str = "INSERT INTO purges \
     (session, events, last_event_at, resolved_before, purged_at, purged_by, in_progress) \
     VALUES ($1, $2, $3, $4, $5, $6, 1)";

/// What a purge removes of a session, the log first (allowed while its
/// `purges` row is in progress).
const PURGE_ROWS: [&str; 5] = [
    "DELETE FROM events WHERE session = $1",
    "DELETE FROM instances WHERE session = $1",
    "DELETE FROM queue WHERE session = $1",
    "DELETE FROM snapshots WHERE session = $1",
    "DELETE FROM sessions WHERE uid = $1",
];

const PURGES_DONE: &str = "UPDATE purges SET in_progress = 0 WHERE in_progress = 1";

const PURGES: &str = "SELECT session, events, last_event_at, resolved_before, purged_at, \
     purged_by FROM purges ORDER BY id";

const QUEUE_STATS: &str = "SELECT queue, COUNT(*) AS depth, \
     MIN(CASE WHEN available_at <= $1 THEN available_at END) AS oldest FROM queue \
     WHERE lease_token IS NULL OR lease_expires_at <= $1 GROUP BY queue ORDER BY queue";

fn raw_event(row: &SqliteRow) -> StoreResult<RawEvent> {
    let session: String = row.try_get("session")?;
    let seq = to_u64(row.try_get("seq")?, "seq")?;
    let at: String = row.try_get("at")?;
    Ok(RawEvent {
        kind: row.try_get("kind")?,
        format: row.try_get("format")?,
        data: row.try_get("data")?,
        caused_by: row
            .try_get::<Option<i64>, _>("caused_by")?
            .map(|n| to_u64(n, "causedBy"))
            .transpose()?,
        // Any stored spelling, in the one fixed form.
        at: timestamp(parse_timestamp(&at)?),
        session,
        seq,
    })
}

#[async_trait]
impl Admin for SqliteStore {
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
        let list = serde_json::to_string(sessions).map_err(encode_error)?;
        let rows = sqlx::query(VERSIONS)
            .bind(list)
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
        if appends.iter().all(|a| a.events.is_empty()) {
            return Ok(());
        }
        let _writer = self.write_turn().await?;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        for append in appends {
            let Some(last) = append.events.last() else {
                continue;
            };
            let guard = |sql| {
                sqlx::query(sql)
                    .bind(&append.session)
                    .bind(to_i64(last.event.seq).unwrap_or(i64::MAX))
                    .bind(&last.event.at)
            };
            let guarded = if append.expected_version == 0 {
                guard(CREATE_SESSION).execute(&mut *tx).await?
            } else {
                guard(ADVANCE_SESSION)
                    .bind(to_i64(append.expected_version)?)
                    .execute(&mut *tx)
                    .await?
            };
            if guarded.rows_affected() != 1 {
                return Err(StoreError::Conflict {
                    session: append.session.clone(),
                    expected: append.expected_version,
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
            .bind(timestamp(before))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PurgeCandidate {
                    session: row.try_get("uid")?,
                    version: to_u64(row.try_get("version")?, "session version")?,
                    updated_at: parse_timestamp(row.try_get("updated_at")?)?,
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
        let _writer = self.write_turn().await?;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let still = still_purgeable_sql();
        let now = timestamp(crate::engine::now());
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
                .bind(timestamp(candidate.updated_at))
                .bind(timestamp(resolved_before))
                .bind(&now)
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
                    last_event_at: parse_timestamp(row.try_get("last_event_at")?)?,
                    resolved_before: parse_timestamp(row.try_get("resolved_before")?)?,
                    purged_at: parse_timestamp(row.try_get("purged_at")?)?,
                    purged_by: row.try_get("purged_by")?,
                })
            })
            .collect()
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<QueueStat>> {
        let rows = sqlx::query(QUEUE_STATS)
            .bind(timestamp(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let oldest: Option<String> = row.try_get("oldest")?;
                Ok(QueueStat {
                    queue: row.try_get("queue")?,
                    depth: to_u64(row.try_get("depth")?, "queue depth")?,
                    oldest_age: age(now, oldest.as_deref().map(parse_timestamp).transpose()?),
                })
            })
            .collect()
    }
}

/// One multi-row `INSERT` of events.
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[&crate::store::AppendedEvent],
) -> StoreResult<()> {
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, \
         trigger_name, at) ",
    );
    let mut failed = None;
    insert.push_values(events, |mut row, appended| {
        let event = &appended.event;
        let seq = to_i64(event.seq);
        let caused_by = event.caused_by.map(to_i64).transpose();
        let (seq, caused_by) = match (seq, caused_by) {
            (Ok(seq), Ok(caused_by)) => (seq, caused_by),
            (Err(err), _) | (_, Err(err)) => {
                failed.get_or_insert(err);
                (0, None)
            }
        };
        row.push_bind(event.session.clone())
            .push_bind(seq)
            .push_bind(event.kind.clone())
            .push_bind(event.format)
            .push_bind(event.data.clone())
            .push_bind(caused_by)
            .push_bind(appended.instance.clone())
            .push_bind(appended.trigger.clone())
            .push_bind(event.at.clone());
    });
    if let Some(err) = failed {
        return Err(err);
    }
    insert.build().execute(conn).await?;
    Ok(())
}
