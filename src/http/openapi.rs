//! The OpenAPI 3.1 document, generated from the handlers' annotations and the very types they
//! serialize, and the interactive docs page. Both are served from the binary: no CDN, so the
//! docs work on an offline machine.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use super::{admin, balance, catalog, error, live, ops, queue, reservations, users};

/// The `Idempotency-Key` header of the three endpoints that honour it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by the extractor from the raw header; this type only documents it.
pub(super) struct IdempotencyKeyParam {
    /// 1–64 visible ASCII characters. The same user repeating the same key with the same body
    /// gets the original response; with another body, 422 `idempotency_key_reused`.
    #[serde(rename = "Idempotency-Key")]
    #[param(rename = "Idempotency-Key", value_type = Option<String>)]
    key: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "boxoffice",
        description = "Concert-ticket reservations: a metered waiting room, 5-minute seat holds, \
            a prepaid balance and atomic payments. Every error is `application/problem+json` \
            with a stable `code`.",
    ),
    paths(
        users::sign_up, users::sign_in, users::sign_out, users::me,
        queue::take_token, queue::poll_token, queue::leave_queue,
        catalog::concerts, catalog::dates, catalog::seats,
        reservations::hold, reservations::list_mine, reservations::show, reservations::cancel,
        reservations::pay,
        balance::balance, balance::charge, balance::history,
        admin::create_concert, admin::create_date, admin::stats, admin::backup,
        live::seat_events, live::queue_events,
        ops::healthz, ops::readyz, ops::metrics, openapi_json, docs,
    ),
    components(schemas(error::Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "Sign-up, sign-in, sessions"),
        (name = "queue", description = "The waiting room: FIFO admission at a metered rate"),
        (name = "catalogue", description = "Concerts and dates, public"),
        (name = "seats", description = "Seat maps, holds and payments"),
        (name = "balance", description = "The prepaid balance"),
        (name = "admin", description = "`Authorization: Bearer <admin.token>`"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        problem_json_for_errors(openapi);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `session_token` from `POST /api/v1/sessions`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "queue_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Queue-Token",
                "An active token from `POST /api/v1/queue/tokens`",
            ))),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The configured `admin.token`"))
                    .build(),
            ),
        );
    }
}

/// Error bodies are served as `application/problem+json`; the annotations only name the schema.
fn problem_json_for_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if status.starts_with('4') || status.starts_with('5') {
                    if let Some(content) = response.content.shift_remove("application/json") {
                        response
                            .content
                            .insert("application/problem+json".to_owned(), content);
                    }
                }
            }
        }
    }
}

const DOCS_ASSETS: &str = "/docs/assets";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .merge(swagger_ui_dist::generate_routes(
            swagger_ui_dist::ApiDefinition {
                uri_prefix: DOCS_ASSETS,
                api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
                title: Some("boxoffice API"),
            },
        ))
        .with_state(())
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document, OpenAPI 3.1", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document is plain data and always serializes")
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
}

/// Our own page rather than the bundled one: it names fixed asset paths, so nothing of the
/// request is echoed into the HTML.
#[utoipa::path(
    get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Interactive API docs (Swagger UI, served from the binary)", content_type = "text/html"))
)]
pub(super) async fn docs() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(
            r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>boxoffice API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.onload = () => {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
};
</script>
</body>
</html>
"##,
        ),
    )
}
