//! `boxoffice-load`: a load generator that drives the buyer flow of API.md against a running
//! server and checks, through the API, that nothing was oversold and no money was lost.
//!
//! How a run goes: resolve `--url` (loopback only unless `--allow-remote`), start the bare
//! server when the mode floods it (`--ceiling bare`, the default, in ceiling, holds, polls and
//! payments), and open the connections → **setup** (unmeasured: a date, sign-ups, for some
//! modes sign-ins and admission) → **measured** phase of the chosen mode, bounded by
//! `--duration` and `--max-requests` → **audit** (unmeasured: the invariants) → the report, a
//! table or `--json`. The bare server is killed when the run ends.
//!
//! Modules, bottom up:
//! - `bare`: the bare server, the no-work ceiling's default: this binary run again with
//!   `--serve-bare` in a process of its own, on the server's HTTP stack, parsing a small JSON
//!   body and answering it back; and its handle, which starts it and kills it when dropped.
//! - `pool`: turns for the connections, served by priority (purchases first).
//! - `client`: the lean HTTP/1.1 client (hyper, one connection per virtual connection, to the
//!   server and, for the ceiling, to the bare server), the run's budget, retries of 429/503
//!   and broken connections.
//! - `stats`: per-endpoint HDR histograms and error counts of the measured phase.
//! - `api`: API.md as typed calls, and the waiting-room admission loop.
//! - `setup`: usernames, sign-ups, admitted buyers, the date.
//! - `sell_out`, `hot_seat`, `holds`, `soak`, `ceiling`, `polls`, `payments`, `siege`,
//!   `opening`: the modes (`ceiling` also holds `flood` and `interleaved`, the measured phases
//!   `payments` and `polls` reuse for the ceiling and their own request; `siege` has its
//!   attackers in `siege::attack` and its health probes in `siege::probe`; `opening` has what
//!   the buyers saw of the line and the order check in `opening::line`, and the uniformity tests
//!   of the draw in `opening::draw`).
//! - `fill`: `holds --fill-holds N`, the server brought to N live holds between two slices.
//! - `series`: completions per second of a measured phase (`holds`, `payments`) and their
//!   summary.
//! - `rss`: the server's resident memory, sampled during a soak (and after `polls`' setup,
//!   around a fill), and the verdict on it.
//! - `audit`: the invariant check. `report`: the table and the JSON. `progress`: the bar.

mod api;
mod audit;
mod bare;
mod ceiling;
mod client;
mod fill;
mod holds;
mod hot_seat;
mod opening;
mod payments;
mod polls;
mod pool;
mod progress;
mod purchase;
mod report;
mod rss;
mod sell_out;
mod series;
mod setup;
mod siege;
mod soak;
mod stats;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use audit::{Auditor, BuyerRecord};
use bare::BareServer;
use ceiling::CeilingRequest;
use client::{Client, Target};
use progress::Display;
use setup::Names;

const ADMIN_TOKEN_ENV: &str = "BOXOFFICE_ADMIN_TOKEN";
/// The most seats one date may have (API.md: `seat_count` 1–100,000).
const SEATS_MAX: u32 = 100_000;
/// `--duration` and `--max-requests` when not given: soak runs long.
const DURATION_SECONDS: u64 = 60;
const SOAK_DURATION_SECONDS: u64 = 600;
const SIEGE_DURATION_SECONDS: u64 = 30;
/// The most reservations (and balance entries) the siege's user with long lists is given.
const LIST_ENTRIES_MAX: u32 = 20_000;
const MAX_REQUESTS: u64 = 2_000_000;
/// The most a room's `max_active` and `admit_per_second` may be (API.md).
const ROOM_LIMIT_MAX: u32 = 10_000_000;
const SOAK_MAX_REQUESTS: u64 = 20_000_000;

/// Load generator for the boxoffice server: drives the buyer flow of API.md and checks the
/// invariants through the API.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "boxoffice-load",
    version,
    about,
    long_about = "\
Load generator for the boxoffice server. It drives the buyer flow of API.md against a running
server and reports requests per second and latency percentiles (p50/p90/p99/p99.9, from HDR
histograms) per endpoint, errors by HTTP status and API error code, and an invariant check made
through the API after the run: no seat sold twice, every date's seat listing agrees with the paid
reservations the buyers recorded, and money conserved (top-ups = balances + payments).

Exit status: 0 all invariants hold, 1 an invariant failed, 2 the run could not be done.

Every run is bounded in time (--duration) and in requests (--max-requests). Setup work — creating
the date, signing buyers up (argon2, slow by design), admitting them for hot-seat and holds — is
not measured and has its own progress bar. The generator only loads servers on this machine
(loopback) unless --allow-remote is given.

