//! The buyer's page in a real browser: headless Chromium driven through ChromeDriver (W3C
//! WebDriver over HTTP on 127.0.0.1), against a real server. `.ci/run` installs Debian's
//! `chromium` and `chromium-driver` when they are missing.
//!
//! Screenshots of the seat map and the confirmation are written to
//! `target/tmp/browser-screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxoffice::app::Application;
use boxoffice::config::Settings;
use serde_json::{json, Value};

/// `Settings::for_tests()`'s admin token, as a header value.
const ADMIN: &str = "Bearer test-admin-token-0123456789abcdef";

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(8);
const PASSWORD: &str = "correct horse battery";

struct Driver {
    process: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    async fn start() -> Self {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let process = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary} ({e}): install Debian's chromium and chromium-driver \
                     (`.ci/run` does), or set CHROMEDRIVER to the driver's path"
                )
            });
        let driver = Self {
            process,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        for _ in 0..100 {
            if driver
                .client
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not start listening within 5 s");
    }

    async fn browser(&self) -> Browser<'_> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,1000"]
            }
        }}});
        let answer = self.call("POST", "/session", capabilities).await;
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a WebDriver session: {answer}"))
            .to_owned();
        Browser {
            driver: self,
            session,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(&body),
        };
        let response = request.send().await.expect("chromedriver answers");
        let value: Value = response.json().await.expect("WebDriver JSON");
        value["value"].clone()
    }
}

struct Browser<'d> {
    driver: &'d Driver,
    session: String,
}

