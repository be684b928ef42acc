//! The HTTP server: axum routes around the GraphQL schema.
//!
//! - [`graphql`]: `POST /graphql` (queries and mutations), `GET /graphql`
//!   (GraphiQL, or a WebSocket upgrade for subscriptions).
//! - [`health`]: `GET /health`, which pings the database.
//! - [`auth`]: the optional bearer token.
//! - [`error`]: refusals at the HTTP edge, shaped as GraphQL errors.
//!
//! [`serve`] takes the listener and a shutdown future, so tests run the real
//! server on port 0 and stop it when they like.

pub mod auth;
pub mod error;
pub mod graphql;
pub mod health;

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
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
            auth,
            max_body_bytes: config.max_body_bytes,
            stopping,
        }))
        .merge(health::router(engine))
        .layer(TraceLayer::new_for_http())
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
