//! The files of the web UI, compiled into the binary: our own pages, scripts
//! and styles (`assets/`) and the third-party code of GraphiQL (`vendor/`,
//! fetched by `scripts/vendor-ui.sh`), and one module made from the server's
//! own constants (`assets/kinds.js`: the event kinds, so that the timeline's
//! filter lists every kind the log can hold). Each answer carries its content type
//! and an ETag; browsers revalidate (`no-cache`) and get a 304 while the binary
//! is the same, so a new release never serves stale scripts.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::EVENT_KINDS;

/// One embedded file.
pub(crate) struct Asset {
    /// Its path under `/ui/`.
    pub(crate) path: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($dir:literal, $name:literal, $type:expr) => {
        Asset {
            path: concat!($dir, "/", $name),
            content_type: $type,
            body: include_bytes!(concat!($dir, "/", $name)),
        }
    };
}

/// Every file under `/ui/assets/` and `/ui/vendor/`.
pub(crate) static ASSETS: &[Asset] = &[
    asset!("assets", "index.html", HTML),
    asset!("assets", "app.css", CSS),
    asset!("assets", "favicon.svg", SVG),
    asset!("assets", "app.js", JS),
    asset!("assets", "api.js", JS),
    asset!("assets", "dom.js", JS),
    asset!("assets", "list.js", JS),
    asset!("assets", "session.js", JS),
    asset!("assets", "timeline.js", JS),
    asset!("assets", "events.js", JS),
    asset!("assets", "instance.js", JS),
    asset!("assets", "graphiql.html", HTML),
    asset!("assets", "graphiql.js", JS),
    asset!("vendor", "graphiql.min.js", JS),
    asset!("vendor", "graphiql.min.css", CSS),
    asset!("vendor", "react.production.min.js", JS),
    asset!("vendor", "react-dom.production.min.js", JS),
    asset!("vendor", "LICENSE.graphiql", TEXT),
    asset!("vendor", "LICENSE.react", TEXT),
    asset!("vendor", "LICENSE.react-dom", TEXT),
    asset!("vendor", "VERSIONS", TEXT),
];

/// The path of the generated module of event kinds.
const KINDS_MODULE: &str = "assets/kinds.js";

/// The asset at `path` (relative to `/ui/`), if any.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    if path == KINDS_MODULE {
        return Some(kinds_module());
    }
    ASSETS.iter().find(|asset| asset.path == path)
}

/// `assets/kinds.js`: `export const KINDS = [...]`, every event kind in the
/// order of [`EVENT_KINDS`], made once from it.
fn kinds_module() -> &'static Asset {
    static MODULE: OnceLock<Asset> = OnceLock::new();
    MODULE.get_or_init(|| {
        let kinds = serde_json::to_string(&EVENT_KINDS).expect("strings serialise");
        let text = format!(
            "// The event kinds, made by the server from the kinds its log holds.\nexport const KINDS = {kinds};\n"
        );
        Asset {
            path: KINDS_MODULE,
            content_type: JS,
            // Made once per process and served for as long as it runs.
            body: Box::leak(text.into_bytes().into_boxed_slice()),
        }
    })
}

/// The app shell, served for every page of the UI.
pub(crate) fn shell() -> &'static Asset {
    find("assets/index.html").expect("the shell is embedded")
}

/// The GraphiQL page.
pub(crate) fn graphiql() -> &'static Asset {
    find("assets/graphiql.html").expect("the GraphiQL page is embedded")
}

impl Asset {
    /// A strong ETag: FNV-1a of the bytes, computed once per file.
    fn etag(&self) -> &'static str {
        static TAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            ASSETS
                .iter()
                .chain([kinds_module()])
                .map(|asset| {
                    let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                    });
                    (asset.path, format!("\"{hash:016x}\""))
                })
                .collect()
        });
        &tags[self.path]
    }

    /// The file, or a 304 when the browser already holds this version.
    pub(crate) fn respond(&self, request: &HeaderMap, csp: &'static str) -> Response {
        let etag = self.etag();
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static(etag));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (StatusCode::OK, headers, self.body).into_response()
    }
}
