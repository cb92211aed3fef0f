//! `opening`: the opening of a sale with a pre-queue. `--buyers` buyers wait in the pre-queue of
//! a concert's own waiting room; at `sale_opens_at` the server puts them in line in a random
//! order and admits them at the room's rate; the run times the sale and checks the line.
//!
//! Setup (unmeasured): every buyer is signed up and signed in first, then — so that the slow
//! sign-ups do not eat into it — the concert is created with `sale_opens_at` `--pre-queue-seconds`
//! ahead and a room of its own (`--room-max-active`, `--room-rate`), with one date of `--seats`
//! seats. Every buyer takes a token of that room; each answer must say `pre_queue` (else the
//! opening came before every buyer had its token, and the run stops and says to raise the flag),
//! and its `position`, the pre-queue's size once the token is in, is the buyer's arrival index.
//!
//! The measured phase starts at the opening. Every buyer polls its token at once; its first
//! waiting answer gives its place in line, and it polls again after half of the time the room
//! needs at its rate to admit everyone ahead of it, at least a second apart (see `next_poll`).
//! Once admitted (`active`) it holds the best seat available (`best_available`, quantity 1),
//! tops its balance up by the price and pays; the payment ends its token and frees its place.
//! The phase ends when the date is sold out (buyers still waiting stop), or at `--duration` or
//! `--max-requests`. Then every token the run still holds leaves the room, the auditor is
//! admitted to it to read the seat listing, and the audit checks the sale as for sell-out.
//!
//! The report: the time from the opening to sold out; admissions per second against the room's
//! rate, overall and second by second; the wait from the opening to admission (the instant the
//! server stamped, read off `expires_at`, see `line`) and to the answer that told the buyer;
//! the room's own figures (`GET /api/v1/admin/waiting-rooms/{concert_id}`); and four checks,
//! each of which fails the run: the room's `order_violations` is 0; the run's own order check
//! finds no admission that passed a waiting token (`line::order_check`); the draw is uniform —
//! arrival index against drawn place, chi-square and Spearman at 0.001 (`draw`); and the line
//! was kept: no token dropped and reissued, no poll answered otherwise than API.md says.

mod draw;
mod line;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::api::{self, Admission, Fail, RoomReport};
use crate::audit::{Auditor, BuyerRecord};
use crate::client::{jitter, Client};
use crate::purchase::{self, Settled};
use crate::report::Check;
use crate::series::PerSecond;
use crate::setup::{self, Queued, PASSWORD};
use crate::{Context, ModeRun};

use draw::Uniformity;
use line::{Seen, Sighting};

/// A waiting buyer polls at most this often: the server's shortest `poll_after_seconds`, the one
/// it gives a buyer about to be admitted.
const POLL_MIN: Duration = Duration::from_secs(1);
/// A poll that still finds the pre-queue after the opening (the server's admission tick has not
/// opened the room yet) is repeated this soon, at most `PRE_QUEUE_POLLS_MAX` times.
const PRE_QUEUE_AGAIN: Duration = Duration::from_millis(50);
const PRE_QUEUE_POLLS_MAX: u32 = 200;
/// Holds one admitted buyer sends at most; after a 409 `no_adjacent_seats` while seats are
/// still held by buyers paying, it tries again this much later.
const HOLD_ATTEMPTS_MAX: u32 = 20;
const HOLD_AGAIN: Duration = Duration::from_millis(250);
/// The order check counts an admission as after an answer (or before one) only when stamped this
/// far from it: the client's and the server's clocks are the same wall clock, read apart.
const ORDER_SLACK_MS: f64 = 50.0;
/// Waits are recorded in milliseconds, up to a day.
const WAIT_MAX_MS: u64 = 86_400_000;
/// Failure examples kept for the report.
const EXAMPLES_MAX: usize = 10;
/// The fewest buyers whose draw can be tested.
pub const BUYERS_MIN: usize = draw::BUYERS_MIN;

/// Milliseconds since the sale opening on the client's monotonic clock, placed by one reading of
/// the wall clock beside it.
#[derive(Clone, Copy)]
struct SinceOpening {
    base: Instant,
    /// The wall clock at `base`, in ms since the opening (negative before it).
    base_ms: f64,
}

impl SinceOpening {
    fn new(opens_at_ms: i64) -> Self {
        let base = Instant::now();
        let wall_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e6;
        Self {
            base,
            base_ms: wall_ms - opens_at_ms as f64,
        }
    }

