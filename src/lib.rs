//! `triggers`: run tasks once the right set of events has happened, per session,
//! and always be able to say why.
//!
//! Applications fire named triggers for a session; each session is configured with
//! tasks that run after a set of triggers fired (and again every time one fires,
//! unless others fired first). Every configure, fire and task outcome is appended
//! to an event log in SQLite or PostgreSQL; the current state is the fold of it.
//!
//! # Layout
//! - [`domain`]: pure rules. Task configs, instances, events, `decide` (commands ->
//!   events) and `SessionState::apply` (the fold). No I/O.
//! - [`store`]: the log and its projections behind one [`store::Store`] trait, with
//!   `sqlite.rs` and `postgres.rs` holding only SQL.
//! - [`engine`]: load -> decide -> append -> dispatch. The library API
//!   ([`Engine`]), inline handlers, hooks, leases and recovery.
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
//!   `copy`, `purge`, and client commands).
//!
//! ```no_run
//! # async fn demo() -> triggers::engine::Result<()> {
//! use serde_json::json;
//! let engine = triggers::Engine::open("sqlite::memory:").await?;
//! engine.configure("questionnaire:1", &json!({
//!     "t_importSubject": {"after": ["firstPageReceived"], "run": "triggers.testing.PassThru"}
//! })).await?;
//! engine.fire("questionnaire:1", "firstPageReceived", Default::default(), None).await?;
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
pub mod ui;

pub use engine::Engine;
