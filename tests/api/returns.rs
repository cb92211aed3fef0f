//! Refunds, transfers and cancelled dates (API.md, "Refunds, transfers and cancelled dates"):
//! every field, rule and error code, over real HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A buyer who paid for `seats` of `date`, with their queue token (ended by the payment).
async fn paid_reservation(
    app: &TestApp,
    date: &str,
    seats: &[u64],
    balance: u64,
) -> (Buyer, String, Value) {
    let (buyer, token) = app.admitted_buyer().await;
    app.charge_ok(&buyer, balance).await;
    let held = app.hold_ok(&buyer, &token, date, seats).await;
    let id = string_field(&held, "reservation_id");
    assert_json(app.pay(&buyer, &token, &id).await, 201).await;
    (buyer, token, held)
}

async fn refund(app: &TestApp, buyer: &Buyer, reservation_id: &str) -> reqwest::Response {
    app.post("/api/v1/refunds")
        .session(buyer)
        .json(&json!({ "reservation_id": reservation_id }))
        .send()
        .await
        .expect("refund")
}

async fn keyed_refund(
    app: &TestApp,
    buyer: &Buyer,
    key: &str,
    reservation_id: &str,
) -> reqwest::Response {
    app.post("/api/v1/refunds")
        .session(buyer)
        .idempotency_key(key)
        .json(&json!({ "reservation_id": reservation_id }))
        .send()
        .await
        .expect("keyed refund")
}

async fn transfer(
    app: &TestApp,
    buyer: &Buyer,
    reservation_id: &str,
    to_username: &str,
) -> reqwest::Response {
    app.post("/api/v1/transfers")
        .session(buyer)
        .json(&json!({ "reservation_id": reservation_id, "to_username": to_username }))
        .send()
        .await
        .expect("transfer")
}

async fn cancel_date(app: &TestApp, date: &str) -> reqwest::Response {
    app.post(&format!("/api/v1/admin/dates/{date}/cancellation"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("cancel a date")
}

/// A date of `seats` seats at `price` starting `starts_in` after the server's now.
async fn date_starting_in(app: &TestApp, starts_in: Duration, seats: u64, price: u64) -> String {
    let concert = app.create_concert("Soon", "Hall").await;
    let starts_at = time::OffsetDateTime::from_unix_timestamp_nanos(
        (app.now_ms() as i128 + starts_in.as_millis() as i128) * 1_000_000,
    )
    .unwrap()
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap();
    let response = app
        .post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"starts_at": starts_at, "seat_count": seats, "price": price}))
        .send()
        .await
        .unwrap();
    string_field(&assert_json(response, 201).await, "date_id")
}

