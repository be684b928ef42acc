//! The pages: the sessions list, a session (tasks, instances, timeline,
//! event log, cause links), live updates, time travel and an instance's
//! "why it ran".

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};

use triggers::testkit::{spawn_app, TestApp, TestDb, DEVNULL, FAILING, PASSTHRU};

use crate::browser::Browser;

pub(crate) type Run<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The session most scenarios look at.
pub(crate) const STORY: &str = "questionnaire/7 #é";

/// Configures and fires `STORY` so that it holds a finished instance, a
/// failed one, one waiting for a trigger, and one run by a cascade.
pub(crate) async fn story(app: &TestApp) {
    app.configure(
        STORY,
        json!({
            "t_import": {"after": ["firstPageReceived"], "run": PASSTHRU},
            "t_fail": {"after": ["firstPageReceived"], "run": FAILING},
            "t_wait": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PASSTHRU, "using": "inline"},
            "t_next": {"after": ["t_import"], "run": DEVNULL},
        }),
    )
    .await;
    app.fire(STORY, "firstPageReceived", json!({"page": 1}))
        .await;
    app.settle().await;
    app.wait_quiet(STORY).await;
}

/// `/ui/sessions/<uid>` as the UI links it.
pub(crate) fn session_url(app: &TestApp, uid: &str, query: &str) -> String {
    app.url(&format!("/ui/sessions/{}{query}", encode(uid)))
}

pub(crate) fn instance_url(app: &TestApp, uid: &str, name: &str) -> String {
    app.url(&format!(
        "/ui/sessions/{}/instances/{}",
        encode(uid),
        encode(name)
    ))
}

/// Percent-encodes one path segment (what `encodeURIComponent` does).
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Waits for the session page to have drawn its event log.
pub(crate) async fn session_ready(b: &Browser) {
    b.wait_js(
        "the session page",
        "return document.querySelector('#events-status') && document.querySelector('#events-status').textContent",
    )
    .await;
}

pub(crate) fn list(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        // An honest empty state first.
        b.open(&app.url("/")).await;
        b.wait_js("the empty list", "return document.querySelector('#empty')")
            .await;
        assert!(
            b.js("return location.pathname").await == "/ui/",
            "/ leads to /ui/"
        );
        assert!(b.text("#empty").await.contains("No sessions yet"));

        // 27 sessions: a page of 25, then 2; the last configured is first.
        for n in 0..27 {
            app.configure(
                &format!("s:{n:02}"),
                json!({"t": {"after": ["go"], "run": PASSTHRU}}),
            )
            .await;
        }
        app.configure("other:1", json!({"t": {"after": ["go"], "run": FAILING}}))
            .await;
        app.fire("other:1", "go", json!({})).await;
        app.settle().await;
        app.wait_quiet("other:1").await;
        b.open(&app.url("/ui/")).await;
        b.wait_js(
            "the list",
            "return document.querySelectorAll('#sessions tbody tr').length === 25",
        )
        .await;
        let uids = b.texts("#sessions tbody tr td:first-child a.uid").await;
        assert_eq!(uids[0], "other:1", "most recently updated first");
        assert_eq!(uids[1], "s:26");
        assert_eq!(uids[24], "s:03");
        let failed_row = b.text("#sessions tbody tr:first-child").await;
        assert!(
            failed_row.contains("1 failed"),
            "a failed session stands out: {failed_row}"
        );
        assert!(b.js("return document.querySelector('#sessions tbody tr').classList.contains('is-failed')").await == json!(true));
        assert!(b
            .text("#sessions tbody tr:nth-child(2)")
            .await
            .contains("no instances"));
        b.screenshot("list").await;
        b.assert_same_origin(&app.address).await;

        b.click("#next").await;
        b.wait_js(
            "page 2",
            "return document.querySelectorAll('#sessions tbody tr').length === 3",
        )
        .await;
        assert_eq!(
            b.texts("#sessions tbody a.uid").await,
            ["s:02", "s:01", "s:00"]
        );
        assert!(
            b.js("return document.querySelector('#next') === null")
                .await
                == json!(true),
            "no page after the last"
        );
        b.click("#prev").await;
        b.wait_js(
            "page 1 again",
            "return document.querySelectorAll('#sessions tbody tr').length === 25",
        )
        .await;
        assert_eq!(b.texts("#sessions tbody a.uid").await[0], "other:1");

        // Search by prefix, through the form.
        b.type_into("#q", "s:1").await;
        b.click("form[role=search] button[type=submit]").await;
        b.wait_js("the search", "return location.search.includes('q=') && document.querySelectorAll('#sessions tbody tr').length === 10").await;
        let found = b.texts("#sessions tbody a.uid").await;
        assert!(found.iter().all(|u| u.starts_with("s:1")), "{found:?}");
        b.type_into("#q", "nothing-like-this").await;
        b.click("form[role=search] button[type=submit]").await;
        b.wait_js("no match", "return document.querySelector('#empty')")
            .await;
        assert!(b.text("#empty").await.contains("nothing-like-this"));

        // Work that has not moved for long stands out (the rule, run in the page).
        let stuck = b
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 import('/ui/assets/list.js').then((m) => {
                   const now = Date.parse('2026-01-01T12:00:00Z');
                   const at = (min) => new Date(now - min * 60000).toISOString();
                   const row = (counts, min) => m.flags({ updatedAt: at(min), instanceCounts: counts }, now).map((f) => f.textContent);
                   done([row([{ status: 'RUNNING', count: 1 }], 134), row([{ status: 'RUNNING', count: 1 }], 2),
                         row([{ status: 'FINISHED', count: 3 }], 600)]);
                 });",
                vec![],
            )
            .await
            .expect("run the list module");
        assert_eq!(stuck, json!([["stuck? idle 2 h 14 min"], [], []]));

        // The counts come from the server: one failed instance.
        b.open(&app.url("/ui/?q=other")).await;
        b.wait_js(
            "the counts",
            "return document.querySelector('#sessions .badge')",
        )
        .await;
        assert_eq!(b.texts("#sessions .badge").await, ["1 failed"]);
    })
}

