//! Business outcomes that are not success. Each maps one-to-one onto an API.md error code.

use thiserror::Error;

use super::types::SeatNo;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("you may hold at most {max} seats on this date at once")]
    HoldLimit { max: u32 },
    #[error(
        "you may hold at most {max} seats over all dates at once; pay for or cancel a hold first"
    )]
    HoldLimitOverAllDates { max: u32 },
    #[error("this concert allows {max} tickets per user on each date, held and owned together")]
    TicketLimit { max: u32 },
    #[error("seat {} is not available", .0 .0)]
    SeatUnavailable(SeatNo),
    #[error(
        "you let go of seat {} a moment ago; you may hold it again in {retry_after_seconds} s",
        .seat.0
    )]
    ReholdCooldown {
        seat: SeatNo,
        /// Whole seconds until the user may hold that seat again, rounded up, at least 1.
        retry_after_seconds: u64,
    },
    #[error(
        "no {quantity} adjacent seats are available{}; ask for fewer, another section, or pick seats",
        .section.as_ref().map(|s| format!(" in section \"{s}\"")).unwrap_or_default()
    )]
    NoAdjacentSeats {
        quantity: u32,
        section: Option<String>,
    },
    #[error("no such resource")]
    NotFound,
    #[error("this reservation is already paid")]
    AlreadyPaid,
    #[error("this reservation is no longer held")]
    ReservationNotHeld,
    #[error("only a paid reservation can be refunded")]
    ReservationNotPaid,
    #[error("refunds for this date closed {hours} hours before it starts")]
    RefundWindowClosed { hours: u64 },
    #[error(
        "{available} seats of this date are still available or held{}: hold them instead",
        .section.as_ref().map(|s| format!(" in section \"{s}\"")).unwrap_or_default()
    )]
    SeatsAvailable {
        available: u32,
        section: Option<String>,
    },
    #[error("your entry on this list lapsed a moment ago; you may join again in {retry_after_seconds} s")]
    RejoinCooldown { retry_after_seconds: u64 },
    #[error("this date was cancelled; paid seats were refunded to their payers")]
    DateCancelled,
    #[error("this date has started; its sales are closed")]
    SalesClosed,
    #[error("the hold expired before payment; hold the seats again")]
    HoldExpired,
    #[error("your balance of {balance} won does not cover {price} won; top it up first")]
    InsufficientBalance { balance: u64, price: u64 },
    #[error("a charge must be between 1 and {max} won")]
    InvalidAmount { max: u64 },
    #[error("this charge would take your balance above {max} won")]
    BalanceLimit { max: u64 },
    #[error("that username is taken; pick another")]
    UsernameTaken,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("sign in first: missing, invalid or expired session")]
    Unauthenticated,
    #[error("this queue token is unknown or was given up; take a new one")]
    QueueTokenInvalid,
    #[error("this belongs to another user")]
    Forbidden,
    #[error("you are still waiting in the queue; poll your token until it is active")]
    NotAdmitted,
    #[error("your admission has ended; take a new queue token")]
    QueueTokenExpired,
    #[error("this queue token is for another waiting room; take a token of this concert's room (POST /api/v1/queue/tokens with its concert_id)")]
    QueueTokenWrongRoom,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
}

impl DomainError {
    /// The stable `code` of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidInput(_) => "invalid_input",
            DomainError::HoldLimit { .. }
            | DomainError::HoldLimitOverAllDates { .. }
            | DomainError::TicketLimit { .. } => "hold_limit",
            DomainError::SeatUnavailable(_) => "seat_unavailable",
            DomainError::ReholdCooldown { .. } => "rehold_cooldown",
            DomainError::NoAdjacentSeats { .. } => "no_adjacent_seats",
            DomainError::NotFound => "not_found",
            DomainError::AlreadyPaid => "already_paid",
            DomainError::ReservationNotHeld => "reservation_not_held",
            DomainError::ReservationNotPaid => "reservation_not_paid",
            DomainError::RefundWindowClosed { .. } => "refund_window_closed",
            DomainError::DateCancelled => "date_cancelled",
            DomainError::SeatsAvailable { .. } => "seats_available",
            DomainError::RejoinCooldown { .. } => "rehold_cooldown",
            DomainError::SalesClosed => "sales_closed",
            DomainError::HoldExpired => "hold_expired",
            DomainError::InsufficientBalance { .. } => "insufficient_balance",
            DomainError::InvalidAmount { .. } => "invalid_amount",
            DomainError::BalanceLimit { .. } => "balance_limit",
            DomainError::UsernameTaken => "username_taken",
            DomainError::InvalidCredentials => "invalid_credentials",
            DomainError::Unauthenticated => "unauthenticated",
            DomainError::QueueTokenInvalid => "queue_token_invalid",
            DomainError::Forbidden => "forbidden",
            DomainError::NotAdmitted => "not_admitted",
            DomainError::QueueTokenExpired => "queue_token_expired",
            DomainError::QueueTokenWrongRoom => "queue_token_wrong_room",
            DomainError::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }

    /// Seconds the client should wait before asking again, where waiting is the remedy.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            DomainError::ReholdCooldown {
                retry_after_seconds,
                ..
            }
            | DomainError::RejoinCooldown {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}
