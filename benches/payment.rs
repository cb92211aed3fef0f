//! A purchase end to end: a funded buyer holds one seat of a 50,000-seat date and pays for it.
//! One criterion group, `hold_and_pay`, with the variants side by side:
//!
//! - `engine_{full,normal}/N`: in-process calls to a whole `Engine` (no HTTP), its real SQLite
//!   event log on disk with `storage.synchronous` full or normal: `DateHandle::hold`, then
//!   `DateHandle::pay`, each answered after its event commits; N concurrent buyers on a
//!   two-worker tokio runtime. Buyers are funded through the ledger before timing. The hold and
//!   the payment are two acknowledged changes, so a lone buyer waits for two log commits.
//! - `sqlite_{full,normal}`: the conventional design: one rusqlite connection to a WAL database,
//!   the hold and the payment in ONE transaction (seat held if available, seat sold if held by the
//!   buyer, balance debited if sufficient, a history row), every step's changed rows checked:
//!   one commit per purchase.
//!
//! Throughput is purchases per second. When a date sells out a fresh one replaces it, untimed.
//! Prints how many events each log commit carried in the engine variants.
//!
//! `cargo bench --bench payment` (about a minute); for a quick look
//! `cargo bench --bench payment -- --warm-up-time 1 --measurement-time 2`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/conventional.rs"]
mod conventional;

use conventional::{SeatsTable, DATE_ROW};
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rusqlite::params;
use tokio::runtime::Runtime;

use boxoffice::actors::{DateHandle, Engine};
use boxoffice::clock::{Clock, SystemClock};
use boxoffice::config::{Settings, Synchronous};
use boxoffice::domain::{ConcertId, SeatList, SeatNo, UserId};

const SEATS: u32 = 50_000;
const PRICE: u64 = 1_000;
const HOLD_TTL_MS: i64 = 300_000;
const BUYERS: [usize; 2] = [1, 64];
const SYNCS: [Synchronous; 2] = [Synchronous::Full, Synchronous::Normal];

fn sync_name(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    }
}

fn shuffled_seats(rng: &mut StdRng) -> Vec<SeatNo> {
    let mut seats: Vec<SeatNo> = (1..=SEATS).map(SeatNo).collect();
    seats.shuffle(rng);
    seats
}

// ---------------------------------------------------------------------------------------------
// Through the engine.

/// A whole engine with one date on sale and a pool of buyers.
struct LiveSale {
    engine: Engine,
    settings: Settings,
    concert: ConcertId,
    date: DateHandle,
    order: Vec<SeatNo>,
    taken: usize,
    buyers: Vec<UserId>,
    rng: StdRng,
}

