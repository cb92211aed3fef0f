//! A lean HTTP/1.1 client: one hyper connection per virtual connection, handed out in turns by
//! `pool` (requests that complete a purchase first). Requests go to the server under load, or,
//! for the ceiling's `Endpoint::Bare`, to the bare server, over connections of its own. Every request of the measured phase takes a
//! ticket from the run's budget (time and request count), is timed into `Stats`, and is retried
//! — a bounded number of times — when the server asks for it (429/503 with `Retry-After`) or
//! the connection breaks. Retries keep the request's `Idempotency-Key`, so nothing applies twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::api::Endpoint;
use crate::pool::Pool;
use crate::stats::{Stats, NO_RESPONSE};

/// Attempts per request: the first plus retries after 429/503 or a broken connection.
const ATTEMPTS_MAX: u32 = 5;
/// Attempts after which a request without an answer is given up.
const ATTEMPTS_NO_RESPONSE_MAX: u32 = 3;
/// The longest `Retry-After` honoured; a longer hint is cut to this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);
const RETRY_AFTER_MIN: Duration = Duration::from_millis(50);

/// Where the server is, checked to be loopback unless the operator allows otherwise.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    host: HeaderValue,
    pub url: String,
}

impl Target {
    pub async fn resolve(url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => bail!("--url: https is not supported; run the generator next to the server over plain http"),
            _ => bail!("--url {url:?} must start with http://"),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("--url {url:?} must be the server's root, e.g. http://127.0.0.1:8080");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        // `localhost` may resolve to ::1 first while servers usually listen on 127.0.0.1.
        addrs.sort_by_key(|a| a.is_ipv6());
        let Some(addr) = addrs.first().copied() else {
            bail!("{host} resolves to no address");
        };
        if !allow_remote {
            if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                bail!(
                    "{url} resolves to {remote}, which is not a loopback address; \
                     the generator only loads servers on this machine unless --allow-remote is given"
                );
            }
        }
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str()).context("a valid Host header")?,
            url: format!("http://{authority}"),
        })
    }
}

impl Target {
    /// The `Host` header the server is sent.
    pub fn host(&self) -> &str {
        self.host.to_str().unwrap_or_default()
    }
}

/// One request as the API describes it; the client adds Host, the bearer and the headers.
pub struct Call<'a> {
    pub endpoint: Endpoint,
    /// The concrete path, e.g. `/api/v1/reservations/abc`.
    pub path: String,
    /// A session token or the admin token.
    pub bearer: Option<&'a str>,
    pub queue_token: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// Checked when the request's turn for a connection comes: `true` drops it unsent
    /// (`Unsent::Stopped`), e.g. a sign-in still queued when the date has sold out.
    pub unless: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> Call<'a> {
    pub fn new(endpoint: Endpoint, path: impl Into<String>) -> Self {
        Self {
            endpoint,
            path: path.into(),
            bearer: None,
            queue_token: None,
            idempotency_key: None,
            body: None,
            unless: None,
        }
    }
    pub fn bearer(mut self, token: &'a str) -> Self {
        self.bearer = Some(token);
        self
    }
    pub fn queue(mut self, token: &'a str) -> Self {
        self.queue_token = Some(token);
        self
    }
    pub fn key(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }
    pub fn unless(mut self, skip: Option<&'a (dyn Fn() -> bool + Sync)>) -> Self {
        self.unless = skip;
        self
    }
    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("a request body serialises"));
        self
    }
}

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    /// The problem+json `code` of an error answer.
    pub code: Option<String>,
    /// When the attempt that got this answer took its connection: the server read the request
    /// after this instant (the wait for a connection is not in it).
    pub sent_at: Instant,
}

/// Why a request has no reply.
#[derive(Debug)]
pub enum Unsent {
    /// The run's budget (time or request count) is spent; nothing was sent.
    Stopped,
    /// Every attempt ended without an HTTP answer.
    NoResponse(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Sign-ups and other preparation: counted, not measured, not budgeted.
    Setup = 0,
    /// Measured: every request is timed and takes a ticket from the budget.
    Measured = 1,
    /// The invariant check after the run: counted, not measured, not budgeted.
    Audit = 2,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A server the client sends to, and its open connections not in use.
struct Upstream {
    target: Target,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Upstream {
    fn new(target: Target, connections: usize) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::with_capacity(connections)),
        }
    }

