//! One actor per concert date: it owns that date's `SeatMap` and serializes its holds and
//! payments. Seat listings read `SeatView`, a row of atomics the actor updates before replying,
//! so a buyer reads their own writes at once without entering the mailbox.
//!
//! The map keeps only held reservations. Asked about one that has ended, the actor says so
//! (`EngineError::Ended`) and `DateHandle` answers from the store, once the end is committed.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, Notify};

use super::{
    ask, ask_durably, every, snapshot_later, DateRegistry, Decided, Durability, EngineError,
    LedgerHandle,
};
use crate::clock::SharedClock;
use crate::domain::admission::{QueueTokenId, RoomId};
use crate::domain::seat_map::{Joined, Reservation, SaleState, SeatChoice, SeatMap, SeatStatus};
use crate::domain::venue::Layout;
use crate::domain::waitlist::{Entry, EntryId};
use crate::domain::{
    DateId, DomainError, Event, IdempotencyStamp, ReservationId, SeatList, SeatNo, Timestamp,
    TransferId, UserId,
};
use crate::store::recovery::date_owner;
use crate::store::{Durable, EventLog};

/// Expired holds become events at least this often, so counts lag by well under a second.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Seat changes go out to live subscribers at most this often, batched.
const BATCH_PERIOD: Duration = Duration::from_millis(100);
/// Batches a slow subscriber may fall behind before it is sent a fresh snapshot instead.
const BATCHES_BUFFERED: usize = 64;

const SEAT_FREE: i64 = i64::MIN;
const SEAT_SOLD: i64 = i64::MAX;

/// Per seat: `SEAT_FREE`, `SEAT_SOLD`, or the instant its hold expires. A hold past that instant
/// reads as available, exactly as the seat map decides.
pub struct SeatView {
    date: DateId,
    starts_at: Timestamp,
    cancelled: AtomicBool,
    layout: Arc<Layout>,
    seats: Box<[AtomicI64]>,
    held: AtomicU32,
    sold: AtomicU32,
    /// Per section, seats neither held nor sold (lags expiry by at most one sweep).
    free_by_section: Box<[AtomicU32]>,
    reservations: AtomicUsize,
    cooldowns: AtomicUsize,
    /// One bit per seat changed since the last batch.
    dirty: Box<[AtomicU64]>,
    changed: Arc<Notify>,
    batches: broadcast::Sender<Arc<SeatBatch>>,
}

/// Seats that changed since the previous batch, with their status when the batch was cut.
/// Every subscriber gets the same batch; `rendered` lets the first one that formats it share
/// the text with the rest.
pub struct SeatBatch {
    pub changes: Vec<(SeatNo, SeatStatus)>,
    pub rendered: OnceLock<String>,
}

impl SeatView {
    fn new(map: &SeatMap, now: Timestamp) -> Self {
        let view = Self {
            date: map.date(),
            starts_at: map.starts_at(),
            cancelled: AtomicBool::new(false),
            layout: Arc::new(map.layout().clone()),
            seats: (0..map.seat_count())
                .map(|_| AtomicI64::new(SEAT_FREE))
                .collect(),
            held: AtomicU32::new(0),
            sold: AtomicU32::new(0),
            free_by_section: map
                .free_by_section()
                .iter()
                .map(|n| AtomicU32::new(*n))
                .collect(),
            reservations: AtomicUsize::new(0),
            cooldowns: AtomicUsize::new(0),
            dirty: (0..map.seat_count().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            changed: Arc::new(Notify::new()),
            batches: broadcast::channel(BATCHES_BUFFERED).0,
        };
        let every_seat: Vec<SeatNo> = (1..=map.seat_count()).map(SeatNo).collect();
        view.publish(map, &every_seat, now);
        view
    }

    pub fn date(&self) -> DateId {
        self.date
    }
    /// Whether the date sells at `now`, as its map decides.
    pub fn sale_state(&self, now: Timestamp) -> SaleState {
        SaleState::of(self.cancelled.load(Ordering::Acquire), self.starts_at, now)
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// Per section, in section order: seats neither held nor sold, lagging expiry by at most
    /// one sweep, as `available_seats` does.
    pub fn available_by_section(&self) -> impl Iterator<Item = u32> + '_ {
        self.free_by_section
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
    }
    pub fn seat_count(&self) -> u32 {
        self.seats.len() as u32
    }
    /// Seats in holds not yet swept (lags expiry by at most one sweep).
    pub fn held_seats(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }
    pub fn sold_seats(&self) -> u32 {
        self.sold.load(Ordering::Relaxed)
    }
    /// Reservations the date keeps in memory: those still held, and the paid ones.
    pub fn reservations(&self) -> usize {
        self.reservations.load(Ordering::Relaxed)
    }
    /// Seats the date remembers as recently let go of (rehold cooldowns).
    pub fn cooldowns(&self) -> usize {
        self.cooldowns.load(Ordering::Relaxed)
    }
    pub fn available_seats(&self) -> u32 {
        self.seat_count()
            .saturating_sub(self.held_seats() + self.sold_seats())
    }

    /// Every seat's status at `now`, in seat order.
    pub fn statuses(&self, now: Timestamp) -> impl Iterator<Item = (SeatNo, SeatStatus)> + '_ {
        (0..self.seats.len()).map(move |i| (SeatNo(i as u32 + 1), self.status_of(i, now)))
    }

