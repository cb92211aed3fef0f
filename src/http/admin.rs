//! The admin API: create concerts and dates, read engine-wide counts, take a backup.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{AdminAuth, ApiJson, IdPath, WholeNumber};
use super::{parse_rfc3339, rfc3339, AppState};
use crate::domain::admission::RoomId;
use crate::domain::catalog::{SaleTerms, SeatPlan};
use crate::domain::venue::{RowPlan, SectionPlan};
use crate::domain::{ConcertId, DateId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/concerts", post(create_concert))
        .route(
            "/api/v1/admin/concerts/{concert_id}/dates",
            post(create_date),
        )
        .route(
            "/api/v1/admin/dates/{date_id}/cancellation",
            post(cancel_date),
        )
        .route("/api/v1/admin/stats", get(stats))
        .route("/api/v1/admin/waiting-rooms/{room}", get(waiting_room))
        .route("/api/v1/admin/backups", post(backup))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ConcertRequest {
    /// 1–200 characters, not all blank.
    #[schema(
        example = "Winter Tour",
        min_length = 1,
        max_length = 200,
        pattern = r"\S"
    )]
    title: String,
    /// 1–200 characters, not all blank.
    #[schema(
        example = "Olympic Hall",
        min_length = 1,
        max_length = 200,
        pattern = r"\S"
    )]
    venue: String,
    /// RFC 3339. Tokens of the concert's room taken before it wait in a pre-queue, put in
    /// line in a uniformly random order at this instant. Gives the concert a room of its own.
    #[schema(example = "2026-12-24T10:00:00Z")]
    #[serde(default, deserialize_with = "super::extract::present")]
    sale_opens_at: Option<String>,
    /// The limits of the concert's own room (else `queue.*`'s). Gives it a room of its own.
    #[serde(default, deserialize_with = "super::extract::present")]
    waiting_room: Option<WaitingRoomRequest>,
    /// 1–100: seats held plus paid (transfers received included) per user and date.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "super::extract::present")]
    max_tickets_per_user: Option<WholeNumber>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct WaitingRoomRequest {
    /// 1–10^7 admitted tokens at once.
    #[schema(value_type = u32, minimum = 1, maximum = 10000000)]
    max_active: WholeNumber,
    /// 1–10^7 admissions a second.
    #[schema(value_type = u32, minimum = 1, maximum = 10000000)]
    admit_per_second: WholeNumber,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConcertCreated {
    concert_id: String,
}

#[utoipa::path(
    post, path = "/api/v1/admin/concerts", tag = "admin",
    security(("admin" = [])),
    request_body = ConcertRequest,
    responses(
        (status = 201, description = "Created", body = ConcertCreated),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
        (status = 404, description = "`not_found`: the admin API is disabled (`admin.token` empty)", body = Problem),
        (status = 422, description = "`invalid_input`", body = Problem),
    )
)]
pub(super) async fn create_concert(
    State(app): State<AppState>,
    _admin: AdminAuth,
    body: ApiJson<ConcertRequest>,
) -> Result<Response, ApiError> {
    let ConcertRequest {
        title,
        venue,
        sale_opens_at,
        waiting_room,
        max_tickets_per_user,
    } = body.value;
    let sale_opens_at = sale_opens_at
        .map(|raw| {
            parse_rfc3339(&raw).ok_or_else(|| {
                ApiError::invalid_input(
                    "sale_opens_at must be an RFC 3339 time, e.g. 2026-12-24T10:00:00Z",
                )
            })
        })
        .transpose()?;
    let terms = SaleTerms {
        sale_opens_at,
        waiting_room: waiting_room.map(|room| (room.max_active.0, room.admit_per_second.0)),
        max_tickets_per_user: max_tickets_per_user.map(|max| max.0),
    };
    let concert = app
        .engine
        .catalog
        .create_concert(title, venue, terms)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ConcertCreated {
            concert_id: concert.to_string(),
        }),
    )
        .into_response())
}

