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
        stats.appended_seq.store(start_seq, Ordering::SeqCst);
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
        for (user, entry) in &event.entries {
            history::insert_entry(conn, *user, entry)?;
        }
        for change in &event.reservations {
            history::change_reservation(conn, change, event.seq)?;
        }
        if let Some(change) = &event.waitlist {
            history::change_waitlist(conn, change, event.seq)?;
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
    use std::path::PathBuf;

    use super::*;
    use crate::domain::idempotency::PendingRecord;
    use crate::domain::Timestamp;
    use crate::store::log::Durable;
    use crate::store::test_support::{concert, scratch_log};

    #[tokio::test]
    async fn committed_events_come_back_in_order_after_a_reopen() {
        let path = scratch_log("reopen");
        let opened = EventLog::open(&path, SyncMode::Full, 0).unwrap();
        assert!(opened.events.is_empty());
        let tickets: Vec<Durable> = (1..=50).map(|n| opened.log.append(&concert(n))).collect();
        let mut seqs = Vec::new();
        for ticket in tickets {
            seqs.push(ticket.wait().await);
        }
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        let stats = opened.log.stats();
        assert!(stats.commits.load(Ordering::Relaxed) <= 50);
        assert_eq!(stats.events.load(Ordering::Relaxed), 50);
        opened.log.close().await;
        let reopened = EventLog::open(&path, SyncMode::Normal, 10).unwrap();
        assert_eq!(reopened.events.len(), 40);
        assert_eq!(reopened.events[0], (11, concert(11)));
        assert_eq!(reopened.oldest_stored, Some(1));
        assert_eq!(reopened.log.append(&concert(51)).seq(), 51);
    }

    #[tokio::test]
    async fn a_run_appended_together_takes_consecutive_numbers_and_one_ticket() {
        let path = scratch_log("run");
        let opened = EventLog::open(&path, SyncMode::Full, 0).unwrap();
        opened.log.append(&concert(1)).wait().await;
        let events: Vec<Event> = (2..=4).map(concert).collect();
        let appended = |event| crate::store::log::Appended {
            event,
            key: None,
            after_commit: None,
        };
        assert!(
            opened.log.append_many(std::iter::empty()).is_none(),
            "an empty run takes no number"
        );
        let (first, ticket) = opened.log.append_many(events.iter().map(appended)).unwrap();
        assert_eq!((first, ticket.seq()), (2, 4));
        assert_eq!(ticket.wait().await, 4);
        assert_eq!(opened.log.append(&concert(5)).seq(), 5);
        opened.log.close().await;
        let reopened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        assert_eq!(
            reopened.events,
            (1..=5)
                .map(|n| (u64::from(n), concert(n)))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_second_process_on_the_same_log_is_refused_while_the_first_runs() {
        let path = scratch_log("locked");
        let first = EventLog::open(&path, SyncMode::Full, 0).unwrap();
        first.log.append(&concert(1)).wait().await;
        let error = EventLog::open(&path, SyncMode::Full, 0).err().unwrap();
        assert!(
            error.to_string().contains("another boxoffice process"),
            "{error}"
        );
        first.log.close().await;
        EventLog::open(&path, SyncMode::Full, 0).unwrap();
    }

    #[tokio::test]
    async fn pruning_drops_rows_below_the_floor_only() {
        let path = scratch_log("prune");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        // One commit each, so every event is a batch of its own.
        for n in 1..=10 {
            opened.log.append(&concert(n)).wait().await;
        }
        opened.log.prune_through(4);
        opened.log.append(&concert(11)).wait().await;
        opened.log.close().await;
        let reopened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        assert_eq!(reopened.oldest_stored, Some(5));
        assert_eq!(reopened.events.len(), 7);
    }

    fn keyed_charge(key: &str, at: i64) -> Event {
        keyed_charge_of(key, at, 99)
    }

    fn keyed_charge_of(key: &str, at: i64, fingerprint: u64) -> Event {
        Event::BalanceCharged {
            charge: crate::domain::ChargeId(1),
            user: crate::domain::UserId(4),
            amount: 10,
            balance_after: 10,
            at: Timestamp(at),
            idempotency: Some(crate::domain::IdempotencyStamp {
                key: crate::domain::IdempotencyKey::parse(key).unwrap(),
                fingerprint,
            }),
        }
    }

    #[tokio::test]
    async fn a_keyed_event_is_committed_with_its_record_which_is_forgotten_after_a_day() {
        use crate::domain::idempotency::{KeyRecord, KEY_TTL_MS};
        let path = scratch_log("keys");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        let old = PendingRecord::of(&keyed_charge("old", 1_000)).unwrap();
        let new = PendingRecord::of(&keyed_charge("new", 5_000)).unwrap();
        assert_eq!(opened.log.reader().find_key(&old.key).unwrap(), None);
        opened.log.append(&keyed_charge("old", 1_000)).wait().await;
        // A record of the same key again (a replay) keeps the first.
        opened.log.append(&keyed_charge("old", 1_000)).wait().await;
        opened.log.append(&concert(1)).wait().await;
        opened.log.reader().caught_up().await;
        let found: Option<KeyRecord> = opened.log.reader().find_key(&old.key).unwrap();
        assert_eq!(found, Some(old.record));
        opened.log.close().await;

        let reopened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        assert_eq!(
            reopened.log.reader().find_key(&old.key).unwrap(),
            Some(old.record)
        );
        reopened
            .log
            .append(&keyed_charge("new", 5_000))
            .wait()
            .await;
        reopened.log.reader().caught_up().await;
        reopened
            .log
            .forget_stale_keys(Timestamp(1_000 + KEY_TTL_MS));
        reopened.log.append(&concert(2)).wait().await;
        reopened.log.reader().caught_up().await;
        assert_eq!(reopened.log.reader().find_key(&old.key).unwrap(), None);
        assert_eq!(
            reopened.log.reader().find_key(&new.key).unwrap(),
            Some(new.record)
        );
        reopened.log.close().await;
    }

    /// A key is free again once its record expired, even while the stale row waits to be
    /// forgotten: what the key did last is what it answers from then on.
    #[tokio::test]
    async fn a_key_recorded_again_after_its_record_expired_answers_with_the_new_record() {
        use crate::domain::idempotency::KEY_TTL_MS;
        let path = scratch_log("rekeyed");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        let first = keyed_charge_of("k", 1_000, 1);
        let again = keyed_charge_of("k", 1_000 + KEY_TTL_MS, 2);
        opened.log.append(&first).wait().await;
        opened.log.append(&again).wait().await;
        opened.log.reader().caught_up().await;
        let again = PendingRecord::of(&again).unwrap();
        assert_eq!(
            opened.log.reader().find_key(&again.key).unwrap(),
            Some(again.record)
        );
        opened.log.close().await;
    }

    /// The user's whole balance history: these tests keep it shorter than a page.
    fn every_entry(
        log: &EventLog,
        user: crate::domain::UserId,
    ) -> Vec<crate::domain::ledger::LedgerEntry> {
        use crate::domain::page::{ListKind, PageLimit, PageRequest};
        let request = PageRequest::first(ListKind::BalanceHistory, PageLimit::MAX);
        let page = log.reader().ledger_page(user, &request).unwrap();
        assert_eq!(page.next, None);
        page.entries
    }

    #[tokio::test]
    async fn a_money_event_is_committed_with_its_history_entry_numbered_by_its_sequence() {
        use crate::domain::ledger::{EntryKind, LedgerEntry};
        let path = scratch_log("history");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        opened.log.append(&concert(1));
        opened.log.append(&keyed_charge("a", 1_000));
        opened.log.append(&concert(2)).wait().await;
        opened.log.reader().caught_up().await;
        let user = crate::domain::UserId(4);
        let history = every_entry(&opened.log, user);
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].entry_id, history[0].kind, history[0].amount),
            (LedgerEntry::id_of(2, 0), EntryKind::Charge, 10)
        );
        opened.log.append(&keyed_charge("b", 2_000)).wait().await;
        opened.log.reader().caught_up().await;
        let ids: Vec<u64> = every_entry(&opened.log, user)
            .iter()
            .map(|e| e.entry_id)
            .collect();
        assert_eq!(
            ids,
            vec![LedgerEntry::id_of(4, 0), LedgerEntry::id_of(2, 0)],
            "newest first"
        );
        assert!(every_entry(&opened.log, crate::domain::UserId(5)).is_empty());
        opened.log.close().await;
        let history_wal = history_path(&path).with_extension("db-wal");
        assert_eq!(
            std::fs::metadata(&history_wal).map_or(0, |m| m.len()),
            0,
            "a stopped history database is whole in its own file"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writers_wait_out_a_lock_held_for_a_moment() {
        let path = scratch_log("busy");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        opened.log.append(&concert(1)).wait().await;
        // What one of the process's own readers does when it finds the WAL index mid-change:
        // take the write lock for a moment. The real moment is microseconds; it is held here
        // long enough that each writer surely meets it.
        let hold_write_lock = |file: &Path| {
            let blocker = Connection::open(file).unwrap();
            blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
            blocker
        };
        let blocker = hold_write_lock(&path);
        let appended = opened.log.append(&keyed_charge("during-log-lock", 1_000));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        blocker.execute_batch("COMMIT").unwrap();
        appended.wait().await;

        let blocker = hold_write_lock(&history_path(&path));
        opened
            .log
            .append(&keyed_charge("during-history-lock", 2_000))
            .wait()
            .await;
        let reader = opened.log.reader().clone();
        let caught_up = tokio::spawn(async move { reader.caught_up().await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        blocker.execute_batch("COMMIT").unwrap();
        caught_up.await.unwrap();
        let user = crate::domain::UserId(4);
        assert_eq!(every_entry(&opened.log, user).len(), 2);
        opened.log.close().await;
    }

    #[tokio::test]
    async fn a_database_of_another_schema_version_is_refused_by_name() {
        for (name, file) in [
            ("log-version", None),
            (
                "history-version",
                Some(history_path as fn(&Path) -> PathBuf),
            ),
        ] {
            let path = scratch_log(name);
            let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
            opened.log.append(&concert(1)).wait().await;
            opened.log.close().await;
            let target = file.map_or_else(|| path.clone(), |f| f(&path));
            for version in [0, 2] {
                Connection::open(&target)
                    .unwrap()
                    .pragma_update(None, "user_version", version)
                    .unwrap();
                let error = EventLog::open(&path, SyncMode::Normal, 0).err().unwrap();
                assert!(
                    matches!(
                        &error,
                        StoreError::UnsupportedFormat { path: p, found, expected: 1, .. }
                            if *p == target && *found == version
                    ),
                    "{error}"
                );
                assert!(error.to_string().contains("format version"), "{error}");
            }
        }
    }

    #[tokio::test]
    async fn a_history_ahead_of_its_log_is_refused_with_what_to_restore() {
        let path = scratch_log("history-ahead");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        opened.log.append(&keyed_charge("a", 1_000)).wait().await;
        opened.log.close().await;
        let older_log = path.with_file_name("older.db");
        std::fs::copy(&path, &older_log).unwrap();
        let reopened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        reopened.log.append(&keyed_charge("b", 2_000)).wait().await;
        reopened.log.close().await;
        std::fs::copy(&older_log, &path).unwrap();
        let error = EventLog::open(&path, SyncMode::Normal, 0).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("rows through sequence 2"), "{message}");
        assert!(message.contains("restore both files"), "{message}");
    }

    #[tokio::test]
    async fn a_log_whose_history_file_is_missing_is_refused_with_what_to_restore() {
        let path = scratch_log("no-history");
        let opened = EventLog::open(&path, SyncMode::Normal, 0).unwrap();
        opened.log.append(&keyed_charge("a", 1_000)).wait().await;
        opened.log.close().await;
        std::fs::remove_file(history_path(&path)).unwrap();
        let error = EventLog::open(&path, SyncMode::Normal, 0).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("log.history.db"), "{message}");
        assert!(message.contains("restore both files"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let path = scratch_log("garbage");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let error = EventLog::open(&path, SyncMode::Full, 0).err().unwrap();
        assert!(
            error.to_string().contains("not a boxoffice event log"),
            "{error}"
        );
    }
}
