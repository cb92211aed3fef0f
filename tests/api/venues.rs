//! Venue layouts (sections, rows, prices) and best-available holds: API.md, "Venue layouts:
//! sections, rows, price categories" and "Best available".

use serde_json::{json, Value};

use crate::helpers::*;

/// The contract's example: Floor (A 20, B 22) at 150,000 and Balcony (1: 30) at 80,000.
fn example_sections() -> Value {
    json!([
        {"name": "Floor", "price": 150_000, "rows": [{"row": "A", "seats": 20}, {"row": "B", "seats": 22}]},
        {"name": "Balcony", "price": 80_000, "rows": [{"row": "1", "seats": 30}]}
    ])
}

async fn post_date(app: &TestApp, concert: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&body)
        .send()
        .await
        .expect("create a date")
}

async fn date_with_sections(app: &TestApp, sections: Value) -> (String, String) {
    let concert = app.create_concert("Layouts", "Layout Hall").await;
    let response = post_date(
        app,
        &concert,
        json!({"starts_at": STARTS_AT, "sections": sections}),
    )
    .await;
    let date = string_field(&assert_json(response, 201).await, "date_id");
    (concert, date)
}

async fn best_available(
    app: &TestApp,
    buyer: &Buyer,
    queue_token: &str,
    date: &str,
    best: Value,
) -> reqwest::Response {
    app.post("/api/v1/reservations")
        .session(buyer)
        .queue(queue_token)
        .json(&json!({"date_id": date, "best_available": best}))
        .send()
        .await
        .expect("a best-available hold")
}

fn seat_nos(reservation: &Value) -> Vec<u64> {
    reservation["seat_nos"]
        .as_array()
        .expect("seat_nos is an array")
        .iter()
        .map(|s| s.as_u64().expect("a seat number"))
        .collect()
}

async fn listing(app: &TestApp, buyer: &Buyer, queue_token: &str, date: &str) -> Value {
    assert_json(app.seats_response(buyer, queue_token, date).await, 200).await
}

