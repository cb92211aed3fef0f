//! Holds (reservations) and payments.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{
    DeferredAdmission, DeferredJson, IdPath, IdempotencyHeader, PageQuery, Session, WholeNumber,
};
use super::idempotency::Claim;
use super::openapi::{IdempotencyKeyParam, PageParams};
use super::{rfc3339, AppState};
use crate::actors::date::PaymentReceipt;
use crate::domain::idempotency::{KeyedEndpoint, Outcome};
use crate::domain::page::{Cursor, ListKind};
use crate::domain::seat_map::{Reservation, SeatChoice};
use crate::domain::{DateId, PaymentId, ReservationId, SeatList, SeatNo, UserId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reservations", post(hold).get(list_mine))
        .route(
            "/api/v1/reservations/{reservation_id}",
            get(show).delete(cancel),
        )
        .route("/api/v1/payments", post(pay))
}

#[derive(Serialize, ToSchema)]
pub struct ReservationBody {
    reservation_id: String,
    date_id: String,
    seat_nos: Vec<u32>,
    /// The total of its seats, whole won.
    price: u64,
    /// `held`, `paid`, `expired` or `cancelled`.
    #[schema(example = "held")]
    status: &'static str,
    expires_at: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<String>,
}

impl ReservationBody {
    fn new(r: &Reservation, now: crate::domain::Timestamp) -> Self {
        Self {
            reservation_id: r.id.to_string(),
            date_id: r.id.date.to_string(),
            seat_nos: r.seats.iter().map(|s| s.0).collect(),
            price: r.price,
            status: r.status_at(now).as_str(),
            expires_at: rfc3339(r.expires_at),
            created_at: rfc3339(r.created_at),
            paid_at: r.paid_at.map(rfc3339),
        }
    }
}

