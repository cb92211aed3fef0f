//! The `boxoffice` server: reads config, sets up logging, builds the application and serves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use boxoffice::app::Application;
use boxoffice::config::{LogFormat, Settings};

/// A concert-ticket reservation engine: waiting room, seat holds and atomic payments.
///
/// Every config key can be overridden by an environment variable BOXOFFICE__SECTION__KEY,
/// e.g. BOXOFFICE__SERVER__LISTEN=127.0.0.1:9000.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Defaults to ./config.toml; a missing default file means
    /// built-in defaults.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Log format, overriding `log.format`: `text` for people, `json` (one object per line)
    /// for log shippers.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    keep_files_private();
    tune_allocator();
    let cli = Cli::parse();
    let (path, explicit) = match cli.config {
        Some(path) => (path, true),
        None => (PathBuf::from("config.toml"), false),
    };
    let mut settings = match Settings::load(&path, explicit) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("boxoffice: {error}");
            return ExitCode::from(78);
        }
    };
    if let Some(format) = cli.log_format {
        settings.log.format = format;
    }
    // tokio's default of 512 blocking threads would let a sign-in storm hash 512 passwords at
    // once, each holding its argon2 memory, and keeps every thread a burst started alive.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(settings.server.blocking_threads)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(settings)),
        Err(error) => {
            eprintln!("boxoffice: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every file the server makes is for its own user only: the store holds password hashes,
/// sessions and balances. The store sets the modes of the files it makes itself (the library
/// runs without this too); the umask covers every other file, whoever makes it.
#[cfg(unix)]
fn keep_files_private() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(not(unix))]
fn keep_files_private() {}

/// glibc raises its mmap threshold each time a large block is freed; from then on blocks of
/// snapshot size come from the heap, and their pages stay with the process after they are
/// freed, so RSS climbs at every snapshot. A fixed threshold keeps large blocks in their own
/// mappings, returned to the system when freed, and two arenas (instead of eight per core) keep
/// freed small blocks from being spread over many heaps. `MALLOC_MMAP_THRESHOLD_` and
/// `MALLOC_ARENA_MAX` in the environment still win. Runs before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    const ARENAS: libc::c_int = 2;
    // SAFETY: mallopt only sets allocator parameters; no other thread is running yet.
    unsafe {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// glibc gives heap pages back to the system only from the top of a heap, so one live block
/// high up keeps every freed page below it resident. Under mixed load that held RSS on a slow
/// climb while the bytes in use stayed level (docs/performance.md, Soak). `malloc_trim` releases free pages
/// anywhere in the heaps; its own thread runs it every `every`, outside any request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_memory_trim(every: Duration) {
    if every.is_zero() {
        return;
    }
    let trimmer = std::thread::Builder::new()
        .name("memory-trim".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let started = std::time::Instant::now();
                // SAFETY: malloc_trim locks each arena in turn, as malloc and free do; it is
                // sound while other threads allocate.
                let released = unsafe { libc::malloc_trim(0) } != 0;
                tracing::debug!(
                    target: "boxoffice::memory_trim",
                    elapsed_us = started.elapsed().as_micros() as u64,
                    released,
                    "trimmed the heap"
                );
            }
        });
    if let Err(error) = trimmer {
        tracing::warn!("memory is not trimmed: cannot start its thread: {error}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_memory_trim(_every: Duration) {}

async fn serve(settings: Settings) -> ExitCode {
    init_logging(&settings);
    start_memory_trim(Duration::from_secs(settings.server.memory_trim_seconds));
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("boxoffice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
