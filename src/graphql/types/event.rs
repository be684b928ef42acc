//! The `Event` type: one fact of a session's log.

use async_graphql::Object;

use super::int;
use crate::domain;
use crate::graphql::scalars::{DateTime, Json};

/// One event of a session's log.
pub struct Event(domain::Event);

impl From<domain::Event> for Event {
    fn from(event: domain::Event) -> Self {
        Event(event)
    }
}

/// A fact of a session's log.
#[Object]
impl Event {
    /// Gap-free per-session sequence number from 1: the session's version after it.
    async fn seq(&self) -> i64 {
        int(self.0.seq)
    }

    /// The event kind (`TriggerFired`, `InstanceFinished`, ...).
    async fn kind(&self) -> &str {
        self.0.payload.kind()
    }

    /// When the decision was taken.
    async fn at(&self) -> DateTime {
        self.0.at.into()
    }

    /// The payload (for `TriggerFired`: `{"trigger": ..., "kwargs": {...}}`).
    async fn data(&self) -> Json {
        Json(self.0.payload.to_data())
    }

    /// The seq of the event that led to this one; null for what a caller did.
    async fn caused_by(&self) -> Option<i64> {
        self.0.caused_by.map(int)
    }

    /// The instance this event is about, if any.
    async fn instance(&self) -> Option<&str> {
        self.0.payload.instance()
    }

    /// The trigger this event is about, if any.
    async fn trigger(&self) -> Option<&str> {
        self.0.payload.trigger()
    }
}
