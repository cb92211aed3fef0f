//! What the router does before a handler runs, so a slow or greedy client costs little:
//! a body is refused from its declared length or read whole under a deadline before the request
//! counts as in flight, and health and readiness answer outside every bound that load can fill.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;

use super::error::ApiError;

#[derive(Clone)]
pub struct BodyRules {
    pub bytes_max: usize,
    pub read_timeout: Duration,
}

/// A body is read here, whole, before anything else looks at the request: a `Content-Length`
/// over the limit is refused from the head, and a body that does not arrive within
/// `server.body_read_timeout_seconds` gets 408 and the connection is closed. Until its body is
/// complete a request is not in flight, so slow bodies cannot take the places of real work.
pub async fn buffer_body(
    State(rules): State<Arc<BodyRules>>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > rules.bytes_max as u64) {
        return closing(payload_too_large(rules.bytes_max));
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, rules.bytes_max).collect();
    let bytes = match tokio::time::timeout(rules.read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return closing(payload_too_large(rules.bytes_max));
        }
        Ok(Err(_)) => {
            return closing(ApiError::malformed(
                "the request body ended early or was not valid chunked encoding",
            ));
        }
        Err(_) => {
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    rules.read_timeout.as_secs()
                ),
            ));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn payload_too_large(bytes_max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {bytes_max} bytes"),
    )
}

/// The rest of the body is never read, so the connection cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Routes that answer whatever the load: a probe must tell "alive and busy" from "dead".
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Past `server.max_in_flight` concurrent requests, or `server.request_timeout_seconds`, a
/// client gets 503 `overloaded` instead of growing queues and memory.
pub async fn bound_in_flight(
    State((permits, timeout)): State<(Arc<Semaphore>, Duration)>,
    request: Request,
    next: Next,
) -> Response {
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = permits.try_acquire() else {
        return ApiError::overloaded("too many requests in flight; retry in a moment")
            .into_response();
    };
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::overloaded("the request took too long; retry in a moment").into_response()
        }
    }
}
