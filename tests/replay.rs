//! Invariant 6: random command sequences run live through the engine (real actors, a real
//! SQLite log on disk); then the log replayed from empty, and a mid-run snapshot plus the log
//! tail after it, both rebuild exactly the live state. So does a history database that lost its
//! latest commits (as `synchronous = normal` may on power loss): recovery makes their rows again.

use std::path::Path;

use std::time::Duration;

use proptest::prelude::*;

use boxoffice::actors::date::HoldRequest;
use boxoffice::actors::Engine;
use boxoffice::clock::ManualClock;
use boxoffice::config::Settings;
use boxoffice::domain::accounts::Accounts;
use boxoffice::domain::catalog::Catalog;
use boxoffice::domain::idempotency::{BookKey, KeyRecord, KeyedEndpoint, PendingRecord};
use boxoffice::domain::ledger::{Ledger, LedgerEntry};
use boxoffice::domain::page::{ListKind, Page, PageLimit, PageRequest};
use boxoffice::domain::seat_map::{Reservation, ReservationChange, SeatMap};
use boxoffice::domain::{
    ConcertId, DateId, IdempotencyKey, IdempotencyStamp, ReservationId, SeatList, SeatNo,
    Timestamp, UserId, Username,
};
use boxoffice::policies::{policies, store_setup};
use boxoffice::store::rows::history_path;
use boxoffice::store::{recover, EventLog, SyncMode};

#[derive(Debug, Clone)]
enum Command {
    SignUp,
    SignIn {
        user: u64,
    },
    Charge {
        user: u64,
        amount: i128,
        key: Option<u8>,
    },
    Hold {
        user: u64,
        date: u32,
        seats: Vec<u32>,
        key: Option<u8>,
    },
    /// Holds asked together (`DateHandle::hold_many`): (user, seats, key) each.
    HoldMany {
        date: u32,
        holds: Vec<(u64, Vec<u32>, Option<u8>)>,
    },
    Cancel {
        user: u64,
        date: u32,
        seq: u32,
    },
    Pay {
        user: u64,
        date: u32,
        seq: u32,
        key: Option<u8>,
    },
    Advance {
        seconds: u64,
    },
}

fn command() -> impl Strategy<Value = Command> {
    let user = 1..=4u64;
    let key = prop::option::of(0..3u8);
    prop_oneof![
        1 => Just(Command::SignUp),
        1 => user.clone().prop_map(|user| Command::SignIn { user }),
        3 => (user.clone(), prop_oneof![1..=20_000i128, Just(0i128), Just(-5i128), Just(1i128 << 70)], key.clone())
            .prop_map(|(user, amount, key)| Command::Charge { user, amount, key }),
        4 => (user.clone(), 1..=2u32, prop::collection::vec(1..=12u32, 1..4), key.clone())
            .prop_map(|(user, date, seats, key)| Command::Hold { user, date, seats, key }),
        2 => (1..=2u32, prop::collection::vec((user.clone(), prop::collection::vec(1..=12u32, 1..3), key.clone()), 1..6))
            .prop_map(|(date, holds)| Command::HoldMany { date, holds }),
        1 => (user.clone(), 1..=2u32, 1..=10u32).prop_map(|(user, date, seq)| Command::Cancel { user, date, seq }),
        3 => (user, 1..=2u32, 1..=10u32, key).prop_map(|(user, date, seq, key)| Command::Pay { user, date, seq, key }),
        2 => (1..200u64).prop_map(|seconds| Command::Advance { seconds }),
    ]
}

fn stamp(key: Option<u8>, fingerprint: u64) -> Option<IdempotencyStamp> {
    key.map(|k| IdempotencyStamp {
        key: IdempotencyKey::parse(&format!("key-{k}")).unwrap(),
        fingerprint,
    })
}

#[derive(Debug, PartialEq)]
struct State {
    accounts: Accounts,
    catalog: Catalog,
    ledger: Ledger,
    /// What the store answers for every key the commands can use.
    keys: Vec<Option<KeyRecord>>,
    dates: Vec<SeatMap>,
}

