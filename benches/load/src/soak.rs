//! `soak`: steady mixed load for a long time (10 minutes by default) from a fixed population of
//! buyers, with the server's resident memory sampled throughout, to show whether it plateaus.
//!
//! Setup signs every buyer up and in once; no user or session is created after it. Then each
//! buyer goes round and round:
//!
//! 1. takes a queue token and waits to be admitted (following `poll_after_seconds`);
//! 2. reads the seat map of the current date and holds 1–2 of the seats it lists as available
//!    (on a 409 it tries others from the same listing, at most `HOLD_ATTEMPTS_MAX` holds);
//! 3. then cancels the hold (`P_CANCEL`), lets it sit until the server expires it (`P_SIT`), or
//!    tops up the price and pays (the rest);
//! 4. now and then (`P_READS`) reads its balance, balance history and reservations;
//! 5. leaves the waiting room (a payment has already ended its token).
//!
//! Held seats come back only when a hold expires, so run the server with short holds
//! (`holds.ttl_seconds`, e.g. 10) or the let-it-sit buyers soon meet `hold_limit`. Paid seats
//! never come back: when the current date's listing shows fewer than `low_water` available
//! seats, one buyer creates the next date through the admin API. Every date is new state on the
//! server, so dates should be large (20,000 seats by default) and new ones rare; the report says
//! how many were made.
//!
//! A warm-up of the same load (`--warmup`, 180 s, not measured) runs before the measured phase,
//! so the start RSS is that of a server already serving with its windows full: the last
//! minute's idempotency records, the ended queue tokens up to their bound, SQLite's page caches.
//! Growth while those fill is bounded by design; the measured phase looks for growth that is
//! not. New dates still add their state during it (about 340 KiB for 20,000 seats, counted in
//! the report). With `--server-pid` the
//! server's RSS is sampled during the measured phase (see `rss`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Admission, Fail, SeatStatus};
use crate::audit::{Auditor, BuyerRecord, PaidRecord};
use crate::client::{jitter, Client};
use crate::rss::{RssReport, Sampler};
use crate::setup::{self, SignedIn};
use crate::{Context, ModeRun};

/// After the hold: the chance the buyer cancels it, and the chance it lets it sit until it
/// expires; otherwise it tops up and pays.
const P_CANCEL: f64 = 0.4;
const P_SIT: f64 = 0.2;
/// The chance a round ends with reading the balance, its history and the reservations.
const P_READS: f64 = 0.25;
/// Seats one hold asks for, at most (at least one).
const SEATS_PER_HOLD_MAX: usize = 2;
/// Hold requests one buyer sends at most in one round.
const HOLD_ATTEMPTS_MAX: u32 = 3;
/// Dates the run creates at most, the first included: a bound on the state it adds.
const DATES_MAX: usize = 1_000;
/// A round that failed (no admission, an unexpected answer) is followed by this pause.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

struct Shared {
    client: Client,
    admin: String,
    concert_id: String,
    run: String,
    seat_count: u32,
    price: u64,
    /// Below this many available seats in a listing, the next date is created.
    low_water: u32,
    admission_wait: Duration,
    /// The date buyers shop on now.
    current: RwLock<String>,
    /// Every date the run created, in order: `(date_id, seat_count)`.
    dates: Mutex<Vec<(String, u32)>>,
    /// A buyer is creating the next date.
    rolling: AtomicBool,
    date_failures: AtomicU64,
    tally: Tally,
}

/// What the buyers did; reset when the measured phase begins (`warmup_rounds` keeps the
/// warm-up's count).
#[derive(Default)]
struct Tally {
    rounds: AtomicU64,
    failed_rounds: AtomicU64,
    admitted: AtomicU64,
    listings: AtomicU64,
    holds: AtomicU64,
    hold_conflicts: AtomicU64,
    hold_limit: AtomicU64,
    no_seats: AtomicU64,
    cancelled: AtomicU64,
    left_to_expire: AtomicU64,
    paid: AtomicU64,
    seats_sold: AtomicU64,
    hold_expired_before_payment: AtomicU64,
    reads: AtomicU64,
}

