//! The OpenAPI document is the route table: it must list every route of API.md, every route it
//! lists must be served, and each must enforce the security the document declares. The
//! security tables below are built from the document, so a new route cannot be left out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// `(METHOD, /path)` pairs named in API.md, with `{params}` as written there.
/// Routes of API.md sections this server does not implement yet (per-concert waiting rooms).
/// Every other route of API.md must be served; each of these must not be, so the list shrinks
/// as they are built.
const NOT_SERVED_YET: [(&str, &str); 0] = [];

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
        ("POST", "/api/v1/refunds") => Some(json!({"reservation_id": reservation})),
        ("POST", "/api/v1/transfers") => {
            Some(json!({"reservation_id": reservation, "to_username": buyer.username}))
        }
        ("POST", p) if p.ends_with("/waitlist") => Some(json!({"quantity": 1})),
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
        .replace("{entry_id}", "w_999_1")
        .replace("{room}", "general")
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
    let contract = routes_in_api_md();
    for (method, path) in &contract {
        let served = listed.contains(&(method.clone(), path.clone()));
        if NOT_SERVED_YET.contains(&(method.as_str(), path.as_str())) {
            assert!(
                !served,
                "{method} {path} is served now: take it off NOT_SERVED_YET so it is checked"
            );
        } else {
            assert!(served, "the OpenAPI document lists {method} {path}");
        }
    }
    for (method, path) in NOT_SERVED_YET {
        assert!(
            contract.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not in API.md: take it off NOT_SERVED_YET"
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
    // The lists are pages: `limit` and `cursor` in, `next_cursor` (string or null) out.
    for (path, body) in [
        ("/api/v1/reservations", "ReservationsBody"),
        ("/api/v1/balance/history", "HistoryBody"),
    ] {
        let parameters = document["paths"][path]["get"]["parameters"].to_string();
        for name in [r#""name":"limit""#, r#""name":"cursor""#, r#""in":"query""#] {
            assert!(parameters.contains(name), "{path}: {name} in {parameters}");
        }
        let schema = &schemas[body];
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .contains(&json!("next_cursor")),
            "{body}: {schema}"
        );
        let next_cursor = schema["properties"]["next_cursor"].to_string();
        assert!(
            next_cursor.contains("string") && next_cursor.contains("null"),
            "{body}.next_cursor: {next_cursor}"
        );
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
            let bytes = asset.bytes().await.unwrap();
            if piece.starts_with("/docs/assets/") {
                assert!(bytes.len() > 1_000, "{piece}");
            } else {
                assert!(
                    String::from_utf8_lossy(&bytes).contains("SwaggerUIBundle"),
                    "{piece}"
                );
            }
            assets += 1;
        }
    }
    assert_eq!(
        assets, 3,
        "the page loads the Swagger UI script and style, and the script that starts it"
    );
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

// ----- every status a route answers is documented on it ---------------------------------------

type Route = (String, String);

fn documented_statuses(document: &Value) -> BTreeMap<Route, BTreeSet<u16>> {
    let mut found = BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse::<u16>().unwrap())
                .collect();
            found.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    found
}

/// Operations whose request body is JSON.
fn json_body_routes(document: &Value) -> BTreeSet<Route> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// Sends requests for documented routes and records every status each one answers; a status
/// the route's entry does not list fails at once.
struct Observed {
    documented: BTreeMap<Route, BTreeSet<u16>>,
    seen: BTreeMap<Route, BTreeSet<u16>>,
}

impl Observed {
    fn new(document: &Value) -> Self {
        Self {
            documented: documented_statuses(document),
            seen: BTreeMap::new(),
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let response = request.send().await.unwrap();
        self.record(method, path, &response);
        response
    }

    /// The answer's status must be one the route's entry lists.
    fn record(&mut self, method: &str, path: &str, response: &reqwest::Response) {
        self.record_status(method, path, response.status().as_u16());
    }

    fn record_status(&mut self, method: &str, path: &str, status: u16) {
        let route = (method.to_owned(), path.to_owned());
        let documented = self
            .documented
            .get(&route)
            .unwrap_or_else(|| panic!("{method} {path} is documented"));
        assert!(
            documented.contains(&status),
            "{method} {path} answered {status}, which its entry does not list ({documented:?})"
        );
        self.seen.entry(route).or_default().insert(status);
    }

    /// `send`, and the answer must be this problem.
    async fn expect(
        &mut self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
        status: u16,
        code: &str,
    ) {
        let response = self.send(method, path, request).await;
        assert_problem_for(response, status, code, &format!("{method} {path}")).await;
    }
}

/// Ids that name real things in a server, for filling path templates.
struct Names {
    concert: String,
    date: String,
    reservation: String,
}

impl Names {
    fn fill(&self, path: &str) -> String {
        fill(path, &self.concert, &self.date, &self.reservation)
    }
}

/// A request to `route` carrying everything its `security` asks for.
fn authorized(
    app: &TestApp,
    document: &Value,
    (method, path): &Route,
    url: &str,
    buyer: &Buyer,
    queue_token: &str,
) -> reqwest::RequestBuilder {
    let operation = &document["paths"][path][method.to_lowercase()];
    let schemes: BTreeSet<String> = operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r.as_object().unwrap().keys().cloned())
        .collect();
    let mut request = app.request(method.parse().unwrap(), url);
    if schemes.contains("admin") {
        request = request.bearer_auth(&app.admin_token);
    }
    if schemes.contains("session") {
        request = request.session(buyer);
    }
    if schemes.contains("queue_token") {
        request = request.queue(queue_token);
    }
    request
}

fn has_query_parameter(document: &Value, (method, path): &Route, name: &str) -> bool {
    document["paths"][path][method.to_lowercase()]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["in"] == "query" && p["name"] == name)
}

