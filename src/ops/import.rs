//! `triggers import`: appends exported events to a database, idempotently.
//!
//! Events arrive in file order, grouped by session (an export writes each
//! session's events together, seq ascending from 1). Each session's run of
//! events is held until it is complete, then, in batches of sessions:
//! - a session that already holds events is compared event by event with the
//!   file up to its version: equal, it gets only the newer events (so an
//!   import can be repeated, or resumed after an interruption); different, it
//!   is refused and the import goes on with the others;
//! - the session's events are folded, so that a file whose events do not
//!   follow from one another is refused before anything of it is written;
//! - the batch is appended in one transaction, each session's version guarded,
//!   and the projections of the sessions appended to are rebuilt from the log.
//!
//! A bad line stops the import: nothing of its session is written; the
//! sessions before it are (run it again once the line is fixed). Memory holds
//! one batch, and at most the largest session of the file.

use std::time::{Duration, Instant};

use super::export::Pages;
use super::lines::{LineError, Parsed};
use super::progress::Progress;
use super::{OpsError, OpsResult, Refusal};
use crate::domain::SessionState;
use crate::store::Append;
use crate::Engine;

/// A batch is written once it holds this many events...
const BATCH_EVENTS: usize = 20_000;
/// ... or this many sessions.
const BATCH_SESSIONS: usize = 1_000;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Sessions read.
    pub sessions: u64,
    /// Events read.
    pub events: u64,
    /// Sessions that got new events.
    pub appended_sessions: u64,
    /// Events appended.
    pub appended_events: u64,
    /// Sessions that already held every event of the file.
    pub unchanged_sessions: u64,
    /// Sessions refused because their stored events differ.
    pub refused: Vec<Refusal>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ImportReport {
    /// One line for a person.
    pub fn summary(&self, verb: &str) -> String {
        format!(
            "{verb} {} into {} (read {} of {}: {} already there, {} refused) in {:.3} s ({:.0} events/s); projections rebuilt",
            super::count(self.appended_events, "event"),
            super::count(self.appended_sessions, "session"),
            super::count(self.events, "event"),
            super::count(self.sessions, "session"),
            self.unchanged_sessions,
            self.refused.len(),
            self.elapsed.as_secs_f64(),
            super::rate(self.events, self.elapsed),
        )
    }
}

/// One session's consecutive events in the input.
struct Run {
    session: String,
    /// The line of each event.
    lines: Vec<u64>,
    events: Vec<Parsed>,
}

/// Takes events one at a time and appends them in batches (see the module docs).
pub struct Importer<'a> {
    engine: &'a Engine,
    current: Option<Run>,
    pending: Vec<Run>,
    pending_events: usize,
    report: ImportReport,
    started: Instant,
    progress: Progress,
    verb: &'static str,
}

impl<'a> Importer<'a> {
    /// An import into `engine`'s database; `verb` names it in the progress line.
    pub fn new(engine: &'a Engine, progress: Progress, verb: &'static str) -> Self {
        Importer {
            engine,
            current: None,
            pending: Vec::new(),
            pending_events: 0,
            report: ImportReport::default(),
            started: Instant::now(),
            progress,
            verb,
        }
    }

