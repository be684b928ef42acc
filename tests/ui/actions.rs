//! What an operator does through the pages: Replay and Skip a failed
//! instance (each confirmed in an in-page dialog, the server's state checked
//! after), the token gate, and GraphiQL served by the binary.

use serde_json::json;

use triggers::testkit::{spawn_app, spawn_app_with_token, TestApp, TestDb};

use crate::browser::Browser;
use crate::pages::{instance_url, story, Run, STORY};

const TOKEN: &str = "correct horse battery staple";

async fn instance_state(app: &TestApp, name: &str) -> serde_json::Value {
    app.data(
        "query($s: String!, $n: String!) { session(uid: $s) { version instance(name: $n) { status kwargs clones { name kwargs } } } }",
        json!({"s": STORY, "n": name}),
    )
    .await["session"]
        .clone()
}

async fn open_failed(b: &Browser, app: &TestApp) {
    b.open(&instance_url(app, STORY, "t_fail#0")).await;
    b.wait_js(
        "the failed instance",
        "return document.querySelector('#failure #replay')",
    )
    .await;
}

pub(crate) fn replay(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        open_failed(b, &app).await;
        assert_eq!(b.text("#exception-type").await, "triggers.testing.Failure");
        assert!(b
            .text("#traceback")
            .await
            .contains("always fails (instance t_fail#0)"));
        b.screenshot("failed-instance").await;
        let version = app.version(STORY).await;

        // Not JSON, then not an object: refused in the page, nothing sent.
        b.type_into("#replay-kwargs", "{\"firstPageReceived\": ")
            .await;
        b.click("#replay").await;
        b.wait_js(
            "the JSON error",
            "return document.querySelector('#replay-error .error')",
        )
        .await;
        assert!(b.text("#replay-error").await.contains("not valid JSON"));
        b.type_into("#replay-kwargs", "[1, 2]").await;
        b.click("#replay").await;
        b.wait_js(
            "the object error",
            "return document.querySelector('#replay-error').innerText.includes('JSON object')",
        )
        .await;
        assert_eq!(
            b.js("return document.querySelector('dialog') === null")
                .await,
            json!(true)
        );

        // Cancelled in the dialog: nothing written.
        let kwargs = json!({"firstPageReceived": {"page": 2}});
        b.type_into("#replay-kwargs", &kwargs.to_string()).await;
        b.click("#replay").await;
        b.wait_js(
            "the dialog",
            "return document.querySelector('dialog[open]')",
        )
        .await;
        assert!(b.text("dialog").await.contains("Replay t_fail#0?"));
        b.click("dialog [data-action=cancel]").await;
        b.wait_js(
            "the dialog closed",
            "return document.querySelector('dialog') === null",
        )
        .await;
        assert_eq!(app.version(STORY).await, version);

        // Confirmed: the clone, with the edited kwargs.
        b.click("#replay").await;
        b.wait_js(
            "the dialog",
            "return document.querySelector('dialog[open]')",
        )
        .await;
        b.click("dialog [data-action=confirm]").await;
        let outcome = b.wait_js("the outcome", "return document.querySelector('#outcome') && document.querySelector('#outcome').innerText").await;
        assert!(
            outcome.as_str().unwrap().contains("Replayed as t_fail#1"),
            "{outcome}"
        );
        let state = instance_state(&app, "t_fail#0").await;
        assert_eq!(state["instance"]["status"], "REPLAYED");
        assert_eq!(state["instance"]["clones"][0]["name"], "t_fail#1");
        assert_eq!(state["instance"]["clones"][0]["kwargs"], kwargs);
        b.wait_js(
            "the clone link",
            "return document.querySelector('#header a.clone')",
        )
        .await;

        // Replaying it again: the server refuses; the page says why.
        app.settle().await;
        app.wait_quiet(STORY).await;
        b.open(&instance_url(&app, STORY, "t_fail#1")).await;
        b.wait_js(
            "the clone's page",
            "return document.querySelector('#parent')",
        )
        .await;
        assert_eq!(b.text("#parent").await, "t_fail#0");
    })
}