fn has_idempotency_key(document: &Value, (method, path): &Route) -> bool {
    document["paths"][path][method.to_lowercase()]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == "Idempotency-Key")
}

/// What the routes answer, driven over HTTP: each route is tried without credentials, without
/// a body, with a body of the wrong type, malformed or too large, with a bad id, a bad key, past
/// the rate limits, with the admin API off, with in-flight work at its bound, and through the
/// outcomes its handler has. Every status seen must be on the route's entry, and every status
/// on an entry must have been seen: the document lists exactly what the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_documents_exactly_the_statuses_it_answers() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let mut seen = Observed::new(&document);
    let json_routes = json_body_routes(&document);
    for route in &json_routes {
        for status in [400, 413, 415] {
            assert!(
                seen.documented[route].contains(&status),
                "{} {} reads a JSON body, so it documents {status}",
                route.0,
                route.1
            );
        }
    }
    assert!(json_routes.len() >= 7, "{json_routes:?}");

    let (concert, date) = app.concert_with_date(5, 100).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    let held = app.hold_ok(&buyer, &queue_token, &date, &[5]).await;
    let names = Names {
        concert,
        date: date.clone(),
        reservation: string_field(&held, "reservation_id"),
    };
    let (other, other_token) = app.admitted_buyer().await;
    let limit = app.settings.limits.body_bytes_max;

    // What every route shares: credentials, bodies, ids, keys.
    for route in seen.documented.keys().cloned().collect::<Vec<_>>() {
        let (method, path) = &route;
        let url = names.fill(path);
        let full = || authorized(&app, &document, &route, &url, &buyer, &queue_token);
        let operation = &document["paths"][path][method.to_lowercase()];
        let security = operation["security"].to_string();
        if security.contains("session") || security.contains("admin") {
            let bare = app.request(method.parse().unwrap(), &url);
            seen.expect(method, path, bare, 401, "unauthenticated")
                .await;
        }
        if security.contains("queue_token") {
            let no_token = app.request(method.parse().unwrap(), &url).session(&buyer);
            seen.expect(method, path, no_token, 401, "queue_token_invalid")
                .await;
        }
        if json_routes.contains(&route) {
            // A route whose body may be left out (a queue token of the general room) takes
            // a request without one; one that is sent is still JSON or nothing.
            if operation["requestBody"]["required"] != json!(false) {
                seen.expect(method, path, full(), 415, "unsupported_media_type")
                    .await;
            }
            let text = full()
                .header("content-type", "text/plain")
                .body(r#"{"a": 1}"#);
            seen.expect(method, path, text, 415, "unsupported_media_type")
                .await;
            let malformed = full().raw_json(r#"{"a": "#);
            seen.expect(method, path, malformed, 400, "malformed_request")
                .await;
            let large = full().raw_json(format!(r#"{{"a": "{}"}}"#, "x".repeat(limit)));
            seen.expect(method, path, large, 413, "payload_too_large")
                .await;
        }
        for (parameter, bad) in [("limit", "0"), ("cursor", "x")] {
            if has_query_parameter(&document, &route, parameter) {
                let url = format!("{url}?{parameter}={bad}");
                let request = authorized(&app, &document, &route, &url, &buyer, &queue_token);
                seen.expect(method, path, request, 400, "malformed_request")
                    .await;
            }
        }
        if has_idempotency_key(&document, &route) {
            let bad_key = full().idempotency_key("a b").raw_json("{}");
            seen.expect(method, path, bad_key, 400, "malformed_request")
                .await;
        }
        if path.contains('{') {
            let unknown = fill(
                &path.replace("{room}", "c_999"),
                "c_999",
                "d_999",
                "r_999_1",
            );
            let request = authorized(&app, &document, &route, &unknown, &buyer, &queue_token);
            let request = match plausible_body(
                &Operation {
                    method: method.parse().unwrap(),
                    path: path.clone(),
                    security: BTreeSet::new(),
                },
                &buyer,
                &date,
                &names.reservation,
            ) {
                Some(body) => request.json(&body),
                None => request,
            };
            seen.expect(method, path, request, 404, "not_found").await;
        }
    }

    // The outcomes of each handler.
    let users = "/api/v1/users";
    let name = unique_username();
    let credentials = json!({"username": name, "password": PASSWORD});
    seen.send("POST", users, app.post(users).json(&credentials))
        .await;
    seen.expect(
        "POST",
        users,
        app.post(users).json(&credentials),
        409,
        "username_taken",
    )
    .await;
    let short = json!({"username": "ab", "password": PASSWORD});
    seen.expect(
        "POST",
        users,
        app.post(users).json(&short),
        422,
        "invalid_input",
    )
    .await;
    let sessions = "/api/v1/sessions";
    let session = seen
        .send("POST", sessions, app.post(sessions).json(&credentials))
        .await;
    let session = assert_json(session, 201).await;
    let wrong = json!({"username": name, "password": "not the password"});
    seen.expect(
        "POST",
        sessions,
        app.post(sessions).json(&wrong),
        401,
        "invalid_credentials",
    )
    .await;
    let leaver = Buyer {
        token: string_field(&session, "session_token"),
        user_id: string_field(&session, "user_id"),
        username: name,
    };
    let me = "/api/v1/users/me";
    seen.send("GET", me, app.get(me).session(&buyer)).await;

    let tokens = "/api/v1/queue/tokens";
    let current = "/api/v1/queue/tokens/current";
    let events = "/api/v1/queue/tokens/current/events";
    let leaver_token = seen
        .send("POST", tokens, app.post(tokens).session(&leaver))
        .await;
    let leaver_token = string_field(&assert_json(leaver_token, 201).await, "queue_token");
    seen.send("POST", tokens, app.post(tokens).session(&leaver))
        .await;
    seen.send(
        "GET",
        current,
        app.get(current).session(&buyer).queue(&queue_token),
    )
    .await;
    let stream = seen
        .send(
            "GET",
            events,
            app.get(events).session(&buyer).queue(&queue_token),
        )
        .await;
    drop(stream);
    for (method, path) in [("GET", current), ("DELETE", current), ("GET", events)] {
        let theirs = app
            .request(method.parse().unwrap(), path)
            .session(&buyer)
            .queue(&other_token);
        seen.expect(method, path, theirs, 403, "forbidden").await;
    }
    let leave = app.delete(current).session(&leaver).queue(&leaver_token);
    seen.send("DELETE", current, leave).await;

    let concerts = "/api/v1/concerts";
    seen.send("GET", concerts, app.get(concerts)).await;
    let dates = "/api/v1/concerts/{concert_id}/dates";
    seen.send("GET", dates, app.get(&names.fill(dates))).await;
    let one_date = "/api/v1/dates/{date_id}";
    seen.send("GET", one_date, app.get(&names.fill(one_date)))
        .await;
    for path in [
        "/api/v1/dates/{date_id}/seats",
        "/api/v1/dates/{date_id}/seats/events",
    ] {
        let url = names.fill(path);
        let own = app.get(&url).session(&buyer).queue(&queue_token);
        drop(seen.send("GET", path, own).await);
        let theirs = app.get(&url).session(&buyer).queue(&other_token);
        seen.expect("GET", path, theirs, 403, "forbidden").await;
    }

    let reservations = "/api/v1/reservations";
    let hold = |who: &Buyer, token: &str, body: Value| {
        app.post(reservations).session(who).queue(token).json(&body)
    };
    let first = seen
        .send(
            "POST",
            reservations,
            hold(&buyer, &queue_token, json!({"date_id": date, "seat_no": 1})),
        )
        .await;
    let first = string_field(&assert_json(first, 201).await, "reservation_id");
    let taken = hold(&other, &other_token, json!({"date_id": date, "seat_no": 1}));
    seen.expect("POST", reservations, taken, 409, "seat_unavailable")
        .await;
    let zero = hold(&buyer, &queue_token, json!({"date_id": date, "seat_no": 0}));
    seen.expect("POST", reservations, zero, 422, "invalid_input")
        .await;
    let theirs = hold(&buyer, &other_token, json!({"date_id": date, "seat_no": 2}));
    seen.expect("POST", reservations, theirs, 403, "forbidden")
        .await;
    let unknown = hold(
        &buyer,
        &queue_token,
        json!({"date_id": "d_999", "seat_no": 2}),
    );
    seen.expect("POST", reservations, unknown, 404, "not_found")
        .await;
    seen.send("GET", reservations, app.get(reservations).session(&buyer))
        .await;
    let one = "/api/v1/reservations/{reservation_id}";
    let url = names.fill(one);
    seen.send("GET", one, app.get(&url).session(&buyer)).await;
    seen.send("DELETE", one, app.delete(&url).session(&buyer))
        .await;
    seen.expect(
        "DELETE",
        one,
        app.delete(&url).session(&buyer),
        409,
        "reservation_not_held",
    )
    .await;
    // The buyer let go of that seat just now: holding it again waits out the cooldown.
    let again = hold(&buyer, &queue_token, json!({"date_id": date, "seat_no": 5}));
    seen.expect("POST", reservations, again, 409, "rehold_cooldown")
        .await;
    let conflict = &document["paths"][reservations]["post"]["responses"]["409"];
    assert!(
        conflict["headers"]["Retry-After"].is_object(),
        "the wait is documented: {conflict}"
    );

    let payments = "/api/v1/payments";
    let pay = |key: &str, token: &str, reservation: &str| {
        app.post(payments)
            .session(&buyer)
            .queue(token)
            .idempotency_key(key)
            .json(&json!({ "reservation_id": reservation }))
    };
    seen.expect(
        "POST",
        payments,
        pay("pay-0", &queue_token, &first),
        402,
        "insufficient_balance",
    )
    .await;
    let theirs = pay("pay-0", &other_token, &first);
    seen.expect("POST", payments, theirs, 403, "forbidden")
        .await;
    let nowhere = pay("pay-0", &queue_token, "r_999_1");
    seen.expect("POST", payments, nowhere, 404, "not_found")
        .await;
    let charges = "/api/v1/balance/charges";
    let charge = |amount: i64| {
        app.post(charges)
            .session(&buyer)
            .json(&json!({ "amount": amount }))
    };
    seen.send("POST", charges, charge(1_000)).await;
    seen.expect("POST", charges, charge(0), 422, "invalid_amount")
        .await;
    seen.send("POST", payments, pay("pay-1", &queue_token, &first))
        .await;
    let reused = pay("pay-1", &queue_token, &names.reservation);
    seen.expect("POST", payments, reused, 422, "idempotency_key_reused")
        .await;
    let fresh = app.take_queue_token(&buyer).await;
    let fresh = string_field(&assert_json(fresh, 201).await, "queue_token");
    app.wait_until_active(&buyer, &fresh).await;
    let again = pay("pay-2", &fresh, &first);
    seen.expect("POST", payments, again, 409, "already_paid")
        .await;
    for path in ["/api/v1/balance", "/api/v1/balance/history"] {
        seen.send("GET", path, app.get(path).session(&buyer)).await;
    }
    returns(&app, &mut seen, &buyer, &fresh, &date, &first).await;
    waitlists(&app, &mut seen, &other_token).await;

    let admin_concerts = "/api/v1/admin/concerts";
    let admin = |path: &str, body: Value| {
        app.post(&names.fill(path))
            .bearer_auth(&app.admin_token)
            .json(&body)
    };
    let body = json!({"title": "T", "venue": "V"});
    seen.send("POST", admin_concerts, admin(admin_concerts, body))
        .await;
    let blank = json!({"title": "", "venue": "V"});
    seen.expect(
        "POST",
        admin_concerts,
        admin(admin_concerts, blank),
        422,
        "invalid_input",
    )
    .await;
    let admin_dates = "/api/v1/admin/concerts/{concert_id}/dates";
    let body = json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 10});
    seen.send("POST", admin_dates, admin(admin_dates, body))
        .await;
    let none = json!({"starts_at": STARTS_AT, "seat_count": 0, "price": 10});
    seen.expect(
        "POST",
        admin_dates,
        admin(admin_dates, none),
        422,
        "invalid_input",
    )
    .await;
    for (method, path) in [
        ("GET", "/api/v1/admin/stats"),
        ("POST", "/api/v1/admin/backups"),
    ] {
        let request = app
            .request(method.parse().unwrap(), path)
            .bearer_auth(&app.admin_token);
        seen.send(method, path, request).await;
    }
    let room = "/api/v1/admin/waiting-rooms/{room}";
    let request = app
        .get(&room.replace("{room}", "general"))
        .bearer_auth(&app.admin_token);
    assert_eq!(seen.send("GET", room, request).await.status(), 200);
    let tokens = "/api/v1/queue/tokens";
    for (concert, status, code) in [
        ("c_999", 404, "not_found"),
        (names.concert.as_str(), 422, "invalid_input"),
    ] {
        let request = app
            .post(tokens)
            .session(&buyer)
            .json(&json!({"concert_id": concert}));
        seen.expect("POST", tokens, request, status, code).await;
    }
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        seen.send("GET", path, app.get(path)).await;
    }
    let sign_out = app.delete("/api/v1/sessions/current").session(&leaver);
    let signed_out = seen
        .send("DELETE", "/api/v1/sessions/current", sign_out)
        .await;
    assert_eq!(signed_out.status(), 204);

    // A hold that ran out before its payment.
    let late = app.hold_ok(&buyer, &fresh, &date, &[2]).await;
    let late = string_field(&late, "reservation_id");
    app.advance(Duration::from_secs(app.settings.holds.ttl_seconds + 1));
    seen.expect(
        "POST",
        payments,
        pay("pay-3", &fresh, &late),
        410,
        "hold_expired",
    )
    .await;

    limited_and_disabled(&document, &mut seen).await;
    admin_guesses_limited(&document, &mut seen).await;
    overloaded(&document, &mut seen).await;
    stopping(&mut seen).await;
    stalled_bodies(&json_routes, &mut seen).await;

    for (route, documented) in &seen.documented {
        let observed = seen.seen.get(route).cloned().unwrap_or_default();
        assert_eq!(
            &observed, documented,
            "{} {}: the statuses seen are the statuses documented",
            route.0, route.1
        );
    }
}

