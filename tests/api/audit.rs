//! The log as an audit trail: `asOf`, `causes`, `history`, and the paged timeline.

use serde_json::{json, Value};

use crate::support::{spawn_app, u64s, TestDb, DEVNULL, PASSTHRU, S};

on_both_backends!(
    as_of_answers_exactly_what_the_session_answered_at_that_version,
    as_of_views_read_their_own_timeline_and_history,
    causes_include_inherited_kwargs_and_unless_firings,
    history_lists_every_event_about_the_instance,
    the_timeline_pages_with_after_and_first,
);

const SNAPSHOT: &str = "query($s: String!) { session(uid: $s) {
  version latestKwargs
  tasks { name after unless andEvery run withParams instances { name } }
  instances { name task status kwargs abandonState metadata result logLevel isResolved canRun canAbandon parent depth }
  unresolvedTasks { name } unresolvedInstances { name } instancesWithUnresolvedLogs { name }
} }";

const AS_OF: &str = "query($s: String!, $v: Int!) { session(uid: $s) { asOf(version: $v) {
  version latestKwargs
  tasks { name after unless andEvery run withParams instances { name } }
  instances { name task status kwargs abandonState metadata result logLevel isResolved canRun canAbandon parent depth }
  unresolvedTasks { name } unresolvedInstances { name } instancesWithUnresolvedLogs { name }
} } }";

async fn as_of_answers_exactly_what_the_session_answered_at_that_version(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut seen: Vec<Value> = Vec::new();
    let snapshot = || async {
        app.settle().await;
        app.wait_quiet(S).await;
        app.data(SNAPSHOT, json!({"s": S})).await["session"].clone()
    };
    app.configure(
        S,
        json!({
            "t_every": {"after": ["start"], "andEvery": "page", "run": PASSTHRU},
            "t_end": {"after": ["t_every", "done"], "unless": ["quit"], "run": DEVNULL},
        }),
    )
    .await;
    seen.push(snapshot().await);
    app.fire(S, "start", json!({"who": 1})).await;
    seen.push(snapshot().await);
    app.fire(S, "page", json!({"n": 1})).await;
    seen.push(snapshot().await);
    app.fire(S, "page", json!({"n": 2})).await;
    seen.push(snapshot().await);
    app.fire(S, "done", json!({})).await;
    seen.push(snapshot().await);

    for earlier in &seen {
        let version = earlier["version"].as_u64().unwrap();
        let data = app.data(AS_OF, json!({"s": S, "v": version})).await;
        assert_eq!(&data["session"]["asOf"], earlier, "asOf({version})");
    }
    let data = app.data(AS_OF, json!({"s": S, "v": 0})).await;
    assert_eq!(data["session"]["asOf"]["version"], 0);
    assert_eq!(data["session"]["asOf"]["tasks"], json!([]));
}

async fn as_of_views_read_their_own_timeline_and_history(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
        .await;
    let fired = app.fire(S, "go", json!({})).await;
    let at = fired["event"]["seq"].as_u64().unwrap();
    app.settle().await;
    app.wait_quiet(S).await;
    let now = app.version(S).await;
    assert!(now > at + 1);

    let data = app
        .data(
            "query($s: String!, $v: Int!) { session(uid: $s) { asOf(version: $v) {
               version
               events { seq }
               instance(name: \"t_a#0\") { status history { seq kind } causes { seq } }
               again: asOf(version: 1) { version tasks { name } instances { name } }
             } } }",
            json!({"s": S, "v": at + 1}),
        )
        .await;
    let view = &data["session"]["asOf"];
    assert_eq!(view["version"], at + 1);
    let seqs: Vec<u64> = u64s(&view["events"], "seq");
    assert_eq!(
        seqs,
        (1..=at + 1).collect::<Vec<_>>(),
        "a view's timeline stops at its version"
    );
    assert_eq!(view["instance"]["status"], "UNSTARTED");
    assert_eq!(
        view["instance"]["history"],
        json!([{"seq": at + 1, "kind": "InstanceCreated"}])
    );
    assert_eq!(
        view["again"],
        json!({"version": 1, "tasks": [{"name": "t_a"}], "instances": []})
    );

    let (code, message) = app
        .error(
            "query($s: String!, $v: Int!) { session(uid: $s) { asOf(version: 2) { asOf(version: $v) { version } } } }",
            json!({"s": S, "v": now}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT", "{message}");
}

async fn causes_include_inherited_kwargs_and_unless_firings(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({
            "t_pages": {"after": ["start"], "andEvery": "page", "unless": ["quit"], "run": "app.Later", "using": "worker"},
        }),
    )
    .await;
    let start = app.fire(S, "start", json!({"s": 1})).await["event"]["seq"].clone();
    let page1 = app.fire(S, "page", json!({"n": 1})).await["event"]["seq"].clone();
    let quit = app.fire(S, "quit", json!({})).await["event"]["seq"].clone();
    let page2 = app.fire(S, "page", json!({"n": 2})).await["event"]["seq"].clone();

    let data = app
        .read_session(
            S,
            "instances { name status kwargs abandonState causes { seq kind trigger data } }",
        )
        .await;
    let instances = data["session"]["instances"].as_array().unwrap();
    // #0 ran on start + page 1 before quit fired.
    assert_eq!(instances[0]["name"], "t_pages#0");
    let causes0: Vec<Value> = instances[0]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].clone())
        .collect();
    assert_eq!(causes0, [start.clone(), page1]);
    // #1 was created by page 2, inheriting start (the original firing) and quit.
    let second = &instances[1];
    assert_eq!(second["name"], "t_pages#1");
    assert_eq!(second["status"], "ABANDONED");
    assert_eq!(second["abandonState"], json!(["quit"]));
    let causes1: Vec<Value> = second["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].clone())
        .collect();
    assert_eq!(causes1, [start, quit, page2]);
    for cause in second["causes"].as_array().unwrap() {
        assert_eq!(cause["kind"], "TriggerFired");
        assert_eq!(cause["data"]["trigger"], cause["trigger"]);
    }
}

