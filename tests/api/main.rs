//! Integration tests of the GraphQL API, the HTTP edge and the command line: the
//! real server on a random port, over a fresh SQLite file and (when
//! `TRIGGERS_TEST_POSTGRES_URL` is set) a fresh PostgreSQL schema per test.

#[macro_use]
extern crate triggers;

mod support;

mod audit;
mod browsing;
mod cli;
mod descriptions;
mod diagnostics;
mod docs;
mod errors;
mod fuzz;
mod hostile;
mod limits;
mod listings;
mod mutations;
mod order;
mod queries;
mod questionnaire;
mod schema;
mod subscriptions;
mod ui;

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();
