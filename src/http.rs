//! The thin HTTP layer: routes turn JSON into typed commands for the actors and render their
//! answers. No business rule lives here.

mod admin;
mod balance;
mod catalog;
pub mod error;
pub mod extract;
pub mod idempotency;
mod limits;
mod ops;
mod queue;
mod reservations;
mod users;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::actors::Engine;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::Timestamp;
use crate::security::PasswordHasher;
use error::ApiError;
use idempotency::IdempotencyGate;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub hasher: Arc<PasswordHasher>,
    pub idempotency: Arc<IdempotencyGate>,
    pub limits: Arc<limits::RateLimits>,
    pub ready: Arc<AtomicBool>,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(engine: Engine, settings: Arc<Settings>, clock: SharedClock) -> Self {
        let idempotency = Arc::new(IdempotencyGate::new(engine.durability.book.clone()));
        Self {
            limits: limits::RateLimits::new(&settings.limits, clock.clone()),
            hasher: Arc::new(PasswordHasher::new(&settings.auth)),
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight)),
            engine,
            settings,
            clock,
            idempotency,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.limits.body_bytes_max;
    let timeout = Duration::from_secs(state.settings.server.request_timeout_seconds);
    Router::new()
        .merge(users::routes())
        .merge(queue::routes())
        .merge(catalog::routes())
        .merge(reservations::routes())
        .merge(balance::routes())
        .merge(admin::routes())
        .merge(ops::routes())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            (state.in_flight.clone(), timeout),
            bound_in_flight,
        ))
        .with_state(state)
}

/// Past `server.max_in_flight` concurrent requests, or `server.request_timeout_seconds`, a
/// client gets 503 `overloaded` instead of growing queues and memory.
async fn bound_in_flight(
    State((permits, timeout)): State<(Arc<Semaphore>, Duration)>,
    request: Request,
    next: Next,
) -> Response {
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

/// RFC 3339 in UTC, as every time in the API.
pub fn rfc3339(at: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_millis() as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_rfc3339(raw: &str) -> Option<Timestamp> {
    let t = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
    Some(Timestamp::from_millis(
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?,
    ))
}
