//! The inline runner: runs scheduled instances whose handler lives in this process,
//! under a lease so that exactly one process runs each; recovery of work left by a
//! crashed process; and the sweeper that returns expired leases to the queue.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{now, Engine, Error, Inner, Job, Outcome, Result};
use crate::domain::config::json_type;
use crate::domain::decide::Failure;
use crate::domain::decide::StartedJob;
use crate::domain::{
    Decider, Event, EventPayload, InstanceStatus, JsonObject, Runner, SessionState,
};
use crate::store::QueueOp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An inline instance to run once the commit that scheduled it is done.
#[derive(Debug, Clone)]
pub(crate) struct InlineWork {
    instance: String,
    not_before: Option<DateTime<Utc>>,
}

/// Inline instances that `events` scheduled (or returned to the queue).
pub(crate) fn inline_work(state: &SessionState, events: &[Event]) -> Vec<InlineWork> {
    events
        .iter()
        .filter_map(|event| {
            let (instance, not_before) = match &event.payload {
                EventPayload::InstanceScheduled {
                    instance,
                    not_before,
                    ..
                } => (instance, *not_before),
                EventPayload::InstanceLeaseExpired { instance, .. } => (instance, None),
                _ => return None,
            };
            let inst = state.instance(instance)?;
            (inst.status == InstanceStatus::Scheduled && inst.runner == Some(Runner::Inline)).then(
                || InlineWork {
                    instance: instance.clone(),
                    not_before,
                },
            )
        })
        .collect()
}

/// An inline instance started in the same commit that scheduled it, saving a
/// commit per run: the permit to run it is already held.
pub(crate) struct Prestarted {
    job: StartedJob,
    token: String,
    permit: OwnedSemaphorePermit,
}

/// What [`prestart`] started within a decision.
#[derive(Default)]
pub(crate) struct Prestart {
    /// The runs to spawn once the decision is committed.
    pub(crate) runs: Vec<Prestarted>,
    /// Their leases, committed after the queue rows are written.
    pub(crate) lease_ops: Vec<QueueOp>,
}

/// Starts, within the current decision, the inline instances it scheduled for
/// immediate running, as far as free run permits allow; the rest are started by
/// the ordinary path.
pub(crate) fn prestart(
    decider: &mut Decider<'_>,
    permits: &Arc<Semaphore>,
    owner: &str,
    lease: Duration,
    at: DateTime<Utc>,
) -> Prestart {
    let candidates: Vec<String> = decider
        .events()
        .iter()
        .filter_map(|event| match &event.payload {
            EventPayload::InstanceScheduled {
                instance,
                runner: Runner::Inline,
                not_before: None,
            } => Some(instance.clone()),
            _ => None,
        })
        .collect();
    let mut prestart = Prestart::default();
    for instance in candidates {
        if decider.state().instance(&instance).map(|i| i.status) != Some(InstanceStatus::Scheduled)
        {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            break;
        };
        let token = uuid::Uuid::new_v4().to_string();
        let Ok(job) = decider.start(
            &instance,
            Some(owner.to_owned()),
            Some(lease_end(at, lease)),
            false,
        ) else {
            continue;
        };
        prestart
            .lease_ops
            .push(lease_op(&instance, owner, &token, at, lease, None));
        prestart.runs.push(Prestarted { job, token, permit });
    }
    prestart
}

/// Counts an inline run in flight for as long as it lives.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.inflight.send_modify(|n| *n += 1);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.send_modify(|n| *n -= 1);
    }
}

