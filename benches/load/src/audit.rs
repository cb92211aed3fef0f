//! The invariant check, through the API only, after the measured phase:
//!
//! - **No seat sold twice.** Every buyer that ever sent a hold or a charge lists its reservations;
//!   no seat may be in two paid reservations, nor in two payments the buyers recorded.
//! - **The seat listing agrees.** Each date's listing (`sold`) equals the seats of the paid
//!   reservations, and those equal the payments the buyers recorded (up to payments whose answer
//!   never came).
//! - **Money is conserved.** Σ top-ups the buyers recorded = Σ their balances now + Σ the prices
//!   of their paid reservations.
//! - In `holds` mode, the listing's `held` seats equal the holds the server lists as live, and
//!   every hold a buyer believes live is live or expired, never someone else's or paid.
//!
//! Only a buyer that sent a hold or a charge can own seats or money, so auditing those is complete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::api::{self, Reservation, SeatStatus};
use crate::client::Client;
use crate::progress::Display;
use crate::setup;

/// Failure lists in the report are cut to this many examples.
const EXAMPLES_MAX: usize = 20;
/// API.md lets admin stats lag the truth by one second.
const STATS_LAG: Duration = Duration::from_millis(1_100);
const AUDITOR_ADMISSION_WAIT: Duration = Duration::from_secs(60);

/// A payment a buyer got a 201 for.
#[derive(Debug, Clone)]
pub struct PaidRecord {
    pub reservation_id: String,
    pub date_id: String,
    pub seat_nos: Vec<u32>,
    pub amount: u64,
}

/// A hold a buyer got a 201 for and has not cancelled.
#[derive(Debug, Clone)]
pub struct HoldRecord {
    pub reservation_id: String,
}

/// What one buyer did that the audit checks against the server.
#[derive(Debug, Default)]
pub struct BuyerRecord {
    pub session: Option<String>,
    /// Sent at least one hold or charge.
    pub touched: bool,
    /// Σ charges answered 201.
    pub topups: u64,
    /// Σ charges that got no answer: applied or not, nobody knows.
    pub topups_uncertain: u64,
    pub paid: Vec<PaidRecord>,
    /// Reservations whose payment got no answer.
    pub payments_uncertain: Vec<String>,
    pub live_holds: Vec<HoldRecord>,
    /// A queue token the buyer still held when the run ended, to be left in the clean-up.
    pub queue_token: Option<String>,
}

pub struct Auditor {
    pub session: String,
    pub token: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Audit {
    /// Every invariant held and the audit itself could read everything it needed.
    pub ok: bool,
    pub failures: Vec<String>,
    pub buyers_audited: usize,
    /// Audit requests that failed (the audit is then incomplete, and not ok).
    pub audit_errors: u64,
    /// Seats in more than one paid reservation, or paid for twice in the buyers' records.
    pub oversold_seats: u64,
    pub listing_sold: u64,
    pub listing_held: u64,
    pub listing_available: u64,
    pub seats_total: u64,
    pub paid_seats_server: u64,
    pub paid_seats_recorded: u64,
    pub listing_matches_payments: bool,
    pub mismatched_seats: Vec<String>,
    /// Seats in more than one live hold.
    pub double_held_seats: u64,
    /// Only in `holds` mode.
    pub listing_matches_holds: Option<bool>,
    pub money_conserved: bool,
    pub topups: u64,
    pub topups_uncertain: u64,
    pub balances: u64,
    pub paid_amount_server: u64,
    pub paid_amount_recorded: u64,
    /// Every date's seats all sold, per its listing.
    pub sold_out: bool,
    /// Informational: admin stats after the run minus before (may include others' traffic).
    pub admin_stats_delta: Option<BTreeMap<String, i64>>,
}

type SeatKey = (String, u32);

pub struct Scope<'a> {
    /// `(date_id, seat_count)` of every date the run created.
    pub dates: &'a [(String, u32)],
    pub check_holds: bool,
    pub admin_token: Option<&'a str>,
    pub stats_before: Option<Value>,
}

