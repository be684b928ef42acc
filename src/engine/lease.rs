//! Leases on queue rows: who runs an instance, under which token, until when.
//! Taking one is how a runner (inline, an external worker, the sweeper) gets
//! an instance to itself; renewing one keeps it while the run goes on; a report
//! under a lease that was lost is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::QueueOp;

/// A lease, as a runner holds it.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Who holds it: this process's id, a worker's name, or `sweeper`.
    pub(crate) owner: String,
    /// The opaque token reports and renewals name it by.
    pub(crate) token: String,
    /// How long it lasts from each taking or renewal.
    pub(crate) duration: Duration,
}

impl Lease {
    /// A lease under a fresh random token.
    pub(crate) fn fresh(owner: impl Into<String>, duration: Duration) -> Self {
        Self {
            owner: owner.into(),
            token: uuid::Uuid::new_v4().to_string(),
            duration,
        }
    }

    /// When it ends if taken or renewed at `at`.
    pub(crate) fn ends(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at + chrono::Duration::from_std(self.duration).unwrap_or_default()
    }

    /// The queue op that takes it on `instance`'s row at `at` (the row must be
    /// unleased or its lease expired).
    pub(crate) fn take(&self, instance: &str, at: DateTime<Utc>) -> QueueOp {
        self.op(instance, at, None)
    }

    /// The queue op that renews it at `at`: refused unless the row is still
    /// leased under this token.
    pub(crate) fn renew(&self, instance: &str, at: DateTime<Utc>) -> QueueOp {
        self.op(instance, at, Some(self.token.clone()))
    }

    fn op(&self, instance: &str, at: DateTime<Utc>, current_token: Option<String>) -> QueueOp {
        QueueOp::Lease {
            instance: instance.to_owned(),
            owner: self.owner.clone(),
            token: self.token.clone(),
            expires_at: self.ends(at),
            now: at,
            current_token,
        }
    }
}
