//! The eight instance statuses (docs/concepts.md, "Instances") and their
//! SQL/GraphQL spelling. The GraphQL enum `InstanceStatus` is this one
//! (derived here, its descriptions these doc comments), so the API cannot
//! list a status the domain does not have, or miss one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life (docs/concepts.md, "Instances").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    async_graphql::Enum,
)]
#[serde(rename_all = "lowercase")]
#[graphql(name = "InstanceStatus")]
pub enum InstanceStatus {
    /// Created by a trigger, waiting for the rest of its `after` set.
    Unstarted,
    /// Every `after` trigger fired; handed to its runner.
    Scheduled,
    /// A runner started it.
    Running,
    /// The job returned a result; its cascade has fired.
    Finished,
    /// The job failed (or retried itself).
    Failed,
    /// Skipped by the job itself or by an operator.
    Skipped,
    /// A failed instance that was replayed as a clone.
    Replayed,
    /// Its `unless` set fired before it started.
    Abandoned,
}

impl InstanceStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [InstanceStatus; 8] = [
        Self::Unstarted,
        Self::Scheduled,
        Self::Running,
        Self::Finished,
        Self::Failed,
        Self::Skipped,
        Self::Replayed,
        Self::Abandoned,
    ];

    /// The lower-case spelling used in SQL, metadata timestamps and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unstarted => "unstarted",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Replayed => "replayed",
            Self::Abandoned => "abandoned",
        }
    }

    /// Finished, skipped, replayed and abandoned instances need nothing more.
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            Self::Finished | Self::Skipped | Self::Replayed | Self::Abandoned
        )
    }

    /// Scheduled and running instances belong to a runner (and sit in the queue table).
    pub fn is_queued(self) -> bool {
        matches!(self, Self::Scheduled | Self::Running)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the eight status names.
#[derive(Debug, thiserror::Error)]
#[error("unknown instance status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for InstanceStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_sql_spelling() {
        for status in InstanceStatus::ALL {
            assert_eq!(status.as_str().parse::<InstanceStatus>().unwrap(), status);
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, serde_json::json!(status.as_str()));
        }
        assert!("bogus".parse::<InstanceStatus>().is_err());
    }
}
