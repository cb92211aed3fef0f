//! Many buyers, few seats, all at once: no seat is ever held twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

/// Buyers prepared at once while setting up (sign-up, sign-in, queue token).
const PREPARE_CONCURRENCY: usize = 32;

async fn crowd_app() -> TestApp {
    spawn_app_with(|s| {
        s.queue.max_active = 2_000;
        s.queue.admit_per_second = 2_000;
    })
    .await
}

/// Sends one hold per buyer, all released by one barrier, and returns `(buyer index, status,
/// body)` for every answer.
async fn race(
    app: &TestApp,
    buyers: &[(Buyer, String)],
    date: &str,
    seats_of: impl Fn(usize) -> Vec<u64>,
) -> Vec<(usize, u16, Value)> {
    race_bodies(
        app,
        buyers,
        |i| json!({"date_id": date, "seat_nos": seats_of(i)}),
    )
    .await
}

/// `race` with any hold body per buyer.
async fn race_bodies(
    app: &TestApp,
    buyers: &[(Buyer, String)],
    body_of: impl Fn(usize) -> Value,
) -> Vec<(usize, u16, Value)> {
    let barrier = Arc::new(Barrier::new(buyers.len()));
    let mut tasks = Vec::with_capacity(buyers.len());
    for (i, (buyer, queue_token)) in buyers.iter().enumerate() {
        let request = app
            .post("/api/v1/reservations")
            .session(buyer)
            .queue(queue_token)
            .json(&body_of(i));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = request.send().await.expect("the hold gets an answer");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body: Value = response.json().await.expect("a JSON body");
            if status != 201 {
                assert!(
                    content_type.starts_with("application/problem+json"),
                    "{status} without problem+json: {body}"
                );
            }
            (i, status, body)
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("the racing task did not panic"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_buyers_racing_for_one_seat_get_exactly_one_hold() {
    const BUYERS: usize = 500;
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(20, 1_000).await;
    let buyers = app.admitted_buyers(BUYERS, PREPARE_CONCURRENCY).await;
    let distinct_users: BTreeSet<_> = buyers.iter().map(|(b, _)| b.user_id.clone()).collect();
    assert_eq!(distinct_users.len(), BUYERS, "every buyer is its own user");

    let results = race(&app, &buyers, &date, |_| vec![7]).await;

    let winners: Vec<_> = results.iter().filter(|(_, s, _)| *s == 201).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one hold wins: {:?}",
        winners.iter().map(|w| &w.2).collect::<Vec<_>>()
    );
    for (_, status, body) in &results {
        if *status != 201 {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(body["code"], "seat_unavailable", "{body}");
            assert_eq!(body["status"], json!(409), "{body}");
        }
    }
    let (winner, _, reservation) = winners[0];
    assert_eq!(reservation["seat_nos"], json!([7]));
    assert_eq!(reservation["status"], "held");
    assert_eq!(reservation["price"], json!(1_000));

    // The listing agrees: seat 7 held, nothing else.
    let (buyer, queue_token) = &buyers[(winner + 1) % BUYERS];
    let statuses = app.seat_statuses(buyer, queue_token, &date).await;
    for (seat, status) in &statuses {
        let expected = if *seat == 7 { "held" } else { "available" };
        assert_eq!(status, expected, "seat {seat}");
    }
    // The winner owns the reservation; a loser cannot see it.
    let id = string_field(reservation, "reservation_id");
    assert_eq!(
        app.reservation_status(&buyers[*winner].0, &id).await,
        "held"
    );
    assert_problem(app.reservation(buyer, &id).await, 404, "not_found").await;

    let stats = eventually("stats to count the hold", || async {
        let stats = app.stats().await;
        (stats["seats_held"] == json!(1)).then_some(stats)
    })
    .await;
    assert_eq!(stats["users"], json!(BUYERS), "{stats}");
    assert_eq!(stats["seats_sold"], json!(0), "{stats}");
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// 1 to `max_len` distinct seats out of `1..=seats`.
    fn seats(&mut self, seats: u64, max_len: u64) -> Vec<u64> {
        let len = 1 + self.next() % max_len.min(seats);
        let mut pool: Vec<u64> = (1..=seats).collect();
        (0..len)
            .map(|_| {
                let i = (self.next() % pool.len() as u64) as usize;
                pool.swap_remove(i)
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_buyers_racing_for_ten_seats_never_share_one() {
    const BUYERS: usize = 200;
    const SEATS: u64 = 10;
    const PRICE: u64 = 3_000;
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(SEATS, PRICE).await;
    let buyers = app.admitted_buyers(BUYERS, PREPARE_CONCURRENCY).await;

    let seed = 0x5eed_0000_0000_0001_u64;
    let mut rng = XorShift(seed);
    let wanted: Vec<Vec<u64>> = (0..BUYERS).map(|_| rng.seats(SEATS, 3)).collect();
    let results = race(&app, &buyers, &date, |i| wanted[i].clone()).await;

    let mut won: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seats_in_winning_holds = 0;
    for (i, status, body) in &results {
        match status {
            201 => {
                let seats: Vec<u64> = body["seat_nos"]
                    .as_array()
                    .expect("seat_nos")
                    .iter()
                    .map(|s| s.as_u64().expect("seat numbers are integers"))
                    .collect();
                assert_eq!(seats, wanted[*i], "the hold is the seats asked for");
                assert_eq!(body["price"], json!(PRICE * seats.len() as u64), "{body}");
                assert_eq!(body["status"], "held");
                seats_in_winning_holds += seats.len();
                for seat in seats {
                    if let Some(other) = won.insert(seat, *i) {
                        panic!("seat {seat} held by buyers {other} and {i} (seed {seed:#x})");
                    }
                }
            }
            409 => assert_eq!(body["code"], "seat_unavailable", "{body}"),
            other => panic!("unexpected {other}: {body} (seed {seed:#x})"),
        }
    }
    assert!(!won.is_empty(), "someone wins");
    assert_eq!(
        seats_in_winning_holds,
        won.len(),
        "winners' seats are all distinct"
    );

    // Every loser asked for at least one seat that a winner holds (all-or-nothing, no
    // spurious refusals).
    for (i, status, _) in &results {
        if *status == 409 {
            assert!(
                wanted[*i].iter().any(|s| won.contains_key(s)),
                "buyer {i} was refused {:?} though no winner holds any of them (seed {seed:#x})",
                wanted[*i]
            );
        }
    }

    // The listing shows exactly the seats won as held.
    let (buyer, queue_token) = &buyers[0];
    let statuses = app.seat_statuses(buyer, queue_token, &date).await;
    assert_eq!(statuses.len() as u64, SEATS);
    for (seat, status) in &statuses {
        let expected = if won.contains_key(seat) {
            "held"
        } else {
            "available"
        };
        assert_eq!(status, expected, "seat {seat} (seed {seed:#x})");
    }

    // Each winner sees its own hold.
    for (seat, i) in &won {
        let (buyer, _) = &buyers[*i];
        let list = app
            .get("/api/v1/reservations")
            .session(buyer)
            .send()
            .await
            .unwrap();
        let list = assert_json(list, 200).await;
        let reservations = list["reservations"].as_array().unwrap();
        assert_eq!(reservations.len(), 1, "{list}");
        assert!(
            reservations[0]["seat_nos"]
                .as_array()
                .unwrap()
                .contains(&json!(seat)),
            "{list}"
        );
    }

    let stats = eventually("stats to count the holds", || async {
        let stats = app.stats().await;
        (stats["seats_held"] == json!(won.len())).then_some(stats)
    })
    .await;
    assert_eq!(stats["seats_total"], json!(SEATS), "{stats}");

    // Every winner tops up and pays, all at once: every payment lands, once.
    let winners: BTreeSet<usize> = won.values().copied().collect();
    let barrier = Arc::new(Barrier::new(winners.len()));
    let mut payments = Vec::new();
    for i in &winners {
        let (buyer, queue_token) = buyers[*i].clone();
        let reservation = results
            .iter()
            .find(|(j, _, _)| j == i)
            .map(|(_, _, body)| string_field(body, "reservation_id"))
            .unwrap();
        let price = PRICE * wanted[*i].len() as u64;
        let charge = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .json(&json!({ "amount": PRICE * 4 }));
        let pay = app
            .post("/api/v1/payments")
            .session(&buyer)
            .queue(&queue_token)
            .json(&json!({ "reservation_id": reservation }));
        let barrier = barrier.clone();
        payments.push(tokio::spawn(async move {
            barrier.wait().await;
            assert_json(charge.send().await.unwrap(), 201).await;
            let paid = assert_json(pay.send().await.unwrap(), 201).await;
            assert_eq!(paid["amount"], json!(price), "{paid}");
            assert_eq!(paid["balance"], json!(PRICE * 4 - price), "{paid}");
        }));
    }
    for payment in payments {
        payment.await.expect("every winner pays");
    }
    let (buyer, _) = &buyers[0];
    let reissued = assert_json(app.poll_queue(buyer, &buyers[0].1).await, 200).await;
    let queue_token = if reissued["reissued"] == json!(true) {
        let fresh = string_field(&reissued, "queue_token");
        app.wait_until_active(buyer, &fresh).await;
        fresh
    } else {
        buyers[0].1.clone()
    };
    let statuses = app.seat_statuses(buyer, &queue_token, &date).await;
    for (seat, status) in &statuses {
        let expected = if won.contains_key(seat) {
            "sold"
        } else {
            "available"
        };
        assert_eq!(status, expected, "seat {seat} after payment");
    }
    eventually("stats to count the sales", || async {
        let stats = app.stats().await;
        (stats["seats_sold"] == json!(won.len()) && stats["seats_held"] == json!(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_racing_itself_never_exceeds_the_hold_limit() {
    const SEATS: u64 = 20;
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(SEATS, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let max = app.settings.holds.max_seats_per_user as usize;

    let barrier = Arc::new(Barrier::new(SEATS as usize));
    let attempts: Vec<_> = (1..=SEATS)
        .map(|seat| {
            let request = app
                .post("/api/v1/reservations")
                .session(&buyer)
                .queue(&queue_token)
                .json(&json!({"date_id": date, "seat_no": seat}));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let response = request.send().await.unwrap();
                (
                    seat,
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap(),
                )
            })
        })
        .collect();
    let mut held = BTreeSet::new();
    for attempt in attempts {
        let (seat, status, body) = attempt.await.unwrap();
        match status {
            201 => {
                held.insert(seat);
            }
            422 => assert_eq!(body["code"], "hold_limit", "{body}"),
            other => panic!("seat {seat}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(held.len(), max, "exactly the hold limit is held: {held:?}");
    let statuses = app.seat_statuses(&buyer, &queue_token, &date).await;
    let listed: BTreeSet<u64> = statuses
        .iter()
        .filter(|(_, s)| *s == "held")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(listed, held);
}

/// The contract's best-available rule, read literally, over `rows` (`(first seat_no, seats)`
/// in stage order) where `taken` seats are unavailable: the first seat of the chosen pair.
fn reference_pair(rows: &[(u64, u64)], taken: &BTreeSet<u64>) -> Option<u64> {
    let mut best: Option<((bool, usize, i64, u64), u64)> = None;
    for (index, (first, seats)) in rows.iter().enumerate() {
        let n = *seats as i64;
        let free =
            |place: i64| (1..=n).contains(&place) && !taken.contains(&(*first + place as u64 - 1));
        for a in 1..n {
            let b = a + 1;
            if !(free(a) && free(b)) {
                continue;
            }
            let orphan = (free(a - 1) && !free(a - 2)) || (free(b + 1) && !free(b + 2));
            let key = (
                orphan,
                index,
                (a + b - (n + 1)).abs(),
                *first + a as u64 - 1,
            );
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, key.3));
            }
        }
    }
    best.map(|(_, seat)| seat)
}

/// 600 buyers ask for the best two seats on a 672-seat date of rows of odd lengths (so a
/// careless choice strands single seats), all at once. Read in the order the date decided them
/// (reservation numbers), every answer is the one the contract's rule gives on the seats taken
/// before it: adjacent, no overlap, an orphan only when none could be avoided, and
/// `no_adjacent_seats` only once no pair is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_buyers_asking_for_the_best_pair_get_what_the_rule_gives_in_order() {
    const BUYERS: usize = 600;
    let app = crowd_app().await;
    let concert = app.create_concert("Pairs", "Odd Hall").await;
    let lengths = [7u64, 9, 11, 13, 15, 17, 19, 21];
    let section_rows: Vec<Vec<u64>> = vec![lengths.repeat(3), lengths.repeat(3)];
    let sections: Vec<Value> = section_rows
        .iter()
        .enumerate()
        .map(|(s, rows)| {
            let rows: Vec<Value> = rows
                .iter()
                .enumerate()
                .map(|(r, seats)| json!({"row": format!("R{r}"), "seats": seats}))
                .collect();
            json!({"name": format!("S{s}"), "price": 1_000, "rows": rows})
        })
        .collect();
    let response = app
        .post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"starts_at": STARTS_AT, "sections": sections}))
        .send()
        .await
        .unwrap();
    let date = string_field(&assert_json(response, 201).await, "date_id");
    let mut rows = Vec::new();
    let mut next = 1;
    for seats in section_rows.iter().flatten() {
        rows.push((next, *seats));
        next += seats;
    }
    let total = next - 1;
    assert_eq!(total, 672);
    let buyers = app.admitted_buyers(BUYERS, PREPARE_CONCURRENCY).await;

    let results = race_bodies(
        &app,
        &buyers,
        |_| json!({"date_id": date, "best_available": {"quantity": 2}}),
    )
    .await;

    let mut decided: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut refused = 0;
    for (i, status, body) in &results {
        match status {
            201 => {
                let id = string_field(body, "reservation_id");
                let seq: u64 = id
                    .rsplit('_')
                    .next()
                    .unwrap()
                    .parse()
                    .expect("a numbered reservation");
                let seats: Vec<u64> = body["seat_nos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap())
                    .collect();
                decided.push((seq, seats));
            }
            409 => {
                assert_eq!(body["code"], "no_adjacent_seats", "buyer {i}: {body}");
                refused += 1;
            }
            _ => panic!("buyer {i}: {status} {body}"),
        }
    }
    decided.sort();
    let mut taken = BTreeSet::new();
    for (seq, seats) in &decided {
        let expected = reference_pair(&rows, &taken).expect("a pair was left for this hold");
        assert_eq!(seats, &vec![expected, expected + 1], "hold {seq}");
        for seat in seats {
            assert!(taken.insert(*seat), "seat {seat} held twice");
        }
    }
    // Every 201 came before every refusal: once the rule finds no pair, none comes back.
    assert_eq!(reference_pair(&rows, &taken).is_none(), refused > 0);
    assert_eq!(decided.len() + refused, BUYERS);
    // Rows of odd length leave one seat each, and nothing else: each row's orphan is forced.
    assert_eq!(
        decided.len(),
        (total as usize - rows.len()) / 2,
        "{refused} refused"
    );
    let statuses = app.seat_statuses(&buyers[0].0, &buyers[0].1, &date).await;
    let held: BTreeSet<u64> = statuses
        .iter()
        .filter(|(_, status)| *status == "held")
        .map(|(seat, _)| *seat)
        .collect();
    assert_eq!(held, taken, "the listing shows exactly the seats held");
}

/// Sends every request at once, released by one barrier; returns `(index, status, body)`.
async fn all_at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<(usize, u16, Value)> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let response = request.send().await.expect("an answer");
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                (i, status, body)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refunds_of_one_reservation_refund_it_once() {
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(10, 1_000).await;
    let (buyer, token) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 2_000).await;
    let held = app.hold_ok(&buyer, &token, &date, &[1, 2]).await;
    let id = string_field(&held, "reservation_id");
    assert_json(app.pay(&buyer, &token, &id).await, 201).await;

    let requests = (0..50)
        .map(|_| {
            app.post("/api/v1/refunds")
                .session(&buyer)
                .json(&json!({ "reservation_id": id }))
        })
        .collect();
    let answers = all_at_once(requests).await;
    let refunded: Vec<_> = answers.iter().filter(|(_, s, _)| *s == 201).collect();
    assert_eq!(refunded.len(), 1, "{answers:?}");
    for (_, status, body) in &answers {
        if *status != 201 {
            assert_eq!(
                (*status, body["code"].as_str()),
                (409, Some("reservation_not_paid")),
                "{body}"
            );
        }
    }
    assert_eq!(refunded[0].2["amount"], json!(1_800));
    assert_eq!(app.balance(&buyer).await, 1_800);
    let refunds = app
        .history(&buyer)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "refund")
        .count();
    assert_eq!(refunds, 1);
    assert_eq!(app.reservation_status(&buyer, &id).await, "refunded");
}

/// A date called off while 120 buyers hold and pay on it: every acknowledged payment is
/// refunded in full, every later one refused, and no won is lost or made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_racing_holds_and_payments_loses_no_payment() {
    const BUYERS: usize = 120;
    const PRICE: u64 = 1_000;
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(BUYERS as u64, PRICE).await;
    let buyers = app.admitted_buyers(BUYERS, PREPARE_CONCURRENCY).await;
    for (buyer, _) in &buyers {
        app.charge_ok(buyer, PRICE).await;
    }
    // Half hold first, so some payments land before the cancellation.
    let mut early = Vec::new();
    for (i, (buyer, token)) in buyers.iter().enumerate().take(BUYERS / 2) {
        let held = app.hold_ok(buyer, token, &date, &[i as u64 + 1]).await;
        early.push(string_field(&held, "reservation_id"));
    }
    let barrier = Arc::new(Barrier::new(BUYERS + 1));
    let mut tasks = Vec::new();
    for (i, (buyer, token)) in buyers.iter().enumerate() {
        let (app_client, base) = (app.client.clone(), app.url(""));
        let (buyer, token, date, barrier) =
            (buyer.clone(), token.clone(), date.clone(), barrier.clone());
        let known = early.get(i).cloned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let reservation = match known {
                Some(id) => id,
                None => {
                    let held = app_client
                        .post(format!("{base}/api/v1/reservations"))
                        .bearer_auth(&buyer.token)
                        .header(QUEUE_HEADER, &token)
                        .json(&json!({"date_id": date, "seat_no": i + 1}))
                        .send()
                        .await
                        .unwrap();
                    let status = held.status().as_u16();
                    let body: Value = held.json().await.unwrap();
                    if status != 201 {
                        assert_eq!(body["code"], json!("date_cancelled"), "{body}");
                        return (i, None, 409);
                    }
                    string_field(&body, "reservation_id")
                }
            };
            let paid = app_client
                .post(format!("{base}/api/v1/payments"))
                .bearer_auth(&buyer.token)
                .header(QUEUE_HEADER, &token)
                .json(&json!({ "reservation_id": reservation }))
                .send()
                .await
                .unwrap();
            let status = paid.status().as_u16();
            let body: Value = paid.json().await.unwrap();
            if status != 201 {
                assert_eq!(
                    (status, body["code"].as_str()),
                    (409, Some("reservation_not_held")),
                    "a payment after the cancellation finds its hold cancelled: {body}"
                );
            }
            (i, Some(reservation), status)
        }));
    }
    let cancel = {
        let request = app
            .post(&format!("/api/v1/admin/dates/{date}/cancellation"))
            .bearer_auth(&app.admin_token);
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            request.send().await.unwrap()
        })
    };
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let report = assert_json(cancel.await.unwrap(), 200).await;
    let paid: Vec<&(usize, Option<String>, u16)> = outcomes
        .iter()
        .filter(|(_, _, status)| *status == 201)
        .collect();
    assert_eq!(
        report["refunded_reservations"],
        json!(paid.len()),
        "every acknowledged payment refunded: {report}"
    );
    assert_eq!(report["refunded_amount"], json!(paid.len() as u64 * PRICE));
    for (i, reservation, status) in &outcomes {
        let (buyer, _) = &buyers[*i];
        assert_eq!(
            app.balance(buyer).await,
            PRICE,
            "buyer {i}: no won lost or made"
        );
        if let Some(reservation) = reservation {
            let expected = if *status == 201 {
                "refunded"
            } else {
                "cancelled"
            };
            assert_eq!(
                app.reservation_status(buyer, reservation).await,
                expected,
                "buyer {i}"
            );
        }
    }
    let (reader, token) = app.admitted_buyer().await;
    let seats = app.seat_statuses(&reader, &token, &date).await;
    assert!(seats.values().all(|s| s == "available"), "{seats:?}");
    println!(
        "cancellation raced {} payments: {} acknowledged and refunded",
        BUYERS,
        paid.len()
    );
}

