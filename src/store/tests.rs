//! The store conformance suite: every behaviour the engine relies on, run once on
//! SQLite (a fresh file per test) and once on PostgreSQL (when
//! `TRIGGERS_TEST_POSTGRES_URL` is set; each test uses its own session uids,
//! queue and task names, so tests share the database without seeing each other).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use super::{
    open, Commit, InstanceRow, QueueEntry, QueueOp, Rebuilt, Store, StoreError, StoreResult,
    StoredSnapshot,
};
use crate::domain::{Event, EventPayload, InstanceStatus, JsonObject, TriggerRole};

mod browse;
use browse::*;

/// The variable naming the PostgreSQL database the suite also runs on.
const POSTGRES_URL_ENV: &str = "TRIGGERS_TEST_POSTGRES_URL";

/// Instantiates each test body on both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
                async fn $name() {
                    let Some(store) = super::postgres_store(stringify!($name)).await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    appended_events_read_back_byte_identical,
    a_stale_first_append_conflicts_and_writes_nothing,
    a_stale_later_append_conflicts_and_writes_nothing,
    of_two_concurrent_commits_at_one_version_exactly_one_wins,
    concurrent_writers_retrying_on_conflict_lose_no_append,
    events_are_paged_by_seq,
    events_are_found_by_seq_and_by_instance,
    an_unused_session_is_empty,
    sessions_are_listed_by_uid_in_pages,
    instance_rows_are_upserted,
    instances_are_listed_across_sessions_filtered_and_paged,
    a_lease_is_taken_renewed_and_refused_to_others,
    a_lost_lease_rolls_back_the_whole_commit,
    an_expired_lease_can_be_taken_over,
    enqueueing_again_drops_the_lease_and_removing_deletes_the_row,
    claimable_lists_available_unleased_or_expired_rows_oldest_first,
    expired_leases_lists_only_leases_that_ran_out,
    snapshots_round_trip_and_never_go_back,
    replacing_projections_keeps_an_existing_lease,
    concurrent_commits_to_many_sessions_each_get_their_own_answer,
    a_locked_session_makes_other_writers_wait_then_lose,
    session_logs_reads_many_logs_in_the_order_asked,
    replacing_projections_of_many_sessions_writes_each,
    a_decision_that_enqueues_and_leases_leaves_one_leased_row,
    a_decision_whose_lease_fails_writes_nothing,
    an_outcome_reported_under_a_lost_lease_writes_nothing,
    recent_sessions_come_newest_first_by_prefix_in_pages,
    instances_are_counted_by_status_per_session,
    session_events_are_filtered_by_kind_and_instance_and_paged_both_ways,
);

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let store = open(&url).await.expect("open sqlite");
    (dir, store)
}

