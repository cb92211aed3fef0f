//! Durable payments per second through HTTP, with `storage.synchronous` full and normal.
//!
//! A real server on 127.0.0.1 with its log on disk; 2,048 buyers each hold a seat (untimed),
//! then 64 connections pay for all of them (timed); ten rounds. Prints payments per second,
//! latency percentiles and how many events each commit carried.
//!
//! `cargo bench --bench http_payments`

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use boxoffice::app::Application;
use boxoffice::config::{Settings, Synchronous};

const BUYERS: usize = 2_048;
const ROUNDS: usize = 10;
const CONNECTIONS: usize = 64;

struct Buyer {
    auth: String,
}

async fn post(client: &Client, url: String, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut request = client.post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn run(synchronous: Synchronous) {
    let mut settings = Settings::for_tests();
    settings.storage.synchronous = synchronous;
    settings.queue.max_active = 100_000;
    settings.queue.admit_per_second = 100_000;
    settings.server.max_in_flight = 100_000;
    let app = Application::build(settings.clone()).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let admin = [("authorization", "Bearer test-admin-token-0123456789abcdef")];
    let (_, concert) = post(
        &client,
        format!("{base}/api/v1/admin/concerts"),
        &admin,
        json!({"title": "Bench", "venue": "Loopback"}),
    )
    .await;
    let concert = concert["concert_id"].as_str().unwrap().to_owned();
    let (_, date) = post(
        &client,
        format!("{base}/api/v1/admin/concerts/{concert}/dates"),
        &admin,
        json!({"starts_at": "2031-01-01T19:00:00Z", "seat_count": 100_000, "price": 1_000}),
    )
    .await;
    let date = date["date_id"].as_str().unwrap().to_owned();

    let mut buyers = Vec::with_capacity(BUYERS);
    for i in 0..BUYERS {
        let credentials =
            json!({"username": format!("payer{i}"), "password": "correct horse battery"});
        post(
            &client,
            format!("{base}/api/v1/users"),
            &[],
            credentials.clone(),
        )
        .await;
        let (_, session) = post(&client, format!("{base}/api/v1/sessions"), &[], credentials).await;
        let auth = format!("Bearer {}", session["session_token"].as_str().unwrap());
        post(
            &client,
            format!("{base}/api/v1/balance/charges"),
            &[("authorization", &auth)],
            json!({"amount": 100_000}),
        )
        .await;
        buyers.push(Buyer { auth });
    }
    let buyers = Arc::new(buyers);
    let mut latencies = Vec::with_capacity(BUYERS * ROUNDS);
    let mut timed = Duration::ZERO;
    let (mut commits, mut events) = (0, 0);
    for round in 0..ROUNDS {
        let mut pending = Vec::with_capacity(BUYERS);
        for (i, buyer) in buyers.iter().enumerate() {
            let (_, token) = post(
                &client,
                format!("{base}/api/v1/queue/tokens"),
                &[("authorization", &buyer.auth)],
                json!({}),
            )
            .await;
            let token = token["queue_token"].as_str().unwrap().to_owned();
            let seat = round * BUYERS + i + 1;
            let (status, held) = post(
                &client,
                format!("{base}/api/v1/reservations"),
                &[("authorization", &buyer.auth), ("x-queue-token", &token)],
                json!({"date_id": date, "seat_no": seat}),
            )
            .await;
            assert_eq!(status, 201, "{held}");
            pending.push((
                i,
                token,
                held["reservation_id"].as_str().unwrap().to_owned(),
            ));
        }
        let permits = Arc::new(Semaphore::new(CONNECTIONS));
        let before = stats(&client, &base).await;
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(BUYERS);
        for (i, token, reservation) in pending {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let client = client.clone();
            let buyers = buyers.clone();
            let url = format!("{base}/api/v1/payments");
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let (status, body) = post(
                    &client,
                    url,
                    &[
                        ("authorization", &buyers[i].auth),
                        ("x-queue-token", &token),
                    ],
                    json!({"reservation_id": reservation}),
                )
                .await;
                drop(permit);
                assert_eq!(status, 201, "{body}");
                sent.elapsed()
            }));
        }
        for task in tasks {
            latencies.push(task.await.unwrap());
        }
        timed += started.elapsed();
        let after = stats(&client, &base).await;
        commits += after.0 - before.0;
        events += after.1 - before.1;
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "synchronous={synchronous:?}: {} payments in {:.2}s = {:.0} payments/s; p50 {:?} p99 {:?} p99.9 {:?}; \
         {} events in {} commits while paying = {:.1} events/commit",
        latencies.len(),
        timed.as_secs_f64(),
        latencies.len() as f64 / timed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        events,
        commits,
        events as f64 / commits.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(settings.storage.sqlite_path.parent().unwrap());
}

async fn stats(client: &Client, base: &str) -> (u64, u64) {
    let stats: Value = client
        .get(format!("{base}/api/v1/admin/stats"))
        .header("authorization", "Bearer test-admin-token-0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        stats["log_commits"].as_u64().unwrap(),
        stats["log_events_committed"].as_u64().unwrap(),
    )
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for synchronous in [Synchronous::Full, Synchronous::Normal] {
        runtime.block_on(run(synchronous));
    }
}
