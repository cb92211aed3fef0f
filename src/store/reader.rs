//! Reads of the history database that do not go through its writer: a few read-only
//! connections, each seeing every commit that finished before its read began (WAL), never
//! waiting for one that is under way. The rows follow their events' commit; a reader that must
//! see every acknowledged change waits for them first (`caught_up`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

use super::error::{FileKind, StoreError};
use super::rows::ToRows;

/// Read connections: one per core is enough, as a lookup is a few microseconds.
const READERS: usize = 2;

pub struct StoreReader {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// The log's committed sequence, and how far the history's rows reach.
    committed: watch::Receiver<u64>,
    rows_through: watch::Receiver<u64>,
    history_writer: mpsc::Sender<ToRows>,
}

impl StoreReader {
    /// Opens read-only connections to a history database its writer has already set up.
    pub(crate) fn open(
        path: &Path,
        committed: watch::Receiver<u64>,
        rows_through: watch::Receiver<u64>,
        history_writer: mpsc::Sender<ToRows>,
    ) -> Result<Self, StoreError> {
        let connections = (0..READERS)
            .map(|_| {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let database = |source| StoreError::Database {
                    file: FileKind::HistoryDatabase,
                    path: path.to_owned(),
                    source,
                };
                let conn = Connection::open_with_flags(path, flags).map_err(database)?;
                conn.busy_timeout(std::time::Duration::from_secs(1))
                    .map_err(database)?;
                // Reads are point lookups and one user's rows: a small page cache each is
                // enough, and keeps the connections' memory from growing with the database.
                conn.execute_batch("PRAGMA cache_size = -512;")
                    .map_err(database)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            committed,
            rows_through,
            history_writer,
        })
    }

    /// Waits until the rows of every event committed so far are stored: a read after this
    /// sees every change acknowledged before the call.
    pub async fn caught_up(&self) {
        let committed = *self.committed.borrow();
        let mut rows_through = self.rows_through.clone();
        if *rows_through.borrow() >= committed {
            return;
        }
        let _ = self.history_writer.send(ToRows::Hurry(committed));
        // The history writer only stops with the process.
        let _ = rows_through.wait_for(|through| *through >= committed).await;
    }

    /// A free connection, or else one in turn.
    pub(crate) fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connections
            .iter()
            .find_map(|c| c.try_lock())
            .unwrap_or_else(|| {
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
                self.connections[turn].lock()
            })
    }
}
