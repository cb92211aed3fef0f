//! Recovery at start: the newest valid snapshot of every owner, then the log after it. Each
//! owner applies only the events newer than its own snapshot, so owners snapshotted at
//! different moments end in one consistent state.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::domain::accounts::Accounts;
use crate::domain::catalog::Catalog;
use crate::domain::idempotency::{KeyIndex, PendingRecord};
use crate::domain::ledger::{BalancePolicy, Ledger};
use crate::domain::rooms::{Rooms, RoomsSnapshot};
use crate::domain::seat_map::{DatePolicy, SeatMap};
use crate::domain::{DateId, Event};

use super::error::StoreError;
use super::log::{EventLog, SyncMode};
use super::private;
use super::projection::OpenedLog;
use super::rows::EventRows;
use super::snapshot;

pub const ACCOUNTS_OWNER: &str = "accounts";
pub const CATALOG_OWNER: &str = "catalog";
pub const LEDGER_OWNER: &str = "ledger";
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
    /// The waiting room as last saved, with the payments logged since (its arrivals and polls
    /// are not logged: see docs/durability.md, "The waiting room").
    pub queue: Option<RecoveredQueue>,
    pub log: EventLog,
    /// Every stored idempotency key of the last day, so a new key is known without the store.
    pub keys: KeyIndex,
    pub replayed_events: usize,
    pub took: Duration,
}

/// The waiting room's newest snapshot and the events after it that change it: the payments
/// that end tokens (`AdmissionQueue::token_ended_by`), to be applied after the snapshot.
pub struct RecoveredQueue {
    pub snapshot: RoomsSnapshot,
    pub snapshot_seq: u64,
    pub later_events: Vec<Event>,
}

/// Where the store keeps its files, and how the log syncs.
#[derive(Debug, Clone)]
pub struct StoreSetup {
    pub sqlite_path: PathBuf,
    pub snapshot_dir: PathBuf,
    pub sync: SyncMode,
}

/// The limits recovered owners run under. They are given, never read from a snapshot, so a
/// changed setting applies from the next start.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub dates: DatePolicy,
    pub balance: BalancePolicy,
}

fn prepare_snapshot_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError::NotADirectory {
            setting: "storage.snapshot_dir",
            path: dir.to_owned(),
        });
    }
    private::create_dir_all(dir).map_err(|source| StoreError::Io {
        action: "create the snapshot directory",
        path: dir.to_owned(),
        source,
    })?;
    private::tighten(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        private::tighten(&entry.path());
    }
    let probe = dir.join(".boxoffice-write-probe");
    private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut file| file.write_all(b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| StoreError::Io {
            action: "write to the snapshot directory",
            path: dir.to_owned(),
            source,
        })
}

/// An owner's starting point: its newest readable snapshot, or nothing (replay from the start).
struct Start<T> {
    state: T,
    seq: u64,
}

fn start<T: DeserializeOwned>(
    snapshots: &snapshot::Listing,
    owner: &str,
    empty: impl FnOnce() -> T,
) -> Result<Start<T>, StoreError> {
    Ok(match snapshot::load_newest_listed::<T>(snapshots, owner)? {
        Some((state, seq)) => Start { state, seq },
        None => Start {
            state: empty(),
            seq: 0,
        },
    })
}

