//! Holds expire by time alone: the instant `expires_at` passes, the seats are free.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const TTL_SECONDS: u64 = 5;
const PRICE: u64 = 10_000;

/// These tests hold seats again right after they expire: the cooldown on that is
/// `hoarding.rs`'s subject, not theirs.
async fn short_hold_app() -> TestApp {
    spawn_app_with(|s| {
        s.holds.ttl_seconds = TTL_SECONDS;
        s.holds.rehold_cooldown_seconds = 0;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_frees_its_seats_at_once_and_cannot_be_paid() {
    let app = short_hold_app().await;
    let (concert, date) = app.concert_with_date(8, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;
    let start = app.now_ms();

    let held = app.hold_ok(&alice, &alice_q, &date, &[1, 2]).await;
    let reservation = string_field(&held, "reservation_id");
    assert_time_near(
        &held["expires_at"],
        start + TTL_SECONDS as i64 * 1000,
        0,
        "expires_at",
    );
    assert_problem(
        app.hold(&bob, &bob_q, &date, &[1]).await,
        409,
        "seat_unavailable",
    )
    .await;

    // One millisecond before expiry: still held everywhere.
    app.advance(Duration::from_millis(TTL_SECONDS * 1000 - 1));
    assert_problem(
        app.hold(&bob, &bob_q, &date, &[2]).await,
        409,
        "seat_unavailable",
    )
    .await;
    assert_eq!(app.reservation_status(&alice, &reservation).await, "held");
    let statuses = app.seat_statuses(&bob, &bob_q, &date).await;
    assert_eq!((&*statuses[&1], &*statuses[&2]), ("held", "held"));

    // Past expiry: the reservation reads expired and the seats are available, at once.
    app.advance(Duration::from_millis(2));
    assert_eq!(
        app.reservation_status(&alice, &reservation).await,
        "expired"
    );
    let statuses = app.seat_statuses(&bob, &bob_q, &date).await;
    assert!(statuses.values().all(|s| s == "available"), "{statuses:?}");
    let list = app
        .get("/api/v1/reservations")
        .session(&alice)
        .send()
        .await
        .unwrap();
    let list = assert_json(list, 200).await;
    assert_eq!(
        list["reservations"][0]["reservation_id"],
        json!(reservation)
    );
    assert_eq!(list["reservations"][0]["status"], "expired");

    // Another buyer holds the seat immediately.
    let bobs = app.hold_ok(&bob, &bob_q, &date, &[1]).await;
    assert_eq!(bobs["seat_nos"], json!([1]));
    assert_eq!(bobs["status"], "held");
    let statuses = app.seat_statuses(&alice, &alice_q, &date).await;
    assert_eq!((&*statuses[&1], &*statuses[&2]), ("held", "available"));

    // Paying the expired hold: 410, and no money moves.
    app.charge_ok(&alice, 5 * PRICE).await;
    assert_problem(
        app.pay(&alice, &alice_q, &reservation).await,
        410,
        "hold_expired",
    )
    .await;
    assert_eq!(app.balance(&alice).await, 5 * PRICE);
    assert_eq!(app.history(&alice).await.len(), 1, "only the charge");
    assert_eq!(
        app.reservation_status(&alice, &reservation).await,
        "expired"
    );
    // The failed payment did not end Alice's admission.
    let polled = assert_json(app.poll_queue(&alice, &alice_q).await, 200).await;
    assert_eq!(polled["status"], "active");
    assert_eq!(polled["reissued"], json!(false));

    // Cancelling an expired hold: 409 reservation_not_held.
    let cancel = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(&alice)
        .send()
        .await
        .unwrap();
    assert_problem(cancel, 409, "reservation_not_held").await;

    // Seat 1 stays Bob's; Alice can take seat 2 again and pay for it.
    let again = app.hold_ok(&alice, &alice_q, &date, &[2]).await;
    let again = string_field(&again, "reservation_id");
    assert_ne!(again, reservation);
    let paid = assert_json(app.pay(&alice, &alice_q, &again).await, 201).await;
    assert_eq!(paid["seat_nos"], json!([2]));
    assert_eq!(app.balance(&alice).await, 4 * PRICE);

    // The catalogue's count catches up within a second.
    let dates_url = format!("/api/v1/concerts/{concert}/dates");
    eventually("available_seats to count one held and one sold", || async {
        let dates = assert_json(app.get(&dates_url).send().await.unwrap(), 200).await;
        (dates["dates"][0]["available_seats"] == json!(6)).then_some(())
    })
    .await;
    let stats = eventually("stats to drop the expired hold", || async {
        let stats = app.stats().await;
        (stats["seats_held"] == json!(1) && stats["seats_sold"] == json!(1)).then_some(stats)
    })
    .await;
    assert_eq!(stats["seats_total"], json!(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holds_do_not_count_toward_the_hold_limit() {
    let app = short_hold_app().await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let max = app.settings.holds.max_seats_per_user as u64;
    assert_eq!(max, 4, "this test assumes the default hold limit");

    app.hold_ok(&buyer, &queue_token, &date, &[1, 2, 3]).await;
    assert_problem(
        app.hold(&buyer, &queue_token, &date, &[4, 5]).await,
        422,
        "hold_limit",
    )
    .await;
    let fourth = app.hold_ok(&buyer, &queue_token, &date, &[4]).await;
    assert_problem(
        app.hold(&buyer, &queue_token, &date, &[5]).await,
        422,
        "hold_limit",
    )
    .await;

    // Once they expire, the same user may hold four seats again, including the old ones.
    app.advance(Duration::from_secs(TTL_SECONDS) + Duration::from_millis(1));
    app.hold_ok(&buyer, &queue_token, &date, &[1, 5, 6, 7])
        .await;
    assert_eq!(
        app.reservation_status(&buyer, &string_field(&fourth, "reservation_id"))
            .await,
        "expired"
    );
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    let held: Vec<u64> = statuses
        .iter()
        .filter(|(_, s)| *s == "held")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(held, vec![1, 5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_hold_frees_its_seats_and_cannot_be_paid() {
    let app = short_hold_app().await;
    let (_, date) = app.concert_with_date(4, PRICE).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (bob, bob_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&alice, &alice_q, &date, &[3]).await;
    let reservation = string_field(&held, "reservation_id");
    let cancel = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 204);
    app.hold_ok(&bob, &bob_q, &date, &[3]).await;
    app.charge_ok(&alice, PRICE).await;
    assert_problem(
        app.pay(&alice, &alice_q, &reservation).await,
        409,
        "reservation_not_held",
    )
    .await;
    assert_eq!(app.balance(&alice).await, PRICE);
}
