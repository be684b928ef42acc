//! `GET /metrics`: every series in the Prometheus text format, under the same
//! token rule as `/graphql` (docs/operations.md lists the series); and the
//! layer that counts every HTTP request by status.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::auth::Auth;
use super::error::Rejection;
use crate::Engine;

/// What `/metrics` needs.
#[derive(Clone)]
struct MetricsState {
    engine: Engine,
    auth: Auth,
}

/// The `/metrics` route.
pub fn router(engine: Engine, auth: Auth) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsState { engine, auth })
}

async fn metrics(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    if !state.auth.allows_headers(&headers) {
        return Rejection::Unauthorized.into_response();
    }
    match state.engine.render_metrics().await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics: the queue gauges could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer; see the server log\n",
            )
                .into_response()
        }
    }
}

/// Counts every answered request in `triggers_http_requests_total{status}`.
pub async fn count_requests(
    State(engine): State<Engine>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    engine
        .metrics()
        .http_requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}
