//! Snapshot payloads kept only to be read and carried over at start.
//!
//! Up to version 2 the ledger kept every user's balance history inside its snapshot, and each
//! date every reservation it ever had. Version 3 keeps only balances and held reservations; the
//! history lives in the log's database, so a version-2 ledger's history and a version-2 date's
//! reservations are carried there at start, with the ids their users have seen.
//!
//! Releases up to this one's predecessor kept every idempotency record in memory and wrote the
//! whole book as a snapshot (owner `idempotency`). Records now live in the log's database, so a
//! book left by such a release is read once, its records are stored there, and its files go.
//! Version 1 wrote each key as a string (twice) and each outcome with the reservation or seats
//! it named; version 2 a digest of the key and only the ids.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::snapshot::decode_payload;
use crate::domain::idempotency::{
    BookKey, KeyDigest, KeyRecord, KeyedEndpoint, Outcome, PendingRecord,
};
use crate::domain::ledger::{BalancePolicy, Ledger, LedgerEntry};
use crate::domain::seat_map::Reservation;
use crate::domain::seat_map::{HoldPolicy, SeatMap};
use crate::domain::DateId;
use crate::domain::{ChargeId, IdempotencyKey, ReservationId, SeatNo, Timestamp, UserId};

type KeyV1 = (UserId, KeyedEndpoint, IdempotencyKey);

/// The book as version 1 serialized it (field order is the format).
#[derive(Serialize, Deserialize)]
pub(crate) struct BookV1 {
    pub records: HashMap<KeyV1, RecordV1>,
    pub recorded: VecDeque<(Timestamp, KeyV1)>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RecordV1 {
    pub fingerprint: u64,
    pub outcome: OutcomeV1,
    pub at: Timestamp,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum OutcomeV1 {
    Charge {
        charge: ChargeId,
        amount: u64,
        balance_after: u64,
    },
    Reservation(Reservation),
    Payment {
        reservation: ReservationId,
        amount: u64,
        balance_after: u64,
        seats: Vec<SeatNo>,
        paid_at: Timestamp,
    },
}

impl From<OutcomeV1> for Outcome {
    fn from(old: OutcomeV1) -> Self {
        match old {
            OutcomeV1::Charge {
                charge,
                amount,
                balance_after,
            } => Outcome::Charge {
                charge,
                amount,
                balance_after,
            },
            OutcomeV1::Reservation(placed) => Outcome::Reservation(placed.id),
            OutcomeV1::Payment {
                reservation,
                amount,
                balance_after,
                paid_at,
                ..
            } => Outcome::Payment {
                reservation,
                amount,
                balance_after,
                paid_at,
            },
        }
    }
}

type KeyV2 = (UserId, KeyDigest);

/// The book as version 2 serialized it (field order is the format).
#[derive(Serialize, Deserialize, Default)]
pub struct BookV2 {
    records: HashMap<KeyV2, KeyRecord>,
    recorded: VecDeque<(Timestamp, KeyV2)>,
}

impl BookV2 {
    /// Its records, in the order they were made.
    pub fn into_records(mut self) -> Vec<PendingRecord> {
        self.recorded
            .into_iter()
            .filter_map(|(at, key)| {
                let record = self.records.remove(&key)?;
                Some(PendingRecord {
                    key: BookKey::from_parts(key.0, key.1),
                    record,
                    at,
                })
            })
            .collect()
    }
}

/// A book of version 1 or 2, read as version 2.
pub fn book_from_older(version: u32, payload: &[u8]) -> Result<BookV2, String> {
    match version {
        1 => {}
        2 => return decode_payload(payload),
        _ => return Err(format!("no reader for idempotency book version {version}")),
    }
    let mut old: BookV1 = decode_payload(payload)?;
    let mut book = BookV2::default();
    for (at, key) in old.recorded {
        // Version 1 left the order entry of a key it had already forgotten in place.
        let Some(record) = old.records.remove(&key).filter(|r| r.at == at) else {
            continue;
        };
        let (user, endpoint, key) = key;
        let key = BookKey::new(user, endpoint, &key);
        let key = (key.user(), key.digest());
        book.records.insert(
            key,
            KeyRecord {
                fingerprint: record.fingerprint,
                outcome: record.outcome.into(),
            },
        );
        book.recorded.push_back((at, key));
    }
    Ok(book)
}

/// A ledger as recovery found it, with the history an older layout kept inside it.
pub struct LedgerStart {
    pub ledger: Ledger,
    /// Each user's entries from a version-2 snapshot; empty for today's layout.
    pub history: Vec<(UserId, LedgerEntry)>,
    /// The id the older release would have given its next entry, so entries of the events it
    /// logged after this snapshot get the ids it would have shown.
    pub next_entry: u64,
}

impl<'de> Deserialize<'de> for LedgerStart {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            ledger: Ledger::deserialize(deserializer)?,
            history: Vec::new(),
            next_entry: 1,
        })
    }
}