/// Past the rate limits every session route answers 429, and sign-ups and sign-ins past the
/// per-address limit too; with `admin.token` empty every admin route is 404.
async fn limited_and_disabled(document: &Value, seen: &mut Observed) {
    let app = spawn_app_with(|settings| {
        settings.limits.session_requests_per_second = 3;
        settings.limits.auth_attempts_per_minute_per_ip = 2;
        settings.admin.token = String::new();
    })
    .await;
    let buyer = app.new_buyer().await;
    for path in ["/api/v1/users", "/api/v1/sessions"] {
        let body = json!({"username": buyer.username, "password": PASSWORD});
        let request = app.post(path).json(&body);
        seen.expect("POST", path, request, 429, "rate_limited")
            .await;
    }
    let mut limited = false;
    for _ in 0..10 {
        let request = app.get("/api/v1/balance").session(&buyer);
        let response = seen.send("GET", "/api/v1/balance", request).await;
        if response.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the session's rate limit is reached");
    for operation in operations(document) {
        let method = operation.method.to_string();
        let url = fill(&operation.path, "c_1", "d_1", "r_1_1");
        let body = plausible_body(&operation, &buyer, "d_1", "r_1_1");
        let mut request = app.request(operation.method.clone(), &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if operation.security.contains("session") {
            let request = request.session(&buyer).queue("q0");
            seen.expect(&method, &operation.path, request, 429, "rate_limited")
                .await;
        } else if operation.security.contains("admin") {
            let request = request.bearer_auth("any-token");
            seen.expect(&method, &operation.path, request, 404, "not_found")
                .await;
        }
    }
}

/// Past `limits.admin_failures_per_minute_per_ip` wrong admin tokens, every admin route
/// answers 429 to that address.
async fn admin_guesses_limited(document: &Value, seen: &mut Observed) {
    let app = spawn_app_with(|settings| settings.limits.admin_failures_per_minute_per_ip = 1).await;
    let stats = "/api/v1/admin/stats";
    let wrong = app.get(stats).bearer_auth("a-wrong-admin-token");
    seen.expect("GET", stats, wrong, 401, "unauthenticated")
        .await;
    let buyer = Buyer {
        token: "bos_1_00".into(),
        user_id: "u_1".into(),
        username: "nobody".into(),
    };
    for operation in operations(document) {
        if !operation.security.contains("admin") {
            continue;
        }
        let url = fill(&operation.path, "c_1", "d_1", "r_1_1");
        let mut request = app
            .request(operation.method.clone(), &url)
            .bearer_auth("a-wrong-admin-token");
        if let Some(body) = plausible_body(&operation, &buyer, "d_1", "r_1_1") {
            request = request.json(&body);
        }
        let method = operation.method.to_string();
        seen.expect(&method, &operation.path, request, 429, "rate_limited")
            .await;
    }
}

/// With in-flight work at its bound, every route answers 503, but the probes, which answer
/// outside the bound.
async fn overloaded(document: &Value, seen: &mut Observed) {
    // A sign-up whose password hash is slow on purpose holds the only place in flight.
    let app = spawn_app_with(|settings| {
        settings.server.max_in_flight = 1;
        settings.server.request_timeout_seconds = 60;
        settings.auth.argon2_iterations = 100_000;
    })
    .await;
    let buyer = Buyer {
        token: "bos_1_00".into(),
        user_id: "u_1".into(),
        username: "nobody".into(),
    };
    let mut stall: Option<tokio::task::JoinHandle<()>> = None;
    for operation in operations(document) {
        let url = fill(&operation.path, "c_1", "d_1", "r_1_1");
        let method = operation.method.to_string();
        let is_probe = matches!(operation.path.as_str(), "/healthz" | "/readyz");
        for attempt in 0.. {
            if stall.as_ref().is_none_or(|s| s.is_finished()) {
                stall = Some(stall_in_flight(&app).await);
            }
            let mut request = app.request(operation.method.clone(), &url);
            if let Some(body) = plausible_body(&operation, &buyer, "d_1", "r_1_1") {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            // The stall may have ended just before this request: try again with a new one.
            let stall_ended = stall.as_ref().is_some_and(|s| s.is_finished());
            if !is_probe && response.status() != 503 && stall_ended && attempt < 5 {
                continue;
            }
            if is_probe {
                assert_eq!(
                    response.status(),
                    200,
                    "{method} {} when in flight is full",
                    operation.path
                );
                seen.record(&method, &operation.path, &response);
            } else {
                seen.record(&method, &operation.path, &response);
                assert_problem_for(
                    response,
                    503,
                    "overloaded",
                    &format!("{method} {}", operation.path),
                )
                .await;
            }
            break;
        }
    }
}

/// A body that stops arriving gets 408 on every route that reads one, before anything else
/// about the request is looked at.
async fn stalled_bodies(routes: &BTreeSet<Route>, seen: &mut Observed) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|settings| settings.server.body_read_timeout_seconds = 1).await;
    let answers = futures_util::future::join_all(routes.iter().map(|(method, path)| {
        let url_path = fill(path, "c_1", "d_1", "r_1_1");
        let addr = app.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "{method} {url_path} HTTP/1.1\r\nhost: boxoffice\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("an answer and a close within 10 s")
                .unwrap();
            String::from_utf8_lossy(&answer).to_string()
        }
    }))
    .await;
    for ((method, path), answer) in routes.iter().zip(answers) {
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "{method} {path}: {answer}"
        );
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
        seen.record_status(method, path, 408);
    }
}

