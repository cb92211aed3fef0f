//! `holds`: durable holds per second. Buyers signed in and admitted during setup each walk their
//! own seats of one new date (buyer p of P takes seats p+1, p+1+P, ...) and hold them one by one
//! as fast as the server answers; the server checks the session and the queue token on every
//! request. A buyer may hold only `holds.max_seats_per_user` seats at once: the first 422
//! `hold_limit` teaches the generator that limit, and from then on a buyer at the limit cancels
//! its oldest hold before the next one. The run ends with the seats, the duration or the
//! request budget. The ceiling (`--ceiling`'s request, as in `ceiling`) is flooded for a quarter of
//! `--duration` just before the holds and again just after, on the same connections, and the
//! durable writes per second (holds and cancels) are reported against it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Endpoint, Fail};
use crate::audit::{Auditor, BuyerRecord, HoldRecord};
use crate::ceiling;
use crate::client::Client;
use crate::setup::{self, Admitted};
use crate::{Context, ModeRun};

/// Times a buyer re-enters the waiting room after its token lapsed.
const READMISSIONS_MAX: u32 = 3;

struct Shared {
    client: Client,
    run: String,
    date_id: String,
    seat_count: u32,
    holders: u32,
    deadline: Instant,
    /// The server's per-user hold limit once learned; `usize::MAX` until then.
    hold_limit: AtomicUsize,
    holds: AtomicU64,
    cancels: AtomicU64,
    conflicts: AtomicU64,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let admin = ctx.admin_token()?;
    let seat_count = ctx.seats();
    let setup_started = Instant::now();
    let (_, date_id) =
        setup::concert_with_date(client, admin, &ctx.names, seat_count, ctx.cli.price).await?;
    let (auditor_session, auditor_token) = ctx.sign_up_buyers_and_auditor().await?;
    let admitted = ctx.sign_in_and_admit_buyers().await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let ceiling_before = ceiling::measure_part(ctx, 4).await;
    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let shared = Arc::new(Shared {
        client: client.clone(),
        run: ctx.names.run().to_owned(),
        date_id: date_id.clone(),
        seat_count,
        holders: admitted.len() as u32,
        deadline: started + ctx.duration(),
        hold_limit: AtomicUsize::new(usize::MAX),
        holds: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
    });
    let holders = admitted.len();
    let work = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for (position, buyer) in admitted.into_iter().enumerate() {
                tasks.spawn(hold_seats(shared.clone(), position as u32, buyer));
            }
            let mut records = Vec::with_capacity(holders);
            while let Some(joined) = tasks.join_next().await {
                if let Ok(record) = joined {
                    records.push(record);
                }
            }
            records
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
    let records = ctx
        .display
        .run("holds", u64::from(seat_count), status, ctx.bounded(work))
        .await
        .unwrap_or_default();
    let holds_seconds = started.elapsed().as_secs_f64();
    let holds_stopped_by = client.halt_reason();
    client.end_measured();
    let ceiling = ceiling_before.and_then(ceiling::measure_part(ctx, 4).await);
    let compared = ceiling::AgainstCeiling::of_phase(
        client,
        &ceiling,
        &[Endpoint::Hold, Endpoint::Cancel],
        holds_seconds,
    );

    let holds = shared.holds.load(Ordering::Relaxed);
    let cancels = shared.cancels.load(Ordering::Relaxed);
    let writes_per_second = (holds + cancels) as f64 / holds_seconds.max(1e-9);
    let limit = shared.hold_limit.load(Ordering::Relaxed);
    let latency = |endpoint: Endpoint| compared.latency(endpoint).map(|e| e.latency_ms.p99);
    let outcome = json!({
        "buyers": holders,
        "seats": seat_count,
        "holds": holds,
        "holds_per_second": holds as f64 / holds_seconds.max(1e-9),
        "cancels": cancels,
        "writes_per_second": writes_per_second,
        "ceiling_endpoint": ceiling.endpoint.label(),
        "ceiling_per_second": compared.ceiling_per_second,
        "ratio_percent": compared.ratio_percent(writes_per_second),
        "hold_p99_ms": latency(Endpoint::Hold),
        "ceiling_p99_ms": latency(ceiling.endpoint),
        "holds_seconds": holds_seconds,
        "holds_stopped_by": holds_stopped_by,
        "ceiling_seconds": ceiling.seconds,
        "ceiling_requests": ceiling.requests,
        "hold_conflicts": shared.conflicts.load(Ordering::Relaxed),
        "hold_limit_learned": (limit != usize::MAX).then_some(limit),
    });
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
        checks: Vec::new(),
        endpoint_seconds: compared.endpoint_seconds,
        siege: None,
    })
}

async fn hold_seats(shared: Arc<Shared>, position: u32, buyer: Admitted) -> BuyerRecord {
    let client = &shared.client;
    let mut record = BuyerRecord {
        session: Some(buyer.session.clone()),
        touched: true,
        ..BuyerRecord::default()
    };
    let session = buyer.session.as_str();
    let mut token = buyer.token;
    let mut live: VecDeque<String> = VecDeque::new();
    let mut readmissions = 0;
    let mut seat = position + 1;
    while seat <= shared.seat_count && !client.halted() {
        if live.len() >= shared.hold_limit.load(Ordering::Relaxed) {
            let Some(oldest) = live.front() else { break };
            match api::cancel(client, session, oldest).await {
                Ok(()) => {}
                Err(fail) if fail.is(409, "reservation_not_held") => {}
                Err(_) => break,
            }
            shared.cancels.fetch_add(1, Ordering::Relaxed);
            live.pop_front();
            continue;
        }
        let key = format!("lg-{}-{}-seat-{seat}", shared.run, buyer.index);
        match api::hold(client, session, &token, &shared.date_id, &[seat], &key).await {
            Ok(reservation) => {
                shared.holds.fetch_add(1, Ordering::Relaxed);
                live.push_back(reservation.reservation_id);
                seat += shared.holders;
            }
            Err(fail) if fail.is(422, "hold_limit") => {
                if live.is_empty() {
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
                match api::admit(client, session, max_wait, || client.halted()).await {
                    api::Admission::Active(fresh) => token = fresh,
                    _ => break,
                }
            }
            Err(_) => break,
        }
    }
    record.queue_token = Some(token);
    record.live_holds = live
        .into_iter()
        .map(|reservation_id| HoldRecord { reservation_id })
        .collect();
    record
}
