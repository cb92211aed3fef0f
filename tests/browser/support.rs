//! What the browser tests share: ChromeDriver and Chromium, a real server, and buyers over the API.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxoffice::app::Application;
use boxoffice::config::Settings;
use serde_json::{json, Value};

/// `Settings::for_tests()`'s admin token, as a header value.
pub const ADMIN: &str = "Bearer test-admin-token-0123456789abcdef";

pub const AXE: &str = include_str!("axe.min.js");

pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub const WAIT: Duration = Duration::from_secs(8);

pub const PASSWORD: &str = "correct horse battery";

/// Timed tests run with no other browser test beside them: on two shared cores, a second
/// Chromium drawing its own page would be measured too.
pub static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[allow(dead_code)] // held for its lifetime only
pub enum Turn {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'static, ()>),
}

pub struct Driver {
    pub process: Child,
    pub base: String,
    pub client: reqwest::Client,
    pub _turn: Turn,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    pub async fn start() -> Self {
        Self::start_in(Turn::Shared(TIMING.read().await)).await
    }

    /// A driver for a test that measures time: it waits until no other browser test runs.
    pub async fn start_alone() -> Self {
        Self::start_in(Turn::Alone(TIMING.write().await)).await
    }

    pub async fn start_in(turn: Turn) -> Self {
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
            _turn: turn,
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

    /// A desktop browser, 1280×800.
    pub async fn browser(&self) -> Browser<'_> {
        self.browser_with(json!({}), "1280,800").await
    }

    /// A phone: a 360 px wide viewport with touch, as Chromium's device emulation gives it.
    pub async fn phone(&self) -> Browser<'_> {
        let emulation = json!({"mobileEmulation": {
            "deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2, "touch": true}
        }});
        self.browser_with(emulation, "360,740").await
    }

    pub async fn browser_with(&self, extra: Value, size: &str) -> Browser<'_> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut options = json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run",
                     format!("--window-size={size}")]
        });
        if let (Some(options), Some(extra)) = (options.as_object_mut(), extra.as_object()) {
            options.extend(extra.clone());
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": options,
            "timeouts": {"script": 60_000},
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

    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
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

pub struct Browser<'d> {
    pub driver: &'d Driver,
    pub session: String,
}

