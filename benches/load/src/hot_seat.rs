//! `hot-seat`: every admitted buyer races for the same few seats, round after round. Each round
//! is a new date of `--seats` seats (e.g. 10); all buyers try to hold one seat each, a winner
//! tops up, pays and queues again for the next round, a loser (409) tries another seat until
//! the round's seats are all taken. This is the contention test: under it no seat may be sold
//! twice and no money may appear or vanish.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rand::Rng;
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Fail};
use crate::audit::{Auditor, BuyerRecord, PaidRecord};
use crate::client::Client;
use crate::setup::admin_failure;
use crate::{Context, ModeRun};

/// Hold requests one buyer sends at most in one round, beyond one per seat.
const EXTRA_ATTEMPTS: u32 = 4;

struct Racer {
    index: usize,
    session: String,
    token: Option<String>,
    record: BuyerRecord,
}

struct Round {
    client: Client,
    run: String,
    round: u32,
    date_id: String,
    seat_count: u32,
    /// `true`: seen taken this round. Index 0 is unused.
    taken: Vec<AtomicBool>,
    sold: AtomicU32,
    started: Instant,
    sold_out_after: Mutex<Option<f64>>,
    deadline: Instant,
}

#[derive(Default)]
struct Tally {
    holds_won: AtomicU64,
    hold_conflicts: AtomicU64,
    rounds: AtomicU64,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let price = ctx.cli.price;
    let setup_started = Instant::now();
    let concert = api::create_concert(client, admin, &format!("hot seats {}", ctx.names.run()))
        .await
        .map_err(admin_failure)?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let admitted = ctx.sign_in_and_admit_buyers().await?;
    let mut racers: Vec<Racer> = admitted
        .into_iter()
        .map(|a| Racer {
            index: a.index,
            session: a.session,
            token: Some(a.token),
            record: BuyerRecord::default(),
        })
        .collect();
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let tally = Arc::new(Tally::default());
    let dates: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let round_seconds: Arc<Mutex<Vec<f64>>> = Arc::default();
    let rounds_max = ctx.cli.rounds;
    let racer_count = racers.len();
    let work = {
        let (client, tally, dates, round_seconds) = (
            client.clone(),
            tally.clone(),
            dates.clone(),
            round_seconds.clone(),
        );
        let (admin, concert, run) = (admin.to_owned(), concert, ctx.names.run().to_owned());
        let deadline = started + ctx.duration();
        tokio::spawn(async move {
            for round in 0..rounds_max {
                if client.halted() {
                    break;
                }
                let date_id =
                    match api::create_date(&client, &admin, &concert, seat_count, price).await {
                        Ok(date_id) => date_id,
                        Err(_) => break,
                    };
                dates.lock().push((date_id.clone(), seat_count));
                let state = Arc::new(Round {
                    client: client.clone(),
                    run: run.clone(),
                    round,
                    date_id,
                    seat_count,
                    taken: (0..=seat_count).map(|_| AtomicBool::new(false)).collect(),
                    sold: AtomicU32::new(0),
                    started: Instant::now(),
                    sold_out_after: Mutex::new(None),
                    deadline,
                });
                let mut tasks = JoinSet::new();
                for racer in racers.drain(..) {
                    tasks.spawn(race(state.clone(), tally.clone(), racer));
                }
                while let Some(joined) = tasks.join_next().await {
                    if let Ok(racer) = joined {
                        racers.push(racer);
                    }
                }
                let seconds = state
                    .sold_out_after
                    .lock()
                    .unwrap_or_else(|| state.started.elapsed().as_secs_f64());
                round_seconds.lock().push(seconds);
                tally.rounds.fetch_add(1, Ordering::Relaxed);
            }
            racers
        })
    };
    let status = {
        let (client, tally) = (client.clone(), tally.clone());
        move || {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let requests = client.stats().requests.load(Ordering::Relaxed);
            (
                tally.rounds.load(Ordering::Relaxed),
                format!(
                    "rounds · {:.0} req/s · {} won · {} conflicts",
                    requests as f64 / elapsed,
                    tally.holds_won.load(Ordering::Relaxed),
                    tally.hold_conflicts.load(Ordering::Relaxed),
                ),
            )
        }
    };
    let racers = ctx
        .display
        .run("hot-seat", u64::from(rounds_max), status, ctx.bounded(work))
        .await
        .unwrap_or_default();
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();