/// Send one of `seat_no`, `seat_nos` and `best_available`.
#[derive(Deserialize, ToSchema)]
pub(super) struct HoldRequest {
    date_id: String,
    /// A seat of the date (seats are numbered from 1).
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    #[serde(default, deserialize_with = "super::extract::present")]
    seat_no: Option<WholeNumber>,
    /// Held all-or-nothing; no repeats; at most `holds.max_seats_per_user` seats held on a
    /// date at once, and `holds.max_seats_per_user_total` over all dates (else 422
    /// `hold_limit`). A seat the user let go of (cancelled or expired) within
    /// `holds.rehold_cooldown_seconds` is refused to them (409 `rehold_cooldown`).
    #[schema(value_type = Option<Vec<u32>>, min_items = 1)]
    #[serde(default, deserialize_with = "super::extract::present")]
    seat_nos: Option<Vec<WholeNumber>>,
    /// The server chooses `quantity` adjacent seats in one row: never a block that leaves a
    /// single seat free beside it when another block would not, then the section and row
    /// nearest the stage, then nearest the row's middle, then the lower seat number. None
    /// left → 409 `no_adjacent_seats`.
    #[serde(default, deserialize_with = "super::extract::present")]
    best_available: Option<BestAvailableRequest>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct BestAvailableRequest {
    /// 1…`holds.max_seats_per_user`; with the seats already held on the date, at most that
    /// (else 422 `hold_limit`).
    #[schema(value_type = u32, minimum = 1)]
    quantity: WholeNumber,
    /// A section of the date, by name; any section when absent.
    #[schema(example = "Floor")]
    #[serde(default)]
    section: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReservationsBody {
    /// The user's own, newest first (by when each entered the list), every status: one page.
    reservations: Vec<ReservationBody>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

fn requested_seats(request: &HoldRequest) -> Result<SeatChoice, ApiError> {
    let raw: &[WholeNumber] = match (&request.seat_no, &request.seat_nos, &request.best_available) {
        (None, None, Some(best)) => {
            return Ok(SeatChoice::BestAvailable {
                // A quantity past u32 is as far out of range as 0: the seat map refuses both.
                quantity: u32::try_from(best.quantity.0).unwrap_or(0),
                section: best.section.clone(),
            });
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(ApiError::invalid_input(
                "send one of seat_no, seat_nos and best_available",
            ))
        }
        (Some(one), None, None) => std::slice::from_ref(one),
        (None, Some(many), None) => many,
        (None, None, None) => {
            return Err(ApiError::malformed(
                "the body needs seat_no, seat_nos or best_available",
            ))
        }
    };
    raw.iter()
        .map(|n| {
            SeatNo::parse(n.0).ok_or_else(|| {
                ApiError::invalid_input(format!("seat number {} does not exist", n.0))
            })
        })
        .collect::<Result<SeatList, _>>()
        .map(SeatChoice::Named)
}

#[utoipa::path(
    post, path = "/api/v1/reservations", tag = "seats",
    security(("session" = [], "queue_token" = [])),
    params(IdempotencyKeyParam),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Held until `expires_at`", body = ReservationBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`not_admitted`, `queue_token_expired`, `forbidden`, or `queue_token_wrong_room`: a token of another waiting room than the date's concert's", body = Problem),
        (status = 404, description = "`not_found`: no such date", body = Problem),
        (status = 409, description = "`seat_unavailable`; `no_adjacent_seats` (best available: no block of `quantity` adjacent available seats in the section, or anywhere); or `rehold_cooldown`: this user let go of the seat (cancelled, or it expired) less than `holds.rehold_cooldown_seconds` ago; others may hold it at once", body = Problem,
            headers(("Retry-After" = u64, description = "with `rehold_cooldown`: whole seconds until this user may hold that seat again (at least 1)"))),
        (status = 422, description = "`invalid_input`, `hold_limit` (`holds.max_seats_per_user` on the date, `holds.max_seats_per_user_total` over all dates, or the concert's `max_tickets_per_user`: seats held plus owned on the date) or `idempotency_key_reused`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn hold(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    admission: DeferredAdmission,
    body: DeferredJson<HoldRequest>,
) -> Result<Response, ApiError> {
    let claim = app
        .idempotency
        .claim(session.user, KeyedEndpoint::Reservation, key, body.raw())
        .await?;
    let reservation = match &claim {
        Claim::Replay(Outcome::Reservation(placed)) => {
            recorded_reservation(&app, *placed).await?.as_placed()
        }
        Claim::Replay(other) => unreachable!("hold keys record holds, not {other:?}"),
        Claim::Unkeyed | Claim::Owner(_) => {
            let admitted = admission.check(&app, session)?;
            let body = body.parse()?;
            let seats = requested_seats(&body.value)?;
            let date: DateId = body
                .value
                .date_id
                .parse()
                .map_err(|_| ApiError::not_found())?;
            let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
            handle.admits(admitted.token)?;
            handle.hold(admitted.user, seats, claim.stamp()).await?
        }
    };
    let body = ReservationBody::new(&reservation, reservation.created_at);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/reservations/{reservation_id}", tag = "seats",
    security(("session" = [])),
    params(("reservation_id" = String, Path)),
    responses(
        (status = 200, description = "The reservation", body = ReservationBody),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`, also for another user's reservation", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn show(
    State(app): State<AppState>,
    session: Session,
    IdPath(id): IdPath<ReservationId>,
) -> Result<Response, ApiError> {
    let reservation = own_reservation(&app, session.user, id).await?;
    Ok(Json(ReservationBody::new(&reservation, app.clock.now())).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/reservations", tag = "seats",
    security(("session" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of the user's reservations, newest first", body = ReservationsBody),
        (status = 400, description = "`malformed_request`: a bad `limit` or `cursor`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn list_mine(
    State(app): State<AppState>,
    session: Session,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let request = query.request(ListKind::Reservations)?;
    let _turn = app.list_pages.acquire().await;
    let page = app
        .engine
        .dates
        .reservations_of(session.user, request)
        .await?;
    let now = app.clock.now();
    Ok(Json(ReservationsBody {
        reservations: page
            .entries
            .iter()
            .map(|r| ReservationBody::new(r, now))
            .collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
    .into_response())
}

#[utoipa::path(
    delete, path = "/api/v1/reservations/{reservation_id}", tag = "seats",
    security(("session" = [])),
    params(("reservation_id" = String, Path)),
    responses(
        (status = 204, description = "Released at once"),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`, also for another user's reservation", body = Problem),
        (status = 409, description = "`reservation_not_held`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn cancel(
    State(app): State<AppState>,
    session: Session,
    IdPath(id): IdPath<ReservationId>,
) -> Result<StatusCode, ApiError> {
    let handle = app
        .engine
        .dates
        .get(id.date)
        .ok_or_else(ApiError::not_found)?;
    handle.cancel(session.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub(super) struct PayRequest {
    reservation_id: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct PaymentBody {
    payment_id: String,
    reservation_id: String,
    amount: u64,
    balance: u64,
    date_id: String,
    seat_nos: Vec<u32>,
    paid_at: String,
}

impl From<&PaymentReceipt> for PaymentBody {
    fn from(p: &PaymentReceipt) -> Self {
        Self {
            payment_id: PaymentId(p.reservation).to_string(),
            reservation_id: p.reservation.to_string(),
            amount: p.amount,
            balance: p.balance,
            date_id: p.reservation.date.to_string(),
            seat_nos: p.seats.iter().map(|s| s.0).collect(),
            paid_at: rfc3339(p.paid_at),
        }
    }
}

/// A replayed payment answers before the queue token is checked: the original payment ended
/// that token, and the retry must still get the original answer. A hold offered from a waiting
/// list is paid without a queue token (one that is sent and valid ends, as with any payment).
#[utoipa::path(
    post, path = "/api/v1/payments", tag = "seats",
    security(("session" = [], "queue_token" = [])),
    params(IdempotencyKeyParam),
    request_body = PayRequest,
    responses(
        (status = 201, description = "Paid: seats sold, balance debited, history written, queue token expired. A hold offered from a waiting list needs no queue token", body = PaymentBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 402, description = "`insufficient_balance`; the hold stays as it was", body = Problem),
        (status = 403, description = "`not_admitted`, `queue_token_expired`, `forbidden`, or `queue_token_wrong_room` (not for a waiting-list offer, which needs no token)", body = Problem),
        (status = 404, description = "`not_found`, also for another user's reservation", body = Problem),
        (status = 409, description = "`already_paid` or `reservation_not_held`", body = Problem),
        (status = 410, description = "`hold_expired`", body = Problem),
        (status = 422, description = "`idempotency_key_reused`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn pay(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    admission: DeferredAdmission,
    body: DeferredJson<PayRequest>,
) -> Result<Response, ApiError> {
    let claim = app
        .idempotency
        .claim(session.user, KeyedEndpoint::Payment, key, body.raw())
        .await?;
    let receipt = match &claim {
        Claim::Replay(Outcome::Payment {
            reservation,
            amount,
            balance_after,
            paid_at,
        }) => PaymentReceipt {
            reservation: *reservation,
            amount: *amount,
            balance: *balance_after,
            seats: recorded_reservation(&app, *reservation).await?.seats,
            paid_at: *paid_at,
        },
        Claim::Replay(other) => unreachable!("payment keys record payments, not {other:?}"),
        Claim::Unkeyed | Claim::Owner(_) => {
            let user = session.user;
            match admission.check(&app, session) {
                Ok(admitted) => {
                    let body = body.parse()?;
                    let id: ReservationId = body
                        .value
                        .reservation_id
                        .parse()
                        .map_err(|_| ApiError::not_found())?;
                    let handle = app
                        .engine
                        .dates
                        .get(id.date)
                        .ok_or_else(ApiError::not_found)?;
                    // An offer needs no token, so one of another room is not held against it
                    // (nor ended by it).
                    let token = match handle.admits(admitted.token) {
                        Ok(()) => Some(admitted.token),
                        Err(_) if handle.is_offer(user, id).await? => None,
                        Err(wrong_room) => return Err(wrong_room.into()),
                    };
                    handle.pay(admitted.user, id, claim.stamp(), token).await?
                }
                // A hold offered from a waiting list is paid without a queue token; anything
                // else is refused for the token, as before.
                Err(refused) => {
                    let offer = body
                        .parse()
                        .ok()
                        .and_then(|body| body.value.reservation_id.parse::<ReservationId>().ok())
                        .and_then(|id| Some((id, app.engine.dates.get(id.date)?)));
                    let Some((id, handle)) = offer else {
                        return Err(refused);
                    };
                    if !handle.is_offer(user, id).await? {
                        return Err(refused);
                    }
                    handle.pay(user, id, claim.stamp(), None).await?
                }
            }
        }
    };
    Ok((StatusCode::CREATED, Json(PaymentBody::from(&receipt))).into_response())
}

/// The reservation an idempotency record names: the book keeps only its id, the date the
/// rest. The record says its user made it, though they may have given it away since, and the
/// replay answers as the original did.
async fn recorded_reservation(app: &AppState, id: ReservationId) -> Result<Reservation, ApiError> {
    let handle = app
        .engine
        .dates
        .get(id.date)
        .ok_or_else(ApiError::not_found)?;
    Ok(handle.recorded_reservation(id).await?)
}

/// The user's reservation `id` (another user's is not found).
async fn own_reservation(
    app: &AppState,
    user: UserId,
    id: ReservationId,
) -> Result<Reservation, ApiError> {
    let handle = app
        .engine
        .dates
        .get(id.date)
        .ok_or_else(ApiError::not_found)?;
    Ok(handle.reservation(user, id).await?)
}
