//! Extractors: a handler's signature says what it requires (`Session`, `Admitted`, `AdminAuth`)
//! and every rejection is already problem+json with the right code, in API.md's order.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AsHeaderName, AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::domain::admission::QueueTokenId;
use crate::domain::page::{Cursor, ListKind, PageLimit, PageRequest, PAGE_LIMIT_MAX};
use crate::domain::{IdempotencyKey, UserId};
use crate::security::SessionToken;

pub const QUEUE_TOKEN_HEADER: &str = "x-queue-token";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The header's one value; `Err` when it was sent more than once. Two values of a header that
/// carries one credential are not a credential: which one counts would be the server's guess,
/// and a proxy in front may have checked the other.
fn single(headers: &HeaderMap, name: impl AsHeaderName) -> Result<Option<&HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).into_iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(Repeated),
    }
}

struct Repeated;

/// The bearer token; none if `Authorization` is missing, repeated or not `Bearer`.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = single(&parts.headers, AUTHORIZATION).ok()??.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user: UserId,
    pub session: u64,
    /// Kept so a long-lived response (a live stream) can check the session is still valid.
    pub verifier: [u8; 32],
}

impl Session {
    /// Whether the session is still signed in and unexpired at `now`.
    pub fn still_valid(&self, app: &AppState, now: crate::domain::Timestamp) -> bool {
        app.engine
            .accounts
            .authenticate(self.session, &self.verifier, now)
            .is_ok()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).and_then(SessionToken::parse).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "sign in first: send Authorization: Bearer <session_token>",
            )
        })?;
        let now = app.clock.now();
        let verifier = token.verifier_digest();
        let user = app
            .engine
            .accounts
            .authenticate(token.session, &verifier, now)?;
        app.limits.session_request(token.session, now)?;
        Ok(Self {
            user,
            session: token.session,
            verifier,
        })
    }
}

/// The `X-Queue-Token` header, parsed but not yet checked against the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueTokenHeader(pub QueueTokenId);

impl QueueTokenHeader {
    /// Missing, repeated or malformed: `queue_token_invalid`, as for an unknown token.
    pub fn from_parts(parts: &Parts) -> Result<Self, ApiError> {
        single(&parts.headers, QUEUE_TOKEN_HEADER)
            .ok()
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Self)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "queue_token_invalid",
                    "send your waiting-room token in X-Queue-Token (POST /api/v1/queue/tokens gives one)",
                )
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueueTokenHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::from_parts(parts)
    }
}

/// A signed-in user whose queue token is active: session first, then the token.
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    pub user: UserId,
    /// Kept, with the token, so a live stream can check both again later.
    pub session: Session,
    pub token: QueueTokenId,
}

impl Admitted {
    fn check(
        app: &AppState,
        session: Session,
        token: Result<QueueTokenHeader, ApiError>,
    ) -> Result<Self, ApiError> {
        let QueueTokenHeader(token) = token?;
        app.engine
            .queue
            .check_admitted(token, session.user, app.clock.now())?;
        Ok(Self {
            user: session.user,
            session,
            token,
        })
    }
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let session = Session::from_request_parts(parts, app).await?;
        Self::check(app, session, QueueTokenHeader::from_parts(parts))
    }
}

/// The `X-Queue-Token` check deferred until after an idempotent replay (payments).
pub struct DeferredAdmission(Result<QueueTokenHeader, ApiError>);

impl DeferredAdmission {
    pub fn check(self, app: &AppState, session: Session) -> Result<Admitted, ApiError> {
        Admitted::check(app, session, self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DeferredAdmission {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(QueueTokenHeader::from_parts(parts)))
    }
}

/// `Idempotency-Key`, when the client sent one.
#[derive(Debug, Clone)]
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = single(&parts.headers, IDEMPOTENCY_HEADER)
            .map_err(|Repeated| ApiError::malformed("send one Idempotency-Key, not several"))?;
        let Some(value) = value else {
            return Ok(Self(None));
        };
        value
            .to_str()
            .ok()
            .and_then(IdempotencyKey::parse)
            .map(|key| Self(Some(key)))
            .ok_or_else(|| {
                ApiError::malformed("Idempotency-Key must be 1 to 64 visible ASCII characters")
            })
    }
}

/// `?limit=N&cursor=C` on one of a user's lists, read from the query string. A `limit` that is
/// not a whole number in 1…1000, a `cursor` this server did not give, and either given twice
/// are 400 `malformed_request`; other parameters are ignored.
#[derive(Debug, Clone)]
pub struct PageQuery {
    limit: PageLimit,
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct RawPageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for, its cursor read as one of `list`'s.
    pub fn request(&self, list: ListKind) -> Result<PageRequest, ApiError> {
        let cursor = match &self.cursor {
            None => None,
            Some(text) => Some(Cursor::parse(text, list).ok_or_else(|| {
                ApiError::malformed("cursor must be a next_cursor this list gave, as it was given")
            })?),
        };
        Ok(PageRequest {
            list,
            limit: self.limit,
            cursor,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawPageQuery>::try_from_uri(&parts.uri).map_err(|_| {
            ApiError::malformed("the query string is not valid: limit and cursor at most once each")
        })?;
        let limit = match raw.limit.as_deref() {
            None => PageLimit::DEFAULT,
            Some(text) => PageLimit::parse(text).ok_or_else(|| {
                ApiError::malformed(format!(
                    "limit must be a whole number from 1 to {PAGE_LIMIT_MAX}"
                ))
            })?,
        };
        Ok(Self {
            limit,
            cursor: raw.cursor,
        })
    }
}

/// The admin bearer token. With `admin.token` empty the admin API does not exist (404). An
/// address that presented `limits.admin_failures_per_minute_per_ip` wrong tokens in the last
/// minute gets 429 before its token is compared.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let expected = app.settings.admin.token.as_bytes();
        if expected.is_empty() {
            return Err(ApiError::not_found());
        }
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let now = app.clock.now();
        app.limits.admin_attempt(client, now)?;
        // Digests of equal length, compared in constant time: neither the token's bytes nor
        // its length show in the timing.
        let presented = Sha256::digest(bearer(parts).unwrap_or_default().as_bytes());
        if bool::from(
            presented
                .as_slice()
                .ct_eq(Sha256::digest(expected).as_slice()),
        ) {
            app.limits.admin_token_accepted(client, now);
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send the admin token as Authorization: Bearer <admin.token>",
            ))
        }
    }
}