    fn ms(&self, at: Instant) -> f64 {
        let offset_ms = if at >= self.base {
            (at - self.base).as_secs_f64() * 1000.0
        } else {
            -(self.base - at).as_secs_f64() * 1000.0
        };
        self.base_ms + offset_ms
    }

    /// The instant of the opening on the monotonic clock.
    fn opening(&self) -> Instant {
        let from_base = Duration::from_secs_f64(self.base_ms.abs() / 1000.0);
        if self.base_ms <= 0.0 {
            self.base + from_base
        } else {
            self.base.checked_sub(from_base).unwrap_or(self.base)
        }
    }
}

/// A server time (RFC 3339) in ms since the opening.
fn server_ms(raw: &str, opens_at_ms: i64) -> Option<i64> {
    let at = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
    Some(i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()? - opens_at_ms)
}

/// A buyer in the pre-queue.
struct Waiter {
    index: usize,
    session: String,
    token: String,
    arrival: u64,
}

/// What one buyer did and saw.
struct Out {
    index: usize,
    /// A token still live when the buyer stopped (not paid with, not left), to hand back.
    token: Option<String>,
    seen: Seen,
    record: BuyerRecord,
    /// Why it stopped, when not because it paid or the sale ended.
    failure: Option<String>,
}

struct Shared {
    client: Client,
    run: String,
    date_id: String,
    seat_count: u32,
    room_rate: u32,
    clock: SinceOpening,
    opens_at_ms: i64,
    sold: AtomicU32,
    sold_out: AtomicBool,
    /// ms since the opening.
    sold_out_ms: Mutex<Option<f64>>,
    outs: Mutex<Vec<Out>>,
    polls: AtomicU64,
    admitted: AtomicU64,
    paid: AtomicU64,
    done: AtomicU64,
    hold_retries: AtomicU64,
}

impl Shared {
    fn finished(&self) -> bool {
        self.sold_out.load(Ordering::Acquire) || self.client.halted()
    }

    fn sold(&self, seats: u32) {
        let total = self.sold.fetch_add(seats, Ordering::AcqRel) + seats;
        if total >= self.seat_count {
            self.declare_sold_out();
        }
    }

