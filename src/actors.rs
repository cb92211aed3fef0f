//! Actors own the state; nothing else writes it. Each piece of state has exactly one owner, so
//! there are no locks around seats or balances: a hot seat is a queue of messages, not a lock
//! convoy. Reads that must not wait behind a mailbox (sessions, queue tokens, seat listings) are
//! served from views the owner updates before it replies, so they stay exact.
//!
//! One write comes from outside an owner: a committed payment ends the queue token it was made
//! with (and a committed concert opens its room) on the log writer, under the waiting rooms'
//! lock, before anyone hears of the commit (`Durability::append`). The rule is the rooms' own
//! (`RoomsChange`); only the
//! moment is the commit's, so that no owner's handler waits on the queue's mailbox.

pub mod accounts;
pub mod catalog;
pub mod date;
pub mod hold_tally;
pub mod ledger;
pub mod queue;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::idempotency::{
    BookKey, IdempotencyBook, KeyIndex, KeyRecord, Lookup, Outcome, PendingRecord,
};
use crate::domain::page::{Page, PageRequest};
use crate::domain::rooms::{Rooms, RoomsChange};
use crate::domain::seat_map::Reservation;
use crate::domain::{DateId, DomainError, Event, UserId};
use crate::store::backup::{write_backup, BackupReport};
use crate::store::log::{AfterCommit, Appended};
use crate::store::reader::StoreReader;
use crate::store::recovery::{
    self, Recovered, ACCOUNTS_OWNER, CATALOG_OWNER, LEDGER_OWNER, QUEUE_OWNER,
};
use crate::store::snapshot::Snapshotter;
use crate::store::{Durable, EventLog};

pub use accounts::AccountsHandle;
pub use catalog::CatalogHandle;
pub use date::DateHandle;
pub use ledger::LedgerHandle;
pub use queue::QueueHandle;

/// Idempotency records: the recent ones in memory with an index of the day's keys, every one
/// in the history database.
#[derive(Clone)]
pub struct KeyRecords {
    /// Shared by every owner of keyed changes (dates, ledger), so changes without a key never
    /// take its lock, and a record is made (its key hashed) before the lock is taken.
    book: Arc<Mutex<IdempotencyBook>>,
    stored: Arc<StoreReader>,
    clock: SharedClock,
    store_lookups: Arc<AtomicU64>,
}

impl KeyRecords {
    /// A book in front of the records stored in the log's database, whose keys `index` holds
    /// (`StoreReader::key_index`, read once the store holds every logged record).
    pub fn new(stored: Arc<StoreReader>, mut index: KeyIndex, clock: SharedClock) -> Self {
        // Stale rows not yet deleted leave now, at start, rather than on the first request.
        index.expire(clock.now());
        Self {
            book: Arc::new(Mutex::new(IdempotencyBook::with_index(index))),
            stored,
            clock,
            store_lookups: Arc::default(),
        }
    }

    /// The earlier outcome of `key`, or `None` if it is new; another body is refused.
    pub fn find(&self, key: &BookKey, fingerprint: u64) -> Result<Option<Outcome>, EngineError> {
        let now = self.clock.now();
        let known = self.book.lock().find(key, fingerprint, now)?;
        match known {
            Lookup::Recorded(outcome) => return Ok(Some(outcome)),
            Lookup::New => return Ok(None),
            // Recorded within the day and settled into the store (the book lets go only of
            // records the history database holds), or another key with the same tag.
            Lookup::AskStore => {}
        }
        self.store_lookups.fetch_add(1, Ordering::Relaxed);
        let stored = self.stored.find_record(key).map_err(|error| {
            tracing::error!(%error, "cannot read idempotency records");
            EngineError::Unavailable
        })?;
        Ok(KeyRecord::answer_stored(stored, fingerprint, now)?)
    }

    /// Records held in memory.
    pub fn in_memory(&self) -> usize {
        self.book.lock().len()
    }

    /// Keys in the index of the day's keys, and the bytes it holds.
    pub fn indexed(&self) -> (usize, usize) {
        let book = self.book.lock();
        (book.index().len(), book.index().bytes())
    }

