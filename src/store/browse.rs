//! What the browsing reads ask of a backend, and the part of them written once:
//! the most recently updated sessions (keyset paging, a UID prefix), instance
//! counts by status for a page of sessions, and one session's events filtered
//! by kind and instance, paged either way from a seq.
//!
//! Every one of them reads the projection tables or one session's slice of the
//! log by its key, so a page costs the same on a small database and a big one.
//! The backends hold only the SQL (see [`super::sql`] for the shared part).

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::codec::{decode_event, to_i64, to_u64, Columns};
use super::{SessionSummary, StoreError, StoreResult};
use crate::domain::{Event, InstanceStatus};

/// Followed by the filters of [`recent_sessions`], then the order and limit.
const RECENT_SESSIONS: &str = "SELECT uid, version, updated_at FROM sessions WHERE TRUE";
/// Both directions descending, so that one row value compares the keyset cursor.
const RECENT_SESSIONS_ORDER: &str = " ORDER BY updated_at DESC, uid DESC LIMIT ";

/// Followed by the session and the filters of [`session_events`].
const SESSION_EVENTS: &str =
    "SELECT seq, kind, format, data, caused_by, at FROM events WHERE session = ";

/// Followed by the sessions, then [`INSTANCE_COUNTS_END`].
const INSTANCE_COUNTS: &str =
    "SELECT session, status, COUNT(*) AS n FROM instances WHERE session IN (";
const INSTANCE_COUNTS_END: &str = ") GROUP BY session, status";

/// A page of the sessions listing, most recently updated first.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentSessions<'a> {
    /// Only sessions whose UID starts with this.
    pub prefix: Option<&'a str>,
    /// The `(updated_at, uid)` of the last session of the previous page
    /// (exclusive): the page continues after it in the listing's order.
    pub after: Option<(DateTime<Utc>, &'a str)>,
    /// Page size.
    pub first: u32,
}

/// A page of the instances listing across sessions.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceQuery<'a> {
    /// Only instances with one of these statuses (all when empty).
    pub statuses: &'a [InstanceStatus],
    /// Only instances of this task.
    pub task: Option<&'a str>,
    /// Page size.
    pub first: u32,
    /// The `(session, name)` of the last instance of the previous page
    /// (exclusive): the page continues after it in the listing's order.
    pub after: Option<(&'a str, &'a str)>,
}

/// Which of a session's events a browsing read returns.
#[derive(Debug, Clone, Copy)]
pub struct EventQuery<'a> {
    /// Only events of one of these kinds (all when empty).
    pub kinds: &'a [String],
    /// Only events about this instance.
    pub instance: Option<&'a str>,
    /// Where the page is.
    pub window: EventWindow,
    /// Nothing past this seq (a view as of a version stops there).
    pub up_to: u64,
    /// Page size.
    pub limit: u64,
}

/// Where a page of events sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventWindow {
    /// The first events with seq > this.
    After(u64),
    /// The last events with seq < this (still returned in ascending order).
    Before(u64),
}

impl EventQuery<'_> {
    /// The open seq range `(low, high)` the page lies in, and whether it is
    /// read from its low end; `None` when the range is empty.
    pub(super) fn range(&self) -> Option<(u64, u64, bool)> {
        let ceiling = self.up_to.saturating_add(1);
        let (low, high, ascending) = match self.window {
            EventWindow::After(after) => (after, ceiling, true),
            EventWindow::Before(before) => (0, before.min(ceiling), false),
        };
        (low.saturating_add(1) < high && self.limit > 0).then_some((low, high, ascending))
    }
}

/// The listing's statement. `stamp` spells a timestamp the way the backend
/// stores it.
pub(super) fn recent_sessions<'a, DB, T>(
    query: RecentSessions<'a>,
    stamp: impl FnOnce(DateTime<Utc>) -> T,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut select = QueryBuilder::new(RECENT_SESSIONS);
    if let Some(prefix) = query.prefix.filter(|prefix| !prefix.is_empty()) {
        // A range, not `LIKE`: the primary key on uid serves it.
        select.push(" AND uid >= ").push_bind(prefix);
        if let Some(end) = prefix_end(prefix) {
            select.push(" AND uid < ").push_bind(end);
        }
    }
    if let Some((at, uid)) = query.after {
        select
            .push(" AND (updated_at, uid) < (")
            .push_bind(stamp(at))
            .push(", ")
            .push_bind(uid)
            .push(")");
    }
    select
        .push(RECENT_SESSIONS_ORDER)
        .push_bind(i64::from(query.first));
    select
}