fn stored_keys(log: &EventLog) -> Vec<Option<KeyRecord>> {
    let mut found = Vec::new();
    for user in 1..=4 {
        for endpoint in [
            KeyedEndpoint::Charge,
            KeyedEndpoint::Reservation,
            KeyedEndpoint::Payment,
        ] {
            for k in 0..3u8 {
                let key = IdempotencyKey::parse(&format!("key-{k}")).unwrap();
                let key = BookKey::new(UserId(user), endpoint, &key);
                found.push(log.reader().find_key(&key).expect("the store reads"));
            }
        }
    }
    found
}

/// Every entry of a list, read in pages of three, so the walk crosses page ends.
fn walk<T>(list: ListKind, mut read: impl FnMut(&PageRequest) -> Page<T>) -> Vec<T> {
    let mut request = PageRequest::first(list, PageLimit::parse("3").unwrap());
    let mut all = Vec::new();
    loop {
        let page = read(&request);
        all.extend(page.entries);
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => return all,
        }
    }
}

/// The history tables hold exactly what the log's events make: the latest record of every key,
/// each user's balance entries and reservations (in their latest state), newest first by the
/// sequence of the event that listed them, page after page. Rows are written after their events
/// live, and by recovery for what the history database lost; either way they must be this
/// projection of the log and nothing else.
async fn history_is_the_projection_of_the_log(settings: &Settings) -> Result<(), TestCaseError> {
    let opened =
        EventLog::open(&settings.storage.sqlite_path, SyncMode::Normal, 0).expect("the log opens");
    let events = &opened.events;
    let store = opened.log.reader();
    for user in (1..=4).map(UserId) {
        for endpoint in [
            KeyedEndpoint::Charge,
            KeyedEndpoint::Reservation,
            KeyedEndpoint::Payment,
        ] {
            for k in 0..3u8 {
                let key = BookKey::new(
                    user,
                    endpoint,
                    &IdempotencyKey::parse(&format!("key-{k}")).unwrap(),
                );
                let latest = events
                    .iter()
                    .rev()
                    .filter_map(|(_, e)| PendingRecord::of(e))
                    .find(|r| r.key == key)
                    .map(|r| r.record);
                prop_assert_eq!(store.find_key(&key).unwrap(), latest, "{:?}", key);
            }
        }
        let entries: Vec<LedgerEntry> = events
            .iter()
            .rev()
            // Newest first: later events first, and within one event its later entries.
            .flat_map(|(seq, e)| LedgerEntry::made_by(*seq, e).into_iter().rev())
            .filter(|(owner, _)| *owner == user)
            .map(|(_, entry)| entry)
            .collect();
        let walked = walk(ListKind::BalanceHistory, |request| {
            store.ledger_page(user, request).unwrap()
        });
        prop_assert_eq!(walked, entries);
        let mut made: Vec<(u64, Reservation)> = Vec::new();
        for (seq, event) in events {
            for change in ReservationChange::made_by(event) {
                match change {
                    ReservationChange::Placed(r) => made.push((*seq, r)),
                    ReservationChange::Ended { id, state, at } => {
                        let (_, r) = made
                            .iter_mut()
                            .find(|(_, r)| r.id == id)
                            .expect("a reservation ends after it is placed");
                        ReservationChange::end(r, state, at);
                    }
                    // A transfer places it in the recipient's list.
                    ReservationChange::Transferred { id, to } => {
                        let (listed, r) = made
                            .iter_mut()
                            .find(|(_, r)| r.id == id)
                            .expect("a reservation is given after it is placed");
                        (*listed, r.user) = (*seq, to);
                    }
                }
            }
        }
        made.retain(|(_, r)| r.user == user);
        made.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let expected: Vec<Reservation> = made.into_iter().map(|(_, r)| r).collect();
        let walked = walk(ListKind::Reservations, |request| {
            store.reservations_page(user, request).unwrap()
        });
        prop_assert_eq!(walked, expected);
    }
    opened.log.close().await;
    Ok(())
}

