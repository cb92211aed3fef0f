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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_events_commits_and_snapshots() {
    let dir = data_dir("metrics");
    let env = [(
        "BOXOFFICE__STORAGE__SNAPSHOT_INTERVAL_SECONDS",
        "1".to_owned(),
    )];
    let server = Server::start(&dir, &env);
    let api = Api::new(&server.base);
    let date = api.create_date(10, 100).await;
    let session = api.new_user("measured").await;
    let bearer = format!("Bearer {session}");
    let token = api.admitted(&session).await.unwrap();
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-queue-token", token.as_str()),
    ];
    let (status, _) = api
        .post(
            "/api/v1/reservations",
            &headers,
            json!({"date_id": date, "seat_no": 3}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let keyed = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", "charge-1"),
    ];
    let (status, _) = api
        .post("/api/v1/balance/charges", &keyed, json!({"amount": 500}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    api.get("/api/v1/no/such/route/123", &[]).await.unwrap();

    let client = reqwest::Client::new();
    let mut text = String::new();
    // Snapshots run every second: wait (bounded) until one has been measured.
    for _ in 0..100 {
        let response = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        text = response.text().await.unwrap();
        if text.contains("boxoffice_snapshot_duration_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for expected in [
        r#"boxoffice_http_requests_total{method="POST",route="/api/v1/reservations",status="201"} 1"#,
        r#"route="unmatched",status="404"} 1"#,
        r#"boxoffice_events_total{kind="hold_placed"} 1"#,
        r#"boxoffice_events_total{kind="user_registered"} 1"#,
        "boxoffice_http_request_duration_seconds_bucket",
        "boxoffice_log_commit_duration_seconds_bucket",
        "boxoffice_log_events_per_commit_bucket",
        "boxoffice_snapshot_duration_seconds_bucket",
        "boxoffice_snapshot_bytes",
        "boxoffice_queue_active 1",
        "boxoffice_queue_admissions_total",
        "boxoffice_queue_admissions_per_second",
        r#"boxoffice_actor_calls_pending{actor="date"} 0"#,
        r#"boxoffice_actor_calls_pending{actor="ledger"} 0"#,
        r#"boxoffice_records{kind="idempotency_keys"} 1"#,
        r#"boxoffice_records{kind="reservations"} 1"#,
        r#"boxoffice_records{kind="queue_tokens"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("no/such"), "unknown paths are not labels");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The value `/metrics` gives for `name`, if the server reports it.
async fn metric(base: &str, name: &str) -> Option<String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::to_owned)
}

/// A charge of 100 with `key`.
async fn keyed_charge(api: &Api, session: &str, key: &str) -> (StatusCode, serde_json::Value) {
    let bearer = format!("Bearer {session}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", key)];
    api.post("/api/v1/balance/charges", &headers, json!({"amount": 100}))
        .await
        .expect("the server answers")
}

/// A new idempotency key is known new from memory: keyed requests read nothing from the
/// history database (`boxoffice_idempotency_store_lookups_total` stays at 0). A retry after a
/// restart, whose record is then only on disk, is looked up there, and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_key_seen_before_is_looked_up_in_the_history_database() {
    let lookups = "boxoffice_idempotency_store_lookups_total";
    let indexed = r#"boxoffice_records{kind="idempotency_index_keys"}"#;
    let dir = data_dir("key-lookups");
    let server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    let session = api.new_user("keyed").await;
    let first = keyed_charge(&api, &session, "charge-0").await;
    assert_eq!(first.0, StatusCode::CREATED);
    for key in ["charge-1", "charge-2", "charge-3"] {
        assert_eq!(
            keyed_charge(&api, &session, key).await.0,
            StatusCode::CREATED
        );
    }
    let retry = keyed_charge(&api, &session, "charge-0").await;
    assert_eq!(retry, first, "a retry answered from memory");
    assert_eq!(metric(&server.base, lookups).await.as_deref(), Some("0"));
    assert_eq!(metric(&server.base, indexed).await.as_deref(), Some("4"));
    assert_eq!(server.stop_gracefully(), Some(0));

    let server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    assert_eq!(metric(&server.base, indexed).await.as_deref(), Some("4"));
    assert_eq!(
        keyed_charge(&api, &session, "charge-4").await.0,
        StatusCode::CREATED
    );
    assert_eq!(metric(&server.base, lookups).await.as_deref(), Some("0"));
    let retry = keyed_charge(&api, &session, "charge-0").await;
    assert_eq!(retry, first, "a retry answered from the store");
    assert_eq!(metric(&server.base, lookups).await.as_deref(), Some("1"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