/// A refunded seat raced by 200 buyers holding it and one waiting-list entry: the entry gets
/// it, every buyer is refused, before and after the refund alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_seat_raced_by_two_hundred_buyers_goes_to_the_waiting_list() {
    const RACERS: usize = 200;
    let app = crowd_app().await;
    let (_, date) = app.concert_with_date(1, 1_000).await;
    let (seller, seller_token) = app.admitted_buyer().await;
    app.charge_ok(&seller, 1_000).await;
    let held = app.hold_ok(&seller, &seller_token, &date, &[1]).await;
    let sold = string_field(&held, "reservation_id");
    assert_json(app.pay(&seller, &seller_token, &sold).await, 201).await;
    let (fan, fan_token) = app.admitted_buyer().await;
    let joined = app
        .post(&format!("/api/v1/dates/{date}/waitlist"))
        .session(&fan)
        .queue(&fan_token)
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_json(joined, 201).await;
    let racers = app.admitted_buyers(RACERS, PREPARE_CONCURRENCY).await;
    let mut requests: Vec<reqwest::RequestBuilder> = racers
        .iter()
        .map(|(buyer, token)| {
            app.post("/api/v1/reservations")
                .session(buyer)
                .queue(token)
                .json(&json!({"date_id": date, "seat_no": 1}))
        })
        .collect();
    requests.push(
        app.post("/api/v1/refunds")
            .session(&seller)
            .json(&json!({ "reservation_id": sold })),
    );
    let answers = all_at_once(requests).await;
    let (refund, holds) = answers.split_last().unwrap();
    assert_eq!(refund.1, 201, "{refund:?}");
    for (i, status, body) in holds {
        assert_eq!(
            (*status, body["code"].as_str()),
            (409, Some("seat_unavailable")),
            "racer {i}: {body}"
        );
    }
    let listed = assert_json(
        app.get("/api/v1/waitlist")
            .session(&fan)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed["entries"][0]["status"], json!("offered"), "{listed}");
    let offer = string_field(&listed["entries"][0], "reservation_id");
    let hold = assert_json(app.reservation(&fan, &offer).await, 200).await;
    assert_eq!(hold["seat_nos"], json!([1]));
}
