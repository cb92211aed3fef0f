//! Calling off a big date: a 100,000-seat date with 50,000 paid reservations (one seat each,
//! 1,000 buyers) is cancelled through a whole `Engine` (real SQLite log on disk, synchronous
//! full) while four probes keep holding seats of another date. Prints, per round:
//!
//! - the size of the one log event the cancellation is;
//! - how long the cancelled date's mailbox was busy with it, and how long until it was durable;
//! - the other date's hold latency (p50, p99, max) before and during the cancellation.
//!
//! `cargo bench --bench cancellation` (about a minute: most of it is selling the seats).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice::actors::date::HoldRequest;
use boxoffice::actors::{DateHandle, Engine};
use boxoffice::clock::{Clock, SystemClock};
use boxoffice::config::Settings;
use boxoffice::domain::catalog::SeatPlan;
use boxoffice::domain::{ConcertId, SeatNo, UserId};

const SEATS: u32 = 100_000;
const PAID: u32 = 50_000;
const BUYERS: u64 = 1_000;
const PRICE: u64 = 1_000;
const ROUNDS: usize = 3;
const PROBES: usize = 4;
/// Probe holds before the cancellation starts, for the baseline.
const BASELINE: Duration = Duration::from_millis(500);

async fn open_date(engine: &Engine, concert: ConcertId) -> DateHandle {
    let starts_at = SystemClock.now().plus_seconds(30 * 86_400);
    let plan = SeatPlan::Uniform {
        seat_count: SEATS.into(),
        price: PRICE.into(),
    };
    let date = engine
        .catalog
        .create_date(concert, starts_at, plan)
        .await
        .unwrap();
    engine.dates.get(date).unwrap()
}

/// Sells `PAID` seats of `date`, one per reservation, round-robin over the buyers.
async fn sell(date: &DateHandle) {
    for batch in (1..=PAID).collect::<Vec<_>>().chunks(BUYERS as usize) {
        let holds = batch
            .iter()
            .map(|seat| HoldRequest {
                user: UserId(u64::from(*seat) % BUYERS + 1),
                seats: [SeatNo(*seat)].into_iter().collect(),
                idempotency: None,
            })
            .collect();
        let placed = date.hold_many(holds).await.unwrap();
        let payments: Vec<_> = placed
            .into_iter()
            .map(|held| {
                let (date, held) = (date.clone(), held.unwrap());
                tokio::spawn(async move { date.pay(held.user, held.id, None, None).await })
            })
            .collect();
        for paid in payments {
            paid.await.unwrap().unwrap();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn describe(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "{name}: {} holds, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut settings = Settings::for_tests();
        settings.holds.ttl_seconds = 3_600;
        let engine = Engine::start(&settings, Arc::new(SystemClock))
            .await
            .unwrap();
        let concert = engine
            .catalog
            .create_concert("Bench".into(), "Hall".into(), Default::default())
            .await
            .unwrap();
        for buyer in 1..=BUYERS {
            let funds = PAID as u64 / BUYERS * PRICE * ROUNDS as u64;
            engine
                .ledger
                .charge(UserId(buyer), funds.into(), None)
                .await
                .unwrap();
        }
        let other = open_date(&engine, concert).await;
        let mut next_prober = 0u32;
        for round in 1..=ROUNDS {
            let doomed = open_date(&engine, concert).await;
            let selling = Instant::now();
            sell(&doomed).await;
            eprintln!(
                "round {round}: sold {PAID} seats in {:?}",
                selling.elapsed()
            );

            let cancelling = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
            let probes: Vec<_> = (0..PROBES)
                .map(|_| {
                    let (other, cancelling, stop, samples) = (
                        other.clone(),
                        cancelling.clone(),
                        stop.clone(),
                        samples.clone(),
                    );
                    let first = next_prober;
                    next_prober += 10_000;
                    tokio::spawn(async move {
                        for n in first..first + 10_000 {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let during = cancelling.load(Ordering::Relaxed);
                            let seat = SeatNo(n % SEATS + 1);
                            let started = Instant::now();
                            // A new user each time: no hold limit or cooldown is met.
                            let user = UserId(10_000_000 + u64::from(n));
                            let held = other
                                .hold(
                                    user,
                                    [seat].into_iter().collect::<boxoffice::domain::SeatList>(),
                                    None,
                                )
                                .await;
                            let took = started.elapsed();
                            if let Ok(held) = held {
                                let _ = other.cancel(user, held.id).await;
                            }
                            let mut samples = samples.lock().unwrap();
                            if during {
                                samples.1.push(took);
                            } else {
                                samples.0.push(took);
                            }
                        }
                    })
                })
                .collect();
            tokio::time::sleep(BASELINE).await;
            cancelling.store(true, Ordering::Relaxed);
            let started = Instant::now();
            let report = doomed.cancel_date().await.unwrap();
            let durable = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            for probe in probes {
                probe.await.unwrap();
            }
            let (before, during) = std::mem::take(&mut *samples.lock().unwrap());
            println!(
                "round {round}: cancelled {} paid reservations ({} won); one event of {} bytes; \
                 the date's mailbox busy {:?}, durable after {:?}",
                report.refunded_reservations,
                report.refunded_amount,
                report.event_bytes,
                report.busy,
                durable
            );
            println!("  other date, {}", describe("before", before));
            println!("  other date, {}", describe("during", during));
        }
        engine.stop().await;
    });
}
