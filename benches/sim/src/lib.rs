//! A deterministic simulation of boxoffice's owners over its real store.
//!
//! One seed fixes everything a run does: which buyer sends what (holds, cancels, payments,
//! charges, refunds, with hostile values among them), how the clock moves (jumps past TTLs
//! included), which owner serves next, when the log commits, and the faults: a crash at any
//! step (everything not yet committed is lost), a commit that fails (the process stops at once,
//! as the log's writer does), a snapshot written at any moment, and a damaged or truncated
//! snapshot file. The owners are the product's own domain types (`SeatMap` per date, `Ledger`,
//! `Catalog`), the log is the product's `EventLog` on a real SQLite file, and every crash is
//! recovered by the product's `store::recover` from what is on disk.
//!
//! The glue the actors give in the server (sweep due expiries before a date decides, complete a
//! payment or refund in the ledger, answer only after the commit) is done here in one thread, so
//! nothing depends on a scheduler: the same seed gives the same event log, byte for byte.
//!
//! After every commit the engine is checked against a reference model kept here, which learns
//! only what was acknowledged: the seats' states, each user's balance (charges − payments +
//! refunds, never negative), invariants 1, 2 and 4 of DESIGN.md. After every recovery the
//! recovered owners must equal the live owners at the last commit (3 and 6), and the model must
//! still agree (every acknowledged reply is still true). At the end of a run the whole log is
//! replayed from empty state and compared with the live owners (6).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use boxoffice::domain::accounts::Accounts;
use boxoffice::domain::across_dates::HeldAcrossDates;
use boxoffice::domain::admission::{Lookup, QueuePolicy, QueueTokenId, RoomId, Standing};
use boxoffice::domain::catalog::{Catalog, SeatPlan};
use boxoffice::domain::ledger::{BalancePolicy, EntryKind, Ledger};
use boxoffice::domain::page::{ListKind, PageLimit, PageRequest};
use boxoffice::domain::rooms::{Rooms, RoomsSnapshot};
use boxoffice::domain::seat_map::{
    DatePolicy, Joined, RefundPolicy, SeatChoice, SeatMap, SeatStatus,
};
use boxoffice::domain::{DateId, DomainError, Event, ReservationId, SeatNo, Timestamp, UserId};
use boxoffice::store::log::{read_events_after, Appended};
use boxoffice::store::recovery::{
    date_owner, ACCOUNTS_OWNER, CATALOG_OWNER, LEDGER_OWNER, QUEUE_OWNER,
};
use boxoffice::store::{recover, snapshot, EventLog, Policies, StoreSetup, SyncMode};

const DATES: u32 = 2;
const SEATS: u32 = 8;
const USERS: u64 = 6;
/// Not a multiple of ten, so a fee of 10% has a fraction to round.
const PRICE: u64 = 1_055;
const TTL_MS: i64 = 60_000;
const START: Timestamp = Timestamp(1_800_000_000_000);
const STARTS_AT: Timestamp = Timestamp(START.0 + 400 * 86_400_000);

pub fn date_policy() -> DatePolicy {
    DatePolicy {
        ttl_ms: TTL_MS,
        max_seats_per_user: 4,
        max_seats_per_user_total: 8,
        rehold_cooldown_ms: 10_000,
        offer_ttl_ms: 120_000,
        refunds: RefundPolicy {
            fee_percent: 10,
            window_closes_ms_before_start: 86_400_000,
        },
    }
}

/// A small room, so buyers wait, are admitted one a second, and time out.
pub fn queue_policy() -> QueuePolicy {
    QueuePolicy {
        max_active: 5,
        admit_per_second: 1,
        active_ttl_ms: 5 * 60_000,
        waiting_ttl_ms: 60_000,
        ended_tokens_max: 1_000,
    }
}

pub fn balance_policy() -> BalancePolicy {
    BalancePolicy {
        max_charge: 5_000,
        max_balance: 20_000,
    }
}

/// What went wrong: the invariant, the step it broke at, and how to run it again.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub crash_every: u32,
    pub step: u64,
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} broke {} at step {}: {}\n  reproduce: cargo run --release -p boxoffice-sim -- --seed {} --ops {} --crash-every {}",
            self.seed,
            self.invariant,
            self.step,
            self.detail,
            self.seed,
            self.step + 1,
            self.crash_every
        )
    }
}

impl std::error::Error for Failure {}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ops: u64,
    pub commits: u64,
    pub events: u64,
    pub crashes: u64,
    pub failed_commits: u64,
    pub snapshots: u64,
    pub damaged_snapshots: u64,
    /// Deaths in the middle of writing a snapshot (a torn temporary file, or the new file in
    /// place before the old ones were removed).
    pub torn_snapshot_writes: u64,
    pub prunes: u64,
    /// Deaths with a log prune just handed to the writer (it ran whole or not at all).
    pub crashes_in_prune: u64,
    pub cancelled_dates: u64,
    /// Holds placed by naming the best available seats, and holds offered to a waiting list.
    pub best_available_holds: u64,
    pub offers: u64,
    pub refused: u64,
}

impl Summary {
    pub fn add(&mut self, other: &Summary) {
        self.ops += other.ops;
        self.commits += other.commits;
        self.events += other.events;
        self.crashes += other.crashes;
        self.failed_commits += other.failed_commits;
        self.snapshots += other.snapshots;
        self.damaged_snapshots += other.damaged_snapshots;
        self.torn_snapshot_writes += other.torn_snapshot_writes;
        self.prunes += other.prunes;
        self.crashes_in_prune += other.crashes_in_prune;
        self.cancelled_dates += other.cancelled_dates;
        self.best_available_holds += other.best_available_holds;
        self.offers += other.offers;
        self.refused += other.refused;
    }
}

