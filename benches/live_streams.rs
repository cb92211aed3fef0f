//! What idle live streams cost the server, and how fast one change reaches all of them.
//!
//! The real binary as a child process; 2,000 buyers each open a seat stream of one 1,000-seat
//! date (plain sockets, so the client costs the server nothing extra), and then a queue stream.
//! Prints the server's RSS growth per open stream, and the time from one hold until every
//! seat stream has received it.
//!
//! `cargo bench --bench live_streams`

#[path = "../tests/durability/server.rs"]
#[allow(dead_code)]
mod server;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use server::{data_dir, Api, Server};

const STREAMS: usize = 2_000;
const SEATS: u32 = 1_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Opens a stream with a raw request and reads until its first event has arrived.
async fn open_stream(addr: &str, path: &str, session: &str, queue: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {session}\r\n\
         X-Queue-Token: {queue}\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut socket, "event: ").await;
    socket
}

/// Reads until `needle` has arrived and the event it starts is complete.
async fn read_until(socket: &mut TcpStream, needle: &str) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 16_384];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut buffer))
            .await
            .expect("the stream answers")
            .unwrap();
        assert!(n > 0, "the stream closed");
        seen.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(at) = text.find(needle) {
            if text[at..].contains("\n\n") {
                return;
            }
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = data_dir("live-streams");
    let server = Server::start(&dir, &[]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let api = Api::new(&server.base);
    let date = api.create_date(SEATS, 100).await;

    eprintln!("signing up {STREAMS} buyers…");
    let buyers: Vec<(String, String)> = futures::stream::iter(0..STREAMS)
        .map(|i| {
            let api = &api;
            async move {
                let session = api.new_user(&format!("streamer{i}")).await;
                let queue = api.admitted(&session).await.unwrap();
                (session, queue)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server.pid());

    let seat_path = format!("/api/v1/dates/{date}/seats/events");
    let mut seat_streams = Vec::with_capacity(STREAMS);
    for (session, queue) in &buyers {
        seat_streams.push(open_stream(&addr, &seat_path, session, queue).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_seat_streams = rss_kib(server.pid());

    let mut queue_streams = Vec::with_capacity(STREAMS);
    for (session, queue) in &buyers {
        queue_streams
            .push(open_stream(&addr, "/api/v1/queue/tokens/current/events", session, queue).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_both = rss_kib(server.pid());

    // One hold, and the time until every seat stream has its batch.
    let (session, queue) = &buyers[0];
    let bearer = format!("Bearer {session}");
    let started = Instant::now();
    let (status, _) = api
        .post(
            "/api/v1/reservations",
            &[("authorization", &bearer), ("x-queue-token", queue)],
            json!({"date_id": date, "seat_no": 7}),
        )
        .await
        .unwrap();
    assert!(status.is_success());
    let acknowledged = started.elapsed();
    futures::stream::iter(seat_streams.iter_mut())
        .for_each_concurrent(256, |socket| read_until(socket, "event: seats"))
        .await;
    let fanned_out = started.elapsed();

    let per_seat_stream =
        (with_seat_streams.saturating_sub(before)) as f64 * 1024.0 / STREAMS as f64;
    let per_queue_stream =
        (with_both.saturating_sub(with_seat_streams)) as f64 * 1024.0 / STREAMS as f64;
    println!("idle live streams, server RSS (real binary, {STREAMS} of each):");
    println!("  before streams            {:>8} KiB", before);
    println!(
        "  + {STREAMS} seat streams      {:>8} KiB  ({:.1} KiB per stream)",
        with_seat_streams,
        per_seat_stream / 1024.0
    );
    println!(
        "  + {STREAMS} queue streams     {:>8} KiB  ({:.1} KiB per stream)",
        with_both,
        per_queue_stream / 1024.0
    );
    println!(
        "one hold: acknowledged in {:.1} ms, in all {STREAMS} seat streams after {:.1} ms",
        acknowledged.as_secs_f64() * 1e3,
        fanned_out.as_secs_f64() * 1e3
    );
    drop(seat_streams);
    drop(queue_streams);
    server.stop_gracefully();
    let _ = std::fs::remove_dir_all(&dir);
}
