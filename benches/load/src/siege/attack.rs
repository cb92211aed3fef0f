//! The siege's attackers: connections that hold on to the server without ever finishing a
//! request, in five kinds, each connection reopened when the server closes it.
//!
//! - **slow body**: a complete `POST /api/v1/sessions` head with `Content-Length: 100`, one
//!   byte of the body, then nothing;
//! - **slowloris**: a request line, then one more header line every 5 s, the head never ended;
//! - **idle**: connects and sends nothing;
//! - **unread responses**: `GET /api/v1/reservations` and `GET /api/v1/balance/history`, signed
//!   in as a user with long lists, pipelined on a socket with a small receive buffer, and no
//!   answer ever read. The first request is sent again every 5 s: a server that has given up on
//!   the connection answers that with a reset, which is how the attacker learns of it (its close
//!   would otherwise wait behind the unread answer);
//! - **big Content-Length**: a `POST /api/v1/sessions` head announcing 1,000,000 bytes, then
//!   16 bytes of body a second.
//!
//! Attackers never come from 127.0.0.1, where the buyers and the health probes are: each binds
//! to one of 127.0.0.2, 127.0.0.3, … before connecting, at most `PER_SOURCE_MAX` to one address,
//! so a per-address connection bound on the server meets the attackers and not the buyers.
//!
//! Every attacker is bounded: a connect gives up after `CONNECT_TIMEOUT`, a reopened connection
//! waits `REOPEN_PAUSE` first, and a connection sends at most `WRITES_MAX` trickled writes. The
//! whole attack stops when `Attack::stop` is called, which closes every connection.
//!
//! The attackers run on a thread and runtime of their own: thousands of sockets opened and
//! reopened at once must not delay the buyers' requests in the generator, or the latencies the
//! siege reports would be partly its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::jitter;

/// Attacking connections from one source address, at most: under the server's per-address
/// bound (`server.max_connections_per_ip`, 256 by default).
pub const PER_SOURCE_MAX: usize = 200;
/// Attackers at most: 80 source addresses, 127.0.0.2–127.0.0.81.
pub const ATTACKERS_MAX: usize = 16_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Before reopening a connection the server closed (or could not be opened), so a server that
/// closes at once is not answered with a connection flood.
const REOPEN_PAUSE: Duration = Duration::from_millis(250);
const SLOWLORIS_EVERY: Duration = Duration::from_secs(5);
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
const TRICKLE: &[u8] = b"aaaaaaaaaaaaaaaa";
const UNREAD_REPEAT_EVERY: Duration = Duration::from_secs(5);
/// The unread-response sockets' receive buffer (the kernel doubles it): the server's answer
/// stops moving after a few KiB.
const UNREAD_RECEIVE_BUFFER_BYTES: u32 = 4_096;
/// Trickled writes (header lines, body chunks, repeated requests) per connection, at most.
const WRITES_MAX: u32 = 10_000;
/// Closing times are recorded in milliseconds, up to an hour.
const HELD_MAX_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SlowBody,
    Slowloris,
    Idle,
    UnreadResponses,
    BigContentLength,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::SlowBody,
        Kind::Slowloris,
        Kind::Idle,
        Kind::UnreadResponses,
        Kind::BigContentLength,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SlowBody => "slow body",
            Kind::Slowloris => "slowloris head",
            Kind::Idle => "idle",
            Kind::UnreadResponses => "unread responses",
            Kind::BigContentLength => "big Content-Length",
        }
    }

    /// Attacker `i`'s kind: the kinds take turns, so each gets a fifth and every source
    /// address carries all five.
    pub fn of(i: usize) -> Kind {
        Kind::ALL[i % Kind::ALL.len()]
    }
}

/// Attacker `i`'s source address: 127.0.0.2 for the first `PER_SOURCE_MAX`, and so on.
pub fn source(i: usize) -> Ipv4Addr {
    let n = 2 + i / PER_SOURCE_MAX;
    Ipv4Addr::new(127, 0, (n / 256) as u8, (n % 256) as u8)
}