/// A reply the engine gave, which becomes true once its events commit.
#[derive(Debug, Clone)]
enum Reply {
    Held {
        id: ReservationId,
        user: UserId,
        seats: Vec<SeatNo>,
        expires_at: Timestamp,
    },
    Cancelled(ReservationId),
    Paid {
        id: ReservationId,
        user: UserId,
        amount: u64,
        token: QueueTokenId,
    },
    Charged {
        user: UserId,
        amount: u64,
    },
    Refunded {
        id: ReservationId,
        payer: UserId,
        amount: u64,
    },
    Transferred {
        id: ReservationId,
        to: UserId,
    },
    /// A waiting list joined or left: nothing the model keeps, beyond an offer's hold it
    /// cancels (`Cancelled`).
    Listed,
    /// A date called off: its paid reservations refunded (to whom, how much) and its live
    /// holds cancelled.
    DateCancelled {
        refunds: Vec<(ReservationId, UserId, u64)>,
        holds: Vec<ReservationId>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Live,
    Paid,
    Ended,
}

#[derive(Debug, Clone)]
struct ModelReservation {
    /// Who holds it now (a transfer changes it).
    user: UserId,
    /// Who paid for it, once paid: refunds go to them, whoever holds it.
    payer: Option<UserId>,
    seats: Vec<SeatNo>,
    expires_at: Timestamp,
    state: Held,
}

/// The contract, simply: reservations by id, and each user's balance as charges − payments +
/// refunds. It learns only acknowledged replies.
#[derive(Debug, Default, Clone)]
struct Model {
    reservations: BTreeMap<ReservationId, ModelReservation>,
    /// Every reservation in the order it was acknowledged, to pick one from at random.
    ids: Vec<ReservationId>,
    /// Per seat, the reservations that may still claim it (a live hold, a paid one); ended
    /// and expired ones are forgotten as the clock passes them (`forget_ended`).
    claims: BTreeMap<(DateId, SeatNo), Vec<ReservationId>>,
    balances: BTreeMap<UserId, i128>,
    /// Queue tokens that paid: none may admit again, live or after any recovery.
    paid_tokens: Vec<(UserId, QueueTokenId)>,
    /// Tokens as they were issued into the line (waiting at issue), oldest first, while the
    /// room still knows them: admission must follow this order.
    line: Vec<(UserId, QueueTokenId)>,
    /// Who every token issued belongs to.
    holders: BTreeMap<QueueTokenId, UserId>,
    /// Each user's balance history as acknowledged, oldest first: kind, amount, balance after.
    history: BTreeMap<UserId, Vec<(EntryKind, u64, u64)>>,
}

impl Model {
    /// A payment costs the seats' price; a refund gives it back less the fee, rounded down.
    /// Says what is wrong with an acknowledged amount, if anything.
    fn wrong_amount(&self, reply: &Reply) -> Option<String> {
        let paid_by = |id: &ReservationId, payer: &UserId| {
            let expected = self.reservations.get(id)?.payer;
            (expected != Some(*payer))
                .then(|| format!("{id} refunded to {payer}, but {expected:?} paid for it"))
        };
        let (id, amount, expected) = match reply {
            Reply::Paid { id, amount, .. } => {
                let seats = self.reservations.get(id)?.seats.len() as u64;
                (id, *amount, seats * PRICE)
            }
            Reply::Refunded { id, amount, payer } => {
                if let Some(wrong) = paid_by(id, payer) {
                    return Some(wrong);
                }
                let price = self.reservations.get(id)?.seats.len() as u64 * PRICE;
                let fee = price * u64::from(date_policy().refunds.fee_percent) / 100;
                (id, *amount, price - fee)
            }
            // A cancelled date refunds in full, to the payer.
            Reply::DateCancelled { refunds, .. } => {
                for (id, payer, amount) in refunds {
                    if let Some(wrong) = paid_by(id, payer) {
                        return Some(wrong);
                    }
                    let price = self.reservations.get(id)?.seats.len() as u64 * PRICE;
                    if *amount != price {
                        return Some(format!("{id} refunded {amount} won on a cancelled date, the contract says {price}"));
                    }
                }
                return None;
            }
            _ => return None,
        };
        (amount != expected)
            .then(|| format!("{id} moved {amount} won, the contract says {expected}"))
    }

    fn learn(&mut self, reply: &Reply) {
        match reply {
            Reply::Held {
                id,
                user,
                seats,
                expires_at,
            } => {
                self.ids.push(*id);
                for seat in seats {
                    self.claims.entry((id.date, *seat)).or_default().push(*id);
                }
                self.reservations.insert(
                    *id,
                    ModelReservation {
                        user: *user,
                        payer: None,
                        seats: seats.clone(),
                        expires_at: *expires_at,
                        state: Held::Live,
                    },
                );
            }
            Reply::Cancelled(id) => {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.state = Held::Ended;
                }
            }
            Reply::Paid {
                id,
                user,
                amount,
                token,
            } => {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.state = Held::Paid;
                    r.payer = Some(*user);
                }
                *self.balances.entry(*user).or_default() -= i128::from(*amount);
                self.paid_tokens.push((*user, *token));
                self.entry(*user, EntryKind::Payment, *amount);
            }
            Reply::Charged { user, amount } => {
                *self.balances.entry(*user).or_default() += i128::from(*amount);
                self.entry(*user, EntryKind::Charge, *amount);
            }
            Reply::Refunded { id, payer, amount } => {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.state = Held::Ended;
                }
                *self.balances.entry(*payer).or_default() += i128::from(*amount);
                // A refund of nothing (a fee of the whole price) leaves no entry.
                if *amount > 0 {
                    self.entry(*payer, EntryKind::Refund, *amount);
                }
            }
            Reply::Transferred { id, to } => {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.user = *to;
                }
            }
            Reply::DateCancelled { refunds, holds } => {
                for (id, payer, amount) in refunds {
                    self.learn(&Reply::Refunded {
                        id: *id,
                        payer: *payer,
                        amount: *amount,
                    });
                }
                for id in holds {
                    self.learn(&Reply::Cancelled(*id));
                }
            }
            Reply::Listed => {}
        }
    }

    /// A history entry for a change just learned, with the balance it left.
    fn entry(&mut self, user: UserId, kind: EntryKind, amount: u64) {
        let after = self.balances.get(&user).copied().unwrap_or(0).max(0) as u64;
        self.history
            .entry(user)
            .or_default()
            .push((kind, amount, after));
    }

    /// What a seat is at `now`, by the contract: a live hold until its `expires_at`, sold once
    /// paid until refunded. `Err` names two acknowledged reservations that both claim it.
    fn seat(
        &self,
        date: DateId,
        seat: SeatNo,
        now: Timestamp,
    ) -> Result<SeatStatus, (ReservationId, ReservationId)> {
        let mut status = SeatStatus::Available;
        let mut claimed_by: Option<ReservationId> = None;
        for id in self.claims.get(&(date, seat)).into_iter().flatten() {
            let r = &self.reservations[id];
            let claims = r.state == Held::Paid || (r.state == Held::Live && r.expires_at > now);
            if claims {
                if let Some(other) = claimed_by.replace(*id) {
                    return Err((other, *id));
                }
            }
            match r.state {
                Held::Paid => status = SeatStatus::Sold,
                Held::Live if r.expires_at > now => {
                    status = SeatStatus::Held {
                        until: r.expires_at,
                    }
                }
                _ => {}
            }
        }
        Ok(status)
    }

    /// Lets go of claims that can never hold a seat again: ended ones, and holds whose
    /// `expires_at` the clock (which never goes back) has passed.
    fn forget_ended(&mut self, now: Timestamp) {
        let reservations = &self.reservations;
        for claims in self.claims.values_mut() {
            claims.retain(|id| {
                let r = &reservations[id];
                r.state == Held::Paid || (r.state == Held::Live && r.expires_at > now)
            });
        }
    }
}

