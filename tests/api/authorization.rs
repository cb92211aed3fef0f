//! Who may do what: sessions, queue tokens, other users' things, the admin token.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Every route API.md marks **S**, with a body that would otherwise be acceptable.
fn session_routes(date: &str, reservation: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::DELETE, "/api/v1/sessions/current".into(), None),
        (Method::GET, "/api/v1/users/me".into(), None),
        (Method::POST, "/api/v1/queue/tokens".into(), None),
        (Method::GET, "/api/v1/queue/tokens/current".into(), None),
        (Method::DELETE, "/api/v1/queue/tokens/current".into(), None),
        (Method::GET, format!("/api/v1/dates/{date}/seats"), None),
        (
            Method::POST,
            "/api/v1/reservations".into(),
            Some(json!({"date_id": date, "seat_no": 1})),
        ),
        (
            Method::GET,
            format!("/api/v1/reservations/{reservation}"),
            None,
        ),
        (Method::GET, "/api/v1/reservations".into(), None),
        (
            Method::DELETE,
            format!("/api/v1/reservations/{reservation}"),
            None,
        ),
        (Method::GET, "/api/v1/balance".into(), None),
        (
            Method::POST,
            "/api/v1/balance/charges".into(),
            Some(json!({"amount": 100})),
        ),
        (Method::GET, "/api/v1/balance/history".into(), None),
        (
            Method::POST,
            "/api/v1/payments".into(),
            Some(json!({"reservation_id": reservation})),
        ),
    ]
}

