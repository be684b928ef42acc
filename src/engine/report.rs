//! How a run ended, as the engine records it: a handler's [`Outcome`] or an
//! external worker's report becomes a [`Report`], decided and committed under
//! the run's lease (refused if the lease was lost).

use serde_json::Value;

use super::lease::Lease;
use super::{Engine, Outcome, Result};
use crate::domain::config::json_type;
use crate::domain::decide::Failure;
use crate::domain::{DomainError, Instance, JsonObject, SessionState, SessionUid};

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

impl Engine {
    /// Records how a job ended, renewing `lease` in the same commit (refused if
    /// it was lost); answers the instance as it is then.
    pub(crate) async fn report(
        &self,
        session: &SessionUid,
        instance: &str,
        report: Report,
        lease: &Lease,
    ) -> Result<Instance> {
        self.report_then(session, instance, report, lease, |state| {
            state
                .instance(instance)
                .cloned()
                .ok_or_else(|| DomainError::NotFound(format!("no instance {instance:?}")))
        })
        .await
    }

    /// [`Engine::report`] for a caller that needs no answer (an inline run):
    /// the instance, kwargs and all, is not copied out.
    pub(crate) async fn report_only(
        &self,
        session: &SessionUid,
        instance: &str,
        report: Report,
        lease: &Lease,
    ) -> Result<()> {
        self.report_then(session, instance, report, lease, |_| Ok(()))
            .await
    }

    /// Records the report, then answers what `answer` reads off the state.
    async fn report_then<T>(
        &self,
        session: &SessionUid,
        instance: &str,
        report: Report,
        lease: &Lease,
        answer: impl Fn(&SessionState) -> std::result::Result<T, DomainError>,
    ) -> Result<T> {
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
                    answer(d.state())
                },
                |at| vec![lease.renew(instance, at)],
            )
            .await?;
        Ok(executed.value)
    }
}

impl Report {
    /// How the run ended, as `triggers_inline_runs_total` labels it.
    pub(crate) fn label(&self) -> &'static str {
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
