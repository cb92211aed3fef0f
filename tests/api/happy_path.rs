//! The whole flow of API.md, step by step, checking every field it promises.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const SEATS: u64 = 10;
const PRICE: u64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_happy_path_works_step_by_step() {
    let app = spawn_app().await;
    let start = app.now_ms();

    // Admin: a concert and a date.
    let concert = app.create_concert("Spring Gala", "Olympic Hall").await;
    let date = app.create_date(&concert, SEATS, PRICE).await;
    assert_ne!(concert, date, "ids are distinct strings");

    // Sign up: 201 {user_id, username}.
    let username = unique_username();
    let signed_up = assert_json(app.sign_up(&username, PASSWORD).await, 201).await;
    let user_id = string_field(&signed_up, "user_id");
    assert_eq!(signed_up["username"], json!(username));

    // Sign in: 201 {session_token, user_id, expires_at}.
    let session = assert_json(app.sign_in(&username, PASSWORD).await, 201).await;
    let token = string_field(&session, "session_token");
    assert_eq!(session["user_id"], json!(user_id));
    let session_ttl_ms = app.settings.auth.session_ttl_seconds as i64 * 1000;
    assert_time_near(
        &session["expires_at"],
        start + session_ttl_ms,
        2_000,
        "session expires_at",
    );
    let buyer = Buyer {
        token: token.clone(),
        user_id: user_id.clone(),
        username: username.clone(),
    };

    // users/me: 200 {user_id, username, balance}.
    let me = app
        .get("/api/v1/users/me")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    let me = assert_json(me, 200).await;
    assert_eq!(
        me,
        json!({"user_id": user_id, "username": username, "balance": 0}),
        "users/me"
    );

    // Queue token: 201, active at once, every field of a queue status.
    let issued = assert_json(app.take_queue_token(&buyer).await, 201).await;
    let queue_token = string_field(&issued, "queue_token");
    assert_eq!(issued["status"], "active", "{issued}");
    assert_eq!(issued["position"], json!(0), "{issued}");
    assert_eq!(issued["estimated_wait_seconds"], json!(0), "{issued}");
    assert_eq!(issued["reissued"], json!(false), "{issued}");
    u64_field(&issued, "poll_after_seconds");
    let active_ttl_ms = app.settings.queue.active_ttl_seconds as i64 * 1000;
    assert_time_near(
        &issued["expires_at"],
        start + active_ttl_ms,
        1_000,
        "active token expires_at",
    );

    // Repeating the POST returns the same live token with 200.
    let again = assert_json(app.take_queue_token(&buyer).await, 200).await;
    assert_eq!(again["queue_token"], json!(queue_token));
    assert_eq!(again["status"], "active");
    assert_eq!(again["position"], json!(0));
    assert_eq!(again["reissued"], json!(false));

    // Polling it: 200, the same status.
    let polled = assert_json(app.poll_queue(&buyer, &queue_token).await, 200).await;
    assert_eq!(polled["queue_token"], json!(queue_token));
    assert_eq!(polled["status"], "active");
    assert_eq!(polled["position"], json!(0));
    assert_eq!(polled["reissued"], json!(false));
    assert_eq!(polled["expires_at"], issued["expires_at"]);
    for field in ["estimated_wait_seconds", "poll_after_seconds"] {
        u64_field(&polled, field);
    }

    // Catalogue.
    let concerts = assert_json(app.get("/api/v1/concerts").send().await.unwrap(), 200).await;
    assert_eq!(
        concerts["concerts"],
        json!([{"concert_id": concert, "title": "Spring Gala", "venue": "Olympic Hall",
                "sale_opens_at": null, "waiting_room": "general", "max_tickets_per_user": null}]),
    );
    let dates = assert_json(
        app.get(&format!("/api/v1/concerts/{concert}/dates"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let listed = dates["dates"].as_array().expect("dates is an array");
    assert_eq!(listed.len(), 1, "{dates}");
    assert_eq!(listed[0]["date_id"], json!(date));
    assert_eq!(listed[0]["total_seats"], json!(SEATS));
    assert_eq!(listed[0]["available_seats"], json!(SEATS));
    assert_eq!(
        rfc3339_ms(listed[0]["starts_at"].as_str().expect("starts_at")),
        rfc3339_ms(STARTS_AT)
    );

    // Seat listing: every seat, numbered from 1, available, at the date's price, in the one
    // section a date made with a seat count has.
    let listing = assert_json(app.seats_response(&buyer, &queue_token, &date).await, 200).await;
    assert_eq!(listing["date_id"], json!(date));
    let seats = listing["seats"].as_array().expect("seats is an array");
    assert_eq!(seats.len() as u64, SEATS);
    for (i, seat) in seats.iter().enumerate() {
        assert_eq!(
            seat,
            &json!({"seat_no": i as u64 + 1, "status": "available", "price": PRICE,
                    "section": "General", "row": "1", "seat": i as u64 + 1}),
        );
    }

    // Hold two seats: 201 reservation, price = sum of its seats.
    let hold_ttl_ms = app.settings.holds.ttl_seconds as i64 * 1000;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[2, 3]).await;
    let first = string_field(&held, "reservation_id");
    assert_eq!(held["date_id"], json!(date));
    assert_eq!(held["seat_nos"], json!([2, 3]));
    assert_eq!(held["price"], json!(2 * PRICE));
    assert_eq!(held["status"], "held");
    assert_time_near(
        &held["expires_at"],
        start + hold_ttl_ms,
        1_000,
        "hold expires_at",
    );

    // GET it back: the same reservation.
    let fetched = assert_json(app.reservation(&buyer, &first).await, 200).await;
    for field in [
        "reservation_id",
        "date_id",
        "seat_nos",
        "price",
        "status",
        "expires_at",
    ] {
        assert_eq!(fetched[field], held[field], "{field} of GET vs POST");
    }

    // Seats read the user's own writes at once.
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    assert_eq!(statuses[&2], "held");
    assert_eq!(statuses[&3], "held");
    assert_eq!(statuses[&1], "available");

    // A second, later hold (single seat_no form), then cancelled.
    app.advance(Duration::from_secs(1));
    let second_hold = app
        .post("/api/v1/reservations")
        .session(&buyer)
        .queue(&queue_token)
        .json(&json!({"date_id": date, "seat_no": 5}))
        .send()
        .await
        .unwrap();
    let second_hold = assert_json(second_hold, 201).await;
    let second = string_field(&second_hold, "reservation_id");
    assert_ne!(first, second);
    assert_eq!(second_hold["seat_nos"], json!([5]));
    assert_eq!(second_hold["price"], json!(PRICE));
    let cancelled = app
        .delete(&format!("/api/v1/reservations/{second}"))
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    assert_eq!(app.reservation_status(&buyer, &second).await, "cancelled");
    assert_eq!(
        app.seat_statuses(&buyer, &queue_token, &date).await[&5],
        "available",
        "a cancelled hold is released at once"
    );

    // The list: newest first, every status.
    let list = app
        .get("/api/v1/reservations")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    let list = assert_json(list, 200).await;
    let ids: Vec<&Value> = list["reservations"]
        .as_array()
        .expect("reservations is an array")
        .iter()
        .map(|r| &r["reservation_id"])
        .collect();
    assert_eq!(ids, vec![&json!(second), &json!(first)], "newest first");
    assert_eq!(list["reservations"][0]["status"], "cancelled");
    assert_eq!(list["reservations"][1]["status"], "held");

    // Top up twice: 201 {charge_id, amount, balance}.
    let charge1 = app.charge_ok(&buyer, 70_000).await;
    assert_eq!(charge1["balance"], json!(70_000));
    let charge1_id = string_field(&charge1, "charge_id");
    app.advance(Duration::from_secs(1));
    let charge2 = app.charge_ok(&buyer, 80_000).await;
    assert_eq!(charge2["balance"], json!(150_000));
    let charge2_id = string_field(&charge2, "charge_id");
    assert_ne!(charge1_id, charge2_id);

    // Pay: 201 with every field.
    app.advance(Duration::from_secs(1));
    let paid_at_expected = app.now_ms();
    let paid = assert_json(app.pay(&buyer, &queue_token, &first).await, 201).await;
    string_field(&paid, "payment_id");
    assert_eq!(paid["reservation_id"], json!(first));
    assert_eq!(paid["amount"], json!(2 * PRICE));
    assert_eq!(paid["balance"], json!(150_000 - 2 * PRICE));
    assert_eq!(paid["date_id"], json!(date));
    assert_eq!(paid["seat_nos"], json!([2, 3]));
    assert_time_near(&paid["paid_at"], paid_at_expected, 1_000, "paid_at");

    // The reservation is paid; the balance dropped.
    assert_eq!(app.reservation_status(&buyer, &first).await, "paid");
    assert_eq!(app.balance(&buyer).await, 150_000 - 2 * PRICE);
    let me = app
        .get("/api/v1/users/me")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_json(me, 200).await["balance"],
        json!(150_000 - 2 * PRICE)
    );

    // History: newest first, kinds, positive amounts, balance_after, references.
    let history = app.history(&buyer).await;
    assert_eq!(history.len(), 3, "{history:?}");
    let expected = [
        ("payment", 2 * PRICE, 150_000 - 2 * PRICE, first.clone()),
        ("charge", 80_000, 150_000, charge2_id.clone()),
        ("charge", 70_000, 70_000, charge1_id.clone()),
    ];
    for (entry, (kind, amount, after, reference)) in history.iter().zip(expected) {
        string_field(entry, "entry_id");
        assert_eq!(entry["kind"], kind, "{entry}");
        assert_eq!(entry["amount"], json!(amount), "{entry}");
        assert_eq!(entry["balance_after"], json!(after), "{entry}");
        assert_eq!(entry["reference"], json!(reference), "{entry}");
        rfc3339_ms(entry["at"].as_str().expect("at is a string"));
    }
    let times: Vec<i64> = history
        .iter()
        .map(|e| rfc3339_ms(e["at"].as_str().unwrap()))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // The payment expired the queue token: it no longer admits...
    assert_problem(
        app.hold(&buyer, &queue_token, &date, &[7]).await,
        403,
        "queue_token_expired",
    )
    .await;
    // ...and presenting it reissues a fresh one.
    let reissued = assert_json(app.poll_queue(&buyer, &queue_token).await, 200).await;
    assert_eq!(reissued["reissued"], json!(true), "{reissued}");
    let new_token = string_field(&reissued, "queue_token");
    assert_ne!(new_token, queue_token);
    assert!(matches!(
        reissued["status"].as_str(),
        Some("active" | "waiting")
    ));
    app.wait_until_active(&buyer, &new_token).await;

    // The seats are sold in the listing.
    let statuses = app.seat_statuses(&buyer, &new_token, &date).await;
    for seat in 1..=SEATS {
        let expected = if seat == 2 || seat == 3 {
            "sold"
        } else {
            "available"
        };
        assert_eq!(statuses[&seat], expected, "seat {seat}");
    }

    // Catalogue counts (may lag by at most a second).
    let dates_url = format!("/api/v1/concerts/{concert}/dates");
    eventually("available_seats to count the sale", || async {
        let dates = assert_json(app.get(&dates_url).send().await.unwrap(), 200).await;
        (dates["dates"][0]["available_seats"] == json!(SEATS - 2)).then_some(())
    })
    .await;

    // Admin stats.
    let stats = eventually("stats to count the sale", || async {
        let stats = app.stats().await;
        (stats["seats_sold"] == json!(2) && stats["seats_held"] == json!(0)).then_some(stats)
    })
    .await;
    assert_eq!(stats["users"], json!(1), "{stats}");
    assert_eq!(stats["seats_total"], json!(SEATS), "{stats}");
    assert_eq!(stats["queue_waiting"], json!(0), "{stats}");
    assert_eq!(stats["queue_active"], json!(1), "{stats}");
    assert!(
        stats["log_sequence"].as_u64().is_some(),
        "log_sequence: {stats}"
    );

    // Sign out: 204, and the token no longer works.
    let signed_out = app
        .delete("/api/v1/sessions/current")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    let me = app
        .get("/api/v1/users/me")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_problem(me, 401, "unauthenticated").await;
    let again = app
        .delete("/api/v1/sessions/current")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_problem(again, 401, "unauthenticated").await;

    // Signing in again gives a new, working session.
    let session = assert_json(app.sign_in(&username, PASSWORD).await, 201).await;
    assert_ne!(string_field(&session, "session_token"), token);
    let buyer = Buyer {
        token: string_field(&session, "session_token"),
        ..buyer
    };
    assert_eq!(app.balance(&buyer).await, 150_000 - 2 * PRICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_wrong_credentials_and_sign_up_refuses_taken_names() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    assert_problem(
        app.sign_in(&buyer.username, "wrong password!").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        app.sign_in("nobody-here", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        app.sign_up(&buyer.username, PASSWORD).await,
        409,
        "username_taken",
    )
    .await;
    // Every character of the password counts.
    let long_password = "x".repeat(100);
    let name = unique_username();
    assert_json(app.sign_up(&name, &long_password).await, 201).await;
    assert_problem(
        app.sign_in(&name, &"x".repeat(99)).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_json(app.sign_in(&name, &long_password).await, 201).await;
}

/// API.md, Operations: metrics, the OpenAPI document and the docs page are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_openapi_and_docs_are_served() {
    let app = spawn_app().await;
    let metrics = app.get("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200, "/metrics");
    let content_type = metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "/metrics is Prometheus text: {content_type}"
    );

    let openapi = assert_json(app.get("/openapi.json").send().await.unwrap(), 200).await;
    let version = openapi["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1: {version:?}");
    let paths = openapi["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/users",
        "/api/v1/sessions",
        "/api/v1/queue/tokens",
        "/api/v1/reservations",
        "/api/v1/payments",
        "/api/v1/balance/charges",
    ] {
        assert!(
            paths.contains_key(path),
            "the OpenAPI document lists {path}"
        );
    }

    let docs = app.get("/docs").send().await.unwrap();
    assert_eq!(docs.status(), 200, "/docs");
}

async fn reservation_ids_listed(app: &TestApp, buyer: &Buyer) -> Vec<String> {
    let list = app
        .get("/api/v1/reservations")
        .session(buyer)
        .send()
        .await
        .unwrap();
    assert_json(list, 200).await["reservations"]
        .as_array()
        .expect("reservations is an array")
        .iter()
        .map(|r| string_field(r, "reservation_id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_on_several_dates_are_listed_newest_first() {
    let app = spawn_app().await;
    let concert = app.create_concert("Tour", "Arena").await;
    let first_date = app.create_date(&concert, 5, 100).await;
    let second_date = app.create_date(&concert, 5, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;

    let mut expected = Vec::new();
    for date in [&second_date, &first_date, &second_date] {
        let held = app
            .hold_ok(&buyer, &queue_token, date, &[expected.len() as u64 + 1])
            .await;
        expected.insert(0, string_field(&held, "reservation_id"));
        app.advance(Duration::from_secs(1));
    }
    assert_eq!(reservation_ids_listed(&app, &buyer).await, expected);
}

/// Two holds in the same millisecond (the manual clock stands still) on two dates: the later
/// request is the newer reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_made_in_the_same_millisecond_are_listed_newest_first() {
    let app = spawn_app().await;
    let concert = app.create_concert("Tour", "Arena").await;
    let first_date = app.create_date(&concert, 5, 100).await;
    let second_date = app.create_date(&concert, 5, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;

    let older = app.hold_ok(&buyer, &queue_token, &second_date, &[1]).await;
    let newer = app.hold_ok(&buyer, &queue_token, &first_date, &[1]).await;
    assert_eq!(
        reservation_ids_listed(&app, &buyer).await,
        vec![
            string_field(&newer, "reservation_id"),
            string_field(&older, "reservation_id")
        ],
        "newest first"
    );
}
