//! Concurrent real clients against the real binary, killed with SIGKILL and restarted under
//! them, their history recorded and checked by an outside linearizability checker
//! (`history.rs`). A failing history is saved as a file; `BOXOFFICE_HISTORY=<file>` replays it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::history::{self, Entry, History, Op, Ret, MAX_BALANCE};
use crate::server::{data_dir, Api, Server};

const SEATS: u32 = 10;
const PRICE: u64 = 1_000;
const FEE_PERCENT: u64 = 10;
const USERS: u32 = 3;
/// Two clients per user, so a balance and a user's reservations see concurrent requests.
const CLIENTS_PER_USER: u32 = 2;
const KILLS: usize = 8;
/// Per client and round, a bound; the kill comes first.
const OPS_PER_ROUND_MAX: usize = 1_000;

/// Starts and ends of every request, numbered from one counter under one lock.
#[derive(Default)]
struct Recorder {
    inner: Mutex<(u64, Vec<Option<Entry>>)>,
    kills: Mutex<Vec<u64>>,
}

impl Recorder {
    fn invoke(&self, client: u32, user: u32, op: Op) -> usize {
        let mut inner = self.inner.lock().unwrap();
        inner.0 += 1;
        let invoked = inner.0;
        inner.1.push(Some(Entry {
            client,
            user,
            op,
            invoked,
            returned: None,
            ret: None,
        }));
        inner.1.len() - 1
    }

    fn answer(&self, index: usize, ret: Ret) {
        let mut inner = self.inner.lock().unwrap();
        inner.0 += 1;
        let returned = inner.0;
        let entry = inner.1[index].as_mut().unwrap();
        entry.returned = Some(returned);
        entry.ret = Some(ret);
    }

    /// Marks a SIGKILL: every request started before it that has no answer ended here.
    fn kill(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.0 += 1;
        self.kills.lock().unwrap().push(inner.0);
    }

    /// Whether `client`'s last request is still unanswered.
    fn in_flight(&self, client: u32) -> bool {
        let inner = self.inner.lock().unwrap();
        let last = inner.1.iter().rev().flatten().find(|e| e.client == client);
        last.is_some_and(|e| e.returned.is_none())
    }

    /// The connection was refused: the request never reached a server.
    fn never_sent(&self, index: usize) {
        self.inner.lock().unwrap().1[index] = None;
    }

    fn history(&self) -> History {
        History {
            seats: SEATS,
            entries: self
                .inner
                .lock()
                .unwrap()
                .1
                .iter()
                .flatten()
                .cloned()
                .collect(),
            kills: self.kills.lock().unwrap().clone(),
        }
    }
}

struct User {
    id: u32,
    session: String,
    token: Mutex<Option<String>>,
    /// Reservations this user was given, with their seat; stale ones are asked about too.
    reservations: Mutex<Vec<(u32, String)>>,
}

