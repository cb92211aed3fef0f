//! A sale's opening, in process: a concert's room with 100,000 tokens in its pre-queue.
//! One criterion group, `opening_100k`:
//!
//! - `join_pre_queue`: one more buyer takes a pre-queue token (its place is a keyed SHA-256 of
//!   the token, kept in order as it arrives).
//! - `poll_pre_queue`: a pre-queue buyer polls (the pre-queue's size and the wait of a random
//!   place in it).
//! - `open`: the tick at `sale_opens_at` that puts all 100,000 in line in the drawn order and
//!   admits the first second's worth; it runs in the queue actor's handler under the rooms'
//!   write lock, so this is how long polls of every room wait behind it, once a sale.
//!
//! `cargo bench --bench opening` (about a minute); for a quick look
//! `cargo bench --bench opening -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};

use boxoffice::domain::admission::{
    AdmissionQueue, Lookup, Opening, OpeningSeed, QueuePolicy, QueueTokenId, RoomId, Standing,
};
use boxoffice::domain::{ConcertId, Timestamp, UserId};

const PRE_QUEUE: u64 = 100_000;
const ROOM: RoomId = RoomId::Concert(ConcertId(1));
const T0: Timestamp = Timestamp(1_700_000_000_000);
const OPENS_AT: Timestamp = Timestamp(T0.0 + 3_600_000);

fn policy() -> QueuePolicy {
    QueuePolicy {
        max_active: 2_000,
        admit_per_second: 500,
        active_ttl_ms: 600_000,
        waiting_ttl_ms: 600_000,
        ended_tokens_max: 100_000,
    }
}

/// A distinct, well-spread secret for buyer `n`.
fn secret(n: u64) -> u128 {
    u128::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(n)
}

fn room_with_pre_queue() -> AdmissionQueue {
    let opening = Opening {
        at: OPENS_AT,
        seed: OpeningSeed([42; 32]),
    };
    let mut room = AdmissionQueue::with_opening(policy(), Some(opening), T0);
    for n in 1..=PRE_QUEUE {
        let (status, _) = room.issue(UserId(n), QueueTokenId::in_room(ROOM, secret(n)), T0);
        assert!(matches!(status.standing, Standing::PreQueue { .. }));
    }
    room
}

fn opening(c: &mut Criterion) {
    let mut group = c.benchmark_group("opening_100k");
    let mut room = room_with_pre_queue();

    group.throughput(Throughput::Elements(1));
    let mut next = PRE_QUEUE;
    group.bench_function("join_pre_queue", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let token = QueueTokenId::in_room(ROOM, secret(next));
                let started = Instant::now();
                black_box(room.issue(UserId(next), token, T0));
                elapsed += started.elapsed();
                room.leave(token, UserId(next), T0).unwrap();
            }
            elapsed
        })
    });

    let probe = QueueTokenId::in_room(ROOM, secret(PRE_QUEUE / 2));
    group.bench_function("poll_pre_queue", |b| {
        b.iter(|| {
            let found = room.poll(probe, UserId(PRE_QUEUE / 2), T0).unwrap();
            assert!(matches!(found, Lookup::Live(_)));
            black_box(found)
        })
    });

    group.throughput(Throughput::Elements(PRE_QUEUE));
    group.sample_size(10);
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let mut room = room_with_pre_queue();
                let started = Instant::now();
                let outcome = room.tick(OPENS_AT);
                elapsed += started.elapsed();
                assert_eq!(outcome.admitted.len(), 500, "a second's worth at once");
                assert_eq!(room.waiting_len() as u64, PRE_QUEUE - 500);
                assert_eq!(room.audit().order_violations, 0);
                drop(black_box(room));
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = opening
}
fn main() {
    // `cargo test --benches` runs this without `--bench`; building the pre-queue is the heavy
    // part, so only `cargo bench` runs it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
