//! `polls`: queue polls against a long waiting line. Setup signs `--buyers` users up and in and
//! has each take a queue token, so that (on a server with `queue.max_active = 1` and long TTLs)
//! one token is active and every other waits with a known place in line. The measured phase
//! alternates, in rounds, a flood of the ceiling (`--ceiling`'s request, as in `ceiling`) with
//! polls of `GET /api/v1/queue/tokens/current` with the session and token of random waiting
//! buyers on every connection; every answer must say `waiting` at exactly the expected position.
//!
//! How the expected positions are known: the tokens are taken concurrently, and each one's
//! place is the `position` its issuing response gave. A token joins the back of the line and the
//! line only moves when a token ahead leaves it (admitted, dropped for not polling, expired,
//! left). On a server started as the mode's help says nothing leaves during the run: the only
//! admission slot is taken (by the run's first token, or by someone else's) for longer than the
//! run, and no waiting token goes unpolled long enough to be dropped. So a token's position at
//! issue is its position throughout, whatever the order the tokens were issued in. Setup checks
//! what it can (the positions are distinct; at most one of the run's tokens is active; the
//! `expires_at` of the waiting tokens and of the run's active one lie beyond the run's end) and
//! fails otherwise; anything that moves the line during the measured phase shows as mismatched
//! polls, which fail the run (exit status 1) rather than report wrong figures.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{self, Endpoint, Fail, QueueStatus};
use crate::audit::{self, BuyerRecord};
use crate::ceiling;
use crate::client::Client;
use crate::report::Check;
use crate::setup::{self, Queued};
use crate::{rss, Context, ModeRun};

/// Mismatch examples kept for the report.
const EXAMPLES_MAX: usize = 20;
/// Slack beyond the run's end that the tokens' `expires_at` must leave.
const TTL_MARGIN: Duration = Duration::from_secs(30);

/// A waiting buyer and where it stands in line.
struct Waiter {
    index: usize,
    session: String,
    token: String,
    position: u64,
}