impl Engine {
    /// Returns once no inline run is scheduled or running in this process (tests).
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn spawn_inline(&self, session: String, work: InlineWork) {
        let guard = InFlight::new(&self.inner);
        let engine = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if let Some(not_before) = work.not_before {
                if let Ok(wait) = (not_before - now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
            }
            let Ok(_permit) = engine.inner.permits.clone().acquire_owned().await else {
                return;
            };
            let span = tracing::info_span!("inline", session, instance = work.instance);
            let run = engine.run_inline(&session, &work.instance);
            if let Err(err) = tracing::Instrument::instrument(run, span).await {
                tracing::error!(session, instance = work.instance, error = %err, "inline run failed to record its outcome; the lease will expire and it will run again");
            }
        });
    }

    /// Leases and starts the instance, runs its handler, and reports the outcome.
    async fn run_inline(&self, session: &str, instance: &str) -> Result<()> {
        let owner = self.inner.options.process_id.clone();
        let token = uuid::Uuid::new_v4().to_string();
        let lease = self.inner.options.inline_lease;
        let started = self
            .execute(
                session,
                |d| {
                    let expires = lease_end(now(), lease);
                    d.start(instance, Some(owner.clone()), Some(expires), false)
                },
                |at| vec![lease_op(instance, &owner, &token, at, lease, None)],
            )
            .await;
        let job = match started {
            Ok(executed) => executed.value,
            // Another process (or an operator) got there first.
            Err(Error::Conflict(_) | Error::InvalidState(_)) => return Ok(()),
            Err(err) => return Err(err),
        };
        self.run_started(session, job, &token).await
    }

    /// Runs the handler of an instance this process started under lease `token`,
    /// heartbeating, then reports the outcome.
    pub(crate) async fn run_started(
        &self,
        session: &str,
        job: StartedJob,
        token: &str,
    ) -> Result<()> {
        let owner = &self.inner.options.process_id;
        let lease = self.inner.options.inline_lease;
        let instance = job.instance.clone();
        let job = Job {
            session: session.to_owned(),
            instance: job.instance,
            task: job.task,
            run: job.run,
            kwargs: job.kwargs,
            depth: job.depth,
            max_retries: job.max_retries,
        };
        tracing::debug!(session, instance, run = job.run, "running inline");
        let heartbeat = self.spawn_heartbeat(session, &instance, owner, token, lease);
        let outcome = match self.inner.registry.get(&job.run) {
            Some(handler) => match tokio::spawn(handler.call(job)).await {
                Ok(outcome) => outcome,
                Err(err) => Outcome::failed(
                    "triggers.HandlerPanicked",
                    format!("the handler panicked: {err}"),
                ),
            },
            None => Outcome::failed(
                "triggers.HandlerNotFound",
                format!("no inline handler is registered for {:?}", job.run),
            ),
        };
        heartbeat.abort();
        let report = Report::from(outcome);
        let label = report.label();
        self.report(session, &instance, report, owner, token, lease)
            .await?;
        self.inner
            .metrics
            .inline_runs
            .with_label_values(&[label])
            .inc();
        Ok(())
    }

    /// Runs instances started in the commit that scheduled them.
    pub(crate) fn spawn_prestarted(&self, session: &str, prestarted: Vec<Prestarted>) {
        for started in prestarted {
            let guard = InFlight::new(&self.inner);
            let engine = self.clone();
            let session = session.to_owned();
            tokio::spawn(async move {
                let _guard = guard;
                let _permit = started.permit;
                let instance = started.job.instance.clone();
                let span = tracing::info_span!("inline", session, instance);
                let run = engine.run_started(&session, started.job, &started.token);
                if let Err(err) = tracing::Instrument::instrument(run, span).await {
                    tracing::error!(session, instance, error = %err, "inline run failed to record its outcome; the lease will expire and it will run again");
                }
            });
        }
    }

    fn spawn_heartbeat(
        &self,
        session: &str,
        instance: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let (session, instance, owner, token) = (
            session.to_owned(),
            instance.to_owned(),
            owner.to_owned(),
            token.to_owned(),
        );
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(lease / 3);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let op = lease_op(&instance, &owner, &token, now(), lease, Some(&token));
                let renew = crate::store::Commit {
                    session: &session,
                    expected_version: 0,
                    events: &[],
                    instances: Vec::new(),
                    queue: vec![op],
                };
                if let Err(err) = store.commit(renew).await {
                    tracing::warn!(session, instance, error = %err, "could not renew an inline lease");
                }
            }
        })
    }

    /// Records how a job ended, under the lease `token` (refused if it was lost).
    pub(crate) async fn report(
        &self,
        session: &str,
        instance: &str,
        report: Report,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<crate::domain::Instance> {
        let executed = self
            .execute(
                session,
                |d| {
                    match &report {
                        Report::Complete { result, log_level } => {
                            d.complete(instance, result.clone(), *log_level)?;
                        }
                        Report::Fail(failure) => d.fail(instance, failure.clone())?,
                        Report::Skip { metadata } => d.skip_self(instance, metadata.clone())?,
                        Report::Retry {
                            failure,
                            replacement_kwargs,
                            cooldown_seconds,
                        } => {
                            d.retry(
                                instance,
                                failure.clone(),
                                replacement_kwargs.clone(),
                                *cooldown_seconds,
                            )?;
                        }
                    }
                    d.state().instance(instance).cloned().ok_or_else(|| {
                        crate::domain::DomainError::NotFound(format!("no instance {instance:?}"))
                    })
                },
                |at| vec![lease_op(instance, owner, token, at, lease, Some(token))],
            )
            .await?;
        Ok(executed.value)
    }

    /// At open: run inline instances a previous process left scheduled.
    pub(crate) async fn recover(&self) {
        match self.inner.store.claimable("inline", now(), 10_000).await {
            Ok(rows) if !rows.is_empty() => {
                tracing::info!(
                    count = rows.len(),
                    "recovering inline instances left scheduled by a previous process"
                );
                for row in rows {
                    tracing::info!(
                        session = row.session,
                        instance = row.instance,
                        "re-running inline instance"
                    );
                    self.spawn_inline(
                        row.session,
                        InlineWork {
                            instance: row.instance,
                            not_before: None,
                        },
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "could not look for inline work to recover"),
        }
    }

    /// One pass of the sweeper: expire ended leases, pick up orphaned inline work.
    pub async fn sweep(&self) -> Result<usize> {
        let at = now();
        let mut swept = 0;
        for row in self.inner.store.expired_leases(at, 100).await? {
            let sweeper_token = uuid::Uuid::new_v4().to_string();
            let owner = row.lease_owner.clone();
            let result = self
                .execute(
                    &row.session,
                    |d| d.expire_lease(&row.instance, owner.clone()),
                    |at| {
                        vec![lease_op(
                            &row.instance,
                            "sweeper",
                            &sweeper_token,
                            at,
                            Duration::ZERO,
                            None,
                        )]
                    },
                )
                .await;
            match result {
                Ok(_) => {
                    swept += 1;
                    self.inner.metrics.lease_expirations.inc();
                    tracing::info!(session = row.session, instance = row.instance, worker = ?row.lease_owner, "lease expired; instance returned to the queue");
                }
                Err(Error::Conflict(_)) => {}
                Err(err) => {
                    tracing::warn!(session = row.session, instance = row.instance, error = %err, "could not expire a lease")
                }
            }
        }
        let grace = chrono::Duration::from_std(self.inner.options.inline_lease).unwrap_or_default();
        for row in self
            .inner
            .store
            .claimable("inline", at - grace, 100)
            .await?
        {
            swept += 1;
            self.spawn_inline(
                row.session,
                InlineWork {
                    instance: row.instance,
                    not_before: None,
                },
            );
        }
        Ok(swept)
    }
}

/// Runs the sweeper until the engine shuts down or is dropped.
pub(crate) fn start_sweeper(engine: &Engine, interval: Duration) {
    let weak: Weak<Inner> = Arc::downgrade(&engine.inner);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let engine = Engine { inner };
            if let Err(err) = engine.sweep().await {
                tracing::warn!(error = %err, "lease sweep failed");
            }
        }
    });
}

