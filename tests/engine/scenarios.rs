//! The catalogue: every rule of docs/concepts.md and docs/configuration.md as a user sees it
//! (statuses, kwargs, results, metadata, event kinds and `causedBy`), each a
//! given / when / then story on a database of its own, on both backends.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use triggers::domain::{InstanceStatus, Runner, SessionState};
use triggers::engine::{Job, Outcome};
use triggers::Engine;

use crate::support::*;

// ---------------------------------------------------------------------------
// Firing: one-shot and andEvery tasks, kwargs.
// ---------------------------------------------------------------------------

async fn a_one_shot_task_fired_twice_has_one_instance(db: TestDb) {
    // Given a one-shot task.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t_import": {"after": ["a"], "run": PASSTHRU}}),
    )
    .await;

    // When its trigger fires twice.
    let first = fire_and_settle(&engine, S, "a", json!({"n": 1})).await;
    let second = fire_and_settle(&engine, S, "a", json!({"n": 2})).await;

    // Then only the first firing made (and ran) an instance.
    assert_eq!(first.scheduled, ["t_import#0"]);
    assert!(second.scheduled.is_empty() && second.abandoned.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t_import"), ["t_import#0"]);
    let inst = instance(&st, "t_import#0");
    assert_eq!(inst.status, InstanceStatus::Finished);
    assert_eq!(result(inst), passthru(json!({"a": {"n": 1}})));
    // The session still remembers the latest kwargs of the trigger.
    assert_eq!(st.latest_kwargs()["a"], json!({"n": 2}));
}

async fn a_second_firing_does_not_overwrite_the_kwargs_an_unstarted_instance_holds(db: TestDb) {
    // Given a one-shot task waiting for a and b.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}),
    )
    .await;

    // When a fires twice, then b.
    fire(&engine, S, "a", json!({"n": 1})).await;
    fire(&engine, S, "a", json!({"n": 2})).await;
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0"]);
    assert_eq!(status(&st, "t#0"), InstanceStatus::Unstarted);
    fire_and_settle(&engine, S, "b", json!({})).await;

    // Then the instance ran with the first kwargs of a.
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0"]);
    assert_eq!(
        result(instance(&st, "t#0")),
        passthru(json!({"a": {"n": 1}, "b": {}}))
    );
    // And the second firing of a was recorded but applied to nothing.
    let events = events(&engine, S).await;
    let second_a = fired(&events, "a")[1].seq;
    assert!(
        events.iter().all(|e| e.caused_by != Some(second_a)),
        "the second firing of a must not be applied to anything"
    );
}

async fn an_and_every_task_with_no_other_trigger_runs_once_per_firing(db: TestDb) {
    // Given a task that runs every time a page is received.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t_page": {"after": [], "andEvery": "page", "run": PASSTHRU}}),
    )
    .await;

    // When three pages are received.
    let mut scheduled = Vec::new();
    for n in 1..=3 {
        scheduled.push(
            fire(&engine, S, "page", json!({"n": n}))
                .await
                .outcome
                .scheduled,
        );
    }
    settle(&engine).await;

    // Then each firing made and ran its own instance with its own kwargs.
    assert_eq!(scheduled, [["t_page#0"], ["t_page#1"], ["t_page#2"]]);
    let st = state(&engine, S).await;
    assert_eq!(
        st.task("t_page").unwrap().after,
        ["page"],
        "andEvery is added to after"
    );
    assert_eq!(
        st.task("t_page").unwrap().and_every.as_deref(),
        Some("page")
    );
    for n in 0..3 {
        let inst = instance(&st, &format!("t_page#{n}"));
        assert_eq!(inst.status, InstanceStatus::Finished);
        assert_eq!(inst.kwargs, obj(json!({"page": {"n": n + 1}})));
        assert_eq!(result(inst), passthru(json!({"page": {"n": n + 1}})));
    }
}

async fn an_and_every_task_waits_for_its_other_after_triggers(db: TestDb) {
    // Given a task that runs for every page once the first page was received.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t_responses": {"after": ["first"], "andEvery": "page", "run": PASSTHRU}}),
    )
    .await;

    // When two pages arrive before the first-page trigger.
    assert!(fire(&engine, S, "page", json!({"n": 1}))
        .await
        .scheduled
        .is_empty());
    assert!(fire(&engine, S, "page", json!({"n": 2}))
        .await
        .scheduled
        .is_empty());

    // Then each waits in an instance of its own.
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t_responses#0".to_owned(), InstanceStatus::Unstarted),
            ("t_responses#1".to_owned(), InstanceStatus::Unstarted),
        ]
    );
    assert_eq!(
        instance(&st, "t_responses#0").kwargs,
        obj(json!({"page": {"n": 1}}))
    );
    assert_eq!(
        instance(&st, "t_responses#1").kwargs,
        obj(json!({"page": {"n": 2}}))
    );

    // When the first-page trigger fires, both are scheduled; a later page runs at once.
    let first = fire(&engine, S, "first", json!({"subject": 7})).await;
    assert_eq!(first.scheduled, ["t_responses#0", "t_responses#1"]);
    let third = fire(&engine, S, "page", json!({"n": 3})).await;
    assert_eq!(third.scheduled, ["t_responses#2"]);
    settle(&engine).await;

    let st = state(&engine, S).await;
    for n in 0..3 {
        let inst = instance(&st, &format!("t_responses#{n}"));
        assert_eq!(inst.status, InstanceStatus::Finished);
        assert_eq!(
            result(inst),
            passthru(json!({"first": {"subject": 7}, "page": {"n": n + 1}}))
        );
    }
}

async fn new_instances_capture_the_latest_kwargs_of_the_other_triggers(db: TestDb) {
    // Given an andEvery task that also needs a settings trigger.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["settings"], "andEvery": "page", "run": PASSTHRU}}),
    )
    .await;

    // When settings change between pages.
    fire(&engine, S, "settings", json!({"v": 1})).await;
    fire(&engine, S, "page", json!({"n": 1})).await;
    let changed = fire(&engine, S, "settings", json!({"v": 2})).await;
    fire(&engine, S, "page", json!({"n": 2})).await;
    settle(&engine).await;

    // Then each instance holds the settings that were latest when it was created,
    // and the change itself neither touched the started instance nor made a new one.
    assert!(changed.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0", "t#1"]);
    assert_eq!(
        instance(&st, "t#0").kwargs,
        obj(json!({"settings": {"v": 1}, "page": {"n": 1}}))
    );
    assert_eq!(
        instance(&st, "t#1").kwargs,
        obj(json!({"settings": {"v": 2}, "page": {"n": 2}}))
    );
    assert_eq!(st.latest_kwargs()["settings"], json!({"v": 2}));
    assert_eq!(status(&st, "t#1"), InstanceStatus::Finished);
}

async fn a_task_configured_after_a_fire_inherits_it_when_another_trigger_creates_its_instance(
    db: TestDb,
) {
    // Given a trigger fired before any task listened to it.
    let engine = db.engine().await;
    let early = fire(&engine, S, "a", json!({"v": 1})).await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}),
    )
    .await;
    assert!(state(&engine, S).await.instances().is_empty());

    // When the task's other trigger fires.
    let late = fire_and_settle(&engine, S, "b", json!({"w": 2})).await;

    // Then the new instance started from the earlier kwargs of a, and ran.
    assert_eq!(late.scheduled, ["t#0"]);
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t#0")),
        passthru(json!({"a": {"v": 1}, "b": {"w": 2}}))
    );
    let causes: Vec<u64> = engine
        .instance_causes(S, "t#0")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(causes, [early.seq, late.seq]);
}

async fn configure_never_re_applies_earlier_fires_nor_creates_instances(db: TestDb) {
    // Given a trigger that fired before the session had tasks.
    let engine = db.engine().await;
    fire(&engine, S, "a", json!({"n": 1})).await;

    // When a task waiting on it is configured.
    let seq = configure(&engine, S, json!({"t": {"after": ["a"], "run": PASSTHRU}})).await;
    settle(&engine).await;

    // Then nothing was created or run: the configure is one event.
    assert_eq!(seq, 2);
    let st = state(&engine, S).await;
    assert_eq!(st.version(), 2);
    assert!(st.instances().is_empty());
    assert_eq!(st.unresolved_tasks(), ["t"]);
    assert_eq!(
        kinds(&events(&engine, S).await),
        ["TriggerFired", "SessionConfigured"]
    );

    // And the next firing of the trigger is what runs the task.
    fire_and_settle(&engine, S, "a", json!({"n": 2})).await;
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t#0")),
        passthru(json!({"a": {"n": 2}}))
    );
}

async fn configuring_replaces_tasks_of_the_same_name_and_keeps_the_others(db: TestDb) {
    // Given two configured tasks, one of which has run.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_one": {"after": ["a"], "run": PASSTHRU, "description": "first version"},
            "t_two": {"after": ["b"], "run": DEVNULL},
        }),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    // When t_one alone is configured again.
    configure(
        &engine,
        S,
        json!({"t_one": {"after": ["c"], "run": DEVNULL, "maxRetries": 7}}),
    )
    .await;

    // Then t_one is replaced, t_two kept, and the instance of t_one kept.
    let st = state(&engine, S).await;
    let names: Vec<&str> = st.tasks().map(|(name, _)| name).collect();
    assert_eq!(names, ["t_one", "t_two"]);
    let one = st.task("t_one").unwrap();
    assert_eq!(one.after, ["c"]);
    assert_eq!(one.run, DEVNULL);
    assert_eq!(one.max_retries, 7);
    assert!(one.extras.is_empty(), "extras are replaced with the task");
    assert_eq!(st.task("t_two").unwrap().run, DEVNULL);
    assert_eq!(
        st.task("t_two").unwrap().max_retries,
        3,
        "maxRetries defaults to 3"
    );
    assert_eq!(status(&st, "t_one#0"), InstanceStatus::Finished);
}