struct Shared {
    client: Client,
    waiters: Vec<Waiter>,
    /// Answers `waiting` at the expected position, with the same token.
    exact: AtomicU64,
    /// Answers 200 that say anything else (another position, `active`, a reissued token), or
    /// a body API.md does not describe.
    mismatched: AtomicU64,
    /// 4xx answers other than 429: the token or session was no longer what setup left.
    refused: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Shared {
    fn note(&self, counter: &AtomicU64, example: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock();
        if examples.len() < EXAMPLES_MAX {
            examples.push(example());
        }
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let setup_started = Instant::now();
    ctx.sign_up_buyers().await?;
    let signed_in = ctx.sign_in_buyers().await?;
    let queued =
        setup::take_queue_tokens(client, ctx.display, signed_in, ctx.setup_timeout()).await?;
    let records: Vec<BuyerRecord> = queued
        .iter()
        .map(|q| BuyerRecord {
            session: Some(q.session.clone()),
            queue_token: Some(q.status.queue_token.clone()),
            ..BuyerRecord::default()
        })
        .collect();
    let line = match Line::of(queued, ctx) {
        Ok(line) => line,
        Err(why) => {
            // Leave the queue again, so the next run finds it as this one did.
            audit::clean_up(client, None, &records).await;
            return Err(why);
        }
    };
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let rss_after_setup_kib = ctx.cli.server_pid.and_then(|pid| rss::read_kib(pid).ok());

    let shared = Arc::new(Shared {
        client: client.clone(),
        waiters: line.waiters,
        exact: AtomicU64::new(0),
        mismatched: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        examples: Mutex::new(Vec::new()),
    });
    let (ceiling, polls, rounds) = ceiling::interleaved(
        ctx,
        "polls",
        Endpoint::PollQueueToken,
        |round, connection| {
            let shared = shared.clone();
            let stream = (u64::from(round) << 32) | connection as u64;
            let mut rng = StdRng::seed_from_u64(
                ctx.seed
                    .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            );
            move || {
                let pick = rng.gen_range(0..shared.waiters.len());
                let shared = shared.clone();
                async move { poll(&shared, pick).await }
            }
        },
    )
    .await;

    let compared = ceiling::AgainstCeiling::new(client, &ceiling, Endpoint::PollQueueToken, &polls);
    let latency = |endpoint: Endpoint| compared.latency(endpoint);
    let exact = shared.exact.load(Ordering::Relaxed);
    let mismatched = shared.mismatched.load(Ordering::Relaxed);
    let refused = shared.refused.load(Ordering::Relaxed);
    let ceiling_per_second = compared.ceiling_per_second;
    // Only polls that answered with the exact position count, against only the ceiling's
    // successful answers.
    let polls_per_second = exact as f64 / polls.seconds.max(1e-9);
    let ratio_percent = compared.ratio_percent(polls_per_second);
    let waiting = shared.waiters.len();
    let outcome = json!({
        "waiting": waiting,
        "line_length": line.length,
        "active_of_run": line.active,
        "polls_per_second": polls_per_second,
        "ceiling_endpoint": ceiling.endpoint.label(),
        "ceiling_per_second": ceiling_per_second,
        "ratio_percent": ratio_percent,
        "polls": polls.requests,
        "polls_exact": exact,
        "mismatches": mismatched + refused,
        "polls_mismatched": mismatched,
        "polls_refused": refused,
        "poll_p50_ms": latency(Endpoint::PollQueueToken).map(|e| e.latency_ms.p50),
        "poll_p99_ms": latency(Endpoint::PollQueueToken).map(|e| e.latency_ms.p99),
        "ceiling_p99_ms": latency(ceiling.endpoint).map(|e| e.latency_ms.p99),
        "polls_seconds": polls.seconds,
        "rounds": rounds,
        "ceiling_seconds": ceiling.seconds,
        "ceiling_requests": ceiling.requests,
        "ceiling_stopped_by": ceiling.stopped_by,
        "server_rss_after_setup_kib": rss_after_setup_kib,
    });
    let check = Check {
        name: "queue positions exact",
        ok: exact > 0 && mismatched == 0 && refused == 0,
        detail: format!(
            "{exact} polls answered waiting at the expected position; {mismatched} answered \
             otherwise, {refused} refused (4xx), over {waiting} waiting tokens"
        ),
        examples: std::mem::take(&mut *shared.examples.lock()),
    };
    Ok(ModeRun {
        setup_seconds,
        measured_seconds: compared.measured_seconds,
        outcome,
        records,
        dates: Vec::new(),
        auditor: None,
        check_holds: false,
        rss: None,
        checks: vec![check],
        endpoint_seconds: compared.endpoint_seconds,
        siege: None,
    })
}

/// The run's place in the waiting room after setup.
struct Line {
    waiters: Vec<Waiter>,
    /// The run's tokens that came back active (0 or 1).
    active: usize,
    /// The last expected position.
    length: u64,
}

impl Line {
    /// Sorts the queued buyers into waiting and active and checks that the line will hold
    /// still for the run.
    fn of(queued: Vec<Queued>, ctx: &Context) -> anyhow::Result<Self> {
        let hint = "start the server for this mode with BOXOFFICE__QUEUE__MAX_ACTIVE=1 \
                    BOXOFFICE__QUEUE__WAITING_TTL_SECONDS=86400 \
                    BOXOFFICE__QUEUE__ACTIVE_TTL_SECONDS=86400 (see --help)";
        // The last moment of the run at which a token may still be polled.
        let run_ends = OffsetDateTime::now_utc()
            + 2 * (ctx.duration() + Duration::from_secs(ctx.cli.request_timeout))
            + TTL_MARGIN;
        let mut active = Vec::new();
        let mut waiters = Vec::new();
        for q in queued {
            let status = &q.status;
            match status.status.as_str() {
                "active" => active.push(q),
                "waiting" => {
                    let expires_at = expires_at(status)?;
                    if expires_at < run_ends {
                        anyhow::bail!(
                            "waiting tokens would be dropped before the run ends (buyer {}'s at \
                             {}): {hint}",
                            q.index,
                            status.expires_at
                        );
                    }
                    waiters.push(Waiter {
                        index: q.index,
                        position: status.position,
                        token: q.status.queue_token,
                        session: q.session,
                    });
                }
                other => anyhow::bail!("buyer {}'s queue token is {other:?}", q.index),
            }
        }
        if active.len() > 1 {
            anyhow::bail!(
                "{} of the run's queue tokens were admitted at once, so the line moves: {hint}",
                active.len()
            );
        }
        if let Some(q) = active.first() {
            if expires_at(&q.status)? < run_ends {
                anyhow::bail!(
                    "the run's admitted token ends at {}, before the run, and the line would \
                     move: {hint}",
                    q.status.expires_at
                );
            }
        } else {
            eprintln!(
                "boxoffice-load: none of the run's queue tokens was admitted: another token holds \
                 the admission slot; if it ends during the run the line moves and the run fails"
            );
        }
        if waiters.is_empty() {
            anyhow::bail!("no queue token of the run is waiting: use --buyers 2 or more");
        }
        let positions: BTreeSet<u64> = waiters.iter().map(|w| w.position).collect();
        if positions.len() != waiters.len() || positions.contains(&0) {
            anyhow::bail!(
                "the waiting line moved while the tokens were taken ({} positions for {} \
                 waiting tokens): {hint}",
                positions.len(),
                waiters.len()
            );
        }
        Ok(Self {
            length: positions.last().copied().unwrap_or(0),
            active: active.len(),
            waiters,
        })
    }
}

fn expires_at(status: &QueueStatus) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(&status.expires_at, &Rfc3339).map_err(|e| {
        anyhow::anyhow!(
            "a queue status's expires_at {:?} is not RFC 3339: {e}",
            status.expires_at
        )
    })
}

/// One poll of waiter `pick`, checked against where it stands.
async fn poll(shared: &Shared, pick: usize) -> Result<(), Fail> {
    let waiter = &shared.waiters[pick];
    match api::poll_queue_token(&shared.client, &waiter.session, &waiter.token).await {
        Ok(status) => {
            let exact = status.status == "waiting"
                && status.position == waiter.position
                && status.queue_token == waiter.token
                && !status.reissued;
            if exact {
                shared.exact.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.note(&shared.mismatched, || {
                    format!(
                        "buyer {}: expected waiting at {}, got {} at {}{}",
                        waiter.index,
                        waiter.position,
                        status.status,
                        status.position,
                        if status.reissued { " (reissued)" } else { "" }
                    )
                });
            }
            Ok(())
        }
        Err(Fail::Malformed(why)) => {
            shared.note(&shared.mismatched, || {
                format!("buyer {}: unexpected body: {why}", waiter.index)
            });
            Ok(())
        }
        Err(Fail::Refused { status, code }) if (400..500).contains(&status) && status != 429 => {
            shared.note(&shared.refused, || {
                format!("buyer {}: {status} {code}", waiter.index)
            });
            Ok(())
        }
        Err(fail) => Err(fail),
    }
}