impl LiveSale {
    async fn start(sync: Synchronous, buyers: usize) -> Self {
        let mut settings = Settings::for_tests();
        settings.storage.synchronous = sync;
        // No hold expires during a run, so the sweep never writes behind the timed purchases.
        settings.holds.ttl_seconds = 3_600;
        let engine = Engine::start(&settings, Arc::new(SystemClock))
            .await
            .expect("the engine starts");
        let concert = engine
            .catalog
            .create_concert("Bench".into(), "Hall".into(), Default::default())
            .await
            .unwrap();
        let date = Self::open_date(&engine, concert).await;
        let mut rng = StdRng::seed_from_u64(1);
        let order = shuffled_seats(&mut rng);
        let sale = Self {
            engine,
            settings,
            concert,
            date,
            order,
            taken: 0,
            buyers: (1..=buyers as u64).map(UserId).collect(),
            rng,
        };
        // Every buyer funded before anything is timed (or warmed up), all at once.
        let funding: Vec<_> = sale
            .buyers
            .iter()
            .map(|&buyer| {
                let ledger = sale.engine.ledger.clone();
                let (max_charge, max_balance) = (
                    sale.settings.balance.max_charge,
                    sale.settings.balance.max_balance,
                );
                tokio::spawn(async move {
                    for _ in 0..max_balance / max_charge {
                        ledger
                            .charge(buyer, max_charge as i128, None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for funded in funding {
            funded.await.unwrap();
        }
        sale
    }

    async fn open_date(engine: &Engine, concert: ConcertId) -> DateHandle {
        let starts_at = SystemClock.now().plus_seconds(30 * 86_400);
        let date = engine
            .catalog
            .create_date(
                concert,
                starts_at,
                boxoffice::domain::catalog::SeatPlan::Uniform {
                    seat_count: SEATS.into(),
                    price: PRICE.into(),
                },
            )
            .await
            .unwrap();
        engine.dates.get(date).expect("a created date has an actor")
    }

    /// Every buyer can pay for `purchases` seats, whoever of them ends up buying them. A buyer
    /// short of that is topped up to nearly `max_balance`, so top-ups are rare (untimed).
    async fn fund(&self, purchases: usize) {
        let needed = purchases as u64 * PRICE;
        let (max_charge, max_balance) = (
            self.settings.balance.max_charge,
            self.settings.balance.max_balance,
        );
        assert!(needed <= max_balance, "a buyer can afford a whole date");
        for buyer in &self.buyers {
            let mut balance = self.engine.ledger.balance(*buyer).await.unwrap();
            if balance >= needed {
                continue;
            }
            while balance + max_charge <= max_balance {
                balance = self
                    .engine
                    .ledger
                    .charge(*buyer, max_charge as i128, None)
                    .await
                    .expect("a charge within limits")
                    .balance;
            }
            assert!(balance >= needed, "the buyer is funded");
        }
    }

    /// `count` purchases (hold, then pay) by the buyers at once; only the purchases are timed.
    async fn timed_purchases(&mut self, count: usize) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            if self.taken == self.order.len() {
                self.date = Self::open_date(&self.engine, self.concert).await;
                self.order = shuffled_seats(&mut self.rng);
                self.taken = 0;
            }
            let chunk = left.min(self.order.len() - self.taken);
            self.fund(chunk).await;
            let seats = Arc::new(self.order[self.taken..self.taken + chunk].to_vec());
            elapsed += purchase_concurrently(&self.date, &self.buyers, seats).await;
            self.taken += chunk;
            left -= chunk;
        }
        elapsed
    }

    fn log_counts(&self) -> (u64, u64) {
        let stats = self.engine.durability.log.stats();
        (
            stats.commits.load(Ordering::Relaxed),
            stats.events.load(Ordering::Relaxed),
        )
    }

    async fn stop(self) {
        self.engine.stop().await;
        if let Some(dir) = self.settings.storage.sqlite_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Each buyer, as its own task, holds and pays for the next seat in `seats` until none is left.
/// Returns the time from releasing the buyers to the last receipt.
async fn purchase_concurrently(
    date: &DateHandle,
    buyers: &[UserId],
    seats: Arc<Vec<SeatNo>>,
) -> Duration {
    let buyers = &buyers[..buyers.len().min(seats.len()).max(1)];
    let next = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Barrier::new(buyers.len() + 1));
    let tasks: Vec<_> = buyers
        .iter()
        .map(|&buyer| {
            let (date, seats) = (date.clone(), seats.clone());
            let (next, release) = (next.clone(), release.clone());
            tokio::spawn(async move {
                release.wait().await;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seat) = seats.get(i) else { break };
                    let held = date
                        .hold(buyer, SeatList::from_slice(&[*seat]), None)
                        .await
                        .expect("a free seat is held");
                    let receipt = date
                        .pay(buyer, held.id, None, None)
                        .await
                        .expect("a funded buyer pays");
                    assert_eq!(receipt.amount, PRICE);
                }
            })
        })
        .collect();
    release.wait().await;
    let started = Instant::now();
    for task in tasks {
        task.await.expect("a buyer panicked");
    }
    started.elapsed()
}

fn bench_engine(group: &mut BenchmarkGroup<WallTime>, runtime: &Runtime, sync: Synchronous) {
    for buyers in BUYERS {
        let mut sale = runtime.block_on(LiveSale::start(sync, buyers));
        let before = sale.log_counts();
        let id = BenchmarkId::new(format!("engine_{}", sync_name(sync)), buyers);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                // Fewer purchases than buyers would measure less concurrency than named: run at
                // least one per buyer and scale the time back to `iters`.
                let count = (iters as usize).max(buyers);
                let took = runtime.block_on(sale.timed_purchases(count));
                took.mul_f64(iters as f64 / count as f64)
            })
        });
        let after = sale.log_counts();
        let (commits, events) = (after.0 - before.0, after.1 - before.1);
        if events > 0 {
            eprintln!(
                "  hold_and_pay/engine_{}/{buyers}: {events} events in {commits} log commits = {:.1} events/commit",
                sync_name(sync),
                events as f64 / commits.max(1) as f64
            );
        }
        runtime.block_on(sale.stop());
    }
}

// ---------------------------------------------------------------------------------------------
// The conventional baseline: one SQLite connection, one transaction per purchase.

const BUYER_ROW: i64 = 1;
const HOLD: &str = "UPDATE seats SET status = 'held', holder = ?1, held_until = ?2
     WHERE date_id = ?3 AND seat_no = ?4 AND status = 'available'";