pub(crate) fn session(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        let version = app.version(STORY).await;
        b.open(&session_url(&app, STORY, "")).await;
        session_ready(b).await;
        assert_eq!(
            b.text("h1.uid").await,
            STORY,
            "the uid, decoded from one path segment"
        );
        assert_eq!(b.text("#version").await, version.to_string());
        let counts = b.texts("#counts .badge").await;
        assert_eq!(
            counts,
            ["1 unstarted", "2 finished", "1 failed"],
            "counts in status order"
        );
        // Tasks and their directives; which are unresolved.
        let wait_task = b.text("#tasks tr[data-task='t_wait']").await;
        assert!(
            wait_task.contains("after: firstPageReceived, questionnaireComplete"),
            "{wait_task}"
        );
        assert!(
            wait_task.contains("using: inline") && wait_task.contains("unresolved"),
            "{wait_task}"
        );
        assert!(b
            .text("#tasks tr[data-task='t_import']")
            .await
            .contains("resolved"));
        assert!(!b
            .text("#tasks tr[data-task='t_import']")
            .await
            .contains("unresolved"));
        // Instances with their statuses, linking to their pages.
        let statuses: Value = b.js("return Object.fromEntries([...document.querySelectorAll('#instances tbody tr')].map(r => [r.dataset.instance, r.querySelector('.badge').textContent]))").await;
        assert_eq!(
            statuses,
            json!({"t_import#0": "finished", "t_fail#0": "failed", "t_wait#0": "unstarted", "t_next#0": "finished"})
        );
        let href = b.js("return document.querySelector(\"#instances tr[data-instance='t_fail#0'] a\").getAttribute('href')").await;
        assert_eq!(
            href,
            json!(format!(
                "/ui/sessions/{}/instances/t_fail%230",
                encode(STORY)
            ))
        );
        // The timeline: a lane per instance, a mark per firing.
        assert_eq!(
            b.js("return document.querySelectorAll('svg.timeline .lane-label').length")
                .await,
            json!(4)
        );
        let fires = app
            .data(
                "query($s: String!) { session(uid: $s) { events(kinds: [\"TriggerFired\"]) { seq } } }",
                json!({"s": STORY}),
            )
            .await["session"]["events"]
            .as_array()
            .map(Vec::len);
        assert_eq!(
            b.js("return document.querySelectorAll('svg.timeline .fire-mark').length")
                .await,
            json!(fires)
        );
        // The event log: every event, newest first.
        let seqs: Vec<u64> = serde_json::from_value(b.js("return [...document.querySelectorAll('#event-rows tr')].map(r => Number(r.dataset.seq))").await).unwrap();
        assert_eq!(seqs, (1..=version).rev().collect::<Vec<_>>());
        b.screenshot("session").await;
        b.assert_same_origin(&app.address).await;
        timeline_folds_idle_gaps(b).await;
        b.js("document.querySelector('#timeline-card').scrollIntoView(); return true")
            .await;
        b.screenshot("session-timeline").await;
        // On a laptop.
        b.client().set_window_size(1280, 800).await.expect("resize");
        b.js("window.scrollTo(0, 0); return true").await;
        b.screenshot("session-1280").await;
        let (w, h) = (crate::browser::WIDTH, crate::browser::HEIGHT);
        b.client().set_window_size(w, h).await.expect("resize");

        // A cause link jumps to its event.
        let failed_seq = b.js("return Number(document.querySelector('#event-rows tr[data-kind=InstanceFailed]').dataset.seq)").await;
        let cause = b.js("return Number(document.querySelector('#event-rows tr[data-kind=InstanceFailed] a.cause').dataset.seq)").await;
        b.click("#event-rows tr[data-kind=InstanceFailed] a.cause")
            .await;
        b.wait_js(
            "the cause highlighted",
            &format!("return document.querySelector('#e{cause}.target')"),
        )
        .await;
        assert!(b.js("return location.hash").await == json!(format!("#e{cause}")));

        // Filtered by kind: the cause is not on the page; it is fetched.
        b.open(&session_url(&app, STORY, "?kind=InstanceFailed"))
            .await;
        session_ready(b).await;
        assert_eq!(
            b.js(
                "return [...document.querySelectorAll('#event-rows tr')].map(r => r.dataset.kind)"
            )
            .await,
            json!(["InstanceFailed"])
        );
        assert_eq!(
            b.js("return document.querySelector('#event-rows tr').dataset.seq")
                .await,
            json!(failed_seq.to_string())
        );
        b.click("#event-rows a.cause").await;
        b.wait_js(
            "the fetched cause",
            &format!("return document.querySelector('#pinned-event #e{cause}')"),
        )
        .await;
        assert!(
            b.text("#pinned-event").await.contains("InstanceStarted")
                || b.text("#pinned-event").await.contains("Instance")
        );

        // Filtered by instance.
        b.open(&session_url(&app, STORY, "?instance=t_wait%230"))
            .await;
        session_ready(b).await;
        let about: Vec<String> = serde_json::from_value(b.js("return [...document.querySelectorAll('#event-rows tr')].map(r => r.children[3].innerText)").await).unwrap();
        assert!(
            !about.is_empty() && about.iter().all(|t| t.contains("t_wait#0")),
            "{about:?}"
        );
    })
}

