//! What the logs say: every request is traced under a request id that goes back to the client,
//! and no password or session token ever reaches a log line, even at `debug`.

// The durability tests' harness for the real binary; this test uses only part of it.
#[allow(dead_code)]
#[path = "durability/server.rs"]
mod server;

use reqwest::StatusCode;
use serde_json::json;

use server::{data_dir, Api, Server, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_and_request_ids_go_back_to_the_client() {
    let dir = data_dir("logs");
    let env = [("BOXOFFICE__LOG__LEVEL", "debug".to_owned())];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let date = api.create_date(10, 100).await;
    let session = api.new_user("secretive").await;
    let bearer = format!("Bearer {session}");
    let token = api.admitted(&session).await.unwrap();
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-queue-token", token.as_str()),
    ];
    api.post("/api/v1/balance/charges", &headers, json!({"amount": 500}))
        .await
        .unwrap();
    let (status, held) = api
        .post(
            "/api/v1/reservations",
            &headers,
            json!({"date_id": date, "seat_no": 3}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{held}");
    api.post(
        "/api/v1/payments",
        &headers,
        json!({"reservation_id": held["reservation_id"]}),
    )
    .await
    .unwrap();
    // A failed sign-in with a different password must not be logged either.
    api.post(
        "/api/v1/sessions",
        &[],
        json!({"username": "secretive", "password": "wrong password 123"}),
    )
    .await
    .unwrap();

    let client = reqwest::Client::new();
    let echoed = client
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    let fresh = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    let fresh_id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(fresh_id.len(), 32, "a generated id: {fresh_id}");
    let captured = server.log.clone();
    assert_eq!(server.stop_gracefully(), Some(0));

    // The reader threads finish once the pipe closes; the last line is `stopped`.
    let mut log = String::new();
    for _ in 0..100 {
        log = captured.lock().unwrap().join("\n");
        if log.contains("stopped") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(log.contains("trace-me-42"), "requests are traced by id");
    let secret = session.rsplit('_').next().unwrap();
    for forbidden in [
        PASSWORD,
        "wrong password 123",
        session.as_str(),
        secret,
        token.as_str(),
        server::ADMIN,
    ] {
        assert!(
            !log.contains(forbidden),
            "the log contains a secret: {forbidden}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
