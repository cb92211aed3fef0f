//! The prepaid balance and payments: every charge lands once, idempotent retries apply once,
//! bad amounts change nothing, and a payment is all or nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

/// Checks the history is a consistent chain, newest first: each entry's `balance_after` is the
/// previous balance plus (charge, refund) or minus (payment) its positive `amount`.
fn assert_history_chain(entries: &[Value], final_balance: u64) {
    let mut balance = final_balance as i128;
    for entry in entries {
        assert_eq!(
            entry["balance_after"],
            json!(balance as u64),
            "balance_after breaks the chain at {entry}"
        );
        let amount = u64_field(entry, "amount") as i128;
        assert!(amount > 0, "history amounts are positive: {entry}");
        balance -= match entry["kind"].as_str() {
            Some("charge" | "refund") => amount,
            Some("payment") => -amount,
            _ => panic!("unknown kind in {entry}"),
        };
    }
    assert_eq!(balance, 0, "the oldest entry starts from a zero balance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_charges_land_exactly_once_each() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let barrier = Arc::new(Barrier::new(100));
    let charges = (1..=100u64).map(|amount| {
        let request = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .json(&json!({ "amount": amount }));
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let response = request.send().await.expect("a charge gets an answer");
            (amount, assert_json(response, 201).await)
        })
    });
    let results: Vec<(u64, Value)> = join_all(charges)
        .await
        .into_iter()
        .map(|r| r.expect("no charge task panicked"))
        .collect();

    let total: u64 = (1..=100).sum();
    let mut charge_ids = BTreeSet::new();
    let mut balances_after = BTreeSet::new();
    for (amount, body) in &results {
        assert_eq!(body["amount"], json!(amount), "{body}");
        assert!(
            charge_ids.insert(string_field(body, "charge_id")),
            "duplicate charge_id: {body}"
        );
        let balance = u64_field(body, "balance");
        assert!(
            balance >= *amount && balance <= total,
            "balance right after a charge: {body}"
        );
        assert!(
            balances_after.insert(balance),
            "two charges report the same balance: {body}"
        );
    }
    assert!(
        balances_after.contains(&total),
        "the last charge sees the total"
    );
    assert_eq!(app.balance(&buyer).await, total);

    let history = app.history(&buyer).await;
    assert_eq!(history.len(), 100);
    assert!(history.iter().all(|e| e["kind"] == "charge"));
    let references: BTreeSet<String> = history
        .iter()
        .map(|e| string_field(e, "reference"))
        .collect();
    assert_eq!(references, charge_ids, "one entry per charge, by charge_id");
    let amounts: BTreeSet<u64> = history.iter().map(|e| u64_field(e, "amount")).collect();
    assert_eq!(amounts, (1..=100).collect());
    assert_history_chain(&history, total);
    // Each charge's reported balance is the balance_after of its own entry.
    for (_, body) in &results {
        let entry = history
            .iter()
            .find(|e| e["reference"] == body["charge_id"])
            .expect("every charge has its entry");
        assert_eq!(entry["balance_after"], body["balance"], "{entry} vs {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_charge_retry_applies_once() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let charge = |key, amount| app.keyed_charge(&buyer, key, amount);

    let first = assert_json(charge("top-up-1", 700).await, 201).await;
    let retry = assert_json(charge("top-up-1", 700).await, 201).await;
    assert_eq!(retry, first, "the retry gets the original response");
    assert_eq!(app.balance(&buyer).await, 700);
    assert_eq!(app.history(&buyer).await.len(), 1);

    // The same body written differently is the same request.
    let respaced = app
        .post("/api/v1/balance/charges")
        .session(&buyer)
        .idempotency_key("top-up-1")
        .raw_json("{ \"amount\" :\n 700 }")
        .send()
        .await
        .unwrap();
    assert_eq!(assert_json(respaced, 201).await, first);

    // The same key with another body: 422, nothing applied.
    assert_problem(charge("top-up-1", 800).await, 422, "idempotency_key_reused").await;
    assert_eq!(app.balance(&buyer).await, 700);

    // Another key is another charge.
    let second = assert_json(charge("top-up-2", 700).await, 201).await;
    assert_ne!(second["charge_id"], first["charge_id"]);
    assert_eq!(second["balance"], json!(1_400));

    // Keys are per user: another user's identical key is their own charge.
    let other = app.new_buyer().await;
    let theirs = app
        .post("/api/v1/balance/charges")
        .session(&other)
        .idempotency_key("top-up-1")
        .json(&json!({ "amount": 800 }))
        .send()
        .await
        .unwrap();
    let theirs = assert_json(theirs, 201).await;
    assert_ne!(theirs["charge_id"], first["charge_id"]);
    assert_eq!(theirs["balance"], json!(800));
    assert_eq!(app.balance(&buyer).await, 1_400);
    assert_eq!(app.balance(&other).await, 800);
}

/// The line of `/metrics` with the records of `kind` held in memory.
async fn records_in_memory(app: &TestApp, kind: &str) -> String {
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!(r#"boxoffice_records{{kind="{kind}"}}"#);
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .expect("the records gauge")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_left_memory_still_replays_from_the_store() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let charge = |key, amount| app.keyed_charge(&buyer, key, amount);
    let first = assert_json(charge("early", 700).await, 201).await;
    app.advance(std::time::Duration::from_millis(
        boxoffice::domain::idempotency::RECENT_MS as u64 + 1_000,
    ));
    // A history read waits for the history database to hold every acknowledged change, so the
    // record of "early" is stored after it; the next keyed change lets go of stored records.
    assert_eq!(app.history(&buyer).await.len(), 1);
    assert_json(charge("late", 100).await, 201).await;
    assert_eq!(
        records_in_memory(&app, "idempotency_keys").await,
        r#"boxoffice_records{kind="idempotency_keys"} 1"#,
        "only the recent key is in memory"
    );

    let retry = assert_json(charge("early", 700).await, 201).await;
    assert_eq!(retry, first, "the store answers as the book did");
    assert_problem(charge("early", 800).await, 422, "idempotency_key_reused").await;
    assert_eq!(app.balance(&buyer).await, 800);
    assert_eq!(app.history(&buyer).await.len(), 2);
}

/// Sessions outlive the day a key is remembered in these tests.
fn with_long_sessions(settings: &mut boxoffice::config::Settings) {
    settings.auth.session_ttl_seconds = 3 * 86_400;
}

fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.try_into().expect("a duration ahead"))
}

