//! Holds on a 50,000-seat concert date under contention, in two scenarios, each one criterion
//! group with every variant side by side:
//!
//! - `hot_seat`: every buyer wants the same seat. The first hold (placed before timing) wins, so
//!   every timed hold takes the refusal path: that is what a hot seat is.
//! - `random_seats`: every buyer wants a different seat, in random order, and every hold succeeds.
//!   When the date is full a fresh one replaces it, outside the timed region.
//!
//! The variants:
//!
//! - `domain`: `SeatMap::place_hold` + `apply` alone: no actor, no log.
//! - `date_actor_{full,normal}/N`: `DateHandle::hold` on a whole `Engine` (its real SQLite event
//!   log on disk, `storage.synchronous` full or normal) from N concurrent callers on a two-worker
//!   tokio runtime. A hold counts when its reply arrives, which is after its durable commit.
//! - `date_actor_batched_{full,normal}/N` (random seats only): the same, but each of N callers
//!   asks `DateHandle::hold_many` for `BATCH_HOLDS` holds at a time: one message and one log
//!   hand-over per run of holds, each hold still its own event, decided in order and answered
//!   after its commit. What one date actor takes when callers can batch.
//! - `ractor_call_floor/N`: the same N callers each `call` an actor that answers at once (no
//!   seats, no log): the most calls per second one actor takes here, so the ceiling of any hold
//!   path that makes one actor call per hold.
//! - `sqlite_{full,normal}`: the conventional design: one rusqlite connection to a WAL database
//!   with a row per seat; each hold is `BEGIN; UPDATE seats … WHERE … AND status='available';
//!   COMMIT` with the changed rows checked.
//!
//! Throughput is holds per second (refused holds, on the hot seat). Prints how many events each
//! log commit carried in the actor variants.
//!
//! `cargo bench --bench seat_contention` (a few minutes); for a quick look
//! `cargo bench --bench seat_contention -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/conventional.rs"]
mod conventional;

use conventional::{SeatsTable, DATE_ROW};
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rusqlite::params;
use tokio::runtime::Runtime;

use boxoffice::actors::date::HoldRequest;
use boxoffice::actors::{DateHandle, Engine, EngineError};
use boxoffice::clock::{Clock, SystemClock};
use boxoffice::config::{Settings, Synchronous};
use boxoffice::domain::seat_map::{DatePolicy, SeatMap};
use boxoffice::domain::{ConcertId, DateId, DomainError, SeatList, SeatNo, Timestamp, UserId};

const SEATS: u32 = 50_000;
const PRICE: u64 = 1_000;
const HOLD_TTL_MS: i64 = 300_000;
const HOT_SEAT: SeatNo = SeatNo(SEATS / 2);
const CALLERS: [usize; 3] = [1, 64, 1024];
const BATCH_CALLERS: [usize; 2] = [1, 4];
/// Holds per `hold_many` in the batched variant.
const BATCH_HOLDS: usize = 512;
const SYNCS: [Synchronous; 2] = [Synchronous::Full, Synchronous::Normal];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    HotSeat,
    RandomSeats,
}

impl Scenario {
    fn group(self) -> &'static str {
        match self {
            Scenario::HotSeat => "hot_seat",
            Scenario::RandomSeats => "random_seats",
        }
    }
}

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
// The pure domain.

fn domain_map() -> SeatMap {
    SeatMap::new(
        DateId(1),
        Timestamp(i64::MAX),
        boxoffice::domain::venue::Layout::general(SEATS, PRICE),
        DatePolicy {
            ttl_ms: HOLD_TTL_MS,
            max_seats_per_user: 4,
            max_seats_per_user_total: 8,
            rehold_cooldown_ms: 60_000,
            refunds: Default::default(),
            offer_ttl_ms: 600_000,
        },
    )
}

