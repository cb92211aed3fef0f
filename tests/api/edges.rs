//! The connection's edges, as bots attack them on sale day: bodies and heads that trickle,
//! connections that idle, responses nobody reads, one address opening many connections, input
//! the HTTP parser itself refuses. Each test is the attack at a small scale, on raw sockets.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection, and whether it did close
/// within `within` (false: the read was still waiting).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

/// One complete response on a keep-alive connection (head and a `content-length` body).
async fn read_one_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(n > 0, "closed before a whole response");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn slow_bodies_do_not_take_the_places_of_real_work() {
    let app = spawn_app_with(|s| s.server.max_in_flight = 4).await;
    let mut trickles = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            .await
            .unwrap();
        trickles.push(stream);
    }
    // Let every trickling request reach the router before the probes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/api/v1/concerts", "/healthz", "/readyz"] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "{path} with 20 bodies trickling in: {}",
            response.text().await.unwrap()
        );
    }
}

#[tokio::test]
async fn probes_answer_while_in_flight_work_is_at_its_bound() {
    // A real password hash holds the only place in flight for a while.
    let app = spawn_app_with(|s| {
        s.server.max_in_flight = 1;
        s.auth = boxoffice::config::AuthSettings::default();
    })
    .await;
    for attempt in 0..20 {
        let signing_up = {
            let request = app.post("/api/v1/users").json(&serde_json::json!({
                "username": unique_username(), "password": "a long enough password"
            }));
            tokio::spawn(request.send())
        };
        let mut saw_the_bound = false;
        while !signing_up.is_finished() {
            if app.get("/api/v1/concerts").send().await.unwrap().status() == 503 {
                saw_the_bound = true;
                break;
            }
        }
        if !saw_the_bound {
            continue;
        }
        for path in ["/healthz", "/readyz"] {
            let status = app.get(path).send().await.unwrap().status();
            assert_eq!(
                status, 200,
                "{path} while in flight is full (attempt {attempt})"
            );
        }
        signing_up.await.unwrap().unwrap();
        return;
    }
    panic!("a sign-up never held the in-flight place long enough to probe");
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_from_the_head() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text:?}");
    assert!(text.contains("\"code\":\"payload_too_large\""), "{text}");
    assert!(
        closed,
        "the unread body must not be taken for a next request"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_its_connection_is_closed() {
    let app = spawn_app_with(|s| s.server.body_read_timeout_seconds = 1).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let started = Instant::now();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(closed, "still open {:?} after the head", started.elapsed());
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_seconds = 1).await;
    let mut idle = connect(&app).await;
    let mut after_a_request = connect(&app).await;
    after_a_request
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_one_response(&mut after_a_request)
        .await
        .starts_with("HTTP/1.1 200 "));
    let mut slowloris = connect(&app).await;
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dripping = async {
        // One header line every 300 ms: always some progress, never a complete head.
        for i in 0..15 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slowloris
                .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return started.elapsed();
            }
        }
        started.elapsed()
    };
    let slow_ended_after = dripping.await;
    let (_, slowloris_closed) = read_until_closed(&mut slowloris, Duration::from_millis(500)).await;
    assert!(
        slowloris_closed && slow_ended_after < Duration::from_secs(3),
        "a head dripping for {slow_ended_after:?} was not cut off"
    );
    for (what, stream) in [("idle", &mut idle), ("kept alive", &mut after_a_request)] {
        let (received, closed) = read_until_closed(stream, Duration::from_secs(3)).await;
        assert!(closed, "the {what} connection is still open");
        assert!(received.is_empty(), "{what}: {received:?}");
    }
}

#[tokio::test]
async fn a_response_nobody_reads_is_abandoned_after_the_write_timeout() {
    let app = spawn_app_with(|s| s.server.write_timeout_seconds = 1).await;
    let (_, date) = app.concert_with_date(100_000, 1_000).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let one_listing = app
        .seats_response(&buyer, &queue_token, &date)
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    // A reader that takes nothing: a tiny receive window, and requests piped ahead.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /api/v1/dates/{date}/seats HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-queue-token: {queue_token}\r\n\r\n",
        buyer.token
    );
    const PIPED: usize = 8;
    stream
        .write_all(request.repeat(PIPED).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(
        closed,
        "the connection stayed open for a client that did not read"
    );
    assert!(
        received.len() < PIPED * one_listing,
        "all {} bytes were kept for a client that did not read",
        received.len()
    );
}

/// A connection from another loopback address than the test's own client, 127.0.0.1.
async fn connect_from(app: &TestApp, source: [u8; 4]) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    socket.connect(app.addr).await
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let app = spawn_app_with(|s| s.server.max_connections_per_ip = 4).await;
    const BOT: [u8; 4] = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(&app, BOT).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_one_response(&mut stream)
            .await
            .starts_with("HTTP/1.1 200 "));
        held.push(stream);
    }
    let mut fifth = connect_from(&app, BOT).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (received, closed) = read_until_closed(&mut fifth, Duration::from_secs(3)).await;
    assert!(
        closed && received.is_empty(),
        "a fifth connection from one address was served: {:?}",
        String::from_utf8_lossy(&received)
    );
    let others = app.get("/healthz").send().await.unwrap().status();
    assert_eq!(others, 200, "another address is served meanwhile");
    drop(held.pop());
    eventually("a place to free up for that address", || async {
        let mut stream = connect_from(&app, BOT).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let (received, _) = read_until_closed(&mut stream, Duration::from_millis(500)).await;
        received.starts_with(b"HTTP/1.1 200 ").then_some(())
    })
    .await;
}

#[tokio::test]
async fn what_the_http_parser_refuses_is_answered_as_problem_json() {
    let app = spawn_app().await;
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let big_headers = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    // A target longer than the head buffer is refused as a head too large (431); one that
    // fits but passes hyper's own URI bound would be 414 `uri_too_long`.
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), "400", "malformed_request"),
        (long_target, "431", "headers_too_large"),
        (big_headers, "431", "headers_too_large"),
    ];
    for (request, status, code) in cases {
        let mut stream = connect(&app).await;
        let _ = stream.write_all(request.as_bytes()).await;
        let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text:?}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{text:?}"
        );
        assert!(text.contains(&format!("\"code\":\"{code}\"")), "{text:?}");
        assert!(closed, "{status}: the connection is closed after it");
    }
}
