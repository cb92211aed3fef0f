//! The OpenAPI 3.1 document, generated from the handlers' annotations and the very types they
//! serialize, and the interactive docs page. Both are served from the binary: no CDN, so the
//! docs work on an offline machine.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, Modify, OpenApi};

use super::{
    admin, balance, catalog, error, live, ops, queue, reservations, returns, users, waitlist,
    AppState,
};
use crate::config::Settings;
use crate::domain::catalog::SEATS_PER_DATE_MAX;
use crate::domain::SeatNo;

/// The `Idempotency-Key` header of the endpoints that honour it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by the extractor from the raw header; this type only documents it.
pub(super) struct IdempotencyKeyParam {
    /// 1–64 visible ASCII characters (else 400 `malformed_request`). The same user repeating
    /// the same key with the same body gets the original response; with another body, 422
    /// `idempotency_key_reused`.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        rename = "Idempotency-Key",
        value_type = Option<String>,
        min_length = 1,
        max_length = 64,
        pattern = "^[!-~]+$"
    )]
    key: Option<String>,
}

/// `limit` and `cursor` of a user's list (`PageQuery`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the extractor from the raw query; this type only documents it.
pub(super) struct PageParams {
    /// Entries on the page, a whole number from 1 to 1000 (else 400 `malformed_request`); 100
    /// when absent.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, exactly as it was given, for the next (older)
    /// page; absent for the newest. Anything else is 400 `malformed_request`.
    cursor: Option<String>,
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
        catalog::concerts, catalog::dates, catalog::date, catalog::seats,
        reservations::hold, reservations::list_mine, reservations::show, reservations::cancel,
        reservations::pay,
        returns::refund, returns::transfer,
        waitlist::join, waitlist::list_mine, waitlist::leave,
        balance::balance, balance::charge, balance::history,
        admin::create_concert, admin::create_date, admin::cancel_date, admin::stats, admin::waiting_room, admin::backup,
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

/// The document this server serves: `ApiDoc` with the limits that come from configuration
/// (`balance.max_charge`, `holds.max_seats_per_user`) and the ones an attribute cannot state.
pub fn document(settings: &Settings) -> utoipa::openapi::OpenApi {
    let mut openapi = ApiDoc::openapi();
    let schemas = &mut openapi
        .components
        .as_mut()
        .expect("the document has components")
        .schemas;
    let amount = property(schemas, "ChargeRequest", "amount");
    let Schema::Object(amount) = amount else {
        panic!("ChargeRequest.amount is an integer schema");
    };
    amount.maximum = Some(settings.balance.max_charge.into());
    let Schema::Array(seat_nos) = property(schemas, "HoldRequest", "seat_nos") else {
        panic!("HoldRequest.seat_nos is an array schema");
    };
    seat_nos.max_items = Some(settings.holds.max_seats_per_user as usize);
    seat_nos.unique_items = true;
    let ArrayItems::RefOrSchema(item) = &mut seat_nos.items else {
        panic!("HoldRequest.seat_nos has an item schema");
    };
    let RefOr::T(Schema::Object(item)) = item.as_mut() else {
        panic!("HoldRequest.seat_nos items are integers");
    };
    item.minimum = Some(SeatNo::FIRST.into());
    item.maximum = Some((SEATS_PER_DATE_MAX as u64).into());
    let Schema::Object(quantity) = property(schemas, "BestAvailableRequest", "quantity") else {
        panic!("BestAvailableRequest.quantity is an integer schema");
    };
    quantity.maximum = Some(settings.holds.max_seats_per_user.into());
    // A general-room token is taken without a body; `{concert_id}` is for a concert's room.
    if let Some(take_token) = openapi
        .paths
        .paths
        .get_mut("/api/v1/queue/tokens")
        .and_then(|item| item.post.as_mut())
        .and_then(|operation| operation.request_body.as_mut())
    {
        take_token.required = Some(utoipa::openapi::Required::False);
    }
    openapi
}

/// A request type's property, to be given a limit the attributes cannot state.
fn property<'a>(
    schemas: &'a mut std::collections::BTreeMap<String, RefOr<Schema>>,
    schema: &str,
    name: &str,
) -> &'a mut Schema {
    let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema) else {
        panic!("{schema} is an object schema");
    };
    match object.properties.get_mut(name) {
        Some(RefOr::T(property)) => property,
        _ => panic!("{schema}.{name} is an inline schema"),
    }
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        statuses_every_route_can_answer(openapi);
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