    /// How many lookups went to the history database.
    pub fn store_lookups(&self) -> u64 {
        self.store_lookups.load(Ordering::Relaxed)
    }
}

/// An owner's answer to a change: what it decided and applied, and the ticket of the commit
/// that makes it durable. The owner answers at once and goes on with its mailbox; the caller
/// waits for the commit before it tells anyone (`ask_durably`), so no client hears of a change
/// the disk does not have, and no task is spawned per change to hold the answer back.
pub(crate) type Decided<T, E> = Result<(T, Durable), E>;

/// `ask` for a change: the answer once its event is committed.
pub(crate) async fn ask_durably<M, T, E>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<Decided<T, E>>) -> M,
) -> Result<T, EngineError>
where
    M: ractor::Message,
    T: Send + 'static,
    E: Send + 'static + Into<EngineError>,
{
    let (value, durable) = ask(actor, build).await?.map_err(Into::into)?;
    durable.wait().await;
    Ok(value)
}

/// Asks `actor` for a snapshot now; resolves once it is on disk.
pub(crate) fn snapshot_now<M: ractor::Message>(
    actor: &ActorRef<M>,
    make: fn(Option<RpcReplyPort<()>>) -> M,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let actor = actor.clone();
    async move {
        let _ = ask(&actor, |done| make(Some(done))).await;
    }
}

/// Stops `actor` once it has handled the messages already in its mailbox.
pub(crate) async fn stop_draining<M: ractor::Message>(actor: &ActorRef<M>) {
    let _ = actor.drain_and_wait(Some(CALL_TIMEOUT)).await;
}

/// Writes a snapshot off the owner's mailbox and answers `done` (if any) when it is on disk.
/// The state holds every event the owner appended, which is every event handed out so far.
pub(crate) fn snapshot_later<T: serde::Serialize + Send + 'static>(
    snapshots: &Snapshotter,
    owner: String,
    state: T,
    done: Option<RpcReplyPort<()>>,
) {
    let seq = snapshots.log().last_sequence();
    snapshot_at(snapshots, owner, seq, state, done);
}

/// `snapshot_later` of a state that holds every event up to `seq`.
pub(crate) fn snapshot_at<T: serde::Serialize + Send + 'static>(
    snapshots: &Snapshotter,
    owner: String,
    seq: u64,
    state: T,
    done: Option<RpcReplyPort<()>>,
) {
    let snapshots = snapshots.clone();
    tokio::spawn(async move {
        snapshots.write(owner, seq, state).await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    });
}

/// Every `call` gives up after this: an owner that does only memory work and has not answered
/// by then is wedged, and the client gets 503 instead of a hung connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the engine is not answering (stopping or overloaded)")]
    Unavailable,
    /// The reservation asked about has ended and left its date's memory; only the store knows
    /// it now. `DateHandle` answers from there, so this never leaves `actors`.
    #[error("the reservation has ended")]
    Ended,
}

const ACTOR_KINDS: [&str; 5] = ["accounts", "catalog", "date", "ledger", "queue"];

/// ractor does not expose a mailbox's length, so `ask` counts, per kind of actor, the calls
/// sent and not yet answered: waiting in a mailbox, being handled, or waiting for their commit.
static PENDING_CALLS: [AtomicI64; 5] = [const { AtomicI64::new(0) }; 5];

fn actor_kind<M: 'static>() -> usize {
    use std::any::TypeId;
    let id = TypeId::of::<M>();
    [
        TypeId::of::<accounts::AccountsMsg>(),
        TypeId::of::<catalog::CatalogMsg>(),
        TypeId::of::<date::DateMsg>(),
        TypeId::of::<ledger::LedgerMsg>(),
        TypeId::of::<queue::QueueMsg>(),
    ]
    .iter()
    .position(|kind| *kind == id)
    .expect("every actor's message type is listed")
}

