//! Waiting rooms per concert and the sale opening (API.md, "Waiting rooms per concert, and the
//! sale opening"): the concert's new fields, tokens of a room, the pre-queue and its switch at
//! the opening, tokens refused in another room's dates (both ways), the ticket limit per
//! concert, and the admin room report.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn rfc3339_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn concert_with(app: &TestApp, body: Value) -> reqwest::Response {
    let mut body = body;
    body["title"] = json!("Room Night");
    body["venue"] = json!("Room Hall");
    app.post("/api/v1/admin/concerts")
        .bearer_auth(&app.admin_token)
        .json(&body)
        .send()
        .await
        .expect("create a concert")
}

async fn concert_ok(app: &TestApp, body: Value) -> String {
    string_field(
        &assert_json(concert_with(app, body).await, 201).await,
        "concert_id",
    )
}

async fn room_token(app: &TestApp, buyer: &Buyer, concert: &str) -> reqwest::Response {
    app.post("/api/v1/queue/tokens")
        .session(buyer)
        .json(&json!({ "concert_id": concert }))
        .send()
        .await
        .expect("take a room token")
}

async fn report(app: &TestApp, room: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/admin/waiting-rooms/{room}"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_json(response, 200).await
}

fn listed<'a>(concerts: &'a Value, id: &str) -> &'a Value {
    concerts["concerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["concert_id"] == id)
        .expect("the concert is listed")
}