    /// Takes the event of line `line` (or why that line is bad).
    ///
    /// # Errors
    /// A bad line ([`OpsError::BadLine`]; the complete sessions before it are
    /// written first), or what the database fails with.
    pub async fn push(&mut self, line: u64, parsed: Result<Parsed, LineError>) -> OpsResult<()> {
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                let session = match (&self.current, &err.session) {
                    // The bad line opens another session: the one before is whole.
                    (Some(run), Some(session)) if &run.session != session => {
                        self.complete_current().await?;
                        Some(session.clone())
                    }
                    (Some(run), _) => Some(run.session.clone()),
                    (None, session) => session.clone(),
                };
                return Err(self.refuse_line(line, session, err.message).await);
            }
        };
        self.report.events += 1;
        let session = parsed.row.event.session.as_str();
        let seq = parsed.row.event.seq;
        if let Some(run) = &mut self.current {
            if run.session == session {
                let expected = run.events.len() as u64 + 1;
                if seq != expected {
                    let message = format!(
                        "event {seq} of session {session:?} follows event {}: a session's events must be in order, without gaps",
                        expected - 1
                    );
                    let session = Some(session.to_owned());
                    return Err(self.refuse_line(line, session, message).await);
                }
                run.lines.push(line);
                run.events.push(parsed);
                return Ok(());
            }
        }
        self.complete_current().await?;
        if seq != 1 {
            let message = format!(
                "the first event of session {session:?} here is {seq}: a session's events must start at 1"
            );
            let session = Some(session.to_owned());
            return Err(self.refuse_line(line, session, message).await);
        }
        self.report.sessions += 1;
        self.current = Some(Run {
            session: session.to_owned(),
            lines: vec![line],
            events: vec![parsed],
        });
        Ok(())
    }

    /// Writes what is left; the report (refused sessions included: the caller
    /// decides how to fail).
    ///
    /// # Errors
    /// A session whose events do not fold, or what the database fails with.
    pub async fn finish(mut self) -> OpsResult<ImportReport> {
        self.complete_current().await?;
        self.flush().await?;
        self.progress.clear();
        self.report.elapsed = self.started.elapsed();
        Ok(self.report)
    }

    /// Writes the complete sessions, then the error for a bad line.
    async fn refuse_line(
        &mut self,
        line: u64,
        session: Option<String>,
        message: String,
    ) -> OpsError {
        self.current = None;
        if let Err(err) = self.flush().await {
            return err;
        }
        self.progress.clear();
        OpsError::BadLine {
            line,
            session,
            message,
            imported: self.report.appended_sessions + self.report.unchanged_sessions,
        }
    }

    /// Queues the current run (it is whole); writes the batch when it is full.
    async fn complete_current(&mut self) -> OpsResult<()> {
        let Some(run) = self.current.take() else {
            return Ok(());
        };
        if self.pending.iter().any(|p| p.session == run.session) {
            // The same session again further on: compare with what the batch wrote.
            self.flush().await?;
        }
        self.pending_events += run.events.len();
        self.pending.push(run);
        if self.pending_events >= BATCH_EVENTS || self.pending.len() >= BATCH_SESSIONS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Compares, checks, appends and rebuilds the pending sessions.
    async fn flush(&mut self) -> OpsResult<()> {
        let runs = std::mem::take(&mut self.pending);
        self.pending_events = 0;
        if runs.is_empty() {
            return Ok(());
        }
        let store = self.engine.store();
        let uids: Vec<String> = runs.iter().map(|r| r.session.clone()).collect();
        let versions = store.admin().versions(&uids).await?;
        let mut appends = Vec::new();
        let mut stop = None;
        for (run, stored) in runs.into_iter().zip(versions) {
            if stored > 0 {
                if let Some(refusal) = self.differs(&run, stored).await? {
                    self.report.refused.push(refusal);
                    continue;
                }
            }
            if run.events.len() as u64 <= stored {
                self.report.unchanged_sessions += 1;
                continue;
            }
            if let Err(err) = folds(&run) {
                stop = Some(err);
                break;
            }
            let skip = usize::try_from(stored).expect("fewer than the run's events");
            appends.push(Append {
                session: run.session,
                expected_version: stored,
                events: run.events.into_iter().skip(skip).map(|p| p.row).collect(),
            });
        }
        store.admin().append(&appends).await?;
        let appended: Vec<String> = appends.iter().map(|a| a.session.clone()).collect();
        self.engine.rebuild_sessions(&appended).await?;
        self.report.appended_sessions += appends.len() as u64;
        self.report.appended_events += appends.iter().map(|a| a.events.len() as u64).sum::<u64>();
        let (verb, events) = (self.verb, self.report.events);
        self.progress
            .show(|| format!("{verb}: {events} events read"));
        match stop {
            Some((line, session, message)) => Err(OpsError::BadLine {
                line,
                session: Some(session),
                message,
                imported: self.report.appended_sessions + self.report.unchanged_sessions,
            }),
            None => Ok(()),
        }
    }

    /// The first of the stored events (up to the file's last) that differs
    /// from the file's, if one does.
    async fn differs(&self, run: &Run, stored: u64) -> OpsResult<Option<Refusal>> {
        let store = self.engine.store();
        let mut pages = Pages::of(store.as_ref(), std::slice::from_ref(&run.session));
        let mut at = 0;
        while let Some(page) = pages.next().await? {
            for event in page {
                let Some(ours) = run.events.get(at) else {
                    return Ok(None);
                };
                if event != ours.row.event {
                    return Ok(Some(Refusal {
                        session: run.session.clone(),
                        seq: ours.row.event.seq,
                        line: run.lines[at],
                    }));
                }
                at += 1;
            }
            if at as u64 >= stored {
                break;
            }
        }
        Ok(None)
    }
}

/// Folds a session's events, as `rebuild` will: the line of the first one
/// that does not follow from those before it, if any.
fn folds(run: &Run) -> Result<(), (u64, String, String)> {
    let mut state = SessionState::new(run.session.as_str());
    for (parsed, line) in run.events.iter().zip(&run.lines) {
        if let Err(err) = state.apply(&parsed.event) {
            return Err((
                *line,
                run.session.clone(),
                format!(
                    "event {} does not follow from the events before it: {err}",
                    parsed.event.seq
                ),
            ));
        }
    }
    Ok(())
}

/// Imports JSON Lines from `input` (a file, or standard input).
///
/// # Errors
/// As [`Importer::push`] and [`Importer::finish`], and a read failure.
pub async fn import_lines(
    engine: &Engine,
    input: impl tokio::io::AsyncBufRead + Unpin,
    progress: Progress,
) -> OpsResult<ImportReport> {
    use tokio::io::AsyncBufReadExt;
    let mut importer = Importer::new(engine, progress, "importing");
    let mut lines = input.lines();
    let mut number = 0;
    loop {
        let line = lines.next_line().await.map_err(|source| OpsError::Io {
            context: format!("cannot read line {}", number + 1),
            source,
        })?;
        let Some(line) = line else { break };
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        importer
            .push(number, super::lines::parse_line(&line))
            .await?;
    }
    importer.finish().await
}