impl Browser<'_> {
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.driver.call(method, &path, body).await
    }

    pub async fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Runs a script that ends by calling its last argument with the result.
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    pub async fn reload(&self) {
        self.call("POST", "/refresh", json!({})).await;
    }

    /// Opens a second tab of the same browser (same storage) and switches to it.
    pub async fn new_tab(&self) {
        let tab = self
            .call("POST", "/window/new", json!({"type": "tab"}))
            .await;
        let handle = tab["handle"].as_str().expect("a new tab").to_owned();
        self.call("POST", "/window", json!({ "handle": handle }))
            .await;
    }

    /// Runs axe-core on the page as it is now and fails on any critical or serious finding.
    pub async fn check_accessibility(&self, screen: &str) {
        let loaded = self
            .script("return typeof window.axe === 'object';", json!([]))
            .await;
        if loaded != json!(true) {
            let source = format!("{AXE}\nreturn typeof window.axe;");
            assert_eq!(self.script(&source, json!([])).await, json!("object"));
        }
        let findings = self
            .script_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, { rules: { 'label-content-name-mismatch': { enabled: true } } }) \
                   .then(r => done(r.violations \
                     .filter(v => v.impact === 'critical' || v.impact === 'serious') \
                     .map(v => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.slice(0, 3) \
                        .map(n => n.target.join(' ')).join(' | ')}`))) \
                   .catch(e => done([`axe failed: ${e}`]));",
                json!([]),
            )
            .await;
        let findings: Vec<String> = serde_json::from_value(findings.clone())
            .unwrap_or_else(|_| panic!("axe's findings on {screen}: {findings}"));
        assert!(findings.is_empty(), "{screen}: {findings:#?}");
    }

    /// The page itself never scrolls sideways.
    pub async fn check_fits_width(&self, screen: &str) {
        let widths = self
            .script(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                json!([]),
            )
            .await;
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            scroll <= inner,
            "{screen}: the page is {scroll} px wide in a {inner} px window"
        );
    }

    /// Whether the element is wholly inside the viewport.
    pub async fn in_view(&self, css: &str) -> bool {
        self.script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect(); \
             return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight \
               && r.left >= 0 && r.right <= window.innerWidth;",
            json!([css]),
        )
        .await
            == json!(true)
    }

    /// The page's stored sign-in: `[session token, general-room queue token]`.
    pub async fn stored_tokens(&self) -> (Option<String>, Option<String>) {
        let stored = self
            .script(
                "return JSON.parse(localStorage.getItem('boxoffice.session'));",
                json!([]),
            )
            .await;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        (
            text(&stored["token"]),
            text(&stored["queueTokens"]["general"]),
        )
    }

    /// Waits (bounded) until `css` matches a visible element, and returns its id.
    pub async fn find(&self, css: &str) -> String {
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

    /// Clicks the element `css` finds. One that a redraw replaced between the finding and the
    /// click (the catalogue re-rendered, say) is found again and clicked, within `WAIT`.
    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            let element = self.find(css).await;
            let answer = self
                .call("POST", &format!("/element/{element}/click"), json!({}))
                .await;
            if answer["error"] != "stale element reference" {
                return;
            }
            assert!(started.elapsed() < WAIT, "{css} kept being replaced");
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
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

    pub async fn text(&self, css: &str) -> String {
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
    pub async fn wait_until(&self, what: &str, css: &str, check: impl Fn(&str, &str) -> bool) {
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

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = decode_base64(encoded.as_str().expect("a base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub async fn sign_up(&self, username: &str) {
        self.type_into("#username", username).await;
        self.type_into("#password", PASSWORD).await;
        self.click("#sign-up").await;
    }

    /// What the page wrote to the browser's console since the last call (Chromium reports
    /// every Content-Security-Policy violation there).
    pub async fn console(&self) -> Vec<String> {
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

    pub async fn close(self) {
        self.driver
            .call("DELETE", &format!("/session/{}", self.session), Value::Null)
            .await;
    }
}

pub fn decode_base64(text: &str) -> Vec<u8> {
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

pub struct Server {
    pub base: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real server (system clock) with one concert and a 12-seat date; returns it and the date.
pub async fn server(hold_seconds: u64) -> (Server, String) {
    server_with(|settings| settings.holds.ttl_seconds = hold_seconds).await
}

pub async fn server_with(configure: impl FnOnce(&mut Settings)) -> (Server, String) {
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

pub fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id() % 100_000)
}

/// From the catalogue to the seat map: sign up and pass the (empty) waiting room.
pub async fn to_seat_map(browser: &Browser<'_>, server: &Server, date: &str, username: &str) {
    browser.open(&format!("{}/", server.base)).await;
    browser.click(&format!("[data-date=\"{date}\"]")).await;
    browser.sign_up(username).await;
    browser.find("#seat-grid [data-seat=\"12\"]").await;
}

pub async fn seat_class(browser: &Browser<'_>, seat: u32) -> String {
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

/// Sends a request the test expects to succeed and reads its JSON answer.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Waits (bounded) until the reservation list shows `count` entries.
pub async fn wait_for_count(browser: &Browser<'_>, count: u64) {
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

/// Another buyer, over the API: signed up, signed in and admitted.
pub struct ApiBuyer {
    pub client: reqwest::Client,
    pub base: String,
    pub session: String,
    pub queue_token: String,
}

impl ApiBuyer {
    pub async fn admitted(server: &Server, username: &str) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("{}/api/v1", server.base);
        let account = json!({"username": username, "password": PASSWORD});
        let created = client
            .post(format!("{base}/users"))
            .json(&account)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let session = json_of(client.post(format!("{base}/sessions")).json(&account)).await;
        let session = format!("Bearer {}", session["session_token"].as_str().unwrap());
        let queue = json_of(
            client
                .post(format!("{base}/queue/tokens"))
                .header("authorization", &session),
        )
        .await;
        assert_eq!(queue["status"], "active", "{queue}");
        Self {
            queue_token: queue["queue_token"].as_str().unwrap().to_owned(),
            client,
            base,
            session,
        }
    }

    pub async fn leave(&self) {
        let left = self
            .client
            .delete(format!("{}/queue/tokens/current", self.base))
            .header("authorization", &self.session)
            .header("x-queue-token", &self.queue_token)
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 204);
    }

    pub async fn hold(&self, date: &str, seats: &[u32]) -> Value {
        let held = json_of(
            self.client
                .post(format!("{}/reservations", self.base))
                .header("authorization", &self.session)
                .header("x-queue-token", &self.queue_token)
                .json(&json!({"date_id": date, "seat_nos": seats})),
        )
        .await;
        assert_eq!(held["status"], "held", "{held}");
        held
    }
}

/// A date of `seats` seats on the server's first concert.
pub async fn add_date(server: &Server, seats: u32, starts_at: &str) -> String {
    add_date_from(
        server,
        json!({"starts_at": starts_at, "seat_count": seats, "price": 2500}),
    )
    .await
}

/// A date of the server's one concert, as `body` describes it (API.md's admin form).
pub async fn add_date_from(server: &Server, body: Value) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let concerts = json_of(client.get(api("/concerts"))).await;
    let concert = concerts["concerts"][0]["concert_id"].as_str().unwrap();
    let date = json_of(
        client
            .post(api(&format!("/admin/concerts/{concert}/dates")))
            .header("authorization", ADMIN)
            .json(&body),
    )
    .await;
    date["date_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a date: {date}"))
        .to_owned()
}

/// Signs up from the header's sign-in entry, and comes back to the catalogue.
pub async fn sign_up_from_header(browser: &Browser<'_>, server: &Server, username: &str) {
    browser.open(&format!("{}/", server.base)).await;
    browser.click("#sign-in-entry").await;
    browser.sign_up(username).await;
    browser
        .wait_until("signed in", "#who", |text, _| text == username)
        .await;
    browser.find("#catalog").await;
}
