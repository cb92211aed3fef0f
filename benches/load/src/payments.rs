//! `payments`: durable payments per second. Setup (unmeasured) creates one date, signs the
//! buyers up and in and admits them, and has buyer `i` hold seat `i + 1` — one distinct seat
//! each — and top its balance up by the seat's price. A payment ends the payer's queue token, so
//! each buyer can pay exactly once: the measured phase first floods the ceiling (`--ceiling`'s
//! request, as in `ceiling`), then every connection takes the next buyer who has not paid and sends
//! `POST /api/v1/payments` for its hold, until every buyer has paid or `--duration` or
//! `--max-requests` ends it. Payments per second count the 201s only.
//!
//! The audit then checks what the buyers recorded — top-ups, payments, the holds still live —
//! as for the other purchasing modes: no seat sold twice, the listing agrees, money conserved.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use parking_lot::Mutex;
use serde_json::json;

use crate::api::{self, Endpoint, Fail, Payment};
use crate::audit::{Auditor, BuyerRecord, HoldRecord, PaidRecord};
use crate::ceiling;
use crate::client::Client;
use crate::report::Check;
use crate::series::Series;
use crate::setup::{self, Admitted};
use crate::{Context, ModeRun};

/// A buyer ready to pay: admitted, one seat held, the balance topped up.
struct Payer {
    index: usize,
    session: String,
    token: String,
    reservation_id: String,
}

/// What a buyer's setup left: its record for the audit, and its hold when it is ready to pay.
struct Prepared {
    record: BuyerRecord,
    payer: Option<Payer>,
    failure: Option<String>,
}

/// How a buyer's payment went.
enum Paying {
    NotSent,
    /// Taken, and no answer recorded (the flood was aborted while it was in flight).
    InFlight,
    Paid(Payment),
    /// No answer: paid or not, nobody knows.
    Uncertain,
    Refused,
}

struct Shared {
    client: Client,
    run: String,
    payers: Vec<Payer>,
    next: AtomicUsize,
    paid: AtomicU64,
    outcomes: Mutex<Vec<Paying>>,
    /// Payments answered 201, per second of the payments' flood.
    series: Series,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let price = ctx.cli.price;
    let setup_started = Instant::now();
    let (_, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, price).await?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let admitted = ctx.sign_in_and_admit_buyers().await?;
    let (mut records, payers) = prepare(ctx, &date_id, admitted).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let ceiling = ceiling::measure(ctx).await;

