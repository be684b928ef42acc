//! What the web UI reads, through the API anyone can call: the most recently
//! updated sessions with their instances counted by status (prefix search,
//! keyset pages), a session's `updatedAt` and counts, its instances a page at
//! a time, its events filtered by kind and instance and paged both ways, and
//! the clones of a replayed instance.

use serde_json::{json, Value};

use crate::support::{spawn_app, strs, u64s, TestDb, DEVNULL, FAILING, PASSTHRU};

on_both_backends!(
    recent_sessions_come_newest_first_with_their_counts_by_prefix_and_page,
    a_session_tells_when_it_changed_and_counts_its_instances,
    instances_of_a_session_come_a_page_at_a_time,
    events_are_filtered_by_kind_and_instance_and_paged_both_ways,
    a_replayed_instance_lists_its_clones,
);

const RECENT: &str = "query($p: String, $f: Int, $a: String) {
    recentSessions(uidPrefix: $p, first: $f, after: $a) {
        uid version updatedAt instanceCounts { status count }
    }
}";

fn uids(list: &Value) -> Vec<&str> {
    strs(list, "uid")
}

async fn recent_sessions_come_newest_first_with_their_counts_by_prefix_and_page(db: TestDb) {
    let app = spawn_app(&db).await;
    let tasks = json!({
        "t_ok": {"after": ["go"], "andEvery": "go", "run": DEVNULL},
        "t_bad": {"after": ["go"], "run": FAILING},
        "t_wait": {"after": ["go", "never"], "run": DEVNULL},
    });
    for uid in ["q:1", "q:2", "other:1", "q:3"] {
        app.configure(uid, tasks.clone()).await;
    }
    // q:1 changes last: it comes first.
    app.fire("q:1", "go", json!({})).await;
    app.fire("q:1", "go", json!({})).await;
    app.settle().await;
    app.wait_quiet("q:1").await;

    let all = app.data(RECENT, json!({})).await;
    assert_eq!(
        uids(&all["recentSessions"]),
        ["q:1", "q:3", "other:1", "q:2"]
    );
    assert_eq!(
        all["recentSessions"][0]["instanceCounts"],
        json!([
            {"status": "UNSTARTED", "count": 1},
            {"status": "FINISHED", "count": 2},
            {"status": "FAILED", "count": 1},
        ])
    );
    assert_eq!(all["recentSessions"][1]["instanceCounts"], json!([]));

    let q = app.data(RECENT, json!({"p": "q:"})).await;
    assert_eq!(uids(&q["recentSessions"]), ["q:1", "q:3", "q:2"]);
    assert!(uids(&app.data(RECENT, json!({"p": "Q:"})).await["recentSessions"]).is_empty());

    // Page by page, each cursor the last session listed.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .data(RECENT, json!({"p": "q:", "f": 2, "a": after}))
            .await;
        let rows = page["recentSessions"].as_array().unwrap().clone();
        let Some(last) = rows.last() else { break };
        after = Some(json!([last["updatedAt"], last["uid"]]).to_string());
        seen.extend(rows.iter().map(|r| r["uid"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ["q:1", "q:3", "q:2"]);

    // The UID-ordered listing counts too.
    let listed = app
        .query("{ sessions(first: 1) { uid instanceCounts { status count } } }")
        .await;
    assert_eq!(listed["sessions"][0]["uid"], "other:1");
    assert_eq!(listed["sessions"][0]["instanceCounts"], json!([]));

    for bad in ["q:1", "[\"yesterday\", \"q:1\"]", "[1, 2]"] {
        let (code, message) = app.error(RECENT, json!({"a": bad})).await;
        assert_eq!(code, "BAD_INPUT", "{bad}: {message}");
        assert!(message.contains("after must be"), "{message}");
    }
    let (code, _) = app.error(RECENT, json!({"f": 1001})).await;
    assert_eq!(code, "BAD_INPUT");
}

async fn a_session_tells_when_it_changed_and_counts_its_instances(db: TestDb) {
    let app = spawn_app(&db).await;
    let query = "query($s: String!) { session(uid: $s) {
        updatedAt instanceCounts { status count }
        asOf(version: 1) { updatedAt instanceCounts { status count } }
    } }";
    let never = app
        .query("{ session(uid: \"never\") { updatedAt instanceCounts { count } } }")
        .await;
    assert_eq!(
        never["session"],
        json!({"updatedAt": null, "instanceCounts": []})
    );

    app.configure("s", json!({"t_a": {"after": ["go"], "run": PASSTHRU}, "t_b": {"after": ["go", "x"], "run": DEVNULL}}))
        .await;
    app.fire("s", "go", json!({})).await;
    app.settle().await;
    app.wait_quiet("s").await;
    let session = app.data(query, json!({"s": "s"})).await["session"].clone();
    assert_eq!(
        session["instanceCounts"],
        json!([{"status": "UNSTARTED", "count": 1}, {"status": "FINISHED", "count": 1}])
    );
    let events = app
        .query("{ session(uid: \"s\") { events(before: 1000000, first: 1) { at } } }")
        .await;
    assert_eq!(session["updatedAt"], events["session"]["events"][0]["at"]);
    // As of the configure: no instance yet, and its own time.
    assert_eq!(session["asOf"]["instanceCounts"], json!([]));
    assert!(
        session["asOf"]["updatedAt"].as_str().unwrap() <= session["updatedAt"].as_str().unwrap()
    );
}

fn names(list: &Value) -> Vec<&str> {
    strs(list, "name")
}