/// From the moment a stop begins, readiness answers 503 while the server drains.
async fn stopping(seen: &mut Observed) {
    let mut app = spawn_app_with(|settings| settings.server.shutdown_drain_seconds = 5).await;
    app.begin_stop();
    let client = app.client.clone();
    let url = app.url("/readyz");
    let response = eventually("readiness to say the server is stopping", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.get(url).send().await.ok()?;
            (response.status() == 503).then_some(response)
        }
    })
    .await;
    seen.record("GET", "/readyz", &response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "stopping", "{body}");
}

/// Starts a slow sign-up and returns once it holds the only place in flight. On a busy machine
/// the sign-up may be done before a probe sees it in flight: then another one is started.
async fn stall_in_flight(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let client = app.client.clone();
    let probe = app.url("/api/v1/concerts");
    for _ in 0..20 {
        let sign_up = app.post("/api/v1/users").json(&json!({
            "username": unique_username(), "password": "a long enough password"
        }));
        let stall = tokio::spawn(async move {
            let _ = sign_up.send().await;
        });
        while !stall.is_finished() {
            let answer = client.get(&probe).send().await;
            if answer.is_ok_and(|r| r.status() == 503) {
                return stall;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("no slow sign-up was ever seen holding the only place in flight (20 tries)");
}

// ----- every documented limit holds at its edge ------------------------------------------------

/// One limit the document states: `keyword` (`minLength`, `maximum`, …) of `field`, in the body
/// of `route`, in its `header` or in its `query`.
#[derive(Debug, Clone)]
struct Limit {
    route: Route,
    header: bool,
    query: bool,
    field: String,
    keyword: String,
    /// The field's whole schema, for values that meet its other limits.
    schema: Value,
}

const KEYWORDS: &[&str] = &[
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "uniqueItems",
];

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Every limit of every request body and header parameter in the document.
fn documented_limits(document: &Value) -> Vec<Limit> {
    let mut limits = Vec::new();
    let mut add = |route: &Route, place: &str, field: &str, schema: &Value| {
        let (header, query) = (place == "header", place == "query");
        for keyword in KEYWORDS {
            if schema.get(*keyword).is_some_and(|v| v != &json!(false)) {
                limits.push(Limit {
                    route: route.clone(),
                    header,
                    query,
                    field: field.to_owned(),
                    keyword: (*keyword).to_owned(),
                    schema: schema.clone(),
                });
            }
        }
        for keyword in ["minimum", "maximum"] {
            if schema["items"].get(keyword).is_some() {
                limits.push(Limit {
                    route: route.clone(),
                    header,
                    query,
                    field: field.to_owned(),
                    keyword: format!("items.{keyword}"),
                    schema: schema.clone(),
                });
            }
        }
    };
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let route = (method.to_uppercase(), path.clone());
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let place = parameter["in"].as_str().unwrap();
                assert!(
                    ["header", "path", "query"].contains(&place),
                    "{route:?}: a {place} parameter needs its limits tested here",
                );
                let name = parameter["name"].as_str().unwrap();
                add(&route, place, name, &parameter["schema"]);
            }
            let body = &operation["requestBody"]["content"]["application/json"]["schema"];
            let body = resolve(document, body);
            for (field, schema) in body["properties"].as_object().into_iter().flatten() {
                add(&route, "body", field, resolve(document, schema));
            }
        }
    }
    limits
}

