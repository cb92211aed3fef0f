//! Live updates as Server-Sent Events: the seat changes of a date, and a waiting-room token's
//! status. Streams read the owners' views (atomics and read locks); no stream ever sends a
//! message to an actor, so a thousand idle subscribers cost a thousand parked tasks, not a
//! thousand mailbox trips a second.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::OwnedSemaphorePermit;

use super::catalog::{seat_listing, seat_status_name};
use super::error::{ApiError, Problem};
use super::extract::{Admitted, IdPath, QueueTokenHeader, Session};
use super::limits::SessionStreamSlot;
use super::queue::QueueStatusBody;
use super::AppState;
use crate::actors::date::SeatBatch;
use crate::domain::admission::{Lookup, QueueStatus, QueueTokenId, Standing};
use crate::domain::DateId;

/// How often a stream checks that its session (and queue token) are still valid.
const RECHECK: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dates/{date_id}/seats/events", get(seat_events))
        .route("/api/v1/queue/tokens/current/events", get(queue_events))
}

#[derive(Serialize)]
struct SeatChange {
    seat_no: u32,
    status: &'static str,
}

fn render(batch: &SeatBatch) -> &str {
    batch.rendered.get_or_init(|| {
        let changes: Vec<SeatChange> = batch
            .changes
            .iter()
            .map(|(seat, status)| SeatChange {
                seat_no: seat.0,
                status: seat_status_name(*status),
            })
            .collect();
        serde_json::to_string(&changes).expect("seat changes serialize")
    })
}

/// A stream's places: one of its session's (`server.max_streams_per_session`, else 429) and
/// one of the server's (`server.max_streams`, else 503), both held until the stream ends.
struct StreamPermit {
    _session: SessionStreamSlot,
    _server: OwnedSemaphorePermit,
}

fn stream_permit(app: &AppState, session: &Session) -> Result<StreamPermit, ApiError> {
    let session_slot = app.limits.open_stream(session.session)?;
    let server = app.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded("too many live streams are open; poll instead, or retry in a while")
    })?;
    Ok(StreamPermit {
        _session: session_slot,
        _server: server,
    })
}

struct SeatStream {
    _permit: StreamPermit,
    app: AppState,
    session: Session,
    token: QueueTokenId,
    date: DateId,
    batches: Receiver<Arc<SeatBatch>>,
    recheck: tokio::time::Interval,
    snapshot_due: bool,
}

impl SeatStream {
    fn still_admitted(&self) -> bool {
        let now = self.app.clock.now();
        self.session.still_valid(&self.app, now)
            && self
                .app
                .engine
                .queue
                .check_admitted(self.token, self.session.user, now)
                .is_ok()
    }

