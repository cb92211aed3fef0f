//! Live updates over Server-Sent Events, read as a browser's `fetch` would: a hold by one buyer
//! reaches another buyer's seat stream, an admission reaches the waiting buyer's queue stream,
//! and streams end when their session does.

use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;

/// Reads `event:`/`data:` frames off a streaming response; comments (heartbeats) are skipped.
struct EventReader {
    response: Response,
    buffer: String,
}

impl EventReader {
    async fn open(response: Response) -> Self {
        assert_eq!(response.status(), 200, "the stream opens");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` if the stream ended or `within` passed first.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event data is JSON ({e}): {data}"));
                return Some((name, value));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => return None,
            }
        }
    }

    /// Whether the server ends the stream within `within`.
    async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }
}

async fn seat_stream(app: &TestApp, buyer: &Buyer, queue: &str, date: &str) -> EventReader {
    let response = app
        .get(&format!("/api/v1/dates/{date}/seats/events"))
        .session(buyer)
        .queue(queue)
        .send()
        .await
        .unwrap();
    EventReader::open(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_by_one_buyer_reaches_another_buyers_seat_stream_within_a_second() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(8, 100).await;
    let (a, a_queue) = app.admitted_buyer().await;
    let (b, b_queue) = app.admitted_buyer().await;
    let mut stream = seat_stream(&app, &b, &b_queue, &date).await;

    let (name, snapshot) = stream
        .next(Duration::from_secs(2))
        .await
        .expect("a snapshot");
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["date_id"], json!(date));
    let seats = snapshot["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 8);
    assert!(
        seats.iter().all(|s| s["status"] == "available"),
        "{snapshot}"
    );
    // The snapshot is the seat listing: the venue and each seat's place come with it.
    assert_eq!(
        snapshot["sections"],
        json!([{"name": "General", "price": 100, "rows": [{"row": "1", "first_seat_no": 1, "seats": 8}]}])
    );
    assert_eq!(
        seats[7],
        json!({"seat_no": 8, "status": "available", "price": 100, "section": "General", "row": "1", "seat": 8})
    );

    let started = Instant::now();
    app.hold_ok(&a, &a_queue, &date, &[3, 5]).await;
    let (name, changes) = stream.next(Duration::from_secs(2)).await.expect("a batch");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(name, "seats");
    assert_eq!(
        changes,
        json!([{"seat_no": 3, "status": "held"}, {"seat_no": 5, "status": "held"}])
    );
    // What the stream showed is what B finds: the seat is not B's to take.
    let response = app.hold(&b, &b_queue, &date, &[3]).await;
    assert_problem(response, 409, "seat_unavailable").await;

    // A cancel and a sale arrive too.
    let held = app.hold_ok(&a, &a_queue, &date, &[7]).await;
    let response = app
        .delete(&format!(
            "/api/v1/reservations/{}",
            string_field(&held, "reservation_id")
        ))
        .session(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let mut latest = std::collections::BTreeMap::new();
    while latest.get(&7) != Some(&"available".to_owned()) {
        let (name, changes) = stream
            .next(Duration::from_secs(2))
            .await
            .expect("seat 7's changes");
        assert_eq!(name, "seats");
        for change in changes.as_array().unwrap() {
            latest.insert(
                change["seat_no"].as_u64().unwrap(),
                string_field(change, "status"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_reaches_the_waiting_buyers_queue_stream() {
    let app = spawn_app_with(|s| {
        s.queue.max_active = 1;
        s.queue.admit_per_second = 1;
    })
    .await;
    let (first, first_queue) = app.admitted_buyer().await;
    let second = app.new_buyer().await;
    let issued = assert_json(app.take_queue_token(&second).await, 201).await;
    let second_queue = string_field(&issued, "queue_token");
    assert_eq!(issued["status"], "waiting");

    let response = app
        .get("/api/v1/queue/tokens/current/events")
        .session(&second)
        .queue(&second_queue)
        .send()
        .await
        .unwrap();
    let mut stream = EventReader::open(response).await;
    let (name, status) = stream.next(Duration::from_secs(2)).await.expect("a status");
    assert_eq!(name, "queue");
    assert_eq!(status["status"], "waiting");
    assert_eq!(status["position"], 1);
    assert_eq!(status["queue_token"], json!(second_queue));

    // Nothing changes: nothing is sent (the next event must be the admission).
    let response = app
        .delete("/api/v1/queue/tokens/current")
        .session(&first)
        .queue(&first_queue)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    app.advance(Duration::from_secs(1));
    let (name, status) = stream
        .next(Duration::from_secs(3))
        .await
        .expect("the admission");
    assert_eq!(name, "queue");
    assert_eq!(status["status"], "active", "{status}");
    assert_eq!(status["position"], 0);
    let polled = assert_json(app.poll_queue(&second, &second_queue).await, 200).await;
    assert_eq!(polled["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_session_ends_and_refuse_a_waiting_token() {
    let app = spawn_app_with(|s| s.queue.max_active = 1).await;
    let (_, date) = app.concert_with_date(4, 100).await;
    let (buyer, queue) = app.admitted_buyer().await;
    let mut seats = seat_stream(&app, &buyer, &queue, &date).await;
    assert_eq!(
        seats.next(Duration::from_secs(2)).await.unwrap().0,
        "snapshot"
    );

    // A waiting buyer may not watch the seats.
    let waiting = app.new_buyer().await;
    let issued = assert_json(app.take_queue_token(&waiting).await, 201).await;
    let response = app
        .get(&format!("/api/v1/dates/{date}/seats/events"))
        .session(&waiting)
        .queue(&string_field(&issued, "queue_token"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "not_admitted").await;

    let response = app
        .delete("/api/v1/sessions/current")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        seats.ends_within(Duration::from_secs(3)).await,
        "the stream ends once its session is signed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_a_stream_is_refused_with_503_until_one_closes() {
    let app = spawn_app_with(|s| s.server.max_streams = 1).await;
    let (_, date) = app.concert_with_date(4, 100).await;
    let (buyer, queue) = app.admitted_buyer().await;
    let mut first = seat_stream(&app, &buyer, &queue, &date).await;
    assert_eq!(
        first.next(Duration::from_secs(2)).await.unwrap().0,
        "snapshot"
    );

    let refused = app
        .get("/api/v1/queue/tokens/current/events")
        .session(&buyer)
        .queue(&queue)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_problem(refused, 503, "overloaded").await;

    drop(first);
    // The server notices the hang-up at its next write (a batch or a heartbeat) or recheck;
    // a change on the date makes it write at once.
    let (other, other_queue) = app.admitted_buyer().await;
    app.hold_ok(&other, &other_queue, &date, &[2]).await;
    stream_place_frees(&app, &buyer, &queue, "the closed stream's place to be free").await;
}

/// `server.max_streams_per_session`: past it that session's next stream gets 429
/// `rate_limited` with `Retry-After`, while other sessions still get theirs; a place comes
/// back when one of its streams ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_per_session_that_session_gets_429_and_others_do_not() {
    let app = spawn_app_with(|s| s.server.max_streams_per_session = 2).await;
    let (_, date) = app.concert_with_date(4, 100).await;
    let (buyer, queue) = app.admitted_buyer().await;
    let first = seat_stream(&app, &buyer, &queue, &date).await;
    let _second = seat_stream(&app, &buyer, &queue, &date).await;

    let refused = app
        .get(&format!("/api/v1/dates/{date}/seats/events"))
        .session(&buyer)
        .queue(&queue)
        .send()
        .await
        .unwrap();
    assert_rate_limited(refused, "a third seat stream on one session").await;
    let refused = app
        .get("/api/v1/queue/tokens/current/events")
        .session(&buyer)
        .queue(&queue)
        .send()
        .await
        .unwrap();
    assert_rate_limited(refused, "a queue stream on the same session").await;

    let (other, other_queue) = app.admitted_buyer().await;
    let mut theirs = seat_stream(&app, &other, &other_queue, &date).await;
    assert_eq!(
        theirs.next(Duration::from_secs(2)).await.unwrap().0,
        "snapshot"
    );

    drop(first);
    // A change on the date makes the server write to the closed stream, and notice.
    app.hold_ok(&other, &other_queue, &date, &[2]).await;
    stream_place_frees(
        &app,
        &buyer,
        &queue,
        "the closed stream's place on the session to be free",
    )
    .await;
}

/// Waits (bounded) until `buyer` is given a queue stream again: the server noticed a closed
/// stream and gave its place back.
async fn stream_place_frees(app: &TestApp, buyer: &Buyer, queue: &str, what: &str) {
    eventually(what, || async move {
        let response = app
            .get("/api/v1/queue/tokens/current/events")
            .session(buyer)
            .queue(queue)
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}