/// The answer API.md gives a value outside `limit`.
fn refusal(limit: &Limit) -> (u16, &'static str) {
    match (
        limit.route.1.as_str(),
        limit.field.as_str(),
        limit.keyword.as_str(),
    ) {
        // No user can have such credentials.
        ("/api/v1/sessions", _, _) => (401, "invalid_credentials"),
        ("/api/v1/balance/charges", "amount", _) => (422, "invalid_amount"),
        ("/api/v1/reservations", "seat_nos", "maxItems") => (422, "hold_limit"),
        _ if limit.header || limit.query => (400, "malformed_request"),
        _ => (422, "invalid_input"),
    }
}

/// Strings, numbers and lists that meet a schema's limits but the one under test.
struct Values {
    salt: u64,
}

impl Values {
    fn pattern(schema: &Value) -> Option<regex::Regex> {
        schema["pattern"]
            .as_str()
            .map(|p| regex::Regex::new(p).unwrap())
    }

    /// `length` characters the pattern accepts, each call a different string where it can be:
    /// multi-byte ones where allowed, so limits count characters, not bytes.
    fn text(&mut self, schema: &Value, length: usize) -> String {
        let pattern = Self::pattern(schema);
        let accepts = |s: &str| pattern.as_ref().is_none_or(|p| p.is_match(s));
        self.salt += 1;
        for fill in ['é', 'a', 'k', '0'] {
            let salted: String = self
                .salt
                .to_string()
                .chars()
                .chain(std::iter::repeat(fill))
                .take(length)
                .collect();
            if length == 0 || accepts(&salted) {
                return salted;
            }
            let plain: String = std::iter::repeat_n(fill, length).collect();
            if accepts(&plain) {
                return plain;
            }
        }
        panic!("no test string of {length} characters fits {schema}");
    }

