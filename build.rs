//! Tells the test suites whether their PostgreSQL half can run.
//!
//! With `TRIGGERS_TEST_POSTGRES_URL` set (and not empty) the cfg
//! `postgres_tests` is on. Without it, every PostgreSQL test is compiled as
//! `#[ignore]` with the reason, so `cargo test` counts it as ignored rather than
//! as a test that passed having done nothing. Cargo re-runs this script (and
//! rebuilds the crate) when the variable changes.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=TRIGGERS_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("TRIGGERS_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
