//! Every state change is one of these events. Owners decide (commands return events or a typed
//! error) and then apply; replaying the same events in order rebuilds the same state. A change
//! that spans owners (a payment) is ONE event that each owner applies.

use serde::{Deserialize, Serialize};

use super::admission::QueueTokenId;
use super::types::*;
use super::venue::Layout;

/// Which request an idempotent change answered, so a retry can be recognised after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyStamp {
    pub key: IdempotencyKey,
    pub fingerprint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    UserRegistered {
        user: UserId,
        username: Username,
        password_hash: String,
        at: Timestamp,
    },
    SessionOpened {
        session: u64,
        /// SHA-256 of the token's secret part: a copy of the log does not hand out sessions.
        verifier_digest: [u8; 32],
        user: UserId,
        expires_at: Timestamp,
    },
    SessionClosed {
        session: u64,
    },
    ConcertCreated {
        concert: ConcertId,
        title: String,
        venue: String,
    },
    DateCreated {
        date: DateId,
        concert: ConcertId,
        starts_at: Timestamp,
        /// Its sections, rows and prices: fixed for the date's life.
        layout: Layout,
    },
    HoldPlaced {
        reservation: ReservationId,
        user: UserId,
        seats: SeatList,
        price: u64,
        at: Timestamp,
        expires_at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    },
    HoldCancelled {
        reservation: ReservationId,
        at: Timestamp,
    },
    HoldExpired {
        reservation: ReservationId,
        at: Timestamp,
    },
    BalanceCharged {
        charge: ChargeId,
        user: UserId,
        amount: u64,
        /// The balance right after: the charge's response can be rebuilt from the event alone.
        balance_after: u64,
        at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    },
    /// Prepared by the date's seat map, completed (`balance_after`) by the ledger.
    PaymentCompleted {
        reservation: ReservationId,
        user: UserId,
        seats: SeatList,
        amount: u64,
        balance_after: u64,
        at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        /// The waiting-room token the payment was made with: the queue ends it once the payment
        /// is committed, and again on replay. A dead token opens nothing, so it is kept as is.
        queue_token: Option<QueueTokenId>,
    },
}

impl Event {
    /// A short stable name, used as the event kind in logs and in the durable log.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => "user_registered",
            Event::SessionOpened { .. } => "session_opened",
            Event::SessionClosed { .. } => "session_closed",
            Event::ConcertCreated { .. } => "concert_created",
            Event::DateCreated { .. } => "date_created",
            Event::HoldPlaced { .. } => "hold_placed",
            Event::HoldCancelled { .. } => "hold_cancelled",
            Event::HoldExpired { .. } => "hold_expired",
            Event::BalanceCharged { .. } => "balance_charged",
            Event::PaymentCompleted { .. } => "payment_completed",
        }
    }
}
