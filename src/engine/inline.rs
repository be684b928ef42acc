//! The inline runner: runs scheduled instances whose handler lives in this
//! process, under a lease so that exactly one process runs each, renewing it
//! while the handler runs, then reports the outcome (`report.rs`).
//!
//! An inline instance scheduled to run now is started in the very decision
//! that scheduled it when a run permit is free ([`prestart`]), saving a commit
//! per run; the others are started by [`Engine::spawn_inline`] once the commit
//! that scheduled them is done.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lease::Lease;
use super::report::Report;
use super::{now, Engine, EngineOptions, Error, Inner, Job, Outcome, Result};
use crate::domain::decide::StartedJob;
use crate::domain::{
    Decider, DomainError, Event, EventPayload, InstanceStatus, Runner, SessionState, SessionUid,
};
use crate::store::{Commit, QueueOp};

/// An inline instance to run once the commit that scheduled it is done.
#[derive(Debug, Clone)]
pub(crate) struct InlineWork {
    pub(crate) instance: String,
    pub(crate) not_before: Option<DateTime<Utc>>,
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

/// An inline instance started in the same commit that scheduled it: the permit
/// to run it is already held.
pub(crate) struct Prestarted {
    job: StartedJob,
    lease: Lease,
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
    options: &EngineOptions,
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
        let lease = Lease::fresh(options.process_id.clone(), options.inline_lease);
        let Ok(job) = decider.start(
            &instance,
            Some(lease.owner.clone()),
            Some(lease.ends(at)),
            false,
        ) else {
            continue;
        };
        prestart.lease_ops.push(lease.take(&instance, at));
        prestart.runs.push(Prestarted { job, lease, permit });
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

    /// The lease inline runs of this process take.
    pub(crate) fn inline_lease(&self) -> Lease {
        Lease::fresh(
            self.inner.options.process_id.clone(),
            self.inner.options.inline_lease,
        )
    }

    pub(crate) fn spawn_inline(&self, session: SessionUid, work: InlineWork) {
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
            let span = tracing::info_span!(
                "inline",
                session = session.as_str(),
                instance = work.instance
            );
            let run = engine.run_inline(&session, &work.instance);
            if let Err(err) = tracing::Instrument::instrument(run, span).await {
                tracing::error!(session = session.as_str(), instance = work.instance, error = %err, "inline run failed to record its outcome; the lease will expire and it will run again");
            }
        });
    }

    /// Leases and starts the instance, runs its handler, and reports the outcome.
    async fn run_inline(&self, session: &SessionUid, instance: &str) -> Result<()> {
        let lease = self.inline_lease();
        let started = self
            .execute(
                session,
                |d| {
                    let expires = lease.ends(now());
                    d.start(instance, Some(lease.owner.clone()), Some(expires), false)
                },
                |at| vec![lease.take(instance, at)],
            )
            .await;
        let job = match started {
            Ok(executed) => executed.value,
            // Another process (or an operator) got there first.
            Err(Error::Conflict(_) | Error::Domain(DomainError::InvalidState(_))) => return Ok(()),
            Err(err) => return Err(err),
        };
        self.run_started(session, job, &lease).await
    }

    /// Runs the handler of an instance this process started under `lease`,
    /// renewing it, then reports the outcome.
    pub(crate) async fn run_started(
        &self,
        session: &SessionUid,
        job: StartedJob,
        lease: &Lease,
    ) -> Result<()> {
        let instance = job.instance.clone();
        let job = Job {
            session: session.as_str().to_owned(),
            started: job,
        };
        tracing::debug!(
            session = session.as_str(),
            instance,
            run = job.run,
            "running inline"
        );
        let heartbeat = self.spawn_heartbeat(session.as_str(), &instance, lease.clone());
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
        self.report_only(session, &instance, report, lease).await?;
        self.inner
            .metrics
            .inline_runs
            .with_label_values(&[label])
            .inc();
        Ok(())
    }

    /// Runs instances started in the commit that scheduled them.
    pub(crate) fn spawn_prestarted(&self, session: &SessionUid, prestarted: Vec<Prestarted>) {
        for started in prestarted {
            let guard = InFlight::new(&self.inner);
            let engine = self.clone();
            let session = session.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let _permit = started.permit;
                let instance = started.job.instance.clone();
                let span = tracing::info_span!("inline", session = session.as_str(), instance);
                let run = engine.run_started(&session, started.job, &started.lease);
                if let Err(err) = tracing::Instrument::instrument(run, span).await {
                    tracing::error!(session = session.as_str(), instance, error = %err, "inline run failed to record its outcome; the lease will expire and it will run again");
                }
            });
        }
    }

    /// Renews `lease` every third of it until aborted.
    fn spawn_heartbeat(
        &self,
        session: &str,
        instance: &str,
        lease: Lease,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let (session, instance) = (session.to_owned(), instance.to_owned());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(lease.duration / 3);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let renew = Commit {
                    session: &session,
                    expected_version: 0,
                    events: &[],
                    instances: Vec::new(),
                    queue: vec![lease.renew(&instance, now())],
                };
                if let Err(err) = store.commit(renew).await {
                    tracing::warn!(session, instance, error = %err, "could not renew an inline lease");
                }
            }
        })
    }
}