/// Calls pending per kind of actor, for the metrics endpoint.
pub fn pending_calls() -> impl Iterator<Item = (&'static str, i64)> {
    ACTOR_KINDS
        .iter()
        .zip(&PENDING_CALLS)
        .map(|(kind, pending)| (*kind, pending.load(Ordering::Relaxed)))
}

struct PendingCall(&'static AtomicI64);

impl PendingCall {
    fn start(counter: &'static AtomicI64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    let _pending = PendingCall::start(&PENDING_CALLS[actor_kind::<M>()]);
    match actor.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => {
            tracing::error!(actor = ?actor.get_id(), "actor call timed out");
            Err(EngineError::Unavailable)
        }
        Ok(CallResult::SenderError) | Err(_) => Err(EngineError::Unavailable),
    }
}

/// Where every date actor is found, and each user's reservations and held seats across dates.
pub struct DateRegistry {
    dates: DashMap<DateId, DateHandle>,
    history: Arc<StoreReader>,
    held: hold_tally::HoldTally,
}

impl DateRegistry {
    pub fn new(history: Arc<StoreReader>) -> Self {
        Self {
            dates: DashMap::new(),
            history,
            held: hold_tally::HoldTally::default(),
        }
    }

    /// Each user's held seats over every date, kept by the date actors.
    pub fn held(&self) -> &hold_tally::HoldTally {
        &self.held
    }

    pub fn get(&self, date: DateId) -> Option<DateHandle> {
        self.dates.get(&date).map(|d| d.clone())
    }

    pub fn insert(&self, handle: DateHandle) {
        self.dates.insert(handle.date(), handle);
    }

    pub fn all(&self) -> Vec<DateHandle> {
        self.dates.iter().map(|d| d.clone()).collect()
    }

    /// A page of the user's reservations on every date, in every state, newest first, with
    /// every change acknowledged so far. Read from the store on the blocking pool.
    pub async fn reservations_of(
        &self,
        user: UserId,
        request: PageRequest,
    ) -> Result<Page<Reservation>, EngineError> {
        read_history(&self.history, move |store| {
            store.reservations_page(user, &request)
        })
        .await
    }

    /// A page of `user`'s waiting-list entries on every date, newest first.
    pub async fn waitlist_of(
        &self,
        user: UserId,
        request: PageRequest,
    ) -> Result<Page<crate::domain::waitlist::ListedEntry>, EngineError> {
        read_history(&self.history, move |store| {
            store.waitlist_page(user, &request)
        })
        .await
    }
}

/// Reads history rows once they hold every change acknowledged so far, on the blocking pool: a
/// long history is many rows, and a worker thread should not wait on them. A store that cannot
/// be read is a 503, and logged.
pub(crate) async fn read_history<T: Send + 'static>(
    store: &Arc<StoreReader>,
    read: impl FnOnce(&StoreReader) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, EngineError> {
    store.caught_up().await;
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|_| EngineError::Unavailable)?
        .map_err(|error| {
            let error = &error as &dyn std::error::Error;
            tracing::error!(error, "cannot read history from the store");
            EngineError::Unavailable
        })
}

/// What every owner needs to make its changes durable, and the supervisor it runs under (a
/// failed owner stops the process, so recovery from disk rebuilds it: `supervisor`).
#[derive(Clone)]
pub struct Durability {
    pub log: EventLog,
    pub snapshots: Snapshotter,
    pub snapshot_every: Duration,
    pub keys: KeyRecords,
    pub supervisor: ActorRef<()>,
    /// The waiting room, which a committed payment changes: it ends the token the payment was
    /// made with. Set when the queue's owner starts, before any request is served.
    pub waiting_room: Arc<OnceLock<Arc<RwLock<Rooms>>>>,
}

impl Durability {
    /// Spawns an owner linked to the supervisor.
    pub(crate) async fn spawn_owner<A: ractor::Actor>(
        &self,
        owner: A,
        arguments: A::Arguments,
    ) -> anyhow::Result<ActorRef<A::Msg>> {
        let (actor, _) =
            ractor::Actor::spawn_linked(None, owner, arguments, self.supervisor.get_cell()).await?;
        Ok(actor)
    }

