//! Session, task and trigger names (fuzz class 4).

use super::*;

on_both_backends!(random_names_are_stored_verbatim_or_refused_with_a_code,);

/// Names: empty, whitespace, unicode, meta-characters, NUL, or long (on both
/// sides of the 512-byte limit, compressible or not).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => "[ \t\n]{1,4}",
        4 => "\\PC{1,24}",
        1 => Just("e\u{301}\u{202e}\u{200b}\u{1f600}".to_owned()),
        1 => Just("'; DROP TABLE events; --".to_owned()),
        1 => Just("%".to_owned()),
        1 => Just("_".to_owned()),
        1 => Just("\\".to_owned()),
        1 => "[a-z]{0,3}\u{0}[a-z]{0,3}",
        1 => "\\PC{100,200}",
        1 => "\\PC{400,1500}",
        1 => (500usize..530).prop_map(|n| "n".repeat(n)),
        1 => (1_000usize..4_000).prop_map(|n| "n".repeat(n)),
    ]
}

/// Whether `name` can name a session, task or trigger.
fn is_name(name: &str) -> bool {
    name_problem("name", name).is_none()
}

async fn random_names_are_stored_verbatim_or_refused_with_a_code(db: TestDb) {
    let app = spawn_app(&db).await;
    let strategy = (name(), name(), name());
    fuzz(
        &db,
        "session/task/trigger names",
        150,
        strategy,
        |(session, task, trigger)| {
            let app = &app;
            async move {
                app.settle().await;
                let read = "query($s: String!) { session(uid: $s) { version } }";
                if !is_name(&session) {
                    let answer = request(app, read, json!({"s": session})).await;
                    assert_eq!(
                        answer.refusal(),
                        Some((200, "BAD_INPUT")),
                        "session: {answer:?}"
                    );
                }
                let before = if is_name(&session) {
                    version(app, &session).await
                } else {
                    0
                };
                let configure = request(
                app,
                CONFIGURE,
                json!({"s": session, "t": {task.clone(): {"after": [trigger], "run": DEVNULL}}}),
            )
            .await;
                let expected = if !is_name(&session) {
                    Some((200, "BAD_INPUT"))
                } else if !is_name(&task) || !is_name(&trigger) {
                    Some((200, "BAD_CONFIGURATION"))
                } else {
                    None
                };
                assert_eq!(configure.refusal(), expected, "configure: {configure:?}");
                let fire = request(app, FIRE, json!({"s": session, "t": trigger, "k": {}})).await;
                let expected =
                    (!is_name(&session) || !is_name(&trigger)).then_some((200, "BAD_INPUT"));
                assert_eq!(fire.refusal(), expected, "fire: {fire:?}");
                if !is_name(&session) {
                    return configure;
                }
                app.settle().await;
                let after = version(app, &session).await;
                if configure.refusal().is_some() && fire.refusal().is_some() {
                    assert_eq!(after, before, "refusals wrote");
                    return configure;
                }
                assert!(after > before);
                if configure.refusal().is_none() {
                    check_named(app, &session, &task, &trigger, after).await;
                }
                configure
            }
        },
    );
}

/// The session, its task and the task's first instance read back under their
/// own names, in the session and in the listings across sessions.
async fn check_named(app: &TestApp, session: &str, task: &str, trigger: &str, version: u64) {
    let instance = format!("{task}#0");
    let answer = request(
        app,
        "query($s: String!, $t: String!, $i: String!) {
           session(uid: $s) { uid version task(name: $t) { name after } instance(name: $i) { name task session } }
           instances(task: $t, first: 1000) { session name }
           sessions(first: 1000) { uid version }
         }",
        json!({"s": session, "t": task, "i": instance}),
    )
    .await;
    let data = answer.data();
    let read = &data["session"];
    assert_eq!(read["uid"], session);
    assert_eq!(read["version"], version);
    assert_eq!(read["task"], json!({"name": task, "after": [trigger]}));
    assert_eq!(
        read["instance"],
        json!({"name": instance, "task": task, "session": session}),
        "the fire made {instance:?}"
    );
    let listed: Vec<&Value> = data["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["session"] == session)
        .collect();
    assert_eq!(listed, [&json!({"session": session, "name": instance})]);
    let sessions: Vec<&Value> = data["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["uid"] == session)
        .collect();
    assert_eq!(sessions, [&json!({"uid": session, "version": version})]);
}
