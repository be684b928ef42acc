//! The GraphQL API (docs/graphql.md): an adapter that parses arguments, calls the
//! [`Engine`], and maps results and errors. No rules and no SQL live here.
//!
//! - [`types`]: `Session`, `TaskConfig`, `TaskInstance`, `Event`, `FireResult`,
//!   `SessionSummary`, `TaskClaim` and the `InstanceStatus` enum. A Rust type
//!   that would share its name with the engine's or the domain's value it shows
//!   carries an `Object` suffix (`TaskConfigObject` is the GraphQL `TaskConfig`).
//! - [`query`], [`mutation`], [`subscription`]: the three roots.
//! - [`error`]: engine errors -> `extensions.code`; internal errors logged.
//! - `limits` (private): bracket nesting and fragment-expanded size of a
//!   document, checked before async-graphql parses and validates it.
//! - `warnings` (private): `extensions.warnings` of a response (`configure`'s
//!   diagnostics).
//! - `order` (private): response fields put back in the order the query
//!   selected them (async-graphql writes them as they complete).
//!
//! [`schema`] builds the executable schema with its limits; [`sdl`] is what
//! `schema.graphql` at the repo root must contain.

pub mod error;
mod limits;
pub mod mutation;
mod order;
pub mod query;
pub mod scalars;
pub mod subscription;
pub mod types;
mod warnings;

use std::time::Duration;

use async_graphql::{Context, Schema, SchemaBuilder};

use crate::Engine;
use error::bad_input;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

/// The executable schema.
pub type TriggersSchema = Schema<Query, Mutation, Subscription>;

/// Limits and tunables of the API. The defaults suit a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deepest selection accepted (GraphiQL's introspection query needs 13).
    pub max_depth: usize,
    /// Most fields one request may select (async-graphql's complexity; also
    /// checked, fragments expanded, before validation).
    pub max_complexity: usize,
    /// Deepest nesting of brackets (`{`, `[`, `(`) in a query document,
    /// checked before parsing: the parser recurses per level, and a deep
    /// enough document would overflow its stack.
    pub max_nesting: usize,
    /// Page size of listings and timelines when `first` is not given.
    pub default_page_size: u32,
    /// Largest `first` accepted; larger is `BAD_INPUT` rather than silently cut.
    pub max_page_size: u32,
    /// Largest JSON argument (kwargs, tasks, result, metadata), serialised.
    pub max_json_bytes: usize,
    /// Deepest JSON argument (`{}` is 1 level). The log stores arguments
    /// wrapped a few levels deeper (events, instances, results passed on by
    /// cascades), and must read back everything it stores: serde_json reads at
    /// most 128 levels.
    pub max_json_depth: usize,
    /// How often a subscription re-reads the log even without a local commit, so
    /// that events appended by another server process on the same database show up.
    pub subscription_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_complexity: 5_000,
            max_nesting: 128,
            default_page_size: 100,
            max_page_size: 1_000,
            max_json_bytes: 256 * 1024,
            max_json_depth: 64,
            subscription_poll: Duration::from_secs(1),
        }
    }
}

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription)
        .extension(error::ErrorCodes)
        .extension(order::SelectionOrder)
        .extension(warnings::Warnings)
}

/// The schema served for `engine`, with `config`'s limits.
pub fn schema(engine: Engine, config: Config) -> TriggersSchema {
    builder()
        .extension(limits::DocumentLimits::new(
            config.max_nesting,
            config.max_complexity,
        ))
        .limit_depth(config.max_depth)
        .limit_complexity(config.max_complexity)
        .data(engine)
        .data(config)
        .finish()
}

/// The schema in SDL: what `schema.graphql` holds.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// The engine the schema was built with.
pub(crate) fn engine<'a>(ctx: &Context<'a>) -> &'a Engine {
    ctx.data_unchecked::<Engine>()
}

/// The limits the schema was built with.
pub(crate) fn config<'a>(ctx: &Context<'a>) -> &'a Config {
    ctx.data_unchecked::<Config>()
}

/// A `first` argument: the default when absent, `BAD_INPUT` when out of range.
pub(crate) fn page_size(ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<u32> {
    let config = config(ctx);
    let Some(first) = first else {
        return Ok(config.default_page_size);
    };
    match u32::try_from(first) {
        Ok(first) if first <= config.max_page_size => Ok(first),
        Ok(_) => Err(bad_input(format!(
            "first must be at most {} (got {first}); page with `after`",
            config.max_page_size
        ))),
        Err(_) => Err(bad_input(format!("first must be >= 0, got {first}"))),
    }
}

/// Refuses a string argument holding a NUL character. No stored name holds one
/// (names refuse it), and PostgreSQL cannot compare text with it, so a lookup
/// by it would fail inside the database instead of finding nothing.
pub(crate) fn check_text(what: &str, value: Option<&str>) -> async_graphql::Result<()> {
    match value {
        Some(value) if value.contains('\0') => Err(bad_input(format!(
            "{what} must not contain NUL characters, got {value:?}"
        ))),
        _ => Ok(()),
    }
}

/// Refuses a JSON argument larger than [`Config::max_json_bytes`] serialised,
/// or nested deeper than [`Config::max_json_depth`].
pub(crate) fn check_json_size(
    ctx: &Context<'_>,
    what: &str,
    value: Option<&serde_json::Value>,
) -> async_graphql::Result<()> {
    let Some(value) = value else {
        return Ok(());
    };
    let limit = config(ctx).max_json_bytes;
    let mut counter = ByteCounter(0);
    // Writing to a counter cannot fail; an error would only mean "too big".
    let _ = serde_json::to_writer(&mut counter, value);
    if counter.0 > limit {
        return Err(bad_input(format!(
            "{what} is {} bytes as JSON; the limit is {limit} bytes",
            counter.0
        )));
    }
    let limit = config(ctx).max_json_depth;
    let depth = json_depth(value);
    if depth > limit {
        return Err(bad_input(format!(
            "{what} is nested {depth} levels deep; the limit is {limit} levels"
        )));
    }
    Ok(())
}

/// Levels of objects and lists in `value` (a scalar is 0, `{}` is 1). Arguments
/// arrive at most about 130 levels deep (the request body's JSON reader and the
/// document's bracket limit see to that), so recursion is safe here.
fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Counts serialised bytes without keeping them.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
