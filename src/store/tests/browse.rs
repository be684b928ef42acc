//! The browsing reads of the conformance suite: recent sessions, instance
//! counts, and filtered pages of a session's events.

use std::sync::Arc;

use serde_json::json;

use super::{append, fired, instance_row, two_pages, uid, unique};
use crate::domain::InstanceStatus;
use crate::store::{Commit, EventQuery, EventWindow, RecentSessions, SessionSummary, Store};

fn uids(page: &[SessionSummary]) -> Vec<&str> {
    page.iter().map(|s| s.uid.as_str()).collect()
}

pub(super) async fn recent_sessions_come_newest_first_by_prefix_in_pages(store: Arc<dyn Store>) {
    let prefix = unique("recent");
    let uid = |s: &str| format!("{prefix}/{s}");
    // (uid, version): each session's last event is at `at(version)`.
    let sessions = [("a", 3), ("b", 1), ("c", 5), ("d", 2), ("e", 5), ("é", 4)];
    for (name, version) in sessions {
        let events: Vec<_> = (1..=version).map(|s| fired(s, "page", json!({}))).collect();
        append(&*store, &uid(name), 0, &events).await.unwrap();
    }
    // Starts with the prefix without its `/`: not listed under `prefix/`.
    append(
        &*store,
        &format!("{prefix}~"),
        0,
        &[fired(1, "page", json!({}))],
    )
    .await
    .unwrap();
    let under = format!("{prefix}/");
    let page = |first, after| RecentSessions {
        prefix: Some(under.as_str()),
        after,
        first,
    };

    // Ties on the time come by UID, descending.
    let expected = [uid("e"), uid("c"), uid("é"), uid("a"), uid("d"), uid("b")];
    let all = store.recent_sessions(page(100, None)).await.unwrap();
    assert_eq!(
        uids(&all),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!((all[0].version, all[0].updated_at), (5, super::at(5)));

    let mut paged = Vec::new();
    let mut after: Option<SessionSummary> = None;
    loop {
        let query = RecentSessions {
            prefix: Some(under.as_str()),
            after: after.as_ref().map(|s| (s.updated_at, s.uid.as_str())),
            first: 4,
        };
        let rows = store.recent_sessions(query).await.unwrap();
        if rows.is_empty() {
            break;
        }
        after = rows.last().cloned();
        paged.extend(rows);
    }
    assert_eq!(paged, all);

    let accented = format!("{prefix}/é");
    let only = RecentSessions {
        prefix: Some(accented.as_str()),
        after: None,
        first: 10,
    };
    assert_eq!(
        uids(&store.recent_sessions(only).await.unwrap()),
        [accented.as_str()]
    );
    let nobody = format!("{prefix}/z");
    let none = RecentSessions {
        prefix: Some(nobody.as_str()),
        after: None,
        first: 10,
    };
    assert!(store.recent_sessions(none).await.unwrap().is_empty());

    // Without a prefix, every session is listed, in the same order.
    let everyone = store
        .recent_sessions(RecentSessions {
            first: 1000,
            ..RecentSessions::default()
        })
        .await
        .unwrap();
    let ours: Vec<&str> = uids(&everyone)
        .into_iter()
        .filter(|u| u.starts_with(&under))
        .collect();
    assert_eq!(ours, uids(&all));
    assert!(everyone
        .windows(2)
        .all(|w| (w[0].updated_at, &w[0].uid) > (w[1].updated_at, &w[1].uid)));
}

pub(super) async fn instances_are_counted_by_status_per_session(store: Arc<dyn Store>) {
    use InstanceStatus::*;
    let prefix = unique("counts");
    let (one, two, empty) = (
        format!("{prefix}/1"),
        format!("{prefix}/2"),
        format!("{prefix}/3"),
    );
    let rows = [
        (
            &one,
            vec![
                ("t#0", Failed),
                ("t#1", Finished),
                ("t#2", Finished),
                ("u#0", Unstarted),
            ],
        ),
        (&two, vec![("t#0", Running)]),
    ];
    for (session, instances) in rows {
        let instances = instances
            .into_iter()
            .enumerate()
            .map(|(i, (name, status))| instance_row(session, name, "t", status, i as u64 + 1))
            .collect();
        store
            .commit(Commit {
                session,
                expected_version: 0,
                events: &[fired(1, "page", json!({}))],
                instances,
                queue: Vec::new(),
            })
            .await
            .unwrap();
    }
    let counts = store
        .instance_counts(&[two.clone(), empty.clone(), one.clone()])
        .await
        .unwrap();
    assert_eq!(
        counts,
        [
            vec![(Running, 1)],
            vec![],
            vec![(Unstarted, 1), (Finished, 2), (Failed, 1)],
        ]
    );
    assert!(store.instance_counts(&[]).await.unwrap().is_empty());
}

pub(super) async fn session_events_are_filtered_by_kind_and_instance_and_paged_both_ways(
    store: Arc<dyn Store>,
) {
    let session = unique("browse");
    let events = two_pages(7);
    append(&*store, &session, 0, &events).await.unwrap();
    let kinds = |names: &[&str]| names.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let read = |kinds: Vec<String>, instance: Option<&'static str>, window, up_to, limit| {
        let store = store.clone();
        let session = session.clone();
        async move {
            let query = EventQuery {
                kinds: &kinds,
                instance,
                window,
                up_to,
                limit,
            };
            store.session_events(&uid(&session), &query).await.unwrap()
        }
    };
    let seqs = |events: Vec<crate::domain::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();

    // No filter: the same pages as `events`.
    assert_eq!(
        read(vec![], None, EventWindow::After(0), 7, 100).await,
        events
    );
    assert_eq!(
        seqs(read(vec![], None, EventWindow::After(2), 7, 3).await),
        [3, 4, 5]
    );
    // Backwards: the last ones before a seq, still ascending.
    assert_eq!(
        seqs(read(vec![], None, EventWindow::Before(8), 7, 3).await),
        [5, 6, 7]
    );
    assert_eq!(
        seqs(read(vec![], None, EventWindow::Before(3), 7, 3).await),
        [1, 2]
    );
    // A view as of a version stops there, both ways.
    assert_eq!(
        seqs(read(vec![], None, EventWindow::After(0), 4, 100).await),
        [1, 2, 3, 4]
    );
    assert_eq!(
        seqs(read(vec![], None, EventWindow::Before(99), 4, 2).await),
        [3, 4]
    );

    let applied_kind = kinds(&["TriggerApplied"]);
    assert_eq!(
        seqs(read(applied_kind.clone(), None, EventWindow::After(0), 7, 100).await),
        [3, 6, 7]
    );
    assert_eq!(
        seqs(read(applied_kind.clone(), None, EventWindow::Before(7), 7, 1).await),
        [6]
    );
    assert_eq!(
        seqs(
            read(
                kinds(&["TriggerFired", "InstanceCreated"]),
                None,
                EventWindow::After(1),
                7,
                100
            )
            .await
        ),
        [2, 4, 5]
    );
    assert_eq!(
        seqs(read(vec![], Some("a#0"), EventWindow::After(0), 7, 100).await),
        [2, 3, 6]
    );
    assert_eq!(
        seqs(
            read(
                applied_kind.clone(),
                Some("b#0"),
                EventWindow::After(0),
                7,
                100
            )
            .await
        ),
        [7]
    );
    assert_eq!(
        seqs(read(applied_kind, Some("b#0"), EventWindow::After(0), 6, 100).await),
        Vec::<u64>::new()
    );
    assert!(read(
        kinds(&["InstanceFinished"]),
        None,
        EventWindow::After(0),
        7,
        100
    )
    .await
    .is_empty());
    assert!(read(vec![], None, EventWindow::After(0), 7, 0)
        .await
        .is_empty());
}
