//! The seats of one concert date: holds (all-or-nothing), cancellation, expiry and sale.
//!
//! A seat slot is 8 bytes and is found by index (O(1)). Holds expire by time alone: a hold whose
//! `expires_at` has passed frees its seats from that instant, before any sweep. The sweep
//! (`expire_due`) only turns that fact into events, walking an index ordered by expiry, so it
//! costs the number of holds that are due, not the number of seats.
//!
//! The map keeps the reservations its decisions need: those still held, and the paid ones (who
//! holds each and who paid, for refunds). A cancelled, expired or refunded reservation leaves
//! memory; `ReservationChange` says how each event changes the history a user lists, and the
//! store keeps that history beside the log.
//!
//! No seat is held forever: a user whose hold on a seat was cancelled or expired may not hold that
//! seat again for `rehold_cooldown_ms` (others may, at once). Cancelling and holding again would
//! otherwise renew a hold without end. The map remembers who let go of which seat and when
//! (`Cooldowns`), derived from the same events as everything else, so replay and snapshots
//! restore it exactly.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use serde::{Deserialize, Serialize};

use super::across_dates::HeldAcrossDates;
use super::admission::QueueTokenId;
use super::best_available::FreeSeats;
use super::error::DomainError;
use super::events::{CancellationRefund, Event, IdempotencyStamp};
use super::types::*;
use super::venue::Layout;
use super::waitlist::{Entry, EntryId, Waitlist};

/// The rules a date decides by, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatePolicy {
    pub ttl_ms: i64,
    pub max_seats_per_user: u32,
    /// Bounds a user's held seats over every date; see `HeldAcrossDates`.
    pub max_seats_per_user_total: u32,
    /// How long a user who let go of a seat waits to hold it again; 0 never.
    pub rehold_cooldown_ms: i64,
    /// How long a waiting-list offer (a hold) lasts; also how long a user whose entry lapsed
    /// waits to join that list again.
    pub offer_ttl_ms: i64,
    pub refunds: RefundPolicy,
}

/// What a refund costs, and until when one may be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPolicy {
    /// Share of the price kept, 0–99.
    pub fee_percent: u8,
    /// Refunds close this long before the date starts.
    pub window_closes_ms_before_start: i64,
}

impl Default for RefundPolicy {
    fn default() -> Self {
        Self {
            fee_percent: 10,
            window_closes_ms_before_start: 24 * 3_600_000,
        }
    }
}

impl RefundPolicy {
    /// When refunds of a date starting at `starts_at` close.
    pub fn closes_at(&self, starts_at: Timestamp) -> Timestamp {
        starts_at.plus_millis(-self.window_closes_ms_before_start)
    }

    /// ⌊price × fee_percent ÷ 100⌋, exact for any price up to 2^53 − 1.
    pub fn fee_of(&self, price: u64) -> u64 {
        (u128::from(price) * u128::from(self.fee_percent) / 100) as u64
    }
}

/// A paid reservation and who paid for it (its `user` holds it now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidReservation {
    pub reservation: Reservation,
    pub payer: UserId,
}

/// What joining a waiting list did: a new entry, or the user's entry already on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    New(Event),
    Already(Entry),
}

/// Whether a date sells seats: a cancelled one never again, any other until it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    OnSale,
    Cancelled,
    SalesClosed,
}

impl SaleState {
    pub fn of(cancelled: bool, starts_at: Timestamp, now: Timestamp) -> Self {
        if cancelled {
            SaleState::Cancelled
        } else if now >= starts_at {
            SaleState::SalesClosed
        } else {
            SaleState::OnSale
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::OnSale => "on_sale",
            SaleState::Cancelled => "cancelled",
            SaleState::SalesClosed => "sales_closed",
        }
    }
}

/// What a buyer asks to hold: seats by number, or the best adjacent ones the date has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatChoice {
    Named(SeatList),
    BestAvailable {
        quantity: u32,
        /// A section's name; any section when absent.
        section: Option<String>,
    },
}

impl From<SeatList> for SeatChoice {
    fn from(seats: SeatList) -> Self {
        SeatChoice::Named(seats)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
struct SeatSlot {
    /// Sequence number of the reservation that holds or bought the seat; 0 when none.
    holder: u32,
    sold: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    Held,
    Paid,
    Expired,
    Cancelled,
    Refunded,
}

/// What a client sees: a held reservation past its expiry reads as `Expired` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Held,
    Paid,
    Expired,
    Cancelled,
    Refunded,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Paid => "paid",
            ReservationStatus::Expired => "expired",
            ReservationStatus::Cancelled => "cancelled",
            ReservationStatus::Refunded => "refunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    pub user: UserId,
    pub seats: SeatList,
    pub price: u64,
    pub state: ReservationState,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
}

impl Reservation {
    /// The reservation a `HoldPlaced` event creates.
    pub fn placed_by(event: &Event) -> Option<Self> {
        let Event::HoldPlaced {
            reservation,
            user,
            seats,
            price,
            at,
            expires_at,
            ..
        } = event
        else {
            return None;
        };
        Some(Self {
            id: *reservation,
            user: *user,
            seats: seats.clone(),
            price: *price,
            state: ReservationState::Held,
            created_at: *at,
            expires_at: *expires_at,
            paid_at: None,
        })
    }

    /// The reservation as its `HoldPlaced` left it: what a replayed hold answers. Only the
    /// state and `paid_at` change after a hold is placed.
    pub fn as_placed(self) -> Self {
        Self {
            state: ReservationState::Held,
            paid_at: None,
            ..self
        }
    }

    pub fn status_at(&self, now: Timestamp) -> ReservationStatus {
        match self.state {
            ReservationState::Held if self.expires_at <= now => ReservationStatus::Expired,
            ReservationState::Held => ReservationStatus::Held,
            ReservationState::Paid => ReservationStatus::Paid,
            ReservationState::Expired => ReservationStatus::Expired,
            ReservationState::Cancelled => ReservationStatus::Cancelled,
            ReservationState::Refunded => ReservationStatus::Refunded,
        }
    }

    fn is_live_hold(&self, now: Timestamp) -> bool {
        self.status_at(now) == ReservationStatus::Held
    }

    /// Why it cannot be paid at `now`; `None` while it is a live hold.
    pub fn payment_refusal(&self, now: Timestamp) -> Option<DomainError> {
        match self.status_at(now) {
            ReservationStatus::Held => None,
            ReservationStatus::Paid => Some(DomainError::AlreadyPaid),
            ReservationStatus::Expired => Some(DomainError::HoldExpired),
            ReservationStatus::Cancelled | ReservationStatus::Refunded => {
                Some(DomainError::ReservationNotHeld)
            }
        }
    }

    /// Why it cannot be cancelled at `now`; `None` while it is a live hold.
    pub fn cancel_refusal(&self, now: Timestamp) -> Option<DomainError> {
        (!self.is_live_hold(now)).then_some(DomainError::ReservationNotHeld)
    }

    /// `payment_refusal` for a reservation its date has let go of, read from its history. A
    /// record that still reads as a live hold was ended without an event of its own (a newer
    /// hold took its expired seats), so it is refused as not held.
    pub fn payment_refusal_once_ended(&self, now: Timestamp) -> DomainError {
        self.payment_refusal(now)
            .unwrap_or(DomainError::ReservationNotHeld)
    }

    /// `cancel_refusal` for a reservation its date has let go of, as above.
    pub fn cancel_refusal_once_ended(&self, now: Timestamp) -> DomainError {
        self.cancel_refusal(now)
            .unwrap_or(DomainError::ReservationNotHeld)
    }
}

/// How an event changes the reservations a user can list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationChange {
    Placed(Reservation),
    /// A paid reservation given to `to`: it leaves its holder's list and enters theirs, placed
    /// in it by the transfer (the event's log sequence), not by the hold.
    Transferred {
        id: ReservationId,
        to: UserId,
    },
    /// A held reservation ended: paid (at `at`), cancelled or expired. One that has already
    /// ended stays as it is, as in the seat map.
    Ended {
        id: ReservationId,
        state: ReservationState,
        at: Timestamp,
    },
}

impl ReservationChange {
    /// Every change `event` makes; a date's cancellation ends many reservations at once.
    pub fn made_by(event: &Event) -> SmallVec<[Self; 1]> {
        let ended = |id, state, at| smallvec::smallvec![Self::Ended { id, state, at }];
        match event {
            Event::HoldPlaced { .. } => Reservation::placed_by(event)
                .map(Self::Placed)
                .into_iter()
                .collect(),
            Event::HoldCancelled { reservation, at } => {
                ended(*reservation, ReservationState::Cancelled, *at)
            }
            Event::HoldExpired { reservation, at } => {
                ended(*reservation, ReservationState::Expired, *at)
            }
            Event::PaymentCompleted {
                reservation, at, ..
            } => ended(*reservation, ReservationState::Paid, *at),
            Event::RefundCompleted {
                reservation, at, ..
            } => ended(*reservation, ReservationState::Refunded, *at),
            Event::WaitlistLeft {
                offer: Some(reservation),
                at,
                ..
            } => ended(*reservation, ReservationState::Cancelled, *at),
            Event::TransferCompleted {
                reservation, to, ..
            } => smallvec::smallvec![Self::Transferred {
                id: *reservation,
                to: *to,
            }],
            Event::DateCancelled {
                date,
                at,
                refunds,
                cancelled_holds,
            } => {
                let id = |seq| ReservationId { date: *date, seq };
                refunds
                    .iter()
                    .map(|refund| Self::Ended {
                        id: id(refund.seq),
                        state: ReservationState::Refunded,
                        at: *at,
                    })
                    .chain(cancelled_holds.iter().map(|seq| Self::Ended {
                        id: id(*seq),
                        state: ReservationState::Cancelled,
                        at: *at,
                    }))
                    .collect()
            }
            _ => SmallVec::new(),
        }
    }

