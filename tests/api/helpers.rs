//! Spawns a real server per test (port 0, 127.0.0.1, a `ManualClock`) and talks to it over HTTP
//! exactly as a client following API.md would.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice::app::Application;
use boxoffice::clock::{Clock, ManualClock};
use boxoffice::config::Settings;
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const QUEUE_HEADER: &str = "x-queue-token";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const PASSWORD: &str = "correct horse battery staple";
/// A concert date far in the future, as the admin API wants it.
pub const STARTS_AT: &str = "2030-05-01T19:00:00Z";

/// The only acceptable waiting: a bounded retry, in count and in time.
pub const POLL_TRIES: u32 = 100;
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
pub const POLL_DEADLINE: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A username no other test in this process uses.
pub fn unique_username() -> String {
    format!("buyer{}", next_id())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    data_dir: PathBuf,
}

/// A signed-up, signed-in user.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub token: String,
    pub user_id: String,
    pub username: String,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with `Settings::for_tests()` adjusted by `configure`, its storage in a fresh
/// directory of its own, and waits (bounded) until `/readyz` answers 200.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::for_tests();
    let data_dir = std::env::temp_dir().join(format!(
        "boxoffice-api-test-{}-{}",
        std::process::id(),
        next_id()
    ));
    std::fs::create_dir_all(&data_dir).expect("a scratch directory for the server's storage");
    settings.storage.sqlite_path = data_dir.join("boxoffice.db");
    settings.storage.snapshot_dir = data_dir.join("snapshots");
    settings.storage.backup_dir = data_dir.join("backups");
    configure(&mut settings);
    assert!(
        settings.server.listen.ip().is_loopback(),
        "tests only listen on 127.0.0.1"
    );

    let clock = ManualClock::starting_now();
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("the server builds from test settings");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain-http client");
    let test_app = TestApp {
        addr,
        clock,
        client,
        admin_token: settings.admin.token.clone(),
        settings,
        shutdown: Some(stop),
        data_dir,
    };
    let ready_url = test_app.url("/readyz");
    let client = test_app.client.clone();
    eventually("the server to be ready", || {
        let (client, url) = (client.clone(), ready_url.clone());
        async move {
            let response = client.get(url).send().await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
    test_app
}

/// Retries `attempt` until it gives `Some`, at most `POLL_TRIES` times and `POLL_DEADLINE` long.
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + POLL_DEADLINE;
    for _ in 0..POLL_TRIES {
        if let Some(value) = attempt().await {
            return value;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("gave up waiting for {what} ({POLL_TRIES} tries, at most {POLL_DEADLINE:?})");
}

pub trait RequestExt {
    fn session(self, buyer: &Buyer) -> Self;
    fn queue(self, queue_token: &str) -> Self;
    fn idempotency_key(self, key: &str) -> Self;
    /// A raw body with `Content-Type: application/json`, whatever the bytes are.
    fn raw_json(self, body: impl Into<reqwest::Body>) -> Self;
}

impl RequestExt for RequestBuilder {
    fn session(self, buyer: &Buyer) -> Self {
        self.bearer_auth(&buyer.token)
    }
    fn queue(self, queue_token: &str) -> Self {
        self.header(QUEUE_HEADER, queue_token)
    }
    fn idempotency_key(self, key: &str) -> Self {
        self.header(IDEMPOTENCY_HEADER, key)
    }
    fn raw_json(self, body: impl Into<reqwest::Body>) -> Self {
        self.header(CONTENT_TYPE, "application/json").body(body)
    }
}

impl TestApp {
    /// Asks the server to stop, as SIGTERM does, and returns at once.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A client whose connections come from `ip`, one of the loopback addresses
    /// (`127.0.0.2`, …): to the server, another client address.
    pub fn client_from(&self, ip: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<std::net::IpAddr>().expect("an IP address"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain-http client")
    }

    /// `sign_in` from `client` (see `client_from`).
    pub async fn sign_in_with(
        &self,
        client: &reqwest::Client,
        username: &str,
        password: &str,
    ) -> Response {
        client
            .post(self.url("/api/v1/sessions"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("sign in")
    }

    /// Starts a server with the same settings on a backup of this one's files, taken now: a
    /// restart, as a client sees one. Its clock starts at the real current time.
    pub async fn restarted(&self) -> TestApp {
        let response = self
            .post("/api/v1/admin/backups")
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("a backup");
        let report = assert_json(response, 201).await;
        let dir = PathBuf::from(string_field(&report, "backup_dir"));
        spawn_app_with(|settings| {
            let backup_dir = settings.storage.backup_dir.clone();
            *settings = self.settings.clone();
            settings.storage.sqlite_path = dir.join("boxoffice.db");
            settings.storage.snapshot_dir = dir.join("snapshots");
            settings.storage.backup_dir = backup_dir;
        })
        .await
    }

    /// The server's current time in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    // ----- admin -----------------------------------------------------------------------------

    pub async fn create_concert(&self, title: &str, venue: &str) -> String {
        let response = self
            .post("/api/v1/admin/concerts")
            .bearer_auth(&self.admin_token)
            .json(&json!({"title": title, "venue": venue}))
            .send()
            .await
            .expect("create concert");
        let body = assert_json(response, 201).await;
        string_field(&body, "concert_id")
    }

    pub async fn create_date(&self, concert_id: &str, seat_count: u64, price: u64) -> String {
        let response = self
            .post(&format!("/api/v1/admin/concerts/{concert_id}/dates"))
            .bearer_auth(&self.admin_token)
            .json(&json!({"starts_at": STARTS_AT, "seat_count": seat_count, "price": price}))
            .send()
            .await
            .expect("create date");
        let body = assert_json(response, 201).await;
        string_field(&body, "date_id")
    }

    /// A new concert with one date; returns `(concert_id, date_id)`.
    pub async fn concert_with_date(&self, seat_count: u64, price: u64) -> (String, String) {
        let concert = self.create_concert("Test Night", "Test Hall, Seoul").await;
        let date = self.create_date(&concert, seat_count, price).await;
        (concert, date)
    }

    pub async fn stats(&self) -> Value {
        let response = self
            .get("/api/v1/admin/stats")
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("stats");
        assert_json(response, 200).await
    }

    // ----- users -----------------------------------------------------------------------------

    pub async fn sign_up(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/users")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("sign up")
    }

    pub async fn sign_in(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/sessions")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("sign in")
    }

    /// Signs a new user up and in.
    pub async fn new_buyer(&self) -> Buyer {
        let username = unique_username();
        let signed_up = assert_json(self.sign_up(&username, PASSWORD).await, 201).await;
        let signed_in = assert_json(self.sign_in(&username, PASSWORD).await, 201).await;
        let user_id = string_field(&signed_up, "user_id");
        assert_eq!(signed_in["user_id"], json!(user_id));
        Buyer {
            token: string_field(&signed_in, "session_token"),
            user_id,
            username,
        }
    }

    // ----- queue -----------------------------------------------------------------------------

    pub async fn take_queue_token(&self, buyer: &Buyer) -> Response {
        self.post("/api/v1/queue/tokens")
            .session(buyer)
            .send()
            .await
            .expect("take a queue token")
    }

    pub async fn poll_queue(&self, buyer: &Buyer, queue_token: &str) -> Response {
        self.get("/api/v1/queue/tokens/current")
            .session(buyer)
            .queue(queue_token)
            .send()
            .await
            .expect("poll the queue")
    }

    /// Polls (bounded) until the token is active; panics if it is reissued instead.
    pub async fn wait_until_active(&self, buyer: &Buyer, queue_token: &str) {
        eventually(&format!("{} to be admitted", buyer.username), || async {
            let status = assert_json(self.poll_queue(buyer, queue_token).await, 200).await;
            assert_eq!(status["reissued"], json!(false), "{status}");
            assert_eq!(status["queue_token"], json!(queue_token), "{status}");
            (status["status"] == "active").then_some(())
        })
        .await;
    }

    /// A new buyer whose queue token is active; the token is admitted in the issuing response.
    pub async fn admitted_buyer(&self) -> (Buyer, String) {
        let buyer = self.new_buyer().await;
        let status = assert_json(self.take_queue_token(&buyer).await, 201).await;
        assert_eq!(
            status["status"], "active",
            "the test settings admit at once: {status}"
        );
        let token = string_field(&status, "queue_token");
        (buyer, token)
    }

    pub async fn admitted_buyers(&self, n: usize, concurrency: usize) -> Vec<(Buyer, String)> {
        futures::stream::iter(0..n)
            .map(|_| self.admitted_buyer())
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    // ----- seats, holds, payments ------------------------------------------------------------

    pub async fn seats_response(&self, buyer: &Buyer, queue_token: &str, date: &str) -> Response {
        self.get(&format!("/api/v1/dates/{date}/seats"))
            .session(buyer)
            .queue(queue_token)
            .send()
            .await
            .expect("list seats")
    }

    /// seat_no → status, from the seat listing (which must be well formed).
    pub async fn seat_statuses(
        &self,
        buyer: &Buyer,
        queue_token: &str,
        date: &str,
    ) -> BTreeMap<u64, String> {
        let body = assert_json(self.seats_response(buyer, queue_token, date).await, 200).await;
        assert_eq!(body["date_id"], json!(date));
        body["seats"]
            .as_array()
            .expect("seats is an array")
            .iter()
            .map(|seat| {
                (
                    seat["seat_no"].as_u64().expect("seat_no is an integer"),
                    seat["status"]
                        .as_str()
                        .expect("status is a string")
                        .to_owned(),
                )
            })
            .collect()
    }

    pub async fn hold(
        &self,
        buyer: &Buyer,
        queue_token: &str,
        date: &str,
        seats: &[u64],
    ) -> Response {
        self.post("/api/v1/reservations")
            .session(buyer)
            .queue(queue_token)
            .json(&json!({"date_id": date, "seat_nos": seats}))
            .send()
            .await
            .expect("hold seats")
    }

    pub async fn hold_ok(
        &self,
        buyer: &Buyer,
        queue_token: &str,
        date: &str,
        seats: &[u64],
    ) -> Value {
        assert_json(self.hold(buyer, queue_token, date, seats).await, 201).await
    }

    pub async fn reservation(&self, buyer: &Buyer, reservation_id: &str) -> Response {
        self.get(&format!("/api/v1/reservations/{reservation_id}"))
            .session(buyer)
            .send()
            .await
            .expect("get a reservation")
    }

    pub async fn reservation_status(&self, buyer: &Buyer, reservation_id: &str) -> String {
        let body = assert_json(self.reservation(buyer, reservation_id).await, 200).await;
        string_field(&body, "status")
    }

    pub async fn charge(&self, buyer: &Buyer, amount: u64) -> Response {
        self.post("/api/v1/balance/charges")
            .session(buyer)
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .expect("charge")
    }

    /// A charge with an `Idempotency-Key`.
    pub async fn keyed_charge(&self, buyer: &Buyer, key: &str, amount: u64) -> Response {
        self.post("/api/v1/balance/charges")
            .session(buyer)
            .idempotency_key(key)
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .expect("keyed charge")
    }

    pub async fn charge_ok(&self, buyer: &Buyer, amount: u64) -> Value {
        let body = assert_json(self.charge(buyer, amount).await, 201).await;
        assert_eq!(body["amount"], json!(amount));
        body
    }

    pub async fn pay(&self, buyer: &Buyer, queue_token: &str, reservation_id: &str) -> Response {
        self.post("/api/v1/payments")
            .session(buyer)
            .queue(queue_token)
            .json(&json!({ "reservation_id": reservation_id }))
            .send()
            .await
            .expect("pay")
    }

    pub async fn balance(&self, buyer: &Buyer) -> u64 {
        let response = self
            .get("/api/v1/balance")
            .session(buyer)
            .send()
            .await
            .expect("balance");
        let body = assert_json(response, 200).await;
        assert_eq!(body["user_id"], json!(buyer.user_id));
        body["balance"].as_u64().expect("balance is an integer")
    }

    /// The whole balance history, which these tests keep within one page.
    pub async fn history(&self, buyer: &Buyer) -> Vec<Value> {
        let response = self
            .get("/api/v1/balance/history?limit=1000")
            .session(buyer)
            .send()
            .await
            .expect("history");
        let body = assert_json(response, 200).await;
        assert!(body["next_cursor"].is_null(), "one page holds them all");
        body["entries"]
            .as_array()
            .expect("entries is an array")
            .clone()
    }
}

// ----- assertions ----------------------------------------------------------------------------

fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks the status and `Content-Type: application/json` and returns the body.
pub async fn assert_json(response: Response, status: u16) -> Value {
    let url = response.url().clone();
    let actual = response.status().as_u16();
    let content_type = content_type(&response);
    let text = response.text().await.expect("a readable body");
    assert_eq!(
        actual, status,
        "{url}: expected {status}, got {actual}: {text}"
    );
    assert!(
        content_type.starts_with("application/json"),
        "{url}: expected application/json, got {content_type:?}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text}"))
}

/// A 429 `rate_limited` problem with `Retry-After` in whole seconds; returns those seconds.
pub async fn assert_rate_limited(response: Response, context: &str) -> u64 {
    // Checked before the body is read: an accepted stream's body never ends.
    assert_eq!(
        response.status(),
        429,
        "{context}: expected 429 rate_limited, got {}",
        response.status()
    );
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_problem_for(response, 429, "rate_limited", context).await;
    let seconds = retry_after.unwrap_or_else(|| panic!("{context}: 429 without Retry-After"));
    assert!(seconds >= 1, "{context}: Retry-After {seconds}");
    seconds
}

/// Checks the status, `Content-Type: application/problem+json` and the body's `code` and
/// `status`, and that `type`, `title` and `detail` are strings. Returns the problem.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_problem_for(response, status, code, "").await
}

/// `assert_problem` that names the request (its body, say) in failure messages.
pub async fn assert_problem_for(
    response: Response,
    status: u16,
    code: &str,
    context: &str,
) -> Value {
    let url = format!("{} {context}", response.url());
    let actual = response.status().as_u16();
    let content_type = content_type(&response);
    let text = response.text().await.expect("a readable body");
    assert_eq!(
        actual, status,
        "{url}: expected {status} {code}, got {actual}: {text}"
    );
    assert!(
        content_type.starts_with("application/problem+json"),
        "{url}: expected application/problem+json, got {content_type:?}: {text}"
    );
    let problem: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: problem is not JSON ({e}): {text}"));
    assert_eq!(problem["code"], json!(code), "{url}: {text}");
    assert_eq!(problem["status"], json!(status), "{url}: {text}");
    for field in ["type", "title", "detail"] {
        assert!(
            problem[field].is_string(),
            "{url}: problem lacks {field}: {text}"
        );
    }
    problem
}

/// Any 4xx with a well-formed problem+json body; never a 5xx. Returns `(status, code)`.
pub async fn assert_client_error(response: Response, what: &str) -> (u16, String) {
    let url = response.url().clone();
    let status = response.status().as_u16();
    let content_type = content_type(&response);
    let text = response.text().await.expect("a readable body");
    assert!(
        (400..500).contains(&status),
        "{what} ({url}): expected a 4xx, got {status}: {text}"
    );
    assert!(
        content_type.starts_with("application/problem+json"),
        "{what} ({url}): expected application/problem+json, got {content_type:?}: {text}"
    );
    let problem: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what} ({url}): problem is not JSON ({e}): {text}"));
    assert_eq!(problem["status"], json!(status), "{what}: {text}");
    let code = problem["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what} ({url}): problem has no code: {text}"))
        .to_owned();
    (status, code)
}

pub fn string_field(body: &Value, field: &str) -> String {
    match &body[field] {
        Value::String(s) if !s.is_empty() => s.clone(),
        other => panic!("{field} must be a non-empty string, got {other} in {body}"),
    }
}

pub fn u64_field(body: &Value, field: &str) -> u64 {
    body[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} must be a non-negative integer in {body}"))
}

/// Parses an RFC 3339 UTC time (`Z` or `+00:00`) into milliseconds since the epoch; panics on
/// anything else. Written here so the tests do not trust the server's own formatter.
pub fn rfc3339_ms(text: &str) -> i64 {
    let fail = || -> ! { panic!("not an RFC 3339 UTC time: {text:?}") };
    let b = text.as_bytes();
    if b.len() < 20 {
        fail();
    }
    let digits = |range: std::ops::Range<usize>| -> i64 {
        let part = &text[range];
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            fail();
        }
        part.parse().unwrap_or_else(|_| fail())
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        fail();
    }
    if b[16] != b':' {
        fail();
    }
    let (year, month, day) = (digits(0..4), digits(5..7), digits(8..10));
    let (hour, minute, second) = (digits(11..13), digits(14..16), digits(17..19));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        fail();
    }
    if second > 60 {
        fail();
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            fail();
        }
        let padded = format!("{:0<3}", &fraction[..len.min(3)]);
        millis = padded.parse::<i64>().unwrap_or_else(|_| fail());
        rest = &fraction[len..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        fail();
    }
    let days = days_from_civil(year, month, day);
    days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Asserts `text` is RFC 3339 UTC and within `tolerance_ms` of `expected_ms`.
pub fn assert_time_near(text: &Value, expected_ms: i64, tolerance_ms: i64, what: &str) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, got {text}"));
    let at = rfc3339_ms(text);
    assert!(
        (at - expected_ms).abs() <= tolerance_ms,
        "{what} = {text} is {} ms away from the expected instant",
        at - expected_ms
    );
}

#[test]
fn the_rfc3339_parser_reads_utc_times() {
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(rfc3339_ms("2000-03-01T00:00:00.250Z"), 951_868_800_250);
    assert_eq!(rfc3339_ms("2030-05-01T19:00:00+00:00"), 1_903_892_400_000);
}
