//! No input, however malformed, gets anything but a 4xx with a problem+json body.

use proptest::strategy::{Just, Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A server with a date of 10 seats, an admitted buyer and a held reservation on seat 10.
struct Fixture {
    app: TestApp,
    concert: String,
    date: String,
    buyer: Buyer,
    queue_token: String,
    reservation: String,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(10, 1_000).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[10]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&buyer, 100_000).await;
    Fixture {
        app,
        concert,
        date,
        buyer,
        queue_token,
        reservation,
    }
}

/// Every endpoint that takes a JSON body, with full credentials.
fn body_endpoints(f: &Fixture) -> Vec<(&'static str, String, reqwest::RequestBuilder)> {
    let app = &f.app;
    vec![
        ("sign up", "/api/v1/users".into(), app.post("/api/v1/users")),
        (
            "sign in",
            "/api/v1/sessions".into(),
            app.post("/api/v1/sessions"),
        ),
        (
            "charge",
            "/api/v1/balance/charges".into(),
            app.post("/api/v1/balance/charges").session(&f.buyer),
        ),
        (
            "hold",
            "/api/v1/reservations".into(),
            app.post("/api/v1/reservations")
                .session(&f.buyer)
                .queue(&f.queue_token),
        ),
        (
            "pay",
            "/api/v1/payments".into(),
            app.post("/api/v1/payments")
                .session(&f.buyer)
                .queue(&f.queue_token),
        ),
        (
            "create concert",
            "/api/v1/admin/concerts".into(),
            app.post("/api/v1/admin/concerts")
                .bearer_auth(&app.admin_token),
        ),
        (
            "create date",
            format!("/api/v1/admin/concerts/{}/dates", f.concert),
            app.post(&format!("/api/v1/admin/concerts/{}/dates", f.concert))
                .bearer_auth(&app.admin_token),
        ),
    ]
}

/// Asserts the fixture's state survived: the hold, the other seats, the balance.
async fn assert_untouched(f: &Fixture) {
    let statuses = f.app.seat_statuses(&f.buyer, &f.queue_token, &f.date).await;
    for (seat, status) in statuses {
        let expected = if seat == 10 { "held" } else { "available" };
        assert_eq!(status, expected, "seat {seat}");
    }
    assert_eq!(
        f.app.reservation_status(&f.buyer, &f.reservation).await,
        "held"
    );
    assert_eq!(f.app.balance(&f.buyer).await, 100_000);
    assert_eq!(f.app.history(&f.buyer).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_on_every_endpoint() {
    let f = fixture().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        b"{\"a\":}".to_vec(),
        b"{'single': 'quotes'}".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"a string\"".to_vec(),
        b"42".to_vec(),
        b"{}".to_vec(),
        b"{\"unrelated\": true}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"username\": \"\xc3\x28\"}".to_vec(),
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
    ];
    for (name, _, request) in body_endpoints(&f) {
        for body in &bodies {
            let request = request.try_clone().expect("a clonable request");
            let response = request.raw_json(body.clone()).send().await.unwrap();
            let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
            let (status, code) = assert_client_error(response, &format!("{name} {shown}")).await;
            assert_eq!(
                (status, code.as_str()),
                (400, "malformed_request"),
                "{name} with {shown}"
            );
        }
    }
    assert_untouched(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_missing_fields_are_400() {
    let f = fixture().await;
    let d = f.date.clone();
    let cases: Vec<(&str, Value)> = vec![
        (
            "/api/v1/users",
            json!({"username": 5, "password": PASSWORD}),
        ),
        (
            "/api/v1/users",
            json!({"username": "abcdef", "password": null}),
        ),
        ("/api/v1/users", json!({"username": "abcdef"})),
        (
            "/api/v1/sessions",
            json!({"username": ["a"], "password": PASSWORD}),
        ),
        ("/api/v1/sessions", json!({"password": PASSWORD})),
        ("/api/v1/reservations", json!({"date_id": 5, "seat_no": 1})),
        (
            "/api/v1/reservations",
            json!({"date_id": null, "seat_no": 1}),
        ),
        ("/api/v1/reservations", json!({"seat_no": 1})),
        ("/api/v1/reservations", json!({"date_id": d})),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": "1"}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": 1.5}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": [1]}),
        ),
        ("/api/v1/reservations", json!({"date_id": d, "seat_nos": 1})),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_nos": "1,2"}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_nos": [1.5]}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_nos": ["1"]}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_nos": [null]}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": null}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_nos": null}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": 3, "seat_nos": null}),
        ),
        (
            "/api/v1/reservations",
            json!({"date_id": d, "seat_no": null, "seat_nos": [3]}),
        ),
        ("/api/v1/payments", json!({"reservation_id": 5})),
        ("/api/v1/payments", json!({"reservation_id": null})),
        ("/api/v1/payments", json!({"reservation": f.reservation})),
        ("/api/v1/payments", json!({})),
    ];
    for (path, body) in cases {
        let response = f
            .app
            .post(path)
            .session(&f.buyer)
            .queue(&f.queue_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400, "malformed_request").await;
        assert_eq!(problem["status"], json!(400), "{path} {body}");
    }
    let admin_cases: Vec<(String, Value)> = vec![
        (
            "/api/v1/admin/concerts".into(),
            json!({"title": 1, "venue": "v"}),
        ),
        ("/api/v1/admin/concerts".into(), json!({"title": "t"})),
        (
            format!("/api/v1/admin/concerts/{}/dates", f.concert),
            json!({"starts_at": STARTS_AT, "seat_count": 1.5, "price": 1}),
        ),
        (
            format!("/api/v1/admin/concerts/{}/dates", f.concert),
            json!({"starts_at": STARTS_AT, "seat_count": 5, "price": "1"}),
        ),
        (
            format!("/api/v1/admin/concerts/{}/dates", f.concert),
            json!({"starts_at": 12, "seat_count": 5, "price": 1}),
        ),
        (
            format!("/api/v1/admin/concerts/{}/dates", f.concert),
            json!({"seat_count": 5, "price": 1}),
        ),
    ];
    for (path, body) in admin_cases {
        let response = f
            .app
            .post(&path)
            .bearer_auth(&f.app.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "malformed_request").await;
    }
    assert_untouched(&f).await;
}