/// The answers that come from layers every route sits behind, so no annotation repeats them:
/// 503 `overloaded` from the in-flight bound and the request timeout (on every route but the
/// probes, which answer outside it), and 408, 413 and 415 from reading the body (on every route
/// that takes one). A route that says more about one of these (why its 503 happens) keeps its
/// own entry.
fn statuses_every_route_can_answer(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let is_probe = super::edges::is_probe(path);
        for operation in operations_of(item) {
            let takes_json = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                if !responses.contains_key(status) {
                    responses.insert(status.to_owned(), problem(description).into());
                }
            };
            if !is_probe {
                add("503", OVERLOADED);
            }
            if takes_json {
                add("408", REQUEST_TIMEOUT);
                add("413", PAYLOAD_TOO_LARGE);
                add("415", UNSUPPORTED_MEDIA_TYPE);
            }
        }
    }
}

const REQUEST_TIMEOUT: &str =
    "`request_timeout`: the body did not arrive within `server.body_read_timeout_seconds`; the connection is closed";

const OVERLOADED: &str =
    "`overloaded`: in-flight work is at its bound, or the request took too long; see `Retry-After`";
const PAYLOAD_TOO_LARGE: &str =
    "`payload_too_large`: the body is larger than `limits.body_bytes_max`";
const UNSUPPORTED_MEDIA_TYPE: &str =
    "`unsupported_media_type`: no body, or not `Content-Type: application/json`";

/// Error bodies are served as `application/problem+json`; the annotations only name the schema.
fn problem_json_for_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for operation in operations_mut(openapi) {
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

/// Every operation of the document, whatever its method.
fn operations_mut(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(operations_of)
}

fn operations_of(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

const DOCS_ASSETS: &str = "/docs/assets";

/// The docs run Swagger UI's script, ours that starts it, and its style sheet, all from this
/// server; its icons are `data:` images. Nothing inline runs, and no other site may frame the
/// page (clickjacking the "Try it out" buttons).
const DOCS_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Starts Swagger UI: a file rather than an inline script, so the policy needs no
/// `'unsafe-inline'`.
const DOCS_START: &str = r##"window.onload = () => {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
};
"##;

pub fn routes() -> Router<AppState> {
    let docs: Router<AppState> = Router::new()
        .route("/docs", get(docs))
        .route(
            "/docs/start.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    DOCS_START,
                )
            }),
        )
        .merge(swagger_ui_dist::generate_routes(
            swagger_ui_dist::ApiDefinition {
                uri_prefix: DOCS_ASSETS,
                api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
                title: Some("boxoffice API"),
            },
        ))
        .layer(axum::middleware::map_response(docs_headers))
        .with_state(());
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(docs)
}

