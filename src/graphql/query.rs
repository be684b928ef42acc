//! The Query root: one session's state, and the listings across sessions (served
//! from the projection tables, never by folding every session).

use async_graphql::{Context, Object, Result};

use super::error::{bad_input, from_engine, GqlResult};
use super::types::{InstanceStatus, Session, SessionSummary, TaskInstance};
use super::{check_text, engine, page_size};
use crate::domain::{DomainError, Instance, InstanceName, SessionUid, TriggerName};
use crate::engine::Error;
use crate::store::{InstanceQuery, RecentSessions};

/// Reads.
pub struct Query;

/// Reads: a session's state and history, and listings across sessions.
#[Object]
impl Query {
    /// A session's current state. A UID never used is an empty session (version 0).
    async fn session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID (any string of 1 to 512 bytes without NUL).")]
        uid: String,
    ) -> Result<Session> {
        let uid = parse_uid(&uid)?;
        let state = engine(ctx).session(&uid).await.gql()?;
        Ok(Session::new(state))
    }

    /// Sessions ordered by UID: at most `first` (default 100, at most 1000) after
    /// the UID `after`.
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size: default 100, at most 1000.")] first: Option<i32>,
        #[graphql(desc = "The last UID of the previous page (exclusive).")] after: Option<String>,
    ) -> Result<Vec<SessionSummary>> {
        let first = page_size(ctx, first)?;
        check_text("after", after.as_deref())?;
        if first == 0 {
            return Ok(Vec::new());
        }
        let rows = engine(ctx).sessions(first, after.as_deref()).await.gql()?;
        SessionSummary::page(ctx, rows).await
    }

    /// Sessions most recently updated first (ties by UID, descending), read
    /// from the sessions table (a page costs the same however long the logs
    /// are): at most `first` (default 100, at most 1000), after the session
    /// `after`, only those whose UID starts with `uidPrefix`.
    async fn recent_sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only sessions whose UID starts with this (exact, case-sensitive).")]
        uid_prefix: Option<String>,
        #[graphql(desc = "Page size: default 100, at most 1000.")] first: Option<i32>,
        #[graphql(
            desc = "The last session of the previous page, as `[\"<updatedAt>\", \"<uid>\"]` (its `updatedAt` exactly as listed)."
        )]
        after: Option<String>,
    ) -> Result<Vec<SessionSummary>> {
        let first = page_size(ctx, first)?;
        check_text("uidPrefix", uid_prefix.as_deref())?;
        let cursor = after.as_deref().map(parse_recent_cursor).transpose()?;
        if let Some((_, uid)) = &cursor {
            check_text("after", Some(uid))?;
        }
        if first == 0 {
            return Ok(Vec::new());
        }
        let query = RecentSessions {
            prefix: uid_prefix.as_deref(),
            after: cursor.as_ref().map(|(at, uid)| (*at, uid.as_str())),
            first,
        };
        let rows = engine(ctx).recent_sessions(query).await.gql()?;
        SessionSummary::page(ctx, rows).await
    }

    /// Instances across sessions, ordered by session UID then creation, filtered by
    /// status (any of) and task. `first`: default 100, at most 1000. `after` is
    /// the last instance of the previous page, written as the JSON array
    /// `["<session>", "<instance>"]` (or `<session>/<instance>`, split at the last `/`).
    async fn instances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only instances with one of these statuses (all when absent or empty).")]
        status: Option<Vec<InstanceStatus>>,
        #[graphql(desc = "Only instances of this task.")] task: Option<String>,
        #[graphql(desc = "Page size: default 100, at most 1000.")] first: Option<i32>,
        #[graphql(
            desc = "The last instance of the previous page: `[\"<session>\", \"<instance>\"]` or `<session>/<instance>`."
        )]
        after: Option<String>,
    ) -> Result<Vec<TaskInstance>> {
        let first = page_size(ctx, first)?;
        check_text("task", task.as_deref())?;
        let cursor = after.as_deref().map(parse_cursor).transpose()?;
        if let Some((session, instance)) = &cursor {
            check_text("after", Some(session))?;
            check_text("after", Some(instance))?;
        }
        if first == 0 {
            return Ok(Vec::new());
        }
        let statuses = status.unwrap_or_default();
        let query = InstanceQuery {
            statuses: &statuses,
            task: task.as_deref(),
            first,
            after: cursor.as_ref().map(|(s, i)| (s.as_str(), i.as_str())),
        };
        let rows = engine(ctx).instances(query).await.gql()?;
        rows.into_iter()
            .map(|row| {
                let instance: Instance = serde_json::from_str(&row.body).map_err(|err| {
                    from_engine(&Error::Corrupt(format!(
                        "instance row {:?} of session {:?}: {err}",
                        row.name, row.session
                    )))
                })?;
                Ok(TaskInstance::owned(row.session, instance))
            })
            .collect()
    }
}

/// A session UID argument: any non-empty string (`BAD_INPUT` otherwise).
pub(crate) fn parse_uid(uid: &str) -> Result<SessionUid> {
    SessionUid::parse(uid).map_err(|err| from_engine(&err.into()))
}

/// A trigger name argument: any non-empty string (`BAD_INPUT` otherwise).
pub(crate) fn parse_trigger(trigger: &str) -> Result<TriggerName> {
    TriggerName::parse(trigger).map_err(|err| from_engine(&err.into()))
}

/// An instance name argument of `session`. No instance has a name that does
/// not parse, so such a name is `NOT_FOUND`, with the message of any other
/// instance the session does not have.
pub(crate) fn parse_instance(session: &SessionUid, name: &str) -> Result<InstanceName> {
    InstanceName::parse(name).map_err(|_| {
        let missing =
            DomainError::NotFound(format!("session {session:?} has no instance {name:?}"));
        from_engine(&missing.into())
    })
}

/// An `instances(after:)` cursor: `["<session>", "<instance>"]` or `<session>/<instance>`.
fn parse_cursor(cursor: &str) -> Result<(String, String)> {
    if cursor.trim_start().starts_with('[') {
        return match serde_json::from_str::<(String, String)>(cursor) {
            Ok(pair) => Ok(pair),
            Err(err) => Err(bad_input(format!(
                "after must be [\"<session>\", \"<instance>\"] or <session>/<instance>: {err}"
            ))),
        };
    }
    match cursor.rsplit_once('/') {
        Some((session, instance)) if !session.is_empty() && !instance.is_empty() => {
            Ok((session.to_owned(), instance.to_owned()))
        }
        _ => Err(bad_input(format!(
            "after must be [\"<session>\", \"<instance>\"] or <session>/<instance>, got {cursor:?}"
        ))),
    }
}

/// A `recentSessions(after:)` cursor: `["<updatedAt>", "<uid>"]`.
fn parse_recent_cursor(cursor: &str) -> Result<(chrono::DateTime<chrono::Utc>, String)> {
    let shape = "after must be [\"<updatedAt>\", \"<uid>\"] of the last session listed";
    let (at, uid) = serde_json::from_str::<(String, String)>(cursor)
        .map_err(|err| bad_input(format!("{shape}: {err}")))?;
    let at = chrono::DateTime::parse_from_rfc3339(&at)
        .map_err(|err| bad_input(format!("{shape}: {at:?} is not an RFC 3339 time: {err}")))?;
    Ok((at.with_timezone(&chrono::Utc), uid))
}