fn bench_domain(group: &mut BenchmarkGroup<WallTime>, scenario: Scenario) {
    let now = Timestamp(1_700_000_000_000);
    match scenario {
        Scenario::HotSeat => {
            let mut map = domain_map();
            let first = map.place_hold(UserId(1), &[HOT_SEAT], now, None).unwrap();
            map.apply(&first);
            assert_eq!(
                map.place_hold(UserId(2), &[HOT_SEAT], now, None),
                Err(DomainError::SeatUnavailable(HOT_SEAT))
            );
            let mut user = 1;
            group.bench_function("domain", |b| {
                b.iter(|| {
                    user += 1;
                    black_box(map.place_hold(UserId(user), black_box(&[HOT_SEAT]), now, None))
                })
            });
        }
        Scenario::RandomSeats => {
            let mut rng = StdRng::seed_from_u64(1);
            let mut map = domain_map();
            let mut order = shuffled_seats(&mut rng);
            let mut taken = 0usize;
            let mut user = 0u64;
            group.bench_function("domain", |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        if taken == order.len() {
                            // The date is full: a fresh one, untimed.
                            map = domain_map();
                            order = shuffled_seats(&mut rng);
                            taken = 0;
                        }
                        let chunk = left.min(order.len() - taken);
                        let started = Instant::now();
                        for seat in &order[taken..taken + chunk] {
                            user += 1;
                            let hold = map
                                .place_hold(UserId(user), std::slice::from_ref(seat), now, None)
                                .expect("a free seat is held");
                            black_box(map.apply(&hold));
                        }
                        elapsed += started.elapsed();
                        taken += chunk;
                        left -= chunk;
                    }
                    elapsed
                })
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Through the date actor of a running engine.

/// Which seat the i-th hold of a run asks for.
#[derive(Clone)]
enum Seats {
    Hot,
    Each(Arc<Vec<SeatNo>>),
}

impl Seats {
    fn at(&self, i: usize) -> SeatNo {
        match self {
            Seats::Hot => HOT_SEAT,
            Seats::Each(seats) => seats[i],
        }
    }
}

/// Places `count` holds from `callers` concurrent tasks, each hold by a user of its own, each
/// caller asking for `batch` holds at a time (one `hold` for 1, one `hold_many` for more).
/// Returns the time from releasing the callers to the last reply, and how many were refused.
async fn hold_concurrently(
    date: &DateHandle,
    callers: usize,
    seats: Seats,
    first_user: u64,
    count: usize,
    batch: usize,
) -> (Duration, u64) {
    let callers = callers.min(count.div_ceil(batch)).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let release = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (date, seats) = (date.clone(), seats.clone());
            let (next, refused, release) = (next.clone(), refused.clone(), release.clone());
            tokio::spawn(async move {
                release.wait().await;
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= count {
                        break;
                    }
                    let request = |i: usize| HoldRequest {
                        user: UserId(first_user + i as u64),
                        seats: SeatList::from_slice(&[seats.at(i)]),
                        idempotency: None,
                    };
                    let tally = |outcome: Result<_, EngineError>| match outcome {
                        Ok(_) => {}
                        Err(EngineError::Domain(DomainError::SeatUnavailable(_))) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("a hold failed: {other}"),
                    };
                    if batch == 1 {
                        let hold = request(start);
                        tally(date.hold(hold.user, hold.seats, None).await);
                    } else {
                        let run = (start..(start + batch).min(count)).map(request).collect();
                        let outcomes = date.hold_many(run).await.expect("the date answers");
                        outcomes.into_iter().for_each(tally);
                    }
                }
            })
        })
        .collect();
    release.wait().await;
    let started = Instant::now();
    for task in tasks {
        task.await.expect("a caller panicked");
    }
    (started.elapsed(), refused.load(Ordering::Relaxed))
}

/// A whole engine with one date on sale.
struct LiveDate {
    engine: Engine,
    settings: Settings,
    concert: ConcertId,
    date: DateHandle,
    /// This date's seats in the order buyers take them, and how many are taken.
    order: Vec<SeatNo>,
    taken: usize,
    next_user: u64,
    rng: StdRng,
}

