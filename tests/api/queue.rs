//! The waiting room: FIFO admission, never more than `max_active`, exact positions.
//!
//! Admission runs on a real 20 ms tick that reads the manual clock, so the tests move the clock
//! and then poll (bounded) for what must follow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

const MAX_ACTIVE: usize = 2;

async fn metered_app(max_active: u32) -> TestApp {
    spawn_app_with(|s| {
        s.queue.max_active = max_active;
        s.queue.admit_per_second = 1;
    })
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Active,
    Waiting(u64),
}

struct InLine {
    name: &'static str,
    buyer: Buyer,
    token: String,
}

/// Polls every live token once and returns its standing, checking the status shape.
async fn standings(app: &TestApp, line: &[&InLine]) -> Vec<Standing> {
    let mut out = Vec::with_capacity(line.len());
    for who in line {
        let status = assert_json(app.poll_queue(&who.buyer, &who.token).await, 200).await;
        assert_eq!(
            status["queue_token"],
            json!(who.token),
            "{}: {status}",
            who.name
        );
        assert_eq!(status["reissued"], json!(false), "{}: {status}", who.name);
        let standing = match status["status"].as_str() {
            Some("active") => {
                assert_eq!(status["position"], json!(0), "{}: {status}", who.name);
                Standing::Active
            }
            Some("waiting") => {
                let position = u64_field(&status, "position");
                assert!(position >= 1, "{}: {status}", who.name);
                assert!(
                    u64_field(&status, "estimated_wait_seconds") >= 1,
                    "{}: a waiter has some wait ahead: {status}",
                    who.name
                );
                Standing::Waiting(position)
            }
            _ => panic!("{}: bad status {status}", who.name),
        };
        out.push(standing);
    }
    let active = out.iter().filter(|s| **s == Standing::Active).count();
    assert!(
        active <= MAX_ACTIVE,
        "{active} active tokens, more than max_active {MAX_ACTIVE}: {out:?}"
    );
    out
}

/// Asserts the exact standing of everyone in line (and so that `max_active` holds).
async fn expect_line(app: &TestApp, line: &[&InLine], expected: &[Standing]) {
    let actual = standings(app, line).await;
    let names: Vec<_> = line.iter().map(|w| w.name).collect();
    assert_eq!(actual, expected, "standings of {names:?}");
}

/// Waits (bounded) until `who` is admitted, checking `max_active` on every round.
async fn wait_admitted(app: &TestApp, who: &InLine, line: &[&InLine]) {
    eventually(&format!("{} to be admitted", who.name), || async {
        standings(app, line).await;
        let status = assert_json(app.poll_queue(&who.buyer, &who.token).await, 200).await;
        (status["status"] == "active").then_some(())
    })
    .await;
}

