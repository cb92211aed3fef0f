//! `holds`: durable holds per second. Buyers signed in and admitted during setup each walk their
//! own seats of one new date (buyer p of P takes seats p+1, p+1+P, ...) and hold them one by one
//! as fast as the server answers; the server checks the session and the queue token on every
//! request. A buyer may hold only `holds.max_seats_per_user` seats at once: the first 422
//! `hold_limit` teaches the generator that limit, and from then on a buyer at the limit cancels
//! its oldest hold before the next one. The run ends with the seats, the duration or the
//! request budget. The ceiling (`--ceiling`'s request, as in `ceiling`) is flooded for a quarter of
//! `--duration` just before the holds and again just after, on the same connections, and the
//! durable writes per second (holds and cancels) are reported against it. The holds completed in
//! each second are reported too, so a rate that falls as holds pile up shows.
//!
//! With `--fill-holds N` that measured slice is taken twice, each on a date of its own with its
//! own ceiling before and after: once on the empty server, then, after the fill (`fill`) has
//! brought the server to N live holds, again; the report sets the two rates side by side. The
//! stats are reset between the two, so the endpoint table is the second slice's; the first
//! slice's figures are in the outcome.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use crate::api::{self, Endpoint, Fail};
use crate::audit::{self, Auditor, BuyerRecord, HoldRecord};
use crate::ceiling::{self, AgainstCeiling, Flood};
use crate::client::Client;
use crate::fill::{self, Plan};
use crate::report::Check;
use crate::series::{PerSecond, Series};
use crate::setup::{self, Admitted};
use crate::{rss, Context, ModeRun};

/// Times a buyer re-enters the waiting room after its token lapsed.
const READMISSIONS_MAX: u32 = 3;
/// API.md lets admin stats lag the truth by one second.
const STATS_LAG: Duration = Duration::from_millis(1_100);
/// The rule the report judges the two rates by.
const FLAT_WITHIN: f64 = 0.10;

struct Shared {
    client: Client,
    run: String,
    /// Names the slice in the idempotency keys, so the second slice's seat numbers, the same
    /// as the first's on another date, make keys of their own.
    slice: &'static str,
    date_id: String,
    seat_count: u32,
    holders: u32,
    deadline: Instant,
    /// The server's per-user hold limit once learned; `usize::MAX` until then.
    hold_limit: AtomicUsize,
    holds: AtomicU64,
    cancels: AtomicU64,
    conflicts: AtomicU64,
    /// Buyers refused with 422 `hold_limit` while holding nothing of the slice: the limit over
    /// all dates, which cancelling the slice's holds cannot make room under.
    limit_stops: AtomicU64,
    series: Series,
}

/// One buyer after a slice: its token now, and the holds it still has from the slice.
struct Walked {
    position: usize,
    buyer: Admitted,
    live: VecDeque<String>,
}

/// One measured slice: the ceiling, the holds, the ceiling again.
struct SliceRun {
    /// The buyers that came back, by position.
    walked: Vec<Walked>,
    buyers: usize,
    seat_count: u32,
    holds: u64,
    cancels: u64,
    conflicts: u64,
    limit: Option<usize>,
    limit_stops: u64,
    seconds: f64,
    stopped_by: &'static str,
    ceiling: Flood,
    compared: AgainstCeiling,
    per_second: PerSecond,
}

impl SliceRun {
    fn holds_per_second(&self) -> f64 {
        self.holds as f64 / self.seconds.max(1e-9)
    }

    fn writes_per_second(&self) -> f64 {
        (self.holds + self.cancels) as f64 / self.seconds.max(1e-9)
    }

