//! API.md as typed calls: each function sends one request and turns the answer into a value or
//! a `Fail` carrying the HTTP status and the problem+json `code`.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{jitter, Call, Client, Reply, Unsent};

/// A concert date far in the future, as the admin API wants it.
const STARTS_AT: &str = "2035-06-01T19:00:00Z";

/// Every endpoint the generator uses, labelled by method and path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    SignUp,
    SignIn,
    TakeQueueToken,
    PollQueueToken,
    LeaveQueue,
    Seats,
    Hold,
    HoldBest,
    Cancel,
    Charge,
    Pay,
    Balance,
    History,
    Reservations,
    Health,
    Bare,
    AdminConcert,
    AdminDate,
    AdminStats,
    AdminWaitingRoom,
}

impl Endpoint {
    pub const ALL: [Endpoint; 20] = [
        Endpoint::SignUp,
        Endpoint::SignIn,
        Endpoint::TakeQueueToken,
        Endpoint::PollQueueToken,
        Endpoint::LeaveQueue,
        Endpoint::Seats,
        Endpoint::Hold,
        Endpoint::HoldBest,
        Endpoint::Cancel,
        Endpoint::Charge,
        Endpoint::Pay,
        Endpoint::Balance,
        Endpoint::History,
        Endpoint::Reservations,
        Endpoint::Health,
        Endpoint::Bare,
        Endpoint::AdminConcert,
        Endpoint::AdminDate,
        Endpoint::AdminStats,
        Endpoint::AdminWaitingRoom,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::SignUp => "POST /api/v1/users",
            Endpoint::SignIn => "POST /api/v1/sessions",
            Endpoint::TakeQueueToken => "POST /api/v1/queue/tokens",
            Endpoint::PollQueueToken => "GET /api/v1/queue/tokens/current",
            Endpoint::LeaveQueue => "DELETE /api/v1/queue/tokens/current",
            Endpoint::Seats => "GET /api/v1/dates/{date_id}/seats",
            Endpoint::Hold => "POST /api/v1/reservations",
            Endpoint::HoldBest => "POST /api/v1/reservations (best_available)",
            Endpoint::Cancel => "DELETE /api/v1/reservations/{reservation_id}",
            Endpoint::Charge => "POST /api/v1/balance/charges",
            Endpoint::Pay => "POST /api/v1/payments",
            Endpoint::Balance => "GET /api/v1/balance",
            Endpoint::History => "GET /api/v1/balance/history",
            Endpoint::Reservations => "GET /api/v1/reservations",
            Endpoint::Health => "GET /healthz",
            Endpoint::Bare => "POST / (bare server)",
            Endpoint::AdminConcert => "POST /api/v1/admin/concerts",
            Endpoint::AdminDate => "POST /api/v1/admin/concerts/{concert_id}/dates",
            Endpoint::AdminStats => "GET /api/v1/admin/stats",
            Endpoint::AdminWaitingRoom => "GET /api/v1/admin/waiting-rooms/{room}",
        }
    }

    /// Whose turn comes first when requests wait for a connection (0 first): the steps that
    /// complete a purchase, then seat maps and leaving, then the waiting room, then the rest.
    pub fn priority(self) -> usize {
        match self {
            Endpoint::Hold
            | Endpoint::HoldBest
            | Endpoint::Cancel
            | Endpoint::Charge
            | Endpoint::Pay => 0,
            Endpoint::Seats | Endpoint::LeaveQueue => 1,
            Endpoint::TakeQueueToken | Endpoint::PollQueueToken => 2,
            _ => 3,
        }
    }

    pub fn method(self) -> hyper::Method {
        use hyper::Method;
        match self {
            Endpoint::SignUp
            | Endpoint::SignIn
            | Endpoint::TakeQueueToken
            | Endpoint::Hold
            | Endpoint::HoldBest
            | Endpoint::Charge
            | Endpoint::Pay
            | Endpoint::Bare
            | Endpoint::AdminConcert
            | Endpoint::AdminDate => Method::POST,
            Endpoint::LeaveQueue | Endpoint::Cancel => Method::DELETE,
            Endpoint::PollQueueToken
            | Endpoint::Seats
            | Endpoint::Balance
            | Endpoint::History
            | Endpoint::Reservations
            | Endpoint::Health
            | Endpoint::AdminStats
            | Endpoint::AdminWaitingRoom => Method::GET,
        }
    }

    /// Whether the request goes to the bare server (`bare`) instead of the server under load.
    pub fn on_bare_server(self) -> bool {
        self == Endpoint::Bare
    }
}

