//! Support of the API suite: the kit's server harness (`triggers::testkit`: the
//! real server on a random port over a fresh database per test on each
//! backend, GraphQL over HTTP, and waits without fixed sleeps).

use std::future::Future;
use std::time::Duration;

pub(crate) use triggers::testkit::*;

/// Runs a test in a fresh PostgreSQL schema (dropped afterwards, whatever happened).
pub(crate) async fn run_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    triggers::testkit::run_postgres(Duration::from_secs(120), name, test).await;
}