/// The ledger as versions 1 and 2 serialized it (field order is the format).
#[derive(Serialize, Deserialize)]
struct LedgerV2 {
    policy: BalancePolicy,
    accounts: HashMap<UserId, AccountV2>,
    next_charge: u64,
    next_entry: u64,
}

#[derive(Serialize, Deserialize)]
struct AccountV2 {
    balance: u64,
    history: Vec<LedgerEntry>,
}

/// A ledger of version 1 or 2: balances stay, the history is handed over to be stored.
pub fn ledger_from_older(version: u32, payload: &[u8]) -> Result<LedgerStart, String> {
    if !(1..=2).contains(&version) {
        return Err(format!("no reader for ledger version {version}"));
    }
    let old: LedgerV2 = decode_payload(payload)?;
    let mut balances = HashMap::new();
    let mut history = Vec::new();
    for (user, account) in old.accounts {
        balances.insert(user, account.balance);
        history.extend(account.history.into_iter().map(|entry| (user, entry)));
    }
    history.sort_by_key(|(_, entry)| entry.entry_id);
    Ok(LedgerStart {
        ledger: Ledger::from_parts(old.policy, balances, old.next_charge),
        history,
        next_entry: old.next_entry,
    })
}

/// A date as recovery found it, with the reservations an older layout kept inside it.
pub struct DateStart {
    pub map: SeatMap,
    /// Every reservation of a version-2 snapshot, in any state; empty for today's layout.
    pub history: Vec<Reservation>,
}

impl<'de> Deserialize<'de> for DateStart {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            map: SeatMap::deserialize(deserializer)?,
            history: Vec::new(),
        })
    }
}

/// A seat map as versions 1 and 2 serialized it (field order is the format; its index of held
/// reservations per user was never written).
#[derive(Serialize, Deserialize)]
struct SeatMapV2 {
    date: DateId,
    seat_price: u64,
    policy: HoldPolicy,
    seats: Vec<SeatSlotV2>,
    reservations: Vec<Reservation>,
    by_user: HashMap<UserId, Vec<u32>>,
    expiries: std::collections::BTreeSet<(Timestamp, u32)>,
    held_seats: u32,
    sold_seats: u32,
}

#[derive(Serialize, Deserialize)]
struct SeatSlotV2 {
    holder: u32,
    sold: bool,
}

