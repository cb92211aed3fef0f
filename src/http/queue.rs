//! The waiting room: take a token, poll it, leave.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{QueueTokenHeader, Session};
use super::{rfc3339, AppState};
use crate::domain::admission::{Lookup, QueueStatus, Standing};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/queue/tokens", post(take_token))
        .route(
            "/api/v1/queue/tokens/current",
            get(poll_token).delete(leave_queue),
        )
}

#[derive(Serialize)]
pub struct QueueStatusBody {
    queue_token: String,
    status: &'static str,
    position: u64,
    estimated_wait_seconds: u64,
    expires_at: String,
    poll_after_seconds: u64,
    reissued: bool,
}

impl QueueStatusBody {
    pub fn new(status: &QueueStatus, reissued: bool) -> Self {
        let (state, position, estimated_wait_seconds) = match status.standing {
            Standing::Active => ("active", 0, 0),
            Standing::Waiting {
                position,
                estimated_wait_seconds,
            } => ("waiting", position, estimated_wait_seconds),
        };
        Self {
            queue_token: status.token.to_string(),
            status: state,
            position,
            estimated_wait_seconds,
            expires_at: rfc3339(status.expires_at),
            poll_after_seconds: status.poll_after_seconds,
            reissued,
        }
    }
}

async fn take_token(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let (status, created) = app.engine.queue.issue(session.user).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(QueueStatusBody::new(&status, false))).into_response())
}

async fn poll_token(
    State(app): State<AppState>,
    session: Session,
    QueueTokenHeader(token): QueueTokenHeader,
) -> Result<Response, ApiError> {
    let now = app.clock.now();
    let (status, reissued) = match app.engine.queue.poll(token, session.user, now)? {
        Lookup::Live(status) => (status, false),
        Lookup::Ended => match app.engine.queue.reissue(token, session.user).await? {
            Lookup::Live(status) => (status, true),
            Lookup::Ended => return Err(ApiError::overloaded("could not reissue a token; retry")),
        },
    };
    Ok(Json(QueueStatusBody::new(&status, reissued)).into_response())
}

async fn leave_queue(
    State(app): State<AppState>,
    session: Session,
    QueueTokenHeader(token): QueueTokenHeader,
) -> Result<StatusCode, ApiError> {
    app.engine.queue.leave(token, session.user).await?;
    Ok(StatusCode::NO_CONTENT)
}
