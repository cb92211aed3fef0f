//! What durability costs: snapshotting a 50,000-seat date, looking up a day's idempotency
//! records, and recovering 1,000,000 logged events with and without snapshots.
//!
//! `cargo bench --bench durability`

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use boxoffice::actors::KeyRecords;
use boxoffice::clock::ManualClock;
use boxoffice::config::{Settings, Synchronous};
use boxoffice::domain::accounts::Accounts;
use boxoffice::domain::catalog::Catalog;
use boxoffice::domain::idempotency::{
    BookKey, IdempotencyBook, KeyIndex, KeyedEndpoint, PendingRecord, RECENT_KEYS_MAX,
};
use boxoffice::domain::ledger::{BalancePolicy, Ledger};
use boxoffice::domain::seat_map::{DatePolicy, SeatMap};
use boxoffice::domain::venue::Layout;
use boxoffice::domain::{
    ChargeId, DateId, Event, IdempotencyKey, IdempotencyStamp, ReservationId, SeatNo, Timestamp,
    UserId, Username,
};
use boxoffice::policies::{policies, store_setup};
use boxoffice::store::recovery::{date_owner, ACCOUNTS_OWNER, CATALOG_OWNER, LEDGER_OWNER};
use boxoffice::store::{recover, snapshot, EventLog, SyncMode};

const SEATS: u32 = 50_000;
const LOGGED_EVENTS: usize = 1_000_000;

fn policy() -> DatePolicy {
    DatePolicy {
        ttl_ms: 300_000,
        max_seats_per_user: 4,
        max_seats_per_user_total: 8,
        rehold_cooldown_ms: 60_000,
        refunds: Default::default(),
        offer_ttl_ms: 600_000,
    }
}

