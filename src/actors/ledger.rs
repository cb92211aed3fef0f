//! Owner of balances. It also settles the money side of a payment: the date actor prepares the
//! payment event, the ledger checks the balance, applies it and records it, and only then does
//! the date actor mark the seats sold. The date actor handles nothing else in between, so seats
//! and money never disagree in memory, and the log holds the payment as ONE event.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask, EngineError, EventSink};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::ledger::{BalancePolicy, Ledger, LedgerEntry};
use crate::domain::{ChargeId, DomainError, Event, IdempotencyStamp, Timestamp, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeReceipt {
    pub charge: ChargeId,
    pub amount: u64,
    pub balance: u64,
    pub at: Timestamp,
}

pub enum LedgerMsg {
    Charge {
        user: UserId,
        amount: i128,
        idempotency: Option<IdempotencyStamp>,
        reply: RpcReplyPort<Result<ChargeReceipt, DomainError>>,
    },
    /// Sent only by date actors, with an event their seat map prepared.
    SettlePayment {
        payment: Event,
        reply: RpcReplyPort<Result<u64, DomainError>>,
    },
    Balance {
        user: UserId,
        reply: RpcReplyPort<u64>,
    },
    History {
        user: UserId,
        reply: RpcReplyPort<Vec<LedgerEntry>>,
    },
}

pub struct LedgerActor;

pub struct LedgerState {
    ledger: Ledger,
    events: EventSink,
    clock: SharedClock,
}

impl Actor for LedgerActor {
    type Msg = LedgerMsg;
    type State = LedgerState;
    type Arguments = LedgerState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: LedgerState,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerMsg::Charge {
                user,
                amount,
                idempotency,
                reply,
            } => {
                let now = state.clock.now();
                let outcome = state
                    .ledger
                    .charge(user, amount, now, idempotency)
                    .map(|event| {
                        let balance = state.ledger.apply(&event).expect("a charge moves money");
                        state.events.record(&event);
                        match event {
                            Event::BalanceCharged {
                                charge, amount, at, ..
                            } => ChargeReceipt {
                                charge,
                                amount,
                                balance,
                                at,
                            },
                            _ => unreachable!("charge decides a charge"),
                        }
                    });
                let _ = reply.send(outcome);
            }
            LedgerMsg::SettlePayment { payment, reply } => {
                let outcome = state.ledger.check_payment(&payment).map(|()| {
                    let balance = state.ledger.apply(&payment).expect("a payment moves money");
                    state.events.record(&payment);
                    balance
                });
                let _ = reply.send(outcome);
            }
            LedgerMsg::Balance { user, reply } => {
                let _ = reply.send(state.ledger.balance(user));
            }
            LedgerMsg::History { user, reply } => {
                let history = state
                    .ledger
                    .account(user)
                    .map(|a| a.history.iter().rev().cloned().collect())
                    .unwrap_or_default();
                let _ = reply.send(history);
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct LedgerHandle {
    actor: ActorRef<LedgerMsg>,
}

impl LedgerHandle {
    pub async fn spawn(
        settings: &Settings,
        clock: SharedClock,
        events: EventSink,
    ) -> anyhow::Result<Self> {
        let state = LedgerState {
            ledger: Ledger::new(BalancePolicy {
                max_charge: settings.balance.max_charge,
                max_balance: settings.balance.max_balance,
            }),
            events,
            clock,
        };
        let (actor, _) = Actor::spawn(None, LedgerActor, state).await?;
        Ok(Self { actor })
    }

    pub async fn charge(
        &self,
        user: UserId,
        amount: i128,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<ChargeReceipt, EngineError> {
        Ok(ask(&self.actor, |reply| LedgerMsg::Charge {
            user,
            amount,
            idempotency,
            reply,
        })
        .await??)
    }

    pub(crate) async fn settle_payment(&self, payment: Event) -> Result<u64, EngineError> {
        Ok(ask(&self.actor, |reply| LedgerMsg::SettlePayment {
            payment,
            reply,
        })
        .await??)
    }

    pub async fn balance(&self, user: UserId) -> Result<u64, EngineError> {
        ask(&self.actor, |reply| LedgerMsg::Balance { user, reply }).await
    }

    /// Newest first.
    pub async fn history(&self, user: UserId) -> Result<Vec<LedgerEntry>, EngineError> {
        ask(&self.actor, |reply| LedgerMsg::History { user, reply }).await
    }

    pub async fn stop(&self) {
        let _ = self.actor.drain_and_wait(Some(super::CALL_TIMEOUT)).await;
    }
}
