//! Idempotency records on disk: one row per keyed change, written by the log writer in the same
//! transaction as the change's event, so a record exists exactly when its event does. The
//! recent records are also in memory (`domain::idempotency::IdempotencyBook`); older ones are
//! read from here, by a few read-only connections that never wait for the writer (WAL).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::log::StoreError;
use crate::domain::idempotency::{BookKey, KeyRecord, Outcome, PendingRecord};
use crate::domain::{Timestamp, UserId};

pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        user_id     INTEGER NOT NULL,
        digest      BLOB    NOT NULL,
        fingerprint INTEGER NOT NULL,
        outcome     BLOB    NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (recorded_at);";

/// Read connections: one per core is enough, as a lookup is a few microseconds.
const READERS: usize = 2;

fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    bincode::serde::encode_to_vec(outcome, bincode::config::standard())
        .expect("outcomes always encode")
}

fn decode_outcome(bytes: &[u8]) -> Result<Outcome, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(outcome, _)| outcome)
        .map_err(|e| StoreError::Corrupt(format!("undecodable idempotency record: {e}")))
}

/// Stores one record; a record already there (the same event, replayed) is kept as it is.
pub(crate) fn insert(conn: &Connection, pending: &PendingRecord) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO idempotency_keys
             (user_id, digest, fingerprint, outcome, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    statement.execute(params![
        pending.key.user().0 as i64,
        &pending.key.digest().0[..],
        pending.record.fingerprint as i64,
        encode_outcome(&pending.record.outcome),
        pending.at.as_millis(),
    ])?;
    Ok(())
}

/// Deletes the records that are stale at `now`; returns how many.
pub(crate) fn forget_stale(conn: &Connection, now: Timestamp) -> rusqlite::Result<usize> {
    let horizon = now.plus_millis(-crate::domain::idempotency::KEY_TTL_MS);
    conn.execute(
        "DELETE FROM idempotency_keys WHERE recorded_at <= ?1",
        params![horizon.as_millis()],
    )
}

/// Looks records up without going through the writer.
pub struct KeyReader {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl KeyReader {
    /// Opens read-only connections to a log the writer has already set up.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let connections = (0..READERS)
            .map(|_| {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(path, flags).map_err(|e| {
                    StoreError::Setup(format!(
                        "cannot open the event log {} for reading: {e}",
                        path.display()
                    ))
                })?;
                conn.busy_timeout(std::time::Duration::from_secs(1))
                    .map_err(|e| StoreError::Setup(e.to_string()))?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    /// The stored record of `key`, if any. Sees every commit that finished before the call.
    pub fn find(&self, key: &BookKey) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self
            .connections
            .iter()
            .find_map(|c| c.try_lock())
            .unwrap_or_else(|| {
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
                self.connections[turn].lock()
            });
        let row = conn
            .prepare_cached(
                "SELECT fingerprint, outcome FROM idempotency_keys
                 WHERE user_id = ?1 AND digest = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![key.user().0 as i64, &key.digest().0[..]], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot read idempotency records: {e}")))?;
        row.map(|(fingerprint, outcome)| {
            Ok(KeyRecord {
                fingerprint: fingerprint as u64,
                outcome: decode_outcome(&outcome)?,
            })
        })
        .transpose()
    }

    /// Records stored for `user`, for tests and reports.
    pub fn count_of(&self, user: UserId) -> Result<u64, StoreError> {
        let conn = self.connections[0].lock();
        conn.query_row(
            "SELECT COUNT(*) FROM idempotency_keys WHERE user_id = ?1",
            params![user.0 as i64],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}
