//! The history database as a projection of the log: the rows events leave (idempotency
//! records, balance entries, reservations), in a second SQLite file with a writer thread of its
//! own.
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
//!
//! This module opens the log and its history together (`EventLog::open`): the history is
//! checked against the log it follows, never the other way round.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

use super::error::{FileKind, StoreError};
use super::log::{fatal, EventLog, LogFile, LogStart, LogStats, SyncMode};
use super::reader::StoreReader;
use super::rows::{history_path, EventRows, ToRows};
use super::{history, keys, sqlite};
use crate::domain::Event;

/// Upper bound on events' rows per transaction, as for the log.
const BATCH_ROWS_MAX: usize = 16_384;
/// Under load, at most one commit this often, unless a reader waits for the rows.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// The schema version of the history database (`PRAGMA user_version`).
pub const HISTORY_SCHEMA_VERSION: u32 = 1;

const META_SCHEMA: &str = "
    CREATE TABLE history_meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );";

/// An opened log with what it holds past the requested sequence.
pub struct OpenedLog {
    pub log: EventLog,
    pub events: Vec<(u64, Event)>,
    pub oldest_stored: Option<u64>,
    /// Every event up to here has its rows in the history database; recovery projects the
    /// ones after it again (`events` starts no later than this).
    pub rows_through: u64,
}

impl EventLog {
    /// Opens (or creates) the log and its history database, and returns the log with every
    /// stored event after `after_seq` (or after the history's mark, if that is lower), and the
    /// oldest sequence still stored (older rows were pruned below snapshots).
    pub fn open(path: &Path, sync: SyncMode, after_seq: u64) -> Result<OpenedLog, StoreError> {
        let file = LogFile::open(path, sync)?;
        let start_seq = file.last_seq.max(after_seq);
        let history_file = history_path(path);
        let (history, rows_through) = open_history(path, &history_file, start_seq)?;
        let events = file.read_after(after_seq.min(rows_through))?;
        let oldest_stored = file.oldest_stored;

        let (to_rows, from_log) = mpsc::channel();
        let stats = Arc::new(LogStats::default());
        stats.committed_seq.store(start_seq, Ordering::SeqCst);
        stats.rows_through.store(rows_through, Ordering::SeqCst);
        let (committed_tx, committed) = watch::channel(start_seq);
        let (rows_tx, rows_progress) = watch::channel(rows_through);
        let reader = Arc::new(StoreReader::open(
            &history_file,
            committed,
            rows_progress,
            to_rows.clone(),
        )?);
        let rows_stats = stats.clone();
        thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_rows(history, from_log, rows_stats, rows_tx, rows_through))
            .map_err(|source| StoreError::Thread {
                name: "history writer",
                source,
            })?;
        let log = EventLog::start(
            file,
            LogStart {
                start_seq,
                to_rows,
                reader,
                stats,
                committed: committed_tx,
            },
        )?;
        Ok(OpenedLog {
            log,
            events,
            oldest_stored,
            rows_through,
        })
    }
}

/// Opens the history database beside the log at `path` and says how far its rows reach. It
/// starts empty only beside a log that has no events; missing beside one that has, or ahead of
/// it, it is refused.
fn open_history(
    path: &Path,
    history_file: &Path,
    last_seq: u64,
) -> Result<(Connection, u64), StoreError> {
    let conn = sqlite::open_writer(
        history_file,
        FileKind::HistoryDatabase,
        "NORMAL",
        &format!("{}{}{META_SCHEMA}", keys::SCHEMA, history::SCHEMA),
        HISTORY_SCHEMA_VERSION,
    )?;
    let rows_through = match read_mark(&conn)? {
        // Rows of events the log does not have: their ids would be given again, and the new
        // rows refused as duplicates.
        Some(mark) if mark > last_seq => {
            return Err(StoreError::HistoryAhead {
                history: history_file.to_owned(),
                log: path.to_owned(),
                mark,
                log_end: last_seq,
            })
        }
        Some(mark) => mark,
        None if last_seq > 0 => {
            return Err(StoreError::HistoryMissing {
                history: history_file.to_owned(),
                log: path.to_owned(),
            })
        }
        None => {
            write_mark(&conn, last_seq)?;
            last_seq
        }
    };
    Ok((conn, rows_through))
}

/// Every event up to the mark has its rows stored; `None` for a new database.
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

/// The history writer's loop: everything that arrived while the previous transaction ran goes
/// into the next one, with the new mark.
fn write_rows(
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
            let copied = sqlite::vacuum_into(&conn, &path, FileKind::HistoryDatabase);
            let _ = done.send(copied.map(|()| through));
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