    /// The reservation after an `Ended` change. A paid one ends only by a refund.
    pub fn end(reservation: &mut Reservation, state: ReservationState, at: Timestamp) {
        if reservation.state == ReservationState::Paid && state == ReservationState::Refunded {
            reservation.state = state;
            return;
        }
        if reservation.state == ReservationState::Held {
            reservation.state = state;
            if state == ReservationState::Paid {
                reservation.paid_at = Some(at);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatStatus {
    Available,
    Held { until: Timestamp },
    Sold,
}

/// Holds in the order they expire, `(expires_at, seq)`. A hold's expiry is nearly always the
/// latest so far (the clock moves on, the TTL is fixed), so placing one appends. An ended hold's
/// entry is not searched for: it is dropped once it reaches the front, or by a compaction when
/// ended entries outnumber the held ones, so memory stays within a small multiple of the holds.
/// Encoded as a sequence of pairs; `SeatMap::restore` drops the
/// ended entries a snapshot carried.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct ExpiryQueue(VecDeque<(Timestamp, u32)>);

impl ExpiryQueue {
    /// Entries may be left behind by this many ended holds before a compaction, so a small map
    /// does not compact on every end.
    const SLACK: usize = 1024;

    fn push(&mut self, entry: (Timestamp, u32)) {
        match self.0.back() {
            Some(last) if *last > entry => {
                let at = self.0.partition_point(|e| *e < entry);
                self.0.insert(at, entry);
            }
            _ => self.0.push_back(entry),
        }
    }

    /// Drops ended entries from the front, and compacts when they are most of the queue.
    fn forget_ended(&mut self, held: impl Fn(u32) -> bool, holds: usize) {
        while self.0.front().is_some_and(|(_, seq)| !held(*seq)) {
            self.0.pop_front();
        }
        if self.0.len() > 2 * holds + Self::SLACK {
            self.0.retain(|(_, seq)| held(*seq));
        }
    }

    fn live<'a>(
        &'a self,
        held: impl Fn(u32) -> bool + 'a,
    ) -> impl Iterator<Item = (Timestamp, u32)> + 'a {
        self.0.iter().copied().filter(move |(_, seq)| held(*seq))
    }
}

/// Who let go of which seat, and when: `ended` answers a hold's question at once; `order` (by
/// that time) lets entries go once their cooldown has passed, by the times of the events this
/// date applies, so a replay forgets exactly what the live map forgot. A seat let go of again
/// keeps its older entry in `order` until that reaches the front, where it is dropped.
/// Memory: an entry per seat let go of within the last cooldown, until the date's next event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cooldowns {
    ended: HashMap<(UserId, SeatNo), Timestamp, RandomState>,
    order: VecDeque<(Timestamp, UserId, SeatNo)>,
    /// The seats of `ended` by user, in seat order, so best available can step around a
    /// buyer's own without walking everyone's. Derived: rebuilt by `reindex`, not snapshotted.
    #[serde(skip)]
    by_user: HashMap<UserId, SmallVec<[SeatNo; 4]>, RandomState>,
}

impl Cooldowns {
    fn reindex(&mut self) {
        self.by_user.clear();
        for (user, seat) in self.ended.keys() {
            self.by_user.entry(*user).or_default().push(*seat);
        }
        for seats in self.by_user.values_mut() {
            seats.sort_unstable();
        }
    }

    /// Seats `user` let go of whose cooldown has not passed by `now`.
    fn seats_of(&self, user: UserId, now: Timestamp, cooldown_ms: i64) -> SmallVec<[SeatNo; 4]> {
        let Some(seats) = self.by_user.get(&user) else {
            return SmallVec::new();
        };
        seats
            .iter()
            .copied()
            .filter(|seat| {
                self.ended
                    .get(&(user, *seat))
                    .is_some_and(|at| at.plus_millis(cooldown_ms) > now)
            })
            .collect()
    }

    fn record(&mut self, user: UserId, seats: &[SeatNo], at: Timestamp) {
        for seat in seats {
            let ended = self.ended.entry((user, *seat)).or_insert(at);
            *ended = (*ended).max(at);
            let mine = self.by_user.entry(user).or_default();
            if let Err(place) = mine.binary_search(seat) {
                mine.insert(place, *seat);
            }
            let entry = (at, user, *seat);
            match self.order.back() {
                Some(last) if *last > entry => {
                    let place = self.order.partition_point(|e| *e < entry);
                    self.order.insert(place, entry);
                }
                _ => self.order.push_back(entry),
            }
        }
    }

    /// When `user` may hold `seat` again, if they let go of it; `None` if they did not.
    fn ends(&self, user: UserId, seat: SeatNo, cooldown_ms: i64) -> Option<Timestamp> {
        if self.ended.is_empty() {
            return None;
        }
        self.ended
            .get(&(user, seat))
            .map(|at| at.plus_millis(cooldown_ms))
    }

