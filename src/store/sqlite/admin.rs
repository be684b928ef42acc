//! SQLite's SQL for the operator's operations ([`Admin`]): export pages,
//! appends of imported events, purges and the queue aggregate.
//!
//! Writes take this process's writer turn and `BEGIN IMMEDIATE`, like every
//! other write of this backend. Timestamps are the stored fixed-form text,
//! passed through as they are.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::super::admin::*;
use super::super::codec::{to_i64, to_json};
use super::{at, SqliteStore, BEGIN_WRITE};
use crate::store::{StoreError, StoreResult};

const VERSIONS: &str =
    "SELECT uid, version FROM sessions WHERE uid IN (SELECT value FROM json_each($1))";

const CREATE_SESSION: &str = "INSERT INTO sessions (uid, version, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (uid) DO NOTHING";

const ADVANCE_SESSION: &str =
    "UPDATE sessions SET version = $2, updated_at = $3 WHERE uid = $1 AND version = $4";

/// Rows per multi-row `INSERT` (9 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 500;

/// The write lock is the writer turn and `BEGIN IMMEDIATE`.
const STILL_PURGEABLE_SUFFIX: &str = "";

const RECORD_PURGE: &str = "INSERT INTO purges \
     (session, events, last_event_at, resolved_before, purged_at, purged_by, in_progress) \
     VALUES ($1, $2, $3, $4, $5, $6, 1)";

const PURGES_DONE: &str = "UPDATE purges SET in_progress = 0 WHERE in_progress = 1";

/// A list of keys as SQLite reads it (`json_each`).
fn keys(sessions: &[String]) -> StoreResult<String> {
    to_json(&sessions)
}

impl SqliteStore {
    /// A write transaction, with this process's writer turn.
    async fn admin_tx(
        &self,
    ) -> StoreResult<(
        tokio::sync::OwnedMutexGuard<()>,
        sqlx::Transaction<'static, Sqlite>,
    )> {
        let writer = self.write_turn().await?;
        Ok((writer, self.pool.begin_with(BEGIN_WRITE).await?))
    }
}

impl_admin!(SqliteStore);

/// Each append's version guard: the session created at its first append, or
/// advanced if still at the expected version.
async fn guard_appends(conn: &mut SqliteConnection, appends: &[&Append]) -> StoreResult<()> {
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
            guard(CREATE_SESSION).execute(&mut *conn).await?
        } else {
            guard(ADVANCE_SESSION)
                .bind(to_i64(append.expected_version)?)
                .execute(&mut *conn)
                .await?
        };
        if guarded.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                session: append.session.clone(),
                expected: append.expected_version,
            });
        }
    }
    Ok(())
}

/// One multi-row `INSERT` of events.
async fn insert_events(conn: &mut SqliteConnection, events: &[&AppendedEvent]) -> StoreResult<()> {
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
