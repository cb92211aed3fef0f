//! One actor per concert date: it owns that date's `SeatMap` and serializes its holds and
//! payments. Seat listings read `SeatView`, a row of atomics the actor updates before replying,
//! so a buyer reads their own writes at once without entering the mailbox.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask, every, DateRegistry, EngineError, EventSink, LedgerHandle, QueueHandle};
use crate::clock::SharedClock;
use crate::domain::seat_map::{Reservation, SeatMap, SeatStatus};
use crate::domain::{
    DateId, DomainError, Event, IdempotencyStamp, ReservationId, SeatNo, Timestamp, UserId,
};

/// Expired holds become events at least this often, so counts lag by well under a second.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

const SEAT_FREE: i64 = i64::MIN;
const SEAT_SOLD: i64 = i64::MAX;

/// Per seat: `SEAT_FREE`, `SEAT_SOLD`, or the instant its hold expires. A hold past that instant
/// reads as available, exactly as the seat map decides.
pub struct SeatView {
    date: DateId,
    price: u64,
    seats: Box<[AtomicI64]>,
    held: AtomicU32,
    sold: AtomicU32,
}

impl SeatView {
    fn new(map: &SeatMap) -> Self {
        Self {
            date: map.date(),
            price: map.seat_price(),
            seats: (0..map.seat_count())
                .map(|_| AtomicI64::new(SEAT_FREE))
                .collect(),
            held: AtomicU32::new(0),
            sold: AtomicU32::new(0),
        }
    }

    pub fn date(&self) -> DateId {
        self.date
    }
    pub fn seat_price(&self) -> u64 {
        self.price
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
    pub fn available_seats(&self) -> u32 {
        self.seat_count()
            .saturating_sub(self.held_seats() + self.sold_seats())
    }

    /// Every seat's status at `now`, in seat order.
    pub fn statuses(&self, now: Timestamp) -> impl Iterator<Item = (SeatNo, SeatStatus)> + '_ {
        self.seats.iter().enumerate().map(move |(i, cell)| {
            let code = cell.load(Ordering::Acquire);
            let status = match code {
                SEAT_SOLD => SeatStatus::Sold,
                until if until > now.as_millis() => SeatStatus::Held {
                    until: Timestamp(until),
                },
                _ => SeatStatus::Available,
            };
            (SeatNo(i as u32 + 1), status)
        })
    }

