//! Browser tests of the web UI: the real server on a random port, one
//! headless Chromium (Debian's `chromium` and `chromium-driver`) for the whole
//! run, and scenarios that use the pages the way a person does, then check
//! what the server holds.
//!
//! Every scenario gets a fresh database and server. A failed scenario leaves
//! `target/ui-screenshots/<scenario>.png`; passing ones leave a screenshot of
//! each page they show (`list.png`, `session.png`, ...), for reviews.

mod actions;
mod big;
mod browser;
mod pages;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::FutureExt;

use browser::Browser;
use triggers::testkit::{run_postgres, run_sqlite, TestDb};

/// A scenario: drives `Browser` against a server it starts over `TestDb`.
pub(crate) type Scenario =
    for<'a> fn(&'a Browser, TestDb) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

const LIMIT: Duration = Duration::from_secs(90);

/// Every scenario, in the order they run.
fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("list", pages::list),
        ("session", pages::session),
        ("live", pages::live),
        ("as_of", pages::as_of),
        ("instance", pages::instance),
        ("replay", actions::replay),
        ("skip", actions::skip),
        ("token", actions::token),
        ("graphiql", actions::graphiql),
    ]
}

/// Those that also run on PostgreSQL (the store is behind every page alike;
/// these cover its listing, paging and the live stream).
const ON_POSTGRES: &[&str] = &["list", "session", "live", "replay"];

async fn run(postgres: bool) {
    let browser = Browser::start().await;
    let mut failed = Vec::new();
    for (name, scenario) in scenarios() {
        if postgres && !ON_POSTGRES.contains(&name) {
            continue;
        }
        let started = Instant::now();
        let outcome = if postgres {
            AssertUnwindSafe(run_postgres(LIMIT, name, |db| scenario(&browser, db)))
                .catch_unwind()
                .await
        } else {
            AssertUnwindSafe(run_sqlite(LIMIT, |db| scenario(&browser, db)))
                .catch_unwind()
                .await
        };
        match outcome {
            Ok(()) => eprintln!("ui scenario {name}: ok in {:?}", started.elapsed()),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                let shot = browser.screenshot(name).await;
                eprintln!(
                    "ui scenario {name} FAILED (screenshot: {}): {message}",
                    shot.display()
                );
                failed.push(name);
            }
        }
    }
    browser.quit().await;
    assert!(
        failed.is_empty(),
        "failed UI scenarios: {failed:?} (screenshots in {})",
        browser::screenshot_dir().display()
    );
}

// The PostgreSQL half is compiled to run exactly when the variable is set.
triggers::postgres_tests_match_the_environment!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
async fn postgres() {
    run(true).await;
}
