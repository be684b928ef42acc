//! The web UI (docs/ui.md): a sessions list, a session page (tasks, instances,
//! a timeline, the event log, live updates, time travel) and an instance page
//! ("why it ran", replay and skip), written as plain ES modules that talk to
//! `/graphql` like any client. Everything is embedded in the binary
//! ([`assets`]) and nothing loads from another host.
//!
//! Every page of the UI is the same shell; the script reads the route from
//! the location. The shell and the assets hold no session data, so they are
//! served without the API token; the data comes from `/graphql`, which asks
//! for it.

mod assets;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The policy of the UI's pages: only this server's scripts, styles, images
/// and connections (WebSocket to the same host included).
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of the GraphiQL page: the same, plus the inline styles and
/// fonts its editor sets at run time.
const GRAPHIQL_CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/`, `/ui/...`: the pages and their files.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(shell))
        .route("/ui/sessions/{uid}", get(shell))
        .route("/ui/sessions/{uid}/instances/{name}", get(shell))
        .route("/ui/assets/{file}", get(asset_in("assets")))
        .route("/ui/vendor/{file}", get(asset_in("vendor")))
}

/// The GraphiQL page of `GET /graphql`, its code served from `/ui/vendor/`.
pub fn graphiql(request: &HeaderMap) -> Response {
    assets::graphiql().respond(request, GRAPHIQL_CSP)
}

async fn shell(headers: HeaderMap) -> Response {
    assets::shell().respond(&headers, CSP)
}

fn asset_in(
    dir: &'static str,
) -> impl Fn(Path<String>, HeaderMap) -> std::future::Ready<Response> + Clone {
    move |Path(file): Path<String>, headers: HeaderMap| {
        let found = assets::find(&format!("{dir}/{file}"));
        std::future::ready(match found {
            Some(asset) => asset.respond(&headers, CSP),
            None => (StatusCode::NOT_FOUND, "no such file in the UI").into_response(),
        })
    }
}