    /// Forgets every entry whose cooldown has passed by `now`.
    fn forget_passed(&mut self, now: Timestamp, cooldown_ms: i64) {
        while let Some(&(at, user, seat)) = self.order.front() {
            if at.plus_millis(cooldown_ms) > now {
                break;
            }
            self.order.pop_front();
            if self.ended.get(&(user, seat)) == Some(&at) {
                self.ended.remove(&(user, seat));
                if let Some(mine) = self.by_user.get_mut(&user) {
                    mine.retain(|s| *s != seat);
                    if mine.is_empty() {
                        self.by_user.remove(&user);
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.ended.len()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeatMap {
    date: DateId,
    layout: Layout,
    policy: DatePolicy,
    seats: Vec<SeatSlot>,
    /// Reservations in the held state (live, or past their expiry and not yet swept), by `seq`.
    holds: HashMap<u32, Reservation, SequenceOrder>,
    /// Paid reservations, by `seq`, with who paid: what a refund decides from. The reservation's
    /// `user` is who holds it now.
    paid: HashMap<u32, PaidReservation, SequenceOrder>,
    /// When the date starts: sales close then, and refunds some hours before.
    starts_at: Timestamp,
    /// Called off: nothing more is sold.
    cancelled: bool,
    /// Transfers decided so far; each is numbered by this count.
    transfers: u32,
    /// Buyers waiting for seats to come back, first come first offered.
    waitlist: Waitlist,
    /// The concert's bound on seats held plus owned per user (`max_tickets_per_user`).
    max_tickets_per_user: Option<u32>,
    /// Seats each user owns, paid (by them or given to them). Derived from `paid`: rebuilt by
    /// `restore`, not snapshotted.
    #[serde(skip)]
    owned: HashMap<UserId, u32, RandomState>,
    /// Reservations placed so far; sequence numbers are dense and start at 1.
    placed: u32,
    /// Held reservations by expiry, so the sweep visits only what is due.
    expiries: ExpiryQueue,
    /// Each user's reservations still in the held state, so the hold limit is checked without
    /// walking the user's whole history. Derived: rebuilt by `restore`, not snapshotted.
    #[serde(skip)]
    holding: HashMap<UserId, SmallVec<[u32; 4]>, RandomState>,
    /// Seats users let go of recently, so they cannot renew a hold by cancelling it.
    cooldowns: Cooldowns,
    held_seats: u32,
    sold_seats: u32,
    /// The seats no reservation holds or bought, indexed for best available. Derived from
    /// `seats`: rebuilt by `restore`, not snapshotted.
    #[serde(skip)]
    free: FreeSeats,
    /// Seats of each section in `free`, in section order. Derived, as `free`.
    #[serde(skip)]
    free_by_section: Vec<u32>,
}

/// Hashes a hold's sequence number so that holds placed one after another sit in neighbouring
/// buckets: the sequence itself in the low bits, which pick the bucket, and a mix of it in the
/// top seven, which the table keeps as each bucket's tag to tell keys apart while probing.
/// Holds are placed in sequence order, so placing one writes next to where the last one went,
/// instead of at a random place in a table larger than the cache (50,000 holds are about 5 MB).
/// Sequences are assigned by the map, in order, not brought by clients; two that share a
/// bucket cost a probe, as in any hash table, never a wrong answer.
#[derive(Debug, Clone, Copy, Default)]
struct SequenceOrder;

impl BuildHasher for SequenceOrder {
    type Hasher = SequenceHasher;

    fn build_hasher(&self) -> SequenceHasher {
        SequenceHasher(0)
    }
}

struct SequenceHasher(u64);

impl SequenceHasher {
    const TAG_BITS: u64 = 0x7f << 57;
}

impl Hasher for SequenceHasher {
    fn finish(&self) -> u64 {
        self.0 | (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & Self::TAG_BITS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// Equal when they decide alike: the expiry queue is compared by its held entries, as ended
/// ones linger there by design.
impl PartialEq for SeatMap {
    fn eq(&self, other: &Self) -> bool {
        let expiries_of = |map: &'_ SeatMap| {
            map.expiries
                .live(|seq| map.holds.contains_key(&seq))
                .collect::<Vec<_>>()
        };
        self.date == other.date
            && self.layout == other.layout
            && self.policy == other.policy
            && self.seats == other.seats
            && self.holds == other.holds
            && self.paid == other.paid
            && self.starts_at == other.starts_at
            && self.cancelled == other.cancelled
            && self.transfers == other.transfers
            && self.waitlist == other.waitlist
            && self.max_tickets_per_user == other.max_tickets_per_user
            && self.owned == other.owned
            && self.placed == other.placed
            && self.holding == other.holding
            && self.cooldowns == other.cooldowns
            && self.held_seats == other.held_seats
            && self.sold_seats == other.sold_seats
            && self.free == other.free
            && self.free_by_section == other.free_by_section
            && expiries_of(self) == expiries_of(other)
    }
}

impl Eq for SeatMap {}

impl SeatMap {
    pub fn new(date: DateId, starts_at: Timestamp, layout: Layout, policy: DatePolicy) -> Self {
        Self {
            date,
            starts_at,
            cancelled: false,
            transfers: 0,
            waitlist: Waitlist::default(),
            max_tickets_per_user: None,
            owned: HashMap::default(),
            seats: vec![SeatSlot::default(); layout.seat_count() as usize],
            free: FreeSeats::new(&layout),
            free_by_section: layout.section_seats().collect(),
            layout,
            policy,
            holds: HashMap::default(),
            paid: HashMap::default(),
            placed: 0,
            expiries: ExpiryQueue::default(),
            holding: HashMap::default(),
            cooldowns: Cooldowns::default(),
            held_seats: 0,
            sold_seats: 0,
        }
    }

    /// The map of a date of a concert that bounds tickets per user.
    pub fn sold_as(mut self, max_tickets_per_user: Option<u32>) -> Self {
        self.max_tickets_per_user = max_tickets_per_user;
        self
    }

    pub fn date(&self) -> DateId {
        self.date
    }
    pub fn seat_count(&self) -> u32 {
        self.seats.len() as u32
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// Seats of each section that no reservation holds or bought, in section order; lags the
    /// truth by at most one sweep, as `held_seats` does.
    pub fn free_by_section(&self) -> &[u32] {
        &self.free_by_section
    }
    pub fn policy(&self) -> DatePolicy {
        self.policy
    }
    /// Readies a map read from a snapshot: limits come from configuration, not from the
    /// settings the snapshot was written under, and derived indexes are rebuilt.
    pub fn restore(&mut self, policy: DatePolicy) {
        self.policy = policy;
        let holds = &self.holds;
        self.expiries.0.retain(|(_, seq)| holds.contains_key(seq));
        self.holding.clear();
        let mut held: Vec<&Reservation> = self.holds.values().collect();
        held.sort_by_key(|r| r.id.seq);
        for r in held {
            self.holding.entry(r.user).or_default().push(r.id.seq);
        }
        self.owned.clear();
        for paid in self.paid.values() {
            *self.owned.entry(paid.reservation.user).or_default() +=
                paid.reservation.seats.len() as u32;
        }
        self.cooldowns.reindex();
        // Seats may have come back since the list was last looked at.
        self.waitlist.wake();
        self.free = FreeSeats::new(&self.layout);
        self.free_by_section = self.layout.section_seats().collect();
        for seat in 1..=self.seat_count() {
            self.refresh_free(SeatNo(seat));
        }
        self.free.settle();
    }

    /// Brings the index best available reads up to date with every seat changed since the
    /// last call, so a best-available decision takes the fast path; cheap when none changed.
    pub fn settle(&mut self) {
        self.free.settle();
    }

    /// Brings `free` in line with the seat's slot after it changed (its row's masks wait for
    /// `settle`).
    fn refresh_free(&mut self, seat: SeatNo) {
        let slot = self.seats[seat.index()];
        let free = slot.holder == 0 && !slot.sold;
        if let Some(row) = self.free.mark(seat, free) {
            let section = self.layout.rows()[row].section as usize;
            if free {
                self.free_by_section[section] += 1;
            } else {
                self.free_by_section[section] -= 1;
            }
        }
    }

    /// Reservations kept in memory: those in the held state.
    pub fn hold_count(&self) -> usize {
        self.holds.len()
    }

    /// Every reservation in the held state (live, or expired and not swept yet).
    pub fn held_reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.holds.values()
    }

    /// Seats remembered as recently let go of, each by one user.
    pub fn cooldown_count(&self) -> usize {
        self.cooldowns.len()
    }

    /// Whether `id` is a reservation of this date that has ended, and so left memory.
    pub fn has_ended(&self, id: ReservationId) -> bool {
        id.date == self.date
            && (1..=self.placed).contains(&id.seq)
            && !self.holds.contains_key(&id.seq)
            && !self.paid.contains_key(&id.seq)
    }

    /// A paid reservation as its holder sees it; anyone else's is `NotFound`.
    pub fn paid_reservation_of(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<&PaidReservation, DomainError> {
        if id.date != self.date {
            return Err(DomainError::NotFound);
        }
        self.paid
            .get(&id.seq)
            .filter(|p| p.reservation.user == user)
            .ok_or(DomainError::NotFound)
    }

    /// Whether the date sells at `now`.
    pub fn sale_state(&self, now: Timestamp) -> SaleState {
        SaleState::of(self.cancelled, self.starts_at, now)
    }

    pub fn starts_at(&self) -> Timestamp {
        self.starts_at
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Paid reservations kept in memory, for refunds and transfers.
    pub fn paid_count(&self) -> usize {
        self.paid.len()
    }

    /// A reservation the date keeps, held or paid, whoever holds it.
    pub fn any_reservation(&self, id: ReservationId) -> Result<&Reservation, DomainError> {
        if id.date != self.date {
            return Err(DomainError::NotFound);
        }
        self.holds
            .get(&id.seq)
            .or_else(|| self.paid.get(&id.seq).map(|p| &p.reservation))
            .ok_or(DomainError::NotFound)
    }

    /// The refusal of anything that sells a seat (a hold, a waiting-list entry) at `now`, if the
    /// date no longer sells.
    fn refuse_unless_on_sale(&self, now: Timestamp) -> Result<(), DomainError> {
        match self.sale_state(now) {
            SaleState::OnSale => Ok(()),
            SaleState::Cancelled => Err(DomainError::DateCancelled),
            SaleState::SalesClosed => Err(DomainError::SalesClosed),
        }
    }

    /// The paid reservation `user` holds, or why not: `NotFound` unless it is theirs (held or
    /// paid), then `values_checked` (the caller's 422s come before the 409), then
    /// `ReservationNotPaid` for one only held.
    fn paid_of(
        &self,
        user: UserId,
        id: ReservationId,
        values_checked: impl FnOnce() -> Result<(), DomainError>,
    ) -> Result<&PaidReservation, DomainError> {
        let found = self.paid_reservation_of(user, id);
        if found.is_err() {
            self.reservation_of(user, id)?;
        }
        values_checked()?;
        found.map_err(|_| DomainError::ReservationNotPaid)
    }

    /// Decides a refund of `id` for `user`, who must hold it paid, at `now`, before the window
    /// closes; `fee_percent` of its price is kept. The ledger completes the event.
    pub fn prepare_refund(
        &self,
        user: UserId,
        id: ReservationId,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Event, DomainError> {
        let paid = self.paid_of(user, id, || Ok(()))?;
        let terms = self.policy.refunds;
        if now >= terms.closes_at(self.starts_at) {
            return Err(DomainError::RefundWindowClosed {
                hours: (terms.window_closes_ms_before_start / 3_600_000) as u64,
            });
        }
        let price = paid.reservation.price;
        let fee = terms.fee_of(price);
        Ok(Event::RefundCompleted {
            reservation: id,
            holder: user,
            payer: paid.payer,
            seats: paid.reservation.seats.clone(),
            amount: price - fee,
            fee,
            balance_after: 0,
            holder_balance: 0,
            at: now,
            idempotency,
        })
    }

    /// Decides giving `id`, paid and held by `from`, to `to` (`None`: no user has the name
    /// asked for). Another user's reservation is not found; the recipient is checked (422)
    /// before the reservation's state (409).
    pub fn prepare_transfer(
        &self,
        from: UserId,
        to: Option<UserId>,
        id: ReservationId,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Event, DomainError> {
        let to_checked = || match to {
            None => Err(DomainError::InvalidInput(
                "to_username names no user; check the spelling".into(),
            )),
            Some(to) if to == from => Err(DomainError::InvalidInput(
                "this reservation is already yours; name another user".into(),
            )),
            Some(_) => Ok(()),
        };
        let given = self.paid_of(from, id, to_checked)?.reservation.seats.len() as u32;
        self.admit_tickets(to.expect("checked above"), given, now)?;
        let seq = self
            .transfers
            .checked_add(1)
            .ok_or_else(|| DomainError::InvalidInput("this date has no more room".into()))?;
        Ok(Event::TransferCompleted {
            transfer: TransferId {
                date: self.date,
                seq,
            },
            reservation: id,
            from,
            to: to.expect("checked above"),
            at: now,
            idempotency,
        })
    }

    pub fn waitlist(&self) -> &Waitlist {
        &self.waitlist
    }

    /// Seats of section `section` (any when `None`) that no reservation holds or bought; lags
    /// expiry by at most one sweep.
    fn free_in(&self, section: Option<u32>) -> u32 {
        match section {
            Some(section) => self.free_by_section[section as usize],
            None => self.seat_count() - self.held_seats - self.sold_seats,
        }
    }

    /// The seat numbers of section `section`, or of the whole date.
    fn seats_of(&self, section: Option<u32>) -> std::ops::RangeInclusive<u32> {
        let Some(section) = section else {
            return 1..=self.seat_count();
        };
        let first: u32 = self
            .layout
            .section_seats()
            .take(section as usize)
            .sum::<u32>()
            + 1;
        let count = self
            .layout
            .section_seats()
            .nth(section as usize)
            .unwrap_or(0);
        first..=first + count - 1
    }

    /// Decides `user` joining the waiting list for `quantity` seats (of the section named
    /// `section`, if any). The date must be on sale; then the values (422); then a live entry
    /// of the user's is answered as it is; then the wait after a lapse and seats still to be
    /// had (409).
    pub fn join_waitlist(
        &self,
        user: UserId,
        quantity: u32,
        section: Option<&str>,
        now: Timestamp,
    ) -> Result<Joined, DomainError> {
        self.refuse_unless_on_sale(now)?;
        let max = self.policy.max_seats_per_user;
        if !(1..=max).contains(&quantity) {
            return Err(DomainError::InvalidInput(format!(
                "quantity must be 1 to {max}"
            )));
        }
        let section_index = match section {
            Some(name) => Some(self.layout.section_named(name).ok_or_else(|| {
                DomainError::InvalidInput(format!("this date has no section named \"{name}\""))
            })?),
            None => None,
        };
        if let Some(entry) = self.waitlist.entry_of(user) {
            return Ok(Joined::Already(entry.clone()));
        }
        if let Some(lapsed) = self.waitlist.lapsed_at(user) {
            let again = lapsed.plus_millis(self.policy.offer_ttl_ms);
            if again > now {
                return Err(DomainError::RejoinCooldown {
                    retry_after_seconds: now.seconds_until(again).max(1),
                });
            }
        }
        let unsold = self
            .seats_of(section_index)
            .filter(|seat| !self.seats[SeatNo(*seat).index()].sold)
            .count() as u32;
        if unsold >= quantity {
            return Err(DomainError::SeatsAvailable {
                available: unsold,
                section: section.map(str::to_owned),
            });
        }
        let seq = self
            .waitlist
            .next_seq()
            .ok_or_else(|| DomainError::InvalidInput("this list has no more room".into()))?;
        Ok(Joined::New(Event::WaitlistJoined {
            entry: EntryId {
                date: self.date,
                seq,
            },
            user,
            quantity,
            section: section_index,
            at: now,
        }))
    }

    /// Decides `user` leaving the list: their entry must be on it (else `NotFound`; one that
    /// has ended is told apart by `has_left_waitlist`).
    pub fn leave_waitlist(
        &self,
        user: UserId,
        id: EntryId,
        now: Timestamp,
    ) -> Result<Event, DomainError> {
        if id.date != self.date {
            return Err(DomainError::NotFound);
        }
        match self.waitlist.entry(id.seq) {
            Some(entry) if entry.user == user => Ok(Event::WaitlistLeft {
                entry: id,
                offer: entry.offer,
                at: now,
            }),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Whether `id` is an entry of this list that is no longer on it.
    pub fn has_left_waitlist(&self, id: EntryId) -> bool {
        id.date == self.date
            && (1..self.waitlist.next_seq().unwrap_or(u32::MAX)).contains(&id.seq)
            && self.waitlist.entry(id.seq).is_none()
    }

    /// The entries that may be offered seats now, in list order, if anything happened since
    /// the last time that may let one be (seats came back, an entry joined, left or lapsed);
    /// none otherwise. Each is then offered by `offer_hold`, applied before the next is tried.
    /// An entry that does not fit stays waiting until the next such change. Nothing is offered
    /// while a hold due at `now` is unswept: the seats it frees would be missed.
    pub fn offer_candidates(&mut self, now: Timestamp) -> Vec<(u32, UserId)> {
        if !self.waitlist.is_pending() || self.has_due_expiries(now) {
            return Vec::new();
        }
        self.waitlist.settle_pending();
        if self.free_in(None) == 0 {
            return Vec::new();
        }
        self.waitlist
            .waiting()
            .map(|entry| (entry.id.seq, entry.user))
            .collect()
    }

    /// Whether any seat is free for an offer at all.
    pub fn has_free_seats(&self) -> bool {
        self.free_in(None) > 0
    }

    /// Decides the offer to waiting entry `seq`: a hold for its user of `quantity` seats of
    /// its section (the best-available block, or else the lowest free seat numbers, never one
    /// in the user's rehold cooldown), lasting `offer_ttl_ms`, within the user's limits on
    /// this date and over `across` every date. The caller has swept due expiries and settled
    /// the index. Anything that does not fit is refused and the entry stays waiting.
    pub fn offer_hold(
        &self,
        seq: u32,
        now: Timestamp,
        across: &HeldAcrossDates,
    ) -> Result<Event, DomainError> {
        self.refuse_unless_on_sale(now)?;
        let entry = self
            .waitlist
            .entry(seq)
            .filter(|entry| entry.offer.is_none())
            .ok_or(DomainError::NotFound)?;
        let (user, quantity, section) = (entry.user, entry.quantity, entry.section);
        let no_seats = || DomainError::NoAdjacentSeats {
            quantity,
            section: None,
        };
        if self.free_in(section) < quantity {
            return Err(no_seats());
        }
        let max = self.policy.max_seats_per_user;
        if self.live_seats_held_by(user, now) + quantity > max {
            return Err(DomainError::HoldLimit { max });
        }
        self.admit_tickets(user, quantity, now)?;
        across.admit(quantity as usize, now, self.policy.max_seats_per_user_total)?;
        let seats = match self.best_block(user, quantity, section, now) {
            Some(block) => block,
            None => {
                let lowest: SeatList = self
                    .seats_of(section)
                    .map(SeatNo)
                    .filter(|seat| {
                        self.seat_status(*seat, now) == Some(SeatStatus::Available)
                            && self.cooldown_ends(user, *seat, now).is_none()
                    })
                    .take(quantity as usize)
                    .collect();
                if lowest.len() < quantity as usize {
                    return Err(no_seats());
                }
                lowest
            }
        };
        let mut hold = self.hold_of(user, seats, now, None)?;
        if let Event::HoldPlaced {
            expires_at, offer, ..
        } = &mut hold
        {
            *expires_at = now.plus_millis(self.policy.offer_ttl_ms);
            *offer = Some(seq);
        }
        Ok(hold)
    }

    /// Offers what can be offered now, applying each offer: `offer_candidates` and
    /// `offer_hold` for a caller without holds on other dates (tests; the date's actor runs
    /// the same steps with the users' holds over every date).
    pub fn make_offers(&mut self, now: Timestamp) -> Vec<Event> {
        let mut made = Vec::new();
        for (seq, _) in self.offer_candidates(now) {
            if !self.has_free_seats() {
                break;
            }
            self.settle();
            if let Ok(offer) = self.offer_hold(seq, now, &HeldAcrossDates::default()) {
                self.apply(&offer);
                made.push(offer);
            }
        }
        made
    }

    /// Whether `id` is a live hold offered to `user` from the waiting list (paid without a
    /// queue token).
    pub fn is_offer_to(&self, user: UserId, id: ReservationId) -> bool {
        id.date == self.date
            && self.waitlist.offered_to(id.seq).is_some()
            && self.holds.get(&id.seq).is_some_and(|r| r.user == user)
    }

    /// Decides calling the date off at `now`: every paid reservation refunded in full to its
    /// payer, every live hold cancelled. A hold that expired by time is left to the sweep,
    /// which expires it as usual. The ledger completes the event.
    pub fn prepare_cancellation(&self, now: Timestamp) -> Result<Event, DomainError> {
        if self.cancelled {
            return Err(DomainError::DateCancelled);
        }
        let mut refunds: Vec<CancellationRefund> = self
            .paid
            .iter()
            .map(|(seq, paid)| CancellationRefund {
                seq: *seq,
                payer: paid.payer,
                amount: paid.reservation.price,
                balance_after: 0,
            })
            .collect();
        refunds.sort_unstable_by_key(|refund| refund.seq);
        let mut cancelled_holds: Vec<u32> = self
            .holds
            .values()
            .filter(|r| r.is_live_hold(now))
            .map(|r| r.id.seq)
            .collect();
        cancelled_holds.sort_unstable();
        Ok(Event::DateCancelled {
            date: self.date,
            at: now,
            refunds,
            cancelled_holds,
        })
    }

    /// Seats held by holds not yet swept; lags the truth by at most one sweep.
    pub fn held_seats(&self) -> u32 {
        self.held_seats
    }
    pub fn sold_seats(&self) -> u32 {
        self.sold_seats
    }

    pub fn seat_status(&self, seat: SeatNo, now: Timestamp) -> Option<SeatStatus> {
        let slot = self.seats.get(seat.index())?;
        Some(if slot.sold {
            SeatStatus::Sold
        } else {
            match self.live_holder(*slot, now) {
                Some(r) => SeatStatus::Held {
                    until: r.expires_at,
                },
                None => SeatStatus::Available,
            }
        })
    }

    fn live_holder(&self, slot: SeatSlot, now: Timestamp) -> Option<&Reservation> {
        if slot.holder == 0 {
            return None;
        }
        let reservation = self.holds.get(&slot.holder)?;
        reservation.is_live_hold(now).then_some(reservation)
    }

    /// A held reservation as its owner sees it; another user's is `NotFound`, as if it did not
    /// exist, and so is one that has ended (`has_ended` tells that case apart).
    pub fn reservation_of(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<&Reservation, DomainError> {
        if id.date != self.date {
            return Err(DomainError::NotFound);
        }
        self.holds
            .get(&id.seq)
            .or_else(|| self.paid.get(&id.seq).map(|p| &p.reservation))
            .filter(|r| r.user == user)
            .ok_or(DomainError::NotFound)
    }

    /// The user's reservations in the held state, for tests.
    pub fn holds_of(&self, user: UserId) -> impl Iterator<Item = &Reservation> {
        self.holds.values().filter(move |r| r.user == user)
    }

    /// `TicketLimit` if `more` seats would take `user` past the concert's bound on seats held
    /// plus owned on this date.
    fn admit_tickets(&self, user: UserId, more: u32, now: Timestamp) -> Result<(), DomainError> {
        let Some(max) = self.max_tickets_per_user else {
            return Ok(());
        };
        let owned = self.owned.get(&user).copied().unwrap_or(0);
        if self.live_seats_held_by(user, now) + owned + more > max {
            return Err(DomainError::TicketLimit { max });
        }
        Ok(())
    }

    fn live_seats_held_by(&self, user: UserId, now: Timestamp) -> u32 {
        self.holding
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.holds.get(seq))
            .filter(|r| r.is_live_hold(now))
            .map(|r| r.seats.len() as u32)
            .sum()
    }

    /// Decides a hold on all of `seats` or none of them, for a user who holds nothing on
    /// other dates (`place_hold_among` says what they hold there).
    pub fn place_hold(
        &self,
        user: UserId,
        seats: &[SeatNo],
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Event, DomainError> {
        let elsewhere = HeldAcrossDates::default();
        self.place_hold_among(user, seats, now, idempotency, &elsewhere)
    }

    /// When `user` may hold `seat` again, if that is after `now`. A hold of theirs that expired
    /// by time and was not swept yet counts as let go of at its expiry.
    fn cooldown_ends(&self, user: UserId, seat: SeatNo, now: Timestamp) -> Option<Timestamp> {
        let cooldown_ms = self.policy.rehold_cooldown_ms;
        if cooldown_ms <= 0 {
            return None;
        }
        let recorded = self.cooldowns.ends(user, seat, cooldown_ms);
        let holder = self.seats[seat.index()].holder;
        let unswept = (holder != 0)
            .then(|| self.holds.get(&holder))
            .flatten()
            .filter(|r| r.user == user && r.expires_at <= now)
            .map(|r| r.expires_at.plus_millis(cooldown_ms));
        recorded.max(unswept).filter(|ends| *ends > now)
    }

    /// Decides a hold on all of `seats` or none of them. `across` is what the user holds over
    /// every date, this one included, for the bound on all of them. Values are checked before
    /// conflicts: the limits (422) before the seats' state (409).
    pub fn place_hold_among(
        &self,
        user: UserId,
        seats: &[SeatNo],
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        across: &HeldAcrossDates,
    ) -> Result<Event, DomainError> {
        self.refuse_unless_on_sale(now)?;
        let max = self.policy.max_seats_per_user;
        if seats.is_empty() {
            return Err(DomainError::InvalidInput(
                "name at least one seat to hold".into(),
            ));
        }
        if seats.len() > max as usize {
            return Err(DomainError::HoldLimit { max });
        }
        for (i, seat) in seats.iter().enumerate() {
            if seats[..i].contains(seat) {
                return Err(DomainError::InvalidInput(format!(
                    "seat {} is named twice",
                    seat.0
                )));
            }
            if seat.index() >= self.seats.len() {
                return Err(DomainError::InvalidInput(format!(
                    "seat {} does not exist: this date has seats 1 to {}",
                    seat.0,
                    self.seats.len()
                )));
            }
        }
        if self.live_seats_held_by(user, now) + seats.len() as u32 > max {
            return Err(DomainError::HoldLimit { max });
        }
        self.admit_tickets(user, seats.len() as u32, now)?;
        across.admit(seats.len(), now, self.policy.max_seats_per_user_total)?;
        if let Some(taken) = seats
            .iter()
            .find(|s| self.seat_status(**s, now) != Some(SeatStatus::Available))
        {
            return Err(DomainError::SeatUnavailable(*taken));
        }
        // The seat that keeps the user waiting longest answers, so one wait is enough.
        if let Some((ends, seat)) = seats
            .iter()
            .filter_map(|s| Some((self.cooldown_ends(user, *s, now)?, *s)))
            .max()
        {
            return Err(DomainError::ReholdCooldown {
                seat,
                retry_after_seconds: now.seconds_until(ends).max(1),
            });
        }
        self.hold_of(user, SeatList::from_slice(seats), now, idempotency)
    }

    /// Decides a hold of what `choice` asks for: `place_hold_among` or
    /// `place_best_available_among`.
    pub fn place_choice_among(
        &self,
        user: UserId,
        choice: &SeatChoice,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        across: &HeldAcrossDates,
    ) -> Result<Event, DomainError> {
        match choice {
            SeatChoice::Named(seats) => {
                self.place_hold_among(user, seats, now, idempotency, across)
            }
            SeatChoice::BestAvailable { quantity, section } => self.place_best_available_among(
                user,
                *quantity,
                section.as_deref(),
                now,
                idempotency,
                across,
            ),
        }
    }

    /// The hold of `seats`, once they are known to be available to `user`.
    fn hold_of(
        &self,
        user: UserId,
        seats: SeatList,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Event, DomainError> {
        let seq = self
            .placed
            .checked_add(1)
            .ok_or_else(|| DomainError::InvalidInput("this date has no more room".into()))?;
        let price = seats
            .iter()
            .map(|seat| self.layout.price_of(*seat).unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        Ok(Event::HoldPlaced {
            reservation: ReservationId {
                date: self.date,
                seq,
            },
            user,
            seats,
            price,
            at: now,
            expires_at: now.plus_millis(self.policy.ttl_ms),
            idempotency,
            offer: None,
        })
    }

    /// Decides a hold of `quantity` adjacent seats chosen by the contract's best-available rule
    /// (`best_available`), in the section named `section` or anywhere, for a user who holds
    /// `across` over every date. Values are checked first (422), then the seats (409).
    pub fn place_best_available_among(
        &self,
        user: UserId,
        quantity: u32,
        section: Option<&str>,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        across: &HeldAcrossDates,
    ) -> Result<Event, DomainError> {
        self.refuse_unless_on_sale(now)?;
        let max = self.policy.max_seats_per_user;
        if !(1..=max).contains(&quantity) {
            return Err(DomainError::InvalidInput(format!(
                "best_available.quantity must be 1 to {max}"
            )));
        }
        let section_index = match section {
            Some(name) => Some(self.layout.section_named(name).ok_or_else(|| {
                DomainError::InvalidInput(format!("this date has no section named \"{name}\""))
            })?),
            None => None,
        };
        if self.live_seats_held_by(user, now) + quantity > max {
            return Err(DomainError::HoldLimit { max });
        }
        self.admit_tickets(user, quantity, now)?;
        across.admit(quantity as usize, now, self.policy.max_seats_per_user_total)?;
        let seats = if self.has_due_expiries(now) || !self.free.is_settled() {
            // The index knows holds that expired by time only once they are swept, and seats
            // changed since the last `settle` only once it runs; the date's actor does both
            // before it decides, so this copy is for other callers.
            let mut swept = self.clone();
            for expiry in self.expire_due(now) {
                swept.apply(&expiry);
            }
            swept.settle();
            swept.best_block(user, quantity, section_index, now)
        } else {
            self.best_block(user, quantity, section_index, now)
        };
        let seats = seats.ok_or_else(|| DomainError::NoAdjacentSeats {
            quantity,
            section: section.map(str::to_owned),
        })?;
        self.hold_of(user, seats, now, idempotency)
    }

    /// The best block for `user` among the seats `free` says are available.
    fn best_block(
        &self,
        user: UserId,
        quantity: u32,
        section: Option<u32>,
        now: Timestamp,
    ) -> Option<SeatList> {
        let avoid = if self.policy.rehold_cooldown_ms > 0 {
            self.cooldowns
                .seats_of(user, now, self.policy.rehold_cooldown_ms)
        } else {
            SmallVec::new()
        };
        let block = self.free.choose(&self.layout, quantity, section, &avoid)?;
        let seats: SeatList = block.seats().collect();
        debug_assert!(seats.iter().all(|seat| {
            self.seat_status(*seat, now) == Some(SeatStatus::Available)
                && self.cooldown_ends(user, *seat, now).is_none()
        }));
        Some(seats)
    }

    fn has_due_expiries(&self, now: Timestamp) -> bool {
        self.expiries
            .live(|seq| self.holds.contains_key(&seq))
            .next()
            .is_some_and(|(at, _)| at <= now)
    }

    pub fn cancel_hold(
        &self,
        user: UserId,
        id: ReservationId,
        now: Timestamp,
    ) -> Result<Event, DomainError> {
        let reservation = self.reservation_of(user, id)?;
        if let Some(refusal) = reservation.cancel_refusal(now) {
            return Err(refusal);
        }
        Ok(Event::HoldCancelled {
            reservation: id,
            at: now,
        })
    }

    /// Decides the seat side of a payment. The ledger decides the money side of the same event.
    pub fn prepare_payment(
        &self,
        user: UserId,
        id: ReservationId,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
        queue_token: Option<QueueTokenId>,
    ) -> Result<Event, DomainError> {
        let reservation = self.reservation_of(user, id)?;
        if let Some(refusal) = reservation.payment_refusal(now) {
            return Err(refusal);
        }
        Ok(Event::PaymentCompleted {
            reservation: id,
            user,
            seats: reservation.seats.clone(),
            amount: reservation.price,
            balance_after: 0,
            at: now,
            idempotency,
            queue_token,
        })
    }

    /// Holds due at `now` that have not been swept yet, as events.
    pub fn expire_due(&self, now: Timestamp) -> Vec<Event> {
        self.expiries
            .live(|seq| self.holds.contains_key(&seq))
            .take_while(|(at, _)| *at <= now)
            .map(|(at, seq)| Event::HoldExpired {
                reservation: ReservationId {
                    date: self.date,
                    seq,
                },
                at,
            })
            .collect()
    }

    /// The holds `event` ends when applied, with their users: the one it cancels, expires or
    /// pays, or those a new hold overtakes on seats they held past their expiry.
    pub fn holds_ended_by(&self, event: &Event) -> SmallVec<[(UserId, ReservationId); 2]> {
        let mut ended: SmallVec<[(UserId, ReservationId); 2]> = SmallVec::new();
        let mut add = |seq: u32| {
            if let Some(r) = self.holds.get(&seq) {
                if !ended.contains(&(r.user, r.id)) {
                    ended.push((r.user, r.id));
                }
            }
        };
        match event {
            Event::HoldPlaced {
                reservation, seats, ..
            } if reservation.date == self.date => {
                for seat in seats {
                    if let Some(slot) = self.seats.get(seat.index()) {
                        add(slot.holder);
                    }
                }
            }
            Event::HoldCancelled { reservation, .. }
            | Event::HoldExpired { reservation, .. }
            | Event::PaymentCompleted { reservation, .. }
                if reservation.date == self.date =>
            {
                add(reservation.seq)
            }
            Event::DateCancelled {
                date,
                cancelled_holds,
                ..
            } if *date == self.date => {
                for seq in cancelled_holds {
                    add(*seq);
                }
            }
            Event::WaitlistLeft { entry, .. } if entry.date == self.date => {
                if let Some(offer) = self.waitlist.entry(entry.seq).and_then(|e| e.offer) {
                    add(offer.seq);
                }
            }
            _ => {}
        }
        ended
    }

    /// The instant an event of this date happened, for forgetting cooldowns that have passed.
    fn happened_at(&self, event: &Event) -> Option<Timestamp> {
        match event {
            Event::HoldPlaced {
                reservation, at, ..
            }
            | Event::HoldCancelled { reservation, at }
            | Event::HoldExpired { reservation, at }
            | Event::PaymentCompleted {
                reservation, at, ..
            }
            | Event::RefundCompleted {
                reservation, at, ..
            }
            | Event::TransferCompleted {
                reservation, at, ..
            } if reservation.date == self.date => Some(*at),
            Event::DateCancelled { date, at, .. } if *date == self.date => Some(*at),
            Event::WaitlistJoined { entry, at, .. } | Event::WaitlistLeft { entry, at, .. }
                if entry.date == self.date =>
            {
                Some(*at)
            }
            _ => None,
        }
    }

    /// Applies an event this date owns; events of other owners and other dates are ignored.
    /// Returns the seats whose slot changed, so views can be updated without a scan.
    pub fn apply(&mut self, event: &Event) -> SeatList {
        if let Some(at) = self.happened_at(event) {
            self.cooldowns
                .forget_passed(at, self.policy.rehold_cooldown_ms);
        }
        match event {
            Event::HoldPlaced {
                reservation,
                user,
                seats,
                price,
                at,
                expires_at,
                ..
            } if reservation.date == self.date => {
                assert_eq!(
                    reservation.seq,
                    self.placed + 1,
                    "holds are applied in the order they were decided"
                );
                for seat in seats {
                    let previous = self.seats[seat.index()].holder;
                    if previous != 0 {
                        // The previous holder expired by time but was not swept yet: it was
                        // let go of at its expiry.
                        let expired_at = self.holds.get(&previous).map(|r| r.expires_at);
                        self.end_hold(previous, expired_at);
                    }
                    self.seats[seat.index()].holder = reservation.seq;
                    self.refresh_free(*seat);
                }
                self.placed = reservation.seq;
                self.holds.insert(
                    reservation.seq,
                    Reservation::placed_by(event).expect("a hold places a reservation"),
                );
                self.holding.entry(*user).or_default().push(reservation.seq);
                self.expiries.push((*expires_at, reservation.seq));
                if let Event::HoldPlaced {
                    offer: Some(entry), ..
                } = event
                {
                    self.waitlist.offered(*entry, *reservation);
                }
                self.held_seats += seats.len() as u32;
                seats.clone()
            }
            Event::HoldCancelled { reservation, at } | Event::HoldExpired { reservation, at }
                if reservation.date == self.date =>
            {
                self.end_hold(reservation.seq, Some(*at))
            }
            Event::PaymentCompleted { reservation, .. } if reservation.date == self.date => {
                let seq = reservation.seq;
                debug_assert!(
                    self.holds.contains_key(&seq),
                    "a payment applies to a held reservation"
                );
                let Some(mut r) = self.holds.remove(&seq) else {
                    return SeatList::new();
                };
                let (user, seats) = (r.user, r.seats.clone());
                self.stop_holding(user, seq);
                self.forget_ended_expiries();
                self.waitlist.offer_ended(seq, None);
                for seat in &seats {
                    let slot = &mut self.seats[seat.index()];
                    debug_assert!(!slot.sold, "a seat is sold at most once");
                    slot.holder = seq;
                    slot.sold = true;
                    self.refresh_free(*seat);
                }
                self.held_seats -= seats.len() as u32;
                self.sold_seats += seats.len() as u32;
                if let Event::PaymentCompleted { at, .. } = event {
                    ReservationChange::end(&mut r, ReservationState::Paid, *at);
                }
                *self.owned.entry(user).or_default() += seats.len() as u32;
                self.paid.insert(
                    seq,
                    PaidReservation {
                        reservation: r,
                        payer: user,
                    },
                );
                seats
            }
            Event::RefundCompleted { reservation, .. } if reservation.date == self.date => {
                self.release_paid(reservation.seq)
            }
            Event::TransferCompleted {
                transfer,
                reservation,
                to,
                ..
            } if reservation.date == self.date => {
                if let Some(paid) = self.paid.get_mut(&reservation.seq) {
                    let (from, seats) = (paid.reservation.user, paid.reservation.seats.len());
                    paid.reservation.user = *to;
                    self.disown(from, seats as u32);
                    *self.owned.entry(*to).or_default() += seats as u32;
                }
                self.transfers = transfer.seq;
                SeatList::new()
            }
            Event::WaitlistJoined { entry, .. } if entry.date == self.date => {
                self.waitlist
                    .join(Entry::joined_by(event).expect("a join places an entry"));
                SeatList::new()
            }
            Event::WaitlistLeft { entry, at, .. } if entry.date == self.date => {
                match self.waitlist.leave(entry.seq) {
                    Some(offer) => self.end_hold(offer.seq, Some(*at)),
                    None => SeatList::new(),
                }
            }
            Event::DateCancelled {
                date,
                refunds,
                cancelled_holds,
                ..
            } if *date == self.date => {
                self.cancelled = true;
                if let Event::DateCancelled { at, .. } = event {
                    self.waitlist.lapse_all(*at);
                }
                let mut changed = SeatList::new();
                for refund in refunds {
                    changed.extend(self.release_paid(refund.seq));
                }
                for seq in cancelled_holds {
                    // Called off by the date, not let go of by the buyer: no cooldown.
                    changed.extend(self.end_hold(*seq, None));
                }
                changed
            }
            _ => SeatList::new(),
        }
    }

    /// Returns a paid reservation's seats (refunded): they are available at once.
    fn release_paid(&mut self, seq: u32) -> SeatList {
        let Some(paid) = self.paid.remove(&seq) else {
            debug_assert!(false, "a refund applies to a paid reservation");
            return SeatList::new();
        };
        let seats = paid.reservation.seats;
        self.disown(paid.reservation.user, seats.len() as u32);
        for seat in &seats {
            let slot = &mut self.seats[seat.index()];
            debug_assert!(slot.sold && slot.holder == seq);
            *slot = SeatSlot::default();
            self.refresh_free(*seat);
        }
        self.sold_seats -= seats.len() as u32;
        self.waitlist.wake();
        seats
    }

    fn disown(&mut self, user: UserId, seats: u32) {
        if let Some(owned) = self.owned.get_mut(&user) {
            *owned -= seats;
            if *owned == 0 {
                self.owned.remove(&user);
            }
        }
    }

    fn forget_ended_expiries(&mut self) {
        let holds = &self.holds;
        self.expiries
            .forget_ended(|seq| holds.contains_key(&seq), holds.len());
    }

    fn stop_holding(&mut self, user: UserId, seq: u32) {
        if let Some(held) = self.holding.get_mut(&user) {
            held.retain(|s| *s != seq);
            if held.is_empty() {
                self.holding.remove(&user);
            }
        }
    }

    /// Ends a held reservation (cancelled or expired at `let_go_at`): it leaves memory, its
    /// seats return, and its user waits out the cooldown before holding them again.
    fn end_hold(&mut self, seq: u32, let_go_at: Option<Timestamp>) -> SeatList {
        let Some(r) = self.holds.remove(&seq) else {
            return SeatList::new();
        };
        let (user, seats) = (r.user, r.seats);
        if let (Some(at), true) = (let_go_at, self.policy.rehold_cooldown_ms > 0) {
            self.cooldowns.record(user, &seats, at);
        }
        self.waitlist.offer_ended(seq, let_go_at);
        self.waitlist.wake();
        self.stop_holding(user, seq);
        self.forget_ended_expiries();
        self.held_seats -= seats.len() as u32;
        let mut freed = SeatList::new();
        for seat in seats {
            let slot = &mut self.seats[seat.index()];
            if slot.holder == seq {
                slot.holder = 0;
                self.refresh_free(seat);
                freed.push(seat);
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const DATE: DateId = DateId(1);
    const TTL_MS: i64 = 300_000;
    const COOLDOWN_MS: i64 = 60_000;
    /// Ten days after the epoch the tests' clocks start at.
    const STARTS: Timestamp = Timestamp(10 * DAY_MS);
    const DAY_MS: i64 = 24 * 3_600_000;

    fn map(seats: u32) -> SeatMap {
        SeatMap::new(
            DATE,
            STARTS,
            Layout::general(seats, 50_000),
            DatePolicy {
                ttl_ms: TTL_MS,
                max_seats_per_user: 4,
                max_seats_per_user_total: 8,
                rehold_cooldown_ms: COOLDOWN_MS,
                refunds: Default::default(),
                offer_ttl_ms: 600_000,
            },
        )
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    fn seats(nos: &[u32]) -> SeatList {
        nos.iter().map(|n| SeatNo(*n)).collect()
    }

    fn hold(
        map: &mut SeatMap,
        user: UserId,
        nos: &[u32],
        now: i64,
    ) -> Result<ReservationId, DomainError> {
        let event = map.place_hold(user, &seats(nos), t(now), None)?;
        map.apply(&event);
        match event {
            Event::HoldPlaced { reservation, .. } => Ok(reservation),
            _ => unreachable!(),
        }
    }

    #[test]
    fn consecutive_holds_hash_to_consecutive_buckets_with_spread_tags() {
        let hash = |seq: u32| SequenceOrder.hash_one(seq);
        let mut tags = std::collections::BTreeSet::new();
        for seq in [0, 1, 2, 1_000, 65_535, 65_536, u32::MAX] {
            assert_eq!(
                hash(seq) & u64::from(u32::MAX),
                u64::from(seq),
                "bucket bits of {seq}"
            );
        }
        for seq in 1..=1_024 {
            tags.insert(hash(seq) >> 57);
        }
        // A tag that repeated for neighbours would make every probe compare every key.
        assert!(tags.len() > 100, "{} distinct tags of 128", tags.len());
    }

    #[test]
    fn a_hold_takes_every_seat_or_none() {
        let mut m = map(10);
        hold(&mut m, ALICE, &[2], 0).unwrap();
        assert_eq!(
            hold(&mut m, BOB, &[1, 2, 3], 0),
            Err(DomainError::SeatUnavailable(SeatNo(2)))
        );
        assert_eq!(m.seat_status(SeatNo(1), t(0)), Some(SeatStatus::Available));
        assert_eq!(m.seat_status(SeatNo(3), t(0)), Some(SeatStatus::Available));
    }

    #[test]
    fn a_hold_on_a_sold_seat_is_rejected() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[5], 0).unwrap();
        let pay = m.prepare_payment(ALICE, r, t(1), None, None).unwrap();
        m.apply(&pay);
        assert_eq!(
            m.seat_status(SeatNo(5), t(TTL_MS * 10)),
            Some(SeatStatus::Sold)
        );
        assert_eq!(
            hold(&mut m, BOB, &[5], TTL_MS * 10),
            Err(DomainError::SeatUnavailable(SeatNo(5)))
        );
    }

    #[test]
    fn an_expired_hold_frees_its_seats_before_any_sweep() {
        let mut m = map(10);
        let first = hold(&mut m, ALICE, &[1, 2], 0).unwrap();
        assert_eq!(
            hold(&mut m, BOB, &[1], TTL_MS - 1),
            Err(DomainError::SeatUnavailable(SeatNo(1)))
        );
        let second = hold(&mut m, BOB, &[1], TTL_MS).unwrap();
        // Alice's hold ended when Bob took its seat: it left memory.
        assert!(m.has_ended(first));
        assert_eq!(m.hold_count(), 1);
        assert_eq!(
            m.seat_status(SeatNo(2), t(TTL_MS)),
            Some(SeatStatus::Available)
        );
        assert_eq!(
            m.prepare_payment(ALICE, first, t(TTL_MS), None, None),
            Err(DomainError::NotFound)
        );
        assert!(m
            .prepare_payment(BOB, second, t(TTL_MS + 1), None, None)
            .is_ok());
    }

    fn best(
        map: &mut SeatMap,
        user: UserId,
        quantity: u32,
        section: Option<&str>,
        now: i64,
    ) -> Result<Vec<u32>, DomainError> {
        let event = map.place_best_available_among(
            user,
            quantity,
            section,
            t(now),
            None,
            &HeldAcrossDates::default(),
        )?;
        map.apply(&event);
        let Event::HoldPlaced { seats, .. } = event else {
            unreachable!()
        };
        Ok(seats.iter().map(|s| s.0).collect())
    }

    #[test]
    fn best_available_takes_the_middle_of_a_row_then_either_side() {
        let mut m = map(10);
        assert_eq!(best(&mut m, ALICE, 2, None, 0), Ok(vec![5, 6]));
        assert_eq!(best(&mut m, BOB, 2, None, 0), Ok(vec![3, 4]));
        assert_eq!(best(&mut m, UserId(3), 2, None, 0), Ok(vec![7, 8]));
        // 1–2 and 9–10 are left: a block of three is nowhere.
        assert_eq!(
            best(&mut m, UserId(4), 3, None, 0),
            Err(DomainError::NoAdjacentSeats {
                quantity: 3,
                section: None
            })
        );
    }

    #[test]
    fn best_available_checks_its_values_and_prices_by_section() {
        let layout = Layout::plan(vec![
            crate::domain::venue::SectionPlan {
                name: "Floor".into(),
                price: 150_000,
                rows: vec![crate::domain::venue::RowPlan {
                    label: "A".into(),
                    seats: 4,
                }],
            },
            crate::domain::venue::SectionPlan {
                name: "Balcony".into(),
                price: 80_000,
                rows: vec![crate::domain::venue::RowPlan {
                    label: "1".into(),
                    seats: 6,
                }],
            },
        ])
        .unwrap();
        let mut m = SeatMap::new(DATE, STARTS, layout, map(1).policy());
        for quantity in [0, 5] {
            assert!(matches!(
                best(&mut m, ALICE, quantity, None, 0),
                Err(DomainError::InvalidInput(_))
            ));
        }
        assert!(matches!(
            best(&mut m, ALICE, 1, Some("Stalls"), 0),
            Err(DomainError::InvalidInput(_))
        ));
        assert_eq!(best(&mut m, ALICE, 2, Some("Balcony"), 0), Ok(vec![7, 8]));
        assert_eq!(best(&mut m, ALICE, 2, None, 0), Ok(vec![1, 2]));
        assert_eq!(
            best(&mut m, ALICE, 1, None, 0),
            Err(DomainError::HoldLimit { max: 4 })
        );
        let prices: Vec<u64> = m.holds_of(ALICE).map(|r| r.price).collect();
        assert!(prices.contains(&160_000) && prices.contains(&300_000));
        assert_eq!(m.free_by_section(), [2, 4]);
    }

    #[test]
    fn best_available_steps_around_the_buyers_cooldown_and_sees_unswept_expiries() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[5, 6], 0).unwrap();
        m.apply(&m.cancel_hold(ALICE, r, t(1)).unwrap());
        // Alice let go of 5–6: hers is the next best, 3–4; Bob gets the middle.
        assert_eq!(best(&mut m, ALICE, 2, None, 2), Ok(vec![3, 4]));
        assert_eq!(best(&mut m, BOB, 2, None, 2), Ok(vec![5, 6]));
        // Bob's hold expires by time and is not swept: its seats are the best again.
        assert_eq!(best(&mut m, UserId(3), 2, None, 2 + TTL_MS), Ok(vec![5, 6]));
    }

    fn paid(m: &mut SeatMap, user: UserId, nos: &[u32], now: i64) -> ReservationId {
        let r = hold(m, user, nos, now).unwrap();
        m.apply(&m.prepare_payment(user, r, t(now), None, None).unwrap());
        r
    }

    #[test]
    fn a_refund_releases_a_paid_reservations_seats_and_credits_its_payer_less_the_fee() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[3, 4], 0).unwrap();
        assert_eq!(
            m.prepare_refund(ALICE, r, t(1), None),
            Err(DomainError::ReservationNotPaid)
        );
        m.apply(&m.prepare_payment(ALICE, r, t(1), None, None).unwrap());
        assert_eq!(
            m.prepare_refund(BOB, r, t(2), None),
            Err(DomainError::NotFound)
        );
        // The window closes 24 hours before the start, to the millisecond.
        let closes = STARTS.as_millis() - DAY_MS;
        assert_eq!(
            m.prepare_refund(ALICE, r, t(closes), None),
            Err(DomainError::RefundWindowClosed { hours: 24 })
        );
        let refund = m.prepare_refund(ALICE, r, t(closes - 1), None).unwrap();
        let Event::RefundCompleted {
            payer, amount, fee, ..
        } = &refund
        else {
            unreachable!()
        };
        // 100,000 won: a fee of 10,000, 90,000 back to Alice, who paid.
        assert_eq!((*payer, *amount, *fee), (ALICE, 90_000, 10_000));
        let freed = m.apply(&refund);
        assert_eq!(freed.as_slice(), [SeatNo(3), SeatNo(4)]);
        assert_eq!(m.seat_status(SeatNo(3), t(3)), Some(SeatStatus::Available));
        assert_eq!(m.sold_seats(), 0);
        assert!(m.has_ended(r));
        // A second refund finds nothing paid; Bob may hold the seats at once.
        assert_eq!(
            m.prepare_refund(ALICE, r, t(3), None),
            Err(DomainError::NotFound)
        );
        hold(&mut m, BOB, &[3, 4], 3).unwrap();
    }

    #[test]
    fn the_fee_is_the_floor_of_its_share_for_any_price() {
        let share = |fee_percent| RefundPolicy {
            fee_percent,
            ..RefundPolicy::default()
        };
        assert_eq!(share(10).fee_of(99), 9);
        assert_eq!(share(0).fee_of(1_000), 0);
        assert_eq!(share(99).fee_of(1), 0);
        let max = (1u64 << 53) - 1;
        assert_eq!(share(99).fee_of(max), (u128::from(max) * 99 / 100) as u64);
    }

    #[test]
    fn the_ticket_limit_counts_held_owned_and_received_seats_and_bounds_offers_too() {
        let mut m = map(10).sold_as(Some(3));
        let r = paid(&mut m, ALICE, &[1, 2], 0);
        // Two owned, so one more may be held, whichever way it is asked for.
        assert_eq!(
            hold(&mut m, ALICE, &[3, 4], 1),
            Err(DomainError::TicketLimit { max: 3 })
        );
        assert_eq!(
            best(&mut m, ALICE, 2, None, 1),
            Err(DomainError::TicketLimit { max: 3 })
        );
        hold(&mut m, ALICE, &[3], 1).unwrap();
        // Bob holds two: a transfer of Alice's two would make four.
        hold(&mut m, BOB, &[5, 6], 1).unwrap();
        assert_eq!(
            m.prepare_transfer(ALICE, Some(BOB), r, t(2), None),
            Err(DomainError::TicketLimit { max: 3 })
        );
        let carol = UserId(3);
        m.apply(
            &m.prepare_transfer(ALICE, Some(carol), r, t(2), None)
                .unwrap(),
        );
        // Given away, Alice's two no longer count; received, they count for Carol.
        hold(&mut m, ALICE, &[7, 8], 3).unwrap();
        assert_eq!(
            hold(&mut m, carol, &[9, 10], 3),
            Err(DomainError::TicketLimit { max: 3 })
        );
        // A refund frees the recipient's count, and a map read back counts the same.
        m.apply(&m.prepare_refund(carol, r, t(4), None).unwrap());
        let mut restored = m.clone();
        restored.restore(m.policy());
        assert_eq!(restored, m);
        hold(&mut restored, carol, &[1, 2, 9], 4).unwrap();

        // An offer that would pass the limit is not made; the entry waits.
        let mut m = map(2).sold_as(Some(2));
        paid(&mut m, ALICE, &[1], 0);
        let bob = hold(&mut m, BOB, &[2], 0).unwrap();
        let Joined::New(joined) = m.join_waitlist(ALICE, 2, None, t(1)).unwrap() else {
            panic!("a new entry")
        };
        m.apply(&joined);
        m.apply(&m.cancel_hold(BOB, bob, t(2)).unwrap());
        assert!(m.make_offers(t(2)).is_empty());
        assert_eq!(m.seat_status(SeatNo(2), t(2)), Some(SeatStatus::Available));
    }

    #[test]
    fn a_transfer_moves_the_reservation_and_a_refund_still_credits_the_payer() {
        let mut m = map(10);
        let held = hold(&mut m, ALICE, &[1], 0).unwrap();
        let r = paid(&mut m, ALICE, &[5], 0);
        assert_eq!(
            m.prepare_transfer(BOB, Some(ALICE), r, t(1), None),
            Err(DomainError::NotFound),
            "not Bob's"
        );
        for to in [None, Some(ALICE)] {
            assert!(matches!(
                m.prepare_transfer(ALICE, to, r, t(1), None),
                Err(DomainError::InvalidInput(_))
            ));
            // The recipient (422) is checked before the state (409).
            assert!(matches!(
                m.prepare_transfer(ALICE, to, held, t(1), None),
                Err(DomainError::InvalidInput(_))
            ));
        }
        assert_eq!(
            m.prepare_transfer(ALICE, Some(BOB), held, t(1), None),
            Err(DomainError::ReservationNotPaid)
        );
        let given = m.prepare_transfer(ALICE, Some(BOB), r, t(1), None).unwrap();
        assert!(matches!(
            given,
            Event::TransferCompleted {
                transfer: TransferId { seq: 1, .. },
                ..
            }
        ));
        assert!(m.apply(&given).is_empty(), "no seat changes hands");
        assert_eq!(m.reservation_of(BOB, r).unwrap().user, BOB);
        assert_eq!(m.reservation_of(ALICE, r), Err(DomainError::NotFound));
        assert_eq!(
            m.prepare_refund(ALICE, r, t(2), None),
            Err(DomainError::NotFound)
        );
        let refund = m.prepare_refund(BOB, r, t(2), None).unwrap();
        assert!(matches!(
            refund,
            Event::RefundCompleted {
                holder: BOB,
                payer: ALICE,
                ..
            }
        ));
        let again = m.prepare_transfer(BOB, Some(ALICE), r, t(2), None).unwrap();
        assert!(matches!(
            again,
            Event::TransferCompleted {
                transfer: TransferId { seq: 2, .. },
                ..
            }
        ));
    }

    #[test]
    fn a_cancellation_refunds_every_paid_reservation_in_full_and_cancels_live_holds() {
        let mut m = map(10);
        let alice_paid = paid(&mut m, ALICE, &[1, 2], 0);
        let bob_paid = paid(&mut m, BOB, &[3], 0);
        let bob_held = hold(&mut m, BOB, &[4], 0).unwrap();
        let lapsed = hold(&mut m, ALICE, &[6], 0).unwrap();
        let given = m.prepare_transfer(BOB, Some(ALICE), bob_paid, t(1), None);
        m.apply(&given.unwrap());
        let now = t(TTL_MS + 1);
        let cancelled = m.prepare_cancellation(now).unwrap();
        let Event::DateCancelled {
            refunds,
            cancelled_holds,
            ..
        } = &cancelled
        else {
            unreachable!()
        };
        let refunded: Vec<(u32, UserId, u64)> =
            refunds.iter().map(|r| (r.seq, r.payer, r.amount)).collect();
        assert_eq!(
            refunded,
            vec![
                (alice_paid.seq, ALICE, 100_000),
                (bob_paid.seq, BOB, 50_000)
            ],
            "in full, to the payer, whoever holds it"
        );
        assert!(
            cancelled_holds.is_empty(),
            "both holds had expired by time: the sweep expires them, as ever"
        );
        let earlier = m.prepare_cancellation(t(1)).unwrap();
        let Event::DateCancelled {
            cancelled_holds, ..
        } = &earlier
        else {
            unreachable!()
        };
        assert_eq!(cancelled_holds, &vec![bob_held.seq, lapsed.seq]);
        assert_eq!(m.holds_ended_by(&earlier).len(), 2);
        m.apply(&earlier);
        assert_eq!((m.sold_seats(), m.held_seats()), (0, 0));
        assert_eq!(m.sale_state(t(2)), SaleState::Cancelled);
        assert_eq!(
            m.cooldown_count(),
            0,
            "called off by the date, not let go of"
        );
        assert_eq!(
            m.prepare_cancellation(t(3)),
            Err(DomainError::DateCancelled)
        );
        assert_eq!(
            m.place_hold(BOB, &seats(&[1]), t(3), None),
            Err(DomainError::DateCancelled)
        );
        assert_eq!(
            m.prepare_refund(ALICE, alice_paid, t(3), None),
            Err(DomainError::NotFound),
            "refunded already"
        );
    }

    #[test]
    fn sales_close_when_the_date_starts() {
        let m = map(10);
        assert_eq!(m.sale_state(t(STARTS.as_millis() - 1)), SaleState::OnSale);
        assert_eq!(m.sale_state(STARTS), SaleState::SalesClosed);
        assert_eq!(
            m.place_hold(ALICE, &seats(&[1]), STARTS, None),
            Err(DomainError::SalesClosed)
        );
        // The date's state comes before the request's values.
        assert_eq!(
            m.place_hold(ALICE, &seats(&[99]), STARTS, None),
            Err(DomainError::SalesClosed)
        );
    }

    #[test]
    fn the_sweep_visits_only_due_holds() {
        let mut m = map(10);
        hold(&mut m, ALICE, &[1], 0).unwrap();
        hold(&mut m, BOB, &[2], 1_000).unwrap();
        assert!(m.expire_due(t(TTL_MS - 1)).is_empty());
        let due = m.expire_due(t(TTL_MS));
        assert_eq!(due.len(), 1);
        for e in &due {
            m.apply(e);
        }
        assert_eq!(m.held_seats(), 1);
        assert!(m.expire_due(t(TTL_MS)).is_empty());
    }

    fn expiring(m: &SeatMap, now: i64) -> Vec<u32> {
        m.expire_due(t(now))
            .iter()
            .map(|e| match e {
                Event::HoldExpired { reservation, .. } => reservation.seq,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_hold_placed_after_the_clock_stepped_back_is_swept_in_expiry_order() {
        let mut m = map(10);
        let late = hold(&mut m, ALICE, &[1], 5_000).unwrap();
        let early = hold(&mut m, BOB, &[2], 1_000).unwrap();
        let between = hold(&mut m, UserId(3), &[3], 3_000).unwrap();
        assert_eq!(expiring(&m, TTL_MS + 1_000), vec![early.seq]);
        assert_eq!(
            expiring(&m, TTL_MS + 5_000),
            vec![early.seq, between.seq, late.seq]
        );
    }

    #[test]
    fn ended_holds_do_not_pile_up_in_the_expiry_queue() {
        let mut m = map(6_000);
        // The first hold stays, so ended entries never reach the front and only a compaction
        // can drop them.
        hold(&mut m, UserId(1), &[1], 0).unwrap();
        for n in 2..=6_000u32 {
            let user = UserId(n as u64);
            let id = hold(&mut m, user, &[n], 0).unwrap();
            let cancel = m.cancel_hold(user, id, t(1)).unwrap();
            m.apply(&cancel);
            assert!(m.expiries.0.len() <= 2 * m.hold_count() + ExpiryQueue::SLACK);
        }
        assert_eq!(expiring(&m, TTL_MS), vec![1]);
    }

    #[test]
    fn a_map_read_back_keeps_only_the_expiries_of_its_holds() {
        let mut m = map(10);
        let kept = hold(&mut m, ALICE, &[1], 0).unwrap();
        let cancelled = hold(&mut m, BOB, &[2], 0).unwrap();
        m.apply(&m.cancel_hold(BOB, cancelled, t(1)).unwrap());
        assert_eq!(m.expiries.0.len(), 2, "the cancelled hold's entry lingers");
        let config = bincode::config::standard();
        let written = bincode::serde::encode_to_vec(&m, config).unwrap();
        let (mut read, _): (SeatMap, _) =
            bincode::serde::decode_from_slice(&written, config).unwrap();
        read.restore(m.policy());
        assert_eq!(read.expiries.0, VecDeque::from([(t(TTL_MS), kept.seq)]));
        assert_eq!(read, m);
    }

    #[test]
    fn the_hold_limit_counts_live_holds_only() {
        let mut m = map(20);
        hold(&mut m, ALICE, &[1, 2, 3], 0).unwrap();
        assert_eq!(
            hold(&mut m, ALICE, &[4, 5], 0),
            Err(DomainError::HoldLimit { max: 4 })
        );
        hold(&mut m, ALICE, &[4], 0).unwrap();
        assert_eq!(
            hold(&mut m, ALICE, &[9, 10, 11, 12, 13], TTL_MS),
            Err(DomainError::HoldLimit { max: 4 })
        );
        hold(&mut m, ALICE, &[9, 10, 11, 12], TTL_MS).unwrap();
    }

    #[test]
    fn bad_seat_lists_are_invalid_input() {
        let m = map(10);
        for bad in [vec![], vec![1, 1], vec![11], vec![3, 3]] {
            assert!(matches!(
                m.place_hold(ALICE, &seats(&bad), t(0), None),
                Err(DomainError::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn another_users_reservation_does_not_exist_for_you() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1], 0).unwrap();
        assert_eq!(m.reservation_of(BOB, r), Err(DomainError::NotFound));
        assert_eq!(m.cancel_hold(BOB, r, t(0)), Err(DomainError::NotFound));
        assert_eq!(
            m.prepare_payment(BOB, r, t(0), None, None),
            Err(DomainError::NotFound)
        );
    }

    #[test]
    fn a_paid_reservation_cannot_be_paid_or_cancelled_again() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1], 0).unwrap();
        let pay = m.prepare_payment(ALICE, r, t(1), None, None).unwrap();
        m.apply(&pay);
        assert!(!m.has_ended(r), "a paid reservation stays, for refunds");
        assert_eq!(
            m.prepare_payment(ALICE, r, t(2), None, None),
            Err(DomainError::AlreadyPaid)
        );
        assert_eq!(
            m.cancel_hold(ALICE, r, t(2)),
            Err(DomainError::ReservationNotHeld)
        );
        assert_eq!(m.reservation_of(ALICE, r).unwrap().paid_at, Some(t(1)));
        // Its history answers instead.
        let mut paid = m_placed(r, &[1], 0);
        let Some(ReservationChange::Ended { state, at, .. }) =
            ReservationChange::made_by(&pay).pop()
        else {
            panic!("a payment ends a hold")
        };
        ReservationChange::end(&mut paid, state, at);
        assert_eq!(
            (paid.state, paid.paid_at),
            (ReservationState::Paid, Some(t(1)))
        );
        assert_eq!(paid.payment_refusal(t(2)), Some(DomainError::AlreadyPaid));
        assert_eq!(
            paid.cancel_refusal(t(2)),
            Some(DomainError::ReservationNotHeld)
        );
        // Ending it again (a replay) changes nothing.
        ReservationChange::end(&mut paid, ReservationState::Cancelled, t(3));
        assert_eq!(paid.state, ReservationState::Paid);
    }

    fn m_placed(id: ReservationId, nos: &[u32], at: i64) -> Reservation {
        Reservation {
            id,
            user: ALICE,
            seats: seats(nos),
            price: 50_000 * nos.len() as u64,
            state: ReservationState::Held,
            created_at: t(at),
            expires_at: t(at + TTL_MS),
            paid_at: None,
        }
    }

    #[test]
    fn a_let_go_reservation_is_always_refused_by_its_recorded_state() {
        let id = ReservationId { date: DATE, seq: 1 };
        let mut paid = m_placed(id, &[1], 0);
        ReservationChange::end(&mut paid, ReservationState::Paid, t(5));
        assert_eq!(
            paid.payment_refusal_once_ended(t(6)),
            DomainError::AlreadyPaid
        );
        assert_eq!(
            paid.cancel_refusal_once_ended(t(6)),
            DomainError::ReservationNotHeld
        );
        // Its record still reads held: let go of when a newer hold took its expired seats.
        let overtaken = m_placed(id, &[1], 0);
        assert_eq!(
            overtaken.payment_refusal_once_ended(t(TTL_MS)),
            DomainError::HoldExpired
        );
        assert_eq!(
            overtaken.payment_refusal_once_ended(t(1)),
            DomainError::ReservationNotHeld,
            "never paid as if it were still held"
        );
        assert_eq!(
            overtaken.cancel_refusal_once_ended(t(1)),
            DomainError::ReservationNotHeld
        );
    }

    #[test]
    fn refusals_follow_the_reservations_state_and_time() {
        let id = ReservationId { date: DATE, seq: 1 };
        let held = m_placed(id, &[1], 0);
        assert_eq!(held.payment_refusal(t(TTL_MS - 1)), None);
        assert_eq!(held.cancel_refusal(t(TTL_MS - 1)), None);
        assert_eq!(
            held.payment_refusal(t(TTL_MS)),
            Some(DomainError::HoldExpired)
        );
        assert_eq!(
            held.cancel_refusal(t(TTL_MS)),
            Some(DomainError::ReservationNotHeld)
        );
        let mut cancelled = held.clone();
        ReservationChange::end(&mut cancelled, ReservationState::Cancelled, t(5));
        assert_eq!(
            cancelled.payment_refusal(t(6)),
            Some(DomainError::ReservationNotHeld)
        );
        assert_eq!(cancelled.paid_at, None);
    }

    #[test]
    fn a_cancelled_hold_returns_its_seats_at_once() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1, 2], 0).unwrap();
        let cancel = m.cancel_hold(ALICE, r, t(5)).unwrap();
        assert_eq!(m.apply(&cancel), seats(&[1, 2]));
        assert!(m.has_ended(r));
        hold(&mut m, BOB, &[1, 2], 6).unwrap();
        assert_eq!(
            m.prepare_payment(ALICE, r, t(7), None, None),
            Err(DomainError::NotFound)
        );
        assert!(
            !m.has_ended(ReservationId { date: DATE, seq: 3 }),
            "not placed yet"
        );
    }

    #[test]
    fn a_map_read_back_from_a_snapshot_enforces_the_hold_limit_as_before() {
        let mut live = map(20);
        let first = hold(&mut live, ALICE, &[1, 2], 0).unwrap();
        hold(&mut live, ALICE, &[3], 10).unwrap();
        let cancel = live.cancel_hold(ALICE, first, t(20)).unwrap();
        live.apply(&cancel);
        hold(&mut live, ALICE, &[4, 5], 30).unwrap();
        hold(&mut live, BOB, &[6], 40).unwrap();

        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&live, config).unwrap();
        let (mut restored, _): (SeatMap, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        restored.restore(live.policy());
        assert_eq!(restored, live, "the derived index is rebuilt exactly");

        // Alice holds 3 of 4: one more seat is fine, two are not, in both maps.
        for m in [&live, &restored] {
            assert!(m.place_hold(ALICE, &seats(&[7]), t(50), None).is_ok());
            assert_eq!(
                m.place_hold(ALICE, &seats(&[7, 8]), t(50), None),
                Err(DomainError::HoldLimit { max: 4 })
            );
            // Once Alice's holds have expired by time, she may hold four again.
            assert!(m
                .place_hold(ALICE, &seats(&[7, 8, 9, 10]), t(30 + TTL_MS), None)
                .is_ok());
        }
    }

    fn cooldown(seat: u32, retry_after_seconds: u64) -> Result<ReservationId, DomainError> {
        Err(DomainError::ReholdCooldown {
            seat: SeatNo(seat),
            retry_after_seconds,
        })
    }

    #[test]
    fn a_user_who_cancelled_a_seat_waits_out_the_cooldown_and_others_do_not() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1, 2], 0).unwrap();
        m.apply(&m.cancel_hold(ALICE, r, t(1_000)).unwrap());
        assert_eq!(hold(&mut m, ALICE, &[2], 1_000), cooldown(2, 60));
        // A hold that names it fails whole.
        assert_eq!(hold(&mut m, ALICE, &[3, 1], 1_000), cooldown(1, 60));
        assert_eq!(
            m.seat_status(SeatNo(3), t(1_000)),
            Some(SeatStatus::Available)
        );
        assert_eq!(
            hold(&mut m, ALICE, &[1], 60_500),
            cooldown(1, 1),
            "rounded up"
        );
        hold(&mut m, ALICE, &[1], 61_000).unwrap();
        hold(&mut m, BOB, &[2], 1_001).unwrap();
    }

    #[test]
    fn an_expired_hold_starts_the_cooldown_at_its_expiry_swept_or_not() {
        let mut swept = map(10);
        hold(&mut swept, ALICE, &[4], 0).unwrap();
        for event in swept.expire_due(t(TTL_MS)) {
            swept.apply(&event);
        }
        let unswept = {
            let mut m = map(10);
            hold(&mut m, ALICE, &[4], 0).unwrap();
            m
        };
        for mut m in [swept, unswept] {
            assert_eq!(hold(&mut m, ALICE, &[4], TTL_MS + 30_000), cooldown(4, 30));
            hold(&mut m, ALICE, &[4], TTL_MS + COOLDOWN_MS).unwrap();
        }
    }

    #[test]
    fn a_hold_overtaken_past_its_expiry_starts_its_holders_cooldown() {
        let mut m = map(10);
        let first = hold(&mut m, ALICE, &[1, 2], 0).unwrap();
        let bobs = m.place_hold(BOB, &seats(&[1]), t(TTL_MS), None).unwrap();
        assert_eq!(
            m.holds_ended_by(&bobs).as_slice(),
            &[(ALICE, first)],
            "Bob's hold ends Alice's"
        );
        m.apply(&bobs);
        assert_eq!(hold(&mut m, ALICE, &[2], TTL_MS + 1_000), cooldown(2, 59));
    }

    #[test]
    fn a_paid_hold_starts_no_cooldown_and_a_zero_cooldown_none_at_all() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1], 0).unwrap();
        let pay = m.prepare_payment(ALICE, r, t(1), None, None).unwrap();
        assert_eq!(m.holds_ended_by(&pay).as_slice(), &[(ALICE, r)]);
        m.apply(&pay);
        assert_eq!(m.cooldown_count(), 0);

        let mut off = SeatMap::new(
            DATE,
            STARTS,
            Layout::general(10, 50_000),
            DatePolicy {
                rehold_cooldown_ms: 0,
                ..m.policy()
            },
        );
        let r = hold(&mut off, ALICE, &[1], 0).unwrap();
        off.apply(&off.cancel_hold(ALICE, r, t(1)).unwrap());
        hold(&mut off, ALICE, &[1], 1).unwrap();
        assert_eq!(off.cooldown_count(), 0);
    }

    #[test]
    fn limits_are_refused_before_conflicts() {
        let mut m = map(10);
        let r = hold(&mut m, ALICE, &[1], 0).unwrap();
        m.apply(&m.cancel_hold(ALICE, r, t(0)).unwrap());
        hold(&mut m, BOB, &[2], 0).unwrap();
        let mut across = HeldAcrossDates::default();
        across.record_placed(&Event::HoldPlaced {
            reservation: ReservationId {
                date: DateId(2),
                seq: 1,
            },
            user: ALICE,
            seats: seats(&[1, 2, 3, 4, 5, 6, 7]),
            price: 0,
            at: t(0),
            expires_at: t(TTL_MS),
            idempotency: None,
            offer: None,
        });
        // Seat 1 is in Alice's cooldown and seat 2 is Bob's, but two more seats are the limit.
        for taken in [&[1, 3][..], &[2, 3]] {
            assert_eq!(
                m.place_hold_among(ALICE, &seats(taken), t(1), None, &across),
                Err(DomainError::HoldLimitOverAllDates { max: 8 })
            );
        }
        assert!(m
            .place_hold_among(ALICE, &seats(&[3]), t(1), None, &across)
            .is_ok());
        // The other date's hold stops counting at its expiry.
        assert!(m
            .place_hold_among(ALICE, &seats(&[3, 4]), t(TTL_MS), None, &across)
            .is_ok());
    }

    #[test]
    fn cooldowns_are_forgotten_once_passed_and_read_back_from_a_snapshot() {
        let mut m = map(10);
        let first = hold(&mut m, ALICE, &[1], 0).unwrap();
        m.apply(&m.cancel_hold(ALICE, first, t(0)).unwrap());
        let second = hold(&mut m, BOB, &[2, 3], 10).unwrap();
        m.apply(&m.cancel_hold(BOB, second, t(20)).unwrap());
        assert_eq!(m.cooldown_count(), 3);

        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&m, config).unwrap();
        let (mut read, _): (SeatMap, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        read.restore(m.policy());
        assert_eq!(read, m);
        assert_eq!(hold(&mut read, BOB, &[3], 30), cooldown(3, 60));

        // The date's next event after Alice's cooldown forgets hers, and only hers.
        hold(&mut m, UserId(3), &[9], COOLDOWN_MS).unwrap();
        assert_eq!(m.cooldown_count(), 2);
        hold(&mut m, ALICE, &[1], COOLDOWN_MS).unwrap();
        hold(&mut m, UserId(3), &[10], COOLDOWN_MS + 20).unwrap();
        assert_eq!(m.cooldown_count(), 0);
    }
}