pub(crate) fn skip(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        open_failed(b, &app).await;
        b.click("#skip-cascade").await;
        b.type_into("#skip-result", "{\"imported\": 0}").await;
        b.click("#skip").await;
        b.wait_js(
            "the dialog",
            "return document.querySelector('dialog[open]')",
        )
        .await;
        assert!(b
            .text("dialog")
            .await
            .contains("t_fail is fired with this result"));
        b.click("dialog [data-action=confirm]").await;
        let outcome = b.wait_js("the outcome", "return document.querySelector('#outcome') && document.querySelector('#outcome').innerText").await;
        assert!(
            outcome
                .as_str()
                .unwrap()
                .contains("t_fail#0 is skipped; t_fail fired"),
            "{outcome}"
        );
        let state = instance_state(&app, "t_fail#0").await;
        assert_eq!(state["instance"]["status"], "SKIPPED");
        let fired = app.read_session(STORY, "latestKwargs").await;
        assert_eq!(
            fired["session"]["latestKwargs"]["t_fail"],
            json!({"imported": 0})
        );
        // A skipped instance offers no action any more.
        assert_eq!(
            b.js("return document.querySelector('#skip') === null")
                .await,
            json!(true)
        );
        // The server's refusal is shown with its code: skip it in another tab's place.
        let (code, _) = app
            .error(
                "mutation($s: String!) { skipFailedInstance(session: $s, instance: \"t_fail#0\") { name } }",
                json!({"s": STORY}),
            )
            .await;
        assert_eq!(code, "INVALID_STATE");
    })
}

pub(crate) fn token(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app_with_token(&db, TOKEN).await;
        story(&app).await;
        let version = app.version(STORY).await;
        for page in [app.url("/ui/"), crate::pages::session_url(&app, STORY, "")] {
            b.open(&page).await;
            b.wait_js(
                "the token form",
                "return document.querySelector('#token-form')",
            )
            .await;
            let shown = b.text("body").await;
            assert!(
                !shown.contains(STORY) && !shown.contains("t_fail"),
                "nothing before the token: {shown}"
            );
            let source = b.js("return document.documentElement.outerHTML").await;
            assert!(
                !source.as_str().unwrap().contains("t_fail"),
                "no session data in the page"
            );
        }
        b.screenshot("token").await;
        b.assert_same_origin(&app.address).await;
        // A wrong token: refused, still nothing.
        b.type_into("#token", "wrong").await;
        b.click("#token-form button[type=submit]").await;
        b.wait_js(
            "the refusal",
            "return document.querySelector('#token-form .error')",
        )
        .await;
        assert!(!b.text("body").await.contains("t_fail"));
        // The right one: the page, with live updates over the WebSocket.
        b.type_into("#token", TOKEN).await;
        b.click("#token-form button[type=submit]").await;
        crate::pages::session_ready(b).await;
        assert_eq!(b.text("#version").await, version.to_string());
        b.wait_js(
            "the live stream",
            "return document.querySelector('#live.on')",
        )
        .await;
        app.fire(STORY, "questionnaireComplete", json!({})).await;
        b.wait_js(
            "a live event",
            &format!(
                "return Number(document.querySelector('#event-rows tr').dataset.seq) > {version}"
            ),
        )
        .await;
        // Kept for this tab's session: another page needs no new token.
        b.open(&app.url("/ui/")).await;
        b.wait_js("the list", "return document.querySelector('#sessions')")
            .await;
        assert!(b.js("return sessionStorage.length").await == json!(1));
        // And forgotten on request.
        b.click("#nav-token button").await;
        b.wait_js(
            "the token form again",
            "return document.querySelector('#token-form')",
        )
        .await;
        assert!(b.js("return sessionStorage.length").await == json!(0));
    })
}

pub(crate) fn graphiql(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        app.configure("g:1", json!({"t": {"after": ["go"], "run": "x"}}))
            .await;
        b.open(&app.url("/graphql")).await;
        b.wait_js(
            "GraphiQL",
            "return document.querySelector('.graphiql-container .graphiql-execute-button')",
        )
        .await;
        b.click(".graphiql-execute-button").await;
        let result = b
            .wait_js("the result", "const r = document.querySelector('.result-window'); return r && r.innerText.includes('g:1') && r.innerText")
            .await;
        assert!(result.as_str().unwrap().contains("recentSessions"));
        b.screenshot("graphiql").await;
        // A subscription goes over the WebSocket of the same /graphql.
        b.js("document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue('subscription { sessionEvents(session: \"g:1\") { seq kind } }'); return true").await;
        // GraphiQL reads the edited document after a short debounce.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        b.click(".graphiql-execute-button").await;
        b.wait_js(
            "the subscription's first event",
            "const r = document.querySelector('.result-window'); return r && r.innerText.includes('SessionConfigured')",
        )
        .await;
        b.assert_same_origin(&app.address).await;
    })
}