impl Browser<'_> {
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.driver.call(method, &path, body).await
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Waits (bounded) until `css` matches a visible element, and returns its id.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .script(
                    "const e = document.querySelector(arguments[0]); \
                     return e && e.offsetParent !== null;",
                    json!([css]),
                )
                .await;
            if found == json!(true) {
                let element = self
                    .call(
                        "POST",
                        "/element",
                        json!({"using": "css selector", "value": css}),
                    )
                    .await;
                return element[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("{css}: {element}"))
                    .to_owned();
            }
            assert!(
                started.elapsed() < WAIT,
                "{css} never became visible; the page says: {}",
                self.text("#message").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits (bounded) until `css`'s text or class satisfies `check`.
    async fn wait_until(&self, what: &str, css: &str, check: impl Fn(&str, &str) -> bool) {
        let started = Instant::now();
        loop {
            let state = self
                .script(
                    "const e = document.querySelector(arguments[0]); \
                     return e ? [e.textContent, e.className] : ['', ''];",
                    json!([css]),
                )
                .await;
            let (text, class) = (
                state[0].as_str().unwrap_or_default(),
                state[1].as_str().unwrap_or_default(),
            );
            if check(text, class) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{what}: {css} is {text:?} / {class:?}; the page says: {}",
                self.text("#message").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = decode_base64(encoded.as_str().expect("a base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn sign_up(&self, username: &str) {
        self.type_into("#username", username).await;
        self.type_into("#password", PASSWORD).await;
        self.click("#sign-up").await;
    }

    /// What the page wrote to the browser's console since the last call (Chromium reports
    /// every Content-Security-Policy violation there).
    async fn console(&self) -> Vec<String> {
        let entries = self
            .call("POST", "/se/log", json!({"type": "browser"}))
            .await;
        entries
            .as_array()
            .unwrap_or_else(|| panic!("browser log entries: {entries}"))
            .iter()
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn close(self) {
        self.driver
            .call("DELETE", &format!("/session/{}", self.session), Value::Null)
            .await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (value(*c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real server (system clock) with one concert and a 12-seat date; returns it and the date.
async fn server(hold_seconds: u64) -> (Server, String) {
    server_with(|settings| settings.holds.ttl_seconds = hold_seconds).await
}

async fn server_with(configure: impl FnOnce(&mut Settings)) -> (Server, String) {
    let mut settings = Settings::for_tests();
    configure(&mut settings);
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let concert = json_of(
        client
            .post(format!("{base}/api/v1/admin/concerts"))
            .header("authorization", ADMIN)
            .json(&json!({"title": "Aurora Live", "venue": "Riverside Hall"})),
    )
    .await;
    let concert = concert["concert_id"].as_str().unwrap();
    let date = json_of(
        client
            .post(format!("{base}/api/v1/admin/concerts/{concert}/dates"))
            .header("authorization", ADMIN)
            .json(&json!({"starts_at": "2031-03-01T19:00:00Z", "seat_count": 12, "price": 1500})),
    )
    .await;
    let date = date["date_id"].as_str().unwrap().to_owned();
    (
        Server {
            base,
            stop: Some(stop),
        },
        date,
    )
}

fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id() % 100_000)
}

/// From the catalogue to the seat map: sign up and pass the (empty) waiting room.
async fn to_seat_map(browser: &Browser<'_>, server: &Server, date: &str, username: &str) {
    browser.open(&format!("{}/", server.base)).await;
    browser.click(&format!("[data-date=\"{date}\"]")).await;
    browser.sign_up(username).await;
    browser.find("#seat-grid [data-seat=\"12\"]").await;
}

async fn seat_class(browser: &Browser<'_>, seat: u32) -> String {
    browser
        .script(
            "return document.querySelector(`[data-seat=\"${arguments[0]}\"]`).className;",
            json!([seat]),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_completes_a_purchase_through_the_page() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("pagebuyer")).await;

    browser.click("[data-seat=\"3\"]").await;
    browser.click("[data-seat=\"4\"]").await;
    browser
        .wait_until("two seats chosen", "#selection", |text, _| {
            text.contains("2 of 4")
        })
        .await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    assert!(seat_class(&browser, 3).await.contains("mine"));
    browser
        .wait_until("a countdown from five minutes", "#countdown", |text, _| {
            text.starts_with("4:5") || text == "5:00"
        })
        .await;
    let seat_map = browser.screenshot("seat-map").await;

    // The page suggests the missing amount; top it up and pay.
    let amount = browser
        .script("return document.getElementById('amount').value;", json!([]))
        .await;
    assert_eq!(amount, json!("3000"));
    browser.click("#top-up").await;
    browser
        .wait_until("the top-up is confirmed", "#message", |text, _| {
            text.contains("Added 3,000 won")
        })
        .await;
    browser.click("#pay").await;
    browser
        .wait_until("the confirmation", "#confirmation", |text, _| {
            text.contains("Seats 3, 4")
        })
        .await;
    let confirmation = browser.text("#confirmation").await;
    assert!(confirmation.contains("3,000 won"), "{confirmation}");
    let receipt = browser.screenshot("confirmation").await;

    browser.click("#see-reservations").await;
    browser
        .wait_until(
            "my reservations list the paid seats",
            "#reservation-list",
            |text, _| text.contains("seats 3, 4") && text.contains("paid"),
        )
        .await;
    eprintln!("screenshots: {} {}", seat_map.display(), receipt.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_one_page_appears_on_anothers_within_a_second() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    to_seat_map(&alice, &server, &date, &unique("alice")).await;
    to_seat_map(&bob, &server, &date, &unique("bob")).await;
    assert!(seat_class(&bob, 5).await.contains("available"));

    alice.click("[data-seat=\"5\"]").await;
    alice.click("#hold").await;
    alice.find("#hold-panel").await;
    let held_at = Instant::now();
    bob.wait_until(
        "Alice's hold shows on Bob's map",
        "[data-seat=\"5\"]",
        |_, class| class.contains("held"),
    )
    .await;
    assert!(
        held_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        held_at.elapsed()
    );
    let label = bob
        .script(
            "return document.querySelector('[data-seat=\"5\"]').getAttribute('aria-label');",
            json!([]),
        )
        .await;
    assert_eq!(label, json!("Seat 5, held by someone else"));

    bob.click("[data-seat=\"8\"]").await;
    bob.click("[data-seat=\"9\"]").await;
    bob.wait_until("Bob's choice shows", "#selection", |text, _| {
        text.contains("8, 9")
    })
    .await;
    let shot = bob.screenshot("seat-map-two-buyers").await;
    eprintln!("screenshot: {}", shot.display());

    // Bob cannot take it: the page says why, and the seat is not selected.
    bob.click("[data-seat=\"5\"]").await;
    bob.wait_until("Bob is told", "#message", |text, _| {
        text.contains("Seat 5 is held by someone else")
    })
    .await;
    assert!(!seat_class(&bob, 5).await.contains("selected"));
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_expires_on_the_page_returns_the_seat() {
    let (server, date) = server(2).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("expirer")).await;
    browser.click("[data-seat=\"2\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    assert!(seat_class(&browser, 2).await.contains("mine"));
    browser
        .wait_until("the page says the hold expired", "#message", |text, _| {
            text.contains("hold expired")
        })
        .await;
    browser
        .wait_until(
            "the seat is available again",
            "[data-seat=\"2\"]",
            |_, class| class.contains("available"),
        )
        .await;
    let hidden = browser
        .script(
            "return document.getElementById('hold-panel').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_shows_the_place_in_line_and_lets_the_buyer_in_when_a_place_frees() {
    let (server, date) = server_with(|settings| {
        settings.queue.max_active = 1;
        settings.queue.admit_per_second = 1;
    })
    .await;
    let driver = Driver::start().await;
    let first = driver.browser().await;
    let second = driver.browser().await;
    to_seat_map(&first, &server, &date, &unique("first")).await;

    second.open(&format!("{}/", server.base)).await;
    second.click(&format!("[data-date=\"{date}\"]")).await;
    second.sign_up(&unique("second")).await;
    second
        .wait_until("the place in line", "#queue-status", |text, _| {
            text.contains("You are number 1 in line")
        })
        .await;

    // The first buyer leaves by buying: their admission ends and the next in line gets it.
    first.click("[data-seat=\"1\"]").await;
    first.click("#hold").await;
    first.find("#hold-panel").await;
    first.click("#top-up").await;
    first
        .wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    first.click("#pay").await;
    first.find("#confirmation").await;
    second.find("#seat-grid [data-seat=\"12\"]").await;
    assert!(seat_class(&second, 1).await.contains("sold"));
    first.close().await;
    second.close().await;
}

/// A long list of reservations comes a page at a time: the newest 100, then "Show older" for the
/// rest, and the button goes once the list is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_reservations_come_a_page_at_a_time() {
    let (server, first_date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &first_date, &unique("longlist")).await;

    // 101 reservations, made over the API with the page's own session, each on its own seat.
    let token = browser
        .script(
            "return JSON.parse(sessionStorage.getItem('session')).token;",
            json!([]),
        )
        .await;
    let auth = format!("Bearer {}", token.as_str().expect("a signed-in page"));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let concerts = json_of(client.get(api("/concerts"))).await;
    let concert = concerts["concerts"][0]["concert_id"].as_str().unwrap();
    let date = json_of(
        client
            .post(api(&format!("/admin/concerts/{concert}/dates")))
            .header("authorization", ADMIN)
            .json(&json!({"starts_at": "2031-03-02T19:00:00Z", "seat_count": 101, "price": 10})),
    )
    .await;
    let date = date["date_id"].as_str().unwrap();
    let queue = json_of(
        client
            .post(api("/queue/tokens"))
            .header("authorization", &auth),
    )
    .await;
    let queue_token = queue["queue_token"].as_str().unwrap();
    for seat in 1..=101 {
        let held = json_of(
            client
                .post(api("/reservations"))
                .header("authorization", &auth)
                .header("x-queue-token", queue_token)
                .json(&json!({"date_id": date, "seat_no": seat})),
        )
        .await;
        let id = held["reservation_id"].as_str().expect("a hold");
        let cancelled = client
            .delete(api(&format!("/reservations/{id}")))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), 204);
    }

    browser.click("#my-reservations").await;
    wait_for_count(&browser, 100).await;
    browser.click("#older-reservations").await;
    wait_for_count(&browser, 101).await;
    let hidden = browser
        .script(
            "return document.getElementById('older-reservations').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true), "nothing older is left");
    browser.close().await;
}

/// Sends a request the test expects to succeed and reads its JSON answer.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Waits (bounded) until the reservation list shows `count` entries.
async fn wait_for_count(browser: &Browser<'_>, count: u64) {
    let started = Instant::now();
    loop {
        let shown = browser
            .script(
                "return document.querySelectorAll('#reservation-list li').length;",
                json!([]),
            )
            .await;
        if shown == json!(count) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the list shows {shown} reservations, not {count}; the page says: {}",
            browser.text("#message").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The docs page works under its Content-Security-Policy: Swagger UI starts, lists the
/// operations and opens one, and the browser reports no violation of the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_works_under_its_content_security_policy() {
    let (server, _) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.open(&format!("{}/docs", server.base)).await;
    browser
        .wait_until(
            "Swagger UI shows the title",
            ".swagger-ui .info .title",
            |text, _| text.contains("boxoffice"),
        )
        .await;
    browser.click(".opblock .opblock-summary").await;
    browser.find(".opblock.is-open .opblock-body").await;
    let operations = browser
        .script(
            "return document.querySelectorAll('.opblock').length;",
            json!([]),
        )
        .await;
    assert!(operations.as_u64().unwrap_or(0) >= 20, "{operations}");
    let violations: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .filter(|message| message.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
    browser.close().await;
}
