//! History a user can list, kept in the history database instead of in memory, written by the
//! history writer once the event that changes it is committed (`store::projection`):
//! - every balance entry is a row, its id made from the log sequence of the event that made it;
//! - every reservation is a row, placed by its hold, ended by its payment, cancellation or
//!   expiry, moved to another user's list by a transfer and ended again by a refund.
//!
//! Both are read a page at a time, newest first, by an index on (user, list position): a page
//! costs its own rows, however long the user's list is (`domain::page`).

use rusqlite::{params, Connection};

use super::error::StoreError;
use super::reader::StoreReader;
use super::rows;
use crate::domain::ledger::LedgerEntry;
use crate::domain::page::{Page, PageRequest};
use crate::domain::seat_map::{Reservation, ReservationChange, ReservationState};
use crate::domain::waitlist::{Entry, EntryId, ListedEntry, StoredState, WaitlistChange};
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
        listed_seq INTEGER NOT NULL,
        state      INTEGER NOT NULL,
        paid_at    INTEGER,
        placed     BLOB    NOT NULL,
        PRIMARY KEY (date_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX reservations_by_user ON reservations (user_id, listed_seq);
    CREATE TABLE waitlist_entries (
        date_id         INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        user_id         INTEGER NOT NULL,
        listed_seq      INTEGER NOT NULL,
        state           INTEGER NOT NULL,
        reservation_seq INTEGER,
        entry           BLOB    NOT NULL,
        PRIMARY KEY (date_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX waitlist_entries_by_user ON waitlist_entries (user_id, listed_seq);";

fn entry_state_of(code: i64) -> Result<StoredState, StoreError> {
    Ok(match code {
        0 => StoredState::Waiting,
        1 => StoredState::Offered,
        2 => StoredState::Left,
        3 => StoredState::Lapsed,
        found => {
            return Err(StoreError::Corrupt {
                what: "waiting-list entry state",
                found,
            })
        }
    })
}

/// Applies what an event logged as `seq` did to the waiting lists. Each change applies only
/// to an entry in the state it expects, so replaying it changes nothing.
pub(crate) fn change_waitlist(
    conn: &Connection,
    change: &WaitlistChange,
    seq: u64,
) -> rusqlite::Result<()> {
    match change {
        WaitlistChange::Joined(entry) => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO waitlist_entries
                     (date_id, seq, user_id, listed_seq, state, reservation_seq, entry)
                 VALUES (?1, ?2, ?3, ?4, 0, NULL, ?5)",
            )?
            .execute(params![
                entry.id.date.0 as i64,
                entry.id.seq as i64,
                entry.user.0 as i64,
                seq as i64,
                rows::encode(entry),
            ])?;
        }
        WaitlistChange::Offered { id, reservation } => {
            conn.prepare_cached(
                "UPDATE waitlist_entries SET state = 1, reservation_seq = ?1
                 WHERE date_id = ?2 AND seq = ?3 AND state = 0",
            )?
            .execute(params![
                reservation.seq as i64,
                id.date.0 as i64,
                id.seq as i64
            ])?;
        }
        WaitlistChange::Left(id) => {
            conn.prepare_cached(
                "UPDATE waitlist_entries SET state = 2
                 WHERE date_id = ?1 AND seq = ?2 AND state IN (0, 1)",
            )?
            .execute(params![id.date.0 as i64, id.seq as i64])?;
        }
        WaitlistChange::DateCancelled(date) => {
            conn.prepare_cached(
                "UPDATE waitlist_entries SET state = 3 WHERE date_id = ?1 AND state = 0",
            )?
            .execute(params![date.0 as i64])?;
        }
    }
    Ok(())
}

/// A page of one user's waiting-list entries, newest first, each beside its offer's hold.
const WAITLIST_PAGE: &str = "SELECT w.listed_seq, w.entry, w.state,
            r.placed, r.user_id, r.state, r.paid_at
     FROM waitlist_entries w INDEXED BY waitlist_entries_by_user
     LEFT JOIN reservations r ON r.date_id = w.date_id AND r.seq = w.reservation_seq
     WHERE w.user_id = ?1 AND w.listed_seq < ?2 ORDER BY w.listed_seq DESC LIMIT ?3";

fn state_code(state: ReservationState) -> i64 {
    match state {
        ReservationState::Held => 0,
        ReservationState::Paid => 1,
        ReservationState::Expired => 2,
        ReservationState::Cancelled => 3,
        ReservationState::Refunded => 4,
    }
}

fn state_of(code: i64) -> Result<ReservationState, StoreError> {
    Ok(match code {
        0 => ReservationState::Held,
        1 => ReservationState::Paid,
        2 => ReservationState::Expired,
        3 => ReservationState::Cancelled,
        4 => ReservationState::Refunded,
        found => {
            return Err(StoreError::Corrupt {
                what: "reservation state",
                found,
            })
        }
    })
}

/// Stores a reservation in the state it is in; `listed_seq`, the log sequence of the event
/// that put it in its holder's list (its hold), is its place in that list.
fn insert_reservation(
    conn: &Connection,
    reservation: &Reservation,
    listed_seq: u64,
) -> rusqlite::Result<()> {
    // The blob keeps what never changes after the hold; `state` and `paid_at` are read from
    // their columns (`reservation_from_row`), so the reservation is encoded as it is, uncopied.
    let mut statement = conn.prepare_cached(
        "INSERT OR IGNORE INTO reservations
             (date_id, seq, user_id, created_at, listed_seq, state, paid_at, placed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    statement.execute(params![
        reservation.id.date.0 as i64,
        reservation.id.seq as i64,
        reservation.user.0 as i64,
        reservation.created_at.as_millis(),
        listed_seq as i64,
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
        // Into the recipient's list, placed there by the transfer.
        ReservationChange::Transferred { id, to } => {
            let mut statement = conn.prepare_cached(
                "UPDATE reservations SET user_id = ?1, listed_seq = ?2
                 WHERE date_id = ?3 AND seq = ?4",
            )?;
            statement.execute(params![
                to.0 as i64,
                seq as i64,
                id.date.0 as i64,
                id.seq as i64
            ])?;
            Ok(())
        }
        // A refund ends a paid reservation; it keeps when it was paid.
        ReservationChange::Ended {
            id,
            state: ReservationState::Refunded,
            ..
        } => {
            let mut statement = conn.prepare_cached(
                "UPDATE reservations SET state = ?1
                 WHERE date_id = ?2 AND seq = ?3 AND state = ?4",
            )?;
            statement.execute(params![
                state_code(ReservationState::Refunded),
                id.date.0 as i64,
                id.seq as i64,
                state_code(ReservationState::Paid),
            ])?;
            Ok(())
        }
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

/// The reservation a row holds: who holds it now (a transfer moves it) and its state come
/// from their columns, the rest from the blob its hold wrote.
fn reservation_from_row(row: ReservationRow) -> Result<Reservation, StoreError> {
    let (placed, user, state, paid_at) = row;
    let placed: Reservation = rows::decode(&placed, "reservation")?;
    Ok(Reservation {
        user: UserId(user as u64),
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

type ReservationRow = (Vec<u8>, i64, i64, Option<i64>);

/// A page of one user's reservations: a range of `reservations_by_user`, read backwards. The
/// index is named so that no planner statistics can turn a page into a walk of the table.
const RESERVATIONS_PAGE: &str = "SELECT listed_seq, placed, user_id, state, paid_at
     FROM reservations INDEXED BY reservations_by_user
     WHERE user_id = ?1 AND listed_seq < ?2 ORDER BY listed_seq DESC LIMIT ?3";

/// A page of one user's balance history: a range of `ledger_entries_by_user`, read backwards
/// (not of the primary key, which would pass every other user's entries on the way).
const LEDGER_PAGE: &str = "SELECT entry_id, entry
     FROM ledger_entries INDEXED BY ledger_entries_by_user
     WHERE user_id = ?1 AND entry_id < ?2 ORDER BY entry_id DESC LIMIT ?3";

impl StoreReader {
    /// One reservation as of the last finished commit, whoever it belongs to.
    pub fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(
            "SELECT placed, user_id, state, paid_at FROM reservations
             WHERE date_id = ?1 AND seq = ?2",
        )?;
        let mut rows = statement.query_map(params![id.date.0 as i64, id.seq as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        match rows.next() {
            None => Ok(None),
            Some(row) => reservation_from_row(row?).map(Some),
        }
    }

    /// A page of `user`'s reservations on every date, newest first, as of the last finished
    /// commit.
    pub fn reservations_page(
        &self,
        user: UserId,
        request: &PageRequest,
    ) -> Result<Page<Reservation>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(RESERVATIONS_PAGE)?;
        let rows = statement.query_map(
            params![
                user.0 as i64,
                request.before() as i64,
                request.rows_to_read()
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
                ))
            },
        )?;
        let mut found = Vec::new();
        for row in rows {
            let (position, row): (i64, ReservationRow) = row?;
            found.push((position as u64, reservation_from_row(row)?));
        }
        Ok(Page::of_rows(request, found))
    }

    /// A page of `user`'s waiting-list entries on every date, newest first, as of the last
    /// finished commit.
    pub fn waitlist_page(
        &self,
        user: UserId,
        request: &PageRequest,
    ) -> Result<Page<ListedEntry>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(WAITLIST_PAGE)?;
        type Row = (
            i64,
            Vec<u8>,
            i64,
            Option<Vec<u8>>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows = statement.query_map(
            params![
                user.0 as i64,
                request.before() as i64,
                request.rows_to_read()
            ],
            |row| -> rusqlite::Result<Row> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ))
            },
        )?;
        let mut found = Vec::new();
        for row in rows {
            let (position, entry, state, placed, holder, reservation_state, paid_at) = row?;
            let entry: Entry = rows::decode(&entry, "waiting-list entry")?;
            let offer = match (placed, holder, reservation_state) {
                (Some(placed), Some(holder), Some(reservation_state)) => Some(
                    reservation_from_row((placed, holder, reservation_state, paid_at))?,
                ),
                _ => None,
            };
            found.push((
                position as u64,
                ListedEntry {
                    entry,
                    state: entry_state_of(state)?,
                    offer,
                },
            ));
        }
        Ok(Page::of_rows(request, found))
    }

    /// One waiting-list entry as of the last finished commit, whoever it belongs to.
    pub fn waitlist_entry(&self, id: EntryId) -> Result<Option<Entry>, StoreError> {
        let conn = self.connection();
        let mut statement = conn
            .prepare_cached("SELECT entry FROM waitlist_entries WHERE date_id = ?1 AND seq = ?2")?;
        let mut rows = statement.query_map(params![id.date.0 as i64, id.seq as i64], |row| {
            row.get::<_, Vec<u8>>(0)
        })?;
        match rows.next() {
            None => Ok(None),
            Some(row) => Ok(Some(rows::decode(&row?, "waiting-list entry")?)),
        }
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

    /// A page of `user`'s balance history, newest first, as of the last finished commit. An
    /// entry's id is its list position.
    pub fn ledger_page(
        &self,
        user: UserId,
        request: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError> {
        let conn = self.connection();
        let mut statement = conn.prepare_cached(LEDGER_PAGE)?;
        let rows = statement.query_map(
            params![
                user.0 as i64,
                request.before() as i64,
                request.rows_to_read()
            ],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut entries = Vec::new();
        for row in rows {
            let (position, entry) = row?;
            entries.push((position as u64, rows::decode(&entry, "balance entry")?));
        }
        Ok(Page::of_rows(request, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one line per step.
    fn plan(sql: &str) -> String {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement
            .query_map(params![1, 2, 3], |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn a_page_is_a_range_of_the_users_index_read_in_order_never_a_sort_of_the_whole_list() {
        for (sql, index) in [
            (
                RESERVATIONS_PAGE,
                "reservations_by_user (user_id=? AND listed_seq<?)",
            ),
            (
                LEDGER_PAGE,
                "ledger_entries_by_user (user_id=? AND entry_id<?)",
            ),
            (
                WAITLIST_PAGE,
                "waitlist_entries_by_user (user_id=? AND listed_seq<?)",
            ),
        ] {
            let plan = plan(sql);
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            assert!(!plan.contains("SCAN"), "{plan}");
        }
    }
}