async fn expect_counts(app: &TestApp, active: usize, waiting: usize) {
    let stats = eventually("admin stats to show the queue", || async {
        let stats = app.stats().await;
        (stats["queue_active"] == json!(active) && stats["queue_waiting"] == json!(waiting))
            .then_some(stats)
    })
    .await;
    assert!(stats["queue_active"].as_u64().unwrap() <= MAX_ACTIVE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_admitted_in_fifo_order_never_past_max_active_with_exact_positions() {
    use Standing::{Active, Waiting};
    let app = metered_app(MAX_ACTIVE as u32).await;
    let (_, date) = app.concert_with_date(10, 1_000).await;
    let start = app.now_ms();
    let waiting_ttl_ms = app.settings.queue.waiting_ttl_seconds as i64 * 1000;

    // Six buyers take tokens in order. One second of admission credit admits the first only.
    let names = ["b1", "b2", "b3", "b4", "b5", "b6"];
    let mut line = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let buyer = app.new_buyer().await;
        let status = assert_json(app.take_queue_token(&buyer).await, 201).await;
        assert_eq!(status["reissued"], json!(false));
        u64_field(&status, "poll_after_seconds");
        if i == 0 {
            assert_eq!(status["status"], "active", "{status}");
            assert_eq!(status["position"], json!(0), "{status}");
        } else {
            assert_eq!(status["status"], "waiting", "{name}: {status}");
            assert_eq!(status["position"], json!(i), "{name}: {status}");
            assert!(u64_field(&status, "estimated_wait_seconds") >= 1);
            assert_time_near(
                &status["expires_at"],
                start + waiting_ttl_ms,
                1_000,
                "a waiting token's expires_at",
            );
        }
        line.push(InLine {
            name,
            token: string_field(&status, "queue_token"),
            buyer,
        });
    }
    let [b1, b2, b3, b4, b5, b6] = &line[..] else {
        unreachable!()
    };

    expect_line(
        &app,
        &[b1, b2, b3, b4, b5, b6],
        &[
            Active,
            Waiting(1),
            Waiting(2),
            Waiting(3),
            Waiting(4),
            Waiting(5),
        ],
    )
    .await;
    expect_counts(&app, 1, 5).await;

    // A waiting token cannot hold, list seats or pay.
    assert_problem(
        app.hold(&b2.buyer, &b2.token, &date, &[1]).await,
        403,
        "not_admitted",
    )
    .await;
    assert_problem(
        app.seats_response(&b2.buyer, &b2.token, &date).await,
        403,
        "not_admitted",
    )
    .await;
    assert_problem(
        app.pay(&b2.buyer, &b2.token, "r_1_1").await,
        403,
        "not_admitted",
    )
    .await;

    // One second later, the head of the line (b2) is admitted, and only it.
    app.advance(Duration::from_secs(1));
    wait_admitted(&app, b2, &[b1, b2, b3, b4, b5, b6]).await;
    expect_line(
        &app,
        &[b1, b2, b3, b4, b5, b6],
        &[
            Active,
            Active,
            Waiting(1),
            Waiting(2),
            Waiting(3),
            Waiting(4),
        ],
    )
    .await;
    expect_counts(&app, 2, 4).await;

    // Another second of credit, but max_active is reached: nobody else gets in. Repeat POSTs
    // (which count as polls) and several rounds of polling must not change that.
    app.advance(Duration::from_secs(1));
    for _ in 0..5 {
        let again = assert_json(app.take_queue_token(&b3.buyer).await, 200).await;
        assert_eq!(again["queue_token"], json!(b3.token));
        assert_eq!(again["status"], "waiting");
        assert_eq!(again["position"], json!(1));
        expect_line(
            &app,
            &[b1, b2, b3, b4, b5, b6],
            &[
                Active,
                Active,
                Waiting(1),
                Waiting(2),
                Waiting(3),
                Waiting(4),
            ],
        )
        .await;
    }

    // b1 pays: its token expires and frees a place for b3, the next in line.
    app.charge_ok(&b1.buyer, 1_000).await;
    let held = app.hold_ok(&b1.buyer, &b1.token, &date, &[1]).await;
    let paid = app
        .pay(&b1.buyer, &b1.token, &string_field(&held, "reservation_id"))
        .await;
    assert_json(paid, 201).await;
    assert_problem(
        app.hold(&b1.buyer, &b1.token, &date, &[2]).await,
        403,
        "queue_token_expired",
    )
    .await;
    wait_admitted(&app, b3, &[b2, b3, b4, b5, b6]).await;
    expect_line(
        &app,
        &[b2, b3, b4, b5, b6],
        &[Active, Active, Waiting(1), Waiting(2), Waiting(3)],
    )
    .await;
    expect_counts(&app, 2, 3).await;

    // b4 leaves the line: everyone behind moves up by one; its token is now unknown.
    let left = app
        .delete("/api/v1/queue/tokens/current")
        .session(&b4.buyer)
        .queue(&b4.token)
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    expect_line(
        &app,
        &[b2, b3, b5, b6],
        &[Active, Active, Waiting(1), Waiting(2)],
    )
    .await;
    assert_problem(
        app.poll_queue(&b4.buyer, &b4.token).await,
        401,
        "queue_token_invalid",
    )
    .await;
    assert_problem(
        app.hold(&b4.buyer, &b4.token, &date, &[3]).await,
        401,
        "queue_token_invalid",
    )
    .await;
    expect_counts(&app, 2, 2).await;

    // b5, still waiting, cannot hold; the queue is checked before the request itself.
    assert_problem(
        app.hold(&b5.buyer, &b5.token, &date, &[3]).await,
        403,
        "not_admitted",
    )
    .await;
    let bad_hold = app
        .post("/api/v1/reservations")
        .session(&b5.buyer)
        .queue(&b5.token)
        .json(&json!({"date_id": date, "seat_no": 0}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_hold, 403, "not_admitted").await;
    let bad_hold = app
        .post("/api/v1/reservations")
        .session(&b1.buyer)
        .queue(&b1.token)
        .json(&json!({"date_id": date, "seat_nos": []}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_hold, 403, "queue_token_expired").await;

    // A second later b2 leaves while active: b5 (not b6) is admitted.
    app.advance(Duration::from_secs(1));
    let left = app
        .delete("/api/v1/queue/tokens/current")
        .session(&b2.buyer)
        .queue(&b2.token)
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    wait_admitted(&app, b5, &[b3, b5, b6]).await;
    expect_line(&app, &[b3, b5, b6], &[Active, Active, Waiting(1)]).await;
    expect_counts(&app, 2, 1).await;

    // b5, now admitted, holds.
    app.hold_ok(&b5.buyer, &b5.token, &date, &[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_metered_per_second() {
    let app = spawn_app_with(|s| {
        s.queue.max_active = 100;
        s.queue.admit_per_second = 2;
    })
    .await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        let buyer = app.new_buyer().await;
        let status = assert_json(app.take_queue_token(&buyer).await, 201).await;
        tokens.push((buyer, string_field(&status, "queue_token"), status));
    }
    let active_now = |tokens: &[(Buyer, String, Value)]| {
        tokens
            .iter()
            .filter(|(_, _, s)| s["status"] == "active")
            .count()
    };
    assert_eq!(active_now(&tokens), 2, "a burst of one second's credit");

    // Half a second: one more; a full second: two more.
    app.advance(Duration::from_millis(500));
    let (buyer, token, _) = &tokens[2];
    app.wait_until_active(buyer, token).await;
    let (buyer, token, _) = &tokens[3];
    let status = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(status["status"], "waiting", "{status}");
    assert_eq!(status["position"], json!(1), "{status}");
    app.advance(Duration::from_millis(500));
    app.wait_until_active(buyer, token).await;
    let (buyer, token, _) = &tokens[5];
    let status = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(status["position"], json!(2), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_waiter_is_dropped_and_reissued_at_the_back() {
    let app = metered_app(1).await;
    let waiting_ttl = app.settings.queue.waiting_ttl_seconds;
    assert_eq!(waiting_ttl, 60, "this test assumes the default waiting TTL");

    let a = app.new_buyer().await;
    let a_status = assert_json(app.take_queue_token(&a).await, 201).await;
    assert_eq!(a_status["status"], "active");
    let b = app.new_buyer().await;
    let b_token = string_field(
        &assert_json(app.take_queue_token(&b).await, 201).await,
        "queue_token",
    );
    let c = app.new_buyer().await;
    let c_status = assert_json(app.take_queue_token(&c).await, 201).await;
    let c_token = string_field(&c_status, "queue_token");
    assert_eq!(c_status["position"], json!(2));

    // c keeps polling (a repeat POST counts as one); b says nothing.
    app.advance(Duration::from_secs(40));
    let again = assert_json(app.take_queue_token(&c).await, 200).await;
    assert_eq!(again["queue_token"], json!(c_token));
    assert_eq!(again["position"], json!(2));
    assert_time_near(
        &again["expires_at"],
        app.now_ms() + waiting_ttl as i64 * 1000,
        1_000,
        "a poll pushes a waiting token's expires_at back",
    );
    app.advance(Duration::from_secs(21));

    // b is dropped: c moves to the front.
    eventually("c to move up when b is dropped", || async {
        let status = assert_json(app.poll_queue(&c, &c_token).await, 200).await;
        assert_eq!(status["reissued"], json!(false), "{status}");
        assert_eq!(status["queue_token"], json!(c_token));
        (status["position"] == json!(1)).then_some(())
    })
    .await;

    // b presenting its dropped token gets a fresh one, at the back of the line.
    let reissued = assert_json(app.poll_queue(&b, &b_token).await, 200).await;
    assert_eq!(reissued["reissued"], json!(true), "{reissued}");
    let b_new = string_field(&reissued, "queue_token");
    assert_ne!(b_new, b_token);
    assert_eq!(reissued["status"], "waiting", "{reissued}");
    assert_eq!(reissued["position"], json!(2), "{reissued}");
    // The new token works as a token; the old one is not a live token any more.
    let polled = assert_json(app.poll_queue(&b, &b_new).await, 200).await;
    assert_eq!(polled["reissued"], json!(false));
    assert_eq!(polled["position"], json!(2));
    let c_polled = assert_json(app.poll_queue(&c, &c_token).await, 200).await;
    assert_eq!(c_polled["position"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_token_ends_after_its_ttl_and_is_reissued() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let (buyer, token) = app.admitted_buyer().await;
    app.hold_ok(&buyer, &token, &date, &[1]).await;

    app.advance(Duration::from_secs(app.settings.queue.active_ttl_seconds));
    assert_problem(
        app.hold(&buyer, &token, &date, &[2]).await,
        403,
        "queue_token_expired",
    )
    .await;
    assert_problem(
        app.seats_response(&buyer, &token, &date).await,
        403,
        "queue_token_expired",
    )
    .await;
    let reissued = assert_json(app.poll_queue(&buyer, &token).await, 200).await;
    assert_eq!(reissued["reissued"], json!(true), "{reissued}");
    let fresh = string_field(&reissued, "queue_token");
    assert_ne!(fresh, token);
    app.wait_until_active(&buyer, &fresh).await;
    app.seat_statuses(&buyer, &fresh, &date).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_token_requests_admit_exactly_max_active_and_number_the_rest() {
    const USERS: usize = 200;
    const ACTIVE: usize = 50;
    const LEAVING: usize = 10;
    let app = spawn_app_with(|s| {
        s.queue.max_active = ACTIVE as u32;
        s.queue.admit_per_second = 1_000;
    })
    .await;
    let buyers: Vec<Buyer> = {
        use futures::StreamExt;
        futures::stream::iter(0..USERS)
            .map(|_| app.new_buyer())
            .buffer_unordered(32)
            .collect()
            .await
    };

    // Everyone asks for a token at once.
    let barrier = Arc::new(Barrier::new(USERS));
    let issued = join_all(buyers.iter().map(|buyer| {
        let request = app.post("/api/v1/queue/tokens").session(buyer);
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            assert_json(request.send().await.unwrap(), 201).await
        })
    }))
    .await;
    let issued: Vec<Value> = issued.into_iter().map(|r| r.unwrap()).collect();
    let tokens: Vec<String> = issued
        .iter()
        .map(|s| string_field(s, "queue_token"))
        .collect();
    assert_eq!(
        tokens.iter().collect::<BTreeSet<_>>().len(),
        USERS,
        "distinct tokens"
    );

    // Exactly max_active are active; the others hold the places 1..=USERS-ACTIVE, each once.
    let mut by_position: BTreeMap<u64, usize> = BTreeMap::new();
    let mut active = BTreeSet::new();
    for (i, (buyer, token)) in buyers.iter().zip(&tokens).enumerate() {
        let status = assert_json(app.poll_queue(buyer, token).await, 200).await;
        match status["status"].as_str() {
            Some("active") => {
                active.insert(i);
            }
            Some("waiting") => {
                let position = u64_field(&status, "position");
                if let Some(other) = by_position.insert(position, i) {
                    panic!("position {position} given to buyers {other} and {i}");
                }
            }
            _ => panic!("bad status {status}"),
        }
    }
    assert_eq!(active.len(), ACTIVE, "exactly max_active admitted");
    assert_eq!(
        by_position.keys().copied().collect::<Vec<_>>(),
        (1..=(USERS - ACTIVE) as u64).collect::<Vec<_>>(),
        "positions are 1, 2, 3, ... with no gap or repeat"
    );
    expect_counts_exact(&app, ACTIVE, USERS - ACTIVE).await;

    // Ten active buyers leave: the first ten in line (and only they) are admitted.
    for i in active.iter().take(LEAVING) {
        let left = app
            .delete("/api/v1/queue/tokens/current")
            .session(&buyers[*i])
            .queue(&tokens[*i])
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 204);
    }
    for position in 1..=LEAVING as u64 {
        let i = by_position[&position];
        app.wait_until_active(&buyers[i], &tokens[i]).await;
    }
    for (position, i) in by_position.range(LEAVING as u64 + 1..) {
        let status = assert_json(app.poll_queue(&buyers[*i], &tokens[*i]).await, 200).await;
        assert_eq!(status["status"], "waiting", "{status}");
        assert_eq!(
            status["position"],
            json!(position - LEAVING as u64),
            "everyone moved up by {LEAVING}"
        );
    }
    expect_counts_exact(&app, ACTIVE, USERS - ACTIVE - LEAVING).await;
}

async fn expect_counts_exact(app: &TestApp, active: usize, waiting: usize) {
    eventually("admin stats to show the queue", || async {
        let stats = app.stats().await;
        (stats["queue_active"] == json!(active) && stats["queue_waiting"] == json!(waiting))
            .then_some(())
    })
    .await;
}

/// With every place taken and nobody paying, a waiter's estimate is when a place frees: the
/// p-th earliest end of an admission (and a place that frees comes round again a TTL later),
/// never the recent admission rate alone. A recent payment frees places early, and may shorten it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_estimate_counts_when_places_free_up() {
    let app = spawn_app_with(|s| {
        s.queue.max_active = 2;
        s.queue.admit_per_second = 10;
        s.queue.active_ttl_seconds = 600;
        s.queue.waiting_ttl_seconds = 3_600;
    })
    .await;
    let (_, date) = app.concert_with_date(5, 100).await;
    let eta = |status: &Value| u64_field(status, "estimated_wait_seconds");
    let take = |status: u16| {
        let app = &app;
        async move {
            let buyer = app.new_buyer().await;
            let issued = assert_json(app.take_queue_token(&buyer).await, status).await;
            (buyer, string_field(&issued, "queue_token"), issued)
        }
    };

    // Two admissions end 600 s and 700 s from the start.
    let (first, first_token, issued) = take(201).await;
    assert_eq!(issued["status"], "active", "{issued}");
    app.advance(Duration::from_secs(100));
    let (_, _, issued) = take(201).await;
    assert_eq!(issued["status"], "active", "{issued}");

    // Three wait: the first two get those places, the third the first place's next turn.
    let mut waiters = Vec::new();
    for (position, expected) in [(1, 500), (2, 600), (3, 1_100)] {
        let (buyer, token, issued) = take(201).await;
        assert_eq!(issued["status"], "waiting", "{issued}");
        assert_eq!(issued["position"], json!(position), "{issued}");
        assert_eq!(eta(&issued), expected, "position {position}: {issued}");
        waiters.push((buyer, token));
    }
    app.advance(Duration::from_secs(200));
    let (buyer, token) = &waiters[0];
    let polled = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(eta(&polled), 300, "{polled}");

    // The first buyer pays: its place goes to the head of the line at once, and the rate of
    // such early ends now shortens the next estimate.
    app.charge_ok(&first, 1_000).await;
    let held = app.hold_ok(&first, &first_token, &date, &[1]).await;
    let paid = app
        .pay(&first, &first_token, &string_field(&held, "reservation_id"))
        .await;
    assert_json(paid, 201).await;
    app.wait_until_active(buyer, token).await;
    let (buyer, token) = &waiters[1];
    let polled = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(polled["position"], json!(1), "{polled}");
    assert!((1..400).contains(&eta(&polled)), "{polled}");

    // Once that payment is out of the recent window, the next end of an admission rules again.
    app.advance(Duration::from_secs(11));
    let polled = assert_json(app.poll_queue(buyer, token).await, 200).await;
    assert_eq!(eta(&polled), 389, "{polled}");
}
