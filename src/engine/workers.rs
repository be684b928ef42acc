//! The external worker protocol: claim scheduled instances with a lease, renew it,
//! and report the outcome under it (docs/graphql.md, "Workers").
//!
//! A claim is an ordinary decision on the instance's session (`InstanceStarted`)
//! committed together with a conditional lease update of its queue row, so two
//! workers never both get an instance, and a report under a token whose lease
//! expired or was re-claimed fails before anything is written. The lease is a
//! `lease::Lease`; the report is recorded by `report.rs`, as an inline run's is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::commands::{object_or_empty, optional_object};
use super::lease::Lease;
use super::report::Report;
use super::{now, Engine, Error, Result};
use crate::domain::decide::Failure;
use crate::domain::{DomainError, Instance, JsonObject, Runner, SessionUid};
use crate::store::{Commit, QueueEntry};

/// Default lease of a claim, in seconds.
pub const DEFAULT_LEASE_SECONDS: u32 = 30;
/// Longest lease a worker may ask for, in seconds.
pub const MAX_LEASE_SECONDS: u32 = 3600;
/// Most instances one claim may return.
pub const MAX_CLAIM: u32 = 100;

/// An instance handed to an external worker (the GraphQL `TaskClaim`; `triggers
/// work` reads it back from `claimTasks` as it is).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Opaque token: reports and heartbeats name the claim by it.
    pub lease_token: String,
    /// The session.
    pub session: String,
    /// The instance.
    pub instance: String,
    /// The job name.
    pub run: String,
    /// `withParams` deep-merged under the trigger kwargs.
    pub kwargs: JsonObject,
    /// The instance's depth + 1.
    pub attempt: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// What an external worker reports with `failTask`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerFailure {
    /// What went wrong: recorded as `exceptionInfo`.
    pub error: String,
    /// Recorded as `exceptionType` (`triggers.WorkerError` when `None`).
    pub error_type: Option<String>,
    /// A JSON object recorded as `exceptionContext`.
    pub context: Option<Value>,
    /// The log level recorded (ERROR when `None`).
    pub log_level: Option<i64>,
    /// Ask for a retry: the instance is replayed within `maxRetries`.
    pub retry: bool,
    /// With `retry`, seconds before the clone may be claimed.
    pub cooldown_seconds: Option<f64>,
    /// With `retry`, kwargs for the clone (a JSON object).
    pub replacement_kwargs: Option<Value>,
}

fn lease_duration(lease_seconds: Option<u32>) -> Result<Duration> {
    let seconds = lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !(1..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(Error::bad_input(format!(
            "leaseSeconds must be between 1 and {MAX_LEASE_SECONDS}, got {seconds}"
        )));
    }
    Ok(Duration::from_secs(u64::from(seconds)))
}