/// Send `seat_count` and `price` (one section, "General", in rows of 500), or `sections`:
/// one form, not both.
#[derive(Deserialize, ToSchema)]
pub(super) struct DateRequest {
    /// RFC 3339.
    #[schema(example = "2026-12-24T19:00:00Z")]
    starts_at: String,
    /// 1–100,000.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    #[serde(default, deserialize_with = "super::extract::present")]
    seat_count: Option<WholeNumber>,
    /// Whole won per seat, 0–2^53−1.
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "super::extract::present")]
    price: Option<WholeNumber>,
    /// 1–50 sections, the first nearest the stage; names unique within the date; 1–100,000
    /// seats in all. Seats are numbered from 1, section by section, row by row.
    #[schema(min_items = 1, max_items = 50)]
    #[serde(default, deserialize_with = "super::extract::present")]
    sections: Option<Vec<SectionRequest>>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct SectionRequest {
    /// 1–50 characters, not all blank.
    #[schema(example = "Floor", min_length = 1, max_length = 50, pattern = r"\S")]
    name: String,
    /// Whole won per seat of this section, 0–2^53−1.
    #[schema(value_type = u64, minimum = 0, maximum = 9007199254740991_u64)]
    price: WholeNumber,
    /// 1–200 rows, the first nearest the stage; labels unique within the section.
    #[schema(min_items = 1, max_items = 200)]
    rows: Vec<RowRequest>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct RowRequest {
    /// 1–10 characters, not all blank.
    #[schema(example = "A", min_length = 1, max_length = 10, pattern = r"\S")]
    row: String,
    /// 1–500.
    #[schema(value_type = u32, minimum = 1, maximum = 500)]
    seats: WholeNumber,
}

impl DateRequest {
    fn seat_plan(self) -> Result<SeatPlan, ApiError> {
        match (self.seat_count, self.price, self.sections) {
            (Some(seat_count), Some(price), None) => Ok(SeatPlan::Uniform {
                seat_count: seat_count.0,
                price: price.0,
            }),
            (None, None, Some(sections)) => Ok(SeatPlan::Sections(
                sections
                    .into_iter()
                    .map(|section| SectionPlan {
                        name: section.name,
                        price: section.price.0,
                        rows: section
                            .rows
                            .into_iter()
                            .map(|row| RowPlan {
                                label: row.row,
                                seats: row.seats.0,
                            })
                            .collect(),
                    })
                    .collect(),
            )),
            (_, _, Some(_)) => Err(ApiError::invalid_input(
                "send sections, or seat_count and price, not both",
            )),
            _ => Err(ApiError::invalid_input(
                "send seat_count and price, or sections",
            )),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct DateCreated {
    date_id: String,
}

#[utoipa::path(
    post, path = "/api/v1/admin/concerts/{concert_id}/dates", tag = "admin",
    security(("admin" = [])),
    params(("concert_id" = String, Path)),
    request_body = DateRequest,
    responses(
        (status = 201, description = "Created", body = DateCreated),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
        (status = 404, description = "`not_found`: no such concert, or the admin API is disabled", body = Problem),
        (status = 422, description = "`invalid_input`", body = Problem),
    )
)]
pub(super) async fn create_date(
    State(app): State<AppState>,
    _admin: AdminAuth,
    IdPath(concert): IdPath<ConcertId>,
    body: ApiJson<DateRequest>,
) -> Result<Response, ApiError> {
    let starts_at = parse_rfc3339(&body.value.starts_at).ok_or_else(|| {
        ApiError::invalid_input("starts_at must be an RFC 3339 time, e.g. 2026-12-24T19:00:00Z")
    })?;
    let seats = body.value.seat_plan()?;
    let date = app
        .engine
        .catalog
        .create_date(concert, starts_at, seats)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DateCreated {
            date_id: date.to_string(),
        }),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct CancellationBody {
    date_id: String,
    /// Paid reservations refunded in full to their payers.
    refunded_reservations: usize,
    /// Whole won credited in all.
    refunded_amount: u64,
    /// Held reservations cancelled.
    cancelled_holds: usize,
}

/// Calls a date off as one atomic change: every paid reservation refunded in full to its
/// payer (no fee, whatever the window), every hold cancelled, the waiting list lapsed. Holds
/// and waiting-list joins are then refused with 409 `date_cancelled`.
#[utoipa::path(
    post, path = "/api/v1/admin/dates/{date_id}/cancellation", tag = "admin",
    security(("admin" = [])),
    params(("date_id" = String, Path)),
    responses(
        (status = 200, description = "Cancelled", body = CancellationBody),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 404, description = "`not_found`: no such date, or the admin API is disabled", body = Problem),
        (status = 409, description = "`date_cancelled`: cancelled already", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
    )
)]
pub(super) async fn cancel_date(
    State(app): State<AppState>,
    _admin: AdminAuth,
    IdPath(date): IdPath<DateId>,
) -> Result<Response, ApiError> {
    let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
    let report = handle.cancel_date().await?;
    Ok(Json(CancellationBody {
        date_id: report.date.to_string(),
        refunded_reservations: report.refunded_reservations,
        refunded_amount: report.refunded_amount,
        cancelled_holds: report.cancelled_holds,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct WaitingRoomBody {
    /// A concert id, or `general`.
    room: String,
    /// RFC 3339, or null for a room without an opening.
    sale_opens_at: Option<String>,
    /// Tokens waiting for the opening to draw their places.
    pre_queue: u64,
    waiting: u64,
    active: u64,
    /// Admissions since the room was made.
    admitted_total: u64,
    /// Admissions that passed a token still waiting ahead in line: always 0.
    order_violations: u64,
    /// Waits from joining the line (or the opening) to admission, in seconds, within about 6%;
    /// 0 before anyone is admitted.
    wait_seconds_p50: f64,
    wait_seconds_p99: f64,
}

#[utoipa::path(
    get, path = "/api/v1/admin/waiting-rooms/{room}", tag = "admin",
    security(("admin" = [])),
    params(("room" = String, Path, description = "A concert id of a concert with its own room, or `general`")),
    responses(
        (status = 200, description = "The room's line, admissions and their fairness", body = WaitingRoomBody),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 404, description = "`not_found`: no such room, or the admin API is disabled", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
    )
)]
pub(super) async fn waiting_room(
    State(app): State<AppState>,
    _admin: AdminAuth,
    IdPath(room): IdPath<String>,
) -> Result<Response, ApiError> {
    let room = match room.as_str() {
        "general" => RoomId::General,
        concert => RoomId::Concert(concert.parse().map_err(|_| ApiError::not_found())?),
    };
    let report = app
        .engine
        .queue
        .read_room(room, |queue| queue.report())
        .ok_or_else(ApiError::not_found)?;
    let seconds = |ms: Option<f64>| ms.map_or(0.0, |ms| ms / 1000.0);
    Ok(Json(WaitingRoomBody {
        room: room.to_string(),
        sale_opens_at: report.sale_opens_at.map(rfc3339),
        pre_queue: report.pre_queue,
        waiting: report.waiting,
        active: report.active,
        admitted_total: report.admitted_total,
        order_violations: report.order_violations,
        wait_seconds_p50: seconds(report.wait_ms_p50),
        wait_seconds_p99: seconds(report.wait_ms_p99),
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct StatsBody {
    users: u64,
    queue_waiting: u64,
    queue_active: u64,
    seats_total: u64,
    /// Seats in live holds; may lag by up to a second.
    seats_held: u64,
    seats_sold: u64,
    /// The newest sequence number in the event log.
    log_sequence: u64,
    /// Events replayed from the log at startup (beyond the snapshots).
    replayed_events: u64,
    log_commits: u64,
    log_events_committed: u64,
}

#[utoipa::path(
    get, path = "/api/v1/admin/stats", tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Engine-wide counts", body = StatsBody),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
        (status = 404, description = "`not_found`: the admin API is disabled", body = Problem),
    )
)]
pub(super) async fn stats(State(app): State<AppState>, _admin: AdminAuth) -> Response {
    let (queue_waiting, queue_active) = app.engine.queue.counts();
    let (mut seats_total, mut seats_held, mut seats_sold) = (0u64, 0u64, 0u64);
    for date in app.engine.dates.all() {
        let view = date.view();
        seats_total += view.seat_count() as u64;
        seats_held += view.held_seats() as u64;
        seats_sold += view.sold_seats() as u64;
    }
    let log = app.engine.log_figures();
    Json(StatsBody {
        users: app.engine.accounts.user_count() as u64,
        queue_waiting: queue_waiting as u64,
        queue_active: queue_active as u64,
        seats_total,
        seats_held,
        seats_sold,
        log_sequence: log.last_sequence,
        replayed_events: app.engine.replayed_events as u64,
        log_commits: log.commits,
        log_events_committed: log.events_committed,
    })
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub(super) struct BackupBody {
    /// A directory with `boxoffice.db`, `boxoffice.history.db` and `snapshots/`: point
    /// `storage.sqlite_path` and `storage.snapshot_dir` at them (or copy them into place, the
    /// history file beside the log) to restore.
    backup_dir: String,
    /// The last log sequence the copy holds.
    log_sequence: u64,
    snapshot_files: usize,
    bytes: u64,
}

/// Snapshots every owner (so a restore replays little), then copies the snapshots and the
/// committed log into a new directory under `storage.backup_dir`, while serving.
#[utoipa::path(
    post, path = "/api/v1/admin/backups", tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 201, description = "Backed up", body = BackupBody),
        (status = 401, description = "`unauthenticated`: missing or wrong admin token", body = Problem),
        (status = 429, description = "`rate_limited`: this address sent `limits.admin_failures_per_minute_per_ip` wrong admin tokens in the last minute; no token is compared until `Retry-After`", body = Problem),
        (status = 404, description = "`not_found`: the admin API is disabled", body = Problem),
        (status = 503, description = "`backup_failed` (the disk refused; the detail says why), or `overloaded` (in-flight work is at its bound; see `Retry-After`)", body = Problem),
    )
)]
pub(super) async fn backup(
    State(app): State<AppState>,
    _admin: AdminAuth,
) -> Result<Response, ApiError> {
    let report = app.engine.back_up().await.map_err(|e| {
        tracing::error!(error = %e, "backup failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backup_failed",
            e.to_string(),
        )
    })?;
    tracing::info!(
        dir = %report.dir.display(),
        log_sequence = report.log_sequence,
        bytes = report.bytes,
        "backup written"
    );
    Ok((
        StatusCode::CREATED,
        Json(BackupBody {
            backup_dir: report.dir.display().to_string(),
            log_sequence: report.log_sequence,
            snapshot_files: report.snapshot_files,
            bytes: report.bytes,
        }),
    )
        .into_response())
}
