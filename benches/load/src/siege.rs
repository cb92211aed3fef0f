//! `siege`: buyers go through the whole flow while thousands of connections hold on to the
//! server without ever finishing a request, beside a baseline of the same buyers with no
//! attack; it measures whether slow and idle clients can starve the real ones.
//!
//! Setup (unmeasured): a date of 2 × `--buyers` + `--list-entries` seats, the buyers and the
//! auditor signed up, and one more user, the **listed user**, given `--list-entries`
//! reservations (each a hold on a seat of its own, cancelled at once) and as many balance-history
//! entries (1-won top-ups): the long lists the unread-response attackers ask for.
//!
//! Then two runs of `--duration` each, on the same server, one after the other:
//!
//! 1. **baseline**: the buyers arrive spread over the first half of the run, each signing in,
//!    taking a queue token and polling it until admitted, holding a seat of its own, topping its
//!    balance up by the price and paying;
//! 2. **under attack**: first `--attackers` connections are opened (`attack`, at most
//!    `RAMP_MAX` for that), then the same buyers do the same again, on seats of their own, while
//!    the attackers hold on.
//!
//! Each run's buyers open their connections anew (from 127.0.0.1), after the attackers have
//! opened theirs. In both, `/healthz` is probed every 100 ms on a fresh connection (`probe`), and with
//! `--server-pid` the server's RSS is sampled. The report sets the two runs side by side —
//! buyers who paid, the p99 of their requests, the probes answered, the peak RSS — and judges
//! the run under attack against the goal (`GOAL_*`), PASS or FAIL per line. A missed goal fails
//! the run (exit status 1) only with `--require-goal`. The audit after the runs checks what the
//! buyers of both runs recorded, as for sell-out.

mod attack;
mod probe;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Admission, Fail};
use crate::audit::{Auditor, BuyerRecord, PaidRecord};
use crate::client::Client;
use crate::report::Check;
use crate::rss;
use crate::setup::{self, PASSWORD};
use crate::stats::LatencySummary;
use crate::{Context, ModeRun};

use attack::{Aim, Attack, Kind, KindReport};
pub use attack::{ATTACKERS_MAX, PER_SOURCE_MAX};
use probe::{ProbeReport, Prober};

/// The goal the server must meet under attack. Set for this many attackers.
pub const GOAL_ATTACKERS: usize = 4_000;
const GOAL_SUCCESS_PERCENT: f64 = 99.0;
const GOAL_P99_MS: f64 = 100.0;
const GOAL_RSS_MIB: f64 = 512.0;
/// The attackers get at most this long to open their connections before the buyers come.
const RAMP_MAX: Duration = Duration::from_secs(15);
/// How often the server's RSS and the open attacking connections are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Concurrent hold-and-cancel chains that build the listed user's reservations: under the
/// default per-user hold limit (4), so no hold is refused for it.
const LIST_CHAINS: usize = 2;
/// The tick that times the generator's own lateness.
const LAG_TICK: Duration = Duration::from_millis(10);
/// A generator late by this share of the goal's p99 (at its own p99) is worth a note.
const LAG_NOTABLE: f64 = 0.1;
/// Distinct failure reasons kept per run; the rest are counted as `other`.
const FAILURE_KINDS_MAX: usize = 20;
/// File descriptors the generator needs beside the attackers: the buyers' connections, health
/// probes in flight, the runtime, stdio.
const FILES_BESIDE_ATTACKERS: u64 = 128;

