//! Owner of concerts and dates. Creating a date starts its `DateActor`. Listings read the
//! shared view; `available_seats` comes from each date's `SeatView`.

use std::sync::Arc;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::date::{DateArgs, DateHandle};
use super::{ask, DateRegistry, EngineError, EventSink, LedgerHandle, QueueHandle};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::catalog::{Catalog, Concert, DateInfo};
use crate::domain::seat_map::{HoldPolicy, SeatMap};
use crate::domain::{ConcertId, DateId, DomainError, Event, Timestamp};

pub enum CatalogMsg {
    CreateConcert {
        title: String,
        venue: String,
        reply: RpcReplyPort<Result<ConcertId, DomainError>>,
    },
    CreateDate {
        concert: ConcertId,
        starts_at: Timestamp,
        seat_count: i128,
        price: i128,
        reply: RpcReplyPort<Result<DateId, EngineError>>,
    },
}

pub struct CatalogActor;

pub struct CatalogState {
    catalog: Arc<RwLock<Catalog>>,
    hold_policy: HoldPolicy,
    clock: SharedClock,
    events: EventSink,
    ledger: LedgerHandle,
    queue: QueueHandle,
    registry: Arc<DateRegistry>,
}

impl CatalogState {
    fn commit(&self, event: &Event) {
        self.catalog.write().apply(event);
        self.events.record(event);
    }

    async fn create_date(
        &self,
        concert: ConcertId,
        starts_at: Timestamp,
        seat_count: i128,
        price: i128,
    ) -> Result<DateId, EngineError> {
        let event = self
            .catalog
            .read()
            .create_date(concert, starts_at, seat_count, price)?;
        let Event::DateCreated {
            date,
            seat_count,
            price,
            ..
        } = event
        else {
            unreachable!("create_date decides a date")
        };
        let handle = DateHandle::spawn(DateArgs {
            map: SeatMap::new(date, seat_count, price, self.hold_policy),
            clock: self.clock.clone(),
            events: self.events.clone(),
            ledger: self.ledger.clone(),
            queue: self.queue.clone(),
            registry: self.registry.clone(),
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "could not start a date actor");
            EngineError::Unavailable
        })?;
        self.registry.insert(handle);
        self.commit(&event);
        Ok(date)
    }
}

impl Actor for CatalogActor {
    type Msg = CatalogMsg;
    type State = CatalogState;
    type Arguments = CatalogState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: CatalogState,
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
            CatalogMsg::CreateConcert {
                title,
                venue,
                reply,
            } => {
                let decided = state.catalog.read().create_concert(&title, &venue);
                let outcome = decided.map(|event| {
                    state.commit(&event);
                    match event {
                        Event::ConcertCreated { concert, .. } => concert,
                        _ => unreachable!("create_concert decides a concert"),
                    }
                });
                let _ = reply.send(outcome);
            }
            CatalogMsg::CreateDate {
                concert,
                starts_at,
                seat_count,
                price,
                reply,
            } => {
                let outcome = state
                    .create_date(concert, starts_at, seat_count, price)
                    .await;
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct CatalogHandle {
    actor: ActorRef<CatalogMsg>,
    view: Arc<RwLock<Catalog>>,
}

impl CatalogHandle {
    pub async fn spawn(
        settings: &Settings,
        clock: SharedClock,
        events: EventSink,
        ledger: LedgerHandle,
        queue: QueueHandle,
        registry: Arc<DateRegistry>,
    ) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(Catalog::default()));
        let state = CatalogState {
            catalog: view.clone(),
            hold_policy: HoldPolicy {
                ttl_ms: (settings.holds.ttl_seconds as i64).saturating_mul(1000),
                max_seats_per_user: settings.holds.max_seats_per_user,
            },
            clock,
            events,
            ledger,
            queue,
            registry,
        };
        let (actor, _) = Actor::spawn(None, CatalogActor, state).await?;
        Ok(Self { actor, view })
    }

    pub async fn create_concert(
        &self,
        title: String,
        venue: String,
    ) -> Result<ConcertId, EngineError> {
        Ok(ask(&self.actor, |reply| CatalogMsg::CreateConcert {
            title,
            venue,
            reply,
        })
        .await??)
    }

    pub async fn create_date(
        &self,
        concert: ConcertId,
        starts_at: Timestamp,
        seat_count: i128,
        price: i128,
    ) -> Result<DateId, EngineError> {
        ask(&self.actor, |reply| CatalogMsg::CreateDate {
            concert,
            starts_at,
            seat_count,
            price,
            reply,
        })
        .await?
    }

    pub fn concerts(&self) -> Vec<Concert> {
        self.view.read().concerts().to_vec()
    }

    pub fn concert_dates(&self, concert: ConcertId) -> Option<Vec<DateInfo>> {
        let catalog = self.view.read();
        let found = catalog.concert(concert)?;
        Some(
            found
                .dates
                .iter()
                .filter_map(|d| catalog.date(*d).copied())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.view.read().concerts().is_empty()
    }

    pub async fn stop(&self) {
        let _ = self.actor.drain_and_wait(Some(super::CALL_TIMEOUT)).await;
    }
}
