//! Idempotency records on disk: one row per keyed change, written by the log writer in the same
//! transaction as the change's event, so a record exists exactly when its event does. The
//! recent records are also in memory (`domain::idempotency::IdempotencyBook`); older ones are
//! read from here, by a few read-only connections that never wait for the writer (WAL).

use rusqlite::{params, Connection, OptionalExtension};

use super::log::StoreError;
use super::reader::StoreReader;
use crate::domain::idempotency::{BookKey, KeyRecord, Outcome, PendingRecord};
use crate::domain::Timestamp;

pub(crate) const SCHEMA: &str = "
    CREATE TABLE idempotency_keys (
        user_id     INTEGER NOT NULL,
        digest      BLOB    NOT NULL,
        fingerprint INTEGER NOT NULL,
        outcome     BLOB    NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (recorded_at);";

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

impl StoreReader {
    /// The stored record of `key`, if any. Sees every commit that finished before the call.
    pub fn find_key(&self, key: &BookKey) -> Result<Option<KeyRecord>, StoreError> {
        let row = self
            .connection()
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
}