async fn unknown_directives_are_kept_verbatim_as_extras(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {
            "after": ["a"], "run": DEVNULL,
            "description": "imports things", "owner": {"team": "data", "oncall": [1, 2]}
        }}),
    )
    .await;
    let st = state(&engine, S).await;
    let task = st.task("t").unwrap();
    assert_eq!(
        Value::Object(task.extras.clone()),
        json!({"description": "imports things", "owner": {"team": "data", "oncall": [1, 2]}})
    );
}

async fn a_fire_no_task_listens_to_is_still_recorded(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": DEVNULL}})).await;

    let result = fire_and_settle(&engine, S, "unheard", json!({"k": [1, 2]})).await;
    // Absent and null kwargs are an empty object.
    engine.fire_json(S, "bare", None, None).await.unwrap();
    engine
        .fire_json(S, "null", Some(Value::Null), None)
        .await
        .unwrap();

    assert!(!result.duplicate && result.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert!(st.instances().is_empty());
    assert_eq!(
        st.latest_kwargs(),
        obj(json!({"unheard": {"k": [1, 2]}, "bare": {}, "null": {}}))
    );
    assert_eq!(st.version(), 4);
}

// ---------------------------------------------------------------------------
// unless.
// ---------------------------------------------------------------------------

async fn an_unless_trigger_abandons_an_unstarted_instance(db: TestDb) {
    // Given an instance waiting for b, with an unless trigger.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "unless": ["stop"], "run": PASSTHRU}}),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;

    // When the unless trigger fires.
    let stopped = fire(&engine, S, "stop", json!({"why": "cancelled"})).await;

    // Then the instance is abandoned, and b no longer runs anything.
    assert_eq!(stopped.abandoned, ["t#0"]);
    assert!(stopped.scheduled.is_empty());
    let after_b = fire_and_settle(&engine, S, "b", json!({})).await;
    assert!(after_b.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0"]);
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Abandoned);
    assert_eq!(inst.abandon_state, BTreeSet::from(["stop".to_owned()]));
    assert!(inst.kwargs.contains_key("a"));
    assert!(st.unresolved_tasks().is_empty(), "abandoned is resolved");
}

async fn an_unless_trigger_fired_first_abandons_the_instance_it_creates(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "unless": ["stop"], "run": PASSTHRU}}),
    )
    .await;

    let stopped = fire(&engine, S, "stop", json!({})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    assert_eq!(stopped.abandoned, ["t#0"]);
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [("t#0".to_owned(), InstanceStatus::Abandoned)]
    );
    let kinds_about: Vec<&str> = engine
        .instance_history(S, "t#0")
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.kind())
        .collect();
    assert_eq!(
        kinds_about,
        ["InstanceCreated", "TriggerApplied", "InstanceAbandoned"]
    );
}

async fn an_instance_is_abandoned_only_once_all_its_unless_triggers_fired(db: TestDb) {
    // Given two tasks with two unless triggers each.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_stopped": {"after": ["a", "b"], "unless": ["x", "y"], "run": PASSTHRU},
            "t_runs": {"after": ["a", "c"], "unless": ["x", "y"], "run": PASSTHRU},
        }),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;

    // When one unless trigger fires, nothing is abandoned.
    let x = fire(&engine, S, "x", json!({})).await;
    assert!(x.abandoned.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_stopped#0"), InstanceStatus::Unstarted);
    assert_eq!(
        instance(&st, "t_stopped#0").abandon_state,
        BTreeSet::from(["x".to_owned()])
    );

    // When t_runs completes before the second one fires, it runs; t_stopped is abandoned.
    fire_and_settle(&engine, S, "c", json!({})).await;
    let y = fire_and_settle(&engine, S, "y", json!({})).await;
    assert_eq!(y.abandoned, ["t_stopped#0"]);
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_stopped#0"), InstanceStatus::Abandoned);
    assert_eq!(status(&st, "t_runs#0"), InstanceStatus::Finished);
}

async fn an_and_every_task_abandons_every_later_instance_once_its_unless_fired(db: TestDb) {
    // Given an andEvery task with an unless trigger, that ran once.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": [], "andEvery": "page", "unless": ["closed"], "run": PASSTHRU}}),
    )
    .await;
    fire_and_settle(&engine, S, "page", json!({"n": 1})).await;

    // When the unless trigger fires, then more pages.
    let closed = fire(&engine, S, "closed", json!({})).await;
    let page2 = fire(&engine, S, "page", json!({"n": 2})).await;
    let page3 = fire(&engine, S, "page", json!({"n": 3})).await;
    settle(&engine).await;

    // Then the finished instance is untouched and each later one is abandoned at once.
    assert!(closed.abandoned.is_empty());
    assert_eq!(page2.abandoned, ["t#1"]);
    assert_eq!(page3.abandoned, ["t#2"]);
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Finished),
            ("t#1".to_owned(), InstanceStatus::Abandoned),
            ("t#2".to_owned(), InstanceStatus::Abandoned),
        ]
    );
    assert!(instance(&st, "t#0").abandon_state.is_empty());
    assert_eq!(instance(&st, "t#2").kwargs, obj(json!({"page": {"n": 3}})));
}

async fn an_unless_trigger_does_not_affect_an_instance_that_already_started(db: TestDb) {
    // Given one instance waiting in the worker queue and one finished inline.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_queued": {"after": ["a"], "unless": ["stop"], "run": EXTERNAL},
            "t_done": {"after": ["a"], "unless": ["stop"], "run": PASSTHRU},
        }),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    // When the unless trigger fires.
    let stopped = fire_and_settle(&engine, S, "stop", json!({})).await;

    // Then neither is affected, and no new instance is made.
    assert!(stopped.abandoned.is_empty() && stopped.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_queued#0"), InstanceStatus::Scheduled);
    assert_eq!(status(&st, "t_done#0"), InstanceStatus::Finished);
    assert!(instance(&st, "t_queued#0").abandon_state.is_empty());
    assert!(instance(&st, "t_done#0").abandon_state.is_empty());
    assert_eq!(st.instances().len(), 2);
}

async fn abandoning_wins_when_after_and_unless_complete_together(db: TestDb) {
    // Given a task whose last after trigger is also its unless trigger.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "done"], "unless": ["done"], "run": PASSTHRU}}),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;

    // When that trigger fires.
    let done = fire_and_settle(&engine, S, "done", json!({})).await;

    // Then the instance is abandoned, not scheduled.
    assert_eq!(done.abandoned, ["t#0"]);
    assert!(done.scheduled.is_empty());
    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Abandoned);
    assert!(inst.after_complete(st.task("t").unwrap()));
    let events = events(&engine, S).await;
    let done_kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.caused_by == Some(done.seq))
        .map(|e| e.payload.kind())
        .collect();
    assert_eq!(
        done_kinds,
        ["TriggerApplied", "TriggerApplied", "InstanceAbandoned"]
    );
    assert!(about(&events, "InstanceScheduled", "t#0").is_empty());
}

// ---------------------------------------------------------------------------
// withParams and cascades.
// ---------------------------------------------------------------------------

async fn with_params_are_deep_merged_under_the_trigger_kwargs(db: TestDb) {
    // Given static params overlapping the trigger's kwargs.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t_score": {
            "after": ["answers"],
            "run": PASSTHRU,
            "withParams": {
                "answers": {"model": "Psych 01", "nested": {"p": 1, "q": 1}, "list": [1, 2]},
                "scoring": {"model": "Psych 01"}
            }
        }}),
    )
    .await;

    // When the trigger fires with conflicting and extra kwargs.
    fire_and_settle(
        &engine,
        S,
        "answers",
        json!({"nested": {"q": 2}, "list": [3], "extra": true}),
    )
    .await;

    // Then trigger kwargs win, objects merge recursively, lists are replaced.
    let expected = json!({
        "answers": {"model": "Psych 01", "nested": {"p": 1, "q": 2}, "list": [3], "extra": true},
        "scoring": {"model": "Psych 01"}
    });
    let st = state(&engine, S).await;
    let inst = instance(&st, "t_score#0");
    assert_eq!(inst.metadata["actualKwargs"], expected);
    assert_eq!(result(inst), passthru(expected));
    // The instance's own kwargs are only what was fired.
    assert_eq!(
        inst.kwargs,
        obj(json!({"answers": {"nested": {"q": 2}, "list": [3], "extra": true}}))
    );
}

async fn with_params_merge_under_cascaded_results(db: TestDb) {
    // Given a task fed by another task's result, with params for that result.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_first": {"after": ["a"], "run": PASSTHRU},
            "t_second": {
                "after": ["t_first"],
                "run": PASSTHRU,
                "withParams": {"t_first": {"kwargs": {"static": 1}}, "other": {"k": 1}}
            }
        }),
    )
    .await;

    // When the first task finishes.
    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    // Then the second receives the result merged over its params.
    let st = state(&engine, S).await;
    assert_eq!(
        instance(&st, "t_second#0").metadata["actualKwargs"],
        json!({"t_first": {"kwargs": {"a": {"n": 1}, "static": 1}}, "other": {"k": 1}})
    );
    assert_eq!(status(&st, "t_second#0"), InstanceStatus::Finished);
}

