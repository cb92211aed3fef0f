//! No seat held forever, and no user holding a whole sale: a user who let go of a seat (cancelled
//! or expired) waits `holds.rehold_cooldown_seconds` before holding it again, and a user's held
//! seats over every date are bounded by `holds.max_seats_per_user_total`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

/// The defaults these tests are written against (`config.toml`).
const COOLDOWN_SECONDS: u64 = 60;
const TOTAL_MAX: usize = 8;
const PER_DATE_MAX: usize = 4;
const PRICE: u64 = 1_000;

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Asserts a 409 `rehold_cooldown` whose `Retry-After` is `seconds`.
async fn assert_cooldown(response: reqwest::Response, seconds: u64) {
    let retry = retry_after(&response);
    assert_problem(response, 409, "rehold_cooldown").await;
    assert_eq!(retry, Some(seconds), "Retry-After");
}

async fn cancel(app: &TestApp, buyer: &Buyer, reservation: &str) {
    let response = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "cancel {reservation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_seat_is_not_held_again_by_its_holder_until_the_cooldown_passes() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;

    let held = app.hold_ok(&alice, &alice_q, &date, &[3]).await;
    cancel(&app, &alice, &string_field(&held, "reservation_id")).await;

    assert_cooldown(
        app.hold(&alice, &alice_q, &date, &[3]).await,
        COOLDOWN_SECONDS,
    )
    .await;
    // A hold that names it fails whole: the other seat stays free.
    assert_cooldown(
        app.hold(&alice, &alice_q, &date, &[4, 3]).await,
        COOLDOWN_SECONDS,
    )
    .await;
    let statuses = app.seat_statuses(&alice, &alice_q, &date).await;
    assert!(statuses.values().all(|s| s == "available"), "{statuses:?}");
    // Other seats are not affected.
    app.hold_ok(&alice, &alice_q, &date, &[4]).await;

    // Half a second before the end: one more second to wait, rounded up.
    app.advance(Duration::from_millis(COOLDOWN_SECONDS * 1000 - 500));
    assert_cooldown(app.hold(&alice, &alice_q, &date, &[3]).await, 1).await;
    app.advance(Duration::from_millis(500));
    let again = app.hold_ok(&alice, &alice_q, &date, &[3]).await;
    assert_eq!(again["seat_nos"], json!([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_takes_a_cancelled_seat_at_once() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;

    let held = app.hold_ok(&alice, &alice_q, &date, &[5, 6]).await;
    cancel(&app, &alice, &string_field(&held, "reservation_id")).await;
    let bobs = app.hold_ok(&bob, &bob_q, &date, &[5, 6]).await;
    assert_eq!(bobs["seat_nos"], json!([5, 6]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_seat_is_not_held_again_by_its_holder_until_the_cooldown_passes() {
    const TTL_SECONDS: u64 = 5;
    let app = spawn_app_with(|s| s.holds.ttl_seconds = TTL_SECONDS).await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;

    app.hold_ok(&alice, &alice_q, &date, &[1, 2]).await;
    // The cooldown runs from the instant the hold expired, swept or not.
    app.advance(Duration::from_secs(TTL_SECONDS));
    assert_cooldown(
        app.hold(&alice, &alice_q, &date, &[2]).await,
        COOLDOWN_SECONDS,
    )
    .await;
    app.advance(Duration::from_secs(20));
    assert_cooldown(
        app.hold(&alice, &alice_q, &date, &[1]).await,
        COOLDOWN_SECONDS - 20,
    )
    .await;
    // Free for everyone else from the moment it expired.
    app.hold_ok(&bob, &bob_q, &date, &[1]).await;

    app.advance(Duration::from_secs(COOLDOWN_SECONDS - 20));
    app.hold_ok(&alice, &alice_q, &date, &[2]).await;
    // Bob's short hold has run out too.
    app.hold_ok(&alice, &alice_q, &date, &[1]).await;
}

/// A concert with `n` dates of `seats` seats each.
async fn dates(app: &TestApp, n: usize, seats: u64) -> Vec<String> {
    let concert = app.create_concert("Long Tour", "Test Hall, Seoul").await;
    let mut dates = Vec::new();
    for _ in 0..n {
        dates.push(app.create_date(&concert, seats, PRICE).await);
    }
    dates
}

/// Seats listed as held, per date, read by `buyer`.
async fn held_seats(app: &TestApp, buyer: &Buyer, queue: &str, dates: &[String]) -> usize {
    let mut held = 0;
    for date in dates {
        let statuses = app.seat_statuses(buyer, queue, date).await;
        held += statuses.values().filter(|s| *s == "held").count();
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_seats_over_all_dates_stop_at_the_total_cap_until_holds_end() {
    let app = spawn_app().await;
    let dates = dates(&app, 3, 20).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;

    let first = app
        .hold_ok(&alice, &alice_q, &dates[0], &[1, 2, 3, 4])
        .await;
    let second = app.hold_ok(&alice, &alice_q, &dates[1], &[1, 2]).await;
    app.hold_ok(&alice, &alice_q, &dates[2], &[1, 2]).await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[2], &[3]).await,
        422,
        "hold_limit",
    )
    .await;
    // A value (422) is refused before a conflict (409): seat 5 is Bob's.
    app.hold_ok(&bob, &bob_q, &dates[1], &[5]).await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[1], &[5]).await,
        422,
        "hold_limit",
    )
    .await;

    // A cancel gives its seats back to the count.
    cancel(&app, &alice, &string_field(&first, "reservation_id")).await;
    app.hold_ok(&alice, &alice_q, &dates[2], &[3, 4]).await;
    app.hold_ok(&alice, &alice_q, &dates[1], &[3, 4]).await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[0], &[9]).await,
        422,
        "hold_limit",
    )
    .await;

    // So does a payment (which ends the queue token: take another).
    app.charge_ok(&alice, 10 * PRICE).await;
    let paid = app
        .pay(&alice, &alice_q, &string_field(&second, "reservation_id"))
        .await;
    assert_json(paid, 201).await;
    let alice_q = string_field(
        &assert_json(app.take_queue_token(&alice).await, 201).await,
        "queue_token",
    );
    app.hold_ok(&alice, &alice_q, &dates[0], &[9, 10]).await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[0], &[11]).await,
        422,
        "hold_limit",
    )
    .await;
    assert_eq!(
        held_seats(&app, &alice, &alice_q, &dates).await,
        TOTAL_MAX + 1,
        "Alice's eight and Bob's one"
    );

    // A hold stops counting the instant it expires, before any sweep.
    app.advance(Duration::from_secs(app.settings.holds.ttl_seconds));
    app.hold_ok(&alice, &alice_q, &dates[0], &[11, 12, 13, 14])
        .await;
    app.hold_ok(&alice, &alice_q, &dates[1], &[11, 12, 13, 14])
        .await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[2], &[11]).await,
        422,
        "hold_limit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_on_several_dates_never_pass_the_total_cap() {
    const DATES: usize = 3;
    const SEATS: u64 = 12;
    let app = spawn_app().await;
    let dates = dates(&app, DATES, SEATS).await;
    let (alice, alice_q) = app.admitted_buyer().await;

    for round in 0..2 {
        let requests = DATES * SEATS as usize;
        let barrier = Arc::new(Barrier::new(requests));
        let attempts: Vec<_> = dates
            .iter()
            .flat_map(|date| (1..=SEATS).map(move |seat| (date.clone(), seat)))
            .map(|(date, seat)| {
                let request = app
                    .post("/api/v1/reservations")
                    .session(&alice)
                    .queue(&alice_q)
                    .json(&json!({"date_id": date, "seat_no": seat}));
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut won = Vec::new();
        for attempt in attempts {
            let (status, body) = attempt.await.unwrap();
            match status {
                201 => won.push(body),
                422 => assert_eq!(body["code"], "hold_limit", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(
            won.len(),
            TOTAL_MAX,
            "round {round}: {} one-seat holds won over {DATES} dates, the cap is {TOTAL_MAX}",
            won.len()
        );
        let per_date: BTreeSet<usize> = dates
            .iter()
            .map(|d| won.iter().filter(|r| r["date_id"] == json!(d)).count())
            .collect();
        assert!(per_date.iter().all(|n| *n <= PER_DATE_MAX), "{per_date:?}");
        assert_eq!(held_seats(&app, &alice, &alice_q, &dates).await, TOTAL_MAX);

        // A refused hold reserved nothing: one cancel makes room for exactly one more.
        cancel(&app, &alice, &string_field(&won[0], "reservation_id")).await;
        let mut again = 0;
        for date in &dates {
            for seat in 1..=SEATS {
                let response = app.hold(&alice, &alice_q, date, &[seat]).await;
                if response.status() == 201 {
                    again += 1;
                }
            }
        }
        assert_eq!(again, 1, "round {round}: holds placed after one cancel");
        // Let every hold and cooldown end before the next round.
        app.advance(Duration::from_secs(
            app.settings.holds.ttl_seconds + COOLDOWN_SECONDS,
        ));
    }
}

async fn signed_in_again(app: &TestApp, buyer: &Buyer) -> (Buyer, String) {
    let session = assert_json(app.sign_in(&buyer.username, PASSWORD).await, 201).await;
    let buyer = Buyer {
        token: string_field(&session, "session_token"),
        ..buyer.clone()
    };
    // The waiting room is saved with the rest: the token taken before may still be live (200).
    let response = app.take_queue_token(&buyer).await;
    let status = response.status().as_u16();
    let queue = assert_json(response, if status == 200 { 200 } else { 201 }).await;
    assert_eq!(queue["status"], "active", "{queue}");
    (buyer, string_field(&queue, "queue_token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cooldown_and_the_total_count_survive_a_restart() {
    let app = spawn_app().await;
    let dates = dates(&app, 3, 10).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let cancelled = app.hold_ok(&alice, &alice_q, &dates[2], &[7]).await;
    cancel(&app, &alice, &string_field(&cancelled, "reservation_id")).await;
    app.hold_ok(&alice, &alice_q, &dates[0], &[1, 2, 3, 4])
        .await;
    app.hold_ok(&alice, &alice_q, &dates[1], &[1, 2, 3]).await;

    let app = app.restarted().await;
    let (alice, alice_q) = signed_in_again(&app, &alice).await;
    // The restarted server's clock is a little later than the first one's, never earlier.
    let response = app.hold(&alice, &alice_q, &dates[2], &[7]).await;
    let retry = retry_after(&response);
    assert_problem(response, 409, "rehold_cooldown").await;
    assert!(
        retry.is_some_and(|s| (1..=COOLDOWN_SECONDS).contains(&s)),
        "Retry-After {retry:?}"
    );
    app.hold_ok(&alice, &alice_q, &dates[2], &[8]).await;
    assert_problem(
        app.hold(&alice, &alice_q, &dates[2], &[9]).await,
        422,
        "hold_limit",
    )
    .await;
}

/// The figure `/metrics` gives for the records of `kind` kept in memory.
async fn records_in_memory(app: &TestApp, kind: &str) -> Option<u64> {
    let text = app.get("/metrics").send().await.ok()?.text().await.ok()?;
    let prefix = format!(r#"boxoffice_records{{kind="{kind}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

async fn eventually_records(app: &TestApp, kind: &str, expected: u64) {
    eventually(&format!("{expected} {kind} in memory"), || async {
        (records_in_memory(app, kind).await == Some(expected)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_and_totals_are_forgotten_once_they_no_longer_matter() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&alice, &alice_q, &date, &[1]).await;
    app.hold_ok(&bob, &bob_q, &date, &[2]).await;
    eventually_records(&app, "users_holding", 2).await;
    cancel(&app, &alice, &string_field(&held, "reservation_id")).await;
    eventually_records(&app, "rehold_cooldowns", 1).await;
    eventually_records(&app, "users_holding", 1).await;

    // The date's first event after Alice's cooldown forgets it.
    app.advance(Duration::from_secs(COOLDOWN_SECONDS));
    app.hold_ok(&bob, &bob_q, &date, &[3]).await;
    eventually_records(&app, "rehold_cooldowns", 0).await;

    // Bob's holds expire (the sweep logs it): he no longer counts. Seat 3 cools down from now;
    // seat 2's hold expired a cooldown ago, so its cooldown is already over and forgotten.
    app.advance(Duration::from_secs(app.settings.holds.ttl_seconds));
    eventually_records(&app, "users_holding", 0).await;
    eventually_records(&app, "rehold_cooldowns", 1).await;
    app.advance(Duration::from_secs(COOLDOWN_SECONDS));
    app.hold_ok(&alice, &alice_q, &date, &[1]).await;
    eventually_records(&app, "rehold_cooldowns", 0).await;
    eventually_records(&app, "users_holding", 1).await;
}