    async fn connect_all(&self, connections: usize) -> anyhow::Result<()> {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            opened.push(connect(self.target.addr).await?);
        }
        self.idle.lock().extend(opened);
        Ok(())
    }

    /// `call` as a request to this server.
    fn request(&self, call: &Call<'_>) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(call.endpoint.method())
            .uri(call.path.as_str())
            .header(HOST, self.target.host.clone())
            .header(USER_AGENT, "boxoffice-load");
        if let Some(bearer) = call.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {bearer}"));
        }
        if let Some(token) = call.queue_token {
            request = request.header("x-queue-token", token);
        }
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.clone()))
            }
            None => Full::new(Bytes::new()),
        };
        request
            .body(body)
            .expect("paths and header values built from API ids are valid")
    }
}

struct Inner {
    /// The server under load.
    server: Upstream,
    /// The bare server, when the run floods it.
    bare: Option<Upstream>,
    turns: Pool,
    request_timeout: Duration,
    phase: AtomicU8,
    pub stats: Stats,
    unmeasured_requests: AtomicU64,
    budget: Budget,
    /// Woken whenever the run halts or a mode changes what sleepers wait for.
    wake: Notify,
    /// The timer that halts the current measured phase after its duration.
    halt_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

struct Budget {
    max_requests: AtomicU64,
    issued: AtomicU64,
    halted: AtomicBool,
    reason: Mutex<Option<&'static str>>,
}

impl Client {
    /// A client of the server at `target` and, when given, of the bare server at `bare`.
    pub fn new(
        target: Target,
        bare: Option<Target>,
        connections: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                server: Upstream::new(target, connections),
                bare: bare.map(|bare| Upstream::new(bare, connections)),
                turns: Pool::new(connections),
                request_timeout,
                phase: AtomicU8::new(Phase::Setup as u8),
                stats: Stats::new(),
                unmeasured_requests: AtomicU64::new(0),
                budget: Budget {
                    max_requests: AtomicU64::new(u64::MAX),
                    issued: AtomicU64::new(0),
                    halted: AtomicBool::new(false),
                    reason: Mutex::new(None),
                },
                wake: Notify::new(),
                halt_timer: Mutex::new(None),
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.inner.server.target.url
    }

    /// The server under load.
    pub fn target(&self) -> &Target {
        &self.inner.server.target
    }

    /// Opens every connection up front, to the server and to the bare server, so the measured
    /// phase does not time TCP handshakes.
    pub async fn connect_all(&self, connections: usize) -> anyhow::Result<()> {
        self.inner
            .server
            .connect_all(connections)
            .await
            .with_context(|| format!("cannot connect to {}; is the server running?", self.url()))?;
        if let Some(bare) = &self.inner.bare {
            bare.connect_all(connections).await.with_context(|| {
                format!("cannot connect to the bare server at {}", bare.target.url)
            })?;
        }
        Ok(())
    }

    /// Closes the idle connections to the server, so the requests that follow open their own
    /// (`siege`: the buyers' connections are opened while the attackers hold theirs).
    pub fn close_idle(&self) {
        self.inner.server.idle.lock().clear();
    }

    /// Where `endpoint`'s requests go.
    fn upstream(&self, endpoint: Endpoint) -> &Upstream {
        if endpoint.on_bare_server() {
            self.inner
                .bare
                .as_ref()
                .expect("the bare server runs in every run that floods it")
        } else {
            &self.inner.server
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Measured,
            _ => Phase::Audit,
        }
    }

    /// Requests sent outside the measured phase.
    pub fn unmeasured_requests(&self) -> u64 {
        self.inner.unmeasured_requests.load(Ordering::Relaxed)
    }

