//! `export`, `import` and `copy`: the log leaves a database and comes back the
//! same, byte for byte, on each backend and from SQLite to PostgreSQL; a
//! repeated or resumed import appends only what is missing; a session whose
//! stored events differ is refused, and a bad line writes nothing of its
//! session.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use triggers::testkit::names::uid;
use triggers::testkit::{spawn_app, TestDb};

use crate::bin::{
    another, app_on, everything, fails, ok, other_postgres, version, workload, SESSIONS,
};

on_both_backends!(
    an_export_imported_elsewhere_and_rebuilt_reads_back_the_same_byte_for_byte,
    a_differing_session_is_refused_and_a_bad_line_writes_nothing_of_its_session,
    events_of_an_older_payload_format_travel_as_they_were_written,
    an_append_on_a_session_that_moved_conflicts_and_writes_nothing,
);

/// Exports `url` to `file`; the stderr summary.
async fn export(dir: &Path, url: &str, file: &Path) -> String {
    let (_, stderr) = ok(
        dir,
        &[
            "export",
            "--database-url",
            url,
            "--output",
            file.to_str().unwrap(),
        ],
    )
    .await;
    stderr
}

/// Imports `file` into `url`; the stdout summary.
async fn import(dir: &Path, url: &str, file: &Path) -> String {
    ok(
        dir,
        &["import", "--database-url", url, file.to_str().unwrap()],
    )
    .await
    .0
}

async fn an_export_imported_elsewhere_and_rebuilt_reads_back_the_same_byte_for_byte(db: TestDb) {
    let dir = db.dir();
    let app = spawn_app(&db).await;
    workload(&app).await;
    let before = everything(&app).await;
    app.stop().await;
    let events: u64 = before
        .iter()
        .map(|s| s["session"]["version"].as_u64().unwrap())
        .sum();

    let original = dir.join("original.jsonl");
    let summary = export(&dir, &db.url, &original).await;
    assert!(
        summary.contains(&format!("exported {events} events of 3 sessions")),
        "{summary}"
    );
    let text = std::fs::read_to_string(&original).unwrap();
    assert_eq!(text.lines().count() as u64, events);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["session", "seq", "kind", "at", "data", "causedBy", "format"]
    );
    assert_eq!(first["session"], "applicant:7", "sessions in UID order");

    let other = another(&db, "imported").await;
    let summary = import(&dir, &other.url, &original).await;
    assert!(
        summary.contains(&format!("imported {events} events into 3 sessions")),
        "{summary}"
    );
    ok(&dir, &["rebuild", "--database-url", &other.url]).await;
    let copy = app_on(&other.url).await;
    assert_eq!(everything(&copy).await, before);
    copy.stop().await;
    let again = dir.join("again.jsonl");
    export(&dir, &other.url, &again).await;
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&original).unwrap()
    );

    // Importing again appends nothing; from standard input too.
    let summary = import(&dir, &other.url, &original).await;
    assert!(
        summary.contains("imported 0 events into 0 sessions")
            && summary.contains("3 already there"),
        "{summary}"
    );
    let output = crate::bin::command(&dir)
        .args(["import", "--database-url", &other.url, "-"])
        .stdin(std::fs::File::open(&original).unwrap())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("3 already there"),
        "{stdout}"
    );

    // Chosen sessions only; an unknown one is named and nothing is written.
    let one = dir.join("one.jsonl");
    ok(
        &dir,
        &[
            "export",
            "--database-url",
            &db.url,
            "--session",
            SESSIONS[1],
            "--output",
            one.to_str().unwrap(),
        ],
    )
    .await;
    let lines = std::fs::read_to_string(&one).unwrap();
    assert!(!lines.is_empty());
    assert!(lines
        .lines()
        .all(|l| l.starts_with(&format!("{{\"session\":\"{}\"", SESSIONS[1]))));
    let (_, stderr) = fails(
        &dir,
        &[
            "export",
            "--database-url",
            &db.url,
            "--session",
            "nobody",
            "--session",
            SESSIONS[0],
        ],
    )
    .await;
    assert!(stderr.contains("no session \"nobody\""), "{stderr}");
    other.drop().await;
}