Make the server cheap to load before a run, e.g. with environment overrides:
  BOXOFFICE__ADMIN__TOKEN=$ADMIN_TOKEN   (ADMIN_TOKEN=$(openssl rand -hex 32); the server
                                           refuses admin tokens under 32 characters)
  BOXOFFICE__AUTH__ARGON2_MEMORY_KIB=8 BOXOFFICE__AUTH__ARGON2_ITERATIONS=1
  BOXOFFICE__LIMITS__AUTH_ATTEMPTS_PER_MINUTE_PER_IP=0
  BOXOFFICE__LIMITS__SESSION_REQUESTS_PER_SECOND=0
  BOXOFFICE__QUEUE__MAX_ACTIVE=5000 BOXOFFICE__QUEUE__ADMIT_PER_SECOND=5000
  BOXOFFICE__SERVER__MAX_IN_FLIGHT=100000

Modes:
  sell-out  --buyers N chase --seats S seats of a new date through the whole flow: sign in,
            take a queue token and poll until admitted (following poll_after_seconds, at most
            5 s apart), hold 1..k seats (on 409 try others), top up, pay. Buyers still waiting
            leave the queue once the date is sold out. Reports the seconds until sold out.
  best-available
            the sell-out on a date of --seats (50000) laid out in sections of 100 rows of 18
            to 60 seats (a repeating pattern of odd and even lengths), priced from twice --price
            at the front to half of it at the back. Buyers ask for the best 1..k adjacent seats
            (best_available) instead of naming them, and settle for one fewer when 409
            no_adjacent_seats says none are left together. Reports the sale's throughput and
            latencies, and orphan seats: those left single at the end (from the listing), and
            the holds that left an orphan while a block leaving none was free, found by
            replaying the granted holds in the date's order (reservation numbers) on an empty
            layout; a hold released unpaid is replayed as never made, which can only raise
            that count. Any avoidable orphan fails the run. Start the server as for sell-out.
  hot-seat  admitted buyers race for the same few seats (default 10), round after round on a
            new date each: winners top up, pay and queue again; losers try the other seats.
  holds     admitted buyers each hold distinct seats as fast as the server answers (session and
            queue token checked on every request), cancelling their oldest hold once at the
            per-user limit: durable holds per second. The ceiling is flooded for a quarter of
            --duration just before the holds and again just after; the report sets the durable
            writes per second (holds and cancels) against it, and the holds completed in each
            second (min / median / max, first quarter against last), so a fall shows. Raise
            holds.max_seats_per_user on the server (e.g. BOXOFFICE__HOLDS__MAX_SEATS_PER_USER=1000)
            to time holds alone.
            --fill-holds N: is the rate flat as state grows? The same slice (ceiling, holds,
            ceiling) is taken on the empty server, then the fill brings the server to N live
            holds (admin stats' seats_held; one seat a hold, on dates of 100000 seats made
            during setup, the buyers' holds spread evenly over them, no idempotency keys, as
            fast as the server answers, bounded by --setup-timeout), then the slice again on a
            date of its own. The report gives rate_empty, rate_after_fill and flat_ratio (their
            quotient; flat when >= 0.9), each beside its own ceiling; with --server-pid the
            server's RSS before and after the fill and the bytes per live hold it added. The
            server must keep the holds and allow them: a long holds.ttl_seconds and queue
            active TTL, a waiting room that admits --buyers at once, and the per-user limits
            the report states (a 422 hold_limit stops the fill with the figures); start it
            afresh, or the live holds of earlier runs count. For --buyers 10000
            --fill-holds 1000000:
              BOXOFFICE__HOLDS__TTL_SECONDS=3600 BOXOFFICE__QUEUE__ACTIVE_TTL_SECONDS=3600
              BOXOFFICE__HOLDS__MAX_SEATS_PER_USER=10 BOXOFFICE__HOLDS__MAX_SEATS_PER_USER_TOTAL=120
  soak      steady mixed load for 10 minutes (--duration) from a fixed population of buyers,
            signed up and in once: over and over each takes a queue token and waits to be
            admitted, reads the seat map, holds 1-2 seats, then cancels (40%), lets the hold
            expire (20%) or tops up and pays (40%), sometimes reads balance, history and
            reservations (25%), and leaves the queue. When the current date runs low on
            available seats a new one is created (admin API; each date is new server state,
            so keep them large: --seats defaults to 20000); the report counts them. Run the
            server with short holds (BOXOFFICE__HOLDS__TTL_SECONDS=10) so let-sit holds come
            back soon. With --server-pid PID the server's RSS (VmRSS of /proc/PID/status) is
            sampled every --sample-seconds of the measured phase, which starts after setup
            and a --warmup of the same load; the report gives start, end, max, every sample
            and a verdict: flat when the mean RSS of the samples in the last third of the
            measured phase is less than --rss-growth-max-percent (10) above the mean of those
            in the first third, else growing.
  ceiling   a request that does no work on every connection: the HTTP ceiling of this
            client on this machine. By default POST / of the bare server, which the generator
            starts itself in a process of its own: the server's HTTP stack (axum, hyper, a
            multi-threaded tokio runtime) parsing a small JSON body and answering it back,
            and nothing else. --ceiling healthz floods the server's GET /healthz instead,
            which reads no body but goes through the server's middleware. holds, polls and
            payments measure the same ceiling in the same run and report their ratio to it.
  polls     queue polls against a long waiting line: setup signs --buyers N up and in and each
            takes a queue token (positions learned from the issuing answers); the measured
            phase alternates the ceiling and GET /api/v1/queue/tokens/current of random
            waiting buyers on every connection, in up to 4 rounds that give each --duration
            in all (and each round's slice a quarter of --max-requests), so a server still
            busy after setup weighs on both sides of the ratio alike. Every poll must answer
            waiting at the buyer's exact position; any other answer is a mismatch and fails
            the run. Reports polls/s (exact answers), the ceiling's req/s and their ratio.
            The line must hold still, so start the server for it with one admission slot and
            long TTLs:
              BOXOFFICE__QUEUE__MAX_ACTIVE=1 BOXOFFICE__QUEUE__WAITING_TTL_SECONDS=86400
              BOXOFFICE__QUEUE__ACTIVE_TTL_SECONDS=86400
            and nothing else using the waiting room. With --server-pid PID the report gives the
            server's RSS after setup. The run's tokens leave the queue at the end.
  payments  durable payments per second: setup creates a date (--seats, default --buyers),
            signs --buyers N up and in, admits them all, and each holds one distinct seat and
            tops up its price. The measured phase is the ceiling for --duration, then every
            connection takes the next buyer who has not paid and pays for its hold
            (POST /api/v1/payments; a payment ends the payer's queue token, so each pays once)
            until all have paid or --duration / --max-requests end it. Reports payments/s
            (201s) and those of each second, the ceiling's req/s and their ratio; the audit
            checks as for sell-out. All buyers must be admitted at once and their holds outlive
            setup, so start the server with BOXOFFICE__QUEUE__MAX_ACTIVE above --buyers (and a
            high ADMIT_PER_SECOND).
  siege     slow and idle clients against real buyers, on loopback only. Setup creates a date,
            signs --buyers N up, and gives one more user --list-entries (1000) reservations
            (held and cancelled at once) and as many balance-history entries (1-won top-ups).
            Then two runs of --duration (30 s) each: a baseline, then the same under attack.
            In each the buyers arrive over the first half of the run, on connections opened
            anew from 127.0.0.1, and go through the whole flow (sign in, queue token until
            active, hold a seat of their own, top up, pay); GET /healthz is probed every
            100 ms on a fresh connection with a 1 s timeout; with --server-pid the server's
            RSS is sampled every 0.5 s; the generator times its own lateness, which the
            buyers' latencies include (attackers and probes run on threads of their own).
            Before the second run
            --attackers N (4000) connections are opened (given up to 15 s), a fifth of each kind:
              slow body     a POST head with Content-Length: 100, one byte of body, nothing more
              slowloris     a request line, then one header line every 5 s, never the end
              idle          connects and sends nothing
              unread        GET /api/v1/reservations and GET /api/v1/balance/history as the
                            user with long lists, pipelined on a 4 KiB receive buffer, never
                            read (the first sent again every 5 s, to learn of a reset)
              big length    a POST head with Content-Length: 1000000, then 16 bytes a second
            each reopened (after 0.25 s) when the server closes it. They come from 127.0.0.2,
            127.0.0.3, ... (at most 200 per address; Linux routes 127/8 to lo), the buyers and
            probes from 127.0.0.1, so a per-address bound on the server meets only attackers;
            --url must be an IPv4 loopback address. The generator raises its own open-files
            limit to the hard limit first and says so if it cannot. The report sets the runs
            side by side (buyers who paid, p99 of their requests, probes answered 200, peak
            RSS, what each kind of attacker saw) and judges the run under attack against the
            goal, line by line PASS or FAIL: with 4000 attackers, >= 99% of the buyers pay,
            their requests' p99 < 100 ms, RSS < 512 MiB, every probe answered. A missed goal
            changes the exit status only with --require-goal. Start the server as for
            sell-out, with the session rate limit off (the user with long lists builds them
            fast) and a waiting room that admits --buyers at once; leave its connection
            settings at their defaults.
  opening   the opening of a sale with a pre-queue. Setup signs --buyers N up and in, and only
            then creates a concert whose sale opens --pre-queue-seconds (60) later, with a
            waiting room of its own (--room-max-active 1000, --room-rate 500 a second) and one
            date of --seats (default --buyers / 2) seats; every buyer takes a token of that room
            (POST /api/v1/queue/tokens {concert_id}), which must come back pre_queue, else the
            run stops and asks for a larger --pre-queue-seconds. The pre-queue's size in that
            answer is the buyer's arrival index. The measured phase starts at the opening: every
            buyer polls at once — its first waiting position plus the admissions already made
            is its drawn place — then again after half the time the room needs at its rate to
            admit those ahead of it, at least 1 s apart (the server's poll_after_seconds would
            have 100000 buyers poll 20000 times a second); once active it holds the best seat
            left, tops up and pays, which frees its place. The phase ends at sold out (buyers
            still waiting stop), --duration or --max-requests; then the run's tokens leave the
            room and the audit runs as for sell-out. Reports the seconds from the opening to
            sold out; admissions per second against the room's rate, overall and second by
            second; the wait from the opening to admission (the server's instant: expires_at
            less the active TTL, which the answers give away) and to the answer that told the
            buyer, p50/p90/p99/max; the room's own figures (GET
            /api/v1/admin/waiting-rooms/{concert_id}); and checks, each failing the run: no
            token dropped from the line and no answer API.md does not expect; the room's
            order_violations is 0; the client's own order check finds no admission
            that passed a waiting token (between a waiting answer at position p and a later
            answer at p' or the buyer's admission, no more than p - p' or p - 1 of the
            admissions it saw may fall, counting only those stamped surely in between, 50 ms of
            slack, one tick's admissions unordered); and the draw is uniform: arrival index
            against drawn place, a chi-square test of independence on a 10x10 table of deciles
            (81 df, critical value by the Wilson-Hilferty approximation) and Spearman's rho
            within 3.29/sqrt(n-1), both at 0.001. Start the server afresh as for sell-out (rate
            limits off, cheap argon2, an admin token), with room for every poll in flight and
            waiting tokens that outlive a slow poll:
              BOXOFFICE__SERVER__MAX_IN_FLIGHT=100000 BOXOFFICE__QUEUE__WAITING_TTL_SECONDS=3600

Examples:
  boxoffice-load --mode sell-out --admin-token $ADMIN_TOKEN --seats 2000 --buyers 8000 --connections 64
  boxoffice-load --mode best-available --admin-token $ADMIN_TOKEN --buyers 25000 --connections 64
  boxoffice-load --mode hot-seat --admin-token $ADMIN_TOKEN --buyers 500 --seats 10 --rounds 200
  boxoffice-load --mode holds --admin-token $ADMIN_TOKEN --buyers 256 --duration 20
  boxoffice-load --mode holds --admin-token $ADMIN_TOKEN --buyers 10000 --duration 10 --fill-holds 1000000 --server-pid 4242
  boxoffice-load --mode soak --admin-token $ADMIN_TOKEN --buyers 2000 --connections 32 --server-pid 4242
  boxoffice-load --mode ceiling --duration 10 --json
  boxoffice-load --mode polls --buyers 100000 --connections 64 --duration 8 --server-pid 4242
  boxoffice-load --mode payments --admin-token $ADMIN_TOKEN --buyers 60000 --connections 64 --duration 8
  boxoffice-load --mode siege --admin-token $ADMIN_TOKEN --buyers 500 --attackers 4000 --duration-seconds 30 --server-pid 4242
  boxoffice-load --mode opening --admin-token $ADMIN_TOKEN --buyers 100000 --duration 300 --max-requests 5000000"
)]
pub struct Cli {
    /// What to measure; see the modes above.
    #[arg(long, value_enum, default_value_t = Mode::SellOut)]
    pub mode: Mode,
    /// The server's root URL. Only loopback addresses unless --allow-remote.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's admin.token, to create the run's concert and dates (every mode but
    /// ceiling and polls). Also read from the environment variable BOXOFFICE_ADMIN_TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Virtual buyers (each a user of its own, signed up during setup).
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub buyers: usize,
    /// Concurrent HTTP/1.1 connections. A request waits for a free one; waiting requests go by
    /// priority (hold, top-up, payment first; then seat maps and leaving; then the waiting
    /// room; then sign-ins), in arrival order within one. Latencies exclude this wait, which is
    /// reported apart.
    #[arg(long, default_value_t = 64, value_name = "C")]
    pub connections: usize,
    /// Seats of the date the run creates [default: sell-out 1000, best-available 50000,
    /// hot-seat 10, holds 100000, soak 20000, payments --buyers, opening --buyers / 2].
    #[arg(long, value_name = "S")]
    pub seats: Option<u32>,
    /// Upper bound on the measured phase, in seconds [default: 60, soak 600, siege 30 for
    /// each of its two runs].
    #[arg(long, visible_alias = "duration-seconds", value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Upper bound on the requests of the measured phase [default: 2000000, soak 20000000].
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// sell-out, best-available: each buyer wants 1..=k seats, drawn at random (the server's
    /// holds.max_seats_per_user caps it; a 422 hold_limit makes the buyer want fewer).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub seats_per_buyer: u32,
    /// Price of a seat in won for the dates the run creates.
    #[arg(long, default_value_t = 50_000, value_name = "WON")]
    pub price: u64,
    /// hot-seat: rounds (each a new date of --seats seats).
    #[arg(long, default_value_t = 200, value_name = "R")]
    pub rounds: u32,
    /// sell-out: buyers arriving per second; 0 means all at once.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
    pub arrival_rate: f64,
    /// opening: the concert's room admits at most this many buyers at once (its
    /// waiting_room.max_active).
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub room_max_active: u32,
    /// opening: the concert's room admits at most this many buyers a second (its
    /// waiting_room.admit_per_second).
    #[arg(long, default_value_t = 500, value_name = "PER_SECOND")]
    pub room_rate: u32,
    /// opening: seconds from creating the concert, once every buyer is signed in, to its sale
    /// opening: the time every buyer has to take its pre-queue token.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub pre_queue_seconds: u64,
    /// soak: seconds of the same load before the measured phase (not measured, no RSS
    /// samples), so the start RSS is that of a server already serving, its bounded windows
    /// (the last minute's idempotency records, ended queue tokens, page caches) full.
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub warmup: u64,
    /// siege: attacking connections, a fifth of each kind, at most 200 per source address.
    #[arg(long, default_value_t = 4_000, value_name = "N")]
    pub attackers: usize,
    /// siege: reservations and balance-history entries of the user whose lists the
    /// unread-response attackers ask for.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub list_entries: u32,
    /// siege: a missed goal fails the run (exit status 1). Without it the exit status says only
    /// whether the run itself went right.
    #[arg(long)]
    pub require_goal: bool,
    /// holds: before the measured slice, bring the server to N live holds (and measure the same
    /// slice on the empty server first); see the holds mode above. At most 10000000.
    #[arg(long, value_name = "N")]
    pub fill_holds: Option<u64>,
    /// soak, polls, siege, holds with --fill-holds: the server's process id, to sample its RSS
    /// (VmRSS in /proc/PID/status; the server must run on this machine). Without it the report
    /// says RSS was not sampled.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// soak: seconds between RSS samples.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub sample_seconds: u64,
    /// soak: the verdict is "flat" when the last third's mean RSS is less than this many
    /// percent above the first third's.
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    pub rss_growth_max_percent: f64,
    /// The no-work request of the ceiling (mode ceiling, and the slices holds, polls and
    /// payments set themselves against): bare is POST / of the bare server the generator
    /// starts, a small JSON body parsed and answered back on the server's HTTP stack; healthz
    /// is the server's GET /healthz, with no body.
    #[arg(long, value_enum, default_value_t = CeilingRequest::Bare)]
    pub ceiling: CeilingRequest,
    /// Upper bound on the setup phase (sign-ups, admission), in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub setup_timeout: u64,
    /// A request without an answer after this many seconds is given up (and retried, bounded).
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub request_timeout: u64,
    /// Runtime threads of the generator. It shares the machine with the server, so 1 by default.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Seed for the buyers' seat choices (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object instead of the table; no progress bar.
    #[arg(long)]
    pub json: bool,
    /// Allow a --url that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Be the bare server instead (how the generator starts it): print the address bound on
    /// 127.0.0.1 and serve until stdin closes.
    #[arg(long = "serve-bare", hide = true, exclusive = true)]
    pub serve_bare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// N buyers go through the whole flow until the date is sold out.
    SellOut,
    /// The sell-out on a layout of sections of varied row lengths, buyers asking the server
    /// for the best 1..k adjacent seats; orphan seats counted at the end.
    BestAvailable,
    /// All buyers race for the same few seats, round after round.
    HotSeat,
    /// Admitted buyers hold distinct seats as fast as possible, between two slices of the
    /// ceiling: holds per second.
    Holds,
    /// Ten minutes of mixed load from a fixed population, the server's RSS sampled.
    Soak,
    /// The no-work request (--ceiling) on every connection: the HTTP ceiling.
    Ceiling,
    /// The ceiling and queue polls of a long waiting line in alternating rounds, positions
    /// checked.
    Polls,
    /// The ceiling, then each admitted buyer pays once for its held seat: payments per second.
    Payments,
    /// Buyers through the whole flow, beside thousands of slow and idle connections, against
    /// a baseline without them.
    Siege,
    /// Buyers wait in a concert room's pre-queue; from the opening they are let in at the
    /// room's rate in the drawn order: the sale timed, the order and the draw checked.
    Opening,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::SellOut => "sell-out",
            Mode::BestAvailable => "best-available",
            Mode::HotSeat => "hot-seat",
            Mode::Holds => "holds",
            Mode::Soak => "soak",
            Mode::Ceiling => "ceiling",
            Mode::Polls => "polls",
            Mode::Payments => "payments",
            Mode::Siege => "siege",
            Mode::Opening => "opening",
        }
    }

    /// Whether the mode floods the ceiling (`--ceiling`'s request).
    pub fn floods_ceiling(self) -> bool {
        matches!(
            self,
            Mode::Ceiling | Mode::Holds | Mode::Polls | Mode::Payments
        )
    }
}