/// A date's seat map as its creation makes it (and replay, from the same event).
fn map_created_by(event: &Event) -> Option<SeatMap> {
    let Event::DateCreated {
        date,
        starts_at,
        layout,
        ..
    } = event
    else {
        return None;
    };
    Some(SeatMap::new(
        *date,
        *starts_at,
        layout.clone(),
        date_policy(),
    ))
}

impl Engine {
    /// A new date of the run's concert, as the catalogue's owner makes one.
    fn open_date(&mut self) {
        let event = self
            .catalog
            .create_date(
                boxoffice::domain::ConcertId(1),
                STARTS_AT,
                SeatPlan::Uniform {
                    seat_count: i128::from(SEATS),
                    price: i128::from(PRICE),
                },
            )
            .expect("a date");
        let map = map_created_by(&event).expect("create_date decides a date");
        self.dates.insert(map.date(), map);
        self.catalog.apply(&event);
        self.pending.push(event);
    }
}

/// The general room's waiting tokens in order, with their holders.
fn recovered_line(
    engine: &Engine,
    holders: &BTreeMap<QueueTokenId, UserId>,
) -> Vec<(UserId, QueueTokenId)> {
    let room = engine
        .rooms
        .room(RoomId::General)
        .expect("the general room");
    room.waiting_in_order()
        .filter_map(|token| holders.get(&token).map(|user| (*user, token)))
        .collect()
}

/// The owners as the server keeps them, the log on disk, and what has not committed yet.
struct Engine {
    catalog: Catalog,
    dates: BTreeMap<DateId, SeatMap>,
    ledger: Ledger,
    /// The waiting room: not logged itself, it comes back from its snapshot plus the logged
    /// payments after it (which end their tokens), as the server's queue does.
    rooms: Rooms,
    /// No request here changes it, but it is an owner with snapshots of its own, which the
    /// log's prune must wait for.
    accounts: Accounts,
    log: EventLog,
    pending: Vec<Event>,
    replies: Vec<Reply>,
    /// The owners as of the last commit, which a recovery must give back.
    committed: (BTreeMap<DateId, SeatMap>, Ledger, Catalog, u64),
}

pub struct Sim {
    seed: u64,
    rng: StdRng,
    setup: StoreSetup,
    now: Timestamp,
    engine: Option<Engine>,
    model: Model,
    summary: Summary,
    step: u64,
    /// A broken invariant seen while deciding, raised at the next commit.
    pending_failure: Option<(&'static str, String)>,
    crash_every: u32,
    /// Every committed event, in order: the log on disk must hold a suffix of it (a prune takes
    /// the front), and the final replay applies all of it.
    committed_events: Vec<Event>,
    /// The queue token each buyer holds (as far as the buyer knows).
    tokens: BTreeMap<UserId, QueueTokenId>,
    /// Snapshot files this run damaged. An owner keeps its newest snapshot and one to fall back
    /// on; the run damages at most one of an owner's files at a time, the fault the store is
    /// built to survive (two bad files of one owner after a prune is data loss by design).
    damaged: std::collections::BTreeSet<PathBuf>,
}

fn policies() -> Policies {
    Policies {
        dates: date_policy(),
        balance: balance_policy(),
    }
}

impl Sim {
    /// A fresh store in `dir` (created empty), and the run `seed` fixes.
    /// `crash_every`: the mean number of steps between two deaths of the process (at least 1).
    pub async fn new(seed: u64, dir: &Path, crash_every: u32) -> Result<Self, Failure> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("a directory for the simulated store");
        let setup = StoreSetup {
            sqlite_path: dir.join("boxoffice.db"),
            snapshot_dir: dir.join("snapshots"),
            // What a crash loses is what the simulation did not commit: the disk's own
            // guarantees are not what it tests, so commits need not wait for them.
            sync: SyncMode::Normal,
        };
        let mut sim = Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            setup,
            now: START,
            engine: None,
            model: Model::default(),
            summary: Summary::default(),
            step: 0,
            pending_failure: None,
            crash_every: crash_every.max(1),
            committed_events: Vec::new(),
            tokens: BTreeMap::new(),
            damaged: Default::default(),
        };
        sim.recover().await?;
        let engine = sim.engine.as_mut().expect("recovered");
        let concert = engine
            .catalog
            .create_concert("Simulated", "Hall")
            .expect("a concert");
        engine.catalog.apply(&concert);
        engine.pending.push(concert);
        for _ in 0..DATES {
            engine.open_date();
        }
        sim.commit().await?;
        Ok(sim)
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    fn fail(&self, invariant: &'static str, detail: String) -> Failure {
        Failure {
            seed: self.seed,
            crash_every: self.crash_every,
            step: self.step,
            invariant,
            detail,
        }
    }

    /// Runs `ops` steps, then replays the whole log from empty state against the live owners.
    pub async fn run(&mut self, ops: u64) -> Result<(), Failure> {
        for _ in 0..ops {
            self.one_step().await?;
            self.step += 1;
            self.summary.ops += 1;
        }
        self.commit().await?;
        self.check_histories(None).await?;
        self.check_full_replay()
    }

    async fn one_step(&mut self) -> Result<(), Failure> {
        // One step in `crash_every` kills the process, two thirds of them as a crash between
        // steps and one third as a failed commit.
        if self.rng.gen_range(0..self.crash_every) == 0 {
            return if self.rng.gen_range(0..3) == 0 {
                self.fail_commit().await
            } else {
                self.crash().await
            };
        }
        // Dates are called off rarely, in proportion to the crashes, and a new one takes each
        // one's place.
        if self.rng.gen_range(0..self.crash_every.saturating_mul(20)) == 0 {
            self.cancel_date();
            return Ok(());
        }
        let roll = self.rng.gen_range(0..1_000u32);
        match roll {
            0..=299 => self.hold(),
            300..=399 => self.cancel(),
            400..=549 => self.pay(),
            550..=624 => self.charge(),
            625..=649 => self.transfer(),
            650..=699 => self.refund(),
            700..=769 => self.advance_clock()?,
            770..=784 => self.queue_token(),
            785..=799 => self.waitlist(),
            800..=979 => self.commit().await?,
            980..=994 => self.snapshot().await?,
            _ => self.damage_snapshot(),
        }
        Ok(())
    }