/// A 50,000-seat date in mid-sale: a fifth of the seats sold, a fifth held.
fn busy_date() -> SeatMap {
    let mut map = SeatMap::new(
        DateId(1),
        Timestamp(i64::MAX),
        Layout::general(SEATS, 55_000),
        policy(),
    );
    let now = Timestamp(1_700_000_000_000);
    for seat in 1..=(SEATS * 2 / 5) {
        let user = UserId(seat as u64);
        let hold = map.place_hold(user, &[SeatNo(seat)], now, None).unwrap();
        map.apply(&hold);
        if seat % 2 == 0 {
            let Event::HoldPlaced { reservation, .. } = hold else {
                unreachable!()
            };
            let mut payment = map
                .prepare_payment(user, reservation, now, None, None)
                .unwrap();
            if let Event::PaymentCompleted { balance_after, .. } = &mut payment {
                *balance_after = 0;
            }
            map.apply(&payment);
        }
    }
    map
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("boxoffice-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn snapshot_of_a_50k_seat_date(c: &mut Criterion) {
    let map = busy_date();
    let dir = scratch("snapshot");
    let size = snapshot::encode(&map, 1).len();
    println!("snapshot of a 50,000-seat date (20% sold, 20% held): {size} bytes");
    let mut group = c.benchmark_group("snapshot_50k_seat_date");
    group.sample_size(20);
    group.bench_function("clone_in_the_mailbox", |b| b.iter(|| map.clone()));
    group.bench_function("encode", |b| b.iter(|| snapshot::encode(&map, 1)));
    group.bench_function("encode_fsync_rename", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            let bytes = snapshot::encode(&map, seq);
            snapshot::write_atomically(&dir, "date-1", seq, &bytes).unwrap()
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

const BOOK_KEYS: u64 = 200_000;

/// A keyed event of each kind in turn, with a 36-character key as clients send (a UUID).
fn keyed_event(n: u64) -> Event {
    let user = UserId(n % 5_000);
    let at = Timestamp(1_700_000_000_000 + n as i64);
    let idempotency = Some(IdempotencyStamp {
        key: IdempotencyKey::parse(&format!("{n:08x}-0000-4000-8000-{:012x}", n * 7919)).unwrap(),
        fingerprint: n,
    });
    let reservation = ReservationId {
        date: DateId(1),
        seq: n as u32,
    };
    match n % 3 {
        0 => Event::BalanceCharged {
            charge: ChargeId(n),
            user,
            amount: 10_000,
            balance_after: 20_000,
            at,
            idempotency,
        },
        1 => Event::HoldPlaced {
            reservation,
            user,
            seats: smallvec::smallvec![
                SeatNo(1 + (n % 40_000) as u32),
                SeatNo(2 + (n % 40_000) as u32),
            ],
            price: 110_000,
            at,
            expires_at: at.plus_millis(300_000),
            idempotency,
            offer: None,
        },
        _ => Event::PaymentCompleted {
            reservation,
            user,
            seats: smallvec::smallvec![SeatNo(1), SeatNo(2)],
            amount: 110_000,
            balance_after: 0,
            at,
            idempotency,
            queue_token: None,
        },
    }
}

/// A busy day's idempotency records: logged with their events into a real store, then looked
/// up as a keyed request does — in the recent book first, then in the index of the day's keys,
/// and in the store only for a key the index may hold.
fn idempotency_records(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = scratch("keys");
    let path = dir.join("boxoffice.db");
    let events: Vec<Event> = (0..BOOK_KEYS).map(keyed_event).collect();
    let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
    runtime.block_on(async {
        let mut last = None;
        for event in &events {
            last = Some(opened.log.append(event));
        }
        last.unwrap().wait().await;
        opened.log.reader().caught_up().await;
    });
    let reader = opened.log.reader().clone();
    let started = std::time::Instant::now();
    let index = reader.key_index().unwrap();
    println!(
        "the index of {} stored keys was read in {:?} and holds {} bytes",
        index.len(),
        started.elapsed(),
        index.bytes()
    );
    let now = Timestamp(1_700_000_000_000 + BOOK_KEYS as i64);
    let keys = KeyRecords::new(reader, index, ManualClock::new(now));
    let stored: Vec<PendingRecord> = events.iter().filter_map(PendingRecord::of).collect();
    let mut book = IdempotencyBook::default();
    for (seq, record) in stored.iter().enumerate() {
        book.insert(*record, seq as u64 + 1);
    }
    println!(
        "{BOOK_KEYS} keyed events: the database file holds {} bytes per keyed event (the event \
         and its record); the server's book keeps at most {RECENT_KEYS_MAX} of them",
        std::fs::metadata(&path).unwrap().len() / BOOK_KEYS
    );
    let fresh = BookKey::new(
        UserId(1),
        KeyedEndpoint::Charge,
        &IdempotencyKey::parse("never-used").unwrap(),
    );
    let mut group = c.benchmark_group("idempotency_records_200k_keys");
    let mut n = 0;
    let mut next = || {
        n = (n + 7919) % stored.len();
        &stored[n]
    };
    group.bench_function("book_hit", |b| {
        b.iter(|| {
            let record = next();
            book.find(&record.key, record.record.fingerprint, now)
                .unwrap()
        })
    });
    group.bench_function("store_hit", |b| {
        b.iter(|| {
            let record = next();
            keys.find(&record.key, record.record.fingerprint).unwrap()
        })
    });
    group.bench_function("new_key_book_and_index_miss", |b| {
        b.iter(|| keys.find(&fresh, 1).unwrap())
    });
    let mut index = KeyIndex::default();
    let day: Vec<u64> = (0..1_000_000u64)
        .map(|n| {
            let key = IdempotencyKey::parse(&format!("day-{n}")).unwrap();
            BookKey::new(UserId(n % 50_000), KeyedEndpoint::Reservation, &key).tag()
        })
        .collect();
    for (n, tag) in day.iter().enumerate() {
        index.insert(*tag, Timestamp(n as i64));
    }
    group.bench_function("index_of_1m_keys_miss", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            index.may_hold(fresh.tag() ^ n)
        })
    });
    group.bench_function("index_of_1m_keys_hit", |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 7919) % day.len();
            index.may_hold(day[n])
        })
    });
    group.finish();
    runtime.block_on(opened.log.close());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Owner states and the events that built them, decided by the domain itself.
struct History {
    events: Vec<Event>,
    accounts: Accounts,
    catalog: Catalog,
    ledger: Ledger,
    map: SeatMap,
}

