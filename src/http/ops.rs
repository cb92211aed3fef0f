//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::domain::admission::RoomReport;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The process is alive", content_type = "application/json"),
    )
)]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Rooms named in the series of `/metrics` besides the general room; the others are summed
/// under `room="other"`, so a server with thousands of concerts still exports a few series.
const NAMED_ROOMS: usize = 16;

/// Per-room series: tokens by state, admissions, order violations and waits, labelled by
/// room for the general room and the `NAMED_ROOMS` busiest own rooms. A room that leaves the
/// busiest reads 0 from then on (its series stay, as every exported series does).
fn room_metrics(app: &AppState) {
    let (named, others) = app.engine.queue.busiest_rooms(NAMED_ROOMS);
    let mut labelled = app.named_rooms.lock();
    let now: std::collections::BTreeSet<String> =
        named.iter().map(|(room, _)| room.to_string()).collect();
    for gone in labelled.difference(&now) {
        for state in ["pre_queue", "waiting", "active"] {
            metrics::gauge!("boxoffice_room_tokens", "room" => gone.clone(), "state" => state)
                .set(0.0);
        }
    }
    *labelled = now;
    let tokens = |room: String, report: &RoomReport| {
        for (state, count) in [
            ("pre_queue", report.pre_queue),
            ("waiting", report.waiting),
            ("active", report.active),
        ] {
            metrics::gauge!("boxoffice_room_tokens", "room" => room.clone(), "state" => state)
                .set(count as f64);
        }
    };
    for (room, report) in &named {
        let room = room.to_string();
        tokens(room.clone(), report);
        metrics::counter!("boxoffice_room_admissions_total", "room" => room.clone())
            .absolute(report.admitted_total);
        metrics::counter!("boxoffice_room_order_violations_total", "room" => room.clone())
            .absolute(report.order_violations);
        for (quantile, ms) in [("0.5", report.wait_ms_p50), ("0.99", report.wait_ms_p99)] {
            metrics::gauge!("boxoffice_room_wait_seconds", "room" => room.clone(), "quantile" => quantile)
                .set(ms.unwrap_or(0.0) / 1000.0);
        }
    }
    tokens("other".to_owned(), &others);
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
    )
)]
pub(super) async fn metrics(State(app): State<AppState>) -> impl axum::response::IntoResponse {
    let (waiting, active) = app.engine.queue.counts();
    metrics::gauge!("boxoffice_queue_waiting").set(waiting as f64);
    metrics::gauge!("boxoffice_queue_active").set(active as f64);
    metrics::gauge!("boxoffice_queue_admissions_per_second")
        .set(app.engine.queue.admissions_per_second(app.clock.now()));
    room_metrics(&app);
    let engine = &app.engine;
    let dates = engine.dates.all();
    let reservations: usize = dates.iter().map(|d| d.view().reservations()).sum();
    let cooldowns: usize = dates.iter().map(|d| d.view().cooldowns()).sum();
    let keys = engine.key_records();
    let (index_keys, key_index_bytes) = keys.indexed();
    metrics::gauge!("boxoffice_idempotency_index_bytes").set(key_index_bytes as f64);
    metrics::counter!("boxoffice_idempotency_store_lookups_total").absolute(keys.store_lookups());
    for (kind, count) in [
        ("idempotency_keys", keys.in_memory()),
        ("idempotency_index_keys", index_keys),
        ("reservations", reservations),
        ("queue_tokens", engine.queue.remembered()),
        ("rehold_cooldowns", cooldowns),
        ("users_holding", engine.dates.held().users()),
    ] {
        metrics::gauge!("boxoffice_records", "kind" => kind).set(count as f64);
    }
    for (actor, pending) in crate::actors::pending_calls() {
        metrics::gauge!("boxoffice_actor_calls_pending", "actor" => actor).set(pending as f64);
    }
    let connections = &app.connections;
    metrics::gauge!("boxoffice_connections_open")
        .set(connections.open.load(Ordering::Relaxed) as f64);
    metrics::counter!("boxoffice_connections_accepted_total")
        .absolute(connections.accepted.load(Ordering::Relaxed));
    for (reason, count) in [
        ("per_ip_bound", &connections.refused_per_ip),
        ("header_timeout", &connections.header_timeouts),
        ("write_timeout", &connections.write_timeouts),
        ("dropped_at_stop", &connections.dropped_at_stop),
    ] {
        metrics::counter!("boxoffice_connections_closed_total", "reason" => reason)
            .absolute(count.load(Ordering::Relaxed));
    }
    metrics::counter!("boxoffice_accept_errors_total")
        .absolute(connections.accept_errors.load(Ordering::Relaxed));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::metrics_handle().render(),
    )
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Recovered and serving", content_type = "application/json"),
        (status = 503, description = "Still recovering (`{\"status\": \"starting\"}`) or stopping (`{\"status\": \"stopping\"}`)", content_type = "application/json"),
    )
)]
pub(super) async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    if app.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else if *app.stopping.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopping"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}
