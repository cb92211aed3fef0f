//! The waiting room at scale: an `AdmissionQueue` with 1,000,000 tokens waiting, metered at
//! 1,000 admissions per second. One criterion group, `admission_1m_waiting`:
//!
//! - `poll_random_waiting/after_restart`: a random waiting buyer polls its exact position and
//!   ETA right after a restart, when no early end of an admission has been measured yet.
//! - `poll_random_waiting/while_admitting_1000_per_s`, `issue_one_more/while_admitting_1000_per_s`:
//!   the same poll, and a new buyer taking a place at the back of the line, during a sale: the
//!   line has just been admitting at the full rate in 20 ms ticks for ten seconds, each admission
//!   ended at once (as a payment would): the window of early ends the ETA reads.
//! - `tick_admits_20` / `tick_admits_1000`: the admission tick after 20 ms (the actor's period)
//!   and after one second (a full burst) of metering credit; throughput is admissions.
//!
//! Before timing, the line is checked: its order is the issue order and polled positions equal
//! the FIFO index. Waiting TTLs are set long, since the million pollers are not simulated;
//! tokens issued or admitted during timing are ended afterwards, untimed, so the line stays at
//! 1,000,000, and the queue is compacted (snapshot + restore, as a restart does) now and then.
//! Also prints, once, the RSS growth from building the line and a 1,000,000-seat `SeatMap`.
//!
//! `cargo bench --bench admission` (about a minute); for a quick look
//! `cargo bench --bench admission -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use boxoffice::domain::admission::{AdmissionQueue, Lookup, QueuePolicy, QueueTokenId, Standing};
use boxoffice::domain::seat_map::{DatePolicy, SeatMap};
use boxoffice::domain::{DateId, SeatNo, Timestamp, UserId};

const WAITING: usize = 1_000_000;
const ADMIT_PER_SECOND: u32 = 1_000;
/// Seats measured for memory: this many dates of the largest size (100,000 seats).
const SEAT_MAP_DATES: u32 = 10;
const SEAT_MAP_SEATS: u32 = SEAT_MAP_DATES * 100_000;
/// Tokens ended since the last compaction leave traces (the retired list, stale poll deadlines)
/// that only time or a restart clears; past this many, the bench restarts the queue, untimed.
const COMPACT_AFTER_ENDED: usize = 2_000_000;
const T0: Timestamp = Timestamp(1_700_000_000_000);
/// The ETA reads early ends of admissions in this last window (`RATE_WINDOW_MS` in the queue).
const RATE_WINDOW_MS: i64 = 10_000;
/// The queue actor's admission period (`ADMISSION_TICK`).
const TICK_MS: i64 = 20;

fn policy() -> QueuePolicy {
    QueuePolicy {
        max_active: 100_000,
        admit_per_second: ADMIT_PER_SECOND,
        active_ttl_ms: 600_000,
        // Nobody is dropped for not polling: the million pollers are not simulated.
        waiting_ttl_ms: 10 * 365 * 86_400_000,
        ended_tokens_max: 100_000,
    }
}

/// The token's low 64 bits name its user, so a token alone is enough to poll or leave.
fn user_of(token: QueueTokenId) -> UserId {
    UserId(token.secret() as u64)
}

