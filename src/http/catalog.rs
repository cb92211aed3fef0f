//! The public catalogue and the seat map of a date.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{Admitted, IdPath};
use super::{rfc3339, AppState};
use crate::actors::date::SeatView;
use crate::domain::catalog::DateInfo;
use crate::domain::seat_map::SeatStatus;
use crate::domain::{ConcertId, DateId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/concerts", get(concerts))
        .route("/api/v1/concerts/{concert_id}/dates", get(dates))
        .route("/api/v1/dates/{date_id}", get(date))
        .route("/api/v1/dates/{date_id}/seats", get(seats))
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConcertBody {
    concert_id: String,
    title: String,
    venue: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConcertsBody {
    concerts: Vec<ConcertBody>,
}

#[utoipa::path(
    get, path = "/api/v1/concerts", tag = "catalogue",
    responses(
        (status = 200, description = "Every concert", body = ConcertsBody),
    )
)]
pub(super) async fn concerts(State(app): State<AppState>) -> Response {
    let concerts: Vec<_> = app
        .engine
        .catalog
        .concerts()
        .into_iter()
        .map(|c| ConcertBody {
            concert_id: c.id.to_string(),
            title: c.title,
            venue: c.venue,
        })
        .collect();
    Json(ConcertsBody { concerts }).into_response()
}

#[derive(Serialize, ToSchema)]
pub(super) struct DateBody {
    date_id: String,
    starts_at: String,
    total_seats: u32,
    /// Neither held nor sold; may lag by up to a second.
    available_seats: u32,
    /// Whole won per seat.
    price: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct DatesBody {
    dates: Vec<DateBody>,
}

#[utoipa::path(
    get, path = "/api/v1/concerts/{concert_id}/dates", tag = "catalogue",
    params(("concert_id" = String, Path)),
    responses(
        (status = 200, description = "The concert's dates with availability", body = DatesBody),
        (status = 404, description = "`not_found`", body = Problem),
    )
)]
pub(super) async fn dates(
    State(app): State<AppState>,
    IdPath(concert): IdPath<ConcertId>,
) -> Result<Response, ApiError> {
    let dates = app
        .engine
        .catalog
        .concert_dates(concert)
        .ok_or_else(ApiError::not_found)?;
    let dates: Vec<_> = dates
        .into_iter()
        .map(|d| DateBody {
            date_id: d.id.to_string(),
            starts_at: rfc3339(d.starts_at),
            total_seats: d.seat_count,
            available_seats: available_seats(&app, &d),
            price: d.price,
        })
        .collect();
    Ok(Json(DatesBody { dates }).into_response())
}

/// Seats neither held nor sold, as the date's actor last published them.
fn available_seats(app: &AppState, date: &DateInfo) -> u32 {
    app.engine
        .dates
        .get(date.id)
        .map_or(date.seat_count, |h| h.view().available_seats())
}

/// One date with its concert, for a client that knows only the date (a reservation's).
#[derive(Serialize, ToSchema)]
pub(super) struct OneDateBody {
    date_id: String,
    concert_id: String,
    /// The concert's.
    title: String,
    /// The concert's.
    venue: String,
    starts_at: String,
    total_seats: u32,
    /// Neither held nor sold; may lag by up to a second.
    available_seats: u32,
    /// Whole won per seat.
    price: u64,
}

#[utoipa::path(
    get, path = "/api/v1/dates/{date_id}", tag = "catalogue",
    params(("date_id" = String, Path)),
    responses(
        (status = 200, description = "The date, its concert and its availability", body = OneDateBody),
        (status = 404, description = "`not_found`", body = Problem),
    )
)]
pub(super) async fn date(
    State(app): State<AppState>,
    IdPath(date): IdPath<DateId>,
) -> Result<Response, ApiError> {
    let (date, concert) = app
        .engine
        .catalog
        .date(date)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(OneDateBody {
        date_id: date.id.to_string(),
        concert_id: concert.id.to_string(),
        title: concert.title,
        venue: concert.venue,
        starts_at: rfc3339(date.starts_at),
        total_seats: date.seat_count,
        available_seats: available_seats(&app, &date),
        price: date.price,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct SeatBody {
    seat_no: u32,
    /// `available`, `held` or `sold`.
    #[schema(example = "available")]
    status: &'static str,
    price: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SeatsBody {
    date_id: String,
    seats: Vec<SeatBody>,
    /// Seats one user may hold at once on this date (`holds.max_seats_per_user`).
    max_seats_per_user: u32,
    /// How long a hold lasts (`holds.ttl_seconds`).
    hold_seconds: u64,
}

#[utoipa::path(
    get, path = "/api/v1/dates/{date_id}/seats", tag = "seats",
    security(("session" = [], "queue_token" = [])),
    params(("date_id" = String, Path)),
    responses(
        (status = 200, description = "Every seat of the date; reads the caller's own writes", body = SeatsBody),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`not_admitted`, `queue_token_expired` or `forbidden`", body = Problem),
        (status = 404, description = "`not_found`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn seats(
    State(app): State<AppState>,
    _admitted: Admitted,
    IdPath(date): IdPath<DateId>,
) -> Result<Response, ApiError> {
    let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
    Ok(Json(seat_listing(&app, handle.view())).into_response())
}

pub(super) fn seat_status_name(status: SeatStatus) -> &'static str {
    match status {
        SeatStatus::Available => "available",
        SeatStatus::Held { .. } => "held",
        SeatStatus::Sold => "sold",
    }
}

/// Every seat of a date now: the seat map's listing, and the first event of its stream.
pub(super) fn seat_listing(app: &AppState, view: &SeatView) -> SeatsBody {
    let price = view.seat_price();
    let now = app.clock.now();
    SeatsBody {
        max_seats_per_user: app.settings.holds.max_seats_per_user,
        hold_seconds: app.settings.holds.ttl_seconds,
        date_id: view.date().to_string(),
        seats: view
            .statuses(now)
            .map(|(seat, status)| SeatBody {
                seat_no: seat.0,
                status: seat_status_name(status),
                price,
            })
            .collect(),
    }
}