    /// A string of allowed length that the pattern refuses.
    fn off_pattern(&mut self, schema: &Value) -> String {
        let pattern = Self::pattern(schema).unwrap();
        let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
        let max = schema["maxLength"].as_u64().unwrap_or(64) as usize;
        let length = 3.clamp(min.max(1), max);
        let good = self.text(schema, length);
        for bad in [' ', 'A', '\u{e9}', '~'] {
            let mut one: Vec<char> = good.chars().collect();
            one[length / 2] = bad;
            let one: String = one.into_iter().collect();
            if !pattern.is_match(&one) {
                return one;
            }
            let all: String = std::iter::repeat_n(bad, length).collect();
            if !pattern.is_match(&all) {
                return all;
            }
        }
        panic!("no test string breaks {schema}");
    }

    fn integer(schema: &Value, offset: i64) -> Value {
        match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
            (Some(min), _) => json!(min + offset),
            (None, Some(max)) => json!(max - offset),
            (None, None) => json!(offset + 1),
        }
    }

    /// `n` distinct items: integers, or a date's sections (one seat each, named apart).
    fn items(schema: &Value, n: usize) -> Value {
        let items = &schema["items"];
        let sections = items["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/SectionRequest"));
        (0..n)
            .map(|i| match sections {
                true => {
                    json!({"name": format!("S{i}"), "price": 1, "rows": [{"row": "A", "seats": 1}]})
                }
                false => Self::integer(items, i as i64),
            })
            .collect::<Vec<_>>()
            .into()
    }

    /// The value just inside (`inside`) or just outside the limit.
    fn at_edge(&mut self, limit: &Limit, inside: bool) -> Value {
        let schema = &limit.schema;
        let bound = match limit.keyword.strip_prefix("items.") {
            Some(keyword) => &schema["items"][keyword],
            None => &schema[&limit.keyword],
        };
        let step = |n: u64, outward_down: bool| -> u64 {
            match (inside, outward_down) {
                (true, _) => n,
                (false, true) => n - 1,
                (false, false) => n + 1,
            }
        };
        match limit.keyword.as_str() {
            "minLength" => json!(self.text(schema, step(bound.as_u64().unwrap(), true) as usize)),
            "maxLength" => json!(self.text(schema, step(bound.as_u64().unwrap(), false) as usize)),
            "pattern" if inside => json!(self.text(
                schema,
                3.clamp(
                    schema["minLength"].as_u64().unwrap_or(1) as usize,
                    schema["maxLength"].as_u64().unwrap_or(64) as usize,
                )
            )),
            "pattern" => json!(self.off_pattern(schema)),
            "minimum" => json!(bound.as_i64().unwrap() - i64::from(!inside)),
            "maximum" => json!(bound.as_u64().unwrap() + u64::from(!inside)),
            "minItems" => Self::items(schema, step(bound.as_u64().unwrap(), true) as usize),
            "maxItems" => Self::items(schema, step(bound.as_u64().unwrap(), false) as usize),
            "uniqueItems" if inside => Self::items(schema, 2),
            "uniqueItems" => {
                let one = Self::integer(&schema["items"], 0);
                json!([one, one])
            }
            "items.minimum" => json!([bound.as_i64().unwrap() - i64::from(!inside)]),
            "items.maximum" => json!([bound.as_u64().unwrap() + u64::from(!inside)]),
            other => panic!("no edge values for {other}"),
        }
    }
}

