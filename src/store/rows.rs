//! What passes between the log and its history projection, below both: the rows one event
//! leaves (`EventRows`), the messages the history writer takes (`ToRows`), where the history
//! file sits, and the bincode encoding of what the two databases store.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::error::StoreError;
use crate::domain::idempotency::PendingRecord;
use crate::domain::ledger::LedgerEntry;
use crate::domain::seat_map::ReservationChange;
use crate::domain::waitlist::WaitlistChange;
use crate::domain::{Event, Timestamp, UserId};

/// Encodes what the store keeps in a blob: events, records, entries, reservations, snapshots.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("stored values always encode")
}

/// Decodes a blob `encode` wrote; `what` names it in the error.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|source| StoreError::Undecodable { what, source })
}

/// `boxoffice.db` → `boxoffice.history.db`, beside the log.
pub fn history_path(log: &Path) -> PathBuf {
    let mut name = OsString::from(log.file_stem().unwrap_or_else(|| "boxoffice".as_ref()));
    name.push(".history");
    if let Some(extension) = log.extension() {
        name.push(".");
        name.push(extension);
    }
    log.with_file_name(name)
}

/// The rows one logged event leaves; most events leave none.
#[derive(Debug)]
pub struct EventRows {
    pub seq: u64,
    pub key: Option<PendingRecord>,
    pub entries: SmallVec<[(UserId, LedgerEntry); 1]>,
    pub reservations: SmallVec<[ReservationChange; 1]>,
    pub waitlist: Option<WaitlistChange>,
}

impl EventRows {
    /// The rows `event`, logged as `seq`, leaves: the one projection, live and in recovery.
    /// `key` is `PendingRecord::of(event)`, which a live caller has already made for its book.
    pub fn made_by(seq: u64, event: &Event, key: Option<PendingRecord>) -> Self {
        debug_assert_eq!(key, PendingRecord::of(event));
        Self {
            seq,
            key,
            entries: LedgerEntry::made_by(seq, event),
            reservations: ReservationChange::made_by(event),
            waitlist: WaitlistChange::made_by(event),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.key.is_none()
            && self.entries.is_empty()
            && self.reservations.is_empty()
            && self.waitlist.is_none()
    }
}

pub(crate) enum ToRows {
    /// The rows of a committed batch of events, the last of which is `through`.
    Write { through: u64, rows: Vec<EventRows> },
    /// Rows of events committed before this start that the history did not store before the
    /// stop; once they are stored, every event up to `through` has its rows. Answers then.
    Project {
        rows: Vec<EventRows>,
        through: u64,
        done: oneshot::Sender<()>,
    },
    /// Delete idempotency records that are stale at this time.
    ForgetKeys(Timestamp),
    /// A reader waits for the rows of the events up to this one: write them as soon as they
    /// are here.
    Hurry(u64),
    /// Sync everything written so far to disk; answers the mark that is now durable.
    MakeDurable(oneshot::Sender<u64>),
    /// Copy the database into a new file; answers the mark the copy holds.
    Backup(PathBuf, oneshot::Sender<Result<u64, StoreError>>),
    /// Write what is queued, release the database, and say so.
    Close(oneshot::Sender<()>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_file_sits_beside_the_log() {
        assert_eq!(
            history_path(Path::new("/var/lib/boxoffice/boxoffice.db")),
            Path::new("/var/lib/boxoffice/boxoffice.history.db")
        );
        assert_eq!(
            history_path(Path::new("data/log")),
            Path::new("data/log.history")
        );
    }
}
