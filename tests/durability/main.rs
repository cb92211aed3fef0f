//! Durability of the real binary on real files: `kill -9` mid-load loses nothing acknowledged
//! and leaves nothing half-applied; a graceful stop restarts fast into the same state; damaged
//! or foreign files give clear errors instead of panics or silent loss.

mod edges;
mod history;
mod linearizability;
mod server;
mod supervision;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use server::{command, data_dir, Api, Server, ADMIN};

const SEATS: u32 = 2_000;
const PRICE: i128 = 1_000;
const WORKERS: usize = 6;
const OPS_PER_ROUND_MAX: usize = 400;

/// What one buyer knows from the answers it got.
#[derive(Debug, Default, Clone)]
struct Buyer {
    session: String,
    /// The balance as acknowledged.
    balance: i128,
    /// A change sent whose answer never came: it may have landed whole or not at all.
    in_flight: Option<InFlight>,
    /// Reservations acknowledged (or proven) paid, with their seats.
    paid: BTreeMap<String, Vec<u64>>,
}

#[derive(Debug, Clone)]
enum InFlight {
    Charge(i128),
    Payment {
        reservation: String,
        seats: Vec<u64>,
    },
}

fn bearer(session: &str) -> String {
    format!("Bearer {session}")
}

/// Charges, holds and pays until the server stops answering or the round's cap is reached.
async fn drive(api: Api, date: String, mut buyer: Buyer) -> Buyer {
    let auth = bearer(&buyer.session);
    let Some(mut queue_token) = api.admitted(&buyer.session).await else {
        return buyer;
    };
    for _ in 0..OPS_PER_ROUND_MAX {
        let amount: i128 = rand::thread_rng().gen_range(1_000..20_000);
        buyer.in_flight = Some(InFlight::Charge(amount));
        let Some((status, body)) = api
            .post(
                "/api/v1/balance/charges",
                &[("authorization", &auth)],
                json!({"amount": amount}),
            )
            .await
        else {
            return buyer;
        };
        assert_eq!(status, StatusCode::CREATED, "{body}");
        buyer.balance += amount;
        buyer.in_flight = None;
        assert_eq!(
            body["balance"].as_i64().map(i128::from),
            Some(buyer.balance),
            "{body}"
        );

        let seat: u64 = rand::thread_rng().gen_range(1..=SEATS as u64);
        let Some((status, held)) = api.hold(&buyer.session, &queue_token, &date, seat).await else {
            return buyer;
        };
        if status == StatusCode::CONFLICT {
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{held}");
        let reservation = held["reservation_id"].as_str().unwrap().to_owned();

        buyer.in_flight = Some(InFlight::Payment {
            reservation: reservation.clone(),
            seats: vec![seat],
        });
        let headers = [
            ("authorization", auth.as_str()),
            ("x-queue-token", queue_token.as_str()),
        ];
        let Some((status, paid)) = api
            .post(
                "/api/v1/payments",
                &headers,
                json!({"reservation_id": reservation}),
            )
            .await
        else {
            return buyer;
        };
        assert_eq!(status, StatusCode::CREATED, "{paid}");
        buyer.balance -= PRICE;
        buyer.in_flight = None;
        assert_eq!(
            paid["balance"].as_i64().map(i128::from),
            Some(buyer.balance),
            "{paid}"
        );
        buyer.paid.insert(reservation, vec![seat]);
        // A payment ends the admission: take a new token for the next purchase.
        match api.admitted(&buyer.session).await {
            Some(token) => queue_token = token,
            None => return buyer,
        }
    }
    buyer
}

/// After a restart: every acknowledged change is there, each change in flight is whole or
/// absent, and no seat is sold twice. Returns the buyers with their in-flight changes settled.
async fn verify(api: &Api, date: &str, buyers: Vec<Buyer>) -> Vec<Buyer> {
    let mut settled = Vec::new();
    let mut sold_to_buyers: BTreeSet<u64> = BTreeSet::new();
    let mut paid_seat_count = 0;
    for mut buyer in buyers {
        let auth = bearer(&buyer.session);
        let (status, body) = api
            .get("/api/v1/balance", &[("authorization", &auth)])
            .await
            .expect("the restarted server answers");
        assert_eq!(
            status,
            StatusCode::OK,
            "the session survived the kill: {body}"
        );
        let balance = i128::from(body["balance"].as_i64().unwrap());
        match buyer.in_flight.take() {
            None => assert_eq!(balance, buyer.balance, "acknowledged balance"),
            Some(InFlight::Charge(amount)) => {
                assert!(
                    balance == buyer.balance || balance == buyer.balance + amount,
                    "balance {balance}: neither {} nor {} (a charge of {amount} in flight)",
                    buyer.balance,
                    buyer.balance + amount
                );
            }
            Some(InFlight::Payment { reservation, seats }) => {
                let landed = balance == buyer.balance - PRICE;
                assert!(
                    landed || balance == buyer.balance,
                    "balance {balance}: neither {} nor {} (a payment in flight)",
                    buyer.balance,
                    buyer.balance - PRICE
                );
                let (_, r) = api
                    .get(
                        &format!("/api/v1/reservations/{reservation}"),
                        &[("authorization", &auth)],
                    )
                    .await
                    .unwrap();
                assert_eq!(r["status"] == "paid", landed, "seats and money agree: {r}");
                if landed {
                    buyer.paid.insert(reservation, seats);
                }
            }
        }
        buyer.balance = balance;
        let (_, mine) = api
            .get(
                "/api/v1/reservations?limit=1000",
                &[("authorization", &auth)],
            )
            .await
            .unwrap();
        assert!(mine["next_cursor"].is_null(), "one page holds them all");
        let paid_on_server: BTreeSet<String> = mine["reservations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "paid")
            .map(|r| r["reservation_id"].as_str().unwrap().to_owned())
            .collect();
        let paid_known: BTreeSet<String> = buyer.paid.keys().cloned().collect();
        assert_eq!(
            paid_on_server, paid_known,
            "every acknowledged payment, and only those"
        );
        // A hold the kill left unpaid (its payment, or its own answer, was lost) is let go of,
        // as a client that lost track of it would: five rounds of those would otherwise reach
        // the per-date hold limit.
        for held in mine["reservations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "held")
        {
            let id = held["reservation_id"].as_str().unwrap();
            let (status, body) = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/reservations/{id}"),
                    &[("authorization", &auth)],
                    None,
                )
                .await
                .unwrap();
            assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::CONFLICT,
                "letting go of {id}: {status} {body}"
            );
        }
        for seats in buyer.paid.values() {
            for seat in seats {
                assert!(sold_to_buyers.insert(*seat), "seat {seat} sold twice");
                paid_seat_count += 1;
            }
        }
        settled.push(buyer);
    }
    let token = api.admitted(&settled[0].session).await.unwrap();
    let auth = bearer(&settled[0].session);
    let (status, listing) = api
        .get(
            &format!("/api/v1/dates/{date}/seats"),
            &[("authorization", &auth), ("x-queue-token", &token)],
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let sold: BTreeSet<u64> = listing["seats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "sold")
        .map(|s| s["seat_no"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sold, sold_to_buyers,
        "the listing sells exactly the paid seats"
    );
    assert_eq!(sold.len(), paid_seat_count);
    settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_any_moment_loses_nothing_acknowledged() {
    kill_nine_rounds("kill9", WORKERS).await;
}

/// Enough buyers at once that commits hold many events each: a `kill -9` then lands in the
/// middle of writing a multi-event batch, and recovery finds each batch whole or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_in_the_middle_of_multi_event_batches_loses_nothing_acknowledged() {
    let events_per_commit = kill_nine_rounds("kill9-batches", 32).await;
    assert!(
        events_per_commit > 1.5,
        "commits held {events_per_commit:.2} events on average: the batches were not multi-event"
    );
}

/// Five rounds of load from `workers` buyers, each ended by `kill -9`, each verified after the
/// restart. Returns the events per commit the killed processes reached.
async fn kill_nine_rounds(name: &str, workers: usize) -> f64 {
    let dir = data_dir(name);
    // Snapshots every second, so recovery also runs from snapshots plus a log tail.
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "1".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let date = api.create_date(SEATS, PRICE as u64).await;
    let mut buyers = Vec::new();
    for i in 0..workers {
        buyers.push(Buyer {
            session: api.new_user(&format!("killed{i}")).await,
            ..Buyer::default()
        });
    }
    let mut server = Some(server);
    let mut total_paid = 0;
    let (mut commits, mut events) = (0, 0);
    for round in 0..5 {
        let running = server.take().unwrap_or_else(|| Server::start(&dir, &env));
        let api = Api::new(&running.base);
        if round > 0 {
            buyers = verify(&api, &date, buyers).await;
        }
        let tasks: Vec<_> = buyers
            .drain(..)
            .map(|b| tokio::spawn(drive(api.clone(), date.clone(), b)))
            .collect();
        let load_ms = rand::thread_rng().gen_range(150..1_200);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        let stats = api.admin_stats().await;
        commits += stats["log_commits"].as_u64().unwrap_or(0);
        events += stats["log_events_committed"].as_u64().unwrap_or(0);
        running.kill_9();
        for task in tasks {
            buyers.push(
                task.await
                    .expect("a buyer task ends once the server is gone"),
            );
        }
        total_paid = buyers.iter().map(|b| b.paid.len()).sum::<usize>();
    }
    let last = Server::start(&dir, &env);
    let api = Api::new(&last.base);
    let buyers = verify(&api, &date, buyers).await;
    assert!(
        buyers.iter().map(|b| b.paid.len()).sum::<usize>() >= total_paid,
        "the load did real work"
    );
    assert!(
        total_paid > 0,
        "at least one purchase went through in five rounds"
    );
    assert_eq!(last.stop_gracefully(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    events as f64 / commits.max(1) as f64
}

/// A fixed little history: two buyers, charges, holds, a payment and a cancellation.
/// A keyed request already answered, to be sent again after a restart.
struct KeyedRequest {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Value,
    answered: (StatusCode, Value),
}

impl KeyedRequest {
    /// Sends the request with its `Idempotency-Key` and remembers the answer.
    async fn send(
        api: &Api,
        path: &'static str,
        headers: &[(&str, &str)],
        key: &str,
        body: Value,
    ) -> Self {
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        headers.push(("idempotency-key".to_owned(), key.to_owned()));
        let answered = api
            .post(path, &borrowed(&headers), body.clone())
            .await
            .unwrap();
        Self {
            path,
            headers,
            body,
            answered,
        }
    }

    /// The same request again gets the same answer. Waiting-room tokens live in snapshots,
    /// not the log, so a hold is retried with a token taken after the restart, as a client
    /// would; a payment's retry is answered before its token is looked at.
    async fn assert_replayed(&self, api: &Api) {
        let mut headers = self.headers.clone();
        if self.path == "/api/v1/reservations" {
            let session = headers[0].1.trim_start_matches("Bearer ").to_owned();
            headers[1].1 = api.admitted(&session).await.unwrap();
        }
        let again = api
            .post(self.path, &borrowed(&headers), self.body.clone())
            .await
            .unwrap();
        assert_eq!(
            again, self.answered,
            "a retry of {} {}",
            self.path, self.body
        );
    }
}

fn borrowed(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Two buyers: ada charges, holds two seats and pays; bob charges, holds and cancels. Charges,
/// holds and payments carry idempotency keys; the requests are returned to be retried.
async fn some_history(api: &Api) -> (String, Vec<String>, Vec<KeyedRequest>) {
    let date = api.create_date(50, 700).await;
    let mut sessions = Vec::new();
    let mut keyed = Vec::new();
    for name in ["ada", "bob"] {
        let session = api.new_user(name).await;
        let auth = bearer(&session);
        let token = api.admitted(&session).await.unwrap();
        let headers = [
            ("authorization", auth.as_str()),
            ("x-queue-token", token.as_str()),
        ];
        let charge = KeyedRequest::send(
            api,
            "/api/v1/balance/charges",
            &headers,
            &format!("{name}-charge"),
            json!({"amount": 5_000}),
        )
        .await;
        assert_eq!(charge.answered.0, StatusCode::CREATED);
        let seat = if name == "ada" { 1 } else { 2 };
        let hold = KeyedRequest::send(
            api,
            "/api/v1/reservations",
            &headers,
            &format!("{name}-hold"),
            json!({"date_id": date, "seat_nos": [seat, seat + 10]}),
        )
        .await;
        assert_eq!(hold.answered.0, StatusCode::CREATED);
        let reservation = hold.answered.1["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        keyed.push(charge);
        if name == "ada" {
            let pay = KeyedRequest::send(
                api,
                "/api/v1/payments",
                &headers,
                "ada-pay",
                json!({"reservation_id": reservation}),
            )
            .await;
            assert_eq!(pay.answered.0, StatusCode::CREATED);
            // The payment ended ada's admission, so only the payment itself replays.
            keyed.push(pay);
        } else {
            let (status, _) = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/reservations/{reservation}"),
                    &headers,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::NO_CONTENT);
            keyed.push(hold);
        }
        sessions.push(session);
    }
    (date, sessions, keyed)
}

/// What a client can see of the state: balances, histories, reservations and the seat map.
async fn observable_state(api: &Api, date: &str, sessions: &[String]) -> Value {
    let mut seen = Vec::new();
    for session in sessions {
        let auth = bearer(session);
        let headers = [("authorization", auth.as_str())];
        let (_, me) = api.get("/api/v1/users/me", &headers).await.unwrap();
        let (_, history) = api.get("/api/v1/balance/history", &headers).await.unwrap();
        let (_, reservations) = api
            .get("/api/v1/reservations?limit=1000", &headers)
            .await
            .unwrap();
        assert!(
            reservations["next_cursor"].is_null(),
            "one page holds them all"
        );
        seen.push(json!({"me": me, "history": history, "reservations": reservations}));
    }
    let token = api.admitted(&sessions[0]).await.unwrap();
    let auth = bearer(&sessions[0]);
    let (_, seats) = api
        .get(
            &format!("/api/v1/dates/{date}/seats"),
            &[("authorization", &auth), ("x-queue-token", &token)],
        )
        .await
        .unwrap();
    json!({"buyers": seen, "seats": seats})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_replays_less_than_a_full_replay_and_ends_in_the_same_state() {
    let dir = data_dir("graceful");
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "3600".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let (date, sessions, keyed) = some_history(&api).await;
    let before = observable_state(&api, &date, &sessions).await;
    let logged = api.admin_stats().await["log_sequence"].as_u64().unwrap();
    assert!(logged >= 12, "the history is in the log: {logged}");
    assert_eq!(server.stop_gracefully(), Some(0), "SIGTERM exits 0");
    let graceful_snapshots = dir.join("snapshots-after-graceful-stop");
    std::fs::rename(dir.join("snapshots"), &graceful_snapshots).unwrap();

    // Without any snapshot the whole log is replayed, into the same state.
    let full = Server::start(&dir, &env);
    let api = Api::new(&full.base);
    let replayed_full = api.admin_stats().await["replayed_events"].as_u64().unwrap();
    assert!(replayed_full >= logged, "{replayed_full} < {logged}");
    assert_eq!(observable_state(&api, &date, &sessions).await, before);
    for request in &keyed {
        request.assert_replayed(&api).await;
    }
    assert_eq!(full.stop_gracefully(), Some(0));

    // From the graceful stop's snapshots only the tail after them is replayed.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    std::fs::rename(&graceful_snapshots, dir.join("snapshots")).unwrap();
    let fast = Server::start(&dir, &env);
    let api = Api::new(&fast.base);
    let replayed_fast = api.admin_stats().await["replayed_events"].as_u64().unwrap();
    assert!(
        replayed_fast < replayed_full / 2,
        "snapshots spare the replay: {replayed_fast} events after a graceful stop, {replayed_full} in full"
    );
    assert_eq!(observable_state(&api, &date, &sessions).await, before);
    for request in &keyed {
        request.assert_replayed(&api).await;
    }
    drop(fast);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_log_without_its_snapshots_is_refused_not_silently_emptied() {
    let dir = data_dir("pruned");
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "3600".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    some_history(&Api::new(&server.base)).await;
    assert_eq!(server.stop_gracefully(), Some(0));
    // A second graceful stop leaves two snapshots per owner, and the log is pruned below both.
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    api.new_user("carol").await;
    assert_eq!(server.stop_gracefully(), Some(0));
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    let failure = Server::try_start(&dir, &env)
        .err()
        .expect("refuses to start with lost history");
    assert_ne!(failure.exit_code, Some(0));
    assert!(failure.output.contains("restore"), "{}", failure.output);
    let _ = std::fs::remove_dir_all(&dir);
}

fn newest_snapshot(dir: &std::path::Path, owner: &str) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{owner}-")) && n.ends_with(".bin"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("a snapshot of {owner}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_snapshot_is_reported_and_skipped() {
    for damage in ["corrupt", "truncated"] {
        let dir = data_dir(damage);
        let env = [(
            "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
            "3600".to_owned(),
        )];
        let server = Server::start(&dir, &env);
        let api = Api::new(&server.base);
        let (date, sessions, _) = some_history(&api).await;
        let before = observable_state(&api, &date, &sessions).await;
        assert_eq!(server.stop_gracefully(), Some(0));
        for owner in ["ledger", "date-1", "accounts"] {
            let path = newest_snapshot(&dir, owner);
            let mut bytes = std::fs::read(&path).unwrap();
            if damage == "corrupt" {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
            } else {
                bytes.truncate(bytes.len() - 3);
            }
            std::fs::write(&path, bytes).unwrap();
        }
        let restarted = Server::start(&dir, &env);
        let api = Api::new(&restarted.base);
        assert_eq!(
            observable_state(&api, &date, &sessions).await,
            before,
            "{damage}"
        );
        let output = restarted.output();
        assert!(
            output.contains("skipping snapshot") && output.contains(damage),
            "the damage is reported: {output}"
        );
        drop(restarted);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_a_future_format_version_is_refused_with_a_clear_message() {
    let dir = data_dir("future");
    let server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    some_history(&api).await;
    assert_eq!(server.stop_gracefully(), Some(0));
    let path = newest_snapshot(&dir, "ledger");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let failure = Server::try_start(&dir, &[])
        .err()
        .expect("the server refuses to start");
    assert_ne!(failure.exit_code, Some(0));
    assert!(
        failure.output.contains("format version 99"),
        "{}",
        failure.output
    );
    assert!(!failure.output.contains("panicked"), "{}", failure.output);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each bad storage setup stops the start with a message that says what to fix.
#[test]
fn bad_storage_setups_are_clear_startup_errors() {
    let dir = data_dir("setup");
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, b"not a directory").unwrap();
    let garbage_db = dir.join("garbage.db");
    std::fs::write(&garbage_db, vec![0x42u8; 8192]).unwrap();
    let cases: [(&str, &str, String, &str); 3] = [
        (
            "snapshot dir is a file",
            "BOXOFFICE__STORAGE__SNAPSHOT_DIR",
            a_file.display().to_string(),
            "is a file",
        ),
        (
            "unwritable data dir",
            "BOXOFFICE__STORAGE__SQLITE_PATH",
            a_file
                .join("sub")
                .join("boxoffice.db")
                .display()
                .to_string(),
            "cannot create the data directory",
        ),
        (
            "corrupt database",
            "BOXOFFICE__STORAGE__SQLITE_PATH",
            garbage_db.display().to_string(),
            "not a boxoffice event log",
        ),
    ];
    for (case, key, value, expected) in cases {
        let output = command(&dir, &[(key, value)]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{case}: should not start");
        assert!(text.contains(expected), "{case}: {text}");
        assert!(!text.contains("panicked"), "{case}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_server_on_the_same_files_is_refused_while_the_first_runs() {
    let dir = data_dir("locked");
    let first = Server::start(&dir, &[]);
    let failure = Server::try_start(&dir, &[])
        .err()
        .expect("the second server must not start");
    assert_ne!(failure.exit_code, Some(0));
    assert!(
        failure.output.contains("another boxoffice process"),
        "{}",
        failure.output
    );
    assert_eq!(first.stop_gracefully(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_keeps_its_order_across_a_graceful_restart() {
    let dir = data_dir("queue");
    let env = [
        ("BOXOFFICE__QUEUE__MAX_ACTIVE", "1".to_owned()),
        ("BOXOFFICE__QUEUE__ADMIT_PER_SECOND", "1".to_owned()),
    ];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let mut line = Vec::new();
    for name in ["first", "second", "third"] {
        let session = api.new_user(name).await;
        let auth = bearer(&session);
        let (_, status) = api
            .post(
                "/api/v1/queue/tokens",
                &[("authorization", &auth)],
                json!({}),
            )
            .await
            .unwrap();
        line.push((session, status["queue_token"].as_str().unwrap().to_owned()));
    }
    assert_eq!(server.stop_gracefully(), Some(0));

    let restarted = Server::start(&dir, &env);
    let api = Api::new(&restarted.base);
    assert_eq!(
        standings(&api, &line).await,
        vec![
            (json!("active"), json!(0)),
            (json!("waiting"), json!(1)),
            (json!("waiting"), json!(2))
        ]
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every token's `(status, position)`, in the order given.
async fn standings(api: &Api, line: &[(String, String)]) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    for (session, token) in line {
        let auth = bearer(session);
        let (status, body) = api
            .get(
                "/api/v1/queue/tokens/current",
                &[("authorization", &auth), ("x-queue-token", token)],
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["reissued"], false,
            "the same token still stands: {body}"
        );
        seen.push((body["status"].clone(), body["position"].clone()));
    }
    seen
}

async fn room_report(api: &Api, room: &str) -> Value {
    let admin = format!("Bearer {ADMIN}");
    let path = format!("/api/v1/admin/waiting-rooms/{room}");
    let (status, body) = api.get(&path, &[("authorization", &admin)]).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A room's pre-queue survives a graceful stop; an opening that falls while the server is down
/// happens when it is back, and only once: later restarts, graceful or kill -9, find the same
/// line, because the order was fixed when the room was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_missed_while_down_happens_once_when_the_server_is_back() {
    let dir = data_dir("opening");
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "3600".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let opens_in = Duration::from_secs(3);
    let opens_at = time::OffsetDateTime::now_utc() + opens_in;
    let admin = format!("Bearer {ADMIN}");
    let (status, concert) = api
        .post(
            "/api/v1/admin/concerts",
            &[("authorization", &admin)],
            json!({
                "title": "Opening", "venue": "Hall",
                "sale_opens_at": opens_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "waiting_room": {"max_active": 2, "admit_per_second": 1000},
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{concert}");
    let concert = concert["concert_id"].as_str().unwrap().to_owned();
    let mut line = Vec::new();
    for n in 0..6 {
        let session = api.new_user(&format!("early{n}")).await;
        let auth = bearer(&session);
        let (status, body) = api
            .post(
                "/api/v1/queue/tokens",
                &[("authorization", &auth)],
                json!({ "concert_id": concert }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "pre_queue", "{body}");
        line.push((session, body["queue_token"].as_str().unwrap().to_owned()));
    }
    assert_eq!(server.stop_gracefully(), Some(0));

    // Kept exactly across a graceful restart before the opening.
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    assert_eq!(
        standings(&api, &line).await,
        vec![(json!("pre_queue"), json!(6)); 6]
    );
    assert_eq!(server.stop_gracefully(), Some(0));

    // Down across the opening; back after it.
    let left = opens_at - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let report = room_report(&api, &concert).await;
    assert_eq!(report["pre_queue"], json!(0), "{report}");
    assert_eq!(report["admitted_total"], json!(2), "{report}");
    let opened = standings(&api, &line).await;
    let mut places: Vec<u64> = opened.iter().map(|(_, p)| p.as_u64().unwrap()).collect();
    places.sort();
    assert_eq!(places, vec![0, 0, 1, 2, 3, 4]);

    // A graceful restart keeps the line; a crash, whose snapshot predates the opening, opens
    // again from the same pre-queue into the same line.
    assert_eq!(server.stop_gracefully(), Some(0));
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    assert_eq!(standings(&api, &line).await, opened);
    assert_eq!(
        room_report(&api, &concert).await["admitted_total"],
        json!(2)
    );
    server.kill_9();
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    assert_eq!(standings(&api, &line).await, opened);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A payment ends the queue token it was made with, and a crash must not bring that token back:
/// the waiting room's snapshot predates the payment, so recovery applies the payment to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_queue_token_stays_ended_after_kill_nine() {
    let dir = data_dir("paid-token");
    let server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    let date = api.create_date(10, PRICE as u64).await;
    let (payer, bystander) = (api.new_user("payer").await, api.new_user("bystander").await);
    let payer_auth = bearer(&payer);
    let payer_token = api.admitted(&payer).await.unwrap();
    let bystander_token = api.admitted(&bystander).await.unwrap();
    let (status, body) = api
        .post(
            "/api/v1/balance/charges",
            &[("authorization", &payer_auth)],
            json!({"amount": PRICE}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, held) = api.hold(&payer, &payer_token, &date, 1).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{held}");
    // Every owner snapshots here, the waiting room with both tokens admitted.
    api.backup().await;
    let (status, body) = api
        .post(
            "/api/v1/payments",
            &[
                ("authorization", &payer_auth),
                ("x-queue-token", &payer_token),
            ],
            json!({"reservation_id": held["reservation_id"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.hold(&payer, &payer_token, &date, 2).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("queue_token_expired")),
        "the paid token still holds seats: {body}"
    );
    server.kill_9();

    let restarted = Server::start(&dir, &[]);
    let api = Api::new(&restarted.base);
    let (status, body) = api.hold(&payer, &payer_token, &date, 3).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("queue_token_expired")),
        "the paid token came back after the crash: {body}"
    );
    let (status, body) = api
        .hold(&bystander, &bystander_token, &date, 4)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the unpaid token is still admitted: {body}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A layout and best-available holds come back from a snapshot plus the log after kill -9: the
/// sections and rows as created, the holds where they were, and the index best available reads
/// rebuilt, so the next choice is the one the rule makes on the seats really taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_and_best_available_holds_survive_kill_nine() {
    let dir = data_dir("layout");
    let server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    let date = api
        .create_date_from(json!({"sections": [
            {"name": "Hall", "price": 1_000, "rows": [{"row": "A", "seats": 10}]},
            {"name": "Balcony", "price": 400, "rows": [{"row": "1", "seats": 4}]}
        ]}))
        .await;
    let mut buyers = Vec::new();
    for n in 0..4 {
        let session = api.new_user(&format!("pair{n}")).await;
        let token = api.admitted(&session).await.unwrap();
        buyers.push((session, token));
    }
    let best = |n: usize, section: &'static str| {
        let (session, token) = buyers[n].clone();
        let api = api.clone();
        let date = date.clone();
        async move {
            let bearer = format!("Bearer {session}");
            let (status, body) = api
                .post(
                    "/api/v1/reservations",
                    &[("authorization", &bearer), ("x-queue-token", &token)],
                    json!({"date_id": date, "best_available": {"quantity": 2, "section": section}}),
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["seat_nos"].clone()
        }
    };
    assert_eq!(best(0, "Hall").await, json!([5, 6]));
    assert_eq!(best(1, "Hall").await, json!([3, 4]));
    // Every owner snapshots here; the next hold is only in the log.
    api.backup().await;
    assert_eq!(best(2, "Hall").await, json!([7, 8]));
    let listing = |api: Api| {
        let (session, token) = buyers[3].clone();
        let date = date.clone();
        async move {
            let bearer = format!("Bearer {session}");
            let (status, body) = api
                .get(
                    &format!("/api/v1/dates/{date}/seats"),
                    &[("authorization", &bearer), ("x-queue-token", &token)],
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let before = listing(api.clone()).await;
    server.kill_9();

    let restarted = Server::start(&dir, &[]);
    let api = Api::new(&restarted.base);
    let after = listing(api.clone()).await;
    assert_eq!(after["sections"], before["sections"]);
    let statuses = |listing: &Value| -> Vec<(Value, Value)> {
        listing["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["seat_no"].clone(), s["status"].clone()))
            .collect()
    };
    assert_eq!(statuses(&after), statuses(&before));
    let held: Vec<u64> = (3..=8).collect();
    for (seat_no, status) in statuses(&after) {
        let expected = if held.contains(&seat_no.as_u64().unwrap()) {
            "held"
        } else {
            "available"
        };
        assert_eq!(status, expected, "seat {seat_no}");
    }
    // 1–2 and 9–10 tie on distance from the middle: the lower wins. A map that forgot the
    // holds' seats in its index would offer 5–6 again.
    let (session, token) = buyers[3].clone();
    let bearer = format!("Bearer {session}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-queue-token", token.as_str()),
    ];
    let ask = |section: &'static str| {
        api.post(
            "/api/v1/reservations",
            &headers,
            json!({"date_id": date, "best_available": {"quantity": 2, "section": section}}),
        )
    };
    let (status, body) = ask("Hall").await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["seat_nos"], json!([1, 2]));
    assert_eq!(body["price"], json!(2_000));
    // In a row of four, 2–3 would strand 1 and 4: the lower clean pair, 11–12.
    let (status, body) = ask("Balcony").await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["seat_nos"], json!([11, 12]));
    assert_eq!(body["price"], json!(800));
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A date's cancellation is one event: `kill -9` at a random moment around it leaves, after
/// restart, all of it (the date cancelled, every paid reservation refunded in full to its
/// payer) or none of it, and every balance equals charges − payments + refunds. Five rounds,
/// each on its own date of 1,000 paid reservations, snapshots taken every second meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_a_cancellation_leaves_all_of_it_or_none() {
    const DATES: usize = 5;
    const USERS: usize = 20;
    const BOUGHT_PER_USER: u64 = 50;
    const PRICE: u64 = 700;
    let dir = data_dir("cancellation");
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "1".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let mut dates = Vec::new();
    for _ in 0..DATES {
        dates.push(
            api.create_date(USERS as u32 * BOUGHT_PER_USER as u32, PRICE)
                .await,
        );
    }
    let mut sessions = Vec::new();
    for n in 0..USERS {
        sessions.push(api.new_user(&format!("fan{n}")).await);
    }
    let charged = BOUGHT_PER_USER * DATES as u64 * PRICE;
    let buyers = sessions.iter().enumerate().map(|(n, session)| {
        let (api, dates, session) = (api.clone(), dates.clone(), session.clone());
        async move {
            let bearer = bearer(&session);
            let auth = [("authorization", bearer.as_str())];
            let (status, body) = api
                .post("/api/v1/balance/charges", &auth, json!({"amount": charged}))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            for date in &dates {
                for k in 0..BOUGHT_PER_USER {
                    let seat = n as u64 * BOUGHT_PER_USER + k + 1;
                    let token = api.admitted(&session).await.unwrap();
                    let (status, held) = api.hold(&session, &token, date, seat).await.unwrap();
                    assert_eq!(status, StatusCode::CREATED, "{held}");
                    let (status, paid) = api
                        .post(
                            "/api/v1/payments",
                            &[("authorization", &bearer), ("x-queue-token", &token)],
                            json!({"reservation_id": held["reservation_id"]}),
                        )
                        .await
                        .unwrap();
                    assert_eq!(status, StatusCode::CREATED, "{paid}");
                }
            }
        }
    });
    futures::future::join_all(buyers).await;
    let mut server = Some(server);

    let mut outcomes = Vec::new();
    for (round, date) in dates.iter().enumerate() {
        let running = server.take().expect("a server runs between rounds");
        let api = Api::new(&running.base);
        let cancel = {
            let (api, date) = (api.clone(), date.clone());
            tokio::spawn(async move {
                let admin = format!("Bearer {}", server::ADMIN);
                api.post(
                    &format!("/api/v1/admin/dates/{date}/cancellation"),
                    &[("authorization", &admin)],
                    json!({}),
                )
                .await
            })
        };
        // A cancellation of 1,000 reservations takes a few milliseconds here: kill within them.
        let delay = rand::thread_rng().gen_range(0..6_000);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        running.kill_9();
        let answered = matches!(cancel.await.unwrap(), Some((StatusCode::OK, _)));

        let restarted = Server::start(&dir, &env);
        let api = Api::new(&restarted.base);
        let (status, body) = api
            .get(&format!("/api/v1/dates/{date}"), &[])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let cancelled = match body["status"].as_str() {
            Some("cancelled") => true,
            Some("on_sale") => false,
            other => panic!("round {round}: status {other:?}"),
        };
        assert!(
            !answered || cancelled,
            "round {round}: an acknowledged cancellation was lost"
        );
        outcomes.push((delay, answered, cancelled));
        // Every date cancelled so far (this round's, or earlier ones') is refunded whole.
        let cancelled_dates: BTreeSet<String> = {
            let mut set = BTreeSet::new();
            for d in &dates {
                let (_, body) = api.get(&format!("/api/v1/dates/{d}"), &[]).await.unwrap();
                if body["status"] == "cancelled" {
                    set.insert(d.clone());
                }
            }
            set
        };
        for (n, session) in sessions.iter().enumerate() {
            let bearer = bearer(session);
            let auth = [("authorization", bearer.as_str())];
            let (_, balance) = api.get("/api/v1/balance", &auth).await.unwrap();
            let on_sale = (DATES - cancelled_dates.len()) as u64;
            assert_eq!(
                balance["balance"],
                json!(charged - on_sale * BOUGHT_PER_USER * PRICE),
                "round {round}, fan{n}: charges − payments + refunds"
            );
            let (_, listed) = api
                .get("/api/v1/reservations?limit=1000", &auth)
                .await
                .unwrap();
            for reservation in listed["reservations"].as_array().unwrap() {
                let expected = if cancelled_dates.contains(reservation["date_id"].as_str().unwrap())
                {
                    "refunded"
                } else {
                    "paid"
                };
                assert_eq!(
                    reservation["status"], expected,
                    "round {round}, fan{n}: {reservation}"
                );
            }
        }
        server = Some(restarted);
    }
    println!("kill -9 during cancellations (delay µs, answered, applied): {outcomes:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
