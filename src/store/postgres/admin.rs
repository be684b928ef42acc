//! PostgreSQL's SQL for the operator's operations ([`Admin`]): export pages,
//! appends of imported events, purges and the queue aggregate.
//!
//! A purge locks each session row it removes (`FOR UPDATE`), so a server
//! writing to the session at the same time waits, then finds it gone and
//! starts it again. Timestamps are `timestamptz`, exported in the fixed form.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::super::admin::*;
use super::super::codec::{parse_timestamp, to_i64};
use super::{at, PostgresStore};
use crate::store::{StoreError, StoreResult};

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

/// A purge locks each session row it removes.
const STILL_PURGEABLE_SUFFIX: &str = " FOR UPDATE OF s";

const RECORD_PURGE: &str = "INSERT INTO purges \
     (session, events, last_event_at, resolved_before, purged_at, purged_by, in_progress) \
     VALUES ($1, $2, $3, $4, $5, $6, TRUE)";

const PURGES_DONE: &str = "UPDATE purges SET in_progress = FALSE WHERE in_progress";

/// A list of keys as PostgreSQL binds it (an array).
fn keys(sessions: &[String]) -> StoreResult<&[String]> {
    Ok(sessions)
}

impl PostgresStore {
    /// A write transaction (PostgreSQL's row locks need nothing held beside it).
    async fn admin_tx(&self) -> StoreResult<((), sqlx::Transaction<'static, sqlx::Postgres>)> {
        Ok(((), self.pool.begin().await?))
    }
}

impl_admin!(PostgresStore);

/// The appends' version guards, two statements for all: sessions created at
/// their first append, then those advanced if still at the expected version.
async fn guard_appends(conn: &mut PgConnection, appends: &[&Append]) -> StoreResult<()> {
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
        let passed: Vec<String> = query.fetch_all(&mut *conn).await?;
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
    Ok(())
}

/// One `INSERT` of events, their columns as arrays.
async fn insert_events(conn: &mut PgConnection, events: &[&AppendedEvent]) -> StoreResult<()> {
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
