//! Waiting lists: a buyer who finds a date sold out joins its list and is offered seats that
//! come back, in list order, as a hold paid like any other (without a queue token).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{Admitted, ApiJson, IdPath, PageQuery, Session, WholeNumber};
use super::openapi::PageParams;
use super::{rfc3339, AppState};
use crate::actors::date::EntryView;
use crate::domain::page::{Cursor, ListKind};
use crate::domain::waitlist::{Entry, EntryId, EntryStatus};
use crate::domain::{DateId, Timestamp};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dates/{date_id}/waitlist", post(join))
        .route("/api/v1/waitlist", axum::routing::get(list_mine))
        .route("/api/v1/waitlist/{entry_id}", delete(leave))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct JoinRequest {
    /// Seats wanted together: 1…`holds.max_seats_per_user` (else 422 `invalid_input`).
    #[schema(value_type = u32, minimum = 1)]
    quantity: WholeNumber,
    /// A section of the date, by name: offers then come only from it. Any section when absent.
    #[serde(default)]
    section: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct EntryBody {
    entry_id: String,
    date_id: String,
    quantity: u32,
    /// The section offers come from; null for any.
    #[schema(required = true)]
    section: Option<String>,
    /// `waiting`, `offered`, `purchased`, `lapsed` or `left`.
    #[schema(example = "waiting")]
    status: &'static str,
    /// 1 for the first waiting entry of the date; 0 when not waiting.
    position: u32,
    /// The offered hold, once offered; pay it with `POST /api/v1/payments` (no queue token
    /// needed).
    #[schema(required = true)]
    reservation_id: Option<String>,
    /// When the offer's hold runs out, once offered.
    #[schema(required = true)]
    offer_expires_at: Option<String>,
}

fn section_name(app: &AppState, entry: &Entry) -> Option<String> {
    let section = entry.section?;
    let handle = app.engine.dates.get(entry.id.date)?;
    let layout = handle.view().layout();
    layout
        .sections()
        .get(section as usize)
        .map(|s| s.name.clone())
}

impl EntryBody {
    fn new(
        app: &AppState,
        entry: &Entry,
        status: EntryStatus,
        position: u32,
        offer_expires_at: Option<Timestamp>,
    ) -> Self {
        Self {
            entry_id: entry.id.to_string(),
            date_id: entry.id.date.to_string(),
            quantity: entry.quantity,
            section: section_name(app, entry),
            status: status.as_str(),
            position,
            reservation_id: entry.offer.map(|r| r.to_string()),
            offer_expires_at: offer_expires_at.map(rfc3339),
        }
    }

    fn live(app: &AppState, view: &EntryView) -> Self {
        let status = if view.entry.offer.is_some() {
            EntryStatus::Offered
        } else {
            EntryStatus::Waiting
        };
        Self::new(
            app,
            &view.entry,
            status,
            view.position,
            view.offer_expires_at,
        )
    }
}

#[utoipa::path(
    post, path = "/api/v1/dates/{date_id}/waitlist", tag = "seats",
    security(("session" = [], "queue_token" = [])),
    params(("date_id" = String, Path)),
    request_body = JoinRequest,
    responses(
        (status = 201, description = "On the list, waiting", body = EntryBody),
        (status = 200, description = "The user's entry already on this date's list, unchanged", body = EntryBody),
        (status = 400, description = "`malformed_request`", body = Problem),
        (status = 401, description = "`unauthenticated` or `queue_token_invalid`", body = Problem),
        (status = 403, description = "`not_admitted`, `queue_token_expired`, `forbidden`, or `queue_token_wrong_room`: a token of another waiting room than the date's concert's", body = Problem),
        (status = 404, description = "`not_found`: no such date", body = Problem),
        (status = 409, description = "`seats_available`: the date's available and held seats (in `section`) still number `quantity`; `rehold_cooldown`: the user's entry lapsed less than `waitlist.offer_ttl_seconds` ago (see `Retry-After`); `date_cancelled`; `sales_closed`", body = Problem,
            headers(("Retry-After" = u64, description = "with `rehold_cooldown`: whole seconds until the user may join again"))),
        (status = 422, description = "`invalid_input`: `quantity` or `section`", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn join(
    State(app): State<AppState>,
    admitted: Admitted,
    IdPath(date): IdPath<DateId>,
    body: ApiJson<JoinRequest>,
) -> Result<Response, ApiError> {
    let handle = app.engine.dates.get(date).ok_or_else(ApiError::not_found)?;
    handle.admits(admitted.token)?;
    let JoinRequest { quantity, section } = body.value;
    // A quantity past u32 is as far out of range as 0: the date refuses both.
    let quantity = u32::try_from(quantity.0).unwrap_or(0);
    let answer = handle
        .join_waitlist(admitted.user, quantity, section)
        .await?;
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(EntryBody::live(&app, &answer.entry))).into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct EntriesBody {
    /// The user's own, newest first, every status: one page.
    entries: Vec<EntryBody>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/waitlist", tag = "seats",
    security(("session" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of the user's waiting-list entries, newest first", body = EntriesBody),
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
    let request = query.request(ListKind::Waitlist)?;
    let _turn = app.list_pages.acquire().await;
    let page = app.engine.dates.waitlist_of(session.user, request).await?;
    let now = app.clock.now();
    // Waiting entries' places are the dates' to tell: one question per date on the page.
    let mut waiting: BTreeMap<DateId, Vec<u32>> = BTreeMap::new();
    for listed in &page.entries {
        if listed.status_at(now) == EntryStatus::Waiting {
            waiting
                .entry(listed.entry.id.date)
                .or_default()
                .push(listed.entry.id.seq);
        }
    }
    let mut positions: BTreeMap<EntryId, u32> = BTreeMap::new();
    for (date, seqs) in waiting {
        let Some(handle) = app.engine.dates.get(date) else {
            continue;
        };
        let places = handle.positions(seqs.clone()).await?;
        for (seq, place) in seqs.into_iter().zip(places) {
            positions.insert(EntryId { date, seq }, place);
        }
    }
    let entries = page
        .entries
        .iter()
        .map(|listed| {
            let status = listed.status_at(now);
            let position = positions.get(&listed.entry.id).copied().unwrap_or(0);
            let mut entry = listed.entry.clone();
            entry.offer = listed.offer.as_ref().map(|r| r.id);
            let expires = listed.offer.as_ref().map(|r| r.expires_at);
            EntryBody::new(&app, &entry, status, position, expires)
        })
        .collect();
    Ok(Json(EntriesBody {
        entries,
        next_cursor: page.next.map(Cursor::encode),
    })
    .into_response())
}

#[utoipa::path(
    delete, path = "/api/v1/waitlist/{entry_id}", tag = "seats",
    security(("session" = [])),
    params(("entry_id" = String, Path)),
    responses(
        (status = 204, description = "Off the list (`left`); an offer's hold is cancelled. An entry no longer on the list is left as it is"),
        (status = 401, description = "`unauthenticated`", body = Problem),
        (status = 404, description = "`not_found`, also for another user's entry", body = Problem),
        (status = 429, description = "`rate_limited`: too many requests on this session; see `Retry-After`", body = Problem),
    )
)]
pub(super) async fn leave(
    State(app): State<AppState>,
    session: Session,
    IdPath(entry): IdPath<EntryId>,
) -> Result<StatusCode, ApiError> {
    let handle = app
        .engine
        .dates
        .get(entry.date)
        .ok_or_else(ApiError::not_found)?;
    handle.leave_waitlist(session.user, entry).await?;
    Ok(StatusCode::NO_CONTENT)
}
