//! The web UI's routes at the HTTP level (the pages themselves are tested in
//! a browser by tests/ui): where `/` leads, that every page is the same
//! shell, that assets come from the binary with their types, ETags and a
//! policy that allows no other host, and that GraphiQL is ours.

use reqwest::header;
use reqwest::redirect::Policy;

use crate::support::{spawn_app, TestDb};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("an HTTP client")
}

#[tokio::test]
async fn the_root_leads_to_the_ui_and_every_page_is_the_shell() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let http = client();
    for path in ["/", "/ui"] {
        let response = http.get(app.url(path)).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(response.headers()[header::LOCATION], "/ui/");
    }
    let shell = http.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(shell.status(), 200);
    let csp = shell.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("http"), "no other host is allowed: {csp}");
    let body = shell.text().await.unwrap();
    assert!(body.contains("/ui/assets/app.js"));
    for path in [
        "/ui/sessions/questionnaire%3A1",
        "/ui/sessions/a%2Fb%20c/instances/t_x%230",
    ] {
        let response = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body, "{path} is the shell");
    }
    let missing = http
        .get(app.url("/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let other = http.get(app.url("/ui/elsewhere")).send().await.unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn assets_have_their_type_and_an_etag_that_revalidates() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let http = client();
    for (path, kind) in [
        ("/ui/assets/app.js", "text/javascript"),
        ("/ui/assets/app.css", "text/css"),
        ("/ui/vendor/graphiql.min.js", "text/javascript"),
        ("/ui/vendor/LICENSE.graphiql", "text/plain"),
    ] {
        let response = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = headers[header::ETAG].clone();
        let again = http
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let page = client()
        .get(app.url("/graphql"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("http"),
        "{csp}"
    );
    let body = page.text().await.unwrap();
    assert!(body.contains("/ui/vendor/graphiql.min.js"), "{body}");
    for needle in ["unpkg", "cdn", "https://"] {
        assert!(!body.contains(needle), "the page names {needle}: {body}");
    }
}
