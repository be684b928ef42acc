//! The rows of the sessions listings, with their instances counted by status.

use async_graphql::{Context, Object, SimpleObject};

use super::{int, InstanceStatus};
use crate::domain;
use crate::graphql::engine;
use crate::graphql::error::GqlResult;
use crate::graphql::scalars::DateTime;

/// How many instances have one status.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
#[graphql(name = "StatusCount")]
pub struct StatusCount {
    /// The status.
    pub status: InstanceStatus,
    /// How many instances have it (at least 1: statuses with none are left out).
    pub count: i64,
}

impl StatusCount {
    /// Counts as the engine gives them, in [`domain::InstanceStatus::ALL`]'s order.
    pub fn list(counts: impl IntoIterator<Item = (domain::InstanceStatus, u64)>) -> Vec<Self> {
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(status, count)| StatusCount {
                status,
                count: int(count),
            })
            .collect()
    }
}

/// One row of a sessions listing.
pub struct SessionSummary {
    row: crate::store::SessionSummary,
    /// Read for the whole page at once, and only when the query asks for them.
    counts: Vec<StatusCount>,
}

impl SessionSummary {
    /// A page of listing rows, with their counts when the selection asks for
    /// `instanceCounts` (one read for the page, from the instances table).
    pub async fn page(
        ctx: &Context<'_>,
        rows: Vec<crate::store::SessionSummary>,
    ) -> async_graphql::Result<Vec<Self>> {
        let mut counts = if ctx.look_ahead().field("instanceCounts").exists() {
            let uids: Vec<String> = rows.iter().map(|row| row.uid.clone()).collect();
            engine(ctx).instance_counts(&uids).await.gql()?
        } else {
            Vec::new()
        };
        counts.resize_with(rows.len(), Vec::new);
        Ok(rows
            .into_iter()
            .zip(counts)
            .map(|(row, counts)| SessionSummary {
                row,
                counts: StatusCount::list(counts),
            })
            .collect())
    }
}

/// One row of a sessions listing.
#[Object]
impl SessionSummary {
    /// The session UID.
    async fn uid(&self) -> &str {
        &self.row.uid
    }

    /// Its version (seq of its last event).
    async fn version(&self) -> i64 {
        int(self.row.version)
    }

    /// When its last event was decided.
    async fn updated_at(&self) -> DateTime {
        self.row.updated_at.into()
    }

    /// Its instances counted by status, in the order of `InstanceStatus`;
    /// statuses with no instance are left out (a session without instances
    /// has an empty list).
    async fn instance_counts(&self) -> &[StatusCount] {
        &self.counts
    }
}