async fn a_finished_one_shot_task_cascades_into_an_and_every_task(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_once": {"after": ["a"], "run": PASSTHRU},
            "t_each": {"after": [], "andEvery": "t_once", "run": PASSTHRU},
        }),
    )
    .await;

    let fired_a = fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    // The API fire scheduled only its own instance, not the cascade's.
    assert_eq!(fired_a.scheduled, ["t_once#0"]);
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t_each#0")),
        passthru(json!({"t_once": passthru(json!({"a": {"n": 1}}))}))
    );
    let events = events(&engine, S).await;
    let finished = about(&events, "InstanceFinished", "t_once#0")[0].seq;
    let cascade = fired(&events, "t_once");
    assert_eq!(cascade.len(), 1);
    assert_eq!(cascade[0].caused_by, Some(finished));
    // Every finished instance cascades, even when nobody listens to its name.
    let each_finished = about(&events, "InstanceFinished", "t_each#0")[0].seq;
    assert_eq!(fired(&events, "t_each")[0].caused_by, Some(each_finished));
}

async fn finished_and_every_instances_cascade_into_a_one_shot_task_once(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_each": {"after": [], "andEvery": "page", "run": PASSTHRU},
            "t_once": {"after": ["t_each"], "run": PASSTHRU},
        }),
    )
    .await;

    for n in 1..=3 {
        fire_and_settle(&engine, S, "page", json!({"n": n})).await;
    }

    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t_each").len(), 3);
    assert_eq!(names_of(&st, "t_once"), ["t_once#0"]);
    assert_eq!(
        result(instance(&st, "t_once#0")),
        passthru(json!({"t_each": passthru(json!({"page": {"n": 1}}))}))
    );
    assert_eq!(fired(&events(&engine, S).await, "t_each").len(), 3);
    assert_eq!(
        st.latest_kwargs()["t_each"],
        passthru(json!({"page": {"n": 3}}))
    );
}

async fn complex_and_redundant_triggers_are_normalised_and_applied_once(db: TestDb) {
    // Given a task that names triggers twice and its andEvery in after, and a
    // second task sharing one trigger.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t": {"after": ["b", "a", "b", "page"], "andEvery": "page", "unless": ["x", "x"], "run": PASSTHRU},
            "t_also": {"after": ["a"], "run": PASSTHRU},
        }),
    )
    .await;
    let st = state(&engine, S).await;
    assert_eq!(st.task("t").unwrap().after, ["a", "b", "page"]);
    assert_eq!(st.task("t").unwrap().unless, ["x"]);

    // When triggers fire in a mixed order.
    fire(&engine, S, "page", json!({"n": 1})).await;
    let a1 = fire(&engine, S, "a", json!({"n": 1})).await;
    let a2 = fire(&engine, S, "a", json!({"n": 2})).await;
    let b = fire(&engine, S, "b", json!({})).await;
    let page2 = fire(&engine, S, "page", json!({"n": 2})).await;
    settle(&engine).await;

    // Then one fire feeds both tasks, and each instance holds each trigger once.
    assert_eq!(a1.scheduled, ["t_also#0"]);
    assert!(a2.scheduled.is_empty());
    assert_eq!(b.scheduled, ["t#0"]);
    assert_eq!(page2.scheduled, ["t#1"]);
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t#0")),
        passthru(json!({"a": {"n": 1}, "b": {}, "page": {"n": 1}}))
    );
    assert_eq!(
        result(instance(&st, "t#1")),
        passthru(json!({"a": {"n": 2}, "b": {}, "page": {"n": 2}}))
    );
    assert_eq!(names_of(&st, "t_also"), ["t_also#0"]);
    assert_eq!(st.instances().len(), 3);
}

// ---------------------------------------------------------------------------
// Replay, skip, self-skip, self-retry.
// ---------------------------------------------------------------------------

async fn a_failing_job_fails_its_instance_with_its_exception(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": FAILING}, "t_next": {"after": ["t"], "run": DEVNULL}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Failed);
    assert_eq!(
        inst.metadata["exceptionType"],
        json!("triggers.testing.Failure")
    );
    assert!(inst.metadata["exceptionInfo"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(inst.metadata["exceptionContext"].is_object());
    assert_eq!(inst.log_level(), 40);
    assert!(inst.can_replay() && inst.can_skip());
    // A failure does not cascade.
    assert!(names_of(&st, "t_next").is_empty());
    assert!(fired(&events(&engine, S).await, "t").is_empty());
}

async fn replaying_a_failed_instance_runs_a_clone_with_the_same_kwargs(db: TestDb) {
    // Given a failed instance.
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": FAILING}})).await;
    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    // When it is replayed.
    let clone = engine.replay_failed_instance(S, "t#0", None).await.unwrap();
    settle(&engine).await;

    // Then a clone t#1 holds the same kwargs, points at its parent, and ran.
    assert_eq!(clone.name, "t#1");
    assert_eq!(clone.parent.as_deref(), Some("t#0"));
    assert_eq!(clone.depth, 1);
    assert_eq!(clone.metadata["parent"], json!("t#0"));
    assert_eq!(clone.metadata["depth"], json!(1));
    assert_eq!(clone.kwargs, obj(json!({"a": {"n": 1}})));
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Replayed);
    assert_eq!(
        status(&st, "t#1"),
        InstanceStatus::Failed,
        "Failing fails again"
    );
    assert_eq!(
        instance(&st, "t#1").metadata["actualKwargs"],
        json!({"a": {"n": 1}})
    );
    // Only the clone's error still needs attention.
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t#1"]);
    // The replay is one API decision: Replayed -> Created -> Scheduled.
    let events = events(&engine, S).await;
    let replayed = about(&events, "InstanceReplayed", "t#0")[0];
    assert_eq!(replayed.caused_by, None);
    let created = about(&events, "InstanceCreated", "t#1")[0];
    assert_eq!(created.caused_by, Some(replayed.seq));
    let scheduled = about(&events, "InstanceScheduled", "t#1")[0];
    assert_eq!(scheduled.caused_by, Some(created.seq));
    // The clone's kwargs still point at the original firing.
    let causes = engine.instance_causes(S, "t#1").await.unwrap();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].payload.trigger(), Some("a"));
}

async fn a_replayed_clone_can_fail_and_be_replayed_again(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": FAILING}})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    engine.replay_failed_instance(S, "t#0", None).await.unwrap();
    settle(&engine).await;
    let second = engine.replay_failed_instance(S, "t#1", None).await.unwrap();
    settle(&engine).await;

    assert_eq!(second.name, "t#2");
    assert_eq!(second.parent.as_deref(), Some("t#1"));
    assert_eq!(second.depth, 2);
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Replayed),
            ("t#1".to_owned(), InstanceStatus::Replayed),
            ("t#2".to_owned(), InstanceStatus::Failed),
        ]
    );
}

async fn replay_uses_the_tasks_current_configuration(db: TestDb) {
    // Given a failed instance, and a task reconfigured since.
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": FAILING}})).await;
    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": PASSTHRU, "withParams": {"extra": {"k": 1}}}}),
    )
    .await;

    // When it is replayed.
    engine.replay_failed_instance(S, "t#0", None).await.unwrap();
    settle(&engine).await;

    // Then the clone ran the new handler with the new params.
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Replayed);
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(
        result(clone),
        passthru(json!({"a": {"n": 1}, "extra": {"k": 1}}))
    );
    assert_eq!(
        fired(&events(&engine, S).await, "t").len(),
        1,
        "the clone cascades"
    );
}

async fn replaying_with_replacement_kwargs_replaces_them_whole(db: TestDb) {
    // Given a failed instance that held a and b, and a fixed handler.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": FAILING}}),
    )
    .await;
    fire(&engine, S, "a", json!({"n": 1})).await;
    fire_and_settle(&engine, S, "b", json!({"m": 2})).await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}),
    )
    .await;

    // When it is replayed with replacement kwargs lacking b.
    let clone = engine
        .replay_failed_instance(S, "t#0", Some(json!({"a": {"n": 99}})))
        .await
        .unwrap();
    settle(&engine).await;

    // Then the clone holds exactly the replacement, and is scheduled anyway.
    assert_eq!(clone.kwargs, obj(json!({"a": {"n": 99}})));
    let st = state(&engine, S).await;
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(result(clone), passthru(json!({"a": {"n": 99}})));
    assert_eq!(
        instance(&st, "t#0").kwargs,
        obj(json!({"a": {"n": 1}, "b": {"m": 2}})),
        "the failed instance keeps its kwargs"
    );
}

async fn a_replay_keeps_the_abandon_state(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "unless": ["x", "y"], "run": FAILING}}),
    )
    .await;
    fire(&engine, S, "x", json!({})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    assert_eq!(
        status(&*state(&engine, S).await, "t#0"),
        InstanceStatus::Failed
    );

    let clone = engine.replay_failed_instance(S, "t#0", None).await.unwrap();
    settle(&engine).await;

    assert_eq!(clone.abandon_state, BTreeSet::from(["x".to_owned()]));
}

