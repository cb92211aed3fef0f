//! `Idempotency-Key` records: what a keyed request produced, so a retry gets the same answer and
//! nothing is applied twice. Records are built from the stamped events themselves, so replaying
//! the log rebuilds them and a retry is recognised across restarts.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyedEndpoint {
    Charge,
    Reservation,
    Payment,
}

/// What a keyed request produced. Only what cannot be read back elsewhere is kept: a hold's
/// seats, price and expiry never change after it is placed, so its reservation id is enough.
/// Every record is plain data without heap parts, so a day of keys stays small and copying the
/// book for its snapshot is a flat copy.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    fingerprint: u64,
    outcome: Outcome,
}

/// SHA-256 of the endpoint and the key, cut to 128 bits: a fixed 16 bytes in place of a string
/// of up to 64, with no allocation. The user id stays whole beside it, so even a collision could
/// only ever meet the same user's own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct KeyDigest([u8; 16]);

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

/// Where a key lives in the book. Building it hashes the key, so callers build it before they
/// take the lock every keyed change shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookKey(RecordKey);

impl BookKey {
    pub fn new(user: UserId, endpoint: KeyedEndpoint, key: &IdempotencyKey) -> Self {
        Self((user, KeyDigest::of(endpoint, key)))
    }
}

/// A record made from a keyed event, ready to enter the book (see `IdempotencyBook::pending`).
#[derive(Debug, Clone, Copy)]
pub struct PendingRecord {
    key: BookKey,
    record: Record,
    at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyBook {
    records: HashMap<RecordKey, Record>,
    /// Keys in the order they were recorded, to forget the old ones without a scan.
    recorded: VecDeque<(Timestamp, RecordKey)>,
}

impl IdempotencyBook {
    /// The earlier outcome of this key, if any; the same key with another body is refused.
    pub fn lookup(
        &self,
        user: UserId,
        endpoint: KeyedEndpoint,
        key: &IdempotencyKey,
        fingerprint: u64,
    ) -> Result<Option<Outcome>, DomainError> {
        self.find(&BookKey::new(user, endpoint, key), fingerprint)
    }

    /// `lookup` with the key already hashed.
    pub fn find(&self, key: &BookKey, fingerprint: u64) -> Result<Option<Outcome>, DomainError> {
        match self.records.get(&key.0) {
            None => Ok(None),
            Some(record) if record.fingerprint == fingerprint => Ok(Some(record.outcome)),
            Some(_) => Err(DomainError::IdempotencyKeyReused),
        }
    }

    /// Records the outcome of a stamped event; other events are ignored.
    pub fn apply(&mut self, event: &Event) {
        if let Some(pending) = Self::pending(event) {
            self.insert(pending);
        }
    }

    /// The record a stamped event makes, built without the book; `None` for other events.
    pub fn pending(event: &Event) -> Option<PendingRecord> {
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
        Some(PendingRecord {
            key: BookKey::new(user, endpoint, &stamp.key),
            record: Record {
                fingerprint: stamp.fingerprint,
                outcome,
            },
            at,
        })
    }

    /// Adds one record; also how records written by an older release are carried over.
    pub fn record(
        &mut self,
        user: UserId,
        endpoint: KeyedEndpoint,
        key: &IdempotencyKey,
        fingerprint: u64,
        outcome: Outcome,
        at: Timestamp,
    ) {
        self.insert(PendingRecord {
            key: BookKey::new(user, endpoint, key),
            record: Record {
                fingerprint,
                outcome,
            },
            at,
        });
    }

    pub fn insert(&mut self, pending: PendingRecord) {
        let PendingRecord { key, record, at } = pending;
        // A snapshot may already hold a record whose event is replayed after it: keep one.
        if let Entry::Vacant(vacant) = self.records.entry(key.0) {
            vacant.insert(record);
            self.recorded.push_back((at, key.0));
        }
    }

    /// Forgets keys recorded more than `KEY_TTL_MS` before `now`.
    pub fn forget_expired(&mut self, now: Timestamp) {
        while let Some((at, key)) = self.recorded.front() {
            if at.plus_millis(KEY_TTL_MS) > now {
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

    #[test]
    fn a_recorded_key_replays_for_the_same_body_and_refuses_another() {
        let mut book = IdempotencyBook::default();
        book.apply(&charge("k", 7, 0));
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
        assert!(IdempotencyBook::pending(&unkeyed).is_none());
        let mut book = IdempotencyBook::default();
        book.apply(&unkeyed);
        assert!(book.is_empty());
        book.apply(&charge("k", 7, 0));
        book.apply(&charge("k", 7, 0));
        assert_eq!(book.len(), 1);
        assert_eq!(book.recorded.len(), 1, "a replayed event is recorded once");
        book.forget_expired(Timestamp(KEY_TTL_MS));
        assert!(book.is_empty());
    }

    #[test]
    fn keys_are_kept_a_day_and_then_forgotten() {
        let mut book = IdempotencyBook::default();
        book.apply(&charge("k", 7, 0));
        book.forget_expired(Timestamp(KEY_TTL_MS - 1));
        assert_eq!(book.len(), 1);
        book.forget_expired(Timestamp(KEY_TTL_MS));
        assert!(book.is_empty());
    }
}