/// A fresh schema of the test database, so that these tests never depend on (or
/// disturb) what other runs left in `public`.
async fn fresh_schema(url: &str) -> String {
    use sqlx::Connection;
    let schema = format!("store_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect postgres");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

async fn postgres_store(test: &str) -> Option<Arc<dyn Store>> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(
            open(&fresh_schema(&url).await)
                .await
                .expect("open postgres"),
        ),
        _ => {
            eprintln!("SKIPPED: {POSTGRES_URL_ENV} not set; PostgreSQL test {test} did not run");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Builders

/// A name no other test (or earlier run on the same database) uses.
fn unique(label: &str) -> String {
    format!("{}-{label}", uuid::Uuid::new_v4())
}

/// A fixed instant with microseconds, plus `micros`.
fn at(micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + Duration::microseconds(123_456 + micros)
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn fired(seq: u64, trigger: &str, kwargs: Value) -> Event {
    Event {
        seq,
        at: at(seq as i64),
        caused_by: None,
        payload: EventPayload::TriggerFired {
            trigger: trigger.to_owned(),
            kwargs: object(kwargs),
            idempotency_key: None,
        },
    }
}

fn created(seq: u64, instance: &str, caused_by: u64) -> Event {
    Event {
        seq,
        at: at(seq as i64),
        caused_by: Some(caused_by),
        payload: EventPayload::InstanceCreated {
            instance: instance.to_owned(),
            task: instance.split('#').next().unwrap_or(instance).to_owned(),
            kwargs: object(json!({"page": {"n": seq}})),
            kwargs_sources: BTreeMap::from([("page".to_owned(), caused_by)]),
            abandon_state: Vec::new(),
            abandon_sources: BTreeMap::new(),
            parent: None,
            depth: 0,
        },
    }
}

fn applied(seq: u64, instance: &str, caused_by: u64) -> Event {
    Event {
        seq,
        at: at(seq as i64),
        caused_by: Some(caused_by),
        payload: EventPayload::TriggerApplied {
            instance: instance.to_owned(),
            trigger: "page".to_owned(),
            role: TriggerRole::After,
        },
    }
}

fn instance_row(
    session: &str,
    name: &str,
    task: &str,
    status: InstanceStatus,
    created_seq: u64,
) -> InstanceRow {
    InstanceRow {
        session: session.to_owned(),
        name: name.to_owned(),
        task: task.to_owned(),
        status,
        created_seq,
        updated_at: at(created_seq as i64 * 1000),
        body: json!({"name": name, "zeta": [1, 2], "alpha": {"y": 1, "b": 2}}).to_string(),
    }
}

fn enqueue(instance: &str, queue: &str, available_at: DateTime<Utc>) -> QueueOp {
    QueueOp::Enqueue {
        instance: instance.to_owned(),
        queue: queue.to_owned(),
        run: "job.Run".to_owned(),
        available_at,
    }
}

fn lease(
    instance: &str,
    token: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    current: Option<&str>,
) -> QueueOp {
    QueueOp::Lease {
        instance: instance.to_owned(),
        owner: format!("owner-of-{token}"),
        token: token.to_owned(),
        expires_at,
        now,
        current_token: current.map(str::to_owned),
    }
}

async fn append(
    store: &dyn Store,
    session: &str,
    expected: u64,
    events: &[Event],
) -> StoreResult<()> {
    store
        .commit(Commit {
            session,
            expected_version: expected,
            events,
            instances: Vec::new(),
            queue: Vec::new(),
        })
        .await
}

async fn queue_ops(store: &dyn Store, session: &str, queue: Vec<QueueOp>) -> StoreResult<()> {
    store
        .commit(Commit {
            session,
            expected_version: 0,
            events: &[],
            instances: Vec::new(),
            queue,
        })
        .await
}

/// The payload exactly as the store writes it.
fn data_text(event: &Event) -> String {
    serde_json::to_string(&event.payload.to_data()).unwrap()
}

fn assert_conflict(result: StoreResult<()>, session: &str, expected: u64) {
    match result {
        Err(StoreError::Conflict {
            session: s,
            expected: e,
        }) => {
            assert_eq!((s.as_str(), e), (session, expected));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_lease_lost(result: StoreResult<()>) {
    assert!(
        matches!(result, Err(StoreError::LeaseLost { .. })),
        "expected LeaseLost, got {result:?}"
    );
}

// ---------------------------------------------------------------------------
// The log

async fn appended_events_read_back_byte_identical(store: Arc<dyn Store>) {
    let session = unique("bytes");
    // Keys deliberately out of alphabetical order, nested, with awkward values.
    let kwargs = json!({
        "zulu": 1,
        "alpha": {"yankee": [3, 1, 2], "bravo": null, "é": "ünï\u{1F600}"},
        "mike": 1.5,
        "big": 9_007_199_254_740_993_u64,
        "quote": "a \"b\" \\ c\n",
    });
    let mut events = vec![fired(1, "page", kwargs), created(2, "task#0", 1)];
    events[0].at =
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    events[1].at = Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0).unwrap() + Duration::microseconds(1);
    append(&*store, &session, 0, &events).await.unwrap();

    let read = store.events(&session, 0, None).await.unwrap();
    assert_eq!(read, events);
    for (read, written) in read.iter().zip(&events) {
        assert_eq!(data_text(read), data_text(written));
        assert_eq!(read.at, written.at);
    }
    let EventPayload::TriggerFired { kwargs, .. } = &read[0].payload else {
        panic!("not a TriggerFired: {:?}", read[0]);
    };
    assert_eq!(
        kwargs.keys().collect::<Vec<_>>(),
        ["zulu", "alpha", "mike", "big", "quote"]
    );
    assert_eq!(
        kwargs["alpha"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["yankee", "bravo", "é"]
    );
    assert_eq!(read[1].caused_by, Some(1));
    assert_eq!(store.version(&session).await.unwrap(), 2);

    let listed = store
        .sessions(1, Some(&session[..session.len() - 1]))
        .await
        .unwrap();
    assert_eq!(listed[0].uid, session);
    assert_eq!(listed[0].version, 2);
    assert_eq!(listed[0].updated_at, events[1].at);
    assert!(store.session_uids().await.unwrap().contains(&session));
    store.ping().await.unwrap();
}

async fn a_stale_first_append_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("first");
    let winner = [fired(1, "page", json!({"who": "winner"}))];
    append(&*store, &session, 0, &winner).await.unwrap();

    let task = unique("task");
    let queue = unique("q");
    let loser = [
        fired(1, "page", json!({"who": "loser"})),
        created(2, &format!("{task}#0"), 1),
    ];
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &loser,
            instances: vec![instance_row(
                &session,
                &format!("{task}#0"),
                &task,
                InstanceStatus::Scheduled,
                2,
            )],
            queue: vec![enqueue(&format!("{task}#0"), &queue, at(0))],
        })
        .await;
    assert_conflict(result, &session, 0);

    assert_eq!(store.events(&session, 0, None).await.unwrap(), winner);
    assert_eq!(store.version(&session).await.unwrap(), 1);
    assert!(store
        .instances(&[], Some(&task), 10, None)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claimable(&queue, at(10), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_stale_later_append_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("later");
    append(
        &*store,
        &session,
        0,
        &[fired(1, "page", json!({})), fired(2, "page", json!({}))],
    )
    .await
    .unwrap();
    let winner = [fired(3, "page", json!({"who": "winner"}))];
    append(&*store, &session, 2, &winner).await.unwrap();

    let queue = unique("q");
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[
                fired(3, "page", json!({"who": "loser"})),
                created(4, "t#0", 3),
            ],
            instances: vec![instance_row(
                &session,
                "t#0",
                &queue,
                InstanceStatus::Scheduled,
                4,
            )],
            queue: vec![enqueue("t#0", &queue, at(0))],
        })
        .await;
    assert_conflict(result, &session, 2);

    // A writer that is behind by more than one is refused too.
    assert_conflict(
        append(&*store, &session, 1, &[fired(2, "page", json!({}))]).await,
        &session,
        1,
    );
    // So is one that claims to be ahead.
    assert_conflict(
        append(&*store, &session, 7, &[fired(8, "page", json!({}))]).await,
        &session,
        7,
    );

    assert_eq!(store.version(&session).await.unwrap(), 3);
    assert_eq!(store.events(&session, 2, None).await.unwrap(), winner);
    assert!(store
        .instances(&[], Some(&queue), 10, None)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claimable(&queue, at(10), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn of_two_concurrent_commits_at_one_version_exactly_one_wins(store: Arc<dyn Store>) {
    let session = unique("race");
    let mut version = 0;
    for round in 0..10 {
        let seq = version + 1;
        let a = [fired(seq, "page", json!({"writer": "a", "round": round}))];
        let b = [fired(seq, "page", json!({"writer": "b", "round": round}))];
        let (ra, rb) = tokio::join!(
            append(&*store, &session, version, &a),
            append(&*store, &session, version, &b)
        );
        let stored = store.events(&session, version, None).await.unwrap();
        match (ra, rb) {
            (Ok(()), Err(StoreError::Conflict { .. })) => assert_eq!(stored, a),
            (Err(StoreError::Conflict { .. }), Ok(())) => assert_eq!(stored, b),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        }
        version = seq;
        assert_eq!(store.version(&session).await.unwrap(), version);
    }
}

async fn concurrent_writers_retrying_on_conflict_lose_no_append(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 5;
    let session = unique("writers");
    let writers = (0..WRITERS).map(|writer| {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let mut conflicts = 0;
            for append_no in 0..APPENDS {
                loop {
                    // Re-read the version, as the engine re-decides on fresh state.
                    let version = store.version(&session).await.unwrap();
                    let event = fired(
                        version + 1,
                        "page",
                        json!({"writer": writer, "n": append_no}),
                    );
                    match append(&*store, &session, version, &[event]).await {
                        Ok(()) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("writer {writer}: {other}"),
                    }
                }
            }
            conflicts
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    let events = store.events(&session, 0, None).await.unwrap();
    let total = (WRITERS * APPENDS) as u64;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(store.version(&session).await.unwrap(), total);
    for writer in 0..WRITERS {
        let mine: Vec<_> = events
            .iter()
            .filter_map(|event| match &event.payload {
                EventPayload::TriggerFired { kwargs, .. } if kwargs["writer"] == json!(writer) => {
                    Some(kwargs["n"].clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(mine, (0..APPENDS).map(|n| json!(n)).collect::<Vec<_>>());
    }
}

async fn events_are_paged_by_seq(store: Arc<dyn Store>) {
    let session = unique("paged");
    let events: Vec<_> = (1..=7)
        .map(|seq| fired(seq, "page", json!({"n": seq})))
        .collect();
    append(&*store, &session, 0, &events[..3]).await.unwrap();
    append(&*store, &session, 3, &events[3..]).await.unwrap();

    assert_eq!(store.events(&session, 0, None).await.unwrap(), events);
    assert_eq!(
        store.events(&session, 2, Some(3)).await.unwrap(),
        events[2..5]
    );
    assert_eq!(
        store.events(&session, 5, Some(100)).await.unwrap(),
        events[5..]
    );
    assert_eq!(store.events(&session, 0, Some(0)).await.unwrap(), []);
    assert_eq!(store.events(&session, 7, None).await.unwrap(), []);
    assert_eq!(
        store.events(&session, 0, Some(u64::MAX)).await.unwrap(),
        events
    );
}

async fn events_are_found_by_seq_and_by_instance(store: Arc<dyn Store>) {
    let session = unique("lookup");
    let events = vec![
        fired(1, "page", json!({"n": 1})),
        created(2, "a#0", 1),
        applied(3, "a#0", 1),
        created(4, "b#0", 1),
        fired(5, "page", json!({"n": 2})),
        applied(6, "a#0", 5),
    ];
    append(&*store, &session, 0, &events).await.unwrap();

    let by_seq = store
        .events_by_seq(&session, &[6, 1, 4, 4, 99])
        .await
        .unwrap();
    assert_eq!(
        by_seq,
        [events[0].clone(), events[3].clone(), events[5].clone()]
    );
    assert_eq!(store.events_by_seq(&session, &[]).await.unwrap(), []);
    let many: Vec<u64> = (1..=2500).collect();
    assert_eq!(store.events_by_seq(&session, &many).await.unwrap(), events);

    let of_a = store.instance_events(&session, "a#0").await.unwrap();
    assert_eq!(
        of_a,
        [events[1].clone(), events[2].clone(), events[5].clone()]
    );
    assert_eq!(
        store.instance_events(&session, "b#0").await.unwrap(),
        [events[3].clone()]
    );
    assert_eq!(store.instance_events(&session, "c#0").await.unwrap(), []);
    // Another session's instance of the same name is not mixed in.
    assert_eq!(
        store
            .instance_events(&unique("other"), "a#0")
            .await
            .unwrap(),
        []
    );
}

async fn an_unused_session_is_empty(store: Arc<dyn Store>) {
    let session = unique("unused");
    assert_eq!(store.version(&session).await.unwrap(), 0);
    assert_eq!(store.events(&session, 0, None).await.unwrap(), []);
    assert_eq!(store.events_by_seq(&session, &[1, 2]).await.unwrap(), []);
    assert!(store.snapshot(&session).await.unwrap().is_none());
    assert!(!store.session_uids().await.unwrap().contains(&session));
    // A commit with nothing in it writes nothing.
    append(&*store, &session, 0, &[]).await.unwrap();
    assert_eq!(store.version(&session).await.unwrap(), 0);
}

async fn sessions_are_listed_by_uid_in_pages(store: Arc<dyn Store>) {
    let prefix = unique("sessions");
    // Every uid that sorts between `prefix` and these starts with `prefix`.
    let uids: Vec<String> = ["c", "a", "e", "b", "d"]
        .iter()
        .map(|s| format!("{prefix}/{s}"))
        .collect();
    for (i, uid) in uids.iter().enumerate() {
        let seq = i as u64 + 1;
        let events: Vec<_> = (1..=seq).map(|s| fired(s, "page", json!({}))).collect();
        append(&*store, uid, 0, &events).await.unwrap();
    }
    let mut sorted = uids.clone();
    sorted.sort();

    let page1 = store.sessions(2, Some(&prefix)).await.unwrap();
    assert_eq!(
        page1.iter().map(|s| &s.uid).collect::<Vec<_>>(),
        [&sorted[0], &sorted[1]]
    );
    let page2 = store.sessions(2, Some(&page1[1].uid)).await.unwrap();
    assert_eq!(
        page2.iter().map(|s| &s.uid).collect::<Vec<_>>(),
        [&sorted[2], &sorted[3]]
    );
    let page3 = store.sessions(1, Some(&page2[1].uid)).await.unwrap();
    assert_eq!(page3[0].uid, sorted[4]);

    let a = &page1[0];
    assert_eq!((a.version, a.updated_at), (2, at(2)));
    let e = &page3[0];
    assert_eq!((e.version, e.updated_at), (3, at(3)));

    let all = store.sessions(u32::MAX, None).await.unwrap();
    let ours: Vec<_> = all
        .iter()
        .filter(|s| s.uid.starts_with(&prefix))
        .map(|s| &s.uid)
        .collect();
    assert_eq!(ours, sorted.iter().collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].uid < w[1].uid));
    assert!(store.sessions(0, None).await.unwrap().is_empty());

    let uids_listed = store.session_uids().await.unwrap();
    assert!(sorted.iter().all(|uid| uids_listed.contains(uid)));
    assert!(uids_listed.windows(2).all(|w| w[0] < w[1]));
}

async fn instance_rows_are_upserted(store: Arc<dyn Store>) {
    let session = unique("upsert");
    let task = unique("task");
    let name = format!("{task}#0");
    let mut row = instance_row(&session, &name, &task, InstanceStatus::Unstarted, 2);
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, &name, 1)],
            instances: vec![row.clone()],
            queue: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.instances(&[], Some(&task), 10, None).await.unwrap(),
        [row.clone()]
    );

    let stale = row.clone();
    row.status = InstanceStatus::Scheduled;
    row.updated_at = at(99);
    row.body = json!({"second": true, "first": false}).to_string();
    store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[applied(3, &name, 1)],
            // The same row twice in one commit: the last one wins.
            instances: vec![stale, row.clone()],
            queue: Vec::new(),
        })
        .await
        .unwrap();
    let listed = store.instances(&[], Some(&task), 10, None).await.unwrap();
    assert_eq!(listed, [row]);
    assert_eq!(listed[0].body, r#"{"second":true,"first":false}"#);
}

async fn instances_are_listed_across_sessions_filtered_and_paged(store: Arc<dyn Store>) {
    let task = unique("task");
    let other_task = unique("other");
    let prefix = unique("s");
    let s1 = format!("{prefix}/1");
    let s2 = format!("{prefix}/2");
    use InstanceStatus::*;
    // Session 2 is written first: the listing orders by session, not by time.
    let rows2 = vec![
        instance_row(&s2, &format!("{task}#1"), &task, Failed, 5),
        instance_row(&s2, &format!("{task}#0"), &task, Finished, 2),
        instance_row(&s2, &format!("{other_task}#0"), &other_task, Failed, 3),
    ];
    let rows1 = vec![
        instance_row(&s1, &format!("{task}#0"), &task, Scheduled, 4),
        instance_row(&s1, &format!("{task}#1"), &task, Failed, 9),
        instance_row(&s1, &format!("{task}#2"), &task, Running, 12),
    ];
    for (session, rows) in [(&s2, rows2.clone()), (&s1, rows1.clone())] {
        store
            .commit(Commit {
                session,
                expected_version: 0,
                events: &[fired(1, "page", json!({}))],
                instances: rows,
                queue: Vec::new(),
            })
            .await
            .unwrap();
    }
    let in_order = vec![
        rows1[0].clone(),
        rows1[1].clone(),
        rows1[2].clone(),
        rows2[1].clone(),
        rows2[0].clone(),
    ];

    assert_eq!(
        store.instances(&[], Some(&task), 100, None).await.unwrap(),
        in_order
    );

    // Paged, with the cursor of the last row returned.
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(s, n)| (s.as_str(), n.as_str()));
        let page = store.instances(&[], Some(&task), 2, cursor).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap();
        after = Some((last.session.clone(), last.name.clone()));
        paged.extend(page);
    }
    assert_eq!(paged, in_order);

    // Filtered by status (any of).
    let failed = store
        .instances(&[Failed], Some(&task), 100, None)
        .await
        .unwrap();
    assert_eq!(failed, [rows1[1].clone(), rows2[0].clone()]);
    let active = store
        .instances(&[Scheduled, Running], Some(&task), 100, None)
        .await
        .unwrap();
    assert_eq!(active, [rows1[0].clone(), rows1[2].clone()]);
    let failed_after = store
        .instances(&[Failed], Some(&task), 100, Some((&s1, &rows1[1].name)))
        .await
        .unwrap();
    assert_eq!(failed_after, [rows2[0].clone()]);
    assert_eq!(
        store
            .instances(&[Skipped], Some(&task), 100, None)
            .await
            .unwrap(),
        []
    );

    // Without a task filter, our rows still come in order among everyone's.
    let everything = store
        .instances(&[], None, 100, Some((&s1, &rows1[0].name)))
        .await
        .unwrap();
    let ours: Vec<_> = everything
        .into_iter()
        .filter(|row| row.session.starts_with(&prefix))
        .collect();
    assert_eq!(ours[..2], [rows1[1].clone(), rows1[2].clone()]);
    assert_eq!(
        store
            .instances(&[Failed], Some(&other_task), 100, None)
            .await
            .unwrap(),
        [rows2[2].clone()]
    );
}

// ---------------------------------------------------------------------------
// The queue

async fn a_lease_is_taken_renewed_and_refused_to_others(store: Arc<dyn Store>) {
    let session = unique("lease");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    queue_ops(&*store, &session, vec![enqueue("t#0", &queue, at(100))])
        .await
        .unwrap();

    // Not before it is available.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &token, at(500), at(99), None)],
        )
        .await,
    );
    // Nor when there is no row.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#9", &token, at(500), at(200), None)],
        )
        .await,
    );

    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &token, at(500), at(100), None)],
    )
    .await
    .unwrap();
    let held = store.lease(&token).await.unwrap().expect("leased row");
    assert_eq!(
        held,
        QueueEntry {
            session: session.clone(),
            instance: "t#0".into(),
            queue: queue.clone(),
            run: "job.Run".into(),
            available_at: at(100),
            lease_owner: Some(format!("owner-of-{token}")),
            lease_token: Some(token.clone()),
            lease_expires_at: Some(at(500)),
        }
    );

    // Someone else, while it is held: refused, with or without a (wrong) token.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(900), at(499), None)],
        )
        .await,
    );
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(900), at(499), Some(&rival))],
        )
        .await,
    );
    assert!(store.lease(&rival).await.unwrap().is_none());

    // Once expired, the token is refused even though nobody re-claimed the row.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &token, at(1500), at(600), Some(&token))],
        )
        .await,
    );
    // In time, the holder renews under its token.
    let renewed = unique("renewed");
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &renewed, at(1500), at(450), Some(&token))],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    let held = store.lease(&renewed).await.unwrap().unwrap();
    assert_eq!(held.lease_expires_at, Some(at(1500)));
    // Renewing under the same token works too.
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &renewed, at(2500), at(700), Some(&renewed))],
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .lease(&renewed)
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at,
        Some(at(2500))
    );
    assert!(store
        .claimable(&queue, at(2499), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_lost_lease_rolls_back_the_whole_commit(store: Arc<dyn Store>) {
    let session = unique("rollback");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, "t#0", 1)],
            instances: vec![instance_row(
                &session,
                "t#0",
                &queue,
                InstanceStatus::Scheduled,
                2,
            )],
            queue: vec![
                enqueue("t#0", &queue, at(0)),
                lease("t#0", &token, at(100), at(0), None),
            ],
        })
        .await
        .unwrap();
    let before = store.instances(&[], Some(&queue), 10, None).await.unwrap();

    let mut running = instance_row(&session, "t#0", &queue, InstanceStatus::Running, 2);
    running.body = json!({"changed": true}).to_string();
    let result = store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[applied(3, "t#0", 1)],
            instances: vec![running],
            queue: vec![
                enqueue("t#1", &queue, at(0)),
                lease("t#0", &rival, at(200), at(50), None),
            ],
        })
        .await;
    assert_lease_lost(result);

    assert_eq!(store.version(&session).await.unwrap(), 2);
    assert_eq!(store.events(&session, 2, None).await.unwrap(), []);
    assert_eq!(
        store.instances(&[], Some(&queue), 10, None).await.unwrap(),
        before
    );
    assert!(store.lease(&rival).await.unwrap().is_none());
    assert_eq!(store.lease(&token).await.unwrap().unwrap().instance, "t#0");
    assert!(store
        .claimable(&queue, at(50), 10)
        .await
        .unwrap()
        .is_empty());
}