async fn skipping_a_failed_instance_without_cascade_resolves_it_quietly(db: TestDb) {
    // Given a failed instance with a task downstream.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": FAILING}, "t_next": {"after": ["t"], "run": PASSTHRU}}),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    // When it is skipped without cascade.
    let skipped = engine
        .skip_failed_instance(S, "t#0", false, None)
        .await
        .unwrap();
    settle(&engine).await;

    // Then it is skipped and nothing downstream happens.
    assert_eq!(skipped.status, InstanceStatus::Skipped);
    assert_eq!(skipped.metadata["cascade"], json!(false));
    assert_eq!(skipped.metadata["result"], json!({}));
    let st = state(&engine, S).await;
    assert!(names_of(&st, "t_next").is_empty());
    assert!(fired(&events(&engine, S).await, "t").is_empty());
    assert!(st.instances_with_unresolved_logs().next().is_none());
    assert_eq!(st.unresolved_tasks(), ["t_next"]);
}

async fn skipping_a_failed_instance_with_cascade_fires_the_task_with_the_result(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": FAILING}, "t_next": {"after": ["t"], "run": PASSTHRU}}),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    let skipped = engine
        .skip_failed_instance(S, "t#0", true, Some(json!({"rows": 0})))
        .await
        .unwrap();
    settle(&engine).await;

    assert_eq!(skipped.metadata["cascade"], json!(true));
    assert_eq!(skipped.metadata["result"], json!({"rows": 0}));
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t_next#0")),
        passthru(json!({"t": {"rows": 0}}))
    );
    let events = events(&engine, S).await;
    let skip_event = about(&events, "InstanceSkipped", "t#0")[0];
    assert_eq!(skip_event.caused_by, None);
    assert_eq!(fired(&events, "t")[0].caused_by, Some(skip_event.seq));
}

async fn a_job_can_skip_itself(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t": {"after": ["a"], "run": SELF_SKIPPING, "withParams": {"p": {"q": 1}}},
            "t_next": {"after": ["t"], "run": PASSTHRU},
        }),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Skipped);
    assert_eq!(
        inst.metadata["kwargs"],
        json!({"a": {"n": 1}, "p": {"q": 1}})
    );
    assert!(
        names_of(&st, "t_next").is_empty(),
        "a self-skip does not cascade"
    );
    assert!(inst.is_resolved());
}

async fn a_self_retrying_job_retries_up_to_the_default_max_retries(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": SELF_RETRYING}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Replayed),
            ("t#1".to_owned(), InstanceStatus::Replayed),
            ("t#2".to_owned(), InstanceStatus::Replayed),
            ("t#3".to_owned(), InstanceStatus::Finished),
        ]
    );
    let last = instance(&st, "t#3");
    assert_eq!(result(last), json!({"count": 3}));
    assert_eq!(last.depth, 3);
    assert_eq!(last.parent.as_deref(), Some("t#2"));
    assert_eq!(last.kwargs, obj(json!({"a": {"n": 1}})));
    for n in 0..3 {
        let attempt = instance(&st, &format!("t#{n}"));
        assert!(
            attempt.metadata.contains_key("cooldown"),
            "a retry records its cooldown"
        );
        assert!(attempt.metadata.contains_key("exceptionType"));
        assert_eq!(attempt.depth, n);
    }
    // Failure, replay and the clone's scheduling commit as one chain of causes.
    let events = events(&engine, S).await;
    let failed = about(&events, "InstanceFailed", "t#0")[0];
    let replayed = about(&events, "InstanceReplayed", "t#0")[0];
    assert_eq!(replayed.caused_by, Some(failed.seq));
    assert_eq!(replayed.seq, failed.seq + 1);
    assert_eq!(
        about(&events, "InstanceCreated", "t#1")[0].caused_by,
        Some(replayed.seq)
    );
    assert!(st.instances_with_unresolved_logs().next().is_none());
}

async fn a_self_retrying_job_stops_at_its_own_limit(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 5, "withParams": {"retries": {"max": 1}}}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(names_of(&st, "t"), ["t#0", "t#1"]);
    assert_eq!(result(instance(&st, "t#1")), json!({"count": 1}));
}

async fn asking_to_retry_beyond_max_retries_fails_with_max_retries_exceeded(db: TestDb) {
    // Given a job that wants 5 retries in a task that allows 1.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 1, "withParams": {"retries": {"max": 5}}}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    // Then the second attempt fails for good.
    let st = state(&engine, S).await;
    assert_eq!(
        summary(&st),
        [
            ("t#0".to_owned(), InstanceStatus::Replayed),
            ("t#1".to_owned(), InstanceStatus::Failed),
        ]
    );
    let last = instance(&st, "t#1");
    assert_eq!(last.metadata["exceptionType"], json!("MaxRetriesExceeded"));
    assert!(last.log_level() >= 40);
    let unresolved: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(unresolved, ["t#1"]);
}

async fn a_retry_can_replace_kwargs_and_wait_a_cooldown(db: TestDb) {
    // Given a handler that retries its first attempt with fixed kwargs after 300 ms.
    let engine = db
        .engine_with(|b| {
            b.handler("app.Flaky", |job: Job| async move {
                if job.depth == 0 {
                    Outcome::Retry {
                        reason: "upstream busy".into(),
                        replacement_kwargs: Some(obj(json!({"a": {"fixed": true}}))),
                        cooldown_seconds: Some(0.3),
                    }
                } else {
                    Outcome::finished(json!({"got": job.kwargs}))
                }
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Flaky"}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({"broken": true})).await;

    let st = state(&engine, S).await;
    let first = instance(&st, "t#0");
    assert_eq!(first.status, InstanceStatus::Replayed);
    assert_eq!(first.metadata["cooldown"].as_f64(), Some(0.3));
    assert_eq!(first.metadata["exceptionInfo"], json!("upstream busy"));
    let clone = instance(&st, "t#1");
    assert_eq!(clone.status, InstanceStatus::Finished);
    assert_eq!(clone.kwargs, obj(json!({"a": {"fixed": true}})));
    assert_eq!(result(clone), json!({"got": {"a": {"fixed": true}}}));
    let scheduled = ts(clone, "scheduled");
    let running = ts(clone, "running");
    assert!(
        running - scheduled >= chrono::Duration::milliseconds(290),
        "the clone waited its cooldown: scheduled {scheduled}, running {running}"
    );
}

// ---------------------------------------------------------------------------
// Manual changes and the unresolved queries.
// ---------------------------------------------------------------------------

async fn an_operator_can_set_any_status_and_merge_metadata(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": DEVNULL}})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    let changed = engine
        .update_instance_status(
            S,
            "t#0",
            InstanceStatus::Failed,
            Some(json!({"reason": "bad data"})),
            false,
            None,
        )
        .await
        .unwrap();

    assert_eq!(changed.status, InstanceStatus::Failed);
    assert_eq!(changed.metadata["reason"], json!("bad data"));
    assert_eq!(
        changed.metadata["result"],
        json!({}),
        "earlier metadata is kept"
    );
    assert!(changed.metadata["timestamps"]["failed"].is_string());
    let events = events(&engine, S).await;
    let change = about(&events, "InstanceStatusChanged", "t#0")[0];
    assert_eq!(change.caused_by, None);
    assert_eq!(fired(&events, "t").len(), 1, "no cascade without asking");
    // A failed instance, whatever made it fail, can be replayed.
    let clone = engine.replay_failed_instance(S, "t#0", None).await.unwrap();
    settle(&engine).await;
    assert_eq!(
        status(&*state(&engine, S).await, &clone.name),
        InstanceStatus::Finished
    );
}

async fn setting_a_status_with_cascade_fires_the_task_name(db: TestDb) {
    // Given two instances waiting for an external worker, each with a task downstream.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_ext": {"after": ["a"], "run": EXTERNAL},
            "t_quiet": {"after": ["a"], "run": EXTERNAL},
            "t_next": {"after": ["t_ext"], "run": PASSTHRU},
            "t_after_quiet": {"after": ["t_quiet"], "run": PASSTHRU},
        }),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;

    // When an operator finishes one with cascade and the other without.
    let done = engine
        .update_instance_status(
            S,
            "t_ext#0",
            InstanceStatus::Finished,
            Some(json!({"result": {"rows": 3}})),
            true,
            Some(json!({"rows": 3})),
        )
        .await
        .unwrap();
    engine
        .update_instance_status(S, "t_quiet#0", InstanceStatus::Finished, None, false, None)
        .await
        .unwrap();
    settle(&engine).await;

    // Then only the first set its downstream task off, with the cascade kwargs.
    assert_eq!(done.status, InstanceStatus::Finished);
    let st = state(&engine, S).await;
    assert_eq!(
        result(instance(&st, "t_next#0")),
        passthru(json!({"t_ext": {"rows": 3}}))
    );
    assert!(names_of(&st, "t_after_quiet").is_empty());
    let events = events(&engine, S).await;
    let change = about(&events, "InstanceStatusChanged", "t_ext#0")[0];
    assert_eq!(fired(&events, "t_ext")[0].caused_by, Some(change.seq));
    assert!(fired(&events, "t_quiet").is_empty());
}

async fn updating_metadata_merges_it_and_bumps_only_last_modified(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": DEVNULL}})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    let before = instance(&*state(&engine, S).await, "t#0").clone();

    let after = engine
        .update_instance_metadata(S, "t#0", json!({"note": "checked", "ticket": 12}))
        .await
        .unwrap();

    assert_eq!(after.status, InstanceStatus::Finished);
    assert_eq!(after.metadata["note"], json!("checked"));
    assert_eq!(after.metadata["ticket"], json!(12));
    assert_eq!(after.metadata["result"], before.metadata["result"]);
    let mut old_ts = before.metadata["timestamps"].as_object().unwrap().clone();
    let mut new_ts = after.metadata["timestamps"].as_object().unwrap().clone();
    assert!(ts(&after, "lastModified") >= ts(&before, "lastModified"));
    old_ts.remove("lastModified");
    new_ts.remove("lastModified");
    assert_eq!(old_ts, new_ts, "only lastModified moves");
    assert_eq!(
        kinds(&engine.events(S, before.last_seq, None).await.unwrap()).last(),
        Some(&"InstanceMetadataUpdated")
    );
}

async fn marking_logs_resolved_takes_an_instance_off_the_unresolved_logs(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": FAILING}})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    let st = state(&engine, S).await;
    let with_logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(with_logs, ["t#0"]);

    let marked = engine.mark_instance_logs_resolved(S, "t#0").await.unwrap();

    assert_eq!(marked.metadata["logsResolved"], json!(true));
    assert_eq!(
        marked.status,
        InstanceStatus::Failed,
        "the status is not changed"
    );
    let st = state(&engine, S).await;
    assert!(st.instances_with_unresolved_logs().next().is_none());
    let unresolved: Vec<&str> = st.unresolved_instances().map(|i| i.name.as_str()).collect();
    assert_eq!(unresolved, ["t#0"], "still unresolved as an instance");
}

async fn the_unresolved_queries_answer_what_still_needs_attention(db: TestDb) {
    // Given tasks that finish, fail, wait for a worker, and never start.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_done": {"after": ["a"], "run": DEVNULL},
            "t_failed": {"after": ["a"], "run": FAILING},
            "t_queued": {"after": ["a"], "run": EXTERNAL},
            "t_waiting": {"after": ["a", "b"], "run": DEVNULL},
            "t_never": {"after": ["z"], "run": DEVNULL},
        }),
    )
    .await;
    let st = state(&engine, S).await;
    assert_eq!(
        st.unresolved_tasks().len(),
        5,
        "tasks with no instance are unresolved"
    );

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(
        st.unresolved_tasks(),
        ["t_failed", "t_never", "t_queued", "t_waiting"]
    );
    let unresolved: Vec<&str> = st.unresolved_instances().map(|i| i.name.as_str()).collect();
    assert_eq!(unresolved, ["t_failed#0", "t_queued#0", "t_waiting#0"]);
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t_failed#0"]);

    // When the failure is skipped and the waiting task completes.
    engine
        .skip_failed_instance(S, "t_failed#0", false, None)
        .await
        .unwrap();
    fire_and_settle(&engine, S, "b", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(st.unresolved_tasks(), ["t_never", "t_queued"]);
    assert!(st.instances_with_unresolved_logs().next().is_none());
}

