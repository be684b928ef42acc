//! The HTTP server: axum routes around the GraphQL schema.
//!
//! - [`graphql`]: `POST /graphql` (queries and mutations), `GET /graphql`
//!   (GraphiQL, or a WebSocket upgrade for subscriptions).
//! - [`health`]: `GET /health`, which pings the database.
//! - [`metrics`]: `GET /metrics` (Prometheus), and the count of requests by status.
//! - [`crate::ui`]: `/` and `/ui/...`, the web UI.
//! - [`auth`]: the optional bearer token.
//! - [`error`]: refusals at the HTTP edge, shaped as GraphQL errors.
//!
//! [`serve`] takes the listener and a shutdown future, so tests run the real
//! server on port 0 and stop it when they like.

pub mod auth;
pub mod error;
pub mod graphql;
pub mod health;
pub mod metrics;

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::Engine;

/// How the server behaves at its edge.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every `/graphql` request must carry `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Largest request body (and WebSocket message) accepted; larger is a 413.
    pub max_body_bytes: usize,
    /// Limits of the GraphQL schema.
    pub graphql: crate::graphql::Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_token: None,
            max_body_bytes: 1024 * 1024,
            graphql: crate::graphql::Config::default(),
        }
    }
}

/// Tells long-lived connections (subscriptions) that the server is stopping.
#[derive(Debug, Clone)]
pub struct Stopping(Option<watch::Receiver<bool>>);

impl Stopping {
    /// A signal that never fires (for routers used without [`serve`]).
    pub fn never() -> Self {
        Stopping(None)
    }

    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once the server is stopping.
    pub async fn wait(self) {
        match self.0 {
            Some(mut rx) => {
                // An error means the server is gone, which is stopping too.
                let _ = rx.wait_for(|stopping| *stopping).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Every route of the server.
pub fn router(engine: Engine, config: &ServerConfig, stopping: Stopping) -> Router {
    let schema = crate::graphql::schema(engine.clone(), config.graphql.clone());
    let auth = auth::Auth::new(config.api_token.clone());
    Router::new()
        .merge(graphql::router(graphql::GraphqlState {
            schema,
            auth: auth.clone(),
            max_body_bytes: config.max_body_bytes,
            stopping,
        }))
        .merge(health::router(engine.clone()))
        .merge(crate::ui::router())
        .merge(metrics::router(engine.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(
            engine,
            metrics::count_requests,
        ))
        // Outermost last: the id is set (unless the caller sent one), then the
        // request's span is opened with it, and the answer carries it back.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Each request's span, with its request id (the caller's `x-request-id`, or
/// one made for it), so that every log line of a request can be found
/// together (in the JSON log format too).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting,
/// closes subscriptions, and returns once in-flight requests are answered.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let app = router(engine, &config, Stopping(Some(stopping)));
    let address = listener.local_addr()?;
    tracing::info!("listening on http://{address} (GraphiQL at http://{address}/graphql)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; closing subscriptions");
            let _ = stop.send(true);
        })
        .await
}
