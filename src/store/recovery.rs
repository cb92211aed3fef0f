//! Recovery at start: the newest valid snapshot of every owner, then the log after it. Each
//! owner applies only the events newer than its own snapshot, so owners snapshotted at
//! different moments end in one consistent state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::config::Settings;
use crate::domain::accounts::Accounts;
use crate::domain::admission::QueueSnapshot;
use crate::domain::catalog::Catalog;
use crate::domain::idempotency::PendingRecord;
use crate::domain::ledger::{BalancePolicy, Ledger, LedgerEntry};
use crate::domain::seat_map::{HoldPolicy, Reservation, ReservationChange, SeatMap};
use crate::domain::{DateId, Event, UserId};

use super::legacy::{BookV2, DateStart, LedgerStart};
use super::log::{CarriedRows, EventLog, EventRows, StoreError};
use super::snapshot::{self, SnapshotError};

pub const ACCOUNTS_OWNER: &str = "accounts";
pub const CATALOG_OWNER: &str = "catalog";
pub const LEDGER_OWNER: &str = "ledger";
/// Written by releases that kept every idempotency record in memory; now only read, once.
pub const IDEMPOTENCY_OWNER: &str = "idempotency";
pub const QUEUE_OWNER: &str = "queue";

pub fn date_owner(date: DateId) -> String {
    format!("date-{}", date.0)
}

/// State as of the moment the process stopped, ready to hand to the actors.
pub struct Recovered {
    pub accounts: Accounts,
    pub catalog: Catalog,
    pub ledger: Ledger,
    pub dates: BTreeMap<DateId, SeatMap>,
    /// The waiting room as last saved (it is not logged: see README, "Durability").
    pub queue: Option<QueueSnapshot>,
    pub log: EventLog,
    pub replayed_events: usize,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Setup(String),
}

pub fn hold_policy(settings: &Settings) -> HoldPolicy {
    HoldPolicy {
        ttl_ms: (settings.holds.ttl_seconds as i64).saturating_mul(1000),
        max_seats_per_user: settings.holds.max_seats_per_user,
    }
}

pub fn balance_policy(settings: &Settings) -> BalancePolicy {
    BalancePolicy {
        max_charge: settings.balance.max_charge,
        max_balance: settings.balance.max_balance,
    }
}

fn prepare_snapshot_dir(dir: &Path) -> Result<(), RecoveryError> {
    if dir.exists() && !dir.is_dir() {
        return Err(RecoveryError::Setup(format!(
            "storage.snapshot_dir {} is a file, not a directory; point it at a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        RecoveryError::Setup(format!(
            "cannot create storage.snapshot_dir {}: {e}; check the path and permissions",
            dir.display()
        ))
    })?;
    let probe = dir.join(".boxoffice-write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            RecoveryError::Setup(format!(
                "storage.snapshot_dir {} is not writable: {e}; check permissions",
                dir.display()
            ))
        })
}

/// An owner's starting point: its newest readable snapshot, or nothing (replay from the start).
struct Start<T> {
    state: T,
    seq: u64,
}

fn start<T: DeserializeOwned>(
    dir: &Path,
    owner: &str,
    empty: impl FnOnce() -> T,
) -> Result<Start<T>, RecoveryError> {
    Ok(match snapshot::load_newest::<T>(dir, owner)? {
        Some((state, seq)) => Start { state, seq },
        None => Start {
            state: empty(),
            seq: 0,
        },
    })
}

