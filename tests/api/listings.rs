//! Listings across sessions, from the projection tables: `sessions` and
//! `instances(status:, task:)`, with keyset pagination and page-size limits.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestApp, TestDb, DEVNULL};

on_both_backends!(
    sessions_are_listed_by_uid_page_by_page,
    instances_are_listed_across_sessions_by_status_and_task_page_by_page,
    page_sizes_are_limited,
);

fn uids(data: &Value) -> Vec<String> {
    data["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uid"].as_str().unwrap().to_owned())
        .collect()
}

async fn sessions_are_listed_by_uid_page_by_page(db: TestDb) {
    let app = spawn_app(&db).await;
    for uid in ["s:3", "s:1", "s:5", "s:2", "s:4"] {
        app.configure(uid, json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
            .await;
    }
    app.fire("s:2", "x", json!({})).await;

    let query =
        "query($f: Int, $a: String) { sessions(first: $f, after: $a) { uid version updatedAt } }";
    let all = app.data(query, json!({})).await;
    assert_eq!(uids(&all), ["s:1", "s:2", "s:3", "s:4", "s:5"]);
    assert_eq!(all["sessions"][1]["version"], 2);
    assert!(chrono::DateTime::parse_from_rfc3339(
        all["sessions"][0]["updatedAt"].as_str().unwrap()
    )
    .is_ok());

    let first = app.data(query, json!({"f": 2})).await;
    assert_eq!(uids(&first), ["s:1", "s:2"]);
    let second = app.data(query, json!({"f": 2, "a": "s:2"})).await;
    assert_eq!(uids(&second), ["s:3", "s:4"]);
    let last = app.data(query, json!({"f": 2, "a": "s:4"})).await;
    assert_eq!(uids(&last), ["s:5"]);
    let past = app.data(query, json!({"f": 2, "a": "s:5"})).await;
    assert!(uids(&past).is_empty());
}

fn listed(data: &Value) -> Vec<(String, String, String)> {
    data["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["session"].as_str().unwrap().to_owned(),
                i["name"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn setup_instances(app: &TestApp) {
    for uid in ["b/2", "a:1"] {
        app.configure(
            uid,
            json!({
                "t_ok": {"after": ["go"], "andEvery": "go", "run": DEVNULL},
                "t_wait": {"after": ["go", "never"], "run": DEVNULL},
            }),
        )
        .await;
        app.fire(uid, "go", json!({})).await;
        app.fire(uid, "go", json!({})).await;
        app.settle().await;
        app.wait_quiet(uid).await;
    }
}

async fn instances_are_listed_across_sessions_by_status_and_task_page_by_page(db: TestDb) {
    let app = spawn_app(&db).await;
    setup_instances(&app).await;
    let query = "query($st: [InstanceStatus!], $t: String, $f: Int, $a: String) {
      instances(status: $st, task: $t, first: $f, after: $a) { session name status task kwargs canRun }
    }";

    let all = app.data(query, json!({})).await;
    let expected = |s: &str| {
        vec![
            (s.to_owned(), "t_ok#0".to_owned(), "FINISHED".to_owned()),
            (s.to_owned(), "t_wait#0".to_owned(), "UNSTARTED".to_owned()),
            (s.to_owned(), "t_ok#1".to_owned(), "FINISHED".to_owned()),
        ]
    };
    let everything: Vec<_> = expected("a:1").into_iter().chain(expected("b/2")).collect();
    assert_eq!(listed(&all), everything);
    assert_eq!(all["instances"][1]["canRun"], false);
    assert_eq!(all["instances"][1]["kwargs"], json!({"go": {}}));

    let unstarted = app.data(query, json!({"st": ["UNSTARTED"]})).await;
    assert_eq!(
        listed(&unstarted),
        [
            ("a:1".into(), "t_wait#0".into(), "UNSTARTED".into()),
            ("b/2".into(), "t_wait#0".into(), "UNSTARTED".into())
        ]
    );
    let ok = app
        .data(query, json!({"t": "t_ok", "st": ["FINISHED", "FAILED"]}))
        .await;
    assert_eq!(listed(&ok).len(), 4);
    assert!(listed(&ok)
        .iter()
        .all(|(_, name, _)| name.starts_with("t_ok#")));

    // Page by page, with the cursor as a JSON array of the last session and instance.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.data(query, json!({"f": 2, "a": after})).await;
        let rows = listed(&page);
        if rows.is_empty() {
            break;
        }
        let (session, name, _) = rows.last().unwrap().clone();
        after = Some(json!([session, name]).to_string());
        pages.extend(rows);
    }
    assert_eq!(pages, everything);
    // The short form splits at the last slash, so a session UID may contain one.
    let rest = app.data(query, json!({"f": 10, "a": "b/2/t_wait#0"})).await;
    assert_eq!(
        listed(&rest),
        [("b/2".into(), "t_ok#1".into(), "FINISHED".into())]
    );

    let (code, message) = app.error(query, json!({"a": "no-cursor-here"})).await;
    assert_eq!(code, "BAD_INPUT", "{message}");
}

async fn page_sizes_are_limited(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure("s:1", json!({})).await;
    for query in [
        "{ sessions(first: 1001) { uid } }",
        "{ instances(first: 5000) { name } }",
        "{ session(uid: \"s:1\") { events(first: 1001) { seq } } }",
        "{ sessions(first: -1) { uid } }",
    ] {
        let (code, message) = app.error(query, json!({})).await;
        assert_eq!(code, "BAD_INPUT", "{query}");
        assert!(message.contains("first"), "{message}");
    }
    let data = app
        .data("{ sessions(first: 1000) { uid } none: sessions(first: 0) { uid } instances(first: 1000) { name } }", json!({}))
        .await;
    assert_eq!(data["sessions"], json!([{"uid": "s:1"}]));
    assert_eq!(data["none"], json!([]));
}