async fn a_differing_session_is_refused_and_a_bad_line_writes_nothing_of_its_session(db: TestDb) {
    let dir = db.dir();
    let app = spawn_app(&db).await;
    workload(&app).await;
    app.stop().await;
    let file = dir.join("log.jsonl");
    export(&dir, &db.url, &file).await;
    let original: Vec<u64> = {
        let mut versions = Vec::new();
        for session in SESSIONS {
            versions.push(version(&db.url, session).await);
        }
        versions
    };

    // The target already has a session of the same UID with other events.
    let other = another(&db, "differing").await;
    let app = app_on(&other.url).await;
    app.configure(
        SESSIONS[1],
        json!({"t_other": {"after": ["x"], "run": "app.other"}}),
    )
    .await;
    app.stop().await;
    let (stdout, stderr) = fails(
        &dir,
        &[
            "import",
            "--database-url",
            &other.url,
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stdout.contains("into 2 sessions") && stdout.contains("1 refused"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 session refused")
            && stderr.contains(&format!("{:?} (event 1 at line", SESSIONS[1])),
        "{stderr}"
    );
    assert_eq!(version(&other.url, SESSIONS[0]).await, original[0]);
    assert_eq!(
        version(&other.url, SESSIONS[1]).await,
        1,
        "the refused session is untouched"
    );
    other.drop().await;

    // A bad line in the middle of a session: the sessions before it are
    // imported, nothing of its own.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first_q1 = lines
        .iter()
        .position(|l| l.contains("\"session\":\"questionnaire:1\""))
        .unwrap();
    let bad_at = first_q1 + 2;
    let mut broken: Vec<String> = lines[..bad_at].iter().map(|l| (*l).to_owned()).collect();
    broken.push(lines[bad_at].replacen("\"kind\":\"", "\"kind\":\"Un", 1));
    broken.extend(lines[bad_at + 1..].iter().map(|l| (*l).to_owned()));
    let broken_file = dir.join("broken.jsonl");
    std::fs::write(&broken_file, broken.join("\n") + "\n").unwrap();
    let other = another(&db, "broken").await;
    let (_, stderr) = fails(
        &dir,
        &[
            "import",
            "--database-url",
            &other.url,
            broken_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stderr.contains(&format!("line {}:", bad_at + 1))
            && stderr.contains("nothing of session \"questionnaire:1\" was written")
            && stderr.contains("1 session before it were imported"),
        "{stderr}"
    );
    assert_eq!(version(&other.url, "applicant:7").await, original[2]);
    assert_eq!(version(&other.url, "questionnaire:1").await, 0);
    assert_eq!(version(&other.url, "questionnaire:2").await, 0);

    // Fixed, the same import resumes where it stopped.
    let summary = import(&dir, &other.url, &file).await;
    assert!(
        summary.contains("into 2 sessions") && summary.contains("1 already there"),
        "{summary}"
    );
    assert_eq!(version(&other.url, "questionnaire:2").await, original[1]);
    other.drop().await;
}

/// The frozen log of payload format 1 (what an older build wrote), as lines.
fn format_1_lines() -> (String, usize) {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../fixtures/events-format-1.json")).unwrap();
    let mut text = String::new();
    for row in &rows {
        let line = json!({
            "session": row["session"], "seq": row["seq"], "kind": row["kind"], "at": row["at"],
            "data": row["data"], "causedBy": row["caused_by"], "format": row["format"],
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    (text, rows.len())
}

async fn events_of_an_older_payload_format_travel_as_they_were_written(db: TestDb) {
    let dir = db.dir();
    let (text, events) = format_1_lines();
    assert!(text.contains("\"format\":1"));
    let file = dir.join("format-1.jsonl");
    std::fs::write(&file, &text).unwrap();
    let summary = import(&dir, &db.url, &file).await;
    assert!(
        summary.contains(&format!("imported {events} events into 1 session")),
        "{summary}"
    );
    let exported = dir.join("exported.jsonl");
    export(&dir, &db.url, &exported).await;
    assert_eq!(std::fs::read_to_string(&exported).unwrap(), text);
    // Folded (upcast) as any stored old event is.
    let app = spawn_app(&db).await;
    assert_eq!(app.version("questionnaire:42").await, events as u64);
    app.stop().await;
}

async fn an_append_on_a_session_that_moved_conflicts_and_writes_nothing(db: TestDb) {
    use triggers::store::{Append, StoreError};
    let (text, _) = format_1_lines();
    let events: Vec<_> = text
        .lines()
        .take(3)
        .map(|l| triggers::ops::lines::parse_line(l).unwrap().row)
        .collect();
    let store = triggers::store::open(&db.url).await.unwrap();
    let admin = store.admin();
    let append = |expected: u64, from: usize| Append {
        session: "questionnaire:42".into(),
        expected_version: expected,
        events: events[from..].to_vec(),
    };
    admin.append(&[append(0, 0)]).await.unwrap();
    assert_eq!(store.version(&uid("questionnaire:42")).await.unwrap(), 3);
    // As if another writer had got there first, for a first and a later append.
    for stale in [append(0, 0), append(1, 1)] {
        let err = admin.append(&[stale]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    }
    assert_eq!(store.version(&uid("questionnaire:42")).await.unwrap(), 3);
    assert_eq!(
        store
            .events(&uid("questionnaire:42"), 0, None)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// From SQLite to PostgreSQL after a copy that stopped part way (the events
/// of whole sessions and the first events of another already there), and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
async fn a_sqlite_log_copied_to_postgres_after_an_interrupted_copy_reads_back_the_same() {
    let Ok(base) = std::env::var(triggers::testkit::POSTGRES_ENV) else {
        triggers::testkit::skipped("a_sqlite_log_copied_to_postgres");
        return;
    };
    triggers::testkit::run_sqlite(Duration::from_secs(120), |db| async move {
        let dir = db.dir();
        let app = spawn_app(&db).await;
        workload(&app).await;
        let before = everything(&app).await;
        app.stop().await;
        let original = dir.join("original.jsonl");
        export(&dir, &db.url, &original).await;
        let text = std::fs::read_to_string(&original).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        // What a copy stopped half way leaves behind.
        let half = lines.len() / 2;
        let partial = dir.join("partial.jsonl");
        std::fs::write(&partial, lines[..half].join("\n") + "\n").unwrap();
        let pg = other_postgres(&base).await;
        import(&dir, &pg.url, &partial).await;

        let (stdout, _) = ok(&dir, &["copy", "--from", &db.url, "--to", &pg.url]).await;
        assert!(
            stdout.contains(&format!("copied {} events", lines.len() - half)),
            "{stdout}"
        );
        let app = app_on(&pg.url).await;
        assert_eq!(everything(&app).await, before);
        app.stop().await;
        let from_pg = dir.join("from_pg.jsonl");
        export(&dir, &pg.url, &from_pg).await;
        assert_eq!(std::fs::read_to_string(&from_pg).unwrap(), text);

        let (stdout, _) = ok(&dir, &["copy", "--from", &db.url, "--to", &pg.url]).await;
        assert!(
            stdout.contains("copied 0 events into 0 sessions"),
            "{stdout}"
        );

        // And back, into a new SQLite file.
        let back = format!("sqlite://{}", dir.join("back.db").display());
        ok(&dir, &["copy", "--from", &pg.url, "--to", &back]).await;
        let from_back = dir.join("from_back.jsonl");
        export(&dir, &back, &from_back).await;
        assert_eq!(std::fs::read_to_string(&from_back).unwrap(), text);
        pg.drop().await;
    })
    .await;
}

#[tokio::test]
async fn copy_and_import_refuse_what_is_not_there_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("missing.db").display());
    let (_, stderr) = fails(dir.path(), &["copy", "--from", &url, "--to", &url]).await;
    assert!(stderr.contains("the same database"), "{stderr}");
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let (_, stderr) = fails(dir.path(), &["copy", "--from", &url, "--to", &to]).await;
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(!dir.path().join("missing.db").exists());
    let (_, stderr) = fails(
        dir.path(),
        &["import", "--database-url", &to, "no-such.jsonl"],
    )
    .await;
    assert!(stderr.contains("cannot open no-such.jsonl"), "{stderr}");
    assert!(!dir.path().join("to.db").exists());
}
