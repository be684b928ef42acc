//! The operator's tools over a database (docs/operations.md): the log out as
//! JSON Lines and back in, copied between databases, and kept within bounds.
//!
//! - [`lines`]: the JSON Lines format of one event, written and parsed.
//! - [`export`]: the whole log or chosen sessions, streamed in keyset pages.
//! - [`import`]: appends exported events, idempotently (a repeat or a resumed
//!   import adds only what is missing), refusing a session whose stored events
//!   differ, then rebuilds the projections of the sessions it appended to.
//! - [`copy`]: export streamed into import, from one database to another.
//! - [`purge`]: removes whole resolved sessions older than a date, recorded in
//!   the `purges` table: the only way anything leaves the log.
//! - [`progress`]: the progress line on a terminal.

pub mod copy;
pub mod export;
pub mod import;
pub mod lines;
pub mod progress;
pub mod purge;

use crate::store::StoreError;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed (rebuilding projections).
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A line of an import is not an event that can be appended; nothing of
    /// its session was written.
    #[error("line {line}: {message}; nothing of {} was written{}",
        session.as_deref().map_or_else(|| "its session".to_owned(), |s| format!("session {s:?}")),
        if *imported > 0 { format!(" ({} before it were imported)", count(*imported, "session")) } else { String::new() })]
    BadLine {
        /// The line number, from 1.
        line: u64,
        /// The session it belongs to, when known.
        session: Option<String>,
        /// What is wrong.
        message: String,
        /// Sessions imported before it.
        imported: u64,
    },
    /// Sessions whose stored events differ from the file's were refused.
    #[error("{} refused, its stored events differ from the file's: {}", count(.0.len() as u64, "session"), refused_list(.0))]
    Refused(Vec<Refusal>),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
}

/// A session an import refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The session.
    pub session: String,
    /// Its first event that differs.
    pub seq: u64,
    /// The line of that event.
    pub line: u64,
}

fn refused_list(refused: &[Refusal]) -> String {
    let mut shown: Vec<String> = refused
        .iter()
        .take(10)
        .map(|r| format!("{:?} (event {} at line {})", r.session, r.seq, r.line))
        .collect();
    if refused.len() > 10 {
        shown.push(format!("and {} more", refused.len() - 10));
    }
    shown.join(", ")
}

/// `1 session`, `2 sessions`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Result alias of the operator's tools.
pub type OpsResult<T> = Result<T, OpsError>;

/// Events per second, for summaries.
pub(crate) fn rate(events: u64, elapsed: std::time::Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}