/// API.md: a body that is "not the request's shape" is 400. Every request body is an object;
/// a JSON array holding the field values in order is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_in_place_of_the_object_is_400() {
    let f = fixture().await;
    let name = unique_username();
    let array_bodies = [
        ("sign up", json!([name, PASSWORD])),
        ("sign in", json!([f.buyer.username, PASSWORD])),
        // The array form of `{"amount": 10}` (a shape case of the invalid amounts).
        ("charge", json!([10])),
        ("hold", json!([f.date, 1, null])),
        ("pay", json!([f.reservation])),
        ("create concert", json!(["Title", "Venue"])),
        ("create date", json!([STARTS_AT, 5, 1])),
    ];
    let mut accepted = Vec::new();
    for ((name, _, request), (expected_name, body)) in
        body_endpoints(&f).into_iter().zip(array_bodies)
    {
        assert_eq!(name, expected_name);
        let response = request.json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        if status == 400 {
            assert_problem(response, 400, "malformed_request").await;
        } else {
            accepted.push(format!("{name} {body} -> {status}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "array bodies were not refused with 400: {accepted:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_is_415() {
    let f = fixture().await;
    let content_types = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("json"),
    ];
    for (name, _, request) in body_endpoints(&f) {
        for content_type in content_types {
            let mut request = request
                .try_clone()
                .unwrap()
                .body(r#"{"amount": 5, "seat_no": 1}"#);
            if let Some(value) = content_type {
                request = request.header("content-type", value);
            }
            let response = request.send().await.unwrap();
            let problem = assert_problem(response, 415, "unsupported_media_type").await;
            assert_eq!(problem["status"], json!(415), "{name} {content_type:?}");
        }
    }
    // A JSON type with parameters is JSON.
    let response = f
        .app
        .post("/api/v1/balance/charges")
        .session(&f.buyer)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"amount": 1}"#)
        .send()
        .await
        .unwrap();
    assert_json(response, 201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_size_limit_is_413() {
    let f = fixture().await;
    let limit = f.app.settings.limits.body_bytes_max;
    let padding = "x".repeat(limit + 1);
    let huge = format!(r#"{{"amount": 5, "username": "abcdef", "pad": "{padding}"}}"#);
    let enormous = format!(r#"{{"pad": "{}"}}"#, "y".repeat(4 * 1024 * 1024));
    for (name, _, request) in body_endpoints(&f) {
        for body in [&huge, &enormous] {
            // The server answers 413 before reading the body and closes the connection, so the
            // client can see a reset instead of the answer while it is still sending. Retry a few
            // times; every answer that arrives must be the 413, and for a body just past the
            // limit one must arrive.
            let mut answered = false;
            let mut errors = Vec::new();
            for _ in 0..5 {
                let sent = request
                    .try_clone()
                    .unwrap()
                    .raw_json(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let context = format!("{name} with {} bytes", body.len());
                        assert_problem_for(response, 413, "payload_too_large", &context).await;
                        answered = true;
                        break;
                    }
                    Err(error) => errors.push(error.to_string()),
                }
            }
            assert!(
                answered || body.len() > 1024 * 1024,
                "{name}: a body just past the limit never got an answer: {errors:?}"
            );
        }
    }
    assert_untouched(&f).await;
    // Just under the limit is read (and here refused only for its shape).
    let filler = "z".repeat(limit - 200);
    let fits = format!(r#"{{"amount": 7, "pad": "{filler}"}}"#);
    assert!(fits.len() < limit);
    let response = f
        .app
        .post("/api/v1/balance/charges")
        .session(&f.buyer)
        .raw_json(fits)
        .send()
        .await
        .unwrap();
    let (status, _) = assert_client_error_or_created(response).await;
    assert_ne!(status, 413, "a body under the limit is not too large");
    assert!(f.app.balance(&f.buyer).await >= 100_000);
}

/// Unknown fields may be ignored (201) or refused (400); anything else is wrong.
async fn assert_client_error_or_created(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    if status == 201 {
        return (status, assert_json(response, 201).await);
    }
    let (status, code) = assert_client_error(response, "a body under the limit").await;
    (status, json!(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_path_parameters_are_404() {
    let f = fixture().await;
    let long = "9".repeat(5_000);
    let longer = "r_1_".to_owned() + &"1".repeat(20_000);
    let ids: Vec<&str> = vec![
        "r_1_99999999999",
        "r_1_4294967296",
        "r_99999_1",
        "r_1_999",
        "r_0_0",
        "r_1_01",
        "r_-1_1",
        "r_1_-1",
        "-1",
        "0",
        "r_1",
        "r__",
        "r_1_1_1",
        "%F0%9F%8E%AB",
        "%ED%8B%B0%EC%BC%93",
        "%00",
        "%ZZ",
        "%",
        "%C3%28",
        "r_1_1%00",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "c_999",
        "d_999",
        "p_1_1",
        "u_1",
        &long,
        &longer,
    ];
    let app = &f.app;
    for id in &ids {
        let requests = vec![
            app.get(&format!("/api/v1/reservations/{id}"))
                .session(&f.buyer),
            app.delete(&format!("/api/v1/reservations/{id}"))
                .session(&f.buyer),
            app.get(&format!("/api/v1/concerts/{id}/dates")),
            app.get(&format!("/api/v1/dates/{id}/seats"))
                .session(&f.buyer)
                .queue(&f.queue_token),
            app.post(&format!("/api/v1/admin/concerts/{id}/dates"))
                .bearer_auth(&app.admin_token)
                .json(&json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 1})),
        ];
        for request in requests {
            let response = request.send().await.unwrap();
            let shown = &id[..id.len().min(30)];
            let (status, code) = assert_client_error(response, shown).await;
            assert_eq!((status, code.as_str()), (404, "not_found"), "id {shown}");
        }
        // The same ids inside bodies.
        let paid = app.pay(&f.buyer, &f.queue_token, id).await;
        assert_problem(paid, 404, "not_found").await;
        let held = app
            .post("/api/v1/reservations")
            .session(&f.buyer)
            .queue(&f.queue_token)
            .json(&json!({"date_id": id, "seat_no": 1}))
            .send()
            .await
            .unwrap();
        assert_problem(held, 404, "not_found").await;
    }
    // Unicode, raw in a JSON body.
    for id in ["티켓", "🎫", "r_١_١", "\u{0}"] {
        assert_problem(
            app.pay(&f.buyer, &f.queue_token, id).await,
            404,
            "not_found",
        )
        .await;
    }
    assert_untouched(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/index"),
        (Method::GET, "/api"),
        (Method::GET, "/api/v1"),
        (Method::GET, "/api/v2/concerts"),
        (Method::GET, "/api/v1/concert"),
        (Method::GET, "/api/v1/concerts/c_1/dates/extra"),
        (Method::POST, "/api/v1/nope"),
        (Method::DELETE, "/api/v1/users/me/please"),
        (Method::GET, "/API/V1/CONCERTS"),
    ] {
        let response = app.request(method, path).send().await.unwrap();
        assert_problem(response, 404, "not_found").await;
    }
    for (method, path) in [
        (Method::PUT, "/api/v1/concerts"),
        (Method::POST, "/api/v1/concerts"),
        (Method::DELETE, "/api/v1/users"),
        (Method::GET, "/api/v1/users"),
        (Method::GET, "/api/v1/sessions"),
        (Method::GET, "/api/v1/payments"),
        (Method::PATCH, "/api/v1/reservations"),
        (Method::PUT, "/api/v1/reservations/r_1_1"),
        (Method::GET, "/api/v1/balance/charges"),
        (Method::DELETE, "/api/v1/balance"),
        (Method::PUT, "/api/v1/queue/tokens"),
        (Method::POST, "/api/v1/queue/tokens/current"),
        (Method::POST, "/api/v1/admin/stats"),
        (Method::GET, "/api/v1/admin/concerts"),
        (Method::POST, "/healthz"),
    ] {
        let response = app.request(method.clone(), path).send().await.unwrap();
        assert_problem(response, 405, "method_not_allowed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_requests_with_bad_seats_are_422() {
    let f = fixture().await;
    let d = f.date.clone();
    let cases = vec![
        json!({"date_id": d, "seat_no": 1, "seat_nos": [2]}),
        json!({"date_id": d, "seat_no": 1, "seat_nos": []}),
        json!({"date_id": d, "seat_nos": []}),
        json!({"date_id": d, "seat_nos": [3, 3]}),
        json!({"date_id": d, "seat_nos": [1, 2, 1]}),
        json!({"date_id": d, "seat_no": 0}),
        json!({"date_id": d, "seat_nos": [0]}),
        json!({"date_id": d, "seat_nos": [1, 0]}),
        json!({"date_id": d, "seat_no": -1}),
        json!({"date_id": d, "seat_no": 11}),
        json!({"date_id": d, "seat_nos": [2, 11]}),
        json!({"date_id": d, "seat_no": 4_294_967_295_u64}),
        json!({"date_id": d, "seat_no": 4_294_967_297_u64}),
    ];
    for body in cases {
        let response = f
            .app
            .post("/api/v1/reservations")
            .session(&f.buyer)
            .queue(&f.queue_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 422, "invalid_input").await;
        assert_eq!(problem["status"], json!(422), "{body}");
    }
    for raw in [
        format!(r#"{{"date_id": "{d}", "seat_no": 18446744073709551616}}"#),
        format!(r#"{{"date_id": "{d}", "seat_nos": [-18446744073709551616]}}"#),
    ] {
        let response = f
            .app
            .post("/api/v1/reservations")
            .session(&f.buyer)
            .queue(&f.queue_token)
            .raw_json(raw.clone())
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "invalid_input").await;
    }
    // More seats than the hold limit at once.
    assert_problem(
        f.app
            .hold(&f.buyer, &f.queue_token, &d, &[1, 2, 3, 4, 5])
            .await,
        422,
        "hold_limit",
    )
    .await;
    // A seat this user already holds is unavailable to a second hold.
    assert_problem(
        f.app.hold(&f.buyer, &f.queue_token, &d, &[10]).await,
        409,
        "seat_unavailable",
    )
    .await;
    assert_untouched(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_idempotency_key_is_400() {
    let f = fixture().await;
    let too_long = "k".repeat(65);
    let bad_keys: Vec<Vec<u8>> = vec![
        too_long.into_bytes(),
        b"".to_vec(),
        b"has space".to_vec(),
        b"tab\there".to_vec(),
        "ключ".as_bytes().to_vec(),
        vec![0x80, 0x81],
    ];
    let app = &f.app;
    for key in &bad_keys {
        let value = reqwest::header::HeaderValue::from_bytes(key).expect("a sendable header");
        let requests = vec![
            app.post("/api/v1/balance/charges")
                .session(&f.buyer)
                .json(&json!({"amount": 10})),
            app.post("/api/v1/reservations")
                .session(&f.buyer)
                .queue(&f.queue_token)
                .json(&json!({"date_id": f.date, "seat_no": 1})),
            app.post("/api/v1/payments")
                .session(&f.buyer)
                .queue(&f.queue_token)
                .json(&json!({"reservation_id": f.reservation})),
        ];
        for request in requests {
            let response = request
                .header(IDEMPOTENCY_HEADER, value.clone())
                .send()
                .await
                .unwrap();
            assert_problem(response, 400, "malformed_request").await;
        }
    }
    assert_untouched(&f).await;

    // 64 visible characters is a good key.
    let longest = "~".repeat(64);
    let response = app
        .post("/api/v1/balance/charges")
        .session(&f.buyer)
        .idempotency_key(&longest)
        .json(&json!({"amount": 10}))
        .send()
        .await
        .unwrap();
    assert_json(response, 201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_sign_up_and_admin_values_are_422() {
    let app = spawn_app().await;
    for (username, password) in [
        ("ab", PASSWORD),
        ("Abcdef", PASSWORD),
        ("has space", PASSWORD),
        ("ünïcode", PASSWORD),
        (&*"a".repeat(33), PASSWORD),
        ("", PASSWORD),
        ("okname", "short"),
        ("okname", ""),
        ("okname", &*"p".repeat(129)),
    ] {
        let problem =
            assert_problem(app.sign_up(username, password).await, 422, "invalid_input").await;
        assert_eq!(problem["status"], json!(422));
    }
    let concert = app.create_concert("C", "V").await;
    for body in [
        json!({"title": "", "venue": "v"}),
        json!({"title": "t", "venue": ""}),
        json!({"title": "t".repeat(201), "venue": "v"}),
        json!({"title": "t", "venue": "v".repeat(201)}),
    ] {
        let response = app
            .post("/api/v1/admin/concerts")
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "invalid_input").await;
    }
    let dates = format!("/api/v1/admin/concerts/{concert}/dates");
    for body in [
        json!({"starts_at": STARTS_AT, "seat_count": 0, "price": 1}),
        json!({"starts_at": STARTS_AT, "seat_count": -1, "price": 1}),
        json!({"starts_at": STARTS_AT, "seat_count": 100_001, "price": 1}),
        json!({"starts_at": STARTS_AT, "seat_count": 5, "price": -1}),
        json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 9_007_199_254_740_992_u64}),
        json!({"starts_at": "tomorrow", "seat_count": 5, "price": 1}),
        json!({"starts_at": "", "seat_count": 5, "price": 1}),
    ] {
        let response = app
            .post(&dates)
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "invalid_input").await;
    }
    let response = app
        .post(&dates)
        .bearer_auth(&app.admin_token)
        .raw_json(format!(
            r#"{{"starts_at": "{STARTS_AT}", "seat_count": 18446744073709551616, "price": 1}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_input").await;
    let listed = assert_json(
        app.get(&format!("/api/v1/concerts/{concert}/dates"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed, json!({"dates": []}), "nothing was created");
    // The limits themselves are fine.
    app.create_concert(&"t".repeat(200), &"v".repeat(200)).await;
    app.create_date(&concert, 100_000, 9_007_199_254_740_991)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_never_produce_a_5xx() {
    let f = fixture().await;
    let app = &f.app;
    // (header, value, expected status and code); each replaces the good header of that name.
    let odd: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("authorization", vec![0x80, 0xff], 401, "unauthenticated"),
        (
            "authorization",
            b"Bearer \tbos_1_\t".to_vec(),
            401,
            "unauthenticated",
        ),
        (
            "x-queue-token",
            vec![0xc3, 0x28],
            401,
            "queue_token_invalid",
        ),
        (
            "x-queue-token",
            "q".repeat(10_000).into_bytes(),
            401,
            "queue_token_invalid",
        ),
    ];
    let hold = || {
        app.post("/api/v1/reservations")
            .session(&f.buyer)
            .queue(&f.queue_token)
            .json(&json!({"date_id": f.date, "seat_no": 1}))
    };
    let list = || {
        app.get(&format!("/api/v1/dates/{}/seats", f.date))
            .session(&f.buyer)
            .queue(&f.queue_token)
    };
    for (name, value, status, code) in odd {
        let value = reqwest::header::HeaderValue::from_bytes(&value).expect("sendable");
        for request in [hold(), list()] {
            let mut replaced = reqwest::header::HeaderMap::new();
            replaced.insert(name, value.clone());
            let response = request.headers(replaced).send().await.unwrap();
            assert_problem_for(response, status, code, name).await;
        }
    }
    // A Content-Type that is not even text is not JSON.
    let mut replaced = reqwest::header::HeaderMap::new();
    replaced.insert(
        "content-type",
        reqwest::header::HeaderValue::from_bytes(&[0xff]).unwrap(),
    );
    let response = hold().headers(replaced).send().await.unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    assert_untouched(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_produce_a_5xx() {
    let f = fixture().await;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(
        proptest::prop_oneof![
            proptest::string::string_regex(r#"[{}\[\]":,0-9a-z_\- .eE+]{0,40}"#).unwrap(),
            json_ish_strategy(),
        ],
        1..3,
    )
    .prop_map(|parts| parts.concat());
    let mut bodies = Vec::new();
    for _ in 0..60 {
        bodies.push(
            strategy
                .new_tree(&mut runner)
                .expect("a generated body")
                .current(),
        );
    }
    for (name, _, request) in body_endpoints(&f) {
        for body in &bodies {
            let response = request
                .try_clone()
                .unwrap()
                .raw_json(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                assert_client_error(response, &format!("{name} with {body}")).await;
            }
        }
    }
}

/// Bodies of the right outline with arbitrary values in the fields the endpoints read.
fn json_ish_strategy() -> impl Strategy<Value = String> {
    let value = proptest::prop_oneof![
        proptest::num::i64::ANY.prop_map(|n| n.to_string()),
        proptest::num::f64::ANY
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| x.to_string()),
        Just("null".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        "[a-z0-9_]{0,12}".prop_map(|s| format!("\"{s}\"")),
        proptest::collection::vec(-3i64..20, 0..6).prop_map(|v| format!("{v:?}")),
        // The nested shapes: best_available and a date's sections, whole or broken.
        (-2i64..8, "[A-Za-z]{0,3}")
            .prop_map(|(q, s)| format!(r#"{{"quantity": {q}, "section": "{s}"}}"#)),
        (-2i64..600, "[A-Z]{0,2}").prop_map(|(n, r)| {
            format!(r#"[{{"name": "S", "price": {n}, "rows": [{{"row": "{r}", "seats": {n}}}]}}]"#)
        }),
        Just(r#"[{"name": "S", "rows": []}]"#.to_owned()),
    ];
    let field = proptest::sample::select(vec![
        "amount",
        "seat_no",
        "seat_nos",
        "date_id",
        "reservation_id",
        "username",
        "password",
        "title",
        "venue",
        "starts_at",
        "seat_count",
        "price",
        "sections",
        "best_available",
    ]);
    proptest::collection::vec((field, value), 0..4).prop_map(|fields| {
        let inner: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    })
}
