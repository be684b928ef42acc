//! `GET /health`: 200 when the database answers, 503 when it does not. Never
//! needs the API token (load balancers and orchestrators call it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::Engine;

/// The `/health` route.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(engine)
}

async fn health(State(engine): State<Engine>) -> impl IntoResponse {
    let backend = engine.store().backend();
    match engine.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "database": backend})),
        ),
        Err(err) => {
            tracing::error!(error = %err, backend, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": backend})),
            )
        }
    }
}
