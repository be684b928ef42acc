//! Group commit on both backends: decisions of several sessions that wait
//! behind the committer are written in one transaction, and a stale guard or a
//! lost lease inside the group refuses only its own decision.

use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use super::*;
use crate::store::group::Writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_guard_inside_a_sqlite_group_fails_alone_while_the_others_commit() {
    let (_db, store) = sqlite_backend().await;
    let writer = store.writer().clone();
    a_stale_guard_inside_a_group_fails_alone(Arc::new(store), writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_guard_inside_a_postgres_group_fails_alone_while_the_others_commit() {
    let Some((_db, store)) = postgres_backend(
        "a_stale_guard_inside_a_postgres_group_fails_alone_while_the_others_commit",
    )
    .await
    else {
        return;
    };
    let writer = store.writer().clone();
    a_stale_guard_inside_a_group_fails_alone(Arc::new(store), writer).await;
}

/// Holds the committer while five decisions queue behind it, then lets them go
/// as one group: a first commit and a later one that are current, a later one
/// and a first one that are stale, and a current one whose lease is lost.
async fn a_stale_guard_inside_a_group_fails_alone(store: Arc<dyn Store>, writer: Arc<Writer>) {
    let queue = unique("q-group");
    let [fresh, moved, taken, lost, good] = ["fresh", "moved", "taken", "lost", "good"].map(unique);
    for session in [&moved, &taken, &lost, &good] {
        append(&*store, session, 0, &[fired(1, "page", json!({}))])
            .await
            .unwrap();
    }
    append(&*store, &moved, 1, &[fired(2, "page", json!({}))])
        .await
        .unwrap();

    let turn = writer.turn(StdDuration::from_secs(5)).await.unwrap();
    let decisions = [
        (fresh.clone(), 0, None),
        (moved.clone(), 1, None),
        (taken.clone(), 0, None),
        (lost.clone(), 1, Some(unique("token"))),
        (good.clone(), 1, None),
    ];
    let mut answers = Vec::new();
    for (session, expected, claim) in decisions {
        let store = store.clone();
        let queue = queue.clone();
        answers.push(tokio::spawn(async move {
            // A claim of a row that does not exist: its lease cannot hold.
            let ops = claim
                .map(|token| vec![lease("a#0", &token, at(100), at(0), None)])
                .unwrap_or_else(|| vec![enqueue("a#0", &queue, at(0))]);
            let events = [fired(expected + 1, "page", json!({"group": true}))];
            store
                .commit(Commit {
                    session: &session,
                    expected_version: expected,
                    events: &events,
                    instances: vec![instance_row(
                        &session,
                        "a#0",
                        "t",
                        InstanceStatus::Scheduled,
                        1,
                    )],
                    queue: ops,
                })
                .await
        }));
    }
    while writer.waiting() < 5 {
        tokio::task::yield_now().await;
    }
    drop(turn);
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap());
    }

    assert_eq!(
        writer.last_batch.load(Ordering::Relaxed),
        5,
        "one group of five"
    );
    let [fresh_r, moved_r, taken_r, lost_r, good_r] = <[_; 5]>::try_from(results).unwrap();
    fresh_r.unwrap();
    good_r.unwrap();
    assert_conflict(moved_r, &moved, 1);
    assert_conflict(taken_r, &taken, 0);
    assert_lease_lost(lost_r);
    // The committed ones wrote everything, the refused ones nothing.
    for (session, version) in [
        (&fresh, 1),
        (&good, 2),
        (&moved, 2),
        (&taken, 1),
        (&lost, 1),
    ] {
        assert_eq!(
            store.version(&uid(session)).await.unwrap(),
            version,
            "{session}"
        );
        let events = store.events(&uid(session), 0, None).await.unwrap();
        assert_eq!(events.len() as u64, version, "{session}");
        let grouped = events
            .iter()
            .filter(|e| data_text(e).contains("\"group\":true"))
            .count();
        let committed = session == &fresh || session == &good;
        assert_eq!(grouped, usize::from(committed), "{session}");
    }
    let listed = store
        .instances(InstanceQuery {
            task: Some("t"),
            first: 100,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let mut listed: Vec<&str> = listed
        .iter()
        .filter(|row| [&fresh, &moved, &taken, &lost, &good].contains(&&row.session))
        .map(|row| row.session.as_str())
        .collect();
    listed.sort_unstable();
    let mut expected = vec![fresh.as_str(), good.as_str()];
    expected.sort_unstable();
    assert_eq!(listed, expected);
    let claimable = store.claimable(&queue, at(10), 10).await.unwrap();
    let mut queued: Vec<&str> = claimable.iter().map(|e| e.session.as_str()).collect();
    queued.sort_unstable();
    assert_eq!(queued, expected);
}
