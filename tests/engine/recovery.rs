//! Work survives a crash (docs/operations.md, "Several servers"): inline instances left scheduled or
//! running by a process that died are run by the next engine on the database.
//! The in-memory cache is only an optimisation: dropping it, or reading through a
//! second engine, changes nothing observable.

use std::time::Duration;

use serde_json::json;
use triggers::domain::{InstanceStatus, SessionState};
use triggers::engine::{EngineOptions, Job, Outcome};
use triggers::Engine;

use crate::support::*;
use triggers::testkit::names::{self, trigger, uid};

/// The two tasks the doomed process runs: their handler never returns there.
fn doomed_tasks() -> serde_json::Value {
    json!({
        "t_running": {"after": ["a"], "run": "app.Import"},
        "t_waiting": {"after": ["b"], "run": "app.Import"},
    })
}

/// Runs a "server process" in a runtime of its own: it (optionally) configures
/// [`doomed_tasks`], fires both, waits until the first is running (the second
/// waits for the only inline slot), and dies: its runtime is shut down with the
/// work in flight, as a crash would leave it.
fn run_a_process_that_crashes(url: String, configure_first: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the doomed process");
    runtime.block_on(async move {
        let engine = Engine::builder(url)
            .options(EngineOptions {
                inline_concurrency: 1,
                recover_on_open: false,
                sweep_interval: None,
                ..test_options()
            })
            .handler("app.Import", |_job: Job| std::future::pending::<Outcome>())
            .open()
            .await
            .expect("open the doomed engine");
        if configure_first {
            configure(&engine, S, doomed_tasks()).await;
        }
        fire(&engine, S, "a", json!({"n": 1})).await;
        wait_for(&engine, S, "t_running#0 to start", |st| {
            st.instance("t_running#0")
                .is_some_and(|i| i.status == InstanceStatus::Running)
        })
        .await;
        fire(&engine, S, "b", json!({"n": 2})).await;
    });
    runtime.shutdown_background();
}

async fn inline_work_left_by_a_crashed_process_is_run_by_the_next_engine(db: TestDb) {
    // Given a process that died with one instance running and one scheduled.
    let url = db.url.clone();
    let crashed = std::thread::spawn(move || run_a_process_that_crashes(url, true));
    tokio::task::spawn_blocking(move || crashed.join())
        .await
        .unwrap()
        .expect("the doomed process ran its story");

    // When a new engine opens on the database.
    let engine = db
        .engine_with(|b| {
            b.handler("app.Import", |job: Job| async move {
                Outcome::finished(json!({"recovered": job.instance, "kwargs": job.kwargs}))
            })
        })
        .await;

    // Then both instances run to completion: the scheduled one at once, the
    // running one once its lease expired.
    let st = wait_for(&engine, S, "both instances to finish", |st| {
        ["t_running#0", "t_waiting#0"].iter().all(|name| {
            st.instance(name)
                .is_some_and(|i| i.status == InstanceStatus::Finished)
        })
    })
    .await;
    settle(&engine).await;
    assert_eq!(
        result(instance(&st, "t_running#0")),
        json!({"recovered": "t_running#0", "kwargs": {"a": {"n": 1}}})
    );
    assert_eq!(
        result(instance(&st, "t_waiting#0")),
        json!({"recovered": "t_waiting#0", "kwargs": {"b": {"n": 2}}})
    );
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    assert_eq!(
        about(&events, "InstanceStarted", "t_running#0").len(),
        2,
        "it ran again"
    );
    assert_eq!(
        about(&events, "InstanceLeaseExpired", "t_running#0").len(),
        1
    );
    assert_eq!(about(&events, "InstanceStarted", "t_waiting#0").len(), 1);
    assert_eq!(about(&events, "InstanceFinished", "t_running#0").len(), 1);
    // The cascade of each ran exactly once too.
    assert_eq!(fired(&events, "t_running").len(), 1);
    assert_eq!(fired(&events, "t_waiting").len(), 1);
    assert!(SessionState::fold(S, &events).unwrap() == *state(&engine, S).await);
}

