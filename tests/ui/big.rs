//! How long the session page takes to open a session of 100,000 events,
//! built through the server by `scripts/ui-big-session.py`. Slow to set up
//! (a minute or more), so run on demand:
//! `cargo test --test ui -- --ignored big_session --nocapture`.

use std::process::Command;
use std::time::Instant;

use triggers::testkit::{spawn_app, TestDb};

use crate::browser::Browser;
use crate::pages::{session_ready, session_url};

const EVENTS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds 100,000 events: run on demand"]
async fn big_session_opens_in_under_a_second() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let started = Instant::now();
    let status = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/ui-big-session.py"
        ))
        .args(["--server", &app.address, "--session", "big:1"])
        .args(["--events", &EVENTS.to_string()])
        .status()
        .expect("run scripts/ui-big-session.py");
    assert!(status.success());
    let version = app.version("big:1").await;
    assert!(version >= EVENTS, "the session has {version} events");
    eprintln!("built {version} events in {:?}", started.elapsed());

    let browser = Browser::start().await;
    let mut times = Vec::new();
    for _ in 0..5 {
        browser.open(&session_url(&app, "big:1", "")).await;
        session_ready(&browser).await;
        let ms = browser
            .wait_js(
                "the mark",
                "const m = performance.getEntriesByName('triggers:events-shown')[0]; return m && m.startTime",
            )
            .await
            .as_f64()
            .expect("a time");
        times.push(ms);
    }
    browser.screenshot("big-session").await;
    let rows = browser
        .js("return document.querySelectorAll('#event-rows tr').length")
        .await;
    browser.quit().await;
    eprintln!(
        "session page of {version} events: first 200 events shown after {times:?} ms ({rows} rows)"
    );
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(best < 1000.0, "opening took {best} ms");
}
