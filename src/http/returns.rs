//! Seats that come back: refunds of paid reservations and transfers to another user. Neither
//! needs a queue token: the seats are already the caller's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, IdempotencyHeader, Session};
use super::idempotency::Claim;
use super::openapi::IdempotencyKeyParam;
use super::{rfc3339, AppState};
use crate::actors::date::{RefundReceipt, TransferReceipt};
use crate::domain::idempotency::{KeyedEndpoint, Outcome};
use crate::domain::{RefundId, ReservationId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/refunds", post(refund))
        .route("/api/v1/transfers", post(transfer))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct RefundRequest {
    /// A paid reservation the caller holds.
    reservation_id: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RefundBody {
    refund_id: String,
    reservation_id: String,
    /// Credited to the payer: the price less the fee.
    amount: u64,
    /// ⌊price × `refunds.fee_percent` ÷ 100⌋, kept.
    fee: u64,
    /// Who paid for the reservation, and was credited (whoever holds it).
    credited_user_id: String,
    /// The caller's balance right after (unchanged when the caller did not pay).
    balance: u64,
    refunded_at: String,
}

impl From<&RefundReceipt> for RefundBody {
    fn from(r: &RefundReceipt) -> Self {
        Self {
            refund_id: RefundId(r.reservation).to_string(),
            reservation_id: r.reservation.to_string(),
            amount: r.amount,
            fee: r.fee,
            credited_user_id: r.payer.to_string(),
            balance: r.balance,
            refunded_at: rfc3339(r.refunded_at),
        }
    }
}

/// A reservation id that does not parse names nothing: 404, as for any other reservation the
/// caller does not hold.
fn reservation_named(raw: &str) -> Result<ReservationId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

#[utoipa::path(
    post, path = "/api/v1/refunds", tag = "seats",
    security(("session" = [])),
    params(IdempotencyKeyParam),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "Refunded: the seats are available again (to the date's waiting list first), the payer is credited the price less the fee (even above `balance.max_balance`), the reservation is `refunded`: one atomic change", body = RefundBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`: no reservation the caller holds", body = Problem),
        (status = 409, description = "`reservation_not_paid`, or `refund_window_closed`: the date starts within `refunds.window_closes_hours_before_start` hours", body = Problem),
        (status = 422, description = "`idempotency_key_reused`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn refund(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    body: ApiJson<RefundRequest>,
) -> Result<Response, ApiError> {
    let claim = app
        .idempotency
        .claim(session.user, KeyedEndpoint::Refund, key, &body.raw)
        .await?;
    let receipt = match &claim {
        Claim::Replay(Outcome::Refund {
            reservation,
            amount,
            fee,
            payer,
            balance,
            at,
        }) => RefundReceipt {
            reservation: *reservation,
            amount: *amount,
            fee: *fee,
            payer: *payer,
            balance: *balance,
            refunded_at: *at,
        },
        Claim::Replay(other) => unreachable!("refund keys record refunds, not {other:?}"),
        Claim::Unkeyed | Claim::Owner(_) => {
            let id = reservation_named(&body.value.reservation_id)?;
            let handle = app
                .engine
                .dates
                .get(id.date)
                .ok_or_else(ApiError::not_found)?;
            handle.refund(session.user, id, claim.stamp()).await?
        }
    };
    Ok((StatusCode::CREATED, Json(RefundBody::from(&receipt))).into_response())
}

#[derive(Deserialize, ToSchema)]
pub(super) struct TransferRequest {
    /// A paid reservation the caller holds.
    reservation_id: String,
    /// The user to give it to: an existing user other than the caller (else 422
    /// `invalid_input`).
    #[schema(example = "friend_of_alice")]
    to_username: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TransferBody {
    transfer_id: String,
    reservation_id: String,
    from_user_id: String,
    to_user_id: String,
    transferred_at: String,
}

impl From<&TransferReceipt> for TransferBody {
    fn from(t: &TransferReceipt) -> Self {
        Self {
            transfer_id: t.transfer.to_string(),
            reservation_id: t.reservation.to_string(),
            from_user_id: t.from.to_string(),
            to_user_id: t.to.to_string(),
            transferred_at: rfc3339(t.transferred_at),
        }
    }
}

#[utoipa::path(
    post, path = "/api/v1/transfers", tag = "seats",
    security(("session" = [])),
    params(IdempotencyKeyParam),
    request_body = TransferRequest,
    responses(
        (status = 201, description = "Given: the reservation leaves the caller's list (404 to them from now on) and enters the recipient's, still `paid`. No balance changes; a later refund still credits the payer", body = TransferBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`: no reservation the caller holds", body = Problem),
        (status = 409, description = "`reservation_not_paid`", body = Problem),
        (status = 422, description = "`invalid_input`: `to_username` is no user, or the caller; `hold_limit`: the recipient would pass the concert's `max_tickets_per_user` on that date; `idempotency_key_reused`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn transfer(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    body: ApiJson<TransferRequest>,
) -> Result<Response, ApiError> {
    let claim = app
        .idempotency
        .claim(session.user, KeyedEndpoint::Transfer, key, &body.raw)
        .await?;
    let receipt = match &claim {
        Claim::Replay(Outcome::Transfer {
            transfer,
            reservation,
            from,
            to,
            at,
        }) => TransferReceipt {
            transfer: *transfer,
            reservation: *reservation,
            from: *from,
            to: *to,
            transferred_at: *at,
        },
        Claim::Replay(other) => unreachable!("transfer keys record transfers, not {other:?}"),
        Claim::Unkeyed | Claim::Owner(_) => {
            let id = reservation_named(&body.value.reservation_id)?;
            let handle = app
                .engine
                .dates
                .get(id.date)
                .ok_or_else(ApiError::not_found)?;
            let to = app.engine.accounts.user_named(&body.value.to_username);
            handle.transfer(session.user, to, id, claim.stamp()).await?
        }
    };
    Ok((StatusCode::CREATED, Json(TransferBody::from(&receipt))).into_response())
}
