//! The only module that touches disk: the SQLite event log, the history database that follows
//! it, the snapshot files, and the recovery that reads them back at start.
//!
//! Files, bottom to top; each uses only files above it in this list:
//! - `error`: `StoreError`, the store's one error type.
//! - `private`: files 0600 and directories 0700, and looser ones tightened.
//! - `rows`: what passes from the log to its history projection, and the blob encoding.
//! - `sqlite`: opening a database for its writer; schema versions; copies.
//! - `reader`: read-only connections to the history database.
//! - `log`: the event log, its writer thread and group commit.
//! - `keys`: the idempotency records table, and its reads on `StoreReader`.
//! - `history`: the balance entries and reservations tables, and their reads on `StoreReader`.
//! - `projection`: the history writer; opens the log and its history together.
//! - `snapshot`: snapshot files and the snapshotter that writes them.
//! - `recovery`: snapshots plus the log's tail, at start.
//! - `backup`: online copies of the snapshots, the history and the log.

pub mod backup;
pub mod error;
pub mod history;
pub mod keys;
pub mod log;
pub(crate) mod private;
pub mod projection;
pub mod reader;
pub mod recovery;
pub mod rows;
pub mod snapshot;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod test_support;

pub use error::StoreError;
pub use log::{Durable, EventLog, SyncMode};
pub use projection::OpenedLog;
pub use recovery::{recover, Policies, Recovered, StoreSetup};

/// The size of an event as the log stores it, for reports.
pub fn encoded_len(event: &crate::domain::Event) -> usize {
    rows::encode(event).len()
}
