//! The siege's health probes: `GET /healthz` every `EVERY`, each on a connection of its own
//! from 127.0.0.1 (as a load balancer's check comes), given `TIMEOUT` for the connect and the
//! whole status line. A probe that does not answer 200 in time counts against the server.
//!
//! The probes run on a thread and runtime of their own, so a generator busy with its buyers
//! does not make a probe late and blame the server for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

pub const EVERY: Duration = Duration::from_millis(100);
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// The status line fits in this; the rest of the answer is not read.
const HEAD_BYTES_MAX: usize = 1_024;

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// Why the others failed: `timeout`, `status 503`, `connect: …`.
    failures: BTreeMap<String, u64>,
    latency_us: Option<Histogram<u64>>,
}

/// Probes running until `stop`.
pub struct Prober {
    tally: Arc<Mutex<Tally>>,
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Prober {
    pub fn start(addr: SocketAddr, host: String) -> anyhow::Result<Self> {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the health probes' runtime")?;
        let probing = {
            let tally = tally.clone();
            async move {
                let mut probes = JoinSet::new();
                let mut ticks = tokio::time::interval(EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = &mut stopped => break,
                    }
                    // Finished probes are reaped as the run goes, so the set stays small.
                    while probes.try_join_next().is_some() {}
                    let (tally, request) = (tally.clone(), request.clone());
                    probes.spawn(async move {
                        let started = Instant::now();
                        let outcome = tokio::time::timeout(TIMEOUT, probe(addr, &request)).await;
                        let mut tally = tally.lock();
                        tally.sent += 1;
                        let failure = match outcome {
                            Ok(Ok(200)) => None,
                            Ok(Ok(status)) => Some(format!("status {status}")),
                            Ok(Err(error)) => Some(error),
                            Err(_) => Some("timeout".to_owned()),
                        };
                        match failure {
                            None => {
                                tally.ok += 1;
                                let us = (started.elapsed().as_micros() as u64).max(1);
                                tally
                                    .latency_us
                                    .get_or_insert_with(|| {
                                        Histogram::new_with_bounds(1, 60_000_000, 3)
                                            .expect("valid bounds")
                                    })
                                    .saturating_record(us);
                            }
                            Some(why) => *tally.failures.entry(why).or_insert(0) += 1,
                        }
                    });
                }
                // Every probe sent gets its outcome; each is bounded by `TIMEOUT`.
                while probes.join_next().await.is_some() {}
            }
        };
        let thread = std::thread::Builder::new()
            .name("siege-probes".to_owned())
            .spawn(move || runtime.block_on(probing))
            .context("the health probes' thread")?;
        Ok(Self {
            tally,
            thread,
            stop,
        })
    }

    /// Stops probing, waits for the probes in flight (each bounded by `TIMEOUT`), and gives
    /// the figures.
    pub async fn stop(self) -> ProbeReport {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let tally = self.tally.lock();
        let ms = |q: f64| {
            tally
                .latency_us
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1e3)
        };
        ProbeReport {
            sent: tally.sent,
            ok: tally.ok,
            ok_fraction: if tally.sent == 0 {
                0.0
            } else {
                tally.ok as f64 / tally.sent as f64
            },
            p99_ms: ms(0.99),
            max_ms: tally.latency_us.as_ref().map(|h| h.max() as f64 / 1e3),
            failures: tally.failures.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub sent: u64,
    /// Answered 200 within the timeout.
    pub ok: u64,
    pub ok_fraction: f64,
    /// Of the probes answered 200, from the connect to the status line.
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub failures: BTreeMap<String, u64>,
}

/// One probe: the status of the answer.
async fn probe(addr: SocketAddr, request: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() > HEAD_BYTES_MAX {
            return Err("no status line".to_owned());
        }
        match stream.read(&mut buffer).await {
            Ok(0) => return Err("closed without an answer".to_owned()),
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    status_of(&head).ok_or_else(|| "no status line".to_owned())
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_the_status_line() {
        assert_eq!(
            status_of(b"HTTP/1.1 200 OK\r\ncontent-length: 2"),
            Some(200)
        );
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 abc\r\n"), None);
    }
}