impl LiveDate {
    async fn start(sync: Synchronous, scenario: Scenario) -> Self {
        let mut settings = Settings::for_tests();
        settings.storage.synchronous = sync;
        // No hold expires during a run, so the sweep never writes behind the timed holds.
        settings.holds.ttl_seconds = 3_600;
        let engine = Engine::start(&settings, Arc::new(SystemClock))
            .await
            .expect("the engine starts");
        let concert = engine
            .catalog
            .create_concert("Bench".into(), "Hall".into(), Default::default())
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let date = Self::open_date(&engine, concert).await;
        let order = shuffled_seats(&mut rng);
        let mut live = Self {
            engine,
            settings,
            concert,
            date,
            order,
            taken: 0,
            next_user: 1,
            rng,
        };
        if scenario == Scenario::HotSeat {
            live.date
                .hold(
                    UserId(live.next_user),
                    SeatList::from_slice(&[HOT_SEAT]),
                    None,
                )
                .await
                .expect("the first hold on the hot seat wins");
            live.next_user += 1;
        }
        live
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

    /// `count` holds from `callers` concurrent callers; only the holds are timed.
    async fn timed_holds(
        &mut self,
        scenario: Scenario,
        callers: usize,
        count: usize,
        batched: bool,
    ) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            let (chunk, seats) = match scenario {
                Scenario::HotSeat => (left, Seats::Hot),
                Scenario::RandomSeats => {
                    if self.taken == self.order.len() {
                        self.date = Self::open_date(&self.engine, self.concert).await;
                        self.order = shuffled_seats(&mut self.rng);
                        self.taken = 0;
                    }
                    let chunk = left.min(self.order.len() - self.taken);
                    let seats = self.order[self.taken..self.taken + chunk].to_vec();
                    self.taken += chunk;
                    (chunk, Seats::Each(Arc::new(seats)))
                }
            };
            let batch = if batched { BATCH_HOLDS } else { 1 };
            let (took, refused) =
                hold_concurrently(&self.date, callers, seats, self.next_user, chunk, batch).await;
            let expected_refused = match scenario {
                Scenario::HotSeat => chunk as u64,
                Scenario::RandomSeats => 0,
            };
            assert_eq!(refused, expected_refused, "{scenario:?}: refused holds");
            self.next_user += chunk as u64;
            elapsed += took;
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

fn bench_date_actor(
    group: &mut BenchmarkGroup<WallTime>,
    runtime: &Runtime,
    scenario: Scenario,
    sync: Synchronous,
    batched: bool,
) {
    let mut live = runtime.block_on(LiveDate::start(sync, scenario));
    let (variant, callers_list) = match batched {
        false => (format!("date_actor_{}", sync_name(sync)), &CALLERS[..]),
        true => (
            format!("date_actor_batched_{}", sync_name(sync)),
            &BATCH_CALLERS[..],
        ),
    };
    for &callers in callers_list {
        let before = live.log_counts();
        let id = BenchmarkId::new(&variant, callers);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                // Fewer holds than callers would measure less concurrency than named: run at
                // least one per caller and scale the time back to `iters`.
                let count = (iters as usize).max(callers);
                let took = runtime.block_on(live.timed_holds(scenario, callers, count, batched));
                took.mul_f64(iters as f64 / count as f64)
            })
        });
        let after = live.log_counts();
        let (commits, events) = (after.0 - before.0, after.1 - before.1);
        if events > 0 {
            eprintln!(
                "  {}/{variant}/{callers}: {events} events in {commits} log commits = {:.1} events/commit",
                scenario.group(),
                events as f64 / commits.max(1) as f64
            );
        }
    }
    runtime.block_on(live.stop());
}

/// An actor that answers every call at once.
struct Answerer;

struct Ask(RpcReplyPort<u64>);

impl Actor for Answerer {
    type Msg = Ask;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Ask>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Ask>,
        Ask(reply): Ask,
        answered: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *answered += 1;
        let _ = reply.send(*answered);
        Ok(())
    }
}

/// `count` calls from `callers` concurrent tasks, each with a timeout as the engine's own.
async fn call_concurrently(actor: &ActorRef<Ask>, callers: usize, count: usize) -> Duration {
    let callers = callers.min(count).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (actor, next, release) = (actor.clone(), next.clone(), release.clone());
            tokio::spawn(async move {
                release.wait().await;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let answer = actor
                        .call(Ask, Some(Duration::from_secs(5)))
                        .await
                        .expect("the actor is running");
                    assert!(matches!(answer, CallResult::Success(_)));
                }
            })
        })
        .collect();
    release.wait().await;
    let started = Instant::now();
    for task in tasks {
        task.await.expect("a caller panicked");
    }
    started.elapsed()
}

fn bench_call_floor(group: &mut BenchmarkGroup<WallTime>, runtime: &Runtime) {
    let (actor, handle) = runtime
        .block_on(Actor::spawn(None, Answerer, ()))
        .expect("the actor starts");
    for callers in CALLERS {
        let id = BenchmarkId::new("ractor_call_floor", callers);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let count = (iters as usize).max(callers);
                let took = runtime.block_on(call_concurrently(&actor, callers, count));
                took.mul_f64(iters as f64 / count as f64)
            })
        });
    }
    actor.stop(None);
    let _ = runtime.block_on(handle);
}