/// Why a call did not give the value asked for.
#[derive(Debug)]
pub enum Fail {
    /// The run's budget is spent; nothing was sent.
    Stopped,
    /// No HTTP answer after the bounded retries: the outcome is unknown.
    NoResponse(String),
    /// The server answered with another status; `code` is its problem+json code.
    Refused { status: u16, code: String },
    /// A success status whose body is not what API.md describes.
    Malformed(String),
}

impl Fail {
    pub fn is(&self, status: u16, code: &str) -> bool {
        matches!(self, Fail::Refused { status: s, code: c } if *s == status && c == code)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Stopped => write!(f, "the run's budget is spent"),
            Fail::NoResponse(why) => write!(f, "no answer: {why}"),
            Fail::Refused { status, code } => write!(f, "{status} {code}"),
            Fail::Malformed(why) => write!(f, "unexpected body: {why}"),
        }
    }
}

impl From<Unsent> for Fail {
    fn from(unsent: Unsent) -> Self {
        match unsent {
            Unsent::Stopped => Fail::Stopped,
            Unsent::NoResponse(why) => Fail::NoResponse(why),
        }
    }
}

pub type ApiResult<T> = Result<T, Fail>;

fn expect<T: DeserializeOwned>(reply: Reply, ok: &[u16]) -> ApiResult<T> {
    if !ok.contains(&reply.status) {
        return Err(refused(reply));
    }
    serde_json::from_slice(&reply.body).map_err(|e| Fail::Malformed(e.to_string()))
}

fn expect_empty(reply: Reply, ok: u16) -> ApiResult<()> {
    if reply.status == ok {
        Ok(())
    } else {
        Err(refused(reply))
    }
}

fn refused(reply: Reply) -> Fail {
    Fail::Refused {
        status: reply.status,
        code: reply.code.unwrap_or_else(|| "-".to_owned()),
    }
}

// ----- shapes from API.md -------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct QueueStatus {
    pub queue_token: String,
    pub status: String,
    /// 1 for the next to be admitted, 0 when active.
    #[serde(default)]
    pub position: u64,
    /// RFC 3339: the end of an admission, or when a waiting token is dropped unless polled.
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub poll_after_seconds: u64,
    /// The presented token had ended; this is a fresh one at the back of the line.
    #[serde(default)]
    pub reissued: bool,
}

