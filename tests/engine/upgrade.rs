//! Upgrades: a log written by an older build keeps loading (docs/events.md,
//! "Payload formats": events are facts, upcast on read, rows never rewritten).
//!
//! `tests/fixtures/events-format-<n>.json` is a session's `events` rows exactly as
//! a build writing payload format `<n>` stored them, and
//! `events-format-<n>.state.json` the state that build folded from them (see
//! [`state_view`]). Both were produced once by
//! [`freeze_a_log_of_the_current_payload_format`] and are never regenerated: a
//! newer build must load the old rows as they are.
//!
//! Before bumping `PAYLOAD_FORMAT`, freeze the current format with
//! `cargo test --test engine upgrade::freeze -- --ignored` and commit the two
//! files it writes (it refuses to overwrite a fixture that exists).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, SqliteConnection};
use triggers::domain::event::PAYLOAD_FORMAT;
use triggers::domain::state::timestamp;
use triggers::domain::{Event, EventPayload, InstanceStatus, Runner, SessionState};
use triggers::engine::{Claim, EngineOptions, WorkerFailure};
use triggers::store::InstanceQuery;
use triggers::Engine;

use crate::support::{
    about, configure, events, fire_and_settle, fire_keyed, settle, state, status, test_options,
    Backend, TestDb, DEVNULL, PASSTHRU, PATIENCE, SELF_SKIPPING,
};
use triggers::testkit::names::{instance, uid};

/// The session of the fixture.
const FIXTURE_SESSION: &str = "questionnaire:42";

/// The idempotency keys the fixture's fires used (the state answers repeats of them).
const IDEMPOTENCY_KEYS: &[&str] = &["respondent-42/firstPage"];

/// One row of the `events` table, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredRow {
    session: String,
    seq: i64,
    kind: String,
    format: i32,
    /// The `data` column, parsed for readability; serialising it compactly gives
    /// back the stored text byte for byte (checked when the fixture was written).
    data: Value,
    caused_by: Option<i64>,
    /// The instance the event is about (copied out of `data` for lookups).
    instance: Option<String>,
    /// The trigger the event is about (copied out of `data` for lookups).
    trigger_name: Option<String>,
    /// The `at` column as SQLite stores it: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    at: String,
}

/// Where the fixtures of payload format `format` live.
fn fixture_paths(format: i32) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    (
        dir.join(format!("events-format-{format}.json")),
        dir.join(format!("events-format-{format}.state.json")),
    )
}

/// What a client can see of a folded session, spelled out field by field so that
/// it does not depend on how the build under test serialises its own types.
fn state_view(state: &SessionState) -> Value {
    let tasks: serde_json::Map<String, Value> = state
        .tasks()
        .map(|(name, task)| {
            let view = json!({
                "after": task.after,
                "andEvery": task.and_every,
                "unless": task.unless,
                "run": task.run,
                "using": task.using,
                "withParams": task.with_params,
                "maxRetries": task.max_retries,
                "extras": task.extras,
            });
            (name.to_owned(), view)
        })
        .collect();
    let instances: Vec<Value> = state
        .instances()
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "task": i.task,
                "status": i.status.as_str(),
                "kwargs": i.kwargs,
                "kwargsSources": i.kwargs_sources,
                "abandonState": i.abandon_state,
                "abandonSources": i.abandon_sources,
                "metadata": i.metadata,
                "parent": i.parent,
                "depth": i.depth,
                "runner": i.runner.as_ref().map(ToString::to_string),
                "createdSeq": i.created_seq,
                "lastSeq": i.last_seq,
            })
        })
        .collect();
    let latest: serde_json::Map<String, Value> = state
        .latest_fires()
        .iter()
        .map(|(trigger, fire)| {
            let view = json!({"kwargs": fire.kwargs, "seq": fire.seq});
            (trigger.clone(), view)
        })
        .collect();
    let keyed: serde_json::Map<String, Value> = IDEMPOTENCY_KEYS
        .iter()
        .filter_map(|key| {
            let fire = state.keyed_fire(key)?;
            let view = json!({
                "trigger": fire.trigger,
                "seq": fire.seq,
                "scheduled": fire.scheduled,
                "abandoned": fire.abandoned,
            });
            Some(((*key).to_owned(), view))
        })
        .collect();
    let names = |it: &mut dyn Iterator<Item = &triggers::domain::Instance>| -> Vec<String> {
        it.map(|i| i.name.clone()).collect()
    };
    json!({
        "uid": state.uid(),
        "version": state.version(),
        "updatedAt": state.updated_at().map(timestamp),
        "tasks": tasks,
        "instances": instances,
        "latestFires": latest,
        "keyedFires": keyed,
        "unresolvedTasks": state.unresolved_tasks(),
        "unresolvedInstances": names(&mut state.unresolved_instances()),
        "instancesWithUnresolvedLogs": names(&mut state.instances_with_unresolved_logs()),
    })
}