    fn status_of(&self, index: usize, now: Timestamp) -> SeatStatus {
        match self.seats[index].load(Ordering::Acquire) {
            SEAT_SOLD => SeatStatus::Sold,
            until if until > now.as_millis() => SeatStatus::Held {
                until: Timestamp(until),
            },
            _ => SeatStatus::Available,
        }
    }

    /// Live seat changes of this date, in batches; see `SeatBatch`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SeatBatch>> {
        self.batches.subscribe()
    }

    fn publish(&self, map: &SeatMap, changed: &[SeatNo], now: Timestamp) {
        for seat in changed {
            let code = match map.seat_status(*seat, now) {
                Some(SeatStatus::Sold) => SEAT_SOLD,
                Some(SeatStatus::Held { until }) => until.as_millis(),
                Some(SeatStatus::Available) | None => SEAT_FREE,
            };
            let index = seat.index();
            self.seats[index].store(code, Ordering::Release);
            self.dirty[index / 64].fetch_or(1 << (index % 64), Ordering::Relaxed);
        }
        self.cancelled.store(map.is_cancelled(), Ordering::Release);
        self.held.store(map.held_seats(), Ordering::Relaxed);
        self.sold.store(map.sold_seats(), Ordering::Relaxed);
        for (published, free) in self.free_by_section.iter().zip(map.free_by_section()) {
            published.store(*free, Ordering::Relaxed);
        }
        self.reservations
            .store(map.hold_count() + map.paid_count(), Ordering::Relaxed);
        self.cooldowns
            .store(map.cooldown_count(), Ordering::Relaxed);
        if !changed.is_empty() {
            self.changed.notify_one();
        }
    }

    /// The seats changed since the last call, as they are at `now`.
    fn take_changes(&self, now: Timestamp) -> Vec<(SeatNo, SeatStatus)> {
        let mut changes = Vec::new();
        for (word_index, word) in self.dirty.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::Relaxed);
            while bits != 0 {
                let index = word_index * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                changes.push((SeatNo(index as u32 + 1), self.status_of(index, now)));
            }
        }
        changes
    }
}

/// Cuts a batch of seat changes at most every `BATCH_PERIOD` while there are changes, off the
/// actor's mailbox: the actor only flips bits and wakes this task.
fn spawn_batcher(view: &Arc<SeatView>, clock: SharedClock) {
    let (changed, view) = (view.changed.clone(), Arc::downgrade(view));
    tokio::spawn(async move {
        loop {
            // Waits without holding the view, so a dropped date ends this task.
            let woken = tokio::time::timeout(Duration::from_secs(60), changed.notified()).await;
            let Some(view) = Weak::upgrade(&view) else {
                return;
            };
            if woken.is_err() {
                continue;
            }
            let changes = view.take_changes(clock.now());
            if !changes.is_empty() && view.batches.receiver_count() > 0 {
                let _ = view.batches.send(Arc::new(SeatBatch {
                    changes,
                    rendered: OnceLock::new(),
                }));
            }
            drop(view);
            tokio::time::sleep(BATCH_PERIOD).await;
        }
    });
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub reservation: ReservationId,
    pub amount: u64,
    pub balance: u64,
    pub seats: SeatList,
    pub paid_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReceipt {
    pub reservation: ReservationId,
    pub amount: u64,
    pub fee: u64,
    pub payer: UserId,
    /// The caller's balance right after.
    pub balance: u64,
    pub refunded_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReceipt {
    pub transfer: TransferId,
    pub reservation: ReservationId,
    pub from: UserId,
    pub to: UserId,
    pub transferred_at: Timestamp,
}

/// What calling a date off did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationReport {
    pub date: DateId,
    pub refunded_reservations: usize,
    pub refunded_amount: u64,
    pub cancelled_holds: usize,
    /// The size of its one log event, for reports.
    pub event_bytes: usize,
    /// How long the date's mailbox was busy with it (the commit is waited for after).
    pub busy: Duration,
}

/// A waiting-list entry as the date has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub entry: Entry,
    /// 1 for the first waiting entry, 0 once offered.
    pub position: u32,
    /// The offer's hold, once offered.
    pub offer_expires_at: Option<Timestamp>,
}

