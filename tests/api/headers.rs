//! Response and request headers at the edge: what may be stored by a cache, what the docs
//! page lets a browser run, and headers a request must not repeat.

use reqwest::Response;
use serde_json::json;

use crate::helpers::*;

fn cache_control(response: &Response) -> String {
    response
        .headers()
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

fn assert_not_stored(response: &Response, what: &str) {
    let value = cache_control(response);
    assert!(
        value.split(',').any(|d| d.trim() == "no-store"),
        "{what} ({} {}): Cache-Control is {value:?}",
        response.status(),
        response.url()
    );
}

/// API.md: responses that carry a session or a user's data are sent with
/// `Cache-Control: no-store`. The rule served: every answer under `/api/v1/`, errors
/// included, except the public catalogue's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_a_session_or_a_users_data_are_not_stored() {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(5, 100).await;
    let username = unique_username();
    let signed_up = app.sign_up(&username, PASSWORD).await;
    assert_not_stored(&signed_up, "sign-up");
    let session = app.sign_in(&username, PASSWORD).await;
    assert_not_stored(&session, "the session token");
    let session = assert_json(session, 201).await;
    let buyer = Buyer {
        token: string_field(&session, "session_token"),
        user_id: string_field(&session, "user_id"),
        username,
    };
    let queue = assert_json(app.take_queue_token(&buyer).await, 201).await;
    let queue = string_field(&queue, "queue_token");

    let answers = [
        ("me", app.get("/api/v1/users/me").session(&buyer)),
        ("balance", app.get("/api/v1/balance").session(&buyer)),
        (
            "history",
            app.get("/api/v1/balance/history").session(&buyer),
        ),
        (
            "reservations",
            app.get("/api/v1/reservations").session(&buyer),
        ),
        (
            "queue status",
            app.get("/api/v1/queue/tokens/current")
                .session(&buyer)
                .queue(&queue),
        ),
        (
            "seats",
            app.get(&format!("/api/v1/dates/{date}/seats"))
                .session(&buyer)
                .queue(&queue),
        ),
        (
            "seat stream",
            app.get(&format!("/api/v1/dates/{date}/seats/events"))
                .session(&buyer)
                .queue(&queue),
        ),
        (
            "admin stats",
            app.get("/api/v1/admin/stats").bearer_auth(&app.admin_token),
        ),
        ("401", app.get("/api/v1/balance")),
        (
            "wrong password",
            app.post("/api/v1/sessions")
                .json(&json!({"username": buyer.username, "password": "not it at all"})),
        ),
        ("unknown path", app.get("/api/v1/nothing-here")),
        ("wrong method", app.delete("/api/v1/balance")),
        ("unknown concert", app.get("/api/v1/concerts/c_999/dates")),
        ("unknown date", app.get("/api/v1/dates/d_999")),
    ];
    for (what, request) in answers {
        let response = request.send().await.unwrap();
        assert_not_stored(&response, what);
    }
    let charged = app.charge(&buyer, 100).await;
    assert_not_stored(&charged, "a charge");
    let signed_out = app
        .delete("/api/v1/sessions/current")
        .session(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    assert_not_stored(&signed_out, "sign-out");

    // The public catalogue is the same for everyone and may be cached.
    for path in [
        "/api/v1/concerts".to_owned(),
        format!("/api/v1/concerts/{concert}/dates"),
        format!("/api/v1/dates/{date}"),
    ] {
        let response = app.get(&path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let value = cache_control(&response);
        assert!(!value.contains("no-store"), "{path}: {value:?}");
    }
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `/docs` runs only the server's own scripts and cannot be framed; it, its files and
/// `/openapi.json` are never content-sniffed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_runs_only_its_own_files_and_cannot_be_framed() {
    let app = spawn_app().await;
    let page = app.get("/docs").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = header(&page, "content-security-policy");
    for directive in ["default-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy:?}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy:?}"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("<style>"),
        "nothing inline, so the policy needs no 'unsafe-inline': {html}"
    );

    let mut files = vec!["/openapi.json".to_owned()];
    files.extend(
        html.split('"')
            .filter(|piece| piece.starts_with("/docs/"))
            .map(str::to_owned),
    );
    assert!(files.len() >= 3, "{files:?}");
    for path in files {
        let response = app.get(&path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
    }
}

/// Two `Idempotency-Key` headers are not one key: 400 `malformed_request`, and nothing is
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_idempotency_keys_are_a_malformed_request() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    for (first, second) in [("key-a", "key-b"), ("key-a", "key-a")] {
        let response = app
            .post("/api/v1/balance/charges")
            .session(&buyer)
            .idempotency_key(first)
            .idempotency_key(second)
            .json(&json!({"amount": 100}))
            .send()
            .await
            .unwrap();
        let context = format!("Idempotency-Key {first}, {second}");
        assert_problem_for(response, 400, "malformed_request", &context).await;
    }
    assert_eq!(app.balance(&buyer).await, 0, "no charge was applied");
    // One key still works, and was not taken by the refused requests.
    let response = app.keyed_charge(&buyer, "key-a", 100).await;
    assert_json(response, 201).await;
}

/// The page's icons come with the page's own headers: their type, revalidation, the same
/// Content-Security-Policy and no sniffing. The ICO is a real one (it starts with the ICO
/// header), not an SVG under another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_icons_are_served_with_the_pages_headers() {
    let app = spawn_app().await;
    let page = app.get("/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = header(&page, "content-security-policy");
    for (path, kind) in [
        ("/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/x-icon"),
    ] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), kind, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert_eq!(
            header(&response, "content-security-policy"),
            policy,
            "{path}"
        );
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{path} has a body");
        if path.ends_with(".ico") {
            assert_eq!(body[..4], [0, 0, 1, 0], "{path} starts as an ICO file");
        } else {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("<svg"), "{path}: {text}");
        }
    }
}
