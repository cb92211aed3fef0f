//! `boxoffice-sim`: runs the deterministic simulation (see the library's documentation) for as
//! many seeds, operations or minutes as asked, and prints what broke with the command that
//! reproduces it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use boxoffice_sim::{Sim, Summary};

/// Deterministic simulation of boxoffice's owners over its real store, with crashes, failed
/// commits and damaged snapshots, checked against a reference model after every commit and
/// every recovery.
#[derive(Parser, Debug)]
#[command(name = "boxoffice-sim", version, about)]
struct Cli {
    /// The first seed [default: one drawn from the OS, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Operations per seed.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Mean steps between two deaths of the process (crashes and failed commits).
    #[arg(long, default_value_t = 800)]
    crash_every: u32,
    /// Seeds to run, one after another from --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Stop starting new seeds after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Where the simulated store lives (emptied first) [default: a directory under the OS's
    /// temporary directory].
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let first = cli.seed.unwrap_or_else(rand::random);
    let dir = cli.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("boxoffice-sim-{}", std::process::id()))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let mut total = Summary::default();
    let mut seeds = 0;
    let outcome = runtime.block_on(async {
        for seed in first..first.saturating_add(cli.seeds) {
            if cli.seconds > 0 && started.elapsed() > Duration::from_secs(cli.seconds) {
                break;
            }
            let mut sim = Sim::new(seed, &dir, cli.crash_every).await?;
            let ran = sim.run(cli.ops).await;
            let summary = sim.summary().clone();
            sim.close().await;
            ran?;
            println!(
                "seed {seed}: {} ops, {} commits, {} events, {} crashes, {} failed commits, {} snapshots ({} damaged, {} writes torn by a crash), {} prunes ({} cut by a crash), {} dates called off, {} best-available holds, {} waiting-list offers, {} refused",
                summary.ops,
                summary.commits,
                summary.events,
                summary.crashes,
                summary.failed_commits,
                summary.snapshots,
                summary.damaged_snapshots,
                summary.torn_snapshot_writes,
                summary.prunes,
                summary.crashes_in_prune,
                summary.cancelled_dates,
                summary.best_available_holds,
                summary.offers,
                summary.refused
            );
            total.add(&summary);
            seeds += 1;
        }
        Ok::<(), boxoffice_sim::Failure>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds from {first}: {} ops, {} crash-recoveries ({} of them failed commits), {} snapshots ({} damaged) in {seconds:.1} s",
        total.ops,
        total.crashes + total.failed_commits,
        total.failed_commits,
        total.snapshots,
        total.damaged_snapshots
    );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