impl Engine {
    /// Claims up to `max` instances of `queue` (default `default`), oldest first.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn claim_tasks(
        &self,
        worker: &str,
        queue: Option<&str>,
        max: Option<u32>,
        lease_seconds: Option<u32>,
    ) -> Result<Vec<Claim>> {
        if worker.is_empty() {
            return Err(Error::bad_input("worker must not be empty"));
        }
        let queue = queue.unwrap_or(Runner::DEFAULT_QUEUE);
        if queue.is_empty() || queue == Runner::Inline.queue_name() {
            return Err(Error::bad_input(format!(
                "queue {queue:?} cannot be claimed by workers"
            )));
        }
        let max = max.unwrap_or(1);
        if !(1..=MAX_CLAIM).contains(&max) {
            return Err(Error::bad_input(format!(
                "max must be between 1 and {MAX_CLAIM}, got {max}"
            )));
        }
        let lease = lease_duration(lease_seconds)?;
        let mut claims = Vec::new();
        for _round in 0..3 {
            let wanted = max - claims.len() as u32;
            let mut candidates = self
                .inner
                .store
                .claimable(queue, now(), wanted.saturating_mul(4).max(8))
                .await?;
            if candidates.is_empty() {
                break;
            }
            // Every claim tries the oldest row first, so none waits behind newer
            // ones for longer than one claim. Concurrent workers see the same
            // window: past the oldest, each goes on from a random point of it so
            // those that lost the oldest do not all queue up on the next one.
            if candidates.len() > 2 {
                let rest = candidates.len() - 1;
                let start = (uuid::Uuid::new_v4().as_u128() % rest as u128) as usize;
                candidates[1..].rotate_left(start);
            }
            for row in candidates {
                if claims.len() as u32 >= max {
                    break;
                }
                if let Some(claim) = self.claim_one(worker, &row, lease).await? {
                    claims.push(claim);
                }
            }
            if claims.len() as u32 >= max {
                break;
            }
        }
        Ok(claims)
    }

    /// Leases and starts one queue row; `None` if another worker got it first.
    async fn claim_one(
        &self,
        worker: &str,
        row: &QueueEntry,
        lease: Duration,
    ) -> Result<Option<Claim>> {
        let lease = Lease::fresh(worker, lease);
        let mut expires = now();
        let started = self
            .execute(
                &SessionUid::stored(&row.session),
                |d| {
                    expires = lease.ends(now());
                    d.start(&row.instance, Some(worker.to_owned()), Some(expires), true)
                },
                |at| vec![lease.take(&row.instance, at)],
            )
            .await;
        match started {
            Ok(executed) => {
                let job = executed.value;
                Ok(Some(Claim {
                    lease_token: lease.token,
                    session: row.session.clone(),
                    instance: job.instance,
                    run: job.run,
                    kwargs: job.kwargs,
                    attempt: job.depth + 1,
                    lease_expires_at: expires,
                }))
            }
            Err(
                Error::Conflict(_)
                | Error::Domain(DomainError::InvalidState(_) | DomainError::NotFound(_)),
            ) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Extends a lease; returns its new expiry.
    pub async fn heartbeat(
        &self,
        lease_token: &str,
        lease_seconds: Option<u32>,
    ) -> Result<DateTime<Utc>> {
        let duration = lease_duration(lease_seconds)?;
        let row = self.live_lease(lease_token).await?;
        let lease = Lease {
            owner: row.lease_owner.clone().unwrap_or_default(),
            token: lease_token.to_owned(),
            duration,
        };
        let at = now();
        let expires = lease.ends(at);
        let op = lease.renew(&row.instance, at);
        self.inner
            .store
            .commit(Commit {
                session: &row.session,
                expected_version: 0,
                events: &[],
                instances: Vec::new(),
                queue: vec![op],
            })
            .await?;
        Ok(expires)
    }

    /// The worker finished: record the result and cascade. Returns the session and
    /// the instance.
    pub async fn complete_task(
        &self,
        lease_token: &str,
        result: Option<Value>,
        log_level: Option<i64>,
    ) -> Result<(String, Instance)> {
        let result = object_or_empty(result, "result")?;
        self.report_lease(lease_token, Report::Complete { result, log_level })
            .await
    }

    /// The worker failed; with `retry`, replay within `maxRetries` after the cooldown.
    pub async fn fail_task(
        &self,
        lease_token: &str,
        failure: WorkerFailure,
    ) -> Result<(String, Instance)> {
        let WorkerFailure {
            error,
            error_type,
            context,
            log_level,
            retry,
            cooldown_seconds,
            replacement_kwargs,
        } = failure;
        let context = object_or_empty(context, "context")?;
        let replacement_kwargs = optional_object(replacement_kwargs, "replacementKwargs")?;
        if cooldown_seconds.is_some_and(|c| !(0.0..=86_400.0).contains(&c)) {
            return Err(Error::bad_input(
                "cooldownSeconds must be between 0 and 86400",
            ));
        }
        let failure = Failure {
            exception_type: error_type.unwrap_or_else(|| "triggers.WorkerError".into()),
            exception_info: error,
            exception_context: context,
            log_level,
        };
        let report = if retry {
            Report::Retry {
                failure,
                replacement_kwargs,
                cooldown_seconds,
            }
        } else {
            Report::Fail(failure)
        };
        self.report_lease(lease_token, report).await
    }

    /// The worker skipped the task.
    pub async fn skip_task(
        &self,
        lease_token: &str,
        metadata: Option<Value>,
    ) -> Result<(String, Instance)> {
        let metadata = object_or_empty(metadata, "metadata")?;
        self.report_lease(lease_token, Report::Skip { metadata })
            .await
    }

    async fn report_lease(&self, lease_token: &str, report: Report) -> Result<(String, Instance)> {
        let row = self.live_lease(lease_token).await?;
        // Reporting keeps the lease to its end, no longer.
        let lease = Lease {
            owner: row.lease_owner.clone().unwrap_or_default(),
            token: lease_token.to_owned(),
            duration: row
                .lease_expires_at
                .and_then(|e| (e - now()).to_std().ok())
                .unwrap_or(Duration::from_secs(1)),
        };
        self.report(
            &SessionUid::stored(&row.session),
            &row.instance,
            report,
            &lease,
        )
        .await
        .map(|instance| (row.session, instance))
    }

    /// The queue row of a lease that is still held.
    async fn live_lease(&self, lease_token: &str) -> Result<QueueEntry> {
        let refused = || {
            Error::Conflict(
                "this lease token is unknown, expired, or its instance was claimed again: the outcome was not recorded".into(),
            )
        };
        let row = self
            .inner
            .store
            .lease(lease_token)
            .await?
            .ok_or_else(refused)?;
        match row.lease_expires_at {
            Some(expires) if expires > now() => Ok(row),
            _ => Err(refused()),
        }
    }
}