/// What joining did: the entry, and whether it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    pub entry: EntryView,
    pub created: bool,
}

/// One hold of a run asked for together (`DateHandle::hold_many`).
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub user: UserId,
    pub seats: SeatList,
    pub idempotency: Option<IdempotencyStamp>,
}

/// Each hold's outcome in the order asked, and the ticket of the commit that holds them all.
type ManyDecided = (Vec<Result<Reservation, DomainError>>, Option<Durable>);

pub enum DateMsg {
    HoldMany {
        holds: Vec<HoldRequest>,
        reply: RpcReplyPort<ManyDecided>,
    },
    Hold {
        user: UserId,
        choice: SeatChoice,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Decided<Reservation, DomainError>>,
    },
    Cancel {
        user: UserId,
        reservation: ReservationId,
        reply: RpcReplyPort<Decided<(), EngineError>>,
    },
    Pay {
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        queue_token: Option<QueueTokenId>,
        reply: RpcReplyPort<Decided<PaymentReceipt, EngineError>>,
    },
    Refund {
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Decided<RefundReceipt, EngineError>>,
    },
    Transfer {
        from: UserId,
        to: Option<UserId>,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Decided<TransferReceipt, EngineError>>,
    },
    CancelDate {
        reply: RpcReplyPort<Decided<CancellationReport, EngineError>>,
    },
    JoinWaitlist {
        user: UserId,
        quantity: u32,
        section: Option<String>,
        reply: RpcReplyPort<Result<(JoinAnswer, Option<Durable>), EngineError>>,
    },
    LeaveWaitlist {
        user: UserId,
        entry: EntryId,
        reply: RpcReplyPort<Decided<(), EngineError>>,
    },
    /// Where each of these entries stands now (0 for one not waiting).
    Positions {
        entries: Vec<u32>,
        reply: RpcReplyPort<Vec<u32>>,
    },
    /// Whether `reservation` is a live hold offered to `user` from the waiting list.
    IsOffer {
        user: UserId,
        reservation: ReservationId,
        reply: RpcReplyPort<bool>,
    },
    Get {
        /// `None`: whoever holds it (a replay of a request its holder made, since given away).
        user: Option<UserId>,
        reservation: ReservationId,
        reply: RpcReplyPort<Result<Reservation, EngineError>>,
    },
    Sweep,
    State(RpcReplyPort<SeatMap>),
    Snapshot(Option<RpcReplyPort<()>>),
}

pub struct DateActor;

/// What every date actor shares with the others.
#[derive(Clone)]
pub struct DateDeps {
    pub clock: SharedClock,
    pub durability: Durability,
    pub ledger: LedgerHandle,
    pub registry: Arc<DateRegistry>,
}

pub struct DateState {
    map: SeatMap,
    view: Arc<SeatView>,
    deps: DateDeps,
    /// Events applied here but not yet handed to the log change the listing only once they are
    /// (`publish`): whether there are any, and the seats they touched.
    unpublished: Option<Vec<SeatNo>>,
}

impl DateState {
    /// Applies an event this actor decided, logs it, and publishes the seats it touched.
    fn commit(&mut self, event: &Event, now: Timestamp) -> Durable {
        self.apply(event, now);
        let durable = self.deps.durability.append(event);
        self.publish(now);
        durable
    }

    /// Shows the seats changed since the last call in the listing. Called only once their
    /// events are in the log's queue: an answer waits for what was queued before it
    /// (`http::after_what_it_saw`), so a reader who sees a change is answered only once that
    /// change is committed, and a crash cannot take back what a reader saw.
    fn publish(&mut self, now: Timestamp) {
        if let Some(changed) = self.unpublished.take() {
            self.view.publish(&self.map, &changed, now);
        }
    }

    /// Applies an event to the map and takes the holds it ends out of the users' totals; the
    /// seats it touched are published once it is logged (`publish`).
    fn apply(&mut self, event: &Event, now: Timestamp) {
        let ended = self.map.holds_ended_by(event);
        let listed = self.map.waitlist().len();
        if listed > 0 {
            self.count_offers_ended(&ended, event);
        }
        let changed = self.map.apply(event);
        for (user, reservation) in ended {
            self.deps.registry.held().release(user, reservation, now);
        }
        if listed > 0 || !self.map.waitlist().is_empty() {
            metrics::gauge!("boxoffice_waitlist_entries", "date" => self.map.date().to_string())
                .set(self.map.waitlist().len() as f64);
        }
        self.unpublished.get_or_insert_default().extend(changed);
    }