async fn dates_of(app: &TestApp, concert: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/concerts/{concert}/dates"))
        .send()
        .await
        .unwrap();
    assert_json(response, 200).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_with_sections_lists_its_rows_its_seats_places_and_prices() {
    let app = spawn_app().await;
    let (concert, date) = date_with_sections(&app, example_sections()).await;
    let (buyer, queue_token) = app.admitted_buyer().await;

    let body = listing(&app, &buyer, &queue_token, &date).await;
    assert_eq!(
        body["sections"],
        json!([
            {"name": "Floor", "price": 150_000, "rows": [
                {"row": "A", "first_seat_no": 1, "seats": 20},
                {"row": "B", "first_seat_no": 21, "seats": 22}]},
            {"name": "Balcony", "price": 80_000, "rows": [
                {"row": "1", "first_seat_no": 43, "seats": 30}]}
        ])
    );
    let seats = body["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 72);
    for (seat_no, section, row, seat, price) in [
        (1, "Floor", "A", 1, 150_000),
        (20, "Floor", "A", 20, 150_000),
        (21, "Floor", "B", 1, 150_000),
        (42, "Floor", "B", 22, 150_000),
        (43, "Balcony", "1", 1, 80_000),
        (72, "Balcony", "1", 30, 80_000),
    ] {
        assert_eq!(
            seats[seat_no - 1],
            json!({"seat_no": seat_no, "status": "available", "price": price,
                   "section": section, "row": row, "seat": seat}),
        );
    }

    // A seat named by number works as before; its price is its section's.
    let held = app.hold_ok(&buyer, &queue_token, &date, &[42, 43]).await;
    assert_eq!(held["price"], json!(230_000), "{held}");

    let dates = eventually("the catalogue to count the hold", || async {
        let dates = dates_of(&app, &concert).await;
        (dates["dates"][0]["available_seats"] == json!(70)).then_some(dates)
    })
    .await;
    let listed = &dates["dates"][0];
    assert_eq!(listed["total_seats"], json!(72));
    assert_eq!(listed["price"], json!(80_000), "the cheapest seat's price");
    assert_eq!(
        listed["sections"],
        json!([
            {"name": "Floor", "price": 150_000, "total_seats": 42, "available_seats": 41},
            {"name": "Balcony", "price": 80_000, "total_seats": 30, "available_seats": 29}
        ])
    );
    let one = assert_json(
        app.get(&format!("/api/v1/dates/{date}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(one["sections"], listed["sections"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_made_with_a_seat_count_is_one_general_section_in_rows_of_five_hundred() {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(1_201, 700).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let body = listing(&app, &buyer, &queue_token, &date).await;
    assert_eq!(
        body["sections"],
        json!([{"name": "General", "price": 700, "rows": [
            {"row": "1", "first_seat_no": 1, "seats": 500},
            {"row": "2", "first_seat_no": 501, "seats": 500},
            {"row": "3", "first_seat_no": 1_001, "seats": 201}]}])
    );
    assert_eq!(
        body["seats"][500],
        json!({"seat_no": 501, "status": "available", "price": 700,
               "section": "General", "row": "2", "seat": 1})
    );
    let dates = dates_of(&app, &concert).await;
    assert_eq!(
        dates["dates"][0]["sections"],
        json!([{"name": "General", "price": 700, "total_seats": 1_201, "available_seats": 1_201}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_of_a_layout_is_a_422_and_a_wrong_type_a_400() {
    let app = spawn_app().await;
    let concert = app.create_concert("Limits", "Hall").await;
    let row = |label: &str, seats: u64| json!({"row": label, "seats": seats});
    let section = |name: &str, price: Value, rows: Vec<Value>| json!({"name": name, "price": price, "rows": rows});
    let one_row = || vec![row("A", 1)];
    let many = |n: usize, f: &dyn Fn(usize) -> Value| (0..n).map(f).collect::<Vec<_>>();
    let unprocessable: Vec<Value> = vec![
        json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 1, "sections": [section("S", json!(1), one_row())]}),
        json!({"starts_at": STARTS_AT}),
        json!({"starts_at": STARTS_AT, "seat_count": 5}),
        json!({"starts_at": STARTS_AT, "price": 5}),
        json!({"starts_at": STARTS_AT, "price": 5, "sections": [section("S", json!(1), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": []}),
        json!({"starts_at": STARTS_AT, "sections": many(51, &|n| section(&format!("S{n}"), json!(1), one_row()))}),
        json!({"starts_at": STARTS_AT, "sections": [section("", json!(1), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section("   ", json!(1), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section(&"x".repeat(51), json!(1), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section("Same", json!(1), one_row()), section("Same", json!(2), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(-1), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(9_007_199_254_740_992_u64), one_row())]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), many(201, &|n| row(&n.to_string(), 1)))]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![row("", 1)])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![row("ABCDEFGHIJK", 1)])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![row("A", 1), row("A", 2)])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![row("A", 0)])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![row("A", 501)])]}),
        json!({"starts_at": STARTS_AT, "sections": [section("S", json!(1), vec![json!({"row": "A", "seats": -3})])]}),
        json!({"starts_at": STARTS_AT, "sections": many(3, &|n| section(&format!("S{n}"), json!(1), many(70, &|r| row(&r.to_string(), 500))))}),
        json!({"starts_at": "soon", "sections": [section("S", json!(1), one_row())]}),
    ];
    for body in unprocessable {
        let described: String = body.to_string().chars().take(120).collect();
        let problem =
            assert_problem(post_date(&app, &concert, body).await, 422, "invalid_input").await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{described}"
        );
    }
    let malformed: Vec<Value> = vec![
        json!({"starts_at": STARTS_AT, "sections": {"name": "S"}}),
        json!({"starts_at": STARTS_AT, "sections": null}),
        json!({"starts_at": STARTS_AT, "sections": [{"name": 5, "price": 1, "rows": [row("A", 1)]}]}),
        json!({"starts_at": STARTS_AT, "sections": [{"name": "S", "price": 1.5, "rows": [row("A", 1)]}]}),
        json!({"starts_at": STARTS_AT, "sections": [{"name": "S", "price": 1}]}),
        json!({"starts_at": STARTS_AT, "sections": [{"name": "S", "price": 1, "rows": [{"row": "A"}]}]}),
        json!({"starts_at": STARTS_AT, "sections": [{"name": "S", "price": 1, "rows": [{"row": "A", "seats": "9"}]}]}),
    ];
    for body in malformed {
        assert_problem(
            post_date(&app, &concert, body).await,
            400,
            "malformed_request",
        )
        .await;
    }
    // The same row label in two sections, the extreme prices, and 100,000 seats are fine.
    let largest = json!({"starts_at": STARTS_AT, "sections": many(2, &|n| section(
        &format!("S{n}"),
        json!(if n == 0 { 0 } else { 9_007_199_254_740_991_u64 }),
        many(100, &|r| row(&format!("{r}"), 500)),
    ))});
    let created = assert_json(post_date(&app, &concert, largest).await, 201).await;
    let dates = dates_of(&app, &concert).await;
    assert_eq!(dates["dates"][0]["date_id"], created["date_id"]);
    assert_eq!(dates["dates"][0]["total_seats"], json!(100_000));
    assert_eq!(dates["dates"][0]["price"], json!(0));
}

/// API.md: "Row of 10, empty, quantity 2 → seats 5–6; then 3–4; then 7–8."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_follows_the_contracts_worked_example() {
    let app = spawn_app().await;
    let (_, date) = date_with_sections(
        &app,
        json!([{"name": "Hall", "price": 1_000, "rows": [{"row": "A", "seats": 10}]}]),
    )
    .await;
    let mut expected = vec![vec![5, 6], vec![3, 4], vec![7, 8]].into_iter();
    for _ in 0..3 {
        let (buyer, queue_token) = app.admitted_buyer().await;
        let held = assert_json(
            best_available(&app, &buyer, &queue_token, &date, json!({"quantity": 2})).await,
            201,
        )
        .await;
        assert_eq!(seat_nos(&held), expected.next().unwrap(), "{held}");
        assert_eq!(held["status"], "held");
        assert_eq!(held["price"], json!(2_000));
    }
    // 1–2 and 9–10 are left: no three together anywhere.
    let (buyer, queue_token) = app.admitted_buyer().await;
    let problem = assert_problem(
        best_available(&app, &buyer, &queue_token, &date, json!({"quantity": 3})).await,
        409,
        "no_adjacent_seats",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains('3'),
        "{problem}"
    );
    let held = assert_json(
        best_available(&app, &buyer, &queue_token, &date, json!({"quantity": 2})).await,
        201,
    )
    .await;
    assert_eq!(seat_nos(&held), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_stays_in_the_asked_section_and_prefers_the_front() {
    let app = spawn_app().await;
    let (_, date) = date_with_sections(&app, example_sections()).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let balcony = assert_json(
        best_available(
            &app,
            &buyer,
            &queue_token,
            &date,
            json!({"quantity": 2, "section": "Balcony"}),
        )
        .await,
        201,
    )
    .await;
    // Balcony row 1 holds 43–72: its middle pair is 57–58.
    assert_eq!(seat_nos(&balcony), [57, 58]);
    assert_eq!(balcony["price"], json!(160_000));
    let front = assert_json(
        best_available(&app, &buyer, &queue_token, &date, json!({"quantity": 2})).await,
        201,
    )
    .await;
    // Floor row A (1–20), nearest the stage: its middle pair is 10–11.
    assert_eq!(seat_nos(&front), [10, 11]);
    let body = listing(&app, &buyer, &queue_token, &date).await;
    for seat in [57, 58, 10, 11] {
        assert_eq!(body["seats"][seat - 1]["status"], "held");
    }
    // A full section answers 409 even while others have room.
    let (_, date) = date_with_sections(
        &app,
        json!([{"name": "Box", "price": 1, "rows": [{"row": "A", "seats": 1}]},
               {"name": "Stalls", "price": 1, "rows": [{"row": "A", "seats": 10}]}]),
    )
    .await;
    assert_problem(
        best_available(
            &app,
            &buyer,
            &queue_token,
            &date,
            json!({"quantity": 2, "section": "Box"}),
        )
        .await,
        409,
        "no_adjacent_seats",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_best_available_is_checked() {
    let app = spawn_app().await;
    let (_, date) = date_with_sections(&app, example_sections()).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let max = app.settings.holds.max_seats_per_user as u64;
    let hold = |body: Value| {
        app.post("/api/v1/reservations")
            .session(&buyer)
            .queue(&queue_token)
            .json(&body)
            .send()
    };
    for best in [
        json!({"quantity": 0}),
        json!({"quantity": -1}),
        json!({"quantity": max + 1}),
        json!({"quantity": 100_000_000_000_000_000_000_f64}),
        json!({"quantity": 2, "section": "Stalls"}),
        json!({"quantity": 2, "section": ""}),
        json!({"quantity": 2, "section": "floor"}),
    ] {
        let problem = assert_problem(
            hold(json!({"date_id": date, "best_available": best}))
                .await
                .unwrap(),
            422,
            "invalid_input",
        )
        .await;
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    for body in [
        json!({"date_id": date, "seat_no": 1, "best_available": {"quantity": 1}}),
        json!({"date_id": date, "seat_nos": [1], "best_available": {"quantity": 1}}),
    ] {
        assert_problem(hold(body).await.unwrap(), 422, "invalid_input").await;
    }
    for best in [
        json!(2),
        json!({"quantity": "2"}),
        json!({"quantity": 1.5}),
        json!({"section": "Floor"}),
        json!({"quantity": 2, "section": 7}),
        json!(null),
    ] {
        assert_problem(
            hold(json!({"date_id": date, "best_available": best}))
                .await
                .unwrap(),
            400,
            "malformed_request",
        )
        .await;
    }
    assert_problem(
        hold(json!({"date_id": "d_999", "best_available": {"quantity": 1}}))
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    // Held plus asked above the limit is `hold_limit`; nothing was held by the refusals.
    app.hold_ok(&buyer, &queue_token, &date, &[1, 2, 3]).await;
    assert_problem(
        hold(json!({"date_id": date, "best_available": {"quantity": 2}}))
            .await
            .unwrap(),
        422,
        "hold_limit",
    )
    .await;
    let held = assert_json(
        hold(json!({"date_id": date, "best_available": {"quantity": 1}}))
            .await
            .unwrap(),
        201,
    )
    .await;
    assert_eq!(seat_nos(&held).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_available_hold_replays_by_idempotency_key_with_the_same_seats() {
    let app = spawn_app().await;
    let (_, date) = date_with_sections(&app, example_sections()).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let body = json!({"date_id": date, "best_available": {"quantity": 2, "section": "Floor"}});
    let send = |body: Value| {
        app.post("/api/v1/reservations")
            .session(&buyer)
            .queue(&queue_token)
            .header(IDEMPOTENCY_HEADER, "pair-1")
            .json(&body)
            .send()
    };
    let first = assert_json(send(body.clone()).await.unwrap(), 201).await;
    let again = assert_json(send(body.clone()).await.unwrap(), 201).await;
    assert_eq!(first, again);
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    assert_eq!(
        statuses.values().filter(|s| *s == "held").count(),
        2,
        "one hold, not two"
    );
    let other = json!({"date_id": date, "best_available": {"quantity": 1}});
    assert_problem(send(other).await.unwrap(), 422, "idempotency_key_reused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_steps_around_seats_the_buyer_just_let_go_of() {
    let app = spawn_app().await;
    let (_, date) = date_with_sections(
        &app,
        json!([{"name": "Hall", "price": 1, "rows": [{"row": "A", "seats": 10}]}]),
    )
    .await;
    let (alice, alice_token) = app.admitted_buyer().await;
    let first = assert_json(
        best_available(&app, &alice, &alice_token, &date, json!({"quantity": 2})).await,
        201,
    )
    .await;
    assert_eq!(seat_nos(&first), [5, 6]);
    let id = string_field(&first, "reservation_id");
    let cancelled = app
        .delete(&format!("/api/v1/reservations/{id}"))
        .session(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    // 5–6 are the best again, but not for Alice during her cooldown.
    let second = assert_json(
        best_available(&app, &alice, &alice_token, &date, json!({"quantity": 2})).await,
        201,
    )
    .await;
    assert_eq!(seat_nos(&second), [3, 4]);
    let (bob, bob_token) = app.admitted_buyer().await;
    let bobs = assert_json(
        best_available(&app, &bob, &bob_token, &date, json!({"quantity": 2})).await,
        201,
    )
    .await;
    assert_eq!(seat_nos(&bobs), [5, 6]);
}