pub fn recover(setup: &StoreSetup, policies: Policies) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let dir = &setup.snapshot_dir;
    prepare_snapshot_dir(dir)?;

    let snapshots = snapshot::Listing::read(dir);
    let accounts = start(&snapshots, ACCOUNTS_OWNER, Accounts::default)?;
    let catalog = start(&snapshots, CATALOG_OWNER, Catalog::default)?;
    let ledger = start(&snapshots, LEDGER_OWNER, || Ledger::new(policies.balance))?;
    let queue = snapshot::load_newest_listed::<RoomsSnapshot>(&snapshots, QUEUE_OWNER)?;
    let mut dates: BTreeMap<DateId, Start<SeatMap>> = BTreeMap::new();
    for info in catalog.state.dates() {
        let start = start(&snapshots, &date_owner(info.id), || {
            let concert = catalog.state.concert(info.concert);
            SeatMap::new(
                info.id,
                info.starts_at,
                (*info.layout).clone(),
                policies.dates,
            )
            .sold_as(concert.and_then(|c| c.max_tickets_per_user))
        })?;
        dates.insert(info.id, start);
    }
    // An owner without a snapshot needs the log from its beginning.
    let replay_from = dates
        .values()
        .map(|d| d.seq)
        .chain([accounts.seq, catalog.seq, ledger.seq])
        .chain(queue.as_ref().map(|(_, seq)| *seq))
        .min()
        .unwrap_or(0);
    let OpenedLog {
        log,
        events,
        oldest_stored,
        rows_through,
    } = EventLog::open(&setup.sqlite_path, setup.sync, replay_from)?;
    // Rows at or below a snapshot may have been pruned. An owner whose history starts below
    // the oldest stored row cannot be rebuilt: refuse rather than start with silent losses.
    let missing_history = |owner: &str, seq: u64| match oldest_stored {
        Some(oldest) if oldest > seq + 1 => Err(StoreError::LogGap {
            owner: owner.to_owned(),
            needed_from: seq + 1,
            starts_at: oldest,
        }),
        _ => Ok(()),
    };
    missing_history(ACCOUNTS_OWNER, accounts.seq)?;
    missing_history(CATALOG_OWNER, catalog.seq)?;
    missing_history(LEDGER_OWNER, ledger.seq)?;
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

    project_lagging_rows(&log, rows_through, &events);
    // After the lagging rows: every record the log holds is then in the table.
    let keys = log.reader().key_index()?;
    let (mut accounts_state, mut catalog_state, mut ledger_state) =
        (accounts.state, catalog.state, ledger.state);
    ledger_state.set_policy(policies.balance);
    let mut maps: BTreeMap<DateId, (SeatMap, u64)> = dates
        .into_iter()
        .map(|(id, mut d)| {
            d.state.restore(policies.dates);
            (id, (d.state, d.seq))
        })
        .collect();
    // The log was read from the history's mark if that is lower: those events are for
    // `project_lagging_rows`, and each owner below skips what its snapshot holds.
    let mut queue = queue.map(|(snapshot, snapshot_seq)| RecoveredQueue {
        snapshot,
        snapshot_seq,
        later_events: Vec::new(),
    });
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
            starts_at,
            layout,
            max_tickets_per_user,
            ..
        } = event
        {
            maps.entry(*date).or_insert_with(|| {
                let map = SeatMap::new(*date, *starts_at, layout.clone(), policies.dates)
                    .sold_as(*max_tickets_per_user);
                (map, 0)
            });
        }
        if seq > ledger.seq {
            ledger_state.apply(event);
        }
        if let Some(queue) = &mut queue {
            if seq > queue.snapshot_seq && Rooms::concerns(event) {
                queue.later_events.push(event.clone());
            }
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
        idempotency_keys = keys.len(),
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
        keys,
        replayed_events,
        took,
    })
}

/// Stores the rows of the events that had not reached the history database when the process
/// stopped (none after a graceful stop), made again from their events.
fn project_lagging_rows(log: &EventLog, rows_through: u64, events: &[(u64, Event)]) {
    let lagging: Vec<EventRows> = events
        .iter()
        .filter(|(seq, _)| *seq > rows_through)
        .map(|(seq, e)| EventRows::made_by(*seq, e, PendingRecord::of(e)))
        .collect();
    let through = log.last_sequence();
    if through <= rows_through {
        return;
    }
    if !lagging.is_empty() {
        tracing::info!(
            events = lagging.len(),
            from = rows_through + 1,
            "making the history rows of events logged after the history database's mark"
        );
    }
    log.project_blocking(lagging, through);
}