    /// Mostly small steps, sometimes past every hold's TTL, and sometimes to the very
    /// instant a live hold expires (or the millisecond before), where off-by-one rules break.
    fn advance_clock(&mut self) -> Result<(), Failure> {
        // Live holds are among the newest reservations: a hold lives a minute.
        let next_expiry = self
            .model
            .ids
            .iter()
            .rev()
            .take(256)
            .map(|id| &self.model.reservations[id])
            .filter(|r| r.state == Held::Live && r.expires_at > self.now)
            .map(|r| r.expires_at)
            .min();
        match (self.rng.gen_range(0..10), next_expiry) {
            (0, Some(at)) => self.now = at,
            (1, Some(at)) => self.now = at.plus_millis(-1),
            (2 | 3, _) => self.now = self.now.plus_millis(self.rng.gen_range(TTL_MS..3 * TTL_MS)),
            _ => self.now = self.now.plus_millis(self.rng.gen_range(0..5_000)),
        }
        let now = self.now;
        let admitted = self.engine().rooms.tick(now).admitted;
        self.check_queue(&admitted)
    }

    fn engine(&mut self) -> &mut Engine {
        self.engine
            .as_mut()
            .expect("the engine runs between recoveries")
    }

    fn pick_user(&mut self) -> UserId {
        UserId(self.rng.gen_range(1..=USERS))
    }

    /// One of the dates on sale (a cancelled one is followed by a new one), or now and then one
    /// that was called off or one that does not exist.
    fn pick_date(&mut self) -> DateId {
        let roll = self.rng.gen_range(0..100);
        let engine = self.engine();
        let newest = engine.dates.len() as u32;
        let (mut on_sale, mut called_off) = (Vec::new(), Vec::new());
        for (date, map) in &engine.dates {
            if map.is_cancelled() {
                called_off.push(*date);
            } else {
                on_sale.push(*date);
            }
        }
        match roll {
            0 | 1 => DateId(newest + 7),
            2 if !called_off.is_empty() => called_off[called_off.len() - 1],
            _ => on_sale[self.rng.gen_range(0..on_sale.len())],
        }
    }

    /// A reservation some buyer knows of: mostly one the model has in `state` (so the request
    /// can succeed), else any, else one that never was; sent by its holder most of the time, by
    /// another buyer otherwise.
    fn pick_reservation(&mut self, state: Held) -> (UserId, ReservationId) {
        let known = self.model.reservations.len();
        if known == 0 || self.rng.gen_bool(0.05) {
            let user = self.pick_user();
            let date = self.pick_date();
            let seq = self.rng.gen_range(1..500);
            return (user, ReservationId { date, seq });
        }
        // The newest few hundred are enough to find one in `state` among.
        let (model, now) = (&self.model, self.now);
        let fitting: Vec<(ReservationId, UserId)> = model
            .ids
            .iter()
            .rev()
            .take(256)
            .map(|id| (*id, &model.reservations[id]))
            .filter(|(_, r)| r.state == state && (state != Held::Live || r.expires_at > now))
            .map(|(id, r)| (id, r.user))
            .collect();
        let (id, holder) = if !fitting.is_empty() && self.rng.gen_bool(0.8) {
            fitting[self.rng.gen_range(0..fitting.len())]
        } else {
            let id = self.model.ids[self.rng.gen_range(0..known)];
            (id, self.model.reservations[&id].user)
        };
        let user = if self.rng.gen_bool(0.9) {
            holder
        } else {
            self.pick_user()
        };
        (user, id)
    }

    /// What the date's actor does before every decision: its due expiries become events.
    fn sweep(&mut self, date: DateId) {
        let now = self.now;
        let engine = self.engine();
        let Some(map) = engine.dates.get_mut(&date) else {
            return;
        };
        for expired in map.expire_due(now) {
            map.apply(&expired);
            engine.pending.push(expired);
        }
        self.make_offers(date);
    }

    /// What the date's actor does before and after every message: seats that came back go to
    /// the waiting list's entries they fit, in list order, each offer a hold of its own.
    fn make_offers(&mut self, date: DateId) {
        let now = self.now;
        let engine = self.engine();
        let Some(map) = engine.dates.get_mut(&date) else {
            return;
        };
        let mut offers = Vec::new();
        for (seq, _) in map.offer_candidates(now) {
            if !map.has_free_seats() {
                break;
            }
            map.settle();
            if let Ok(offer) = map.offer_hold(seq, now, &HeldAcrossDates::default()) {
                map.apply(&offer);
                offers.push(offer);
            }
        }
        let made = offers.len() as u64;
        for offer in offers {
            let Event::HoldPlaced {
                reservation,
                user,
                seats,
                expires_at,
                ..
            } = &offer
            else {
                unreachable!("an offer is a hold")
            };
            // The listed buyer finds it among their reservations once it is committed.
            engine.replies.push(Reply::Held {
                id: *reservation,
                user: *user,
                seats: seats.to_vec(),
                expires_at: *expires_at,
            });
            engine.ledger.apply(&offer);
            engine.pending.push(offer);
        }
        self.summary.offers += made;
    }

    /// A buyer joins a date's waiting list (for 1–4 seats), or leaves it.
    fn waitlist(&mut self) {
        let (user, date) = (self.pick_user(), self.pick_date());
        self.sweep(date);
        let now = self.now;
        let leave = self.rng.gen_bool(0.3);
        let quantity = match self.rng.gen_range(0..20) {
            0 => 0,
            1 => 99,
            _ => self.rng.gen_range(1..=4),
        };
        let engine = self.engine();
        let Some(map) = engine.dates.get(&date) else {
            return self.refused(DomainError::NotFound);
        };
        let decided = if leave {
            match map.waitlist().entry_of(user) {
                Some(entry) => map.leave_waitlist(user, entry.id, now),
                None => Err(DomainError::NotFound),
            }
        } else {
            match map.join_waitlist(user, quantity, None, now) {
                Ok(Joined::New(event)) => Ok(event),
                Ok(Joined::Already(_)) => return,
                Err(error) => Err(error),
            }
        };
        match decided {
            Ok(event) => {
                let reply = match &event {
                    Event::WaitlistLeft {
                        offer: Some(held), ..
                    } => Reply::Cancelled(*held),
                    _ => Reply::Listed,
                };
                self.accept(event, reply);
                self.make_offers(date);
            }
            Err(error) => self.refused(error),
        }
    }

    /// Applies a decided event to every owner it touches and queues it for the commit.
    fn accept(&mut self, event: Event, reply: Reply) {
        let engine = self.engine();
        for map in engine.dates.values_mut() {
            map.apply(&event);
        }
        engine.ledger.apply(&event);
        engine.pending.push(event);
        engine.replies.push(reply);
    }

    fn refused(&mut self, _error: DomainError) {
        self.summary.refused += 1;
    }

    /// The token a buyer sends: mostly their own, sometimes another buyer's or one that never
    /// was (hostile input).
    fn presented_token(&mut self, user: UserId) -> QueueTokenId {
        let forged = QueueTokenId::in_room(RoomId::General, self.rng.gen());
        match self.rng.gen_range(0..20) {
            0 => forged,
            1 => {
                let other = self.pick_user();
                self.tokens.get(&other).copied().unwrap_or(forged)
            }
            _ => self.tokens.get(&user).copied().unwrap_or(forged),
        }
    }

