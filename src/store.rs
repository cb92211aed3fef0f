//! The only module that touches disk: the SQLite event log, the history database beside it,
//! the snapshot files, and the recovery that reads them back at start.

pub mod backup;
pub mod history;
pub mod keys;
pub mod log;
pub mod reader;
pub mod recovery;
pub mod rows;
pub mod snapshot;

pub use log::{Durable, EventLog, StoreError};
pub use recovery::{recover, Recovered};
