//! A minimal GraphQL-over-HTTP client for the commands that talk to a server.

use std::time::Duration;

use serde_json::{json, Value};

use super::{CliError, ServerArgs};

/// Sends GraphQL requests to one server.
pub(super) struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    /// A client for `args.server` (its `/graphql` endpoint).
    pub(super) fn new(args: &ServerArgs) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|err| CliError::Http {
                context: "cannot start an HTTP client".into(),
                message: err.to_string(),
            })?;
        Ok(Self {
            http,
            endpoint: format!("{}/graphql", args.server.trim_end_matches('/')),
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Runs `query` with `variables`; the `data` on success, the first error
    /// (with its code) otherwise.
    pub(super) async fn request(&self, query: &str, variables: Value) -> Result<Value, CliError> {
        Ok(self.request_with_extensions(query, variables).await?.0)
    }

    /// [`Client::request`], with the response's `extensions` (`null` when none).
    pub(super) async fn request_with_extensions(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<(Value, Value), CliError> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|err| CliError::Http {
            context: format!("cannot reach the server at {}", self.endpoint),
            message: err.to_string(),
        })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|err| CliError::Http {
            context: format!(
                "the server at {} answered HTTP {status} without a GraphQL body",
                self.endpoint
            ),
            message: err.to_string(),
        })?;
        if let Some(error) = body
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|errors| errors.first())
        {
            return Err(CliError::Api {
                code: error
                    .pointer("/extensions/code")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the server reported an error without a message")
                    .to_owned(),
            });
        }
        let extensions = body.get("extensions").cloned().unwrap_or(Value::Null);
        Ok((body.get("data").cloned().unwrap_or(Value::Null), extensions))
    }
}
