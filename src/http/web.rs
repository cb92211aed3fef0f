//! The buyer's web page, embedded in the binary: no CDN, no build step. It is a plain client of
//! the API and holds no rule of its own.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/app.css");
const ICON_SVG: &str = include_str!("../web/favicon.svg");
/// A 32×32 PNG in an ICO wrapper, for browsers that ask for `/favicon.ico` whatever the page says.
const ICON_ICO: &[u8] = include_bytes!("../web/favicon.ico");

/// Only our own files run; the page talks to nothing but this server.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { page("image/svg+xml", ICON_SVG) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { page("image/x-icon", ICON_ICO) }),
        )
}

fn page(content_type: &'static str, body: impl IntoResponse) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