/// The open-files limit of this process, raised to its hard limit before the attack.
#[derive(Debug, Clone, Serialize)]
pub struct OpenFiles {
    pub soft_before: Option<u64>,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    /// What the run may open at once.
    pub needed: u64,
    /// Why the limit could not be raised, or is still too low.
    pub problem: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and says whether `needed` fits.
#[cfg(unix)]
// `rlim_t` is u64 on Linux, not on every unix.
#[allow(clippy::unnecessary_cast)]
fn raise_open_files_limit(needed: u64) -> OpenFiles {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let mut report = OpenFiles {
        soft_before: None,
        soft: None,
        hard: None,
        needed,
        problem: None,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        report.problem = Some(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
        return report;
    }
    report.soft_before = Some(limit.rlim_cur as u64);
    report.hard = Some(limit.rlim_max as u64);
    report.soft = Some(limit.rlim_cur as u64);
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            report.soft = Some(limit.rlim_max as u64);
        } else {
            report.problem = Some(format!(
                "setrlimit(RLIMIT_NOFILE) to the hard limit {}: {}",
                limit.rlim_max,
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(soft) = report.soft.filter(|&soft| soft < needed) {
        let why = format!(
            "the open-files limit is {soft}, below the {needed} this run may need: \
             attackers past it fail to connect (counted as connect failures)"
        );
        report.problem = Some(match report.problem.take() {
            Some(earlier) => format!("{earlier}; {why}"),
            None => why,
        });
    }
    report
}

#[cfg(not(unix))]
fn raise_open_files_limit(needed: u64) -> OpenFiles {
    OpenFiles {
        soft_before: None,
        soft: None,
        hard: None,
        needed,
        problem: Some("open-files limits are only raised on unix".to_owned()),
    }
}

/// The server's RSS over one run.
#[derive(Debug, Clone, Serialize)]
pub struct RssFigures {
    pub pid: u32,
    pub start_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    pub end_kib: Option<u64>,
    pub samples: u64,
    /// The first read that failed; sampling stopped there.
    pub error: Option<String>,
}

/// Attacking connections open over one run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenConnections {
    /// When the buyers began, after the ramp.
    pub at_start: u64,
    pub min: u64,
    pub max: u64,
    pub at_end: u64,
}

/// How late the generator's own runtime (the buyers') woke up, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorLag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The attackers' ramp before the buyers came.
#[derive(Debug, Clone, Serialize)]
pub struct Ramp {
    pub seconds: f64,
    /// Attackers that had a connection open at least once by then.
    pub connected: u64,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub label: &'static str,
    pub seconds: f64,
    pub attackers: usize,
    pub buyers: u64,
    /// Buyers whose payment was answered 201.
    pub buyers_paid: u64,
    pub success_percent: f64,
    /// Why the others did not pay: the step and the answer, counted.
    pub failures: BTreeMap<String, u64>,
    /// The buyers' requests (retries included) and their latencies, every endpoint together.
    pub requests: u64,
    pub latency_ms: LatencySummary,
    pub no_response: u64,
    pub status_5xx: u64,
    pub healthz: ProbeReport,
    pub rss: Option<RssFigures>,
    pub ramp: Option<Ramp>,
    pub open_attacking_connections: Option<OpenConnections>,
    pub attack: Vec<KindReport>,
    /// The generator's own lateness, which the buyers' latencies include.
    pub generator_lag_ms: GeneratorLag,
}

#[derive(Debug, Serialize)]
pub struct GoalLine {
    pub name: &'static str,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    /// Every line passed.
    pub met: bool,
    pub attackers_goal: usize,
    pub attackers_run: usize,
    pub lines: Vec<GoalLine>,
    /// What to bear in mind when reading the lines.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SiegeReport {
    pub attackers: usize,
    /// `(kind, attackers)`.
    pub per_kind: Vec<(&'static str, usize)>,
    pub source_addresses: String,
    pub open_files: OpenFiles,
    /// The listed user's reservations and balance-history entries, as built in setup.
    pub listed_reservations: u64,
    pub listed_history_entries: u64,
    pub baseline: RunReport,
    pub under_attack: RunReport,
    pub goal: Goal,
}

/// The buyers of the run now going, shared with their tasks.
struct Shared {
    client: Client,
    names: setup::Names,
    /// Tags the run's idempotency keys.
    tag: String,
    date_id: String,
    /// Buyer `i` holds seat `seat_base + i + 1`.
    seat_base: u32,
    /// When the run's buyers must be done: the end of its measured phase.
    deadline: Mutex<Instant>,
    /// Per buyer over both runs, updated before and after every request that moves money, so
    /// a buyer stopped mid-request leaves a record the audit can trust.
    records: Mutex<Vec<BuyerRecord>>,
    failures: Mutex<BTreeMap<String, u64>>,
    paid: AtomicU64,
}

impl Shared {
    fn record(&self, index: usize, change: impl FnOnce(&mut BuyerRecord)) {
        change(&mut self.records.lock()[index]);
    }

    fn failed(&self, why: String) {
        let mut failures = self.failures.lock();
        let why = if failures.len() >= FAILURE_KINDS_MAX && !failures.contains_key(&why) {
            "other".to_owned()
        } else {
            why
        };
        *failures.entry(why).or_insert(0) += 1;
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let target = client.target();
    if !matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        bail!(
            "--mode siege attacks from 127.0.0.2 and up: --url must be an IPv4 loopback address \
             (e.g. http://127.0.0.1:8080), not {}",
            target.addr
        );
    }
    let attackers = ctx.cli.attackers;
    let open_files = raise_open_files_limit(
        attackers as u64 + ctx.cli.connections as u64 + FILES_BESIDE_ATTACKERS,
    );
    if let Some(problem) = &open_files.problem {
        eprintln!("boxoffice-load: {problem}");
    }
    let admin = ctx.admin_token()?;
    let buyers = ctx.cli.buyers;
    let list_entries = ctx.cli.list_entries;
    let seat_count = ctx.seats();
    let setup_started = Instant::now();
    let (_, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let listed = build_lists(ctx, &date_id, 2 * buyers as u32, list_entries).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let shared = |index: usize, records: Vec<BuyerRecord>, label: &str| {
        Arc::new(Shared {
            client: client.clone(),
            names: ctx.names.clone(),
            tag: format!("{}-{label}", ctx.names.run()),
            date_id: date_id.clone(),
            seat_base: (index * buyers) as u32,
            deadline: Mutex::new(Instant::now() + ctx.duration()),
            records: Mutex::new(records),
            failures: Mutex::new(BTreeMap::new()),
            paid: AtomicU64::new(0),
        })
    };
    let aim = Aim {
        addr: target.addr,
        host: target.host().to_owned(),
        session: listed.session.clone(),
    };

    let records = (0..buyers).map(|_| BuyerRecord::default()).collect();
    let first = shared(0, records, "baseline");
    let (baseline, _) = one_run(ctx, first.clone(), "baseline", &aim, 0).await?;
    let records = std::mem::take(&mut *first.records.lock());
    // The table's per-endpoint figures are the run under attack's.
    client.stats().reset();
    let second = shared(1, records, "siege");
    let (under_attack, measured_seconds) =
        one_run(ctx, second.clone(), "under attack", &aim, attackers).await?;
    let records = std::mem::take(&mut *second.records.lock());

    let goal = judge(&under_attack);
    let mut checks = Vec::new();
    if ctx.cli.require_goal {
        checks.push(Check {
            name: "siege goal (--require-goal)",
            ok: goal.met,
            detail: goal
                .lines
                .iter()
                .map(|l| {
                    let mark = if l.pass { "PASS" } else { "FAIL" };
                    format!("{} {}: {} (goal {})", mark, l.name, l.measured, l.target)
                })
                .collect::<Vec<_>>()
                .join("; "),
            examples: Vec::new(),
        });
    }
    let outcome = json!({
        "attackers": attackers,
        "buyers": buyers,
        "baseline_success_percent": baseline.success_percent,
        "attack_success_percent": under_attack.success_percent,
        "baseline_p99_ms": baseline.latency_ms.p99,
        "attack_p99_ms": under_attack.latency_ms.p99,
        "baseline_healthz_ok_fraction": baseline.healthz.ok_fraction,
        "attack_healthz_ok_fraction": under_attack.healthz.ok_fraction,
        "baseline_rss_peak_kib": baseline.rss.as_ref().and_then(|r| r.peak_kib),
        "attack_rss_peak_kib": under_attack.rss.as_ref().and_then(|r| r.peak_kib),
        "goal_met": goal.met,
    });
    let per_kind = Kind::ALL
        .iter()
        .map(|&kind| {
            let n = (0..attackers).filter(|&i| Kind::of(i) == kind).count();
            (kind.name(), n)
        })
        .collect();
    let source_addresses = match attackers {
        0 => "none".to_owned(),
        n if attack::sources(n) == 1 => attack::source(0).to_string(),
        n => format!(
            "{}–{} ({} addresses)",
            attack::source(0),
            attack::source(n - 1),
            attack::sources(n)
        ),
    };
    Ok(ModeRun {
        setup_seconds,
        measured_seconds,
        outcome,
        records,
        dates: vec![(date_id, seat_count)],
        auditor: Some(Auditor {
            session: auditor_session,
            token: Some(auditor_token),
        }),
        // Unpaid holds of buyers the run stopped may still be live.
        check_holds: false,
        rss: None,
        checks,
        endpoint_seconds: Vec::new(),
        siege: Some(SiegeReport {
            attackers,
            per_kind,
            source_addresses,
            open_files,
            listed_reservations: listed.reservations,
            listed_history_entries: listed.history_entries,
            baseline,
            under_attack,
            goal,
        }),
    })
}

/// The listed user, signed in, and what its lists hold.
struct Listed {
    session: String,
    reservations: u64,
    history_entries: u64,
}

/// Signs the listed user up and gives it `entries` reservations (hold and cancel, each on a
/// seat of its own from `first_seat + 1` on, so no cool-down between holds of one seat applies)
/// and `entries` balance-history entries (1-won top-ups).
async fn build_lists(
    ctx: &Context,
    date_id: &str,
    first_seat: u32,
    entries: u32,
) -> anyhow::Result<Listed> {
    let client = &ctx.client;
    let username = ctx.names.listed();
    api::sign_up(client, &username, PASSWORD)
        .await
        .map_err(|fail| anyhow::anyhow!("signing the listed user up: {fail}"))?;
    let (session, token) = setup::admit_one(client, &username, ctx.admission_wait())
        .await
        .map_err(|why| anyhow::anyhow!("the listed user: {why}"))?;
    let run = ctx.names.run().to_owned();
    let built = Arc::new(AtomicU64::new(0));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for chain in 0..LIST_CHAINS as u32 {
        let (client, session, token) = (client.clone(), session.clone(), token.clone());
        let (date_id, run) = (date_id.to_owned(), run.clone());
        let (built, first_failure) = (built.clone(), first_failure.clone());
        tasks.spawn(async move {
            for n in (chain..entries).step_by(LIST_CHAINS) {
                let seat = first_seat + n + 1;
                let key = format!("lg-{run}-listed-hold-{n}");
                let held = api::hold(&client, &session, &token, &date_id, &[seat], &key).await;
                let cancelled = match held {
                    Ok(reservation) => {
                        api::cancel(&client, &session, &reservation.reservation_id).await
                    }
                    Err(fail) => Err(fail),
                };
                match cancelled {
                    Ok(()) => {
                        built.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(fail) => {
                        first_failure
                            .lock()
                            .get_or_insert_with(|| format!("hold and cancel: {fail}"));
                        return;
                    }
                }
            }
        });
    }
    let charged = Arc::new(AtomicU64::new(0));
    for n in 0..entries {
        let (client, session) = (client.clone(), session.clone());
        let (charged, first_failure, run) = (charged.clone(), first_failure.clone(), run.clone());
        tasks.spawn(async move {
            let key = format!("lg-{run}-listed-charge-{n}");
            match api::charge(&client, &session, 1, &key).await {
                Ok(_) => {
                    charged.fetch_add(1, Ordering::Relaxed);
                }
                Err(fail) => {
                    first_failure
                        .lock()
                        .get_or_insert_with(|| format!("top-up: {fail}"));
                }
            }
        });
    }
    let status = {
        let (built, charged) = (built.clone(), charged.clone());
        move || {
            (
                built.load(Ordering::Relaxed) + charged.load(Ordering::Relaxed),
                "building the listed user's lists (not measured)".to_owned(),
            )
        }
    };
    let building = async { while tasks.join_next().await.is_some() {} };
    let total = 2 * u64::from(entries);
    if tokio::time::timeout(
        ctx.setup_timeout(),
        ctx.display.run("lists", total, status, building),
    )
    .await
    .is_err()
    {
        bail!(
            "building the listed user's {entries} reservations and top-ups took longer than \
             --setup-timeout ({} s); use fewer --list-entries",
            ctx.setup_timeout().as_secs()
        );
    }
    let _ = api::leave_queue(client, &session, &token).await;
    let (reservations, history_entries) = (
        built.load(Ordering::Relaxed),
        charged.load(Ordering::Relaxed),
    );
    if let Some(why) = first_failure.lock().take() {
        eprintln!(
            "boxoffice-load: the listed user has {reservations} of {entries} reservations and \
             {history_entries} of {entries} balance entries (first failure: {why}); \
             set limits.session_requests_per_second = 0 for load runs"
        );
    }
    Ok(Listed {
        session,
        reservations,
        history_entries,
    })
}

/// Samples the server's RSS and the open attacking connections every `SAMPLE_EVERY`.
struct Sampler {
    rss: Option<Mutex<RssFigures>>,
    open: Mutex<Option<OpenConnections>>,
}

impl Sampler {
    fn sample(&self, open_now: Option<u64>) {
        self.sample_rss();
        self.sample_open(open_now);
    }

    fn sample_rss(&self) {
        if let Some(rss) = &self.rss {
            let mut rss = rss.lock();
            if rss.error.is_none() {
                match rss::read_kib(rss.pid) {
                    Ok(kib) => {
                        rss.start_kib.get_or_insert(kib);
                        rss.peak_kib = Some(rss.peak_kib.map_or(kib, |p| p.max(kib)));
                        rss.end_kib = Some(kib);
                        rss.samples += 1;
                    }
                    Err(why) => rss.error = Some(why),
                }
            }
        }
    }

    fn sample_open(&self, open_now: Option<u64>) {
        if let Some(now) = open_now {
            let mut open = self.open.lock();
            let open = open.get_or_insert(OpenConnections {
                at_start: now,
                min: now,
                max: now,
                at_end: now,
            });
            open.min = open.min.min(now);
            open.max = open.max.max(now);
            open.at_end = now;
        }
    }
}

/// One run: the attack (when `attackers` > 0), then the buyers, the probes and the samples,
/// for `--duration`. Gives the figures and the measured seconds.
async fn one_run(
    ctx: &Context,
    shared: Arc<Shared>,
    label: &'static str,
    aim: &Aim,
    attackers: usize,
) -> anyhow::Result<(RunReport, f64)> {
    let client = &ctx.client;
    let duration = ctx.duration();
    let attack = match attackers {
        0 => None,
        n => Some(Attack::start(aim.clone(), n)?),
    };
    let gauge = attack.as_ref().map(Attack::gauge);
    // Sampled from before the attackers connect, so the RSS their connections cost is seen.
    let sampler = Arc::new(Sampler {
        rss: ctx.cli.server_pid.map(|pid| {
            Mutex::new(RssFigures {
                pid,
                start_kib: None,
                peak_kib: None,
                end_kib: None,
                samples: 0,
                error: None,
            })
        }),
        open: Mutex::new(None),
    });
    let sampling = {
        let (sampler, gauge) = (sampler.clone(), gauge.clone());
        tokio::spawn(async move {
            loop {
                sampler.sample(gauge.as_ref().map(|g| g.open()));
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };
    let ramp = match &attack {
        Some(attack) => Some(ramp_up(ctx, attack).await),
        None => None,
    };
    // The open connections are followed from when the buyers come.
    *sampler.open.lock() = None;
    sampler.sample_open(gauge.as_ref().map(|g| g.open()));
    let prober = Prober::start(aim.addr, aim.host.clone())?;
    let lag = Lag::start();

    let buyers = shared.records.lock().len();
    // Buyers connect as newcomers would, not on connections opened before the attack.
    client.close_idle();
    let started = client.begin_measured(duration, ctx.max_requests());
    *shared.deadline.lock() = Instant::now() + duration;
    let arrivals = duration / 2;
    let work = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let begin = tokio::time::Instant::now();
            for index in 0..buyers {
                let start_at = begin + arrivals.mul_f64(index as f64 / buyers.max(1) as f64);
                let shared = shared.clone();
                tasks.spawn(async move {
                    tokio::time::sleep_until(start_at).await;
                    match Box::pin(buy(&shared, index)).await {
                        Ok(()) => {
                            shared.paid.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => shared.failed(why),
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let status = {
        let (shared, gauge) = (shared.clone(), gauge.clone());
        move || {
            let open = gauge.as_ref().map_or(String::new(), |g| {
                format!(" · {} attacking connections open", g.open())
            });
            (
                started.elapsed().as_secs(),
                format!(
                    "s {label} · {} of {buyers} buyers paid{open}",
                    shared.paid.load(Ordering::Relaxed)
                ),
            )
        }
    };
    let in_time = async {
        let finished = ctx.bounded(work).await.is_some();
        // The attack and the probes go on to the end of the run's time, whenever the buyers
        // are done.
        if let Some(rest) = duration.checked_sub(started.elapsed()) {
            client.nap(rest).await;
        }
        finished
    };
    let finished = ctx
        .display
        .run(label, duration.as_secs(), status, in_time)
        .await;
    if !finished {
        shared.failed("the buyers' work was aborted".to_owned());
    }
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();
    let healthz = prober.stop().await;
    let generator_lag_ms = lag.stop();
    sampling.abort();
    sampler.sample(gauge.as_ref().map(|g| g.open()));
    let kinds = match attack {
        Some(attack) => attack.stop().await,
        None => Vec::new(),
    };
    let summary = client.stats().summary(measured_seconds, &[]);
    let paid = shared.paid.load(Ordering::Relaxed);
    let mut failures = std::mem::take(&mut *shared.failures.lock());
    // A buyer still at work when the run ended has neither paid nor failed.
    let unaccounted = buyers as u64 - paid - failures.values().sum::<u64>();
    if unaccounted > 0 {
        *failures
            .entry("not done when the run ended".to_owned())
            .or_insert(0) += unaccounted;
    }
    let report = RunReport {
        label,
        seconds: measured_seconds,
        attackers,
        buyers: buyers as u64,
        buyers_paid: paid,
        success_percent: 100.0 * paid as f64 / buyers.max(1) as f64,
        failures,
        requests: summary.requests,
        latency_ms: client.stats().overall_latency(),
        no_response: summary.no_response,
        status_5xx: summary.status_5xx,
        healthz,
        rss: sampler.rss.as_ref().map(|r| r.lock().clone()),
        ramp,
        open_attacking_connections: sampler.open.lock().clone(),
        attack: kinds,
        generator_lag_ms,
    };
    Ok((report, measured_seconds))
}

/// How late the buyers' runtime in this process wakes up: a tick every `LAG_TICK`, timed. The
/// buyers' latencies include this lag, so the report gives it beside them.
struct Lag {
    late_us: Arc<Mutex<Histogram<u64>>>,
    ticking: tokio::task::JoinHandle<()>,
}

impl Lag {
    fn start() -> Self {
        let late_us = Arc::new(Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        ));
        let ticking = {
            let late_us = late_us.clone();
            tokio::spawn(async move {
                loop {
                    let asleep = Instant::now();
                    tokio::time::sleep(LAG_TICK).await;
                    let late = asleep.elapsed().saturating_sub(LAG_TICK);
                    late_us
                        .lock()
                        .saturating_record((late.as_micros() as u64).max(1));
                }
            })
        };
        Self { late_us, ticking }
    }

    fn stop(self) -> GeneratorLag {
        self.ticking.abort();
        let late = self.late_us.lock();
        GeneratorLag {
            p50: late.value_at_quantile(0.5) as f64 / 1e3,
            p99: late.value_at_quantile(0.99) as f64 / 1e3,
            max: late.max() as f64 / 1e3,
        }
    }
}

/// Waits until every attacker has had a connection open, at most `RAMP_MAX`.
async fn ramp_up(ctx: &Context, attack: &Attack) -> Ramp {
    let started = Instant::now();
    let total = attack.count() as u64;
    let gauge = attack.gauge();
    let status = {
        let gauge = gauge.clone();
        move || {
            (
                gauge.connected_once(),
                "attackers connecting (not measured)".to_owned(),
            )
        }
    };
    let waiting = async {
        while gauge.connected_once() < total && started.elapsed() < RAMP_MAX {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    ctx.display.run("attack", total, status, waiting).await;
    let connected = gauge.connected_once();
    if connected < total {
        eprintln!(
            "boxoffice-load: {connected} of {total} attackers had connected after {} s; the \
             buyers come now",
            RAMP_MAX.as_secs()
        );
    }
    Ramp {
        seconds: started.elapsed().as_secs_f64(),
        connected,
    }
}

/// One buyer's purchase: sign in, admission, hold, top-up, payment.
async fn buy(shared: &Shared, index: usize) -> Result<(), String> {
    let client = &shared.client;
    let username = shared.names.buyer(index);
    let session = api::sign_in(client, &username, PASSWORD, None)
        .await
        .map_err(|fail| format!("sign-in: {fail}"))?;
    shared.record(index, |r| r.session = Some(session.clone()));
    let max_wait = shared
        .deadline
        .lock()
        .saturating_duration_since(Instant::now());
    let token = match api::admit(client, &session, max_wait, || client.halted()).await {
        Admission::Active(token) => token,
        Admission::GaveUp(token) => {
            // The clean-up after the audit hands it back.
            shared.record(index, |r| r.queue_token = token);
            return Err("queue: not admitted in time".to_owned());
        }
        Admission::Failed(token, fail) => {
            shared.record(index, |r| r.queue_token = token);
            return Err(format!("queue: {fail}"));
        }
    };
    let bought = purchase(shared, index, &session, &token).await;
    if bought.is_err() {
        if let Err(Fail::Stopped | Fail::NoResponse(_)) =
            api::leave_queue(client, &session, &token).await
        {
            shared.record(index, |r| r.queue_token = Some(token));
        }
    }
    bought
}

/// Holds the buyer's seat, tops up its price and pays.
async fn purchase(shared: &Shared, index: usize, session: &str, token: &str) -> Result<(), String> {
    let client = &shared.client;
    let tag = &shared.tag;
    let seat = shared.seat_base + index as u32 + 1;
    shared.record(index, |r| r.touched = true);
    let key = format!("lg-{tag}-{index}-hold");
    let reservation = api::hold(client, session, token, &shared.date_id, &[seat], &key)
        .await
        .map_err(|fail| format!("hold: {fail}"))?;
    let release = || async {
        let _ = api::cancel(client, session, &reservation.reservation_id).await;
    };

    let price = reservation.price;
    let key = format!("lg-{tag}-{index}-charge");
    shared.record(index, |r| r.topups_uncertain += price);
    let charged = api::charge(client, session, price, &key).await;
    shared.record(index, |r| match &charged {
        // A success status: applied, whatever the body said.
        Ok(_) | Err(Fail::Malformed(_)) => {
            r.topups_uncertain -= price;
            r.topups += price;
        }
        Err(Fail::NoResponse(_)) => {}
        Err(Fail::Refused { .. } | Fail::Stopped) => r.topups_uncertain -= price,
    });
    if let Err(fail) = charged {
        release().await;
        return Err(format!("top-up: {fail}"));
    }

    let key = format!("lg-{tag}-{index}-pay");
    let id = reservation.reservation_id.clone();
    shared.record(index, |r| r.payments_uncertain.push(id.clone()));
    match api::pay(client, session, token, &id, &key).await {
        Ok(payment) => {
            shared.record(index, |r| {
                r.payments_uncertain.retain(|u| *u != id);
                r.paid.push(PaidRecord {
                    reservation_id: payment.reservation_id,
                    date_id: payment.date_id,
                    seat_nos: payment.seat_nos,
                    amount: payment.amount,
                });
            });
            Ok(())
        }
        Err(fail @ (Fail::NoResponse(_) | Fail::Malformed(_))) => Err(format!("payment: {fail}")),
        Err(fail) => {
            shared.record(index, |r| r.payments_uncertain.retain(|u| *u != id));
            release().await;
            Err(format!("payment: {fail}"))
        }
    }
}

/// The run under attack against the goal.
fn judge(run: &RunReport) -> Goal {
    let mut lines = vec![
        GoalLine {
            name: "buyers who paid",
            target: format!(">= {GOAL_SUCCESS_PERCENT}%"),
            measured: format!(
                "{:.2}% ({} of {})",
                run.success_percent, run.buyers_paid, run.buyers
            ),
            pass: run.success_percent >= GOAL_SUCCESS_PERCENT,
        },
        GoalLine {
            name: "p99 of the buyers' requests",
            target: format!("< {GOAL_P99_MS} ms"),
            measured: format!("{:.1} ms", run.latency_ms.p99),
            pass: run.requests > 0 && run.latency_ms.p99 < GOAL_P99_MS,
        },
    ];
    let peak = run.rss.as_ref().and_then(|r| r.peak_kib);
    lines.push(GoalLine {
        name: "server RSS at its peak",
        target: format!("< {GOAL_RSS_MIB} MiB"),
        measured: peak.map_or_else(
            || "not sampled (pass --server-pid)".to_owned(),
            |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
        ),
        pass: peak.is_some_and(|kib| (kib as f64 / 1024.0) < GOAL_RSS_MIB),
    });
    let probes = &run.healthz;
    lines.push(GoalLine {
        name: "/healthz probes answered 200 within 1 s",
        target: "every one".to_owned(),
        measured: format!(
            "{} of {} ({:.2}%)",
            probes.ok,
            probes.sent,
            100.0 * probes.ok_fraction
        ),
        pass: probes.sent > 0 && probes.ok == probes.sent,
    });
    let mut notes = Vec::new();
    if run.attackers < GOAL_ATTACKERS {
        notes.push(format!(
            "the goal is set for {GOAL_ATTACKERS} attacking connections; this run had {}",
            run.attackers
        ));
    }
    if run.generator_lag_ms.p99 >= GOAL_P99_MS * LAG_NOTABLE {
        notes.push(format!(
            "the generator itself woke up to {:.1} ms late (p99), and the buyers' latencies \
             include that: give it more --threads or a quieter machine",
            run.generator_lag_ms.p99
        ));
    }
    Goal {
        met: lines.iter().all(|l| l.pass),
        attackers_goal: GOAL_ATTACKERS,
        attackers_run: run.attackers,
        lines,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(paid: u64, p99_ms: f64, peak_kib: Option<u64>, probes: (u64, u64)) -> RunReport {
        RunReport {
            label: "under attack",
            seconds: 30.0,
            attackers: GOAL_ATTACKERS,
            buyers: 100,
            buyers_paid: paid,
            success_percent: paid as f64,
            failures: BTreeMap::new(),
            requests: 700,
            latency_ms: LatencySummary {
                p50: 1.0,
                p90: 2.0,
                p99: p99_ms,
                p99_9: p99_ms,
                max: p99_ms,
                mean: 1.0,
            },
            no_response: 0,
            status_5xx: 0,
            healthz: ProbeReport {
                sent: probes.1,
                ok: probes.0,
                ok_fraction: probes.0 as f64 / probes.1.max(1) as f64,
                p99_ms: None,
                max_ms: None,
                failures: BTreeMap::new(),
            },
            rss: peak_kib.map(|kib| RssFigures {
                pid: 1,
                start_kib: Some(kib),
                peak_kib: Some(kib),
                end_kib: Some(kib),
                samples: 1,
                error: None,
            }),
            ramp: None,
            open_attacking_connections: None,
            attack: Vec::new(),
            generator_lag_ms: GeneratorLag {
                p50: 1.0,
                p99: 1.0,
                max: 2.0,
            },
        }
    }

    #[test]
    fn a_run_inside_every_bound_meets_the_goal() {
        let goal = judge(&run_with(99, 99.9, Some(511 * 1024), (300, 300)));
        assert!(goal.met, "{goal:?}");
        assert!(goal.notes.is_empty(), "{goal:?}");
    }

    #[test]
    fn a_lagging_generator_or_a_smaller_attack_is_noted_beside_the_verdict() {
        let mut run = run_with(100, 10.0, Some(1024), (300, 300));
        run.attackers = 40;
        run.generator_lag_ms.p99 = 25.0;
        let goal = judge(&run);
        assert!(goal.met, "the notes do not change the verdict: {goal:?}");
        assert_eq!(goal.notes.len(), 2, "{goal:?}");
        assert!(goal.notes[0].contains("this run had 40"), "{goal:?}");
        assert!(goal.notes[1].contains("25.0 ms late"), "{goal:?}");
    }

    #[test]
    fn each_bound_missed_fails_its_own_line() {
        let cases = [
            (
                run_with(98, 10.0, Some(1024), (300, 300)),
                "buyers who paid",
            ),
            (
                run_with(100, 100.0, Some(1024), (300, 300)),
                "p99 of the buyers' requests",
            ),
            (
                run_with(100, 10.0, Some(512 * 1024), (300, 300)),
                "server RSS at its peak",
            ),
            (
                run_with(100, 10.0, None, (300, 300)),
                "server RSS at its peak",
            ),
            (
                run_with(100, 10.0, Some(1024), (299, 300)),
                "/healthz probes answered 200 within 1 s",
            ),
            (
                run_with(100, 10.0, Some(1024), (0, 0)),
                "/healthz probes answered 200 within 1 s",
            ),
        ];
        for (run, line) in cases {
            let goal = judge(&run);
            assert!(!goal.met, "{line}: {goal:?}");
            let failed: Vec<&str> = goal
                .lines
                .iter()
                .filter(|l| !l.pass)
                .map(|l| l.name)
                .collect();
            assert_eq!(failed, [line], "{goal:?}");
        }
    }

    #[test]
    fn the_open_files_limit_is_at_least_as_high_as_before() {
        let limits = raise_open_files_limit(10);
        assert!(limits.soft >= limits.soft_before, "{limits:?}");
        if limits.problem.is_none() {
            assert_eq!(limits.soft, limits.hard);
        }
    }
}