    fn declare_sold_out(&self) {
        if !self.sold_out.swap(true, Ordering::AcqRel) {
            *self.sold_out_ms.lock() = Some(self.clock.ms(Instant::now()));
            // Waiting buyers wake up and stop.
            self.client.wake_all();
        }
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let (max_active, room_rate) = (ctx.cli.room_max_active, ctx.cli.room_rate);
    let setup_started = Instant::now();
    ctx.sign_up_buyers().await?;
    let signed_in = ctx.sign_in_buyers().await?;
    let auditor_session = api::sign_in(client, &ctx.names.auditor(), PASSWORD, None)
        .await
        .map_err(|fail| anyhow::anyhow!("the auditor's sign-in: {fail}"))?;

    // Only now, every buyer signed in, is the opening set: the margin is for the tokens alone.
    let opens_at_ms = i64::try_from(
        (OffsetDateTime::now_utc() + Duration::from_secs(ctx.cli.pre_queue_seconds))
            .unix_timestamp_nanos()
            / 1_000_000,
    )
    .context("an opening time in range")?;
    let sale_opens_at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(opens_at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .context("an RFC 3339 opening time")?;
    let concert_id = api::create_concert_with_room(
        client,
        admin,
        &format!("load run {} opening", ctx.names.run()),
        &sale_opens_at,
        max_active,
        room_rate,
    )
    .await
    .map_err(setup::admin_failure)?;
    let date_id = api::create_date(client, admin, &concert_id, seat_count, ctx.cli.price)
        .await
        .map_err(setup::admin_failure)?;
    let clock = SinceOpening::new(opens_at_ms);
    let tokens_started = Instant::now();
    let queued = take_pre_queue_tokens(ctx, signed_in, &concert_id).await?;
    let tokens_seconds = tokens_started.elapsed().as_secs_f64();
    let in_pre_queue = queued.len();
    let mut arrivals: Vec<u64> = queued.iter().map(|q| q.status.position).collect();
    arrivals.sort_unstable();
    arrivals.dedup();
    let arrivals_repeated = in_pre_queue - arrivals.len();
    let waiters: Vec<Waiter> = queued
        .into_iter()
        .map(|q| Waiter {
            index: q.index,
            session: q.session,
            arrival: q.status.position,
            token: q.status.queue_token,
        })
        .collect();
    let opening = clock.opening();
    let idle_seconds = opening
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    if idle_seconds > 0.0 {
        let waiting_since = Instant::now();
        let status = move || {
            (
                waiting_since.elapsed().as_secs(),
                "seconds until the sale opens (not measured)".to_owned(),
            )
        };
        ctx.display
            .run(
                "opening",
                idle_seconds.ceil() as u64,
                status,
                tokio::time::sleep_until(opening.into()),
            )
            .await;
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let shared = Arc::new(Shared {
        client: client.clone(),
        run: ctx.names.run().to_owned(),
        date_id: date_id.clone(),
        seat_count,
        room_rate,
        clock,
        opens_at_ms,
        sold: AtomicU32::new(0),
        sold_out: AtomicBool::new(false),
        sold_out_ms: Mutex::new(None),
        outs: Mutex::new(Vec::with_capacity(waiters.len())),
        polls: AtomicU64::new(0),
        admitted: AtomicU64::new(0),
        paid: AtomicU64::new(0),
        done: AtomicU64::new(0),
        hold_retries: AtomicU64::new(0),
    });
    let spawner = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for waiter in waiters {
                tasks.spawn(buyer(shared.clone(), waiter));
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let status = {
        let shared = shared.clone();
        move || {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let requests = shared.client.stats().requests.load(Ordering::Relaxed);
            (
                u64::from(shared.sold.load(Ordering::Relaxed)),
                format!(
                    "seats sold · {:.0} req/s · {} polls · {} admitted · {} paid · {} done",
                    requests as f64 / elapsed,
                    shared.polls.load(Ordering::Relaxed),
                    shared.admitted.load(Ordering::Relaxed),
                    shared.paid.load(Ordering::Relaxed),
                    shared.done.load(Ordering::Relaxed),
                ),
            )
        }
    };
    ctx.display
        .run(
            ctx.cli.mode.name(),
            u64::from(seat_count),
            status,
            ctx.bounded(spawner),
        )
        .await;
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();

    // The room's own figures, before the run's tokens leave it.
    let room = api::waiting_room(client, admin, &concert_id).await;
    let mut outs = std::mem::take(&mut *shared.outs.lock());
    outs.sort_by_key(|o| o.index);
    let tokens_left = leave_all(ctx, &mut outs).await;
    let auditor_token = admit_auditor(ctx, &auditor_session, &concert_id).await;

    let sold_out_ms = *shared.sold_out_ms.lock();
    let figures = Figures::of(&outs, sold_out_ms, measured_seconds, ctx.seed);
    let checks = figures.checks(&outs, &room, &concert_id);
    let room = match &room {
        Ok(report) => json!(report),
        Err(fail) => json!({"error": fail.to_string()}),
    };
    let admissions_per_second =
        figures.admitted_by_end as f64 / (figures.end_ms / 1000.0).max(1e-3);
    let outcome = json!({
        "buyers": ctx.cli.buyers,
        "buyers_in_pre_queue": in_pre_queue,
        "arrival_positions_repeated": arrivals_repeated,
        "seats": seat_count,
        "price": ctx.cli.price,
        "room_max_active": max_active,
        "room_admit_per_second": room_rate,
        "sale_opens_at": sale_opens_at,
        "pre_queue_seconds": ctx.cli.pre_queue_seconds,
        "pre_queue_tokens_seconds": tokens_seconds,
        "pre_queue_idle_seconds": idle_seconds,
        "sold_out": sold_out_ms.is_some(),
        "sold_out_seconds": sold_out_ms.map(|ms| ms / 1000.0),
        "seats_sold": shared.sold.load(Ordering::Relaxed),
        "buyers_admitted": shared.admitted.load(Ordering::Relaxed),
        "buyers_paid": shared.paid.load(Ordering::Relaxed),
        "polls": shared.polls.load(Ordering::Relaxed),
        "hold_retries": shared.hold_retries.load(Ordering::Relaxed),
        "admissions_counted_seconds": figures.end_ms / 1000.0,
        "admissions": figures.admitted_by_end,
        "admissions_per_second": admissions_per_second,
        "admissions_vs_room_rate_percent": 100.0 * admissions_per_second / f64::from(room_rate),
        "admissions_per_second_series": figures.per_second.series,
        "admissions_per_second_summary": figures.per_second.summary,
        "active_ttl_seconds": figures.ttl_ms.map(|ms| ms / 1000),
        "wait_seconds": figures.wait,
        "seen_wait_seconds": figures.seen_wait,
        "room": room,
        "order": figures.order,
        "uniformity": figures.uniformity,
        "buyers_reissued": figures.reissued,
        "buyers_failed": figures.failed,
        "queue_tokens_left_at_end": tokens_left,
    });
    let records = outs
        .into_iter()
        .map(|out| {
            let mut record = out.record;
            record.queue_token = out.token;
            record
        })
        .collect();
    Ok(ModeRun {
        setup_seconds,
        measured_seconds,
        outcome,
        records,
        dates: vec![(date_id, seat_count)],
        auditor: Some(Auditor {
            session: auditor_session,
            token: auditor_token,
        }),
        check_holds: false,
        rss: None,
        checks,
        endpoint_seconds: Vec::new(),
        siege: None,
    })
}

/// Every signed-in buyer takes a token of the concert's room; each must be in the pre-queue.
async fn take_pre_queue_tokens(
    ctx: &Context,
    signed_in: Vec<setup::SignedIn>,
    concert_id: &str,
) -> anyhow::Result<Vec<Queued>> {
    let count = signed_in.len();
    let users = signed_in
        .into_iter()
        .map(|s| (s.index, s.session))
        .collect();
    let started = Instant::now();
    let step = |index, session: String| {
        let client = ctx.client.clone();
        let concert_id = concert_id.to_owned();
        async move {
            let status = api::take_room_token(&client, &session, &concert_id).await?;
            Ok::<_, Fail>(Queued {
                index,
                session,
                status,
            })
        }
    };
    let doing = "taking tokens of the room before the opening (not measured)";
    let timeout = Some(ctx.setup_timeout());
    let Some(fanned) =
        setup::fan_out(ctx.display, "pre-queue", doing, users, timeout, step).await?
    else {
        bail!(
            "taking {count} pre-queue tokens took longer than --setup-timeout ({} s)",
            ctx.setup_timeout().as_secs()
        );
    };
    if fanned.done.is_empty() {
        bail!(
            "no buyer could take a token of the room: {}",
            fanned
                .first_failure
                .map_or_else(|| "no buyers".to_owned(), |f| f.to_string())
        );
    }
    if let Some(fail) = fanned.first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers could not take a token of the room and sit out \
             (first: {fail})",
            fanned.failures
        );
    }
    let late: Vec<&Queued> = fanned
        .done
        .iter()
        .filter(|q| q.status.status != "pre_queue")
        .collect();
    if let Some(first) = late.first() {
        bail!(
            "{} of {} tokens were issued after the sale opened (the first {:?}, not pre_queue): \
             taking them took {:.1} s of the {} s of --pre-queue-seconds; raise \
             --pre-queue-seconds",
            late.len(),
            fanned.done.len(),
            first.status.status,
            started.elapsed().as_secs_f64(),
            ctx.cli.pre_queue_seconds
        );
    }
    Ok(fanned.done)
}

async fn buyer(shared: Arc<Shared>, waiter: Waiter) {
    let mut out = Out {
        index: waiter.index,
        token: Some(waiter.token.clone()),
        seen: Seen {
            arrival: waiter.arrival,
            ..Seen::default()
        },
        record: BuyerRecord {
            session: Some(waiter.session.clone()),
            ..BuyerRecord::default()
        },
        failure: None,
    };
    follow(&shared, &waiter, &mut out).await;
    shared.done.fetch_add(1, Ordering::Relaxed);
    shared.outs.lock().push(out);
}

/// Polls the buyer's token from the opening until it is admitted, then buys.
async fn follow(shared: &Shared, waiter: &Waiter, out: &mut Out) {
    let client = &shared.client;
    // A poll still queued for a connection when the date sells out is not sent.
    let gone = || shared.finished();
    let session = waiter.session.as_str();
    let mut token = waiter.token.clone();
    let mut early_polls = 0;
    loop {
        if shared.finished() {
            return;
        }
        let answer = api::poll_queue_token_timed(client, session, &token, Some(&gone)).await;
        let answered = Instant::now();
        let (status, sent_at) = match answer {
            Ok(answer) => answer,
            Err(Fail::Stopped) => return,
            Err(fail) => {
                out.failure = Some(format!("poll: {fail}"));
                return;
            }
        };
        shared.polls.fetch_add(1, Ordering::Relaxed);
        if status.reissued {
            out.seen.reissued = true;
            token = status.queue_token.clone();
            out.token = Some(token.clone());
        }
        match status.status.as_str() {
            "pre_queue" => {
                early_polls += 1;
                if early_polls > PRE_QUEUE_POLLS_MAX {
                    out.failure = Some(format!(
                        "still pre_queue {} s after the opening",
                        (PRE_QUEUE_AGAIN * PRE_QUEUE_POLLS_MAX).as_secs()
                    ));
                    return;
                }
                client.nap_unless(PRE_QUEUE_AGAIN, gone).await;
            }
            "waiting" => {
                let sighting = Sighting {
                    sent_ms: shared.clock.ms(sent_at),
                    answered_ms: shared.clock.ms(answered),
                    position: status.position,
                };
                if out.seen.last.is_none() {
                    out.seen.first = Some(sighting);
                }
                out.seen.last = Some(sighting);
                let dropped_in_ms = server_ms(&status.expires_at, shared.opens_at_ms)
                    .map(|at| at as f64 - sighting.answered_ms);
                let delay = next_poll(status.position, shared.room_rate, dropped_in_ms);
                client.nap_unless(delay, gone).await;
            }
            "active" => {
                out.seen.expires_ms = server_ms(&status.expires_at, shared.opens_at_ms);
                out.seen.seen_active_ms = Some(shared.clock.ms(answered));
                shared.admitted.fetch_add(1, Ordering::Relaxed);
                // Boxed: the state of a purchase exists only while a buyer is buying.
                let paid =
                    Box::pin(buy(shared, waiter.index, session, &token, &mut out.record)).await;
                if paid {
                    // The payment ended the token.
                    out.token = None;
                } else {
                    // Its place goes to the next in line; a token the halted run could not hand
                    // back is left after the phase.
                    match api::leave_queue(client, session, &token).await {
                        Err(Fail::Stopped | Fail::NoResponse(_)) => {}
                        _ => out.token = None,
                    }
                }
                return;
            }
            other => {
                out.failure = Some(format!("queue status {other:?}"));
                return;
            }
        }
    }
}

/// When a waiting buyer at `position` polls again. The room admits at most `rate` a second, after
/// a burst of at most one second's worth, so the buyer cannot get in sooner than about
/// position / rate − 1 s from now: it polls after half of position / rate, which is before
/// that from two seconds away, and at least `POLL_MIN` apart, so a buyer near the head learns
/// of its admission within about a second. The server's `poll_after_seconds` (1–5 s) would
/// have a hundred thousand buyers poll tens of thousands of times a second, more than two
/// cores answer beside everything else; this asks sooner than it near the head of the line and
/// later far from it. Never later than half the time left before the waiting token would be
/// dropped (`dropped_in_ms`, from its `expires_at`). ±10% jitter.
fn next_poll(position: u64, rate: u32, dropped_in_ms: Option<f64>) -> Duration {
    let half_way = Duration::from_secs_f64(position as f64 / f64::from(rate.max(1)) / 2.0);
    let mut delay = half_way.max(POLL_MIN);
    if let Some(ms) = dropped_in_ms {
        delay = delay.min(Duration::from_secs_f64((ms / 2.0).max(100.0) / 1000.0));
    }
    jitter(delay)
}

/// Holds the best seat left, tops up and pays; `true` when the buyer paid.
async fn buy(
    shared: &Shared,
    index: usize,
    session: &str,
    token: &str,
    record: &mut BuyerRecord,
) -> bool {
    let client = &shared.client;
    let run = &shared.run;
    let mut attempt = 0;
    let reservation = loop {
        if attempt >= HOLD_ATTEMPTS_MAX || shared.finished() {
            return false;
        }
        attempt += 1;
        record.touched = true;
        let key = format!("lg-{run}-{index}-best-{attempt}");
        match api::hold_best(client, session, token, &shared.date_id, 1, &key).await {
            Ok(reservation) => break reservation,
            Err(fail) if fail.is(409, "no_adjacent_seats") => {
                // Not one seat available: sold out, or held by buyers still paying.
                if shared.sold.load(Ordering::Acquire) >= shared.seat_count {
                    shared.declare_sold_out();
                    return false;
                }
                shared.hold_retries.fetch_add(1, Ordering::Relaxed);
                client.nap_unless(HOLD_AGAIN, || shared.finished()).await;
            }
            Err(_) => return false,
        }
    };
    match purchase::top_up_and_pay(client, session, token, &reservation, (run, index), record).await
    {
        Settled::Paid(seats) => {
            shared.paid.fetch_add(1, Ordering::Relaxed);
            shared.sold(seats);
            true
        }
        Settled::LetGo | Settled::Unknown => false,
    }
}

/// After the measured phase: every token the run still holds (buyers still waiting, admitted
/// ones that did not pay) leaves the room, so the auditor gets in at once. Tokens that could
/// not be handed back stay in their buyer's out for the clean-up after the audit; returns how
/// many left.
async fn leave_all(ctx: &Context, outs: &mut [Out]) -> u64 {
    let left = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (at, out) in outs.iter().enumerate() {
        let (Some(session), Some(token)) = (out.record.session.clone(), out.token.clone()) else {
            continue;
        };
        let (client, left) = (ctx.client.clone(), left.clone());
        tasks.spawn(async move {
            let outcome = api::leave_queue(&client, &session, &token).await;
            left.fetch_add(1, Ordering::Relaxed);
            // A refusal means the token had ended already: nothing left to hand back.
            (at, matches!(outcome, Ok(()) | Err(Fail::Refused { .. })))
        });
    }
    let total = tasks.len() as u64;
    let status = {
        let left = left.clone();
        move || {
            (
                left.load(Ordering::Relaxed),
                "leaving the room (not measured)".to_owned(),
            )
        }
    };
    let handed_back = ctx
        .display
        .run("leave", total, status, async {
            let mut handed_back = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                if let Ok((at, true)) = joined {
                    handed_back.push(at);
                }
            }
            handed_back
        })
        .await;
    for &at in &handed_back {
        outs[at].token = None;
    }
    handed_back.len() as u64
}

/// The auditor reads the date's seats with a token of the concert's room, which the buyers have
/// left by now.
async fn admit_auditor(ctx: &Context, session: &str, concert_id: &str) -> Option<String> {
    let client = &ctx.client;
    match api::admit_to_room(client, session, concert_id, ctx.admission_wait(), || false).await {
        Admission::Active(token) => Some(token),
        Admission::GaveUp(token) | Admission::Failed(token, _) => {
            if let Some(token) = token {
                let _ = api::leave_queue(client, session, &token).await;
            }
            eprintln!(
                "boxoffice-load: the auditor was not admitted to the concert's room; the audit \
                 cannot read the seat listing"
            );
            None
        }
    }
}

/// A wait distribution, in seconds.
#[derive(Debug, Serialize)]
struct Waits {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Waits {
    fn of(ms: impl Iterator<Item = u64>) -> Self {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, WAIT_MAX_MS, 3).expect("valid histogram bounds");
        for ms in ms {
            histogram.saturating_record(ms.max(1));
        }
        let seconds = |ms: u64| ms as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: seconds(histogram.value_at_quantile(0.50)),
            p90: seconds(histogram.value_at_quantile(0.90)),
            p99: seconds(histogram.value_at_quantile(0.99)),
            max: seconds(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// What the records add up to.
struct Figures {
    ttl_ms: Option<i64>,
    /// Where admissions stop being counted: sold out, or the end of the measured phase.
    end_ms: f64,
    admitted_by_end: u64,
    per_second: PerSecond,
    wait: Waits,
    seen_wait: Waits,
    order: line::OrderCheck,
    uniformity: Option<Uniformity>,
    reissued: u64,
    failed: u64,
}

impl Figures {
    fn of(outs: &[Out], sold_out_ms: Option<f64>, measured_seconds: f64, seed: u64) -> Self {
        let seen: Vec<Seen> = outs.iter().map(|o| o.seen.clone()).collect();
        let ttl_ms = line::active_ttl_ms(&seen);
        let admitted = match ttl_ms {
            Some(ttl) => line::admissions(&seen, ttl),
            None => vec![None; seen.len()],
        };
        let end_ms = sold_out_ms.unwrap_or(measured_seconds * 1000.0).max(1.0);
        let mut counts = vec![0u64; (end_ms / 1000.0).ceil() as usize + 1];
        let mut admitted_by_end = 0;
        for &at in admitted.iter().flatten() {
            if at as f64 <= end_ms {
                admitted_by_end += 1;
                counts[(at.max(0) / 1000) as usize] += 1;
            }
        }
        let order = line::order_check(&seen, &admitted, ORDER_SLACK_MS);
        let places = line::drawn_places(&seen, &admitted);
        let (arrival, place): (Vec<f64>, Vec<f64>) = seen
            .iter()
            .zip(&places)
            .filter_map(|(s, place)| Some((s.arrival as f64, (*place)?)))
            .unzip();
        Self {
            ttl_ms,
            end_ms,
            admitted_by_end,
            per_second: PerSecond::of(&counts, end_ms / 1000.0),
            wait: Waits::of(admitted.iter().flatten().map(|&at| at.max(0) as u64)),
            seen_wait: Waits::of(
                seen.iter()
                    .filter_map(|s| s.seen_active_ms)
                    .map(|ms| ms.max(0.0) as u64),
            ),
            order,
            uniformity: Uniformity::test(&arrival, &place, seed),
            reissued: seen.iter().filter(|s| s.reissued).count() as u64,
            failed: outs.iter().filter(|o| o.failure.is_some()).count() as u64,
        }
    }

    fn checks(
        &self,
        outs: &[Out],
        room: &Result<RoomReport, Fail>,
        concert_id: &str,
    ) -> Vec<Check> {
        let server = match room {
            Ok(room) => Check {
                name: "room_order_server",
                ok: room.order_violations == 0,
                detail: format!(
                    "the room's order_violations: {} over {} admissions (GET \
                     /api/v1/admin/waiting-rooms/{concert_id})",
                    room.order_violations, room.admitted_total
                ),
                examples: Vec::new(),
            },
            Err(fail) => Check {
                name: "room_order_server",
                ok: false,
                detail: format!("the room's figures could not be read: {fail}"),
                examples: Vec::new(),
            },
        };
        let order = &self.order;
        let client = Check {
            name: "room_order_client",
            ok: order.pairs_checked > 0 && order.violations_at_least == 0,
            detail: format!(
                "{} pairs of {} buyers checked (a waiting answer, then a later answer or the \
                 admission; {} ms slack): {} with more admissions in between than tokens ahead, \
                 so at least {} admissions passed a waiting token",
                order.pairs_checked,
                order.buyers_checked,
                order.slack_ms,
                order.pairs_passed,
                order.violations_at_least
            ),
            examples: order.examples.clone(),
        };
        let uniform = match &self.uniformity {
            Some(u) => Check {
                name: "draw_uniform",
                ok: u.pass,
                detail: format!(
                    "arrival index vs drawn place of {} buyers: chi-square {:.2} ({k}x{k} \
                     groups, {} df, critical {:.2} at {}, Wilson-Hilferty) {}; Spearman rho \
                     {:+.5} (bound ±{:.5} = 3.29/sqrt(n-1)) {}",
                    u.buyers,
                    u.chi_square,
                    u.degrees_of_freedom,
                    u.chi_square_critical,
                    u.significance,
                    verdict(u.chi_square_pass),
                    u.spearman_rho,
                    u.spearman_bound,
                    verdict(u.spearman_pass),
                    k = u.groups,
                ),
                examples: Vec::new(),
            },
            None => Check {
                name: "draw_uniform",
                ok: false,
                detail: format!(
                    "fewer than {} buyers with both an arrival index and a drawn place",
                    draw::BUYERS_MIN
                ),
                examples: Vec::new(),
            },
        };
        let refused: Vec<&Out> = outs
            .iter()
            .filter(|o| {
                o.failure
                    .as_deref()
                    .is_some_and(|f| !f.contains("no answer"))
            })
            .collect();
        let kept = Check {
            name: "line_kept",
            ok: self.reissued == 0 && refused.is_empty(),
            detail: format!(
                "{} tokens dropped and reissued at the back (raise queue.waiting_ttl_seconds), \
                 {} buyers stopped by an answer API.md does not expect; {} more stopped for want \
                 of an answer",
                self.reissued,
                refused.len(),
                self.failed - refused.len() as u64
            ),
            examples: outs
                .iter()
                .filter_map(|o| Some(format!("buyer {}: {}", o.index, o.failure.as_ref()?)))
                .take(EXAMPLES_MAX)
                .collect(),
        };
        vec![server, client, uniform, kept]
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}
