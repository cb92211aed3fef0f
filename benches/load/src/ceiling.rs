//! `ceiling`: a request that does no work on every connection as fast as it is answered. Its
//! requests per second are the HTTP ceiling this client and this machine reach; compare every
//! other mode's figures against it. By default that request goes to the bare server (`bare`):
//! a small JSON body parsed and answered back on the server's HTTP stack, in a process of its
//! own that runs nothing else, so the ceiling holds no work of the server's. `--ceiling
//! healthz` floods the server's own `GET /healthz` instead, which reads no body but goes
//! through all of the server's middleware.
//!
//! `flood` is the measured phase shared with `payments`, which times the ceiling first
//! (`measure`) and then its own request on the same connections; `interleaved` alternates the
//! two in rounds, as `polls` does, so a server still busy after setup, or any drift during the
//! run, weighs on both sides of the ratio alike.

use std::future::Future;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Endpoint, Fail};
use crate::client::Client;
use crate::report::Check;
use crate::stats::{EndpointSummary, MeasuredSummary};
use crate::{Context, ModeRun};

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let ceiling = measure(ctx).await;
    let check = Check {
        name: "ceiling answers as expected",
        ok: ceiling.unexpected == 0,
        detail: format!(
            "{} of {} answers with a success status had another body than the one expected",
            ceiling.unexpected, ceiling.requests
        ),
        examples: Vec::new(),
    };
    Ok(ModeRun {
        setup_seconds: 0.0,
        measured_seconds: ceiling.seconds,
        outcome: json!({
            "endpoint": ceiling.endpoint.label(),
            "requests": ceiling.requests,
            "requests_per_second": ceiling.per_second(),
            "unexpected_bodies": ceiling.unexpected,
        }),
        records: Vec::new(),
        dates: Vec::new(),
        auditor: None,
        check_holds: false,
        rss: None,
        checks: vec![check],
        endpoint_seconds: Vec::new(),
        siege: None,
    })
}

/// The request a ceiling floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CeilingRequest {
    /// `POST /` of the bare server, which the generator starts: a small JSON body, answered
    /// back.
    Bare,
    /// The server's `GET /healthz`: no body to read or parse.
    Healthz,
}

impl CeilingRequest {
    pub fn endpoint(self) -> Endpoint {
        match self {
            CeilingRequest::Bare => Endpoint::Bare,
            CeilingRequest::Healthz => Endpoint::Health,
        }
    }
}

/// What one flood measured.
pub struct Flood {
    pub endpoint: Endpoint,
    /// Requests sent to the flood's endpoint, answered or not (as the endpoint table counts).
    pub requests: u64,
    pub seconds: f64,
    /// Why it ended: `duration`, `max_requests` or `finished`.
    pub stopped_by: &'static str,
    /// Answers with a success status but another body than the one expected.
    pub unexpected: u64,
}

impl Flood {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn none(endpoint: Endpoint) -> Self {
        Flood {
            endpoint,
            requests: 0,
            seconds: 0.0,
            stopped_by: "duration",
            unexpected: 0,
        }
    }

    /// Two phases of the same flood as one: requests and seconds add up; it stopped as the
    /// later one did.
    pub fn and_then(self, later: Flood) -> Flood {
        Flood {
            endpoint: later.endpoint,
            requests: self.requests + later.requests,
            seconds: self.seconds + later.seconds,
            stopped_by: later.stopped_by,
            unexpected: self.unexpected + later.unexpected,
        }
    }
}

/// Rounds of `interleaved`: enough that a slow drift shows on both sides, few enough that each
/// slice is long next to the time a connection takes to ramp up.
const ROUNDS: u32 = 4;

/// The ceiling and `endpoint` in alternating slices of `--duration / ROUNDS` each (so each side
/// gets `--duration` in all, and each slice `--max-requests / ROUNDS`). `connection(round, i)`
/// makes connection `i`'s step for a round. Stops early when a slice ends for any reason other
/// than its time running out. Returns both floods and the rounds run.
pub async fn interleaved<S, Fut>(
    ctx: &Context,
    title: &'static str,
    endpoint: Endpoint,
    connection: impl Fn(u32, usize) -> S,
) -> (Flood, Flood, u32)
where
    S: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Fail>> + Send + 'static,
{
    let rounds = ROUNDS.min(ctx.duration().as_secs().max(1) as u32);
    let slice = Slice::part(ctx, rounds);
    let mut ceiling = Flood::none(ctx.cli.ceiling.endpoint());
    let mut flooded = Flood::none(endpoint);
    let mut rounds_run = 0;
    for round in 0..rounds {
        ceiling = ceiling.and_then(measure_for(ctx, slice).await);
        let this_round = flood_for(ctx, title, endpoint, slice, |i| connection(round, i)).await;
        let stopped_early = this_round.stopped_by != "duration";
        flooded = flooded.and_then(this_round);
        rounds_run = round + 1;
        if stopped_early || ceiling.stopped_by != "duration" {
            break;
        }
    }
    (ceiling, flooded, rounds_run)
}

/// How long one flood may run and how many requests it may send.
#[derive(Clone, Copy)]
struct Slice {
    duration: Duration,
    max_requests: u64,
}

impl Slice {
    fn whole(ctx: &Context) -> Self {
        Self::part(ctx, 1)
    }

    /// `--duration / parts` and `--max-requests / parts`.
    fn part(ctx: &Context, parts: u32) -> Self {
        Slice {
            duration: ctx.duration() / parts,
            max_requests: (ctx.max_requests() / u64::from(parts)).max(1),
        }
    }
}

/// The ceiling: a flood of `--ceiling`'s request.
pub async fn measure(ctx: &Context) -> Flood {
    measure_for(ctx, Slice::whole(ctx)).await
}

