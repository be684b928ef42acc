//! `GET /metrics` after a known workload: the counts exact, the histograms
//! filled, the queue gauges read from the store; and the API token rule.

use std::time::{Duration, Instant};

use serde_json::json;

use triggers::testkit::names::uid;
use triggers::testkit::{spawn_app, spawn_app_with_token, TestApp, TestDb, PASSTHRU, PATIENCE, S};

on_both_backends!(
    a_lost_version_race_is_counted_as_a_store_error,
    metrics_count_a_known_workload_exactly,
    metrics_need_the_token_when_one_is_set
);

/// The value of the series `name` (with its labels, as printed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String, String) {
    let mut request = app.http.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn metrics_count_a_known_workload_exactly(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut requests = 0;
    app.configure(
        S,
        json!({
            "t_each": {"after": ["go"], "andEvery": "go", "run": PASSTHRU},
            "t_mail": {"after": ["mailNow"], "run": "app.mail", "using": "worker:mail"},
        }),
    )
    .await;
    requests += 1;
    for _ in 0..2 {
        app.fire(S, "go", json!({})).await;
        requests += 1;
    }
    let keyed = "mutation { fire(session: \"questionnaire:1\", trigger: \"go\", idempotencyKey: \"k\") { duplicate } }";
    assert_eq!(app.data(keyed, json!({})).await["fire"]["duplicate"], false);
    assert_eq!(app.data(keyed, json!({})).await["fire"]["duplicate"], true);
    app.fire(S, "mailNow", json!({})).await;
    requests += 3;
    app.settle().await;

    // A worker claims the mail task and goes away: its lease expires.
    let claimed = app
        .query(
            "mutation { claimTasks(worker: \"w\", queue: \"mail\", leaseSeconds: 1) { instance } }",
        )
        .await;
    requests += 1;
    assert_eq!(claimed["claimTasks"].as_array().unwrap().len(), 1);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = app.engine.session(&uid(S)).await.unwrap();
        let status = state.instance("t_mail#0").map(|i| i.status);
        if status == Some(triggers::domain::InstanceStatus::Scheduled) {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A refused request.
    let bad = app
        .http
        .post(app.url("/graphql"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let nowhere = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(nowhere.status().as_u16(), 404);

    let (status, content_type, text) = scrape(&app, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let version = app.engine.session(&uid(S)).await.unwrap().version();
    assert_eq!(
        must(&text, "triggers_fires_total"),
        4.0,
        "the duplicate is not counted"
    );
    assert_eq!(
        must(&text, "triggers_events_appended_total"),
        version as f64
    );
    assert_eq!(
        must(&text, "triggers_inline_runs_total{outcome=\"finished\"}"),
        3.0
    );
    assert_eq!(must(&text, "triggers_lease_expirations_total"), 1.0);
    assert_eq!(
        must(&text, "triggers_http_requests_total{status=\"200\"}"),
        requests as f64
    );
    assert_eq!(
        must(&text, "triggers_http_requests_total{status=\"400\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "triggers_http_requests_total{status=\"404\"}"),
        1.0
    );
    assert_eq!(must(&text, "triggers_queue_depth{queue=\"mail\"}"), 1.0);
    assert!(
        must(
            &text,
            "triggers_queue_oldest_scheduled_age_seconds{queue=\"mail\"}"
        ) > 0.0
    );
    let commits = must(&text, "triggers_commit_seconds_count");
    assert!(commits > 0.0, "{text}");
    assert_eq!(
        must(&text, "triggers_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert!(must(&text, "triggers_commit_seconds_sum") > 0.0);
    let groups = must(&text, "triggers_decisions_per_commit_count");
    assert!(groups > 0.0 && must(&text, "triggers_decisions_per_commit_sum") >= groups);
    assert!(
        text.contains("# TYPE triggers_commit_seconds histogram"),
        "{text}"
    );

    // The scrape itself is counted once answered.
    let (_, _, text) = scrape(&app, None).await;
    assert_eq!(
        must(&text, "triggers_http_requests_total{status=\"200\"}"),
        requests as f64 + 1.0
    );
    app.stop().await;
}

async fn metrics_need_the_token_when_one_is_set(db: TestDb) {
    let app = spawn_app_with_token(&db, "s3cret").await;
    let (status, _, body) = scrape(&app, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    assert_eq!(scrape(&app, Some("wrong")).await.0, 401);
    let (status, _, text) = scrape(&app, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(
        must(&text, "triggers_http_requests_total{status=\"401\"}"),
        2.0
    );
    assert_eq!(must(&text, "triggers_fires_total"), 0.0);
    app.stop().await;
}

async fn a_lost_version_race_is_counted_as_a_store_error(db: TestDb) {
    // Two servers on one database: the first decides on its cached state,
    // which the second has moved past.
    let first = spawn_app(&db).await;
    let second = spawn_app(&db).await;
    first
        .configure(S, json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}))
        .await;
    first.fire(S, "a", json!({})).await;
    second.fire(S, "a", json!({})).await;
    let fired = first.fire(S, "b", json!({})).await;
    assert_eq!(fired["duplicate"], false);
    let (_, _, text) = scrape(&first, None).await;
    assert_eq!(
        must(&text, "triggers_store_errors_total{class=\"conflict\"}"),
        1.0
    );
    assert_eq!(must(&text, "triggers_fires_total"), 2.0);
    let (_, _, text) = scrape(&second, None).await;
    assert_eq!(
        value(&text, "triggers_store_errors_total{class=\"conflict\"}"),
        None
    );
    assert_eq!(must(&text, "triggers_fires_total"), 1.0);
    first.stop().await;
    second.stop().await;
}