/// The source addresses `count` attackers use.
pub fn sources(count: usize) -> usize {
    count.div_ceil(PER_SOURCE_MAX)
}

/// What the attackers need to know of the server.
#[derive(Clone)]
pub struct Aim {
    pub addr: SocketAddr,
    pub host: String,
    /// The session of the user whose long lists the unread-response attackers ask for.
    pub session: String,
}

#[derive(Default)]
struct KindTally {
    attackers: AtomicU64,
    /// Attackers that have had a connection open at least once.
    connected_once: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    /// Connections open now.
    open: AtomicI64,
    closed_by_server: AtomicU64,
    /// Connections on which the server sent anything (an error answer, usually) before closing.
    answered: AtomicU64,
    /// How long the server kept a connection open before closing it.
    held_ms: Mutex<Option<Histogram<u64>>>,
    first_connect_error: Mutex<Option<String>>,
}

pub struct Attack {
    kinds: Arc<[KindTally; 5]>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    count: usize,
}

impl Attack {
    /// Starts `count` attackers against `aim` on a thread of their own; they connect at once
    /// and keep at it until `stop`.
    pub fn start(aim: Aim, count: usize) -> anyhow::Result<Self> {
        let kinds: Arc<[KindTally; 5]> = Arc::new(Default::default());
        let (stop, stopped) = watch::channel(false);
        let aim = Arc::new(aim);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the attackers' runtime")?;
        for i in 0..count {
            kinds[Kind::of(i) as usize]
                .attackers
                .fetch_add(1, Ordering::Relaxed);
        }
        let thread = {
            let kinds = kinds.clone();
            std::thread::Builder::new()
                .name("siege-attackers".to_owned())
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut tasks = JoinSet::new();
                        for i in 0..count {
                            tasks.spawn(attacker(
                                aim.clone(),
                                Kind::of(i),
                                source(i),
                                kinds.clone(),
                                stopped.clone(),
                            ));
                        }
                        let mut stopped = stopped;
                        let _ = stopped.wait_for(|stop| *stop).await;
                        // Every connection closes as its task is dropped.
                        tasks.shutdown().await;
                    });
                })
                .context("the attackers' thread")?
        };
        Ok(Self {
            kinds,
            stop,
            thread,
            count,
        })
    }

    /// Reads the attack's counters while it runs.
    pub fn gauge(&self) -> Gauge {
        Gauge(self.kinds.clone())
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Stops every attacker and closes its connection; what each kind did.
    pub async fn stop(self) -> Vec<KindReport> {
        let _ = self.stop.send(true);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        Kind::ALL
            .iter()
            .map(|&kind| {
                let t = &self.kinds[kind as usize];
                let held = t.held_ms.lock();
                let quantile = |q: f64| held.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1e3);
                KindReport {
                    kind: kind.name(),
                    attackers: t.attackers.load(Ordering::Relaxed),
                    connected_once: t.connected_once.load(Ordering::Relaxed),
                    connects: t.connects.load(Ordering::Relaxed),
                    connect_failures: t.connect_failures.load(Ordering::Relaxed),
                    closed_by_server: t.closed_by_server.load(Ordering::Relaxed),
                    answered_before_close: t.answered.load(Ordering::Relaxed),
                    held_seconds_p50: quantile(0.5),
                    held_seconds_max: held.as_ref().map(|h| h.max() as f64 / 1e3),
                    first_connect_error: t.first_connect_error.lock().clone(),
                }
            })
            .collect()
    }
}

/// The attack's counters, for the progress bar and the samples.
#[derive(Clone)]
pub struct Gauge(Arc<[KindTally; 5]>);

