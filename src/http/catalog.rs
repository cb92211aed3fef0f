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
use crate::domain::seat_map::{SaleState, SeatStatus};
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
    /// When the sale opens (RFC 3339), or null when it is open from the start.
    sale_opens_at: Option<String>,
    /// `own`: take tokens with `{concert_id}`; `general`: the general room's tokens.
    #[schema(example = "general")]
    waiting_room: &'static str,
    /// Seats a user may hold plus own on each date, or null for no limit beyond the hold limits.
    max_tickets_per_user: Option<u32>,
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
            sale_opens_at: c.room.and_then(|room| room.sale_opens_at).map(rfc3339),
            waiting_room: match c.room {
                Some(_) => "own",
                None => "general",
            },
            max_tickets_per_user: c.max_tickets_per_user,
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
    /// `on_sale`, `cancelled` or `sales_closed` (once `starts_at` has passed); more values may
    /// come, so treat an unknown one as not on sale.
    #[schema(example = "on_sale")]
    status: &'static str,
    total_seats: u32,
    /// Neither held nor sold; may lag by up to a second.
    available_seats: u32,
    /// Whole won per seat: the cheapest section's price.
    price: u64,
    /// In stage order: the first is nearest the stage.
    sections: Vec<SectionAvailability>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SectionAvailability {
    name: String,
    /// Whole won per seat.
    price: u64,
    total_seats: u32,
    /// Neither held nor sold; may lag by up to a second.
    available_seats: u32,
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
            status: sale_state(&app, &d).as_str(),
            total_seats: d.seat_count(),
            available_seats: available_seats(&app, &d),
            price: d.price_from(),
            sections: section_availability(&app, &d),
        })
        .collect();
    Ok(Json(DatesBody { dates }).into_response())
}

/// Whether the date sells now, as its actor last published it.
fn sale_state(app: &AppState, date: &DateInfo) -> SaleState {
    let now = app.clock.now();
    app.engine.dates.get(date.id).map_or_else(
        || SaleState::of(false, date.starts_at, now),
        |h| h.view().sale_state(now),
    )
}

/// Seats neither held nor sold, as the date's actor last published them.
fn available_seats(app: &AppState, date: &DateInfo) -> u32 {
    app.engine
        .dates
        .get(date.id)
        .map_or(date.seat_count(), |h| h.view().available_seats())
}

/// Each section's seats and those neither held nor sold, as the date's actor last published
/// them.
fn section_availability(app: &AppState, date: &DateInfo) -> Vec<SectionAvailability> {
    let handle = app.engine.dates.get(date.id);
    let mut available = handle.iter().flat_map(|h| h.view().available_by_section());
    date.layout
        .sections()
        .iter()
        .zip(date.layout.section_seats())
        .map(|(section, total)| SectionAvailability {
            name: section.name.clone(),
            price: section.price,
            total_seats: total,
            available_seats: available.next().unwrap_or(total),
        })
        .collect()
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
    /// `on_sale`, `cancelled` or `sales_closed` (once `starts_at` has passed); more values may
    /// come, so treat an unknown one as not on sale.
    #[schema(example = "on_sale")]
    status: &'static str,
    total_seats: u32,
    /// Neither held nor sold; may lag by up to a second.
    available_seats: u32,
    /// Whole won per seat: the cheapest section's price.
    price: u64,
    /// In stage order: the first is nearest the stage.
    sections: Vec<SectionAvailability>,
    /// Share of a reservation's price a refund keeps (`refunds.fee_percent`).
    refund_fee_percent: u8,
    /// Refunds of this date are refused from this instant on.
    refunds_close_at: String,
    /// `own`: its seats take tokens of the concert's room (`POST /queue/tokens` with
    /// `{concert_id}`); `general`: of the general room.
    #[schema(example = "general")]
    waiting_room: &'static str,
    /// When the concert's sale opens, or null.
    sale_opens_at: Option<String>,
    /// Seats a user may hold plus own on this date, or null.
    max_tickets_per_user: Option<u32>,
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
        waiting_room: match concert.room {
            Some(_) => "own",
            None => "general",
        },
        sale_opens_at: concert.room.and_then(|r| r.sale_opens_at).map(rfc3339),
        max_tickets_per_user: concert.max_tickets_per_user,
        date_id: date.id.to_string(),
        concert_id: concert.id.to_string(),
        title: concert.title,
        venue: concert.venue,
        starts_at: rfc3339(date.starts_at),
        status: sale_state(&app, &date).as_str(),
        total_seats: date.seat_count(),
        available_seats: available_seats(&app, &date),
        price: date.price_from(),
        sections: section_availability(&app, &date),
        refund_fee_percent: app.refunds.fee_percent,
        refunds_close_at: rfc3339(app.refunds.closes_at(date.starts_at)),
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct SeatBody<'a> {
    seat_no: u32,
    /// `available`, `held` or `sold`.
    #[schema(example = "available")]
    status: &'static str,
    /// Whole won: its section's price.
    price: u64,
    /// Its section's name.
    #[schema(example = "Floor")]
    section: &'a str,
    /// Its row's label.
    #[schema(example = "A")]
    row: &'a str,
    /// Its number within the row, from 1.
    seat: u32,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SectionLayout {
    name: String,
    /// Whole won per seat.
    price: u64,
    /// The first is nearest the stage.
    rows: Vec<RowLayout>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RowLayout {
    row: String,
    /// The `seat_no` of its first seat; the rest follow in order.
    first_seat_no: u32,
    seats: u32,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SeatsBody<'a> {
    date_id: String,
    seats: Vec<SeatBody<'a>>,
    /// The venue: sections in stage order, the first nearest the stage.
    sections: Vec<SectionLayout>,
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
        (status = 403, description = "`not_admitted`, `queue_token_expired`, `forbidden`, or `queue_token_wrong_room`: a token of another waiting room than the date's concert's", body = Problem),
        (status = 404, description = "`not_found`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn seats(
    State(app): State<AppState>,
    admitted: Admitted,
    IdPath(date): IdPath<DateId>,
) -> Result<Response, ApiError> {
    let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
    handle.admits(admitted.token)?;
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
pub(super) fn seat_listing<'a>(app: &AppState, view: &'a SeatView) -> SeatsBody<'a> {
    let now = app.clock.now();
    let layout = view.layout();
    let mut statuses = view.statuses(now);
    let mut seats = Vec::with_capacity(view.seat_count() as usize);
    let mut sections = Vec::with_capacity(layout.sections().len());
    for section in layout.sections() {
        let rows = &layout.rows()[section.rows.start as usize..section.rows.end as usize];
        for row in rows {
            for (place, (seat, status)) in (1..=row.seats).zip(statuses.by_ref()) {
                seats.push(SeatBody {
                    seat_no: seat.0,
                    status: seat_status_name(status),
                    price: section.price,
                    section: &section.name,
                    row: &row.label,
                    seat: place,
                });
            }
        }
        sections.push(SectionLayout {
            name: section.name.clone(),
            price: section.price,
            rows: rows
                .iter()
                .map(|row| RowLayout {
                    row: row.label.clone(),
                    first_seat_no: row.first_seat.0,
                    seats: row.seats,
                })
                .collect(),
        });
    }
    SeatsBody {
        max_seats_per_user: app.settings.holds.max_seats_per_user,
        hold_seconds: app.settings.holds.ttl_seconds,
        date_id: view.date().to_string(),
        seats,
        sections,
    }
}
