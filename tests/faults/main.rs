//! Reliability under faults: the real `triggers serve` binary killed with
//! SIGKILL mid-load and restarted, two server processes on one database, the
//! database going away or staying busy. Clients fire with idempotency keys and
//! retry whatever was not acknowledged; afterwards the log is audited: every
//! acknowledged fire exactly once, gap-free seq, exact `andEvery` counts, nothing
//! left `scheduled`/`running`, and `triggers rebuild` equal to the live state.
//!
//! Each test prints its figures (`FIGURES ...` on stderr; `--nocapture` shows them).

#[macro_use]
extern crate triggers;

mod harness;

mod crash;
mod database;
mod two_servers;

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();
