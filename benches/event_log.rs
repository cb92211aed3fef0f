//! The event log's two designs side by side, in one run: one row per event (the design the log
//! had before batches, rebuilt here as the baseline) and one row per commit (the product's,
//! through its own `insert_batch` and `read_events_after`).
//!
//! - `commit/{rows_per_event,batches}/B`: one transaction of B events, `synchronous = normal`
//!   in WAL mode, so the figure is SQLite's work per event rather than the disk's fsync.
//! - `recovery/{rows_per_event,batches}`: reading and decoding 1,000,000 events stored in
//!   commits of 100.
//!
//! `cargo bench --bench event_log`

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rusqlite::{params, Connection};

use boxoffice::domain::{
    DateId, Event, IdempotencyKey, IdempotencyStamp, ReservationId, SeatNo, Timestamp, UserId,
};
use boxoffice::store::log::{insert_batch, read_events_after, LOG_SCHEMA};

const RECOVERED_EVENTS: u64 = 1_000_000;
const EVENTS_PER_COMMIT: u64 = 100;

const ROW_PER_EVENT_SCHEMA: &str = "
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        kind    TEXT    NOT NULL,
        version INTEGER NOT NULL,
        payload BLOB    NOT NULL
    );";

/// A keyed hold of two seats, as most of a sale day's events are.
fn hold(n: u64) -> Event {
    let at = Timestamp(1_700_000_000_000 + n as i64);
    Event::HoldPlaced {
        reservation: ReservationId {
            date: DateId(1),
            seq: n as u32,
        },
        user: UserId(n % 50_000),
        seats: smallvec::smallvec![
            SeatNo(1 + (n % 40_000) as u32),
            SeatNo(2 + (n % 40_000) as u32)
        ],
        price: 110_000,
        at,
        expires_at: at.plus_millis(300_000),
        offer: None,
        idempotency: Some(IdempotencyStamp {
            key: IdempotencyKey::parse(&format!("{n:08x}-0000-4000-8000-{:012x}", n * 7919))
                .unwrap(),
            fingerprint: n,
        }),
    }
}

fn encode(event: &Event) -> Vec<u8> {
    bincode::serde::encode_to_vec(event, bincode::config::standard()).unwrap()
}

fn decode(bytes: &[u8]) -> Event {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .unwrap()
        .0
}

fn database(name: &str, schema: &str) -> Connection {
    let dir = std::env::temp_dir().join(format!("boxoffice-bench-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(schema).unwrap();
    conn
}

fn insert_rows(conn: &mut Connection, first_seq: u64, payloads: &[Vec<u8>]) {
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (seq, kind, version, payload) VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        for (i, payload) in payloads.iter().enumerate() {
            insert
                .execute(params![
                    (first_seq + i as u64) as i64,
                    "hold_placed",
                    1,
                    payload
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn insert_batches(conn: &mut Connection, first_seq: u64, payloads: &[Vec<u8>]) {
    let tx = conn.transaction().unwrap();
    insert_batch(&tx, first_seq, payloads.iter().map(Vec::as_slice)).unwrap();
    tx.commit().unwrap();
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    for size in [1_u64, 16, 256, 4096] {
        let payloads: Vec<Vec<u8>> = (0..size).map(|n| encode(&hold(n))).collect();
        group.throughput(Throughput::Elements(size));
        let mut rows = database(&format!("rows-{size}"), ROW_PER_EVENT_SCHEMA);
        let mut next = 1;
        group.bench_function(BenchmarkId::new("rows_per_event", size), |b| {
            b.iter(|| {
                insert_rows(&mut rows, next, &payloads);
                next += size;
            })
        });
        let mut batches = database(&format!("batches-{size}"), LOG_SCHEMA);
        let mut next = 1;
        group.bench_function(BenchmarkId::new("batches", size), |b| {
            b.iter(|| {
                insert_batches(&mut batches, next, &payloads);
                next += size;
            })
        });
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let mut rows = database("recovery-rows", ROW_PER_EVENT_SCHEMA);
    let mut batches = database("recovery-batches", LOG_SCHEMA);
    for first in (1..=RECOVERED_EVENTS).step_by(EVENTS_PER_COMMIT as usize) {
        let payloads: Vec<Vec<u8>> = (first..first + EVENTS_PER_COMMIT)
            .map(|n| encode(&hold(n)))
            .collect();
        insert_rows(&mut rows, first, &payloads);
        insert_batches(&mut batches, first, &payloads);
    }
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECOVERED_EVENTS));
    group.bench_function("rows_per_event", |b| {
        b.iter(|| {
            let mut stmt = rows
                .prepare("SELECT seq, version, payload FROM events WHERE seq > ?1 ORDER BY seq")
                .unwrap();
            let events: Vec<(u64, Event)> = stmt
                .query_map(params![0], |row| {
                    let payload = row.get_ref(2)?.as_blob().unwrap();
                    Ok((row.get::<_, i64>(0)? as u64, decode(payload)))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(events.len() as u64, RECOVERED_EVENTS);
            events
        })
    });
    group.bench_function("batches", |b| {
        b.iter(|| {
            let events = read_events_after(&batches, 0).unwrap();
            assert_eq!(events.len() as u64, RECOVERED_EVENTS);
            events
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = commit, recovery
}
criterion_main!(benches);