    /// Counts the waiting-list offers among the holds `event` ends: paid, or let go of.
    fn count_offers_ended(&self, ended: &[(UserId, ReservationId)], event: &Event) {
        let waitlist = self.map.waitlist();
        for (_, reservation) in ended {
            if waitlist.offered_to(reservation.seq).is_none() {
                continue;
            }
            let outcome = match event {
                Event::PaymentCompleted { .. } => "purchased",
                Event::WaitlistLeft { .. } => "left",
                _ => "lapsed",
            };
            metrics::counter!("boxoffice_waitlist_offers_total", "outcome" => outcome).increment(1);
        }
    }

    /// Decides a hold and applies it; the caller logs the event. Decided and counted in the
    /// user's total as one step: see `hold_tally`. The answer is read off the event, not looked
    /// up in the map it went into.
    fn place_hold(
        &mut self,
        user: UserId,
        choice: &SeatChoice,
        idempotency: Option<IdempotencyStamp>,
        now: Timestamp,
    ) -> Result<(Event, Reservation), DomainError> {
        if matches!(choice, SeatChoice::BestAvailable { .. }) {
            self.map.settle();
        }
        let map = &self.map;
        let event = self.deps.registry.held().place(user, now, |across| {
            map.place_choice_among(user, choice, now, idempotency, across)
        })?;
        self.apply(&event, now);
        let placed = Reservation::placed_by(&event).expect("place_hold decides a hold");
        Ok((event, placed))
    }

    /// Decides each hold in order, exactly as one `Hold` message each would, applying each
    /// before deciding the next; the events go to the log together.
    fn hold_many(&mut self, holds: Vec<HoldRequest>, now: Timestamp) -> ManyDecided {
        let mut events = Vec::with_capacity(holds.len());
        let outcomes = holds
            .into_iter()
            .map(|hold| {
                let choice = SeatChoice::Named(hold.seats);
                let (event, placed) = self.place_hold(hold.user, &choice, hold.idempotency, now)?;
                events.push(event);
                Ok(placed)
            })
            .collect::<Vec<_>>();
        let durable = self.deps.durability.append_many(&events);
        self.publish(now);
        #[cfg(debug_assertions)]
        for placed in outcomes.iter().flatten() {
            super::supervisor::injected_panic_on_seats(&placed.seats);
        }
        (outcomes, durable)
    }

    /// `NotFound` for a reservation that has ended becomes `Ended`: the store has it.
    fn unless_ended<T>(
        &self,
        outcome: Result<T, DomainError>,
        reservation: ReservationId,
    ) -> Result<T, EngineError> {
        match outcome {
            Err(DomainError::NotFound) if self.map.has_ended(reservation) => {
                Err(EngineError::Ended)
            }
            other => Ok(other?),
        }
    }

    /// Turns holds that expired by time into events, and seats that came back into offers to
    /// the waiting list, before anything else is decided: a released seat reaches the list
    /// before any other buyer.
    fn sweep(&mut self, now: Timestamp) {
        for event in self.map.expire_due(now) {
            self.commit(&event, now);
        }
        let _ = self.make_offers(now);
    }

    /// Offers seats to the waiting entries they fit, in list order, each within its user's
    /// limits over every date (an entry that does not fit stays waiting). Returns the ticket
    /// of the last offer: an answer that waits for it finds the offers it caused committed.
    fn make_offers(&mut self, now: Timestamp) -> Option<Durable> {
        let mut last = None;
        for (seq, user) in self.map.offer_candidates(now) {
            if !self.map.has_free_seats() {
                break;
            }
            self.map.settle();
            let map = &self.map;
            let offered = self
                .deps
                .registry
                .held()
                .place(user, now, |across| map.offer_hold(seq, now, across));
            if let Ok(offer) = offered {
                last = Some(self.commit(&offer, now));
                metrics::counter!("boxoffice_waitlist_offers_total", "outcome" => "made")
                    .increment(1);
            }
        }
        last
    }

    /// `make_offers` for a change that may have let seats go, answered once its offers are
    /// committed too (the log commits in order, so the last ticket covers the change).
    fn with_offers(&mut self, durable: Durable, now: Timestamp) -> Durable {
        self.make_offers(now).unwrap_or(durable)
    }