pub(crate) fn live(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        b.open(&session_url(&app, STORY, "")).await;
        session_ready(b).await;
        b.wait_js(
            "the live stream",
            "return document.querySelector('#live.on')",
        )
        .await;
        b.js("window.__sameDocument = true; return true").await;
        let before = app.version(STORY).await;
        app.fire(STORY, "questionnaireComplete", json!({"done": true}))
            .await;
        app.settle().await;
        app.wait_quiet(STORY).await;
        let after = app.version(STORY).await;
        assert!(after > before);
        b.wait_js(
            "the new events",
            &format!(
                "return Number(document.querySelector('#event-rows tr').dataset.seq) === {after}"
            ),
        )
        .await;
        b.wait_js(
            "the new version in the header",
            &format!("return document.querySelector('#version').textContent === '{after}'"),
        )
        .await;
        b.wait_js("t_wait finished", "return document.querySelector(\"#instances tr[data-instance='t_wait#0']\").dataset.status === 'FINISHED'").await;
        assert_eq!(
            b.js("return window.__sameDocument === true").await,
            json!(true),
            "no reload"
        );
        let rows: Vec<u64> = serde_json::from_value(b.js("return [...document.querySelectorAll('#event-rows tr')].map(r => Number(r.dataset.seq))").await).unwrap();
        assert_eq!(
            rows,
            (1..=after).rev().collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
    })
}

