//! Racing writers (docs/events.md): many fires at once through one engine, and two
//! engines (two "server processes") on one database. Every fire must be applied
//! exactly once, seqs must stay gap-free, and andEvery must count exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use triggers::domain::{Event, InstanceStatus, SessionState};
use triggers::engine::FireResult;
use triggers::Engine;

use crate::support::*;
use triggers::testkit::names::{self, trigger};

/// Fires `page` with `{"n": n}` for every n, all at once, from spawned tasks.
async fn fire_pages_at_once(
    engine: &Engine,
    session: &str,
    ns: impl IntoIterator<Item = u64>,
) -> Vec<(u64, FireResult)> {
    let handles: Vec<_> = ns
        .into_iter()
        .map(|n| {
            let engine = engine.clone();
            let session = session.to_owned();
            tokio::spawn(async move {
                let result = engine
                    .fire(
                        &names::uid(&session),
                        &trigger("page"),
                        obj(json!({"n": n})),
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("fire page {n} on {session}: {e}"));
                (n, result)
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("a fire task panicked"));
    }
    results
}

/// Asserts that the log holds exactly one `page` fire per expected n, each
/// applied to exactly one instance that finished exactly once.
fn assert_each_fire_applied_once(
    events: &[Event],
    state: &SessionState,
    results: &[(u64, FireResult)],
    expected: &BTreeSet<u64>,
) {
    assert_gap_free(events);
    // One TriggerFired per fire, with the kwargs of that fire, at the seq it reported.
    let pages = fired(events, "page");
    let fired_ns: Vec<u64> = pages
        .iter()
        .map(|e| e.payload.to_data()["kwargs"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(fired_ns.len(), expected.len(), "one TriggerFired per fire");
    assert_eq!(fired_ns.iter().copied().collect::<BTreeSet<_>>(), *expected);
    for (n, result) in results {
        assert!(!result.duplicate);
        let e = event(events, result.seq);
        assert_eq!(e.payload.trigger(), Some("page"));
        assert_eq!(
            e.payload.to_data()["kwargs"]["n"],
            json!(n),
            "fire {n} reported seq {}",
            result.seq
        );
        assert_eq!(
            result.scheduled.len(),
            1,
            "fire {n} scheduled {:?}",
            result.scheduled
        );
    }
    let scheduled: BTreeSet<&String> = results.iter().flat_map(|(_, r)| &r.scheduled).collect();
    assert_eq!(
        scheduled.len(),
        results.len(),
        "each fire scheduled its own instance"
    );
    // Exactly one instance per fire, holding that fire's kwargs, finished once.
    let instances = state.instances();
    assert_eq!(instances.len(), expected.len());
    let mut held = BTreeMap::new();
    for inst in instances {
        assert_eq!(inst.status, InstanceStatus::Finished, "{}", inst.name);
        let n = inst.kwargs["page"]["n"].as_u64().unwrap();
        assert!(
            held.insert(n, inst.name.clone()).is_none(),
            "two instances hold page {n}"
        );
        assert_eq!(
            about(events, "InstanceFinished", &inst.name).len(),
            1,
            "{} finished once",
            inst.name
        );
    }
    assert_eq!(held.keys().copied().collect::<BTreeSet<_>>(), *expected);
    let names: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
    let numbered: BTreeSet<String> = (0..expected.len()).map(|i| format!("t#{i}")).collect();
    assert_eq!(names, numbered, "instance numbers are gap-free too");
}

fn and_every_page() -> Value {
    json!({"t": {"after": [], "andEvery": "page", "run": DEVNULL}})
}

async fn fifty_concurrent_fires_on_one_session_make_fifty_instances(db: TestDb) {
    // Given an andEvery task.
    let engine = db.engine().await;
    configure(&engine, S, and_every_page()).await;

    // When 50 fires race on the session.
    let results = fire_pages_at_once(&engine, S, 0..50).await;
    settle(&engine).await;

    // Then every fire made exactly one instance, and all ran.
    let st = state(&engine, S).await;
    let events = events(&engine, S).await;
    assert_each_fire_applied_once(&events, &st, &results, &(0..50).collect());
    assert!(SessionState::fold(S, &events).unwrap() == *st);
}

async fn concurrent_fires_on_many_sessions_do_not_interfere(db: TestDb) {
    let engine = db.engine().await;
    let sessions: Vec<String> = (0..8).map(|i| format!("s:{i}")).collect();
    for uid in &sessions {
        configure(&engine, uid, and_every_page()).await;
    }

    let handles: Vec<_> = sessions
        .iter()
        .map(|uid| {
            let engine = engine.clone();
            let uid = uid.clone();
            tokio::spawn(async move { fire_pages_at_once(&engine, &uid, 0..10).await })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.push(handle.await.unwrap());
    }
    settle(&engine).await;

    for (uid, results) in sessions.iter().zip(&all) {
        let st = state(&engine, uid).await;
        let events = events(&engine, uid).await;
        assert_each_fire_applied_once(&events, &st, results, &(0..10).collect());
    }
}

async fn two_engines_on_one_database_apply_every_fire_exactly_once(db: TestDb) {
    // Given two engines (two server processes) on one database, and three sessions.
    let first = db.engine().await;
    let second = db.engine().await;
    let sessions = ["s:1", "s:2", "s:3"];
    for uid in sessions {
        configure(&first, uid, and_every_page()).await;
    }

    // When both fire on every session at once (each warms its own cache first, so
    // that they decide on stale state and must detect the conflict).
    for uid in sessions {
        state(&first, uid).await;
        state(&second, uid).await;
    }
    let mut handles = Vec::new();
    for uid in sessions {
        for (engine, ns) in [(&first, 0..20u64), (&second, 20..40u64)] {
            let engine = engine.clone();
            handles.push(tokio::spawn(async move {
                (uid, fire_pages_at_once(&engine, uid, ns).await)
            }));
        }
    }
    let mut results: BTreeMap<&str, Vec<(u64, FireResult)>> = BTreeMap::new();
    for handle in handles {
        let (uid, r) = handle.await.unwrap();
        results.entry(uid).or_default().extend(r);
    }
    settle(&first).await;
    settle(&second).await;

    // Then, seen from either engine, every fire was applied exactly once.
    for uid in sessions {
        let st = wait_for(&first, uid, "every page instance to finish", |st| {
            st.instances().len() == 40
                && st
                    .instances()
                    .iter()
                    .all(|i| i.status == InstanceStatus::Finished)
        })
        .await;
        let events = events(&first, uid).await;
        assert_each_fire_applied_once(&events, &st, &results[uid], &(0..40).collect());
        let from_second = state(&second, uid).await;
        assert!(
            *from_second == *st,
            "both engines see the same state of {uid}"
        );
        assert!(SessionState::fold(uid, &events).unwrap() == *st);
    }
}

async fn two_engines_taking_turns_on_a_session_each_see_the_others_writes(db: TestDb) {
    // Given two engines that both cached the session.
    let first = db.engine().await;
    let second = db.engine().await;
    configure(
        &first,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}, "t_each": {"after": [], "andEvery": "page", "run": DEVNULL}}),
    )
    .await;
    state(&second, S).await;

    // When they take turns, each on a stale cache.
    fire_and_settle(&first, S, "a", json!({"from": "first"})).await;
    let b = fire_and_settle(&second, S, "b", json!({"from": "second"})).await;
    fire_and_settle(&first, S, "page", json!({})).await;

    // Then the second engine completed the instance the first created.
    assert_eq!(b.scheduled, ["t#0"]);
    let st = state(&first, S).await;
    assert_eq!(
        result(instance(&st, "t#0")),
        passthru(json!({"a": {"from": "first"}, "b": {"from": "second"}}))
    );
    assert_eq!(names_of(&st, "t_each"), ["t_each#0"]);
    assert!(*state(&second, S).await == *st);
    assert_gap_free(&events(&second, S).await);
}

async fn two_engines_racing_on_one_idempotency_key_apply_it_once(db: TestDb) {
    // Given two engines with the session cached.
    let first = db.engine().await;
    let second = db.engine().await;
    configure(&first, S, and_every_page()).await;
    state(&first, S).await;
    state(&second, S).await;

    // When both fire with the same key, many times at once.
    let handles: Vec<_> = (0..10u64)
        .map(|n| {
            let engine = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move {
                engine
                    .fire(
                        &names::uid(S),
                        &trigger("page"),
                        obj(json!({"n": n})),
                        Some("upload-7"),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    settle(&first).await;
    settle(&second).await;

    // Then exactly one was applied and every answer names it.
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    let seqs: BTreeSet<u64> = results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 1, "every answer names the same fire: {seqs:?}");
    assert!(results.iter().all(|r| r.scheduled == ["t#0"]));
    let events = events(&first, S).await;
    assert_gap_free(&events);
    assert_eq!(fired(&events, "page").len(), 1);
    assert_eq!(names_of(&*state(&second, S).await, "t"), ["t#0"]);
}

async fn a_reader_never_sees_an_outcome_without_what_it_caused(db: TestDb) {
    // Given a chain of cascades and self-retries written by one engine, and a
    // second engine reading the session from the database the whole time.
    let writer = db.engine().await;
    let reader = db.engine().await;
    configure(
        &writer,
        S,
        json!({
            "t0": {"after": [], "andEvery": "page", "run": PASSTHRU},
            "t1": {"after": [], "andEvery": "t0", "run": PASSTHRU},
            "t_retry": {"after": [], "andEvery": "page", "run": SELF_RETRYING, "maxRetries": 2},
        }),
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut observed = 0usize;
            let mut round = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                round += 1;
                if round % 7 == 0 {
                    reader.clear_cache();
                }
                let st = reader.session(&names::uid(S)).await.unwrap();
                check_one_decision_one_commit(&st);
                observed += 1;
                if finished {
                    return observed;
                }
                tokio::task::yield_now().await;
            }
        })
    };

    // When pages arrive.
    for n in 0..15 {
        fire(&writer, S, "page", json!({"n": n})).await;
    }
    settle(&writer).await;
    done.store(true, Ordering::SeqCst);

    // Then every state it read had each outcome together with its consequences.
    let observed = watcher
        .await
        .expect("the reader found a half-applied decision");
    assert!(observed > 1);
    let st = state(&writer, S).await;
    assert_eq!(names_of(&st, "t1").len(), 15);
    check_one_decision_one_commit(&st);
}

/// One decision, one commit: a finished instance is never seen without its cascade, a
/// self-retry's failure never without its replay, a complete instance never
/// unscheduled.
fn check_one_decision_one_commit(st: &SessionState) {
    for inst in st.instances() {
        let task = st.task(&inst.task).unwrap();
        match inst.status {
            InstanceStatus::Finished => {
                let cascade = st.latest_fires().get(&inst.task).map(|f| f.seq);
                assert!(
                    cascade.is_some_and(|seq| seq > inst.last_seq),
                    "v{}: {} finished at {} but its cascade is not applied ({cascade:?})",
                    st.version(),
                    inst.name,
                    inst.last_seq
                );
            }
            InstanceStatus::Failed => assert!(
                !inst.metadata.contains_key("cooldown"),
                "v{}: {} asked to retry but its replay is not applied",
                st.version(),
                inst.name
            ),
            InstanceStatus::Unstarted => assert!(
                !inst.can_run(task) && !inst.can_abandon(task),
                "v{}: {} is complete but was not scheduled or abandoned",
                st.version(),
                inst.name
            ),
            _ => {}
        }
    }
}

async fn a_second_engine_can_replay_an_instance_the_first_created(db: TestDb) {
    // Given a second engine that read the session before the instance existed.
    let first = db.engine().await;
    let second = db.engine().await;
    configure(&first, S, json!({"t": {"after": ["a"], "run": FAILING}})).await;
    state(&second, S).await;
    fire_and_settle(&first, S, "a", json!({})).await;

    // When an operator's replay reaches the second engine.
    let clone = second
        .replay_failed_instance(&names::uid(S), &names::instance("t#0"), None)
        .await;

    // Then it acts on the instance as it is in the database.
    let clone = clone.expect("replay through the second engine");
    assert_eq!(clone.name, "t#1");
    settle(&second).await;
    assert_eq!(
        status(&*state(&first, S).await, "t#0"),
        InstanceStatus::Replayed
    );
}

async fn a_second_engine_acts_on_the_current_status_not_a_cached_one(db: TestDb) {
    // Given a second engine that read the instance while it was unstarted.
    let first = db.engine().await;
    let second = db.engine().await;
    configure(
        &first,
        S,
        json!({"t": {"after": ["a", "b"], "run": FAILING}}),
    )
    .await;
    fire(&first, S, "a", json!({})).await;
    assert_eq!(
        status(&*state(&second, S).await, "t#0"),
        InstanceStatus::Unstarted
    );
    fire_and_settle(&first, S, "b", json!({})).await;

    // When an operator's skip of the now failed instance reaches the second engine.
    let skipped = second
        .skip_failed_instance(&names::uid(S), &names::instance("t#0"), false, None)
        .await;

    // Then it is skipped, not refused on stale state.
    let skipped = skipped.expect("skip through the second engine");
    assert_eq!(skipped.status, InstanceStatus::Skipped);
    assert_gap_free(&events(&first, S).await);
}

on_both_backends!(
    fifty_concurrent_fires_on_one_session_make_fifty_instances,
    concurrent_fires_on_many_sessions_do_not_interfere,
    two_engines_on_one_database_apply_every_fire_exactly_once,
    two_engines_taking_turns_on_a_session_each_see_the_others_writes,
    two_engines_racing_on_one_idempotency_key_apply_it_once,
    a_reader_never_sees_an_outcome_without_what_it_caused,
    a_second_engine_can_replay_an_instance_the_first_created,
    a_second_engine_acts_on_the_current_status_not_a_cached_one,
);
