//! `Idempotency-Key` records: what a keyed request produced, so a retry gets the same answer and
//! nothing is applied twice. Records are built from the stamped events themselves.
//!
//! Every record is stored once its event is committed (the history database follows the log a
//! commit behind) and kept there for `KEY_TTL_MS`. The book here holds only the recent ones: a
//! retry usually comes within seconds, and a record not yet stored can only be found here.
//! Older records leave memory once they are stored, so a day of keys costs disk, not memory.
//!
//! Most keyed requests bring a key never seen, and the store cannot be asked about every one
//! (a read of the history database per hold). So the book also keeps a compact index of every
//! key recorded within `KEY_TTL_MS` (`KeyIndex`, about 29 bytes a key): a key the index does
//! not hold is new, and only one it may hold is looked for in the store.
//!
//! Only successes are recorded: a refused request changed nothing, so running it again is safe.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DomainError;
use super::events::Event;
use super::types::*;

mod index;

pub use index::{KeyIndex, KeyTag};

/// Keys are remembered this long (API.md: at least 24 hours), by the book, the index and the
/// store alike: a key is free again at the millisecond its record turns this old.
pub const KEY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A stored record stays in memory this long, for the quick retry that follows a lost answer.
pub const RECENT_MS: i64 = 60_000;
/// And the book never holds more stored records than this, whatever the rate of keyed
/// requests: about 16 MiB (88-byte entries in a table of 2^17, and the order they came in).
/// Older ones are answered from the store.
pub const RECENT_KEYS_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyedEndpoint {
    Charge,
    Reservation,
    Payment,
    Refund,
    Transfer,
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
    /// The refund of `reservation`; `balance` is the caller's right after.
    Refund {
        reservation: ReservationId,
        amount: u64,
        fee: u64,
        payer: UserId,
        balance: u64,
        at: Timestamp,
    },
    Transfer {
        transfer: TransferId,
        reservation: ReservationId,
        from: UserId,
        to: UserId,
        at: Timestamp,
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

    /// `answer` for a record read from the store at `now`. A record `KEY_TTL_MS` old is
    /// forgotten, as the index forgets it, even while its row waits to be deleted: the key is
    /// free, and a new request with it records anew over the old row.
    pub fn answer_stored(
        stored: Option<PendingRecord>,
        fingerprint: u64,
        now: Timestamp,
    ) -> Result<Option<Outcome>, DomainError> {
        let live = stored.filter(|stored| !stored.is_stale(now));
        Self::answer(live.map(|stored| stored.record), fingerprint)
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

    /// The key of a stored record.
    pub fn stored(user: UserId, digest: KeyDigest) -> Self {
        Self((user, digest))
    }

    /// The key's tag in the index. The digest is uniform; the user, spread over 64 bits by an
    /// odd multiplier (a bijection), makes one key's tag differ for every user.
    pub fn tag(&self) -> KeyTag {
        let (user, KeyDigest(digest)) = self.0;
        let low = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        low ^ user.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
            Event::RefundCompleted {
                reservation,
                holder,
                payer,
                amount,
                fee,
                holder_balance,
                at,
                idempotency: Some(stamp),
                ..
            } => (
                *holder,
                KeyedEndpoint::Refund,
                stamp,
                Outcome::Refund {
                    reservation: *reservation,
                    amount: *amount,
                    fee: *fee,
                    payer: *payer,
                    balance: *holder_balance,
                    at: *at,
                },
                *at,
            ),
            Event::TransferCompleted {
                transfer,
                reservation,
                from,
                to,
                at,
                idempotency: Some(stamp),
            } => (
                *from,
                KeyedEndpoint::Transfer,
                stamp,
                Outcome::Transfer {
                    transfer: *transfer,
                    reservation: *reservation,
                    from: *from,
                    to: *to,
                    at: *at,
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

/// What memory knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Recorded, and still in the book: the request's answer.
    Recorded(Outcome),
    /// Not recorded within `KEY_TTL_MS`: the request runs.
    New,
    /// Maybe recorded and since stored: only the store can tell.
    AskStore,
}

/// The recent records, in memory, and the index of every key recorded within `KEY_TTL_MS`.
/// Every record here is also on its way to the store; the book lets go of it only once the
/// store has it.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyBook {
    records: HashMap<RecordKey, Held>,
    /// Keys in the order they were recorded, with their event's log sequence, so settled records
    /// are let go of without a scan.
    recorded: VecDeque<(Timestamp, u64, RecordKey)>,
    index: KeyIndex,
}

/// A record in the book, with when it was made and its event's log sequence.
#[derive(Debug, Clone, Copy)]
struct Held {
    record: KeyRecord,
    at: Timestamp,
    seq: u64,
}

impl IdempotencyBook {
    /// A book in front of the records stored so far, whose keys `index` holds.
    pub fn with_index(index: KeyIndex) -> Self {
        Self {
            index,
            ..Self::default()
        }
    }

    /// What memory knows of this key at `now`: the earlier outcome if the book still holds the
    /// record (the same key with another body is refused), else whether the key is new. A key
    /// is new only if the index does not hold it: every record enters the index as it enters
    /// the book, and leaves the index no sooner than `KEY_TTL_MS` after it was made.
    pub fn find(
        &mut self,
        key: &BookKey,
        fingerprint: u64,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        let held = self.records.get(&key.0).filter(|held| {
            let expires = held.at.plus_millis(KEY_TTL_MS);
            expires > now
        });
        if let Some(outcome) = KeyRecord::answer(held.map(|held| held.record), fingerprint)? {
            return Ok(Lookup::Recorded(outcome));
        }
        self.index.expire(now);
        Ok(if self.index.may_hold(key.tag()) {
            Lookup::AskStore
        } else {
            Lookup::New
        })
    }

    /// `find` from the raw key, for tests.
    pub fn lookup(
        &mut self,
        user: UserId,
        endpoint: KeyedEndpoint,
        key: &IdempotencyKey,
        fingerprint: u64,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        self.find(&BookKey::new(user, endpoint, key), fingerprint, now)
    }

    /// Adds the record of the event logged as `seq`, and its key to the index. It takes the
    /// place of an expired record of the same key still in the book (the key was free again).
    pub fn insert(&mut self, pending: PendingRecord, seq: u64) {
        let PendingRecord { key, record, at } = pending;
        let held = Held { record, at, seq };
        match self.records.entry(key.0) {
            Entry::Occupied(same_event) if same_event.get().seq == seq => return,
            Entry::Occupied(mut expired) => {
                expired.insert(held);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(held);
            }
        }
        self.recorded.push_back((at, seq, key.0));
        self.index.insert(key.tag(), at);
    }

    /// Lets go of records the store holds (every event up to `stored` has its record there) once
    /// they are older than `RECENT_MS` at `now`, or sooner when the book holds more than
    /// `RECENT_KEYS_MAX`. A record not yet stored always stays: the store cannot answer for it.
    /// The index lets go of keys recorded `KEY_TTL_MS` before `now`.
    pub fn settle(&mut self, now: Timestamp, stored: u64) {
        self.index.expire(now);
        let cutoff = now.plus_millis(-RECENT_MS);
        while let Some((at, seq, key)) = self.recorded.front() {
            let old = *at <= cutoff || self.recorded.len() > RECENT_KEYS_MAX;
            if !old || *seq > stored {
                break;
            }
            // Unless a newer record of the key took its place.
            if let Entry::Occupied(held) = self.records.entry(*key) {
                if held.get().seq == *seq {
                    held.remove();
                }
            }
            self.recorded.pop_front();
        }
    }

    /// Goes on with any resize of the index while keys do not come (memory follows them down).
    pub fn tidy(&mut self) {
        self.index.tidy();
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The index of the day's keys.
    pub fn index(&self) -> &KeyIndex {
        &self.index
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
        let now = Timestamp(0);
        assert!(matches!(
            book.lookup(UserId(1), KeyedEndpoint::Charge, &key, 7, now),
            Ok(Lookup::Recorded(Outcome::Charge {
                balance_after: 10,
                ..
            }))
        ));
        assert_eq!(
            book.lookup(UserId(1), KeyedEndpoint::Charge, &key, 8, now),
            Err(DomainError::IdempotencyKeyReused)
        );
        assert_eq!(
            book.lookup(UserId(2), KeyedEndpoint::Charge, &key, 7, now),
            Ok(Lookup::New)
        );
        assert_eq!(
            book.lookup(UserId(1), KeyedEndpoint::Payment, &key, 7, now),
            Ok(Lookup::New)
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
        assert!(matches!(
            book.lookup(
                UserId(1),
                KeyedEndpoint::Charge,
                &key,
                7,
                Timestamp(RECENT_MS + 5)
            ),
            Ok(Lookup::Recorded(_))
        ));
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

    fn charge_key(key: &str) -> BookKey {
        BookKey::new(
            UserId(1),
            KeyedEndpoint::Charge,
            &IdempotencyKey::parse(key).unwrap(),
        )
    }

    #[test]
    fn a_key_that_left_the_book_is_asked_of_the_store_for_a_day_exactly() {
        let mut book = IdempotencyBook::default();
        record(&mut book, "a", 1_000, 1);
        book.settle(Timestamp(1_000 + RECENT_MS), 1);
        assert!(book.is_empty(), "the stored record left memory");
        let a = charge_key("a");
        let ask = |book: &mut IdempotencyBook, key: &BookKey, at: i64| {
            book.find(key, 7, Timestamp(at)).unwrap()
        };
        assert_eq!(ask(&mut book, &a, 1_000 + RECENT_MS), Lookup::AskStore);
        assert_eq!(
            ask(&mut book, &charge_key("b"), 1_000 + RECENT_MS),
            Lookup::New,
            "a key never recorded is known new without the store"
        );
        assert_eq!(ask(&mut book, &a, 1_000 + KEY_TTL_MS - 1), Lookup::AskStore);
        assert_eq!(ask(&mut book, &a, 1_000 + KEY_TTL_MS), Lookup::New);
    }

    /// The book may hold a record past its day when nothing settled it since (a quiet minute, or
    /// a store that fell behind); it forgets it all the same, and keeps the record that replaces
    /// it until that one is stored.
    #[test]
    fn a_record_a_day_old_is_forgotten_even_in_the_book_and_its_successor_kept() {
        let mut book = IdempotencyBook::default();
        book.insert(PendingRecord::of(&charge("k", 7, 0)).unwrap(), 1);
        let day = Timestamp(KEY_TTL_MS);
        let key = charge_key("k");
        assert!(matches!(
            book.find(&key, 7, day.plus_millis(-1)),
            Ok(Lookup::Recorded(_))
        ));
        assert_eq!(book.find(&key, 8, day), Ok(Lookup::New));

        let successor = PendingRecord::of(&charge("k", 8, KEY_TTL_MS)).unwrap();
        book.insert(successor, 2);
        assert_eq!(book.len(), 1);
        assert!(book.index().may_hold(key.tag()));
        assert_eq!(
            book.find(&key, 7, day),
            Err(DomainError::IdempotencyKeyReused)
        );
        // The old record's turn to settle comes first; it takes the successor with it only
        // once that one is stored too.
        book.settle(day.plus_millis(RECENT_MS), 1);
        assert!(matches!(book.find(&key, 8, day), Ok(Lookup::Recorded(_))));
        book.settle(day.plus_millis(RECENT_MS), 2);
        assert!(book.is_empty());
        assert_eq!(
            book.find(&key, 8, day.plus_millis(RECENT_MS)),
            Ok(Lookup::AskStore)
        );
    }

    #[test]
    fn a_key_is_in_the_index_from_the_moment_it_is_in_the_book() {
        let mut book = IdempotencyBook::default();
        record(&mut book, "a", 0, 1);
        assert!(book.index().may_hold(charge_key("a").tag()));
        assert_eq!(book.index().len(), 1);
    }

    #[test]
    fn a_book_started_from_the_stored_keys_asks_the_store_for_them() {
        let mut index = KeyIndex::default();
        index.insert(charge_key("stored").tag(), Timestamp(0));
        let mut book = IdempotencyBook::with_index(index);
        let find = |book: &mut IdempotencyBook, key| book.find(&charge_key(key), 7, Timestamp(5));
        assert_eq!(find(&mut book, "stored"), Ok(Lookup::AskStore));
        assert_eq!(find(&mut book, "other"), Ok(Lookup::New));
    }

    /// Two different keys with one tag: the index cannot tell them apart, so the second is
    /// looked for in the store, which does not have it, and the request runs as new.
    #[test]
    fn a_key_sharing_another_keys_tag_falls_through_to_the_store() {
        let first = BookKey::stored(UserId(1), KeyDigest([3; 16]));
        let mut digest = [3; 16];
        let spread = |user: u64| user.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let low = u64::from_le_bytes([3; 8]) ^ spread(1) ^ spread(2);
        digest[..8].copy_from_slice(&low.to_le_bytes());
        let second = BookKey::stored(UserId(2), KeyDigest(digest));
        assert_ne!(first, second);
        assert_eq!(first.tag(), second.tag());

        let mut index = KeyIndex::default();
        index.insert(first.tag(), Timestamp(0));
        let mut book = IdempotencyBook::with_index(index);
        assert_eq!(book.find(&second, 7, Timestamp(1)), Ok(Lookup::AskStore));
        assert_eq!(KeyRecord::answer_stored(None, 7, Timestamp(1)), Ok(None));
    }

    #[test]
    fn one_key_has_a_different_tag_for_every_user() {
        let digest = KeyDigest([9; 16]);
        let tags: std::collections::HashSet<KeyTag> = (1..1_000)
            .map(|user| BookKey::stored(UserId(user), digest).tag())
            .collect();
        assert_eq!(tags.len(), 999);
    }

    #[test]
    fn a_stored_record_answers_until_its_day_is_out() {
        let stored = PendingRecord::of(&charge("k", 7, 1_000)).unwrap();
        let last = Timestamp(1_000 + KEY_TTL_MS - 1);
        assert_eq!(
            KeyRecord::answer_stored(Some(stored), 7, last),
            Ok(Some(stored.record.outcome))
        );
        assert_eq!(
            KeyRecord::answer_stored(Some(stored), 8, last),
            Err(DomainError::IdempotencyKeyReused)
        );
        assert_eq!(
            KeyRecord::answer_stored(Some(stored), 8, last.plus_millis(1)),
            Ok(None),
            "a stale row not yet deleted is forgotten all the same"
        );
    }

    #[test]
    fn a_record_is_stale_a_day_after_it_was_made() {
        let pending = PendingRecord::of(&charge("k", 7, 0)).unwrap();
        assert!(!pending.is_stale(Timestamp(KEY_TTL_MS - 1)));
        assert!(pending.is_stale(Timestamp(KEY_TTL_MS)));
    }
}