async fn an_error_logged_by_a_finished_job_needs_attention(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.Noisy", |_job: Job| async move {
                Outcome::Finished {
                    result: json!({"ok": true}),
                    log_level: Some(40),
                }
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Noisy"}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Finished);
    assert_eq!(inst.log_level(), 40);
    let logs: Vec<&str> = st
        .instances_with_unresolved_logs()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(logs, ["t#0"]);
}

// ---------------------------------------------------------------------------
// Idempotency, runners, handlers.
// ---------------------------------------------------------------------------

async fn repeating_an_idempotency_key_returns_the_first_result_and_appends_nothing(db: TestDb) {
    // Given a fire made with a key.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": [], "andEvery": "page", "run": PASSTHRU}}),
    )
    .await;
    let first = engine
        .fire(S, "page", obj(json!({"n": 1})), Some("page-1"))
        .await
        .unwrap();
    settle(&engine).await;
    let version = state(&engine, S).await.version();

    // When the same key is used again (even with other kwargs).
    let again = engine
        .fire(S, "page", obj(json!({"n": 2})), Some("page-1"))
        .await
        .unwrap();
    settle(&engine).await;

    // Then the first result comes back, marked duplicate, and nothing was written.
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.scheduled, first.scheduled);
    assert_eq!(again.scheduled, ["t#0"]);
    assert_eq!(again.abandoned, first.abandoned);
    let event = again.event.expect("a duplicate still names its event");
    assert_eq!(event.seq, first.seq);
    assert_eq!(event.payload, first.event.unwrap().payload);
    let st = state(&engine, S).await;
    assert_eq!(st.version(), version);
    assert_eq!(names_of(&st, "t"), ["t#0"]);

    // And the key is per session; a new key fires again.
    let elsewhere = engine
        .fire("other-session", "page", obj(json!({})), Some("page-1"))
        .await
        .unwrap();
    assert!(!elsewhere.duplicate);
    let fresh = engine
        .fire(S, "page", obj(json!({"n": 2})), Some("page-2"))
        .await
        .unwrap();
    assert!(!fresh.duplicate);
    assert_eq!(fresh.scheduled, ["t#1"]);
    settle(&engine).await;
}

async fn a_task_whose_handler_is_not_registered_waits_in_the_worker_queue(db: TestDb) {
    // Given tasks for external workers (implicitly and explicitly) and one inline.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_external": {"after": ["a"], "run": EXTERNAL},
            "t_gpu": {"after": ["a"], "run": PASSTHRU, "using": "worker:gpu"},
            "t_worker": {"after": ["a"], "run": PASSTHRU, "using": "worker"},
            "t_inline": {"after": ["a"], "run": PASSTHRU, "using": "inline"},
        }),
    )
    .await;

    // When their trigger fires.
    let fired_a = fire_and_settle(&engine, S, "a", json!({})).await;

    // Then the worker tasks stay scheduled in their queues; the inline one ran.
    assert_eq!(fired_a.scheduled.len(), 4);
    let st = state(&engine, S).await;
    let ext = instance(&st, "t_external#0");
    assert_eq!(ext.status, InstanceStatus::Scheduled);
    assert_eq!(ext.runner, Some(Runner::Worker("default".into())));
    let gpu = instance(&st, "t_gpu#0");
    assert_eq!(gpu.status, InstanceStatus::Scheduled);
    assert_eq!(gpu.runner, Some(Runner::Worker("gpu".into())));
    assert_eq!(
        instance(&st, "t_worker#0").runner,
        Some(Runner::Worker("default".into()))
    );
    assert_eq!(status(&st, "t_worker#0"), InstanceStatus::Scheduled);
    assert_eq!(status(&st, "t_inline#0"), InstanceStatus::Finished);
    let queued = engine
        .instances(&[InstanceStatus::Scheduled], None, 100, None)
        .await
        .unwrap();
    let names: BTreeSet<&str> = queued.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["t_external#0", "t_gpu#0", "t_worker#0"])
    );
}

async fn a_job_returning_something_other_than_an_object_fails_its_instance(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.ReturnsAList", |_job: Job| async move {
                Outcome::finished(json!([1, 2]))
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.ReturnsAList"}, "t_next": {"after": ["t"], "run": DEVNULL}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    assert_eq!(inst.status, InstanceStatus::Failed);
    let info = inst.metadata["exceptionInfo"].as_str().unwrap_or_default();
    assert!(info.contains("object"), "a clear error: {info}");
    assert!(names_of(&st, "t_next").is_empty());
}