/// Many sessions committing at once (SQLite groups them into shared
/// transactions): a stale append or a lost lease fails alone, with its own
/// reason and nothing of it written, and every other commit lands whole.
async fn concurrent_commits_to_many_sessions_each_get_their_own_answer(store: Arc<dyn Store>) {
    const SESSIONS: usize = 24;
    let sessions: Vec<String> = (0..SESSIONS)
        .map(|i| unique(&format!("group{i}")))
        .collect();
    let queue = unique("q");
    for session in &sessions {
        append(&*store, session, 0, &[fired(1, "page", json!({}))])
            .await
            .unwrap();
    }
    let commits = sessions.iter().enumerate().map(|(i, session)| {
        let store = store.clone();
        let session = session.clone();
        let queue = queue.clone();
        async move {
            let (expected, ops) = match i % 3 {
                0 => (1, vec![enqueue("t#0", &queue, at(0))]),
                // Stale: the session is at version 1.
                1 => (0, vec![enqueue("t#0", &queue, at(0))]),
                // A lease on a row that does not exist.
                _ => (
                    1,
                    vec![lease("t#9", &unique("token"), at(100), at(0), None)],
                ),
            };
            let events = [created(2, "t#0", 1), applied(3, "t#0", 1)];
            let result = store
                .commit(Commit {
                    session: &session,
                    expected_version: expected,
                    events: &events,
                    instances: vec![instance_row(
                        &session,
                        "t#0",
                        "t",
                        InstanceStatus::Scheduled,
                        2,
                    )],
                    queue: ops,
                })
                .await;
            (i, session, result)
        }
    });
    for (i, session, result) in futures::future::join_all(commits).await {
        let version = store.version(&session).await.unwrap();
        let rows = store.instances(&[], None, 1000, None).await.unwrap();
        let has_row = rows.iter().any(|row| row.session == session);
        match i % 3 {
            0 => {
                result.unwrap();
                assert_eq!(version, 3, "{session}");
                assert!(has_row);
                assert_eq!(store.events(&session, 1, None).await.unwrap().len(), 2);
            }
            1 => {
                assert_conflict(result, &session, 0);
                assert_eq!(version, 1, "{session}");
                assert!(!has_row);
            }
            _ => {
                assert_lease_lost(result);
                assert_eq!(version, 1, "{session}");
                assert!(!has_row);
            }
        }
    }
    let claimable = store.claimable(&queue, at(1), 100).await.unwrap();
    assert_eq!(
        claimable.len(),
        SESSIONS / 3,
        "one queue row per landed commit"
    );
}