pub(crate) fn as_of(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        // Version 1 is the configure: tasks, no instance.
        b.open(&session_url(&app, STORY, "?asOf=1")).await;
        session_ready(b).await;
        assert_eq!(b.text("#version").await, "1");
        assert!(b.text("#asof-note").await.contains("as of version 1"));
        assert!(b.text("#instances-card").await.contains("No instance yet"));
        assert_eq!(b.texts("#tasks tbody tr").await.len(), 4);
        assert_eq!(
            b.js("return document.querySelectorAll('#event-rows tr').length")
                .await,
            json!(1)
        );
        // The control: version 2 (the first fire), reflected in the URL.
        b.type_into("#asof-number", "2").await;
        b.click("#asof-form button[type=submit]").await;
        b.wait_js("as of 2", "return location.search === '?asOf=2' && document.querySelector('#version') && document.querySelector('#version').textContent === '2'").await;
        session_ready(b).await;
        assert_eq!(
            b.js(
                "return [...document.querySelectorAll('#event-rows tr')].map(r => r.dataset.kind)"
            )
            .await,
            json!(["TriggerFired", "SessionConfigured"])
        );
        // Links keep the view.
        b.click("#asof-now").await;
        b.wait_js(
            "now",
            "return location.search === '' && document.querySelector('#live')",
        )
        .await;
        session_ready(b).await;
        let version = app.version(STORY).await;
        assert_eq!(b.text("#version").await, version.to_string());
    })
}

pub(crate) fn instance(b: &Browser, db: TestDb) -> Run<'_> {
    Box::pin(async move {
        let app = spawn_app(&db).await;
        story(&app).await;
        b.open(&instance_url(&app, STORY, "t_next#0")).await;
        b.wait_js(
            "the instance page",
            "return document.querySelector('#why .cause-item')",
        )
        .await;
        assert_eq!(b.text("#header h1").await, "t_next#0");
        assert!(b.text("#header").await.contains("finished"));
        // Why it ran: the cascade t_import fired with t_import#0's result,
        // which ran because of the caller's firstPageReceived.
        let why = b.text("#why").await;
        assert!(
            why.contains("t_import fired") && why.contains("cascade"),
            "{why}"
        );
        assert!(
            why.contains("firstPageReceived fired") && why.contains("first fire, by a caller"),
            "{why}"
        );
        assert!(
            why.contains("\"page\": 1"),
            "the kwargs of the firing: {why}"
        );
        let details = b.text("#details").await;
        assert!(
            details.contains("Kwargs handed over") && details.contains("INFO"),
            "{details}"
        );
        b.screenshot("instance").await;
        b.assert_same_origin(&app.address).await;
        // A cause links to its firing on the session page.
        b.click("#why a.cause-link").await;
        let seq = b.wait_js("the session page at the cause", "return /#e\\d+$/.test(location.hash) && document.querySelector('tr.target') && document.querySelector('tr.target').dataset.seq").await;
        assert_eq!(
            b.js(&format!(
                "return document.querySelector('#e{} .kind').textContent",
                seq.as_str().unwrap()
            ))
            .await,
            json!("TriggerFired")
        );
    })
}

/// The timeline's scale, run in the page: activity separated by more than 5
/// minutes becomes two spans with a labelled break between them.
async fn timeline_folds_idle_gaps(b: &Browser) {
    let folded = b
        .client()
        .execute_async(
            "const done = arguments[arguments.length - 1];
             import('/ui/assets/timeline.js').then((m) => {
               const t0 = Date.parse('2026-01-01T10:00:00Z');
               const minute = 60000;
               const instance = (name, created, running, end) => ({ name, status: 'FINISHED', metadata: { timestamps: {
                 created: new Date(created).toISOString(), scheduled: new Date(created).toISOString(),
                 running: new Date(running).toISOString(), finished: new Date(end).toISOString() } } });
               const lanes = [instance('a#0', t0, t0 + minute, t0 + 2 * minute),
                              instance('b#0', t0 + 136 * minute, t0 + 136 * minute, t0 + 137 * minute)];
               const svg = m.renderTimeline(lanes, [], t0 + 137 * minute, () => '#', 1200);
               done({ spans: m.scale(lanes.flatMap((l) => Object.values(l.metadata.timestamps).map(Date.parse)), 1000).spans.length,
                      breaks: [...svg.querySelectorAll('.break text')].map((t) => t.textContent) });
             });",
            vec![],
        )
        .await
        .expect("run the timeline module");
    assert_eq!(folded, json!({"spans": 2, "breaks": ["⋯ 2 h 14 min ⋯"]}));
}
