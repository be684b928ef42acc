//! The Query root: one session's state, and the listings across sessions (served
//! from the projection tables, never by folding every session).

use async_graphql::{Context, Object, Result};

use super::error::{bad_input, from_engine, GqlResult};
use super::types::{InstanceStatus, Session, SessionSummary, TaskInstance};
use super::{check_text, engine, page_size};
use crate::domain::{self, Instance, SessionUid};
use crate::engine::Error;

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
        let state = engine(ctx).session(uid.as_str()).await.gql()?;
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
        Ok(rows.into_iter().map(SessionSummary::from).collect())
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
        let statuses: Vec<domain::InstanceStatus> = status
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        let rows = engine(ctx)
            .instances(
                &statuses,
                task.as_deref(),
                first,
                cursor.as_ref().map(|(s, i)| (s.as_str(), i.as_str())),
            )
            .await
            .gql()?;
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

/// A session UID argument: any non-empty string.
pub(crate) fn parse_uid(uid: &str) -> Result<SessionUid> {
    SessionUid::parse(uid).map_err(|err| from_engine(&err.into()))
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
