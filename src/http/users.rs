//! Sign-up, sign-in, sign-out, and the signed-in user.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, Session};
use super::{rfc3339, AppState};
use crate::domain::{Password, Username};
use crate::security::SessionToken;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", post(sign_up))
        .route("/api/v1/users/me", get(me))
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/sessions/current", delete(sign_out))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct Credentials {
    /// 3–32 characters of `a-z`, `0-9`, `_`, `.` and `-` (else 422 `invalid_input` on
    /// sign-up; no such user can sign in).
    #[schema(
        example = "ada",
        min_length = 3,
        max_length = 32,
        pattern = "^[a-z0-9_.-]+$"
    )]
    username: String,
    /// 8–128 characters; all of them count.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct UserBody {
    user_id: String,
    username: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionBody {
    /// Send as `Authorization: Bearer <session_token>`.
    session_token: String,
    user_id: String,
    expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct MeBody {
    user_id: String,
    username: String,
    /// Whole won.
    balance: u64,
}

#[utoipa::path(
    post, path = "/api/v1/users", tag = "users",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed up", body = UserBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 409, description = "`username_taken`", body = Problem),
        (status = 422, description = "`invalid_input`: username or password out of range", body = Problem),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address", body = Problem),
    )
)]
pub(super) async fn sign_up(
    State(app): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    app.limits.auth_attempt(client.ip(), app.clock.now())?;
    let username = Username::parse(&body.value.username).ok_or_else(|| {
        ApiError::invalid_input("username must be 3 to 32 characters of a-z, 0-9, _, . and -")
    })?;
    let password = Password::parse(&body.value.password)
        .ok_or_else(|| ApiError::invalid_input("password must be 8 to 128 characters"))?;
    if app.engine.accounts.credentials(username.as_str()).is_some() {
        return Err(crate::domain::DomainError::UsernameTaken.into());
    }
    let hasher = app.hasher.clone();
    let hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await
        .map_err(|_| ApiError::overloaded("could not hash the password; retry"))?;
    let user = app.engine.accounts.register(username.clone(), hash).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserBody {
            user_id: user.to_string(),
            username: username.as_str().to_owned(),
        }),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "users",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed in", body = SessionBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`invalid_credentials`", body = Problem),
        (status = 429, description = "`rate_limited`: too many sign-ins from this address, or too many failed ones to this account (`limits.failed_logins_per_account_per_minute`; an address that signed in to the account before is not shut out by failures elsewhere); see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn sign_in(
    State(app): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    app.limits.auth_attempt(client.ip(), app.clock.now())?;
    let Credentials { username, password } = body.value;
    // Before the hash: a refused guess costs no CPU.
    app.limits
        .sign_in_attempt(&username, client.ip(), app.clock.now())?;
    let found = app.engine.accounts.credentials(&username);
    let hasher = app.hasher.clone();
    let stored = found.as_ref().map(|(_, hash)| hash.clone());
    let verified = tokio::task::spawn_blocking(move || hasher.verify(&password, stored.as_deref()))
        .await
        .map_err(|_| ApiError::overloaded("could not check the password; retry"))?;
    let user = match (verified, found) {
        (true, Some((user, _))) => user,
        _ => return Err(crate::domain::DomainError::InvalidCredentials.into()),
    };
    app.limits
        .signed_in(&username, client.ip(), app.clock.now());
    let secret = SessionToken::random_secret();
    let (session, expires_at) = app
        .engine
        .accounts
        .open_session(user, SessionToken::digest_of(&secret))
        .await?;
    let token = SessionToken::new(session, secret);
    Ok((
        StatusCode::CREATED,
        Json(SessionBody {
            session_token: token.encode(),
            user_id: user.to_string(),
            expires_at: rfc3339(expires_at),
        }),
    )
        .into_response())
}

#[utoipa::path(
    delete, path = "/api/v1/sessions/current", tag = "users",
    security(("session" = [])),
    responses(
        (status = 204, description = "Signed out; the token no longer works"),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn sign_out(
    State(app): State<AppState>,
    session: Session,
) -> Result<StatusCode, ApiError> {
    app.engine.accounts.close_session(session.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "users",
    security(("session" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = MeBody),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn me(
    State(app): State<AppState>,
    session: Session,
) -> Result<Response, ApiError> {
    let balance = app.engine.ledger.balance(session.user).await?;
    let username = app
        .engine
        .accounts
        .username(session.user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(MeBody {
        user_id: session.user.to_string(),
        username,
        balance,
    })
    .into_response())
}
