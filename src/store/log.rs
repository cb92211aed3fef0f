//! The event log: one SQLite table, one writer thread, group commit, one row per commit.
//!
//! Owners hand events to [`EventLog::append`] in the order they applied them; the log gives each
//! its global sequence number under one short lock, so the channel order is the sequence order
//! and every commit is a prefix of it. The writer thread takes everything that arrived while
//! the previous commit ran into the next transaction: one fsync per batch, not per request.
//! The batch is stored as one row (`batches`): its first and last sequence numbers and the
//! events' encodings back to back, each behind its length ([`encode_batch`]). One row per commit
//! costs SQLite one insert and one B-tree entry whatever the batch size; recovery decodes whole
//! batches, and pruning drops whole batches below the floor.
//! The returned [`Durable`] resolves once the commit that holds the event is on disk.
//! A commit failure is fatal: memory would no longer match disk, so the process exits loudly.
//!
//! A commit here holds events only. The rows an event leaves — the record of a keyed change for
//! retries, a balance history entry, a reservation's new state (`EventRows`) — are handed to the
//! history writer (`ToRows`) once the event is committed; the log knows that writer only by
//! those messages. The log and its history are opened together by `EventLog::open`
//! (`store::projection`). One process at a time: a lock file beside the database keeps a second
//! one out, while the history's readers share its file (WAL).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use tokio::sync::{oneshot, watch};

use super::error::{FileKind, StoreError};
use super::private;
use super::reader::StoreReader;
use super::rows::{self, EventRows, ToRows};
use super::sqlite;
use crate::domain::idempotency::PendingRecord;
use crate::domain::{Event, Timestamp};

/// Version of a batch's encoding (and of the events in it); any other is refused.
pub const EVENT_FORMAT_VERSION: u32 = 1;
/// The schema version of the log's database (`PRAGMA user_version`).
pub const LOG_SCHEMA_VERSION: u32 = 1;
/// Upper bound on events per transaction, so one commit never holds the writer for long.
const BATCH_EVENTS_MAX: usize = 16_384;
/// Exit code when the log cannot be written: memory and disk would diverge otherwise.
pub const EXIT_LOG_FAILED: i32 = 70;

/// How a commit reaches the disk (SQLite's `synchronous`): `Full` survives power loss, `Normal`
/// survives a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Normal,
}

struct Pending {
    seq: u64,
    payload: Vec<u8>,
    rows: EventRows,
    /// Only the last of a run appended together has one: commits are prefixes of the log.
    done: Option<oneshot::Sender<u64>>,
    after_commit: Option<AfterCommit>,
}

/// What an owner has done once its event is committed and before anyone hears of the commit
/// (another owner's share of an event, such as the token a payment ends). It runs on the log's
/// writer thread, so it must be short and must not wait on anything that waits on the log.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// One event of a run handed to [`EventLog::append_many`], with its idempotency record (if it
/// is keyed) and its after-commit share (if any).
pub struct Appended<'a> {
    pub event: &'a Event,
    pub key: Option<PendingRecord>,
    pub after_commit: Option<AfterCommit>,
}

// Nearly every message is an `Append`: boxing it would add an allocation per event to spare
// the rare others a few hundred bytes.
#[allow(clippy::large_enum_variant)]
enum ToWriter {
    Append(Pending),
    AppendMany(Vec<Pending>),
    /// Delete rows at or below this sequence: every owner has a snapshot past it.
    Prune(u64),
    /// Commit what is queued, release the database, and say so.
    Close(oneshot::Sender<()>),
    /// Copy the committed log into a new database file; answers the sequence it covers.
    Backup(PathBuf, oneshot::Sender<Result<u64, StoreError>>),
}

/// Resolves to the event's sequence number once it is committed.
pub struct Durable {
    seq: u64,
    committed: oneshot::Receiver<u64>,
}

impl Durable {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub async fn wait(self) -> u64 {
        // The writer never drops a sender without committing: on failure it exits the process.
        self.committed.await.unwrap_or(self.seq)
    }
}

/// Counters the writer keeps for metrics and reports.
#[derive(Default)]
pub struct LogStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub committed_seq: AtomicU64,
    /// The newest sequence number handed out, for readers that must not take the appender's
    /// lock (every answer asks it: `EventLog::flush`).
    pub appended_seq: AtomicU64,
    /// Every committed event up to here has its rows in the history database.
    pub rows_through: AtomicU64,
}