async fn a_handler_that_panics_fails_its_instance(db: TestDb) {
    let engine = db
        .engine_with(|b| {
            b.handler("app.Panics", |_job: Job| async move {
                if true {
                    panic!("boom");
                }
                Outcome::finished(json!({}))
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Panics"}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({})).await;

    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t#0"), InstanceStatus::Failed);
    assert!(instance(&st, "t#0").log_level() >= 40);
}

async fn a_custom_handler_receives_the_job_it_runs(db: TestDb) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let engine = db
        .engine_with(move |b| {
            b.handler("app.Record", move |job: Job| {
                let tx = tx.clone();
                async move {
                    tx.send(job).ok();
                    Outcome::finished(json!({"ok": true}))
                }
            })
        })
        .await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a"], "run": "app.Record", "maxRetries": 4, "withParams": {"p": {"x": 1}}}}),
    )
    .await;

    fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let job = rx.try_recv().expect("the handler ran");
    assert_eq!(job.session, S);
    assert_eq!(job.instance, "t#0");
    assert_eq!(job.task, "t");
    assert_eq!(job.run, "app.Record");
    assert_eq!(job.kwargs, obj(json!({"a": {"n": 1}, "p": {"x": 1}})));
    assert_eq!(job.depth, 0);
    assert_eq!(job.max_retries, 4);
    assert!(rx.try_recv().is_err(), "it ran once");
}

// ---------------------------------------------------------------------------
// The questionnaire example, end to end.
// ---------------------------------------------------------------------------

async fn the_questionnaire_example_runs_end_to_end(db: TestDb) {
    // Given the questionnaire workflow.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_importSubject": {"after": ["firstPageReceived"], "run": PASSTHRU},
            "t_importResponses": {"after": ["firstPageReceived"], "andEvery": "pageReceived", "run": PASSTHRU},
            "t_importBrowserMetadata": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PASSTHRU},
            "t_scoreResponses": {
                "after": ["t_importSubject", "questionnaireComplete"],
                "unless": ["questionnaireAbandoned"],
                "run": PASSTHRU,
                "withParams": {"scoring": {"model": "Psych 01"}}
            },
        }),
    )
    .await;

    // When a respondent goes through it.
    let first = fire_and_settle(
        &engine,
        S,
        "firstPageReceived",
        json!({"subject": {"id": 42}, "browser": "Firefox"}),
    )
    .await;
    fire_and_settle(
        &engine,
        S,
        "pageReceived",
        json!({"page": 1, "responses": [1, 2]}),
    )
    .await;
    fire_and_settle(
        &engine,
        S,
        "pageReceived",
        json!({"page": 2, "responses": [3]}),
    )
    .await;
    let complete =
        fire_and_settle(&engine, S, "questionnaireComplete", json!({"at": "noon"})).await;
    let abandoned_late = fire_and_settle(&engine, S, "questionnaireAbandoned", json!({})).await;

    // Then every import ran once per what it waits for, and scoring ran.
    assert_eq!(first.scheduled, ["t_importSubject#0"]);
    assert_eq!(
        complete.scheduled,
        ["t_importBrowserMetadata#0", "t_scoreResponses#0"]
    );
    assert!(
        abandoned_late.abandoned.is_empty(),
        "scoring had already run"
    );
    let st = state(&engine, S).await;
    assert!(
        st.unresolved_tasks().is_empty(),
        "{:?}",
        st.unresolved_tasks()
    );
    assert!(st
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Finished));
    let subject = json!({"subject": {"id": 42}, "browser": "Firefox"});
    assert_eq!(
        result(instance(&st, "t_importSubject#0")),
        passthru(json!({"firstPageReceived": subject}))
    );
    assert_eq!(
        names_of(&st, "t_importResponses"),
        ["t_importResponses#0", "t_importResponses#1"]
    );
    assert_eq!(
        result(instance(&st, "t_importResponses#1")),
        passthru(
            json!({"firstPageReceived": subject, "pageReceived": {"page": 2, "responses": [3]}})
        )
    );
    assert_eq!(
        result(instance(&st, "t_importBrowserMetadata#0")),
        passthru(json!({"firstPageReceived": subject, "questionnaireComplete": {"at": "noon"}}))
    );
    assert_eq!(
        result(instance(&st, "t_scoreResponses#0")),
        passthru(json!({
            "t_importSubject": passthru(json!({"firstPageReceived": subject})),
            "questionnaireComplete": {"at": "noon"},
            "scoring": {"model": "Psych 01"}
        }))
    );
}

async fn a_questionnaire_abandoned_before_completion_is_not_scored(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_importSubject": {"after": ["firstPageReceived"], "run": PASSTHRU},
            "t_scoreResponses": {
                "after": ["t_importSubject", "questionnaireComplete"],
                "unless": ["questionnaireAbandoned"],
                "run": PASSTHRU
            },
        }),
    )
    .await;

    fire_and_settle(&engine, S, "firstPageReceived", json!({})).await;
    let abandoned = fire_and_settle(&engine, S, "questionnaireAbandoned", json!({})).await;
    let complete = fire_and_settle(&engine, S, "questionnaireComplete", json!({})).await;

    assert_eq!(abandoned.abandoned, ["t_scoreResponses#0"]);
    assert!(complete.scheduled.is_empty());
    let st = state(&engine, S).await;
    assert_eq!(status(&st, "t_scoreResponses#0"), InstanceStatus::Abandoned);
    assert!(st.unresolved_tasks().is_empty());
}

// ---------------------------------------------------------------------------
// The log: causes, asOf, causedBy, timestamps, reads.
// ---------------------------------------------------------------------------

async fn causes_include_inherited_kwargs_pointing_at_the_original_fires(db: TestDb) {
    // Given an andEvery task whose later instances inherit an earlier fire.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t": {"after": ["settings"], "andEvery": "page", "unless": ["stop", "halt"], "run": EXTERNAL},
        }),
    )
    .await;
    let settings = fire(&engine, S, "settings", json!({"v": 1})).await;
    let page1 = fire(&engine, S, "page", json!({"n": 1})).await;
    let stop = fire(&engine, S, "stop", json!({})).await;
    let page2 = fire(&engine, S, "page", json!({"n": 2})).await;

    // Then each instance's causes are the TriggerFired events its kwargs and
    // abandon state came from, inherited ones included.
    let seqs = |events: Vec<triggers::domain::Event>| -> Vec<u64> {
        assert!(events.iter().all(|e| e.payload.kind() == "TriggerFired"));
        events.iter().map(|e| e.seq).collect()
    };
    assert_eq!(
        seqs(engine.instance_causes(S, "t#0").await.unwrap()),
        [settings.seq, page1.seq]
    );
    assert_eq!(
        seqs(engine.instance_causes(S, "t#1").await.unwrap()),
        [settings.seq, stop.seq, page2.seq]
    );
    let causes = engine.instance_causes(S, "t#1").await.unwrap();
    let settings_event = causes
        .iter()
        .find(|e| e.payload.trigger() == Some("settings"))
        .unwrap();
    assert_eq!(settings_event.caused_by, None);
    assert_eq!(settings_event.payload, settings.event.unwrap().payload);
}

async fn as_of_a_version_is_the_fold_of_the_events_up_to_it(db: TestDb) {
    // Given a session with cascades, failures, abandons and manual changes.
    let engine = db.engine().await;
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
    fire_and_settle(&engine, S, "page", json!({"n": 1})).await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    fire_and_settle(&engine, S, "stop", json!({})).await;
    fire_and_settle(&engine, S, "page", json!({"n": 2})).await;
    engine
        .replay_failed_instance(S, "t_fail#0", None)
        .await
        .unwrap();
    settle(&engine).await;
    engine
        .update_instance_metadata(S, "t_a#0", json!({"note": 1}))
        .await
        .unwrap();

    // Then asOf(k) is exactly the fold of events 1..k, for every k.
    let events = events(&engine, S).await;
    let live = state(&engine, S).await;
    assert_eq!(live.version(), events.len() as u64);
    for k in 0..=events.len() {
        let as_of = engine.session_as_of(S, k as u64).await.unwrap();
        let folded = SessionState::fold(S, &events[..k]).unwrap();
        assert_eq!(as_of.version(), k as u64);
        assert!(as_of == folded, "asOf({k}) differs from the fold of 1..{k}");
    }
    // And at the latest version it is the live state.
    let latest = engine.session_as_of(S, live.version()).await.unwrap();
    assert!(latest == *live, "asOf(latest) differs from the live state");
}

async fn every_derived_event_names_the_event_that_caused_it(db: TestDb) {
    // Given a session with cascades, abandons, failures and self-retries.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "unless": ["stop"], "run": PASSTHRU},
            "t_retry": {"after": ["a"], "run": SELF_RETRYING, "maxRetries": 1},
            "t_fail": {"after": ["a"], "run": FAILING},
        }),
    )
    .await;
    let api_fires = [
        fire_and_settle(&engine, S, "page", json!({"n": 1}))
            .await
            .seq,
        fire_and_settle(&engine, S, "a", json!({})).await.seq,
        fire_and_settle(&engine, S, "stop", json!({})).await.seq,
        fire_and_settle(&engine, S, "page", json!({"n": 2}))
            .await
            .seq,
    ];

    let events = events(&engine, S).await;
    assert_gap_free(&events);
    for e in &events {
        let cause = e.caused_by.map(|c| event(&events, c));
        if let Some(cause) = cause {
            assert!(cause.seq < e.seq, "{e:?} is caused by a later event");
        }
        let cause_kind = cause.map(|c| c.payload.kind());
        match e.payload.kind() {
            "SessionConfigured" => assert_eq!(e.caused_by, None),
            "TriggerFired" if api_fires.contains(&e.seq) => {
                assert_eq!(e.caused_by, None, "an API fire has no cause")
            }
            "TriggerFired" => {
                // A cascade: caused by the InstanceFinished of an instance of that task.
                let cause = cause.expect("a cascade has a cause");
                assert_eq!(cause.payload.kind(), "InstanceFinished", "{e:?}");
                let finished = cause.payload.instance().unwrap();
                let task = state(&engine, S)
                    .await
                    .instance(finished)
                    .unwrap()
                    .task
                    .clone();
                assert_eq!(e.payload.trigger(), Some(task.as_str()));
            }
            "TriggerApplied" => {
                let cause = cause.expect("TriggerApplied has a cause");
                assert_eq!(cause.payload.kind(), "TriggerFired");
                assert_eq!(cause.payload.trigger(), e.payload.trigger());
            }
            "InstanceCreated" => assert!(
                matches!(cause_kind, Some("TriggerFired" | "InstanceReplayed")),
                "{e:?}"
            ),
            "InstanceScheduled" => assert!(
                matches!(cause_kind, Some("TriggerFired" | "InstanceCreated")),
                "{e:?}"
            ),
            "InstanceAbandoned" => assert_eq!(cause_kind, Some("TriggerFired"), "{e:?}"),
            "InstanceStarted" => {
                let cause = cause.expect("a start has a cause");
                assert_eq!(cause.payload.instance(), e.payload.instance());
            }
            "InstanceFinished" | "InstanceFailed" | "InstanceSkipped" => {
                let cause = cause.expect("an outcome has a cause");
                assert_eq!(cause.payload.kind(), "InstanceStarted", "{e:?}");
                assert_eq!(cause.payload.instance(), e.payload.instance());
            }
            "InstanceReplayed" => assert_eq!(cause_kind, Some("InstanceFailed"), "{e:?}"),
            other => panic!("unexpected event kind {other} in this scenario"),
        }
    }
    // The scenario did produce the interesting kinds.
    let seen: BTreeSet<&str> = kinds(&events).into_iter().collect();
    for kind in [
        "TriggerApplied",
        "InstanceCreated",
        "InstanceScheduled",
        "InstanceStarted",
        "InstanceFinished",
        "InstanceFailed",
        "InstanceReplayed",
        "InstanceAbandoned",
    ] {
        assert!(seen.contains(kind), "the scenario should produce {kind}");
    }
}

