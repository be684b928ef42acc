//! One event per line: `{"session", "seq", "kind", "at", "data", "causedBy",
//! "format"}`. `data` is the payload exactly as stored (its bytes, key order
//! included) and `format` its version, so that an old event is carried as it
//! was written and upcast only when folded; `at` is UTC with microseconds.
//!
//! Parsing checks everything a stored event must satisfy: a valid session UID,
//! a seq from 1, a known kind whose payload fits its format, a timestamp. The
//! parsed event keeps the raw row (what is appended) and the decoded event
//! (what the import folds to check that the session still makes sense).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::state::{parse_timestamp, timestamp};
use crate::domain::{Event, EventPayload, SessionUid};
use crate::store::{AppendedEvent, RawEvent};

/// A line as written.
#[derive(Serialize)]
struct LineOut<'a> {
    session: &'a str,
    seq: u64,
    kind: &'a str,
    at: &'a str,
    data: &'a RawValue,
    #[serde(rename = "causedBy")]
    caused_by: Option<u64>,
    format: i32,
}

/// A line as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn<'a> {
    session: String,
    seq: u64,
    kind: String,
    at: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(rename = "causedBy", default)]
    caused_by: Option<u64>,
    format: i32,
}

/// Appends `event` as one line (with its newline) to `out`.
///
/// # Errors
/// A stored payload that is not JSON (a corrupt row).
pub fn write_line(out: &mut Vec<u8>, event: &RawEvent) -> Result<(), String> {
    let data: &RawValue = serde_json::from_str(&event.data).map_err(|err| {
        format!(
            "event {} of session {:?}: its stored payload is not JSON: {err}",
            event.seq, event.session
        )
    })?;
    let line = LineOut {
        session: &event.session,
        seq: event.seq,
        kind: &event.kind,
        at: &event.at,
        data,
        caused_by: event.caused_by,
        format: event.format,
    };
    serde_json::to_writer(&mut *out, &line).map_err(|err| err.to_string())?;
    out.push(b'\n');
    Ok(())
}

/// An event read from a line, ready to append and to fold.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The row to append.
    pub row: AppendedEvent,
    /// The event decoded (upcast to the current format).
    pub event: Event,
}

/// What is wrong with a line: the message, and its session when the line
/// got as far as naming one.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    /// The session, when known.
    pub session: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Parses one line (without its newline).
///
/// # Errors
/// Anything that keeps it from being a storable event, said for a person.
pub fn parse_line(line: &str) -> Result<Parsed, LineError> {
    let bad = |session: Option<&str>, message: String| LineError {
        session: session.map(str::to_owned),
        message,
    };
    let line: LineIn<'_> = serde_json::from_str(line).map_err(|err| {
        bad(
            None,
            format!(
                "not an exported event ({err}); expected one JSON object per line with \
                 session, seq, kind, at, data, causedBy and format"
            ),
        )
    })?;
    let session = Some(line.session.as_str());
    SessionUid::parse(line.session.as_str())
        .map_err(|err| bad(session, format!("bad session: {err}")))?;
    if line.seq == 0 || i64::try_from(line.seq).is_err() {
        return Err(bad(session, format!("seq {} is out of range", line.seq)));
    }
    if line.caused_by.is_some_and(|c| c == 0 || c >= line.seq) {
        return Err(bad(
            session,
            format!(
                "causedBy {} of event {} does not name an earlier event",
                line.caused_by.unwrap_or_default(),
                line.seq
            ),
        ));
    }
    let at = parse_timestamp(&line.at)
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(&line.at)
                .ok()
                .map(|at| at.with_timezone(&chrono::Utc))
        })
        .ok_or_else(|| bad(session, format!("at {:?} is not a timestamp", line.at)))?;
    let payload = EventPayload::from_data_text(&line.kind, line.format, line.data.get())
        .map_err(|err| bad(session, format!("event {}: {err}", line.seq)))?;
    let row = AppendedEvent {
        instance: payload.instance().map(str::to_owned),
        trigger: payload.trigger().map(str::to_owned),
        event: RawEvent {
            seq: line.seq,
            kind: line.kind,
            format: line.format,
            data: line.data.get().to_owned(),
            caused_by: line.caused_by,
            at: timestamp(at),
            session: line.session,
        },
    };
    let event = Event {
        seq: line.seq,
        at,
        caused_by: line.caused_by,
        payload,
    };
    Ok(Parsed { row, event })
}

/// Parses a stored event the same way (a copy reads rows, not lines).
///
/// # Errors
/// As [`parse_line`], for a corrupt stored row.
pub fn parse_raw(raw: RawEvent) -> Result<Parsed, LineError> {
    let mut line = Vec::with_capacity(raw.data.len() + 128);
    write_line(&mut line, &raw).map_err(|message| LineError {
        session: Some(raw.session.clone()),
        message,
    })?;
    line.pop();
    parse_line(std::str::from_utf8(&line).expect("JSON is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawEvent {
        RawEvent {
            session: "s:1".into(),
            seq: 2,
            kind: "TriggerFired".into(),
            format: 2,
            data: r#"{"trigger":"go","kwargs":{"b":1,"a":[2, 3]}}"#.into(),
            caused_by: Some(1),
            at: "2026-01-02T03:04:05.000006Z".into(),
        }
    }

    #[test]
    fn a_line_carries_the_payload_bytes_and_reads_back_the_same_row() {
        let mut out = Vec::new();
        write_line(&mut out, &raw()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"session\":\"s:1\",\"seq\":2,\"kind\":\"TriggerFired\",\"at\":\"2026-01-02T03:04:05.000006Z\",\
             \"data\":{\"trigger\":\"go\",\"kwargs\":{\"b\":1,\"a\":[2, 3]}},\"causedBy\":1,\"format\":2}\n"
        );
        let parsed = parse_line(text.trim_end()).unwrap();
        assert_eq!(parsed.row.event, raw());
        assert_eq!(parsed.row.trigger.as_deref(), Some("go"));
    }

    #[test]
    fn bad_lines_are_refused_with_what_is_wrong() {
        let cases = [
            ("not json", "not an exported event"),
            (
                r#"{"session":"","seq":1,"kind":"TriggerFired","at":"2026-01-02T03:04:05.000006Z","data":{},"causedBy":null,"format":2}"#,
                "bad session",
            ),
            (
                r#"{"session":"s","seq":0,"kind":"TriggerFired","at":"2026-01-02T03:04:05.000006Z","data":{},"causedBy":null,"format":2}"#,
                "seq 0",
            ),
            (
                r#"{"session":"s","seq":1,"kind":"Nope","at":"2026-01-02T03:04:05.000006Z","data":{},"causedBy":null,"format":2}"#,
                "Nope",
            ),
            (
                r#"{"session":"s","seq":1,"kind":"TriggerFired","at":"yesterday","data":{"trigger":"go","kwargs":{}},"causedBy":null,"format":2}"#,
                "not a timestamp",
            ),
            (
                r#"{"session":"s","seq":3,"kind":"TriggerFired","at":"2026-01-02T03:04:05.000006Z","data":{"trigger":"go","kwargs":{}},"causedBy":3,"format":2}"#,
                "earlier event",
            ),
        ];
        for (line, expected) in cases {
            let err = parse_line(line).unwrap_err();
            assert!(err.message.contains(expected), "{line}: {}", err.message);
        }
    }
}