    /// The check the server makes before a hold or a payment reaches the date.
    fn admitted(&mut self, user: UserId, token: QueueTokenId) -> bool {
        let now = self.now;
        match self.engine().rooms.check_admitted(token, user, now) {
            Ok(()) => true,
            Err(error) => {
                // As a client does: a token that ended or was lost is replaced at once.
                if matches!(
                    error,
                    DomainError::QueueTokenInvalid | DomainError::QueueTokenExpired
                ) && self.tokens.get(&user) == Some(&token)
                {
                    self.tokens.remove(&user);
                    self.take_token(user);
                }
                self.refused(error);
                false
            }
        }
    }

    fn hold(&mut self) {
        let (user, date) = (self.pick_user(), self.pick_date());
        let token = self.presented_token(user);
        if !self.admitted(user, token) {
            return;
        }
        let count = self.rng.gen_range(1..=3);
        let seats: Vec<SeatNo> = (0..count)
            .map(|_| {
                // Seat 0 and seats past the end are hostile input.
                if self.rng.gen_bool(0.03) {
                    SeatNo(self.rng.gen_range(0..3) * (SEATS + 1))
                } else {
                    SeatNo(self.rng.gen_range(1..=SEATS))
                }
            })
            .collect();
        self.sweep(date);
        let now = self.now;
        // A third of the holds ask the date for its best seats instead of naming them.
        let choice = if self.rng.gen_range(0..3) == 0 {
            SeatChoice::BestAvailable {
                quantity: seats.len() as u32,
                section: None,
            }
        } else {
            SeatChoice::Named(seats.iter().copied().collect())
        };
        let decided = match self.engine().dates.get_mut(&date) {
            Some(map) => {
                map.settle();
                map.place_choice_among(user, &choice, now, None, &HeldAcrossDates::default())
            }
            None => Err(DomainError::NotFound),
        };
        if decided.is_ok() && matches!(choice, SeatChoice::BestAvailable { .. }) {
            self.summary.best_available_holds += 1;
        }
        match decided {
            Ok(event) => {
                let Event::HoldPlaced {
                    reservation,
                    seats,
                    expires_at,
                    ..
                } = &event
                else {
                    unreachable!("a hold places a reservation")
                };
                let reply = Reply::Held {
                    id: *reservation,
                    user,
                    seats: seats.to_vec(),
                    expires_at: *expires_at,
                };
                self.accept(event, reply);
            }
            Err(error) => {
                // Invariant 4: a seat refused as taken is held live or sold, swept or not.
                if let DomainError::SeatUnavailable(seat) = error {
                    let status = self.engine().dates[&date].seat_status(seat, now);
                    if !matches!(status, Some(SeatStatus::Held { .. } | SeatStatus::Sold)) {
                        self.summary.refused += 1;
                        return self.broken_later(
                            "4 (an expired hold never blocks)",
                            format!("seat {} of {date} refused while {status:?}", seat.0),
                        );
                    }
                }
                self.refused(error);
            }
        }
    }

    fn cancel(&mut self) {
        let (user, id) = self.pick_reservation(Held::Live);
        self.sweep(id.date);
        let now = self.now;
        let decided = match self.engine().dates.get(&id.date) {
            Some(map) => map.cancel_hold(user, id, now),
            None => Err(DomainError::NotFound),
        };
        match decided {
            Ok(event) => self.accept(event, Reply::Cancelled(id)),
            Err(error) => self.refused(error),
        }
    }

    fn pay(&mut self) {
        let (user, id) = self.pick_reservation(Held::Live);
        let token = self.presented_token(user);
        if !self.admitted(user, token) {
            return;
        }
        self.sweep(id.date);
        let now = self.now;
        let engine = self.engine();
        let decided = match engine.dates.get(&id.date) {
            Some(map) => map
                .prepare_payment(user, id, now, None, Some(token))
                .and_then(|prepared| engine.ledger.settle(&prepared)),
            None => Err(DomainError::NotFound),
        };
        match decided {
            Ok(event) => {
                let Event::PaymentCompleted { amount, .. } = &event else {
                    unreachable!("a payment completes")
                };
                let reply = Reply::Paid {
                    id,
                    user,
                    amount: *amount,
                    token,
                };
                self.accept(event, reply);
            }
            Err(error) => self.refused(error),
        }
    }

    fn charge(&mut self) {
        let user = self.pick_user();
        let amount: i128 = match self.rng.gen_range(0..20) {
            0 => 0,
            1 => -5,
            2 => i128::from(u64::MAX),
            _ => self.rng.gen_range(1..=5_000),
        };
        let now = self.now;
        match self.engine().ledger.charge(user, amount, now, None) {
            Ok(event) => {
                let reply = Reply::Charged {
                    user,
                    amount: amount as u64,
                };
                self.accept(event, reply);
            }
            Err(error) => self.refused(error),
        }
    }

    fn refund(&mut self) {
        let (user, id) = self.pick_reservation(Held::Paid);
        self.sweep(id.date);
        let now = self.now;
        let engine = self.engine();
        let decided = match engine.dates.get(&id.date) {
            Some(map) => map
                .prepare_refund(user, id, now, None)
                .and_then(|prepared| engine.ledger.settle(&prepared)),
            None => Err(DomainError::NotFound),
        };
        match decided {
            Ok(event) => {
                let Event::RefundCompleted { payer, amount, .. } = &event else {
                    unreachable!("a refund completes")
                };
                let reply = Reply::Refunded {
                    id,
                    payer: *payer,
                    amount: *amount,
                };
                self.accept(event, reply);
            }
            Err(error) => self.refused(error),
        }
    }

    fn transfer(&mut self) {
        let (user, id) = self.pick_reservation(Held::Paid);
        // Mostly another buyer; sometimes the holder themself or a name that is no user.
        let to = match self.rng.gen_range(0..10) {
            0 => None,
            1 => Some(user),
            _ => Some(self.pick_user()),
        };
        self.sweep(id.date);
        let now = self.now;
        let decided = match self.engine().dates.get(&id.date) {
            Some(map) => map.prepare_transfer(user, to, id, now, None),
            None => Err(DomainError::NotFound),
        };
        match decided {
            Ok(event) => {
                let Event::TransferCompleted { to, .. } = &event else {
                    unreachable!("a transfer completes")
                };
                let reply = Reply::Transferred { id, to: *to };
                self.accept(event, reply);
            }
            Err(error) => self.refused(error),
        }
    }