    /// Starts the measured phase: at most `max_requests` requests, and a halt after `duration`.
    /// A mode may run several measured phases one after another (`polls`: slices of the ceiling
    /// and of the polls in turn); each starts with a fresh budget, and the halt reason is the
    /// last phase's.
    pub fn begin_measured(&self, duration: Duration, max_requests: u64) -> Instant {
        let budget = &self.inner.budget;
        budget.max_requests.store(max_requests, Ordering::Release);
        budget.issued.store(0, Ordering::Release);
        *budget.reason.lock() = None;
        budget.halted.store(false, Ordering::Release);
        self.inner
            .phase
            .store(Phase::Measured as u8, Ordering::Release);
        let client = self.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            client.halt("duration");
        });
        if let Some(earlier) = self.inner.halt_timer.lock().replace(timer.abort_handle()) {
            earlier.abort();
        }
        Instant::now()
    }

    pub fn end_measured(&self) {
        self.halt("finished");
        if let Some(timer) = self.inner.halt_timer.lock().take() {
            timer.abort();
        }
        self.inner
            .phase
            .store(Phase::Audit as u8, Ordering::Release);
    }

    /// Stops the measured phase: no new request goes out. The first reason given is kept.
    pub fn halt(&self, reason: &'static str) {
        let budget = &self.inner.budget;
        {
            let mut kept = budget.reason.lock();
            if kept.is_none() {
                *kept = Some(reason);
            }
        }
        budget.halted.store(true, Ordering::Release);
        self.inner.wake.notify_waiters();
    }

    pub fn halted(&self) -> bool {
        self.inner.budget.halted.load(Ordering::Acquire)
    }

    /// Why the measured phase stopped: `finished`, `duration` or `max_requests`.
    pub fn halt_reason(&self) -> &'static str {
        self.inner.budget.reason.lock().unwrap_or("finished")
    }

    /// Wakes every `nap`.
    pub fn wake_all(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Sleeps for `duration` or until `wake_all`/`halt`, whichever comes first.
    pub async fn nap(&self, duration: Duration) {
        self.nap_unless(duration, || false).await;
    }

    /// `nap`, not taken when `done` already says so: a mode whose `wake_all` follows setting
    /// what `done` reads (a sold-out flag) cannot have it slip in before the nap begins.
    pub async fn nap_unless(&self, duration: Duration, done: impl Fn() -> bool) {
        let woken = self.inner.wake.notified();
        if (self.halted() && self.phase() == Phase::Measured) || done() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = woken => {}
        }
    }

    fn take_ticket(&self) -> Result<(), Unsent> {
        let budget = &self.inner.budget;
        if budget.halted.load(Ordering::Acquire) {
            return Err(Unsent::Stopped);
        }
        let n = budget.issued.fetch_add(1, Ordering::AcqRel);
        if n >= budget.max_requests.load(Ordering::Acquire) {
            self.halt("max_requests");
            return Err(Unsent::Stopped);
        }
        Ok(())
    }

    /// Sends `call`, retrying (bounded) on 429/503 and on a broken connection.
    ///
    /// In the measured phase a request without an `Idempotency-Key` is not retried once the run
    /// has halted; one with a key is, because its outcome (money, seats) must be known.
    pub async fn send(&self, call: &Call<'_>) -> Result<Reply, Unsent> {
        let keyed = call.idempotency_key.is_some();
        let mut no_response = 0u32;
        let mut last_failure = String::new();
        for attempt in 0..ATTEMPTS_MAX {
            let measured = self.phase() == Phase::Measured;
            if measured {
                if attempt == 0 || !keyed {
                    self.take_ticket()?;
                } else {
                    self.inner.budget.issued.fetch_add(1, Ordering::AcqRel);
                }
            } else {
                self.inner
                    .unmeasured_requests
                    .fetch_add(1, Ordering::Relaxed);
            }
            let waited = Instant::now();
            let turn = self.inner.turns.turn(call.endpoint.priority()).await;
            // The run may have halted while this request queued for a connection.
            if measured && (attempt == 0 || !keyed) && self.halted() {
                return Err(Unsent::Stopped);
            }
            if attempt == 0 && call.unless.is_some_and(|skip| skip()) {
                return Err(Unsent::Stopped);
            }
            let started = Instant::now();
            if measured {
                self.inner
                    .stats
                    .record_pool_wait((started - waited).as_micros() as u64);
            }
            // Built and boxed only once a connection is free: a hundred thousand buyers queued
            // for the pool then hold a few hundred bytes each, not a request and hyper's state.
            let upstream = self.upstream(call.endpoint);
            let outcome = Box::pin(self.exchange(upstream, upstream.request(call))).await;
            let latency_us = started.elapsed().as_micros() as u64;
            drop(turn);
            match outcome {
                Ok((status, retry_after, body)) => {
                    let code = if status >= 400 {
                        problem_code(&body)
                    } else {
                        None
                    };
                    if measured {
                        self.inner
                            .stats
                            .record(call.endpoint, status, code.as_deref(), latency_us);
                    }
                    let retryable = status == 429 || status == 503;
                    let may_retry =
                        attempt + 1 < ATTEMPTS_MAX && (keyed || !(measured && self.halted()));
                    if retryable && may_retry {
                        let wait = retry_after
                            .map(Duration::from_secs)
                            .unwrap_or(Duration::from_millis(200))
                            .clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX);
                        tokio::time::sleep(jitter(wait)).await;
                        continue;
                    }
                    return Ok(Reply {
                        status,
                        body,
                        code,
                        sent_at: started,
                    });
                }
                Err(failure) => {
                    if measured {
                        let code = if failure == "timeout" {
                            "timeout"
                        } else {
                            "no_response"
                        };
                        self.inner
                            .stats
                            .record(call.endpoint, NO_RESPONSE, Some(code), latency_us);
                    }
                    last_failure = failure;
                    no_response += 1;
                    let may_retry = no_response < ATTEMPTS_NO_RESPONSE_MAX
                        && (keyed || !(measured && self.halted()));
                    if !may_retry {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(no_response))).await;
                }
            }
        }
        Err(Unsent::NoResponse(last_failure))
    }

    /// One request on the connection the caller's permit stands for, timed from taking the
    /// connection to the last byte of the answer. A connection that fails is dropped, not
    /// pooled; the next request opens a fresh one.
    async fn exchange(
        &self,
        upstream: &Upstream,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Option<u64>, Bytes), String> {
        let pooled = upstream.idle.lock().pop();
        // A server whose listen queue is full drops the handshake, and the kernel retries it
        // for minutes: the request's timeout bounds the connect as well.
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        let mut sender = match pooled {
            Some(sender) if !sender.is_closed() => sender,
            _ => match tokio::time::timeout_at(deadline, connect(upstream.target.addr)).await {
                Ok(connected) => connected.map_err(|e| format!("connect: {e}"))?,
                Err(_) => return Err("timeout".to_owned()),
            },
        };
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, retry_after, body))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => {
                upstream.idle.lock().push(sender);
                Ok(answer)
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timeout".to_owned()),
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; either is fine.
        let _ = connection.await;
    });
    Ok(sender)
}