/// A row of [`recent_sessions`].
pub(super) fn decode_summary(row: &impl Columns) -> StoreResult<SessionSummary> {
    Ok(SessionSummary {
        uid: row.text("uid")?.to_owned(),
        version: to_u64(row.int("version")?, "session version")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

/// The events statement, and whether its rows come newest first (to be
/// reversed); `None` when the page is empty whatever the log holds.
pub(super) fn session_events<'a, DB>(
    session: &'a str,
    query: &EventQuery<'a>,
) -> StoreResult<Option<(QueryBuilder<'a, DB>, bool)>>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let Some((low, high, ascending)) = query.range() else {
        return Ok(None);
    };
    let mut select = QueryBuilder::new(SESSION_EVENTS);
    select
        .push_bind(session)
        .push(" AND seq > ")
        .push_bind(to_i64(low)?)
        .push(" AND seq < ")
        .push_bind(to_i64(high)?);
    if let Some(instance) = query.instance {
        // With the session, the prefix of the `events_by_instance` index.
        select.push(" AND instance = ").push_bind(instance);
    }
    if !query.kinds.is_empty() {
        select.push(" AND kind IN (");
        let mut list = select.separated(", ");
        for kind in query.kinds {
            list.push_bind(kind.as_str());
        }
        select.push(")");
    }
    select
        .push(if ascending {
            " ORDER BY seq LIMIT "
        } else {
            " ORDER BY seq DESC LIMIT "
        })
        .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
    Ok(Some((select, !ascending)))
}

/// The rows of [`session_events`], ascending.
pub(super) fn decode_events(
    session: &str,
    rows: &[impl Columns],
    reverse: bool,
) -> StoreResult<Vec<Event>> {
    let mut events = rows
        .iter()
        .map(|row| decode_event(session, row))
        .collect::<StoreResult<Vec<_>>>()?;
    if reverse {
        events.reverse();
    }
    Ok(events)
}

/// The counts statement for a page of sessions (a listing page: at most a
/// thousand, well within either backend's bound parameters); `None` for none.
pub(super) fn instance_counts<'a, DB>(sessions: &'a [String]) -> Option<QueryBuilder<'a, DB>>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    if sessions.is_empty() {
        return None;
    }
    let mut select = QueryBuilder::new(INSTANCE_COUNTS);
    let mut list = select.separated(", ");
    for session in sessions {
        list.push_bind(session.as_str());
    }
    select.push(INSTANCE_COUNTS_END);
    Some(select)
}

/// A row of [`instance_counts`].
pub(super) fn decode_count(row: &impl Columns) -> StoreResult<(String, String, i64)> {
    Ok((
        row.text("session")?.to_owned(),
        row.text("status")?.to_owned(),
        row.int("n")?,
    ))
}

/// The smallest string greater than every string starting with `prefix`, in
/// code point order (how SQLite's BINARY and PostgreSQL's "C" collation compare
/// UTF-8 text): `prefix` with its last character incremented, dropping
/// trailing characters that cannot be. `None` when every string from `prefix`
/// on starts with it (the empty prefix).
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        // Surrogates are not characters: skip over them.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Deals `(session, status, count)` rows out to one list per session of
/// `sessions`, in that order, each in [`InstanceStatus::ALL`]'s order.
pub(super) fn group_counts(
    sessions: &[String],
    rows: impl IntoIterator<Item = (String, String, i64)>,
) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
    let position: std::collections::HashMap<&str, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, session)| (session.as_str(), i))
        .collect();
    let mut counts = vec![Vec::new(); sessions.len()];
    for (session, status, count) in rows {
        let status: InstanceStatus = status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("instance status {status:?}")))?;
        let count = to_u64(count, "instance count")?;
        if let Some(&i) = position.get(session.as_str()) {
            counts[i].push((status, count));
        }
    }
    for list in &mut counts {
        list.sort_by_key(|(status, _)| InstanceStatus::ALL.iter().position(|s| s == status));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_within(prefix: &str, candidate: &str) -> bool {
        candidate >= prefix && prefix_end(prefix).is_none_or(|end| candidate < end.as_str())
    }

    #[test]
    fn the_prefix_range_holds_exactly_the_strings_that_start_with_the_prefix() {
        let candidates = [
            "",
            "a",
            "ab",
            "abc",
            "abd",
            "ac",
            "b",
            "a\u{10FFFF}",
            "a\u{10FFFF}x",
            "b\u{0}",
            "ab\u{D7FF}",
            "ab\u{E000}",
            "\u{10FFFF}",
            "\u{10FFFF}\u{10FFFF}",
        ];
        for prefix in ["", "a", "ab", "a\u{10FFFF}", "ab\u{D7FF}", "\u{10FFFF}"] {
            for candidate in candidates {
                assert_eq!(
                    starts_within(prefix, candidate),
                    candidate.starts_with(prefix),
                    "prefix {prefix:?}, candidate {candidate:?}"
                );
            }
        }
    }

    #[test]
    fn an_event_page_is_empty_past_the_view_or_before_the_first_event() {
        let query = |window, up_to| EventQuery {
            kinds: &[],
            instance: None,
            window,
            up_to,
            limit: 10,
        };
        assert_eq!(query(EventWindow::After(0), 5).range(), Some((0, 6, true)));
        assert_eq!(query(EventWindow::After(5), 5).range(), None);
        assert_eq!(query(EventWindow::Before(1), 5).range(), None);
        assert_eq!(
            query(EventWindow::Before(9), 5).range(),
            Some((0, 6, false))
        );
        assert_eq!(
            query(EventWindow::Before(3), 5).range(),
            Some((0, 3, false))
        );
    }
}