const SELL: &str = "UPDATE seats SET status = 'sold'
     WHERE date_id = ?1 AND seat_no = ?2 AND holder = ?3 AND status = 'held'";
const DEBIT: &str = "UPDATE balances SET balance = balance - ?1 WHERE user = ?2 AND balance >= ?1";
const RECORD: &str = "INSERT INTO history (user, kind, amount, date_id, seat_no, at)
     VALUES (?1, 'payment', ?2, ?3, ?4, ?5)";

struct Conventional {
    db: SeatsTable,
    order: Vec<SeatNo>,
    taken: usize,
    rng: StdRng,
}

impl Conventional {
    fn open(sync: Synchronous) -> Self {
        let db = SeatsTable::create(
            "payment",
            sync_name(sync),
            SEATS,
            "CREATE TABLE balances (
                 user    INTEGER PRIMARY KEY,
                 balance INTEGER NOT NULL CHECK (balance >= 0)
             );
             CREATE TABLE history (
                 id      INTEGER PRIMARY KEY,
                 user    INTEGER NOT NULL,
                 kind    TEXT    NOT NULL,
                 amount  INTEGER NOT NULL,
                 date_id INTEGER,
                 seat_no INTEGER,
                 at      INTEGER NOT NULL
             );
             CREATE INDEX history_by_user ON history (user, id);",
            |tx| {
                tx.execute(
                    "INSERT INTO balances (user, balance) VALUES (?1, ?2)",
                    params![BUYER_ROW, i64::MAX / 2],
                )
                .unwrap();
            },
        );
        let mut rng = StdRng::seed_from_u64(2);
        let order = shuffled_seats(&mut rng);
        Self {
            db,
            order,
            taken: 0,
            rng,
        }
    }

    /// Hold and pay in one transaction; whether the seat was bought.
    fn purchase(&mut self, seat: SeatNo) -> bool {
        let now = SystemClock.now().as_millis();
        let price = PRICE as i64;
        let tx = self.db.conn.transaction().unwrap();
        let bought = (|| -> rusqlite::Result<bool> {
            let held = tx.prepare_cached(HOLD)?.execute(params![
                BUYER_ROW,
                now + HOLD_TTL_MS,
                DATE_ROW,
                seat.0
            ])?;
            if held != 1 {
                return Ok(false);
            }
            let sold = tx
                .prepare_cached(SELL)?
                .execute(params![DATE_ROW, seat.0, BUYER_ROW])?;
            let debited = tx
                .prepare_cached(DEBIT)?
                .execute(params![price, BUYER_ROW])?;
            if sold != 1 || debited != 1 {
                return Ok(false);
            }
            tx.prepare_cached(RECORD)?
                .execute(params![BUYER_ROW, price, DATE_ROW, seat.0, now])?;
            Ok(true)
        })()
        .unwrap();
        if bought {
            tx.commit().unwrap();
        } else {
            tx.rollback().unwrap();
        }
        bought
    }

    /// Every seat available again, and the WAL folded back, untimed.
    fn reset(&mut self) {
        self.db.reset();
        self.order = shuffled_seats(&mut self.rng);
        self.taken = 0;
    }

    fn timed_purchases(&mut self, count: usize) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            if self.taken == self.order.len() {
                self.reset();
            }
            let chunk = left.min(self.order.len() - self.taken);
            let mut bought = 0;
            let started = Instant::now();
            for i in self.taken..self.taken + chunk {
                bought += usize::from(self.purchase(self.order[i]));
            }
            elapsed += started.elapsed();
            assert_eq!(bought, chunk, "every free seat is bought");
            self.taken += chunk;
            left -= chunk;
        }
        elapsed
    }
}

fn bench_conventional(group: &mut BenchmarkGroup<WallTime>, sync: Synchronous) {
    let mut db = Conventional::open(sync);
    group.bench_function(format!("sqlite_{}", sync_name(sync)), |b| {
        b.iter_custom(|iters| db.timed_purchases(iters as usize))
    });
}

// ---------------------------------------------------------------------------------------------

fn hold_and_pay(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("hold_and_pay");
    group.throughput(Throughput::Elements(1));
    for sync in SYNCS {
        bench_engine(&mut group, &runtime, sync);
    }
    for sync in SYNCS {
        bench_conventional(&mut group, sync);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Command-line flags (`--measurement-time`, `--warm-up-time`, `--sample-size`) override these.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = hold_and_pay
}
fn main() {
    // `cargo test --benches` runs this without `--bench`; the setup alone is too heavy for a
    // test run, so only `cargo bench` (including `cargo bench -- --test`) runs it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