async fn clearing_the_cache_changes_nothing_observable(db: TestDb) {
    // Given an engine that snapshots often, mid-way through a session.
    let engine = db
        .engine_with(|b| {
            b.options(EngineOptions {
                snapshot_every: 2,
                ..test_options()
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "unless": ["stop"], "run": PASSTHRU},
            "t_fail": {"after": ["a"], "run": FAILING},
        }),
    )
    .await;
    engine
        .fire(&uid(S), &trigger("page"), obj(json!({"n": 1})), Some("k1"))
        .await
        .unwrap();
    fire_and_settle(&engine, S, "a", json!({})).await;
    let before = state(&engine, S).await;

    // When the cache is dropped.
    engine.clear_cache();

    // Then the state read back is the same, and the session carries on the same way.
    let reloaded = state(&engine, S).await;
    assert!(*reloaded == *before, "the reloaded state differs");
    let duplicate = engine
        .fire(&uid(S), &trigger("page"), obj(json!({"n": 1})), Some("k1"))
        .await
        .unwrap();
    assert!(duplicate.duplicate, "idempotency keys survive the reload");
    fire_and_settle(&engine, S, "page", json!({"n": 2})).await;
    engine.clear_cache();
    engine
        .replay_failed_instance(&uid(S), &names::instance("t_fail#0"), None)
        .await
        .unwrap();
    settle(&engine).await;
    engine.clear_cache();
    fire_and_settle(&engine, S, "stop", json!({})).await;
    fire_and_settle(&engine, S, "page", json!({"n": 3})).await;

    let live = state(&engine, S).await;
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    assert!(SessionState::fold(S, &events).unwrap() == *live);
    assert_eq!(
        summary(&live),
        [
            ("t_b#0".to_owned(), InstanceStatus::Finished),
            ("t_a#0".to_owned(), InstanceStatus::Finished),
            ("t_fail#0".to_owned(), InstanceStatus::Replayed),
            ("t_b#1".to_owned(), InstanceStatus::Finished),
            ("t_fail#1".to_owned(), InstanceStatus::Failed),
            ("t_b#2".to_owned(), InstanceStatus::Abandoned),
        ]
    );
    // A fresh engine reading from snapshots and the log sees the same.
    let other = db.engine().await;
    assert!(
        *state(&other, S).await == *live,
        "a second engine sees another state"
    );
}