/// `lock_session`: the holder reads what others committed, decides and commits;
/// a writer of the same session meanwhile waits, then fails its guard.
async fn a_locked_session_makes_other_writers_wait_then_lose(store: Arc<dyn Store>) {
    let session = unique("locked");
    append(&*store, &session, 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();

    let mut locked = store.lock_session(&session).await.unwrap();
    let rival = {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(
            async move { append(&*store, &session, 1, &[fired(2, "rival", json!({}))]).await },
        )
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!rival.is_finished(), "the rival waits for the lock");

    let seen = locked.events_after(0).await.unwrap();
    assert_eq!(seen.len(), 1);
    locked
        .commit(Commit {
            session: &session,
            expected_version: 1,
            events: &[fired(2, "holder", json!({}))],
            instances: Vec::new(),
            queue: Vec::new(),
        })
        .await
        .unwrap();
    assert_conflict(rival.await.unwrap(), &session, 1);
    let events = store.events(&session, 0, None).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].payload.trigger(), Some("holder"));

    // Dropping a lock rolls back and lets others through.
    let dropped = store.lock_session(&session).await.unwrap();
    drop(dropped);
    append(&*store, &session, 2, &[fired(3, "after", json!({}))])
        .await
        .unwrap();
}

async fn an_expired_lease_can_be_taken_over(store: Arc<dyn Store>) {
    let session = unique("takeover");
    let queue = unique("q");
    let (token, rival) = (unique("token"), unique("rival"));
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("t#0", &queue, at(0)),
            lease("t#0", &token, at(100), at(0), None),
        ],
    )
    .await
    .unwrap();
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease("t#0", &rival, at(300), at(99), None)],
        )
        .await,
    );
    // At the instant it expires, it is up for grabs.
    queue_ops(
        &*store,
        &session,
        vec![lease("t#0", &rival, at(300), at(100), None)],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    // The old holder's token no longer renews.
    assert_lease_lost(
        queue_ops(
            &*store,
            &session,
            vec![lease(
                "t#0",
                &unique("late"),
                at(400),
                at(150),
                Some(&token),
            )],
        )
        .await,
    );
    assert_eq!(
        store.lease(&rival).await.unwrap().unwrap().lease_expires_at,
        Some(at(300))
    );
}

