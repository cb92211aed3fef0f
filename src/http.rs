//! The thin HTTP layer: routes turn JSON into typed commands for the actors and render their
//! answers. No business rule lives here.

mod admin;
mod balance;
mod cache;
mod catalog;
mod edges;
pub mod error;
pub mod extract;
pub mod idempotency;
mod limits;
mod live;
mod openapi;
mod ops;
mod queue;
mod request_metrics;
mod reservations;
mod returns;
pub mod transport;
mod users;
mod waitlist;
mod web;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{watch, Semaphore};

use crate::actors::Engine;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::Timestamp;
use crate::security::PasswordHasher;
use error::ApiError;
use idempotency::IdempotencyGate;
use request_metrics::RequestMetrics;

/// A page of a user's list is the costliest answer (a read on the blocking pool, then up to a
/// thousand entries rendered on a worker). Hundreds asked in the same instant, as a bot's
/// connections do, would fill both workers' queues with that work and hold every cheap request
/// behind it; taking turns (tokio's semaphore is first come, first served) spreads them out.
const LIST_PAGES_AT_ONCE: usize = 4;

/// What every handler shares. One `Arc`, so axum's per-request clone of the state is a single
/// atomic increment, not one per handle inside.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct AppInner {
    pub engine: Engine,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub hasher: Arc<PasswordHasher>,
    pub idempotency: Arc<IdempotencyGate>,
    /// The refund terms every date is sold under, for showing them before a refund.
    pub refunds: crate::domain::seat_map::RefundPolicy,
    pub limits: Arc<limits::RateLimits>,
    pub ready: Arc<AtomicBool>,
    in_flight: Arc<Semaphore>,
    /// Open live streams; a stream holds its permit until it ends.
    pub streams: Arc<Semaphore>,
    /// List pages being read and rendered; see `LIST_PAGES_AT_ONCE`.
    pub list_pages: Semaphore,
    /// `/openapi.json`, rendered once for these settings.
    openapi_json: std::sync::OnceLock<axum::body::Bytes>,
    /// Turns true when the server starts to stop: live streams end on it.
    pub stopping: watch::Sender<bool>,
    pub connections: Arc<transport::ConnectionStats>,
    /// The rooms `/metrics` labelled at its last scrape.
    pub named_rooms: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

impl AppState {
    pub fn new(engine: Engine, settings: Arc<Settings>, clock: SharedClock) -> Self {
        let idempotency = Arc::new(IdempotencyGate::new(engine.key_records().clone()));
        Self(Arc::new(AppInner {
            limits: limits::RateLimits::new(&settings, clock.clone()),
            hasher: Arc::new(PasswordHasher::new(&settings.auth)),
            refunds: crate::policies::date_policy(&settings).refunds,
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight)),
            streams: Arc::new(Semaphore::new(settings.server.max_streams)),
            list_pages: Semaphore::new(LIST_PAGES_AT_ONCE),
            named_rooms: Default::default(),
            engine,
            settings,
            clock,
            idempotency,
            ready: Arc::new(AtomicBool::new(false)),
            openapi_json: std::sync::OnceLock::new(),
            stopping: watch::Sender::new(false),
            connections: Arc::default(),
        }))
    }
}

pub fn router(state: AppState) -> Router {
    let body_rules = Arc::new(edges::BodyRules {
        bytes_max: state.settings.limits.body_bytes_max,
        read_timeout: Duration::from_secs(state.settings.server.body_read_timeout_seconds),
    });
    let timeout = Duration::from_secs(state.settings.server.request_timeout_seconds);
    Router::new()
        .merge(users::routes())
        .merge(queue::routes())
        .merge(catalog::routes())
        .merge(reservations::routes())
        .merge(returns::routes())
        .merge(waitlist::routes())
        .merge(balance::routes())
        .merge(admin::routes())
        .merge(live::routes())
        .merge(ops::routes())
        .merge(openapi::routes())
        .merge(web::routes())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not accept that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            after_what_it_saw,
        ))
        .layer(DefaultBodyLimit::max(body_rules.bytes_max))
        .layer(middleware::from_fn_with_state(
            (state.in_flight.clone(), timeout),
            edges::bound_in_flight,
        ))
        .layer(middleware::from_fn_with_state(
            body_rules,
            edges::buffer_body,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(RequestMetrics::default()),
            request_span,
        ))
        .layer(middleware::from_fn(cache::no_store_for_private_answers))
        .with_state(state)
}

const REQUEST_ID_HEADER: &str = "x-request-id";

/// An answer that may show logged state leaves once every change logged before it was made is
/// committed. Owners apply a change before its commit, so an answer may reflect another
/// client's change still in flight (a seat shown held, a balance, a `seat_unavailable`); were
/// the process killed before that commit, a client would have seen what recovery then takes
/// back. Waiting for the commit point makes reads and refusals linearizable too, not only
/// acknowledged changes. When nothing is pending it is one lock and one comparison; under load
/// it is at most one group commit, which a change waits for anyway.
async fn after_what_it_saw(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let reads_logged_state = shows_logged_state(request.uri().path());
    let response = next.run(request).await;
    if reads_logged_state {
        app.engine.committed_so_far().await;
    }
    response
}

/// Whether an answer on `path` may show state the log keeps: the API, except the waiting room
/// (whose line is not logged: docs/durability.md, "The waiting room"). The page, the docs,
/// health and metrics show none.
fn shows_logged_state(path: &str) -> bool {
    path.starts_with("/api/") && !path.starts_with("/api/v1/queue/")
}

/// Every request runs in a span named by its request id: the client's `X-Request-Id` when it
/// is a sane token, else a fresh one; the id goes back in the response. Headers and bodies are
/// never logged, so no password or token reaches a log line.
async fn request_span(
    State(metrics): State<Arc<RequestMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // Request ids are labels, not secrets: the thread's generator, no syscall per request.
            hex::encode(rand::random::<[u8; 16]>())
        });
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = std::time::Instant::now();
    // The route's template, not the path: ids never become labels.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let method = request.method().clone();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    metrics.record(
        &method,
        route.as_ref().map(|r| r.as_str()),
        status,
        elapsed.as_secs_f64(),
    );
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, micros, "served");
        } else {
            tracing::debug!(status, micros, "served");
        }
    });
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
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
