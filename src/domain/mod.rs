//! The pure domain: task configurations, instances, events, and the rules that
//! turn commands into events (`decide`) and events into state
//! (`SessionState::apply`, in `state/apply.rs`).
//!
//! Nothing here touches a database, a clock or the network: the engine passes the
//! current time and a runner resolver in, and gets events out. That keeps every rule
//! of docs/concepts.md and docs/configuration.md testable as given-events / when-command / then-events.

pub mod config;
pub mod decide;
pub mod error;
pub mod event;
pub mod instance;
pub mod merge;
pub mod names;
pub mod state;
pub mod status;
#[cfg(test)]
mod tests;

pub use config::{parse_tasks, Runner, TaskConfig};
pub use decide::{Decider, FireOutcome, RunnerResolver, StepOutcome};
pub use error::DomainError;
pub use event::{Event, EventPayload, TriggerRole, EVENT_KINDS};
pub use instance::Instance;
pub use names::{InstanceName, SessionUid, TriggerName};
pub use state::SessionState;
pub use status::InstanceStatus;

/// A JSON object: the shape of kwargs, results and metadata.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;
