//! The store's one error type. Each variant names its cause by type; the messages say what an
//! operator can do about it, and the cause follows as the error's source.

use std::fmt;
use std::path::PathBuf;

use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed on a database the store had already opened.
    #[error("a query on the store's database failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A database file cannot be opened or set up.
    #[error("cannot use the {file} {}: {}", .path.display(), database_hint(*.file, .source))]
    Database {
        file: FileKind,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot use the event log {}: another boxoffice process is using it; stop that one first",
        .path.display()
    )]
    Locked { path: PathBuf },
    #[error("{} {} is a file, not a directory; point it at a directory", .setting, .path.display())]
    NotADirectory {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("snapshot {} is corrupt or truncated: {damage}", .path.display())]
    Snapshot {
        path: PathBuf,
        damage: SnapshotDamage,
    },
    /// A file written in a format this build does not read: refused, never guessed at.
    #[error(
        "{file} {} has format version {found}; this build reads version {expected} only. {}",
        .path.display(),
        .file.remedy()
    )]
    UnsupportedFormat {
        file: FileKind,
        path: PathBuf,
        found: i64,
        expected: u32,
    },
    #[error(
        "event {seq} of the log has format version {found}; this build reads version \
         {expected} only: run the boxoffice build that wrote it"
    )]
    UnsupportedEvent { seq: u64, found: i64, expected: u32 },
    #[error("the store holds an undecodable {what}")]
    Undecodable {
        what: &'static str,
        source: bincode::error::DecodeError,
    },
    #[error("the history database holds an unknown {what} {found}")]
    Corrupt { what: &'static str, found: i64 },
    /// Rows of events the log does not have: their ids would be given again.
    #[error(
        "the history database {} has rows through sequence {mark}, but the log {} ends at \
         {log_end}: the two come from different backups; restore both files from the same backup",
        .history.display(),
        .log.display()
    )]
    HistoryAhead {
        history: PathBuf,
        log: PathBuf,
        mark: u64,
        log_end: u64,
    },
    #[error(
        "the history database {} is missing or empty, but the log {} has events that need it; \
         restore both files from the same backup",
        .history.display(),
        .log.display()
    )]
    HistoryMissing { history: PathBuf, log: PathBuf },
    /// Rows an owner needs were pruned below snapshots that are now missing or unreadable.
    #[error(
        "{owner} needs the log from sequence {needed_from} but it starts at {starts_at} (older \
         rows were pruned below snapshots that are now missing or unreadable); restore \
         storage.snapshot_dir and storage.sqlite_path from the same backup"
    )]
    LogGap {
        owner: String,
        needed_from: u64,
        starts_at: u64,
    },
    #[error("the backup {} already exists", .path.display())]
    BackupExists { path: PathBuf },
    #[error("cannot copy the {file} into {}", .path.display())]
    Backup {
        file: FileKind,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the path {} is not UTF-8", .path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot start the {name} thread")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("a background task of the store failed")]
    Task(#[from] tokio::task::JoinError),
    /// The log's or the history's writer thread is gone (the process is stopping).
    #[error("the store's writer has stopped")]
    WriterStopped,
}

/// The files the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    EventLog,
    HistoryDatabase,
    Snapshot,
}

impl FileKind {
    fn remedy(self) -> &'static str {
        match self {
            Self::Snapshot => {
                "Run the boxoffice build that wrote it, or move the file away to rebuild its \
                 owner from the log"
            }
            Self::EventLog | Self::HistoryDatabase => {
                "Run the boxoffice build that wrote it, or move the log, its history database \
                 and the snapshots away to start empty"
            }
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EventLog => "event log",
            Self::HistoryDatabase => "history database",
            Self::Snapshot => "snapshot",
        })
    }
}

/// What is wrong with a snapshot file that recovery skips.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDamage {
    #[error("not a boxoffice snapshot (bad magic or short header)")]
    NotASnapshot,
    #[error("truncated: payload shorter or longer than its header says")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
    #[error("undecodable payload: {0}")]
    Undecodable(bincode::error::DecodeError),
}

fn database_hint(file: FileKind, source: &rusqlite::Error) -> String {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another boxoffice process is using it; stop that one first".to_owned()
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            format!("the file is not a boxoffice {file} or is corrupt; restore it from a backup")
        }
        _ => "check storage.sqlite_path and permissions".to_owned(),
    }
}
