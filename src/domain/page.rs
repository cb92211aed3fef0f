//! Pages of a user's lists (reservations, balance history). A list is ordered newest first by
//! each entry's *list position*: the log sequence of the event that put the entry in that
//! user's list (a hold, a charge; a reservation received by transfer would take the transfer's).
//! Positions are unique and only grow, so a walk that asks each time for the entries before the
//! last one it saw gets every entry that was listed when it began, once each, whatever is added
//! meanwhile: new entries take higher positions and land before its first page.
//!
//! A cursor names the list and the position a walk stopped at. It is opaque to clients (base64url
//! of a versioned 10-byte record) and comes back from them, so it is read strictly: one spelling
//! per cursor, its version and list checked, its position in range.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Entries on a page when the client does not say.
pub const PAGE_LIMIT_DEFAULT: u32 = 100;
/// The most entries a page may hold.
pub const PAGE_LIMIT_MAX: u32 = 1_000;
/// The largest list position: the history database stores positions as SQLite integers.
pub const LIST_POSITION_MAX: u64 = i64::MAX as u64;

const CURSOR_VERSION: u8 = 1;
const CURSOR_BYTES: usize = 10;
/// 10 bytes in unpadded base64: ⌈80 / 6⌉ characters.
const CURSOR_CHARS: usize = 14;

