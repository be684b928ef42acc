//! What mutations answer besides instances: a fire's result, and a worker's claim.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};

use super::{Event, Session, TaskInstance};
use crate::domain::{self, SessionState, SessionUid};
use crate::engine::Claim;
use crate::graphql::engine;
use crate::graphql::error::GqlResult;
use crate::graphql::scalars::{DateTime, Json};

/// What a `fire` did: the engine's `FireResult` as the GraphQL `FireResult`.
pub struct FireResultObject {
    uid: String,
    event: domain::Event,
    scheduled: Vec<String>,
    abandoned: Vec<String>,
    duplicate: bool,
    /// Read only when `session`, `scheduled` or `abandoned` is asked for: most
    /// callers want the event alone, and a fire should cost one commit.
    state: tokio::sync::OnceCell<Arc<SessionState>>,
}

impl FireResultObject {
    /// The result of a fire; the session is read after it, on demand.
    pub fn new(event: domain::Event, result: crate::engine::FireResult) -> Self {
        Self {
            uid: result.session,
            event,
            scheduled: result.outcome.scheduled,
            abandoned: result.outcome.abandoned,
            duplicate: result.outcome.duplicate,
            state: tokio::sync::OnceCell::new(),
        }
    }

    async fn state(&self, ctx: &Context<'_>) -> Result<&Arc<SessionState>> {
        self.state
            .get_or_try_init(|| async {
                engine(ctx)
                    .session(&SessionUid::stored(&self.uid))
                    .await
                    .gql()
            })
            .await
    }

    async fn instances(&self, ctx: &Context<'_>, names: &[String]) -> Result<Vec<TaskInstance>> {
        let state = self.state(ctx).await?;
        Ok(names
            .iter()
            .filter_map(|name| TaskInstance::named(state, name))
            .collect())
    }
}

/// What a `fire` did.
#[Object(name = "FireResult")]
impl FireResultObject {
    /// The session after the fire.
    async fn session(&self, ctx: &Context<'_>) -> Result<Session> {
        Ok(Session::new(self.state(ctx).await?.clone()))
    }

    /// The `TriggerFired` event (the first one, for a duplicate).
    async fn event(&self) -> Event {
        Event::from(self.event.clone())
    }

    /// Instances this fire scheduled (not those of later cascades).
    async fn scheduled(&self, ctx: &Context<'_>) -> Result<Vec<TaskInstance>> {
        self.instances(ctx, &self.scheduled).await
    }

    /// Instances this fire abandoned.
    async fn abandoned(&self, ctx: &Context<'_>) -> Result<Vec<TaskInstance>> {
        self.instances(ctx, &self.abandoned).await
    }

    /// The idempotency key was used before: nothing was appended.
    async fn duplicate(&self) -> bool {
        self.duplicate
    }
}

/// An instance handed to an external worker under a lease.
// The engine's `Claim` as the GraphQL `TaskClaim`.
#[derive(SimpleObject)]
#[graphql(name = "TaskClaim")]
pub struct TaskClaimObject {
    /// Names the claim in `heartbeat`, `completeTask`, `failTask` and `skipTask`.
    pub lease_token: String,
    /// The session.
    pub session: String,
    /// The instance (`<task>#<n>`).
    pub instance: String,
    /// The job to run.
    pub run: String,
    /// The kwargs to run it with (`withParams` merged under the trigger kwargs).
    pub kwargs: Json,
    /// The instance's depth + 1.
    pub attempt: i64,
    /// When the lease ends unless renewed with `heartbeat`.
    pub lease_expires_at: DateTime,
}

impl From<Claim> for TaskClaimObject {
    fn from(claim: Claim) -> Self {
        Self {
            lease_token: claim.lease_token,
            session: claim.session,
            instance: claim.instance,
            run: claim.run,
            kwargs: claim.kwargs.into(),
            attempt: i64::from(claim.attempt),
            lease_expires_at: claim.lease_expires_at.into(),
        }
    }
}
