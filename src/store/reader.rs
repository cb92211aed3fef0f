//! Reads of the log's database that do not go through the writer: a few read-only connections,
//! each seeing every commit that finished before its read began (WAL), never waiting for one
//! that is under way.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags};

use super::log::StoreError;

/// Read connections: one per core is enough, as a lookup is a few microseconds.
const READERS: usize = 2;

pub struct StoreReader {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl StoreReader {
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
                // Reads are point lookups and one user's rows: a small page cache each is
                // enough, and keeps the connections' memory from growing with the database.
                conn.execute_batch("PRAGMA cache_size = -512;")
                    .map_err(|e| StoreError::Setup(e.to_string()))?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
        })
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
