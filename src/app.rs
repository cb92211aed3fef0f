//! Builds the application from settings: starts the engine, seeds demo data, binds the
//! listener (port 0 works, so tests run many servers side by side) and serves until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::actors::Engine;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::domain::catalog::SeatPlan;
use crate::domain::venue::{RowPlan, SectionPlan};
use crate::domain::Timestamp;
use crate::http::transport::{self, descriptors, ConnectionLimits};
use crate::http::{self, AppState};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    connection_limits: ConnectionLimits,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        settings.validate()?;
        let connection_limits = connection_limits(&settings)?;
        crate::telemetry::metrics_handle();
        let engine = Engine::start(&settings, clock.clone()).await?;
        if settings.seed.demo && engine.catalog.is_empty() {
            seed_demo(&engine, clock.now()).await?;
        }
        let listener = bind(settings.server.listen).with_context(|| {
                format!(
                    "cannot listen on {}; is another server running there? Set server.listen or BOXOFFICE__SERVER__LISTEN",
                    settings.server.listen
                )
        })?;
        let state = AppState::new(engine, Arc::new(settings), clock);
        Ok(Self {
            listener,
            state,
            connection_limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// Serves until `shutdown` resolves; then readiness turns false, live streams end, each
    /// connection gets `server.shutdown_grace_seconds` to finish its response, and the owners
    /// drain and write their snapshots.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let engine = self.state.engine.clone();
        let ready: Arc<AtomicBool> = self.state.ready.clone();
        let stopping = self.state.stopping.clone();
        let stats = self.state.connections.clone();
        let router = http::router(self.state);
        ready.store(true, Ordering::SeqCst);
        tracing::info!("listening on http://{addr}");
        let stop_ready = ready.clone();
        let drain = self.connection_limits.shutdown_drain;
        let shutdown = async move {
            shutdown.await;
            stop_ready.store(false, Ordering::SeqCst);
            stopping.send_replace(true);
            if !drain.is_zero() {
                tracing::info!(
                    seconds = drain.as_secs(),
                    "readiness is 503; serving on until the load balancer has noticed"
                );
                tokio::time::sleep(drain).await;
            }
        };
        transport::serve(
            self.listener,
            router,
            self.connection_limits,
            stats,
            shutdown,
        )
        .await;
        ready.store(false, Ordering::SeqCst);
        engine.stop().await;
        tracing::info!("stopped");
        Ok(())
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// Connections that arrive while the accept loop is busy wait in the kernel's backlog; when it
/// is full, a client's SYN is dropped and it retries only after a second. On sale day thousands
/// of clients reconnect in the same instant (slow ones closed together by a timeout, say), so the
/// backlog is as deep as the kernel allows (`net.core.somaxconn` caps it).
const LISTEN_BACKLOG: u32 = 65_535;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection layer's limits, with the connection bound fitted under the descriptor limit
/// (raised to its hard value first).
fn connection_limits(settings: &Settings) -> anyhow::Result<ConnectionLimits> {
    let server = &settings.server;
    let soft_limit = descriptors::raise_soft_limit()
        .context("cannot read the open-files limit (RLIMIT_NOFILE)")?;
    let Some(max_connections) = descriptors::fit_connections(server.max_connections, soft_limit)
    else {
        anyhow::bail!(
            "the open-files limit is {soft_limit}, too low to serve; raise it (ulimit -n, or LimitNOFILE= in the systemd unit)"
        );
    };
    if max_connections < server.max_connections {
        tracing::warn!(
            soft_limit,
            max_connections,
            "server.max_connections lowered to fit the open-files limit; raise the limit (ulimit -n, or LimitNOFILE=) to serve more"
        );
    }
    Ok(ConnectionLimits {
        header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
        write_timeout: Duration::from_secs(server.write_timeout_seconds),
        max_connections,
        max_connections_per_ip: server.max_connections_per_ip,
        shutdown_drain: Duration::from_secs(server.shutdown_drain_seconds),
        shutdown_grace: Duration::from_secs(server.shutdown_grace_seconds),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests, closing connections");
}

const DAY_MS: i64 = 86_400_000;

async fn seed_demo(engine: &Engine, now: Timestamp) -> anyhow::Result<()> {
    let concert = engine
        .catalog
        .create_concert(
            "boxoffice demo night".into(),
            "Olympic Hall, Seoul".into(),
            Default::default(),
        )
        .await?;
    let rows = |labels: &[&str]| -> Vec<RowPlan> {
        labels
            .iter()
            .map(|label| RowPlan {
                label: (*label).to_owned(),
                seats: 10,
            })
            .collect()
    };
    for week in 1..=3 {
        let sections = vec![
            SectionPlan {
                name: "Floor".into(),
                price: 99_000,
                rows: rows(&["A", "B", "C"]),
            },
            SectionPlan {
                name: "Balcony".into(),
                price: 55_000,
                rows: rows(&["A", "B"]),
            },
        ];
        engine
            .catalog
            .create_date(
                concert,
                now.plus_millis(week * 7 * DAY_MS),
                SeatPlan::Sections(sections),
            )
            .await?;
    }
    tracing::info!("seeded a demo concert with three 50-seat dates");
    Ok(())
}
