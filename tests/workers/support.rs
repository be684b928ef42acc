//! Support of the worker suite: the kit's server harness (`triggers::testkit`:
//! the real server on a random port over a fresh database per test on each
//! backend, GraphQL over HTTP, claims, and waits without fixed sleeps).

pub(crate) use triggers::testkit::app::kinds;
pub(crate) use triggers::testkit::*;