impl Gauge {
    /// Attacking connections open now.
    pub fn open(&self) -> u64 {
        self.0
            .iter()
            .map(|k| k.open.load(Ordering::Relaxed).max(0) as u64)
            .sum()
    }

    /// Attackers that have had a connection open at least once.
    pub fn connected_once(&self) -> u64 {
        self.0
            .iter()
            .map(|k| k.connected_once.load(Ordering::Relaxed))
            .sum()
    }
}

/// One kind's attackers over the run.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    pub attackers: u64,
    pub connected_once: u64,
    /// Connections opened, reopenings included.
    pub connects: u64,
    pub connect_failures: u64,
    /// Connections the server closed (or reset) while the attacker held them.
    pub closed_by_server: u64,
    /// Of those, the ones the server sent something on first.
    pub answered_before_close: u64,
    /// How long the server kept a connection before closing it; none when it closed none.
    pub held_seconds_p50: Option<f64>,
    pub held_seconds_max: Option<f64>,
    pub first_connect_error: Option<String>,
}

/// One attacker: a connection of its kind, reopened each time the server closes it.
async fn attacker(
    aim: Arc<Aim>,
    kind: Kind,
    from: Ipv4Addr,
    kinds: Arc<[KindTally; 5]>,
    mut stopped: watch::Receiver<bool>,
) {
    let tally = &kinds[kind as usize];
    let mut ever_connected = false;
    while !*stopped.borrow() {
        let receive_buffer = (kind == Kind::UnreadResponses).then_some(UNREAD_RECEIVE_BUFFER_BYTES);
        match connect(from, aim.addr, receive_buffer).await {
            Ok(stream) => {
                tally.connects.fetch_add(1, Ordering::Relaxed);
                if !ever_connected {
                    ever_connected = true;
                    tally.connected_once.fetch_add(1, Ordering::Relaxed);
                }
                tally.open.fetch_add(1, Ordering::Relaxed);
                let opened = Instant::now();
                let closed = tokio::select! {
                    closed = hold(kind, stream, &aim) => Some(closed),
                    _ = stopped.wait_for(|stop| *stop) => None,
                };
                tally.open.fetch_sub(1, Ordering::Relaxed);
                let Some(answered) = closed else {
                    return;
                };
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                if answered {
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                }
                let held_ms = (opened.elapsed().as_millis() as u64).clamp(1, HELD_MAX_MS);
                tally
                    .held_ms
                    .lock()
                    .get_or_insert_with(|| {
                        Histogram::new_with_bounds(1, HELD_MAX_MS, 3).expect("valid bounds")
                    })
                    .saturating_record(held_ms);
            }
            Err(error) => {
                tally.connect_failures.fetch_add(1, Ordering::Relaxed);
                tally
                    .first_connect_error
                    .lock()
                    .get_or_insert_with(|| format!("from {from}: {error}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(jitter(REOPEN_PAUSE)) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

async fn connect(
    from: Ipv4Addr,
    to: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(bytes) = receive_buffer {
        // Before connecting, so the window the server sees is small from the start.
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(SocketAddr::new(from.into(), 0))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Holds one connection the way `kind` does until the server closes it; `true` when the
/// server sent something first.
async fn hold(kind: Kind, mut stream: TcpStream, aim: &Aim) -> bool {
    let host = &aim.host;
    match kind {
        Kind::Idle => read_until_closed(&mut stream).await,
        Kind::SlowBody => {
            let head = format!(
                "POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            read_until_closed(&mut stream).await
        }
        Kind::Slowloris => {
            let head = format!("GET /api/v1/balance HTTP/1.1\r\nHost: {host}\r\n");
            let line = |n: u32| format!("X-Siege-{n}: {n}\r\n").into_bytes();
            trickle(stream, head.into_bytes(), SLOWLORIS_EVERY, line).await
        }
        Kind::BigContentLength => {
            let head = format!(
                "POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000000\r\n\r\n"
            );
            trickle(stream, head.into_bytes(), TRICKLE_EVERY, |_| {
                TRICKLE.to_vec()
            })
            .await
        }
        Kind::UnreadResponses => {
            let get = |path: &str| {
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n",
                    aim.session
                )
            };
            let reservations = get("/api/v1/reservations");
            let first = format!("{reservations}{}", get("/api/v1/balance/history"));
            if stream.write_all(first.as_bytes()).await.is_err() {
                return false;
            }
            // Nothing is ever read: only a write that fails says the server is gone.
            for _ in 0..WRITES_MAX {
                tokio::time::sleep(UNREAD_REPEAT_EVERY).await;
                if stream.write_all(reservations.as_bytes()).await.is_err() {
                    return false;
                }
            }
            std::future::pending().await
        }
    }
}

/// Sends `first`, then `next(n)` every `every`, reading (and dropping) whatever the server
/// sends, until the server closes the connection.
async fn trickle(
    mut stream: TcpStream,
    first: Vec<u8>,
    every: Duration,
    next: impl Fn(u32) -> Vec<u8>,
) -> bool {
    let (mut reader, mut writer) = stream.split();
    let answered = AtomicBool::new(false);
    let writing = async {
        if writer.write_all(&first).await.is_err() {
            return;
        }
        for n in 0..WRITES_MAX {
            tokio::time::sleep(every).await;
            if writer.write_all(&next(n)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let reading = async {
        let mut buffer = [0u8; 4_096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => answered.store(true, Ordering::Relaxed),
            }
        }
    };
    tokio::select! {
        () = writing => {}
        () = reading => {}
    }
    answered.load(Ordering::Relaxed)
}

/// Reads (and drops) whatever the server sends until it closes; `true` when it sent anything.
async fn read_until_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4_096];
    let mut answered = false;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return answered,
            Ok(_) => answered = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attackers_take_turns_at_the_kinds_and_fill_each_source_address_to_its_bound() {
        let kinds: Vec<Kind> = (0..7).map(Kind::of).collect();
        assert_eq!(kinds[0], Kind::SlowBody);
        assert_eq!(kinds[4], Kind::BigContentLength);
        assert_eq!(kinds[5], Kind::SlowBody);
        assert_eq!(source(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source(PER_SOURCE_MAX - 1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source(PER_SOURCE_MAX), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(sources(4_000), 20);
        assert_eq!(sources(4_001), 21);
        assert_eq!(source(ATTACKERS_MAX - 1), Ipv4Addr::new(127, 0, 0, 81));
        // No attacker ever comes from the buyers' address.
        assert!((0..ATTACKERS_MAX).all(|i| source(i) != Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn an_idle_attacker_reconnects_from_its_own_address_after_the_server_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let aim = Aim {
            addr: listener.local_addr().unwrap(),
            host: "test".to_owned(),
            session: "s".to_owned(),
        };
        // Attacker 2 is idle.
        let attack = Attack::start(aim, 3).unwrap();
        for round in 0..2 {
            let mut peers = Vec::new();
            while peers.len() < 3 {
                let (stream, peer) = listener.accept().await.unwrap();
                peers.push((stream, peer));
            }
            assert!(peers
                .iter()
                .all(|(_, p)| p.ip() == Ipv4Addr::new(127, 0, 0, 2)));
            if round == 0 {
                // The server closes every connection; each attacker opens another.
                drop(peers);
            } else {
                // The server side accepts before the attacker's own `connect` returns and
                // counts it: wait (bounded) until every attacker counts its second connection.
                let gauge = attack.gauge();
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while gauge.open() < 3 && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let kinds = attack.stop().await;
                let idle = kinds.iter().find(|k| k.kind == "idle").unwrap();
                assert_eq!((idle.attackers, idle.connects), (1, 2));
                assert_eq!(idle.closed_by_server, 1);
                assert_eq!(idle.answered_before_close, 0);
                break;
            }
        }
    }
}