    fn entry_view(&self, entry: Entry) -> EntryView {
        EntryView {
            position: self.map.waitlist().position(entry.id.seq),
            offer_expires_at: entry
                .offer
                .and_then(|offer| self.map.any_reservation(offer).ok().map(|r| r.expires_at)),
            entry,
        }
    }

    fn join_waitlist(
        &mut self,
        user: UserId,
        quantity: u32,
        section: Option<&str>,
        now: Timestamp,
    ) -> Result<(JoinAnswer, Option<Durable>), EngineError> {
        match self.map.join_waitlist(user, quantity, section, now)? {
            Joined::Already(entry) => Ok((
                JoinAnswer {
                    entry: self.entry_view(entry),
                    created: false,
                },
                None,
            )),
            Joined::New(event) => {
                let durable = self.commit(&event, now);
                let Event::WaitlistJoined { entry, .. } = event else {
                    unreachable!("join_waitlist decides a join")
                };
                let entry = self
                    .map
                    .waitlist()
                    .entry(entry.seq)
                    .cloned()
                    .expect("a joined entry is on the list");
                Ok((
                    JoinAnswer {
                        entry: self.entry_view(entry),
                        created: true,
                    },
                    Some(durable),
                ))
            }
        }
    }

    async fn pay(
        &mut self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        queue_token: Option<QueueTokenId>,
        now: Timestamp,
    ) -> Result<(PaymentReceipt, Durable), EngineError> {
        let prepared = self
            .map
            .prepare_payment(user, reservation, now, idempotency, queue_token);
        let payment = self.unless_ended(prepared, reservation)?;
        // The queue token ends when the event commits (`Durability::append`): nothing here
        // waits on the queue.
        let (payment, durable) = self.settle(payment, now).await?;
        let Event::PaymentCompleted {
            amount,
            seats,
            at,
            balance_after: balance,
            ..
        } = payment
        else {
            unreachable!("prepare_payment decides a payment")
        };
        let receipt = PaymentReceipt {
            reservation,
            amount,
            balance,
            seats,
            paid_at: at,
        };
        Ok((receipt, durable))
    }
}

impl DateState {
    /// Has the ledger complete and log an event that moves money and seats, then applies it
    /// here. This actor handles no other message until it has applied it, so no one sees half
    /// of it here.
    async fn settle(
        &mut self,
        prepared: Event,
        now: Timestamp,
    ) -> Result<(Event, Durable), EngineError> {
        let (settled, durable) = self.deps.ledger.settle(prepared).await?;
        self.apply(&settled, now);
        // The ledger logged it.
        self.publish(now);
        Ok((settled, durable))
    }

    async fn refund(
        &mut self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        now: Timestamp,
    ) -> Result<(RefundReceipt, Durable), EngineError> {
        let prepared = self.map.prepare_refund(user, reservation, now, idempotency);
        let refund = self.unless_ended(prepared, reservation)?;
        let (refund, durable) = self.settle(refund, now).await?;
        let Event::RefundCompleted {
            payer,
            amount,
            fee,
            holder_balance,
            at,
            ..
        } = refund
        else {
            unreachable!("prepare_refund decides a refund")
        };
        let receipt = RefundReceipt {
            reservation,
            amount,
            fee,
            payer,
            balance: holder_balance,
            refunded_at: at,
        };
        Ok((receipt, durable))
    }

    fn transfer(
        &mut self,
        from: UserId,
        to: Option<UserId>,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        now: Timestamp,
    ) -> Result<(TransferReceipt, Durable), EngineError> {
        let prepared = self
            .map
            .prepare_transfer(from, to, reservation, now, idempotency);
        let event = self.unless_ended(prepared, reservation)?;
        let durable = self.commit(&event, now);
        let Event::TransferCompleted {
            transfer, to, at, ..
        } = event
        else {
            unreachable!("prepare_transfer decides a transfer")
        };
        let receipt = TransferReceipt {
            transfer,
            reservation,
            from,
            to,
            transferred_at: at,
        };
        Ok((receipt, durable))
    }

    async fn cancel_date(
        &mut self,
        now: Timestamp,
    ) -> Result<(CancellationReport, Durable), EngineError> {
        let started = std::time::Instant::now();
        let prepared = self.map.prepare_cancellation(now)?;
        let (cancelled, durable) = self.settle(prepared, now).await?;
        let Event::DateCancelled {
            date,
            refunds,
            cancelled_holds,
            ..
        } = &cancelled
        else {
            unreachable!("prepare_cancellation decides a cancellation")
        };
        let report = CancellationReport {
            date: *date,
            refunded_reservations: refunds.len(),
            refunded_amount: refunds.iter().map(|r| r.amount).sum(),
            cancelled_holds: cancelled_holds.len(),
            event_bytes: crate::store::encoded_len(&cancelled),
            busy: started.elapsed(),
        };
        Ok((report, durable))
    }
}

