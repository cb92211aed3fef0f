//! What the store writes holds password hashes, sessions and balances, so only the server's
//! own user may read it: files are made 0600 and directories 0700, whatever the process's
//! umask (the binary also sets its umask to 077 at start, for files made outside this module),
//! and files found with looser modes are tightened when the store opens them, with a warning.
//! Directories that exist before the store makes them (the log's directory may be the working
//! directory) are left as they are, but for the store's own (`storage.snapshot_dir`,
//! `storage.backup_dir`).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

#[cfg(unix)]
const FILE_MODE: u32 = 0o600;
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each 0700.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(dir)
}

/// `OpenOptions` whose `create` makes the file 0600.
pub(crate) fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Takes group and other permissions away from the file or directory at `path` if it has
/// any. Missing paths, symbolic links (their targets are not the store's to change) and
/// special files are left alone, and so is a file the process may not change, with a warning:
/// the server still runs.
pub(crate) fn tighten(path: &Path) {
    #[cfg(unix)]
    {
        let Ok(metadata) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !metadata.is_file() && !metadata.is_dir() {
            return;
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return;
        }
        let tightened = mode & 0o700;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                "tightened permissions from {mode:o} to {tightened:o}: the store's files are for the server's user only"
            ),
            Err(error) => tracing::warn!(
                path = %path.display(),
                "permissions are {mode:o}, readable by other users, and cannot be tightened: {error}"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// `path` with `suffix` appended to its file name (`boxoffice.db` → `boxoffice.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Before SQLite opens the database at `path`: tightens it and the files SQLite keeps beside
/// it, and creates it (empty, 0600) if it is missing. SQLite gives the `-wal`, `-shm` and
/// `-journal` files it makes the database file's own mode.
pub(crate) fn prepare_database(path: &Path) -> io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        tighten(&with_suffix(path, suffix));
    }
    file_options()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
}
