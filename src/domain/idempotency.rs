//! `Idempotency-Key` records: what a keyed request produced, so a retry gets the same answer and
//! nothing is applied twice. Records are built from the stamped events themselves.
//!
//! Every record is stored once its event is committed (the history database follows the log a
//! commit behind) and kept there for `KEY_TTL_MS`. The book here holds only the recent ones: a
//! retry usually comes within seconds, and a record not yet stored can only be found here.
//! Older records leave memory once they are stored, so a day of keys costs disk, not memory.
//!
//! Only successes are recorded: a refused request changed nothing, so running it again is safe.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DomainError;
use super::events::Event;
use super::types::*;

/// Keys are remembered at least this long (API.md: 24 hours).
pub const KEY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A stored record stays in memory this long, for the quick retry that follows a lost answer.
pub const RECENT_MS: i64 = 60_000;
/// And the book never holds more stored records than this, whatever the rate of keyed
/// requests: about 8 MiB. Older ones are answered from the store.
pub const RECENT_KEYS_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyedEndpoint {
    Charge,
    Reservation,
    Payment,
}

/// What a keyed request produced. Only what cannot be read back elsewhere is kept: a hold's
/// seats, price and expiry never change after it is placed, so its reservation id is enough.
/// Every record is plain data without heap parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Charge {
        charge: ChargeId,
        amount: u64,
        balance_after: u64,
    },
    /// The hold placed; answer its reservation as it was when placed.
    Reservation(ReservationId),
    /// The payment of `reservation`; its seats are the reservation's.
    Payment {
        reservation: ReservationId,
        amount: u64,
        balance_after: u64,
        paid_at: Timestamp,
    },
}

/// A key's record: the body it was first used with, and what that request produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub fingerprint: u64,
    pub outcome: Outcome,
}

impl KeyRecord {
    /// The rule for a key seen before: the same body replays, another body is refused.
    pub fn answer(found: Option<Self>, fingerprint: u64) -> Result<Option<Outcome>, DomainError> {
        match found {
            None => Ok(None),
            Some(record) if record.fingerprint == fingerprint => Ok(Some(record.outcome)),
            Some(_) => Err(DomainError::IdempotencyKeyReused),
        }
    }
}

/// SHA-256 of the endpoint and the key, cut to 128 bits: a fixed 16 bytes in place of a string
/// of up to 64, with no allocation. The user id stays whole beside it, so even a collision could
/// only ever meet the same user's own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyDigest(pub [u8; 16]);

impl KeyDigest {
    fn of(endpoint: KeyedEndpoint, key: &IdempotencyKey) -> Self {
        let mut hasher = Sha256::new();
        hasher.update([endpoint as u8]);
        hasher.update(key.as_str().as_bytes());
        let digest = hasher.finalize();
        Self(digest[..16].try_into().expect("16 bytes"))
    }
}

type RecordKey = (UserId, KeyDigest);

/// Where a key lives, in the book and in the store. Building it hashes the key, so callers
/// build it before they take the lock every keyed change shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BookKey(RecordKey);

impl BookKey {
    pub fn new(user: UserId, endpoint: KeyedEndpoint, key: &IdempotencyKey) -> Self {
        Self((user, KeyDigest::of(endpoint, key)))
    }

    pub fn user(&self) -> UserId {
        self.0 .0
    }

    pub fn digest(&self) -> KeyDigest {
        self.0 .1
    }
}

/// A record made from a keyed event, ready to be stored and to enter the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecord {
    pub key: BookKey,
    pub record: KeyRecord,
    /// When the request was applied; the record is forgotten `KEY_TTL_MS` later.
    pub at: Timestamp,
}

impl PendingRecord {
    /// The record a stamped event makes; `None` for other events.
    pub fn of(event: &Event) -> Option<Self> {
        let (user, endpoint, stamp, outcome, at) = match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                balance_after,
                at,
                idempotency: Some(stamp),
            } => (
                *user,
                KeyedEndpoint::Charge,
                stamp,
                Outcome::Charge {
                    charge: *charge,
                    amount: *amount,
                    balance_after: *balance_after,
                },
                *at,
            ),
            Event::HoldPlaced {
                reservation,
                user,
                at,
                idempotency: Some(stamp),
                ..
            } => (
                *user,
                KeyedEndpoint::Reservation,
                stamp,
                Outcome::Reservation(*reservation),
                *at,
            ),
            Event::PaymentCompleted {
                reservation,
                user,
                amount,
                balance_after,
                at,
                idempotency: Some(stamp),
                ..
            } => (
                *user,
                KeyedEndpoint::Payment,
                stamp,
                Outcome::Payment {
                    reservation: *reservation,
                    amount: *amount,
                    balance_after: *balance_after,
                    paid_at: *at,
                },
                *at,
            ),
            _ => return None,
        };
        Some(Self {
            key: BookKey::new(user, endpoint, &stamp.key),
            record: KeyRecord {
                fingerprint: stamp.fingerprint,
                outcome,
            },
            at,
        })
    }

    /// Whether the store may forget it at `now`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.at.plus_millis(KEY_TTL_MS) <= now
    }
}

/// The recent records, in memory. Every record here is also on its way to the store; the book
/// lets go of it only once the store has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdempotencyBook {
    records: HashMap<RecordKey, KeyRecord>,
    /// Keys in the order they were recorded, with their event's log sequence, so settled records
    /// are let go of without a scan.
    recorded: VecDeque<(Timestamp, u64, RecordKey)>,
}