fn position(queue: &AdmissionQueue, token: QueueTokenId, now: Timestamp) -> u64 {
    match queue.poll(token, user_of(token), now) {
        Ok(Lookup::Live(status)) => match status.standing {
            Standing::Waiting { position, .. } => position,
            other => panic!("{token} is not waiting but {other:?}"),
        },
        other => panic!("{token} is not live: {other:?}"),
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

struct Line {
    queue: AdmissionQueue,
    now: Timestamp,
    next_user: u64,
    rng: StdRng,
    ended: usize,
}

impl Line {
    fn fresh_token(&mut self) -> QueueTokenId {
        let user = self.next_user;
        self.next_user += 1;
        QueueTokenId::general(((self.rng.gen::<u64>() as u128) << 64) | user as u128)
    }

    fn issue(&mut self, token: QueueTokenId) -> Standing {
        self.queue.issue(user_of(token), token, self.now).0.standing
    }

    fn end(&mut self, token: QueueTokenId) {
        self.queue
            .leave(token, user_of(token), self.now)
            .expect("a live token leaves");
        self.ended += 1;
    }

    /// Back to `WAITING` tokens in line.
    fn top_up(&mut self) {
        while self.queue.waiting_len() < WAITING {
            let token = self.fresh_token();
            self.issue(token);
        }
    }

    /// Spends the metering credit now: admits what it allows and ends those admissions.
    fn settle(&mut self) {
        for token in self.queue.tick(self.now).admitted {
            self.end(token);
        }
        self.top_up();
    }

    /// The state a restart would have: the same line, no garbage, no admission history.
    fn restart(&mut self) {
        self.queue = AdmissionQueue::restore(policy(), None, &self.queue.to_snapshot(), self.now);
        self.ended = 0;
    }

    /// Admits at the full rate for one ETA window, in the actor's 20 ms ticks, ending each
    /// admission at once: the steady state of a sale, with a full window of measured admissions.
    fn admit_for_a_window(&mut self) {
        for _ in 0..RATE_WINDOW_MS / TICK_MS {
            self.now = self.now.plus_millis(TICK_MS);
            self.settle();
        }
    }

    fn compact_if_needed(&mut self) {
        if self.ended >= COMPACT_AFTER_ENDED {
            self.restart();
            self.settle();
            self.admit_for_a_window();
        }
    }

    /// The line's order is the order tokens were issued in, and positions are exact.
    fn check_positions(&self, expected_order: Option<&[QueueTokenId]>, rng: &mut StdRng) {
        let waiting: Vec<QueueTokenId> = self.queue.waiting_in_order().collect();
        assert_eq!(waiting.len(), WAITING);
        if let Some(expected) = expected_order {
            assert!(waiting == expected, "the line keeps issue order");
        }
        let mut known = vec![0, 1, WAITING / 2, WAITING - 1];
        known.extend((0..1_000).map(|_| rng.gen_range(0..WAITING)));
        for i in known {
            assert_eq!(
                position(&self.queue, waiting[i], self.now),
                i as u64 + 1,
                "position of the token at FIFO index {i}"
            );
        }
    }
}

/// Builds the line of a million, printing what it costs in memory.
fn build_line(rng: &mut StdRng) -> Line {
    let mut line = Line {
        queue: AdmissionQueue::new(policy(), T0),
        now: T0,
        next_user: 1,
        rng: StdRng::seed_from_u64(7),
        ended: 0,
    };
    // The first second's burst is admitted at once; everyone after it waits.
    let tokens: Vec<QueueTokenId> = (0..WAITING + ADMIT_PER_SECOND as usize)
        .map(|_| line.fresh_token())
        .collect();
    let before = rss_bytes();
    let mut admitted = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match line.issue(*token) {
            Standing::Active => admitted.push(*token),
            Standing::Waiting { position, .. } => {
                assert_eq!(
                    position as usize,
                    i + 1 - admitted.len(),
                    "issue reports its place"
                );
            }
            Standing::PreQueue { .. } => unreachable!("the bench's line has no opening"),
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(admitted.len(), ADMIT_PER_SECOND as usize);
    assert_eq!(line.queue.waiting_len(), WAITING);
    eprintln!(
        "RSS growth building {} tokens ({WAITING} waiting): {:.1} MiB = {} bytes per token",
        tokens.len(),
        grown as f64 / (1 << 20) as f64,
        grown / tokens.len() as u64
    );
    line.check_positions(Some(&tokens[admitted.len()..]), rng);
    for token in admitted {
        line.end(token);
    }
    line
}

/// What a million seats (ten dates of the largest size) cost in memory: as created, cloned
/// (fresh pages written by a copy, whatever the allocator did for the zeroed original), and with
/// every seat held, one buyer each.
fn seat_map_memory() -> Vec<SeatMap> {
    let mb = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let per_seat = |bytes: u64| bytes as f64 / SEAT_MAP_SEATS as f64;
    let before = rss_bytes();
    let seats_per_date = SEAT_MAP_SEATS / SEAT_MAP_DATES;
    let fresh: Vec<SeatMap> = (1..=SEAT_MAP_DATES)
        .map(|date| {
            SeatMap::new(
                DateId(date),
                Timestamp(i64::MAX),
                boxoffice::domain::venue::Layout::general(seats_per_date, 1_000),
                DatePolicy {
                    ttl_ms: 300_000,
                    max_seats_per_user: 4,
                    max_seats_per_user_total: 8,
                    rehold_cooldown_ms: 60_000,
                    refunds: Default::default(),
                    offer_ttl_ms: 600_000,
                },
            )
        })
        .collect();
    let fresh_grown = rss_bytes().saturating_sub(before);
    let before = rss_bytes();
    let mut held = fresh.clone();
    let written_grown = rss_bytes().saturating_sub(before);
    let before = rss_bytes();
    for (date, map) in held.iter_mut().enumerate() {
        for seat in 1..=seats_per_date {
            let buyer = UserId(u64::from(seat) + date as u64 * u64::from(seats_per_date));
            let hold = map
                .place_hold(buyer, &[SeatNo(seat)], T0, None)
                .expect("a free seat is held");
            map.apply(&hold);
        }
    }
    let held_grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "RSS growth for {SEAT_MAP_DATES} SeatMaps of {seats_per_date} seats: new {:.1} MiB ({:.1} bytes/seat); \
         a clone (as a snapshot makes) {:.1} MiB ({:.1} bytes/seat); then every seat of the clone \
         held by its own buyer +{:.1} MiB (+{:.1} bytes/seat)",
        mb(fresh_grown),
        per_seat(fresh_grown),
        mb(written_grown),
        per_seat(written_grown),
        mb(held_grown),
        per_seat(held_grown),
    );
    fresh.into_iter().chain(held).collect()
}

fn bench_poll(group: &mut BenchmarkGroup<WallTime>, line: &Line, name: &str, rng: &mut StdRng) {
    line.check_positions(None, rng);
    let waiting: Vec<QueueTokenId> = line.queue.waiting_in_order().collect();
    const PICKS: usize = 1 << 16;
    let picks: Vec<QueueTokenId> = (0..PICKS)
        .map(|_| waiting[rng.gen_range(0..waiting.len())])
        .collect();
    let (queue, now) = (&line.queue, line.now);
    let mut k = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            let token = picks[k % PICKS];
            k += 1;
            black_box(queue.poll(token, user_of(token), now))
        })
    });
}