    fn snapshot(&self) -> Option<Event> {
        let handle = self.app.engine.dates.get(self.date)?;
        let listing = seat_listing(&self.app, handle.view());
        Event::default().event("snapshot").json_data(listing).ok()
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.snapshot_due {
            self.snapshot_due = false;
            let event = self.snapshot()?;
            return Some((Ok(event), self));
        }
        loop {
            tokio::select! {
                batch = self.batches.recv() => match batch {
                    Ok(batch) => {
                        let event = Event::default().event("seats").data(render(&batch));
                        return Some((Ok(event), self));
                    }
                    // Too slow to keep up: start over from a fresh listing.
                    Err(RecvError::Lagged(_)) => {
                        let event = self.snapshot()?;
                        return Some((Ok(event), self));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.recheck.tick() => {
                    if !self.still_admitted() {
                        return None;
                    }
                }
            }
        }
    }
}

/// `event: snapshot` with the seat listing, then `event: seats` with the seats that changed,
/// batched, at most ten a second; ends when the session or queue token stops being valid.
#[utoipa::path(
    get, path = "/api/v1/dates/{date_id}/seats/events", tag = "seats",
    security(("session" = [], "queue_token" = [])),
    params(("date_id" = String, Path)),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot`, then `seats` batches of `[{seat_no, status}]`", content_type = "text/event-stream"),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`not_admitted`, `queue_token_expired`, `forbidden`, or `queue_token_wrong_room`: a token of another waiting room than the date's concert's", body = Problem),
        (status = 404, description = "`not_found`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session, or the session has `server.max_streams_per_session` streams open; see `Retry-After`", body = Problem),
        (status = 503, description = "`overloaded`: in-flight work or open streams are at their bound; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn seat_events(
    State(app): State<AppState>,
    admitted: Admitted,
    IdPath(date): IdPath<DateId>,
) -> Result<Response, ApiError> {
    let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
    handle.admits(admitted.token)?;
    // Subscribe before the listing is taken, so no change falls between the two.
    let batches = handle.view().subscribe();
    let state = SeatStream {
        _permit: stream_permit(&app, &admitted.session)?,
        app,
        session: admitted.session,
        token: admitted.token,
        date,
        batches,
        recheck: recheck_interval(),
        snapshot_due: true,
    };
    let stopping = state.app.stopping.subscribe();
    Ok(sse(stopping, stream::unfold(state, SeatStream::next)))
}

struct QueueStream {
    _permit: StreamPermit,
    app: AppState,
    session: Session,
    token: QueueTokenId,
    last: Option<QueueStatus>,
    recheck: tokio::time::Interval,
}

impl QueueStream {
    /// The token's status, if it changed since the last one sent. `Err` ends the stream.
    fn changed_status(&mut self) -> Result<Option<QueueStatus>, ()> {
        let now = self.app.clock.now();
        if !self.session.still_valid(&self.app, now) {
            return Err(());
        }
        // A stream is a poll that never stops: it keeps a waiting token in line.
        let status = match self
            .app
            .engine
            .queue
            .poll(self.token, self.session.user, now)
        {
            Ok(Lookup::Live(status)) => status,
            Ok(Lookup::Ended) | Err(_) => return Err(()),
        };
        // Status and position, not the ETA or the drop time a poll pushes back.
        let place = |s: &QueueStatus| match s.standing {
            Standing::Active => None,
            Standing::Waiting { position, .. } => Some((false, position)),
            Standing::PreQueue { size, .. } => Some((true, size)),
        };
        let changed = match &self.last {
            None => true,
            Some(last) => place(last) != place(&status),
        };
        self.last = Some(status);
        Ok(changed.then_some(status))
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            // The first tick is immediate: the current status goes out at once.
            self.recheck.tick().await;
            match self.changed_status() {
                Err(()) => return None,
                Ok(None) => continue,
                Ok(Some(status)) => {
                    let body = QueueStatusBody::new(&status, false);
                    let event = Event::default().event("queue").json_data(body).ok()?;
                    return Some((Ok(event), self));
                }
            }
        }
    }
}

/// `event: queue` with the queue status whenever its status or position changes, at most once
/// a second; ends when the session or token stops being valid (poll to get a reissued token).
#[utoipa::path(
    get, path = "/api/v1/queue/tokens/current/events", tag = "queue",
    security(("session" = [], "queue_token" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `queue` events carrying a queue status", content_type = "text/event-stream"),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`forbidden` (another user's token) or `queue_token_expired`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session, or the session has `server.max_streams_per_session` streams open; see `Retry-After`", body = Problem),
        (status = 503, description = "`overloaded`: in-flight work or open streams are at their bound; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn queue_events(
    State(app): State<AppState>,
    session: Session,
    QueueTokenHeader(token): QueueTokenHeader,
) -> Result<Response, ApiError> {
    // The same checks as a poll, answered as errors before the stream starts.
    if let Lookup::Ended = app
        .engine
        .queue
        .poll(token, session.user, app.clock.now())?
    {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "queue_token_expired",
            "this token has ended; GET /api/v1/queue/tokens/current gives you a fresh one",
        ));
    }
    let state = QueueStream {
        _permit: stream_permit(&app, &session)?,
        app,
        session,
        token,
        last: None,
        recheck: recheck_interval(),
    };
    let stopping = state.app.stopping.subscribe();
    Ok(sse(stopping, stream::unfold(state, QueueStream::next)))
}

fn recheck_interval() -> tokio::time::Interval {
    let mut interval = tokio::time::interval(RECHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Streams end when the server starts to stop, so a stop never waits for a subscriber.
fn sse(
    mut stopping: tokio::sync::watch::Receiver<bool>,
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    let stopped = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    Sse::new(events.take_until(stopped))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}
