//! `--fill-holds N` (holds mode): brings the server to N live holds between two measured slices,
//! so the durable hold rate on a server holding N can be set against the rate on an empty one.
//!
//! The fill's holds are one seat each, on dates of their own (`SEATS_MAX` seats each, the last
//! one smaller), made during setup so that the memory their seats take is in the server before
//! the fill as well as after it: the RSS the fill adds is the holds'. Fill hold `k` is seat
//! `k % SEATS_MAX + 1` of fill date `k / SEATS_MAX`, and buyer `p` of `B` sends the holds
//! `p, p + B, p + 2B, ...`, one after another as fast as the server answers (the client's
//! connections bound how many are in flight), so every buyer ends with the same number of holds
//! give or take one. The server must let a user hold that many seats on one date and over all
//! dates, and keep them past the run: `Plan::needs` says how many, and a 422 `hold_limit` stops
//! the fill at once with those figures.
//!
//! The fill holds carry no `Idempotency-Key`: the server then keeps no key for them, so the
//! state the fill adds is the holds alone, and a retry after a lost answer meets the first
//! attempt's hold (409 `seat_unavailable`), counted as a conflict. The audit lists each buyer's
//! reservations from the server, so a hold whose answer was lost is still checked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::api::{self, Fail};
use crate::audit::HoldRecord;
use crate::client::Client;
use crate::setup::Admitted;
use crate::{Context, SEATS_MAX};

/// The most holds `--fill-holds` may ask for: 100 dates of `SEATS_MAX` seats.
pub const FILL_HOLDS_MAX: u64 = 10_000_000;
/// Times a buyer re-enters the waiting room during the fill after its token lapsed.
const READMISSIONS_MAX: u32 = 3;

/// Where N fill holds go, and what the server must allow for them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Seats of each fill date.
    pub dates: Vec<u32>,
    pub buyers: usize,
    /// The most fill holds one buyer places on one date.
    pub per_buyer_per_date: u32,
    /// The most fill holds one buyer places in all.
    pub per_buyer: u64,
    /// What the server's limits must allow for the whole run.
    pub needs: Needs,
}

/// Server limits a fill run needs (the server cannot be asked for its settings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Needs {
    /// `holds.max_seats_per_user`: a buyer's fill holds on one fill date, and its walk over one
    /// measured date without cancelling.
    pub max_seats_per_user: u32,
    /// `holds.max_seats_per_user_total`: a buyer's fill holds, and its live holds of both
    /// measured slices.
    pub max_seats_per_user_total: u64,
}

impl Plan {
    /// `holds` fill holds over `buyers` buyers, who also walk a measured date of
    /// `measured_seats` seats in each of the two slices.
    pub fn new(holds: u64, buyers: usize, measured_seats: u32) -> Self {
        let buyers = buyers.max(1);
        let per_date = u64::from(SEATS_MAX);
        let full = (holds / per_date) as usize;
        let mut dates = vec![SEATS_MAX; full];
        let rest = (holds % per_date) as u32;
        if rest > 0 {
            dates.push(rest);
        }
        let b = buyers as u64;
        let largest = dates.iter().copied().max().unwrap_or(0);
        let per_buyer_per_date = u64::from(largest).div_ceil(b) as u32;
        let per_buyer = holds.div_ceil(b);
        let per_slice = u64::from(measured_seats).div_ceil(b);
        Plan {
            needs: Needs {
                max_seats_per_user: per_buyer_per_date.max(per_slice as u32).max(1),
                max_seats_per_user_total: per_buyer + 2 * per_slice,
            },
            dates,
            buyers,
            per_buyer_per_date,
            per_buyer,
        }
    }

    /// The server settings that allow the plan, as environment overrides.
    pub fn env(&self) -> String {
        format!(
            "BOXOFFICE__HOLDS__MAX_SEATS_PER_USER={} BOXOFFICE__HOLDS__MAX_SEATS_PER_USER_TOTAL={}",
            self.needs.max_seats_per_user, self.needs.max_seats_per_user_total
        )
    }
}

/// Fill hold `k`: (fill date, seat number).
pub fn seat_of(k: u64) -> (usize, u32) {
    let per_date = u64::from(SEATS_MAX);
    ((k / per_date) as usize, (k % per_date) as u32 + 1)
}

/// The fill hold numbers buyer `position` of `buyers` sends, for a fill of `count`.
pub fn holds_of(position: usize, buyers: usize, count: u64) -> impl Iterator<Item = u64> {
    (position as u64..count).step_by(buyers.max(1))
}