pub fn recover(settings: &Settings) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let dir = &settings.storage.snapshot_dir;
    prepare_snapshot_dir(dir)?;

    let accounts = start(dir, ACCOUNTS_OWNER, Accounts::default)?;
    let catalog = start(dir, CATALOG_OWNER, Catalog::default)?;
    let ledger = match snapshot::load_newest_upgrading::<LedgerStart>(
        dir,
        LEDGER_OWNER,
        Some(super::legacy::ledger_from_older),
    )? {
        Some((state, seq)) => Start { state, seq },
        None => Start {
            state: LedgerStart {
                ledger: Ledger::new(balance_policy(settings)),
                history: Vec::new(),
                next_entry: 1,
            },
            seq: 0,
        },
    };
    let old_book = snapshot::load_newest_upgrading::<BookV2>(
        dir,
        IDEMPOTENCY_OWNER,
        Some(super::legacy::book_from_older),
    )?;
    let queue = snapshot::load_newest::<QueueSnapshot>(dir, QUEUE_OWNER)?.map(|(q, _)| q);
    let mut dates: BTreeMap<DateId, Start<SeatMap>> = BTreeMap::new();
    let mut old_reservations = Vec::new();
    for info in catalog.state.dates() {
        let found = snapshot::load_newest_upgrading::<DateStart>(
            dir,
            &date_owner(info.id),
            Some(super::legacy::date_from_older),
        )?;
        let start = match found {
            Some((DateStart { map, history }, seq)) => {
                old_reservations.extend(history);
                Start { state: map, seq }
            }
            None => Start {
                state: SeatMap::new(info.id, info.seat_count, info.price, hold_policy(settings)),
                seq: 0,
            },
        };
        dates.insert(info.id, start);
    }
    // An owner without a snapshot needs the log from its beginning.
    let replay_from = dates
        .values()
        .map(|d| d.seq)
        .chain([accounts.seq, catalog.seq, ledger.seq])
        .chain(old_book.as_ref().map(|(_, seq)| *seq))
        .min()
        .unwrap_or(0);
    let super::log::OpenedLog {
        log,
        events,
        oldest_stored,
        rows_from,
        rows_through,
    } = EventLog::open(
        &settings.storage.sqlite_path,
        settings.storage.synchronous,
        replay_from,
    )?;
    // Rows at or below a snapshot may have been pruned. An owner whose history starts below
    // the oldest stored row cannot be rebuilt: refuse rather than start with silent losses.
    let missing_history = |owner: &str, seq: u64| match oldest_stored {
        Some(oldest) if oldest > seq + 1 => Err(RecoveryError::Setup(format!(
            "{owner} needs the log from sequence {} but it starts at {oldest} (older rows were \
             pruned below snapshots that are now missing or unreadable); restore \
             storage.snapshot_dir and storage.sqlite_path from the same backup",
            seq + 1
        ))),
        _ => Ok(()),
    };
    missing_history(ACCOUNTS_OWNER, accounts.seq)?;
    missing_history(CATALOG_OWNER, catalog.seq)?;
    missing_history(LEDGER_OWNER, ledger.seq)?;
    if let Some((_, seq)) = &old_book {
        missing_history(IDEMPOTENCY_OWNER, *seq)?;
    }
    let created_in_log: std::collections::BTreeSet<DateId> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::DateCreated { date, .. } => Some(*date),
            _ => None,
        })
        .collect();
    for (date, start) in &dates {
        // A date without a snapshot is whole if its creation is still in the log.
        if start.seq > 0 || !created_in_log.contains(date) {
            missing_history(&date_owner(*date), start.seq)?;
        }
    }

    let LedgerStart {
        ledger: ledger_state,
        history: old_history,
        next_entry,
    } = ledger.state;
    carry_over(
        &log,
        dir,
        Carry {
            old_book,
            old_history,
            next_entry,
            ledger_seq: ledger.seq,
            old_reservations,
            date_seqs: dates.iter().map(|(id, d)| (*id, d.seq)).collect(),
            rows_from,
            rows_through,
        },
        &events,
    );
    let (mut accounts_state, mut catalog_state, mut ledger_state) =
        (accounts.state, catalog.state, ledger_state);
    ledger_state.set_policy(balance_policy(settings));
    let mut maps: BTreeMap<DateId, (SeatMap, u64)> = dates
        .into_iter()
        .map(|(id, mut d)| {
            d.state.restore(hold_policy(settings));
            (id, (d.state, d.seq))
        })
        .collect();
    // The log was read from the history's mark if that is lower: those events are for
    // `carry_over`, and each owner below skips what its snapshot holds.
    let replayed_events = events.iter().filter(|(seq, _)| *seq > replay_from).count();
    for (seq, event) in &events {
        let seq = *seq;
        if seq > accounts.seq {
            accounts_state.apply(event);
        }
        if seq > catalog.seq {
            catalog_state.apply(event);
        }
        if let Event::DateCreated {
            date,
            seat_count,
            price,
            ..
        } = event
        {
            maps.entry(*date).or_insert_with(|| {
                (
                    SeatMap::new(*date, *seat_count, *price, hold_policy(settings)),
                    0,
                )
            });
        }
        if seq > ledger.seq {
            ledger_state.apply(event);
        }
        for (map, map_seq) in maps.values_mut() {
            if seq > *map_seq {
                map.apply(event);
            }
        }
    }
    let took = started.elapsed();
    tracing::info!(
        replayed_events,
        replay_from,
        millis = took.as_millis() as u64,
        "recovered from snapshots and the event log"
    );
    Ok(Recovered {
        accounts: accounts_state,
        catalog: catalog_state,
        ledger: ledger_state,
        dates: maps.into_iter().map(|(id, (map, _))| (id, map)).collect(),
        queue,
        log,
        replayed_events,
        took,
    })
}

