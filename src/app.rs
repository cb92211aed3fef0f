//! Builds the application from settings: starts the engine, seeds demo data, binds the
//! listener (port 0 works, so tests run many servers side by side) and serves until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::actors::Engine;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::domain::Timestamp;
use crate::http::{self, AppState};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        settings.validate()?;
        crate::telemetry::metrics_handle();
        let engine = Engine::start(&settings, clock.clone()).await?;
        if settings.seed.demo && engine.catalog.is_empty() {
            seed_demo(&engine, clock.now()).await?;
        }
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}; is another server running there? Set server.listen or BOXOFFICE__SERVER__LISTEN",
                    settings.server.listen
                )
            })?;
        let state = AppState::new(engine, Arc::new(settings), clock);
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish and stops the actors.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let engine = self.state.engine.clone();
        let ready: Arc<AtomicBool> = self.state.ready.clone();
        let router = http::router(self.state);
        ready.store(true, Ordering::SeqCst);
        tracing::info!("listening on http://{addr}");
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
        ready.store(false, Ordering::SeqCst);
        engine.stop().await;
        tracing::info!("stopped");
        Ok(())
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
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
    tracing::info!("shutting down: finishing in-flight requests");
}

const DAY_MS: i64 = 86_400_000;

async fn seed_demo(engine: &Engine, now: Timestamp) -> anyhow::Result<()> {
    let concert = engine
        .catalog
        .create_concert("boxoffice demo night".into(), "Olympic Hall, Seoul".into())
        .await?;
    for week in 1..=3 {
        engine
            .catalog
            .create_date(concert, now.plus_millis(week * 7 * DAY_MS), 50, 55_000)
            .await?;
    }
    tracing::info!("seeded a demo concert with three 50-seat dates");
    Ok(())
}