    /// The administrator calls a date off; the sale goes on with a new date in its place.
    fn cancel_date(&mut self) {
        let date = self.pick_date();
        self.sweep(date);
        let now = self.now;
        let engine = self.engine();
        let decided = match engine.dates.get(&date) {
            Some(map) => map
                .prepare_cancellation(now)
                .and_then(|prepared| engine.ledger.settle(&prepared)),
            None => Err(DomainError::NotFound),
        };
        let event = match decided {
            Ok(event) => event,
            Err(error) => return self.refused(error),
        };
        let Event::DateCancelled {
            refunds,
            cancelled_holds,
            ..
        } = &event
        else {
            unreachable!("a cancellation")
        };
        let reply = Reply::DateCancelled {
            refunds: refunds
                .iter()
                .map(|r| (ReservationId { date, seq: r.seq }, r.payer, r.amount))
                .collect(),
            holds: cancelled_holds
                .iter()
                .map(|seq| ReservationId { date, seq: *seq })
                .collect(),
        };
        self.accept(event, reply);
        self.engine().open_date();
        self.summary.cancelled_dates += 1;
    }

    /// Records a broken invariant found while deciding, to be raised at the next check.
    fn broken_later(&mut self, invariant: &'static str, detail: String) {
        if self.pending_failure.is_none() {
            self.pending_failure = Some((invariant, detail));
        }
    }

    /// The log commits what is pending; the replies become true and the model learns them.
    async fn commit(&mut self) -> Result<(), Failure> {
        if let Some((invariant, detail)) = self.pending_failure.take() {
            return Err(self.fail(invariant, detail));
        }
        let engine = self.engine();
        let events = std::mem::take(&mut engine.pending);
        let replies = std::mem::take(&mut engine.replies);
        if !events.is_empty() {
            let run = events.iter().map(|event| Appended {
                event,
                key: None,
                after_commit: None,
            });
            let (_, durable) = engine.log.append_many(run).expect("a run of events");
            durable.wait().await;
        }
        self.committed_events.extend(events.iter().cloned());
        let engine = self.engine();
        // The log's after-commit share: a committed payment ends its token.
        for event in &events {
            engine.rooms.apply(event);
        }
        engine.committed = (
            engine.dates.clone(),
            engine.ledger.clone(),
            engine.catalog.clone(),
            engine.log.last_sequence(),
        );
        self.summary.commits += 1;
        self.summary.events += events.len() as u64;
        for reply in &replies {
            if let Some(wrong) = self.model.wrong_amount(reply) {
                return Err(self.fail("2 (money: every amount as the contract prices it)", wrong));
            }
            self.model.learn(reply);
        }
        self.model.forget_ended(self.now);
        let paid_now = replies
            .iter()
            .filter(|r| matches!(r, Reply::Paid { .. }))
            .count();
        let paid = self.model.paid_tokens.len();
        self.check_paid_tokens(paid - paid_now)?;
        self.check_against_model()
    }

    /// No token that paid (from the `from`th on) admits its holder again.
    fn check_paid_tokens(&self, from: usize) -> Result<(), Failure> {
        let engine = self.engine.as_ref().expect("running");
        for (user, token) in &self.model.paid_tokens[from..] {
            if engine.rooms.check_admitted(*token, *user, self.now).is_ok() {
                return Err(self.fail(
                    "5 (a payment ends its queue token)",
                    format!("{user}'s token still admits after it paid"),
                ));
            }
        }
        Ok(())
    }

    /// A buyer takes a queue token (or gets the live one back), or polls the one they hold.
    fn queue_token(&mut self) {
        let user = self.pick_user();
        self.take_token(user);
    }

    fn take_token(&mut self, user: UserId) {
        let now = self.now;
        let random: u128 = self.rng.gen();
        let held = self.tokens.get(&user).copied();
        let engine = self.engine.as_mut().expect("running");
        if let (Some(token), true) = (held, self.rng.gen_bool(0.7)) {
            match engine.rooms.poll(token, user, now) {
                Ok(Lookup::Live(_)) => return,
                _ => {
                    self.tokens.remove(&user);
                }
            }
        }
        let (status, new) = engine
            .rooms
            .issue(RoomId::General, user, random, now)
            .expect("the general room exists");
        self.tokens.insert(user, status.token);
        self.model.holders.insert(status.token, user);
        if new && matches!(status.standing, Standing::Waiting { .. }) {
            self.model.line.push((user, status.token));
        }
    }

    /// Invariant 5 after the room ticked: never more active than `max_active`, nobody admitted
    /// while a token issued before theirs still waits, and every waiting token's position is
    /// the number of tokens still waiting ahead of it, plus one.
    fn check_queue(&mut self, admitted: &[QueueTokenId]) -> Result<(), Failure> {
        let now = self.now;
        let engine = self.engine.as_ref().expect("running");
        let room = engine
            .rooms
            .room(RoomId::General)
            .expect("the general room");
        if room.active_len() > queue_policy().max_active as usize {
            return Err(self.fail(
                "5 (admission never exceeds max_active)",
                format!("{} tokens active", room.active_len()),
            ));
        }
        let standings: Vec<Option<Standing>> = self
            .model
            .line
            .iter()
            .map(
                |(user, token)| match engine.rooms.poll(*token, *user, now) {
                    Ok(Lookup::Live(status)) => Some(status.standing),
                    _ => None,
                },
            )
            .collect();
        let mut ahead = 0u64;
        for (i, standing) in standings.iter().enumerate() {
            match standing {
                Some(Standing::Waiting { position, .. }) => {
                    ahead += 1;
                    if *position != ahead {
                        return Err(self.fail(
                            "5 (positions reported are exact)",
                            format!("a token is told {position}, {ahead} wait up to it"),
                        ));
                    }
                }
                Some(Standing::Active) if admitted.contains(&self.model.line[i].1) && ahead > 0 => {
                    return Err(self.fail(
                        "5 (admission follows FIFO order)",
                        format!("a token was admitted with {ahead} issued before it still waiting"),
                    ));
                }
                _ => {}
            }
        }
        // Tokens no longer waiting have left the line.
        let mut standings = standings.into_iter();
        self.model
            .line
            .retain(|_| matches!(standings.next(), Some(Some(Standing::Waiting { .. }))));
        Ok(())
    }