impl QueueStatus {
    pub fn active(&self) -> bool {
        self.status == "active"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Seat {
    pub seat_no: u32,
    pub status: SeatStatus,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub date_id: String,
    pub seat_nos: Vec<u32>,
    pub price: u64,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub reservation_id: String,
    pub amount: u64,
    pub date_id: String,
    pub seat_nos: Vec<u32>,
}

// ----- calls ---------------------------------------------------------------------------------

pub async fn health(client: &Client) -> ApiResult<()> {
    let reply = client
        .send(&Call::new(Endpoint::Health, "/healthz"))
        .await?;
    expect::<Value>(reply, &[200]).map(drop)
}

/// A small JSON body to the bare server, which must come back as sent: the no-work POST the
/// ceiling floods by default.
///
/// The body is a struct, not a `json!` map, so the ceiling's own requests cost the client no
/// more than they must: whatever the client spends on them lowers the ceiling, and so raises
/// every ratio set against it.
pub async fn bare(client: &Client, seq: u64) -> ApiResult<()> {
    #[derive(Serialize)]
    struct Sent {
        seq: u64,
        text: &'static str,
    }
    #[derive(Deserialize)]
    struct Echoed {
        seq: u64,
    }
    let call = Call::new(Endpoint::Bare, crate::bare::PATH).json(&Sent {
        seq,
        text: "boxoffice-load",
    });
    let echoed: Echoed = expect(client.send(&call).await?, &[200])?;
    if echoed.seq == seq {
        Ok(())
    } else {
        Err(Fail::Malformed(format!(
            "sent seq {seq}, echoed {}",
            echoed.seq
        )))
    }
}

pub async fn create_concert(client: &Client, admin: &str, title: &str) -> ApiResult<String> {
    let call = Call::new(Endpoint::AdminConcert, "/api/v1/admin/concerts")
        .bearer(admin)
        .json(&json!({"title": title, "venue": "boxoffice-load, loopback"}));
    let body: Value = expect(client.send(&call).await?, &[201])?;
    string_field(&body, "concert_id")
}

/// A concert with a waiting room of its own, `max_active` and `admit_per_second`, whose sale
/// opens at `sale_opens_at` (RFC 3339): tokens taken before then wait in its pre-queue.
pub async fn create_concert_with_room(
    client: &Client,
    admin: &str,
    title: &str,
    sale_opens_at: &str,
    max_active: u32,
    admit_per_second: u32,
) -> ApiResult<String> {
    let call = Call::new(Endpoint::AdminConcert, "/api/v1/admin/concerts")
        .bearer(admin)
        .json(&json!({
            "title": title,
            "venue": "boxoffice-load, loopback",
            "sale_opens_at": sale_opens_at,
            "waiting_room": {"max_active": max_active, "admit_per_second": admit_per_second},
        }));
    let body: Value = expect(client.send(&call).await?, &[201])?;
    string_field(&body, "concert_id")
}

pub async fn create_date(
    client: &Client,
    admin: &str,
    concert_id: &str,
    seat_count: u32,
    price: u64,
) -> ApiResult<String> {
    let call = Call::new(
        Endpoint::AdminDate,
        format!("/api/v1/admin/concerts/{concert_id}/dates"),
    )
    .bearer(admin)
    .json(&json!({"starts_at": STARTS_AT, "seat_count": seat_count, "price": price}));
    let body: Value = expect(client.send(&call).await?, &[201])?;
    string_field(&body, "date_id")
}

/// A date of `sections` (API.md's layout form).
pub async fn create_date_with_sections(
    client: &Client,
    admin: &str,
    concert_id: &str,
    sections: &Value,
) -> ApiResult<String> {
    let call = Call::new(
        Endpoint::AdminDate,
        format!("/api/v1/admin/concerts/{concert_id}/dates"),
    )
    .bearer(admin)
    .json(&json!({"starts_at": STARTS_AT, "sections": sections}));
    let body: Value = expect(client.send(&call).await?, &[201])?;
    string_field(&body, "date_id")
}

pub async fn admin_stats(client: &Client, admin: &str) -> ApiResult<Value> {
    let call = Call::new(Endpoint::AdminStats, "/api/v1/admin/stats").bearer(admin);
    expect(client.send(&call).await?, &[200])
}

/// A room's line, admissions and their fairness, as `GET /api/v1/admin/waiting-rooms/{room}`
/// gives them.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RoomReport {
    pub room: String,
    pub sale_opens_at: Option<String>,
    pub pre_queue: u64,
    pub waiting: u64,
    pub active: u64,
    pub admitted_total: u64,
    pub order_violations: u64,
    pub wait_seconds_p50: f64,
    pub wait_seconds_p99: f64,
}

/// The figures of `room`'s waiting room: a concert id, or `general`.
pub async fn waiting_room(client: &Client, admin: &str, room: &str) -> ApiResult<RoomReport> {
    let call = Call::new(
        Endpoint::AdminWaitingRoom,
        format!("/api/v1/admin/waiting-rooms/{room}"),
    )
    .bearer(admin);
    expect(client.send(&call).await?, &[200])
}

/// Signs a user up. A 409 `username_taken` counts as done: it is what a retried sign-up whose
/// first answer was lost gets, and the generator's usernames are unique per run.
pub async fn sign_up(client: &Client, username: &str, password: &str) -> ApiResult<()> {
    let call = Call::new(Endpoint::SignUp, "/api/v1/users")
        .json(&json!({"username": username, "password": password}));
    match expect::<Value>(client.send(&call).await?, &[201]) {
        Ok(_) => Ok(()),
        Err(fail) if fail.is(409, "username_taken") => Ok(()),
        Err(fail) => Err(fail),
    }
}

/// Skips a request whose turn for a connection comes when it is no longer wanted.
pub type Unless<'a> = Option<&'a (dyn Fn() -> bool + Sync)>;

/// Signs in; returns the session token.
pub async fn sign_in(
    client: &Client,
    username: &str,
    password: &str,
    unless: Unless<'_>,
) -> ApiResult<String> {
    let call = Call::new(Endpoint::SignIn, "/api/v1/sessions")
        .json(&json!({"username": username, "password": password}))
        .unless(unless);
    let body: Value = expect(client.send(&call).await?, &[201])?;
    string_field(&body, "session_token")
}

pub async fn take_queue_token(client: &Client, session: &str) -> ApiResult<QueueStatus> {
    let call = Call::new(Endpoint::TakeQueueToken, "/api/v1/queue/tokens").bearer(session);
    expect(client.send(&call).await?, &[200, 201])
}

/// A token of `concert_id`'s own waiting room (one live token per user per room).
pub async fn take_room_token(
    client: &Client,
    session: &str,
    concert_id: &str,
) -> ApiResult<QueueStatus> {
    let call = Call::new(Endpoint::TakeQueueToken, "/api/v1/queue/tokens")
        .bearer(session)
        .json(&json!({"concert_id": concert_id}));
    expect(client.send(&call).await?, &[200, 201])
}

pub async fn poll_queue_token(
    client: &Client,
    session: &str,
    token: &str,
) -> ApiResult<QueueStatus> {
    let call = Call::new(Endpoint::PollQueueToken, "/api/v1/queue/tokens/current")
        .bearer(session)
        .queue(token);
    expect(client.send(&call).await?, &[200])
}

/// A poll, and when it was sent: the status it answers is the token's at some instant between
/// that and the answer (the wait for a connection excluded).
pub async fn poll_queue_token_timed(
    client: &Client,
    session: &str,
    token: &str,
    unless: Unless<'_>,
) -> ApiResult<(QueueStatus, Instant)> {
    let call = Call::new(Endpoint::PollQueueToken, "/api/v1/queue/tokens/current")
        .bearer(session)
        .queue(token)
        .unless(unless);
    let reply = client.send(&call).await?;
    let sent_at = reply.sent_at;
    expect(reply, &[200]).map(|status| (status, sent_at))
}

pub async fn leave_queue(client: &Client, session: &str, token: &str) -> ApiResult<()> {
    let call = Call::new(Endpoint::LeaveQueue, "/api/v1/queue/tokens/current")
        .bearer(session)
        .queue(token);
    expect_empty(client.send(&call).await?, 204)
}

pub async fn seats(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
) -> ApiResult<Vec<Seat>> {
    #[derive(Deserialize)]
    struct Listing {
        seats: Vec<Seat>,
    }
    let call = Call::new(Endpoint::Seats, format!("/api/v1/dates/{date_id}/seats"))
        .bearer(session)
        .queue(token);
    expect::<Listing>(client.send(&call).await?, &[200]).map(|l| l.seats)
}

pub async fn hold(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
    seat_nos: &[u32],
    key: &str,
) -> ApiResult<Reservation> {
    hold_keyed_or_not(client, session, token, date_id, seat_nos, Some(key)).await
}

/// A hold without an `Idempotency-Key`: the server keeps no key for it, and a retry after a lost
/// answer meets the first attempt's hold (409 `seat_unavailable`) instead of its answer.
pub async fn hold_without_key(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
    seat_nos: &[u32],
) -> ApiResult<Reservation> {
    hold_keyed_or_not(client, session, token, date_id, seat_nos, None).await
}

async fn hold_keyed_or_not(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
    seat_nos: &[u32],
    key: Option<&str>,
) -> ApiResult<Reservation> {
    let body = match seat_nos {
        [one] => json!({"date_id": date_id, "seat_no": one}),
        many => json!({"date_id": date_id, "seat_nos": many}),
    };
    let mut call = Call::new(Endpoint::Hold, "/api/v1/reservations")
        .bearer(session)
        .queue(token)
        .json(&body);
    if let Some(key) = key {
        call = call.key(key);
    }
    expect(client.send(&call).await?, &[201])
}

/// Holds the best `quantity` adjacent seats the date has, chosen by the server.
pub async fn hold_best(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
    quantity: u32,
    key: &str,
) -> ApiResult<Reservation> {
    let body = json!({"date_id": date_id, "best_available": {"quantity": quantity}});
    let call = Call::new(Endpoint::HoldBest, "/api/v1/reservations")
        .bearer(session)
        .queue(token)
        .json(&body)
        .key(key);
    expect(client.send(&call).await?, &[201])
}

/// A row of a date's layout: its first seat and its length.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct LayoutRow {
    pub first_seat_no: u32,
    pub seats: u32,
}