impl Tally {
    fn reset(&self) -> u64 {
        let warmup_rounds = self.rounds.swap(0, Ordering::AcqRel);
        for counter in [
            &self.failed_rounds,
            &self.admitted,
            &self.listings,
            &self.holds,
            &self.hold_conflicts,
            &self.hold_limit,
            &self.no_seats,
            &self.cancelled,
            &self.left_to_expire,
            &self.paid,
            &self.seats_sold,
            &self.hold_expired_before_payment,
            &self.reads,
        ] {
            counter.store(0, Ordering::Release);
        }
        warmup_rounds
    }
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// Creates the next date if `seen` is still the current one and nobody else is at it.
    async fn roll(&self, seen: &str) {
        if *self.current.read() != seen
            || self.dates.lock().len() >= DATES_MAX
            || self.rolling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        match api::create_date(
            &self.client,
            &self.admin,
            &self.concert_id,
            self.seat_count,
            self.price,
        )
        .await
        {
            Ok(date_id) => {
                self.dates.lock().push((date_id.clone(), self.seat_count));
                *self.current.write() = date_id;
            }
            Err(_) => bump(&self.date_failures),
        }
        self.rolling.store(false, Ordering::Release);
    }
}

struct Buyer {
    index: usize,
    session: String,
    rng: StdRng,
    round: u64,
    record: BuyerRecord,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let setup_started = Instant::now();
    let (concert_id, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let signed_in = ctx.sign_in_buyers().await?;

    // Room for every buyer's hold in flight, and a tenth of the date, but never half of it.
    let low_water = (seat_count / 10)
        .max((signed_in.len() * SEATS_PER_HOLD_MAX) as u32)
        .min(seat_count / 2)
        .max(1);
    let shared = Arc::new(Shared {
        client: client.clone(),
        admin: admin.to_owned(),
        concert_id,
        run: ctx.names.run().to_owned(),
        seat_count,
        price: ctx.cli.price,
        low_water,
        admission_wait: ctx.admission_wait(),
        current: RwLock::new(date_id.clone()),
        dates: Mutex::new(vec![(date_id, seat_count)]),
        rolling: AtomicBool::new(false),
        date_failures: AtomicU64::new(0),
        tally: Tally::default(),
    });
    let buyer_count = signed_in.len();
    let work = {
        let shared = shared.clone();
        let seed = ctx.seed;
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for SignedIn { index, session } in signed_in {
                let rng = StdRng::seed_from_u64(
                    seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let buyer = Buyer {
                    index,
                    session: session.clone(),
                    rng,
                    round: 0,
                    record: BuyerRecord {
                        session: Some(session),
                        ..BuyerRecord::default()
                    },
                };
                tasks.spawn(go_round(shared.clone(), buyer));
            }
            let mut records = Vec::with_capacity(buyer_count);
            while let Some(joined) = tasks.join_next().await {
                if let Ok(record) = joined {
                    records.push(record);
                }
            }
            records
        })
    };