    /// Logs an applied event. A keyed one's record goes to the log with it and into the book,
    /// which lets go of its records that have settled in the history database as it goes. The
    /// book's lock is taken before the event is logged, so no lookup sees the event logged, or
    /// committed, while its key is missing from the book and its index.
    pub(crate) fn append(&self, event: &Event) -> Durable {
        let after_commit = self.waiting_room_share(event);
        let Some(record) = PendingRecord::of(event) else {
            return self.log.append_then(event, None, after_commit);
        };
        let stored = self.log.stats().rows_through.load(Ordering::SeqCst);
        let mut book = self.keys.book.lock();
        let durable = self.log.append_then(event, Some(record), after_commit);
        book.insert(record, durable.seq());
        book.settle(record.at, stored);
        durable
    }

    /// `append` for a run of applied events, under one lock of the log (and of the book, if
    /// any is keyed): one ticket, which resolves once the last is committed.
    pub(crate) fn append_many(&self, events: &[Event]) -> Option<Durable> {
        let records: Vec<Option<PendingRecord>> = events.iter().map(PendingRecord::of).collect();
        let run = events.iter().zip(&records).map(|(event, key)| Appended {
            event,
            key: *key,
            after_commit: self.waiting_room_share(event),
        });
        if records.iter().all(Option::is_none) {
            return self.log.append_many(run).map(|(_, durable)| durable);
        }
        let stored = self.log.stats().rows_through.load(Ordering::SeqCst);
        let mut book = self.keys.book.lock();
        let (first, durable) = self.log.append_many(run)?;
        for (seq, record) in (first..).zip(records) {
            if let Some(record) = record {
                book.insert(record, seq);
                book.settle(record.at, stored);
            }
        }
        Some(durable)
    }

