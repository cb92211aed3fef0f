//! Waiting lists per date (API.md, "Waiting lists (per date)"): every field, rule and error
//! code, offers that reach the list before any other buyer, lapse to the next entry, and are
//! paid without a queue token.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Sells `seats` of `date` to a new buyer; returns the buyer and the reservation.
async fn sold(app: &TestApp, date: &str, seats: &[u64]) -> (Buyer, String) {
    let (buyer, token) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 1_000_000).await;
    let held = app.hold_ok(&buyer, &token, date, seats).await;
    let id = string_field(&held, "reservation_id");
    assert_json(app.pay(&buyer, &token, &id).await, 201).await;
    (buyer, id)
}

async fn join(
    app: &TestApp,
    buyer: &Buyer,
    token: &str,
    date: &str,
    body: Value,
) -> reqwest::Response {
    app.post(&format!("/api/v1/dates/{date}/waitlist"))
        .session(buyer)
        .queue(token)
        .json(&body)
        .send()
        .await
        .expect("join a waiting list")
}

async fn entries(app: &TestApp, buyer: &Buyer) -> Vec<Value> {
    let response = app
        .get("/api/v1/waitlist")
        .session(buyer)
        .send()
        .await
        .unwrap();
    let body = assert_json(response, 200).await;
    assert!(body["next_cursor"].is_null());
    body["entries"].as_array().unwrap().clone()
}

async fn refund(app: &TestApp, buyer: &Buyer, reservation: &str) {
    let response = app
        .post("/api/v1/refunds")
        .session(buyer)
        .json(&json!({ "reservation_id": reservation }))
        .send()
        .await
        .unwrap();
    assert_json(response, 201).await;
}

