//! Upgrades: a log written by an older build keeps loading (SPEC section 8, STYLE
//! "events are facts": upcast on read, never rewrite rows).
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

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Connection, SqliteConnection};
use triggers::domain::event::PAYLOAD_FORMAT;
use triggers::domain::state::timestamp;
use triggers::domain::SessionState;
use triggers::engine::{Claim, EngineOptions};
use triggers::Engine;

use crate::support::{
    configure, obj, settle, test_options, TestDb, DEVNULL, PASSTHRU, PATIENCE, SELF_SKIPPING,
};

/// The session of the fixture.
const FIXTURE_SESSION: &str = "questionnaire:42";

/// The idempotency keys the fixture's fires used (the state answers repeats of them).
const IDEMPOTENCY_KEYS: &[&str] = &["respondent-42/firstPage"];

/// One row of the `events` table, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredRow {
    pub(crate) session: String,
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) format: i32,
    /// The `data` column, parsed for readability; serialising it compactly gives
    /// back the stored text byte for byte (checked when the fixture was written).
    pub(crate) data: Value,
    pub(crate) caused_by: Option<i64>,
    /// The instance the event is about (copied out of `data` for lookups).
    pub(crate) instance: Option<String>,
    /// The trigger the event is about (copied out of `data` for lookups).
    pub(crate) trigger_name: Option<String>,
    /// The `at` column as SQLite stores it: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub(crate) at: String,
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
pub(crate) fn state_view(state: &SessionState) -> Value {
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

    let state = engine.session(FIXTURE_SESSION).await.unwrap();
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
    engine
        .fire(
            s,
            "firstPageReceived",
            obj(subject),
            Some(IDEMPOTENCY_KEYS[0]),
        )
        .await
        .unwrap();
    settle(engine).await;
    engine
        .fire(
            s,
            "pageReceived",
            obj(json!({"page": 1, "responses": [1, 2]})),
            None,
        )
        .await
        .unwrap();
    settle(engine).await;
    // Scores (inline, cascading to the worker tasks) and abandons the reminder.
    engine
        .fire(s, "questionnaireComplete", obj(json!({"at": "noon"})), None)
        .await
        .unwrap();
    settle(engine).await;

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
            "SMTP timeout".into(),
            Some("smtplib.SMTPException".into()),
            Some(json!({"server": "smtp.example.org"})),
            None,
            true,
            Some(0.5),
            None,
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
            "disk full".into(),
            Some("OSError".into()),
            Some(json!({"path": "/archive"})),
            None,
            false,
            None,
            None,
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
        .mark_instance_logs_resolved(s, "t_archive#0")
        .await
        .unwrap();
    engine
        .replay_failed_instance(
            s,
            "t_archive#0",
            Some(json!({"t_exportResults": {"url": "s3://cold/42.parquet"}})),
        )
        .await
        .unwrap();
    engine
        .update_instance_metadata(s, "t_scoreResponses#0", json!({"review": {"by": "dr.who"}}))
        .await
        .unwrap();
    engine
        .update_instance_status(
            s,
            "t_checkBrowser#0",
            triggers::domain::InstanceStatus::Finished,
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