/// Every answer of the docs, its files included.
async fn docs_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "This document, OpenAPI 3.1", content_type = "application/json"),
    )
)]
pub(super) async fn openapi_json(State(app): State<AppState>) -> impl IntoResponse {
    let document = app.openapi_json.get_or_init(|| {
        document(&app.settings)
            .to_json()
            .expect("the OpenAPI document is plain data and always serializes")
            .into()
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        document.clone(),
    )
}

/// Our own page rather than the bundled one: it names fixed asset paths, so nothing of the
/// request is echoed into the HTML.
#[utoipa::path(
    get, path = "/docs", tag = "operations",
    responses(
        (status = 200, description = "Interactive API docs (Swagger UI, served from the binary)", content_type = "text/html"),
    )
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
<script src="/docs/start.js"></script>
</body>
</html>
"##,
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::domain::catalog::TEXT_CHARS_MAX;
    use crate::domain::venue;
    use crate::domain::{IdempotencyKey, Password, Username, MAX_MONEY};

    fn served(settings: &Settings) -> Value {
        serde_json::to_value(document(settings)).unwrap()
    }

    /// The attributes state the limits as literals; these are the server's own numbers.
    #[test]
    fn the_documented_limits_are_the_servers_own() {
        let mut settings = Settings::for_tests();
        settings.balance.max_charge = 12_345;
        settings.holds.max_seats_per_user = 7;
        let document = served(&settings);
        let schemas = &document["components"]["schemas"];
        let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();

        let username = field("Credentials", "username");
        assert_eq!(username["minLength"], json!(Username::CHARS_MIN));
        assert_eq!(username["maxLength"], json!(Username::CHARS_MAX));
        let password = field("Credentials", "password");
        assert_eq!(password["minLength"], json!(Password::CHARS_MIN));
        assert_eq!(password["maxLength"], json!(Password::CHARS_MAX));

        let amount = field("ChargeRequest", "amount");
        assert_eq!(amount["minimum"], json!(1));
        assert_eq!(amount["maximum"], json!(12_345));

        for name in ["title", "venue"] {
            let text = field("ConcertRequest", name);
            assert_eq!(text["minLength"], json!(1), "{name}");
            assert_eq!(text["maxLength"], json!(TEXT_CHARS_MAX), "{name}");
        }
        let seat_count = field("DateRequest", "seat_count");
        assert_eq!(seat_count["minimum"], json!(1));
        assert_eq!(seat_count["maximum"], json!(SEATS_PER_DATE_MAX as u64));
        let price = field("DateRequest", "price");
        assert_eq!(price["minimum"], json!(0));
        assert_eq!(price["maximum"], json!(MAX_MONEY));

        let seat_no = field("HoldRequest", "seat_no");
        assert_eq!(seat_no["minimum"], json!(SeatNo::FIRST));
        assert_eq!(seat_no["maximum"], json!(SEATS_PER_DATE_MAX as u64));
        let seat_nos = field("HoldRequest", "seat_nos");
        assert_eq!(seat_nos["minItems"], json!(1));
        assert_eq!(seat_nos["maxItems"], json!(7));
        assert_eq!(seat_nos["uniqueItems"], json!(true));
        assert_eq!(seat_nos["items"]["minimum"], seat_no["minimum"]);
        assert_eq!(seat_nos["items"]["maximum"], seat_no["maximum"]);
        let quantity = field("BestAvailableRequest", "quantity");
        assert_eq!(quantity["minimum"], json!(1));
        assert_eq!(quantity["maximum"], json!(7));

        let sections = field("DateRequest", "sections");
        assert_eq!(sections["minItems"], json!(1));
        assert_eq!(sections["maxItems"], json!(venue::SECTIONS_MAX));
        let name = field("SectionRequest", "name");
        assert_eq!(name["maxLength"], json!(venue::SECTION_NAME_CHARS_MAX));
        let section_price = field("SectionRequest", "price");
        assert_eq!(section_price["maximum"], json!(venue::PRICE_MAX));
        let rows = field("SectionRequest", "rows");
        assert_eq!(rows["maxItems"], json!(venue::ROWS_PER_SECTION_MAX));
        let label = field("RowRequest", "row");
        assert_eq!(label["maxLength"], json!(venue::ROW_LABEL_CHARS_MAX));
        let seats = field("RowRequest", "seats");
        assert_eq!(seats["maximum"], json!(venue::SEATS_PER_ROW_MAX));

        let keys: Vec<&Value> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .flat_map(|operation| operation["parameters"].as_array().into_iter().flatten())
            .filter(|parameter| parameter["name"] == "Idempotency-Key")
            .collect();
        assert_eq!(
            keys.len(),
            5,
            "charges, reservations, payments, refunds and transfers"
        );
        for key in keys {
            assert_eq!(key["in"], "header");
            assert_eq!(key["schema"]["minLength"], json!(1));
            assert_eq!(key["schema"]["maxLength"], json!(IdempotencyKey::CHARS_MAX));
        }
    }
}