/// What an older release kept in memory and snapshots, and what the rows of its logged events
/// would have been.
struct Carry {
    /// Its idempotency book and the sequence it covers.
    old_book: Option<(BookV2, u64)>,
    /// The history inside its ledger snapshot, and the id it would have given next.
    old_history: Vec<(UserId, LedgerEntry)>,
    next_entry: u64,
    ledger_seq: u64,
    /// Every reservation inside its date snapshots, and the sequence each date's covers.
    old_reservations: Vec<Reservation>,
    date_seqs: BTreeMap<DateId, u64>,
    /// Events before this were logged without rows beside them.
    rows_from: u64,
    /// Events after this have rows that did not reach the history database before the stop.
    rows_through: u64,
}

/// Stores, once, what an older release kept only in memory and snapshots: its idempotency book,
/// its ledger's history, and the rows of the events it logged that no snapshot holds. Then the
/// rows of this release's events that had not reached the history database when the process
/// stopped (none after a graceful stop), made again from their events. The old book's files go
/// afterwards.
fn carry_over(log: &EventLog, dir: &Path, carry: Carry, events: &[(u64, Event)]) {
    let Carry {
        old_book,
        old_history,
        next_entry,
        ledger_seq,
        old_reservations,
        date_seqs,
        rows_from,
        rows_through,
    } = carry;
    let had_book = old_book.is_some();
    let book_seq = old_book.as_ref().map_or(0, |(_, seq)| *seq);
    let unrowed = |after: u64| {
        events
            .iter()
            .filter(move |(seq, _)| *seq > after && *seq < rows_from)
    };
    let mut rows = CarriedRows {
        through: log.last_sequence(),
        keys: old_book
            .map(|(book, _)| book.into_records())
            .unwrap_or_default(),
        entries: old_history,
        reservations: old_reservations,
        reservation_changes: Vec::new(),
        lagging: Vec::new(),
    };
    // A date created by a logged event has no snapshot: all its changes are in the log.
    rows.reservation_changes.extend(
        unrowed(0)
            .filter_map(|(seq, event)| Some((*seq, ReservationChange::made_by(event)?)))
            .filter(|(seq, change)| {
                let date = match change {
                    ReservationChange::Placed(r) => r.id.date,
                    ReservationChange::Ended { id, .. } => id.date,
                };
                *seq > date_seqs.get(&date).copied().unwrap_or(0)
            }),
    );
    rows.keys
        .extend(unrowed(book_seq).filter_map(|(_, event)| PendingRecord::of(event)));
    // Numbered on from the old ledger, as the older release numbered them.
    rows.entries.extend(
        unrowed(ledger_seq)
            .filter_map(|(_, event)| LedgerEntry::made_by(0, event))
            .zip(next_entry..)
            .map(|((user, entry), entry_id)| (user, LedgerEntry { entry_id, ..entry })),
    );
    let legacy = (rows.keys.len(), rows.entries.len());
    let legacy_reservations = rows.reservations.len() + rows.reservation_changes.len();
    // Stored after the older release's rows, as their changes come later in the log.
    rows.lagging = events
        .iter()
        .filter(|(seq, _)| *seq > rows_through && *seq >= rows_from)
        .map(|(seq, e)| EventRows::made_by(*seq, e, PendingRecord::of(e)))
        .collect();
    let lagging = rows.lagging.len();
    if legacy.0 + legacy.1 + legacy_reservations > 0 {
        tracing::info!(
            idempotency_records = legacy.0,
            balance_entries = legacy.1,
            reservations = legacy_reservations,
            "carrying what an older release kept in memory over into the history database"
        );
    }
    if lagging > 0 {
        tracing::info!(
            events = lagging,
            from = rows_through + 1,
            "making the history rows of events logged after the history database's mark"
        );
    }
    if rows.through > rows_through || legacy.0 + legacy.1 + legacy_reservations > 0 {
        log.carry_blocking(rows);
    }
    if !had_book {
        return;
    }
    for (_, file) in snapshot::list(dir, IDEMPOTENCY_OWNER) {
        if let Err(error) = std::fs::remove_file(&file) {
            tracing::warn!(%error, file = %file.display(), "could not remove an old idempotency snapshot");
        }
    }
}
