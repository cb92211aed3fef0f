//! What a cache may keep. Answers under `/api/v1/` carry sessions, tokens and users' data, so
//! every one of them, errors included, is sent with `Cache-Control: no-store`; the public
//! catalogue's answers (the same for every caller) are the only exception.

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

const API_PREFIX: &str = "/api/v1/";
const PUBLIC_ROUTES: [&str; 3] = [
    "/api/v1/concerts",
    "/api/v1/concerts/{concert_id}/dates",
    "/api/v1/dates/{date_id}",
];

pub(super) async fn no_store_for_private_answers(request: Request, next: Next) -> Response {
    let under_api = request.uri().path().starts_with(API_PREFIX);
    let public_route = matches!(*request.method(), Method::GET | Method::HEAD)
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|route| PUBLIC_ROUTES.contains(&route.as_str()));
    let mut response = next.run(request).await;
    let public = public_route && response.status().is_success();
    if under_api && !public {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