/// The largest seat number a hold body names.
fn largest_seat(body: &Value) -> u64 {
    let mut seats: Vec<u64> = body["seat_nos"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    seats.extend(body["seat_no"].as_u64());
    seats.into_iter().max().unwrap_or(1)
}

/// The outcomes of refunds, transfers and cancellations. `first` is a reservation `buyer` paid
/// for on `date`; it ends refunded.
async fn returns(
    app: &TestApp,
    seen: &mut Observed,
    buyer: &Buyer,
    queue_token: &str,
    date: &str,
    first: &str,
) {
    let refunds = "/api/v1/refunds";
    let transfers = "/api/v1/transfers";
    let refund = |who: &Buyer, key: &str, reservation: &str| {
        app.post(refunds)
            .session(who)
            .idempotency_key(key)
            .json(&json!({ "reservation_id": reservation }))
    };
    let give = |who: &Buyer, key: &str, reservation: &str, to: &str| {
        app.post(transfers)
            .session(who)
            .idempotency_key(key)
            .json(&json!({ "reservation_id": reservation, "to_username": to }))
    };
    let friend = app.new_buyer().await;
    let held = app.hold_ok(buyer, queue_token, date, &[3]).await;
    let held = string_field(&held, "reservation_id");
    for (path, request) in [
        (refunds, refund(buyer, "r-0", &held)),
        (transfers, give(buyer, "t-0", &held, &friend.username)),
    ] {
        seen.expect("POST", path, request, 409, "reservation_not_paid")
            .await;
    }
    for (path, request) in [
        (refunds, refund(buyer, "r-0", "r_999_1")),
        (transfers, give(buyer, "t-0", "r_999_1", &friend.username)),
        (refunds, refund(&friend, "r-0", first)),
    ] {
        seen.expect("POST", path, request, 404, "not_found").await;
    }
    let nobody = give(buyer, "t-0", first, "nobody_by_that_name");
    seen.expect("POST", transfers, nobody, 422, "invalid_input")
        .await;
    seen.send(
        "POST",
        transfers,
        give(buyer, "t-1", first, &friend.username),
    )
    .await;
    let reused = give(buyer, "t-1", &held, &friend.username);
    seen.expect("POST", transfers, reused, 422, "idempotency_key_reused")
        .await;
    seen.send("POST", refunds, refund(&friend, "r-1", first))
        .await;
    let reused = refund(&friend, "r-1", &held);
    seen.expect("POST", refunds, reused, 422, "idempotency_key_reused")
        .await;

    // A date that starts within the refund window, then is called off.
    let soon = app.now_ms() + 3_600_000;
    let starts_at = time::OffsetDateTime::from_unix_timestamp_nanos(soon as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let concert = app.create_concert("Soon", "Hall").await;
    let response = app
        .post(&format!("/api/v1/admin/concerts/{concert}/dates"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"starts_at": starts_at, "seat_count": 5, "price": 10}))
        .send()
        .await
        .unwrap();
    let soon_date = string_field(&assert_json(response, 201).await, "date_id");
    let (late, late_token) = app.admitted_buyer().await;
    app.charge_ok(&late, 10).await;
    let paid = app.hold_ok(&late, &late_token, &soon_date, &[1]).await;
    let paid = string_field(&paid, "reservation_id");
    assert_json(app.pay(&late, &late_token, &paid).await, 201).await;
    let closed = refund(&late, "r-2", &paid);
    seen.expect("POST", refunds, closed, 409, "refund_window_closed")
        .await;
    let cancellation = "/api/v1/admin/dates/{date_id}/cancellation";
    let url = format!("/api/v1/admin/dates/{soon_date}/cancellation");
    let cancel = || app.post(&url).bearer_auth(&app.admin_token);
    seen.send("POST", cancellation, cancel()).await;
    seen.expect("POST", cancellation, cancel(), 409, "date_cancelled")
        .await;
}

/// The outcomes of joining, listing and leaving a waiting list. `stranger_token` is a queue
/// token of another user.
async fn waitlists(app: &TestApp, seen: &mut Observed, stranger_token: &str) {
    let (_, sold_out) = app.concert_with_date(1, 10).await;
    let (seller, seller_token) = app.admitted_buyer().await;
    app.charge_ok(&seller, 10).await;
    let held = app.hold_ok(&seller, &seller_token, &sold_out, &[1]).await;
    let held = string_field(&held, "reservation_id");
    assert_json(app.pay(&seller, &seller_token, &held).await, 201).await;
    let (_, open) = app.concert_with_date(5, 10).await;
    let (fan, fan_token) = app.admitted_buyer().await;
    let join = "/api/v1/dates/{date_id}/waitlist";
    let to = |date: &str, token: &str, body: Value| {
        app.post(&format!("/api/v1/dates/{date}/waitlist"))
            .session(&fan)
            .queue(token)
            .json(&body)
    };
    let entry = seen
        .send(
            "POST",
            join,
            to(&sold_out, &fan_token, json!({"quantity": 1})),
        )
        .await;
    let entry = string_field(&assert_json(entry, 201).await, "entry_id");
    seen.send(
        "POST",
        join,
        to(&sold_out, &fan_token, json!({"quantity": 1})),
    )
    .await;
    let zero = to(&sold_out, &fan_token, json!({"quantity": 0}));
    seen.expect("POST", join, zero, 422, "invalid_input").await;
    let open = to(&open, &fan_token, json!({"quantity": 1}));
    seen.expect("POST", join, open, 409, "seats_available")
        .await;
    let theirs = to(&sold_out, stranger_token, json!({"quantity": 1}));
    seen.expect("POST", join, theirs, 403, "forbidden").await;
    let list = "/api/v1/waitlist";
    seen.send("GET", list, app.get(list).session(&fan)).await;
    let one = "/api/v1/waitlist/{entry_id}";
    let url = format!("/api/v1/waitlist/{entry}");
    let not_theirs = app.delete(&url).session(&seller);
    seen.expect("DELETE", one, not_theirs, 404, "not_found")
        .await;
    seen.send("DELETE", one, app.delete(&url).session(&fan))
        .await;
}

/// Sends the request a client would for `route`, with `field` set to `value` (in the body, or
/// as a header) and everything else valid, each time for a fresh user on fresh dates.
async fn try_limit(app: &TestApp, limit: &Limit, value: &Value) -> reqwest::Response {
    let (method, path) = &limit.route;
    if limit.query {
        // The lists that take query parameters need a session and nothing else.
        let buyer = app.new_buyer().await;
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        let url = format!("{path}?{}={value}", limit.field);
        return app
            .request(method.parse().unwrap(), &url)
            .session(&buyer)
            .send()
            .await
            .unwrap();
    }
    let mut body = match path.as_str() {
        "/api/v1/users" | "/api/v1/sessions" => {
            json!({"username": unique_username(), "password": PASSWORD})
        }
        "/api/v1/balance/charges" => json!({"amount": 100}),
        "/api/v1/admin/concerts" => json!({"title": "T", "venue": "V"}),
        "/api/v1/admin/concerts/{concert_id}/dates" => {
            json!({"starts_at": STARTS_AT, "seat_count": 5, "price": 10})
        }
        "/api/v1/reservations" => json!({"seat_no": 1}),
        "/api/v1/payments" | "/api/v1/refunds" | "/api/v1/transfers" => json!({}),
        "/api/v1/dates/{date_id}/waitlist" => json!({"quantity": 1}),
        other => panic!("{method} {other} has a documented limit: give it a valid request here"),
    };
    if !limit.header {
        if limit.field.starts_with("seat_no") {
            body.as_object_mut().unwrap().remove("seat_no");
        }
        if limit.field == "sections" {
            // The other form of a date's seats; one form at a time.
            body.as_object_mut().unwrap().remove("seat_count");
            body.as_object_mut().unwrap().remove("price");
        }
        body[&limit.field] = value.clone();
    }
    let (buyer, queue_token) = app.admitted_buyer().await;
    let url = match path.as_str() {
        "/api/v1/users" => path.clone(),
        "/api/v1/sessions" => {
            // Signs the user up first; a sign-up the limits refuse leaves no such user.
            app.post("/api/v1/users").json(&body).send().await.unwrap();
            path.clone()
        }
        "/api/v1/admin/concerts/{concert_id}/dates" => {
            let concert = app.create_concert("Edges", "Hall").await;
            format!("/api/v1/admin/concerts/{concert}/dates")
        }
        "/api/v1/reservations" => {
            let seats = largest_seat(&body).clamp(5, 100_000);
            let (_, date) = app.concert_with_date(seats, 10).await;
            body["date_id"] = json!(date);
            path.clone()
        }
        "/api/v1/payments" => {
            app.charge_ok(&buyer, 1_000).await;
            let (_, date) = app.concert_with_date(5, 10).await;
            let held = app.hold_ok(&buyer, &queue_token, &date, &[1]).await;
            body["reservation_id"] = held["reservation_id"].clone();
            path.clone()
        }
        "/api/v1/dates/{date_id}/waitlist" => {
            // A date sold out to someone else, so any quantity may wait for it.
            let (_, date) = app.concert_with_date(1, 10).await;
            let (seller, seller_token) = app.admitted_buyer().await;
            app.charge_ok(&seller, 10).await;
            let held = app.hold_ok(&seller, &seller_token, &date, &[1]).await;
            let id = string_field(&held, "reservation_id");
            assert_json(app.pay(&seller, &seller_token, &id).await, 201).await;
            format!("/api/v1/dates/{date}/waitlist")
        }
        "/api/v1/refunds" | "/api/v1/transfers" => {
            app.charge_ok(&buyer, 1_000).await;
            let (_, date) = app.concert_with_date(5, 10).await;
            let held = app.hold_ok(&buyer, &queue_token, &date, &[1]).await;
            let id = string_field(&held, "reservation_id");
            assert_json(app.pay(&buyer, &queue_token, &id).await, 201).await;
            body["reservation_id"] = json!(id);
            if path == "/api/v1/transfers" {
                body["to_username"] = json!(app.new_buyer().await.username);
            }
            path.clone()
        }
        _ => path.clone(),
    };
    let mut request = app
        .request(method.parse().unwrap(), &url)
        .queue(&queue_token)
        .json(&body);
    request = if path.starts_with("/api/v1/admin/") {
        request.bearer_auth(&app.admin_token)
    } else {
        request.session(&buyer)
    };
    if limit.header {
        request = request.header(&limit.field, value.as_str().unwrap());
    }
    request.send().await.unwrap()
}

/// Each limit the document states holds at its edge: the value just inside is accepted and the
/// one just outside is refused with API.md's code. The limits are read from the document, so
/// one added later is tried here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_limit_holds_just_inside_and_just_outside() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let limits = documented_limits(&document);
    let fields: BTreeSet<&str> = limits.iter().map(|l| l.field.as_str()).collect();
    for field in [
        "username",
        "password",
        "amount",
        "seat_no",
        "seat_nos",
        "seat_count",
        "price",
        "sections",
        "title",
        "venue",
        "Idempotency-Key",
        "limit",
    ] {
        assert!(
            fields.contains(field),
            "the document limits {field}: {fields:?}"
        );
    }
    let mut values = Values { salt: 0 };
    for limit in &limits {
        let what = format!(
            "{} {} {} {}",
            limit.route.0, limit.route.1, limit.field, limit.keyword
        );
        let inside = values.at_edge(limit, true);
        let response = try_limit(&app, limit, &inside).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            (200..300).contains(&status),
            "{what}: {inside} is inside the limit, yet {status}: {text}"
        );
        let outside = values.at_edge(limit, false);
        let (status, code) = refusal(limit);
        let response = try_limit(&app, limit, &outside).await;
        assert_problem_for(response, status, code, &format!("{what}: {outside}")).await;
    }
}