    /// Each user's balance history as the history database serves it (its `newest` entries, or
    /// all of it), against the acknowledged changes: every payment written with its history
    /// entry, nothing lost to a crash, nothing twice.
    async fn check_histories(&self, newest: Option<usize>) -> Result<(), Failure> {
        let engine = self.engine.as_ref().expect("running");
        let reader = engine.log.reader().clone();
        reader.caught_up().await;
        let window = newest.unwrap_or(usize::MAX);
        for user in (1..=USERS).map(UserId) {
            let mut stored = Vec::new();
            let mut request = PageRequest::first(ListKind::BalanceHistory, PageLimit::MAX);
            loop {
                let page = reader.ledger_page(user, &request).map_err(|error| {
                    self.fail(
                        "2 (histories)",
                        format!("the history cannot be read: {error}"),
                    )
                })?;
                stored.extend(
                    page.entries
                        .iter()
                        .map(|e| (e.kind, e.amount, e.balance_after)),
                );
                match page.next {
                    Some(cursor) if stored.len() < window => request.cursor = Some(cursor),
                    _ => break,
                }
            }
            stored.truncate(window);
            let expected: Vec<(EntryKind, u64, u64)> = self
                .model
                .history
                .get(&user)
                .into_iter()
                .flatten()
                .rev()
                .take(window)
                .copied()
                .collect();
            if stored != expected {
                let at = stored
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(stored.len().min(expected.len()));
                return Err(self.fail(
                    "2/3 (every acknowledged change in the user's history, once)",
                    format!(
                        "{user}'s history, newest first, differs at entry {at}: stored {:?}, acknowledged {:?}",
                        stored.get(at),
                        expected.get(at)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Invariants 1, 2 and 4, and every acknowledged reply, on the committed owners.
    fn check_against_model(&self) -> Result<(), Failure> {
        let engine = self.engine.as_ref().expect("running");
        let now = self.now;
        for (date, map) in &engine.dates {
            for seat in 1..=SEATS {
                let seat = SeatNo(seat);
                let live = map.seat_status(seat, now);
                let expected = self.model.seat(*date, seat, now).map_err(|(a, b)| {
                    self.fail(
                        "1 (a seat in at most one held-or-paid reservation)",
                        format!("seat {} of {date} acknowledged to {a} and to {b}", seat.0),
                    )
                })?;
                if live != Some(expected) {
                    return Err(self.fail(
                        "1/4 (seat states agree with what was acknowledged)",
                        format!(
                            "seat {} of {date} is {live:?}, the model says {expected:?}",
                            seat.0
                        ),
                    ));
                }
            }
        }
        for user in 1..=USERS {
            let user = UserId(user);
            let balance = i128::from(engine.ledger.balance(user));
            let expected = self.model.balances.get(&user).copied().unwrap_or(0);
            if balance != expected || expected < 0 {
                return Err(self.fail(
                    "2 (money: charges − payments + refunds, never negative)",
                    format!("{user} has {balance}, the model says {expected}"),
                ));
            }
        }
        Ok(())
    }

    /// The process dies: what was not committed is lost, and the owners come back from disk.
    async fn crash(&mut self) -> Result<(), Failure> {
        self.summary.crashes += 1;
        self.restart().await
    }

    /// A commit fails: the log's writer stops the process before anything of that batch is
    /// acknowledged, so it is a crash at the commit.
    async fn fail_commit(&mut self) -> Result<(), Failure> {
        self.summary.failed_commits += 1;
        self.restart().await
    }

    async fn restart(&mut self) -> Result<(), Failure> {
        let Engine { log, committed, .. } = self.engine.take().expect("running");
        // The pending events and replies are gone with the process; the files stay.
        log.close().await;
        drop(log);
        let (dates, ledger, catalog, seq) = committed;
        self.pending_failure = None;
        self.recover().await?;
        let recovered = self.engine.as_ref().expect("recovered");
        if recovered.log.last_sequence() != seq {
            return Err(self.fail(
                "3 (acknowledged changes survive)",
                format!(
                    "the log ends at {}, the last commit at {seq}",
                    recovered.log.last_sequence()
                ),
            ));
        }
        if recovered.dates != dates || recovered.ledger != ledger || recovered.catalog != catalog {
            let what = if recovered.dates != dates {
                "a date's seat map"
            } else if recovered.ledger != ledger {
                "the ledger"
            } else {
                "the catalogue"
            };
            return Err(self.fail(
                "6 (recovery gives back the committed state)",
                format!("{what} differs from the live one at the last commit"),
            ));
        }
        self.check_paid_tokens(0)?;
        self.check_histories(Some(16)).await?;
        // The room comes back as last saved (its arrivals are not logged): the line to hold it
        // to from here is the one it restored.
        let restored: Vec<(UserId, QueueTokenId)> = recovered_line(
            self.engine.as_ref().expect("recovered"),
            &self.model.holders,
        );
        self.model.line = restored;
        self.check_queue(&[])?;
        self.check_against_model()
    }

    async fn recover(&mut self) -> Result<(), Failure> {
        // A broken rule met on replay stops recovery with a panic, as it stops the server:
        // here it is a failure of this step.
        let setup = &self.setup;
        let recovered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recover(setup, policies())))
                .map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    self.fail("recovery", format!("recovery stopped: {message}"))
                })?
                .map_err(|error| {
                    self.fail("recovery", format!("the store did not recover: {error}"))
                })?;
        let seq = recovered.log.last_sequence();
        let dates = recovered.dates;
        // As the queue's owner starts: the snapshot, the payments after it, then a tick.
        let mut rooms = Rooms::restore(
            queue_policy(),
            [],
            recovered.queue.as_ref().map(|saved| &saved.snapshot),
            self.now,
        );
        for event in recovered.queue.iter().flat_map(|saved| &saved.later_events) {
            rooms.apply(event);
        }
        rooms.tick(self.now);
        self.engine = Some(Engine {
            rooms,
            accounts: recovered.accounts,
            committed: (
                dates.clone(),
                recovered.ledger.clone(),
                recovered.catalog.clone(),
                seq,
            ),
            catalog: recovered.catalog,
            dates,
            ledger: recovered.ledger,
            log: recovered.log,
            pending: Vec::new(),
            replies: Vec::new(),
        });
        Ok(())
    }

    /// An owner writes a snapshot of its committed state, as the server does between messages,
    /// and the log is pruned below what every owner's snapshots cover, as the server does after
    /// each snapshot. Now and then the process dies in the middle of either.
    async fn snapshot(&mut self) -> Result<(), Failure> {
        let dir = self.setup.snapshot_dir.clone();
        let dates: Vec<DateId> = self.engine().committed.0.keys().copied().collect();
        let which = self.rng.gen_range(0..dates.len() + 4);
        let engine = self.engine();
        let (committed_dates, ledger, catalog, seq) = &engine.committed;
        let seq = *seq;
        let (owner, bytes) = match which {
            0 => (LEDGER_OWNER.to_owned(), snapshot::encode(ledger, seq)),
            1 => (CATALOG_OWNER.to_owned(), snapshot::encode(catalog, seq)),
            // The room as it is: it holds the committed payments' shares and no others.
            2 => {
                let rooms: RoomsSnapshot = engine.rooms.to_snapshot();
                (QUEUE_OWNER.to_owned(), snapshot::encode(&rooms, seq))
            }
            3 => (
                ACCOUNTS_OWNER.to_owned(),
                snapshot::encode(&engine.accounts, seq),
            ),
            n => {
                let date = dates[n - 4];
                (
                    date_owner(date),
                    snapshot::encode(&committed_dates[&date], seq),
                )
            }
        };
        match self.rng.gen_range(0..40) {
            // Killed while writing: a torn temporary file is all there is.
            0 => {
                let torn = &bytes[..self.rng.gen_range(0..bytes.len())];
                let temp = dir.join(format!(".{}.tmp", snapshot::file_name(&owner, seq)));
                std::fs::write(temp, torn).expect("a torn snapshot write");
                self.summary.torn_snapshot_writes += 1;
                self.crash().await
            }
            // Killed after the new file took its name, before the older ones were removed.
            1 => {
                std::fs::write(dir.join(snapshot::file_name(&owner, seq)), &bytes)
                    .expect("a snapshot on disk");
                self.damaged
                    .remove(&dir.join(snapshot::file_name(&owner, seq)));
                self.summary.torn_snapshot_writes += 1;
                self.crash().await
            }
            _ => {
                let path = snapshot::write_atomically(&dir, &owner, seq, &bytes)
                    .expect("a snapshot on disk");
                self.damaged.remove(&path);
                self.summary.snapshots += 1;
                self.prune_log().await
            }
        }
    }

    /// The server's rule: rows at or below every owner's older kept snapshot go. Sometimes the
    /// process dies with the prune just handed to the log's writer.
    async fn prune_log(&mut self) -> Result<(), Failure> {
        let dir = self.setup.snapshot_dir.clone();
        let listing = snapshot::Listing::read(&dir);
        let engine = self.engine();
        let mut owners = vec![
            LEDGER_OWNER.to_owned(),
            CATALOG_OWNER.to_owned(),
            QUEUE_OWNER.to_owned(),
            ACCOUNTS_OWNER.to_owned(),
        ];
        owners.extend(engine.dates.keys().map(|date| date_owner(*date)));
        let floor = owners
            .iter()
            .map(|owner| {
                // The owner's kept snapshots, oldest first, under the server's own rule.
                let mut seqs: Vec<u64> = listing
                    .of(owner)
                    .iter()
                    .take(snapshot::SNAPSHOTS_KEPT)
                    .map(|(seq, _)| *seq)
                    .collect();
                seqs.reverse();
                snapshot::prune_floor(&seqs)
            })
            .min()
            .unwrap_or(0);
        if floor == 0 {
            return Ok(());
        }
        engine.log.prune_through(floor);
        self.summary.prunes += 1;
        if self.rng.gen_range(0..25) == 0 {
            self.summary.crashes_in_prune += 1;
            return self.crash().await;
        }
        Ok(())
    }

    /// A snapshot is damaged on disk: a byte of its payload flipped, or the file cut short.
    /// Recovery must notice and fall back to the owner's other snapshot.
    fn damage_snapshot(&mut self) {
        let dir = self.setup.snapshot_dir.clone();
        self.damaged.retain(|path| path.exists());
        let owner_of = |path: &Path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.rsplit_once('-').map(|(owner, _)| owner.to_owned())
        };
        let spoiled: std::collections::BTreeSet<String> =
            self.damaged.iter().filter_map(|p| owner_of(p)).collect();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "bin"))
            .filter(|path| owner_of(path).is_some_and(|owner| !spoiled.contains(&owner)))
            .collect();
        files.sort();
        if files.is_empty() {
            return;
        }
        let path = files[self.rng.gen_range(0..files.len())].clone();
        let mut bytes = std::fs::read(&path).expect("a snapshot file");
        const HEADER: usize = 40;
        if bytes.len() <= HEADER {
            return;
        }
        if self.rng.gen_bool(0.5) {
            let at = self.rng.gen_range(HEADER..bytes.len());
            bytes[at] ^= 1 << self.rng.gen_range(0..8);
        } else {
            bytes.truncate(self.rng.gen_range(HEADER..bytes.len()));
        }
        std::fs::write(&path, bytes).expect("the damaged file written");
        self.damaged.insert(path);
        self.summary.damaged_snapshots += 1;
    }

    /// Invariant 6 from nothing: every event of the log, applied in order to empty owners,
    /// gives the live owners.
    fn check_full_replay(&self) -> Result<(), Failure> {
        let engine = self.engine.as_ref().expect("running");
        let on_disk = self
            .log_file()
            .and_then(|conn| read_events_after(&conn, 0).map_err(|e| e.to_string()))
            .map_err(|error| self.fail("6 (replay)", format!("the log cannot be read: {error}")))?;
        // The log holds the newest committed events, in order; a prune only takes the front.
        let kept_from = self.committed_events.len().saturating_sub(on_disk.len());
        let on_disk_match = on_disk.len() <= self.committed_events.len()
            && on_disk
                .iter()
                .map(|(_, event)| event)
                .eq(self.committed_events[kept_from..].iter());
        if !on_disk_match {
            return Err(self.fail(
                "3 (the log holds every committed event after its prune point)",
                format!(
                    "{} events on disk are not the last of the {} committed",
                    on_disk.len(),
                    self.committed_events.len()
                ),
            ));
        }
        let mut catalog = Catalog::default();
        let mut ledger = Ledger::new(balance_policy());
        let mut dates: BTreeMap<DateId, SeatMap> = BTreeMap::new();
        for event in &self.committed_events {
            catalog.apply(event);
            if let Some(map) = map_created_by(event) {
                dates.insert(map.date(), map);
            }
            ledger.apply(event);
            for map in dates.values_mut() {
                map.apply(event);
            }
        }
        if dates != engine.dates || ledger != engine.ledger || catalog != engine.catalog {
            return Err(self.fail(
                "6 (replay from empty state equals live)",
                format!("{} events replayed", self.committed_events.len()),
            ));
        }
        Ok(())
    }

    fn log_file(&self) -> Result<rusqlite::Connection, String> {
        rusqlite::Connection::open_with_flags(
            &self.setup.sqlite_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(|e| e.to_string())
    }

    /// The log as stored: every committed batch's sequence numbers and its events' bytes, in
    /// order. Two runs of one seed must give the same bytes.
    pub fn log_bytes(&self) -> Vec<u8> {
        let conn = self.log_file().expect("the log opens");
        let mut stmt = conn
            .prepare("SELECT first_seq, last_seq, version, events FROM batches ORDER BY last_seq")
            .expect("the batches table");
        let mut rows = stmt.query([]).expect("the batches read");
        let mut bytes = Vec::new();
        while let Some(row) = rows.next().expect("a batch") {
            for column in 0..3 {
                bytes
                    .extend_from_slice(&row.get::<_, i64>(column).expect("a number").to_le_bytes());
            }
            bytes.extend_from_slice(&row.get::<_, Vec<u8>>(3).expect("the events"));
        }
        bytes
    }

    pub async fn close(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.log.close().await;
        }
    }
}