/// API.md: a key is remembered 24 hours. Up to the last millisecond a retry replays; from then
/// on the key is free, and what it does next is what it answers, from memory and from the
/// store alike (the old record's row may not be forgotten yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_remembered_for_a_day_then_free_for_a_new_request() {
    use boxoffice::domain::idempotency::{KEY_TTL_MS, RECENT_MS};
    let app = spawn_app_with(with_long_sessions).await;
    let buyer = app.new_buyer().await;
    let charge = |key, amount| app.keyed_charge(&buyer, key, amount);
    let first = assert_json(charge("daily", 700).await, 201).await;

    app.advance(millis(KEY_TTL_MS - 1));
    let retry = assert_json(charge("daily", 700).await, 201).await;
    assert_eq!(retry, first, "a retry in the last millisecond of the day");
    assert_problem(charge("daily", 800).await, 422, "idempotency_key_reused").await;

    app.advance(millis(1));
    let second = assert_json(charge("daily", 800).await, 201).await;
    assert_ne!(second["charge_id"], first["charge_id"]);
    assert_eq!(second["balance"], json!(1_500));
    assert_eq!(assert_json(charge("daily", 800).await, 201).await, second);

    // Once the new record has left memory, the store answers for it, not for the old one.
    app.advance(millis(RECENT_MS + 1_000));
    assert_eq!(app.history(&buyer).await.len(), 2);
    assert_json(charge("settles", 100).await, 201).await;
    let from_the_store = assert_json(charge("daily", 800).await, 201).await;
    assert_eq!(
        from_the_store, second,
        "the store answers with the new record"
    );
    assert_problem(charge("daily", 700).await, 422, "idempotency_key_reused").await;
    assert_eq!(app.balance(&buyer).await, 1_600);
}

