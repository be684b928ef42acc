//! Checks of one backend each: URLs, in-memory databases, corrupt rows, guards taken behind the store's back.

use super::*;

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
        tokio::spawn(async move { store.version(&uid(&session)).await.unwrap() })
    });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap(), 1);
    }
    // Two stores opened on `sqlite::memory:` are two databases.
    let other = open("sqlite::memory:").await.unwrap();
    assert_eq!(other.version(&uid(&session)).await.unwrap(), 0);
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
    assert_eq!(again.version(&uid("s")).await.unwrap(), 1);
}

#[tokio::test]
async fn a_corrupt_sqlite_event_row_is_reported_with_its_session_and_seq() {
    let (_db, store) = sqlite_backend().await;
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ('s', 1, 'NoSuchKind', 1, '{}', '2024-01-01T00:00:00.000000Z')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_corrupt(store.events(&uid("s"), 0, None).await, "\"s\"", "event 1");
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
    let Some((_db, store)) =
        postgres_backend("a_corrupt_postgres_event_row_is_reported_with_its_session_and_seq").await
    else {
        return;
    };
    let session = unique("corrupt");
    sqlx::query(
        "INSERT INTO events (session, seq, kind, format, data, at) \
         VALUES ($1, 1, 'TriggerFired', 1, '{\"trigger\": 5}', now())",
    )
    .bind(&session)
    .execute(store.pool())
    .await
    .unwrap();
    assert_corrupt(
        store.events(&uid(&session), 0, None).await,
        &session,
        "event 1",
    );
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
    let (_db, store) = sqlite_backend().await;
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
    assert_eq!(store.version(&uid("s")).await.unwrap(), 1);
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
async fn a_seq_taken_behind_the_postgres_guards_back_is_still_a_conflict() {
    let Some((_db, store)) =
        postgres_backend("a_seq_taken_behind_the_postgres_guards_back_is_still_a_conflict").await
    else {
        return;
    };
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
    assert_eq!(store.version(&uid(&session)).await.unwrap(), 1);
}