    /// The slice's figures, as the report's outcome gives them.
    fn outcome(&self) -> Map<String, Value> {
        let writes_per_second = self.writes_per_second();
        let latency =
            |endpoint: Endpoint| self.compared.latency(endpoint).map(|e| e.latency_ms.p99);
        let per_second = &self.per_second;
        let value = json!({
            "buyers": self.buyers,
            "seats": self.seat_count,
            "holds": self.holds,
            "holds_per_second": self.holds_per_second(),
            "cancels": self.cancels,
            "writes_per_second": writes_per_second,
            "ceiling_endpoint": self.ceiling.endpoint.label(),
            "ceiling_per_second": self.compared.ceiling_per_second,
            "ratio_percent": self.compared.ratio_percent(writes_per_second),
            "hold_p99_ms": latency(Endpoint::Hold),
            "ceiling_p99_ms": latency(self.ceiling.endpoint),
            "holds_seconds": self.seconds,
            "holds_stopped_by": self.stopped_by,
            "ceiling_seconds": self.ceiling.seconds,
            "ceiling_requests": self.ceiling.requests,
            "hold_conflicts": self.conflicts,
            "hold_limit_learned": self.limit,
            "buyers_stopped_by_hold_limit": self.limit_stops,
            "status_5xx": self.compared.status_5xx(),
            "holds_per_second_series": per_second.series,
            "holds_per_second_summary": per_second.summary,
            "holds_per_second_tail": {
                "seconds": per_second.tail_seconds,
                "holds": per_second.tail_count,
            },
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object is an object"),
        }
    }

    /// Each buyer's record for the audit, with `earlier` live holds of its own (by position)
    /// besides the slice's.
    fn records(self, mut earlier: Vec<Vec<HoldRecord>>) -> Vec<BuyerRecord> {
        self.walked
            .into_iter()
            .map(|walked| {
                let mut live_holds = earlier
                    .get_mut(walked.position)
                    .map(std::mem::take)
                    .unwrap_or_default();
                live_holds.extend(
                    walked
                        .live
                        .into_iter()
                        .map(|reservation_id| HoldRecord { reservation_id }),
                );
                BuyerRecord {
                    session: Some(walked.buyer.session),
                    touched: true,
                    queue_token: Some(walked.buyer.token),
                    live_holds,
                    ..BuyerRecord::default()
                }
            })
            .collect()
    }
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let setup_started = Instant::now();
    let (concert, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?;
    let mut dates = vec![(date_id.clone(), seat_count)];
    // The second slice's date and the fill's, all made before anything is measured.
    let fill = match ctx.cli.fill_holds {
        None => None,
        Some(n) => {
            let plan = Plan::new(n, ctx.cli.buyers, seat_count);
            let create = |seats: u32| {
                let concert = concert.clone();
                async move {
                    api::create_date(client, admin, &concert, seats, ctx.cli.price)
                        .await
                        .map_err(setup::admin_failure)
                }
            };
            let after_date = create(seat_count).await?;
            dates.push((after_date.clone(), seat_count));
            let mut fill_dates = Vec::with_capacity(plan.dates.len());
            for &seats in &plan.dates {
                let date = create(seats).await?;
                dates.push((date.clone(), seats));
                fill_dates.push(date);
            }
            Some((n, plan, after_date, fill_dates))
        }
    };
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let admitted = ctx.sign_in_and_admit_buyers().await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let auditor = Auditor {
        session: auditor_session,
        token: Some(auditor_token),
    };

    let Some((fill_holds, plan, after_date, fill_dates)) = fill else {
        let slice = measure(ctx, "seat", &date_id, seat_count, admitted).await;
        let outcome = Value::Object(slice.outcome());
        return Ok(ModeRun {
            setup_seconds,
            measured_seconds: slice.compared.measured_seconds,
            outcome,
            endpoint_seconds: slice.compared.endpoint_seconds.clone(),
            records: slice.records(Vec::new()),
            dates,
            auditor: Some(auditor),
            check_holds: true,
            rss: None,
            checks: Vec::new(),
            siege: None,
        });
    };

    // The empty server.
    let buyers = admitted.len();
    let empty = measure(ctx, "seat", &date_id, seat_count, admitted).await;
    let empty_outcome = empty.outcome();
    let empty_rate = empty.holds_per_second();
    let empty_ratio = empty.compared.ratio_percent(empty.writes_per_second());
    let empty_limit = empty.limit;
    let empty_limit_stops = empty.limit_stops;
    if empty.walked.len() != buyers {
        let records = empty.records(Vec::new());
        audit::clean_up(client, Some(&auditor), &records).await;
        bail!("the holds slice on the empty server did not end in time; no fill was made");
    }
    let mut live: Vec<Vec<HoldRecord>> = Vec::with_capacity(buyers);
    let mut fill_buyers = Vec::with_capacity(buyers);
    for walked in empty.walked {
        fill_buyers.push(walked.buyer);
        live.push(
            walked
                .live
                .into_iter()
                .map(|reservation_id| HoldRecord { reservation_id })
                .collect(),
        );
    }
    // The stats start again, so the endpoint table is the slice after the fill.
    client.stats().reset();

    // The fill: from what the server holds now up to --fill-holds.
    tokio::time::sleep(STATS_LAG).await;
    let own_live: u64 = live.iter().map(|l| l.len() as u64).sum();
    let (live_before, live_source) = match seats_held(client, admin).await {
        Some(held) => (held, "admin stats seats_held"),
        None => (own_live, "the run's own holds (admin stats unreadable)"),
    };
    let count = fill_holds.saturating_sub(live_before);
    // Should the fill fail, the queue tokens go back all the same.
    let tokens: Vec<BuyerRecord> = fill_buyers
        .iter()
        .map(|b| BuyerRecord {
            session: Some(b.session.clone()),
            queue_token: Some(b.token.clone()),
            ..BuyerRecord::default()
        })
        .collect();
    let rss_before = ctx.cli.server_pid.map(rss::read_kib);
    let filled = match fill::run(ctx, &plan, fill_dates, fill_buyers, count).await {
        Ok(filled) => filled,
        Err(error) => {
            audit::clean_up(client, Some(&auditor), &tokens).await;
            return Err(error);
        }
    };
    drop(tokens);
    tokio::time::sleep(STATS_LAG).await;
    let rss_after = ctx.cli.server_pid.map(rss::read_kib);
    let live_after = seats_held(client, admin)
        .await
        .unwrap_or(live_before + filled.holds);
    for (mine, more) in live.iter_mut().zip(filled.live) {
        mine.extend(more);
    }

    // The same slice again, now that the server holds --fill-holds.
    let after = measure(ctx, "after", &after_date, seat_count, filled.buyers).await;
    let after_rate = after.holds_per_second();
    let after_ratio = after.compared.ratio_percent(after.writes_per_second());
    let flat_ratio = (empty_rate > 0.0).then(|| after_rate / empty_rate);
    let flat_ratio_against_ceiling = match (empty_ratio, after_ratio) {
        (Some(empty), Some(after)) if empty > 0.0 => Some(after / empty),
        _ => None,
    };
    let rss = rss_outcome(
        rss_before,
        rss_after,
        live_after.saturating_sub(live_before),
    );
    let mut outcome = after.outcome();
    outcome.insert("rate_empty".into(), json!(empty_rate));
    outcome.insert("rate_after_fill".into(), json!(after_rate));
    outcome.insert("flat_ratio".into(), json!(flat_ratio));
    outcome.insert(
        "flat_ratio_against_ceiling".into(),
        json!(flat_ratio_against_ceiling),
    );
    outcome.insert(
        "flat".into(),
        json!(flat_ratio.map(|r| r >= 1.0 - FLAT_WITHIN)),
    );
    outcome.insert(
        "flat_rule".into(),
        json!(format!(
            "flat when the holds per second after the fill are at least {:.0}% of those on the \
             empty server",
            100.0 * (1.0 - FLAT_WITHIN)
        )),
    );
    outcome.insert(
        "fill".into(),
        json!({
            "fill_holds": fill_holds,
            "live_before": live_before,
            "live_before_source": live_source,
            "holds": filled.holds,
            "conflicts": filled.conflicts,
            "live_after": live_after,
            "dates": plan.dates.len(),
            "seconds": filled.seconds,
            "holds_per_second": filled.holds as f64 / filled.seconds.max(1e-9),
            "idempotency_keys": false,
            "per_buyer": plan.per_buyer,
            "needs": plan.needs,
            "rss": rss,
        }),
    );
    outcome.insert("empty_slice".into(), Value::Object(empty_outcome));
    let same = empty_limit == after.limit && empty_limit_stops == 0 && after.limit_stops == 0;
    let mut detail = format!(
        "hold limit learned on the empty server: {}, after the fill: {}; buyers stopped by it \
         holding nothing: {empty_limit_stops} and {}",
        limit_text(empty_limit),
        limit_text(after.limit),
        after.limit_stops,
    );
    if !same {
        detail.push_str(&format!(
            " — the slices are not alike: the limit over all dates bit; raise \
             holds.max_seats_per_user_total to at least {}",
            plan.needs.max_seats_per_user_total
        ));
    }
    let same_limit = Check {
        name: "both slices met the same hold limit",
        ok: same,
        detail,
        examples: Vec::new(),
    };
    Ok(ModeRun {
        setup_seconds,
        measured_seconds: after.compared.measured_seconds,
        outcome: Value::Object(outcome),
        endpoint_seconds: after.compared.endpoint_seconds.clone(),
        records: after.records(live),
        dates,
        auditor: Some(auditor),
        check_holds: true,
        rss: None,
        checks: vec![same_limit],
        siege: None,
    })
}

fn limit_text(limit: Option<usize>) -> String {
    limit.map_or("none".to_owned(), |l| l.to_string())
}

/// Held seats on the whole server (one a hold, as every hold here is).
async fn seats_held(client: &Client, admin: &str) -> Option<u64> {
    api::admin_stats(client, admin).await.ok()?["seats_held"].as_u64()
}

/// The server's RSS before and after the fill, and what each live hold it added took.
fn rss_outcome(
    before: Option<Result<u64, String>>,
    after: Option<Result<u64, String>>,
    added: u64,
) -> Value {
    match (before, after) {
        (None, _) | (_, None) => json!({"sampled": false}),
        (Some(Ok(before)), Some(Ok(after))) => json!({
            "sampled": true,
            "before_kib": before,
            "after_kib": after,
            "live_holds_added": added,
            "bytes_per_live_hold": bytes_per_hold(before, after, added),
        }),
        (Some(before), Some(after)) => json!({
            "sampled": false,
            "error": before.err().or(after.err()),
        }),
    }
}

/// `(after - before)` KiB over `added` holds, in bytes (negative when the RSS fell).
fn bytes_per_hold(before_kib: u64, after_kib: u64, added: u64) -> Option<f64> {
    (added > 0).then(|| (after_kib as f64 - before_kib as f64) * 1024.0 / added as f64)
}

/// One measured slice on `date_id`: the ceiling for a quarter of `--duration`, the holds for
/// `--duration`, the ceiling again.
async fn measure(
    ctx: &Context,
    slice: &'static str,
    date_id: &str,
    seat_count: u32,
    admitted: Vec<Admitted>,
) -> SliceRun {
    let client = &ctx.client;
    let buyers = admitted.len();
    let ceiling_before = ceiling::measure_part(ctx, 4).await;
    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let grace = Duration::from_secs(ctx.cli.request_timeout + 5);
    let shared = Arc::new(Shared {
        client: client.clone(),
        run: ctx.names.run().to_owned(),
        slice,
        date_id: date_id.to_owned(),
        seat_count,
        holders: buyers as u32,
        deadline: started + ctx.duration(),
        hold_limit: AtomicUsize::new(usize::MAX),
        holds: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        limit_stops: AtomicU64::new(0),
        series: Series::new(started, ctx.duration() + grace),
    });
    let work = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for (position, buyer) in admitted.into_iter().enumerate() {
                tasks.spawn(hold_seats(shared.clone(), position, buyer));
            }
            let mut walked = Vec::with_capacity(buyers);
            while let Some(joined) = tasks.join_next().await {
                if let Ok(one) = joined {
                    walked.push(one);
                }
            }
            walked.sort_by_key(|w: &Walked| w.position);
            walked
        })
    };
    let status = {
        let shared = shared.clone();
        move || {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let holds = shared.holds.load(Ordering::Relaxed);
            (
                holds,
                format!(
                    "holds · {:.0} holds/s · {:.0} req/s · {} cancels",
                    holds as f64 / elapsed,
                    shared.client.stats().requests.load(Ordering::Relaxed) as f64 / elapsed,
                    shared.cancels.load(Ordering::Relaxed),
                ),
            )
        }
    };
    let walked = ctx
        .display
        .run("holds", u64::from(seat_count), status, ctx.bounded(work))
        .await
        .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let stopped_by = client.halt_reason();
    client.end_measured();
    let ceiling = ceiling_before.and_then(ceiling::measure_part(ctx, 4).await);
    let compared = AgainstCeiling::of_phase(
        client,
        &ceiling,
        &[Endpoint::Hold, Endpoint::Cancel],
        seconds,
    );
    let limit = shared.hold_limit.load(Ordering::Relaxed);
    SliceRun {
        walked,
        buyers,
        seat_count,
        holds: shared.holds.load(Ordering::Relaxed),
        cancels: shared.cancels.load(Ordering::Relaxed),
        conflicts: shared.conflicts.load(Ordering::Relaxed),
        limit: (limit != usize::MAX).then_some(limit),
        limit_stops: shared.limit_stops.load(Ordering::Relaxed),
        seconds,
        stopped_by,
        ceiling,
        compared,
        per_second: shared.series.report(seconds),
    }
}

