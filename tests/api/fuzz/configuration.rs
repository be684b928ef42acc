//! Configuration documents (fuzz class 1).

use super::*;

on_both_backends!(random_configuration_documents_are_applied_whole_or_refused_with_a_code,);

/// What `configure` must answer for `document`, judged by the edge limits and
/// the parser itself.
fn expected_configure(body: &[u8], document: &Value) -> Option<(u16, String)> {
    if let Some((status, code)) = edge_refusal(body) {
        return Some((status, code.to_owned()));
    }
    if over_json_limits(document) {
        return Some((200, "BAD_INPUT".to_owned()));
    }
    configuration_error(document).map(|_| (200, "BAD_CONFIGURATION".to_owned()))
}

/// Why `configure` refuses `document` as `BAD_CONFIGURATION`: what the parser
/// says, or (once parsed) the first task, in name order, that asks for the
/// inline runner without a registered handler (only the built-in
/// `triggers.testing.*` handlers are).
fn configuration_error(document: &Value) -> Option<String> {
    let tasks = match parse_tasks(document) {
        Ok(tasks) => tasks,
        Err(DomainError::BadConfiguration(message)) => return Some(message),
        Err(other) => panic!("the parser refused with {other:?}"),
    };
    let registered = [
        "PassThru",
        "DevNull",
        "Failing",
        "SelfSkipping",
        "SelfRetrying",
    ]
    .map(|h| format!("triggers.testing.{h}"));
    tasks
        .iter()
        .find(|(_, task)| task.using.as_deref() == Some("inline") && !registered.contains(&task.run))
        .map(|(name, task)| {
            format!(
                "task {name:?}: directive \"using\" is \"inline\" but no handler named {:?} is registered",
                task.run
            )
        })
}

async fn random_configuration_documents_are_applied_whole_or_refused_with_a_code(db: TestDb) {
    let app = spawn_app(&db).await;
    let strategy = (0..3usize, tasks_document());
    let tally = fuzz(
        &db,
        "configure documents",
        300,
        strategy,
        |(n, document)| {
            let app = &app;
            async move {
                let session = format!("fuzz:configure:{n}");
                let before = version(app, &session).await;
                let body = serde_json::to_vec(
                    &json!({"query": CONFIGURE, "variables": {"s": session, "t": document}}),
                )
                .unwrap();
                let expected = expected_configure(&body, &document);
                let answer = send(app, body).await;
                assert_eq!(
                    answer.refusal().map(|(s, c)| (s, c.to_owned())),
                    expected,
                    "configure answered {answer:?}"
                );
                if let Some((_, code)) = answer.refusal() {
                    if code == "BAD_CONFIGURATION" {
                        let message = configuration_error(&document);
                        assert_eq!(Some(answer.message()), message.as_deref(), "the message");
                    }
                    assert_eq!(version(app, &session).await, before, "a refusal wrote");
                    return answer;
                }
                assert_eq!(answer.data()["configure"]["version"], before + 1);
                check_configured(app, &session, before, &document).await;
                answer
            }
        },
    );
    assert!(tally.0.contains_key("accepted") && tally.0.contains_key("BAD_CONFIGURATION"));
}

/// After an accepted configure, read back from the database (not the cache):
/// one `SessionConfigured` event, and each task exactly as parsed.
async fn check_configured(app: &TestApp, session: &str, before: u64, document: &Value) {
    let parsed = parse_tasks(document).unwrap();
    app.engine.clear_cache();
    let names: Vec<&String> = parsed.keys().collect();
    let selections: String = (0..names.len())
        .map(|i| {
            format!(
                "t{i}: task(name: $n{i}) {{ name after andEvery unless run using maxRetries withParams extras }} "
            )
        })
        .collect();
    let declarations: String = (0..names.len())
        .map(|i| format!(", $n{i}: String!"))
        .collect();
    let query = format!(
        "query($s: String!, $v: Int!{declarations}) {{ session(uid: $s) {{ version events(after: $v) {{ kind }} {selections} }} }}"
    );
    let mut variables = json!({"s": session, "v": before});
    for (i, name) in names.iter().enumerate() {
        variables[format!("n{i}")] = json!(name);
    }
    let answer = request(app, &query, variables).await;
    let read = &answer.data()["session"];
    assert_eq!(read["version"], before + 1);
    assert_eq!(read["events"], json!([{"kind": "SessionConfigured"}]));
    for (i, (name, task)) in parsed.iter().enumerate() {
        let got = &read[format!("t{i}")];
        let expected = json!({
            "name": name,
            "after": task.after,
            "andEvery": task.and_every,
            "unless": task.unless,
            "run": task.run,
            "using": task.using,
            "maxRetries": task.max_retries,
            "withParams": task.with_params,
            "extras": task.extras,
        });
        assert!(
            got == &expected,
            "task {name:?} reads back as {got}, expected {expected}"
        );
    }
}
