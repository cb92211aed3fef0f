//! `sell-out`: N buyers chase S seats of one new date through the whole flow of API.md — sign
//! in, take a queue token and wait to be admitted, hold 1..k seats, top up, pay — until the
//! date is sold out. Reports the seconds from the first sign-in to the last seat paid.
//!
//! Buyers pick seats from what the run has seen so far (a shared board, as browsers would see
//! through the seat events stream): the board is updated by every hold, every 409 and every
//! seat listing, so collisions are real races rather than blind guesses. A buyer fetches the
//! listing after two conflicts in a row or when the board shows nothing free, and gives up when
//! the listing has nothing available.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Admission, Fail, SeatStatus};
use crate::audit::{Auditor, BuyerRecord, PaidRecord};
use crate::client::Client;
use crate::setup::{self, Names, PASSWORD};
use crate::{Context, ModeRun};

/// Hold requests one buyer sends at most.
const HOLD_ATTEMPTS_MAX: u32 = 16;
/// Seat listings one buyer fetches at most.
const LISTINGS_MAX: u32 = 3;
/// Random probes of the board before scanning it.
const PROBES_PER_SEAT: u32 = 8;

struct Shared {
    client: Client,
    names: Names,
    seed: u64,
    date_id: String,
    seat_count: u32,
    seats_per_buyer: u32,
    /// `true`: seen held or sold. Index 0 is unused (seat numbers start at 1).
    board: Vec<AtomicBool>,
    started: Instant,
    deadline: Instant,
    sold: AtomicU32,
    sold_out: AtomicBool,
    sold_out_after: Mutex<Option<Duration>>,
    records: Mutex<Vec<BuyerRecord>>,
    buyers_signed_in: AtomicU64,
    buyers_admitted: AtomicU64,
    buyers_paid: AtomicU64,
    buyers_done: AtomicU64,
    hold_conflicts: AtomicU64,
    listings: AtomicU64,
}

impl Shared {
    fn finished(&self) -> bool {
        self.sold_out.load(Ordering::Acquire) || self.client.halted()
    }

    fn mark(&self, seats: &[u32], taken: bool) {
        for &seat in seats {
            if let Some(cell) = self.board.get(seat as usize) {
                cell.store(taken, Ordering::Relaxed);
            }
        }
    }

    fn free(&self, seat: u32) -> bool {
        !self.board[seat as usize].load(Ordering::Relaxed)
    }

    /// Up to `want` seats the board shows free: random probes first, then a scan from a random
    /// seat, so a nearly full board still finds its last free seats.
    fn pick(&self, want: u32, rng: &mut StdRng) -> Vec<u32> {
        let mut picked = Vec::with_capacity(want as usize);
        for _ in 0..want * PROBES_PER_SEAT {
            let seat = rng.gen_range(1..=self.seat_count);
            if self.free(seat) && !picked.contains(&seat) {
                picked.push(seat);
                if picked.len() == want as usize {
                    return picked;
                }
            }
        }
        let start = rng.gen_range(0..self.seat_count);
        for offset in 0..self.seat_count {
            let seat = (start + offset) % self.seat_count + 1;
            if self.free(seat) && !picked.contains(&seat) {
                picked.push(seat);
                if picked.len() == want as usize {
                    break;
                }
            }
        }
        picked
    }

    fn sold(&self, seats: u32) {
        let total = self.sold.fetch_add(seats, Ordering::AcqRel) + seats;
        if total >= self.seat_count {
            self.declare_sold_out();
        }
    }