pub async fn audit(
    client: &Client,
    display: Display,
    auditor: &mut Auditor,
    scope: Scope<'_>,
    buyers: &[BuyerRecord],
) -> Audit {
    let mut audit = Audit {
        ok: true,
        listing_matches_payments: true,
        money_conserved: true,
        ..Audit::default()
    };
    let ours: BTreeSet<&str> = scope.dates.iter().map(|(d, _)| d.as_str()).collect();

    // The server's view of every buyer who could own something.
    let touched: Vec<(usize, String)> = buyers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.touched)
        .filter_map(|(i, b)| b.session.clone().map(|s| (i, s)))
        .collect();
    audit.buyers_audited = touched.len();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (index, session) in touched {
        let (client, done) = (client.clone(), done.clone());
        tasks.spawn(async move {
            let listed = api::reservations(&client, &session).await;
            let balance = api::balance(&client, &session).await;
            done.fetch_add(1, Ordering::Relaxed);
            (index, listed, balance)
        });
    }
    let total = audit.buyers_audited as u64;
    let status = move || (done.load(Ordering::Relaxed), "auditing buyers".to_owned());
    let views = display
        .run("audit", total, status, async {
            let mut views = Vec::with_capacity(total as usize);
            while let Some(joined) = tasks.join_next().await {
                views.push(joined.expect("an audit task does not panic"));
            }
            views
        })
        .await;

    let mut server_paid: HashMap<SeatKey, Vec<String>> = HashMap::new();
    let mut server_held: HashMap<SeatKey, Vec<String>> = HashMap::new();
    let mut server_status: HashMap<String, String> = HashMap::new();
    let mut server_price: HashMap<String, u64> = HashMap::new();
    for (index, listed, balance) in views {
        match balance {
            Ok(balance) => audit.balances += balance,
            Err(fail) => fail_audit(&mut audit, format!("balance of buyer {index}: {fail}")),
        }
        let listed: Vec<Reservation> = match listed {
            Ok(listed) => listed,
            Err(fail) => {
                fail_audit(&mut audit, format!("reservations of buyer {index}: {fail}"));
                continue;
            }
        };
        for r in listed
            .into_iter()
            .filter(|r| ours.contains(r.date_id.as_str()))
        {
            let target = match r.status.as_str() {
                "paid" => {
                    audit.paid_amount_server += r.price;
                    Some(&mut server_paid)
                }
                "held" => Some(&mut server_held),
                _ => None,
            };
            if let Some(target) = target {
                for seat in &r.seat_nos {
                    target
                        .entry((r.date_id.clone(), *seat))
                        .or_default()
                        .push(r.reservation_id.clone());
                }
            }
            server_price.insert(r.reservation_id.clone(), r.price);
            server_status.insert(r.reservation_id, r.status);
        }
    }

    // What the buyers recorded.
    let mut recorded_paid: HashMap<SeatKey, u32> = HashMap::new();
    let mut uncertain_seats: BTreeSet<SeatKey> = BTreeSet::new();
    for buyer in buyers {
        audit.topups += buyer.topups;
        audit.topups_uncertain += buyer.topups_uncertain;
        for paid in &buyer.paid {
            audit.paid_amount_recorded += paid.amount;
            for seat in &paid.seat_nos {
                *recorded_paid
                    .entry((paid.date_id.clone(), *seat))
                    .or_default() += 1;
            }
            if server_price.get(&paid.reservation_id) != Some(&paid.amount) {
                fail(
                    &mut audit,
                    format!(
                        "payment of {} recorded {} won, the server lists {:?}",
                        paid.reservation_id,
                        paid.amount,
                        server_price.get(&paid.reservation_id)
                    ),
                );
            }
        }
        for reservation in &buyer.payments_uncertain {
            // Seats of a payment whose answer never came may or may not be sold.
            for (key, ids) in &server_paid {
                if ids.contains(reservation) {
                    uncertain_seats.insert(key.clone());
                }
            }
        }
    }

    // No seat sold twice.
    let oversold: BTreeSet<&SeatKey> = server_paid
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(k, _)| k)
        .chain(
            recorded_paid
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, _)| k),
        )
        .collect();
    audit.oversold_seats = oversold.len() as u64;
    if !oversold.is_empty() {
        let examples: Vec<String> = oversold
            .iter()
            .take(EXAMPLES_MAX)
            .map(|k| seat(k))
            .collect();
        fail(
            &mut audit,
            format!(
                "{} seats sold twice: {}",
                oversold.len(),
                examples.join(", ")
            ),
        );
    }
    audit.double_held_seats = server_held.values().filter(|ids| ids.len() > 1).count() as u64;
    if audit.double_held_seats > 0 {
        let why = format!("{} seats in two live holds", audit.double_held_seats);
        fail(&mut audit, why);
    }
    audit.paid_seats_server = server_paid.len() as u64;
    audit.paid_seats_recorded = recorded_paid.len() as u64;

    // The listings agree with the payments.
    let mut listing_sold: BTreeSet<SeatKey> = BTreeSet::new();
    let mut listing_held: BTreeSet<SeatKey> = BTreeSet::new();
    audit.sold_out = !scope.dates.is_empty();
    for (date_id, seat_count) in scope.dates {
        audit.seats_total += u64::from(*seat_count);
        let listing = match listing_of(client, auditor, date_id).await {
            Ok(listing) => listing,
            Err(why) => {
                fail_audit(&mut audit, format!("seat listing of {date_id}: {why}"));
                audit.sold_out = false;
                continue;
            }
        };
        let mut sold_here = 0u32;
        for s in listing {
            let key = (date_id.clone(), s.seat_no);
            match s.status {
                SeatStatus::Sold => {
                    sold_here += 1;
                    listing_sold.insert(key);
                }
                SeatStatus::Held => {
                    listing_held.insert(key);
                }
                SeatStatus::Available => audit.listing_available += 1,
                SeatStatus::Unknown => fail(
                    &mut audit,
                    format!("{} has a status API.md does not know", seat(&key)),
                ),
            }
        }
        if sold_here != *seat_count {
            audit.sold_out = false;
        }
    }
    audit.listing_sold = listing_sold.len() as u64;
    audit.listing_held = listing_held.len() as u64;
    let server_paid_set: BTreeSet<SeatKey> = server_paid.keys().cloned().collect();
    let recorded_set: BTreeSet<SeatKey> = recorded_paid.keys().cloned().collect();
    let mut mismatched: BTreeSet<String> = BTreeSet::new();
    for key in listing_sold.symmetric_difference(&server_paid_set) {
        mismatched.insert(format!("{} (listing vs reservations)", seat(key)));
    }
    for key in recorded_set.difference(&server_paid_set) {
        mismatched.insert(format!(
            "{} (recorded paid, not paid on the server)",
            seat(key)
        ));
    }
    for key in server_paid_set.difference(&recorded_set) {
        if !uncertain_seats.contains(key) {
            mismatched.insert(format!(
                "{} (paid on the server, never recorded)",
                seat(key)
            ));
        }
    }
    if !mismatched.is_empty() {
        audit.listing_matches_payments = false;
        fail(
            &mut audit,
            format!(
                "{} seats where the listing, the reservations and the recorded payments disagree",
                mismatched.len()
            ),
        );
        audit.mismatched_seats = mismatched.into_iter().take(EXAMPLES_MAX).collect();
    }

    if scope.check_holds {
        let server_held_set: BTreeSet<SeatKey> = server_held.keys().cloned().collect();
        let mut agree = listing_held == server_held_set;
        let mut not_live = 0u64;
        for buyer in buyers {
            for hold in &buyer.live_holds {
                match server_status.get(&hold.reservation_id).map(String::as_str) {
                    Some("held" | "expired") => {}
                    _ => not_live += 1,
                }
            }
        }
        if not_live > 0 {
            agree = false;
        }
        audit.listing_matches_holds = Some(agree);
        if !agree {
            fail(
                &mut audit,
                format!(
                    "holds disagree: listing {} held, reservations {} held, {not_live} recorded holds not live",
                    listing_held.len(),
                    server_held_set.len()
                ),
            );
        }
    }

    // Money.
    let accounted = audit.balances + audit.paid_amount_server;
    let conserved = audit.topups <= accounted && accounted <= audit.topups + audit.topups_uncertain;
    if !conserved {
        audit.money_conserved = false;
        let why = format!(
            "money not conserved: top-ups {} (+{} unknown) != balances {} + paid {}",
            audit.topups, audit.topups_uncertain, audit.balances, audit.paid_amount_server
        );
        fail(&mut audit, why);
    }

    if let (Some(admin), Some(before)) = (scope.admin_token, scope.stats_before.as_ref()) {
        tokio::time::sleep(STATS_LAG).await;
        if let Ok(after) = api::admin_stats(client, admin).await {
            audit.admin_stats_delta = Some(stats_delta(before, &after));
        }
    }
    audit
}

