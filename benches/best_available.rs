//! Best available on a 100,000-seat date (10 sections of 20 rows of 500 seats), the domain
//! decision alone. One criterion group, `best_available_100k`, with two variants side by side
//! at fill levels of 0, 50, 90 and 99% (seats taken at random, so the free seats are as
//! fragmented as they get) and quantities 2 and 4:
//!
//! - `index`: `FreeSeats::choose`, the product's: a tree of per-row masks finds the first row
//!   that can take the block, and only that row's runs are read.
//! - `naive_scan`: the contract's rule applied seat by seat: every row in stage order, every
//!   block of available seats in it, the best kept.
//!
//! Then a sell-out, timed choice by choice: buyers ask for 1–4 seats until no block is left,
//! and the report gives p50 / p99 / max of the index's choice per tenth of the sale, and the
//! orphans left at the end.
//!
//! `cargo bench --bench best_available` (about a minute); for a quick look
//! `cargo bench --bench best_available -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use boxoffice::domain::best_available::{Block, FreeSeats};
use boxoffice::domain::venue::{Layout, RowPlan, SectionPlan};
use boxoffice::domain::SeatNo;

const FILLS: [u32; 4] = [0, 50, 90, 99];
const QUANTITIES: [u32; 2] = [2, 4];

fn hall() -> Layout {
    Layout::plan(
        (0..10)
            .map(|s| SectionPlan {
                name: format!("Section {s}"),
                price: 10_000 * (10 - s),
                rows: (0..20)
                    .map(|r| RowPlan {
                        label: format!("{}", r + 1),
                        seats: 500,
                    })
                    .collect(),
            })
            .collect(),
    )
    .expect("the hall is within the limits")
}

/// `percent` of the seats taken at random.
fn filled(layout: &Layout, percent: u32, rng: &mut StdRng) -> (FreeSeats, Vec<bool>) {
    let mut free = FreeSeats::new(layout);
    let total = layout.seat_count();
    let mut seats: Vec<u32> = (1..=total).collect();
    seats.shuffle(rng);
    let mut available = vec![true; total as usize];
    for seat in &seats[..(total as u64 * u64::from(percent) / 100) as usize] {
        free.set(SeatNo(*seat), false);
        available[*seat as usize - 1] = false;
    }
    (free, available)
}

/// The contract's rule seat by seat, in one pass over every row.
fn naive_scan(layout: &Layout, available: &[bool], quantity: u32) -> Option<Block> {
    let mut best: Option<((bool, usize, i64, u32), Block)> = None;
    for (index, row) in layout.rows().iter().enumerate() {
        let n = i64::from(row.seats);
        let first = row.first_seat.0 as usize;
        let free_at =
            |place: i64| (1..=n).contains(&place) && available[first + place as usize - 2];
        for a in 1..=n - i64::from(quantity) + 1 {
            let b = a + i64::from(quantity) - 1;
            if !(a..=b).all(free_at) {
                continue;
            }
            let leaves_orphan =
                (free_at(a - 1) && !free_at(a - 2)) || (free_at(b + 1) && !free_at(b + 2));
            let seat = (first as i64 + a - 1) as u32;
            let key = (leaves_orphan, index, (a + b - (n + 1)).abs(), seat);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((
                    key,
                    Block {
                        first: SeatNo(seat),
                        quantity,
                        leaves_orphan,
                    },
                ));
            }
        }
        // The first row with a block that leaves no orphan is the answer.
        if best.as_ref().is_some_and(|(k, _)| !k.0) {
            break;
        }
    }
    best.map(|(_, block)| block)
}

fn choices(c: &mut Criterion) {
    let layout = hall();
    let mut rng = StdRng::seed_from_u64(21);
    let mut group = c.benchmark_group("best_available_100k");
    group.throughput(Throughput::Elements(1));
    for fill in FILLS {
        let (free, available) = filled(&layout, fill, &mut rng);
        for quantity in QUANTITIES {
            assert_eq!(
                free.choose(&layout, quantity, None, &[]),
                naive_scan(&layout, &available, quantity),
                "the index and the scan agree"
            );
            let name = format!("q{quantity}_fill{fill}");
            group.bench_function(BenchmarkId::new("index", &name), |b| {
                b.iter(|| free.choose(black_box(&layout), quantity, None, &[]))
            });
            group.bench_function(BenchmarkId::new("naive_scan", &name), |b| {
                b.iter(|| naive_scan(black_box(&layout), &available, quantity))
            });
        }
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A sell-out by best-available requests of 1–4 seats, every choice timed with the settling of
/// the row the previous hold marked, as the date's actor pays it before each decision.
fn sell_out() {
    let layout = hall();
    let mut rng = StdRng::seed_from_u64(22);
    let mut free = FreeSeats::new(&layout);
    let total = layout.seat_count();
    let mut taken = 0u32;
    let mut by_tenth: Vec<Vec<Duration>> = vec![Vec::new(); 10];
    let mut all = Vec::new();
    loop {
        let quantity = rng.gen_range(1..=4);
        let started = Instant::now();
        free.settle();
        let chosen = free.choose(&layout, quantity, None, &[]);
        let took = started.elapsed();
        let tenth = ((taken as u64 * 10) / u64::from(total)).min(9) as usize;
        by_tenth[tenth].push(took);
        all.push(took);
        match chosen {
            Some(block) => {
                for seat in block.seats() {
                    free.mark(seat, false);
                }
                taken += quantity;
            }
            // Nothing of this size left: try smaller ones until not even one seat is.
            None if quantity == 1 => break,
            None => {}
        }
    }
    eprintln!(
        "best_available sell-out of {total} seats, requests of 1-4, {} choices:",
        all.len()
    );
    for (tenth, times) in by_tenth.iter_mut().enumerate() {
        times.sort();
        if times.is_empty() {
            continue;
        }
        eprintln!(
            "  {:>3}-{:>3}% sold: p50 {:?}, p99 {:?}, max {:?} ({} choices)",
            tenth * 10,
            tenth * 10 + 10,
            percentile(times, 0.5),
            percentile(times, 0.99),
            times.last().unwrap(),
            times.len()
        );
    }
    all.sort();
    eprintln!(
        "  whole sale: p50 {:?}, p99 {:?}, max {:?}; {} of {total} seats sold, {} left",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().unwrap(),
        taken,
        total - taken
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = choices
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    sell_out();
    Criterion::default().configure_from_args().final_summary();
}