impl Actor for DateActor {
    type Msg = DateMsg;
    type State = DateState;
    type Arguments = DateState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: DateState,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.deps.clock.now();
        state.sweep(now);
        match msg {
            DateMsg::Hold {
                user,
                choice,
                idempotency,
                reply,
            } => {
                let outcome =
                    state
                        .place_hold(user, &choice, idempotency, now)
                        .map(|(event, placed)| {
                            let durable = state.deps.durability.append(&event);
                            state.publish(now);
                            #[cfg(debug_assertions)]
                            super::supervisor::injected_panic_on_seats(&placed.seats);
                            (placed, durable)
                        });
                let _ = reply.send(outcome);
            }
            DateMsg::HoldMany { holds, reply } => {
                let _ = reply.send(state.hold_many(holds, now));
            }
            DateMsg::Cancel {
                user,
                reservation,
                reply,
            } => {
                let decided = state.map.cancel_hold(user, reservation, now);
                let decided = state.unless_ended(decided, reservation);
                let outcome = decided.map(|event| {
                    let durable = state.commit(&event, now);
                    ((), state.with_offers(durable, now))
                });
                let _ = reply.send(outcome);
            }
            DateMsg::Pay {
                user,
                reservation,
                idempotency,
                queue_token,
                reply,
            } => {
                let paid = state
                    .pay(user, reservation, idempotency, queue_token, now)
                    .await;
                let _ = reply.send(paid);
            }
            DateMsg::Refund {
                user,
                reservation,
                idempotency,
                reply,
            } => {
                let refunded = state.refund(user, reservation, idempotency, now).await;
                let refunded =
                    refunded.map(|(receipt, durable)| (receipt, state.with_offers(durable, now)));
                let _ = reply.send(refunded);
            }
            DateMsg::Transfer {
                from,
                to,
                reservation,
                idempotency,
                reply,
            } => {
                let _ = reply.send(state.transfer(from, to, reservation, idempotency, now));
            }
            DateMsg::CancelDate { reply } => {
                let cancelled = state.cancel_date(now).await;
                if let Ok((report, _)) = &cancelled {
                    tracing::info!(
                        date = %report.date,
                        refunded = report.refunded_reservations,
                        cancelled_holds = report.cancelled_holds,
                        event_bytes = report.event_bytes,
                        busy_ms = report.busy.as_millis() as u64,
                        "date cancelled"
                    );
                }
                let _ = reply.send(cancelled);
            }
            DateMsg::JoinWaitlist {
                user,
                quantity,
                section,
                reply,
            } => {
                let _ = reply.send(state.join_waitlist(user, quantity, section.as_deref(), now));
            }
            DateMsg::LeaveWaitlist { user, entry, reply } => {
                let decided = match state.map.leave_waitlist(user, entry, now) {
                    Err(DomainError::NotFound) if state.map.has_left_waitlist(entry) => {
                        Err(EngineError::Ended)
                    }
                    decided => decided.map_err(EngineError::from),
                };
                let _ = reply.send(decided.map(|event| {
                    let durable = state.commit(&event, now);
                    ((), state.with_offers(durable, now))
                }));
            }
            DateMsg::Positions { entries, reply } => {
                let waitlist = state.map.waitlist();
                let _ = reply.send(entries.iter().map(|seq| waitlist.position(*seq)).collect());
            }
            DateMsg::IsOffer {
                user,
                reservation,
                reply,
            } => {
                let _ = reply.send(state.map.is_offer_to(user, reservation));
            }
            DateMsg::Get {
                user,
                reservation,
                reply,
            } => {
                let found = match user {
                    Some(user) => state.map.reservation_of(user, reservation).cloned(),
                    None => state.map.any_reservation(reservation).cloned(),
                };
                let _ = reply.send(state.unless_ended(found, reservation));
            }
            DateMsg::Sweep => {}
            DateMsg::State(reply) => {
                let _ = reply.send(state.map.clone());
            }
            DateMsg::Snapshot(done) => {
                // A clone (a few ms at 50,000 seats) is all the mailbox waits for; encoding and
                // writing happen on the blocking pool.
                snapshot_later(
                    &state.deps.durability.snapshots,
                    date_owner(state.map.date()),
                    state.map.clone(),
                    done,
                );
            }
        }
        // Seats this message let go of go to the waiting list now, not at the next message.
        let _ = state.make_offers(now);
        state.publish(now);
        Ok(())
    }
}