/// A date of version 1 or 2: its held reservations stay, all of them are handed over.
pub fn date_from_older(version: u32, payload: &[u8]) -> Result<DateStart, String> {
    if !(1..=2).contains(&version) {
        return Err(format!("no reader for seat map version {version}"));
    }
    let old: SeatMapV2 = decode_payload(payload)?;
    let map = SeatMap::from_older(
        old.date,
        old.seat_price,
        old.policy,
        old.seats.iter().map(|s| (s.holder, s.sold)).collect(),
        &old.reservations,
    );
    if (map.held_seats(), map.sold_seats()) != (old.held_seats, old.sold_seats) {
        return Err(format!(
            "seat counts do not add up: {} held and {} sold in the file, {} and {} in its reservations",
            old.held_seats,
            old.sold_seats,
            map.held_seats(),
            map.sold_seats()
        ));
    }
    Ok(DateStart {
        map,
        history: old.reservations,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::domain::seat_map::ReservationState;
    use crate::domain::DateId;
    use crate::store::snapshot::{self, SNAPSHOT_FORMAT_VERSION};

    fn key(raw: &str) -> IdempotencyKey {
        IdempotencyKey::parse(raw).expect("a valid key")
    }

    /// A snapshot file image as version 1 wrote it.
    fn version_1_file(book: &BookV1, seq: u64) -> Vec<u8> {
        let mut bytes = snapshot::encode(book, seq);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes
    }

    #[test]
    fn a_version_1_book_is_read_with_every_record_and_outcome() {
        let user = UserId(3);
        let reservation = ReservationId {
            date: DateId(2),
            seq: 9,
        };
        let records = [
            (
                (user, KeyedEndpoint::Charge, key("c")),
                RecordV1 {
                    fingerprint: 11,
                    outcome: OutcomeV1::Charge {
                        charge: ChargeId(5),
                        amount: 700,
                        balance_after: 900,
                    },
                    at: Timestamp(1_000),
                },
            ),
            (
                (user, KeyedEndpoint::Reservation, key("h")),
                RecordV1 {
                    fingerprint: 12,
                    outcome: OutcomeV1::Reservation(Reservation {
                        id: reservation,
                        user,
                        seats: smallvec::smallvec![SeatNo(4), SeatNo(5)],
                        price: 600,
                        state: ReservationState::Held,
                        created_at: Timestamp(2_000),
                        expires_at: Timestamp(302_000),
                        paid_at: None,
                    }),
                    at: Timestamp(2_000),
                },
            ),
            (
                (user, KeyedEndpoint::Payment, key("p")),
                RecordV1 {
                    fingerprint: 13,
                    outcome: OutcomeV1::Payment {
                        reservation,
                        amount: 600,
                        balance_after: 300,
                        seats: vec![SeatNo(4), SeatNo(5)],
                        paid_at: Timestamp(3_000),
                    },
                    at: Timestamp(3_000),
                },
            ),
        ];
        let old = BookV1 {
            recorded: records.iter().map(|(k, r)| (r.at, k.clone())).collect(),
            records: records.into_iter().collect(),
        };
        let bytes = version_1_file(&old, 42);
        let (book, seq): (BookV2, u64) = snapshot::decode_upgrading(
            Path::new("idempotency-1.bin"),
            &bytes,
            Some(book_from_older),
        )
        .expect("a version-1 book reads");
        assert_eq!(seq, 42);
        assert_eq!(book.into_records(), expected_records());
    }

    /// The three records both test books hold, in the order they were made.
    fn expected_records() -> Vec<PendingRecord> {
        let user = UserId(3);
        let reservation = ReservationId {
            date: DateId(2),
            seq: 9,
        };
        let made = |endpoint, raw: &str, fingerprint, outcome, at| PendingRecord {
            key: BookKey::new(user, endpoint, &key(raw)),
            record: KeyRecord {
                fingerprint,
                outcome,
            },
            at: Timestamp(at),
        };
        vec![
            made(
                KeyedEndpoint::Charge,
                "c",
                11,
                Outcome::Charge {
                    charge: ChargeId(5),
                    amount: 700,
                    balance_after: 900,
                },
                1_000,
            ),
            made(
                KeyedEndpoint::Reservation,
                "h",
                12,
                Outcome::Reservation(reservation),
                2_000,
            ),
            made(
                KeyedEndpoint::Payment,
                "p",
                13,
                Outcome::Payment {
                    reservation,
                    amount: 600,
                    balance_after: 300,
                    paid_at: Timestamp(3_000),
                },
                3_000,
            ),
        ]
    }

    /// `ledger-9.bin` as release `1e7520c` wrote it: a charge of 500,000 (`ch_1`), a payment
    /// of 55,000 for `r_1_1`, and nothing else.
    const VERSION_2_LEDGER: &str = "424f58534e41500002000000000000000900000000000000410000000000000028c188555ec97fbffc80969800fc00e1f5050101fc48ca0600020100fc20a10700fc20a10700fd260fa21f4403000000010201fbd8d6fc48ca0600fd3a12a21f440300000101010203";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_version_2_ledger_keeps_its_balances_and_hands_over_its_history() {
        use crate::domain::ledger::{EntryKind, EntryReference};
        let (start, seq): (LedgerStart, u64) = snapshot::decode_upgrading(
            Path::new("ledger-9.bin"),
            &unhex(VERSION_2_LEDGER),
            Some(ledger_from_older),
        )
        .expect("a version-2 ledger reads");
        assert_eq!(seq, 9);
        let user = UserId(1);
        assert_eq!(start.ledger.balance(user), 445_000);
        assert_eq!(start.next_entry, 3);
        let entries: Vec<_> = start
            .history
            .iter()
            .map(|(owner, e)| {
                (
                    *owner,
                    e.entry_id,
                    e.kind,
                    e.amount,
                    e.balance_after,
                    e.reference,
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    user,
                    1,
                    EntryKind::Charge,
                    500_000,
                    500_000,
                    EntryReference::Charge(ChargeId(1))
                ),
                (
                    user,
                    2,
                    EntryKind::Payment,
                    55_000,
                    445_000,
                    EntryReference::Reservation(ReservationId {
                        date: DateId(1),
                        seq: 1
                    })
                ),
            ]
        );
        // The next charge continues the old numbering.
        let next = start.ledger.charge(user, 5, Timestamp(0), None).unwrap();
        assert!(matches!(
            next,
            crate::domain::Event::BalanceCharged {
                charge: ChargeId(2),
                ..
            }
        ));
    }

    /// `date-1-9.bin` as release `1e7520c` wrote it: a date of the demo concert (50 seats of
    /// 55,000) where `r_1_1`, seat 7, was held and paid.
    const VERSION_2_DATE: &str = "424f58534e415000020000000000000009000000000000009c000000000000008e1b77b6cd464f8901fbd8d6fcc0270900043200000000000000000000000001010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000010101010107fbd8d601fd500fa21f44030000fd1037ab1f4403000001fd3a12a21f4403000001010101000001";

    #[test]
    fn a_version_2_date_keeps_its_held_reservations_and_hands_over_all() {
        use crate::domain::seat_map::{ReservationState, SeatStatus};
        let (start, seq): (DateStart, u64) = snapshot::decode_upgrading(
            Path::new("date-1-9.bin"),
            &unhex(VERSION_2_DATE),
            Some(date_from_older),
        )
        .expect("a version-2 date reads");
        assert_eq!(seq, 9);
        let map = start.map;
        assert_eq!(
            (map.date(), map.seat_count(), map.seat_price()),
            (DateId(1), 50, 55_000)
        );
        assert_eq!(
            (map.held_seats(), map.sold_seats(), map.hold_count()),
            (0, 1, 0)
        );
        assert_eq!(
            map.seat_status(SeatNo(7), Timestamp(0)),
            Some(SeatStatus::Sold)
        );
        let id = ReservationId {
            date: DateId(1),
            seq: 1,
        };
        assert!(map.has_ended(id));
        assert_eq!(start.history.len(), 1);
        let paid = &start.history[0];
        assert_eq!(
            (
                paid.id,
                paid.user,
                paid.seats.to_vec(),
                paid.price,
                paid.state
            ),
            (
                id,
                UserId(1),
                vec![SeatNo(7)],
                55_000,
                ReservationState::Paid
            )
        );
        assert!(paid.paid_at.is_some());
        // The next hold continues the old numbering.
        let next = map
            .place_hold(UserId(2), &[SeatNo(8)], Timestamp(0), None)
            .unwrap();
        assert!(matches!(
            next,
            crate::domain::Event::HoldPlaced {
                reservation: ReservationId { seq: 2, .. },
                ..
            }
        ));
    }

    /// `idempotency-42.bin` as the previous release (`1e7520c`) wrote it: the records of
    /// `expected_records`, made by that release's own `IdempotencyBook::record`.
    const VERSION_2_FILE: &str = "424f58534e41500002000000000000002a000000000000008b00000000000000a4dcdedd4381fbb60303597fcb31282d34654c200d3418fca5700b0005fbbc02fb840303662fb906c0fb671022f9914d6bba12250c0102090360dfc2070e0cda45e71bfbbe0f51497e0d020209fb5802fb2c01fb701703fbd00703597fcb31282d34654c200d3418fca570fba00f03662fb906c0fb671022f9914d6bba1225fb70170360dfc2070e0cda45e71bfbbe0f51497e";

    #[test]
    fn a_version_2_book_written_by_the_previous_release_is_read_in_order() {
        let bytes = unhex(VERSION_2_FILE);
        let (book, seq): (BookV2, u64) = snapshot::decode_upgrading(
            Path::new("idempotency-42.bin"),
            &bytes,
            Some(book_from_older),
        )
        .expect("a version-2 book reads");
        assert_eq!(seq, 42);
        assert_eq!(book.into_records(), expected_records());
    }

    #[test]
    fn other_owners_read_a_version_1_payload_as_it_is_and_a_newer_version_is_refused() {
        let bytes = {
            let mut bytes = snapshot::encode(&vec![1u32, 2, 3], 7);
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
            bytes
        };
        let (state, seq): (Vec<u32>, u64) =
            snapshot::decode(Path::new("ledger-7.bin"), &bytes).expect("version 1 reads");
        assert_eq!((state, seq), (vec![1, 2, 3], 7));

        let mut newer = snapshot::encode(&vec![1u32], 7);
        newer[8..12].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            snapshot::decode::<Vec<u32>>(Path::new("ledger-7.bin"), &newer),
            Err(snapshot::SnapshotError::UnknownVersion { .. })
        ));
    }
}