/// What the fill did.
pub struct Filled {
    /// The buyers in the order given, with the queue token each holds now.
    pub buyers: Vec<Admitted>,
    /// Each buyer's fill holds, by position.
    pub live: Vec<Vec<HoldRecord>>,
    pub holds: u64,
    /// 409 `seat_unavailable`: a seat someone (or a lost first attempt) held already.
    pub conflicts: u64,
    pub seconds: f64,
}

struct Shared {
    client: Client,
    dates: Vec<String>,
    buyers: usize,
    count: u64,
    deadline: Instant,
    stop: AtomicBool,
    holds: AtomicU64,
    conflicts: AtomicU64,
    /// Why a buyer stopped short: the first such reason, and how many did.
    stopped: Mutex<(u64, Option<String>)>,
    refused_by_limit: AtomicBool,
}

/// Sends `count` fill holds over `dates` (`plan`'s, made during setup) from `buyers`, under a
/// progress bar, bounded by `--setup-timeout`. A 422 `hold_limit`, or a buyer stopped by any
/// other refusal, ends it with an error saying why.
pub async fn run(
    ctx: &Context,
    plan: &Plan,
    dates: Vec<String>,
    buyers: Vec<Admitted>,
    count: u64,
) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let timeout = ctx.setup_timeout();
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        dates,
        buyers: buyers.len(),
        count,
        deadline: started + timeout,
        stop: AtomicBool::new(false),
        holds: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        stopped: Mutex::new((0, None)),
        refused_by_limit: AtomicBool::new(false),
    });
    let total = buyers.len();
    let mut tasks = JoinSet::new();
    for (position, buyer) in buyers.into_iter().enumerate() {
        tasks.spawn(fill_one(shared.clone(), position, buyer));
    }
    let all = async {
        let mut done: Vec<Option<(Admitted, Vec<HoldRecord>)>> = (0..total).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((position, buyer, live)) = joined {
                done[position] = Some((buyer, live));
            }
        }
        done
    };
    let status = {
        let shared = shared.clone();
        move || {
            let holds = shared.holds.load(Ordering::Relaxed);
            let answered = holds + shared.conflicts.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            (
                answered,
                format!(
                    "filling · {holds} holds · {:.0} holds/s (not measured)",
                    holds as f64 / elapsed
                ),
            )
        }
    };
    let outcome = ctx
        .display
        .run("fill", count, status, tokio::time::timeout(timeout, all))
        .await;
    shared.stop.store(true, Ordering::Release);
    let holds = shared.holds.load(Ordering::Relaxed);
    let Ok(done) = outcome else {
        bail!(
            "the fill placed {holds} of {count} holds in --setup-timeout ({} s) and was stopped: \
             raise --setup-timeout or fill fewer",
            timeout.as_secs()
        );
    };
    if shared.refused_by_limit.load(Ordering::Acquire) {
        let (_, why) = &*shared.stopped.lock();
        bail!(
            "the server refused a fill hold with 422 hold_limit ({}) after {holds} of {count} \
             holds: it must let each of the {} buyers hold {} seats on one date and {} over all \
             dates; start it with {} (and holds that outlive the run, e.g. \
             BOXOFFICE__HOLDS__TTL_SECONDS=3600)",
            why.as_deref().unwrap_or("-"),
            plan.buyers,
            plan.needs.max_seats_per_user,
            plan.needs.max_seats_per_user_total,
            plan.env()
        );
    }
    let (stopped, why) = std::mem::take(&mut *shared.stopped.lock());
    if stopped > 0 {
        bail!(
            "{stopped} buyers stopped filling early, the first on {}; the fill placed {holds} of \
             {count} holds",
            why.unwrap_or_default()
        );
    }
    let mut buyers = Vec::with_capacity(total);
    let mut live = Vec::with_capacity(total);
    for (position, slot) in done.into_iter().enumerate() {
        let Some((buyer, held)) = slot else {
            bail!("the fill task of buyer {position} failed");
        };
        buyers.push(buyer);
        live.push(held);
    }
    Ok(Filled {
        buyers,
        live,
        holds,
        conflicts: shared.conflicts.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn fill_one(
    shared: Arc<Shared>,
    position: usize,
    mut buyer: Admitted,
) -> (usize, Admitted, Vec<HoldRecord>) {
    let client = &shared.client;
    let mut live = Vec::new();
    let mut readmissions = 0;
    let mut numbers = holds_of(position, shared.buyers, shared.count).peekable();
    while let Some(&k) = numbers.peek() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let (date, seat) = seat_of(k);
        let date_id = &shared.dates[date];
        match api::hold_without_key(client, &buyer.session, &buyer.token, date_id, &[seat]).await {
            Ok(reservation) => {
                shared.holds.fetch_add(1, Ordering::Relaxed);
                live.push(HoldRecord {
                    reservation_id: reservation.reservation_id,
                });
                numbers.next();
            }
            Err(fail) if fail.is(409, "seat_unavailable") => {
                shared.conflicts.fetch_add(1, Ordering::Relaxed);
                numbers.next();
            }
            Err(Fail::Refused {
                status: 401 | 403, ..
            }) if readmissions < READMISSIONS_MAX => {
                readmissions += 1;
                let max_wait = shared.deadline.saturating_duration_since(Instant::now());
                let stop = || shared.stop.load(Ordering::Acquire);
                match api::admit(client, &buyer.session, max_wait.min(MAX_WAIT), stop).await {
                    api::Admission::Active(fresh) => buyer.token = fresh,
                    _ => {
                        stop_short(&shared, format!("buyer {position}: not readmitted"));
                        break;
                    }
                }
            }
            Err(fail) => {
                if fail.is(422, "hold_limit") {
                    shared.refused_by_limit.store(true, Ordering::Release);
                    shared.stop.store(true, Ordering::Release);
                    stop_short(
                        &shared,
                        format!("buyer {position} at {} fill holds", live.len()),
                    );
                } else {
                    stop_short(&shared, format!("buyer {position}: {fail}"));
                }
                break;
            }
        }
    }
    (position, buyer, live)
}

/// How long a buyer waits to be readmitted during the fill.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn stop_short(shared: &Shared, why: String) {
    let mut stopped = shared.stopped.lock();
    stopped.0 += 1;
    stopped.1.get_or_insert(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_holds_take_ten_full_dates_and_a_partial_one_is_sized_to_the_rest() {
        let plan = Plan::new(1_000_000, 256, SEATS_MAX);
        assert_eq!(plan.dates, vec![SEATS_MAX; 10]);
        let plan = Plan::new(250_001, 1_000, 200);
        assert_eq!(plan.dates, vec![SEATS_MAX, SEATS_MAX, 50_001]);
        assert_eq!(Plan::new(300, 20, 200).dates, vec![300]);
    }

    #[test]
    fn the_needs_cover_a_buyers_share_of_a_date_and_of_the_fill_and_both_slices() {
        let plan = Plan::new(1_000_000, 256, SEATS_MAX);
        // 100,000 / 256 = 390.6 a date; 1,000,000 / 256 = 3906.25 in all.
        assert_eq!(plan.per_buyer_per_date, 391);
        assert_eq!(plan.per_buyer, 3_907);
        assert_eq!(plan.needs.max_seats_per_user, 391);
        assert_eq!(plan.needs.max_seats_per_user_total, 3_907 + 2 * 391);
        assert_eq!(
            plan.env(),
            "BOXOFFICE__HOLDS__MAX_SEATS_PER_USER=391 BOXOFFICE__HOLDS__MAX_SEATS_PER_USER_TOTAL=4689"
        );
        // A measured date walked by few buyers needs more per date than the fill does.
        let plan = Plan::new(300, 20, 1_000);
        assert_eq!(plan.per_buyer_per_date, 15);
        assert_eq!(plan.needs.max_seats_per_user, 50);
        assert_eq!(plan.needs.max_seats_per_user_total, 15 + 100);
    }

    #[test]
    fn every_fill_hold_is_sent_by_exactly_one_buyer_to_a_seat_of_its_own() {
        let (count, buyers) = (250_001u64, 7);
        let plan = Plan::new(count, buyers, 10);
        let mut seen = std::collections::HashSet::new();
        let mut per_buyer = Vec::new();
        for position in 0..buyers {
            let mut sent = 0u64;
            let mut per_date = vec![0u32; plan.dates.len()];
            for k in holds_of(position, buyers, count) {
                let (date, seat) = seat_of(k);
                assert!((1..=plan.dates[date]).contains(&seat), "hold {k}");
                assert!(seen.insert((date, seat)), "hold {k} sent twice");
                per_date[date] += 1;
                sent += 1;
            }
            assert!(per_date.iter().all(|&n| n <= plan.per_buyer_per_date));
            per_buyer.push(sent);
        }
        assert_eq!(seen.len() as u64, count);
        assert!(per_buyer.iter().all(|&n| n <= plan.per_buyer));
        assert!(per_buyer.iter().max().unwrap() - per_buyer.iter().min().unwrap() <= 1);
    }
}