async fn live_state(engine: &Engine) -> State {
    let mut dates = Vec::new();
    for id in 1..=2 {
        dates.push(engine.dates.get(DateId(id)).unwrap().state().await.unwrap());
    }
    engine.durability.log.flush().await;
    engine.durability.log.reader().caught_up().await;
    State {
        accounts: engine.accounts.state(),
        catalog: engine.catalog.state(),
        ledger: engine.ledger.state().await.unwrap(),
        keys: stored_keys(&engine.durability.log),
        dates,
    }
}

async fn recovered_state(settings: &Settings) -> (State, usize) {
    // Recovery blocks (it reads files and may store rows), as it does inside `Engine::start`.
    let (setup, policies) = (store_setup(settings), policies(settings));
    let recovered = tokio::task::spawn_blocking(move || recover(&setup, policies))
        .await
        .unwrap()
        .expect("recovery succeeds");
    let keys = stored_keys(&recovered.log);
    // Release the database before the next recovery opens it.
    recovered.log.close().await;
    let replayed = recovered.replayed_events;
    let state = State {
        accounts: recovered.accounts,
        catalog: recovered.catalog,
        ledger: recovered.ledger,
        keys,
        dates: recovered.dates.into_values().collect(),
    };
    (state, replayed)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

async fn run(engine: &Engine, clock: &ManualClock, commands: &[Command]) {
    for command in commands {
        match command {
            Command::SignUp => {
                let n = engine.accounts.user_count() + 1;
                let name = Username::parse(&format!("user{n}")).unwrap();
                engine
                    .accounts
                    .register(name, format!("hash{n}"))
                    .await
                    .unwrap();
            }
            Command::SignIn { user } => {
                if engine.accounts.username(UserId(*user)).is_some() {
                    engine
                        .accounts
                        .open_session(UserId(*user), [*user as u8; 32])
                        .await
                        .unwrap();
                }
            }
            Command::Charge { user, amount, key } => {
                let _ = engine
                    .ledger
                    .charge(UserId(*user), *amount, stamp(*key, *amount as u64))
                    .await;
            }
            Command::Hold {
                user,
                date,
                seats,
                key,
            } => {
                let seats: SeatList = seats.iter().map(|s| SeatNo(*s)).collect();
                let handle = engine.dates.get(DateId(*date)).unwrap();
                let _ = handle
                    .hold(UserId(*user), seats, stamp(*key, *date as u64))
                    .await;
            }
            Command::HoldMany { date, holds } => {
                let holds = holds
                    .iter()
                    .map(|(user, seats, key)| HoldRequest {
                        user: UserId(*user),
                        seats: seats.iter().map(|s| SeatNo(*s)).collect(),
                        idempotency: stamp(*key, *date as u64),
                    })
                    .collect();
                let handle = engine.dates.get(DateId(*date)).unwrap();
                let _ = handle.hold_many(holds).await;
            }
            Command::Cancel { user, date, seq } => {
                let handle = engine.dates.get(DateId(*date)).unwrap();
                let id = ReservationId {
                    date: DateId(*date),
                    seq: *seq,
                };
                let _ = handle.cancel(UserId(*user), id).await;
            }
            Command::Pay {
                user,
                date,
                seq,
                key,
            } => {
                let handle = engine.dates.get(DateId(*date)).unwrap();
                let id = ReservationId {
                    date: DateId(*date),
                    seq: *seq,
                };
                let _ = handle
                    .pay(UserId(*user), id, stamp(*key, *seq as u64), None)
                    .await;
            }
            Command::Advance { seconds } => clock.advance(Duration::from_secs(*seconds)),
        }
    }
}

fn check(commands: Vec<Command>, split: usize) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut settings = Settings::for_tests();
        settings.holds.ttl_seconds = 300;
        settings.balance.max_balance = 50_000;
        settings.storage.snapshot_interval_seconds = 3_600;
        // Keep the whole log, so the full replay can be compared with the snapshot one.
        settings.storage.prune_log = false;
        let data = settings.storage.sqlite_path.parent().unwrap().to_owned();
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let engine = Engine::start(&settings, clock.clone()).await.unwrap();
        let concert = engine
            .catalog
            .create_concert("c".into(), "v".into(), Default::default())
            .await
            .unwrap();
        assert_eq!(concert, ConcertId(1));
        for _ in 0..2 {
            engine
                .catalog
                .create_date(
                    concert,
                    Timestamp(4_102_444_800_000), // 2100: on sale throughout
                    boxoffice::domain::catalog::SeatPlan::Uniform {
                        seat_count: 12,
                        price: 100,
                    },
                )
                .await
                .unwrap();
        }
        for n in 1..=4 {
            let name = Username::parse(&format!("user{n}")).unwrap();
            engine
                .accounts
                .register(name, format!("hash{n}"))
                .await
                .unwrap();
        }
        let split = split.min(commands.len());
        run(&engine, &clock, &commands[..split]).await;
        engine.snapshot_all().await;
        let mid_snapshots = data.join("mid-snapshots");
        copy_dir(&settings.storage.snapshot_dir, &mid_snapshots);
        // The history as it stood here, a consistent copy: what is left of it after a power
        // loss that took every later commit.
        let history = history_path(&settings.storage.sqlite_path);
        let mid_history = data.join("mid-history.db");
        engine.durability.log.flush().await;
        engine.durability.log.reader().caught_up().await;
        rusqlite::Connection::open(&history)
            .unwrap()
            .execute("VACUUM INTO ?1", [mid_history.to_str().unwrap()])
            .unwrap();
        run(&engine, &clock, &commands[split..]).await;
        let live = live_state(&engine).await;
        engine.stop().await;

        // The whole log, replayed from empty.
        let mut full = settings.clone();
        full.storage.snapshot_dir = data.join("no-snapshots");
        let (from_log, replayed_full) = recovered_state(&full).await;
        prop_assert_eq!(&from_log, &live);

        // The mid-run snapshot plus the tail of the log after it.
        let mut tail = settings.clone();
        tail.storage.snapshot_dir = mid_snapshots;
        let (from_mid, replayed_tail) = recovered_state(&tail).await;
        prop_assert_eq!(&from_mid, &live);
        prop_assert!(replayed_tail <= replayed_full);
        history_is_the_projection_of_the_log(&settings).await?;

        // The history a stretch of commits behind the log.
        for stale in ["", "-wal", "-shm"] {
            let mut file = history.clone().into_os_string();
            file.push(stale);
            let _ = std::fs::remove_file(file);
        }
        std::fs::copy(&mid_history, &history).unwrap();
        let (behind, _) = recovered_state(&settings).await;
        prop_assert_eq!(&behind, &live);
        history_is_the_projection_of_the_log(&settings).await?;

        let _ = std::fs::remove_dir_all(&data);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replay_rebuilds_the_live_state_exactly(
        commands in prop::collection::vec(command(), 1..120),
        split in 0usize..120,
    ) {
        check(commands, split)?;
    }
}

#[test]
fn replay_of_a_long_fixed_history_matches_too() {
    let commands: Vec<Command> = (0..400)
        .map(|i| match i % 7 {
            0 => Command::Charge {
                user: (i % 4) + 1,
                amount: 3_000,
                key: Some((i % 3) as u8),
            },
            1 | 2 => Command::Hold {
                user: (i % 4) + 1,
                date: (i % 2) as u32 + 1,
                seats: vec![(i % 12) as u32 + 1],
                key: None,
            },
            3 => Command::Pay {
                user: (i % 4) + 1,
                date: (i % 2) as u32 + 1,
                seq: (i % 10) as u32 + 1,
                key: None,
            },
            4 => Command::Advance { seconds: 97 },
            5 => Command::Cancel {
                user: (i % 4) + 1,
                date: 1,
                seq: (i % 10) as u32 + 1,
            },
            _ => Command::SignIn { user: (i % 4) + 1 },
        })
        .collect();
    check(commands, 200).unwrap();
}