/// How many entries a page holds: 1…`PAGE_LIMIT_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub const DEFAULT: Self = Self(PAGE_LIMIT_DEFAULT);
    pub const MAX: Self = Self(PAGE_LIMIT_MAX);

    /// Decimal digits only (no sign, no spaces, no exponent), 1…`PAGE_LIMIT_MAX`.
    pub fn parse(text: &str) -> Option<Self> {
        // Longer than any allowed value (leading zeros included) is refused before parsing.
        if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = text.parse().ok()?;
        (1..=PAGE_LIMIT_MAX).contains(&n).then_some(Self(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Which list a cursor walks: a cursor of one list is refused by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Reservations,
    BalanceHistory,
    Waitlist,
}

impl ListKind {
    fn code(self) -> u8 {
        match self {
            Self::Reservations => 1,
            Self::BalanceHistory => 2,
            Self::Waitlist => 3,
        }
    }
}

/// Where a walk goes on: the next page holds the entries listed before `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    list: ListKind,
    before: u64,
}

impl Cursor {
    /// `None` for a position no entry can have.
    pub fn new(list: ListKind, before: u64) -> Option<Self> {
        (1..=LIST_POSITION_MAX)
            .contains(&before)
            .then_some(Self { list, before })
    }

    pub fn before(self) -> u64 {
        self.before
    }

    pub fn encode(self) -> String {
        let mut bytes = [0u8; CURSOR_BYTES];
        bytes[0] = CURSOR_VERSION;
        bytes[1] = self.list.code();
        bytes[2..].copy_from_slice(&self.before.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A cursor this server gave for `list`, or `None`.
    pub fn parse(text: &str, list: ListKind) -> Option<Self> {
        // The length first, so a long string costs nothing to refuse.
        if text.len() != CURSOR_CHARS {
            return None;
        }
        // The engine refuses padding and stray low bits: every cursor has one spelling.
        let bytes: [u8; CURSOR_BYTES] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
        if bytes[0] != CURSOR_VERSION || bytes[1] != list.code() {
            return None;
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&bytes[2..]);
        Self::new(list, u64::from_be_bytes(position))
    }
}

/// What a client asked for: `limit` entries, the newest or those before `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub list: ListKind,
    pub limit: PageLimit,
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The newest page of `list`.
    pub fn first(list: ListKind, limit: PageLimit) -> Self {
        Self {
            list,
            limit,
            cursor: None,
        }
    }

    /// Entries listed before this position are on the page.
    pub fn before(&self) -> u64 {
        self.cursor.map_or(LIST_POSITION_MAX, Cursor::before)
    }

    /// How many rows to read: one past the limit tells whether another page follows.
    pub fn rows_to_read(&self) -> u32 {
        self.limit.get() + 1
    }
}

/// One page, newest first, and the cursor to the next (older) one, `None` at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// The page from at most `request.rows_to_read()` rows of (list position, entry), newest
    /// first, as read for `request`.
    pub fn of_rows(request: &PageRequest, mut rows: Vec<(u64, T)>) -> Self {
        let limit = request.limit.get() as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .and_then(|(position, _)| Cursor::new(request.list, *position))
        } else {
            None
        };
        Self {
            entries: rows.into_iter().map(|(_, entry)| entry).collect(),
            next,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            entries: self.entries.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_plain_digits_from_1_to_1000() {
        for good in ["1", "7", "100", "1000", "0001000"] {
            assert!(PageLimit::parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "0",
            "1001",
            "-1",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "1e2",
            "x",
            "0x10",
            "99999999999",
            "４",
        ] {
            assert_eq!(PageLimit::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_cursor_round_trips_and_names_its_list() {
        for before in [1, 2, 255, 1 << 40, LIST_POSITION_MAX] {
            let cursor = Cursor::new(ListKind::Reservations, before).unwrap();
            let text = cursor.encode();
            assert_eq!(text.len(), CURSOR_CHARS);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(Cursor::parse(&text, ListKind::Reservations), Some(cursor));
            assert_eq!(Cursor::parse(&text, ListKind::BalanceHistory), None);
        }
    }

    #[test]
    fn a_forged_or_damaged_cursor_is_refused() {
        let good = Cursor::new(ListKind::BalanceHistory, 42).unwrap().encode();
        let raw = |bytes: [u8; CURSOR_BYTES]| URL_SAFE_NO_PAD.encode(bytes);
        let mut position_zero = [0u8; CURSOR_BYTES];
        position_zero[..2].copy_from_slice(&[CURSOR_VERSION, 2]);
        let mut position_too_large = [0xffu8; CURSOR_BYTES];
        position_too_large[..2].copy_from_slice(&[CURSOR_VERSION, 2]);
        let mut unknown_version = [0u8; CURSOR_BYTES];
        unknown_version[..2].copy_from_slice(&[2, 2]);
        unknown_version[9] = 1;
        let mut unknown_list = [0u8; CURSOR_BYTES];
        unknown_list[..2].copy_from_slice(&[CURSOR_VERSION, 9]);
        unknown_list[9] = 1;
        // The last character of a 10-byte cursor carries 2 bits of padding: set them.
        let mut stray_bits = good.clone().into_bytes();
        let last = stray_bits.pop().unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        stray_bits.push(alphabet[index | 1]);
        let stray_bits = String::from_utf8(stray_bits).unwrap();
        for bad in [
            String::new(),
            "x".into(),
            format!("{good}="),
            format!("{good}A"),
            good[..CURSOR_CHARS - 1].to_owned(),
            good.replace(|_: char| true, "+"),
            "A".repeat(5_000),
            raw(position_zero),
            raw(position_too_large),
            raw(unknown_version),
            raw(unknown_list),
            stray_bits,
        ] {
            assert_eq!(
                Cursor::parse(&bad, ListKind::BalanceHistory),
                None,
                "{bad:?}"
            );
        }
        assert!(Cursor::parse(&good, ListKind::BalanceHistory).is_some());
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_rows_follow() {
        let request = PageRequest::first(ListKind::Reservations, PageLimit::parse("2").unwrap());
        assert_eq!(request.rows_to_read(), 3);
        let page = Page::of_rows(&request, vec![(9, 'c'), (7, 'b'), (4, 'a')]);
        assert_eq!(page.entries, vec!['c', 'b']);
        let next = page.next.unwrap();
        assert_eq!(next.before(), 7);
        let page = Page::of_rows(&request, vec![(9, 'c'), (7, 'b')]);
        assert_eq!((page.entries.len(), page.next), (2, None));
        let later = PageRequest {
            cursor: Some(next),
            ..request
        };
        assert_eq!(later.before(), 7);
        assert_eq!(request.before(), LIST_POSITION_MAX);
    }
}
