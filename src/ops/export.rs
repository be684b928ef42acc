//! `triggers export`: the log as JSON Lines, in (session, seq) order, streamed.
//!
//! The log is read in keyset pages (`(session, seq) > last`, never `OFFSET`),
//! each written out before the next is read, so memory stays at one page
//! whatever the size of the log.

use std::io::Write;
use std::time::{Duration, Instant};

use super::lines::write_line;
use super::progress::Progress;
use super::{OpsError, OpsResult};
use crate::store::{RawEvent, Store};

/// Events per page read.
pub const PAGE: u32 = 5_000;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// Sessions with at least one event written.
    pub sessions: u64,
    /// Events written.
    pub events: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl ExportReport {
    /// `exported 12 events of 2 sessions in 0.004 s (3000 events/s)`.
    pub fn summary(&self) -> String {
        format!(
            "exported {} of {} in {:.3} s ({:.0} events/s)",
            super::count(self.events, "event"),
            super::count(self.sessions, "session"),
            self.elapsed.as_secs_f64(),
            super::rate(self.events, self.elapsed)
        )
    }
}

/// The log's events in (session, seq) order, a page at a time: the whole log,
/// or only the sessions given (each in full, in the order given).
pub struct Pages<'a> {
    store: &'a dyn Store,
    /// The sessions still to read (`None`: the whole log).
    only: Option<std::collections::VecDeque<String>>,
    /// The last (session, seq) read.
    after: (String, u64),
    done: bool,
}

impl<'a> Pages<'a> {
    /// Every event of the log.
    pub fn all(store: &'a dyn Store) -> Self {
        Pages {
            store,
            only: None,
            after: (String::new(), 0),
            done: false,
        }
    }

    /// The events of `sessions`.
    pub fn of(store: &'a dyn Store, sessions: &[String]) -> Self {
        let only: std::collections::VecDeque<String> = sessions.iter().cloned().collect();
        let after = (only.front().cloned().unwrap_or_default(), 0);
        Pages {
            store,
            done: only.is_empty(),
            only: Some(only),
            after,
        }
    }

    /// The next page, or `None` at the end.
    ///
    /// # Errors
    /// What the store fails with.
    pub async fn next(&mut self) -> OpsResult<Option<Vec<RawEvent>>> {
        while !self.done {
            let only = self.only.as_ref().and_then(|o| o.front().cloned());
            let page = self
                .store
                .admin()
                .export_page(only.as_deref(), (&self.after.0, self.after.1), PAGE)
                .await?;
            if let Some(last) = page.last() {
                self.after = (last.session.clone(), last.seq);
            }
            let full = page.len() == PAGE as usize;
            if !full {
                // This session (or the log) is done.
                match &mut self.only {
                    Some(only) => {
                        only.pop_front();
                        match only.front() {
                            Some(next) => self.after = (next.clone(), 0),
                            None => self.done = true,
                        }
                    }
                    None => self.done = true,
                }
            }
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }
}

/// Writes the events of `pages` to `out` as JSON Lines.
///
/// # Errors
/// What the store or `out` fails with, or a stored payload that is not JSON.
pub async fn export(
    mut pages: Pages<'_>,
    out: &mut dyn Write,
    progress: &mut Progress,
) -> OpsResult<ExportReport> {
    let started = Instant::now();
    let mut report = ExportReport {
        sessions: 0,
        events: 0,
        elapsed: Duration::ZERO,
    };
    let mut last_session: Option<String> = None;
    let mut buffer = Vec::with_capacity(1 << 20);
    while let Some(page) = pages.next().await? {
        buffer.clear();
        for event in &page {
            if last_session.as_deref() != Some(event.session.as_str()) {
                report.sessions += 1;
                last_session = Some(event.session.clone());
            }
            write_line(&mut buffer, event).map_err(OpsError::Usage)?;
        }
        report.events += page.len() as u64;
        out.write_all(&buffer).map_err(|source| OpsError::Io {
            context: "cannot write the export".into(),
            source,
        })?;
        progress.show(|| format!("exported {} events", report.events));
    }
    out.flush().map_err(|source| OpsError::Io {
        context: "cannot write the export".into(),
        source,
    })?;
    progress.clear();
    report.elapsed = started.elapsed();
    Ok(report)
}
