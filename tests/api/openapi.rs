//! The OpenAPI document is the route table: it must list every route of API.md, every route it
//! lists must be served, and each must enforce the security the document declares. The
//! security tables below are built from the document, so a new route cannot be left out.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// `(METHOD, /path)` pairs named in API.md, with `{params}` as written there.
fn routes_in_api_md() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/API.md");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path} (the API contract beside the repo): {e}"));
    let mut routes = BTreeSet::new();
    for quoted in text.split('`').skip(1).step_by(2) {
        let Some((method, path)) = quoted.split_once(' ') else {
            continue;
        };
        if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) && path.starts_with('/') {
            routes.insert((method.to_owned(), path.to_owned()));
        }
    }
    // Prose abbreviates `/api/v1/reservations` as `/reservations`: drop the short forms.
    let abbreviations: Vec<(String, String)> = routes
        .iter()
        .filter(|(method, path)| routes.contains(&(method.clone(), format!("/api/v1{path}"))))
        .cloned()
        .collect();
    for abbreviation in abbreviations {
        routes.remove(&abbreviation);
    }
    assert!(routes.len() > 20, "API.md lists its routes: {routes:?}");
    routes
}

struct Operation {
    method: Method,
    path: String,
    security: BTreeSet<String>,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let security = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
                .collect();
            found.push(Operation {
                method,
                path: path.clone(),
                security,
            });
        }
    }
    found
}

async fn document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "/openapi.json content type"
    );
    assert_json(response, 200).await
}

/// A body each write route would accept, so a refusal is about security, not shape.
fn plausible_body(
    operation: &Operation,
    buyer: &Buyer,
    date: &str,
    reservation: &str,
) -> Option<Value> {
    match (operation.method.as_str(), operation.path.as_str()) {
        ("POST", "/api/v1/users") => {
            Some(json!({"username": unique_username(), "password": PASSWORD}))
        }
        ("POST", "/api/v1/sessions") => {
            Some(json!({"username": buyer.username, "password": PASSWORD}))
        }
        ("POST", "/api/v1/reservations") => Some(json!({"date_id": date, "seat_no": 2})),
        ("POST", "/api/v1/payments") => Some(json!({"reservation_id": reservation})),
        ("POST", "/api/v1/balance/charges") => Some(json!({"amount": 100})),
        ("POST", "/api/v1/admin/concerts") => Some(json!({"title": "T", "venue": "V"})),
        ("POST", p) if p.ends_with("/dates") => {
            Some(json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 10}))
        }
        _ => None,
    }
}

fn fill(path: &str, concert: &str, date: &str, reservation: &str) -> String {
    path.replace("{concert_id}", concert)
        .replace("{date_id}", date)
        .replace("{reservation_id}", reservation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_and_lists_every_route_of_api_md() {
    let app = spawn_app().await;
    let document = document(&app).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let listed: BTreeSet<(String, String)> = operations(&document)
        .into_iter()
        .map(|o| (o.method.to_string(), o.path))
        .collect();
    for (method, path) in routes_in_api_md() {
        assert!(
            listed.contains(&(method.clone(), path.clone())),
            "the OpenAPI document lists {method} {path}"
        );
    }

    // Every operation documents its responses, and every error response is problem+json.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents its success"
            );
            for (status, response) in responses {
                // A readiness probe's 503 is a state, not a client's error: plain JSON.
                let probe = path == "/readyz";
                if (status.starts_with('4') || status.starts_with('5')) && !probe {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status} is a problem+json Problem"
                    );
                }
            }
        }
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Problem",
        "ReservationBody",
        "PaymentBody",
        "QueueStatusBody",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
    let reservation = &schemas["ReservationBody"]["properties"];
    for field in [
        "reservation_id",
        "date_id",
        "seat_nos",
        "price",
        "status",
        "expires_at",
    ] {
        assert!(reservation.get(field).is_some(), "reservation.{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_and_its_assets_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN: {html}"
    );
    let mut assets = 0;
    for piece in html.split('"') {
        if piece.starts_with("/docs/") {
            let asset = app.get(piece).send().await.unwrap();
            assert_eq!(asset.status(), 200, "{piece}");
            assert!(asset.bytes().await.unwrap().len() > 1_000, "{piece}");
            assets += 1;
        }
    }
    assert_eq!(assets, 2, "the page loads the Swagger UI script and style");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buyer_page_and_its_files_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    for (path, kind) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        assert!(html.contains(path), "the page loads {path}");
        let file = app.get(path).send().await.unwrap();
        assert_eq!(file.status(), 200, "{path}");
        let content_type = file.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let text = file.text().await.unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}: no CDN"
        );
    }
}

