//! The real `boxoffice` binary as a child process on its own data directory, and a small HTTP
//! client for the calls the durability tests make.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN: &str = "durability-admin-token-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh data directory for one test.
pub fn data_dir(name: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "boxoffice-durability-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Server {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How a start ended when it did not reach "listening".
#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: Option<i32>,
    pub output: String,
}

pub fn command(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_boxoffice"));
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("BOXOFFICE__SERVER__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE__AUTH__ARGON2_MEMORY_KIB", "8")
        .env("BOXOFFICE__AUTH__ARGON2_ITERATIONS", "1")
        .env("BOXOFFICE__ADMIN__TOKEN", ADMIN)
        .env("BOXOFFICE__SEED__DEMO", "false")
        .env("BOXOFFICE__QUEUE__MAX_ACTIVE", "10000")
        .env("BOXOFFICE__QUEUE__ADMIT_PER_SECOND", "10000")
        .env("BOXOFFICE__LIMITS__SESSION_REQUESTS_PER_SECOND", "0")
        .env("BOXOFFICE__LIMITS__AUTH_ATTEMPTS_PER_MINUTE_PER_IP", "0")
        .env("BOXOFFICE__STORAGE__SQLITE_PATH", dir.join("boxoffice.db"))
        .env("BOXOFFICE__STORAGE__SNAPSHOT_DIR", dir.join("snapshots"));
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

impl Server {
    pub fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        Self::try_start(dir, env).unwrap_or_else(|f| panic!("server did not start: {f:?}"))
    }

    /// Starts the binary and waits (at most 60 s) for its `listening on` line.
    pub fn try_start(dir: &Path, env: &[(&str, String)]) -> Result<Self, StartFailure> {
        Self::try_start_command(command(dir, env))
    }

    /// As `try_start`, with a command the caller has adjusted (limits, environment).
    pub fn try_start_command(mut command: Command) -> Result<Self, StartFailure> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the boxoffice binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    return Ok(Self {
                        child,
                        base: format!("http://{addr}"),
                        log,
                    })
                }
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        // Let the reader threads drain what the process printed.
                        let drained = Instant::now() + Duration::from_secs(2);
                        while Instant::now() < drained
                            && rx.recv_timeout(Duration::from_millis(20)).is_ok()
                        {
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        return Err(StartFailure {
                            exit_code: status.code(),
                            output: log.lock().unwrap().join("\n"),
                        });
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no `listening on` line within 60 s"
                    );
                }
            }
        }
    }

    /// The server process's id, to read its memory from /proc.
    #[allow(dead_code)] // Used by benches/live_streams.rs, not by every includer.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL: no flush, no snapshot, nothing graceful.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    #[allow(dead_code)] // Used by the durability tests, not by benches/live_streams.rs.
    /// The exit code once the process ends by itself, or `None` if it still runs after `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then the exit code (at most 30 s).
    pub fn stop_gracefully(mut self) -> Option<i32> {
        self.send_sigterm();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    pub fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thin client: every call returns the status and the JSON body, or `None` when the server
/// could not be reached (it was killed).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

pub type Answer = Option<(StatusCode, Value)>;

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status();
        let bytes = response.bytes().await.ok()?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Some((status, value))
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call(reqwest::Method::GET, path, headers, None).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, headers, Some(body))
            .await
    }

    pub async fn create_date(&self, seats: u32, price: u64) -> String {
        self.create_date_from(json!({"seat_count": seats, "price": price}))
            .await
    }

    /// A date of a new concert, its seats as `seats` describes them (`{seat_count, price}` or
    /// `{sections}`).
    pub async fn create_date_from(&self, seats: Value) -> String {
        let admin = format!("Bearer {ADMIN}");
        let auth = [("authorization", admin.as_str())];
        let (status, concert) = self
            .post(
                "/api/v1/admin/concerts",
                &auth,
                json!({"title": "Kill nine", "venue": "Disk"}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{concert}");
        let concert_id = concert["concert_id"].as_str().unwrap().to_owned();
        let mut body = seats;
        body["starts_at"] = json!("2031-01-01T19:00:00Z");
        let (status, date) = self
            .post(
                &format!("/api/v1/admin/concerts/{concert_id}/dates"),
                &auth,
                body,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{date}");
        date["date_id"].as_str().unwrap().to_owned()
    }

    /// Signs up and in; returns the session token.
    pub async fn new_user(&self, username: &str) -> String {
        let credentials = json!({"username": username, "password": PASSWORD});
        let (status, body) = self
            .post("/api/v1/users", &[], credentials.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .post("/api/v1/sessions", &[], credentials)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_token"].as_str().unwrap().to_owned()
    }

    /// Holds `seat` of `date` for the user of `session`, admitted with `queue_token`.
    pub async fn hold(&self, session: &str, queue_token: &str, date: &str, seat: u64) -> Answer {
        let bearer = format!("Bearer {session}");
        self.post(
            "/api/v1/reservations",
            &[("authorization", &bearer), ("x-queue-token", queue_token)],
            json!({"date_id": date, "seat_nos": [seat]}),
        )
        .await
    }

    /// An active queue token (the tests configure room for everyone).
    pub async fn admitted(&self, session: &str) -> Option<String> {
        let bearer = format!("Bearer {session}");
        let (status, body) = self
            .post(
                "/api/v1/queue/tokens",
                &[("authorization", &bearer)],
                json!({}),
            )
            .await?;
        assert!(status.is_success(), "{status} {body}");
        assert_eq!(body["status"], "active", "{body}");
        Some(body["queue_token"].as_str().unwrap().to_owned())
    }

    /// Asks for a backup, which snapshots every owner first; panics unless it is made.
    pub async fn backup(&self) {
        let admin = format!("Bearer {ADMIN}");
        let (status, body) = self
            .post(
                "/api/v1/admin/backups",
                &[("authorization", &admin)],
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn admin_stats(&self) -> Value {
        let admin = format!("Bearer {ADMIN}");
        let (status, body) = self
            .get("/api/v1/admin/stats", &[("authorization", &admin)])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        body
    }
}