/// Session tokens that must not authenticate anyone.
fn bad_authorizations(signed_out: &str) -> Vec<Option<String>> {
    vec![
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Bearer garbage".into()),
        Some("Bearer bos_1_00000000000000000000000000000000".into()),
        Some("Bearer bos_999999_0123456789abcdef0123456789abcdef".into()),
        Some("Bearer test-admin-token-0123456789abcdef".into()),
        Some(format!("Basic {signed_out}")),
        Some(format!("Bearer {signed_out}")),
        Some(format!("Bearer {signed_out}x")),
        Some(format!("Bearer {}", "a".repeat(5_000))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_route_refuses_a_missing_or_bad_session() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (owner, owner_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&owner, &owner_q, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");

    // A signed-out session's token.
    let gone = app.new_buyer().await;
    let out = app
        .delete("/api/v1/sessions/current")
        .session(&gone)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);

    for authorization in bad_authorizations(&gone.token) {
        for (method, path, body) in session_routes(&date, &reservation) {
            let mut request = app.request(method.clone(), &path).queue(&owner_q);
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let problem = assert_problem(response, 401, "unauthenticated").await;
            assert!(
                problem["detail"].is_string(),
                "{method} {path} with {authorization:?}"
            );
        }
    }

    // The session check comes before the body: a malformed body without a session is 401.
    let response = app
        .post("/api/v1/balance/charges")
        .raw_json("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;

    // Nothing happened to the owner's hold.
    assert_eq!(app.reservation_status(&owner, &reservation).await, "held");
    assert_eq!(app.seat_statuses(&owner, &owner_q, &date).await[&1], "held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_update_streams_refuse_a_missing_session() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (_, queue_token) = app.admitted_buyer().await;
    for path in [
        "/api/v1/queue/tokens/current/events".to_owned(),
        format!("/api/v1/dates/{date}/seats/events"),
    ] {
        let response = app.get(&path).queue(&queue_token).send().await.unwrap();
        assert_problem(response, 401, "unauthenticated").await;
        let response = app
            .get(&path)
            .bearer_auth("garbage")
            .queue(&queue_token)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthenticated").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    app.balance(&buyer).await;
    app.advance(
        Duration::from_secs(app.settings.auth.session_ttl_seconds) + Duration::from_secs(1),
    );
    let response = app
        .get("/api/v1/users/me")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    // A new sign-in works.
    assert_json(app.sign_in(&buyer.username, PASSWORD).await, 201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_reservation_is_not_found_for_every_verb() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let (mallory, mallory_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&alice, &alice_q, &date, &[2]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&mallory, 1_000).await;

    assert_problem(
        app.reservation(&mallory, &reservation).await,
        404,
        "not_found",
    )
    .await;
    let cancel = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(&mallory)
        .send()
        .await
        .unwrap();
    assert_problem(cancel, 404, "not_found").await;
    assert_problem(
        app.pay(&mallory, &mallory_q, &reservation).await,
        404,
        "not_found",
    )
    .await;
    let list = app
        .get("/api/v1/reservations")
        .session(&mallory)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_json(list, 200).await,
        json!({"reservations": [], "next_cursor": null})
    );

    // Alice's hold and Mallory's money are untouched.
    assert_eq!(app.reservation_status(&alice, &reservation).await, "held");
    assert_eq!(app.balance(&mallory).await, 1_000);
    assert_eq!(app.seat_statuses(&alice, &alice_q, &date).await[&2], "held");

    // The same answer as for a reservation that does not exist at all.
    assert_problem(app.reservation(&mallory, "r_1_999").await, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_queue_token_is_forbidden() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (alice, alice_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&alice, &alice_q, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");
    let mallory = app.new_buyer().await;
    app.charge_ok(&mallory, 1_000).await;

    assert_problem(app.poll_queue(&mallory, &alice_q).await, 403, "forbidden").await;
    let leave = app
        .delete("/api/v1/queue/tokens/current")
        .session(&mallory)
        .queue(&alice_q)
        .send()
        .await
        .unwrap();
    assert_problem(leave, 403, "forbidden").await;
    assert_problem(
        app.seats_response(&mallory, &alice_q, &date).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.hold(&mallory, &alice_q, &date, &[2]).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.pay(&mallory, &alice_q, &reservation).await,
        403,
        "forbidden",
    )
    .await;

    // Alice's token still works and is unchanged.
    let status = assert_json(app.poll_queue(&alice, &alice_q).await, 200).await;
    assert_eq!(status["status"], "active");
    assert_eq!(status["reissued"], json!(false));
    assert_eq!(
        app.seat_statuses(&alice, &alice_q, &date).await[&2],
        "available"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_unknown_or_deleted_queue_token_is_invalid() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&buyer, 1_000).await;

    let unknown = format!("q{}", "0123456789abcdef".repeat(2));
    let bad_tokens: Vec<Option<&str>> = vec![
        None,
        Some(""),
        Some("garbage"),
        Some(&unknown),
        Some("q0123"),
        Some("Q0123456789ABCDEF0123456789ABCDEF"),
    ];
    for token in bad_tokens {
        let with_token = |request: reqwest::RequestBuilder| match token {
            Some(t) => request.queue(t),
            None => request,
        };
        let requests = vec![
            with_token(app.get("/api/v1/queue/tokens/current").session(&buyer)),
            with_token(app.delete("/api/v1/queue/tokens/current").session(&buyer)),
            with_token(
                app.get(&format!("/api/v1/dates/{date}/seats"))
                    .session(&buyer),
            ),
            with_token(
                app.post("/api/v1/reservations")
                    .session(&buyer)
                    .json(&json!({"date_id": date, "seat_no": 2})),
            ),
            with_token(
                app.post("/api/v1/payments")
                    .session(&buyer)
                    .json(&json!({"reservation_id": reservation})),
            ),
        ];
        for request in requests {
            let response = request.send().await.unwrap();
            assert_problem(response, 401, "queue_token_invalid").await;
        }
    }

    // The session is checked first: no session and no token is 401 unauthenticated.
    let response = app
        .get("/api/v1/queue/tokens/current")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    // The queue token is checked before the request itself.
    let response = app
        .post("/api/v1/reservations")
        .session(&buyer)
        .queue(&unknown)
        .json(&json!({"date_id": date, "seat_no": 0}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "queue_token_invalid").await;

    // Nothing was paid or moved.
    assert_eq!(app.reservation_status(&buyer, &reservation).await, "held");
    assert_eq!(app.balance(&buyer).await, 1_000);

    // A deleted token is invalid too.
    let leave = app
        .delete("/api/v1/queue/tokens/current")
        .session(&buyer)
        .queue(&queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(leave.status(), 204);
    assert_problem(
        app.poll_queue(&buyer, &queue_token).await,
        401,
        "queue_token_invalid",
    )
    .await;
    assert_problem(
        app.hold(&buyer, &queue_token, &date, &[2]).await,
        401,
        "queue_token_invalid",
    )
    .await;
    assert_problem(
        app.pay(&buyer, &queue_token, &reservation).await,
        401,
        "queue_token_invalid",
    )
    .await;
    // And a new token can be taken.
    let status = assert_json(app.take_queue_token(&buyer).await, 201).await;
    assert_ne!(string_field(&status, "queue_token"), queue_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    let concert = app.create_concert("Real", "Hall").await;
    let user = app.new_buyer().await;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/admin/concerts".into(),
            Some(json!({"title": "Fake", "venue": "Nowhere"})),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/concerts/{concert}/dates"),
            Some(json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 1})),
        ),
        (Method::GET, "/api/v1/admin/stats".into(), None),
    ];
    let authorizations: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer wrong-token".into()),
        Some(format!("Bearer {}x", app.admin_token)),
        Some(format!(
            "Bearer {}",
            &app.admin_token[..app.admin_token.len() - 1]
        )),
        Some(format!("Basic {}", app.admin_token)),
        Some(format!("Bearer {}", user.token)),
        Some(app.admin_token.clone()),
    ];
    for authorization in &authorizations {
        for (method, path, body) in &routes {
            let mut request = app.request(method.clone(), path);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            assert_problem(request.send().await.unwrap(), 401, "unauthenticated").await;
        }
    }
    // Nothing was created.
    let concerts = assert_json(app.get("/api/v1/concerts").send().await.unwrap(), 200).await;
    assert_eq!(concerts["concerts"].as_array().unwrap().len(), 1);
    let dates = app
        .get(&format!("/api/v1/concerts/{concert}/dates"))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_json(dates, 200).await, json!({"dates": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_empty_admin_token_the_admin_api_does_not_exist() {
    let app = spawn_app_with(|s| s.admin.token = String::new()).await;
    let routes: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/admin/concerts",
            Some(json!({"title": "Fake", "venue": "Nowhere"})),
        ),
        (
            Method::POST,
            "/api/v1/admin/concerts/c_1/dates",
            Some(json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 1})),
        ),
        (Method::GET, "/api/v1/admin/stats", None),
    ];
    for authorization in [
        None,
        Some("Bearer "),
        Some("Bearer test-admin-token-0123456789abcdef"),
    ] {
        for (method, path, body) in &routes {
            let mut request = app.request(method.clone(), path);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            assert_problem(request.send().await.unwrap(), 404, "not_found").await;
        }
    }
}

/// API.md: "Checks run in this order: session, then queue token ..., then the request itself."
/// A bad body (not JSON, wrong shape, not declared JSON) is the request itself, so a bad queue
/// token wins over it on every S Q route that takes a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_token_is_checked_before_the_request_body() {
    let app = spawn_app_with(|s| {
        s.queue.max_active = 1;
        s.queue.admit_per_second = 1;
    })
    .await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (first, first_q) = app.admitted_buyer().await;
    let waiter = app.new_buyer().await;
    let waiting = assert_json(app.take_queue_token(&waiter).await, 201).await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let waiting_q = string_field(&waiting, "queue_token");
    let unknown = format!("q{}", "0123456789abcdef".repeat(2));

    // (queue token presented, expected status, expected code)
    let tokens: Vec<(Option<&str>, u16, &str)> = vec![
        (None, 401, "queue_token_invalid"),
        (Some(&unknown), 401, "queue_token_invalid"),
        (Some(&first_q), 403, "forbidden"),
        (Some(&waiting_q), 403, "not_admitted"),
    ];
    // (content type, body)
    let bodies: Vec<(&str, String)> = vec![
        ("application/json", "{not json".into()),
        ("application/json", "{}".into()),
        (
            "application/json",
            r#"{"reservation_id": 5, "date_id": 5}"#.into(),
        ),
        (
            "text/plain",
            format!(r#"{{"date_id": "{date}", "seat_no": 1}}"#),
        ),
    ];
    for path in ["/api/v1/reservations", "/api/v1/payments"] {
        for (token, status, code) in &tokens {
            for (content_type, body) in &bodies {
                let mut request = app
                    .post(path)
                    .session(&waiter)
                    .header("content-type", *content_type)
                    .body(body.clone());
                if let Some(token) = token {
                    request = request.queue(token);
                }
                let context = format!("{path} token {token:?} body {content_type} {body}");
                assert_problem_for(request.send().await.unwrap(), *status, code, &context).await;
            }
        }
    }
    // The first buyer's token is untouched.
    let status = assert_json(app.poll_queue(&first, &first_q).await, 200).await;
    assert_eq!(status["status"], "active");
}

/// `limits.session_requests_per_second`: past it a session gets 429 `rate_limited` with
/// `Retry-After`; other sessions are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_request_rate_gets_429() {
    const LIMIT: u32 = 5;
    let app = spawn_app_with(|s| s.limits.session_requests_per_second = LIMIT).await;
    let buyer = app.new_buyer().await;
    let other = app.new_buyer().await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..(6 * LIMIT) {
        let response = app
            .get("/api/v1/balance")
            .session(&buyer)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(retry_after.is_some(), "429 carries Retry-After in seconds");
            limited = Some(assert_problem(response, 429, "rate_limited").await);
        }
    }
    assert!(
        statuses[..LIMIT as usize].iter().all(|s| *s == 200),
        "the first {LIMIT} requests are within the rate: {statuses:?}"
    );
    assert!(
        limited.is_some(),
        "no 429 in {} requests: {statuses:?}",
        statuses.len()
    );
    assert_eq!(
        app.balance(&other).await,
        0,
        "another session is not limited"
    );
}

/// `limits.auth_attempts_per_minute_per_ip`: sign-ups and logins past it get 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_past_the_per_ip_rate_get_429() {
    const LIMIT: u32 = 4;
    let app = spawn_app_with(|s| s.limits.auth_attempts_per_minute_per_ip = LIMIT).await;
    let username = unique_username();
    let mut statuses = vec![app.sign_up(&username, PASSWORD).await.status().as_u16()];
    let mut limited = None;
    for _ in 0..(4 * LIMIT) {
        let response = app.sign_in(&username, PASSWORD).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            assert!(
                response.headers().contains_key("retry-after"),
                "Retry-After"
            );
            limited = Some(assert_problem(response, 429, "rate_limited").await);
        }
    }
    assert!(
        statuses[..LIMIT as usize].iter().all(|s| *s == 201),
        "the first {LIMIT} attempts are within the rate: {statuses:?}"
    );
    assert!(
        limited.is_some(),
        "no 429 in {} attempts: {statuses:?}",
        statuses.len()
    );
}

