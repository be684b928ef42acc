//! Integration tests of the operator's tools: `GET /metrics` after a known
//! workload, the JSON log format, and `export`, `import`, `copy` and `purge`
//! run as the real binary, on SQLite and (when `TRIGGERS_TEST_POSTGRES_URL` is
//! set) PostgreSQL, and from one to the other.

#[macro_use]
extern crate triggers;

mod bin;
mod logs;
mod metrics;
mod purge;
mod round_trip;

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();
