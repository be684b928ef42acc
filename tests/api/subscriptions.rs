//! `sessionEvents` over WebSocket: replay then live events, with no gaps and no
//! duplicates; both subprotocols; events committed by another server process;
//! the token; and subscriptions closed when the server stops.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{spawn_app, spawn_app_with_token, TestApp, TestDb, DEVNULL, PATIENCE, S};

on_both_backends!(
    a_subscriber_gets_the_stored_events_then_live_ones_without_gaps,
    after_version_skips_what_the_subscriber_already_has,
    events_committed_by_another_server_process_reach_the_subscriber,
    the_legacy_graphql_ws_protocol_works_too,
    subscriptions_need_the_token_when_one_is_configured,
    stopping_the_server_closes_subscriptions,
);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SUBSCRIPTION: &str = "subscription($s: String!, $a: Int) {
  sessionEvents(session: $s, afterVersion: $a) { seq kind trigger instance causedBy }
}";

/// Opens a WebSocket to `/graphql` with `protocol` (and an `Authorization` header).
async fn open(app: &TestApp, protocol: &str, authorization: Option<&str>) -> Result<Ws, String> {
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    if let Some(authorization) = authorization {
        request
            .headers_mut()
            .insert("authorization", authorization.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next GraphQL message (pings and keep-alives skipped); `None` once closed.
async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if value["type"] == "ka" || value["type"] == "ping" || value["type"] == "pong" {
                    continue;
                }
                return Some(value);
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Connects with graphql-transport-ws and subscribes to the session's events.
async fn subscribe(app: &TestApp, after: Option<u64>) -> Ws {
    let mut ws = open(app, "graphql-transport-ws", None)
        .await
        .expect("connect");
    send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(
        recv(&mut ws).await.expect("an ack")["type"],
        "connection_ack"
    );
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": SUBSCRIPTION, "variables": {"s": S, "a": after}}}),
    )
    .await;
    ws
}

/// Receives `next` events until `seq` `upto`, checking they follow on from `from`.
async fn events_until(ws: &mut Ws, from: u64, upto: u64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut expected = from;
    while expected <= upto {
        let message = recv(ws).await.expect("the stream is open");
        assert_eq!(message["type"], "next", "{message:#}");
        assert_eq!(message["id"], "1");
        let event = message["payload"]["data"]["sessionEvents"].clone();
        assert_eq!(event["seq"], expected, "no gap, no duplicate: {event:#}");
        events.push(event);
        expected += 1;
    }
    events
}

async fn a_subscriber_gets_the_stored_events_then_live_ones_without_gaps(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(
        S,
        json!({"t_a": {"after": ["go"], "andEvery": "go", "run": DEVNULL}}),
    )
    .await;
    app.fire(S, "go", json!({"n": 0})).await;
    app.settle().await;
    app.wait_quiet(S).await;
    let stored = app.version(S).await;

    let mut ws = subscribe(&app, None).await;
    let replayed = events_until(&mut ws, 1, stored).await;
    assert_eq!(replayed[0]["kind"], "SessionConfigured");

    for n in 1..=3 {
        app.fire(S, "go", json!({"n": n})).await;
    }
    app.settle().await;
    app.wait_quiet(S).await;
    let now = app.version(S).await;
    let live = events_until(&mut ws, stored + 1, now).await;
    assert_eq!(live[0]["kind"], "TriggerFired");
    assert_eq!(live[0]["trigger"], "go");
    assert_eq!(live[0]["causedBy"], Value::Null);
    assert!(live.iter().any(|e| e["kind"] == "InstanceFinished"));

    send(&mut ws, json!({"id": "1", "type": "complete"})).await;
    ws.close(None).await.ok();
}

async fn after_version_skips_what_the_subscriber_already_has(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({})).await;
    for n in 0..4 {
        app.fire(S, "tick", json!({"n": n})).await;
    }
    let mut ws = subscribe(&app, Some(3)).await;
    let events = events_until(&mut ws, 4, 5).await;
    assert_eq!(events[0]["trigger"], "tick");
    app.fire(S, "tock", json!({})).await;
    let live = events_until(&mut ws, 6, 6).await;
    assert_eq!(live[0]["trigger"], "tock");
}

async fn events_committed_by_another_server_process_reach_the_subscriber(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = spawn_app(&db).await;
    app.configure(S, json!({})).await;
    let mut ws = subscribe(&app, Some(1)).await;

    // The other server appends; this one only learns of it from the log.
    other.fire(S, "elsewhere", json!({"n": 1})).await;
    other.fire(S, "elsewhere", json!({"n": 2})).await;
    let events = tokio::time::timeout(Duration::from_secs(10), events_until(&mut ws, 2, 3))
        .await
        .expect("polled within a few ticks");
    assert!(events.iter().all(|e| e["trigger"] == "elsewhere"));
}

async fn the_legacy_graphql_ws_protocol_works_too(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({})).await;
    let mut ws = open(&app, "graphql-ws", None).await.expect("connect");
    send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "connection_ack");
    send(
        &mut ws,
        json!({"id": "7", "type": "start", "payload": {"query": SUBSCRIPTION, "variables": {"s": S}}}),
    )
    .await;
    let message = recv(&mut ws).await.unwrap();
    assert_eq!(message["type"], "data", "{message:#}");
    assert_eq!(message["id"], "7");
    assert_eq!(
        message["payload"]["data"]["sessionEvents"]["kind"],
        "SessionConfigured"
    );
    app.fire(S, "go", json!({})).await;
    let message = recv(&mut ws).await.unwrap();
    assert_eq!(message["payload"]["data"]["sessionEvents"]["seq"], 2);
}

async fn subscriptions_need_the_token_when_one_is_configured(db: TestDb) {
    let app = spawn_app_with_token(&db, "s3cret").await;
    app.configure(S, json!({})).await;

    // A wrong header is refused at the handshake.
    let refused = open(&app, "graphql-transport-ws", Some("Bearer wrong")).await;
    assert!(refused.is_err_and(|e| e.contains("401")));

    // No token at all: the connection is closed at connection_init.
    let mut ws = open(&app, "graphql-transport-ws", None)
        .await
        .expect("connect");
    send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(recv(&mut ws).await, None, "closed without an ack");

    // The token in the connection_init payload (browsers cannot set headers).
    let mut ws = open(&app, "graphql-transport-ws", None)
        .await
        .expect("connect");
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"Authorization": "Bearer s3cret"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "connection_ack");

    // Or in the header.
    let mut ws = open(&app, "graphql-transport-ws", Some("Bearer s3cret"))
        .await
        .expect("connect");
    send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "connection_ack");
}

async fn stopping_the_server_closes_subscriptions(db: TestDb) {
    let app = spawn_app(&db).await;
    app.configure(S, json!({})).await;
    let mut ws = subscribe(&app, None).await;
    events_until(&mut ws, 1, 1).await;

    app.stop().await;
    assert_eq!(recv(&mut ws).await, None, "the subscription was closed");
}
