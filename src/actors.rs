//! Actors own the state; nothing else writes it. Each piece of state has exactly one owner, so
//! there are no locks around seats or balances: a hot seat is a queue of messages, not a lock
//! convoy. Reads that must not wait behind a mailbox (sessions, queue tokens, seat listings) are
//! served from views the owner updates before it replies, so they stay exact.

pub mod accounts;
pub mod catalog;
pub mod date;
pub mod events;
pub mod ledger;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{DateId, DomainError, ReservationId, UserId};

pub use accounts::AccountsHandle;
pub use catalog::CatalogHandle;
pub use date::DateHandle;
pub use events::EventSink;
pub use ledger::LedgerHandle;
pub use queue::QueueHandle;

/// Every `call` gives up after this: an owner that does only memory work and has not answered
/// by then is wedged, and the client gets 503 instead of a hung connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the engine is not answering (stopping or overloaded)")]
    Unavailable,
}

/// Sends a message built around a reply port and waits for the answer, at most `CALL_TIMEOUT`.
pub(crate) async fn ask<M, T>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, EngineError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => {
            tracing::error!(actor = ?actor.get_id(), "actor call timed out");
            Err(EngineError::Unavailable)
        }
        Ok(CallResult::SenderError) | Err(_) => Err(EngineError::Unavailable),
    }
}

/// Where every date actor is found, and each user's reservations in the order they were made
/// (across dates, where timestamps alone may tie).
#[derive(Default)]
pub struct DateRegistry {
    dates: DashMap<DateId, DateHandle>,
    user_reservations: DashMap<UserId, Vec<ReservationId>>,
}

impl DateRegistry {
    pub fn get(&self, date: DateId) -> Option<DateHandle> {
        self.dates.get(&date).map(|d| d.clone())
    }

    pub fn insert(&self, handle: DateHandle) {
        self.dates.insert(handle.date(), handle);
    }

    pub fn all(&self) -> Vec<DateHandle> {
        self.dates.iter().map(|d| d.clone()).collect()
    }

    pub(crate) fn note_reservation(&self, user: UserId, reservation: ReservationId) {
        self.user_reservations
            .entry(user)
            .or_default()
            .push(reservation);
    }

    /// The user's reservations, oldest first.
    pub fn reservations_of(&self, user: UserId) -> Vec<ReservationId> {
        self.user_reservations
            .get(&user)
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// The running engine: handles to every owner.
#[derive(Clone)]
pub struct Engine {
    pub accounts: AccountsHandle,
    pub catalog: CatalogHandle,
    pub ledger: LedgerHandle,
    pub queue: QueueHandle,
    pub dates: Arc<DateRegistry>,
    pub events: EventSink,
    pub clock: SharedClock,
}

impl Engine {
    pub async fn start(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let events = EventSink::default();
        let dates = Arc::new(DateRegistry::default());
        let accounts = AccountsHandle::spawn(settings, clock.clone(), events.clone()).await?;
        let ledger = LedgerHandle::spawn(settings, clock.clone(), events.clone()).await?;
        let queue = QueueHandle::spawn(settings, clock.clone()).await?;
        let catalog = CatalogHandle::spawn(
            settings,
            clock.clone(),
            events.clone(),
            ledger.clone(),
            queue.clone(),
            dates.clone(),
        )
        .await?;
        Ok(Self {
            accounts,
            catalog,
            ledger,
            queue,
            dates,
            events,
            clock,
        })
    }

    /// Stops every actor after it has drained the messages already in its mailbox.
    pub async fn stop(&self) {
        for date in self.dates.all() {
            date.stop().await;
        }
        self.catalog.stop().await;
        self.queue.stop().await;
        self.ledger.stop().await;
        self.accounts.stop().await;
    }
}

/// Sends `make()` to `actor` every `period` until the actor is gone.
pub(crate) fn every<M: ractor::Message>(
    actor: ActorRef<M>,
    period: Duration,
    make: impl Fn() -> M + Send + 'static,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if actor.send_message(make()).is_err() {
                break;
            }
        }
    });
}
