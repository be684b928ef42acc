//! `purge`: a dry run lists and changes nothing; a purge removes exactly the
//! resolved sessions older than the cut-off (written to a file first when
//! asked), records each in `purges`, and the UID starts again empty. Nothing
//! else can delete an event.

use serde_json::json;

use crate::bin::{app_on, fails, ok};
use crate::common::names::uid;
use crate::common::{Backend, TestDb};
use crate::support::{spawn_app, FAILING, PASSTHRU};

on_both_backends!(a_purge_removes_only_old_resolved_sessions_and_records_them);

async fn version(url: &str, session: &str) -> u64 {
    let store = triggers::store::open(url).await.expect("open the store");
    store.version(&uid(session)).await.expect("a version")
}

async fn a_purge_removes_only_old_resolved_sessions_and_records_them(db: TestDb) {
    let dir = db.dir();
    let app = spawn_app(&db).await;
    // Resolved: finished, and abandoned.
    app.configure("done:1", json!({"t": {"after": ["go"], "run": PASSTHRU}}))
        .await;
    app.fire("done:1", "go", json!({})).await;
    app.configure(
        "done:2",
        json!({"t": {"after": ["go", "later"], "unless": ["stop"], "run": PASSTHRU}}),
    )
    .await;
    app.fire("done:2", "go", json!({})).await;
    app.fire("done:2", "stop", json!({})).await;
    // Not resolved: waiting for a trigger, and failed.
    app.configure(
        "open:1",
        json!({"t": {"after": ["go", "later"], "run": PASSTHRU}}),
    )
    .await;
    app.fire("open:1", "go", json!({})).await;
    app.configure("failed:1", json!({"t": {"after": ["go"], "run": FAILING}}))
        .await;
    app.fire("failed:1", "go", json!({})).await;
    app.settle().await;
    app.wait_resolved("done:1").await;
    app.stop().await;
    let done: Vec<u64> = vec![
        version(&db.url, "done:1").await,
        version(&db.url, "done:2").await,
    ];
    let events = done[0] + done[1];
    let (open, failed) = (
        version(&db.url, "open:1").await,
        version(&db.url, "failed:1").await,
    );
    let url = db.url.as_str();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();

    // A dry run lists, and changes nothing.
    let (out, _) = ok(
        &dir,
        &[
            "purge",
            "--database-url",
            url,
            "--resolved-before",
            &tomorrow,
            "--dry-run",
        ],
    )
    .await;
    assert!(
        out.contains(&format!("would purge done:1  ({} events", done[0]))
            && out.contains("would purge done:2")
            && !out.contains("open:1")
            && !out.contains("failed:1"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "dry run: would purge 2 sessions ({events} events)"
        )) && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(version(url, "done:1").await, done[0]);

    // An older cut-off finds nothing; a bad one is refused.
    let (out, _) = ok(
        &dir,
        &[
            "purge",
            "--database-url",
            url,
            "--resolved-before",
            "2000-01-01",
        ],
    )
    .await;
    assert!(out.contains("purged 0 sessions"), "{out}");
    let (_, stderr) = fails(
        &dir,
        &["purge", "--database-url", url, "--resolved-before", "soon"],
    )
    .await;
    assert!(stderr.contains("--resolved-before \"soon\""), "{stderr}");

    // The purge, written to a file first.
    let file = dir.join("purged.jsonl");
    let (out, _) = ok(
        &dir,
        &[
            "purge",
            "--database-url",
            url,
            "--resolved-before",
            &tomorrow,
            "--export",
            file.to_str().unwrap(),
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(
        out.contains(&format!("exported {events} events of 2 sessions"))
            && out.contains(&format!("purged 2 sessions ({events} events)"))
            && out.contains("by \"alice\""),
        "{out}"
    );
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count() as u64, events);
    assert!(exported.lines().all(|l| l.contains("\"session\":\"done:")));
    assert_eq!(version(url, "done:1").await, 0);
    assert_eq!(version(url, "done:2").await, 0);
    assert_eq!(version(url, "open:1").await, open);
    assert_eq!(version(url, "failed:1").await, failed);

    let store = triggers::store::open(url).await.unwrap();
    let purges = store.admin().purges().await.unwrap();
    let recorded: Vec<(&str, u64, &str)> = purges
        .iter()
        .map(|p| (p.session.as_str(), p.events, p.purged_by.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [("done:1", done[0], "alice"), ("done:2", done[1], "alice")]
    );
    assert!(purges.iter().all(|p| p.last_event_at < p.purged_at));
    drop(store);

    // Nothing else deletes an event.
    let refused = match db.backend {
        Backend::Sqlite => {
            let store = triggers::store::sqlite::SqliteStore::connect(url, &Default::default())
                .await
                .unwrap();
            sqlx::query("DELETE FROM events")
                .execute(store.pool())
                .await
                .map(drop)
        }
        Backend::Postgres => {
            let store = triggers::store::postgres::PostgresStore::connect(url, &Default::default())
                .await
                .unwrap();
            sqlx::query("DELETE FROM events")
                .execute(store.pool())
                .await
                .map(drop)
        }
    };
    let err = refused.expect_err("a plain DELETE is refused").to_string();
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(version(url, "open:1").await, open);

    // A purged UID is an empty session again.
    let app = app_on(url).await;
    let data = app
        .data(
            "query { session(uid: \"done:1\") { version tasks { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["session"], json!({"version": 0, "tasks": []}));
    assert_eq!(
        app.configure("done:1", json!({"t": {"after": ["go"], "run": PASSTHRU}}))
            .await,
        1
    );
    app.stop().await;
}