fn lease_end(at: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(lease).unwrap_or_default()
}

pub(crate) fn lease_op(
    instance: &str,
    owner: &str,
    token: &str,
    at: DateTime<Utc>,
    lease: Duration,
    current_token: Option<&str>,
) -> QueueOp {
    QueueOp::Lease {
        instance: instance.to_owned(),
        owner: owner.to_owned(),
        token: token.to_owned(),
        expires_at: lease_end(at, lease),
        now: at,
        current_token: current_token.map(str::to_owned),
    }
}

/// An outcome as the engine records it.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    Complete {
        result: JsonObject,
        log_level: Option<i64>,
    },
    Fail(Failure),
    Skip {
        metadata: JsonObject,
    },
    Retry {
        failure: Failure,
        replacement_kwargs: Option<JsonObject>,
        cooldown_seconds: Option<f64>,
    },
}

impl Report {
    /// How the run ended, as `triggers_inline_runs_total` labels it.
    fn label(&self) -> &'static str {
        match self {
            Report::Complete { .. } => "finished",
            Report::Fail(_) => "failed",
            Report::Skip { .. } => "skipped",
            Report::Retry { .. } => "retried",
        }
    }
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Finished {
                result: Value::Object(result),
                log_level,
            } => Report::Complete { result, log_level },
            Outcome::Finished { result, .. } => Report::Fail(Failure {
                exception_type: "triggers.InvalidResult".into(),
                exception_info: format!(
                    "the job returned {}, but a result must be a JSON object",
                    json_type(&result)
                ),
                exception_context: JsonObject::new(),
                log_level: None,
            }),
            Outcome::Failed(failure) => Report::Fail(failure),
            Outcome::Skipped { metadata } => Report::Skip { metadata },
            Outcome::Retry {
                reason,
                replacement_kwargs,
                cooldown_seconds,
            } => Report::Retry {
                failure: Failure {
                    exception_type: "triggers.Retry".into(),
                    exception_info: reason,
                    exception_context: JsonObject::new(),
                    log_level: None,
                },
                replacement_kwargs,
                cooldown_seconds,
            },
        }
    }
}
