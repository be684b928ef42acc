//! The Mutation root: configure, fire, the manual changes of operators, and
//! the worker protocol. Each checks argument sizes, makes one engine call, and
//! answers with what that call committed.

use async_graphql::{Context, Object, Result};
use futures::future::{BoxFuture, FutureExt};

use super::error::bad_input;
use super::error::{from_engine, GqlResult};
use super::query::{parse_instance, parse_trigger, parse_uid};
use super::scalars::{DateTime, Json};
use super::types::{FireResultObject, InstanceStatus, Session, TaskClaimObject, TaskInstance};
use super::{check_json_size, check_text, engine, warnings};
use crate::domain::{Instance, InstanceName, SessionUid};
use crate::engine::{Error, WorkerFailure};
use crate::Engine;

/// Writes.
pub struct Mutation;

fn json(value: &Option<Json>) -> Option<&serde_json::Value> {
    value.as_ref().map(|j| &j.0)
}

/// An operator's change to one instance: the session and instance names
/// parsed, one engine call, and the instance as it committed.
async fn change_instance<'a>(
    ctx: &Context<'a>,
    session: String,
    instance: &str,
    change: impl for<'n> FnOnce(
        &'n Engine,
        &'n SessionUid,
        &'n InstanceName,
    ) -> BoxFuture<'n, crate::engine::Result<Instance>>,
) -> Result<TaskInstance> {
    let uid = parse_uid(&session)?;
    let instance = parse_instance(&uid, instance)?;
    let changed = change(engine(ctx), &uid, &instance).await.gql()?;
    Ok(TaskInstance::owned(session, changed))
}

/// The instance a worker's report recorded, in its session.
fn reported_instance(reported: crate::engine::Result<(String, Instance)>) -> Result<TaskInstance> {
    let (session, instance) = reported.gql()?;
    Ok(TaskInstance::owned(session, instance))
}

/// A non-negative `Int` argument as a count.
fn count(value: i32, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| bad_input(format!("{what} must be >= 0, got {value}")))
}

