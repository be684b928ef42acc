//! The worker protocol's engine calls, in one place: the resolvers in
//! [`super::mutation`] only convert arguments and results.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::bad_input;
use crate::domain::Instance;
use crate::engine::{Claim, Result};
use crate::Engine;

/// A non-negative `Int` argument as a count.
pub(super) fn count(value: i32, what: &str) -> async_graphql::Result<u32> {
    u32::try_from(value).map_err(|_| bad_input(format!("{what} must be >= 0, got {value}")))
}

/// `claimTasks`.
pub(super) async fn claim(
    engine: &Engine,
    worker: &str,
    queue: Option<&str>,
    max: Option<u32>,
    lease_seconds: Option<u32>,
) -> Result<Vec<Claim>> {
    engine.claim_tasks(worker, queue, max, lease_seconds).await
}

/// `heartbeat`.
pub(super) async fn heartbeat(
    engine: &Engine,
    lease_token: &str,
    lease_seconds: Option<u32>,
) -> Result<DateTime<Utc>> {
    engine.heartbeat(lease_token, lease_seconds).await
}

/// `completeTask`: the session and the finished instance.
pub(super) async fn complete(
    engine: &Engine,
    lease_token: &str,
    result: Option<Value>,
    log_level: Option<i64>,
) -> Result<(String, Instance)> {
    engine.complete_task(lease_token, result, log_level).await
}

/// What `failTask` reports.
pub(super) struct Failure {
    pub(super) error: String,
    pub(super) error_type: Option<String>,
    pub(super) context: Option<Value>,
    pub(super) log_level: Option<i64>,
    pub(super) retry: bool,
    pub(super) cooldown_seconds: Option<f64>,
    pub(super) replacement_kwargs: Option<Value>,
}

/// `failTask`: the session and the failed instance.
pub(super) async fn fail(
    engine: &Engine,
    lease_token: &str,
    failure: Failure,
) -> Result<(String, Instance)> {
    engine
        .fail_task(
            lease_token,
            failure.error,
            failure.error_type,
            failure.context,
            failure.log_level,
            failure.retry,
            failure.cooldown_seconds,
            failure.replacement_kwargs,
        )
        .await
}

/// `skipTask`: the session and the skipped instance.
pub(super) async fn skip(
    engine: &Engine,
    lease_token: &str,
    metadata: Option<Value>,
) -> Result<(String, Instance)> {
    engine.skip_task(lease_token, metadata).await
}
