//! Idempotency records on disk: one row per keyed change in the history database, written by the
//! history writer once the change's event is committed (`store::projection`), and made again
//! from the log if the history lost it, so a stored record's event is always in the log. The
//! recent records are also in memory (`domain::idempotency::IdempotencyBook`); older ones are
//! read from here, by a few read-only connections that never wait for the writer (WAL), and
//! only for a key the in-memory index may hold. At start that index is made from this table.

use rusqlite::{params, Connection, OptionalExtension};

use super::error::StoreError;
use super::reader::StoreReader;
use super::rows;
use crate::domain::idempotency::{BookKey, KeyDigest, KeyIndex, KeyRecord, PendingRecord};
use crate::domain::{Timestamp, UserId};

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

/// Stores one record in place of any earlier record of its key. The engine records a key
/// again only once its record has expired, and rows are stored in log order, so a key's row is
/// its latest record, whether or not the expired one was deleted yet; the same event stored
/// again (recovery) writes the same values.
pub(crate) fn insert(conn: &Connection, pending: &PendingRecord) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO idempotency_keys (user_id, digest, fingerprint, outcome, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, digest) DO UPDATE SET
             fingerprint = excluded.fingerprint,
             outcome = excluded.outcome,
             recorded_at = excluded.recorded_at",
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

/// Keys indexed between two progress lines at start.
const INDEXED_PER_PROGRESS_LINE: usize = 1_000_000;

impl StoreReader {
    /// The stored record of `key`, if any. Sees every commit that finished before the call.
    pub fn find_key(&self, key: &BookKey) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.find_record(key)?.map(|stored| stored.record))
    }

    /// `find_key` with when the record was made, which may be more than `KEY_TTL_MS` ago
    /// (a stale row is deleted within a minute or so).
    pub fn find_record(&self, key: &BookKey) -> Result<Option<PendingRecord>, StoreError> {
        let row = self
            .connection()
            .prepare_cached(
                "SELECT fingerprint, outcome, recorded_at FROM idempotency_keys
                 WHERE user_id = ?1 AND digest = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![key.user().0 as i64, &key.digest().0[..]], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()
            })?;
        row.map(|(fingerprint, outcome, recorded_at)| {
            Ok(PendingRecord {
                key: *key,
                record: KeyRecord {
                    fingerprint: fingerprint as u64,
                    outcome: rows::decode(&outcome, "idempotency record")?,
                },
                at: Timestamp(recorded_at),
            })
        })
        .transpose()
    }

    /// An index of every stored key, made in one pass, oldest first, over the by-age index
    /// (which holds the keys themselves: the table has no rowid), reading neither fingerprints
    /// nor outcomes. Stale rows not yet deleted are entered too; the index lets them go at once.
    pub fn key_index(&self) -> Result<KeyIndex, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare(
            "SELECT user_id, digest, recorded_at FROM idempotency_keys
             INDEXED BY idempotency_keys_by_age ORDER BY recorded_at",
        )?;
        let mut rows = statement.query([])?;
        let mut index = KeyIndex::default();
        while let Some(row) = rows.next()? {
            let user = UserId(row.get::<_, i64>(0)? as u64);
            let digest = KeyDigest(row.get::<_, [u8; 16]>(1)?);
            index.insert(BookKey::stored(user, digest).tag(), Timestamp(row.get(2)?));
            if index.len() % INDEXED_PER_PROGRESS_LINE == 0 {
                tracing::info!(keys = index.len(), "indexing the stored idempotency keys");
            }
        }
        Ok(index)
    }
}