fn admission(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    // Measured first, while the allocator has no freed memory to hand back out.
    let seat_maps = seat_map_memory();
    let mut line = build_line(&mut rng);

    let mut group = c.benchmark_group("admission_1m_waiting");
    group.throughput(Throughput::Elements(1));

    // Right after a restart: the ETA has no measured early ends to read.
    line.restart();
    bench_poll(
        &mut group,
        &line,
        "poll_random_waiting/after_restart",
        &mut rng,
    );

    // From here on the line is admitting at the full rate, as during a sale.
    line.settle();
    line.admit_for_a_window();
    let steady = format!("while_admitting_{ADMIT_PER_SECOND}_per_s");
    bench_poll(
        &mut group,
        &line,
        &format!("poll_random_waiting/{steady}"),
        &mut rng,
    );

    let probe = line.fresh_token();
    assert!(
        matches!(line.issue(probe), Standing::Waiting { position, .. } if position as usize == WAITING + 1),
        "a new token goes to the back of the line"
    );
    line.end(probe);
    group.bench_function(format!("issue_one_more/{steady}"), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let chunk = left.min(100_000);
                let fresh: Vec<QueueTokenId> = (0..chunk).map(|_| line.fresh_token()).collect();
                let (queue, now) = (&mut line.queue, line.now);
                let started = Instant::now();
                for token in &fresh {
                    black_box(queue.issue(user_of(*token), *token, now));
                }
                elapsed += started.elapsed();
                for token in fresh {
                    line.end(token);
                }
                line.compact_if_needed();
                left -= chunk;
            }
            elapsed
        })
    });

    for (step_ms, batch) in [(TICK_MS, 20usize), (1_000, 1_000)] {
        assert_eq!(batch as i64, step_ms * ADMIT_PER_SECOND as i64 / 1000);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("tick_admits_{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let head: Vec<QueueTokenId> =
                        line.queue.waiting_in_order().take(batch).collect();
                    line.now = line.now.plus_millis(step_ms);
                    let started = Instant::now();
                    let outcome = line.queue.tick(line.now);
                    elapsed += started.elapsed();
                    assert_eq!(
                        outcome.admitted, head,
                        "admission takes the head of the line"
                    );
                    for token in outcome.admitted {
                        line.end(token);
                    }
                    line.top_up();
                    line.compact_if_needed();
                }
                elapsed
            })
        });
    }
    group.finish();
    drop(black_box(seat_maps));
}

criterion_group! {
    name = benches;
    // Command-line flags (`--measurement-time`, `--warm-up-time`, `--sample-size`) override these.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = admission
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