/// Writes: configure and fire, the manual changes of operators, and the
/// protocol of external workers (claim, heartbeat, report). Each one is one
/// decision, committed whole or not at all.
#[Object]
impl Mutation {
    /// Adds or replaces tasks (`tasks`: task name -> directives; see
    /// docs/configuration.md). Bad configuration is rejected as a whole
    /// (`BAD_CONFIGURATION`). What is accepted but likely a mistake (an unknown
    /// directive, a `run` with no handler and no `using`) is listed in the
    /// response's `extensions.warnings`; with `strict: true` an unknown
    /// directive is refused instead.
    async fn configure(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(
            desc = "A JSON object: task name -> directives (`after`, `run`, `andEvery`, `unless`, `withParams`, `using`, `maxRetries`)."
        )]
        tasks: Json,
        #[graphql(
            default_with = "Some(false)",
            desc = "Refuse unknown directives (`BAD_CONFIGURATION`) instead of keeping them in `extras` with a warning."
        )]
        strict: Option<bool>,
    ) -> Result<Session> {
        check_json_size(ctx, "tasks", Some(&tasks.0))?;
        let uid = parse_uid(&session)?;
        let engine = engine(ctx);
        let configured = engine
            .configure_checked(&uid, &tasks.0, strict.unwrap_or(false))
            .await
            .gql()?;
        warnings::warn(ctx, configured.warnings);
        Ok(Session::new(engine.session(&uid).await.gql()?))
    }

    /// Fires `trigger` with `kwargs` (a JSON object, default `{}`). A repeated
    /// `idempotencyKey` returns the first result with `duplicate: true` and
    /// appends nothing.
    async fn fire(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The trigger name.")] trigger: String,
        #[graphql(
            desc = "A JSON object handed to the instances this trigger completes (default `{}`)."
        )]
        kwargs: Option<Json>,
        #[graphql(
            desc = "Makes the fire safe to retry: a repeat within the session appends nothing and answers the first result with `duplicate: true`."
        )]
        idempotency_key: Option<String>,
    ) -> Result<FireResultObject> {
        check_json_size(ctx, "kwargs", json(&kwargs))?;
        let uid = parse_uid(&session)?;
        let trigger = parse_trigger(&trigger)?;
        let engine = engine(ctx);
        let result = engine
            .fire_json(
                &uid,
                &trigger,
                kwargs.map(|j| j.0),
                idempotency_key.as_deref(),
            )
            .await
            .gql()?;
        let Some(event) = result.event.clone() else {
            return Err(from_engine(&Error::Corrupt(format!(
                "session {session:?} has no TriggerFired event at seq {}",
                result.seq
            ))));
        };
        Ok(FireResultObject::new(event, result))
    }

    /// Replays a `failed` instance as a new clone, scheduled at once; returns the clone.
    async fn replay_failed_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The `failed` instance to replay.")] instance: String,
        #[graphql(
            desc = "Kwargs for the clone, replacing the failed instance's whole (default: the same kwargs)."
        )]
        replacement_kwargs: Option<Json>,
    ) -> Result<TaskInstance> {
        check_json_size(ctx, "replacementKwargs", json(&replacement_kwargs))?;
        let kwargs = replacement_kwargs.map(|j| j.0);
        change_instance(ctx, session, &instance, |engine, uid, instance| {
            engine.replay_failed_instance(uid, instance, kwargs).boxed()
        })
        .await
    }

    /// Skips a `failed` instance; with `cascade`, fires the task name with `result`.
    async fn skip_failed_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The `failed` instance to skip.")] instance: String,
        #[graphql(
            desc = "Fire the task name with `result`, as if it had finished (default false)."
        )]
        cascade: Option<bool>,
        #[graphql(desc = "The result recorded (and cascaded); a JSON object, default `{}`.")]
        result: Option<Json>,
    ) -> Result<TaskInstance> {
        check_json_size(ctx, "result", json(&result))?;
        let (cascade, result) = (cascade.unwrap_or(false), result.map(|j| j.0));
        change_instance(ctx, session, &instance, |engine, uid, instance| {
            engine
                .skip_failed_instance(uid, instance, cascade, result)
                .boxed()
        })
        .await
    }

    /// Sets any status and merges `metadata`; with `cascade`, fires the task name
    /// with `cascadeKwargs`.
    #[allow(clippy::too_many_arguments)]
    async fn update_instance_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The instance name (`<task>#<n>`).")] instance: String,
        #[graphql(desc = "The new status (`SCHEDULED` puts it back in its runner's queue).")]
        status: InstanceStatus,
        #[graphql(desc = "A JSON object merged (deeply) into the instance's metadata.")]
        metadata: Option<Json>,
        #[graphql(desc = "Fire the task name with `cascadeKwargs` (default false).")]
        cascade: Option<bool>,
        #[graphql(desc = "The kwargs of the cascade; a JSON object, default `{}`.")] cascade_kwargs: Option<Json>,
    ) -> Result<TaskInstance> {
        check_json_size(ctx, "metadata", json(&metadata))?;
        check_json_size(ctx, "cascadeKwargs", json(&cascade_kwargs))?;
        let metadata = metadata.map(|j| j.0);
        let (cascade, cascade_kwargs) = (cascade.unwrap_or(false), cascade_kwargs.map(|j| j.0));
        change_instance(ctx, session, &instance, |engine, uid, instance| {
            engine
                .update_instance_status(uid, instance, status, metadata, cascade, cascade_kwargs)
                .boxed()
        })
        .await
    }

    /// Merges `metadata` into the instance's metadata.
    async fn update_instance_metadata(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The instance name (`<task>#<n>`).")] instance: String,
        #[graphql(desc = "A JSON object merged (deeply) into the instance's metadata.")]
        metadata: Json,
    ) -> Result<TaskInstance> {
        check_json_size(ctx, "metadata", Some(&metadata.0))?;
        change_instance(ctx, session, &instance, |engine, uid, instance| {
            engine
                .update_instance_metadata(uid, instance, metadata.0)
                .boxed()
        })
        .await
    }

    /// Sets metadata `logsResolved: true`.
    async fn mark_instance_logs_resolved(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session UID.")] session: String,
        #[graphql(desc = "The instance name (`<task>#<n>`).")] instance: String,
    ) -> Result<TaskInstance> {
        change_instance(ctx, session, &instance, |engine, uid, instance| {
            engine.mark_instance_logs_resolved(uid, instance).boxed()
        })
        .await
    }

    /// Claims up to `max` (default 1) scheduled instances of `queue` (default
    /// `default`) for `leaseSeconds` (default 30, 1..3600).
    async fn claim_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Who claims (recorded in `InstanceStarted`), e.g. `<host>:<pid>`.")]
        worker: String,
        #[graphql(
            desc = "The worker queue (`using: \"worker:<queue>\"`); null or absent: `default`."
        )]
        queue: Option<String>,
        #[graphql(desc = "How many instances at most (default 1).")] max: Option<i32>,
        #[graphql(
            desc = "How long the claims are held before they return to the queue unless renewed (default 30, 1..3600)."
        )]
        lease_seconds: Option<i32>,
    ) -> Result<Vec<TaskClaimObject>> {
        check_text("worker", Some(&worker))?;
        check_text("queue", queue.as_deref())?;
        let max = max.map(|m| count(m, "max")).transpose()?;
        let lease_seconds = lease_seconds
            .map(|s| count(s, "leaseSeconds"))
            .transpose()?;
        let claims = engine(ctx)
            .claim_tasks(&worker, queue.as_deref(), max, lease_seconds)
            .await
            .gql()?;
        Ok(claims.into_iter().map(TaskClaimObject::from).collect())
    }

    /// Extends a lease; returns its new expiry. `CONFLICT` if it expired or was
    /// claimed again.
    async fn heartbeat(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `claimTasks` returned for this claim.")] lease_token: String,
        #[graphql(desc = "The new lease, counted from now (default 30, 1..3600).")]
        lease_seconds: Option<i32>,
    ) -> Result<DateTime> {
        check_text("leaseToken", Some(&lease_token))?;
        let lease_seconds = lease_seconds
            .map(|s| count(s, "leaseSeconds"))
            .transpose()?;
        let expires = engine(ctx)
            .heartbeat(&lease_token, lease_seconds)
            .await
            .gql()?;
        Ok(expires.into())
    }

    /// Reports success: records `result` (a JSON object, default `{}`) and cascades.
    async fn complete_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `claimTasks` returned for this claim.")] lease_token: String,
        #[graphql(
            desc = "The result: a JSON object (default `{}`), fired as the cascade's kwargs."
        )]
        result: Option<Json>,
        #[graphql(desc = "The log level recorded (default 20, INFO).")] log_level: Option<i32>,
    ) -> Result<TaskInstance> {
        check_text("leaseToken", Some(&lease_token))?;
        check_json_size(ctx, "result", json(&result))?;
        let reported = engine(ctx)
            .complete_task(&lease_token, result.map(|j| j.0), log_level.map(i64::from))
            .await;
        reported_instance(reported)
    }

    /// Reports failure; with `retry`, the instance is replayed (within
    /// `maxRetries`) after `cooldownSeconds`.
    #[allow(clippy::too_many_arguments)]
    async fn fail_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `claimTasks` returned for this claim.")] lease_token: String,
        #[graphql(desc = "What went wrong: recorded as `exceptionInfo` (message, traceback).")]
        error: String,
        #[graphql(desc = "Recorded as `exceptionType` (e.g. the exception's class name).")]
        error_type: Option<String>,
        #[graphql(desc = "A JSON object recorded as `exceptionContext`.")] context: Option<Json>,
        #[graphql(desc = "The log level recorded (default 40, ERROR).")] log_level: Option<i32>,
        #[graphql(
            desc = "Ask for a retry: the instance is replayed as a clone, within the task's `maxRetries` (default false)."
        )]
        retry: Option<bool>,
        #[graphql(desc = "With `retry`, how long the clone waits before it can be claimed.")]
        cooldown_seconds: Option<i32>,
        #[graphql(desc = "With `retry`, kwargs for the clone (replacing the instance's whole).")]
        replacement_kwargs: Option<Json>,
    ) -> Result<TaskInstance> {
        check_text("leaseToken", Some(&lease_token))?;
        check_json_size(ctx, "context", json(&context))?;
        check_json_size(ctx, "replacementKwargs", json(&replacement_kwargs))?;
        let failure = WorkerFailure {
            error,
            error_type,
            context: context.map(|j| j.0),
            log_level: log_level.map(i64::from),
            retry: retry.unwrap_or(false),
            cooldown_seconds: cooldown_seconds.map(f64::from),
            replacement_kwargs: replacement_kwargs.map(|j| j.0),
        };
        reported_instance(engine(ctx).fail_task(&lease_token, failure).await)
    }

    /// Reports that the worker skipped the task, with `metadata` of its choice.
    async fn skip_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `claimTasks` returned for this claim.")] lease_token: String,
        #[graphql(desc = "A JSON object merged into the instance's metadata.")] metadata: Option<
            Json,
        >,
    ) -> Result<TaskInstance> {
        check_text("leaseToken", Some(&lease_token))?;
        check_json_size(ctx, "metadata", json(&metadata))?;
        let reported = engine(ctx)
            .skip_task(&lease_token, metadata.map(|j| j.0))
            .await;
        reported_instance(reported)
    }
}