#[derive(Clone)]
pub struct DateHandle {
    actor: ActorRef<DateMsg>,
    view: Arc<SeatView>,
    log: EventLog,
    clock: SharedClock,
    /// The waiting room of the date's concert, whose tokens alone its seats accept.
    room: RoomId,
}

impl DateHandle {
    pub async fn spawn(map: SeatMap, room: RoomId, deps: DateDeps) -> anyhow::Result<Self> {
        let view = Arc::new(SeatView::new(&map, deps.clock.now()));
        deps.registry.held().adopt(map.held_reservations());
        spawn_batcher(&view, deps.clock.clone());
        deps.durability.snapshots.register(&date_owner(map.date()));
        let every_snapshot = deps.durability.snapshot_every;
        let (log, clock) = (deps.durability.log.clone(), deps.clock.clone());
        let owners = deps.durability.clone();
        let state = DateState {
            map,
            view: view.clone(),
            deps,
            unpublished: None,
        };
        let actor = owners.spawn_owner(DateActor, state).await?;
        every(actor.clone(), SWEEP_PERIOD, || DateMsg::Sweep);
        every(actor.clone(), every_snapshot, || DateMsg::Snapshot(None));
        Ok(Self {
            actor,
            view,
            log,
            clock,
            room,
        })
    }

    /// `queue_token_wrong_room` unless `token` is of this date's room.
    pub fn admits(&self, token: QueueTokenId) -> Result<(), DomainError> {
        self.room.admits(token)
    }

    /// The user's reservation that has ended, from the store. Its end was logged before the
    /// actor answered, so once the log has committed what it holds and the history has caught
    /// up with that, the store has the end.
    async fn ended(
        &self,
        user: Option<UserId>,
        reservation: ReservationId,
    ) -> Result<Reservation, EngineError> {
        self.log.flush().await;
        self.log.reader().caught_up().await;
        let stored = self
            .log
            .reader()
            .reservation(reservation)
            .map_err(|error| {
                tracing::error!(%error, "cannot read a reservation");
                EngineError::Unavailable
            })?;
        Ok(stored
            .filter(|r| user.is_none_or(|user| r.user == user))
            .ok_or(DomainError::NotFound)?)
    }

    /// A copy of the state, for tests that compare live state with replayed state.
    pub async fn state(&self) -> Result<SeatMap, EngineError> {
        ask(&self.actor, DateMsg::State).await
    }

    pub fn snapshot(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::snapshot_now(&self.actor, DateMsg::Snapshot)
    }

    pub fn date(&self) -> DateId {
        self.view.date()
    }

    pub fn view(&self) -> &SeatView {
        &self.view
    }

    /// Holds seats named by number (a `SeatList`) or chosen by best available.
    pub async fn hold(
        &self,
        user: UserId,
        choice: impl Into<SeatChoice>,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Reservation, EngineError> {
        let choice = choice.into();
        ask_durably(&self.actor, |reply| DateMsg::Hold {
            user,
            choice,
            idempotency,
            reply,
        })
        .await
    }

    /// Many holds in one message, decided in order as one `hold` each would be (a later one
    /// sees the earlier ones' seats taken), and answered together once all their events are
    /// committed: for a caller that has many holds at once (an import, a batch client, a
    /// benchmark), one mailbox trip and one log hand-over instead of one per hold.
    pub async fn hold_many(
        &self,
        holds: Vec<HoldRequest>,
    ) -> Result<Vec<Result<Reservation, EngineError>>, EngineError> {
        let (outcomes, durable) =
            ask(&self.actor, |reply| DateMsg::HoldMany { holds, reply }).await?;
        if let Some(durable) = durable {
            durable.wait().await;
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(EngineError::from))
            .collect())
    }

    pub async fn cancel(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<(), EngineError> {
        let cancelled = ask_durably(&self.actor, |reply| DateMsg::Cancel {
            user,
            reservation,
            reply,
        })
        .await;
        self.refused_if_ended(
            cancelled,
            user,
            reservation,
            Reservation::cancel_refusal_once_ended,
        )
        .await
    }

    /// Pays for a held reservation; the payment ends `queue_token`, the waiting-room token it
    /// was made with, as it commits.
    pub async fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        queue_token: Option<QueueTokenId>,
    ) -> Result<PaymentReceipt, EngineError> {
        let paid = ask_durably(&self.actor, |reply| DateMsg::Pay {
            user,
            reservation,
            idempotency,
            queue_token,
            reply,
        })
        .await;
        self.refused_if_ended(
            paid,
            user,
            reservation,
            Reservation::payment_refusal_once_ended,
        )
        .await
    }

