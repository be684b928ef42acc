//! Limits and access: body size, query depth and complexity, JSON argument size,
//! malformed bodies, and the optional bearer token.

use serde_json::{json, Value};
use triggers::http::ServerConfig;

use crate::support::{
    spawn_app, spawn_app_with, spawn_app_with_limits, spawn_app_with_token, strs, TestDb, DEVNULL,
    S,
};

on_both_backends!(
    an_oversized_body_is_refused_with_413_and_a_clear_message,
    a_body_that_is_not_a_graphql_request_is_refused_with_400,
    too_deep_or_too_complex_queries_are_refused,
    graphiql_introspection_fits_within_the_default_limits,
    oversized_json_arguments_are_bad_input_and_write_nothing,
    with_a_token_every_graphql_request_needs_it_but_health_does_not,
);

async fn an_oversized_body_is_refused_with_413_and_a_clear_message(db: TestDb) {
    let app = spawn_app_with(
        &db,
        ServerConfig {
            max_body_bytes: 4096,
            ..ServerConfig::default()
        },
    )
    .await;
    let big = "x".repeat(5000);
    let body = json!({"query": "mutation($k: JSON) { fire(session: \"s\", trigger: \"t\", kwargs: $k) { duplicate } }",
                      "variables": {"k": {"big": big}}});

    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_INPUT");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4096 bytes"),
        "{answer:#}"
    );

    // Without a Content-Length (chunked), the cap holds as well.
    assert_eq!(post_chunked(&app, body.to_string().as_bytes()).await, 413);
    assert_eq!(app.version("s").await, 0, "nothing was written");
}

/// POSTs `body` to /graphql with `Transfer-Encoding: chunked`; the status code.
async fn post_chunked(app: &crate::support::TestApp, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

async fn a_body_that_is_not_a_graphql_request_is_refused_with_400(db: TestDb) {
    let app = spawn_app(&db).await;
    for body in ["not json", "[1, 2]", "{\"query\": 5}"] {
        let response = app.post_body(body).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_INPUT");
        assert!(answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a GraphQL request"));
    }
}

async fn too_deep_or_too_complex_queries_are_refused(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut deep = String::from("version");
    for _ in 0..20 {
        deep = format!("asOf(version: 0) {{ {deep} }}");
    }
    let (code, message) = app
        .error(
            &format!("{{ session(uid: \"x\") {{ {deep} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    assert!(message.to_lowercase().contains("deep"), "{message}");

    let small = spawn_app_with_limits(
        &db,
        triggers::graphql::Config {
            max_complexity: 20,
            ..Default::default()
        },
    )
    .await;
    let wide: Vec<String> = (0..30).map(|i| format!("v{i}: version")).collect();
    let (code, message) = small
        .error(
            &format!("{{ session(uid: \"x\") {{ {} }} }}", wide.join(" ")),
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    assert!(message.to_lowercase().contains("complex"), "{message}");
}

const INTROSPECTION: &str = "query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}";

async fn graphiql_introspection_fits_within_the_default_limits(db: TestDb) {
    let app = spawn_app(&db).await;
    let data = app.data(INTROSPECTION, json!({})).await;
    let types: Vec<&str> = strs(&data["__schema"]["types"], "name");
    for name in [
        "Session",
        "TaskConfig",
        "TaskInstance",
        "Event",
        "FireResult",
        "SessionSummary",
        "TaskClaim",
        "JSON",
        "DateTime",
        "InstanceStatus",
    ] {
        assert!(types.contains(&name), "{name} missing from {types:?}");
    }
    assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
}

async fn oversized_json_arguments_are_bad_input_and_write_nothing(db: TestDb) {
    let app = spawn_app_with_limits(
        &db,
        triggers::graphql::Config {
            max_json_bytes: 1000,
            ..Default::default()
        },
    )
    .await;
    app.configure(S, json!({"t_a": {"after": ["go"], "run": DEVNULL}}))
        .await;
    let big = json!({"blob": "x".repeat(2000)});

    let (code, message) = app
        .error(
            "mutation($k: JSON) { fire(session: \"questionnaire:1\", trigger: \"go\", kwargs: $k) { duplicate } }",
            json!({"k": big}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    assert!(
        message.contains("kwargs") && message.contains("1000 bytes"),
        "{message}"
    );
    let (code, _) = app
        .error(
            "mutation($t: JSON!) { configure(session: \"questionnaire:1\", tasks: $t) { version } }",
            json!({"t": {"t_b": {"after": [], "run": DEVNULL, "withParams": {"x": big}}}}),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");
    assert_eq!(app.version(S).await, 1);
}

async fn with_a_token_every_graphql_request_needs_it_but_health_does_not(db: TestDb) {
    let app = spawn_app_with_token(&db, "s3cret").await;
    let body = json!({"query": "mutation { configure(session: \"s\", tasks: {}) { version } }"});
    let post = |auth: Option<&'static str>| {
        let mut request = app.http.post(app.url("/graphql")).json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ] {
        let (status, answer) = post(auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{auth:?}"
        );
        assert_eq!(answer["data"], Value::Null);
    }
    assert_eq!(
        app.version("s").await,
        0,
        "nothing was written without the token"
    );
    let (status, answer) = post(Some("Bearer s3cret")).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["data"]["configure"]["version"], 1);

    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
