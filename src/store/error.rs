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
    #[error("cannot {action} {}{}", .path.display(), io_hint(.source))]
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
    #[error(
        "the log's batch ending at sequence {last_seq} is damaged: {reason}; restore \
         storage.sqlite_path from a backup"
    )]
    DamagedBatch { last_seq: u64, reason: &'static str },
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

/// What to do about a full disk (or a user's disk quota used up): it is not a permissions
/// problem, and nothing in the configuration is wrong.
const DISK_FULL: &str = "the disk is full: free space on the disk that holds it, or point \
    storage.* at a disk with room, and try again";

fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn io_hint(source: &std::io::Error) -> String {
    if is_disk_full(source) {
        format!(": {DISK_FULL}")
    } else {
        String::new()
    }
}

fn database_hint(file: FileKind, source: &rusqlite::Error) -> String {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another boxoffice process is using it; stop that one first".to_owned()
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            format!("the file is not a boxoffice {file} or is corrupt; restore it from a backup")
        }
        Some(ErrorCode::DiskFull) => DISK_FULL.to_owned(),
        _ => "check storage.sqlite_path and permissions".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `SQLITE_FULL`: a database that may not grow past two pages, made to.
    fn disk_full() -> rusqlite::Error {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA max_page_count = 2; CREATE TABLE t (b BLOB);")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .unwrap_err()
    }

    #[test]
    fn a_full_disk_under_a_database_says_so_names_the_file_and_what_to_do() {
        let source = disk_full();
        assert_eq!(source.sqlite_error_code(), Some(ErrorCode::DiskFull));
        let error = StoreError::Database {
            file: FileKind::EventLog,
            path: PathBuf::from("/var/lib/boxoffice/boxoffice.db"),
            source,
        };
        let message = error.to_string();
        assert!(message.contains("disk is full"), "{message}");
        assert!(
            message.contains("/var/lib/boxoffice/boxoffice.db"),
            "{message}"
        );
        assert!(message.contains("free space"), "{message}");
        assert!(!message.contains("permissions"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn a_full_disk_under_a_file_says_so_names_the_file_and_what_to_do() {
        for code in [libc::ENOSPC, libc::EDQUOT] {
            let error = StoreError::Io {
                action: "write the snapshot",
                path: PathBuf::from("/var/lib/boxoffice/snapshots/x.bin"),
                source: std::io::Error::from_raw_os_error(code),
            };
            let message = error.to_string();
            assert!(message.contains("disk is full"), "{code}: {message}");
            assert!(message.contains("snapshots/x.bin"), "{message}");
            assert!(message.contains("free space"), "{message}");
        }
        let denied = StoreError::Io {
            action: "write the snapshot",
            path: PathBuf::from("/x.bin"),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(!denied.to_string().contains("disk is full"), "{denied}");
    }
}
