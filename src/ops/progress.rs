//! The progress line of a long operation: shown on standard error only when it
//! is a terminal (a log file or a pipe gets the summary alone), redrawn in
//! place at most a few times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// A progress line on standard error.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// Shown when standard error is a terminal.
    pub fn on_terminal() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    /// Never shown.
    pub fn hidden() -> Self {
        Self {
            enabled: false,
            last: None,
            shown: false,
        }
    }

    /// Redraws the line with `text()` if it is due.
    pub fn show(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.last.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let mut stderr = std::io::stderr().lock();
        // Progress is a courtesy: a terminal that went away is no failure.
        let _ = write!(stderr, "\r\x1b[2K{}", text());
        let _ = stderr.flush();
        self.shown = true;
    }

    /// Removes the line (before the summary is printed).
    pub fn clear(&mut self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.shown = false;
        }
    }
}