struct Appender {
    next_seq: u64,
    to_writer: mpsc::Sender<ToWriter>,
    to_rows: mpsc::Sender<ToRows>,
}

#[derive(Clone)]
pub struct EventLog {
    appender: Arc<Mutex<Appender>>,
    stats: Arc<LogStats>,
    committed: watch::Receiver<u64>,
    reader: Arc<StoreReader>,
}

/// `boxoffice.db` → `boxoffice.db.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock that keeps a second process off the same log; held until the log closes.
fn lock_exclusively(path: &Path) -> Result<File, StoreError> {
    let lock = lock_path(path);
    private::tighten(&lock);
    let file = private::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| StoreError::Io {
            action: "create the lock file",
            path: lock.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(StoreError::Io {
            action: "lock",
            path: lock,
            source,
        }),
    }
}

fn create_data_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "create the data directory",
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// One row per commit. `last_seq` is the row id, so reading after a sequence and pruning below
/// one are range scans of the table itself.
pub const LOG_SCHEMA: &str = "
    CREATE TABLE batches (
        last_seq  INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        version   INTEGER NOT NULL,
        events    BLOB    NOT NULL
    );";

/// The events of one commit, back to back, each as its length (u32, little-endian) then its
/// encoding.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let events = events.into_iter();
    let mut blob = Vec::with_capacity(events.size_hint().0 * 96);
    for event in events {
        let length = u32::try_from(event.len()).expect("an event is far below 4 GiB");
        blob.extend_from_slice(&length.to_le_bytes());
        blob.extend_from_slice(event);
    }
    blob
}

/// The events `encode_batch` stored as `first_seq..=last_seq`; a batch whose count or lengths do
/// not add up is refused, never guessed at.
pub fn decode_batch(
    first_seq: u64,
    last_seq: u64,
    blob: &[u8],
) -> Result<Vec<(u64, Event)>, StoreError> {
    let damaged = |reason: &'static str| StoreError::DamagedBatch { last_seq, reason };
    if last_seq < first_seq {
        return Err(damaged("its sequence numbers run backwards"));
    }
    let count = last_seq - first_seq + 1;
    let mut events = Vec::with_capacity(count.min(BATCH_EVENTS_MAX as u64) as usize);
    let mut rest = blob;
    let mut seq = first_seq;
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| damaged("it ends inside a length"))?;
        let length = u32::from_le_bytes(*length) as usize;
        if tail.len() < length || seq > last_seq {
            return Err(damaged("it holds more than its sequence numbers say"));
        }
        let (event, tail) = tail.split_at(length);
        events.push((seq, rows::decode(event, "event")?));
        seq += 1;
        rest = tail;
    }
    if seq != last_seq + 1 {
        return Err(damaged(
            "it holds fewer events than its sequence numbers say",
        ));
    }
    Ok(events)
}

/// Stores one commit's events, `first_seq` onwards, as one row; the caller commits.
pub fn insert_batch<'a>(
    tx: &rusqlite::Transaction<'_>,
    first_seq: u64,
    events: impl ExactSizeIterator<Item = &'a [u8]>,
) -> rusqlite::Result<()> {
    let last_seq = first_seq + events.len() as u64 - 1;
    let blob = encode_batch(events);
    tx.prepare_cached(
        "INSERT INTO batches (last_seq, first_seq, version, events) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        last_seq as i64,
        first_seq as i64,
        EVENT_FORMAT_VERSION,
        blob
    ])?;
    Ok(())
}

/// The log's database, locked and open, before its writer starts.
pub(crate) struct LogFile {
    conn: Connection,
    lock: File,
    /// The last sequence stored, 0 if none.
    pub last_seq: u64,
    /// The oldest sequence still stored (older rows were pruned below snapshots).
    pub oldest_stored: Option<u64>,
}

impl LogFile {
    pub(crate) fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        create_data_dir(path)?;
        let lock = lock_exclusively(path)?;
        let sync = match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        let conn = sqlite::open_writer(
            path,
            FileKind::EventLog,
            sync,
            LOG_SCHEMA,
            LOG_SCHEMA_VERSION,
        )?;
        let (oldest, last): (Option<i64>, Option<i64>) = conn.query_row(
            "SELECT (SELECT first_seq FROM batches ORDER BY last_seq LIMIT 1), MAX(last_seq)
             FROM batches",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Self {
            conn,
            lock,
            last_seq: last.map_or(0, |s| s as u64),
            oldest_stored: oldest.map(|s| s as u64),
        })
    }

    /// Every stored event after `after_seq`, in order.
    pub(crate) fn read_after(&self, after_seq: u64) -> Result<Vec<(u64, Event)>, StoreError> {
        read_events_after(&self.conn, after_seq)
    }
}

