//! The history database: the rows events leave beside them (idempotency records, balance
//! entries, reservations), in a second SQLite file with a writer thread of its own.
//!
//! Why apart from the log: every row is a projection of an event (`PendingRecord::of`,
//! `LedgerEntry::made_by`, `ReservationChange::made_by`), so it can always be made again from
//! the log. A hold therefore waits only for its event's fsync; the rows follow a commit behind,
//! with `synchronous = normal`, on the other core. The database records how far it has
//! projected (`rows_through`), in the same transaction as the rows, and recovery projects the
//! events after that mark again. The log keeps those events: it is pruned only below a mark
//! that a fully synced commit has made durable (`ToRows::MakeDurable`).
//!
//! Readers that must see every acknowledged change wait for the mark to reach the log's
//! committed sequence first (`StoreReader::caught_up`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{oneshot, watch};

use super::log::{create_or_check_schema, fatal, LogStats, StoreError, WRITER_BUSY_TIMEOUT_MS};
use super::{history, keys};
use crate::domain::idempotency::PendingRecord;
use crate::domain::ledger::LedgerEntry;
use crate::domain::seat_map::ReservationChange;
use crate::domain::{Event, Timestamp, UserId};

/// Upper bound on events' rows per transaction, as for the log.
const BATCH_ROWS_MAX: usize = 16_384;
/// Under load, at most one commit this often, unless a reader waits for the rows.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

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
    pub entry: Option<(UserId, LedgerEntry)>,
    pub reservation: Option<ReservationChange>,
}

impl EventRows {
    /// The rows `event`, logged as `seq`, leaves: the one projection, live and in recovery.
    /// `key` is `PendingRecord::of(event)`, which a live caller has already made for its book.
    pub fn made_by(seq: u64, event: &Event, key: Option<PendingRecord>) -> Self {
        debug_assert_eq!(key, PendingRecord::of(event));
        Self {
            seq,
            key,
            entry: LedgerEntry::made_by(seq, event),
            reservation: ReservationChange::made_by(event),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.entry.is_none() && self.reservation.is_none()
    }
}

pub(crate) enum ToRows {
    /// The rows of a committed batch of events, the last of which is `through`.
    Write { through: u64, rows: Vec<EventRows> },
    /// Rows of events committed before this start that the history did not store before the
    /// stop, the last of those events being `through`; answers when they are stored.
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
    Backup(PathBuf, oneshot::Sender<Result<u64, String>>),
    /// Write what is queued, release the database, and say so.
    Close(oneshot::Sender<()>),
}

/// The schema version of the history database (`PRAGMA user_version`).
pub const HISTORY_SCHEMA_VERSION: u32 = 1;

const META_SCHEMA: &str = "
    CREATE TABLE history_meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );";

fn setup_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Setup(format!(
        "cannot use the history database {}: {e}; check storage.sqlite_path and permissions, or \
         restore it from the same backup as the log",
        path.display()
    ))
}

/// An opened history database, before its writer starts.
pub(crate) struct OpenedHistory {
    pub conn: Connection,
    /// Every event up to here has its rows stored; `None` for a new database.
    pub rows_through: Option<u64>,
}

pub(crate) fn open(path: &Path) -> Result<OpenedHistory, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| setup_error(path, e))?;
    // A reader that finds the WAL index header mid-change takes the write lock for a moment
    // to check it; the writer must wait that out, not fail (and stop the process). The lock
    // file, not this, keeps a second process away.
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout = {WRITER_BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;"
    ))
    .map_err(|e| setup_error(path, e))?;
    create_or_check_schema(
        &conn,
        path,
        &format!("{}{}{META_SCHEMA}", keys::SCHEMA, history::SCHEMA),
        HISTORY_SCHEMA_VERSION,
    )?;
    let rows_through = read_mark(&conn).map_err(|e| setup_error(path, e))?;
    Ok(OpenedHistory { conn, rows_through })
}

fn read_mark(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT value FROM history_meta WHERE name = 'rows_through'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|mark| mark.map(|m| m as u64))
}

fn write_mark(conn: &Connection, through: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history_meta (name, value) VALUES ('rows_through', ?1)",
    )?
    .execute(params![through as i64])?;
    Ok(())
}

/// Marks a database that starts empty beside a log whose events up to `through` need no rows.
pub(crate) fn mark_fresh(conn: &Connection, through: u64) -> rusqlite::Result<()> {
    write_mark(conn, through)
}

