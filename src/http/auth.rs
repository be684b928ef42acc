//! The optional bearer token (`TRIGGERS_API_TOKEN`).
//!
//! When a token is configured, every `/graphql` and `/metrics` request needs
//! `Authorization: Bearer <token>`. A browser cannot set headers on a WebSocket,
//! so a subscription may instead send the token in its `connection_init`
//! payload (`{"Authorization": "Bearer <token>"}` or `{"token": "<token>"}`).
//! The GraphiQL page itself is static HTML and is served without a token; the
//! queries it sends need one (set it in GraphiQL's Headers tab).

use std::sync::Arc;

use axum::http::{header, HeaderMap};

/// The configured token, if any.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("Auth")
            .field("required", &self.token.is_some())
            .finish()
    }
}

impl Auth {
    /// Requires `token` when it is set and non-empty.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// Whether a token is required at all.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the request's `Authorization` header carries the token (always true
    /// when none is configured).
    pub fn allows_headers(&self, headers: &HeaderMap) -> bool {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.allows_authorization(value)
    }

    /// Whether a `connection_init` payload carries the token.
    pub fn allows_init_payload(&self, payload: &serde_json::Value) -> bool {
        let field = |name: &str| payload.get(name).and_then(|v| v.as_str());
        if let Some(token) = field("token") {
            return self.matches(token);
        }
        self.allows_authorization(field("Authorization").or_else(|| field("authorization")))
    }

    /// Whether an `Authorization` value (`Bearer <token>`) carries the token.
    fn allows_authorization(&self, value: Option<&str>) -> bool {
        if self.token.is_none() {
            return true;
        }
        let Some((scheme, token)) = value.and_then(|v| v.trim().split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.matches(token.trim())
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, candidate: &str) -> bool {
        let Some(expected) = self.token.as_deref() else {
            return true;
        };
        let (a, b) = (expected.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, byte) in a.iter().enumerate() {
            diff |= usize::from(byte ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn without_a_token_everything_is_allowed() {
        let auth = Auth::new(None);
        assert!(auth.allows_headers(&HeaderMap::new()));
        assert!(Auth::new(Some(String::new())).allows_headers(&HeaderMap::new()));
    }

    #[test]
    fn with_a_token_only_the_exact_bearer_token_is_allowed() {
        let auth = Auth::new(Some("s3cret".into()));
        assert!(auth.allows_headers(&headers("Bearer s3cret")));
        assert!(auth.allows_headers(&headers("bearer s3cret")));
        assert!(!auth.allows_headers(&HeaderMap::new()));
        assert!(!auth.allows_headers(&headers("Bearer s3cre")));
        assert!(!auth.allows_headers(&headers("Bearer s3cret2")));
        assert!(!auth.allows_headers(&headers("Basic s3cret")));
        assert!(!auth.allows_headers(&headers("s3cret")));
    }

    #[test]
    fn a_subscription_may_send_the_token_in_its_init_payload() {
        let auth = Auth::new(Some("s3cret".into()));
        assert!(auth.allows_init_payload(&json!({"Authorization": "Bearer s3cret"})));
        assert!(auth.allows_init_payload(&json!({"authorization": "Bearer s3cret"})));
        assert!(auth.allows_init_payload(&json!({"token": "s3cret"})));
        assert!(!auth.allows_init_payload(&json!({"token": "nope"})));
        assert!(!auth.allows_init_payload(&json!({})));
        assert!(!auth.allows_init_payload(&serde_json::Value::Null));
    }
}
