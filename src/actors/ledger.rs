//! Owner of balances (their history is read from the store, not from here). It also settles
//! the money side of a payment (and of a refund or a date's cancellation, alike): the date actor prepares the payment event, the ledger checks the
//! balance, applies it and logs it, and only then does the date actor mark the seats sold. The
//! date actor handles nothing else in between, so seats and money never disagree in memory, and
//! the log holds the payment as ONE event.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask, ask_durably, every, snapshot_later, Decided, Durability, EngineError};
use crate::clock::SharedClock;
use crate::domain::ledger::{Ledger, LedgerEntry};
use crate::domain::page::{Page, PageRequest};
use crate::domain::{ChargeId, DomainError, Event, IdempotencyStamp, Timestamp, UserId};
use crate::store::reader::StoreReader;
use crate::store::recovery::LEDGER_OWNER;
use crate::store::Durable;

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
        reply: RpcReplyPort<Decided<ChargeReceipt, DomainError>>,
    },
    /// Sent only by date actors, with an event their seat map prepared (a payment, a refund, a
    /// cancellation); answers the settled event at once (in memory) and the ticket that
    /// resolves when it is durable.
    Settle {
        prepared: Event,
        reply: RpcReplyPort<Decided<Event, DomainError>>,
    },
    Balance {
        user: UserId,
        reply: RpcReplyPort<u64>,
    },
    State(RpcReplyPort<Ledger>),
    Snapshot(Option<RpcReplyPort<()>>),
}

pub struct LedgerActor;

pub struct LedgerState {
    ledger: Ledger,
    durability: Durability,
    clock: SharedClock,
}

impl LedgerState {
    fn commit(&mut self, event: &Event) -> Durable {
        let moved_money = self.ledger.apply(event);
        debug_assert!(moved_money, "the ledger logs only money events");
        self.durability.append(event)
    }
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
                let decided = state.ledger.charge(user, amount, now, idempotency);
                let outcome = decided.map(|event| {
                    let durable = state.commit(&event);
                    let Event::BalanceCharged {
                        charge,
                        amount,
                        balance_after,
                        at,
                        ..
                    } = event
                    else {
                        unreachable!("charge decides a charge")
                    };
                    let receipt = ChargeReceipt {
                        charge,
                        amount,
                        balance: balance_after,
                        at,
                    };
                    (receipt, durable)
                });
                let _ = reply.send(outcome);
            }
            LedgerMsg::Settle { prepared, reply } => {
                let outcome = state.ledger.settle(&prepared).map(|settled| {
                    let durable = state.commit(&settled);
                    (settled, durable)
                });
                let _ = reply.send(outcome);
            }
            LedgerMsg::Balance { user, reply } => {
                let _ = reply.send(state.ledger.balance(user));
            }
            LedgerMsg::State(reply) => {
                let _ = reply.send(state.ledger.clone());
            }
            LedgerMsg::Snapshot(done) => {
                snapshot_later(
                    &state.durability.snapshots,
                    LEDGER_OWNER.to_owned(),
                    state.ledger.clone(),
                    done,
                );
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct LedgerHandle {
    actor: ActorRef<LedgerMsg>,
    history: Arc<StoreReader>,
}

impl LedgerHandle {
    pub async fn spawn(
        clock: SharedClock,
        durability: Durability,
        recovered: Ledger,
    ) -> anyhow::Result<Self> {
        let every_snapshot = durability.snapshot_every;
        let history = durability.log.reader().clone();
        let owners = durability.clone();
        let state = LedgerState {
            ledger: recovered,
            durability,
            clock,
        };
        let actor = owners.spawn_owner(LedgerActor, state).await?;
        every(actor.clone(), every_snapshot, || LedgerMsg::Snapshot(None));
        Ok(Self { actor, history })
    }

    pub async fn charge(
        &self,
        user: UserId,
        amount: i128,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<ChargeReceipt, EngineError> {
        ask_durably(&self.actor, |reply| LedgerMsg::Charge {
            user,
            amount,
            idempotency,
            reply,
        })
        .await
    }

    pub(crate) async fn settle(&self, prepared: Event) -> Result<(Event, Durable), EngineError> {
        Ok(ask(&self.actor, |reply| LedgerMsg::Settle { prepared, reply }).await??)
    }

    pub async fn balance(&self, user: UserId) -> Result<u64, EngineError> {
        ask(&self.actor, |reply| LedgerMsg::Balance { user, reply }).await
    }

    /// A page of the user's balance history, newest first, with every change acknowledged so
    /// far. Read from the store on the blocking pool.
    pub async fn history(
        &self,
        user: UserId,
        request: PageRequest,
    ) -> Result<Page<LedgerEntry>, EngineError> {
        super::read_history(&self.history, move |store| {
            store.ledger_page(user, &request)
        })
        .await
    }

    /// A copy of the state, for tests that compare live state with replayed state.
    pub async fn state(&self) -> Result<Ledger, EngineError> {
        ask(&self.actor, LedgerMsg::State).await
    }

    pub fn snapshot(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::snapshot_now(&self.actor, LedgerMsg::Snapshot)
    }

    pub async fn stop(&self) {
        super::stop_draining(&self.actor).await;
    }
}