async fn shutdown_waits_for_inline_runs_in_flight(db: TestDb) {
    // Given a job that takes a moment.
    let engine = db
        .engine_with(|b| {
            b.handler("app.Slow", |_job: Job| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Outcome::finished(json!({"done": true}))
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Slow"}}),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;

    // When the engine shuts down.
    engine.shutdown(Duration::from_secs(20)).await;

    // Then the run in flight was finished and recorded first.
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Finished);
    assert_eq!(result(instance(&st, "t#0")), json!({"done": true}));
}

async fn a_long_inline_run_keeps_its_lease_and_runs_once(db: TestDb) {
    // Given a short lease, a fast sweeper, and a job that outlives the lease
    // several times over.
    let engine = db
        .engine_with(|b| {
            b.options(EngineOptions {
                inline_lease: Duration::from_millis(900),
                sweep_interval: Some(Duration::from_millis(50)),
                ..test_options()
            })
            .handler("app.Long", |_job: Job| async move {
                tokio::time::sleep(Duration::from_millis(2000)).await;
                Outcome::finished(json!({"done": true}))
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Long"}}),
    )
    .await;

    // When it runs.
    fire_and_settle(&engine, S, "a", json!({})).await;

    // Then the renewed lease kept the sweeper off it: it ran and finished once.
    let events = events(&engine, S).await;
    assert_eq!(
        about(&events, "InstanceStarted", "t#0").len(),
        1,
        "{:?}",
        kinds(&events)
    );
    assert!(about(&events, "InstanceLeaseExpired", "t#0").is_empty());
    assert_eq!(
        status(&*state(&engine, S).await, "t#0"),
        InstanceStatus::Finished
    );
}

async fn a_peer_engine_that_was_already_running_picks_up_work_a_crashed_process_left(db: TestDb) {
    // Given a server that is up, has configured the session and read it.
    let peer = db
        .engine_with(|b| {
            b.handler("app.Import", |job: Job| async move {
                Outcome::finished(json!({"recovered": job.instance}))
            })
        })
        .await;
    configure(&peer, S, doomed_tasks()).await;
    state(&peer, S).await;

    // When another server process dies with one instance running and one scheduled.
    let url = db.url.clone();
    let crashed = std::thread::spawn(move || run_a_process_that_crashes(url, false));
    tokio::task::spawn_blocking(move || crashed.join())
        .await
        .unwrap()
        .expect("the doomed process ran its story");

    // Then the surviving server runs both (watched through a third engine that only
    // reads, so that watching does not refresh the survivor's view).
    let watcher = db
        .engine_with(|b| {
            b.options(EngineOptions {
                recover_on_open: false,
                sweep_interval: None,
                ..test_options()
            })
        })
        .await;
    let st = wait_for_within(
        Duration::from_secs(12),
        &watcher,
        S,
        "the peer to run both instances",
        |st| {
            ["t_running#0", "t_waiting#0"].iter().all(|name| {
                st.instance(name)
                    .is_some_and(|i| i.status == InstanceStatus::Finished)
            })
        },
    )
    .await;
    assert_eq!(
        result(instance(&st, "t_waiting#0")),
        json!({"recovered": "t_waiting#0"})
    );
    settle(&peer).await;
}

on_both_backends!(
    inline_work_left_by_a_crashed_process_is_run_by_the_next_engine,
    clearing_the_cache_changes_nothing_observable,
    shutdown_waits_for_inline_runs_in_flight,
    a_long_inline_run_keeps_its_lease_and_runs_once,
    a_peer_engine_that_was_already_running_picks_up_work_a_crashed_process_left,
    a_command_dropped_mid_commit_leaves_nothing_in_the_cache,
);

/// A caller that goes away (an HTTP client disconnecting drops the request's
/// future) while its fire waits on the database: the cache must not keep the
/// decided-but-uncommitted events.
async fn a_command_dropped_mid_commit_leaves_nothing_in_the_cache(db: TestDb) {
    use sqlx::{Connection, Executor};

    let engine = db
        .engine_configured(
            S,
            json!({"t_a": {"after": ["go"], "run": "app.Unregistered", "using": "worker"}}),
        )
        .await;
    let before = state(&engine, S).await.version();

    // Another connection blocks the engine's commit: SQLite's write lock, or a
    // row lock on the session's version row.
    let blocker: Box<dyn std::any::Any> = match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            conn.execute("BEGIN IMMEDIATE").await.unwrap();
            Box::new(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            conn.execute("BEGIN").await.unwrap();
            conn.execute("SELECT * FROM sessions FOR UPDATE")
                .await
                .unwrap();
            Box::new(conn)
        }
    };
    let firing = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .fire(&uid(S), &trigger("go"), obj(json!({})), None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!firing.is_finished(), "the fire waits for the database");
    firing.abort();
    assert!(firing.await.unwrap_err().is_cancelled());

    // While the database still blocks it, nothing the fire decided is visible.
    let during = state(&engine, S).await;
    assert_eq!(during.version(), before, "the fire is not committed yet");
    assert!(during.instances().is_empty(), "{:?}", summary(&during));
    drop(blocker); // closing the connection rolls its transaction back

    // The dropped fire may still land (its commit was under way, as with any
    // database); whatever landed, the next fire decides on it and every read
    // agrees with the log.
    fire(&engine, S, "go", json!({"n": 2})).await;
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    let fires = fired(&events, "go").len();
    assert!((1..=2).contains(&fires), "{fires} fires");
    let live = state(&engine, S).await;
    assert!(
        SessionState::fold(S, &events).unwrap() == *live,
        "the cache equals the log"
    );
    assert_eq!(live.instances().len(), 1, "t_a runs once");
}