    fn publish(&self, map: &SeatMap, changed: &[SeatNo], now: Timestamp) {
        for seat in changed {
            let code = match map.seat_status(*seat, now) {
                Some(SeatStatus::Sold) => SEAT_SOLD,
                Some(SeatStatus::Held { until }) => until.as_millis(),
                Some(SeatStatus::Available) | None => SEAT_FREE,
            };
            self.seats[seat.index()].store(code, Ordering::Release);
        }
        self.held.store(map.held_seats(), Ordering::Relaxed);
        self.sold.store(map.sold_seats(), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub reservation: ReservationId,
    pub amount: u64,
    pub balance: u64,
    pub seats: Vec<SeatNo>,
    pub paid_at: Timestamp,
}

pub enum DateMsg {
    Hold {
        user: UserId,
        seats: Vec<SeatNo>,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Result<Reservation, DomainError>>,
    },
    Cancel {
        user: UserId,
        reservation: ReservationId,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    Pay {
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Result<PaymentReceipt, EngineError>>,
    },
    Get {
        user: UserId,
        reservation: ReservationId,
        reply: RpcReplyPort<Result<Reservation, DomainError>>,
    },
    ListMine {
        user: UserId,
        reply: RpcReplyPort<Vec<Reservation>>,
    },
    Sweep,
}

pub struct DateActor;

pub struct DateArgs {
    pub map: SeatMap,
    pub clock: SharedClock,
    pub events: EventSink,
    pub ledger: LedgerHandle,
    pub queue: QueueHandle,
    pub registry: Arc<DateRegistry>,
}

pub struct DateState {
    map: SeatMap,
    view: Arc<SeatView>,
    clock: SharedClock,
    events: EventSink,
    ledger: LedgerHandle,
    queue: QueueHandle,
    registry: Arc<DateRegistry>,
}

impl DateState {
    /// Applies an event this actor decided, publishes the seats it touched, and records it.
    fn commit(&mut self, event: &Event, now: Timestamp) {
        let changed = self.map.apply(event);
        self.view.publish(&self.map, &changed, now);
        self.events.record(event);
    }

    /// Turns holds that expired by time into events before anything else is decided.
    fn sweep(&mut self, now: Timestamp) {
        for event in self.map.expire_due(now) {
            self.commit(&event, now);
        }
    }

    async fn pay(
        &mut self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
        now: Timestamp,
    ) -> Result<PaymentReceipt, EngineError> {
        let payment = self
            .map
            .prepare_payment(user, reservation, now, idempotency)?;
        // The ledger records the event; this actor handles no other message until it has
        // applied the same event to its seats, so no one sees half a payment here.
        let balance = self.ledger.settle_payment(payment.clone()).await?;
        let changed = self.map.apply(&payment);
        self.view.publish(&self.map, &changed, now);
        if self.queue.complete(user).await.is_err() {
            tracing::warn!(%user, "queue did not confirm the payer's token ended; it will expire by TTL");
        }
        let Event::PaymentCompleted {
            amount, seats, at, ..
        } = payment
        else {
            unreachable!("prepare_payment decides a payment")
        };
        Ok(PaymentReceipt {
            reservation,
            amount,
            balance,
            seats,
            paid_at: at,
        })
    }
}

impl Actor for DateActor {
    type Msg = DateMsg;
    type State = DateState;
    type Arguments = (DateArgs, Arc<SeatView>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (args, view): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DateState {
            map: args.map,
            view,
            clock: args.clock,
            events: args.events,
            ledger: args.ledger,
            queue: args.queue,
            registry: args.registry,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.clock.now();
        state.sweep(now);
        match msg {
            DateMsg::Hold {
                user,
                seats,
                idempotency,
                reply,
            } => {
                let outcome = state
                    .map
                    .place_hold(user, &seats, now, idempotency)
                    .map(|event| {
                        state.commit(&event, now);
                        let Event::HoldPlaced { reservation, .. } = event else {
                            unreachable!("place_hold decides a hold")
                        };
                        state.registry.note_reservation(user, reservation);
                        state
                            .map
                            .reservation_of(user, reservation)
                            .expect("just placed")
                            .clone()
                    });
                let _ = reply.send(outcome);
            }
            DateMsg::Cancel {
                user,
                reservation,
                reply,
            } => {
                let outcome = state
                    .map
                    .cancel_hold(user, reservation, now)
                    .map(|event| state.commit(&event, now));
                let _ = reply.send(outcome);
            }
            DateMsg::Pay {
                user,
                reservation,
                idempotency,
                reply,
            } => {
                let outcome = state.pay(user, reservation, idempotency, now).await;
                let _ = reply.send(outcome);
            }
            DateMsg::Get {
                user,
                reservation,
                reply,
            } => {
                let _ = reply.send(state.map.reservation_of(user, reservation).cloned());
            }
            DateMsg::ListMine { user, reply } => {
                let _ = reply.send(state.map.reservations_of(user).cloned().collect());
            }
            DateMsg::Sweep => {}
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct DateHandle {
    actor: ActorRef<DateMsg>,
    view: Arc<SeatView>,
}

impl DateHandle {
    pub async fn spawn(args: DateArgs) -> anyhow::Result<Self> {
        let view = Arc::new(SeatView::new(&args.map));
        let (actor, _) = Actor::spawn(None, DateActor, (args, view.clone())).await?;
        every(actor.clone(), SWEEP_PERIOD, || DateMsg::Sweep);
        Ok(Self { actor, view })
    }

    pub fn date(&self) -> DateId {
        self.view.date()
    }

    pub fn view(&self) -> &SeatView {
        &self.view
    }

    pub async fn hold(
        &self,
        user: UserId,
        seats: Vec<SeatNo>,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Reservation, EngineError> {
        Ok(ask(&self.actor, |reply| DateMsg::Hold {
            user,
            seats,
            idempotency,
            reply,
        })
        .await??)
    }

    pub async fn cancel(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<(), EngineError> {
        Ok(ask(&self.actor, |reply| DateMsg::Cancel {
            user,
            reservation,
            reply,
        })
        .await??)
    }

    pub async fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<PaymentReceipt, EngineError> {
        ask(&self.actor, |reply| DateMsg::Pay {
            user,
            reservation,
            idempotency,
            reply,
        })
        .await?
    }

    pub async fn reservation(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Reservation, EngineError> {
        Ok(ask(&self.actor, |reply| DateMsg::Get {
            user,
            reservation,
            reply,
        })
        .await??)
    }

    pub async fn reservations_of(&self, user: UserId) -> Result<Vec<Reservation>, EngineError> {
        ask(&self.actor, |reply| DateMsg::ListMine { user, reply }).await
    }

    pub async fn stop(&self) {
        let _ = self.actor.drain_and_wait(Some(super::CALL_TIMEOUT)).await;
    }
}