async fn hold_seats(shared: Arc<Shared>, position: usize, mut buyer: Admitted) -> Walked {
    let client = &shared.client;
    let session = buyer.session.clone();
    let mut live: VecDeque<String> = VecDeque::new();
    let mut readmissions = 0;
    let mut seat = position as u32 + 1;
    while seat <= shared.seat_count && !client.halted() {
        if live.len() >= shared.hold_limit.load(Ordering::Relaxed) {
            let Some(oldest) = live.front() else { break };
            match api::cancel(client, &session, oldest).await {
                Ok(()) => {}
                Err(fail) if fail.is(409, "reservation_not_held") => {}
                Err(_) => break,
            }
            shared.cancels.fetch_add(1, Ordering::Relaxed);
            live.pop_front();
            continue;
        }
        let key = format!("lg-{}-{}-{}-{seat}", shared.run, buyer.index, shared.slice);
        match api::hold(
            client,
            &session,
            &buyer.token,
            &shared.date_id,
            &[seat],
            &key,
        )
        .await
        {
            Ok(reservation) => {
                shared.holds.fetch_add(1, Ordering::Relaxed);
                shared.series.record();
                live.push_back(reservation.reservation_id);
                seat += shared.holders;
            }
            Err(fail) if fail.is(422, "hold_limit") => {
                if live.is_empty() {
                    shared.limit_stops.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                shared.hold_limit.fetch_min(live.len(), Ordering::Relaxed);
            }
            Err(fail) if fail.is(409, "seat_unavailable") => {
                shared.conflicts.fetch_add(1, Ordering::Relaxed);
                seat += shared.holders;
            }
            Err(Fail::Refused {
                status: 401 | 403, ..
            }) if readmissions < READMISSIONS_MAX => {
                readmissions += 1;
                let max_wait = shared.deadline.saturating_duration_since(Instant::now());
                match api::admit(client, &session, max_wait, || client.halted()).await {
                    api::Admission::Active(fresh) => buyer.token = fresh,
                    _ => break,
                }
            }
            Err(_) => break,
        }
    }
    Walked {
        position,
        buyer,
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_live_hold_are_the_rss_added_over_the_holds_added() {
        // 100 MiB more for 1,000,000 holds: 104.8576 bytes a hold.
        let per_hold = bytes_per_hold(200 * 1024, 300 * 1024, 1_000_000).unwrap();
        assert!((per_hold - 104.857_6).abs() < 1e-9, "{per_hold}");
        assert!(bytes_per_hold(300, 200, 1_024).unwrap() < 0.0);
        assert_eq!(bytes_per_hold(200, 300, 0), None);
    }
}
