//! Properties over random sessions: 2-4 tasks over a 4-trigger alphabet (plus
//! the names of earlier tasks, for cascades) with random `after`, `unless`,
//! `andEvery` and handlers, driven by random fires, replays and skips. Whatever
//! happened, the log must explain the state: folding it, reloading without the
//! cache, and `rebuild` all give the live state back; seqs are gap-free; every
//! derived event points at an earlier cause; no inline work is left behind.
//!
//! SQLite runs 24 cases. PostgreSQL runs 8 (each case needs a schema and its
//! migrations, which is most of its cost) when `TRIGGERS_TEST_POSTGRES_URL` is set.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use triggers::domain::{InstanceStatus, SessionState};
use triggers::Engine;

use crate::support::*;
use triggers::testkit::names::{self, uid};

const ALPHABET: [&str; 4] = ["a", "b", "c", "d"];
const HANDLERS: [&str; 3] = [DEVNULL, FAILING, PASSTHRU];

/// One randomly drawn task.
#[derive(Debug, Clone)]
struct TaskSpec {
    after: Vec<String>,
    and_every: Option<String>,
    unless: Vec<String>,
    run: &'static str,
}

/// One step of a random story.
#[derive(Debug, Clone)]
enum Op {
    Fire(&'static str, u8),
    Settle,
    ReplayFirstFailed,
    SkipFirstFailed { cascade: bool },
}

/// Task `t<i>` may listen to the alphabet and to the tasks before it (cascades,
/// never cycles).
fn task_spec(i: usize) -> impl Strategy<Value = TaskSpec> {
    let mut pool: Vec<String> = ALPHABET.iter().map(|s| (*s).to_owned()).collect();
    pool.extend((0..i).map(|j| format!("t{j}")));
    (
        proptest::sample::subsequence(pool.clone(), 0..=2),
        proptest::option::weighted(0.4, proptest::sample::select(pool.clone())),
        prop_oneof![
            3 => Just(Vec::new()),
            2 => proptest::sample::subsequence(pool, 1..=2),
        ],
        proptest::sample::select(HANDLERS.to_vec()),
    )
        .prop_map(|(after, and_every, unless, run)| TaskSpec {
            after,
            and_every,
            unless,
            run,
        })
}

fn tasks_strategy() -> impl Strategy<Value = Vec<TaskSpec>> {
    (2usize..=4).prop_flat_map(|n| (0..n).map(task_spec).collect::<Vec<_>>())
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        8 => (proptest::sample::select(ALPHABET.to_vec()), any::<u8>()).prop_map(|(t, n)| Op::Fire(t, n)),
        2 => Just(Op::Settle),
        1 => Just(Op::ReplayFirstFailed),
        1 => any::<bool>().prop_map(|cascade| Op::SkipFirstFailed { cascade }),
    ];
    proptest::collection::vec(op, 2..=20)
}

fn config_document(tasks: &[TaskSpec]) -> Value {
    let mut doc = Map::new();
    for (i, task) in tasks.iter().enumerate() {
        let mut directives = json!({"after": task.after, "unless": task.unless, "run": task.run});
        if let Some(every) = &task.and_every {
            directives["andEvery"] = json!(every);
        }
        doc.insert(format!("t{i}"), directives);
    }
    Value::Object(doc)
}

async fn play(engine: &Engine, tasks: &[TaskSpec], ops: &[Op]) {
    configure(engine, S, config_document(tasks)).await;
    for op in ops {
        match op {
            Op::Fire(trigger, n) => {
                fire(engine, S, trigger, json!({"n": n})).await;
            }
            Op::Settle => settle(engine).await,
            Op::ReplayFirstFailed | Op::SkipFirstFailed { .. } => {
                let st = state(engine, S).await;
                let Some(failed) = st
                    .instances()
                    .iter()
                    .find(|i| i.status == InstanceStatus::Failed)
                else {
                    continue;
                };
                let name = failed.name.clone();
                if let Op::SkipFirstFailed { cascade } = op {
                    engine
                        .skip_failed_instance(
                            &uid(S),
                            &names::instance(&name),
                            *cascade,
                            Some(json!({"skipped": name})),
                        )
                        .await
                        .unwrap();
                } else {
                    engine
                        .replay_failed_instance(&uid(S), &names::instance(&name), None)
                        .await
                        .unwrap();
                }
            }
        }
    }
    settle(engine).await;
}