async fn history_lists_every_event_about_the_instance(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({"t_a": {"after": ["x", "y"], "run": DEVNULL}}))
        .await;
    app.fire(S, "x", json!({})).await;
    app.fire(S, "y", json!({})).await;
    app.settle().await;
    app.wait_quiet(S).await;
    app.data(
        "mutation($s: String!) { updateInstanceMetadata(session: $s, instance: \"t_a#0\", metadata: {note: 1}) { name } }",
        json!({"s": S}),
    )
    .await;

    let data = app.read_session(S, "instance(name: \"t_a#0\") { metadata history { seq kind at instance trigger causedBy } }").await;
    let history = data["session"]["instance"]["history"].as_array().unwrap();
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "InstanceCreated",
            "TriggerApplied",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished",
            "InstanceMetadataUpdated"
        ]
    );
    assert!(history.iter().all(|e| e["instance"] == "t_a#0"));
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ascending: {seqs:?}");
    assert_eq!(history[1]["trigger"], "x");
    assert_eq!(history[2]["trigger"], "y");
    assert!(
        history[1]["causedBy"].is_u64(),
        "a TriggerApplied points at its TriggerFired"
    );
    // Event times and metadata timestamps are written alike, so they compare as strings.
    let timestamps = &data["session"]["instance"]["metadata"]["timestamps"];
    assert_eq!(history[0]["at"], timestamps["created"]);
    assert_eq!(history[5]["at"], timestamps["finished"]);
}

async fn the_timeline_pages_with_after_and_first(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({})).await;
    for n in 0..9 {
        app.fire(S, "tick", json!({"n": n})).await;
    }
    assert_eq!(app.version(S).await, 10);
    let page = |after: Value, first: Value| {
        let app = &app;
        async move {
            let data = app
                .data(
                    "query($s: String!, $a: Int, $f: Int) { session(uid: $s) { events(after: $a, first: $f) { seq kind causedBy data } } }",
                    json!({"s": S, "a": after, "f": first}),
                )
                .await;
            data["session"]["events"].as_array().unwrap().clone()
        }
    };

    let all = page(Value::Null, Value::Null).await;
    assert_eq!(all.len(), 10);
    assert_eq!(all[0]["kind"], "SessionConfigured");
    assert!(all[1..]
        .iter()
        .all(|e| e["kind"] == "TriggerFired" && e["causedBy"].is_null()));
    assert_eq!(all[3]["data"]["kwargs"], json!({"n": 2}));

    let seqs = |events: Vec<Value>| -> Vec<u64> {
        events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    assert_eq!(
        seqs(page(json!(3), json!(4)).await),
        [4, 5, 6, 7],
        "after is exclusive"
    );
    assert_eq!(seqs(page(json!(8), json!(100)).await), [9, 10]);
    assert_eq!(seqs(page(json!(10), Value::Null).await), Vec::<u64>::new());
    assert_eq!(seqs(page(json!(99), Value::Null).await), Vec::<u64>::new());
    assert_eq!(seqs(page(json!(0), json!(0)).await), Vec::<u64>::new());
}