fn history(count: usize) -> History {
    let mut accounts = Accounts::default();
    let mut catalog = Catalog::default();
    let mut ledger = Ledger::new(BalancePolicy {
        max_charge: 10_000_000,
        max_balance: 100_000_000,
    });
    let mut events = Vec::with_capacity(count);
    let now = Timestamp(1_700_000_000_000);
    let concert = catalog.create_concert("Bench", "Hall").unwrap();
    catalog.apply(&concert);
    events.push(concert);
    let date = catalog
        .create_date(
            boxoffice::domain::ConcertId(1),
            now,
            boxoffice::domain::catalog::SeatPlan::Uniform {
                seat_count: SEATS.into(),
                price: 1_000,
            },
        )
        .unwrap();
    catalog.apply(&date);
    events.push(date);
    let mut map = SeatMap::new(
        DateId(1),
        Timestamp(i64::MAX),
        Layout::general(SEATS, 1_000),
        policy(),
    );
    const USERS: u64 = 10_000;
    for u in 1..=USERS {
        let e = accounts
            .register(
                Username::parse(&format!("user{u}")).unwrap(),
                "$argon2id$x".into(),
                now,
            )
            .unwrap();
        accounts.apply(&e);
        events.push(e);
    }
    let mut i = 0u64;
    while events.len() < count {
        i += 1;
        let user = UserId(i % USERS + 1);
        let seat = SeatNo((i % SEATS as u64) as u32 + 1);
        let at = now.plus_millis(i as i64);
        let event = match i % 4 {
            0 => ledger.charge(user, 5_000, at, None).ok(),
            _ => match map.place_hold(user, &[seat], at, None) {
                Ok(hold) => Some(hold),
                Err(_) => {
                    // Free the seat again so the history keeps moving.
                    let holder = map
                        .holds_of(user)
                        .find(|r| r.status_at(at).as_str() == "held");
                    holder.map(|r| map.cancel_hold(user, r.id, at).unwrap())
                }
            },
        };
        let Some(event) = event else { continue };
        accounts.apply(&event);
        ledger.apply(&event);
        map.apply(&event);
        events.push(event);
    }
    let _ = ReservationId {
        date: DateId(1),
        seq: 1,
    };
    History {
        events,
        accounts,
        catalog,
        ledger,
        map,
    }
}

fn settings_in(dir: &Path, snapshots: &str) -> Settings {
    let mut settings = Settings::for_tests();
    settings.storage.sqlite_path = dir.join("boxoffice.db");
    settings.storage.snapshot_dir = dir.join(snapshots);
    settings.storage.synchronous = Synchronous::Normal;
    settings
}

fn recovery_of_a_million_events(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = scratch("recovery");
    let history = history(LOGGED_EVENTS);
    runtime.block_on(async {
        let opened = EventLog::open(&dir.join("boxoffice.db"), SyncMode::Normal, 0).unwrap();
        let mut last = None;
        for event in &history.events {
            last = Some(opened.log.append(event));
        }
        last.unwrap().wait().await;
        let stats = opened.log.stats();
        println!(
            "logged {} events in {} commits",
            stats.events.load(std::sync::atomic::Ordering::Relaxed),
            stats.commits.load(std::sync::atomic::Ordering::Relaxed)
        );
        opened.log.close().await;
    });
    // Snapshots covering everything: the restart after a graceful stop.
    let covered = history.events.len() as u64;
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let write = |owner: &str, bytes: Vec<u8>| {
        snapshot::write_atomically(&snapshots, owner, covered, &bytes).unwrap();
    };
    write(ACCOUNTS_OWNER, snapshot::encode(&history.accounts, covered));
    write(CATALOG_OWNER, snapshot::encode(&history.catalog, covered));
    write(LEDGER_OWNER, snapshot::encode(&history.ledger, covered));
    write(
        &date_owner(DateId(1)),
        snapshot::encode(&history.map, covered),
    );

    let mut group = c.benchmark_group("recovery_1m_events");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, snapshot_dir) in [
        ("full_replay", "no-snapshots"),
        ("from_snapshots", "snapshots"),
    ] {
        let settings = settings_in(&dir, snapshot_dir);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| {
                    let recovered = recover(&store_setup(&settings), policies(&settings)).unwrap();
                    let replayed = recovered.replayed_events;
                    runtime.block_on(recovered.log.close());
                    replayed
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    idempotency_records,
    snapshot_of_a_50k_seat_date,
    recovery_of_a_million_events
);
criterion_main!(benches);
