//! The connection layer: our own accept loop over hyper's HTTP/1.1 connections, because every
//! phase of a connection needs a clock and `axum::serve` exposes none of them.
//!
//! - **Head (and idle).** hyper's `header_read_timeout`, which runs only with a timer set,
//!   closes a connection that has not delivered a complete request head in time. Its clock starts
//!   when the connection opens and again after each response, so an idle keep-alive connection
//!   and a slowloris head are the same case and get the same bound.
//! - **Body.** Read whole, under its own deadline, before a request counts as in flight
//!   (`edges::buffer_body`).
//! - **Write.** A response the client does not read: the socket stops taking bytes, and after
//!   `write_timeout` without progress the connection is closed and its response freed
//!   (`GuardedIo`).
//! - **Count.** At most `max_connections` open at once (the accept loop waits for a slot, so
//!   descriptors never run out) and `max_connections_per_ip` from one address (more are closed
//!   as soon as they are accepted).
//! - **Stop.** Accepting ends, every connection is asked to close after its current response,
//!   live streams end (the application's `stopping` signal), and whatever is still open after
//!   `shutdown_grace` is dropped, so a stop never waits for the slowest client.

pub mod descriptors;
mod guarded_io;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use guarded_io::GuardedIo;

/// A request head must fit in this (431 past it). nginx's default allows 32 KiB of headers; no
/// client of this API needs more.
const HEAD_BYTES_MAX: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    /// Read by the application, which keeps serving this long after a stop is asked for.
    pub shutdown_drain: Duration,
    pub shutdown_grace: Duration,
}

/// What the connection layer has seen, read by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub write_timeouts: AtomicU64,
    pub dropped_at_stop: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// Serves `router` on `listener` until `shutdown` resolves, then closes every connection within
/// `limits.shutdown_grace` and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PeerCounts::default());
    let (closing, close_rx) = watch::channel(false);
    // Every connection task holds a sender; when the last one is dropped, all have ended.
    let (alive, mut all_ended) = mpsc::channel::<Infallible>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(HEAD_BYTES_MAX);
    let http = Arc::new(http);

    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_accept_error(&stats, &error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Some(peer_slot) = peers.enter(peer.ip(), limits.max_connections_per_ip) else {
            stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            io: GuardedIo::new(stream, limits.write_timeout),
            peer,
            router: router.clone(),
            http: http.clone(),
            close_rx: close_rx.clone(),
            grace: limits.shutdown_grace,
            stats: stats.clone(),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            connection.serve().await;
            drop((slot, peer_slot, alive));
        });
    }
    drop(listener);
    let open = stats.open.load(Ordering::Relaxed);
    tracing::info!(open, "stopped accepting; closing connections");
    closing.send_replace(true);
    drop(alive);
    // Each connection bounds its own close by `grace`, so this wait is bounded too.
    let _ = all_ended.recv().await;
}

/// Out of descriptors (or another transient failure): accepting again at once would spin, and
/// the log would say it thousands of times a second.
async fn on_accept_error(stats: &ConnectionStats, error: &std::io::Error) {
    let count = stats.accept_errors.fetch_add(1, Ordering::Relaxed);
    if count.is_power_of_two() {
        tracing::warn!(
            errors_so_far = count + 1,
            "accept failed: {error}; if it says too many open files, lower server.max_connections or raise the NOFILE limit"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

struct Connection {
    io: GuardedIo,
    peer: SocketAddr,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    close_rx: watch::Receiver<bool>,
    grace: Duration,
    stats: Arc<ConnectionStats>,
}

impl Connection {
    async fn serve(self) {
        let Self {
            io,
            peer,
            router,
            http,
            mut close_rx,
            grace,
            stats,
        } = self;
        stats.open.fetch_add(1, Ordering::Relaxed);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut router.clone(), request)
        });
        let connection = http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let outcome = tokio::select! {
            outcome = connection.as_mut() => Some(outcome),
            _ = close_rx.wait_for(|closing| *closing) => None,
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(grace, connection.as_mut()).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        stats.dropped_at_stop.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                }
            }
        };
        if let Err(error) = outcome {
            if error.is_timeout() {
                stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            } else if is_write_timeout(&error) {
                stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(%peer, "connection ended: {error}");
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_write_timeout(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    false
}

/// Open connections per client address. An address leaves the map with its last connection,
/// so the map is bounded by the open connections.
#[derive(Default)]
struct PeerCounts(DashMap<IpAddr, u32>);

impl PeerCounts {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<PeerSlot> {
        let mut count = self.0.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

struct PeerSlot {
    peers: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.peers.0.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}
