//! Random and mutated requests at every route of the running server, from several clients at
//! once, with the clock jumping now and then. Every answer must be a success or a
//! problem+json 4xx (503 `overloaded` is the only 5xx allowed, and the test settings never
//! reach it); afterwards the invariants of DESIGN.md must hold, checked through the API
//! against what the fuzzer saw acknowledged.
//!
//! Bounded: `CASES` requests or `DEADLINE`, whichever ends first. The seed is printed;
//! `BOXOFFICE_FUZZ_SEED=<n>` reruns one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const CASES: usize = 6_000;
const WORKERS: u64 = 6;
const DEADLINE: Duration = Duration::from_secs(40);
const SEATS: u64 = 40;
const PRICE: u64 = 700;

/// The buyer's flow: half the cases pick from these, so real holds, charges and payments
/// happen among the noise.
const FLOW: [(&str, &str); 6] = [
    ("POST", "/api/v1/queue/tokens"),
    ("POST", "/api/v1/reservations"),
    ("POST", "/api/v1/balance/charges"),
    ("POST", "/api/v1/payments"),
    ("DELETE", "/api/v1/reservations/{reservation_id}"),
    ("GET", "/api/v1/dates/{date_id}/seats"),
];

#[derive(Clone)]
struct Fuzzer {
    /// Sessions change when the fuzzer signs a buyer out; it signs straight back in.
    buyers: Arc<Mutex<Vec<Buyer>>>,
    /// Each buyer's newest queue token; payments end tokens, so workers take fresh ones.
    queue_tokens: Arc<Mutex<Vec<String>>>,
    /// Every id the server handed out, so requests can name real (and others') things.
    ids: Arc<Mutex<Vec<String>>>,
    routes: Vec<(Method, String)>,
    seen: Arc<Mutex<Seen>>,
}

/// What the server acknowledged: each must be visible afterwards, exactly once.
#[derive(Default)]
struct Seen {
    charges: BTreeMap<String, (usize, u64)>,
    payments: BTreeMap<String, (usize, u64)>,
    statuses: BTreeMap<u16, usize>,
}

fn mutated_id(rng: &mut StdRng, ids: &[String]) -> String {
    let real = ids.choose(rng).cloned().unwrap_or_else(|| "r_1_1".into());
    match rng.gen_range(0..12) {
        0 => String::new(),
        1 => "x".repeat(rng.gen_range(1..3_000)),
        2 => format!("{real}{}", rng.gen::<u32>()),
        3 => real.replace('_', "__"),
        4 => "%00%ff%2F..%2f".into(),
        5 => "r_18446744073709551616_1".into(),
        6 => "d_-1".into(),
        7 => "🎫".into(),
        8 => real.to_uppercase(),
        _ => real,
    }
}

fn value(rng: &mut StdRng, ids: &[String]) -> Value {
    match rng.gen_range(0..14) {
        0 => json!(rng.gen_range(0..=SEATS + 2)),
        1 => json!(rng.gen_range(1..=5_000u64)),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1.5),
        5 => json!("10"),
        6 => Value::Null,
        7 => json!(u64::MAX),
        8 => json!([1, 2]),
        9 => json!({}),
        10 => json!(9_007_199_254_740_993u64),
        _ => json!(mutated_id(rng, ids)),
    }
}