    fn declare_sold_out(&self) {
        if !self.sold_out.swap(true, Ordering::AcqRel) {
            *self.sold_out_after.lock() = Some(self.started.elapsed());
            // Waiting buyers wake up and leave.
            self.client.wake_all();
        }
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let setup_started = Instant::now();
    let (_, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let shared = Arc::new(Shared {
        client: client.clone(),
        names: ctx.names.clone(),
        seed: ctx.seed,
        date_id: date_id.clone(),
        seat_count,
        seats_per_buyer: ctx.cli.seats_per_buyer,
        board: (0..=seat_count).map(|_| AtomicBool::new(false)).collect(),
        started,
        deadline: started + ctx.duration(),
        sold: AtomicU32::new(0),
        sold_out: AtomicBool::new(false),
        sold_out_after: Mutex::new(None),
        records: Mutex::new(Vec::new()),
        buyers_signed_in: AtomicU64::new(0),
        buyers_admitted: AtomicU64::new(0),
        buyers_paid: AtomicU64::new(0),
        buyers_done: AtomicU64::new(0),
        hold_conflicts: AtomicU64::new(0),
        listings: AtomicU64::new(0),
    });
    let buyers = ctx.cli.buyers;
    let arrival_rate = ctx.cli.arrival_rate;
    let spawner = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for index in 0..buyers {
                if arrival_rate > 0.0 {
                    let due = started + Duration::from_secs_f64(index as f64 / arrival_rate);
                    let now = Instant::now();
                    if due > now {
                        shared.client.nap(due - now).await;
                    }
                }
                if shared.finished() {
                    break;
                }
                tasks.spawn(buyer(shared.clone(), index));
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let status = {
        let shared = shared.clone();
        move || {
            let elapsed = shared.started.elapsed().as_secs_f64().max(1e-3);
            let requests = shared.client.stats().requests.load(Ordering::Relaxed);
            (
                u64::from(shared.sold.load(Ordering::Relaxed)),
                format!(
                    "seats sold · {:.0} req/s · {} admitted · {} paid · {} done",
                    requests as f64 / elapsed,
                    shared.buyers_admitted.load(Ordering::Relaxed),
                    shared.buyers_paid.load(Ordering::Relaxed),
                    shared.buyers_done.load(Ordering::Relaxed),
                ),
            )
        }
    };
    ctx.display
        .run(
            "sell-out",
            u64::from(seat_count),
            status,
            ctx.bounded(spawner),
        )
        .await;
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();

    let sold_out_after = *shared.sold_out_after.lock();
    let outcome = json!({
        "seats": seat_count,
        "buyers": buyers,
        "price": ctx.cli.price,
        "seats_per_buyer_max": ctx.cli.seats_per_buyer,
        "sold_out": sold_out_after.is_some(),
        "sold_out_seconds": sold_out_after.map(|d| d.as_secs_f64()),
        "seats_sold": shared.sold.load(Ordering::Relaxed),
        "buyers_signed_in": shared.buyers_signed_in.load(Ordering::Relaxed),
        "buyers_admitted": shared.buyers_admitted.load(Ordering::Relaxed),
        "buyers_paid": shared.buyers_paid.load(Ordering::Relaxed),
        "hold_conflicts": shared.hold_conflicts.load(Ordering::Relaxed),
        "seat_listings": shared.listings.load(Ordering::Relaxed),
    });
    let records = std::mem::take(&mut *shared.records.lock());
    Ok(ModeRun {
        setup_seconds,
        measured_seconds,
        outcome,
        records,
        dates: vec![(date_id, seat_count)],
        auditor: Some(Auditor {
            session: auditor_session,
            token: Some(auditor_token),
        }),
        check_holds: false,
        rss: None,
        checks: Vec::new(),
        endpoint_seconds: Vec::new(),
        siege: None,
    })
}

async fn buyer(shared: Arc<Shared>, index: usize) {
    let mut record = BuyerRecord::default();
    shop(&shared, index, &mut record).await;
    shared.buyers_done.fetch_add(1, Ordering::Relaxed);
    if record.session.is_some() {
        shared.records.lock().push(record);
    }
}

async fn shop(shared: &Shared, index: usize, record: &mut BuyerRecord) {
    let client = &shared.client;
    if shared.finished() {
        return;
    }
    // A buyer whose sign-in is still queued for a connection when the date sells out goes home.
    let gone = || shared.finished();
    let username = shared.names.buyer(index);
    let Ok(session) = api::sign_in(client, &username, PASSWORD, Some(&gone)).await else {
        return;
    };
    shared.buyers_signed_in.fetch_add(1, Ordering::Relaxed);
    record.session = Some(session.clone());
    if shared.finished() {
        return;
    }
    let max_wait = shared.deadline.saturating_duration_since(Instant::now());
    let token = match api::admit(client, &session, max_wait, || shared.finished()).await {
        Admission::Active(token) => token,
        Admission::GaveUp(token) | Admission::Failed(token, _) => {
            match token {
                // Sold out: leaving is part of the flow.
                Some(token) if shared.sold_out.load(Ordering::Acquire) => {
                    leave(client, &session, token, record).await;
                }
                // Out of time: the clean-up after the audit hands the token back.
                Some(token) => record.queue_token = Some(token),
                None => {}
            }
            return;
        }
    };
    shared.buyers_admitted.fetch_add(1, Ordering::Relaxed);
    // Boxed: the state of a purchase exists only while a buyer is buying, not while a hundred
    // thousand others wait in the queue.
    let paid = Box::pin(buy(shared, index, &session, &token, record)).await;
    if !paid {
        // A payment ends the token by itself; everyone else leaves the waiting room.
        leave(client, &session, token, record).await;
    }
}

/// Holds, tops up and pays; `true` when the buyer paid.
async fn buy(
    shared: &Shared,
    index: usize,
    session: &str,
    token: &str,
    record: &mut BuyerRecord,
) -> bool {
    let client = &shared.client;
    let rng = &mut StdRng::seed_from_u64(
        shared.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let run = shared.names.run();
    let mut want = rng.gen_range(1..=shared.seats_per_buyer.min(shared.seat_count));
    let mut conflicts_in_row = 0;
    let mut listings = 0;
    let mut attempt = 0;
    let reservation = loop {
        if attempt >= HOLD_ATTEMPTS_MAX || shared.finished() {
            return false;
        }
        attempt += 1;
        let mut pick = if conflicts_in_row >= 2 {
            Vec::new()
        } else {
            shared.pick(want, rng)
        };
        if pick.is_empty() {
            if listings >= LISTINGS_MAX {
                return false;
            }
            listings += 1;
            conflicts_in_row = 0;
            shared.listings.fetch_add(1, Ordering::Relaxed);
            let Ok(listing) = api::seats(client, session, token, &shared.date_id).await else {
                return false;
            };
            let mut available = Vec::new();
            let mut all_sold = true;
            for seat in &listing {
                let free = seat.status == SeatStatus::Available;
                shared.mark(&[seat.seat_no], !free);
                if free {
                    available.push(seat.seat_no);
                }
                all_sold &= seat.status == SeatStatus::Sold;
            }
            if available.is_empty() {
                if all_sold {
                    shared.declare_sold_out();
                }
                return false;
            }
            pick = available
                .choose_multiple(rng, want as usize)
                .copied()
                .collect();
        }
        record.touched = true;
        let key = format!("lg-{run}-{index}-hold-{attempt}");
        match api::hold(client, session, token, &shared.date_id, &pick, &key).await {
            Ok(reservation) => {
                shared.mark(&reservation.seat_nos, true);
                break reservation;
            }
            Err(fail) if fail.is(409, "seat_unavailable") => {
                shared.hold_conflicts.fetch_add(1, Ordering::Relaxed);
                shared.mark(&pick, true);
                conflicts_in_row += 1;
            }
            Err(fail) if fail.is(422, "hold_limit") && want > 1 => want -= 1,
            Err(_) => return false,
        }
    };

    if reservation.price > 0 {
        let key = format!("lg-{run}-{index}-charge");
        match api::charge(client, session, reservation.price, &key).await {
            Ok(_) => record.topups += reservation.price,
            Err(Fail::NoResponse(_)) => {
                record.topups_uncertain += reservation.price;
                release(client, session, &reservation.reservation_id).await;
                return false;
            }
            Err(_) => {
                release(client, session, &reservation.reservation_id).await;
                return false;
            }
        }
    }
    let key = format!("lg-{run}-{index}-pay");
    match api::pay(client, session, token, &reservation.reservation_id, &key).await {
        Ok(payment) => {
            let seats = payment.seat_nos.len() as u32;
            record.paid.push(PaidRecord {
                reservation_id: payment.reservation_id,
                date_id: payment.date_id,
                seat_nos: payment.seat_nos,
                amount: payment.amount,
            });
            shared.buyers_paid.fetch_add(1, Ordering::Relaxed);
            shared.sold(seats);
            true
        }
        Err(Fail::NoResponse(_)) => {
            record
                .payments_uncertain
                .push(reservation.reservation_id.clone());
            false
        }
        Err(_) => {
            release(client, session, &reservation.reservation_id).await;
            false
        }
    }
}

/// Cancels a hold the buyer will not pay for, so its seats go back on sale at once.
async fn release(client: &Client, session: &str, reservation_id: &str) {
    let _ = api::cancel(client, session, reservation_id).await;
}

/// Leaves the waiting room; a token the halted run could not hand back is kept for the
/// clean-up after the audit, so it does not block the next run's buyers.
async fn leave(client: &Client, session: &str, token: String, record: &mut BuyerRecord) {
    if let Err(Fail::Stopped | Fail::NoResponse(_)) =
        api::leave_queue(client, session, &token).await
    {
        record.queue_token = Some(token);
    }
}