async fn a_simple_run_appends_the_expected_events(db: TestDb) {
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": PASSTHRU}})).await;

    let fired_a = fire_and_settle(&engine, S, "a", json!({"n": 1})).await;

    let events = events(&engine, S).await;
    assert_eq!(
        kinds(&events),
        [
            "SessionConfigured",
            "TriggerFired",
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished",
            "TriggerFired",
        ]
    );
    let causes: Vec<Option<u64>> = events.iter().map(|e| e.caused_by).collect();
    assert_eq!(
        causes,
        [
            None,
            None,
            Some(2),
            Some(2),
            Some(2),
            Some(5),
            Some(6),
            Some(7)
        ]
    );
    // The API fire's event is what the log holds.
    assert_eq!(fired_a.seq, 2);
    assert_eq!(fired_a.event.as_ref(), Some(&events[1]));
    assert_eq!(events[1].payload.trigger(), Some("a"));
    let data = events[1].payload.to_data();
    assert_eq!(data["kwargs"], json!({"n": 1}));
    assert_eq!(events[7].payload.trigger(), Some("t"));
    assert_eq!(
        events[7].payload.to_data()["kwargs"],
        passthru(json!({"a": {"n": 1}}))
    );
    // History: every event about the instance.
    let history = engine.instance_history(S, "t#0").await.unwrap();
    assert_eq!(
        kinds(&history),
        [
            "InstanceCreated",
            "TriggerApplied",
            "InstanceScheduled",
            "InstanceStarted",
            "InstanceFinished",
        ]
    );
}

async fn status_changes_are_timestamped_in_metadata(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}),
    )
    .await;

    fire(&engine, S, "a", json!({})).await;
    fire_and_settle(&engine, S, "b", json!({})).await;

    let st = state(&engine, S).await;
    let inst = instance(&st, "t#0");
    let stamps = inst.metadata["timestamps"].as_object().expect("timestamps");
    for key in [
        "created",
        "lastModified",
        "scheduled",
        "running",
        "finished",
    ] {
        assert!(
            stamps.contains_key(key),
            "timestamps lack {key}: {stamps:?}"
        );
    }
    let created = ts(inst, "created");
    let scheduled = ts(inst, "scheduled");
    let running = ts(inst, "running");
    let finished = ts(inst, "finished");
    assert!(created <= scheduled && scheduled <= running && running <= finished);
    assert_eq!(ts(inst, "lastModified"), finished);
    // They are the times of the events that changed the status.
    let events = events(&engine, S).await;
    assert_eq!(about(&events, "InstanceFinished", "t#0")[0].at, finished);
    assert_eq!(about(&events, "InstanceCreated", "t#0")[0].at, created);
    assert!(created < scheduled, "b fired after a");
}

async fn events_after_a_version_are_exclusive_and_limited_by_first(db: TestDb) {
    let engine = db.engine().await;
    for n in 0..6 {
        fire(&engine, S, "a", json!({"n": n})).await;
    }

    let page: Vec<u64> = engine
        .events(S, 2, Some(3))
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let rest: Vec<u64> = engine
        .events(S, 4, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();

    assert_eq!(page, [3, 4, 5]);
    assert_eq!(rest, [5, 6]);
    assert!(engine.events(S, 6, None).await.unwrap().is_empty());
}

async fn a_session_never_used_is_empty_and_readable(db: TestDb) {
    let engine = db.engine().await;
    fire(&engine, "someone-else", "a", json!({})).await;

    let st = state(&engine, "nobody").await;

    assert_eq!(st.version(), 0);
    assert_eq!(st.tasks().count(), 0);
    assert!(st.instances().is_empty());
    assert!(st.unresolved_tasks().is_empty());
    assert!(st.latest_kwargs().is_empty());
    assert!(st.instance("t#0").is_none() && st.task("t").is_none());
    assert!(events(&engine, "nobody").await.is_empty());
    assert!(engine
        .instance_history("nobody", "t#0")
        .await
        .unwrap()
        .is_empty());
    assert!(engine.session_as_of("nobody", 0).await.unwrap() == SessionState::new("nobody"));
    let listed: Vec<String> = engine
        .sessions(100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.uid)
        .collect();
    assert_eq!(
        listed,
        ["someone-else"],
        "reading a session does not create it"
    );
}

async fn sessions_and_instances_are_listed_across_sessions(db: TestDb) {
    let engine = db.engine().await;
    for uid in ["s:1", "s:2", "s:3"] {
        configure(
            &engine,
            uid,
            json!({"t_ok": {"after": ["a"], "run": DEVNULL}, "t_bad": {"after": ["a"], "run": FAILING}}),
        )
        .await;
        fire(&engine, uid, "a", json!({})).await;
    }
    settle(&engine).await;

    let first_two = engine.sessions(2, None).await.unwrap();
    let rest = engine.sessions(2, Some("s:2")).await.unwrap();
    let failed = engine
        .instances(&[InstanceStatus::Failed], None, 100, None)
        .await
        .unwrap();
    let ok_page = engine.instances(&[], Some("t_ok"), 2, None).await.unwrap();
    let ok_rest = engine
        .instances(&[], Some("t_ok"), 2, Some(("s:2", "t_ok#0")))
        .await
        .unwrap();

    let uids: Vec<&str> = first_two.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(uids, ["s:1", "s:2"]);
    let uids: Vec<&str> = rest.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(uids, ["s:3"]);
    let s1 = state(&engine, "s:1").await;
    assert_eq!(first_two[0].version, s1.version());
    let failed: Vec<(&str, &str)> = failed
        .iter()
        .map(|r| (r.session.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        failed,
        [("s:1", "t_bad#0"), ("s:2", "t_bad#0"), ("s:3", "t_bad#0")]
    );
    let ok: Vec<(&str, InstanceStatus)> = ok_page
        .iter()
        .chain(ok_rest.iter())
        .map(|r| (r.session.as_str(), r.status))
        .collect();
    assert_eq!(
        ok,
        [
            ("s:1", InstanceStatus::Finished),
            ("s:2", InstanceStatus::Finished),
            ("s:3", InstanceStatus::Finished)
        ]
    );
    // The listing holds the same instance as the session.
    let row = &ok_page[0];
    let inst: triggers::domain::Instance = serde_json::from_str(&row.body).unwrap();
    assert_eq!(&inst, instance(&s1, "t_ok#0"));
}

async fn rebuild_recomputes_the_same_state_from_the_log(db: TestDb) {
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "run": PASSTHRU},
            "t_queued": {"after": ["a"], "run": EXTERNAL},
        }),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    fire_and_settle(&engine, S, "page", json!({})).await;
    configure(
        &engine,
        "other",
        json!({"t": {"after": ["x"], "run": FAILING}}),
    )
    .await;
    fire_and_settle(&engine, "other", "x", json!({})).await;
    let before = state(&engine, S).await;
    let listed_before = engine.instances(&[], None, 100, None).await.unwrap();

    let report = engine.rebuild().await.unwrap();

    assert_eq!(report.sessions, 2);
    assert_eq!(
        report.events,
        before.version() + state(&engine, "other").await.version()
    );
    assert_eq!(report.instances, before.instances().len() + 1);
    assert_eq!(report.queued, 1, "only the worker instance is queued");
    engine.clear_cache();
    let after = state(&engine, S).await;
    assert!(*after == *before, "rebuild changed the state");
    let listed_after = engine.instances(&[], None, 100, None).await.unwrap();
    let key = |rows: &[triggers::store::InstanceRow]| -> Vec<(String, String, InstanceStatus)> {
        rows.iter()
            .map(|r| (r.session.clone(), r.name.clone(), r.status))
            .collect()
    };
    assert_eq!(key(&listed_after), key(&listed_before));
}

async fn the_database_is_isolated_per_test(db: TestDb) {
    let engine = db.engine().await;
    fire(&engine, S, "a", json!({})).await;
    assert_eq!(
        state(&engine, S).await.version(),
        1,
        "the database starts empty"
    );
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            assert!(std::path::Path::new(path).exists());
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let schema = db.schema.clone().unwrap();
            let mut conn = sqlx::PgConnection::connect(db.admin_url.as_deref().unwrap())
                .await
                .unwrap();
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(&schema)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let tables: BTreeSet<String> = tables.into_iter().map(|(t,)| t).collect();
            assert!(
                tables.contains("_sqlx_migrations") && tables.len() > 1,
                "migrations and tables land in the test schema {schema}: {tables:?}"
            );
        }
    }
}