async fn check(db: TestDb, tasks: Vec<TaskSpec>, ops: Vec<Op>) {
    let engine = db.engine().await;
    play(&engine, &tasks, &ops).await;

    let live = state(&engine, S).await;
    let events = events(&engine, S).await;

    // Seqs are unique and gap-free, and the live state is at the last one.
    assert_gap_free(&events);
    assert_eq!(live.version(), events.len() as u64);

    // Every derived event points at an earlier cause.
    for e in &events {
        if matches!(
            e.payload.kind(),
            "TriggerApplied" | "InstanceScheduled" | "InstanceCreated" | "InstanceAbandoned"
        ) {
            let cause = e
                .caused_by
                .unwrap_or_else(|| panic!("{e:?} has no causedBy"));
            assert!(cause < e.seq, "{e:?} points at a later event");
        }
    }

    // The fold of the log is the live state.
    let folded = SessionState::fold(S, &events).unwrap();
    assert!(
        folded == *live,
        "the fold of the log differs from the live state"
    );

    // So is the state reloaded without the cache.
    engine.clear_cache();
    let reloaded = state(&engine, S).await;
    assert!(
        *reloaded == *live,
        "the reloaded state differs from the live state"
    );

    // And the state after a rebuild.
    let report = engine.rebuild().await.unwrap();
    assert_eq!(report.events, live.version());
    let rebuilt = state(&engine, S).await;
    assert!(*rebuilt == *live, "rebuild changed the state");
    engine.clear_cache();
    assert!(
        *state(&engine, S).await == *live,
        "rebuild left a snapshot that differs"
    );

    // Nothing inline is left behind: every runnable instance ran, every
    // abandonable one was abandoned, and all handlers here are inline.
    for inst in live.instances() {
        let task = live.task(&inst.task).unwrap();
        assert!(
            !matches!(
                inst.status,
                InstanceStatus::Scheduled | InstanceStatus::Running
            ),
            "{} is still {} after settling",
            inst.name,
            inst.status
        );
        assert!(!inst.can_run(task), "{} could run but did not", inst.name);
        assert!(
            !inst.can_abandon(task),
            "{} should have been abandoned",
            inst.name
        );
    }

    // A one-shot task never gets a second original instance.
    for (name, task) in live.tasks() {
        if task.and_every.is_none() {
            let originals = live.instances_of(name).filter(|i| i.depth == 0).count();
            assert!(
                originals <= 1,
                "one-shot task {name} has {originals} original instances"
            );
        }
    }

    // Instance names are <task>#<n>, n gap-free per task.
    let tasks_seen: BTreeSet<&str> = live.instances().iter().map(|i| i.task.as_str()).collect();
    for task in tasks_seen {
        let names = names_of(&live, task);
        let expected: Vec<String> = (0..names.len()).map(|n| format!("{task}#{n}")).collect();
        assert_eq!(names, expected);
    }
}

fn run_cases(backend: Backend, cases: u32) {
    let config = Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&(tasks_strategy(), ops_strategy()), |(tasks, ops)| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            match backend {
                Backend::Sqlite => within_time(check(TestDb::sqlite(), tasks, ops)).await,
                Backend::Postgres => {
                    crate::support::run_postgres(
                        std::time::Duration::from_secs(120),
                        "properties",
                        |db| check(db, tasks, ops),
                    )
                    .await;
                }
            }
        });
        Ok(())
    });
    if let Err(err) = outcome {
        panic!("{err}");
    }
}

#[test]
fn the_log_always_explains_the_state_on_sqlite() {
    run_cases(Backend::Sqlite, 24);
}

#[test]
#[cfg_attr(not(postgres_tests), ignore = "set TRIGGERS_TEST_POSTGRES_URL to run")]
fn the_log_always_explains_the_state_on_postgres() {
    if std::env::var(POSTGRES_ENV).map_or(true, |v| v.is_empty()) {
        skipped("engine::properties::the_log_always_explains_the_state_on_postgres");
        return;
    }
    run_cases(Backend::Postgres, 8);
}