/// A body of the route's shape with plausible values most of the time, mutated otherwise.
fn body(rng: &mut StdRng, path: &str, ids: &[String], date: &str) -> Option<String> {
    let mut object = match path {
        "/api/v1/users" | "/api/v1/sessions" => {
            json!({"username": unique_username(), "password": PASSWORD})
        }
        "/api/v1/reservations" => {
            let seats: Vec<u64> = (0..rng.gen_range(1..=3))
                .map(|_| rng.gen_range(1..=SEATS))
                .collect();
            if rng.gen_bool(0.5) {
                json!({"date_id": date, "seat_no": seats[0]})
            } else {
                json!({"date_id": date, "seat_nos": seats})
            }
        }
        "/api/v1/payments" => {
            // Mostly a recent hold, which is likely still held (by someone).
            let holds: Vec<&String> = ids.iter().filter(|id| id.starts_with("r_")).collect();
            let recent = holds.len().saturating_sub(4);
            let pick = if rng.gen_bool(0.7) {
                holds[recent..].choose(rng)
            } else {
                holds.choose(rng)
            };
            json!({ "reservation_id": pick.map(|s| s.as_str()).unwrap_or("r_1_1") })
        }
        "/api/v1/balance/charges" => json!({"amount": rng.gen_range(1..=3_000u64)}),
        "/api/v1/admin/concerts" => json!({"title": "Fuzz", "venue": "Hall"}),
        p if p.ends_with("/dates") => {
            json!({"starts_at": STARTS_AT, "seat_count": rng.gen_range(1..=20), "price": 5})
        }
        _ if rng.gen_bool(0.8) => return None,
        _ => json!({}),
    };
    if rng.gen_bool(0.35) {
        let fields: Vec<String> = object.as_object().unwrap().keys().cloned().collect();
        match rng.gen_range(0..5) {
            0 => {
                if let Some(field) = fields.choose(rng) {
                    object[field] = value(rng, ids);
                }
            }
            1 => {
                if let Some(field) = fields.choose(rng) {
                    object.as_object_mut().unwrap().remove(field);
                }
            }
            2 => object["extra"] = value(rng, ids),
            3 => {
                let text = object.to_string();
                let cut = rng.gen_range(0..text.len().max(1));
                return Some(text[..cut].to_owned());
            }
            _ => {
                let junk: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
                return Some(String::from_utf8_lossy(&junk).into_owned());
            }
        }
    }
    Some(object.to_string())
}

impl Fuzzer {
    async fn case(&self, app: &TestApp, rng: &mut StdRng, date: &str) {
        let (method, template) = if rng.gen_bool(0.5) {
            let (method, path) = FLOW.choose(rng).unwrap();
            (method.parse().unwrap(), path.to_string())
        } else {
            self.routes.choose(rng).unwrap().clone()
        };
        let method = if rng.gen_bool(0.08) {
            [
                Method::GET,
                Method::POST,
                Method::DELETE,
                Method::PUT,
                Method::PATCH,
            ]
            .choose(rng)
            .unwrap()
            .clone()
        } else {
            method
        };
        let ids = self.ids.lock().clone();
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    if rng.gen_bool(0.7) && segment == "{date_id}" {
                        date.to_owned()
                    } else {
                        urlencode(&mutated_id(rng, &ids))
                    }
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let buyers = self.buyers.lock().clone();
        let who = rng.gen_range(0..buyers.len() + 2);
        let mut request = app.request(method.clone(), &path);
        let mut buyer_index = None;
        if who < buyers.len() {
            buyer_index = Some(who);
            request = request.session(&buyers[who]);
        } else if who == buyers.len() && template.contains("/admin/") {
            request = request.header("authorization", format!("Bearer {}", app.admin_token));
        } else if rng.gen_bool(0.5) {
            request = request.header("authorization", "Bearer bos_1_0123");
        }
        let tokens = self.queue_tokens.lock().clone();
        let queue = match (rng.gen_range(0..10), buyer_index) {
            (0, _) => Some("q0".to_owned()),
            (1, _) => tokens.choose(rng).cloned(),
            (2, _) => None,
            (_, Some(i)) => Some(tokens[i].clone()),
            (_, None) => None,
        };
        if let Some(token) = queue {
            request = request.header(QUEUE_HEADER, token);
        }
        if rng.gen_bool(0.3) {
            let key = ["k1", "k2", "", "k k", &"k".repeat(65)]
                .choose(rng)
                .unwrap()
                .to_string();
            request = request.header(IDEMPOTENCY_HEADER, key);
        }
        if let Some(text) = body(rng, &template, &ids, date) {
            let content_type = if rng.gen_bool(0.9) {
                "application/json"
            } else {
                "text/plain"
            };
            request = request.header("content-type", content_type).body(text);
        }

        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if content_type.starts_with("text/event-stream") {
            // A live stream that opened: it runs until its session ends; hang up.
            assert_eq!(status, 200, "{method} {path}");
            return;
        }
        let text = response.text().await.expect("a readable body");
        let what = format!("{method} {path} → {status}: {text}");
        assert!(status < 500, "no 5xx: {what}");
        if status >= 400 {
            assert!(
                content_type.starts_with("application/problem+json"),
                "problem+json: {what}"
            );
            let problem: Value = serde_json::from_str(&text).expect("problem JSON");
            assert!(problem["code"].is_string(), "a code: {what}");
            assert_eq!(problem["status"], json!(status), "{what}");
        }
        self.observe(buyer_index, &template, &method, status, &text);
        if let (Some(index), 204, "/api/v1/sessions/current") =
            (buyer_index, status, template.as_str())
        {
            let username = buyers[index].username.clone();
            let session = assert_json(app.sign_in(&username, PASSWORD).await, 201).await;
            self.buyers.lock()[index].token = string_field(&session, "session_token");
        }
    }