    /// The waiting room's share of `event`, applied once it is committed and before its
    /// caller hears so: the token a payment ends is ended for every later request, and no
    /// owner's handler waits on the queue's mailbox for it. Replay applies the same events
    /// after the queue's snapshot (`recovery`).
    fn waiting_room_share(&self, event: &Event) -> Option<AfterCommit> {
        let change = RoomsChange::made_by(event)?;
        let rooms = self.waiting_room.get()?.clone();
        Some(Box::new(move || rooms.write().change(change)))
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
    pub durability: Durability,
    pub clock: SharedClock,
    /// How many logged events the start-up recovery replayed.
    pub replayed_events: usize,
    backups: BackupPlaces,
}

/// Where a backup copies from and to.
#[derive(Clone)]
struct BackupPlaces {
    snapshot_dir: PathBuf,
    backup_dir: PathBuf,
}

/// The event log's figures, for operators.
#[derive(Debug, Clone, Copy)]
pub struct LogFigures {
    /// The newest sequence number in the log.
    pub last_sequence: u64,
    pub commits: u64,
    pub events_committed: u64,
}

/// A backup that the disk refused; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("the backup was not written: {0}")]
pub struct BackupFailed(#[from] crate::store::StoreError);

impl Engine {
    /// Resolves once every change logged so far is committed: what is answered after this
    /// shows no change that a crash could take back.
    pub async fn committed_so_far(&self) {
        self.durability.log.flush().await;
    }

    /// Recovers state from disk and starts every owner with it.
    pub async fn start(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let (setup, policies) = (
            crate::policies::store_setup(settings),
            crate::policies::policies(settings),
        );
        let recovered = tokio::task::spawn_blocking(move || recovery::recover(&setup, policies))
            .await
            .map_err(|e| anyhow::anyhow!("recovery panicked: {e}"))??;
        Self::start_from(settings, clock, recovered).await
    }

    async fn start_from(
        settings: &Settings,
        clock: SharedClock,
        recovered: Recovered,
    ) -> anyhow::Result<Self> {
        let Recovered {
            accounts,
            catalog,
            ledger,
            dates: seat_maps,
            queue: saved_queue,
            log,
            keys,
            replayed_events,
            took: _,
        } = recovered;
        let snapshots = Snapshotter::new(
            settings.storage.snapshot_dir.clone(),
            log.clone(),
            settings.storage.prune_log,
        );
        // Every owner is known before any of them snapshots, so no prune passes an owner that
        // has not started yet.
        for owner in [ACCOUNTS_OWNER, CATALOG_OWNER, LEDGER_OWNER, QUEUE_OWNER] {
            snapshots.register(owner);
        }
        for date in seat_maps.keys() {
            snapshots.register(&recovery::date_owner(*date));
        }
        let durability = Durability {
            supervisor: supervisor::Supervisor::start().await?,
            keys: KeyRecords::new(log.reader().clone(), keys, clock.clone()),
            log,
            snapshots,
            snapshot_every: Duration::from_secs(settings.storage.snapshot_interval_seconds.max(1)),
            waiting_room: Arc::default(),
        };
        let dates = Arc::new(DateRegistry::new(durability.log.reader().clone()));
        let accounts =
            AccountsHandle::spawn(settings, clock.clone(), durability.clone(), accounts).await?;
        let ledger = LedgerHandle::spawn(clock.clone(), durability.clone(), ledger).await?;
        let queue = QueueHandle::spawn(
            settings,
            clock.clone(),
            durability.clone(),
            saved_queue,
            catalog.rooms().collect::<Vec<_>>(),
        )
        .await?;
        let catalog = CatalogHandle::spawn(
            settings,
            clock.clone(),
            durability.clone(),
            ledger.clone(),
            dates.clone(),
            catalog,
        )
        .await?;
        for (date, map) in seat_maps {
            catalog.start_date(date, map).await?;
        }
        settle_keys_every(durability.clone(), clock.clone());
        Ok(Self {
            accounts,
            catalog,
            ledger,
            queue,
            dates,
            durability,
            clock,
            replayed_events,
            backups: BackupPlaces {
                snapshot_dir: settings.storage.snapshot_dir.clone(),
                backup_dir: settings.storage.backup_dir.clone(),
            },
        })
    }

    /// The event log's figures.
    pub fn log_figures(&self) -> LogFigures {
        let log = &self.durability.log;
        LogFigures {
            last_sequence: log.last_sequence(),
            commits: log.stats().commits.load(Ordering::Relaxed),
            events_committed: log.stats().events.load(Ordering::Relaxed),
        }
    }

    /// Idempotency records, shared by the HTTP layer's gate and the owners that record them.
    pub fn key_records(&self) -> &KeyRecords {
        &self.durability.keys
    }

    /// Snapshots every owner (so a restore replays little), then copies the snapshots and both
    /// databases into a new directory under `storage.backup_dir`, while serving.
    pub async fn back_up(&self) -> Result<BackupReport, BackupFailed> {
        self.snapshot_all().await;
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let log = &self.durability.log;
        let name = format!(
            "backup-{}-{}-{}",
            self.clock.now().as_millis(),
            log.last_sequence(),
            TAKEN.fetch_add(1, Ordering::Relaxed)
        );
        let places = &self.backups;
        Ok(write_backup(log, &places.snapshot_dir, &places.backup_dir, &name).await?)
    }

    /// Snapshots every owner now and waits until the files are on disk.
    pub async fn snapshot_all(&self) {
        let mut done = Vec::new();
        for date in self.dates.all() {
            done.push(tokio::spawn(date.snapshot()));
        }
        done.push(tokio::spawn(self.catalog.snapshot()));
        done.push(tokio::spawn(self.ledger.snapshot()));
        done.push(tokio::spawn(self.accounts.snapshot()));
        done.push(tokio::spawn(self.queue.snapshot()));
        for pending in done {
            let _ = pending.await;
        }
    }

    /// Flushes the log, writes a snapshot of every owner, and stops every actor after it has
    /// drained the messages already in its mailbox.
    pub async fn stop(&self) {
        self.snapshot_all().await;
        self.durability.log.flush().await;
        for date in self.dates.all() {
            date.stop().await;
        }
        self.catalog.stop().await;
        self.queue.stop().await;
        self.ledger.stop().await;
        self.accounts.stop().await;
        self.durability.supervisor.stop(None);
        self.durability.log.close().await;
    }
}

/// Lets go of settled records and expired keys when no keyed change comes to do it (and goes on
/// with any resize of the key index), and has the store forget records older than a day, once
/// a minute.
fn settle_keys_every(durability: Durability, clock: SharedClock) {
    let book = Arc::downgrade(&durability.keys.book);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0u64.. {
            ticks.tick().await;
            let Some(book) = book.upgrade() else { break };
            let stored = durability.log.stats().rows_through.load(Ordering::SeqCst);
            let now = clock.now();
            {
                let mut book = book.lock();
                book.settle(now, stored);
                book.tidy();
            }
            if tick % 60 == 0 {
                durability.log.forget_stale_keys(now);
            }
        }
    });
}

