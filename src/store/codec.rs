//! The row codec both backends share: how values are encoded for their columns
//! and decoded back, written once.
//!
//! Owns the one timestamp codec (UTC, microseconds, fixed width: text order is
//! time order, which SQLite's TEXT columns compare on, and the form timestamps
//! take inside the JSON row sets of a write plan), the integer and JSON
//! conversions, and the decoding of event, instance and queue rows from any
//! backend's row through [`Columns`].

use chrono::{DateTime, Utc};

use super::{InstanceRow, QueueEntry, StoreError, StoreResult};
use crate::domain::{Event, EventPayload, InstanceStatus};

/// A timestamp as stored and sent: UTC, microseconds, fixed width.
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    crate::domain::state::timestamp(at)
}

/// A stored timestamp read back (the fixed form, or any RFC 3339 text).
pub(super) fn parse_timestamp(text: &str) -> StoreResult<DateTime<Utc>> {
    if let Some(at) = crate::domain::state::parse_timestamp(text) {
        return Ok(at);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt(format!("timestamp {text:?}: {err}")))
}

/// A count or seq for a 64-bit signed column.
pub(super) fn to_i64(n: u64) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| encode_error(format!("{n} does not fit a 64-bit integer column")))
}

/// A stored count or seq, which is never negative.
pub(super) fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what} {n}")))
}

/// Serialises a value the store sends (a JSON row set, a list of keys).
pub(super) fn to_json(value: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(encode_error)
}

pub(super) fn encode_error(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(sqlx::Error::Encode(err.into()))
}

/// The columns of a backend's row, as the shared decoders read them.
pub(super) trait Columns {
    /// A TEXT column.
    fn text(&self, column: &str) -> StoreResult<&str>;
    /// A nullable TEXT column.
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    /// A 64-bit integer column.
    fn int(&self, column: &str) -> StoreResult<i64>;
    /// A nullable 64-bit integer column.
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    /// A 32-bit integer column.
    fn int32(&self, column: &str) -> StoreResult<i32>;
    /// A timestamp column (TEXT on SQLite, TIMESTAMPTZ on PostgreSQL).
    fn timestamp(&self, column: &str) -> StoreResult<DateTime<Utc>>;
    /// A nullable timestamp column.
    fn opt_timestamp(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>>;
}

/// Implements the column readers sqlx decodes alike on both backends.
macro_rules! plain_columns {
    () => {
        fn text(&self, column: &str) -> StoreResult<&str> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn int(&self, column: &str) -> StoreResult<i64> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn int32(&self, column: &str) -> StoreResult<i32> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
    };
}
pub(super) use plain_columns;

/// An event row (`seq, kind, format, data, caused_by, at`) of `session`.
pub(super) fn decode_event(session: &str, row: &impl Columns) -> StoreResult<Event> {
    EventRow {
        seq: row.int("seq")?,
        kind: row.text("kind")?,
        format: row.int32("format")?,
        data: row.text("data")?,
        caused_by: row.opt_int("caused_by")?,
        at: At::Decoded(row.timestamp("at")?),
    }
    .decode(session)
}

/// An event's timestamp as read: decoded by the backend, or text.
pub(super) enum At<'a> {
    Decoded(DateTime<Utc>),
    Text(&'a str),
}

/// An event row as read, its text columns borrowed.
pub(super) struct EventRow<'a> {
    pub(super) seq: i64,
    pub(super) kind: &'a str,
    pub(super) format: i32,
    pub(super) data: &'a str,
    pub(super) caused_by: Option<i64>,
    pub(super) at: At<'a>,
}

impl EventRow<'_> {
    pub(super) fn decode(self, session: &str) -> StoreResult<Event> {
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
            at: match at {
                At::Decoded(at) => at,
                At::Text(text) => parse_timestamp(text).map_err(|err| corrupt(err.to_string()))?,
            },
            caused_by: caused_by
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("negative causedBy".into()))?,
            payload: EventPayload::from_data_text(kind, format, data)
                .map_err(|err| corrupt(err.to_string()))?,
        })
    }
}

/// An `instances` row.
pub(super) fn decode_instance(row: &impl Columns) -> StoreResult<InstanceRow> {
    let session = row.text("session")?.to_owned();
    let name = row.text("name")?.to_owned();
    let corrupt = |what: String| {
        StoreError::Corrupt(format!("instance {name:?} of session {session:?}: {what}"))
    };
    let status = row
        .text("status")?
        .parse::<InstanceStatus>()
        .map_err(|err| corrupt(err.to_string()))?;
    let created_seq = u64::try_from(row.int("created_seq")?)
        .map_err(|_| corrupt("negative created_seq".into()))?;
    Ok(InstanceRow {
        task: row.text("task")?.to_owned(),
        status,
        created_seq,
        updated_at: row.timestamp("updated_at")?,
        body: row.text("body")?.to_owned(),
        session,
        name,
    })
}

/// A `queue` row.
pub(super) fn decode_queue_entry(row: &impl Columns) -> StoreResult<QueueEntry> {
    Ok(QueueEntry {
        session: row.text("session")?.to_owned(),
        instance: row.text("instance")?.to_owned(),
        queue: row.text("queue")?.to_owned(),
        run: row.text("run")?.to_owned(),
        available_at: row.timestamp("available_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_token: row.opt_text("lease_token")?,
        lease_expires_at: row.opt_timestamp("lease_expires_at")?,
    })
}