    fn observe(
        &self,
        buyer: Option<usize>,
        template: &str,
        method: &Method,
        status: u16,
        text: &str,
    ) {
        *self.seen.lock().statuses.entry(status).or_default() += 1;
        if !(200..300).contains(&status) || text.is_empty() {
            return;
        }
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        for field in ["reservation_id", "concert_id", "date_id", "charge_id"] {
            if let Some(id) = body[field].as_str() {
                self.ids.lock().push(id.to_owned());
            }
        }
        let Some(buyer) = buyer else { return };
        if let Some(token) = body["queue_token"].as_str() {
            self.queue_tokens.lock()[buyer] = token.to_owned();
        }
        if *method == Method::POST && status == 201 {
            let mut seen = self.seen.lock();
            if template == "/api/v1/balance/charges" {
                let id = body["charge_id"].as_str().unwrap().to_owned();
                seen.charges
                    .insert(id, (buyer, body["amount"].as_u64().unwrap()));
            }
            if template == "/api/v1/payments" {
                let id = body["reservation_id"].as_str().unwrap().to_owned();
                seen.payments
                    .insert(id, (buyer, body["amount"].as_u64().unwrap()));
            }
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_at_every_route_keep_every_invariant() {
    let seed: u64 = std::env::var("BOXOFFICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz seed {seed} (rerun with BOXOFFICE_FUZZ_SEED={seed})");
    let app = Arc::new(spawn_app().await);
    let (_, date) = app.concert_with_date(SEATS, PRICE).await;
    let document = assert_json(app.get("/openapi.json").send().await.unwrap(), 200).await;
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((
                method.to_uppercase().parse::<Method>().unwrap(),
                path.clone(),
            ));
        }
    }
    assert!(routes.len() >= 25);
    let admitted = app.admitted_buyers(4, 4).await;
    let fuzzer = Fuzzer {
        buyers: Arc::new(Mutex::new(
            admitted.iter().map(|(b, _)| b.clone()).collect(),
        )),
        queue_tokens: Arc::new(Mutex::new(
            admitted.iter().map(|(_, q)| q.clone()).collect(),
        )),
        ids: Arc::new(Mutex::new(vec![date.clone()])),
        routes,
        seen: Arc::default(),
    };

    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (app, fuzzer, date) = (app.clone(), fuzzer.clone(), date.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker));
            for _ in 0..CASES as u64 / WORKERS {
                if started.elapsed() > DEADLINE {
                    break;
                }
                if rng.gen_bool(0.003) {
                    // Holds (5 min) and queue tokens expire as the clock jumps.
                    app.advance(Duration::from_secs(rng.gen_range(1..200)));
                }
                fuzzer.case(&app, &mut rng, &date).await;
            }
        }));
    }
    for worker in workers {
        worker
            .await
            .expect("a fuzz worker panicked; see its message above");
    }

    let seen = std::mem::take(&mut *fuzzer.seen.lock());
    eprintln!(
        "fuzz: {} requests by status {:?}, {} charges, {} payments",
        seen.statuses.values().sum::<usize>(),
        seen.statuses,
        seen.charges.len(),
        seen.payments.len()
    );
    let successes: usize = (200..300).filter_map(|s| seen.statuses.get(&s)).sum();
    assert!(
        successes > 100,
        "the fuzzer reached real work: {:?}",
        seen.statuses
    );
    let buyers = fuzzer.buyers.lock().clone();
    assert_invariants(&app, &buyers, &date, &seen).await;
}

