//! One error type owns the mapping to HTTP: problem+json (RFC 9457) with API.md's stable codes.
//! Internal failures are logged with context and never shown to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::actors::EngineError;
use crate::domain::DomainError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    retry_after_seconds: Option<u64>,
}

/// Every error, as `application/problem+json` (RFC 9457). `code` is stable; `detail` is for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    #[schema(example = "https://boxoffice.invalid/problems/seat_unavailable")]
    kind: String,
    #[schema(example = "Conflict")]
    title: &'a str,
    #[schema(example = 409)]
    status: u16,
    #[schema(example = "seat 12 is held or sold")]
    detail: &'a str,
    #[schema(example = "seat_unavailable")]
    code: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", detail)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "nothing here: check the path and the id",
        )
    }

    pub fn invalid_input(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", detail)
    }

    pub fn overloaded(detail: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail)
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let problem = Self::new(status_of(&error), error.code(), error.to_string());
        match error.retry_after_seconds() {
            Some(seconds) => problem.retry_after(seconds),
            None => problem,
        }
    }
}

/// The HTTP status API.md gives each domain outcome.
pub(crate) fn status_of(error: &DomainError) -> StatusCode {
    match error {
        DomainError::InvalidInput(_)
        | DomainError::HoldLimit { .. }
        | DomainError::HoldLimitOverAllDates { .. }
        | DomainError::TicketLimit { .. }
        | DomainError::InvalidAmount { .. }
        | DomainError::BalanceLimit { .. }
        | DomainError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        DomainError::SeatUnavailable(_)
        | DomainError::ReholdCooldown { .. }
        | DomainError::NoAdjacentSeats { .. }
        | DomainError::AlreadyPaid
        | DomainError::ReservationNotHeld
        | DomainError::ReservationNotPaid
        | DomainError::RefundWindowClosed { .. }
        | DomainError::DateCancelled
        | DomainError::SeatsAvailable { .. }
        | DomainError::RejoinCooldown { .. }
        | DomainError::SalesClosed
        | DomainError::UsernameTaken => StatusCode::CONFLICT,
        DomainError::NotFound => StatusCode::NOT_FOUND,
        DomainError::HoldExpired => StatusCode::GONE,
        DomainError::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
        DomainError::InvalidCredentials
        | DomainError::Unauthenticated
        | DomainError::QueueTokenInvalid => StatusCode::UNAUTHORIZED,
        DomainError::Forbidden
        | DomainError::NotAdmitted
        | DomainError::QueueTokenExpired
        | DomainError::QueueTokenWrongRoom => StatusCode::FORBIDDEN,
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Domain(domain) => domain.into(),
            EngineError::Unavailable => {
                Self::overloaded("the server is busy or stopping; retry in a moment")
            }
            // Resolved inside `actors`; should one slip out, the reservation is not live.
            EngineError::Ended => DomainError::NotFound.into(),
        }
    }
}

/// The problem+json body of an error; the connection layer writes it where no response
/// object exists (answers to requests hyper could not parse).
pub(crate) fn problem_json(status: StatusCode, code: &str, detail: &str) -> Vec<u8> {
    let problem = Problem {
        kind: format!("https://boxoffice.invalid/problems/{code}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        code,
    };
    serde_json::to_vec(&problem).expect("a problem always serializes")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = problem_json(self.status, self.code, &self.detail);
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
