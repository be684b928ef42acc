//! Integration tests of the GraphQL API, the HTTP edge and the command line: the
//! real server on a random port, over a fresh SQLite file and (when
//! `TRIGGERS_TEST_POSTGRES_URL` is set) a fresh PostgreSQL schema per test.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
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
