//! Snapshot payloads of older format versions, kept only to be read and converted at start.
//!
//! Version 1 wrote the idempotency book with each key as a string (twice) and each outcome with
//! the reservation or seats it named. Version 2 keeps a digest of the key and only the ids, so
//! a version-1 book is read here and its records are carried over in the order they were made.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::snapshot::decode_payload;
use crate::domain::idempotency::{IdempotencyBook, KeyedEndpoint, Outcome};
use crate::domain::seat_map::Reservation;
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

/// The idempotency book from a payload of an older format version.
pub fn book_from_older(version: u32, payload: &[u8]) -> Result<IdempotencyBook, String> {
    if version != 1 {
        return Err(format!("no reader for idempotency book version {version}"));
    }
    let mut old: BookV1 = decode_payload(payload)?;
    let mut book = IdempotencyBook::default();
    for (at, key) in old.recorded {
        // Version 1 left the order entry of a key it had already forgotten in place.
        let Some(record) = old.records.remove(&key).filter(|r| r.at == at) else {
            continue;
        };
        let (user, endpoint, key) = key;
        book.record(
            user,
            endpoint,
            &key,
            record.fingerprint,
            record.outcome.into(),
            at,
        );
    }
    Ok(book)
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
                        seats: vec![SeatNo(4), SeatNo(5)],
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
        let (book, seq): (IdempotencyBook, u64) = snapshot::decode_upgrading(
            Path::new("idempotency-1.bin"),
            &bytes,
            Some(book_from_older),
        )
        .expect("a version-1 book reads");
        assert_eq!(seq, 42);
        assert_eq!(book.len(), 3);
        assert_eq!(
            book.lookup(user, KeyedEndpoint::Charge, &key("c"), 11),
            Ok(Some(Outcome::Charge {
                charge: ChargeId(5),
                amount: 700,
                balance_after: 900
            }))
        );
        assert_eq!(
            book.lookup(user, KeyedEndpoint::Reservation, &key("h"), 12),
            Ok(Some(Outcome::Reservation(reservation)))
        );
        assert_eq!(
            book.lookup(user, KeyedEndpoint::Payment, &key("p"), 13),
            Ok(Some(Outcome::Payment {
                reservation,
                amount: 600,
                balance_after: 300,
                paid_at: Timestamp(3_000)
            }))
        );
        // The order was carried over: forgetting a day after the charge forgets only the charge.
        let mut book = book;
        book.forget_expired(Timestamp(1_000).plus_millis(crate::domain::idempotency::KEY_TTL_MS));
        assert_eq!(book.len(), 2);
        assert_eq!(
            book.lookup(user, KeyedEndpoint::Charge, &key("c"), 11),
            Ok(None)
        );
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