/// Every event stored in the log's database `conn` after `after_seq`, in order; what recovery
/// reads.
pub fn read_events_after(
    conn: &Connection,
    after_seq: u64,
) -> Result<Vec<(u64, Event)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT first_seq, last_seq, version, events FROM batches
         WHERE last_seq > ?1 ORDER BY last_seq",
    )?;
    let mut rows = stmt.query(params![after_seq as i64])?;
    let mut events = Vec::new();
    let mut expected = None;
    while let Some(row) = rows.next()? {
        let first_seq = row.get::<_, i64>(0)? as u64;
        let last_seq = row.get::<_, i64>(1)? as u64;
        let version = row.get::<_, i64>(2)?;
        if version != i64::from(EVENT_FORMAT_VERSION) {
            return Err(StoreError::UnsupportedEvent {
                seq: first_seq,
                found: version,
                expected: EVENT_FORMAT_VERSION,
            });
        }
        if expected.is_some_and(|next| next != first_seq) {
            return Err(StoreError::DamagedBatch {
                last_seq,
                reason: "it does not follow the batch before it",
            });
        }
        expected = Some(last_seq + 1);
        let rusqlite::types::ValueRef::Blob(blob) = row.get_ref(3)? else {
            return Err(StoreError::DamagedBatch {
                last_seq,
                reason: "its events are not stored as bytes",
            });
        };
        let batch = decode_batch(first_seq, last_seq, blob)?;
        events.extend(batch.into_iter().filter(|(seq, _)| *seq > after_seq));
    }
    Ok(events)
}

/// How the log starts: after its last stored event (or after `start_seq`, if snapshots reach
/// further), with the history writer's channel and readers.
pub(crate) struct LogStart {
    pub start_seq: u64,
    pub to_rows: mpsc::Sender<ToRows>,
    pub reader: Arc<StoreReader>,
    pub stats: Arc<LogStats>,
    pub committed: watch::Sender<u64>,
}