async fn enqueueing_again_drops_the_lease_and_removing_deletes_the_row(store: Arc<dyn Store>) {
    let session = unique("requeue");
    let queue = unique("q");
    let other_queue = unique("q2");
    let token = unique("token");
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("t#0", &queue, at(0)),
            lease("t#0", &token, at(1000), at(0), None),
        ],
    )
    .await
    .unwrap();
    // A retry with a cooldown: back in the queue, unleased, later, maybe elsewhere.
    queue_ops(
        &*store,
        &session,
        vec![enqueue("t#0", &other_queue, at(50))],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    assert!(store
        .claimable(&queue, at(60), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claimable(&other_queue, at(49), 10)
        .await
        .unwrap()
        .is_empty());
    let row = store.claimable(&other_queue, at(50), 10).await.unwrap();
    assert_eq!(
        row,
        [QueueEntry {
            session: session.clone(),
            instance: "t#0".into(),
            queue: other_queue.clone(),
            run: "job.Run".into(),
            available_at: at(50),
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
        }]
    );

    queue_ops(
        &*store,
        &session,
        vec![
            lease("t#0", &token, at(1000), at(60), None),
            QueueOp::Remove {
                instance: "t#0".into(),
            },
        ],
    )
    .await
    .unwrap();
    assert!(store.lease(&token).await.unwrap().is_none());
    assert!(store
        .claimable(&other_queue, at(5000), 10)
        .await
        .unwrap()
        .is_empty());
    // Removing what is not there is fine.
    queue_ops(
        &*store,
        &session,
        vec![QueueOp::Remove {
            instance: "t#0".into(),
        }],
    )
    .await
    .unwrap();
}

async fn claimable_lists_available_unleased_or_expired_rows_oldest_first(store: Arc<dyn Store>) {
    let s1 = unique("claim-a");
    let s2 = unique("claim-b");
    let queue = unique("q");
    let elsewhere = unique("elsewhere");
    let (held, expired) = (unique("held"), unique("expired"));
    queue_ops(
        &*store,
        &s1,
        vec![
            enqueue("late#0", &queue, at(300)),
            enqueue("held#0", &queue, at(10)),
            enqueue("expired#0", &queue, at(20)),
            enqueue("other#0", &elsewhere, at(0)),
            lease("held#0", &held, at(1000), at(100), None),
            lease("expired#0", &expired, at(150), at(100), None),
        ],
    )
    .await
    .unwrap();
    queue_ops(
        &*store,
        &s2,
        vec![
            enqueue("b#0", &queue, at(20)),
            enqueue("a#0", &queue, at(5)),
        ],
    )
    .await
    .unwrap();

    let claimable = |now: i64, limit: u32| {
        let store = store.clone();
        let queue = queue.clone();
        async move {
            let rows = store.claimable(&queue, at(now), limit).await.unwrap();
            rows.into_iter()
                .map(|row| (row.session, row.instance))
                .collect::<Vec<_>>()
        }
    };
    let a = (s2.clone(), "a#0".to_owned());
    let b = (s2.clone(), "b#0".to_owned());
    let expired_row = (s1.clone(), "expired#0".to_owned());
    let late = (s1.clone(), "late#0".to_owned());
    // Rows available at the same time come by session, then instance.
    let mut at_20 = vec![b.clone(), expired_row];
    at_20.sort();

    assert_eq!(claimable(4, 10).await, []);
    // At 100 "expired" is still held, and "held" stays held throughout.
    assert_eq!(claimable(100, 10).await, [a.clone(), b]);
    assert_eq!(
        claimable(200, 10).await,
        [vec![a.clone()], at_20.clone()].concat()
    );
    assert_eq!(claimable(200, 2).await, [a.clone(), at_20[0].clone()]);
    assert_eq!(
        claimable(300, 10).await,
        [vec![a], at_20, vec![late]].concat()
    );

    let other = store.claimable(&elsewhere, at(0), 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].session.as_str(), other[0].instance.as_str()),
        (s1.as_str(), "other#0")
    );
}

