//! `sell-out`: N buyers chase S seats of one new date through the whole flow of API.md — sign
//! in, take a queue token and wait to be admitted, hold 1..k seats, top up, pay — until the
//! date is sold out. Reports the seconds from the first sign-in to the last seat paid.
//!
//! Buyers pick seats from what the run has seen so far (a shared board, as browsers would see
//! through the seat events stream): the board is updated by every hold, every 409 and every
//! seat listing, so collisions are real races rather than blind guesses. A buyer fetches the
//! listing after two conflicts in a row or when the board shows nothing free, and gives up when
//! the listing has nothing available.
//!
//! `best-available` is the same sale on a layout of sections with rows of varied lengths,
//! where buyers ask the server for the best 1..k adjacent seats instead of naming them, and
//! settle for one fewer when none are left together. It reports orphan seats at the end (see
//! `Orphans`).

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
use crate::audit::{Auditor, BuyerRecord};
use crate::client::Client;
use crate::purchase::{self, Settled};
use crate::setup::{self, Names, PASSWORD};
use crate::{report, Context, Mode, ModeRun};

/// Hold requests one buyer sends at most.
const HOLD_ATTEMPTS_MAX: u32 = 16;
/// Seat listings one buyer fetches at most.
const LISTINGS_MAX: u32 = 3;
/// Random probes of the board before scanning it.
const PROBES_PER_SEAT: u32 = 8;

