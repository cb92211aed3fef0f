//! The prepaid balance: read it, top it up, read its history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, IdempotencyHeader, Session, WholeNumber};
use super::idempotency::Claim;
use super::{rfc3339, AppState};
use crate::domain::idempotency::{KeyedEndpoint, Outcome};
use crate::domain::ledger::EntryReference;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/balance", get(balance))
        .route("/api/v1/balance/charges", post(charge))
        .route("/api/v1/balance/history", get(history))
}

async fn balance(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let balance = app.engine.ledger.balance(session.user).await?;
    Ok(Json(serde_json::json!({
        "user_id": session.user.to_string(),
        "balance": balance,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ChargeRequest {
    amount: WholeNumber,
}

#[derive(Serialize)]
struct ChargeBody {
    charge_id: String,
    amount: u64,
    balance: u64,
}

async fn charge(
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

#[derive(Serialize)]
struct EntryBody {
    entry_id: String,
    kind: &'static str,
    amount: u64,
    balance_after: u64,
    at: String,
    reference: String,
}

async fn history(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let entries: Vec<_> = app
        .engine
        .ledger
        .history(session.user)
        .await?
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
    Ok(Json(serde_json::json!({ "entries": entries })).into_response())
}