/// The ceiling for a `parts`-th of `--duration` and of `--max-requests`: one of the slices a
/// mode whose own phase cannot be cut sets around it, before and after.
pub async fn measure_part(ctx: &Context, parts: u32) -> Flood {
    measure_for(ctx, Slice::part(ctx, parts)).await
}

async fn measure_for(ctx: &Context, slice: Slice) -> Flood {
    let client = ctx.client.clone();
    let request = ctx.cli.ceiling;
    flood_for(ctx, "ceiling", request.endpoint(), slice, move |_| {
        let client = client.clone();
        let mut seq = 0u64;
        move || {
            let client = client.clone();
            seq += 1;
            async move {
                match request {
                    CeilingRequest::Bare => api::bare(&client, seq).await,
                    CeilingRequest::Healthz => api::health(&client).await,
                }
            }
        }
    })
    .await
}

/// One measured phase of its own: every connection sends one request after another, as fast
/// as the server answers, until `--duration` passes or `--max-requests` are spent (each flood
/// has the whole budget). `connection(i)` makes connection `i`'s step, which sends one request
/// to `endpoint`; the progress bar counts that endpoint's requests.
pub async fn flood<S, Fut>(
    ctx: &Context,
    title: &'static str,
    endpoint: Endpoint,
    connection: impl Fn(usize) -> S,
) -> Flood
where
    S: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Fail>> + Send + 'static,
{
    flood_for(ctx, title, endpoint, Slice::whole(ctx), connection).await
}

async fn flood_for<S, Fut>(
    ctx: &Context,
    title: &'static str,
    endpoint: Endpoint,
    slice: Slice,
    connection: impl Fn(usize) -> S,
) -> Flood
where
    S: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Fail>> + Send + 'static,
{
    let client = &ctx.client;
    let before = client.stats().endpoint_requests(endpoint);
    let started = client.begin_measured(slice.duration, slice.max_requests);
    let steps: Vec<S> = (0..ctx.cli.connections).map(connection).collect();
    let work = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for mut step in steps {
                let client = client.clone();
                tasks.spawn(async move {
                    let mut unexpected = 0u64;
                    loop {
                        match step().await {
                            Err(Fail::Stopped) => break,
                            Err(Fail::NoResponse(_)) if client.halted() => break,
                            Err(Fail::Malformed(_)) => unexpected += 1,
                            _ => {}
                        }
                    }
                    unexpected
                });
            }
            let mut unexpected = 0;
            while let Some(joined) = tasks.join_next().await {
                unexpected += joined.unwrap_or(0);
            }
            unexpected
        })
    };
    let status = {
        let client = client.clone();
        move || {
            let requests = client.stats().endpoint_requests(endpoint) - before;
            (
                requests,
                format!("requests · {:.0} req/s", per_second(requests, started)),
            )
        }
    };
    let unexpected = ctx
        .display
        .run(title, slice.max_requests, status, ctx.bounded(work))
        .await
        .unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    client.end_measured();
    Flood {
        endpoint,
        requests: client.stats().endpoint_requests(endpoint) - before,
        seconds,
        stopped_by: client.halt_reason(),
        unexpected,
    }
}

fn per_second(requests: u64, started: Instant) -> f64 {
    requests as f64 / started.elapsed().as_secs_f64().max(1e-3)
}

/// A mode's flood of `endpoint`, set against the ceiling flooded just before it on the same
/// connections: each endpoint timed over its own phase, and the rates to compare.
pub struct AgainstCeiling {
    /// Each phase's endpoint and seconds, for the report's per-endpoint rates.
    pub endpoint_seconds: Vec<(Endpoint, f64)>,
    /// Both phases together.
    pub measured_seconds: f64,
    /// The ceiling request's successful answers per second of the ceiling phase.
    pub ceiling_per_second: f64,
    summary: MeasuredSummary,
}

impl AgainstCeiling {
    pub fn new(client: &Client, ceiling: &Flood, endpoint: Endpoint, flood: &Flood) -> Self {
        Self::of_phase(client, ceiling, &[endpoint], flood.seconds)
    }

    /// The same for a phase of `seconds` that sent requests to each of `endpoints`.
    pub fn of_phase(
        client: &Client,
        ceiling: &Flood,
        endpoints: &[Endpoint],
        seconds: f64,
    ) -> Self {
        let mut endpoint_seconds = vec![(ceiling.endpoint, ceiling.seconds)];
        endpoint_seconds.extend(endpoints.iter().map(|endpoint| (*endpoint, seconds)));
        let measured_seconds = ceiling.seconds + seconds;
        let summary = client.stats().summary(measured_seconds, &endpoint_seconds);
        let ceiling_ok = summary
            .endpoints
            .iter()
            .find(|e| e.endpoint == ceiling.endpoint.label())
            .map_or(0, |e| e.ok);
        Self {
            endpoint_seconds,
            measured_seconds,
            ceiling_per_second: ceiling_ok as f64 / ceiling.seconds.max(1e-9),
            summary,
        }
    }

    /// `endpoint`'s figures over its own phase.
    pub fn latency(&self, endpoint: Endpoint) -> Option<&EndpointSummary> {
        self.summary
            .endpoints
            .iter()
            .find(|e| e.endpoint == endpoint.label())
    }

    /// Answers with a 5xx status over both phases.
    pub fn status_5xx(&self) -> u64 {
        self.summary.status_5xx
    }

    /// `per_second` as a percentage of the ceiling (none when the ceiling got no answer).
    pub fn ratio_percent(&self, per_second: f64) -> Option<f64> {
        (self.ceiling_per_second > 0.0).then(|| 100.0 * per_second / self.ceiling_per_second)
    }
}
