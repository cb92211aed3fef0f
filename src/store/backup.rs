//! Online backups: the snapshot files, then consistent copies of the history database and the
//! log, into a fresh directory a restore can start from as it is.
//!
//! Order matters. Snapshots are copied first and the log after, so the copied log reaches at
//! least as far as every copied snapshot; the log is only ever pruned below an owner's older
//! kept snapshot, so the rows after the newest copied snapshot are still in the copied log.
//! The history is copied just before the log (`EventLog::backup_into`), so the copied log holds
//! every event the copied history has no rows for yet.

use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::log::EventLog;
use super::private;
use super::rows::history_path;

/// The log file's name inside a backup; the snapshots go to `snapshots/` beside it.
pub const LOG_FILE: &str = "boxoffice.db";
pub const SNAPSHOT_DIR: &str = "snapshots";

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub dir: PathBuf,
    /// The last log sequence the copy holds.
    pub log_sequence: u64,
    pub snapshot_files: usize,
    pub bytes: u64,
}

/// Writes `<backup_root>/<name>/{boxoffice.db, boxoffice.history.db, snapshots/}`; `name` must
/// be new.
pub async fn write_backup(
    log: &EventLog,
    snapshot_dir: &Path,
    backup_root: &Path,
    name: &str,
) -> Result<BackupReport, StoreError> {
    let dir = backup_root.join(name);
    let (from, to) = (snapshot_dir.to_owned(), dir.join(SNAPSHOT_DIR));
    let (snapshot_files, snapshot_bytes) =
        tokio::task::spawn_blocking(move || copy_snapshots(&from, &to)).await??;
    let log_file = dir.join(LOG_FILE);
    let log_sequence = log.backup_into(&log_file).await?;
    let log_bytes = [log_file.clone(), history_path(&log_file)]
        .iter()
        .map(|file| std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>();
    Ok(BackupReport {
        dir,
        log_sequence,
        snapshot_files,
        bytes: snapshot_bytes + log_bytes,
    })
}

fn copy_snapshots(from: &Path, to: &Path) -> Result<(usize, u64), StoreError> {
    let io = |action, path: &Path, source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(backup) = to.parent().filter(|dir| dir.exists()) {
        return Err(StoreError::BackupExists {
            path: backup.to_owned(),
        });
    }
    private::create_dir_all(to).map_err(|e| io("create the backup directory", to, e))?;
    if let Some(root) = to.parent().and_then(Path::parent) {
        private::tighten(root);
    }
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io("read the snapshot directory", from, e)),
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        // Finished snapshots only: temp files start with a dot until they are renamed.
        if text.starts_with('.') || !text.ends_with(".bin") {
            continue;
        }
        let copy = to.join(&name);
        match std::fs::copy(entry.path(), &copy) {
            Ok(copied) => {
                // The copy takes the original's mode; the original was tightened at start.
                private::tighten(&copy);
                files += 1;
                bytes += copied;
            }
            // Replaced by a newer snapshot while we listed: the newer one is listed too, or
            // the log covers it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("copy the snapshot", &entry.path(), e)),
        }
    }
    Ok((files, bytes))
}