struct Shared {
    client: Client,
    /// Buyers ask for the best seats instead of naming them.
    best_available: bool,
    /// Every best-available hold the run was granted, for the orphan count.
    granted: Mutex<Vec<Granted>>,
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

/// A best-available hold the server granted: its place in the date's order (the reservation's
/// number), its seats, and whether its buyer released it unpaid.
struct Granted {
    seq: u64,
    seats: Vec<u32>,
    released: bool,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let best_available = ctx.cli.mode == Mode::BestAvailable;
    let setup_started = Instant::now();
    let (_, date_id) = if best_available {
        setup::concert_with_varied_layout(client, admin, &ctx.names, seat_count, ctx.cli.price)
            .await?
    } else {
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?
    };
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let shared = Arc::new(Shared {
        client: client.clone(),
        best_available,
        granted: Mutex::new(Vec::new()),
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
            ctx.cli.mode.name(),
            u64::from(seat_count),
            status,
            ctx.bounded(spawner),
        )
        .await;
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();

    let sold_out_after = *shared.sold_out_after.lock();
    let mut checks = Vec::new();
    let orphans = if best_available {
        let granted = std::mem::take(&mut *shared.granted.lock());
        let orphans =
            Orphans::count(client, &auditor_session, &auditor_token, &date_id, granted).await;
        checks.push(orphans.check());
        Some(orphans)
    } else {
        None
    };
    let mut outcome = json!({
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
    if let Some(orphans) = &orphans {
        outcome["orphans"] = orphans.to_json();
        let seconds = sold_out_after.map_or(measured_seconds, |d| d.as_secs_f64());
        outcome["seats_sold_per_second"] =
            json!(f64::from(shared.sold.load(Ordering::Relaxed)) / seconds.max(1e-3));
    }
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
        checks,
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
        if shared.best_available {
            record.touched = true;
            let key = format!("lg-{run}-{index}-best-{attempt}");
            match api::hold_best(client, session, token, &shared.date_id, want, &key).await {
                Ok(reservation) => break reservation,
                Err(fail) if fail.is(409, "no_adjacent_seats") && want > 1 => want -= 1,
                Err(fail) if fail.is(409, "no_adjacent_seats") => {
                    // Not one seat is available: sold out, or held by buyers still paying.
                    if shared.sold.load(Ordering::Acquire) >= shared.seat_count {
                        shared.declare_sold_out();
                    }
                    return false;
                }
                Err(fail) if fail.is(422, "hold_limit") && want > 1 => want -= 1,
                Err(_) => return false,
            }
            continue;
        }
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

    let granted = shared.best_available.then(|| {
        let mut granted = shared.granted.lock();
        granted.push(Granted {
            seq: reservation_number(&reservation.reservation_id),
            seats: reservation.seat_nos.clone(),
            released: false,
        });
        granted.len() - 1
    });
    let released = |shared: &Shared| {
        if let Some(at) = granted {
            shared.granted.lock()[at].released = true;
        }
    };
    match purchase::top_up_and_pay(client, session, token, &reservation, (run, index), record).await
    {
        Settled::Paid(seats) => {
            shared.buyers_paid.fetch_add(1, Ordering::Relaxed);
            shared.sold(seats);
            true
        }
        Settled::LetGo => {
            released(shared);
            false
        }
        Settled::Unknown => false,
    }
}

/// `r_{date}_{n}` → `n`: the date numbers its reservations in the order it decides them.
fn reservation_number(id: &str) -> u64 {
    id.rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Orphan seats of a best-available sale, counted two ways.
///
/// - At the end: available seats with no available neighbour in their row (a run of one),
///   read from the seat listing. A sale whose buyers settle for one seat leaves none.
/// - Avoidable: the run replays the holds it was granted in the date's order (reservation
///   numbers) on an empty copy of the layout, and counts each hold that left an orphan (a single
///   available seat beside it) while a block of the same size that leaves none was still free.
///   The contract's rule makes that 0; a hold whose buyer released it unpaid is replayed as never
///   made, which can only raise the count, never hide one.
struct Orphans {
    at_end: u64,
    available_at_end: u64,
    holds_replayed: u64,
    holds_leaving_an_orphan: u64,
    avoidable: u64,
    examples: Vec<String>,
    error: Option<String>,
}

impl Orphans {
    async fn count(
        client: &Client,
        session: &str,
        token: &str,
        date_id: &str,
        mut granted: Vec<Granted>,
    ) -> Self {
        let mut orphans = Orphans {
            at_end: 0,
            available_at_end: 0,
            holds_replayed: 0,
            holds_leaving_an_orphan: 0,
            avoidable: 0,
            examples: Vec::new(),
            error: None,
        };
        let layout = match api::layout(client, session, token, date_id).await {
            Ok(layout) => layout,
            Err(fail) => {
                orphans.error = Some(format!("the seat listing: {fail}"));
                return orphans;
            }
        };
        let top = layout.seats.iter().map(|s| s.seat_no).max().unwrap_or(0) as usize;
        let mut free = vec![false; top + 2];
        for seat in &layout.seats {
            free[seat.seat_no as usize] = seat.status == SeatStatus::Available;
        }
        for row in &layout.rows {
            let run_ends = row_runs(row, |seat| free[seat as usize]);
            orphans.available_at_end += run_ends
                .iter()
                .map(|(a, b)| u64::from(b - a + 1))
                .sum::<u64>();
            orphans.at_end += run_ends.iter().filter(|(a, b)| a == b).count() as u64;
        }
        // The replay: every seat free, then each kept hold in the date's order.
        let mut free = vec![true; top + 2];
        let row_of = |seat: u32| {
            let after = layout.rows.partition_point(|r| r.first_seat_no <= seat);
            layout.rows[after - 1]
        };
        granted.sort_by_key(|g| g.seq);
        for hold in granted.iter().filter(|g| !g.released) {
            orphans.holds_replayed += 1;
            let (Some(&first), Some(&last)) = (hold.seats.first(), hold.seats.last()) else {
                continue;
            };
            let row = row_of(first);
            let is_free = |seat: i64| {
                seat >= i64::from(row.first_seat_no)
                    && seat < i64::from(row.first_seat_no + row.seats)
                    && free[seat as usize]
            };
            let leaves = |a: i64, b: i64| {
                (is_free(a - 1) && !is_free(a - 2)) || (is_free(b + 1) && !is_free(b + 2))
            };
            if leaves(i64::from(first), i64::from(last)) {
                orphans.holds_leaving_an_orphan += 1;
                let quantity = hold.seats.len() as u32;
                if let Some(clean) = clean_block(&layout.rows, &free, quantity) {
                    orphans.avoidable += 1;
                    if orphans.examples.len() < 5 {
                        orphans.examples.push(format!(
                            "hold {} took {:?}, leaving an orphan, while {}–{} was free",
                            hold.seq,
                            hold.seats,
                            clean,
                            clean + quantity - 1
                        ));
                    }
                }
            }
            for seat in &hold.seats {
                free[*seat as usize] = false;
            }
        }
        orphans
    }

    fn check(&self) -> report::Check {
        let ok = self.error.is_none() && self.avoidable == 0;
        report::Check {
            name: "no_avoidable_orphans",
            ok,
            detail: match &self.error {
                Some(error) => error.clone(),
                None => format!(
                    "{} of {} holds replayed in the date's order left an orphan; {} of them while a block leaving none was free",
                    self.holds_leaving_an_orphan, self.holds_replayed, self.avoidable
                ),
            },
            examples: self.examples.clone(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "orphan_seats_at_end": self.at_end,
            "available_seats_at_end": self.available_at_end,
            "holds_replayed": self.holds_replayed,
            "holds_leaving_an_orphan": self.holds_leaving_an_orphan,
            "holds_leaving_an_avoidable_orphan": self.avoidable,
        })
    }
}

/// The runs of free seats of `row`, as `(first, last)` seat numbers.
fn row_runs(row: &api::LayoutRow, free: impl Fn(u32) -> bool) -> Vec<(u32, u32)> {
    let mut runs = Vec::new();
    let mut start = None;
    for seat in row.first_seat_no..row.first_seat_no + row.seats {
        match (free(seat), start) {
            (true, None) => start = Some(seat),
            (false, Some(first)) => {
                runs.push((first, seat - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(first) = start {
        runs.push((first, row.first_seat_no + row.seats - 1));
    }
    runs
}

/// The first seat of some free block of `quantity` in any row that leaves no orphan: a run
/// of exactly `quantity`, or of `quantity + 2` or more.
fn clean_block(rows: &[api::LayoutRow], free: &[bool], quantity: u32) -> Option<u32> {
    rows.iter().find_map(|row| {
        row_runs(row, |seat| free[seat as usize])
            .into_iter()
            .find(|(a, b)| {
                let length = b - a + 1;
                length == quantity || length >= quantity + 2
            })
            .map(|(a, _)| a)
    })
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
