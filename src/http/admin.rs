//! The admin API: create concerts and dates, read engine-wide counts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{AdminAuth, ApiJson, IdPath, WholeNumber};
use super::{parse_rfc3339, AppState};
use crate::domain::ConcertId;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/concerts", post(create_concert))
        .route(
            "/api/v1/admin/concerts/{concert_id}/dates",
            post(create_date),
        )
        .route("/api/v1/admin/stats", get(stats))
}

#[derive(Deserialize)]
struct ConcertRequest {
    title: String,
    venue: String,
}

async fn create_concert(
    State(app): State<AppState>,
    _admin: AdminAuth,
    body: ApiJson<ConcertRequest>,
) -> Result<Response, ApiError> {
    let ConcertRequest { title, venue } = body.value;
    let concert = app.engine.catalog.create_concert(title, venue).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "concert_id": concert.to_string() })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct DateRequest {
    starts_at: String,
    seat_count: WholeNumber,
    price: WholeNumber,
}

async fn create_date(
    State(app): State<AppState>,
    _admin: AdminAuth,
    IdPath(concert): IdPath<ConcertId>,
    body: ApiJson<DateRequest>,
) -> Result<Response, ApiError> {
    let starts_at = parse_rfc3339(&body.value.starts_at).ok_or_else(|| {
        ApiError::invalid_input("starts_at must be an RFC 3339 time, e.g. 2026-12-24T19:00:00Z")
    })?;
    let date = app
        .engine
        .catalog
        .create_date(
            concert,
            starts_at,
            body.value.seat_count.0,
            body.value.price.0,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "date_id": date.to_string() })),
    )
        .into_response())
}

async fn stats(State(app): State<AppState>, _admin: AdminAuth) -> Response {
    let (queue_waiting, queue_active) = app.engine.queue.counts();
    let (mut seats_total, mut seats_held, mut seats_sold) = (0u64, 0u64, 0u64);
    for date in app.engine.dates.all() {
        let view = date.view();
        seats_total += view.seat_count() as u64;
        seats_held += view.held_seats() as u64;
        seats_sold += view.sold_seats() as u64;
    }
    Json(json!({
        "users": app.engine.accounts.user_count(),
        "queue_waiting": queue_waiting,
        "queue_active": queue_active,
        "seats_total": seats_total,
        "seats_held": seats_held,
        "seats_sold": seats_sold,
        "log_sequence": app.engine.durability.log.last_sequence(),
        "replayed_events": app.engine.replayed_events,
        "log_commits": app.engine.durability.log.stats().commits.load(std::sync::atomic::Ordering::Relaxed),
        "log_events_committed": app.engine.durability.log.stats().events.load(std::sync::atomic::Ordering::Relaxed),
    }))
    .into_response()
}
