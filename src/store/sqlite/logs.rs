//! How `session_logs` reads a log SQLite aggregated into one JSON text.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::super::codec::{At, EventRow};
use super::super::{StoreError, StoreResult};
use crate::domain::Event;

/// A log as [`SESSION_LOGS`](super::SESSION_LOGS) aggregates it. Each payload is decoded from its
/// slice of the log's text, without a JSON tree of the log built first.
pub(super) fn decode_log(session: &str, log: &str) -> StoreResult<Vec<Event>> {
    let logged: Vec<LoggedEvent> = serde_json::from_str(log)
        .map_err(|err| StoreError::Corrupt(format!("log of session {session:?}: {err}")))?;
    logged
        .iter()
        .map(|event: &LoggedEvent| {
            let LoggedEvent(seq, kind, format, data, caused_by, at) = event;
            EventRow {
                seq: *seq,
                kind: kind.as_ref(),
                format: *format,
                data: data.get(),
                caused_by: *caused_by,
                at: At::Text(at.as_ref()),
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
