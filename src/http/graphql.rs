//! `/graphql`: `POST` runs a query or mutation; `GET` serves GraphiQL (from the
//! binary, [`crate::ui`]), or upgrades
//! to a WebSocket for subscriptions (`graphql-transport-ws`, and the older
//! `graphql-ws`).
//!
//! The body is read here, under the size cap, so an oversized request is a 413
//! with a clear message before any parsing; the token is checked first of all.

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};

use super::auth::Auth;
use super::error::Rejection;
use super::Stopping;
use crate::graphql::error::{coded, UNAUTHORIZED};
use crate::graphql::TriggersSchema;

/// WebSocket close code sent to subscribers when the server stops ("going away").
const GOING_AWAY: u16 = 1001;

/// What the `/graphql` handlers share.
#[derive(Clone)]
pub struct GraphqlState {
    /// The executable schema.
    pub schema: TriggersSchema,
    /// The optional token.
    pub auth: Auth,
    /// Largest body or WebSocket message accepted.
    pub max_body_bytes: usize,
    /// Fires when the server stops, to close subscriptions.
    pub stopping: Stopping,
}

/// The `/graphql` route.
pub fn router(state: GraphqlState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql_or_subscribe).post(execute))
        .with_state(state)
}

/// `POST /graphql`: one GraphQL request as JSON.
async fn execute(State(state): State<GraphqlState>, headers: HeaderMap, body: Body) -> Response {
    if !state.auth.allows_headers(&headers) {
        return Rejection::Unauthorized.into_response();
    }
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Rejection::TooLarge { limit }.into_response();
    }
    // Past the cap (or a body cut off by the client, who is gone and won't read this).
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return Rejection::TooLarge { limit }.into_response();
    };
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(err) => {
            return Rejection::Malformed(format!(
                "expected a JSON body {{\"query\": ..., \"variables\": ..., \"operationName\": ...}}: {err}"
            ))
            .into_response()
        }
    };
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// `GET /graphql`: a WebSocket upgrade for subscriptions, else the GraphiQL page.
async fn graphiql_or_subscribe(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    protocol: Result<GraphQLProtocol, StatusCode>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return crate::ui::graphiql(&headers);
    };
    let Ok(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket subprotocol: ask for graphql-transport-ws (or graphql-ws) in Sec-WebSocket-Protocol",
        )
            .into_response();
    };
    let has_header = headers.contains_key(header::AUTHORIZATION);
    let authorized = state.auth.allows_headers(&headers);
    if has_header && !authorized {
        return Rejection::Unauthorized.into_response();
    }
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(state.max_body_bytes)
        .on_upgrade(move |socket| subscribe(socket, state, protocol, authorized))
}

/// Runs one subscription connection until the client leaves or the server stops.
async fn subscribe(
    socket: WebSocket,
    state: GraphqlState,
    protocol: GraphQLProtocol,
    authorized: bool,
) {
    let (mut sink, stream) = socket.split();
    let stopping = state.stopping.clone();
    let incoming = stream.take_until(Box::pin(stopping.clone().wait()));
    let auth = state.auth.clone();
    GraphQLWebSocket::new_with_pair(&mut sink, incoming, state.schema, protocol)
        .on_connection_init(move |payload| async move {
            if authorized || auth.allows_init_payload(&payload) {
                Ok(Data::default())
            } else {
                Err(coded(
                    UNAUTHORIZED,
                    "missing or wrong API token: send it as `Authorization: Bearer <token>` (header or connection_init payload)",
                ))
            }
        })
        .serve()
        .await;
    if !stopping.is_stopping() {
        return;
    }
    // Says goodbye properly (a client that left already makes this a no-op).
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: GOING_AWAY,
            reason: "server shutting down".into(),
        })))
        .await;
    let _ = sink.close().await;
}
