//! `triggers`: run tasks once the right set of events has happened, per session,
//! and always be able to say why.
//!
//! Applications fire named triggers for a session; each session is configured with
//! tasks that run after a set of triggers fired (and again every time one fires,
//! unless others fired first). Every configure, fire and task outcome is appended
//! to an event log in SQLite or PostgreSQL; the current state is the fold of it.
//!
//! # Layout
//! - [`domain`]: pure rules, no I/O. Task configs, instances, events,
//!   `decide` (commands -> events) and `SessionState::apply` (the fold).
//! - [`store`]: the log and its projections behind one [`store::Store`] trait, with
//!   `sqlite.rs` and `postgres.rs` holding only SQL.
//! - [`engine`]: the library API ([`Engine`]). Every write goes load -> decide
//!   -> plan -> commit -> publish (`engine/execute.rs`); then come the inline
//!   runner, leases, reports, recovery, the worker protocol and hooks.
//! - [`graphql`]: the GraphQL API (docs/graphql.md), an adapter over the engine
//!   (schema, resolvers, error codes).
//! - [`http`]: the axum server: `/graphql` (GraphiQL, WebSocket subscriptions),
//!   `/health`, `/metrics`, body limit and API token; [`http::serve`] takes a
//!   shutdown future.
//! - [`ui`]: the web UI (`/ui/`: sessions, timelines, why an instance ran),
//!   plain ES modules and GraphiQL's vendored code embedded in the binary.
//! - [`metrics`]: the Prometheus series of `GET /metrics`, one registry per engine.
//! - [`ops`]: the operator's tools over a database: export and import of the log
//!   as JSON Lines, copy between databases, and retention (purge).
//! - [`cli`]: the `triggers` command line (`serve`, `rebuild`, `export`, `import`,
//!   `copy`, `purge`, `work`, and client commands).
//! - [`workload`]: the questionnaire workload `triggers loadgen` and the benches
//!   drive.
//! - `testkit` (feature `testkit`, on for tests, benches and examples): the
//!   test databases, servers and processes the suites share.
//!
//! # Where a fire goes
//! 1. `graphql/mutation.rs`, `fire`: sizes checked, the session UID and
//!    trigger name parsed (`domain/names.rs`), one engine call (from Rust,
//!    parse them and call [`Engine::fire`] directly).
//! 2. `engine/commands.rs`, `Engine::fire`: one decision through
//!    `Engine::execute`.
//! 3. `engine/execute.rs`: **load** the session's state (cache, else latest
//!    snapshot + later events) under its in-process lock, then **decide**:
//! 4. `domain/decide.rs`, `Decider::fire`: `TriggerFired`, then for each task
//!    listening to the trigger, instances created, triggers applied, instances
//!    abandoned or scheduled; every event is folded at once by
//!    `domain/state/apply.rs`. Inline instances to run now are started in the
//!    same decision (`engine/inline.rs`, `prestart`).
//! 5. Back in `engine/execute.rs`: **plan** the instance rows and queue rows,
//!    **commit** them with the events in one transaction (`Store::commit`,
//!    `store/`), re-deciding on a lost version race, then **publish**:
//!    subscribers, hooks (`engine/hooks.rs`) and inline runs.
//! 6. `engine/inline.rs` runs the handler (`engine/handler.rs`) under a lease
//!    (`engine/lease.rs`); `engine/report.rs` records its outcome, and a finished
//!    instance fires its task's name (`domain/decide/run.rs`, `complete`): the
//!    cascade is step 4 again. Instances for worker queues wait in the queue for
//!    `claimTasks` (`engine/workers.rs`); leases that run out are swept back by
//!    `engine/recovery.rs`.
//!
//! ```no_run
//! # async fn demo() -> triggers::engine::Result<()> {
//! use serde_json::json;
//! use triggers::domain::{SessionUid, TriggerName};
//! let engine = triggers::Engine::open("sqlite::memory:").await?;
//! let session = SessionUid::parse("questionnaire:1")?;
//! engine.configure(&session, &json!({
//!     "t_importSubject": {"after": ["firstPageReceived"], "run": "triggers.testing.PassThru"}
//! })).await?;
//! let trigger = TriggerName::parse("firstPageReceived")?;
//! engine.fire(&session, &trigger, Default::default(), None).await?;
//! engine.wait_idle().await;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod domain;
pub mod engine;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod ui;
pub mod workload;

pub use engine::Engine;
