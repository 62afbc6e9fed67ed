//! The browser console at `/`: its page, script and style, and the JS client at `/herald.js`
//! (the very file `clients/js/src/herald.js`, so there is one copy), all compiled into the
//! binary so nothing needs building or installing to open it.
//!
//! These routes are pages, not the server API: they stay outside the route table and the
//! OpenAPI document, like `/test/echo`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Herald;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");
const CLIENT: &str = include_str!("../../../../clients/js/src/herald.js");

/// Only this origin's scripts, styles and connections (the WebSocket and the API included);
/// the page may not be framed.
const POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `/`, `/console.js`, `/console.css` and `/herald.js`.
pub(super) fn router() -> Router<Herald> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/herald.js", get(client))
}

/// `/herald.js`, importable from another origin's page: `Access-Control-Allow-Origin` names
/// the page's origin when `allowed_origins` allows it (any origin when that list is empty).
async fn client(
    axum::extract::State(node): axum::extract::State<Herald>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let mut response = asset("text/javascript; charset=utf-8", CLIENT).into_response();
    let allowed = &node.config().allowed_origins;
    let origin = headers
        .get(header::ORIGIN)
        .filter(|o| allowed.is_empty() || allowed.iter().any(|a| o.as_bytes() == a.as_bytes()));
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, axum::http::HeaderValue::from_static("Origin"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
}