/// `limits.failed_logins_per_account_per_minute`: guesses at one account from many addresses
/// share one bound, so spreading them over addresses does not multiply the guesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_at_one_account_are_bounded_whatever_the_address() {
    const LIMIT: usize = 3;
    let app =
        spawn_app_with(|s| s.limits.failed_logins_per_account_per_minute = LIMIT as u32).await;
    let victim = app.new_buyer().await;
    let mut statuses = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let guesser = app.client_from(ip);
        for guess in 0..4 {
            let response = app
                .sign_in_with(&guesser, &victim.username, &format!("guess number {guess}"))
                .await;
            let status = response.status().as_u16();
            statuses.push(status);
            if statuses.len() > LIMIT {
                assert_rate_limited(response, &format!("guess from {ip}: {statuses:?}")).await;
            }
        }
    }
    assert_eq!(&statuses[..LIMIT], &[401; LIMIT], "{statuses:?}");

    // The refusal comes before the password is looked at: the right one is refused as well.
    let stranger = app.client_from("127.0.0.5");
    let response = app
        .sign_in_with(&stranger, &victim.username, PASSWORD)
        .await;
    assert_rate_limited(response, "the right password from a new address").await;

    // Another account is not affected.
    let other = app.new_buyer().await;
    let response = app.sign_in_with(&stranger, &other.username, PASSWORD).await;
    assert_json(response, 201).await;
}