/// Every documented operation is routed, and refuses a caller without the credentials its
/// `security` names; operations with no `security` need none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_enforces_its_documented_security() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let (concert, date) = app.concert_with_date(5, 100).await;
    let (owner, owner_q) = app.admitted_buyer().await;
    let held = app.hold_ok(&owner, &owner_q, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");
    let operations = operations(&document);
    assert!(operations.len() >= 25, "{} operations", operations.len());

    for operation in &operations {
        let path = fill(&operation.path, &concert, &date, &reservation);
        let what = format!("{} {}", operation.method, operation.path);
        let body = plausible_body(operation, &owner, &date, &reservation);
        let send = |authorization: Option<String>, queue: Option<String>| {
            let mut request = app.request(operation.method.clone(), &path);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            if let Some(value) = queue {
                request = request.header(QUEUE_HEADER, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            request.send()
        };

        let bare = send(None, None).await.unwrap();
        let status = bare.status().as_u16();
        assert!(status != 405, "{what} is routed");
        if operation.security.contains("session") || operation.security.contains("admin") {
            assert_problem_for(bare, 401, "unauthenticated", &what).await;
            // A session is not an admin token, and the admin token is not a session.
            let swapped = if operation.security.contains("admin") {
                format!("Bearer {}", owner.token)
            } else {
                format!("Bearer {}", app.admin_token)
            };
            let response = send(Some(swapped), Some(owner_q.clone())).await.unwrap();
            assert_problem_for(response, 401, "unauthenticated", &what).await;
        } else {
            assert!(
                status < 400 || (status == 404 && operation.path.contains('{')),
                "{what} needs no credentials, got {status}"
            );
        }
        if operation.security.contains("queue_token") {
            let session = Some(format!("Bearer {}", owner.token));
            let response = send(session, None).await.unwrap();
            assert_problem_for(response, 401, "queue_token_invalid", &what).await;
        }
    }
    // All of that changed nothing of the owner's.
    assert_eq!(app.reservation_status(&owner, &reservation).await, "held");
    assert_eq!(app.balance(&owner).await, 0);
}

/// One user can never read or change another's reservations, balance or queue token: every
/// documented route that names a reservation or takes a queue token, tried by a second user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_lets_one_user_reach_anothers_things() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let (concert, date) = app.concert_with_date(5, 100).await;
    let (owner, owner_q) = app.admitted_buyer().await;
    let (intruder, intruder_q) = app.admitted_buyer().await;
    app.charge_ok(&owner, 1_000).await;
    let held = app.hold_ok(&owner, &owner_q, &date, &[1]).await;
    let reservation = string_field(&held, "reservation_id");
    let mut tried = 0;

    for operation in operations(&document) {
        let what = format!("{} {}", operation.method, operation.path);
        let names_reservation =
            operation.path.contains("{reservation_id}") || operation.path == "/api/v1/payments";
        if names_reservation {
            let mut request = app
                .request(
                    operation.method.clone(),
                    &fill(&operation.path, &concert, &date, &reservation),
                )
                .session(&intruder)
                .queue(&intruder_q);
            if let Some(body) = plausible_body(&operation, &intruder, &date, &reservation) {
                request = request.json(&body);
            }
            assert_problem_for(request.send().await.unwrap(), 404, "not_found", &what).await;
            tried += 1;
        }
        if operation.security.contains("queue_token") {
            // The intruder's own session with the owner's queue token.
            let mut request = app
                .request(
                    operation.method.clone(),
                    &fill(&operation.path, &concert, &date, &reservation),
                )
                .session(&intruder)
                .queue(&owner_q);
            if let Some(body) = plausible_body(&operation, &intruder, &date, &reservation) {
                request = request.json(&body);
            }
            assert_problem_for(request.send().await.unwrap(), 403, "forbidden", &what).await;
            tried += 1;
        }
    }
    assert!(tried >= 8, "{tried} cross-user attempts");

    // Session-scoped reads answer with the caller's own things only.
    let mine = assert_json(
        app.get("/api/v1/reservations")
            .session(&intruder)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(mine["reservations"], json!([]), "the intruder sees none");
    let balance = assert_json(
        app.get("/api/v1/balance")
            .session(&intruder)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(balance["balance"], 0);
    assert_eq!(balance["user_id"], json!(intruder.user_id));
    assert!(app.history(&intruder).await.is_empty());

    // And the owner's things are as they were.
    assert_eq!(app.reservation_status(&owner, &reservation).await, "held");
    assert_eq!(app.balance(&owner).await, 1_000);
    let status = assert_json(app.poll_queue(&owner, &owner_q).await, 200).await;
    assert_eq!(status["status"], "active");
    assert_eq!(status["reissued"], false);
}

/// Session and queue tokens carry at least 128 bits from a CSPRNG: 200 of each are distinct,
/// long enough, and every bit of their secret part is set about half the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_long_distinct_and_unbiased() {
    let app = spawn_app().await;
    let name = unique_username();
    assert_json(app.sign_up(&name, PASSWORD).await, 201).await;
    let mut sessions = Vec::new();
    let mut queue_tokens = Vec::new();
    for _ in 0..200 {
        let session = assert_json(app.sign_in(&name, PASSWORD).await, 201).await;
        let token = string_field(&session, "session_token");
        let buyer = Buyer {
            token: token.clone(),
            user_id: string_field(&session, "user_id"),
            username: name.clone(),
        };
        let issued = assert_json(app.take_queue_token(&buyer).await, 201).await;
        queue_tokens.push(string_field(&issued, "queue_token"));
        // Leave, so the next take issues a fresh token rather than returning this one.
        let left = app
            .delete("/api/v1/queue/tokens/current")
            .session(&buyer)
            .queue(&queue_tokens[queue_tokens.len() - 1])
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 204);
        sessions.push(token);
    }
    // A session token is bos_<session id>_<secret>; the id is a label, the secret is random.
    let secrets: Vec<String> = sessions
        .iter()
        .map(|t| t.rsplit('_').next().unwrap().to_owned())
        .collect();
    assert_unbiased("session secret", &secrets);
    // A queue token is q<32 hex digits>.
    let queue_secrets: Vec<String> = queue_tokens
        .iter()
        .map(|t| t.strip_prefix('q').expect("q prefix").to_owned())
        .collect();
    assert_unbiased("queue token", &queue_secrets);
}

fn assert_unbiased(what: &str, tokens: &[String]) {
    let distinct: BTreeSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len(), "{what}s are distinct");
    let bytes: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| hex_bytes(t).unwrap_or_else(|| panic!("{what} {t:?} is hex")))
        .collect();
    let bits = bytes[0].len() * 8;
    assert!(bits >= 128, "{what} carries {bits} bits");
    for bit in 0..bits {
        let set = bytes
            .iter()
            .filter(|b| b[bit / 8] & (1 << (bit % 8)) != 0)
            .count();
        // 200 fair coins land between 60 and 140 heads except with odds below 1e-8.
        assert!(
            (60..=140).contains(&set),
            "{what} bit {bit} is set in {set} of {}",
            tokens.len()
        );
    }
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
