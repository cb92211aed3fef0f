//! The bounded slice of the simulation `cargo test` runs: a fixed set of seeds, a few fresh
//! ones (printed, so a failure can be run again), and the proof that a seed fixes the run
//! (the log as stored after its prunes, byte for byte).

use boxoffice_sim::{Sim, Summary};

/// Seeds every run checks, so a change that breaks one of them is caught every time.
const FIXED: std::ops::Range<u64> = 1..9;
const OPS: u64 = 4_000;
/// A crash every 25 steps on average, so a short slice crashes and recovers often.
const CRASH_EVERY: u32 = 25;

fn dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("boxoffice-sim-test-{name}-{}", std::process::id()))
}

async fn run(seed: u64, ops: u64, name: &str) -> (Summary, Vec<u8>) {
    let dir = dir(name);
    let mut sim = Sim::new(seed, &dir, CRASH_EVERY)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let ran = sim.run(ops).await;
    let (summary, log) = (sim.summary().clone(), sim.log_bytes());
    sim.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(failure) = ran {
        panic!("{failure}");
    }
    (summary, log)
}

#[tokio::test(flavor = "current_thread")]
async fn fixed_seeds_keep_every_invariant_through_crashes_and_damaged_snapshots() {
    let mut total = Summary::default();
    for seed in FIXED {
        let (summary, _) = run(seed, OPS, &format!("fixed-{seed}")).await;
        total.add(&summary);
    }
    // The faults happened: the slice proves something only if it crashed and fell back.
    assert!(total.crashes + total.failed_commits >= 200, "{total:?}");
    assert!(total.damaged_snapshots >= 20, "{total:?}");
    assert!(total.torn_snapshot_writes >= 10, "{total:?}");
    assert!(total.prunes >= 10, "{total:?}");
    assert!(total.events >= 2_000, "{total:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn fresh_seeds_keep_every_invariant_too() {
    for _ in 0..2 {
        let seed: u64 = rand::random();
        // Written past the test harness's capture, so CI's log names every fresh seed.
        let line = format!("fresh seed {seed} (reproduce: cargo run --release -p boxoffice-sim -- --seed {seed} --ops {OPS} --crash-every {CRASH_EVERY})\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        run(seed, OPS, &format!("fresh-{seed}")).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_seed_gives_the_same_event_log_byte_for_byte() {
    let (first, log) = run(42, OPS, "same-a").await;
    let (second, again) = run(42, OPS, "same-b").await;
    assert_eq!(first, second);
    assert!(
        log.len() > 2_000,
        "a log worth comparing: {} bytes",
        log.len()
    );
    assert!(log == again, "two runs of seed 42 logged different bytes");
    let (_, other) = run(43, OPS, "other").await;
    assert!(log != other, "another seed makes another history");
}