fn problem_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Problem {
        code: Option<String>,
    }
    serde_json::from_slice::<Problem>(body).ok()?.code
}

/// ±10 %, so retries and polls of many buyers do not stay in lockstep.
pub fn jitter(duration: Duration) -> Duration {
    use rand::Rng;
    duration.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_remote_url_is_refused_unless_allowed() {
        let refused = Target::resolve("http://192.0.2.1:8080", false).await;
        assert!(refused.unwrap_err().to_string().contains("--allow-remote"));
        assert!(Target::resolve("http://192.0.2.1:8080", true).await.is_ok());
        let local = Target::resolve("http://127.0.0.1:8080/", false)
            .await
            .unwrap();
        assert_eq!(local.url, "http://127.0.0.1:8080");
        assert!(Target::resolve("https://127.0.0.1", false).await.is_err());
        assert!(Target::resolve("http://127.0.0.1/api", false)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_connect_the_server_never_completes_is_given_up_at_the_request_timeout() {
        // A listener that never accepts, its queue full: the kernel drops further handshakes.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            let connecting =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr));
            match connecting.await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(error)) => panic!("connect: {error}"),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the listen queue never filled");
        }
        let target = Target::resolve(&format!("http://{addr}"), false)
            .await
            .unwrap();
        let client = Client::new(target, None, 1, Duration::from_millis(300));
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            client.send(&Call::new(Endpoint::Health, "/healthz")),
        )
        .await
        .expect("the request is given up well before the kernel stops retrying the handshake");
        assert!(
            matches!(&sent, Err(Unsent::NoResponse(why)) if why == "timeout"),
            "{:?}",
            sent.map(|r| r.status)
        );
    }
}
