//! Value types built once at the edge ("parse, don't validate"): the domain never re-checks raw
//! strings or integers. IDs are opaque strings on the wire and small integers inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest amount of money the API accepts anywhere: 2^53 − 1, exact in every JSON parser.
pub const MAX_MONEY: u64 = (1 << 53) - 1;

/// Milliseconds since the Unix epoch. The domain never reads a clock: callers pass this in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
    pub fn plus_seconds(self, seconds: u64) -> Self {
        self.plus_millis(
            i64::try_from(seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        )
    }
    /// Whole seconds from `self` until `later`, rounded up, never negative.
    pub fn seconds_until(self, later: Timestamp) -> u64 {
        let ms = later.0.saturating_sub(self.0).max(0) as u64;
        ms.div_ceil(1000)
    }
}

macro_rules! opaque_id {
    ($name:ident, $inner:ty, $prefix:literal) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                parse_decimal(s.strip_prefix($prefix).ok_or(())?).map(Self)
            }
        }
    };
}

/// Only canonical decimals (no sign, no leading zero, no overflow) so every ID has one spelling.
pub(crate) fn parse_decimal<T: FromStr>(digits: &str) -> Result<T, ()> {
    let canonical = !digits.is_empty()
        && digits.len() <= 20
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return Err(());
    }
    digits.parse().map_err(|_| ())
}

opaque_id!(UserId, u64, "u_");
opaque_id!(ConcertId, u32, "c_");
opaque_id!(DateId, u32, "d_");
opaque_id!(ChargeId, u64, "ch_");

/// A reservation names its date, so a request can be routed to the owning actor without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReservationId {
    pub date: DateId,
    pub seq: u32,
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r_{}_{}", self.date.0, self.seq)
    }
}

impl FromStr for ReservationId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let rest = s.strip_prefix("r_").ok_or(())?;
        let (date, seq) = rest.split_once('_').ok_or(())?;
        Ok(Self {
            date: DateId(parse_decimal(date)?),
            seq: parse_decimal(seq)?,
        })
    }
}

/// A reservation is paid at most once, so its payment shares its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentId(pub ReservationId);

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p_{}_{}", self.0.date.0, self.0.seq)
    }
}

/// A reservation is refunded at most once, so its refund shares its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundId(pub ReservationId);

impl fmt::Display for RefundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rf_{}_{}", self.0.date.0, self.0.seq)
    }
}

/// A reservation may pass from hand to hand, so a transfer is numbered by its date, in the
/// order the date decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferId {
    pub date: DateId,
    pub seq: u32,
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t_{}_{}", self.date.0, self.seq)
    }
}

/// Seat numbers start at 1 on every date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeatNo(pub u32);

impl SeatNo {
    pub const FIRST: u32 = 1;

    pub fn parse(raw: i128) -> Option<Self> {
        u32::try_from(raw)
            .ok()
            .filter(|n| *n >= Self::FIRST)
            .map(SeatNo)
    }
    /// Position in a seat array; seat 0 (never valid) maps past the end of any array.
    pub fn index(self) -> usize {
        (self.0 as usize).wrapping_sub(1)
    }
}

/// The seats of one hold. Most holds name a few seats, so they sit inline and a hold allocates
/// nothing for them; longer lists (a raised `holds.max_seats_per_user`) spill to the heap. It
/// encodes exactly as a `Vec<SeatNo>` (a length, then the seats), so logs and snapshots written
/// before it read the same.
pub type SeatList = smallvec::SmallVec<[SeatNo; 4]>;

/// `[a-z0-9_.-]{3,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Username(String);

impl Username {
    pub const CHARS_MIN: usize = 3;
    pub const CHARS_MAX: usize = 32;

    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (Self::CHARS_MIN..=Self::CHARS_MAX).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8–128 characters, every one of them significant. Never logged or serialized.
pub struct Password(String);

impl Password {
    pub const CHARS_MIN: usize = 8;
    pub const CHARS_MAX: usize = 128;

    pub fn parse(raw: &str) -> Option<Self> {
        (Self::CHARS_MIN..=Self::CHARS_MAX)
            .contains(&raw.chars().count())
            .then(|| Self(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// `Idempotency-Key`: 1–64 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const CHARS_MAX: usize = 64;

    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=Self::CHARS_MAX).contains(&raw.len())
            && raw.bytes().all(|b| (0x21..=0x7e).contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_wire_form() {
        let id = ReservationId {
            date: DateId(7),
            seq: 42,
        };
        assert_eq!(id.to_string(), "r_7_42");
        assert_eq!("r_7_42".parse::<ReservationId>(), Ok(id));
        assert_eq!("u_9".parse::<UserId>(), Ok(UserId(9)));
    }

    #[test]
    fn ids_reject_every_non_canonical_spelling() {
        for bad in [
            "",
            "u_",
            "u_-1",
            "u_+1",
            "u_01",
            "u_1.0",
            "x_1",
            "u_99999999999999999999999",
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad}");
        }
        for bad in ["r_1", "r_1_", "r__1", "r_1_2_3", "r_4294967296_1"] {
            assert!(bad.parse::<ReservationId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_follow_the_contract() {
        assert!(Username::parse("ab").is_none());
        assert!(Username::parse("abc").is_some());
        assert!(Username::parse("a.b-c_9").is_some());
        assert!(Username::parse("Abc").is_none());
        assert!(Username::parse(&"a".repeat(33)).is_none());
        assert!(Username::parse("ab c").is_none());
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(Password::parse("1234567").is_none());
        assert!(Password::parse("12345678").is_some());
        assert!(Password::parse(&"é".repeat(128)).is_some());
        assert!(Password::parse(&"é".repeat(129)).is_none());
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2").unwrap()),
            "Password(<redacted>)"
        );
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse("a b").is_none());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_none());
        assert!(IdempotencyKey::parse("key-1!~").is_some());
    }

    #[test]
    fn seat_numbers_start_at_one() {
        assert_eq!(SeatNo::parse(0), None);
        assert_eq!(SeatNo::parse(-3), None);
        assert_eq!(SeatNo::parse(1 << 40), None);
        assert_eq!(SeatNo::parse(5), Some(SeatNo(5)));
    }

    /// Logs and snapshots hold seat lists written as `Vec<SeatNo>` before `SeatList` existed.
    #[test]
    fn a_seat_list_encodes_as_the_vec_it_replaced() {
        let config = bincode::config::standard();
        for len in [0u32, 1, 4, 5, 300] {
            let vec: Vec<SeatNo> = (1..=len).map(|n| SeatNo(n * 1_000)).collect();
            let list = SeatList::from_slice(&vec);
            let written = bincode::serde::encode_to_vec(&vec, config).unwrap();
            assert_eq!(
                bincode::serde::encode_to_vec(&list, config).unwrap(),
                written
            );
            let (read, _): (SeatList, _) =
                bincode::serde::decode_from_slice(&written, config).unwrap();
            assert_eq!(read.as_slice(), vec.as_slice(), "{len} seats");
        }
    }
}
