//! `withParams` and cascades: kwargs merged under params, finished tasks firing their own name.

use crate::support::*;
use serde_json::json;
use triggers::domain::InstanceStatus;

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

on_both_backends!(
    with_params_are_deep_merged_under_the_trigger_kwargs,
    with_params_merge_under_cascaded_results,
    a_finished_one_shot_task_cascades_into_an_and_every_task,
    finished_and_every_instances_cascade_into_a_one_shot_task_once,
    complex_and_redundant_triggers_are_normalised_and_applied_once,
);