/// Pays with no queue token at all.
async fn pay_without_token(app: &TestApp, buyer: &Buyer, reservation: &str) -> reqwest::Response {
    app.post("/api/v1/payments")
        .session(buyer)
        .json(&json!({ "reservation_id": reservation }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn joining_checks_the_date_the_values_then_whether_seats_are_still_to_be_had() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(4, 100).await;
    let (fan, token) = app.admitted_buyer().await;
    // Four seats unsold: joining for up to four is refused, seats are there to hold.
    let problem = assert_problem(
        join(&app, &fan, &token, &date, json!({"quantity": 4})).await,
        409,
        "seats_available",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains('4'),
        "{problem}"
    );
    let (holder, holder_token) = app.admitted_buyer().await;
    app.hold_ok(&holder, &holder_token, &date, &[1, 2]).await;
    // Held seats count as still to be had.
    assert_problem(
        join(&app, &fan, &token, &date, json!({"quantity": 4})).await,
        409,
        "seats_available",
    )
    .await;
    sold(&app, &date, &[3]).await;
    let body = assert_json(
        join(&app, &fan, &token, &date, json!({"quantity": 4})).await,
        201,
    )
    .await;
    assert_eq!(body["date_id"], json!(date));
    assert_eq!(body["quantity"], json!(4));
    assert_eq!(body["section"], json!(null));
    assert_eq!(body["status"], json!("waiting"));
    assert_eq!(body["position"], json!(1));
    assert_eq!(body["reservation_id"], json!(null));
    assert_eq!(body["offer_expires_at"], json!(null));
    let entry = string_field(&body, "entry_id");
    // Again: the same entry, unchanged, 200.
    let again = assert_json(
        join(&app, &fan, &token, &date, json!({"quantity": 1})).await,
        200,
    )
    .await;
    assert_eq!(again, body);

    let huge = app
        .post(&format!("/api/v1/dates/{date}/waitlist"))
        .session(&fan)
        .queue(&token)
        .header("content-type", "application/json")
        .body(r#"{"quantity": 18446744073709551616}"#)
        .send()
        .await
        .unwrap();
    assert_problem(huge, 422, "invalid_input").await;
    for (body, status, code) in [
        (json!({"quantity": 0}), 422, "invalid_input"),
        (json!({"quantity": 5}), 422, "invalid_input"),
        (json!({"quantity": 4294967296u64}), 422, "invalid_input"),
        (
            json!({"quantity": 1, "section": "Balcony"}),
            422,
            "invalid_input",
        ),
        (json!({"quantity": "1"}), 400, "malformed_request"),
        (json!({}), 400, "malformed_request"),
    ] {
        let other = app.new_buyer().await;
        let token = string_field(
            &assert_json(app.take_queue_token(&other).await, 201).await,
            "queue_token",
        );
        assert_problem_for(
            join(&app, &other, &token, &date, body.clone()).await,
            status,
            code,
            &body.to_string(),
        )
        .await;
    }
    assert_problem(
        join(&app, &fan, &token, "d_999", json!({"quantity": 1})).await,
        404,
        "not_found",
    )
    .await;
    let response = app
        .post(&format!("/api/v1/dates/{date}/waitlist"))
        .session(&fan)
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "queue_token_invalid").await;

    // A second fan is second; the first leaves and the second is first.
    let (second, second_token) = app.admitted_buyer().await;
    let body = assert_json(
        join(&app, &second, &second_token, &date, json!({"quantity": 4})).await,
        201,
    )
    .await;
    assert_eq!(body["position"], json!(2));
    let second_entry = string_field(&body, "entry_id");
    let stranger = app.new_buyer().await;
    let url = format!("/api/v1/waitlist/{entry}");
    assert_problem(
        app.delete(&url).session(&stranger).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete("/api/v1/waitlist/w_1_99")
            .session(&fan)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete("/api/v1/waitlist/nonsense")
            .session(&fan)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.delete(&url)
            .session(&fan)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.delete(&url)
            .session(&fan)
            .send()
            .await
            .unwrap()
            .status(),
        204,
        "gone is gone"
    );
    let listed = entries(&app, &fan).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], json!("left"));
    assert_eq!(listed[0]["position"], json!(0));
    let listed = entries(&app, &second).await;
    assert_eq!(listed[0]["entry_id"], json!(second_entry));
    assert_eq!(listed[0]["position"], json!(1));

    // A cancelled date lapses its list and refuses joins.
    let admin = app
        .post(&format!("/api/v1/admin/dates/{date}/cancellation"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_json(admin, 200).await;
    assert_eq!(entries(&app, &second).await[0]["status"], json!("lapsed"));
    assert_problem(
        join(&app, &fan, &token, &date, json!({"quantity": 1})).await,
        409,
        "date_cancelled",
    )
    .await;
}

#[tokio::test]
async fn released_seats_are_offered_to_the_first_entry_that_fits_and_paid_without_a_token() {
    let app = spawn_app_with(|s| s.waitlist.offer_ttl_seconds = 120).await;
    let (_, date) = app.concert_with_date(3, 1_000).await;
    let (seller, pair) = sold(&app, &date, &[1, 2]).await;
    sold(&app, &date, &[3]).await;
    let (wants_three, token3) = app.admitted_buyer().await;
    let (wants_one, token1) = app.admitted_buyer().await;
    assert_json(
        join(&app, &wants_three, &token3, &date, json!({"quantity": 3})).await,
        201,
    )
    .await;
    assert_json(
        join(&app, &wants_one, &token1, &date, json!({"quantity": 1})).await,
        201,
    )
    .await;
    assert_eq!(entries(&app, &wants_one).await[0]["position"], json!(2));

    // Two seats come back: too few for the first entry, so the second is offered one.
    refund(&app, &seller, &pair).await;
    let offered = entries(&app, &wants_one).await;
    assert_eq!(offered[0]["status"], json!("offered"), "{offered:?}");
    assert_eq!(offered[0]["position"], json!(0));
    let reservation = string_field(&offered[0], "reservation_id");
    let expires = string_field(&offered[0], "offer_expires_at");
    assert_eq!(
        rfc3339_ms(&expires),
        app.now_ms() + 120_000,
        "waitlist.offer_ttl_seconds"
    );
    assert_eq!(
        entries(&app, &wants_three).await[0]["status"],
        json!("waiting")
    );
    let hold = assert_json(app.reservation(&wants_one, &reservation).await, 200).await;
    assert_eq!(hold["status"], json!("held"));
    // Seats 1 and 2 of a row of three whose seat 3 is sold: either leaves the other alone, so
    // the one nearest the row's middle.
    assert_eq!(hold["seat_nos"], json!([2]), "the best-available rule");
    // The other seat is anyone's.
    let (public, public_token) = app.admitted_buyer().await;
    assert_problem(
        app.hold(&public, &public_token, &date, &[2]).await,
        409,
        "seat_unavailable",
    )
    .await;
    let plain = app.hold_ok(&public, &public_token, &date, &[1]).await;
    let plain = string_field(&plain, "reservation_id");

    // Paid with no queue token at all (the token of that buyer ended long ago, or never was).
    assert_problem(
        app.pay(&public, "nonsense", &reservation).await,
        401,
        "queue_token_invalid",
    )
    .await;
    app.charge_ok(&wants_one, 1_000).await;
    let paid = assert_json(pay_without_token(&app, &wants_one, &reservation).await, 201).await;
    assert_eq!(paid["amount"], json!(1_000));
    assert_eq!(
        entries(&app, &wants_one).await[0]["status"],
        json!("purchased")
    );
    // Not an offer: the queue token is needed as ever.
    app.charge_ok(&public, 1_000).await;
    assert_problem(
        pay_without_token(&app, &public, &plain).await,
        401,
        "queue_token_invalid",
    )
    .await;
    assert_eq!(app.reservation_status(&public, &plain).await, "held");

    // Servers started side by side in one test process share one recorder: the series are
    // there, their figures are everyone's.
    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"boxoffice_waitlist_offers_total{outcome="made"} "#,
        r#"boxoffice_waitlist_offers_total{outcome="purchased"} "#,
        r#"boxoffice_waitlist_entries{date=""#,
        r#"boxoffice_events_total{kind="refund_completed"} "#,
        r#"boxoffice_events_total{kind="waitlist_joined"} "#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[tokio::test]
async fn an_offer_that_runs_out_lapses_to_the_next_entry_and_its_user_waits_to_join_again() {
    let app = spawn_app_with(|s| s.waitlist.offer_ttl_seconds = 60).await;
    let (_, date) = app.concert_with_date(1, 500).await;
    let (seller, paid) = sold(&app, &date, &[1]).await;
    let (first, first_token) = app.admitted_buyer().await;
    let (second, second_token) = app.admitted_buyer().await;
    assert_json(
        join(&app, &first, &first_token, &date, json!({"quantity": 1})).await,
        201,
    )
    .await;
    assert_json(
        join(&app, &second, &second_token, &date, json!({"quantity": 1})).await,
        201,
    )
    .await;
    refund(&app, &seller, &paid).await;
    assert_eq!(entries(&app, &first).await[0]["status"], json!("offered"));

    // The offer runs out: no sweep needed, the next request sees it lapsed and the seat
    // offered on.
    app.advance(Duration::from_secs(60));
    eventually("the seat is offered to the second entry", || async {
        let listed = entries(&app, &second).await;
        (listed[0]["status"] == "offered").then_some(())
    })
    .await;
    assert_eq!(entries(&app, &first).await[0]["status"], json!("lapsed"));
    let first_token = string_field(
        &assert_json(app.take_queue_token(&first).await, 200).await,
        "queue_token",
    );
    let response = join(&app, &first, &first_token, &date, json!({"quantity": 1})).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(response, 409, "rehold_cooldown").await;

    // The second leaves while offered: the hold is cancelled and the entry left.
    let entry = string_field(&entries(&app, &second).await[0], "entry_id");
    let reservation = string_field(&entries(&app, &second).await[0], "reservation_id");
    let left = app
        .delete(&format!("/api/v1/waitlist/{entry}"))
        .session(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    assert_eq!(entries(&app, &second).await[0]["status"], json!("left"));
    assert_eq!(
        app.reservation_status(&second, &reservation).await,
        "cancelled"
    );
    // No one waits now, so the seat is free; once the wait is over, the first may ask to
    // join again, and is told to hold it instead.
    app.advance(Duration::from_secs(61));
    assert_problem(
        join(&app, &first, &first_token, &date, json!({"quantity": 1})).await,
        409,
        "seats_available",
    )
    .await;
}

#[tokio::test]
async fn an_offer_that_expires_unswept_goes_to_the_next_entry_before_the_buyer_who_asks_first() {
    let app = spawn_app_with(|s| s.waitlist.offer_ttl_seconds = 30).await;
    let (_, date) = app.concert_with_date(1, 100).await;
    let (seller, paid) = sold(&app, &date, &[1]).await;
    let (first, first_token) = app.admitted_buyer().await;
    let (second, second_token) = app.admitted_buyer().await;
    let one = json!({"quantity": 1});
    assert_json(
        join(&app, &first, &first_token, &date, one.clone()).await,
        201,
    )
    .await;
    assert_json(join(&app, &second, &second_token, &date, one).await, 201).await;
    refund(&app, &seller, &paid).await;
    assert_eq!(entries(&app, &first).await[0]["status"], json!("offered"));
    let (rival, rival_token) = app.admitted_buyer().await;
    let taken = app.hold(&rival, &rival_token, &date, &[1]).await;
    assert_problem(taken, 409, "seat_unavailable").await;
    // The offer runs out; at that very instant, before any sweep, the rival asks again.
    app.advance(Duration::from_secs(30));
    let taken = app.hold(&rival, &rival_token, &date, &[1]).await;
    assert_problem(taken, 409, "seat_unavailable").await;
    // The offer was made before the rival's request was decided; its commit may trail the
    // refusal by a moment.
    eventually("the second entry is offered the seat", || async {
        (entries(&app, &second).await[0]["status"] == "offered").then_some(())
    })
    .await;
    assert_eq!(entries(&app, &first).await[0]["status"], json!("lapsed"));
}

#[tokio::test]
async fn offers_come_from_the_entrys_section_and_pass_over_a_user_at_a_limit_until_the_next_release(
) {
    let app = spawn_app().await;
    let concert = app.create_concert("Sections", "Hall").await;
    let response = app
        .post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"starts_at": STARTS_AT, "sections": [
            {"name": "Floor", "price": 100, "rows": [{"row": "A", "seats": 2}]},
            {"name": "Balcony", "price": 50, "rows": [{"row": "1", "seats": 2}]}
        ]}))
        .send()
        .await
        .unwrap();
    let date = string_field(&assert_json(response, 201).await, "date_id");
    let (floor_owner, floor) = sold(&app, &date, &[1, 2]).await;
    let (balcony_owner, balcony) = sold(&app, &date, &[3, 4]).await;

    // The first in line holds the most seats one may over all dates; the second wants the
    // balcony only; the third takes anything.
    let (busy, busy_token) = app.admitted_buyer().await;
    let mut busy_holds = Vec::new();
    for _ in 0..2 {
        let other = app.create_date(&concert, 4, 10).await;
        let held = app.hold_ok(&busy, &busy_token, &other, &[1, 2, 3, 4]).await;
        busy_holds.push(string_field(&held, "reservation_id"));
    }
    let (balcony_fan, balcony_token) = app.admitted_buyer().await;
    let (any_fan, any_token) = app.admitted_buyer().await;
    let one = json!({"quantity": 1});
    assert_json(
        join(&app, &busy, &busy_token, &date, one.clone()).await,
        201,
    )
    .await;
    let balcony_only = json!({"quantity": 1, "section": "Balcony"});
    let body = assert_json(
        join(&app, &balcony_fan, &balcony_token, &date, balcony_only).await,
        201,
    )
    .await;
    assert_eq!(body["section"], json!("Balcony"));
    assert_json(join(&app, &any_fan, &any_token, &date, one).await, 201).await;

    // Two floor seats come back: the first in line is passed over (their limit), the balcony
    // fan too (not their section); the third gets one.
    refund(&app, &floor_owner, &floor).await;
    let status = |buyer: Buyer| {
        let app = &app;
        async move { entries(app, &buyer).await[0].clone() }
    };
    assert_eq!(status(busy.clone()).await["status"], json!("waiting"));
    assert_eq!(status(busy.clone()).await["position"], json!(1));
    assert_eq!(
        status(balcony_fan.clone()).await["status"],
        json!("waiting")
    );
    let offered = status(any_fan.clone()).await;
    assert_eq!(offered["status"], json!("offered"));
    let hold = assert_json(
        app.reservation(&any_fan, &string_field(&offered, "reservation_id"))
            .await,
        200,
    )
    .await;
    assert!(
        hold["seat_nos"] == json!([1]) || hold["seat_nos"] == json!([2]),
        "{hold}"
    );

    // The busy fan lets go of a hold; at the next release they are offered first.
    let released = app
        .delete(&format!("/api/v1/reservations/{}", busy_holds[0]))
        .session(&busy)
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
    refund(&app, &balcony_owner, &balcony).await;
    let busy_offer = status(busy.clone()).await;
    assert_eq!(busy_offer["status"], json!("offered"), "{busy_offer}");
    let balcony_offer = status(balcony_fan.clone()).await;
    assert_eq!(balcony_offer["status"], json!("offered"), "{balcony_offer}");
    let hold = assert_json(
        app.reservation(
            &balcony_fan,
            &string_field(&balcony_offer, "reservation_id"),
        )
        .await,
        200,
    )
    .await;
    assert!(
        hold["seat_nos"] == json!([3]) || hold["seat_nos"] == json!([4]),
        "{hold}"
    );
}

#[tokio::test]
async fn a_waiting_list_and_its_offers_survive_a_restart() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(2, 100).await;
    let (first_owner, first) = sold(&app, &date, &[1]).await;
    let (second_owner, second) = sold(&app, &date, &[2]).await;
    let (offered_fan, offered_token) = app.admitted_buyer().await;
    let (waiting_fan, waiting_token) = app.admitted_buyer().await;
    let one = json!({"quantity": 1});
    assert_json(
        join(&app, &offered_fan, &offered_token, &date, one.clone()).await,
        201,
    )
    .await;
    assert_json(
        join(&app, &waiting_fan, &waiting_token, &date, one).await,
        201,
    )
    .await;
    refund(&app, &first_owner, &first).await;
    let before = (
        entries(&app, &offered_fan).await,
        entries(&app, &waiting_fan).await,
    );
    assert_eq!(before.0[0]["status"], json!("offered"));

    let app = app.restarted().await;
    let after = (
        entries(&app, &offered_fan).await,
        entries(&app, &waiting_fan).await,
    );
    assert_eq!(after, before);
    // The list goes on as before: the next seat back goes to the one still waiting.
    refund(&app, &second_owner, &second).await;
    assert_eq!(
        entries(&app, &waiting_fan).await[0]["status"],
        json!("offered")
    );
}