/// The auditor's view of one date's seats, re-admitting it if its token lapsed.
async fn listing_of(
    client: &Client,
    auditor: &mut Auditor,
    date_id: &str,
) -> Result<Vec<api::Seat>, String> {
    for _ in 0..2 {
        let token = match &auditor.token {
            Some(token) => token.clone(),
            None => {
                let token =
                    setup::admit_session(client, &auditor.session, AUDITOR_ADMISSION_WAIT).await?;
                auditor.token = Some(token.clone());
                token
            }
        };
        match api::seats(client, &auditor.session, &token, date_id).await {
            Ok(seats) => return Ok(seats),
            Err(api::Fail::Refused {
                status: 401 | 403, ..
            }) => auditor.token = None,
            Err(fail) => return Err(fail.to_string()),
        }
    }
    Err("the auditor could not stay admitted".to_owned())
}

fn stats_delta(before: &Value, after: &Value) -> BTreeMap<String, i64> {
    let mut delta = BTreeMap::new();
    if let Some(after) = after.as_object() {
        for (key, value) in after {
            if let (Some(a), Some(b)) = (value.as_i64(), before[key].as_i64()) {
                delta.insert(key.clone(), a - b);
            }
        }
    }
    delta
}

fn seat((date, seat_no): &SeatKey) -> String {
    format!("{date}#{seat_no}")
}

fn fail(audit: &mut Audit, why: String) {
    audit.ok = false;
    audit.failures.push(why);
}

fn fail_audit(audit: &mut Audit, why: String) {
    audit.audit_errors += 1;
    if audit.audit_errors <= EXAMPLES_MAX as u64 {
        fail(audit, format!("audit incomplete: {why}"));
    } else {
        audit.ok = false;
    }
}

/// After the audit: hands back every queue token the run still holds (the auditor's too), so
/// the next run finds the waiting room as this one found it. Returns how many were left.
pub async fn clean_up(client: &Client, auditor: Option<&Auditor>, buyers: &[BuyerRecord]) -> u64 {
    let mut tokens: Vec<(String, String)> = buyers
        .iter()
        .filter_map(|b| Some((b.session.clone()?, b.queue_token.clone()?)))
        .collect();
    if let Some(Auditor {
        session,
        token: Some(token),
    }) = auditor
    {
        tokens.push((session.clone(), token.clone()));
    }
    let mut tasks = JoinSet::new();
    for (session, token) in tokens {
        let client = client.clone();
        tasks.spawn(async move { api::leave_queue(&client, &session, &token).await.is_ok() });
    }
    let mut left = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok(true) = joined {
            left += 1;
        }
    }
    left
}
