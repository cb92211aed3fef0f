//! The prepaid balance: read it, top it up, read its history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, IdempotencyHeader, PageQuery, Session, WholeNumber};
use super::idempotency::Claim;
use super::openapi::{IdempotencyKeyParam, PageParams};
use super::{rfc3339, AppState};
use crate::domain::idempotency::{KeyedEndpoint, Outcome};
use crate::domain::ledger::EntryReference;
use crate::domain::page::{Cursor, ListKind};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/balance", get(balance))
        .route("/api/v1/balance/charges", post(charge))
        .route("/api/v1/balance/history", get(history))
}

#[derive(Serialize, ToSchema)]
pub(super) struct BalanceBody {
    user_id: String,
    /// Whole won.
    balance: u64,
}

#[utoipa::path(
    get, path = "/api/v1/balance", tag = "balance",
    security(("session" = [])),
    responses(
        (status = 200, description = "The prepaid balance", body = BalanceBody),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn balance(
    State(app): State<AppState>,
    session: Session,
) -> Result<Response, ApiError> {
    let balance = app.engine.ledger.balance(session.user).await?;
    Ok(Json(BalanceBody {
        user_id: session.user.to_string(),
        balance,
    })
    .into_response())
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ChargeRequest {
    /// Whole won, 1…`balance.max_charge` (else 422 `invalid_amount`).
    #[schema(value_type = u64, minimum = 1, example = 50000)]
    amount: WholeNumber,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ChargeBody {
    charge_id: String,
    amount: u64,
    /// The balance right after this charge.
    balance: u64,
}

#[utoipa::path(
    post, path = "/api/v1/balance/charges", tag = "balance",
    security(("session" = [])),
    params(IdempotencyKeyParam),
    request_body = ChargeRequest,
    responses(
        (status = 201, description = "Charged (or the original answer to a repeated `Idempotency-Key`)", body = ChargeBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 422, description = "`invalid_amount`, `balance_limit` or `idempotency_key_reused`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn charge(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    body: ApiJson<ChargeRequest>,
) -> Result<Response, ApiError> {
    let claim = app
        .idempotency
        .claim(session.user, KeyedEndpoint::Charge, key, &body.raw)
        .await?;
    let (charge, amount, balance) = match &claim {
        Claim::Replay(Outcome::Charge {
            charge,
            amount,
            balance_after,
        }) => (*charge, *amount, *balance_after),
        Claim::Replay(other) => unreachable!("charge keys record charges, not {other:?}"),
        Claim::Unkeyed | Claim::Owner(_) => {
            let receipt = app
                .engine
                .ledger
                .charge(session.user, body.value.amount.0, claim.stamp())
                .await?;
            (receipt.charge, receipt.amount, receipt.balance)
        }
    };
    let body = ChargeBody {
        charge_id: charge.to_string(),
        amount,
        balance,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct EntryBody {
    entry_id: String,
    /// `charge`, `payment` or `refund`.
    #[schema(example = "charge")]
    kind: &'static str,
    /// Always positive; `kind` gives the direction.
    amount: u64,
    balance_after: u64,
    at: String,
    /// The `charge_id` of a charge, the `reservation_id` of a payment.
    reference: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct HistoryBody {
    /// Newest first: one page.
    entries: Vec<EntryBody>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/balance/history", tag = "balance",
    security(("session" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of the charges and payments, newest first", body = HistoryBody),
        (status = 400, description = "`malformed_request`: a bad `limit` or `cursor`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn history(
    State(app): State<AppState>,
    session: Session,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let request = query.request(ListKind::BalanceHistory)?;
    let _turn = app.list_pages.acquire().await;
    let page = app.engine.ledger.history(session.user, request).await?;
    let next_cursor = page.next.map(Cursor::encode);
    let entries: Vec<_> = page
        .entries
        .into_iter()
        .map(|e| EntryBody {
            entry_id: format!("e_{}", e.entry_id),
            kind: e.kind.as_str(),
            amount: e.amount,
            balance_after: e.balance_after,
            at: rfc3339(e.at),
            reference: match e.reference {
                EntryReference::Charge(charge) => charge.to_string(),
                EntryReference::Reservation(reservation) => reservation.to_string(),
            },
        })
        .collect();
    Ok(Json(HistoryBody {
        entries,
        next_cursor,
    })
    .into_response())
}