impl EventLog {
    /// Starts the writer of an opened log file.
    pub(crate) fn start(file: LogFile, start: LogStart) -> Result<Self, StoreError> {
        let LogStart {
            start_seq,
            to_rows,
            reader,
            stats,
            committed,
        } = start;
        let (to_writer, from_owners) = mpsc::channel();
        let watching = committed.subscribe();
        let writer_stats = stats.clone();
        let writer_rows = to_rows.clone();
        thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || {
                write_batches(
                    file.conn,
                    file.lock,
                    from_owners,
                    writer_rows,
                    writer_stats,
                    committed,
                )
            })
            .map_err(|source| StoreError::Thread {
                name: "event log writer",
                source,
            })?;
        Ok(Self {
            appender: Arc::new(Mutex::new(Appender {
                next_seq: start_seq + 1,
                to_writer,
                to_rows,
            })),
            stats,
            committed: watching,
            reader,
        })
    }

    /// Queues an applied event for the next commit and returns its sequence number's ticket.
    pub fn append(&self, event: &Event) -> Durable {
        self.append_keyed(event, PendingRecord::of(event))
    }

    /// `append` for a caller that already made the event's idempotency record
    /// (`PendingRecord::of(event)`); the record goes to the history database once the event is
    /// committed.
    pub fn append_keyed(&self, event: &Event, key: Option<PendingRecord>) -> Durable {
        self.append_then(event, key, None)
    }

    /// `append_keyed`, with what to do once the event is committed (`AfterCommit`).
    pub fn append_then(
        &self,
        event: &Event,
        key: Option<PendingRecord>,
        after_commit: Option<AfterCommit>,
    ) -> Durable {
        let payload = rows::encode(event);
        let (done, committed) = oneshot::channel();
        metrics::counter!("boxoffice_events_total", "kind" => event.kind()).increment(1);
        let mut appender = self.appender.lock();
        let seq = appender.next_seq;
        appender.next_seq += 1;
        self.stats.appended_seq.store(seq, Ordering::Release);
        let pending = Pending {
            seq,
            payload,
            rows: EventRows::made_by(seq, event, key),
            done: Some(done),
            after_commit,
        };
        if appender.to_writer.send(ToWriter::Append(pending)).is_err() {
            drop(appender);
            fatal("the event log writer is gone");
        }
        Durable { seq, committed }
    }

    /// Queues a run of applied events, in order, under one lock and as one message to the
    /// writer: what an owner that decided many changes in one turn hands over. Returns the
    /// first event's sequence number (the others follow it) and one ticket that resolves once
    /// the last is committed, and so all of them; `None` for an empty run.
    pub fn append_many<'a>(
        &self,
        events: impl ExactSizeIterator<Item = Appended<'a>>,
    ) -> Option<(u64, Durable)> {
        let count = events.len();
        if count == 0 {
            return None;
        }
        let mut encoded = Vec::with_capacity(count);
        let mut kinds: Option<(&'static str, u64)> = None;
        for appended in events {
            // One metrics update per run of one kind, not one per event.
            let kind = appended.event.kind();
            match &mut kinds {
                Some((current, n)) if *current == kind => *n += 1,
                _ => {
                    if let Some((current, n)) = kinds.replace((kind, 1)) {
                        metrics::counter!("boxoffice_events_total", "kind" => current).increment(n);
                    }
                }
            }
            encoded.push((rows::encode(appended.event), appended));
        }
        if let Some((kind, n)) = kinds {
            metrics::counter!("boxoffice_events_total", "kind" => kind).increment(n);
        }
        let (done, committed) = oneshot::channel();
        let mut done = Some(done);
        let mut appender = self.appender.lock();
        let first = appender.next_seq;
        appender.next_seq += count as u64;
        let last = appender.next_seq - 1;
        self.stats.appended_seq.store(last, Ordering::Release);
        let run: Vec<Pending> = encoded
            .into_iter()
            .zip(first..)
            .map(|((payload, appended), seq)| Pending {
                seq,
                payload,
                rows: EventRows::made_by(seq, appended.event, appended.key),
                done: if seq == last { done.take() } else { None },
                after_commit: appended.after_commit,
            })
            .collect();
        if appender.to_writer.send(ToWriter::AppendMany(run)).is_err() {
            drop(appender);
            fatal("the event log writer is gone");
        }
        Some((
            first,
            Durable {
                seq: last,
                committed,
            },
        ))
    }

    /// The newest sequence number handed out (committed or not).
    pub fn last_sequence(&self) -> u64 {
        self.stats.appended_seq.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Waits until every event up to `seq` is committed.
    pub async fn wait_committed(&self, seq: u64) {
        if self.stats.committed_seq.load(Ordering::Acquire) >= seq {
            return;
        }
        let mut committed = self.committed.clone();
        let _ = committed.wait_for(|c| *c >= seq).await;
    }

    /// Waits until everything appended so far is committed.
    pub async fn flush(&self) {
        self.wait_committed(self.last_sequence()).await;
    }

    /// Commits what is queued and releases the database file (and its lock). Appending after
    /// this is fatal: it is for the very end of a graceful stop.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self
            .appender
            .lock()
            .to_writer
            .send(ToWriter::Close(done))
            .is_ok()
        {
            let _ = closed.await;
        }
    }

    /// Writes a consistent copy of everything committed so far to `path` (which must not exist),
    /// and of the history database beside it (`rows::history_path`), from the writers' own
    /// connections. Commits wait while the copies are made. Returns the last sequence copied.
    pub async fn backup_into(&self, path: &Path) -> Result<u64, StoreError> {
        let (done, copied) = oneshot::channel();
        self.appender
            .lock()
            .to_writer
            .send(ToWriter::Backup(path.to_owned(), done))
            .map_err(|_| StoreError::WriterStopped)?;
        copied.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Where idempotency records older than the ones in memory, balance history and ended
    /// reservations are found.
    pub fn reader(&self) -> &Arc<StoreReader> {
        &self.reader
    }

    /// Stores the rows of events already committed whose rows did not reach the history
    /// database before the last stop, and marks it as holding every event through `through`.
    /// Blocks until they are committed.
    pub fn project_blocking(&self, rows: Vec<EventRows>, through: u64) {
        let (done, stored) = oneshot::channel();
        if self
            .appender
            .lock()
            .to_rows
            .send(ToRows::Project {
                rows,
                through,
                done,
            })
            .is_ok()
        {
            let _ = stored.blocking_recv();
        }
    }

    /// Deletes idempotency records that are stale at `now` (kept `KEY_TTL_MS`).
    pub fn forget_stale_keys(&self, now: Timestamp) {
        let _ = self.appender.lock().to_rows.send(ToRows::ForgetKeys(now));
    }

    /// Drops rows at or below `seq`, or below the history's durable mark if that is lower; the
    /// caller guarantees every owner has a snapshot past `seq`.
    pub fn prune_through(&self, seq: u64) {
        let _ = self.appender.lock().to_writer.send(ToWriter::Prune(seq));
    }
}

fn write_batches(
    mut conn: Connection,
    lock: File,
    from_owners: mpsc::Receiver<ToWriter>,
    to_rows: mpsc::Sender<ToRows>,
    stats: Arc<LogStats>,
    committed: watch::Sender<u64>,
) {
    let mut prune_to = None;
    let mut close = None;
    let mut backups = Vec::new();
    while let Ok(first) = from_owners.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                ToWriter::Append(pending) => batch.push(pending),
                ToWriter::AppendMany(run) => batch.extend(run),
                ToWriter::Prune(seq) => prune_to = prune_to.max(Some(seq)),
                ToWriter::Backup(path, done) => backups.push((path, done)),
                ToWriter::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < BATCH_EVENTS_MAX {
                next = from_owners.try_recv().ok();
            }
        }
        if let Some(seq) = prune_to.take() {
            // Events past the history's durable mark are how recovery would make their rows
            // again: they stay.
            let durable = ask_rows(&to_rows, ToRows::MakeDurable).unwrap_or(0);
            let floor = seq.min(durable);
            // Pruning is housekeeping: a failure only leaves extra rows behind.
            match prune_batches(&conn, floor) {
                Ok(rows) => tracing::debug!(rows, through = floor, "pruned the log"),
                Err(error) => tracing::warn!(%error, "could not prune the log"),
            }
        }
        for (path, done) in backups.drain(..) {
            // The history first: its copy then reaches no further than the log's, and no
            // prune runs in between, so the log's copy holds every event past its mark.
            let history = ask_rows(&to_rows, |done| {
                ToRows::Backup(rows::history_path(&path), done)
            })
            .unwrap_or(Err(StoreError::WriterStopped));
            // The copy holds exactly what is committed: this batch is not yet.
            let covered = stats.committed_seq.load(Ordering::SeqCst);
            let copied =
                history.and_then(|_| sqlite::vacuum_into(&conn, &path, FileKind::EventLog));
            let _ = done.send(copied.map(|_| covered));
        }
        if !batch.is_empty() {
            let started = Instant::now();
            if let Err(error) = commit(&mut conn, &batch) {
                fatal(&format!(
                    "cannot commit {} events to the log: {error}",
                    batch.len()
                ));
            }
            let last = batch.last().map_or(0, |p| p.seq);
            // Before the committed mark moves: whoever reads the mark then sees their effects.
            for pending in &mut batch {
                if let Some(effect) = pending.after_commit.take() {
                    effect();
                }
            }
            metrics::histogram!("boxoffice_log_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("boxoffice_log_events_per_commit").record(batch.len() as f64);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .events
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.committed_seq.store(last, Ordering::SeqCst);
            committed.send_replace(last);
            tracing::trace!(
                events = batch.len(),
                micros = started.elapsed().as_micros() as u64,
                "commit"
            );
            let mut rows = Vec::new();
            for pending in batch {
                if let Some(done) = pending.done {
                    let _ = done.send(pending.seq);
                }
                if !pending.rows.is_empty() {
                    rows.push(pending.rows);
                }
            }
            if to_rows
                .send(ToRows::Write {
                    through: last,
                    rows,
                })
                .is_err()
            {
                fatal("the history writer is gone");
            }
        }
        if let Some(done) = close.take() {
            // The history writer has every batch by now; it stores them before it closes.
            let _ = ask_rows(&to_rows, ToRows::Close);
            drop(conn);
            drop(lock);
            let _ = done.send(());
            return;
        }
    }
}

