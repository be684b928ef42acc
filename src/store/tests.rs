//! The store conformance suite: every behaviour the engine relies on, run once on
//! SQLite and once on PostgreSQL (when `TRIGGERS_TEST_POSTGRES_URL` is set), on
//! a fresh test database of the kit (`crate::testkit`) each. Each test also uses
//! its own session uids, queue and task names.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use super::{
    open, Commit, InstanceQuery, InstanceRow, QueueEntry, QueueOp, Rebuilt, Store, StoreError,
    StoreResult, StoredSnapshot,
};
use crate::domain::{
    Event, EventPayload, InstanceName, InstanceStatus, JsonObject, SessionUid, TriggerRole,
};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::testkit::TestDb;

mod backends;
mod browse;
mod log;
mod queue;
mod snapshots;
use browse::*;
use log::*;
use queue::*;
use snapshots::*;

/// Instantiates each test body on both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            use super::{open_store, TestDb};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = TestDb::sqlite();
                    super::$name(open_store(&db).await).await;
                }
            )*
        }

        mod on_postgres {
            use super::{open_store, TestDb};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
                async fn $name() {
                    let Some(db) = TestDb::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(open_store(&db).await).await;
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

/// A store on the test database `db` (the kit's: a fresh SQLite file, or a
/// fresh PostgreSQL schema, left afterwards).
async fn open_store(db: &TestDb) -> Arc<dyn Store> {
    open(&db.url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.url))
}

/// A SQLite store of its own on a fresh test database (kept with it).
async fn sqlite_backend() -> (TestDb, SqliteStore) {
    let db = TestDb::sqlite();
    let store = SqliteStore::connect(&db.url, &Default::default())
        .await
        .unwrap();
    (db, store)
}

/// A PostgreSQL store of its own on a fresh schema, or `None` (said on stderr)
/// without `TRIGGERS_TEST_POSTGRES_URL`.
async fn postgres_backend(test: &str) -> Option<(TestDb, PostgresStore)> {
    let db = TestDb::postgres(test).await?;
    let store = PostgresStore::connect(&db.url, &Default::default())
        .await
        .unwrap();
    Some((db, store))
}

// ---------------------------------------------------------------------------
// Builders

/// A name no other test (or earlier run on the same database) uses.
fn unique(label: &str) -> String {
    format!("{}-{label}", uuid::Uuid::new_v4())
}

/// The instances listing of one task, at most `first`.
fn of_task(task: &str, first: u32) -> InstanceQuery<'_> {
    InstanceQuery {
        task: Some(task),
        first,
        ..InstanceQuery::default()
    }
}

/// `name` as the store takes a session uid.
fn uid(name: &str) -> SessionUid {
    SessionUid::parse(name).expect("a session uid")
}

/// `name` as the store takes an instance name.
fn instance(name: &str) -> InstanceName {
    InstanceName::parse(name).expect("an instance name")
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

/// The log of two pages: `page` fired, `a#0` and `b#0` created, `page` applied
/// to each; its first `n` events.
fn two_pages(n: usize) -> Vec<Event> {
    let mut events = vec![
        fired(1, "page", json!({"n": 1})),
        created(2, "a#0", 1),
        applied(3, "a#0", 1),
        created(4, "b#0", 1),
        fired(5, "page", json!({"n": 2})),
        applied(6, "a#0", 5),
        applied(7, "b#0", 5),
    ];
    events.truncate(n);
    events
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

/// Asserts that no instance row of `task` and no row claimable from `queue`
/// was written.
async fn assert_no_rows(store: &dyn Store, task: &str, queue: &str) {
    assert!(store.instances(of_task(task, 10)).await.unwrap().is_empty());
    assert!(store.claimable(queue, at(10), 10).await.unwrap().is_empty());
}

fn assert_lease_lost(result: StoreResult<()>) {
    assert!(
        matches!(result, Err(StoreError::LeaseLost { .. })),
        "expected LeaseLost, got {result:?}"
    );
}

#[path = "group_tests.rs"]
mod group_tests;
