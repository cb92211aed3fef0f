//! History a user can list, kept in the history database instead of in memory, written by the
//! history writer once the event that changes it is committed (`store::projection`):
//! - every balance entry is a row, its id the log sequence of the event that made it;
//! - every reservation is a row, placed by its hold and ended by its payment, cancellation or
//!   expiry, so the dates keep only the holds their decisions need.

use rusqlite::{params, Connection};

use super::error::StoreError;
use super::reader::StoreReader;
use super::rows;
use crate::domain::ledger::LedgerEntry;
use crate::domain::seat_map::{Reservation, ReservationChange, ReservationState};
use crate::domain::{DateId, ReservationId, Timestamp, UserId};

pub(crate) const SCHEMA: &str = "
    CREATE TABLE ledger_entries (
        entry_id INTEGER PRIMARY KEY,
        user_id  INTEGER NOT NULL,
        entry    BLOB    NOT NULL
    );
    CREATE INDEX ledger_entries_by_user ON ledger_entries (user_id, entry_id);
    CREATE TABLE reservations (
        date_id    INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        placed_seq INTEGER NOT NULL,
        state      INTEGER NOT NULL,
        paid_at    INTEGER,
        placed     BLOB    NOT NULL,
        PRIMARY KEY (date_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX reservations_by_user
        ON reservations (user_id, created_at, placed_seq);";

fn state_code(state: ReservationState) -> i64 {
    match state {
        ReservationState::Held => 0,
        ReservationState::Paid => 1,
        ReservationState::Expired => 2,
        ReservationState::Cancelled => 3,
    }
}

fn state_of(code: i64) -> Result<ReservationState, StoreError> {
    Ok(match code {
        0 => ReservationState::Held,
        1 => ReservationState::Paid,
        2 => ReservationState::Expired,
        3 => ReservationState::Cancelled,
        found => {
            return Err(StoreError::Corrupt {
                what: "reservation state",
                found,
            })
        }
    })
}

/// Stores a reservation in the state it is in; `placed_seq` is the log sequence of its hold,
/// which orders a user's list.
fn insert_reservation(
    conn: &Connection,
    reservation: &Reservation,
    placed_seq: u64,
) -> rusqlite::Result<()> {
    // The blob keeps what never changes after the hold; `state` and `paid_at` are read from
    // their columns (`reservation_from_row`), so the reservation is encoded as it is, uncopied.
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO reservations
             (date_id, seq, user_id, created_at, placed_seq, state, paid_at, placed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    statement.execute(params![
        reservation.id.date.0 as i64,
        reservation.id.seq as i64,
        reservation.user.0 as i64,
        reservation.created_at.as_millis(),
        placed_seq as i64,
        state_code(reservation.state),
        reservation.paid_at.map(Timestamp::as_millis),
        rows::encode(reservation),
    ])?;
    Ok(())
}

/// Applies what an event logged as `seq` did to a reservation. An end applies only to a row
/// still held, so replaying it changes nothing (`ReservationChange::end`).
pub(crate) fn change_reservation(
    conn: &Connection,
    change: &ReservationChange,
    seq: u64,
) -> rusqlite::Result<()> {
    match change {
        ReservationChange::Placed(reservation) => insert_reservation(conn, reservation, seq),
        ReservationChange::Ended { id, state, at } => {
            let paid_at = (*state == ReservationState::Paid).then_some(at.as_millis());
            let mut statement = conn.prepare_cached(
                "UPDATE reservations SET state = ?1, paid_at = ?2
                 WHERE date_id = ?3 AND seq = ?4 AND state = 0",
            )?;
            statement.execute(params![
                state_code(*state),
                paid_at,
                id.date.0 as i64,
                id.seq as i64
            ])?;
            Ok(())
        }
    }
}

fn reservation_from_row(
    placed: &[u8],
    state: i64,
    paid_at: Option<i64>,
) -> Result<Reservation, StoreError> {
    let placed: Reservation = rows::decode(placed, "reservation")?;
    Ok(Reservation {
        state: state_of(state)?,
        paid_at: paid_at.map(Timestamp),
        ..placed
    })
}

/// Stores one entry; one already there (the same event, replayed) is kept as it is.
pub(crate) fn insert_entry(
    conn: &Connection,
    user: UserId,
    entry: &LedgerEntry,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO ledger_entries (entry_id, user_id, entry) VALUES (?1, ?2, ?3)",
    )?;
    statement.execute(params![
        entry.entry_id as i64,
        user.0 as i64,
        rows::encode(entry)
    ])?;
    Ok(())
}

type ReservationRow = (Vec<u8>, i64, Option<i64>);

impl StoreReader {
    /// One reservation as of the last finished commit, whoever it belongs to.
    pub fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(
            "SELECT placed, state, paid_at FROM reservations WHERE date_id = ?1 AND seq = ?2",
        )?;
        let mut rows = statement.query_map(params![id.date.0 as i64, id.seq as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        match rows.next() {
            None => Ok(None),
            Some(row) => {
                let (placed, state, paid_at): ReservationRow = row?;
                reservation_from_row(&placed, state, paid_at).map(Some)
            }
        }
    }

    /// `user`'s reservations on every date, newest first, as of the last finished commit.
    pub fn reservations_of(&self, user: UserId) -> Result<Vec<Reservation>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(
            "SELECT placed, state, paid_at FROM reservations WHERE user_id = ?1
                 ORDER BY created_at DESC, placed_seq DESC, date_id DESC, seq DESC",
        )?;
        let rows = statement.query_map(params![user.0 as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (placed, state, paid_at): ReservationRow = row?;
            found.push(reservation_from_row(&placed, state, paid_at)?);
        }
        Ok(found)
    }

    /// Reservations stored for a date, for tests and reports.
    pub fn reservation_count(&self, date: DateId) -> Result<u64, StoreError> {
        self.connection()
            .query_row(
                "SELECT COUNT(*) FROM reservations WHERE date_id = ?1",
                params![date.0 as i64],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(StoreError::from)
    }

    /// `user`'s balance history, newest first, as of the last finished commit.
    pub fn ledger_history(&self, user: UserId) -> Result<Vec<LedgerEntry>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(
            "SELECT entry FROM ledger_entries WHERE user_id = ?1 ORDER BY entry_id DESC",
        )?;
        let rows = statement.query_map(params![user.0 as i64], |row| row.get::<_, Vec<u8>>(0))?;
        let mut entries = Vec::new();
        for row in rows {
            entries.push(rows::decode(&row?, "balance entry")?);
        }
        Ok(entries)
    }
}