    // The warm-up: the same load, not measured, before the start RSS is taken.
    let warmup = Duration::from_secs(ctx.cli.warmup);
    if !warmup.is_zero() {
        let warmup_started = Instant::now();
        let status = {
            let shared = shared.clone();
            move || {
                (
                    warmup_started.elapsed().as_secs(),
                    format!(
                        "s warm-up (not measured) · {} rounds",
                        count(&shared.tally.rounds)
                    ),
                )
            }
        };
        ctx.display
            .run(
                "warm-up",
                warmup.as_secs(),
                status,
                tokio::time::sleep(warmup),
            )
            .await;
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let warmup_rounds = shared.tally.reset();
    let every = Duration::from_secs(ctx.cli.sample_seconds);
    let sampler = ctx
        .cli
        .server_pid
        .map(|pid| Arc::new(Sampler::new(pid, started)));
    let sampling = sampler.clone().map(|sampler| {
        let client = client.clone();
        tokio::spawn(async move { sampler.run(&client, every).await })
    });
    let status = {
        let (shared, sampler) = (shared.clone(), sampler.clone());
        move || {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let requests = shared.client.stats().requests.load(Ordering::Relaxed);
            let rss = match sampler.as_ref().map(|s| s.latest_kib()) {
                Some(Some(kib)) => format!("RSS {:.1} MiB", kib as f64 / 1024.0),
                Some(None) => "RSS -".to_owned(),
                None => "RSS not sampled".to_owned(),
            };
            (
                elapsed as u64,
                format!(
                    "s · {rss} · {:.0} req/s · {} rounds · {} paid · {} dates",
                    requests as f64 / elapsed,
                    count(&shared.tally.rounds),
                    count(&shared.tally.paid),
                    shared.dates.lock().len(),
                ),
            )
        }
    };
    let records = ctx
        .display
        .run("soak", ctx.duration().as_secs(), status, ctx.bounded(work))
        .await
        .unwrap_or_default();
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();
    let threshold = ctx.cli.rss_growth_max_percent;
    let rss = match (sampler, sampling) {
        (Some(sampler), Some(sampling)) => {
            sampling.abort();
            // The end RSS: the load has stopped, the audit has not begun.
            sampler.sample();
            sampler.report(every, threshold)
        }
        _ => RssReport::not_sampled(threshold),
    };

    let t = &shared.tally;
    let dates = shared.dates.lock().clone();
    let paid = count(&t.paid);
    let outcome = json!({
        "buyers": buyer_count,
        "seats_per_date": seat_count,
        "price": ctx.cli.price,
        "low_water_seats": low_water,
        "warmup_seconds": warmup.as_secs(),
        "warmup_rounds": warmup_rounds,
        "rounds": count(&t.rounds),
        "rounds_per_second": count(&t.rounds) as f64 / measured_seconds.max(1e-9),
        "failed_rounds": count(&t.failed_rounds),
        "admitted": count(&t.admitted),
        "seat_listings": count(&t.listings),
        "holds": count(&t.holds),
        "hold_conflicts": count(&t.hold_conflicts),
        "hold_limit_refusals": count(&t.hold_limit),
        "no_seats_left": count(&t.no_seats),
        "cancelled": count(&t.cancelled),
        "left_to_expire": count(&t.left_to_expire),
        "paid": paid,
        "payments_per_second": paid as f64 / measured_seconds.max(1e-9),
        "seats_sold": count(&t.seats_sold),
        "hold_expired_before_payment": count(&t.hold_expired_before_payment),
        "reads": count(&t.reads),
        "dates_total": dates.len(),
        "dates_created_during_run": dates.len().saturating_sub(1),
        "date_creation_failures": count(&shared.date_failures),
        "rss_verdict": rss.verdict,
    });
    Ok(ModeRun {
        setup_seconds,
        measured_seconds,
        outcome,
        records,
        dates,
        auditor: Some(Auditor {
            session: auditor_session,
            token: Some(auditor_token),
        }),
        // Holds expire while the audit reads, so live holds are not compared.
        check_holds: false,
        rss: Some(rss),
        checks: Vec::new(),
        endpoint_seconds: Vec::new(),
        siege: None,
    })
}

/// One buyer's rounds until the run halts; gives back what it did for the audit.
async fn go_round(shared: Arc<Shared>, mut buyer: Buyer) -> BuyerRecord {
    let client = &shared.client;
    while !client.halted() {
        buyer.round += 1;
        let ok = round(&shared, &mut buyer).await;
        bump(&shared.tally.rounds);
        if !ok && !client.halted() {
            bump(&shared.tally.failed_rounds);
            client.nap(jitter(PAUSE_AFTER_FAILURE)).await;
        }
    }
    buyer.record
}

/// One round: admission, seat map, hold, its fate, sometimes reads, leaving. `false` when it
/// could not go through.
async fn round(shared: &Shared, buyer: &mut Buyer) -> bool {
    let client = &shared.client;
    let session = buyer.session.clone();
    let token = match api::admit(client, &session, shared.admission_wait, || client.halted()).await
    {
        Admission::Active(token) => token,
        Admission::GaveUp(token) | Admission::Failed(token, _) => {
            if let Some(token) = token {
                leave(client, &session, token, &mut buyer.record).await;
            }
            return false;
        }
    };
    bump(&shared.tally.admitted);
    buyer.record.queue_token = Some(token.clone());
    let shopped = shop(shared, buyer, &token).await;
    if buyer.rng.gen_bool(P_READS) && !client.halted() {
        let _ = api::balance(client, &session).await;
        let _ = api::history(client, &session).await;
        let _ = api::reservations(client, &session).await;
        shared.tally.reads.fetch_add(3, Ordering::Relaxed);
    }
    match shopped {
        // The payment ended the token.
        Shopped::Paid => {
            buyer.record.queue_token = None;
            true
        }
        Shopped::Done => {
            leave(client, &session, token, &mut buyer.record).await;
            true
        }
        Shopped::Failed => {
            leave(client, &session, token, &mut buyer.record).await;
            false
        }
    }
}

enum Shopped {
    Paid,
    /// Held and cancelled or let sit, or found nothing to hold.
    Done,
    Failed,
}

async fn shop(shared: &Shared, buyer: &mut Buyer, token: &str) -> Shopped {
    let client = &shared.client;
    let session = buyer.session.as_str();
    let date_id = shared.current.read().clone();
    let Ok(listing) = api::seats(client, session, token, &date_id).await else {
        return Shopped::Failed;
    };
    bump(&shared.tally.listings);
    let mut available: Vec<u32> = listing
        .iter()
        .filter(|s| s.status == SeatStatus::Available)
        .map(|s| s.seat_no)
        .collect();
    drop(listing);
    if (available.len() as u32) < shared.low_water {
        shared.roll(&date_id).await;
    }
    let want = buyer.rng.gen_range(1..=SEATS_PER_HOLD_MAX);
    let mut attempt = 0;
    let reservation = loop {
        if available.is_empty() {
            bump(&shared.tally.no_seats);
            return Shopped::Done;
        }
        if attempt >= HOLD_ATTEMPTS_MAX {
            return Shopped::Done;
        }
        attempt += 1;
        let mut pick = Vec::with_capacity(want);
        while pick.len() < want && !available.is_empty() {
            let at = buyer.rng.gen_range(0..available.len());
            pick.push(available.swap_remove(at));
        }
        buyer.record.touched = true;
        let key = format!(
            "lg-{}-{}-r{}-hold-{attempt}",
            shared.run, buyer.index, buyer.round
        );
        match api::hold(client, session, token, &date_id, &pick, &key).await {
            Ok(reservation) => break reservation,
            Err(fail) if fail.is(409, "seat_unavailable") => bump(&shared.tally.hold_conflicts),
            Err(fail) if fail.is(422, "hold_limit") => {
                // Its earlier holds on this date still sit; they expire in time.
                bump(&shared.tally.hold_limit);
                return Shopped::Done;
            }
            Err(_) => return Shopped::Failed,
        }
    };
    bump(&shared.tally.holds);
    let fate: f64 = buyer.rng.gen();
    if fate < P_CANCEL {
        return match api::cancel(client, session, &reservation.reservation_id).await {
            Ok(()) => {
                bump(&shared.tally.cancelled);
                Shopped::Done
            }
            // Expired already, under a short TTL and a slow server.
            Err(fail) if fail.is(409, "reservation_not_held") => Shopped::Done,
            Err(_) => Shopped::Failed,
        };
    }
    if fate < P_CANCEL + P_SIT {
        bump(&shared.tally.left_to_expire);
        return Shopped::Done;
    }
    checkout(shared, buyer, token, &reservation).await
}

/// Tops up the price and pays.
async fn checkout(
    shared: &Shared,
    buyer: &mut Buyer,
    token: &str,
    reservation: &api::Reservation,
) -> Shopped {
    let client = &shared.client;
    let session = buyer.session.as_str();
    let prefix = format!("lg-{}-{}-r{}", shared.run, buyer.index, buyer.round);
    let amount = reservation.price;
    if amount > 0 {
        match api::charge(client, session, amount, &format!("{prefix}-charge")).await {
            Ok(_) => buyer.record.topups += amount,
            Err(fail) => {
                if matches!(fail, Fail::NoResponse(_)) {
                    buyer.record.topups_uncertain += amount;
                }
                let _ = api::cancel(client, session, &reservation.reservation_id).await;
                return Shopped::Failed;
            }
        }
    }
    let key = format!("{prefix}-pay");
    match api::pay(client, session, token, &reservation.reservation_id, &key).await {
        Ok(payment) => {
            bump(&shared.tally.paid);
            shared
                .tally
                .seats_sold
                .fetch_add(payment.seat_nos.len() as u64, Ordering::Relaxed);
            buyer.record.paid.push(PaidRecord {
                reservation_id: payment.reservation_id,
                date_id: payment.date_id,
                seat_nos: payment.seat_nos,
                amount: payment.amount,
            });
            Shopped::Paid
        }
        Err(Fail::NoResponse(_)) => {
            buyer
                .record
                .payments_uncertain
                .push(reservation.reservation_id.clone());
            Shopped::Failed
        }
        Err(fail) if fail.is(410, "hold_expired") => {
            // The top-up stays on the balance, which the audit counts.
            bump(&shared.tally.hold_expired_before_payment);
            Shopped::Done
        }
        Err(_) => {
            let _ = api::cancel(client, session, &reservation.reservation_id).await;
            Shopped::Failed
        }
    }
}

/// Leaves the waiting room; a token that could not be handed back (the run halted, no answer)
/// stays in the record for the clean-up after the audit.
async fn leave(client: &Client, session: &str, token: String, record: &mut BuyerRecord) {
    match api::leave_queue(client, session, &token).await {
        Err(Fail::Stopped | Fail::NoResponse(_)) => record.queue_token = Some(token),
        _ => record.queue_token = None,
    }
}