/// A date's rows in stage order, and every seat's status.
pub struct Layout {
    pub rows: Vec<LayoutRow>,
    pub seats: Vec<Seat>,
}

pub async fn layout(
    client: &Client,
    session: &str,
    token: &str,
    date_id: &str,
) -> ApiResult<Layout> {
    #[derive(Deserialize)]
    struct Section {
        rows: Vec<LayoutRow>,
    }
    #[derive(Deserialize)]
    struct Listing {
        seats: Vec<Seat>,
        sections: Vec<Section>,
    }
    let call = Call::new(Endpoint::Seats, format!("/api/v1/dates/{date_id}/seats"))
        .bearer(session)
        .queue(token);
    let listing: Listing = expect(client.send(&call).await?, &[200])?;
    Ok(Layout {
        rows: listing.sections.into_iter().flat_map(|s| s.rows).collect(),
        seats: listing.seats,
    })
}

pub async fn cancel(client: &Client, session: &str, reservation_id: &str) -> ApiResult<()> {
    let call = Call::new(
        Endpoint::Cancel,
        format!("/api/v1/reservations/{reservation_id}"),
    )
    .bearer(session);
    expect_empty(client.send(&call).await?, 204)
}

/// Tops the balance up by `amount`; returns the balance right after.
pub async fn charge(client: &Client, session: &str, amount: u64, key: &str) -> ApiResult<u64> {
    let call = Call::new(Endpoint::Charge, "/api/v1/balance/charges")
        .bearer(session)
        .key(key)
        .json(&json!({"amount": amount}));
    let body: Value = expect(client.send(&call).await?, &[201])?;
    u64_field(&body, "balance")
}