// ---------------------------------------------------------------------------------------------
// The conventional baseline: one SQLite connection, a row per seat.

const CONVENTIONAL_HOLD: &str = "UPDATE seats SET status = 'held', holder = ?1, held_until = ?2
     WHERE date_id = ?3 AND seat_no = ?4 AND status = 'available'";
fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

struct Conventional {
    db: SeatsTable,
    order: Vec<SeatNo>,
    taken: usize,
    next_user: i64,
    rng: StdRng,
}

impl Conventional {
    fn open(sync: Synchronous) -> Self {
        let db = SeatsTable::create("seat-contention", sync_name(sync), SEATS, "", |_| {});
        let mut rng = StdRng::seed_from_u64(3);
        let order = shuffled_seats(&mut rng);
        Self {
            db,
            order,
            taken: 0,
            next_user: 1,
            rng,
        }
    }

    /// One hold in its own transaction; whether it took the seat.
    fn hold(&mut self, seat: SeatNo) -> bool {
        let user = self.next_user;
        self.next_user += 1;
        let held_until = now_ms() + HOLD_TTL_MS;
        let tx = self.db.conn.transaction().unwrap();
        let changed = tx
            .prepare_cached(CONVENTIONAL_HOLD)
            .unwrap()
            .execute(params![user, held_until, DATE_ROW, seat.0])
            .unwrap();
        tx.commit().unwrap();
        changed == 1
    }

    /// Every seat available again, and the WAL folded back, untimed.
    fn reset(&mut self) {
        self.db.reset();
        self.order = shuffled_seats(&mut self.rng);
        self.taken = 0;
    }

    fn timed_holds(&mut self, scenario: Scenario, count: usize) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            match scenario {
                Scenario::HotSeat => {
                    let started = Instant::now();
                    let mut refused = 0;
                    for _ in 0..left {
                        refused += usize::from(!self.hold(HOT_SEAT));
                    }
                    elapsed += started.elapsed();
                    assert_eq!(refused, left, "the hot seat is taken");
                    left = 0;
                }
                Scenario::RandomSeats => {
                    if self.taken == self.order.len() {
                        self.reset();
                    }
                    let chunk = left.min(self.order.len() - self.taken);
                    let mut held = 0;
                    let started = Instant::now();
                    for i in self.taken..self.taken + chunk {
                        held += usize::from(self.hold(self.order[i]));
                    }
                    elapsed += started.elapsed();
                    assert_eq!(held, chunk, "every free seat is held");
                    self.taken += chunk;
                    left -= chunk;
                }
            }
        }
        elapsed
    }
}

fn bench_conventional(group: &mut BenchmarkGroup<WallTime>, scenario: Scenario, sync: Synchronous) {
    let mut db = Conventional::open(sync);
    if scenario == Scenario::HotSeat {
        assert!(db.hold(HOT_SEAT), "the first hold on the hot seat wins");
        assert!(!db.hold(HOT_SEAT), "the second is refused");
    }
    group.bench_function(format!("sqlite_{}", sync_name(sync)), |b| {
        b.iter_custom(|iters| db.timed_holds(scenario, iters as usize))
    });
}

// ---------------------------------------------------------------------------------------------

fn contention(c: &mut Criterion, scenario: Scenario) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group(scenario.group());
    group.throughput(Throughput::Elements(1));
    bench_domain(&mut group, scenario);
    for sync in SYNCS {
        bench_date_actor(&mut group, &runtime, scenario, sync, false);
    }
    if scenario == Scenario::RandomSeats {
        for sync in SYNCS {
            bench_date_actor(&mut group, &runtime, scenario, sync, true);
        }
    }
    if scenario == Scenario::RandomSeats {
        bench_call_floor(&mut group, &runtime);
    }
    for sync in SYNCS {
        bench_conventional(&mut group, scenario, sync);
    }
    group.finish();
}

fn hot_seat(c: &mut Criterion) {
    contention(c, Scenario::HotSeat);
}

fn random_seats(c: &mut Criterion) {
    contention(c, Scenario::RandomSeats);
}

criterion_group! {
    name = benches;
    // Command-line flags (`--measurement-time`, `--warm-up-time`, `--sample-size`) override these.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = hot_seat, random_seats
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