/// What every mode gets.
pub struct Context {
    pub cli: Cli,
    pub client: Client,
    pub names: Names,
    pub display: Display,
    pub seed: u64,
    admin_token: Option<String>,
}

impl Context {
    /// The setup every mode shares: sign up `--buyers` buyers, then the auditor, admitted, whose
    /// session and queue token read the seat listings at the end.
    async fn sign_up_buyers_and_auditor(&self) -> anyhow::Result<(String, String)> {
        self.sign_up_buyers().await?;
        setup::admit_one(&self.client, &self.names.auditor(), self.setup_timeout())
            .await
            .map_err(|why| anyhow::anyhow!("the auditor: {why}"))
    }
    async fn sign_up_buyers(&self) -> anyhow::Result<()> {
        setup::sign_up_all(
            &self.client,
            self.display,
            &self.names,
            self.cli.buyers,
            self.setup_timeout(),
        )
        .await
    }

    async fn sign_in_buyers(&self) -> anyhow::Result<Vec<setup::SignedIn>> {
        setup::sign_in_all(
            &self.client,
            self.display,
            &self.names,
            self.cli.buyers,
            self.setup_timeout(),
        )
        .await
    }

    /// Signs every buyer in and waits until all are admitted (the modes that start with every
    /// buyer ready to hold).
    async fn sign_in_and_admit_buyers(&self) -> anyhow::Result<Vec<setup::Admitted>> {
        setup::sign_in_and_admit(
            &self.client,
            self.display,
            &self.names,
            self.cli.buyers,
            self.admission_wait(),
        )
        .await
    }