async fn date_status(app: &TestApp, date: &str) -> String {
    let body = assert_json(
        app.get(&format!("/api/v1/dates/{date}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    string_field(&body, "status")
}

#[tokio::test]
async fn a_refund_returns_the_seats_and_credits_the_price_less_the_rounded_down_fee() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 1_999).await;
    let (buyer, _, held) = paid_reservation(&app, &date, &[3, 4], 5_000).await;
    let id = string_field(&held, "reservation_id");
    assert_eq!(app.balance(&buyer).await, 5_000 - 3_998);

    let body = assert_json(refund(&app, &buyer, &id).await, 201).await;
    // 3,998 won at 10%: a fee of ⌊399.8⌋ = 399, and 3,599 back.
    assert_eq!(body["reservation_id"], json!(id));
    assert_eq!(body["fee"], json!(399));
    assert_eq!(body["amount"], json!(3_599));
    assert_eq!(body["credited_user_id"], json!(buyer.user_id));
    assert_eq!(body["balance"], json!(1_002 + 3_599));
    string_field(&body, "refund_id");
    assert_time_near(&body["refunded_at"], app.now_ms(), 1_000, "refunded_at");
    assert_eq!(app.balance(&buyer).await, 4_601);

    assert_eq!(app.reservation_status(&buyer, &id).await, "refunded");
    let history = app.history(&buyer).await;
    assert_eq!(history[0]["kind"], json!("refund"));
    assert_eq!(history[0]["amount"], json!(3_599));
    assert_eq!(history[0]["balance_after"], json!(4_601));
    assert_eq!(history[0]["reference"], json!(id));
    assert_eq!(history[1]["kind"], json!("payment"));

    // The seats are everyone's again at once.
    let (other, token) = app.admitted_buyer().await;
    let seats = app.seat_statuses(&other, &token, &date).await;
    assert_eq!(
        (seats[&3].as_str(), seats[&4].as_str()),
        ("available", "available")
    );
    app.hold_ok(&other, &token, &date, &[3, 4]).await;

    // Once refunded, it is not paid.
    assert_problem(refund(&app, &buyer, &id).await, 409, "reservation_not_paid").await;
}

#[tokio::test]
async fn a_refund_is_refused_for_holds_others_and_names_that_are_nothing() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 100).await;
    let (buyer, token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &token, &date, &[1]).await;
    let held_id = string_field(&held, "reservation_id");
    assert_problem(
        refund(&app, &buyer, &held_id).await,
        409,
        "reservation_not_paid",
    )
    .await;
    // An expired hold, and a cancelled one, are not paid either.
    app.advance(Duration::from_secs(301));
    assert_problem(
        refund(&app, &buyer, &held_id).await,
        409,
        "reservation_not_paid",
    )
    .await;

    let (payer, _, paid) = paid_reservation(&app, &date, &[2], 1_000).await;
    let paid_id = string_field(&paid, "reservation_id");
    let stranger = app.new_buyer().await;
    assert_problem(refund(&app, &stranger, &paid_id).await, 404, "not_found").await;
    for nothing in ["r_1_999", "r_999_1", "garbage", "", "r_1_01"] {
        assert_problem(refund(&app, &payer, nothing).await, 404, "not_found").await;
    }
    // The body: shape, then type.
    for (body, status, code) in [
        (json!({}), 400, "malformed_request"),
        (json!({ "reservation_id": 5 }), 400, "malformed_request"),
        (json!([paid_id]), 400, "malformed_request"),
    ] {
        let response = app
            .post("/api/v1/refunds")
            .session(&payer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem_for(response, status, code, &body.to_string()).await;
    }
    let response = app
        .post("/api/v1/refunds")
        .session(&payer)
        .body(format!("{{\"reservation_id\":\"{paid_id}\"}}"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .post("/api/v1/refunds")
        .json(&json!({ "reservation_id": paid_id }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    // No queue token is needed, and nothing of it moved.
    assert_eq!(app.reservation_status(&payer, &paid_id).await, "paid");
    assert_json(refund(&app, &payer, &paid_id).await, 201).await;
}

#[tokio::test]
async fn the_refund_window_closes_the_configured_hours_before_the_start() {
    let app = spawn_app_with(|s| {
        s.refunds.window_closes_hours_before_start = 2;
        s.refunds.fee_percent = 0;
    })
    .await;
    let date = date_starting_in(&app, Duration::from_secs(3 * 3_600), 10, 500).await;
    let (buyer, _, first) = paid_reservation(&app, &date, &[1], 1_000).await;
    let first = string_field(&first, "reservation_id");
    let held = {
        let token = string_field(
            &assert_json(app.take_queue_token(&buyer).await, 201).await,
            "queue_token",
        );
        let held = app.hold_ok(&buyer, &token, &date, &[2]).await;
        let id = string_field(&held, "reservation_id");
        assert_json(app.pay(&buyer, &token, &id).await, 201).await;
        id
    };
    // One millisecond before the window closes: refunded in full (a fee of 0%).
    app.advance(Duration::from_millis(3_600_000 - 1));
    let body = assert_json(refund(&app, &buyer, &first).await, 201).await;
    assert_eq!(
        (body["amount"].clone(), body["fee"].clone()),
        (json!(500), json!(0))
    );
    app.advance(Duration::from_millis(1));
    let problem = assert_problem(
        refund(&app, &buyer, &held).await,
        409,
        "refund_window_closed",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains('2'),
        "{problem}"
    );
    assert_eq!(app.reservation_status(&buyer, &held).await, "paid");
}

#[tokio::test]
async fn a_refund_may_take_a_balance_above_max_balance_and_a_fee_of_all_of_it_leaves_no_entry() {
    let app = spawn_app_with(|s| {
        s.balance.max_charge = 1_000;
        s.balance.max_balance = 1_000;
    })
    .await;
    let (_, date) = app.concert_with_date(10, 800).await;
    let (buyer, _, paid) = paid_reservation(&app, &date, &[1], 1_000).await;
    app.charge_ok(&buyer, 800).await;
    assert_eq!(app.balance(&buyer).await, 1_000);
    let body = assert_json(
        refund(&app, &buyer, &string_field(&paid, "reservation_id")).await,
        201,
    )
    .await;
    assert_eq!(
        body["balance"],
        json!(1_720),
        "above max_balance: the cap bounds charges"
    );
    assert_eq!(app.balance(&buyer).await, 1_720);
    assert_problem(app.charge(&buyer, 1).await, 422, "balance_limit").await;

    // A free seat refunds nothing and writes no entry.
    let (_, free_date) = app.concert_with_date(10, 0).await;
    let (free_buyer, _, free) = paid_reservation(&app, &free_date, &[1], 1).await;
    let entries_before = app.history(&free_buyer).await.len();
    let body = assert_json(
        refund(&app, &free_buyer, &string_field(&free, "reservation_id")).await,
        201,
    )
    .await;
    assert_eq!(
        (body["amount"].clone(), body["fee"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(app.history(&free_buyer).await.len(), entries_before);
}

#[tokio::test]
async fn a_keyed_refund_replays_its_answer_and_refuses_another_body() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 1_000).await;
    let (buyer, _, first) = paid_reservation(&app, &date, &[1], 5_000).await;
    let first = string_field(&first, "reservation_id");
    let original = assert_json(keyed_refund(&app, &buyer, "refund-1", &first).await, 201).await;
    app.charge_ok(&buyer, 100).await;
    let replay = assert_json(keyed_refund(&app, &buyer, "refund-1", &first).await, 201).await;
    assert_eq!(replay, original, "the original answer, balance included");
    assert_eq!(app.balance(&buyer).await, 5_000 - 1_000 + 900 + 100);
    let history = app.history(&buyer).await;
    assert_eq!(
        history.iter().filter(|e| e["kind"] == "refund").count(),
        1,
        "refunded once"
    );
    let (_, _, second) = paid_reservation(&app, &date, &[2], 5_000).await;
    assert_problem(
        keyed_refund(
            &app,
            &buyer,
            "refund-1",
            &string_field(&second, "reservation_id"),
        )
        .await,
        422,
        "idempotency_key_reused",
    )
    .await;
}

#[tokio::test]
async fn a_transfer_moves_the_reservation_and_never_the_money() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 1_000).await;
    let (alice, _, paid) = paid_reservation(&app, &date, &[5, 6], 3_000).await;
    let id = string_field(&paid, "reservation_id");
    let bob = app.new_buyer().await;
    app.charge_ok(&bob, 70).await;

    let response = app
        .post("/api/v1/transfers")
        .session(&alice)
        .idempotency_key("give-1")
        .json(&json!({ "reservation_id": id, "to_username": bob.username }))
        .send()
        .await
        .unwrap();
    let body = assert_json(response, 201).await;
    assert_eq!(body["reservation_id"], json!(id));
    assert_eq!(body["from_user_id"], json!(alice.user_id));
    assert_eq!(body["to_user_id"], json!(bob.user_id));
    string_field(&body, "transfer_id");
    assert_time_near(
        &body["transferred_at"],
        app.now_ms(),
        1_000,
        "transferred_at",
    );
    assert_eq!(
        (app.balance(&alice).await, app.balance(&bob).await),
        (1_000, 70)
    );

    // Gone from Alice's list and her view; first in Bob's, still paid.
    assert_problem(app.reservation(&alice, &id).await, 404, "not_found").await;
    assert_eq!(app.reservation_status(&bob, &id).await, "paid");
    let mine = |buyer: &Buyer| {
        let request = app.get("/api/v1/reservations").session(buyer).send();
        async move { assert_json(request.await.unwrap(), 200).await["reservations"].clone() }
    };
    assert_eq!(mine(&alice).await, json!([]));
    let bobs = mine(&bob).await;
    assert_eq!(bobs[0]["reservation_id"], json!(id));
    assert_eq!(bobs[0]["status"], json!("paid"));
    // Alice can do nothing more with it; her keyed retry still gets the original answer.
    assert_problem(refund(&app, &alice, &id).await, 404, "not_found").await;
    assert_problem(
        transfer(&app, &alice, &id, &bob.username).await,
        404,
        "not_found",
    )
    .await;
    let response = app
        .post("/api/v1/transfers")
        .session(&alice)
        .idempotency_key("give-1")
        .json(&json!({ "reservation_id": id, "to_username": bob.username }))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_json(response, 201).await, body);

    // Bob's refund credits Alice, who paid; Bob's answer shows his own balance, unchanged.
    let refunded = assert_json(refund(&app, &bob, &id).await, 201).await;
    assert_eq!(refunded["credited_user_id"], json!(alice.user_id));
    assert_eq!(refunded["amount"], json!(1_800));
    assert_eq!(refunded["balance"], json!(70));
    assert_eq!(
        (app.balance(&alice).await, app.balance(&bob).await),
        (2_800, 70)
    );
    let alice_history = app.history(&alice).await;
    assert_eq!(alice_history[0]["kind"], json!("refund"));
    assert_eq!(alice_history[0]["reference"], json!(id));
    assert!(app
        .history(&bob)
        .await
        .iter()
        .all(|e| e["kind"] == "charge"));
    assert_eq!(app.reservation_status(&bob, &id).await, "refunded");
}

#[tokio::test]
async fn a_transfer_checks_the_reservation_then_the_recipient_then_the_state() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 100).await;
    let (alice, _, paid) = paid_reservation(&app, &date, &[1], 1_000).await;
    let paid = string_field(&paid, "reservation_id");
    let bob = app.new_buyer().await;
    let token = string_field(
        &assert_json(app.take_queue_token(&alice).await, 201).await,
        "queue_token",
    );
    let held = string_field(
        &app.hold_ok(&alice, &token, &date, &[2]).await,
        "reservation_id",
    );

    assert_problem(
        transfer(&app, &bob, &paid, &alice.username).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        transfer(&app, &alice, "r_1_77", &bob.username).await,
        404,
        "not_found",
    )
    .await;
    for to in ["nobody_here", "", &alice.username] {
        assert_problem(
            transfer(&app, &alice, &paid, to).await,
            422,
            "invalid_input",
        )
        .await;
        assert_problem(
            transfer(&app, &alice, &held, to).await,
            422,
            "invalid_input",
        )
        .await;
    }
    assert_problem(
        transfer(&app, &alice, &held, &bob.username).await,
        409,
        "reservation_not_paid",
    )
    .await;
    for body in [
        json!({ "reservation_id": paid }),
        json!({ "to_username": bob.username }),
        json!({ "reservation_id": paid, "to_username": 7 }),
    ] {
        let response = app
            .post("/api/v1/transfers")
            .session(&alice)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem_for(response, 400, "malformed_request", &body.to_string()).await;
    }
    assert_eq!(app.reservation_status(&alice, &paid).await, "paid");
    // Given on and given back: each transfer is its own.
    let first = assert_json(transfer(&app, &alice, &paid, &bob.username).await, 201).await;
    let back = assert_json(transfer(&app, &bob, &paid, &alice.username).await, 201).await;
    assert_ne!(first["transfer_id"], back["transfer_id"]);
    assert_eq!(app.reservation_status(&alice, &paid).await, "paid");
}

