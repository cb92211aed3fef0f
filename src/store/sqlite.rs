//! What the store's two databases share: how a writer's connection is opened and set up, and
//! the schema version each file carries (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::error::{FileKind, StoreError};
use super::private;

/// How long a writer waits for a lock that one of this process's readers holds for a moment.
pub(crate) const WRITER_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Opens (or creates) a database for its one writer, in WAL mode, and creates `schema` in it
/// if it is new. A reader that finds the WAL index header mid-change takes the write lock for a
/// moment to check it; the writer must wait that out, not fail (and stop the process). The
/// log's lock file, not this, keeps a second process away.
pub(crate) fn open_writer(
    path: &Path,
    file: FileKind,
    synchronous: &str,
    schema: &str,
    schema_version: u32,
) -> Result<Connection, StoreError> {
    let database = |source| StoreError::Database {
        file,
        path: path.to_owned(),
        source,
    };
    private::prepare_database(path).map_err(|source| StoreError::Io {
        action: "create the database",
        path: path.to_owned(),
        source,
    })?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let conn = Connection::open_with_flags(path, flags).map_err(database)?;
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout = {WRITER_BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         BEGIN IMMEDIATE; COMMIT;"
    ))
    .map_err(database)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(database)?;
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(database)?;
    if found == i64::from(schema_version) {
        return Ok(conn);
    }
    // Only an empty file is new: anything else of another version is refused, never read as
    // if it were this one.
    if found != 0 || objects != 0 {
        return Err(StoreError::UnsupportedFormat {
            file,
            path: path.to_owned(),
            found,
            expected: schema_version,
        });
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {schema} PRAGMA user_version = {schema_version}; COMMIT;"
    ))
    .map_err(database)?;
    Ok(conn)
}

/// Writes a consistent copy of the database `conn` holds to `path`, which must not exist.
pub(crate) fn vacuum_into(
    conn: &Connection,
    path: &Path,
    file: FileKind,
) -> Result<(), StoreError> {
    let target = path.to_str().ok_or_else(|| StoreError::NotUtf8 {
        path: path.to_owned(),
    })?;
    // Made empty and 0600 first (SQLite copies into an empty file), so the copy is never
    // readable by others, not even for a moment.
    private::file_options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| StoreError::Io {
            action: "create the backup copy",
            path: path.to_owned(),
            source,
        })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map(|_| ())
        .map_err(|source| StoreError::Backup {
            file,
            path: path.to_owned(),
            source,
        })
}
