//! Firing: one-shot and `andEvery` tasks, and the kwargs their instances capture.

use crate::scenario::Scenario;
use crate::support::*;
use serde_json::{json, Value};
use triggers::domain::InstanceStatus;
use triggers::testkit::names::{self, trigger, uid};

async fn a_one_shot_task_fired_twice_has_one_instance(db: TestDb) {
    // Given a one-shot task.
    let engine = db
        .engine_configured(S, json!({"t_import": {"after": ["a"], "run": PASSTHRU}}))
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
    let engine = db
        .engine_configured(S, json!({"t": {"after": ["a", "b"], "run": PASSTHRU}}))
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
    let engine = db
        .engine_configured(
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
    let engine = db
        .engine_configured(
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
    let engine = db
        .engine_configured(
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
        .instance_causes(&uid(S), &names::instance("t#0"))
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
    let s = Scenario::on(db.engine().await)
        .given(json!({
            "t_one": {"after": ["a"], "run": PASSTHRU, "description": "first version"},
            "t_two": {"after": ["b"], "run": DEVNULL},
        }))
        .when_fired(&["a"])
        .await;
    let engine = s.engine();

    // When t_one alone is configured again.
    configure(
        engine,
        S,
        json!({"t_one": {"after": ["c"], "run": DEVNULL, "maxRetries": 7}}),
    )
    .await;

    // Then t_one is replaced, t_two kept, and the instance of t_one kept.
    let st = s.state().await;
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
    engine
        .fire_json(&uid(S), &trigger("bare"), None, None)
        .await
        .unwrap();
    engine
        .fire_json(&uid(S), &trigger("null"), Some(Value::Null), None)
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
);
