//! A minimal GraphQL-over-HTTP client for the commands that talk to a server.

use std::time::Duration;

use serde_json::{json, Value};

use super::{CliError, ServerArgs};

/// The server's base URL from `--server`: `http://` is assumed when no scheme
/// is given (`127.0.0.1:8080`); anything but http(s) is refused.
pub(super) fn base_url(server: &str) -> Result<String, CliError> {
    let server = server.trim().trim_end_matches('/');
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let usage = |why: String| {
        CliError::Usage(format!(
            "--server {server:?} {why}: expected a URL such as http://127.0.0.1:8080"
        ))
    };
    let url =
        reqwest::Url::parse(&with_scheme).map_err(|err| usage(format!("is not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage(format!("has the scheme {:?}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(usage("names no host".to_owned()));
    }
    Ok(with_scheme)
}

/// Why a request did not reach the server, in words: "connection refused"
/// rather than reqwest's "error sending request for url".
fn why_unreachable(err: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is `triggers serve` running there? --server or TRIGGERS_SERVER names it)".to_owned()
                }
                _ => io.to_string(),
            };
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return "no answer in time".to_owned();
    }
    // The innermost cause says the most (a DNS failure, a TLS error).
    let mut innermost: &dyn std::error::Error = err;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}

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
            endpoint: format!("{}/graphql", base_url(&args.server)?),
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
            message: why_unreachable(&err),
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

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn a_server_without_a_scheme_is_http() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h").unwrap(), "https://h");
        let err = base_url("ftp://h").unwrap_err().to_string();
        assert!(
            err.contains("expected a URL such as http://127.0.0.1:8080"),
            "{err}"
        );
        assert!(base_url("not a host name").is_err());
    }
}
