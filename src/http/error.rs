//! Refusals at the HTTP edge (before the GraphQL executor runs), answered with
//! the right status and a GraphQL-shaped body, so that clients read every error
//! the same way: `{"data": null, "errors": [{"message", "extensions": {"code"}}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::graphql::error::{BAD_INPUT, UNAUTHORIZED};

/// Why a request was refused before it reached the schema.
#[derive(Debug)]
pub enum Rejection {
    /// A token is configured and the request did not carry it (401).
    Unauthorized,
    /// The body is larger than the limit (413).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not a GraphQL request (400).
    Malformed(String),
}

impl Rejection {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Rejection::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "missing or wrong API token: send the header `Authorization: Bearer <token>`"
                    .to_owned(),
            ),
            Rejection::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                BAD_INPUT,
                format!("request body too large: the limit is {limit} bytes"),
            ),
            Rejection::Malformed(why) => (
                StatusCode::BAD_REQUEST,
                BAD_INPUT,
                format!("not a GraphQL request: {why}"),
            ),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = json!({
            "data": null,
            "errors": [{"message": message, "extensions": {"code": code}}],
        });
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, Rejection::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