    pub fn admin_token(&self) -> anyhow::Result<&str> {
        self.admin_token.as_deref().with_context(|| {
            format!(
                "--mode {} creates a date: pass the server's admin.token as --admin-token or {ADMIN_TOKEN_ENV}",
                self.cli.mode.name()
            )
        })
    }

    pub fn seats(&self) -> u32 {
        self.cli.seats.unwrap_or(match self.cli.mode {
            Mode::SellOut | Mode::Ceiling | Mode::Polls => 1_000,
            Mode::BestAvailable => 50_000,
            Mode::HotSeat => 10,
            Mode::Holds => SEATS_MAX,
            Mode::Soak => 20_000,
            Mode::Payments => (self.cli.buyers as u32).clamp(1, SEATS_MAX),
            Mode::Opening => ((self.cli.buyers / 2) as u32).clamp(1, SEATS_MAX),
            Mode::Siege => siege_seats(&self.cli),
        })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.cli.duration.unwrap_or(match self.cli.mode {
            Mode::Soak => SOAK_DURATION_SECONDS,
            Mode::Siege => SIEGE_DURATION_SECONDS,
            _ => DURATION_SECONDS,
        }))
    }

    pub fn max_requests(&self) -> u64 {
        self.cli.max_requests.unwrap_or(match self.cli.mode {
            Mode::Soak => SOAK_MAX_REQUESTS,
            _ => MAX_REQUESTS,
        })
    }

    pub fn setup_timeout(&self) -> Duration {
        Duration::from_secs(self.cli.setup_timeout)
    }

    /// How long setup waits to admit one buyer: a full waiting room does not empty by itself,
    /// so waiting longer than this rarely helps.
    pub fn admission_wait(&self) -> Duration {
        self.setup_timeout().min(Duration::from_secs(60))
    }

    /// Waits for the measured work, at most `--duration` plus the time in-flight requests need
    /// to finish after the halt; past that the work is aborted.
    pub async fn bounded<T>(&self, work: JoinHandle<T>) -> Option<T> {
        let grace = Duration::from_secs(self.cli.request_timeout + 5);
        let abort = work.abort_handle();
        match tokio::time::timeout(self.duration() + grace, work).await {
            Ok(Ok(output)) => Some(output),
            Ok(Err(_)) => None,
            Err(_) => {
                abort.abort();
                eprintln!("boxoffice-load: the measured work did not stop in time and was aborted");
                None
            }
        }
    }
}