#[tokio::test]
async fn the_list_of_entries_comes_a_page_at_a_time_newest_first() {
    let app = spawn_app().await;
    let (fan, token) = app.admitted_buyer().await;
    let mut joined = Vec::new();
    for _ in 0..3 {
        let (_, date) = app.concert_with_date(1, 10).await;
        sold(&app, &date, &[1]).await;
        let entry = assert_json(
            join(&app, &fan, &token, &date, json!({"quantity": 1})).await,
            201,
        )
        .await;
        joined.push(string_field(&entry, "entry_id"));
    }
    let page = |query: String| {
        let request = app
            .get(&format!("/api/v1/waitlist{query}"))
            .session(&fan)
            .send();
        async move { request.await.unwrap() }
    };
    let first = assert_json(page("?limit=2".into()).await, 200).await;
    let ids: Vec<String> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| string_field(e, "entry_id"))
        .collect();
    assert_eq!(ids, vec![joined[2].clone(), joined[1].clone()]);
    let cursor = string_field(&first, "next_cursor");
    let second = assert_json(page(format!("?limit=2&cursor={cursor}")).await, 200).await;
    assert_eq!(second["entries"][0]["entry_id"], json!(joined[0]));
    assert_eq!(second["next_cursor"], json!(null));
    for bad in ["?limit=0", "?limit=1001", "?cursor=nonsense"] {
        assert_problem(page(bad.into()).await, 400, "malformed_request").await;
    }
}

#[tokio::test]
async fn a_started_date_refuses_joining_its_list() {
    let app = spawn_app().await;
    let concert = app.create_concert("Tonight", "Hall").await;
    let starts_at = time::OffsetDateTime::from_unix_timestamp_nanos(
        (app.now_ms() as i128 + 60_000) * 1_000_000,
    )
    .unwrap()
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap();
    let response = app
        .post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"starts_at": starts_at, "seat_count": 1, "price": 10}))
        .send()
        .await
        .unwrap();
    let date = string_field(&assert_json(response, 201).await, "date_id");
    sold(&app, &date, &[1]).await;
    let (fan, token) = app.admitted_buyer().await;
    app.advance(Duration::from_secs(60));
    let refused = join(&app, &fan, &token, &date, json!({"quantity": 1})).await;
    assert_problem(refused, 409, "sales_closed").await;
}