#[tokio::test]
async fn a_concert_takes_its_room_its_opening_and_its_ticket_limit_and_lists_them() {
    let app = spawn_app().await;
    let opens = rfc3339_of(app.now_ms() + 3_600_000);
    let plain = concert_ok(&app, json!({})).await;
    let opening = concert_ok(&app, json!({ "sale_opens_at": opens })).await;
    let limits = concert_ok(
        &app,
        json!({"waiting_room": {"max_active": 5, "admit_per_second": 10_000_000}, "max_tickets_per_user": 100}),
    )
    .await;
    let capped = concert_ok(&app, json!({ "max_tickets_per_user": 1 })).await;
    let concerts = assert_json(app.get("/api/v1/concerts").send().await.unwrap(), 200).await;
    let fields = |id: &str| {
        let c = listed(&concerts, id);
        (
            c["sale_opens_at"].clone(),
            c["waiting_room"].clone(),
            c["max_tickets_per_user"].clone(),
        )
    };
    assert_eq!(fields(&plain), (json!(null), json!("general"), json!(null)));
    let (at, room, max) = fields(&opening);
    assert_eq!(
        rfc3339_ms(at.as_str().unwrap()),
        rfc3339_ms(&opens),
        "sale_opens_at reads back"
    );
    assert_eq!((room, max), (json!("own"), json!(null)));
    assert_eq!(fields(&limits), (json!(null), json!("own"), json!(100)));
    // A ticket limit alone keeps the general room.
    assert_eq!(fields(&capped), (json!(null), json!("general"), json!(1)));
    // A date says which room its tokens come from, for a client that knows only the date.
    for (concert, room, max) in [
        (&opening, "own", json!(null)),
        (&capped, "general", json!(1)),
    ] {
        let date = app.create_date(concert, 5, 100).await;
        let about = app
            .get(&format!("/api/v1/dates/{date}"))
            .send()
            .await
            .unwrap();
        let about = assert_json(about, 200).await;
        assert_eq!(about["waiting_room"], room, "{about}");
        assert_eq!(about["max_tickets_per_user"], max, "{about}");
        assert_eq!(
            about["sale_opens_at"].is_null(),
            concert == &capped,
            "{about}"
        );
    }

    for (body, what) in [
        (
            json!({"waiting_room": {"max_active": 0, "admit_per_second": 1}}),
            "max_active 0",
        ),
        (
            json!({"waiting_room": {"max_active": 10_000_001, "admit_per_second": 1}}),
            "max_active past 10^7",
        ),
        (
            json!({"waiting_room": {"max_active": 1, "admit_per_second": -1}}),
            "a negative rate",
        ),
        (json!({"max_tickets_per_user": 0}), "no tickets"),
        (json!({"max_tickets_per_user": 101}), "101 tickets"),
        (
            json!({"sale_opens_at": "tomorrow"}),
            "an opening that is no time",
        ),
    ] {
        let response = concert_with(&app, body).await;
        assert_problem_for(response, 422, "invalid_input", what).await;
    }
    let huge = app
        .post("/api/v1/admin/concerts")
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body(r#"{"title": "t", "venue": "v", "waiting_room": {"max_active": 1, "admit_per_second": 18446744073709551616}}"#)
        .send()
        .await
        .unwrap();
    assert_problem_for(huge, 422, "invalid_input", "a rate of 2^64").await;
    for (body, what) in [
        (
            json!({"waiting_room": {"max_active": 1}}),
            "a room without a rate",
        ),
        (json!({"waiting_room": null}), "a null room"),
        (json!({"max_tickets_per_user": 1.5}), "a fractional limit"),
        (json!({"sale_opens_at": 5}), "an opening that is a number"),
    ] {
        let response = concert_with(&app, body).await;
        assert_problem_for(response, 400, "malformed_request", what).await;
    }
}

#[tokio::test]
async fn a_room_gives_one_token_per_user_beside_the_general_one_and_names_its_concert() {
    let app = spawn_app().await;
    let room = concert_ok(
        &app,
        json!({"waiting_room": {"max_active": 1, "admit_per_second": 1000}}),
    )
    .await;
    let general_concert = app.create_concert("General", "Hall").await;
    let buyer = app.new_buyer().await;

    let general = assert_json(app.take_queue_token(&buyer).await, 201).await;
    assert_eq!(general["concert_id"], json!(null));
    let first = assert_json(room_token(&app, &buyer, &room).await, 201).await;
    assert_eq!(first["concert_id"], json!(room));
    assert_eq!(first["status"], "active");
    assert_ne!(first["queue_token"], general["queue_token"]);
    let again = assert_json(room_token(&app, &buyer, &room).await, 200).await;
    assert_eq!(again["queue_token"], first["queue_token"]);
    // An empty object is no request for a room: the general token, as without a body.
    let empty = app
        .post("/api/v1/queue/tokens")
        .session(&buyer)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_json(empty, 200).await["queue_token"],
        general["queue_token"]
    );

    // The room's own max_active: the next user waits there, and not in the general room.
    let other = app.new_buyer().await;
    let waiting = assert_json(room_token(&app, &other, &room).await, 201).await;
    assert_eq!(
        (waiting["status"].clone(), waiting["position"].clone()),
        (json!("waiting"), json!(1))
    );
    let polled = assert_json(
        app.poll_queue(&other, waiting["queue_token"].as_str().unwrap())
            .await,
        200,
    )
    .await;
    assert_eq!(polled["concert_id"], json!(room));
    assert_eq!(polled["position"], json!(1));
    let general_other = assert_json(app.take_queue_token(&other).await, 201).await;
    assert_eq!(general_other["status"], "active");

    assert_problem(
        room_token(&app, &buyer, &general_concert).await,
        422,
        "invalid_input",
    )
    .await;
    assert_problem(room_token(&app, &buyer, "c_999").await, 404, "not_found").await;
    assert_problem(room_token(&app, &buyer, "nonsense").await, 404, "not_found").await;
    let number = app
        .post("/api/v1/queue/tokens")
        .session(&buyer)
        .json(&json!({ "concert_id": 1 }))
        .send()
        .await
        .unwrap();
    assert_problem(number, 400, "malformed_request").await;
    let text = app
        .post("/api/v1/queue/tokens")
        .session(&buyer)
        .header("content-type", "text/plain")
        .body("concert")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn before_the_opening_tokens_wait_in_the_pre_queue_and_are_let_in_at_their_turn() {
    let app = spawn_app_with(|s| s.queue.waiting_ttl_seconds = 60).await;
    let opens_at = app.now_ms() + 600_000;
    let concert = concert_ok(
        &app,
        json!({"sale_opens_at": rfc3339_of(opens_at), "waiting_room": {"max_active": 2, "admit_per_second": 2}}),
    )
    .await;
    let date = app.create_date(&concert, 10, 1_000).await;
    let mut buyers = Vec::new();
    for n in 1..=5u64 {
        let buyer = app.new_buyer().await;
        let status = assert_json(room_token(&app, &buyer, &concert).await, 201).await;
        assert_eq!(status["status"], "pre_queue");
        assert_eq!(status["position"], json!(n), "the pre-queue's size");
        assert_eq!(
            rfc3339_ms(status["expires_at"].as_str().unwrap()),
            opens_at + 60_000,
            "a pre-queue token lasts until the opening plus the waiting TTL"
        );
        buyers.push((buyer, string_field(&status, "queue_token")));
    }
    let (first, token) = &buyers[0];
    let status = assert_json(app.poll_queue(first, token).await, 200).await;
    assert_eq!(status["position"], json!(5));
    // Ten minutes to go, then a random place among five at two a second: 1.5 s on average.
    assert_eq!(status["estimated_wait_seconds"], json!(600 + 2));
    assert_problem(
        app.seats_response(first, token, &date).await,
        403,
        "not_admitted",
    )
    .await;
    let room = report(&app, &concert).await;
    assert_eq!(
        (room["pre_queue"].clone(), room["waiting"].clone()),
        (json!(5), json!(0))
    );
    assert_eq!(
        rfc3339_ms(room["sale_opens_at"].as_str().unwrap()),
        opens_at
    );

    // Past the opening the pre-queue is in line and two are let in at once; a newcomer is
    // behind all five.
    app.advance(Duration::from_millis(600_001));
    eventually("the opening", || async {
        (report(&app, &concert).await["pre_queue"] == json!(0)).then_some(())
    })
    .await;
    let late = app.new_buyer().await;
    let late_status = assert_json(room_token(&app, &late, &concert).await, 201).await;
    assert_eq!(late_status["status"], "waiting");
    assert_eq!(late_status["position"], json!(4));
    let mut places = Vec::new();
    for (buyer, token) in &buyers {
        let status = assert_json(app.poll_queue(buyer, token).await, 200).await;
        assert_eq!(status["reissued"], json!(false));
        places.push(status["position"].as_u64().unwrap());
    }
    places.sort();
    assert_eq!(places, vec![0, 0, 1, 2, 3], "two admitted, three in line");
    let room = report(&app, &concert).await;
    assert_eq!(room["active"], json!(2));
    assert_eq!(room["waiting"], json!(4));
    assert_eq!(room["admitted_total"], json!(2));
    assert_eq!(room["order_violations"], json!(0));

    // An admitted pre-queue buyer holds and pays; their place frees for the next in line,
    // whose own token turns active without taking a new one.
    let admitted: Vec<&(Buyer, String)> = {
        let mut out = Vec::new();
        for pair in &buyers {
            let status = assert_json(app.poll_queue(&pair.0, &pair.1).await, 200).await;
            if status["status"] == "active" {
                out.push(pair);
            }
        }
        out
    };
    let (buyer, token) = admitted[0];
    app.charge_ok(buyer, 10_000).await;
    let held = app.hold_ok(buyer, token, &date, &[1]).await;
    assert_json(
        app.pay(buyer, token, &string_field(&held, "reservation_id"))
            .await,
        201,
    )
    .await;
    app.advance(Duration::from_secs(1));
    eventually("the next in line to be let in", || async {
        (report(&app, &concert).await["admitted_total"] == json!(3)).then_some(())
    })
    .await;
    let room = report(&app, &concert).await;
    assert_eq!(room["order_violations"], json!(0));
    assert!(
        room["wait_seconds_p99"].as_f64().unwrap() >= room["wait_seconds_p50"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn a_token_of_one_room_is_refused_on_another_rooms_dates_both_ways() {
    let app = spawn_app().await;
    let own = concert_ok(
        &app,
        json!({"waiting_room": {"max_active": 100, "admit_per_second": 1000}}),
    )
    .await;
    let own_date = app.create_date(&own, 10, 1_000).await;
    let (_, general_date) = app.concert_with_date(10, 1_000).await;
    let buyer = app.new_buyer().await;
    app.charge_ok(&buyer, 100_000).await;
    for general_token_on_own_date in [true, false] {
        // Live tokens of both rooms (a payment of the last round ended one of them).
        let general = app.take_queue_token(&buyer).await;
        let general_token = string_field(&general.json::<Value>().await.unwrap(), "queue_token");
        let own_token = room_token(&app, &buyer, &own).await;
        let own_token = string_field(&own_token.json::<Value>().await.unwrap(), "queue_token");
        let (token, date, right_token) = if general_token_on_own_date {
            (&general_token, &own_date, &own_token)
        } else {
            (&own_token, &general_date, &general_token)
        };
        let wrong = |response| assert_problem(response, 403, "queue_token_wrong_room");
        wrong(app.seats_response(&buyer, token, date).await).await;
        wrong(app.hold(&buyer, token, date, &[1]).await).await;
        let best = app
            .post("/api/v1/reservations")
            .session(&buyer)
            .queue(token)
            .json(&json!({"date_id": date, "best_available": {"quantity": 1}}))
            .send()
            .await
            .unwrap();
        wrong(best).await;
        let join = app
            .post(&format!("/api/v1/dates/{date}/waitlist"))
            .session(&buyer)
            .queue(token)
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        wrong(join).await;
        let stream = app
            .get(&format!("/api/v1/dates/{date}/seats/events"))
            .session(&buyer)
            .queue(token)
            .send()
            .await
            .unwrap();
        wrong(stream).await;
        // A hold made with the right token cannot be paid with the wrong one.
        let held = app.hold_ok(&buyer, right_token, date, &[2]).await;
        let id = string_field(&held, "reservation_id");
        wrong(app.pay(&buyer, token, &id).await).await;
        assert_eq!(app.reservation_status(&buyer, &id).await, "held");
        assert_json(app.pay(&buyer, right_token, &id).await, 201).await;
        // The payment ended the right token only.
        let poll = assert_json(app.poll_queue(&buyer, right_token).await, 200).await;
        assert_eq!(poll["reissued"], json!(true));
        let still = assert_json(app.poll_queue(&buyer, token).await, 200).await;
        assert_eq!(
            still["reissued"],
            json!(false),
            "the other room's token lives on"
        );
    }
}

#[tokio::test]
async fn the_wrong_room_comes_after_not_found_and_before_the_dates_state_and_values() {
    let app = spawn_app().await;
    let own = concert_ok(
        &app,
        json!({"waiting_room": {"max_active": 100, "admit_per_second": 1000}}),
    )
    .await;
    let own_date = app.create_date(&own, 10, 1_000).await;
    let (buyer, general_token) = app.admitted_buyer().await;
    // Not found first: an unknown date, whatever the token.
    assert_problem(
        app.hold(&buyer, &general_token, "d_999", &[1]).await,
        404,
        "not_found",
    )
    .await;
    // Then the room, before the values (a seat that does not exist, too many seats) ...
    assert_problem(
        app.hold(&buyer, &general_token, &own_date, &[999]).await,
        403,
        "queue_token_wrong_room",
    )
    .await;
    assert_problem(
        app.hold(&buyer, &general_token, &own_date, &[1, 2, 3, 4, 5, 6])
            .await,
        403,
        "queue_token_wrong_room",
    )
    .await;
    // ... and before the date's state.
    let cancelled = app
        .post(&format!("/api/v1/admin/dates/{own_date}/cancellation"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_json(cancelled, 200).await;
    assert_problem(
        app.hold(&buyer, &general_token, &own_date, &[1]).await,
        403,
        "queue_token_wrong_room",
    )
    .await;
    // Still waiting comes before the room: a pre-queue token is not admitted anywhere.
    let later = concert_ok(
        &app,
        json!({"sale_opens_at": rfc3339_of(app.now_ms() + 3_600_000)}),
    )
    .await;
    let waiting = string_field(
        &assert_json(room_token(&app, &buyer, &later).await, 201).await,
        "queue_token",
    );
    assert_problem(
        app.hold(&buyer, &waiting, &own_date, &[1]).await,
        403,
        "not_admitted",
    )
    .await;
}

#[tokio::test]
async fn a_replayed_hold_answers_before_the_queue_token_is_looked_at() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 1_000).await;
    let (buyer, token) = app.admitted_buyer().await;
    let keyed = |token: &str| {
        app.post("/api/v1/reservations")
            .session(&buyer)
            .queue(token)
            .header("Idempotency-Key", "hold-once")
            .json(&json!({"date_id": date, "seat_no": 3}))
    };
    let first = assert_json(keyed(&token).send().await.unwrap(), 201).await;
    let left = app
        .delete("/api/v1/queue/tokens/current")
        .session(&buyer)
        .queue(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    let again = assert_json(keyed(&token).send().await.unwrap(), 201).await;
    assert_eq!(again["reservation_id"], first["reservation_id"]);
    let unkeyed = app.hold(&buyer, &token, &date, &[4]).await;
    assert_problem(unkeyed, 401, "queue_token_invalid").await;
}

#[tokio::test]
async fn the_ticket_limit_counts_held_paid_and_received_seats_per_user_and_date() {
    let app = spawn_app().await;
    let concert = concert_ok(&app, json!({ "max_tickets_per_user": 3 })).await;
    let date = app.create_date(&concert, 20, 1_000).await;
    let other_date = app.create_date(&concert, 20, 1_000).await;
    let (buyer, token) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 100_000).await;
    let paid = app.hold_ok(&buyer, &token, &date, &[1, 2]).await;
    let paid_id = string_field(&paid, "reservation_id");
    assert_json(app.pay(&buyer, &token, &paid_id).await, 201).await;
    let token = string_field(
        &assert_json(app.take_queue_token(&buyer).await, 201).await,
        "queue_token",
    );
    // Two owned: one more may be held, not two, on that date; the other date is its own.
    assert_problem(
        app.hold(&buyer, &token, &date, &[3, 4]).await,
        422,
        "hold_limit",
    )
    .await;
    let best = app
        .post("/api/v1/reservations")
        .session(&buyer)
        .queue(&token)
        .json(&json!({"date_id": date, "best_available": {"quantity": 2}}))
        .send()
        .await
        .unwrap();
    assert_problem(best, 422, "hold_limit").await;
    app.hold_ok(&buyer, &token, &date, &[3]).await;
    assert_problem(
        app.hold(&buyer, &token, &date, &[4]).await,
        422,
        "hold_limit",
    )
    .await;
    app.hold_ok(&buyer, &token, &other_date, &[1, 2, 3]).await;

    // A transfer to a user it would take past the limit is refused; one within it is not,
    // and what is received counts against the recipient.
    let (friend, friend_token) = app.admitted_buyer().await;
    app.hold_ok(&friend, &friend_token, &date, &[10, 11]).await;
    let give = |to: &str| {
        app.post("/api/v1/transfers")
            .session(&buyer)
            .json(&json!({"reservation_id": paid_id, "to_username": to}))
            .send()
    };
    assert_problem(give(&friend.username).await.unwrap(), 422, "hold_limit").await;
    let (stranger, stranger_token) = app.admitted_buyer().await;
    assert_json(give(&stranger.username).await.unwrap(), 201).await;
    app.hold_ok(&stranger, &stranger_token, &date, &[12]).await;
    assert_problem(
        app.hold(&stranger, &stranger_token, &date, &[13]).await,
        422,
        "hold_limit",
    )
    .await;
    // The giver's seats no longer count: they may hold two more now.
    app.hold_ok(&buyer, &token, &date, &[5, 6]).await;
}

#[tokio::test]
async fn a_waiting_list_offer_that_would_pass_the_ticket_limit_is_not_made() {
    let app = spawn_app().await;
    let concert = concert_ok(&app, json!({ "max_tickets_per_user": 2 })).await;
    let date = app.create_date(&concert, 2, 1_000).await;
    // Two buyers hold one seat each: the date is sold out to anyone else.
    let (first, first_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&first, &first_token, &date, &[1]).await;
    let (second, second_token) = app.admitted_buyer().await;
    app.charge_ok(&second, 10_000).await;
    let second_held = app.hold_ok(&second, &second_token, &date, &[2]).await;
    assert_json(
        app.pay(
            &second,
            &second_token,
            &string_field(&second_held, "reservation_id"),
        )
        .await,
        201,
    )
    .await;
    let second_token = string_field(
        &assert_json(app.take_queue_token(&second).await, 201).await,
        "queue_token",
    );
    // The owner of one seat lists for two: an offer of two would make three.
    let joined = app
        .post(&format!("/api/v1/dates/{date}/waitlist"))
        .session(&second)
        .queue(&second_token)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    let entry = assert_json(joined, 201).await;
    let cancelled = app
        .delete(&format!(
            "/api/v1/reservations/{}",
            string_field(&held, "reservation_id")
        ))
        .session(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    let listed = app
        .get("/api/v1/waitlist")
        .session(&second)
        .send()
        .await
        .unwrap();
    let listed = assert_json(listed, 200).await;
    let mine = &listed["entries"][0];
    assert_eq!(mine["entry_id"], entry["entry_id"]);
    assert_eq!(mine["status"], "waiting", "no offer past the limit: {mine}");
    assert_eq!(
        app.seat_statuses(&second, &second_token, &date).await[&1],
        "available"
    );
}

#[tokio::test]
async fn the_room_report_is_for_admins_and_names_real_rooms_only() {
    let app = spawn_app().await;
    let own = concert_ok(
        &app,
        json!({"waiting_room": {"max_active": 3, "admit_per_second": 1000}}),
    )
    .await;
    let general_concert = app.create_concert("General", "Hall").await;
    for _ in 0..2 {
        let buyer = app.new_buyer().await;
        assert_json(room_token(&app, &buyer, &own).await, 201).await;
    }
    app.admitted_buyer().await;
    let room = report(&app, &own).await;
    assert_eq!(room["room"], json!(own));
    assert_eq!(room["sale_opens_at"], json!(null));
    assert_eq!(
        (
            room["pre_queue"].clone(),
            room["waiting"].clone(),
            room["active"].clone()
        ),
        (json!(0), json!(0), json!(2))
    );
    assert_eq!(room["admitted_total"], json!(2));
    assert_eq!(room["order_violations"], json!(0));
    assert_eq!(room["wait_seconds_p50"], json!(0.0));
    let general = report(&app, "general").await;
    assert_eq!(general["room"], json!("general"));
    assert_eq!(general["admitted_total"], json!(1));
    for missing in [general_concert.as_str(), "c_999", "everything"] {
        let response = app
            .get(&format!("/api/v1/admin/waiting-rooms/{missing}"))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap();
        assert_problem_for(response, 404, "not_found", missing).await;
    }
    // The metrics recorder is shared by every server of this test process: the series are
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
        format!(r#"boxoffice_room_tokens{{room="{own}",state="active"}} "#),
        r#"boxoffice_room_tokens{room="general",state="waiting"} "#.to_owned(),
        r#"boxoffice_room_tokens{room="other",state="pre_queue"} "#.to_owned(),
        format!(r#"boxoffice_room_admissions_total{{room="{own}"}} "#),
        r#"boxoffice_room_order_violations_total{room="general"} "#.to_owned(),
        format!(r#"boxoffice_room_wait_seconds{{room="{own}",quantile="0.99"}} "#),
    ] {
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    let (buyer, _) = app.admitted_buyer().await;
    let as_buyer = app
        .get("/api/v1/admin/waiting-rooms/general")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_problem(as_buyer, 401, "unauthenticated").await;
}

/// A room token's `(status, position)` as a poll reads it (never reissued here).
async fn standing_of(app: &TestApp, buyer: &Buyer, token: &str) -> (String, u64) {
    let status = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(status["reissued"], json!(false), "{status}");
    (
        string_field(&status, "status"),
        status["position"].as_u64().unwrap(),
    )
}

/// 2,000 buyers in a room's pre-queue, the opening, and admission at the room's rate and
/// within its cap as admitted buyers leave, while a general-room sale runs beside it under its
/// own cap. After every step: each room within its `max_active`, no room admitted past its
/// rate, and no buyer admitted while one ahead of them in line still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_in_a_pre_queue_are_let_in_fairly_beside_a_general_sale() {
    use futures::StreamExt;
    const BUYERS: usize = 2_000;
    const CAP: u64 = 300;
    const RATE: u64 = 200;
    const GENERAL_CAP: u64 = 50;
    let app = spawn_app_with(|s| {
        s.queue.max_active = GENERAL_CAP as u32;
        s.queue.admit_per_second = 1_000;
        s.queue.waiting_ttl_seconds = 600;
    })
    .await;
    let opens_at = app.now_ms() + 3_600_000;
    let concert = concert_ok(
        &app,
        json!({"sale_opens_at": rfc3339_of(opens_at), "waiting_room": {"max_active": CAP, "admit_per_second": RATE}}),
    )
    .await;
    let (_, general_date) = app.concert_with_date(1_000, 100).await;

    let fans: Vec<(Buyer, String)> = futures::stream::iter(0..BUYERS)
        .map(|_| async {
            let buyer = app.new_buyer().await;
            let status = assert_json(room_token(&app, &buyer, &concert).await, 201).await;
            assert_eq!(status["status"], "pre_queue", "{status}");
            let token = string_field(&status, "queue_token");
            (buyer, token)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(
        standing_of(&app, &fans[0].0, &fans[0].1).await,
        ("pre_queue".into(), BUYERS as u64)
    );

    app.advance(Duration::from_millis(3_600_000));
    eventually("the opening", || async {
        (report(&app, &concert).await["pre_queue"] == json!(0)).then_some(())
    })
    .await;
    // The general room's sale, beside it: a line three times its cap.
    let general: Vec<(Buyer, String)> = futures::stream::iter(0..150)
        .map(|_| async {
            let buyer = app.new_buyer().await;
            app.charge_ok(&buyer, 1_000).await;
            let status = assert_json(app.take_queue_token(&buyer).await, 201).await;
            (buyer, string_field(&status, "queue_token"))
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(report(&app, "general").await["active"], json!(GENERAL_CAP));
    // Everyone's place in line right after the opening: those let in at once, then 1, 2, ….
    let placed: Vec<(String, u64)> = futures::stream::iter(&fans)
        .map(|(buyer, token)| standing_of(&app, buyer, token))
        .buffered(32)
        .collect()
        .await;
    let admitted_at_once = placed.iter().filter(|(s, _)| s == "active").count();
    assert_eq!(
        admitted_at_once as u64, RATE,
        "a second's worth at the opening"
    );
    let mut line: Vec<u64> = placed
        .iter()
        .filter(|(s, _)| s == "waiting")
        .map(|(_, p)| *p)
        .collect();
    line.sort();
    assert_eq!(
        line,
        (1..=(BUYERS as u64 - RATE)).collect::<Vec<_>>(),
        "positions are exact"
    );
    // Each fan's order: their position, after everyone let in at once.
    let mut rank: Vec<u64> = placed
        .iter()
        .map(|(s, p)| if s == "active" { 0 } else { *p })
        .collect();

    let mut done = vec![false; BUYERS];
    let mut elapsed_ms = 0u64;
    for round in 0..200 {
        // Who is in now; every admitted fan was behind no one still waiting.
        let (shared_app, shared_fans) = (&app, &fans);
        let now: Vec<(usize, (String, u64))> =
            futures::stream::iter((0..BUYERS).filter(|i| !done[*i]))
                .map(|i| async move {
                    let (buyer, token) = &shared_fans[i];
                    (i, standing_of(shared_app, buyer, token).await)
                })
                .buffered(32)
                .collect()
                .await;
        let active: Vec<usize> = now
            .iter()
            .filter(|(_, (s, _))| s == "active")
            .map(|(i, _)| *i)
            .collect();
        let waiting: Vec<usize> = now
            .iter()
            .filter(|(_, (s, _))| s == "waiting")
            .map(|(i, _)| *i)
            .collect();
        if let (Some(last_in), Some(first_out)) = (
            active.iter().map(|i| rank[*i]).max(),
            waiting.iter().map(|i| rank[*i]).min(),
        ) {
            assert!(
                last_in < first_out,
                "round {round}: rank {last_in} admitted while rank {first_out} waits"
            );
        }
        let room = report(&app, &concert).await;
        assert!(room["active"].as_u64().unwrap() <= CAP, "{room}");
        assert_eq!(room["order_violations"], json!(0), "{room}");
        let admitted = room["admitted_total"].as_u64().unwrap();
        assert!(
            admitted <= RATE + RATE * elapsed_ms / 1000,
            "{admitted} admitted in {elapsed_ms} ms: {room}"
        );
        let beside = report(&app, "general").await;
        assert!(
            beside["active"].as_u64().unwrap() <= GENERAL_CAP,
            "{beside}"
        );
        assert_eq!(beside["order_violations"], json!(0), "{beside}");
        if waiting.is_empty() && active.is_empty() {
            break;
        }
        // The fans let in leave; a few general buyers buy a seat, which ends their admission.
        futures::stream::iter(&active)
            .for_each_concurrent(32, |i| async {
                let left = app
                    .delete("/api/v1/queue/tokens/current")
                    .session(&fans[*i].0)
                    .queue(&fans[*i].1)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(left.status(), 204);
            })
            .await;
        for i in active {
            done[i] = true;
            rank[i] = 0;
        }
        for (buyer, token) in general.iter().skip(round * 5).take(5) {
            if standing_of(&app, buyer, token).await.0 == "active" {
                let seat = 1 + (round as u64 * 5) % 900;
                if let Ok(held) = app
                    .hold(buyer, token, &general_date, &[seat])
                    .await
                    .json::<Value>()
                    .await
                {
                    if let Some(id) = held["reservation_id"].as_str() {
                        assert_json(app.pay(buyer, token, id).await, 201).await;
                    }
                }
            }
        }
        app.advance(Duration::from_millis(500));
        elapsed_ms += 500;
        // The next tick sees the new time.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(
        done.iter().all(|d| *d),
        "every fan was let in within the rounds"
    );
    let room = report(&app, &concert).await;
    assert_eq!(room["admitted_total"], json!(BUYERS));
    assert_eq!(room["order_violations"], json!(0));
}