/// Sends `make()` to `actor` every `period` until the actor is gone.
pub(crate) fn every<M: ractor::Message>(
    actor: ActorRef<M>,
    period: Duration,
    make: impl Fn() -> M + Send + 'static,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if actor.send_message(make()).is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{ConcertId, SeatList, SeatNo, Timestamp};

    /// An engine on the test settings, its clock at 1 s, with one date of 10 seats at 100.
    async fn engine_with_a_date(settings: &Settings) -> (Engine, DateHandle) {
        let engine = Engine::start(settings, ManualClock::new(Timestamp(1_000)))
            .await
            .unwrap();
        let concert: ConcertId = engine
            .catalog
            .create_concert("c".into(), "v".into(), Default::default())
            .await
            .unwrap();
        let date = engine
            .catalog
            .create_date(
                concert,
                Timestamp(4_102_444_800_000), // 2100: on sale throughout
                crate::domain::catalog::SeatPlan::Uniform {
                    seat_count: 10,
                    price: 100,
                },
            )
            .await
            .unwrap();
        let handle = engine.dates.get(date).unwrap();
        (engine, handle)
    }

    /// Invariant: no client hears of a change the disk does not have. The owner applies a
    /// change and answers at once; what the caller gets back must still wait for the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_is_answered_only_once_its_event_is_committed() {
        let settings = Settings::for_tests();
        let (engine, handle) = engine_with_a_date(&settings).await;
        let view = handle.clone();
        let many = handle.clone();
        let ledger = engine.ledger.clone();

        // Another connection holds the log's write lock, so no commit can finish meanwhile
        // (the writer waits it out: `WRITER_BUSY_TIMEOUT_MS`).
        let blocker = rusqlite::Connection::open(&settings.storage.sqlite_path).unwrap();
        blocker
            .execute_batch("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
            .unwrap();
        let hold = tokio::spawn(async move {
            handle
                .hold(UserId(1), SeatList::from_slice(&[SeatNo(1)]), None)
                .await
        });
        let held_together = tokio::spawn(async move {
            let run = (2..=3)
                .map(|seat| date::HoldRequest {
                    user: UserId(u64::from(seat)),
                    seats: SeatList::from_slice(&[SeatNo(seat)]),
                    idempotency: None,
                })
                .collect();
            many.hold_many(run).await
        });
        let charge = {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.charge(UserId(1), 500, None).await })
        };
        // Both owners apply their change at once, commit or not; wait (bounded) until they have,
        // so a slow machine cannot make the checks below pass for want of a change to answer.
        let applied = async {
            while view.view().held_seats() != 3 || ledger.balance(UserId(1)).await.ok() != Some(500)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), applied)
            .await
            .expect("the date applied the holds and the ledger the charge");
        // Time enough for an answer that skipped the commit to arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!hold.is_finished(), "a hold was answered before its commit");
        assert!(
            !held_together.is_finished(),
            "holds asked together were answered before their commit"
        );
        assert!(
            !charge.is_finished(),
            "a charge was answered before its commit"
        );

        blocker.execute_batch("COMMIT").unwrap();
        hold.await.unwrap().unwrap();
        let together = held_together.await.unwrap().unwrap();
        assert!(together.iter().all(Result::is_ok), "{together:?}");
        assert_eq!(charge.await.unwrap().unwrap().balance, 500);
        engine.stop().await;
    }

    /// A run of holds asked together is decided exactly as the same holds asked one at a time:
    /// a later one meets the seats an earlier one took, and the per-user limit counts both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holds_asked_together_are_decided_as_if_asked_one_by_one() {
        use date::HoldRequest;
        let request = |user: u64, seats: &[u32]| HoldRequest {
            user: UserId(user),
            seats: seats.iter().map(|s| SeatNo(*s)).collect(),
            idempotency: None,
        };
        // Seat 1 twice; user 1 past the 4-seat limit; a seat that does not exist; a free one.
        let run = vec![
            request(1, &[1, 2]),
            request(2, &[1]),
            request(1, &[3, 4, 5]),
            request(3, &[11]),
            request(4, &[7]),
            request(2, &[8, 9]),
        ];
        let mut answers = Vec::new();
        for together in [true, false] {
            let (engine, handle) = engine_with_a_date(&Settings::for_tests()).await;
            let outcomes = if together {
                handle.hold_many(run.clone()).await.unwrap()
            } else {
                let mut outcomes = Vec::new();
                for hold in run.clone() {
                    outcomes.push(handle.hold(hold.user, hold.seats, None).await);
                }
                outcomes
            };
            // Answered means committed: the log holds every event of the run.
            assert_eq!(
                engine
                    .durability
                    .log
                    .stats()
                    .committed_seq
                    .load(Ordering::SeqCst),
                engine.durability.log.last_sequence()
            );
            answers.push((outcomes, handle.state().await.unwrap()));
            engine.stop().await;
        }
        let (together, one_by_one) = (&answers[0], &answers[1]);
        assert_eq!(together.0, one_by_one.0);
        assert_eq!(together.1, one_by_one.1);
        let placed = together.0.iter().filter(|o| o.is_ok()).count();
        assert_eq!(placed, 3, "{:?}", together.0);
    }

    /// Nearly every keyed request brings a key never seen: memory knows it is new, so the
    /// history database is read only for a key recorded before, once its record left the book.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_key_is_known_new_without_reading_the_store() {
        use crate::domain::idempotency::{KeyedEndpoint, RECENT_MS};
        use crate::domain::{IdempotencyKey, IdempotencyStamp};
        let clock = ManualClock::new(Timestamp(1_000));
        let engine = Engine::start(&Settings::for_tests(), clock.clone())
            .await
            .unwrap();
        let keys = engine.key_records().clone();
        let stamp = |key: &str| IdempotencyStamp {
            key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: 7,
        };
        let book_key = |key: &str| {
            BookKey::new(
                UserId(1),
                KeyedEndpoint::Charge,
                &IdempotencyKey::parse(key).unwrap(),
            )
        };
        engine
            .ledger
            .charge(UserId(1), 500, Some(stamp("early")))
            .await
            .unwrap();
        for n in 0..100 {
            assert_eq!(keys.find(&book_key(&format!("new-{n}")), 7), Ok(None));
        }
        assert_eq!(keys.store_lookups(), 0, "a new key read the store");

        // The next keyed change lets go of the stored record, which the store then answers.
        clock.advance(Duration::from_millis(RECENT_MS as u64 + 1));
        engine.durability.log.reader().caught_up().await;
        engine
            .ledger
            .charge(UserId(1), 500, Some(stamp("late")))
            .await
            .unwrap();
        assert_eq!(keys.in_memory(), 1, "only the recent record is in the book");
        assert!(matches!(
            keys.find(&book_key("early"), 7),
            Ok(Some(Outcome::Charge {
                balance_after: 500,
                ..
            }))
        ));
        assert_eq!(keys.store_lookups(), 1);
        assert_eq!(keys.find(&book_key("never"), 7), Ok(None));
        assert_eq!(keys.store_lookups(), 1, "a new key read the store");
        engine.stop().await;
    }
}