    /// An actor's answer, unless it was `Ended`: then the refusal the reservation's history
    /// gives (another user's is not found).
    async fn refused_if_ended<T>(
        &self,
        answer: Result<T, EngineError>,
        user: UserId,
        reservation: ReservationId,
        refusal: fn(&Reservation, Timestamp) -> DomainError,
    ) -> Result<T, EngineError> {
        match answer {
            Err(EngineError::Ended) => {
                let ended = self.ended(Some(user), reservation).await?;
                Err(refusal(&ended, self.clock.now()).into())
            }
            answer => answer,
        }
    }

    /// The user's reservation (another user's is not found).
    pub async fn reservation(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Reservation, EngineError> {
        self.find(Some(user), reservation).await
    }

    /// The reservation whoever holds it now: for replaying a request whose record says its
    /// user made it, though they may have given it away since.
    pub async fn recorded_reservation(
        &self,
        reservation: ReservationId,
    ) -> Result<Reservation, EngineError> {
        self.find(None, reservation).await
    }

    async fn find(
        &self,
        user: Option<UserId>,
        reservation: ReservationId,
    ) -> Result<Reservation, EngineError> {
        let found = ask(&self.actor, |reply| DateMsg::Get {
            user,
            reservation,
            reply,
        })
        .await?;
        match found {
            Err(EngineError::Ended) => self.ended(user, reservation).await,
            found => found,
        }
    }

    /// Refunds a paid reservation `user` holds: its seats return, its payer is credited.
    pub async fn refund(
        &self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<RefundReceipt, EngineError> {
        let refunded = ask_durably(&self.actor, |reply| DateMsg::Refund {
            user,
            reservation,
            idempotency,
            reply,
        })
        .await;
        self.refused_if_ended(refunded, user, reservation, |_, _| {
            DomainError::ReservationNotPaid
        })
        .await
    }

    /// Gives a paid reservation `from` holds to `to` (`None`: no such user).
    pub async fn transfer(
        &self,
        from: UserId,
        to: Option<UserId>,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<TransferReceipt, EngineError> {
        let transferred = ask_durably(&self.actor, |reply| DateMsg::Transfer {
            from,
            to,
            reservation,
            idempotency,
            reply,
        })
        .await;
        self.refused_if_ended(transferred, from, reservation, |_, _| {
            DomainError::ReservationNotPaid
        })
        .await
    }

    /// Puts `user` on the date's waiting list (or answers their entry already on it).
    pub async fn join_waitlist(
        &self,
        user: UserId,
        quantity: u32,
        section: Option<String>,
    ) -> Result<JoinAnswer, EngineError> {
        let (answer, durable) = ask(&self.actor, |reply| DateMsg::JoinWaitlist {
            user,
            quantity,
            section,
            reply,
        })
        .await??;
        if let Some(durable) = durable {
            durable.wait().await;
        }
        Ok(answer)
    }

    /// Takes `user`'s entry off the list (an offer's hold is cancelled with it). An entry that
    /// is no longer on the list is left as it is.
    pub async fn leave_waitlist(&self, user: UserId, entry: EntryId) -> Result<(), EngineError> {
        let left = ask_durably(&self.actor, |reply| DateMsg::LeaveWaitlist {
            user,
            entry,
            reply,
        })
        .await;
        match left {
            Err(EngineError::Ended) => {
                self.log.flush().await;
                self.log.reader().caught_up().await;
                let stored = self.log.reader().waitlist_entry(entry).map_err(|error| {
                    tracing::error!(%error, "cannot read a waiting-list entry");
                    EngineError::Unavailable
                })?;
                match stored {
                    Some(stored) if stored.user == user => Ok(()),
                    _ => Err(DomainError::NotFound.into()),
                }
            }
            left => left,
        }
    }

    /// Where these entries of the list stand now (1 for the first waiting; 0 if not waiting).
    pub async fn positions(&self, entries: Vec<u32>) -> Result<Vec<u32>, EngineError> {
        ask(&self.actor, |reply| DateMsg::Positions { entries, reply }).await
    }

    /// Whether `reservation` is a live hold offered to `user` from the waiting list.
    pub async fn is_offer(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<bool, EngineError> {
        ask(&self.actor, |reply| DateMsg::IsOffer {
            user,
            reservation,
            reply,
        })
        .await
    }

    /// Calls the date off: one event refunds every paid reservation and cancels every hold.
    pub async fn cancel_date(&self) -> Result<CancellationReport, EngineError> {
        ask_durably(&self.actor, |reply| DateMsg::CancelDate { reply }).await
    }

    pub async fn stop(&self) {
        super::stop_draining(&self.actor).await;
    }
}