async fn instances_of_a_session_come_a_page_at_a_time(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure("s", json!({"t_a": {"after": ["go"], "andEvery": "go", "run": DEVNULL}, "t_b": {"after": ["go", "x"], "run": DEVNULL}}))
        .await;
    for _ in 0..3 {
        app.fire("s", "go", json!({})).await;
    }
    app.settle().await;
    app.wait_quiet("s").await;
    let query = "query($f: Int, $a: String, $st: [InstanceStatus!]) {
        session(uid: \"s\") { instances(first: $f, after: $a, status: $st) { name } }
    }";
    let all = app.data(query, json!({})).await;
    assert_eq!(
        names(&all["session"]["instances"]),
        ["t_a#0", "t_b#0", "t_a#1", "t_a#2"]
    );
    let page = app.data(query, json!({"f": 2, "a": "t_b#0"})).await;
    assert_eq!(names(&page["session"]["instances"]), ["t_a#1", "t_a#2"]);
    let finished = app
        .data(query, json!({"f": 1, "a": "t_a#0", "st": ["FINISHED"]}))
        .await;
    assert_eq!(names(&finished["session"]["instances"]), ["t_a#1"]);
    let (code, message) = app.error(query, json!({"a": "t_z#9"})).await;
    assert_eq!(code, "BAD_INPUT");
    assert!(message.contains("t_z#9"), "{message}");
}

const EVENTS: &str = "query($a: Int, $b: Int, $f: Int, $k: [String!], $i: String) {
    session(uid: \"s\") {
        events(after: $a, before: $b, first: $f, kinds: $k, instance: $i) { seq kind instance }
        asOf(version: 4) { events(before: 100, first: 2, kinds: [\"TriggerApplied\", \"InstanceCreated\"]) { seq } }
    }
}";

/// An event as these tests compare it: seq, kind, instance.
type Listed = (u64, String, Option<String>);

fn seqs(data: &Value) -> Vec<u64> {
    u64s(&data["session"]["events"], "seq")
}

async fn events_are_filtered_by_kind_and_instance_and_paged_both_ways(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        "s",
        json!({"t_a": {"after": ["go"], "andEvery": "go", "run": DEVNULL}}),
    )
    .await;
    app.fire("s", "go", json!({"n": 1})).await;
    app.fire("s", "go", json!({"n": 2})).await;
    app.settle().await;
    app.wait_quiet("s").await;
    let all = app.data(EVENTS, json!({})).await;
    let every: Vec<Listed> = all["session"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
                e["instance"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let version = every.len() as u64;
    let expect = |keep: &dyn Fn(&Listed) -> bool| -> Vec<u64> {
        every.iter().filter(|e| keep(e)).map(|e| e.0).collect()
    };

    let fired = app.data(EVENTS, json!({"k": ["TriggerFired"]})).await;
    assert_eq!(seqs(&fired), expect(&|e| e.1 == "TriggerFired"));
    assert!(seqs(&fired).len() >= 4, "two fires and their cascades");
    let of_a1 = app.data(EVENTS, json!({"i": "t_a#1"})).await;
    assert_eq!(seqs(&of_a1), expect(&|e| e.2.as_deref() == Some("t_a#1")));
    let both = app
        .data(EVENTS, json!({"i": "t_a#1", "k": ["InstanceFinished"]}))
        .await;
    assert_eq!(seqs(&both).len(), 1);

    // Backwards from the end, then from the first seq shown.
    let last = app.data(EVENTS, json!({"b": version + 1, "f": 3})).await;
    assert_eq!(seqs(&last), [version - 2, version - 1, version]);
    let earlier = app.data(EVENTS, json!({"b": version - 2, "f": 3})).await;
    assert_eq!(seqs(&earlier), [version - 5, version - 4, version - 3]);
    let start = app.data(EVENTS, json!({"b": 3, "f": 3})).await;
    assert_eq!(seqs(&start), [1, 2]);
    // A view as of a version stops there.
    let as_of: Vec<u64> = u64s(&all["session"]["asOf"]["events"], "seq");
    assert_eq!(
        as_of,
        expect(&|e| e.0 <= 4 && (e.1 == "TriggerApplied" || e.1 == "InstanceCreated"))
            .iter()
            .rev()
            .take(2)
            .rev()
            .copied()
            .collect::<Vec<_>>()
    );

    let (code, message) = app.error(EVENTS, json!({"k": ["TriggerFird"]})).await;
    assert_eq!(code, "BAD_INPUT");
    assert!(
        message.contains("TriggerFird") && message.contains("TriggerFired"),
        "{message}"
    );
    let (code, _) = app.error(EVENTS, json!({"a": 1, "b": 5})).await;
    assert_eq!(code, "BAD_INPUT");
    let (code, _) = app.error(EVENTS, json!({"b": -1})).await;
    assert_eq!(code, "BAD_INPUT");
}

async fn a_replayed_instance_lists_its_clones(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure_fire_settle(
        "s",
        json!({"t_bad": {"after": ["go"], "run": FAILING}}),
        "go",
    )
    .await;
    app.wait_quiet("s").await;
    let replay = "mutation { replayFailedInstance(session: \"s\", instance: \"t_bad#0\") { name clones { name } } }";
    let clone = app.data(replay, json!({})).await;
    assert_eq!(clone["replayFailedInstance"]["name"], "t_bad#1");
    assert_eq!(clone["replayFailedInstance"]["clones"], json!([]));
    let query =
        "{ session(uid: \"s\") { instance(name: \"t_bad#0\") { clones { name parent } } } }";
    let data = app.data(query, json!({})).await;
    assert_eq!(
        data["session"]["instance"]["clones"],
        json!([{"name": "t_bad#1", "parent": "t_bad#0"}])
    );
}