impl IdempotencyBook {
    /// The earlier outcome of this key if the book still holds it; the same key with another
    /// body is refused. `Ok(None)` means "not here": the store may still have it.
    pub fn find(&self, key: &BookKey, fingerprint: u64) -> Result<Option<Outcome>, DomainError> {
        KeyRecord::answer(self.records.get(&key.0).copied(), fingerprint)
    }

    /// `find` from the raw key, for tests.
    pub fn lookup(
        &self,
        user: UserId,
        endpoint: KeyedEndpoint,
        key: &IdempotencyKey,
        fingerprint: u64,
    ) -> Result<Option<Outcome>, DomainError> {
        self.find(&BookKey::new(user, endpoint, key), fingerprint)
    }

    /// Adds the record of the event logged as `seq`.
    pub fn insert(&mut self, pending: PendingRecord, seq: u64) {
        let PendingRecord { key, record, at } = pending;
        if let Entry::Vacant(vacant) = self.records.entry(key.0) {
            vacant.insert(record);
            self.recorded.push_back((at, seq, key.0));
        }
    }

    /// Lets go of records the store holds (every event up to `stored` has its record there) once
    /// they are older than `RECENT_MS` at `now`, or sooner when the book holds more than
    /// `RECENT_KEYS_MAX`. A record not yet stored always stays: the store cannot answer for it.
    pub fn settle(&mut self, now: Timestamp, stored: u64) {
        let cutoff = now.plus_millis(-RECENT_MS);
        while let Some((at, seq, key)) = self.recorded.front() {
            let old = *at <= cutoff || self.recorded.len() > RECENT_KEYS_MAX;
            if !old || *seq > stored {
                break;
            }
            self.records.remove(key);
            self.recorded.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdempotencyStamp;

    fn charge(key: &str, fingerprint: u64, at: i64) -> Event {
        Event::BalanceCharged {
            charge: ChargeId(1),
            user: UserId(1),
            amount: 10,
            balance_after: 10,
            at: Timestamp(at),
            idempotency: Some(IdempotencyStamp {
                key: IdempotencyKey::parse(key).unwrap(),
                fingerprint,
            }),
        }
    }

    fn record(book: &mut IdempotencyBook, key: &str, at: i64, seq: u64) {
        book.insert(PendingRecord::of(&charge(key, 7, at)).unwrap(), seq);
    }

    #[test]
    fn a_recorded_key_replays_for_the_same_body_and_refuses_another() {
        let mut book = IdempotencyBook::default();
        record(&mut book, "k", 0, 1);
        let key = IdempotencyKey::parse("k").unwrap();
        assert!(matches!(
            book.lookup(UserId(1), KeyedEndpoint::Charge, &key, 7),
            Ok(Some(Outcome::Charge {
                balance_after: 10,
                ..
            }))
        ));
        assert_eq!(
            book.lookup(UserId(1), KeyedEndpoint::Charge, &key, 8),
            Err(DomainError::IdempotencyKeyReused)
        );
        assert_eq!(
            book.lookup(UserId(2), KeyedEndpoint::Charge, &key, 7),
            Ok(None)
        );
        assert_eq!(
            book.lookup(UserId(1), KeyedEndpoint::Payment, &key, 7),
            Ok(None)
        );
    }

    #[test]
    fn only_keyed_events_make_a_record() {
        let Event::BalanceCharged {
            charge: id,
            user,
            amount,
            balance_after,
            at,
            ..
        } = charge("k", 7, 0)
        else {
            unreachable!()
        };
        let unkeyed = Event::BalanceCharged {
            charge: id,
            user,
            amount,
            balance_after,
            at,
            idempotency: None,
        };
        assert!(PendingRecord::of(&unkeyed).is_none());
        let mut book = IdempotencyBook::default();
        record(&mut book, "k", 0, 1);
        record(&mut book, "k", 0, 1);
        assert_eq!(book.len(), 1);
        assert_eq!(book.recorded.len(), 1, "a record enters the book once");
    }

    #[test]
    fn records_leave_memory_only_when_old_and_committed() {
        let mut book = IdempotencyBook::default();
        record(&mut book, "a", 0, 1);
        record(&mut book, "b", 10, 2);
        book.settle(Timestamp(RECENT_MS - 1), 2);
        assert_eq!(book.len(), 2, "recent records stay");
        book.settle(Timestamp(RECENT_MS + 100), 0);
        assert_eq!(book.len(), 2, "records whose event is not committed stay");
        book.settle(Timestamp(RECENT_MS + 5), 2);
        assert_eq!(
            book.len(),
            1,
            "the old committed one left, the newer one stays"
        );
        let key = IdempotencyKey::parse("b").unwrap();
        assert!(book
            .lookup(UserId(1), KeyedEndpoint::Charge, &key, 7)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_book_holds_at_most_its_bound_of_committed_records() {
        let mut book = IdempotencyBook::default();
        let extra = 10;
        for n in 0..RECENT_KEYS_MAX + extra {
            record(&mut book, &format!("k{n}"), 0, n as u64 + 1);
        }
        book.settle(Timestamp(0), 5);
        assert_eq!(
            book.len(),
            RECENT_KEYS_MAX + extra - 5,
            "only committed ones go"
        );
        book.settle(Timestamp(0), u64::MAX);
        assert_eq!(book.len(), RECENT_KEYS_MAX);
    }

    #[test]
    fn a_record_is_stale_a_day_after_it_was_made() {
        let pending = PendingRecord::of(&charge("k", 7, 0)).unwrap();
        assert!(!pending.is_stale(Timestamp(KEY_TTL_MS - 1)));
        assert!(pending.is_stale(Timestamp(KEY_TTL_MS)));
    }
}
