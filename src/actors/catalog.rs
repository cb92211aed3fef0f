//! Owner of concerts and dates. Creating a date starts its `DateActor`. Listings read the
//! shared view; `available_seats` comes from each date's `SeatView`.

use std::sync::Arc;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::date::{DateDeps, DateHandle};
use super::{
    ask_durably, every, snapshot_later, DateRegistry, Decided, Durability, EngineError,
    LedgerHandle,
};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::admission::RoomId;
use crate::domain::catalog::{Catalog, Concert, DateInfo, SaleTerms, SeatPlan};
use crate::domain::rooms::RoomSpec;
use crate::domain::seat_map::{DatePolicy, SeatMap};
use crate::domain::{ConcertId, DateId, DomainError, Event, Timestamp};
use crate::policies::date_policy;
use crate::security::random_opening_seed;
use crate::store::recovery::CATALOG_OWNER;
use crate::store::Durable;

pub enum CatalogMsg {
    CreateConcert {
        title: String,
        venue: String,
        terms: SaleTerms,
        reply: RpcReplyPort<Decided<ConcertId, DomainError>>,
    },
    CreateDate {
        concert: ConcertId,
        starts_at: Timestamp,
        seats: SeatPlan,
        reply: RpcReplyPort<Decided<DateId, EngineError>>,
    },
    Snapshot(Option<RpcReplyPort<()>>),
}

pub struct CatalogActor;

pub struct CatalogState {
    catalog: Arc<RwLock<Catalog>>,
    date_policy: DatePolicy,
    dates: DateDeps,
}

impl CatalogState {
    fn commit(&self, event: &Event) -> Durable {
        self.catalog.write().apply(event);
        self.dates.durability.append(event)
    }

    async fn create_date(
        &self,
        concert: ConcertId,
        starts_at: Timestamp,
        seats: SeatPlan,
    ) -> Result<(DateId, Durable), EngineError> {
        let event = self.catalog.read().create_date(concert, starts_at, seats)?;
        let Event::DateCreated {
            date,
            layout,
            max_tickets_per_user,
            ..
        } = &event
        else {
            unreachable!("create_date decides a date")
        };
        let date = *date;
        let map = SeatMap::new(date, starts_at, layout.clone(), self.date_policy)
            .sold_as(*max_tickets_per_user);
        let room = self.catalog.read().concert(concert).map(Concert::room_id);
        let room = room.ok_or(DomainError::NotFound)?;
        let handle = DateHandle::spawn(map, room, self.dates.clone())
            .await
            .map_err(|error| {
                tracing::error!(%error, "could not start a date actor");
                EngineError::Unavailable
            })?;
        let durable = self.commit(&event);
        self.dates.registry.insert(handle);
        Ok((date, durable))
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
                terms,
                reply,
            } => {
                let decided = state.catalog.read().create_concert_with(
                    &title,
                    &venue,
                    terms,
                    random_opening_seed(),
                );
                let outcome = decided.map(|event| {
                    let durable = state.commit(&event);
                    match event {
                        Event::ConcertCreated { concert, .. } => (concert, durable),
                        _ => unreachable!("create_concert decides a concert"),
                    }
                });
                let _ = reply.send(outcome);
            }
            CatalogMsg::CreateDate {
                concert,
                starts_at,
                seats,
                reply,
            } => {
                let outcome = state.create_date(concert, starts_at, seats).await;
                let _ = reply.send(outcome);
            }
            CatalogMsg::Snapshot(done) => {
                let copy = state.catalog.read().clone();
                snapshot_later(
                    &state.dates.durability.snapshots,
                    CATALOG_OWNER.to_owned(),
                    copy,
                    done,
                );
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct CatalogHandle {
    actor: ActorRef<CatalogMsg>,
    view: Arc<RwLock<Catalog>>,
    dates: DateDeps,
}

impl CatalogHandle {
    pub async fn spawn(
        settings: &Settings,
        clock: SharedClock,
        durability: Durability,
        ledger: LedgerHandle,
        registry: Arc<DateRegistry>,
        recovered: Catalog,
    ) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(recovered));
        let every_snapshot = durability.snapshot_every;
        let owners = durability.clone();
        let dates = DateDeps {
            clock,
            durability,
            ledger,
            registry,
        };
        let state = CatalogState {
            catalog: view.clone(),
            date_policy: date_policy(settings),
            dates: dates.clone(),
        };
        let actor = owners.spawn_owner(CatalogActor, state).await?;
        every(actor.clone(), every_snapshot, || CatalogMsg::Snapshot(None));
        Ok(Self { actor, view, dates })
    }

    /// Starts the actor of a date recovered from disk.
    pub async fn start_date(&self, date: DateId, map: SeatMap) -> anyhow::Result<()> {
        anyhow::ensure!(map.date() == date, "recovered seat map belongs to its date");
        let room = self.view.read().date(date).map(|info| info.room);
        let room = room.ok_or_else(|| anyhow::anyhow!("a recovered date is in the catalogue"))?;
        let handle = DateHandle::spawn(map, room, self.dates.clone()).await?;
        self.dates.registry.insert(handle);
        Ok(())
    }

    pub async fn create_concert(
        &self,
        title: String,
        venue: String,
        terms: SaleTerms,
    ) -> Result<ConcertId, EngineError> {
        ask_durably(&self.actor, |reply| CatalogMsg::CreateConcert {
            title,
            venue,
            terms,
            reply,
        })
        .await
    }

    /// Every concert's own room, for the rooms' owner as it starts.
    pub fn rooms(&self) -> Vec<(ConcertId, RoomSpec)> {
        self.view.read().rooms().collect()
    }

    /// The room whose token `POST /queue/tokens` with `concert` gives.
    pub fn room_for_tokens(&self, concert: ConcertId) -> Result<RoomId, DomainError> {
        self.view.read().room_for_tokens(concert)
    }

    pub async fn create_date(
        &self,
        concert: ConcertId,
        starts_at: Timestamp,
        seats: SeatPlan,
    ) -> Result<DateId, EngineError> {
        ask_durably(&self.actor, |reply| CatalogMsg::CreateDate {
            concert,
            starts_at,
            seats,
            reply,
        })
        .await
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
                .filter_map(|d| catalog.date(*d).cloned())
                .collect(),
        )
    }

    /// A date and the concert it belongs to.
    pub fn date(&self, date: DateId) -> Option<(DateInfo, Concert)> {
        let catalog = self.view.read();
        let found = catalog.date(date)?.clone();
        let concert = catalog.concert(found.concert)?.clone();
        Some((found, concert))
    }

    pub fn is_empty(&self) -> bool {
        self.view.read().concerts().is_empty()
    }

    /// A copy of the state, for tests that compare live state with replayed state.
    pub fn state(&self) -> Catalog {
        self.view.read().clone()
    }

    pub fn snapshot(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::snapshot_now(&self.actor, CatalogMsg::Snapshot)
    }

    pub async fn stop(&self) {
        super::stop_draining(&self.actor).await;
    }
}