/// The lockout rule: an address that signed in to the account before keeps its own bound, so a
/// guesser elsewhere cannot shut the owner out; new addresses wait until the bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_signs_in_from_a_known_address_while_someone_guesses_elsewhere() {
    const LIMIT: usize = 3;
    let app =
        spawn_app_with(|s| s.limits.failed_logins_per_account_per_minute = LIMIT as u32).await;
    let username = unique_username();
    assert_json(app.sign_up(&username, PASSWORD).await, 201).await;
    let home = app.client_from("127.0.0.10");
    assert_json(app.sign_in_with(&home, &username, PASSWORD).await, 201).await;

    let guesser = app.client_from("127.0.0.11");
    for guess in 0..LIMIT {
        let response = app
            .sign_in_with(&guesser, &username, &format!("guess number {guess}"))
            .await;
        assert_problem(response, 401, "invalid_credentials").await;
    }
    let response = app
        .sign_in_with(&guesser, &username, "one guess too many")
        .await;
    let retry_after = assert_rate_limited(response, "the guesser past the bound").await;
    assert!(retry_after <= 60, "Retry-After {retry_after}");

    // The owner, at home, is let in; from an address it never used, it waits like anyone.
    assert_json(app.sign_in_with(&home, &username, PASSWORD).await, 201).await;
    let away = app.client_from("127.0.0.12");
    let response = app.sign_in_with(&away, &username, PASSWORD).await;
    assert_rate_limited(
        response,
        "a new address while the account's bucket is empty",
    )
    .await;

    // A minute later the bucket has refilled: a new address is let in again.
    app.advance(Duration::from_secs(60));
    assert_json(app.sign_in_with(&away, &username, PASSWORD).await, 201).await;

    // Guessing from a known address is bounded too, by that address's own bucket.
    for guess in 0..LIMIT {
        let response = app
            .sign_in_with(&home, &username, &format!("home guess {guess}"))
            .await;
        assert_problem(response, 401, "invalid_credentials").await;
    }
    let response = app.sign_in_with(&home, &username, "home guess").await;
    assert_rate_limited(response, "guesses from a known address").await;
}