/// A JSON body: 415 unless it is declared JSON, 413 past the size limit, 400 unless it is an
/// object that parses into `T`. Keeps the raw bytes for idempotency fingerprints.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        DeferredJson::from_request(req, app).await?.parse()
    }
}

/// Past the limit, a body is still read (and thrown away) up to this much, so the client gets
/// its 413 instead of a connection reset while it is still sending.
const OVERSIZED_BODY_DRAIN_BYTES: usize = 1 << 20;

async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut collected = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::malformed("the request body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            collected.extend_from_slice(&data);
        } else if seen > limit + OVERSIZED_BODY_DRAIN_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        ));
    }
    Ok(Bytes::from(collected))
}

/// A JSON body read but not yet judged, for routes where API.md checks something else (the
/// queue token) before the request itself.
pub struct DeferredJson<T> {
    declared_json: bool,
    body: Result<Bytes, ApiError>,
    shape: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> DeferredJson<T> {
    /// The bytes as sent (empty if they could not be read).
    pub fn raw(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }

    pub fn parse(self) -> Result<ApiJson<T>, ApiError> {
        if !self.declared_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let raw = self.body?;
        // Every request body is an object; serde would also build a struct from an array.
        let is_object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !is_object {
            return Err(ApiError::malformed("the body must be a JSON object"));
        }
        let value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::malformed(format!("the body is not the expected JSON: {e}")))?;
        Ok(ApiJson { value, raw })
    }
}

impl<T> FromRequest<AppState> for DeferredJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let declared_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        let limit = app.settings.limits.body_bytes_max;
        let declared_too_large = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > (limit + OVERSIZED_BODY_DRAIN_BYTES) as u64);
        let body = if declared_too_large {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ))
        } else {
            read_body(req.into_body(), limit).await
        };
        Ok(Self {
            declared_json,
            body,
            shape: std::marker::PhantomData,
        })
    }
}

/// A path segment that is an opaque id: anything unparseable is simply not found.
pub struct IdPath<T>(pub T);

impl<T: std::str::FromStr + Send, S: Send + Sync> FromRequestParts<S> for IdPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        raw.parse().map(Self).map_err(|_| ApiError::not_found())
    }
}

/// For an optional field of a request body (`#[serde(default, deserialize_with = "present")]`):
/// it may be left out, but an explicit `null` is not a value of its type, so it is 400 as for
/// any other field, rather than read as absent.
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Any JSON integer, however large (saturated to the i128 range), so that out-of-range values
/// get 422 rather than 400. Fractions, strings and null are not integers: 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i128);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeNumberVisitor;

        impl Visitor<'_> for WholeNumberVisitor {
            type Value = WholeNumber;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v as i128))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v as i128))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<WholeNumber, E> {
                Ok(WholeNumber(i128::try_from(v).unwrap_or(i128::MAX)))
            }
            // serde_json hands integers beyond 64 bits over as floats. A whole float that large
            // was written as an integer (or an integral exponent form): out of range, not a
            // fraction. Small floats (`1.5`, `1.0`) were written as decimals: not integers.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WholeNumber, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() >= 9.2e18 {
                    Ok(WholeNumber(if v > 0.0 { i128::MAX } else { i128::MIN }))
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(v), &self))
                }
            }
        }

        deserializer.deserialize_any(WholeNumberVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Body {
        n: WholeNumber,
    }

    fn parse(json: &str) -> Option<i128> {
        serde_json::from_str::<Body>(json).ok().map(|b| b.n.0)
    }

    #[test]
    fn integers_of_any_size_parse_and_everything_else_does_not() {
        assert_eq!(parse(r#"{"n": 10}"#), Some(10));
        assert_eq!(parse(r#"{"n": -1}"#), Some(-1));
        assert_eq!(parse(r#"{"n": 18446744073709551616}"#), Some(i128::MAX));
        assert_eq!(parse(r#"{"n": -18446744073709551616}"#), Some(i128::MIN));
        assert_eq!(parse(r#"{"n": 1.5}"#), None);
        assert_eq!(parse(r#"{"n": "10"}"#), None);
        assert_eq!(parse(r#"{"n": null}"#), None);
        assert_eq!(parse(r#"{"n": true}"#), None);
        assert_eq!(parse(r#"{}"#), None);
    }
}
