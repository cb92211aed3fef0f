//! The waiting room: take a token, poll it, leave.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{DeferredJson, QueueTokenHeader, Session};
use super::{rfc3339, AppState};
use crate::domain::admission::{Lookup, QueueStatus, RoomId, Standing};
use crate::domain::ConcertId;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/queue/tokens", post(take_token))
        .route(
            "/api/v1/queue/tokens/current",
            get(poll_token).delete(leave_queue),
        )
}

#[derive(Serialize, ToSchema)]
pub struct QueueStatusBody {
    /// Send as `X-Queue-Token`.
    queue_token: String,
    /// The concert whose room this token is of; null in the general room.
    concert_id: Option<String>,
    /// `pre_queue` (before the room's sale opening), `waiting` or `active`.
    #[schema(example = "waiting")]
    status: &'static str,
    /// 1 for the next to be admitted, 0 when active; in the pre-queue, the number of tokens
    /// in it (places are drawn at the opening).
    position: u64,
    /// In the pre-queue: the seconds until the opening plus the expected wait of a random place
    /// in it.
    estimated_wait_seconds: u64,
    /// Active: the end of the admission. Waiting: when it is dropped unless polled. Pre-queue:
    /// the opening plus `queue.waiting_ttl_seconds`.
    expires_at: String,
    poll_after_seconds: u64,
    /// True when the presented token had ended and this is a fresh one at the back of the line.
    reissued: bool,
}

impl QueueStatusBody {
    pub fn new(status: &QueueStatus, reissued: bool) -> Self {
        let (state, position, estimated_wait_seconds) = match status.standing {
            Standing::Active => ("active", 0, 0),
            Standing::PreQueue {
                size,
                estimated_wait_seconds,
            } => ("pre_queue", size, estimated_wait_seconds),
            Standing::Waiting {
                position,
                estimated_wait_seconds,
            } => ("waiting", position, estimated_wait_seconds),
        };
        Self {
            queue_token: status.token.to_string(),
            concert_id: status.token.room().concert().map(|c| c.to_string()),
            status: state,
            position,
            estimated_wait_seconds,
            expires_at: rfc3339(status.expires_at),
            poll_after_seconds: status.poll_after_seconds,
            reissued,
        }
    }
}

/// `{concert_id}`: a token of that concert's own room. No body (or `{}`): the general room.
#[derive(Deserialize, ToSchema)]
pub(super) struct TokenRequest {
    #[serde(default, deserialize_with = "super::extract::present")]
    concert_id: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/queue/tokens", tag = "queue",
    security(("session" = [])),
    request_body(content = Option<TokenRequest>, description = "Optional: `{concert_id}` of a concert with its own room"),
    responses(
        (status = 201, description = "A new token", body = QueueStatusBody),
        (status = 200, description = "The user's live token of that room (counts as a poll)", body = QueueStatusBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`: no such concert", body = Problem),
        (status = 415, description = "`unsupported_media_type`: a body that is not JSON", body = Problem),
        (status = 422, description = "`invalid_input`: the concert uses the general room", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn take_token(
    State(app): State<AppState>,
    session: Session,
    body: DeferredJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let asked = if body.raw().iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        body.parse()?.value.concert_id
    };
    let room = match asked {
        None => RoomId::General,
        Some(concert) => {
            let concert: ConcertId = concert.parse().map_err(|_| ApiError::not_found())?;
            app.engine.catalog.room_for_tokens(concert)?
        }
    };
    let (status, created) = app.engine.queue.issue(room, session.user).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(QueueStatusBody::new(&status, false))).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/queue/tokens/current", tag = "queue",
    security(("session" = [], "queue_token" = [])),
    responses(
        (status = 200, description = "Position and ETA; an ended token is reissued (`reissued: true`)", body = QueueStatusBody),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`forbidden`: another user's token", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn poll_token(
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

#[utoipa::path(
    delete, path = "/api/v1/queue/tokens/current", tag = "queue",
    security(("session" = [], "queue_token" = [])),
    responses(
        (status = 204, description = "Left the queue"),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`forbidden`: another user's token", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn leave_queue(
    State(app): State<AppState>,
    session: Session,
    QueueTokenHeader(token): QueueTokenHeader,
) -> Result<StatusCode, ApiError> {
    app.engine.queue.leave(token, session.user).await?;
    Ok(StatusCode::NO_CONTENT)
}