/// Asks the history writer and waits for its answer. It never waits for the log writer, so
/// the log writer waiting for it cannot lock up.
fn ask_rows<T>(
    to_rows: &mpsc::Sender<ToRows>,
    make: impl FnOnce(oneshot::Sender<T>) -> ToRows,
) -> Result<T, oneshot::error::RecvError> {
    let (done, answer) = oneshot::channel();
    if to_rows.send(make(done)).is_err() {
        fatal("the history writer is gone");
    }
    answer.blocking_recv()
}

/// Deletes the batches that end at or below `floor`. A batch that reaches past the floor stays
/// whole: recovery skips the events it holds at or below what it asks for.
fn prune_batches(conn: &Connection, floor: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM batches WHERE last_seq <= ?1",
        params![floor as i64],
    )
}

fn commit(conn: &mut Connection, batch: &[Pending]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    insert_batch(
        &tx,
        batch[0].seq,
        batch.iter().map(|pending| pending.payload.as_slice()),
    )?;
    tx.commit()
}

/// Memory and disk would disagree from here on: say so and stop.
pub(crate) fn fatal(message: &str) -> ! {
    tracing::error!("{message}; stopping so that no acknowledged change is lost");
    eprintln!("boxoffice: {message}; stopping so that no acknowledged change is lost");
    std::process::exit(EXIT_LOG_FAILED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{concert, scratch_log};

    fn encoded(range: std::ops::RangeInclusive<u32>) -> Vec<Vec<u8>> {
        range.map(|n| rows::encode(&concert(n))).collect()
    }

    fn store(file: &mut LogFile, first_seq: u64, events: &[Vec<u8>]) {
        let tx = file.conn.transaction().unwrap();
        insert_batch(&tx, first_seq, events.iter().map(Vec::as_slice)).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_batch_decodes_to_its_events_with_their_sequence_numbers() {
        let events = encoded(1..=3);
        let blob = encode_batch(events.iter().map(Vec::as_slice));
        let decoded = decode_batch(7, 9, &blob).unwrap();
        assert_eq!(
            decoded,
            vec![(7, concert(1)), (8, concert(2)), (9, concert(3))]
        );
    }

    #[test]
    fn a_batch_whose_count_or_lengths_do_not_add_up_is_refused() {
        let blob = encode_batch(encoded(1..=3).iter().map(Vec::as_slice));
        let refused = |first: u64, last: u64, bytes: &[u8]| {
            matches!(
                decode_batch(first, last, bytes),
                Err(StoreError::DamagedBatch { .. })
            )
        };
        assert!(refused(1, 4, &blob), "fewer events than the range");
        assert!(refused(1, 2, &blob), "more events than the range");
        assert!(refused(3, 1, &blob), "a range that runs backwards");
        assert!(
            refused(1, 3, &blob[..blob.len() - 1]),
            "cut inside an event"
        );
        assert!(
            refused(1, 4, &[blob.as_slice(), &[1, 0]].concat()),
            "cut inside a length"
        );
    }

    #[test]
    fn reading_after_a_sequence_inside_a_batch_skips_only_what_comes_before_it() {
        let path = scratch_log("inside");
        let mut file = LogFile::open(&path, SyncMode::Normal).unwrap();
        store(&mut file, 1, &encoded(1..=10));
        store(&mut file, 11, &encoded(11..=15));
        let after = file.read_after(4).unwrap();
        assert_eq!(after.first(), Some(&(5, concert(5))));
        assert_eq!(after.len(), 11);
        assert_eq!(
            after.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (5..=15).collect::<Vec<_>>()
        );
        drop(file);
        let reopened = LogFile::open(&path, SyncMode::Normal).unwrap();
        assert_eq!((reopened.oldest_stored, reopened.last_seq), (Some(1), 15));
    }

    #[test]
    fn pruning_keeps_a_batch_that_reaches_past_the_floor_whole() {
        let path = scratch_log("straddle");
        let mut file = LogFile::open(&path, SyncMode::Normal).unwrap();
        store(&mut file, 1, &encoded(1..=4));
        store(&mut file, 5, &encoded(5..=9));
        store(&mut file, 10, &encoded(10..=12));
        assert_eq!(prune_batches(&file.conn, 6).unwrap(), 1);
        assert_eq!(file.read_after(6).unwrap().len(), 6);
        drop(file);
        let reopened = LogFile::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(reopened.oldest_stored, Some(5));
        assert_eq!(reopened.read_after(0).unwrap().len(), 8);
    }

    #[test]
    fn a_gap_between_batches_is_refused() {
        let path = scratch_log("gap");
        let mut file = LogFile::open(&path, SyncMode::Normal).unwrap();
        store(&mut file, 1, &encoded(1..=4));
        store(&mut file, 6, &encoded(6..=7));
        assert!(matches!(
            file.read_after(0),
            Err(StoreError::DamagedBatch { last_seq: 7, .. })
        ));
    }
}
