//! Integration tests of external workers (docs/graphql.md, "Workers"): the claim
//! protocol over GraphQL against the real server, and the `triggers work`
//! command running real scripts, on a fresh SQLite file and (when
//! `TRIGGERS_TEST_POSTGRES_URL` is set) a fresh PostgreSQL schema per test.

#[macro_use]
extern crate triggers;

mod support;

mod command;
mod fairness;
mod protocol;

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();
