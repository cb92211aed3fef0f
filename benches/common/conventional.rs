//! The conventional design the contention benches compare against: one rusqlite connection to a
//! WAL database holding a row per seat of one date, in a scratch directory removed on drop.

use std::path::PathBuf;

use rusqlite::{params, Connection, Transaction};

/// The one date every row belongs to.
pub const DATE_ROW: i64 = 1;

pub struct SeatsTable {
    pub conn: Connection,
    dir: PathBuf,
}

impl SeatsTable {
    /// A fresh database for `bench` with `seats` available seats at `synchronous` (`FULL`,
    /// `NORMAL`), plus `extra_schema` and whatever `seed` inserts, all committed and
    /// checkpointed before any timing.
    pub fn create(
        bench: &str,
        synchronous: &str,
        seats: u32,
        extra_schema: &str,
        seed: impl FnOnce(&Transaction),
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "boxoffice-bench-{bench}-{synchronous}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = Connection::open(dir.join("seats.db")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {};
             CREATE TABLE seats (
                 date_id    INTEGER NOT NULL,
                 seat_no    INTEGER NOT NULL,
                 status     TEXT    NOT NULL,
                 holder     INTEGER,
                 held_until INTEGER,
                 PRIMARY KEY (date_id, seat_no)
             );
             {extra_schema}",
            synchronous.to_uppercase()
        ))
        .unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO seats (date_id, seat_no, status) VALUES (?1, ?2, 'available')",
                )
                .unwrap();
            for seat in 1..=seats {
                insert.execute(params![DATE_ROW, seat]).unwrap();
            }
        }
        seed(&tx);
        tx.commit().unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        Self { conn, dir }
    }

    /// Every seat available again, and the WAL folded back, untimed.
    pub fn reset(&self) {
        self.conn
            .execute_batch(
                "UPDATE seats SET status = 'available', holder = NULL, held_until = NULL;
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .unwrap();
    }
}

impl Drop for SeatsTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