/// The history writer's loop: everything that arrived while the previous transaction ran goes
/// into the next one, with the new mark.
pub(crate) fn write_rows(
    mut conn: Connection,
    from_log: mpsc::Receiver<ToRows>,
    stats: Arc<LogStats>,
    progress: watch::Sender<u64>,
    mut through: u64,
) {
    let mut close = None;
    let mut projected = Vec::new();
    let mut forget_keys = None;
    let mut durable = Vec::new();
    let mut backups = Vec::new();
    let mut last_commit = Instant::now();
    // A reader waits for the rows up to here: no gathering until they are stored.
    let mut hurry_until = 0;
    while let Ok(first) = from_log.recv() {
        let mut rows = Vec::new();
        let mut batch_through = None;
        let mut wanted_now = false;
        let gather_until = last_commit + COMMIT_INTERVAL;
        let mut next = Some(first);
        loop {
            let message = match next.take() {
                Some(message) => message,
                None if wanted_now || rows.len() >= BATCH_ROWS_MAX => break,
                // Its events' rows may come after the request to hurry: stop at the first.
                None if batch_through.is_some() && hurry_until > through => break,
                // Under load, rows gather for a while: each commit rewrites the pages it
                // touches, so fewer, larger ones write far less.
                None => match from_log
                    .recv_timeout(gather_until.saturating_duration_since(Instant::now()))
                {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            match message {
                ToRows::Write {
                    through: last,
                    rows: mut more,
                } => {
                    rows.append(&mut more);
                    batch_through = Some(last);
                }
                ToRows::Hurry(until) => hurry_until = hurry_until.max(until),
                ToRows::Project {
                    rows,
                    through,
                    done,
                } => {
                    projected.push((rows, through, done));
                    wanted_now = true;
                }
                ToRows::ForgetKeys(now) => forget_keys = forget_keys.max(Some(now)),
                ToRows::MakeDurable(done) => {
                    durable.push(done);
                    wanted_now = true;
                }
                ToRows::Backup(path, done) => {
                    backups.push((path, done));
                    wanted_now = true;
                }
                ToRows::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            next = from_log.try_recv().ok();
        }
        for (rows, last, done) in projected.drain(..) {
            through = through.max(last);
            if let Err(error) = commit(&mut conn, &rows, through) {
                fatal(&format!(
                    "cannot store the history rows of events through {through}: {error}"
                ));
            }
            stats.rows_through.store(through, Ordering::SeqCst);
            progress.send_replace(through);
            let _ = done.send(());
        }
        if let Some(now) = forget_keys.take() {
            // Before the batch, whose mark then tells that it is done. Housekeeping: a failure
            // only keeps records longer than promised.
            match keys::forget_stale(&conn, now) {
                Ok(rows) => tracing::debug!(rows, "forgot stale idempotency records"),
                Err(error) => tracing::warn!(%error, "could not forget stale idempotency records"),
            }
        }
        if let Some(last) = batch_through {
            let started = Instant::now();
            if let Err(error) = commit(&mut conn, &rows, last) {
                fatal(&format!(
                    "cannot store the history rows of events through {last}: {error}"
                ));
            }
            metrics::histogram!("boxoffice_history_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            last_commit = Instant::now();
            through = last;
            stats.rows_through.store(through, Ordering::SeqCst);
            progress.send_replace(through);
        }
        if !durable.is_empty() {
            if let Err(error) = commit_synced(&mut conn, through) {
                fatal(&format!("cannot sync the history database: {error}"));
            }
            for done in durable.drain(..) {
                let _ = done.send(through);
            }
        }
        for (path, done) in backups.drain(..) {
            let copied = path
                .to_str()
                .ok_or_else(|| "the backup path is not UTF-8".to_owned())
                .and_then(|target| {
                    conn.execute("VACUUM INTO ?1", params![target])
                        .map_err(|e| e.to_string())
                });
            let _ = done.send(copied.map(|_| through));
        }
        if let Some(done) = close.take() {
            // The readers keep the file open, so closing this connection would not fold the
            // write-ahead log back in: do it here, so that the stopped database is one file.
            if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                tracing::warn!(%error, "could not checkpoint the history database at stop");
            }
            drop(conn);
            let _ = done.send(());
            return;
        }
    }
}

fn commit(conn: &mut Connection, rows: &[EventRows], through: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    store_event_rows(&tx, rows)?;
    write_mark(&tx, through)?;
    tx.commit()
}

fn store_event_rows(conn: &Connection, rows: &[EventRows]) -> rusqlite::Result<()> {
    for event in rows {
        if let Some(key) = &event.key {
            keys::insert(conn, key)?;
        }
        if let Some((user, entry)) = &event.entry {
            history::insert_entry(conn, *user, entry)?;
        }
        if let Some(change) = &event.reservation {
            history::change_reservation(conn, change, event.seq)?;
        }
    }
    Ok(())
}

/// One transaction with `synchronous = full`: its fsync of the write-ahead log makes every
/// earlier commit durable too.
fn commit_synced(conn: &mut Connection, through: u64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction()?;
    write_mark(&tx, through)?;
    tx.commit()?;
    conn.pragma_update(None, "synchronous", "NORMAL")
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
