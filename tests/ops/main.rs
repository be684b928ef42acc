//! Integration tests of the operator's tools: `GET /metrics` after a known
//! workload, the JSON log format, and `export`, `import`, `copy` and `purge`
//! run as the real binary, on SQLite and (when `TRIGGERS_TEST_POSTGRES_URL` is
//! set) PostgreSQL, and from one to the other.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
#[path = "../api/support.rs"]
#[allow(dead_code, unused_imports)] // The API suite's support: this suite uses part of it.
mod support;

mod bin;
mod logs;
mod metrics;
mod purge;
mod round_trip;