#[tokio::test]
async fn a_payment_retried_after_its_reservation_was_given_away_gets_its_original_answer() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 100).await;
    let (alice, token) = app.admitted_buyer().await;
    app.charge_ok(&alice, 1_000).await;
    let held = app.hold_ok(&alice, &token, &date, &[4]).await;
    let id = string_field(&held, "reservation_id");
    let pay = || {
        app.post("/api/v1/payments")
            .session(&alice)
            .queue(&token)
            .idempotency_key("pay-1")
            .json(&json!({ "reservation_id": id }))
            .send()
    };
    let original = assert_json(pay().await.unwrap(), 201).await;
    let bob = app.new_buyer().await;
    assert_json(transfer(&app, &alice, &id, &bob.username).await, 201).await;
    assert_eq!(assert_json(pay().await.unwrap(), 201).await, original);
}

#[tokio::test]
async fn cancelling_a_date_refunds_every_payer_in_full_cancels_holds_and_closes_it() {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(10, 1_000).await;
    let other_date = app.create_date(&concert, 10, 1_000).await;
    let (alice, _, alice_paid) = paid_reservation(&app, &date, &[1, 2], 2_500).await;
    let (bob, _, bob_paid) = paid_reservation(&app, &date, &[3], 1_000).await;
    let carol = app.new_buyer().await;
    let bob_paid = string_field(&bob_paid, "reservation_id");
    assert_json(transfer(&app, &bob, &bob_paid, &carol.username).await, 201).await;
    let (dave, dave_token) = app.admitted_buyer().await;
    let dave_held = string_field(
        &app.hold_ok(&dave, &dave_token, &date, &[7, 8]).await,
        "reservation_id",
    );
    let elsewhere = string_field(
        &app.hold_ok(&dave, &dave_token, &other_date, &[1]).await,
        "reservation_id",
    );

    let response = app
        .post(&format!("/api/v1/admin/dates/{date}/cancellation"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    assert_problem(cancel_date(&app, "d_999").await, 404, "not_found").await;
    assert_problem(cancel_date(&app, "nonsense").await, 404, "not_found").await;
    assert_eq!(date_status(&app, &date).await, "on_sale");

    let body = assert_json(cancel_date(&app, &date).await, 200).await;
    assert_eq!(
        body,
        json!({
            "date_id": date,
            "refunded_reservations": 2,
            "refunded_amount": 3_000,
            "cancelled_holds": 1,
        })
    );
    // In full, no fee, to each payer: Bob paid for what Carol holds.
    assert_eq!(app.balance(&alice).await, 2_500);
    assert_eq!(app.balance(&bob).await, 1_000);
    assert_eq!(app.balance(&carol).await, 0);
    let alice_paid = string_field(&alice_paid, "reservation_id");
    assert_eq!(
        app.reservation_status(&alice, &alice_paid).await,
        "refunded"
    );
    assert_eq!(app.reservation_status(&carol, &bob_paid).await, "refunded");
    assert_eq!(app.reservation_status(&dave, &dave_held).await, "cancelled");
    assert_eq!(app.reservation_status(&dave, &elsewhere).await, "held");
    let refund_entry = &app.history(&bob).await[0];
    assert_eq!(refund_entry["kind"], json!("refund"));
    assert_eq!(refund_entry["amount"], json!(1_000));
    assert_eq!(refund_entry["reference"], json!(bob_paid));

    assert_eq!(date_status(&app, &date).await, "cancelled");
    assert_eq!(date_status(&app, &other_date).await, "on_sale");
    let dates = assert_json(
        app.get(&format!("/api/v1/concerts/{concert}/dates"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let statuses: Vec<&Value> = dates["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["status"])
        .collect();
    assert_eq!(statuses, vec![&json!("cancelled"), &json!("on_sale")]);
    let seats = app.seat_statuses(&dave, &dave_token, &date).await;
    assert!(seats.values().all(|s| s == "available"), "{seats:?}");
    assert_problem(
        app.hold(&dave, &dave_token, &date, &[5]).await,
        409,
        "date_cancelled",
    )
    .await;
    let best = app
        .post("/api/v1/reservations")
        .session(&dave)
        .queue(&dave_token)
        .json(&json!({"date_id": date, "best_available": {"quantity": 9}}))
        .send()
        .await
        .unwrap();
    assert_problem(best, 409, "date_cancelled").await;
    assert_problem(cancel_date(&app, &date).await, 409, "date_cancelled").await;
    assert_problem(
        refund(&app, &alice, &alice_paid).await,
        409,
        "reservation_not_paid",
    )
    .await;
}

#[tokio::test]
async fn a_date_that_has_started_closes_its_sales() {
    let app = spawn_app().await;
    let date = date_starting_in(&app, Duration::from_secs(60), 10, 100).await;
    let (buyer, token) = app.admitted_buyer().await;
    app.hold_ok(&buyer, &token, &date, &[1]).await;
    assert_eq!(date_status(&app, &date).await, "on_sale");
    app.advance(Duration::from_secs(60));
    assert_eq!(date_status(&app, &date).await, "sales_closed");
    assert_problem(
        app.hold(&buyer, &token, &date, &[2]).await,
        409,
        "sales_closed",
    )
    .await;
    // The date's state comes before the request's values.
    assert_problem(
        app.hold(&buyer, &token, &date, &[99]).await,
        409,
        "sales_closed",
    )
    .await;
    // A cancellation still refunds it.
    assert_json(cancel_date(&app, &date).await, 200).await;
    assert_eq!(date_status(&app, &date).await, "cancelled");
}