/// A key whose record is only on disk (it left memory a minute after its request) still
/// replays after a restart, until its day is out, and not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_only_on_disk_replays_after_a_restart_until_its_day_is_out() {
    use boxoffice::domain::idempotency::{KEY_TTL_MS, RECENT_MS};
    let app = spawn_app_with(with_long_sessions).await;
    let buyer = app.new_buyer().await;
    let recorded_at = app.now_ms();
    let first = assert_json(app.keyed_charge(&buyer, "early", 700).await, 201).await;
    app.advance(millis(RECENT_MS + 1_000));
    assert_eq!(app.history(&buyer).await.len(), 1);
    assert_json(app.keyed_charge(&buyer, "late", 100).await, 201).await;
    assert_eq!(
        records_in_memory(&app, "idempotency_keys").await,
        r#"boxoffice_records{kind="idempotency_keys"} 1"#,
        "only the recent key is in memory"
    );

    let app = app.restarted().await;
    let session = assert_json(app.sign_in(&buyer.username, PASSWORD).await, 201).await;
    let buyer = Buyer {
        token: string_field(&session, "session_token"),
        ..buyer
    };
    app.advance(millis(recorded_at + KEY_TTL_MS - 1 - app.now_ms()));
    let retry = assert_json(app.keyed_charge(&buyer, "early", 700).await, 201).await;
    assert_eq!(retry, first, "the restarted server replays the key");
    assert_problem(
        app.keyed_charge(&buyer, "early", 800).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.balance(&buyer).await, 800);

    app.advance(millis(1));
    let again = assert_json(app.keyed_charge(&buyer, "early", 800).await, 201).await;
    assert_eq!(again["balance"], json!(1_600), "the key was free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_idempotency_key_apply_once() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let barrier = Arc::new(Barrier::new(30));
    let requests = (0..30).map(|_| {
        let request = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .idempotency_key("the-one-key")
            .json(&json!({ "amount": 1_234 }));
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            assert_json(request.send().await.unwrap(), 201).await
        })
    });
    let answers: Vec<Value> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("no task panicked"))
        .collect();
    for answer in &answers {
        assert_eq!(answer, &answers[0], "every answer is the original");
    }
    assert_eq!(answers[0]["balance"], json!(1_234));
    assert_eq!(app.balance(&buyer).await, 1_234);
    assert_eq!(app.history(&buyer).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_amounts_are_refused_and_the_balance_is_untouched() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let max_charge = app.settings.balance.max_charge;
    let above_max = format!("{{\"amount\": {}}}", max_charge + 1);
    let cases: Vec<(&str, u16, &str)> = vec![
        (r#"{"amount": 0}"#, 422, "invalid_amount"),
        (r#"{"amount": -1}"#, 422, "invalid_amount"),
        (&above_max, 422, "invalid_amount"),
        (r#"{"amount": 18446744073709551616}"#, 422, "invalid_amount"),
        (
            r#"{"amount": -18446744073709551616}"#,
            422,
            "invalid_amount",
        ),
        (r#"{"amount": 9007199254740993}"#, 422, "invalid_amount"),
        (
            r#"{"amount": 100000000000000000000000000000000000000000}"#,
            422,
            "invalid_amount",
        ),
        (r#"{"amount": 1.5}"#, 400, "malformed_request"),
        (r#"{"amount": "10"}"#, 400, "malformed_request"),
        (r#"{"amount": null}"#, 400, "malformed_request"),
        (r#"{"amount": true}"#, 400, "malformed_request"),
        (r#"{"amount": [10]}"#, 400, "malformed_request"),
        (r#"{"amount": {"value": 10}}"#, 400, "malformed_request"),
        (r#"{}"#, 400, "malformed_request"),
        (r#"{"amonut": 10}"#, 400, "malformed_request"),
        (r#"10"#, 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let response = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .raw_json(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_problem_for(response, status, code, &format!("with body {body}")).await;
    }
    assert_eq!(app.balance(&buyer).await, 0);
    assert!(app.history(&buyer).await.is_empty());
    // The largest single charge is fine.
    app.charge_ok(&buyer, max_charge).await;
    assert_eq!(app.balance(&buyer).await, max_charge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_past_max_balance_is_refused() {
    let app = spawn_app_with(|s| {
        s.balance.max_charge = 600;
        s.balance.max_balance = 1_000;
    })
    .await;
    let buyer = app.new_buyer().await;
    app.charge_ok(&buyer, 600).await;
    assert_problem(app.charge(&buyer, 401).await, 422, "balance_limit").await;
    assert_eq!(app.balance(&buyer).await, 600);
    let full = app.charge_ok(&buyer, 400).await;
    assert_eq!(
        full["balance"],
        json!(1_000),
        "exactly max_balance is allowed"
    );
    assert_problem(app.charge(&buyer, 1).await, 422, "balance_limit").await;
    assert_problem(app.charge(&buyer, 601).await, 422, "invalid_amount").await;
    assert_eq!(app.balance(&buyer).await, 1_000);
    assert_eq!(app.history(&buyer).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_balance_is_402_and_the_hold_survives() {
    const PRICE: u64 = 30_000;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[2, 4]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&buyer, 2 * PRICE - 1).await;

    assert_problem(
        app.pay(&buyer, &queue_token, &reservation).await,
        402,
        "insufficient_balance",
    )
    .await;

    // Nothing moved: still held, the seats still held, balance and admission untouched.
    let after = assert_json(app.reservation(&buyer, &reservation).await, 200).await;
    for field in ["status", "seat_nos", "price", "expires_at"] {
        assert_eq!(after[field], held[field], "{field}");
    }
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    assert_eq!((&*statuses[&2], &*statuses[&4]), ("held", "held"));
    assert_eq!(app.balance(&buyer).await, 2 * PRICE - 1);
    assert_eq!(app.history(&buyer).await.len(), 1);
    let polled = assert_json(app.poll_queue(&buyer, &queue_token).await, 200).await;
    assert_eq!(polled["status"], "active");

    // Top up by one won and pay.
    app.charge_ok(&buyer, 1).await;
    let paid = assert_json(app.pay(&buyer, &queue_token, &reservation).await, 201).await;
    assert_eq!(paid["amount"], json!(2 * PRICE));
    assert_eq!(paid["balance"], json!(0));
    assert_eq!(app.balance(&buyer).await, 0);
    assert_eq!(app.reservation_status(&buyer, &reservation).await, "paid");
    let history = app.history(&buyer).await;
    assert_history_chain(&history, 0);
    assert_eq!(history[0]["kind"], "payment");
    assert_eq!(history[0]["reference"], json!(reservation));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_payment_retry_returns_the_same_payment() {
    const PRICE: u64 = 12_000;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&buyer, 3 * PRICE).await;
    let pay = |key: &str, reservation: &str| {
        app.post("/api/v1/payments")
            .session(&buyer)
            .queue(&queue_token)
            .idempotency_key(key)
            .json(&json!({ "reservation_id": reservation }))
            .send()
    };

    let first = assert_json(pay("pay-1", &reservation).await.unwrap(), 201).await;
    // The payment expired the queue token, yet the retry gets the original answer.
    let retry = assert_json(pay("pay-1", &reservation).await.unwrap(), 201).await;
    assert_eq!(retry, first);
    assert_eq!(app.balance(&buyer).await, 2 * PRICE);
    let payments = app
        .history(&buyer)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "payment")
        .count();
    assert_eq!(payments, 1, "paid once");

    // Without the key it is a new request, and the token has expired.
    assert_problem(
        app.pay(&buyer, &queue_token, &reservation).await,
        403,
        "queue_token_expired",
    )
    .await;

    // The same key with another body: 422.
    assert_problem(
        pay("pay-1", "r_1_2").await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;

    // With a fresh admission, paying again is 409 already_paid and costs nothing.
    let reissued = assert_json(app.poll_queue(&buyer, &queue_token).await, 200).await;
    assert_eq!(reissued["reissued"], json!(true));
    let fresh = string_field(&reissued, "queue_token");
    app.wait_until_active(&buyer, &fresh).await;
    assert_problem(
        app.pay(&buyer, &fresh, &reservation).await,
        409,
        "already_paid",
    )
    .await;
    assert_eq!(app.balance(&buyer).await, 2 * PRICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_reservations_leave_memory_and_answer_from_the_store() {
    const PRICE: u64 = 7_000;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let paid = string_field(
        &app.hold_ok(&buyer, &queue_token, &date, &[1]).await,
        "reservation_id",
    );
    let cancelled = string_field(
        &app.hold_ok(&buyer, &queue_token, &date, &[2]).await,
        "reservation_id",
    );
    let held = string_field(
        &app.hold_ok(&buyer, &queue_token, &date, &[3]).await,
        "reservation_id",
    );
    assert_eq!(
        records_in_memory(&app, "reservations").await,
        r#"boxoffice_records{kind="reservations"} 3"#
    );
    let cancel = app
        .delete(&format!("/api/v1/reservations/{cancelled}"))
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 204);
    app.charge_ok(&buyer, PRICE).await;
    assert_json(app.pay(&buyer, &queue_token, &paid).await, 201).await;
    assert_eq!(
        records_in_memory(&app, "reservations").await,
        r#"boxoffice_records{kind="reservations"} 2"#,
        "the live hold and the paid one (for refunds and transfers) stay in memory"
    );

    // Each one still answers every verb as before, the cancelled one from the store.
    assert_eq!(app.reservation_status(&buyer, &paid).await, "paid");
    assert_eq!(
        app.reservation_status(&buyer, &cancelled).await,
        "cancelled"
    );
    assert_eq!(app.reservation_status(&buyer, &held).await, "held");
    let listed = assert_json(
        app.get("/api/v1/reservations")
            .session(&buyer)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let listed: Vec<(String, String)> = listed["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (string_field(r, "reservation_id"), string_field(r, "status")))
        .collect();
    assert_eq!(
        listed,
        vec![
            (held.clone(), "held".to_owned()),
            (cancelled.clone(), "cancelled".to_owned()),
            (paid.clone(), "paid".to_owned()),
        ],
        "newest first"
    );
    let (other, other_token) = app.admitted_buyer().await;
    for (reservation, code) in [
        (&paid, "already_paid"),
        (&cancelled, "reservation_not_held"),
    ] {
        let again = app
            .delete(&format!("/api/v1/reservations/{reservation}"))
            .session(&buyer)
            .send()
            .await
            .unwrap();
        assert_problem(again, 409, "reservation_not_held").await;
        // The payment ended the buyer's token: take another (or the one taken last round).
        let fresh: Value = app.take_queue_token(&buyer).await.json().await.unwrap();
        let fresh = string_field(&fresh, "queue_token");
        app.wait_until_active(&buyer, &fresh).await;
        assert_problem(app.pay(&buyer, &fresh, reservation).await, 409, code).await;
        // Another user's ended reservation does not exist for them, whatever the verb.
        assert_problem(app.reservation(&other, reservation).await, 404, "not_found").await;
        assert_problem(
            app.pay(&other, &other_token, reservation).await,
            404,
            "not_found",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_of_one_hold_debit_once() {
    const PRICE: u64 = 5_000;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[3]).await;
    let reservation = string_field(&held, "reservation_id");
    app.charge_ok(&buyer, 10 * PRICE).await;

    let barrier = Arc::new(Barrier::new(20));
    let attempts = (0..20).map(|_| {
        let request = app
            .post("/api/v1/payments")
            .session(&buyer)
            .queue(&queue_token)
            .json(&json!({ "reservation_id": reservation }));
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    });
    let outcomes: Vec<(u16, Value)> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let successes = outcomes.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(successes, 1, "{outcomes:?}");
    for (status, body) in &outcomes {
        match status {
            201 => assert_eq!(body["balance"], json!(9 * PRICE)),
            409 => assert_eq!(body["code"], "already_paid", "{body}"),
            403 => assert_eq!(body["code"], "queue_token_expired", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(app.balance(&buyer).await, 9 * PRICE);
    assert_eq!(app.history(&buyer).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_hold_retry_returns_the_same_reservation() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(6, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let hold = |key: &str, seats: &[u64]| {
        app.post("/api/v1/reservations")
            .session(&buyer)
            .queue(&queue_token)
            .idempotency_key(key)
            .json(&json!({"date_id": date, "seat_nos": seats}))
            .send()
    };
    let first = assert_json(hold("hold-1", &[1, 2]).await.unwrap(), 201).await;
    let retry = assert_json(hold("hold-1", &[1, 2]).await.unwrap(), 201).await;
    assert_eq!(retry, first);
    assert_problem(
        hold("hold-1", &[3]).await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;
    let list = app
        .get("/api/v1/reservations")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    let list = assert_json(list, 200).await;
    assert_eq!(
        list["reservations"].as_array().unwrap().len(),
        1,
        "held once: {list}"
    );
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    let held: Vec<u64> = statuses
        .iter()
        .filter(|(_, s)| *s == "held")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(held, vec![1, 2]);

    // Once the hold has ended, a retry still gets the answer the hold first had.
    let reservation = string_field(&first, "reservation_id");
    let cancelled = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    let after_cancel = assert_json(hold("hold-1", &[1, 2]).await.unwrap(), 201).await;
    assert_eq!(after_cancel, first);
    assert_eq!(first["status"], "held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_seats_do_not_count_toward_the_hold_limit_and_cannot_be_cancelled() {
    const PRICE: u64 = 1_000;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 8 * PRICE).await;
    let held = app
        .hold_ok(&buyer, &queue_token, &date, &[1, 2, 3, 4])
        .await;
    let reservation = string_field(&held, "reservation_id");
    assert_json(app.pay(&buyer, &queue_token, &reservation).await, 201).await;

    let cancel = app
        .delete(&format!("/api/v1/reservations/{reservation}"))
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_problem(cancel, 409, "reservation_not_held").await;

    let reissued = assert_json(app.poll_queue(&buyer, &queue_token).await, 200).await;
    assert_eq!(reissued["reissued"], json!(true));
    let fresh = string_field(&reissued, "queue_token");
    app.wait_until_active(&buyer, &fresh).await;
    assert_problem(
        app.hold(&buyer, &fresh, &date, &[2]).await,
        409,
        "seat_unavailable",
    )
    .await;
    app.hold_ok(&buyer, &fresh, &date, &[5, 6, 7, 8]).await;
    let statuses = app.seat_statuses(&buyer, &fresh, &date).await;
    for seat in 1..=10u64 {
        let expected = match seat {
            1..=4 => "sold",
            5..=8 => "held",
            _ => "available",
        };
        assert_eq!(statuses[&seat], expected, "seat {seat}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_charges_never_push_the_balance_past_max_balance() {
    let app = spawn_app_with(|s| {
        s.balance.max_charge = 100;
        s.balance.max_balance = 1_000;
    })
    .await;
    let buyer = app.new_buyer().await;
    let barrier = Arc::new(Barrier::new(25));
    let charges = (0..25).map(|_| {
        let request = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .json(&json!({ "amount": 100 }));
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    });
    let outcomes: Vec<(u16, Value)> = join_all(charges)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let accepted = outcomes.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(accepted, 10, "{outcomes:?}");
    for (status, body) in &outcomes {
        if *status != 201 {
            assert_eq!(*status, 422, "{body}");
            assert_eq!(body["code"], "balance_limit", "{body}");
        }
    }
    assert_eq!(app.balance(&buyer).await, 1_000);
    let history = app.history(&buyer).await;
    assert_eq!(history.len(), 10);
    assert_history_chain(&history, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_payment_never_both_succeed() {
    const BUYERS: usize = 12;
    const PRICE: u64 = 700;
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(BUYERS as u64, PRICE).await;
    let mut buyers = Vec::new();
    for seat in 1..=BUYERS as u64 {
        let (buyer, queue_token) = app.admitted_buyer().await;
        let held = app.hold_ok(&buyer, &queue_token, &date, &[seat]).await;
        app.charge_ok(&buyer, PRICE).await;
        buyers.push((
            buyer,
            queue_token,
            string_field(&held, "reservation_id"),
            seat,
        ));
    }
    let barrier = Arc::new(Barrier::new(2 * BUYERS));
    let mut races = Vec::new();
    for (buyer, queue_token, reservation, _) in &buyers {
        let pay = app
            .post("/api/v1/payments")
            .session(buyer)
            .queue(queue_token)
            .json(&json!({ "reservation_id": reservation }));
        let cancel = app
            .delete(&format!("/api/v1/reservations/{reservation}"))
            .session(buyer);
        let (b1, b2) = (barrier.clone(), barrier.clone());
        races.push((
            tokio::spawn(async move {
                b1.wait().await;
                let response = pay.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            }),
            tokio::spawn(async move {
                b2.wait().await;
                let response = cancel.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            }),
        ));
    }
    let (viewer, viewer_q) = app.admitted_buyer().await;
    let mut outcomes = Vec::new();
    for (pay, cancel) in races {
        outcomes.push((pay.await.unwrap(), cancel.await.unwrap()));
    }
    let statuses = app.seat_statuses(&viewer, &viewer_q, &date).await;
    for ((buyer, _, reservation, seat), ((pay, pay_body), (cancel, cancel_body))) in
        buyers.iter().zip(outcomes)
    {
        let status = app.reservation_status(buyer, reservation).await;
        let balance = app.balance(buyer).await;
        match (pay, cancel) {
            (201, 409) => {
                assert!(
                    cancel_body.contains("reservation_not_held"),
                    "{cancel_body}"
                );
                assert_eq!(status, "paid");
                assert_eq!(balance, 0);
                assert_eq!(statuses[seat], "sold");
            }
            (409, 204) => {
                assert!(pay_body.contains("reservation_not_held"), "{pay_body}");
                assert_eq!(status, "cancelled");
                assert_eq!(balance, PRICE);
                assert_eq!(statuses[seat], "available");
            }
            other => {
                panic!("seat {seat}: pay and cancel answered {other:?}: {pay_body} / {cancel_body}")
            }
        }
    }
}