/// Money conserved and visible exactly as acknowledged; no seat sold twice; the seat map, the
/// reservations and the admin counts agree.
async fn assert_invariants(app: &TestApp, buyers: &[Buyer], date: &str, seen: &Seen) {
    let health = app.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
    let mut sold_by_reservations: BTreeMap<u64, String> = BTreeMap::new();
    // Over every buyer: a transfer moves a paid reservation to another buyer's list, and a
    // refund credits whoever paid.
    let mut paid_in_history = BTreeSet::new();
    let mut refunded_in_history = BTreeSet::new();
    let mut listed_paid = BTreeSet::new();
    let mut listed_refunded = BTreeSet::new();
    for (index, buyer) in buyers.iter().enumerate() {
        let history = app.history(buyer).await;
        let balance = app.balance(buyer).await;
        let mut charged = 0u64;
        let mut paid = 0u64;
        let mut refunded = 0u64;
        let mut my_refunds = BTreeSet::new();
        let mut charge_ids = BTreeSet::new();
        let mut paid_reservations = BTreeSet::new();
        for entry in &history {
            let amount = entry["amount"].as_u64().unwrap();
            let reference = string_field(entry, "reference");
            match entry["kind"].as_str().unwrap() {
                "charge" => {
                    charged += amount;
                    assert!(charge_ids.insert(reference), "a charge listed once");
                }
                "payment" => {
                    paid += amount;
                    assert!(paid_reservations.insert(reference), "a payment listed once");
                }
                "refund" => {
                    refunded += amount;
                    assert!(my_refunds.insert(reference), "a refund listed once");
                }
                other => panic!("unexpected history kind {other}"),
            }
        }
        assert_eq!(
            charged - paid + refunded,
            balance,
            "buyer {index}: charges − payments + refunds = balance"
        );
        assert!(
            my_refunds.is_subset(&paid_reservations),
            "buyer {index}: a refund credits the payer: {my_refunds:?}"
        );
        paid_in_history.extend(paid_reservations.iter().cloned());
        refunded_in_history.extend(my_refunds);
        let acknowledged_charges: BTreeSet<String> = seen
            .charges
            .iter()
            .filter(|(_, (b, _))| *b == index)
            .map(|(id, _)| id.clone())
            .collect();
        let acknowledged_amount: u64 = seen
            .charges
            .values()
            .filter(|(b, _)| *b == index)
            .map(|(_, amount)| amount)
            .sum();
        assert_eq!(
            charged, acknowledged_amount,
            "buyer {index}: charged amounts"
        );
        assert_eq!(
            charge_ids, acknowledged_charges,
            "buyer {index}: acknowledged charges"
        );
        let acknowledged_payments: BTreeSet<String> = seen
            .payments
            .iter()
            .filter(|(_, (b, _))| *b == index)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(
            paid_reservations, acknowledged_payments,
            "buyer {index}: payments"
        );

        let listed = assert_json(
            app.get("/api/v1/reservations?limit=1000")
                .session(buyer)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert!(listed["next_cursor"].is_null(), "one page holds them all");
        for reservation in listed["reservations"].as_array().unwrap() {
            let id = string_field(reservation, "reservation_id");
            let is_paid = reservation["status"] == "paid";
            if is_paid {
                listed_paid.insert(id.clone());
            }
            if reservation["status"] == "refunded" {
                listed_refunded.insert(id.clone());
            }
            if is_paid && reservation["date_id"] == json!(date) {
                for seat in reservation["seat_nos"].as_array().unwrap() {
                    let seat = seat.as_u64().unwrap();
                    if let Some(earlier) = sold_by_reservations.insert(seat, id.clone()) {
                        panic!("seat {seat} sold twice: {earlier} and {id}");
                    }
                }
            }
        }
    }
    let mut once_paid = listed_paid.clone();
    once_paid.extend(listed_refunded.iter().cloned());
    assert_eq!(
        listed_paid.len() + listed_refunded.len(),
        once_paid.len(),
        "paid or refunded, not both"
    );
    assert_eq!(
        once_paid, paid_in_history,
        "a reservation is paid or refunded in some list ⇔ its payment is in its payer's history"
    );
    assert!(
        refunded_in_history.is_subset(&listed_refunded),
        "a refund in a history ⇒ the reservation is refunded"
    );
    let (reader, reader_q) = app.admitted_buyer().await;
    let statuses = app.seat_statuses(&reader, &reader_q, date).await;
    let sold_on_map: BTreeSet<u64> = statuses
        .iter()
        .filter(|(_, status)| status.as_str() == "sold")
        .map(|(seat, _)| *seat)
        .collect();
    let sold_by_reservations: BTreeSet<u64> = sold_by_reservations.into_keys().collect();
    assert_eq!(
        sold_on_map, sold_by_reservations,
        "the seat map agrees with paid reservations"
    );
}
