//! `triggers purge`: retention. Removes whole sessions whose every instance is
//! resolved and whose last event is older than a cut-off, optionally writing
//! them to a JSON Lines file first, and records each one in the `purges` table
//! (what, when, by whom). It is the only way anything leaves the log; a
//! purged UID starts again as an empty session.
//!
//! Sessions are listed, then removed in batches, each in one transaction that
//! checks again that the session is unchanged and still resolved (a session
//! that moved on since it was listed is kept).

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use super::{OpsError, OpsResult};
use crate::store::{PurgeCandidate, Store};

/// Sessions listed per query.
const PAGE: u32 = 1_000;
/// Sessions removed per transaction.
const BATCH: usize = 100;

/// What a purge did (or, dry, would do).
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeReport {
    /// The sessions purged (or that would be), with their versions.
    pub sessions: Vec<PurgeCandidate>,
    /// Listed but changed before they could be removed (kept).
    pub kept: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl PurgeReport {
    /// Events removed.
    pub fn events(&self) -> u64 {
        self.sessions.iter().map(|s| s.version).sum()
    }
}

/// Parses `--resolved-before`: a date (midnight UTC) or an RFC 3339 time.
///
/// # Errors
/// Anything else, named.
pub fn parse_cutoff(text: &str) -> OpsResult<DateTime<Utc>> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            OpsError::Usage(format!(
                "--resolved-before {text:?}: expected a date (2026-01-31) or a UTC time (2026-01-31T12:00:00Z)"
            ))
        })
}

/// The sessions a purge at `before` would remove, by UID.
///
/// # Errors
/// What the store fails with.
pub async fn candidates(
    store: &dyn Store,
    before: DateTime<Utc>,
) -> OpsResult<Vec<PurgeCandidate>> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.admin().purge_candidates(before, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.session.clone();
        let full = page.len() == PAGE as usize;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// Removes `sessions` (from [`candidates`]), recorded as purged by `by`.
///
/// # Errors
/// What the store fails with; the batches before the failure stay purged.
pub async fn purge(
    store: &dyn Store,
    sessions: Vec<PurgeCandidate>,
    before: DateTime<Utc>,
    by: &str,
) -> OpsResult<PurgeReport> {
    let started = Instant::now();
    let mut report = PurgeReport {
        sessions: Vec::with_capacity(sessions.len()),
        kept: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for batch in sessions.chunks(BATCH) {
        let purged = store.admin().purge(batch, before, by).await?;
        for candidate in batch {
            if purged.contains(&candidate.session) {
                report.sessions.push(candidate.clone());
            } else {
                report.kept.push(candidate.session.clone());
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Who is purging, for the `purges` table: the operating-system user.
pub fn current_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_cutoff;

    #[test]
    fn a_cutoff_is_a_date_or_a_time_and_nothing_else() {
        assert_eq!(
            parse_cutoff("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_cutoff("2026-01-31T12:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T10:00:00+00:00"
        );
        let err = parse_cutoff("last week").unwrap_err().to_string();
        assert!(err.contains("--resolved-before"), "{err}");
    }
}
