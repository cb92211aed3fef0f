//! Every state change is one of these events. Owners decide (commands return events or a typed
//! error) and then apply; replaying the same events in order rebuilds the same state. A change
//! that spans owners (a payment) is ONE event that each owner applies.

use serde::{Deserialize, Serialize};

use super::admission::QueueTokenId;
use super::rooms::RoomSpec;
use super::types::*;
use super::venue::Layout;
use super::waitlist::EntryId;

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
        /// Its own waiting room, if it has one.
        room: Option<RoomSpec>,
        max_tickets_per_user: Option<u32>,
    },
    DateCreated {
        date: DateId,
        concert: ConcertId,
        starts_at: Timestamp,
        /// Its sections, rows and prices: fixed for the date's life.
        layout: Layout,
        /// The concert's limit, copied so the date's seat map decides it alone.
        max_tickets_per_user: Option<u32>,
    },
    HoldPlaced {
        reservation: ReservationId,
        user: UserId,
        seats: SeatList,
        price: u64,
        at: Timestamp,
        expires_at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        /// The waiting-list entry (its `seq` on the date's list) this hold is offered to: the
        /// offer and the hold are one change.
        offer: Option<u32>,
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
    /// A paid reservation given back: its seats are released and `amount` (its price less
    /// `fee`) is credited to the user who paid for it, whoever holds it. Prepared by the date's
    /// seat map, completed (`balance_after`, `holder_balance`) by the ledger.
    RefundCompleted {
        reservation: ReservationId,
        /// Who held the reservation, and asked for the refund.
        holder: UserId,
        /// Who paid for it, and is credited.
        payer: UserId,
        seats: SeatList,
        amount: u64,
        fee: u64,
        /// The payer's balance right after.
        balance_after: u64,
        /// The holder's balance right after (the payer's, or unchanged): what the refund
        /// answers, so the answer can be rebuilt from the event alone.
        holder_balance: u64,
        at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    },
    /// A paid reservation given to another user; money does not move.
    TransferCompleted {
        transfer: TransferId,
        reservation: ReservationId,
        from: UserId,
        to: UserId,
        at: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    },
    /// A buyer joins a date's waiting list.
    WaitlistJoined {
        entry: EntryId,
        user: UserId,
        quantity: u32,
        /// The section (by index) its offers must come from; any when `None`.
        section: Option<u32>,
        at: Timestamp,
    },
    /// A buyer leaves a date's waiting list; an offered entry's hold (`offer`) is cancelled
    /// with it.
    WaitlistLeft {
        entry: EntryId,
        offer: Option<ReservationId>,
        at: Timestamp,
    },
    /// A date called off: every paid reservation refunded in full to its payer, every live
    /// hold cancelled, as one change. Prepared by the date's seat map, completed (each
    /// refund's `balance_after`) by the ledger.
    DateCancelled {
        date: DateId,
        at: Timestamp,
        refunds: Vec<CancellationRefund>,
        /// Sequence numbers of the live holds it cancels.
        cancelled_holds: Vec<u32>,
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
            Event::RefundCompleted { .. } => "refund_completed",
            Event::TransferCompleted { .. } => "transfer_completed",
            Event::DateCancelled { .. } => "date_cancelled",
            Event::WaitlistJoined { .. } => "waitlist_joined",
            Event::WaitlistLeft { .. } => "waitlist_left",
        }
    }
}

/// One paid reservation a date's cancellation refunds in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationRefund {
    /// The reservation's sequence number within the date.
    pub seq: u32,
    pub payer: UserId,
    pub amount: u64,
    /// The payer's balance right after this refund (a payer of several reservations is
    /// credited in `seq` order).
    pub balance_after: u64,
}
