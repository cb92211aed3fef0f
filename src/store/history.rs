//! History a user can list, kept on disk instead of in memory: every balance entry is a row of
//! the log's database, written by the log writer in the same transaction as the event that
//! makes it. Its id is that event's log sequence.

use rusqlite::{params, Connection};

use super::log::StoreError;
use super::reader::StoreReader;
use crate::domain::ledger::LedgerEntry;
use crate::domain::UserId;

pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS ledger_entries (
        entry_id INTEGER PRIMARY KEY,
        user_id  INTEGER NOT NULL,
        entry    BLOB    NOT NULL
    );
    CREATE INDEX IF NOT EXISTS ledger_entries_by_user ON ledger_entries (user_id, entry_id);";

fn encode_entry(entry: &LedgerEntry) -> Vec<u8> {
    bincode::serde::encode_to_vec(entry, bincode::config::standard())
        .expect("entries always encode")
}

/// Stores one entry; one already there (the same event, replayed) is kept as it is.
pub(crate) fn insert_entry(
    conn: &Connection,
    user: UserId,
    entry: &LedgerEntry,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO ledger_entries (entry_id, user_id, entry) VALUES (?1, ?2, ?3)",
    )?;
    statement.execute(params![
        entry.entry_id as i64,
        user.0 as i64,
        encode_entry(entry)
    ])?;
    Ok(())
}

impl StoreReader {
    /// `user`'s balance history, newest first, as of the last finished commit.
    pub fn ledger_history(&self, user: UserId) -> Result<Vec<LedgerEntry>, StoreError> {
        let unreadable = |e: rusqlite::Error| {
            StoreError::Corrupt(format!("cannot read the balance history: {e}"))
        };
        let conn = self.connection();
        let mut statement = conn
            .prepare_cached(
                "SELECT entry FROM ledger_entries WHERE user_id = ?1 ORDER BY entry_id DESC",
            )
            .map_err(unreadable)?;
        let rows = statement
            .query_map(params![user.0 as i64], |row| row.get::<_, Vec<u8>>(0))
            .map_err(unreadable)?;
        let mut entries = Vec::new();
        for row in rows {
            let bytes = row.map_err(unreadable)?;
            let (entry, _) = bincode::serde::decode_from_slice::<LedgerEntry, _>(
                &bytes,
                bincode::config::standard(),
            )
            .map_err(|e| StoreError::Corrupt(format!("undecodable balance entry: {e}")))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}