    let ready = payers.len();
    // The flood starts its clock right after this; a few µs early is well inside a second.
    let grace = Duration::from_secs(ctx.cli.request_timeout + 5);
    let shared = Arc::new(Shared {
        series: Series::new(Instant::now(), ctx.duration() + grace),
        client: client.clone(),
        run: ctx.names.run().to_owned(),
        outcomes: Mutex::new((0..ready).map(|_| Paying::NotSent).collect()),
        payers,
        next: AtomicUsize::new(0),
        paid: AtomicU64::new(0),
    });
    let payments = ceiling::flood(ctx, "payments", Endpoint::Pay, |_| {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move { pay_next(&shared).await }
        }
    })
    .await;

    // Each payer's record learns how its payment went.
    let outcomes = std::mem::take(&mut *shared.outcomes.lock());
    let (mut refused, mut uncertain) = (0u64, 0u64);
    for (payer, paying) in shared.payers.iter().zip(outcomes) {
        let record = &mut records[payer.index];
        match paying {
            Paying::Paid(payment) => {
                record.live_holds.clear();
                record.queue_token = None;
                record.paid.push(PaidRecord {
                    reservation_id: payment.reservation_id,
                    date_id: payment.date_id,
                    seat_nos: payment.seat_nos,
                    amount: payment.amount,
                });
            }
            Paying::NotSent => {}
            Paying::InFlight | Paying::Uncertain => {
                uncertain += 1;
                record.live_holds.clear();
                record.payments_uncertain.push(payer.reservation_id.clone());
            }
            Paying::Refused => refused += 1,
        }
    }

    let compared = ceiling::AgainstCeiling::new(client, &ceiling, Endpoint::Pay, &payments);
    let latency = |endpoint: Endpoint| compared.latency(endpoint);
    let paid = shared.paid.load(Ordering::Relaxed);
    let ceiling_per_second = compared.ceiling_per_second;
    let payments_per_second = paid as f64 / payments.seconds.max(1e-9);
    let ratio_percent = compared.ratio_percent(payments_per_second);
    let all_paid = paid as usize == ready;
    let per_second = shared.series.report(payments.seconds);
    let outcome = json!({
        "buyers": ctx.cli.buyers,
        "ready_to_pay": ready,
        "seats": seat_count,
        "payments": paid,
        "payments_per_second": payments_per_second,
        "ceiling_endpoint": ceiling.endpoint.label(),
        "ceiling_per_second": ceiling_per_second,
        "ratio_percent": ratio_percent,
        "all_paid": all_paid,
        "payments_sent": payments.requests,
        "payments_refused": refused,
        "payments_uncertain": uncertain,
        "payment_p50_ms": latency(Endpoint::Pay).map(|e| e.latency_ms.p50),
        "payment_p99_ms": latency(Endpoint::Pay).map(|e| e.latency_ms.p99),
        "payment_p999_ms": latency(Endpoint::Pay).map(|e| e.latency_ms.p99_9),
        "ceiling_p99_ms": latency(ceiling.endpoint).map(|e| e.latency_ms.p99),
        "payments_seconds": payments.seconds,
        "payments_stopped_by": if all_paid { "all_paid" } else { payments.stopped_by },
        "ceiling_seconds": ceiling.seconds,
        "ceiling_requests": ceiling.requests,
        "ceiling_stopped_by": ceiling.stopped_by,
        "payments_per_second_series": per_second.series,
        "payments_per_second_summary": per_second.summary,
        "payments_per_second_tail": {
            "seconds": per_second.tail_seconds,
            "payments": per_second.tail_count,
        },
    });
    let check = Check {
        name: "payments made",
        ok: paid > 0,
        detail: format!(
            "{paid} of {ready} buyers ready to pay got 201; {refused} refused, {uncertain} \
             without an answer"
        ),
        examples: Vec::new(),
    };
    Ok(ModeRun {
        setup_seconds,
        measured_seconds: compared.measured_seconds,
        outcome,
        records,
        dates: vec![(date_id, seat_count)],
        auditor: Some(Auditor {
            session: auditor_session,
            token: Some(auditor_token),
        }),
        check_holds: true,
        rss: None,
        checks: vec![check],
        endpoint_seconds: compared.endpoint_seconds,
        siege: None,
    })
}

/// Setup, per admitted buyer at once: hold seat `index + 1` and top the balance up by its
/// price. Returns every buyer's record (by index) and those ready to pay.
async fn prepare(
    ctx: &Context,
    date_id: &str,
    admitted: Vec<Admitted>,
) -> anyhow::Result<(Vec<BuyerRecord>, Vec<Payer>)> {
    let client = &ctx.client;
    let run = ctx.names.run().to_owned();
    let admitted: Arc<Vec<Admitted>> = Arc::new(admitted);
    let users = (0..admitted.len())
        .map(|position| (position, admitted[position].session.clone()))
        .collect();
    let step = |position: usize, session: String| {
        let (client, admitted) = (client.clone(), admitted.clone());
        let (run, date_id) = (run.clone(), date_id.to_owned());
        async move {
            let buyer = &admitted[position];
            Ok::<_, ()>(prepare_one(&client, &run, &date_id, buyer, session).await)
        }
    };
    let doing = "holding a seat each, topping up (not measured)";
    let Some(fanned) = setup::fan_out(
        ctx.display,
        "prepare",
        doing,
        users,
        Some(ctx.setup_timeout()),
        step,
    )
    .await?
    else {
        bail!(
            "holding and topping up for {} buyers took longer than --setup-timeout ({} s)",
            admitted.len(),
            ctx.setup_timeout().as_secs()
        );
    };
    let mut records: Vec<BuyerRecord> = (0..ctx.cli.buyers)
        .map(|_| BuyerRecord::default())
        .collect();
    let mut payers = Vec::with_capacity(fanned.done.len());
    let mut failures = 0;
    let mut first_failure = None;
    for (buyer, prepared) in admitted.iter().zip(fanned.done) {
        records[buyer.index] = prepared.record;
        if let Some(payer) = prepared.payer {
            payers.push(payer);
        }
        if let Some(why) = prepared.failure {
            failures += 1;
            first_failure.get_or_insert(why);
        }
    }
    if payers.is_empty() {
        bail!(
            "no buyer could hold a seat and top up: {}",
            first_failure.unwrap_or_else(|| "no buyers".to_owned())
        );
    }
    if let Some(why) = first_failure {
        eprintln!(
            "boxoffice-load: {failures} of {} admitted buyers could not hold a seat and top up \
             and sit out (first: {why})",
            admitted.len()
        );
    }
    Ok((records, payers))
}