pub async fn pay(
    client: &Client,
    session: &str,
    token: &str,
    reservation_id: &str,
    key: &str,
) -> ApiResult<Payment> {
    let call = Call::new(Endpoint::Pay, "/api/v1/payments")
        .bearer(session)
        .queue(token)
        .key(key)
        .json(&json!({"reservation_id": reservation_id}));
    expect(client.send(&call).await?, &[201])
}

pub async fn balance(client: &Client, session: &str) -> ApiResult<u64> {
    let call = Call::new(Endpoint::Balance, "/api/v1/balance").bearer(session);
    let body: Value = expect(client.send(&call).await?, &[200])?;
    u64_field(&body, "balance")
}

/// The balance history; returns how many entries it lists.
pub async fn history(client: &Client, session: &str) -> ApiResult<usize> {
    #[derive(Deserialize)]
    struct History {
        entries: Vec<serde::de::IgnoredAny>,
    }
    let call = Call::new(Endpoint::History, "/api/v1/balance/history").bearer(session);
    expect::<History>(client.send(&call).await?, &[200]).map(|h| h.entries.len())
}

/// Every reservation of the user, page by page (the server answers at most 1,000 at a time).
pub async fn reservations(client: &Client, session: &str) -> ApiResult<Vec<Reservation>> {
    #[derive(Deserialize)]
    struct Page {
        reservations: Vec<Reservation>,
        next_cursor: Option<String>,
    }
    /// A user's list is finite; a server that keeps handing out cursors is broken.
    const PAGES_MAX: usize = 10_000;
    let mut all = Vec::new();
    let mut path = "/api/v1/reservations?limit=1000".to_owned();
    for _ in 0..PAGES_MAX {
        let call = Call::new(Endpoint::Reservations, path.as_str()).bearer(session);
        let page = expect::<Page>(client.send(&call).await?, &[200])?;
        all.extend(page.reservations);
        match page.next_cursor {
            None => return Ok(all),
            // Cursors are base64url, so they need no escaping in a query.
            Some(cursor) => path = format!("/api/v1/reservations?limit=1000&cursor={cursor}"),
        }
    }
    Err(Fail::Malformed(format!(
        "GET /api/v1/reservations gave more than {PAGES_MAX} pages"
    )))
}