/// How a request ended.
enum Sent {
    Answered(u16, Value),
    /// Refused at connect: it changed nothing.
    ConnectionRefused,
    /// Sent, and no answer came: it may have taken effect.
    Lost,
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Sent {
    let mut request = http.request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Sent::ConnectionRefused,
        Err(_) => return Sent::Lost,
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(bytes) => Sent::Answered(
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        Err(_) => Sent::Lost,
    }
}

fn refused(status: u16, body: &Value) -> Ret {
    Ret::Refused {
        status,
        code: body["code"].as_str().unwrap_or("").to_owned(),
    }
}

fn amount(body: &Value, field: &str) -> u64 {
    body[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` in {body}"))
}

struct Client {
    id: u32,
    user: Arc<User>,
    http: reqwest::Client,
    base: String,
    date: String,
    recorder: Arc<Recorder>,
    /// Answers no contract allows (a 5xx other than 503, a 400): a failure of their own.
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl Client {
    /// An active queue token, outside the history (tokens are not among the checked objects).
    async fn token(&self) -> Option<String> {
        if let Some(token) = self.user.token.lock().unwrap().clone() {
            return Some(token);
        }
        let bearer = format!("Bearer {}", self.user.session);
        match send(
            &self.http,
            &self.base,
            Method::POST,
            "/api/v1/queue/tokens",
            &[("authorization", &bearer)],
            Some(json!({})),
        )
        .await
        {
            Sent::Answered(status, body) if status < 300 && body["status"] == "active" => {
                let token = body["queue_token"].as_str().unwrap().to_owned();
                *self.user.token.lock().unwrap() = Some(token.clone());
                Some(token)
            }
            Sent::Answered(..) => None,
            Sent::ConnectionRefused | Sent::Lost => None,
        }
    }

    /// Sends one recorded request; `false` once the server is gone.
    async fn request(&self, op: Op) -> bool {
        let bearer = format!("Bearer {}", self.user.session);
        let needs_token = matches!(op, Op::Hold { .. } | Op::Pay { .. } | Op::ReadSeats);
        let token = if needs_token {
            match self.token().await {
                Some(token) => Some(token),
                None => return false,
            }
        } else {
            None
        };
        let mut headers = vec![("authorization", bearer.as_str())];
        if let Some(token) = &token {
            headers.push(("x-queue-token", token.as_str()));
        }
        let (method, path, body) = match &op {
            Op::Hold { seat } => (
                Method::POST,
                "/api/v1/reservations".to_owned(),
                Some(json!({"date_id": self.date, "seat_no": seat})),
            ),
            Op::Cancel { reservation, .. } => (
                Method::DELETE,
                format!("/api/v1/reservations/{reservation}"),
                None,
            ),
            Op::Pay { reservation, .. } => (
                Method::POST,
                "/api/v1/payments".to_owned(),
                Some(json!({"reservation_id": reservation})),
            ),
            Op::Refund { reservation, .. } => (
                Method::POST,
                "/api/v1/refunds".to_owned(),
                Some(json!({"reservation_id": reservation})),
            ),
            Op::Charge { amount } => (
                Method::POST,
                "/api/v1/balance/charges".to_owned(),
                Some(json!({"amount": amount})),
            ),
            Op::ReadSeats => (
                Method::GET,
                format!("/api/v1/dates/{}/seats", self.date),
                None,
            ),
            Op::ReadBalance => (Method::GET, "/api/v1/balance".to_owned(), None),
        };
        let index = self.recorder.invoke(self.id, self.user.id, op.clone());
        let (status, body) = match send(&self.http, &self.base, method, &path, &headers, body).await
        {
            Sent::Answered(status, body) => (status, body),
            Sent::ConnectionRefused => {
                self.recorder.never_sent(index);
                return false;
            }
            Sent::Lost => return false,
        };
        let ok = (200..300).contains(&status);
        let ret = match (&op, ok) {
            (Op::Hold { seat }, true) => {
                let reservation = body["reservation_id"].as_str().unwrap().to_owned();
                self.user
                    .reservations
                    .lock()
                    .unwrap()
                    .push((*seat, reservation.clone()));
                Ret::Held { reservation }
            }
            (Op::Cancel { .. }, true) => Ret::Cancelled,
            (Op::Pay { .. }, true) => {
                // A payment ends the queue token.
                *self.user.token.lock().unwrap() = None;
                Ret::Paid {
                    balance: amount(&body, "balance"),
                }
            }
            (Op::Refund { .. }, true) => Ret::Refunded {
                balance: amount(&body, "balance"),
            },
            (Op::Charge { .. }, true) => Ret::Charged {
                balance: amount(&body, "balance"),
            },
            (Op::ReadSeats, true) => {
                let seats = body["seats"].as_array().expect("a seat listing");
                assert_eq!(seats.len(), SEATS as usize, "{body}");
                Ret::Seats(
                    seats
                        .iter()
                        .map(|s| s["status"].as_str().unwrap().to_owned())
                        .collect(),
                )
            }
            (Op::ReadBalance, true) => Ret::Balance(amount(&body, "balance")),
            (_, false) => {
                let ret = refused(status, &body);
                if matches!(&ret, Ret::Refused { code, .. }
                    if code.starts_with("queue_token") || code == "not_admitted")
                {
                    *self.user.token.lock().unwrap() = None;
                }
                if (status >= 500 && status != 503) || status == 400 {
                    self.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{op:?} -> {status} {body}"));
                }
                ret
            }
        };
        self.recorder.answer(index, ret);
        true
    }

    fn pick(&self, rng: &mut StdRng) -> Op {
        let known = self.user.reservations.lock().unwrap().clone();
        let roll = if known.is_empty() {
            rng.gen_range(0..40)
        } else {
            rng.gen_range(0..100)
        };
        let pick = if known.is_empty() {
            0
        } else {
            rng.gen_range(0..known.len())
        };
        let reservation = || known[pick].clone();
        match roll {
            0..=19 => Op::Hold {
                seat: rng.gen_range(1..=SEATS),
            },
            20..=29 => Op::Charge {
                amount: rng.gen_range(1..=1_500),
            },
            30..=35 => Op::ReadBalance,
            36..=39 => Op::ReadSeats,
            40..=54 => {
                let (seat, reservation) = reservation();
                Op::Pay {
                    seat,
                    reservation,
                    price: PRICE,
                }
            }
            55..=69 => {
                let (seat, reservation) = reservation();
                Op::Cancel { seat, reservation }
            }
            70..=79 => {
                let (seat, reservation) = reservation();
                Op::Refund {
                    seat,
                    reservation,
                    credit: PRICE - PRICE * FEE_PERCENT / 100,
                }
            }
            80..=86 => Op::ReadSeats,
            _ => Op::ReadBalance,
        }
    }

    /// Requests until the round's cap or the server's death; `true` if one was left in flight.
    async fn run(self, seed: u64) -> bool {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..OPS_PER_ROUND_MAX {
            let op = self.pick(&mut rng);
            if !self.request(op).await {
                return self.recorder.in_flight(self.id);
            }
        }
        false
    }
}

fn environment() -> Vec<(&'static str, String)> {
    vec![
        (
            "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
            "1".to_owned(),
        ),
        ("BOXOFFICE__HOLDS__REHOLD_COOLDOWN_SECONDS", "0".to_owned()),
        ("BOXOFFICE__REFUNDS__FEE_PERCENT", FEE_PERCENT.to_string()),
        ("BOXOFFICE__BALANCE__MAX_BALANCE", MAX_BALANCE.to_string()),
    ]
}

/// Rounds of concurrent clients, each ended by SIGKILL at a random moment, then a last round
/// of reads after the final restart, all in one history. Returns it, checked or not.
async fn record(name: &str, seed: u64) -> History {
    let dir = data_dir(name);
    let env = environment();
    let mut rng = StdRng::seed_from_u64(seed);
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let date = api.create_date(SEATS, PRICE).await;
    let mut users = Vec::new();
    for id in 0..USERS {
        users.push(Arc::new(User {
            id,
            session: api.new_user(&format!("linear{id}")).await,
            token: Mutex::new(None),
            reservations: Mutex::new(Vec::new()),
        }));
    }
    let recorder = Arc::new(Recorder::default());
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let mut server = Some(server);
    // A client keeps its id across rounds unless the kill left its request in flight: the
    // checker allows one request in flight per client.
    let slots = (USERS * CLIENTS_PER_USER) as usize;
    let mut client_ids: Vec<u32> = (1..=slots as u32).collect();
    let mut next_client = slots as u32;
    for round in 0..=KILLS {
        let running = server.take().unwrap_or_else(|| Server::start(&dir, &env));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let last = round == KILLS;
        let mut tasks = Vec::new();
        for (slot, user) in users
            .iter()
            .flat_map(|u| std::iter::repeat_n(u, CLIENTS_PER_USER as usize))
            .enumerate()
        {
            {
                let client = Client {
                    id: client_ids[slot],
                    user: user.clone(),
                    http: http.clone(),
                    base: running.base.clone(),
                    date: date.clone(),
                    recorder: recorder.clone(),
                    unexpected: unexpected.clone(),
                };
                let seed = rng.gen();
                tasks.push(tokio::spawn(async move {
                    if last {
                        // After the last restart: what every acknowledged change left behind.
                        client.request(Op::ReadBalance).await;
                        client.request(Op::ReadSeats).await;
                        false
                    } else {
                        client.run(seed).await
                    }
                }));
            }
        }
        if last {
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(running.stop_gracefully(), Some(0));
        } else {
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
            running.kill_9();
            recorder.kill();
            for (slot, task) in tasks.into_iter().enumerate() {
                if task.await.unwrap() {
                    next_client += 1;
                    client_ids[slot] = next_client;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(60));
        }
    }
    let unexpected = unexpected.lock().unwrap();
    assert!(
        unexpected.is_empty(),
        "answers outside the contract: {unexpected:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    recorder.history()
}

fn verdict(history: &History, name: &str) {
    if let Some(violation) = history.check() {
        let path = history::failure_path(name);
        history.save(&path);
        panic!(
            "not linearizable: {}'s history has no order the contract allows.\n{}\n\
             The whole history is saved; replay it with\n  \
             BOXOFFICE_HISTORY={} cargo test --test durability a_saved_history_replays",
            violation.object,
            violation.projection.join("\n"),
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_of_concurrent_clients_across_kill_nine_are_linearizable() {
    let seed: u64 = std::env::var("BOXOFFICE_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!(
        "history seed {seed} (BOXOFFICE_HISTORY_SEED={seed} picks the same clients' choices)"
    );
    let history = record("linearizable", seed).await;
    let (answered, in_flight) = history.counts();
    eprintln!("{answered} answered requests, {in_flight} left in flight by {KILLS} kills");
    assert!(
        answered > 200,
        "the clients did real work: {answered} answers"
    );
    assert!(
        history
            .entries
            .iter()
            .any(|e| matches!(e.ret, Some(Ret::Paid { .. }))),
        "at least one payment went through"
    );
    let checking = Instant::now();
    verdict(&history, "kill-nine");
    eprintln!("checked in {:.1} s", checking.elapsed().as_secs_f64());
}

/// The checker can fail: the histories kept with the tests get the verdict their names say,
/// and `BOXOFFICE_HISTORY=<file>` checks a saved one.
#[test]
fn a_saved_history_replays() {
    if let Some(path) = std::env::var_os("BOXOFFICE_HISTORY") {
        let history = History::load(&PathBuf::from(path));
        verdict(&history, "replayed");
        return;
    }
    let fixtures = history::fixtures();
    assert!(
        fixtures.values().any(|l| !l),
        "a failing history is among the fixtures"
    );
    for (path, linearizable) in fixtures {
        let history = History::load(&path);
        assert_eq!(
            history.check().is_none(),
            linearizable,
            "{} was judged wrongly",
            path.display()
        );
    }
}
