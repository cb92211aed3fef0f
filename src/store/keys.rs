//! Idempotency records on disk: one row per keyed change in the history database, written by the
//! history writer once the change's event is committed (`store::projection`), and made again
//! from the log if the history lost it, so a stored record's event is always in the log. The
//! recent records are also in memory (`domain::idempotency::IdempotencyBook`); older ones are
//! read from here, by a few read-only connections that never wait for the writer (WAL).

use rusqlite::{params, Connection, OptionalExtension};

use super::error::StoreError;
use super::reader::StoreReader;
use super::rows;
use crate::domain::idempotency::{BookKey, KeyRecord, PendingRecord};
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
        rows::encode(&pending.record.outcome),
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
            })?;
        row.map(|(fingerprint, outcome)| {
            Ok(KeyRecord {
                fingerprint: fingerprint as u64,
                outcome: rows::decode(&outcome, "idempotency record")?,
            })
        })
        .transpose()
    }
}