async fn expired_leases_lists_only_leases_that_ran_out(store: Arc<dyn Store>) {
    let session = unique("expired");
    let (q1, q2) = (unique("q1"), unique("q2"));
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    queue_ops(
        &*store,
        &session,
        vec![
            enqueue("a#0", &q1, at(0)),
            enqueue("b#0", &q2, at(0)),
            enqueue("c#0", &q1, at(0)),
            enqueue("free#0", &q1, at(0)),
            lease("a#0", &a, at(200), at(0), None),
            lease("b#0", &b, at(100), at(0), None),
            lease("c#0", &c, at(900), at(0), None),
        ],
    )
    .await
    .unwrap();
    // Other tests share a PostgreSQL database: look at our rows only.
    let ours = |rows: Vec<QueueEntry>| -> Vec<String> {
        rows.into_iter()
            .filter(|row| row.session == session)
            .map(|row| row.instance)
            .collect()
    };
    assert_eq!(
        ours(store.expired_leases(at(99), 100_000).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ours(store.expired_leases(at(100), 100_000).await.unwrap()),
        ["b#0"]
    );
    assert_eq!(
        ours(store.expired_leases(at(500), 100_000).await.unwrap()),
        ["b#0", "a#0"]
    );
    let expired = store.expired_leases(at(500), 100_000).await.unwrap();
    let b_row = expired
        .iter()
        .find(|row| row.lease_token.as_deref() == Some(&b))
        .unwrap();
    assert_eq!(b_row.lease_expires_at, Some(at(100)));
    assert_eq!(b_row.queue, q2);

    // Leave nothing behind for other tests' sweeps.
    queue_ops(
        &*store,
        &session,
        ["a#0", "b#0", "c#0", "free#0"]
            .into_iter()
            .map(|instance| QueueOp::Remove {
                instance: instance.into(),
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        ours(store.expired_leases(at(10_000), 100_000).await.unwrap()),
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------
// Snapshots and rebuilds

async fn snapshots_round_trip_and_never_go_back(store: Arc<dyn Store>) {
    let session = unique("snap");
    assert!(store.snapshot(&session).await.unwrap().is_none());
    let v5 = StoredSnapshot {
        version: 5,
        state: json!({"tasks": {"z": 1, "a": 2}, "version": 5}).to_string(),
    };
    store.save_snapshot(&session, &v5).await.unwrap();
    let read = store.snapshot(&session).await.unwrap().unwrap();
    // Read back as written, key order included.
    assert_eq!((read.version, &read.state), (5, &v5.state));

    let v3 = StoredSnapshot {
        version: 3,
        state: json!({"old": true}).to_string(),
    };
    store.save_snapshot(&session, &v3).await.unwrap();
    assert_eq!(store.snapshot(&session).await.unwrap().unwrap().version, 5);

    let v9 = StoredSnapshot {
        version: 9,
        state: json!({"new": true}).to_string(),
    };
    store.save_snapshot(&session, &v9).await.unwrap();
    let read = store.snapshot(&session).await.unwrap().unwrap();
    assert_eq!((read.version, read.state), (9, v9.state));
}

async fn replacing_projections_keeps_an_existing_lease(store: Arc<dyn Store>) {
    let session = unique("rebuild");
    let queue = unique("q");
    let token = unique("token");
    let events = [
        fired(1, "page", json!({})),
        created(2, "a#0", 1),
        created(3, "b#0", 1),
    ];
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &events,
            instances: vec![
                // Stale: the rebuilt row differs in status and body.
                InstanceRow {
                    body: json!({"stale": true}).to_string(),
                    ..instance_row(&session, "a#0", &queue, InstanceStatus::Scheduled, 2)
                },
                instance_row(&session, "stray#0", &queue, InstanceStatus::Failed, 7),
            ],
            queue: vec![
                enqueue("a#0", &queue, at(0)),
                enqueue("stray#0", &queue, at(0)),
                lease("a#0", &token, at(1000), at(0), None),
            ],
        })
        .await
        .unwrap();
    store
        .save_snapshot(
            &session,
            &StoredSnapshot {
                version: 99,
                state: json!({"bogus": true}).to_string(),
            },
        )
        .await
        .unwrap();

    let rows = vec![
        instance_row(&session, "a#0", &queue, InstanceStatus::Running, 2),
        instance_row(&session, "b#0", &queue, InstanceStatus::Scheduled, 3),
    ];
    let rebuilt_queue = vec![
        QueueEntry {
            session: session.clone(),
            instance: "a#0".into(),
            queue: queue.clone(),
            run: "job.Run".into(),
            available_at: at(0),
            lease_owner: Some("from-the-log".into()),
            lease_token: None,
            lease_expires_at: Some(at(1000)),
        },
        QueueEntry {
            session: session.clone(),
            instance: "b#0".into(),
            queue: queue.clone(),
            run: "job.Other".into(),
            available_at: at(40),
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
        },
    ];
    store
        .replace_projections(&[Rebuilt {
            session: session.clone(),
            version: 3,
            updated_at: at(3),
            instances: rows.clone(),
            queue: rebuilt_queue.clone(),
            snapshot: StoredSnapshot {
                version: 3,
                state: json!({"rebuilt": true}).to_string(),
            },
        }])
        .await
        .unwrap();

    assert_eq!(
        store.instances(&[], Some(&queue), 10, None).await.unwrap(),
        rows
    );
    let held = store
        .lease(&token)
        .await
        .unwrap()
        .expect("the lease survives");
    assert_eq!(held.instance, "a#0");
    assert_eq!(held.lease_owner, Some(format!("owner-of-{token}")));
    assert_eq!(held.lease_expires_at, Some(at(1000)));
    assert_eq!(
        store.claimable(&queue, at(999), 10).await.unwrap(),
        [rebuilt_queue[1].clone()]
    );
    let snapshot = store.snapshot(&session).await.unwrap().unwrap();
    assert_eq!(
        (snapshot.version, snapshot.state),
        (3, json!({"rebuilt": true}).to_string())
    );
    let summary = store
        .sessions(1, Some(&session[..session.len() - 1]))
        .await
        .unwrap();
    assert_eq!(
        (
            summary[0].uid.as_str(),
            summary[0].version,
            summary[0].updated_at
        ),
        (session.as_str(), 3, at(3))
    );
    // The log is untouched and the session carries on from it.
    assert_eq!(store.events(&session, 0, None).await.unwrap(), events);
    append(&*store, &session, 3, &[fired(4, "page", json!({}))])
        .await
        .unwrap();

    // Rebuilding a session with no projections yet creates them.
    let fresh = unique("fresh");
    store
        .replace_projections(&[Rebuilt {
            session: fresh.clone(),
            version: 1,
            updated_at: at(1),
            instances: Vec::new(),
            queue: Vec::new(),
            snapshot: StoredSnapshot {
                version: 1,
                state: json!({}).to_string(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(store.version(&fresh).await.unwrap(), 1);
}

async fn session_logs_reads_many_logs_in_the_order_asked(store: Arc<dyn Store>) {
    let (a, b) = (unique("logs-a"), unique("logs-b"));
    let log_a = vec![
        fired(1, "x", json!({"n": 1})),
        fired(2, "y", json!({"n": 2})),
    ];
    let log_b = vec![fired(1, "z", json!({"n": 3}))];
    append(&*store, &a, 0, &log_a).await.unwrap();
    append(&*store, &b, 0, &log_b).await.unwrap();

    let asked = [b.clone(), unique("logs-none"), a.clone()];
    let logs = store.session_logs(&asked).await.unwrap();
    assert_eq!(logs, [log_b, Vec::new(), log_a]);
    assert!(store.session_logs(&[]).await.unwrap().is_empty());
}

async fn replacing_projections_of_many_sessions_writes_each(store: Arc<dyn Store>) {
    let sessions: Vec<String> = (0..3).map(|n| unique(&format!("many-{n}"))).collect();
    let rebuilt: Vec<Rebuilt> = sessions
        .iter()
        .zip(1..)
        .map(|(session, version)| Rebuilt {
            session: session.clone(),
            version,
            updated_at: at(version as i64),
            instances: Vec::new(),
            queue: Vec::new(),
            snapshot: StoredSnapshot {
                version,
                state: json!({ "session": session }).to_string(),
            },
        })
        .collect();
    store.replace_projections(&rebuilt).await.unwrap();
    for (session, version) in sessions.iter().zip(1..) {
        assert_eq!(store.version(session).await.unwrap(), version);
        let snapshot = store.snapshot(session).await.unwrap().unwrap();
        assert_eq!(snapshot.state, json!({ "session": session }).to_string());
    }
}

/// What an inline start commits: events, the row enqueued and leased at once, and
/// another instance's row removed, in one decision (one statement on PostgreSQL).
async fn a_decision_that_enqueues_and_leases_leaves_one_leased_row(store: Arc<dyn Store>) {
    let session = unique("start");
    let queue = unique("q-start");
    let token = unique("token");
    let events = [fired(1, "page", json!({})), created(2, "a#0", 1)];
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &events,
            instances: vec![instance_row(
                &session,
                "a#0",
                "a",
                InstanceStatus::Running,
                2,
            )],
            queue: vec![
                enqueue("a#0", &queue, at(1)),
                enqueue("b#0", &queue, at(1)),
                lease("a#0", &token, at(900), at(2), None),
                QueueOp::Remove {
                    instance: "b#0".to_owned(),
                },
            ],
        })
        .await
        .unwrap();
    let held = store.lease(&token).await.unwrap().expect("leased");
    assert_eq!(
        (
            held.instance.as_str(),
            held.lease_expires_at,
            held.available_at
        ),
        ("a#0", Some(at(900)), at(1))
    );
    assert_eq!(held.lease_owner, Some(format!("owner-of-{token}")));
    assert!(store.claimable(&queue, at(2), 10).await.unwrap().is_empty());
    assert_eq!(store.events(&session, 0, None).await.unwrap(), events);

    // Enqueued again by a later decision: the lease is dropped.
    store
        .commit(Commit {
            session: &session,
            expected_version: 2,
            events: &[fired(3, "page", json!({}))],
            instances: Vec::new(),
            queue: vec![enqueue("a#0", &queue, at(3))],
        })
        .await
        .unwrap();
    assert_eq!(store.lease(&token).await.unwrap(), None);
    let claimable = store.claimable(&queue, at(3), 10).await.unwrap();
    assert_eq!(claimable.len(), 1);
    assert_eq!(claimable[0].instance, "a#0");
}

/// A lease that only the stored row can grant (a cooldown not over yet) fails
/// the whole decision, events included.
async fn a_decision_whose_lease_fails_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("cooling");
    let queue = unique("q-cooling");
    let err = store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({}))],
            instances: Vec::new(),
            queue: vec![
                enqueue("a#0", &queue, at(50)),
                lease("a#0", &unique("token"), at(900), at(2), None),
            ],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.version(&session).await.unwrap(), 0);
    assert!(store.events(&session, 0, None).await.unwrap().is_empty());
    assert!(store
        .claimable(&queue, at(60), 10)
        .await
        .unwrap()
        .is_empty());
}

/// What an outcome commits: events, the row removed, under the lease its holder
/// reports (one statement on PostgreSQL). An expired or foreign token refuses the
/// whole decision with `LeaseLost`; a stale version is a `Conflict` first.
async fn an_outcome_reported_under_a_lost_lease_writes_nothing(store: Arc<dyn Store>) {
    let session = unique("outcome");
    let queue = unique("q-outcome");
    let token = unique("token");
    store
        .commit(Commit {
            session: &session,
            expected_version: 0,
            events: &[fired(1, "page", json!({})), created(2, "t#0", 1)],
            instances: Vec::new(),
            queue: vec![
                enqueue("t#0", &queue, at(0)),
                lease("t#0", &token, at(100), at(0), None),
            ],
        })
        .await
        .unwrap();
    let report = |version: u64, now: DateTime<Utc>, under: &str| Commit {
        session: &session,
        expected_version: version,
        events: &[],
        instances: Vec::new(),
        queue: vec![
            lease("t#0", under, at(200), now, Some(under)),
            QueueOp::Remove {
                instance: "t#0".to_owned(),
            },
        ],
    };
    let events = [applied(3, "t#0", 1)];
    for (version, now, under, lost) in [
        (2, at(100), token.as_str(), true),  // expired
        (2, at(50), "someone-else", true),   // not the holder
        (1, at(100), token.as_str(), false), // stale and expired: stale first
    ] {
        let result = store
            .commit(Commit {
                events: &events,
                ..report(version, now, under)
            })
            .await;
        match result {
            Err(StoreError::LeaseLost { instance, .. }) if lost => assert_eq!(instance, "t#0"),
            Err(StoreError::Conflict { .. }) if !lost => {}
            other => panic!("version {version}, {under} at {now}: {other:?}"),
        }
        assert_eq!(store.version(&session).await.unwrap(), 2);
        assert!(store.lease(&token).await.unwrap().is_some());
    }
    store
        .commit(Commit {
            events: &events,
            ..report(2, at(50), &token)
        })
        .await
        .unwrap();
    assert_eq!(store.version(&session).await.unwrap(), 3);
    assert_eq!(store.lease(&token).await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// Backend-specific checks

#[tokio::test]
async fn unknown_url_schemes_are_refused() {
    for url in ["mysql://localhost/x", "triggers.db", "", "http://x"] {
        match open(url).await {
            Err(StoreError::BadUrl(bad)) => assert_eq!(bad, url),
            Err(other) => panic!("{url:?}: expected BadUrl, got {other}"),
            Ok(_) => panic!("{url:?}: expected BadUrl, got a store"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_memory_database_is_one_database_across_tasks() {
    let store = open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let session = unique("memory");
    append(&*store, &session, 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();
    let reads = (0..8).map(|_| {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(async move { store.version(&session).await.unwrap() })
    });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap(), 1);
    }
    // Two stores opened on `sqlite::memory:` are two databases.
    let other = open("sqlite::memory:").await.unwrap();
    assert_eq!(other.version(&session).await.unwrap(), 0);
}

#[tokio::test]
async fn sqlite_urls_name_relative_absolute_and_plain_paths() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("abs.db");
    let store = open(&format!("sqlite://{}", abs.display())).await.unwrap();
    append(&*store, "s", 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();
    assert!(abs.exists());
    let plain = dir.path().join("plain.db");
    let store = open(&format!("sqlite:{}", plain.display())).await.unwrap();
    store.ping().await.unwrap();
    assert!(plain.exists());
    // Reopening finds the data (and the migrations already applied).
    let again = open(&format!("sqlite://{}", abs.display())).await.unwrap();
    assert_eq!(again.version("s").await.unwrap(), 1);
}

#[tokio::test]
async fn a_corrupt_sqlite_event_row_is_reported_with_its_session_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let store = super::sqlite::SqliteStore::connect(&url, &Default::default())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ('s', 1, 'NoSuchKind', 1, '{}', '2024-01-01T00:00:00.000000Z')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_corrupt(store.events("s", 0, None).await, "\"s\"", "event 1");
    // Rows are append-only: the database refuses to change them.
    assert!(sqlx::query("UPDATE events SET kind = 'TriggerFired'")
        .execute(store.pool())
        .await
        .is_err());
    assert!(sqlx::query("DELETE FROM events")
        .execute(store.pool())
        .await
        .is_err());
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
async fn a_corrupt_postgres_event_row_is_reported_with_its_session_and_seq() {
    let test = "a_corrupt_postgres_event_row_is_reported_with_its_session_and_seq";
    let Ok(url) = std::env::var(POSTGRES_URL_ENV) else {
        eprintln!("SKIPPED: {POSTGRES_URL_ENV} not set; PostgreSQL test {test} did not run");
        return;
    };
    let store =
        super::postgres::PostgresStore::connect(&fresh_schema(&url).await, &Default::default())
            .await
            .unwrap();
    let session = unique("corrupt");
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ($1, 1, 'TriggerFired', 1, '{\"trigger\": 5}', now())",
    )
    .bind(&session)
    .execute(store.pool())
    .await
    .unwrap();
    assert_corrupt(store.events(&session, 0, None).await, &session, "event 1");
    assert!(
        sqlx::query("UPDATE events SET kind = 'X' WHERE session = $1")
            .bind(&session)
            .execute(store.pool())
            .await
            .is_err()
    );
}

fn assert_corrupt(result: StoreResult<Vec<Event>>, session: &str, seq: &str) {
    match result {
        Err(StoreError::Corrupt(message)) => {
            assert!(
                message.contains(session) && message.contains(seq),
                "{message}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_seq_taken_behind_the_sqlite_guards_back_is_still_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let store = super::sqlite::SqliteStore::connect(&url, &Default::default())
        .await
        .unwrap();
    append(&store, "s", 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ('s', 2, 'TriggerFired', 1, '{}', '2024-01-01T00:00:00.000000Z')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // The version guard passes (1 -> 2); the unique (session, seq) key does not.
    assert_conflict(
        append(&store, "s", 1, &[fired(2, "page", json!({}))]).await,
        "s",
        1,
    );
    assert_eq!(store.version("s").await.unwrap(), 1);
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
async fn a_seq_taken_behind_the_postgres_guards_back_is_still_a_conflict() {
    let test = "a_seq_taken_behind_the_postgres_guards_back_is_still_a_conflict";
    let Ok(url) = std::env::var(POSTGRES_URL_ENV) else {
        eprintln!("SKIPPED: {POSTGRES_URL_ENV} not set; PostgreSQL test {test} did not run");
        return;
    };
    let store =
        super::postgres::PostgresStore::connect(&fresh_schema(&url).await, &Default::default())
            .await
            .unwrap();
    let session = unique("behind");
    append(&store, &session, 0, &[fired(1, "page", json!({}))])
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ($1, 2, 'TriggerFired', 1, '{}', now())",
    )
    .bind(&session)
    .execute(store.pool())
    .await
    .unwrap();
    assert_conflict(
        append(&store, &session, 1, &[fired(2, "page", json!({}))]).await,
        &session,
        1,
    );
    assert_eq!(store.version(&session).await.unwrap(), 1);
}

#[path = "group_tests.rs"]
mod group_tests;