/// A refused sign-in costs no password hash: with hashing made slow, a burst of refused
/// attempts takes less time than one attempt that was hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_in_runs_no_password_hash() {
    let app = spawn_app_with(|s| {
        s.limits.failed_logins_per_account_per_minute = 1;
        s.auth.argon2_memory_kib = 16 * 1024;
        s.auth.argon2_iterations = 8;
    })
    .await;
    let username = unique_username();
    assert_json(app.sign_up(&username, PASSWORD).await, 201).await;
    let started = std::time::Instant::now();
    let response = app.sign_in(&username, "the first guess").await;
    let hashed = started.elapsed();
    assert_problem(response, 401, "invalid_credentials").await;

    let started = std::time::Instant::now();
    for guess in 0..10 {
        let response = app.sign_in(&username, &format!("guess {guess}")).await;
        assert_eq!(response.status(), 429, "guess {guess}");
    }
    let refused = started.elapsed();
    assert!(
        refused < hashed,
        "ten refused attempts took {refused:?}, one hashed attempt {hashed:?}"
    );
}

/// `limits.admin_failures_per_minute_per_ip`: wrong admin tokens past it get 429, and while
/// the address is limited not even the right token is compared; other addresses are not
/// affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_past_the_per_address_limit_get_429() {
    const LIMIT: usize = 3;
    let app = spawn_app_with(|s| s.limits.admin_failures_per_minute_per_ip = LIMIT as u32).await;
    let stats = |client: &reqwest::Client, token: &str| {
        client
            .get(app.url("/api/v1/admin/stats"))
            .bearer_auth(token)
            .send()
    };
    let guesser = app.client_from("127.0.0.20");
    for guess in 0..LIMIT {
        let response = stats(&guesser, &format!("guess-{guess}")).await.unwrap();
        assert_problem(response, 401, "unauthenticated").await;
    }
    let response = stats(&guesser, "one-guess-too-many").await.unwrap();
    assert_rate_limited(response, "a wrong admin token past the limit").await;
    let response = stats(&guesser, &app.admin_token).await.unwrap();
    assert_rate_limited(response, "the right admin token from a limited address").await;

    let operator = app.client_from("127.0.0.21");
    assert_json(stats(&operator, &app.admin_token).await.unwrap(), 200).await;

    app.advance(Duration::from_secs(60));
    assert_json(stats(&guesser, &app.admin_token).await.unwrap(), 200).await;
}

/// Two `Authorization` or two `X-Queue-Token` headers are not one credential: the request is
/// refused as if the header were malformed, rather than answered for the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_credential_header_is_refused() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (buyer, queue) = app.admitted_buyer().await;
    let other = app.new_buyer().await;

    for second in [buyer.token.clone(), other.token.clone(), "garbage".into()] {
        let response = app
            .get("/api/v1/users/me")
            .bearer_auth(&buyer.token)
            .bearer_auth(&second)
            .send()
            .await
            .unwrap();
        assert_problem_for(response, 401, "unauthenticated", "two Authorization").await;
    }
    let response = app
        .get(&format!("/api/v1/dates/{date}/seats"))
        .session(&buyer)
        .queue(&queue)
        .queue(&queue)
        .send()
        .await
        .unwrap();
    assert_problem_for(response, 401, "queue_token_invalid", "two X-Queue-Token").await;
    let response = app
        .get("/api/v1/admin/stats")
        .bearer_auth(&app.admin_token)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_problem_for(response, 401, "unauthenticated", "two admin tokens").await;

    // One of each still works.
    assert_json(app.seats_response(&buyer, &queue, &date).await, 200).await;
}