async fn a_repeated_idempotency_key_answers_with_the_first_fire_whatever_is_fired(db: TestDb) {
    // Given a keyed fire that abandoned an instance.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({"t": {"after": ["a", "b"], "unless": ["stop"], "run": PASSTHRU}}),
    )
    .await;
    fire(&engine, S, "a", json!({})).await;
    let first = engine
        .fire(S, "stop", obj(json!({"why": "user"})), Some("cancel-1"))
        .await
        .unwrap();
    assert_eq!(first.abandoned, ["t#0"]);
    let version = state(&engine, S).await.version();

    // When the key is used again, for another trigger.
    let again = engine
        .fire(S, "b", obj(json!({})), Some("cancel-1"))
        .await
        .unwrap();

    // Then the answer is the first fire's, consistently, and nothing was written.
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.abandoned, ["t#0"]);
    assert_eq!(
        again.event.as_ref().and_then(|e| e.payload.trigger()),
        Some("stop")
    );
    assert_eq!(
        again.trigger, "stop",
        "FireResult.trigger must name the trigger of the event it returns"
    );
    assert_eq!(state(&engine, S).await.version(), version);
    assert!(state(&engine, S).await.latest_kwargs().get("b").is_none());
}

async fn kwargs_round_trip_through_the_log_exactly(db: TestDb) {
    // Given kwargs with awkward values.
    let engine = db.engine().await;
    configure(&engine, S, json!({"t": {"after": ["a"], "run": PASSTHRU}})).await;
    let kwargs = json!({
        "nul": "a\u{0}b",
        "unicode": "Grüße, 世界 🎉",
        "quotes": "it's \"quoted\" \\ back\\slashed",
        "big": u64::MAX,
        "small": i64::MIN,
        "float": 0.1,
        "exp": 1.5e300,
        "bools": [true, false, null],
        "empty": {},
        "nested": {"deeper": {"deepest": [[], [{}]]}},
        "": "empty key"
    });

    // When it is fired, run, and read back from the log alone.
    fire_and_settle(&engine, S, "a", kwargs.clone()).await;
    engine.clear_cache();
    let st = state(&engine, S).await;

    // Then every value is what was fired.
    assert_eq!(st.latest_kwargs()["a"], kwargs);
    assert_eq!(result(instance(&st, "t#0")), passthru(json!({"a": kwargs})));
    let events = events(&engine, S).await;
    assert_eq!(fired(&events, "a")[0].payload.to_data()["kwargs"], kwargs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_engine_runs_a_session_end_to_end() {
    // Given an engine on a private in-memory SQLite database.
    let engine = Engine::builder("sqlite::memory:")
        .options(test_options())
        .open()
        .await
        .unwrap();
    configure(
        &engine,
        S,
        json!({
            "t_a": {"after": ["a"], "run": PASSTHRU},
            "t_b": {"after": ["t_a"], "andEvery": "page", "run": PASSTHRU},
        }),
    )
    .await;

    // When triggers fire, concurrently with reads.
    let reader = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                engine.session(S).await.unwrap();
                engine.events(S, 0, None).await.unwrap();
            }
        })
    };
    fire(&engine, S, "a", json!({})).await;
    for n in 0..5 {
        fire(&engine, S, "page", json!({"n": n})).await;
    }
    settle(&engine).await;
    reader.await.unwrap();

    // Then everything ran, and the log explains it.
    let st = state(&engine, S).await;
    assert_eq!(st.instances().len(), 6);
    assert!(st
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Finished));
    let events = events(&engine, S).await;
    assert_gap_free(&events);
    assert!(SessionState::fold(S, &events).unwrap() == *st);
}

async fn every_status_reached_is_timestamped(db: TestDb) {
    // Given instances that fail, get replayed, skipped and abandoned.
    let engine = db.engine().await;
    configure(
        &engine,
        S,
        json!({
            "t_fail": {"after": ["a"], "run": FAILING},
            "t_skip": {"after": ["a"], "run": FAILING},
            "t_gone": {"after": ["never"], "unless": ["a"], "run": DEVNULL},
        }),
    )
    .await;
    fire_and_settle(&engine, S, "a", json!({})).await;
    engine
        .replay_failed_instance(S, "t_fail#0", None)
        .await
        .unwrap();
    engine
        .skip_failed_instance(S, "t_skip#0", false, None)
        .await
        .unwrap();
    settle(&engine).await;

    // Then each status it reached has a timestamp, and lastModified is the latest.
    let st = state(&engine, S).await;
    let expectations = [
        (
            "t_fail#0",
            &["created", "scheduled", "running", "failed", "replayed"][..],
        ),
        (
            "t_skip#0",
            &["created", "scheduled", "running", "failed", "skipped"][..],
        ),
        ("t_gone#0", &["created", "abandoned"][..]),
        (
            "t_fail#1",
            &["created", "scheduled", "running", "failed"][..],
        ),
    ];
    for (name, keys) in expectations {
        let inst = instance(&st, name);
        let stamps: Vec<DateTime<Utc>> = keys.iter().map(|k| ts(inst, k)).collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "{name}: {keys:?} are not in order: {stamps:?}"
        );
        assert_eq!(ts(inst, "lastModified"), *stamps.last().unwrap(), "{name}");
    }
}

/// An instance's timestamp for `key`.
fn ts(inst: &triggers::domain::Instance, key: &str) -> DateTime<Utc> {
    let raw = inst.metadata["timestamps"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no timestamp {key}", inst.name));
    DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("timestamp {key} = {raw:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

on_both_backends!(
    a_one_shot_task_fired_twice_has_one_instance,
    a_second_firing_does_not_overwrite_the_kwargs_an_unstarted_instance_holds,
    an_and_every_task_with_no_other_trigger_runs_once_per_firing,
    an_and_every_task_waits_for_its_other_after_triggers,
    new_instances_capture_the_latest_kwargs_of_the_other_triggers,
    a_task_configured_after_a_fire_inherits_it_when_another_trigger_creates_its_instance,
    configure_never_re_applies_earlier_fires_nor_creates_instances,
    configuring_replaces_tasks_of_the_same_name_and_keeps_the_others,
    unknown_directives_are_kept_verbatim_as_extras,
    a_fire_no_task_listens_to_is_still_recorded,
    an_unless_trigger_abandons_an_unstarted_instance,
    an_unless_trigger_fired_first_abandons_the_instance_it_creates,
    an_instance_is_abandoned_only_once_all_its_unless_triggers_fired,
    an_and_every_task_abandons_every_later_instance_once_its_unless_fired,
    an_unless_trigger_does_not_affect_an_instance_that_already_started,
    abandoning_wins_when_after_and_unless_complete_together,
    with_params_are_deep_merged_under_the_trigger_kwargs,
    with_params_merge_under_cascaded_results,
    a_finished_one_shot_task_cascades_into_an_and_every_task,
    finished_and_every_instances_cascade_into_a_one_shot_task_once,
    complex_and_redundant_triggers_are_normalised_and_applied_once,
    a_failing_job_fails_its_instance_with_its_exception,
    replaying_a_failed_instance_runs_a_clone_with_the_same_kwargs,
    a_replayed_clone_can_fail_and_be_replayed_again,
    replay_uses_the_tasks_current_configuration,
    replaying_with_replacement_kwargs_replaces_them_whole,
    a_replay_keeps_the_abandon_state,
    skipping_a_failed_instance_without_cascade_resolves_it_quietly,
    skipping_a_failed_instance_with_cascade_fires_the_task_with_the_result,
    a_job_can_skip_itself,
    a_self_retrying_job_retries_up_to_the_default_max_retries,
    a_self_retrying_job_stops_at_its_own_limit,
    asking_to_retry_beyond_max_retries_fails_with_max_retries_exceeded,
    a_retry_can_replace_kwargs_and_wait_a_cooldown,
    an_operator_can_set_any_status_and_merge_metadata,
    setting_a_status_with_cascade_fires_the_task_name,
    updating_metadata_merges_it_and_bumps_only_last_modified,
    marking_logs_resolved_takes_an_instance_off_the_unresolved_logs,
    the_unresolved_queries_answer_what_still_needs_attention,
    an_error_logged_by_a_finished_job_needs_attention,
    repeating_an_idempotency_key_returns_the_first_result_and_appends_nothing,
    a_repeated_idempotency_key_answers_with_the_first_fire_whatever_is_fired,
    kwargs_round_trip_through_the_log_exactly,
    a_task_whose_handler_is_not_registered_waits_in_the_worker_queue,
    a_job_returning_something_other_than_an_object_fails_its_instance,
    a_handler_that_panics_fails_its_instance,
    a_custom_handler_receives_the_job_it_runs,
    the_questionnaire_example_runs_end_to_end,
    a_questionnaire_abandoned_before_completion_is_not_scored,
    causes_include_inherited_kwargs_pointing_at_the_original_fires,
    as_of_a_version_is_the_fold_of_the_events_up_to_it,
    every_derived_event_names_the_event_that_caused_it,
    a_simple_run_appends_the_expected_events,
    status_changes_are_timestamped_in_metadata,
    every_status_reached_is_timestamped,
    events_after_a_version_are_exclusive_and_limited_by_first,
    a_session_never_used_is_empty_and_readable,
    sessions_and_instances_are_listed_across_sessions,
    rebuild_recomputes_the_same_state_from_the_log,
    the_database_is_isolated_per_test,
);
