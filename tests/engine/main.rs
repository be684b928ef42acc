//! The behavioural suite of the engine (docs/concepts.md, docs/configuration.md, docs/events.md), run through the
//! library API on SQLite and, when `TRIGGERS_TEST_POSTGRES_URL` is set, on
//! PostgreSQL.
//!
//! One binary, so the crate is linked once. Each test gets a database of its own
//! (a temporary SQLite file, or a fresh PostgreSQL schema) and waits for
//! conditions (`wait_idle`, polling with a deadline), never for fixed delays.
//!
//! Each behaviour is an `async fn <sentence>(db: TestDb)`, listed in its module's
//! `on_both_backends!`, which makes the two tests `<sentence>::sqlite` and
//! `<sentence>::postgres` (so `cargo test --test engine sqlite` runs one backend).
//! Without the variable, each postgres test is reported as ignored (see
//! `build.rs`), never as passed.
//!
//! # Layout
//! - `support`: the kit's per-backend test macro, databases and engines
//!   (`triggers::testkit`), and small helpers.
//! - `scenarios`: the catalogue: what a user sees for every documented rule.
//! - `errors`: every refusal, its code, and that nothing was written.
//! - `concurrency`: racing fires in one process and across two engines.
//! - `properties`: random configurations and fire sequences against the log.
//! - `recovery`: work left behind by a crashed process, and the cache.
//! - `hooks`: the `FinalizeSession` recipe.
//! - `upgrade`: logs written by older payload formats (fixtures) still load.

#[macro_use]
extern crate triggers;

mod scenario;
mod support;

mod concurrency;
mod errors;
mod hooks;
mod properties;
mod recovery;
mod scenarios;
mod upgrade;

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();