async fn prepare_one(
    client: &Client,
    run: &str,
    date_id: &str,
    buyer: &Admitted,
    session: String,
) -> Prepared {
    let mut record = BuyerRecord {
        session: Some(session.clone()),
        touched: true,
        queue_token: Some(buyer.token.clone()),
        ..BuyerRecord::default()
    };
    let seat = buyer.index as u32 + 1;
    let key = format!("lg-{run}-{}-hold", buyer.index);
    let reservation = match api::hold(client, &session, &buyer.token, date_id, &[seat], &key).await
    {
        Ok(reservation) => reservation,
        Err(fail) => {
            return Prepared {
                record,
                payer: None,
                failure: Some(format!("hold of seat {seat}: {fail}")),
            }
        }
    };
    record.live_holds.push(HoldRecord {
        reservation_id: reservation.reservation_id.clone(),
    });
    if reservation.price > 0 {
        let key = format!("lg-{run}-{}-charge", buyer.index);
        match api::charge(client, &session, reservation.price, &key).await {
            Ok(_) => record.topups += reservation.price,
            Err(fail) => {
                if let Fail::NoResponse(_) = fail {
                    record.topups_uncertain += reservation.price;
                }
                return Prepared {
                    record,
                    payer: None,
                    failure: Some(format!("top-up: {fail}")),
                };
            }
        }
    }
    Prepared {
        record,
        payer: Some(Payer {
            index: buyer.index,
            session,
            token: buyer.token.clone(),
            reservation_id: reservation.reservation_id,
        }),
        failure: None,
    }
}

/// One connection's step: the next buyer who has not paid pays; `Stopped` once none is left.
async fn pay_next(shared: &Shared) -> Result<(), Fail> {
    let position = shared.next.fetch_add(1, Ordering::Relaxed);
    let Some(payer) = shared.payers.get(position) else {
        return Err(Fail::Stopped);
    };
    shared.outcomes.lock()[position] = Paying::InFlight;
    let key = format!("lg-{}-{}-pay", shared.run, payer.index);
    let answer = api::pay(
        &shared.client,
        &payer.session,
        &payer.token,
        &payer.reservation_id,
        &key,
    )
    .await;
    let (paying, result) = match answer {
        Ok(payment) => {
            shared.paid.fetch_add(1, Ordering::Relaxed);
            shared.series.record();
            (Paying::Paid(payment), Ok(()))
        }
        Err(Fail::Stopped) => (Paying::NotSent, Err(Fail::Stopped)),
        Err(Fail::NoResponse(why)) => (Paying::Uncertain, Err(Fail::NoResponse(why))),
        Err(fail @ Fail::Malformed(_)) => (Paying::Uncertain, Err(fail)),
        Err(fail) => (Paying::Refused, Err(fail)),
    };
    shared.outcomes.lock()[position] = paying;
    result
}
