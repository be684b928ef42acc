//! Support of the engine suite: the kit (`triggers::testkit`: a fresh database
//! per test on each backend, `on_both_backends!`, engines with test-sized
//! options), reading sessions and events, and waiting for conditions without
//! fixed sleeps.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use triggers::domain::{Event, Instance, InstanceStatus, JsonObject, SessionState};
use triggers::engine::FireResult;
use triggers::Engine;

use triggers::testkit::names::{self, uid};
pub(crate) use triggers::testkit::*;

/// Fails a test that hangs instead of letting it block the suite.
pub(crate) async fn within_time(test: impl Future<Output = ()>) {
    triggers::testkit::within(Duration::from_secs(120), test).await;
}

/// Waits until no inline run is in flight (bounded by [`PATIENCE`]).
pub(crate) async fn settle(engine: &Engine) {
    tokio::time::timeout(PATIENCE, engine.wait_idle())
        .await
        .expect("the engine did not become idle in time");
}

/// Polls the session until `ready` holds, and returns that state.
pub(crate) async fn wait_for(
    engine: &Engine,
    session: &str,
    what: &str,
    ready: impl Fn(&SessionState) -> bool,
) -> Arc<SessionState> {
    wait_for_within(PATIENCE, engine, session, what, ready).await
}

/// [`wait_for`] with a patience of its own.
pub(crate) async fn wait_for_within(
    patience: Duration,
    engine: &Engine,
    session: &str,
    what: &str,
    ready: impl Fn(&SessionState) -> bool,
) -> Arc<SessionState> {
    let deadline = Instant::now() + patience;
    loop {
        let state = engine
            .session(&uid(session))
            .await
            .expect("read the session");
        if ready(&state) {
            return state;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; instances: {:#?}",
                summary(&state)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON object literal.
pub(crate) fn obj(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// Configures `tasks` on `session`, which must succeed.
pub(crate) async fn configure(engine: &Engine, session: &str, tasks: Value) -> u64 {
    engine
        .configure(&uid(session), &tasks)
        .await
        .unwrap_or_else(|e| panic!("configure {tasks}: {e}"))
}

/// Fires `trigger` with `kwargs`, which must succeed.
pub(crate) async fn fire(
    engine: &Engine,
    session: &str,
    trigger: &str,
    kwargs: Value,
) -> FireResult {
    fire_keyed(engine, session, trigger, kwargs, None).await
}

/// Fires `trigger` with `kwargs` and the idempotency key `key`, which must
/// succeed.
pub(crate) async fn fire_keyed(
    engine: &Engine,
    session: &str,
    trigger: &str,
    kwargs: Value,
    key: Option<&str>,
) -> FireResult {
    engine
        .fire(&uid(session), &names::trigger(trigger), obj(kwargs), key)
        .await
        .unwrap_or_else(|e| panic!("fire {trigger}: {e}"))
}

/// Fires and waits until everything it set off is done.
pub(crate) async fn fire_and_settle(
    engine: &Engine,
    session: &str,
    trigger: &str,
    kwargs: Value,
) -> FireResult {
    let result = fire(engine, session, trigger, kwargs).await;
    settle(engine).await;
    result
}

/// The current state of `session`.
pub(crate) async fn state(engine: &Engine, session: &str) -> Arc<SessionState> {
    engine
        .session(&uid(session))
        .await
        .expect("read the session")
}

/// Every event of `session`.
pub(crate) async fn events(engine: &Engine, session: &str) -> Vec<Event> {
    engine
        .events(&uid(session), 0, None)
        .await
        .expect("read the events")
}

/// The uids of the first 100 sessions, in listing order.
pub(crate) async fn session_uids(engine: &Engine) -> Vec<String> {
    engine
        .sessions(100, None)
        .await
        .expect("list the sessions")
        .into_iter()
        .map(|s| s.uid)
        .collect()
}

/// The instance, which must exist.
pub(crate) fn instance<'a>(state: &'a SessionState, name: &str) -> &'a Instance {
    state
        .instance(name)
        .unwrap_or_else(|| panic!("no instance {name}; instances: {:#?}", summary(state)))
}

/// The status of an instance, which must exist.
pub(crate) fn status(state: &SessionState, name: &str) -> InstanceStatus {
    instance(state, name).status
}

/// `(name, status)` of every instance, in creation order.
pub(crate) fn summary(state: &SessionState) -> Vec<(String, InstanceStatus)> {
    state
        .instances()
        .iter()
        .map(|i| (i.name.clone(), i.status))
        .collect()
}

/// Names of the instances of `task`, in creation order.
pub(crate) fn names_of(state: &SessionState, task: &str) -> Vec<String> {
    state.instances_of(task).map(|i| i.name.clone()).collect()
}

/// The kinds of `events`, in order.
pub(crate) fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.payload.kind()).collect()
}

/// The event with this seq, which must exist.
pub(crate) fn event(events: &[Event], seq: u64) -> &Event {
    events
        .iter()
        .find(|e| e.seq == seq)
        .unwrap_or_else(|| panic!("no event {seq}"))
}

/// The `TriggerFired` events of `trigger`, in order.
pub(crate) fn fired<'a>(events: &'a [Event], trigger: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.payload.kind() == "TriggerFired" && e.payload.trigger() == Some(trigger))
        .collect()
}

/// The events of `kind` about `instance`, in order.
pub(crate) fn about<'a>(events: &'a [Event], kind: &str, instance: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.payload.kind() == kind && e.payload.instance() == Some(instance))
        .collect()
}

/// Asserts that seqs run 1, 2, 3, ... without gaps or repeats.
pub(crate) fn assert_gap_free(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs must be gap-free from 1");
}

/// An instance's result, `null` if none.
pub(crate) fn result(inst: &Instance) -> Value {
    inst.result().cloned().unwrap_or(Value::Null)
}

/// A `run` no handler is registered for: such tasks go to the worker queue.
pub(crate) const EXTERNAL: &str = "app.ExternalJob";

/// An instance's timestamp for `key`.
pub(crate) fn ts(inst: &triggers::domain::Instance, key: &str) -> chrono::DateTime<chrono::Utc> {
    let raw = inst.metadata["timestamps"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no timestamp {key}", inst.name));
    chrono::DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("timestamp {key} = {raw:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}