    let round_seconds = round_seconds.lock().clone();
    let rounds = round_seconds.len();
    let mean = round_seconds.iter().sum::<f64>() / rounds.max(1) as f64;
    let max = round_seconds.iter().copied().fold(0.0, f64::max);
    let outcome = json!({
        "buyers": racer_count,
        "seats_per_round": seat_count,
        "rounds": rounds,
        "round_seconds_mean": mean,
        "round_seconds_max": max,
        "holds_won": tally.holds_won.load(Ordering::Relaxed),
        "hold_conflicts": tally.hold_conflicts.load(Ordering::Relaxed),
    });
    let records = racers
        .into_iter()
        .map(|r| BuyerRecord {
            session: Some(r.session),
            queue_token: r.token,
            ..r.record
        })
        .collect();
    let dates = dates.lock().clone();
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
        check_holds: false,
        rss: None,
        checks: Vec::new(),
        endpoint_seconds: Vec::new(),
        siege: None,
    })
}

/// One buyer's part in one round; gives the buyer back for the next round.
async fn race(round: Arc<Round>, tally: Arc<Tally>, mut racer: Racer) -> Racer {
    let client = &round.client;
    let attempts_max = round.seat_count + EXTRA_ATTEMPTS;
    for attempt in 0..attempts_max {
        if client.halted() {
            break;
        }
        let token = match &racer.token {
            Some(token) => token.clone(),
            None => match readmit(&round, &racer.session).await {
                Some(token) => {
                    racer.token = Some(token.clone());
                    token
                }
                None => break,
            },
        };
        let Some(seat) = pick(&round) else { break };
        racer.record.touched = true;
        let key = format!(
            "lg-{}-{}-r{}-hold-{attempt}",
            round.run, racer.index, round.round
        );
        match api::hold(
            client,
            &racer.session,
            &token,
            &round.date_id,
            &[seat],
            &key,
        )
        .await
        {
            Ok(reservation) => {
                round.taken[seat as usize].store(true, Ordering::Relaxed);
                tally.holds_won.fetch_add(1, Ordering::Relaxed);
                if checkout(&round, &mut racer, &token, &reservation).await {
                    // The payment ended the token: queue again for the next round.
                    racer.token = readmit(&round, &racer.session).await;
                }
                break;
            }
            Err(fail) if fail.is(409, "seat_unavailable") => {
                tally.hold_conflicts.fetch_add(1, Ordering::Relaxed);
                round.taken[seat as usize].store(true, Ordering::Relaxed);
            }
            Err(Fail::Refused {
                status: 401 | 403, ..
            }) => racer.token = None,
            Err(_) => break,
        }
    }
    racer
}

/// Tops up and pays for a won seat; `true` when paid.
async fn checkout(
    round: &Round,
    racer: &mut Racer,
    token: &str,
    reservation: &api::Reservation,
) -> bool {
    let client = &round.client;
    let prefix = format!("lg-{}-{}-r{}", round.run, racer.index, round.round);
    let amount = reservation.price;
    if amount > 0 {
        match api::charge(client, &racer.session, amount, &format!("{prefix}-charge")).await {
            Ok(_) => racer.record.topups += amount,
            Err(fail) => {
                if matches!(fail, Fail::NoResponse(_)) {
                    racer.record.topups_uncertain += amount;
                }
                let _ = api::cancel(client, &racer.session, &reservation.reservation_id).await;
                return false;
            }
        }
    }
    let key = format!("{prefix}-pay");
    match api::pay(
        client,
        &racer.session,
        token,
        &reservation.reservation_id,
        &key,
    )
    .await
    {
        Ok(payment) => {
            let seats = payment.seat_nos.len() as u32;
            racer.record.paid.push(PaidRecord {
                reservation_id: payment.reservation_id,
                date_id: payment.date_id,
                seat_nos: payment.seat_nos,
                amount: payment.amount,
            });
            let sold = round.sold.fetch_add(seats, Ordering::AcqRel) + seats;
            if sold >= round.seat_count {
                *round.sold_out_after.lock() = Some(round.started.elapsed().as_secs_f64());
            }
            true
        }
        Err(Fail::NoResponse(_)) => {
            racer
                .record
                .payments_uncertain
                .push(reservation.reservation_id.clone());
            false
        }
        Err(_) => {
            let _ = api::cancel(client, &racer.session, &reservation.reservation_id).await;
            false
        }
    }
}

async fn readmit(round: &Round, session: &str) -> Option<String> {
    let max_wait = round.deadline.saturating_duration_since(Instant::now());
    let client = &round.client;
    match api::admit(client, session, max_wait, || client.halted()).await {
        api::Admission::Active(token) => Some(token),
        api::Admission::GaveUp(token) | api::Admission::Failed(token, _) => {
            if let Some(token) = token {
                let _ = api::leave_queue(client, session, &token).await;
            }
            None
        }
    }
}

/// A random seat of the round not yet seen taken.
fn pick(round: &Round) -> Option<u32> {
    let free: Vec<u32> = (1..=round.seat_count)
        .filter(|&s| !round.taken[s as usize].load(Ordering::Relaxed))
        .collect();
    if free.is_empty() {
        return None;
    }
    Some(free[rand::thread_rng().gen_range(0..free.len())])
}