/// What a mode hands back for the audit and the report.
pub struct ModeRun {
    pub setup_seconds: f64,
    pub measured_seconds: f64,
    pub outcome: Value,
    pub records: Vec<BuyerRecord>,
    /// `(date_id, seat_count)` of every date the run created.
    pub dates: Vec<(String, u32)>,
    pub auditor: Option<Auditor>,
    pub check_holds: bool,
    /// The server's RSS during the run (soak only).
    pub rss: Option<rss::RssReport>,
    /// The mode's own checks of the answers; one failed fails the run (exit status 1).
    pub checks: Vec<report::Check>,
    /// Endpoints timed over a sub-phase of their own, with its seconds (see `Stats::summary`).
    pub endpoint_seconds: Vec<(api::Endpoint, f64)>,
    /// The baseline and the run under attack (siege only).
    pub siege: Option<siege::SiegeReport>,
}

/// A siege's date: a seat for each buyer in each of the two runs, and one for each of the
/// listed user's reservations.
fn siege_seats(cli: &Cli) -> u32 {
    (2 * cli.buyers as u64 + u64::from(cli.list_entries)).min(u64::from(u32::MAX)) as u32
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serve_bare {
        return match bare::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("boxoffice-load {}: {error:#}", bare::SERVE_FLAG);
                ExitCode::from(2)
            }
        };
    }
    let json = cli.json;
    let outcome = validate(&cli).and_then(|()| {
        // Killed when dropped, after the runtime is gone.
        let bare = (cli.ceiling == CeilingRequest::Bare && cli.mode.floods_ceiling())
            .then(BareServer::start)
            .transpose()?;
        let mut runtime = if cli.threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(cli.threads);
            builder
        };
        let runtime = runtime.enable_all().build().context("a tokio runtime")?;
        let outcome = runtime.block_on(run(cli, bare.as_ref().map(BareServer::addr)));
        // Connection tasks may still be parked; do not wait for them.
        runtime.shutdown_background();
        outcome
    });
    match outcome {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serialises")
                );
            } else {
                report::print_table(&report);
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            if json {
                println!("{}", json!({"ok": false, "error": format!("{error:#}")}));
            }
            eprintln!("boxoffice-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(cli: &Cli) -> anyhow::Result<()> {
    if !(1..=4_096).contains(&cli.connections) {
        bail!("--connections must be 1..=4096");
    }
    if cli.duration == Some(0) || cli.max_requests == Some(0) {
        bail!("--duration and --max-requests must be at least 1: every run is bounded by both");
    }
    if cli.mode != Mode::Ceiling && !(1..=1_000_000).contains(&cli.buyers) {
        bail!("--buyers must be 1..=1000000");
    }
    if let Some(seats) = cli.seats {
        if !(1..=SEATS_MAX).contains(&seats) {
            bail!("--seats must be 1..={SEATS_MAX} (API.md's seat_count)");
        }
    }
    if cli.seats_per_buyer == 0 {
        bail!("--seats-per-buyer must be at least 1");
    }
    if !(cli.arrival_rate.is_finite() && cli.arrival_rate >= 0.0) {
        bail!("--arrival-rate must be a number >= 0");
    }
    if cli.request_timeout == 0 || cli.setup_timeout == 0 {
        bail!("--request-timeout and --setup-timeout must be at least 1");
    }
    if !(1..=64).contains(&cli.threads) {
        bail!("--threads must be 1..=64");
    }
    if cli.mode == Mode::Polls && cli.buyers < 2 {
        bail!("--mode polls needs --buyers 2 or more: one token is admitted, the rest wait");
    }
    if cli.mode == Mode::Payments {
        let seats = cli.seats.unwrap_or(SEATS_MAX);
        if cli.buyers > seats as usize {
            bail!(
                "--mode payments: each buyer holds a seat of its own, so --buyers must be at most \
                 --seats (and at most {SEATS_MAX})"
            );
        }
    }
    if cli.mode == Mode::Opening {
        if cli.buyers < opening::BUYERS_MIN {
            bail!(
                "--mode opening needs --buyers {} or more to test the draw",
                opening::BUYERS_MIN
            );
        }
        if !(1..=ROOM_LIMIT_MAX).contains(&cli.room_max_active)
            || !(1..=ROOM_LIMIT_MAX).contains(&cli.room_rate)
        {
            bail!("--room-max-active and --room-rate must be 1..={ROOM_LIMIT_MAX} (API.md)");
        }
        if !(1..=86_400).contains(&cli.pre_queue_seconds) {
            bail!("--pre-queue-seconds must be 1..=86400");
        }
    }
    if let Some(n) = cli.fill_holds {
        if cli.mode != Mode::Holds {
            bail!("--fill-holds is for --mode holds");
        }
        if !(1..=fill::FILL_HOLDS_MAX).contains(&n) {
            bail!(
                "--fill-holds must be 1..={} ({} dates of {SEATS_MAX} seats)",
                fill::FILL_HOLDS_MAX,
                fill::FILL_HOLDS_MAX / u64::from(SEATS_MAX)
            );
        }
    }
    let samples_rss = matches!(cli.mode, Mode::Soak | Mode::Polls | Mode::Siege)
        || (cli.mode == Mode::Holds && cli.fill_holds.is_some());
    if !samples_rss && cli.server_pid.is_some() {
        bail!("--server-pid is for --mode soak, polls and siege, and holds with --fill-holds");
    }
    if cli.mode == Mode::Siege {
        if cli.allow_remote {
            bail!("--mode siege runs on loopback only: --allow-remote is refused");
        }
        if cli.attackers > siege::ATTACKERS_MAX {
            bail!(
                "--attackers must be at most {} ({} source addresses of {} connections)",
                siege::ATTACKERS_MAX,
                siege::ATTACKERS_MAX / siege::PER_SOURCE_MAX,
                siege::PER_SOURCE_MAX
            );
        }
        if cli.list_entries > LIST_ENTRIES_MAX {
            bail!("--list-entries must be at most {LIST_ENTRIES_MAX}");
        }
        if cli.seats.is_some() {
            bail!("--mode siege sizes its date itself: 2 x --buyers + --list-entries seats");
        }
        if siege_seats(cli) > SEATS_MAX {
            bail!(
                "--mode siege needs 2 x --buyers + --list-entries seats on one date, at most \
                 {SEATS_MAX}"
            );
        }
    } else if cli.require_goal {
        bail!("--require-goal is for --mode siege");
    }
    if !(1..=3_600).contains(&cli.sample_seconds) {
        bail!("--sample-seconds must be 1..=3600");
    }
    if cli.warmup > 3_600 {
        bail!("--warmup must be at most 3600 seconds");
    }
    if !(cli.rss_growth_max_percent.is_finite() && cli.rss_growth_max_percent > 0.0) {
        bail!("--rss-growth-max-percent must be a number > 0");
    }
    if let Some(pid) = cli.server_pid {
        rss::read_kib(pid).map_err(|why| {
            anyhow::anyhow!("--server-pid {pid}: cannot read its RSS ({why}); is the server running on this machine?")
        })?;
    }
    Ok(())
}

/// One run against the server at `--url`, with the bare server at `bare` when it runs.
async fn run(cli: Cli, bare: Option<SocketAddr>) -> anyhow::Result<report::Report> {
    let target = Target::resolve(&cli.url, cli.allow_remote).await?;
    let bare = match bare {
        Some(addr) => Some(Target::resolve(&format!("http://{addr}"), false).await?),
        None => None,
    };
    let client = Client::new(
        target,
        bare,
        cli.connections,
        Duration::from_secs(cli.request_timeout),
    );
    client.connect_all(cli.connections).await?;
    api::health(&client).await.map_err(|fail| {
        anyhow::anyhow!(
            "GET {}/healthz: {fail}; is the server running?",
            client.url()
        )
    })?;
    let admin_token = cli
        .admin_token
        .clone()
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let display = Display {
        enabled: !cli.json && std::io::stdout().is_terminal(),
    };
    let seed = cli.seed.unwrap_or_else(rand::random);
    let ctx = Context {
        names: Names::new(rand::random()),
        client: client.clone(),
        display,
        seed,
        admin_token,
        cli,
    };
    let stats_before = match (&ctx.admin_token, ctx.cli.mode) {
        (Some(admin), mode) if !matches!(mode, Mode::Ceiling | Mode::Polls) => {
            api::admin_stats(&client, admin).await.ok()
        }
        _ => None,
    };
    let mode_run = match ctx.cli.mode {
        Mode::SellOut | Mode::BestAvailable => sell_out::run(&ctx).await?,
        Mode::HotSeat => hot_seat::run(&ctx).await?,
        Mode::Holds => holds::run(&ctx).await?,
        Mode::Soak => soak::run(&ctx).await?,
        Mode::Ceiling => ceiling::run(&ctx).await?,
        Mode::Polls => polls::run(&ctx).await?,
        Mode::Payments => payments::run(&ctx).await?,
        Mode::Siege => siege::run(&ctx).await?,
        Mode::Opening => opening::run(&ctx).await?,
    };
    let measured = client
        .stats()
        .summary(mode_run.measured_seconds, &mode_run.endpoint_seconds);
    let stopped_by = client.halt_reason();
    let setup_requests = client.unmeasured_requests();
    let audit_started = Instant::now();
    let mut auditor = mode_run.auditor;
    let invariants = match &mut auditor {
        Some(auditor) => Some(
            audit::audit(
                &client,
                display,
                auditor,
                audit::Scope {
                    dates: &mode_run.dates,
                    check_holds: mode_run.check_holds,
                    admin_token: ctx.admin_token.as_deref(),
                    stats_before,
                },
                &mode_run.records,
            )
            .await,
        ),
        None => None,
    };
    let audit_seconds = audit_started.elapsed().as_secs_f64();
    let queue_tokens_left = audit::clean_up(&client, auditor.as_ref(), &mode_run.records).await;
    let ok = invariants.as_ref().is_none_or(|a| a.ok) && mode_run.checks.iter().all(|c| c.ok);
    Ok(report::Report {
        tool: "boxoffice-load",
        mode: ctx.cli.mode.name(),
        url: client.url().to_owned(),
        ok,
        settings: json!({
            "buyers": ctx.cli.buyers,
            "connections": ctx.cli.connections,
            "seats": ctx.seats(),
            "duration_seconds": ctx.duration().as_secs(),
            "max_requests": ctx.max_requests(),
            "seats_per_buyer": ctx.cli.seats_per_buyer,
            "price": ctx.cli.price,
            "rounds": ctx.cli.rounds,
            "arrival_rate": ctx.cli.arrival_rate,
            "ceiling": ctx.cli.ceiling.endpoint().label(),
            "threads": ctx.cli.threads,
            "seed": ctx.seed,
            "run": ctx.names.run(),
            "warmup_seconds": (ctx.cli.mode == Mode::Soak).then_some(ctx.cli.warmup),
            "server_pid": ctx.cli.server_pid,
            "fill_holds": ctx.cli.fill_holds,
            "sample_seconds": (ctx.cli.mode == Mode::Soak).then_some(ctx.cli.sample_seconds),
            "attackers": (ctx.cli.mode == Mode::Siege).then_some(ctx.cli.attackers),
            "list_entries": (ctx.cli.mode == Mode::Siege).then_some(ctx.cli.list_entries),
            "require_goal": (ctx.cli.mode == Mode::Siege).then_some(ctx.cli.require_goal),
            "room_max_active": (ctx.cli.mode == Mode::Opening).then_some(ctx.cli.room_max_active),
            "room_rate": (ctx.cli.mode == Mode::Opening).then_some(ctx.cli.room_rate),
            "pre_queue_seconds": (ctx.cli.mode == Mode::Opening).then_some(ctx.cli.pre_queue_seconds),
        }),
        setup: report::Phase {
            seconds: mode_run.setup_seconds,
            requests: setup_requests,
        },
        measured,
        stopped_by,
        outcome: mode_run.outcome,
        invariants,
        checks: mode_run.checks,
        audit: report::Phase {
            seconds: audit_seconds,
            requests: client.unmeasured_requests() - setup_requests,
        },
        queue_tokens_left,
        rss: mode_run.rss,
        siege: mode_run.siege,
    })
}