on_both_backends!(
    a_session_logged_in_format_1_loads_into_the_state_that_build_folded,
    format_1_events_read_back_upcast_with_the_runner_spelled_as_using,
    a_format_1_session_goes_on_in_the_current_format_after_the_old_events,
    a_snapshot_this_build_cannot_read_is_ignored_and_the_log_folded_instead,
);

/// The committed fixture of payload format 1: the rows, and the state they folded into.
fn format_1_fixture() -> (Vec<StoredRow>, Value) {
    let rows = serde_json::from_str(include_str!("../fixtures/events-format-1.json"))
        .expect("the format-1 fixture parses");
    let state = serde_json::from_str(include_str!("../fixtures/events-format-1.state.json"))
        .expect("the format-1 state parses");
    (rows, state)
}

/// Makes `db` what an older build left behind: migrated, holding `rows` as they
/// were written and the session row they imply (no projections, no snapshot).
/// Tests then open an engine on it, as the new build would after an upgrade.
async fn seed(db: &TestDb, rows: &[StoredRow]) {
    // Opening an engine runs the migrations.
    drop(db.engine().await);
    let mut raw = Raw::connect(db).await;
    raw.insert_log(rows).await;
}

/// A connection to a test's database, for what only an older build (or a
/// broken disk) would do to it.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Raw {
    async fn connect(db: &TestDb) -> Raw {
        match db.backend {
            Backend::Sqlite => Raw::Sqlite(SqliteConnection::connect(&db.url).await.unwrap()),
            Backend::Postgres => Raw::Postgres(PgConnection::connect(&db.url).await.unwrap()),
        }
    }

    /// Inserts `rows` verbatim and the session row at the last of them.
    async fn insert_log(&mut self, rows: &[StoredRow]) {
        let last = rows.last().expect("a non-empty log");
        for row in rows {
            let data = serde_json::to_string(&row.data).unwrap();
            match self {
                Raw::Sqlite(conn) => sqlx::query(
                    "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, \
                     trigger_name, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&row.session)
                .bind(row.seq)
                .bind(&row.kind)
                .bind(row.format)
                .bind(data)
                .bind(row.caused_by)
                .bind(&row.instance)
                .bind(&row.trigger_name)
                .bind(&row.at)
                .execute(&mut *conn)
                .await
                .map(drop),
                Raw::Postgres(conn) => sqlx::query(
                    "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, \
                     trigger_name, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&row.session)
                .bind(row.seq)
                .bind(&row.kind)
                .bind(row.format)
                .bind(data)
                .bind(row.caused_by)
                .bind(&row.instance)
                .bind(&row.trigger_name)
                .bind(instant(&row.at))
                .execute(&mut *conn)
                .await
                .map(drop),
            }
            .unwrap_or_else(|e| panic!("insert event {}: {e}", row.seq));
        }
        match self {
            Raw::Sqlite(conn) => {
                sqlx::query("INSERT INTO sessions (uid, version, updated_at) VALUES (?, ?, ?)")
                    .bind(&last.session)
                    .bind(last.seq)
                    .bind(&last.at)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
            Raw::Postgres(conn) => {
                sqlx::query("INSERT INTO sessions (uid, version, updated_at) VALUES ($1, $2, $3)")
                    .bind(&last.session)
                    .bind(last.seq)
                    .bind(instant(&last.at))
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
        }
        .expect("insert the session row");
    }

    /// Saves `state` as the session's snapshot at `version`.
    async fn insert_snapshot(&mut self, session: &str, version: i64, state: &str) {
        match self {
            Raw::Sqlite(conn) => {
                sqlx::query("INSERT INTO snapshots (session, version, state) VALUES (?, ?, ?)")
                    .bind(session)
                    .bind(version)
                    .bind(state)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
            Raw::Postgres(conn) => {
                sqlx::query("INSERT INTO snapshots (session, version, state) VALUES ($1, $2, $3)")
                    .bind(session)
                    .bind(version)
                    .bind(state)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }
        }
        .expect("insert the snapshot");
    }

    /// `(seq, format, data)` of every event of `session`, as stored.
    async fn events(&mut self, session: &str) -> Vec<(i64, i32, String)> {
        match self {
            Raw::Sqlite(conn) => {
                sqlx::query_as(
                    "SELECT seq, format, data FROM events WHERE session = ? ORDER BY seq",
                )
                .bind(session)
                .fetch_all(&mut *conn)
                .await
            }
            Raw::Postgres(conn) => {
                sqlx::query_as(
                    "SELECT seq, format, data FROM events WHERE session = $1 ORDER BY seq",
                )
                .bind(session)
                .fetch_all(&mut *conn)
                .await
            }
        }
        .expect("read the stored events")
    }
}

/// A fixture timestamp as an instant.
fn instant(at: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("fixture timestamp {at:?}: {e}"))
        .with_timezone(&Utc)
}

/// How format 2 spells a format-1 runner object, worked out by hand.
fn spelled(old: &Value) -> String {
    match (
        old["runner"].as_str(),
        old.get("queue").and_then(Value::as_str),
    ) {
        (Some("inline"), None) => "inline".to_owned(),
        (Some("worker"), Some(queue)) => format!("worker:{queue}"),
        _ => panic!("the fixture holds a runner format 1 never wrote: {old}"),
    }
}

async fn a_session_logged_in_format_1_loads_into_the_state_that_build_folded(db: TestDb) {
    // Given the log of a questionnaire session written in payload format 1.
    let (rows, expected) = format_1_fixture();
    assert!(
        rows.iter().all(|r| r.format == 1),
        "the fixture is format 1"
    );
    seed(&db, &rows).await;
    let version = rows.len() as u64;

    // When this build opens the database and reads the session...
    let engine = db.engine().await;
    let st = state(&engine, FIXTURE_SESSION).await;

    // Then it folds into exactly the state the old build had folded...
    assert_eq!(state_view(&st), expected);
    assert_eq!(st.version(), version);
    // ...also as of that version, and after every projection is rebuilt from it.
    let as_of = engine
        .session_as_of(&uid(FIXTURE_SESSION), version)
        .await
        .unwrap();
    assert_eq!(state_view(&as_of), expected);
    let report = engine.rebuild().await.unwrap();
    assert_eq!((report.sessions, report.events), (1, version));
    engine.clear_cache();
    assert_eq!(
        state_view(&*state(&engine, FIXTURE_SESSION).await),
        expected
    );
    // The listings (the rebuilt projection rows) show the same instances.
    let listed: Vec<(String, &str)> = engine
        .instances(InstanceQuery {
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|row| (row.name.clone(), row.status.as_str()))
        .collect();
    let recorded: Vec<(String, &str)> = expected["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, recorded);
}

async fn format_1_events_read_back_upcast_with_the_runner_spelled_as_using(db: TestDb) {
    // Given the format-1 log, whose runners are nested objects.
    let (rows, _) = format_1_fixture();
    let scheduled_rows = rows.iter().filter(|r| r.kind == "InstanceScheduled");
    assert!(scheduled_rows.clone().all(|r| r.data["runner"].is_object()));
    assert!(scheduled_rows.count() >= 6);
    seed(&db, &rows).await;
    let engine = db.engine().await;

    // When its events are read back through the engine.
    let read = events(&engine, FIXTURE_SESSION).await;

    // Then every event is the stored one, with only the runner respelled.
    assert_eq!(read.len(), rows.len());
    for (event, row) in read.iter().zip(&rows) {
        assert_eq!(event.seq, row.seq as u64);
        assert_eq!(event.payload.kind(), row.kind);
        assert_eq!(event.caused_by, row.caused_by.map(|s| s as u64));
        assert_eq!(event.at, instant(&row.at));
        let mut data = row.data.clone();
        if row.kind == "InstanceScheduled" {
            data["runner"] = Value::String(spelled(&row.data["runner"]));
        }
        assert_eq!(event.payload.to_data(), data, "event {}", row.seq);
    }

    // ...naming the runners the tasks were configured with (or defaulted to).
    let runner_of = |events: &[Event], instance: &str| -> Vec<(Runner, bool)> {
        about(events, "InstanceScheduled", instance)
            .iter()
            .map(|e| match &e.payload {
                EventPayload::InstanceScheduled {
                    runner, not_before, ..
                } => (runner.clone(), not_before.is_some()),
                _ => unreachable!(),
            })
            .collect()
    };
    let worker = |queue: &str| Runner::Worker(queue.to_owned());
    assert_eq!(
        runner_of(&read, "t_importSubject#0"),
        [(Runner::Inline, false)]
    );
    assert_eq!(
        runner_of(&read, "t_importResponses#0"),
        [(Runner::Inline, false)]
    );
    assert_eq!(
        runner_of(&read, "t_exportResults#0"),
        [(worker("exports"), false)]
    );
    assert_eq!(
        runner_of(&read, "t_notifyClinician#0"),
        [(worker("default"), false)]
    );
    // The retry after a cooldown kept its notBefore.
    assert_eq!(
        runner_of(&read, "t_notifyClinician#1"),
        [(worker("default"), true)]
    );
    // An instance's history (looked up by the stored `instance` column) is upcast too.
    let history = engine
        .instance_history(&uid(FIXTURE_SESSION), &instance("t_archive#1"))
        .await
        .unwrap();
    assert_eq!(
        runner_of(&history, "t_archive#1"),
        [(worker("archive"), false)]
    );
}

async fn a_format_1_session_goes_on_in_the_current_format_after_the_old_events(db: TestDb) {
    // Given the format-1 log, its projections rebuilt by this build.
    let (rows, expected) = format_1_fixture();
    seed(&db, &rows).await;
    let old = rows.len();
    let engine = db.engine().await;
    engine.rebuild().await.unwrap();

    // When the respondent sends another page, and a worker claims the archive
    // the old build left scheduled in the `archive` queue and completes it.
    let page = fire_and_settle(&engine, FIXTURE_SESSION, "pageReceived", json!({"page": 2})).await;
    assert_eq!(page.scheduled, ["t_importResponses#1"]);
    let claims = engine
        .claim_tasks("worker-2", Some("archive"), Some(10), None)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].instance, "t_archive#1");
    assert_eq!(
        claims[0].kwargs["t_exportResults"]["url"],
        json!("s3://cold/42.parquet")
    );
    engine
        .complete_task(
            &claims[0].lease_token,
            Some(json!({"archived": true})),
            None,
        )
        .await
        .unwrap();

    // Then the session moved on from where the old build left it...
    let live = state(&engine, FIXTURE_SESSION).await;
    assert_eq!(
        status(&live, "t_importResponses#1"),
        InstanceStatus::Finished
    );
    assert_eq!(status(&live, "t_archive#1"), InstanceStatus::Finished);

    // ...the old rows are as they were written, and the new ones follow them
    // in the current format.
    let mut raw = Raw::connect(&db).await;
    let stored = raw.events(FIXTURE_SESSION).await;
    let seqs: Vec<i64> = stored.iter().map(|(seq, ..)| *seq).collect();
    assert_eq!(seqs, (1..=stored.len() as i64).collect::<Vec<_>>());
    assert!(stored.len() > old);
    for ((seq, format, data), row) in stored.iter().zip(&rows) {
        assert_eq!((*seq, *format), (row.seq, 1));
        assert_eq!(
            *data,
            serde_json::to_string(&row.data).unwrap(),
            "event {seq} was rewritten"
        );
    }
    assert!(stored[old..]
        .iter()
        .all(|(_, format, _)| *format == PAYLOAD_FORMAT));
    let read = events(&engine, FIXTURE_SESSION).await;
    let new_scheduled = about(&read, "InstanceScheduled", "t_importResponses#1")[0];
    let text = &stored[new_scheduled.seq as usize - 1].2;
    let data: Value = serde_json::from_str(text).unwrap();
    assert_eq!(data["runner"], json!("inline"), "{text}");

    // And the mixed log folds into the live state, as the old part folds into the recorded one.
    let live_view = state_view(&live);
    engine.rebuild().await.unwrap();
    engine.clear_cache();
    assert_eq!(
        state_view(&*state(&engine, FIXTURE_SESSION).await),
        live_view
    );
    assert_eq!(SessionState::fold(FIXTURE_SESSION, &read).unwrap(), *live);
    let as_of_old = engine
        .session_as_of(&uid(FIXTURE_SESSION), old as u64)
        .await
        .unwrap();
    assert_eq!(state_view(&as_of_old), expected);
}

async fn a_snapshot_this_build_cannot_read_is_ignored_and_the_log_folded_instead(db: TestDb) {
    // Given the format-1 log with a snapshot at its last version that this
    // build cannot decode: a newer one, and damaged (cut short: not JSON).
    let (rows, expected) = format_1_fixture();
    seed(&db, &rows).await;
    let version = rows.len() as i64;
    let mut raw = Raw::connect(&db).await;
    raw.insert_snapshot(
        FIXTURE_SESSION,
        version,
        r#"{"format": 99, "instances": "?""#,
    )
    .await;

    // When this build reads the session and acts on it.
    let engine = db.engine().await;
    let st = state(&engine, FIXTURE_SESSION).await;
    fire_and_settle(&engine, FIXTURE_SESSION, "pageReceived", json!({"page": 2})).await;

    // Then the log was folded instead, and commands work on that state.
    assert_eq!(state_view(&st), expected);
    let after = state(&engine, FIXTURE_SESSION).await;
    assert_eq!(
        status(&after, "t_importResponses#1"),
        InstanceStatus::Finished
    );
}

/// Writes the fixture of the payload format this build writes: a questionnaire
/// session run by the real engine on SQLite, covering every event kind, inline
/// and worker runners (default and named queues), an abandoned instance, a
/// self-skip, a worker retry with a cooldown, an expired lease, an operator
/// replay with replacement kwargs, and an instance left scheduled in a named
/// worker queue. Does nothing if the fixture exists: old fixtures are frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures; run by hand before bumping PAYLOAD_FORMAT"]
async fn freeze_a_log_of_the_current_payload_format() {
    let (events_path, state_path) = fixture_paths(PAYLOAD_FORMAT);
    if events_path.exists() || state_path.exists() {
        eprintln!(
            "{} exists: fixtures are frozen once written; nothing done",
            events_path.display()
        );
        return;
    }
    let db = TestDb::sqlite();
    let engine = db
        .engine_with(|builder| {
            builder.options(EngineOptions {
                // Leases are expired by hand below, so that the log says when.
                sweep_interval: None,
                ..test_options()
            })
        })
        .await;
    run_the_fixture_session(&engine).await;

    let state = engine.session(&uid(FIXTURE_SESSION)).await.unwrap();
    let rows = dump_rows(&db.url, FIXTURE_SESSION).await;
    assert_eq!(rows.len() as u64, state.version());
    assert!(rows.iter().all(|r| r.format == PAYLOAD_FORMAT));

    std::fs::create_dir_all(events_path.parent().unwrap()).unwrap();
    write_pretty(&events_path, &rows);
    write_pretty(&state_path, &state_view(&state));
    eprintln!(
        "wrote {} ({} events) and {}",
        events_path.display(),
        rows.len(),
        state_path.display()
    );
}

fn write_pretty(path: &std::path::Path, value: &impl Serialize) {
    let text = serde_json::to_string_pretty(value).expect("fixtures serialise") + "\n";
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The session the fixture records, step by step.
async fn run_the_fixture_session(engine: &Engine) {
    let s = FIXTURE_SESSION;
    configure(
        engine,
        s,
        json!({
            "t_importSubject": {"after": ["firstPageReceived"], "run": PASSTHRU, "using": "inline"},
            "t_importResponses": {"after": ["firstPageReceived"], "andEvery": "pageReceived", "run": PASSTHRU},
            "t_checkBrowser": {"after": ["firstPageReceived"], "run": SELF_SKIPPING},
            "t_sendReminder": {
                "after": ["firstPageReceived", "reminderDue"],
                "unless": ["questionnaireComplete"],
                "run": DEVNULL
            },
            "t_scoreResponses": {
                "after": ["t_importSubject", "questionnaireComplete"],
                "unless": ["questionnaireAbandoned"],
                "run": PASSTHRU,
                "withParams": {"scoring": {"model": "Psych 01"}}
            },
            "t_exportResults": {
                "after": ["t_scoreResponses"],
                "run": "app.ExportResults",
                "using": "worker:exports",
                "maxRetries": 2,
                "description": "pushes the scores to the data warehouse"
            },
            "t_notifyClinician": {"after": ["t_scoreResponses"], "run": "app.NotifyClinician"},
            "t_archive": {"after": ["t_exportResults"], "run": "app.Archive", "using": "worker:archive"},
        }),
    )
    .await;

    // A respondent goes through the questionnaire; inline tasks run as they go.
    let subject = json!({"subject": {"id": 42}, "browser": "Firefox"});
    fire_keyed(
        engine,
        s,
        "firstPageReceived",
        subject,
        Some(IDEMPOTENCY_KEYS[0]),
    )
    .await;
    settle(engine).await;
    fire_and_settle(
        engine,
        s,
        "pageReceived",
        json!({"page": 1, "responses": [1, 2]}),
    )
    .await;
    // Scores (inline, cascading to the worker tasks) and abandons the reminder.
    fire_and_settle(engine, s, "questionnaireComplete", json!({"at": "noon"})).await;

    // A worker on the named queue `exports` exports; the cascade queues `t_archive`.
    let export = claim(engine, Some("exports"), "t_exportResults#0", 30).await;
    engine
        .complete_task(
            &export.lease_token,
            Some(json!({"url": "s3://warehouse/42.parquet"})),
            None,
        )
        .await
        .unwrap();

    // A worker on the default queue fails and asks to retry after a cooldown.
    let notify = claim(engine, None, "t_notifyClinician#0", 30).await;
    engine
        .fail_task(
            &notify.lease_token,
            WorkerFailure {
                error: "SMTP timeout".into(),
                error_type: Some("smtplib.SMTPException".into()),
                context: Some(json!({"server": "smtp.example.org"})),
                log_level: None,
                retry: true,
                cooldown_seconds: Some(0.5),
                replacement_kwargs: None,
            },
        )
        .await
        .unwrap();

    // A worker claims `t_archive#0` and never reports: its lease expires.
    let _lost = claim(engine, Some("archive"), "t_archive#0", 1).await;
    let deadline = Instant::now() + PATIENCE;
    while engine.sweep().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Claimed again, it fails for good; the retried notification succeeds.
    let archive = claim(engine, Some("archive"), "t_archive#0", 30).await;
    engine
        .fail_task(
            &archive.lease_token,
            WorkerFailure {
                error: "disk full".into(),
                error_type: Some("OSError".into()),
                context: Some(json!({"path": "/archive"})),
                ..WorkerFailure::default()
            },
        )
        .await
        .unwrap();
    let notify = claim(engine, None, "t_notifyClinician#1", 30).await;
    engine
        .complete_task(
            &notify.lease_token,
            Some(json!({"notified": ["dr.who"]})),
            Some(20),
        )
        .await
        .unwrap();

    // An operator looks at the failure, replays it with other kwargs (left
    // scheduled in `archive`), annotates a result and overrides a self-skip.
    engine
        .mark_instance_logs_resolved(&uid(s), &instance("t_archive#0"))
        .await
        .unwrap();
    engine
        .replay_failed_instance(
            &uid(s),
            &instance("t_archive#0"),
            Some(json!({"t_exportResults": {"url": "s3://cold/42.parquet"}})),
        )
        .await
        .unwrap();
    engine
        .update_instance_metadata(
            &uid(s),
            &instance("t_scoreResponses#0"),
            json!({"review": {"by": "dr.who"}}),
        )
        .await
        .unwrap();
    engine
        .update_instance_status(
            &uid(s),
            &instance("t_checkBrowser#0"),
            InstanceStatus::Finished,
            Some(json!({"result": {"browser": "Firefox"}})),
            false,
            None,
        )
        .await
        .unwrap();
    settle(engine).await;
}

/// Claims `instance` from `queue` (polling until it is available, e.g. after a
/// cooldown or an expired lease) with a lease of `lease_seconds`.
async fn claim(engine: &Engine, queue: Option<&str>, instance: &str, lease_seconds: u32) -> Claim {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let claims = engine
            .claim_tasks("worker-1", queue, Some(1), Some(lease_seconds))
            .await
            .unwrap();
        if let Some(claim) = claims.into_iter().next() {
            assert_eq!(claim.instance, instance, "claimed from {queue:?}");
            return claim;
        }
        assert!(
            Instant::now() < deadline,
            "{instance} never became claimable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An `events` row as SQLite returns it.
#[derive(sqlx::FromRow)]
struct SqliteRow {
    session: String,
    seq: i64,
    kind: String,
    format: i32,
    data: String,
    caused_by: Option<i64>,
    instance: Option<String>,
    trigger_name: Option<String>,
    at: String,
}

/// The session's `events` rows, exactly as the SQLite store wrote them.
async fn dump_rows(url: &str, session: &str) -> Vec<StoredRow> {
    let mut conn = SqliteConnection::connect(url).await.unwrap();
    let rows: Vec<SqliteRow> = sqlx::query_as(
        "SELECT session, seq, kind, format, data, caused_by, instance, trigger_name, at \
         FROM events WHERE session = ? ORDER BY seq",
    )
    .bind(session)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|row| {
            let data: Value = serde_json::from_str(&row.data).unwrap();
            assert_eq!(
                serde_json::to_string(&data).unwrap(),
                row.data,
                "event {}: the parsed data must serialise back to the stored bytes",
                row.seq
            );
            StoredRow {
                session: row.session,
                seq: row.seq,
                kind: row.kind,
                format: row.format,
                data,
                caused_by: row.caused_by,
                instance: row.instance,
                trigger_name: row.trigger_name,
                at: row.at,
            }
        })
        .collect()
}
