//! Owner of the waiting rooms (the general one and every concert's own). It meters admission
//! and opens sales on a short tick; polls and token checks read the shared view under a read
//! lock and never enter the mailbox.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask, every, snapshot_at, Durability, EngineError};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::admission::{
    AdmissionQueue, Lookup, QueuePolicy, QueueStatus, QueueTokenId, RoomId, RoomReport, Standing,
};
use crate::domain::rooms::{RoomSpec, Rooms};
use crate::domain::{ConcertId, DomainError, Timestamp, UserId};
use crate::security::random_token_secret;
use crate::store::recovery::{RecoveredQueue, QUEUE_OWNER};

/// Admission runs this often, so a metered rate of N/s admits in small, even steps.
const ADMISSION_TICK: Duration = Duration::from_millis(20);

pub enum QueueMsg {
    Issue {
        room: RoomId,
        user: UserId,
        reply: RpcReplyPort<Result<(QueueStatus, bool), DomainError>>,
    },
    Reissue {
        ended: QueueTokenId,
        user: UserId,
        reply: RpcReplyPort<Result<Lookup, DomainError>>,
    },
    Leave {
        token: QueueTokenId,
        user: UserId,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    Tick,
    Snapshot(Option<RpcReplyPort<()>>),
}

pub struct QueueActor;

pub struct QueueState {
    queue: Arc<RwLock<Rooms>>,
    clock: SharedClock,
    durability: Durability,
}

impl Actor for QueueActor {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: QueueState,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.clock.now();
        match msg {
            QueueMsg::Issue { room, user, reply } => {
                let fresh = random_token_secret();
                let issued = state.queue.write().issue(room, user, fresh, now);
                if matches!(issued, Ok((status, true)) if status.standing == Standing::Active) {
                    metrics::counter!("boxoffice_queue_admissions_total").increment(1);
                }
                let _ = reply.send(issued);
            }
            QueueMsg::Reissue { ended, user, reply } => {
                let fresh = random_token_secret();
                let _ = reply.send(state.queue.write().reissue(ended, user, fresh, now));
            }
            QueueMsg::Leave { token, user, reply } => {
                let _ = reply.send(state.queue.write().leave(token, user, now));
            }
            QueueMsg::Snapshot(done) => {
                // Payments end tokens as they commit, before the committed mark moves past
                // them (`Durability::append`): read in this order, the copy holds every
                // payment up to the mark, and recovery applies the ones after it.
                let seq = state
                    .durability
                    .log
                    .stats()
                    .committed_seq
                    .load(Ordering::SeqCst);
                let copy = state.queue.read().to_snapshot();
                snapshot_at(
                    &state.durability.snapshots,
                    QUEUE_OWNER.to_owned(),
                    seq,
                    copy,
                    done,
                );
            }
            QueueMsg::Tick => {
                let outcome = state.queue.write().tick(now);
                if !outcome.admitted.is_empty() {
                    metrics::counter!("boxoffice_queue_admissions_total")
                        .increment(outcome.admitted.len() as u64);
                }
                if !outcome.dropped.is_empty() {
                    metrics::counter!("boxoffice_queue_dropped_total")
                        .increment(outcome.dropped.len() as u64);
                }
                if !outcome.admitted.is_empty() || !outcome.dropped.is_empty() {
                    tracing::debug!(
                        admitted = outcome.admitted.len(),
                        dropped = outcome.dropped.len(),
                        expired = outcome.expired.len(),
                        "admission tick"
                    );
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct QueueHandle {
    actor: ActorRef<QueueMsg>,
    view: Arc<RwLock<Rooms>>,
}

impl QueueHandle {
    pub async fn spawn(
        settings: &Settings,
        clock: SharedClock,
        durability: Durability,
        recovered: Option<RecoveredQueue>,
        rooms: impl IntoIterator<Item = (ConcertId, RoomSpec)>,
    ) -> anyhow::Result<Self> {
        let q = &settings.queue;
        let policy = QueuePolicy {
            max_active: q.max_active,
            admit_per_second: q.admit_per_second,
            active_ttl_ms: (q.active_ttl_seconds as i64).saturating_mul(1000),
            waiting_ttl_ms: (q.waiting_ttl_seconds as i64).saturating_mul(1000),
            ended_tokens_max: q.ended_tokens_max,
        };
        let mut queue = Rooms::restore(
            policy,
            rooms,
            recovered.as_ref().map(|saved| &saved.snapshot),
            clock.now(),
        );
        for event in recovered.iter().flat_map(|saved| &saved.later_events) {
            queue.apply(event);
        }
        // An opening that fell while the server was down happens before the first request.
        queue.tick(clock.now());
        let view = Arc::new(RwLock::new(queue));
        // Before any request: every payment from here on ends its token as it commits.
        if durability.waiting_room.set(view.clone()).is_err() {
            anyhow::bail!("a second waiting room was started on the same engine");
        }
        let every_snapshot = durability.snapshot_every;
        let owners = durability.clone();
        let state = QueueState {
            queue: view.clone(),
            clock,
            durability,
        };
        let actor = owners.spawn_owner(QueueActor, state).await?;
        every(actor.clone(), ADMISSION_TICK, || QueueMsg::Tick);
        every(actor.clone(), every_snapshot, || QueueMsg::Snapshot(None));
        Ok(Self { actor, view })
    }

    /// A new token of `room` (`true`) or the user's live one there.
    pub async fn issue(
        &self,
        room: RoomId,
        user: UserId,
    ) -> Result<(QueueStatus, bool), EngineError> {
        Ok(ask(&self.actor, |reply| QueueMsg::Issue { room, user, reply }).await??)
    }

    /// No mailbox round trip: polls are the most frequent request of a sale.
    pub fn poll(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        self.view.read().poll(token, user, now)
    }

    /// No mailbox round trip: runs on every request that needs an admitted buyer.
    pub fn check_admitted(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.view.read().check_admitted(token, user, now)
    }

    pub async fn reissue(&self, ended: QueueTokenId, user: UserId) -> Result<Lookup, EngineError> {
        Ok(ask(&self.actor, |reply| QueueMsg::Reissue {
            ended,
            user,
            reply,
        })
        .await??)
    }

    pub async fn leave(&self, token: QueueTokenId, user: UserId) -> Result<(), EngineError> {
        Ok(ask(&self.actor, |reply| QueueMsg::Leave { token, user, reply }).await??)
    }

    /// (waiting, active) over every room as of the last admission tick; a pre-queue waits.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.view.read();
        rooms.all().fold((0, 0), |(waiting, active), (_, q)| {
            (
                waiting + q.waiting_len() + q.pre_queue_len(),
                active + q.active_len(),
            )
        })
    }

    /// Tokens the rooms remember, ended ones included.
    pub fn remembered(&self) -> usize {
        self.view
            .read()
            .all()
            .map(|(_, q)| q.remembered_len())
            .sum()
    }

    /// Admissions per second over every room, measured over the last few seconds.
    pub fn admissions_per_second(&self, now: Timestamp) -> f64 {
        self.view
            .read()
            .all()
            .filter_map(|(_, q)| q.measured_admissions_per_second(now))
            .sum()
    }

    /// The rooms `/metrics` names, with their figures: the general room and, of the concerts'
    /// own rooms, the `named` with the most tokens (pre-queue, waiting, active); the figures of
    /// the rest are summed into the third element. A room with no tokens is not named.
    pub fn busiest_rooms(&self, named: usize) -> (Vec<(RoomId, RoomReport)>, RoomReport) {
        let rooms = self.view.read();
        let tokens = |r: &RoomReport| r.pre_queue + r.waiting + r.active;
        let mut own: Vec<(RoomId, RoomReport)> = rooms
            .all()
            .filter(|(id, _)| *id != RoomId::General)
            .map(|(id, q)| (id, q.report()))
            .filter(|(_, report)| tokens(report) > 0)
            .collect();
        own.sort_by_key(|(id, report)| (std::cmp::Reverse(tokens(report)), *id));
        let rest = own.split_off(named.min(own.len()));
        let mut others = RoomReport::default();
        for (_, report) in &rest {
            others.pre_queue += report.pre_queue;
            others.waiting += report.waiting;
            others.active += report.active;
        }
        let general = rooms.room(RoomId::General).map(|q| q.report());
        own.splice(0..0, general.map(|report| (RoomId::General, report)));
        (own, others)
    }

    /// Reads one room under the view's read lock.
    pub fn read_room<T>(&self, room: RoomId, read: impl FnOnce(&AdmissionQueue) -> T) -> Option<T> {
        self.view.read().room(room).map(read)
    }

    /// Reads every room under one read lock.
    pub fn read_rooms<T>(&self, read: impl FnOnce(&Rooms) -> T) -> T {
        read(&self.view.read())
    }

    pub fn snapshot(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::snapshot_now(&self.actor, QueueMsg::Snapshot)
    }

    pub async fn stop(&self) {
        super::stop_draining(&self.actor).await;
    }
}