fn string_field(body: &Value, field: &str) -> ApiResult<String> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Fail::Malformed(format!("no string {field:?} in {body}")))
}

fn u64_field(body: &Value, field: &str) -> ApiResult<u64> {
    body[field]
        .as_u64()
        .ok_or_else(|| Fail::Malformed(format!("no integer {field:?} in {body}")))
}

// ----- the waiting room ----------------------------------------------------------------------

/// Polls are spaced by the server's `poll_after_seconds`, cut to this range.
const POLL_AFTER_MIN: Duration = Duration::from_millis(200);
const POLL_AFTER_MAX: Duration = Duration::from_secs(5);
/// Polls one buyer makes at most while waiting to be admitted.
const POLLS_MAX: u32 = 1_000;

pub enum Admission {
    /// Admitted: the active queue token.
    Active(String),
    /// Stopped waiting (`give_up` said so, or `max_wait` passed); the token to leave with.
    GaveUp(Option<String>),
    /// A call failed; the token to leave with, if one was taken.
    Failed(Option<String>, Fail),
}

/// Takes a queue token and polls it until it is active, following `poll_after_seconds` (cut to
/// 0.2–5 s) and switching to a reissued token when the server gives one. Bounded by `max_wait`,
/// by `POLLS_MAX` polls, and by `give_up`, checked after every wake-up.
pub async fn admit(
    client: &Client,
    session: &str,
    max_wait: Duration,
    give_up: impl Fn() -> bool,
) -> Admission {
    let started = Instant::now();
    match take_queue_token(client, session).await {
        Ok(status) => wait_for_admission(client, session, status, started, max_wait, give_up).await,
        Err(fail) => Admission::Failed(None, fail),
    }
}

/// `admit` in `concert_id`'s own waiting room.
pub async fn admit_to_room(
    client: &Client,
    session: &str,
    concert_id: &str,
    max_wait: Duration,
    give_up: impl Fn() -> bool,
) -> Admission {
    let started = Instant::now();
    match take_room_token(client, session, concert_id).await {
        Ok(status) => wait_for_admission(client, session, status, started, max_wait, give_up).await,
        Err(fail) => Admission::Failed(None, fail),
    }
}

/// Polls the token `status` was issued with until it is active (see `admit`).
async fn wait_for_admission(
    client: &Client,
    session: &str,
    mut status: QueueStatus,
    started: Instant,
    max_wait: Duration,
    give_up: impl Fn() -> bool,
) -> Admission {
    for _ in 0..POLLS_MAX {
        if status.active() {
            return Admission::Active(status.queue_token);
        }
        let hint = Duration::from_secs(status.poll_after_seconds);
        let wait = jitter(hint.clamp(POLL_AFTER_MIN, POLL_AFTER_MAX));
        if give_up() || started.elapsed() + wait > max_wait {
            return Admission::GaveUp(Some(status.queue_token));
        }
        client.nap(wait).await;
        if give_up() {
            return Admission::GaveUp(Some(status.queue_token));
        }
        status = match poll_queue_token(client, session, &status.queue_token).await {
            Ok(next) => next,
            Err(fail) => return Admission::Failed(Some(status.queue_token), fail),
        };
    }
    Admission::GaveUp(Some(status.queue_token))
}
