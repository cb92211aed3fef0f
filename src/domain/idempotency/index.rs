//! Which keys were recorded within the last `KEY_TTL_MS`, in about 29 bytes a key: enough to
//! tell a new key from one the store may hold without reading the store.
//!
//! A key is kept as a 64-bit tag of (user, key digest). Tags live in an open-addressing table
//! (linear probing, at most ¾ full, so 8 bytes over ⅜ to ¾ of a slot: 10.7–21.3 bytes a key)
//! and, in the order they were recorded, in a queue of fixed-size chunks that holds each tag
//! with the milliseconds since the one before it (12 bytes a key). Expiry pops the queue's
//! front and takes its tag out of the table. The table holds a tag as often as it was recorded,
//! so two keys that share a tag never take each other out.
//!
//! A tag names no key for sure: two keys may share one (about one chance in 2^64 per pair).
//! So "held" means "ask the store", and only "not held" is an answer: the key is new. That
//! answer is never wrong while every record made enters the index before its key can be
//! asked for again, and no entry leaves before its record expires: an entry leaves at its
//! record's expiry or later, never sooner.
//!
//! Resizing moves a few slots per call from the old table to the new one, so no call pays for
//! moving millions of tags at once (a keyed change waits on this under a lock).

use std::collections::VecDeque;

use super::KEY_TTL_MS;
use crate::domain::Timestamp;

/// A 64-bit tag of a key. 0 and 1 mark free and vacated slots, so tags start at 2.
pub type KeyTag = u64;

const FREE: u64 = 0;
/// A slot whose tag left a table that is being emptied into the next one: lookups probe past
/// it, as if it were taken.
const VACATED: u64 = 1;
const FIRST_TAG: u64 = 2;

/// The smallest table, and the one an empty index shrinks back to.
const MIN_SLOTS: usize = 1 << 10;
/// Slots moved from the old table to the new one per insert or expiry, so no call moves
/// millions of tags at once. Enough that the move ends before the new table could fill: after
/// growing, n slots to move and ¾·n inserts to go; after shrinking, ¼·n.
const MOVE_PER_CALL: usize = 8;
/// Slots moved per `tidy`: a shrink goes on while no keys come (well under a millisecond).
const MOVE_PER_TIDY: usize = 16_384;
/// Tags per chunk of the expiry queue: 48 KiB chunks, so the queue never reallocates one big
/// buffer and wastes at most a chunk at each end.
const CHUNK: usize = 4_096;

/// The tags recorded within `KEY_TTL_MS` of the latest time the index was shown.
#[derive(Clone)]
pub struct KeyIndex {
    table: Table,
    /// The table being emptied into `table` after a resize, and the next slot to move.
    old: Option<(Table, usize)>,
    queue: ExpiryQueue,
    /// The latest time the index was shown; it never goes back.
    now: Timestamp,
}

/// Its size, not its megabytes of tags.
impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("keys", &self.len())
            .field("bytes", &self.bytes())
            .field("now", &self.now)
            .finish()
    }
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            table: Table::with_slots(MIN_SLOTS),
            old: None,
            queue: ExpiryQueue::default(),
            now: Timestamp(i64::MIN),
        }
    }
}

impl KeyIndex {
    /// Enters a key recorded at `at`. It is held until `expire` is shown a time `KEY_TTL_MS`
    /// after `at`, or a little longer if `at` is earlier than the last key's: the queue keeps
    /// its order by giving such a key the last one's time.
    pub fn insert(&mut self, tag: KeyTag, at: Timestamp) {
        let tag = tag.max(FIRST_TAG);
        if !self.queue.fits_after(at) {
            // Every key held is older than this one by more than a gap can say: all expired.
            self.expire(at);
        }
        if self.tags() + 1 > self.table.max_len() {
            self.finish_moving();
            if self.table.len + 1 > self.table.max_len() {
                self.resize(self.table.slots.len() * 2);
            }
        }
        self.table.insert(tag);
        self.queue.push(tag, at);
        self.move_some(MOVE_PER_CALL);
    }

    /// Lets go of every key recorded `KEY_TTL_MS` or more before `now`. A `now` earlier than
    /// one shown before changes nothing.
    pub fn expire(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let horizon = self.now.plus_millis(-KEY_TTL_MS);
        while let Some(tag) = self.queue.pop_recorded_by(horizon) {
            self.remove(tag);
        }
        self.shrink_if_sparse();
        self.move_some(MOVE_PER_CALL);
    }

    /// Goes on with a resize while no keys come, so memory follows the keys held down too.
    pub fn tidy(&mut self) {
        self.shrink_if_sparse();
        self.move_some(MOVE_PER_TIDY);
        self.queue.shrink();
    }

    /// Whether a key with this tag may have been recorded within the day. `false` is certain;
    /// `true` may be another key with the same tag.
    pub fn may_hold(&self, tag: KeyTag) -> bool {
        let tag = tag.max(FIRST_TAG);
        self.table.contains(tag) || self.old.as_ref().is_some_and(|(old, _)| old.contains(tag))
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.queue.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory held: the tables' slots and the queue's chunks.
    pub fn bytes(&self) -> usize {
        let old = self.old.as_ref().map_or(0, |(old, _)| old.bytes());
        self.table.bytes() + old + self.queue.bytes()
    }

    /// Tags in both tables: the same as `len`, counted the other way.
    fn tags(&self) -> usize {
        self.table.len + self.old.as_ref().map_or(0, |(old, _)| old.len)
    }

    fn resize(&mut self, slots: usize) {
        debug_assert!(self.old.is_none(), "one resize at a time");
        let new = Table::with_slots(slots);
        self.old = Some((std::mem::replace(&mut self.table, new), 0));
    }

    /// Halves the table once it is less than ⅛ full (the half is then less than ¼ full).
    fn shrink_if_sparse(&mut self) {
        let slots = self.table.slots.len();
        if self.old.is_none() && slots > MIN_SLOTS && self.table.len * 8 < slots {
            self.resize(slots / 2);
        }
    }

    fn remove(&mut self, tag: KeyTag) {
        if self.table.remove(tag) {
            return;
        }
        let removed = self.old.as_mut().is_some_and(|(old, _)| old.vacate(tag));
        debug_assert!(removed, "every tag queued is in a table");
    }

    fn move_some(&mut self, slots: usize) {
        let Some((old, next)) = &mut self.old else {
            return;
        };
        let end = (*next + slots).min(old.slots.len());
        for slot in *next..end {
            if let Some(tag) = old.take(slot) {
                self.table.insert(tag);
            }
        }
        *next = end;
        if end == old.slots.len() {
            debug_assert_eq!(old.len, 0);
            self.old = None;
        }
    }

    fn finish_moving(&mut self) {
        if let Some((old, _)) = &self.old {
            self.move_some(old.slots.len());
        }
    }
}

/// Linear probing over a power-of-two number of slots; a tag may be held more than once.
#[derive(Clone)]
struct Table {
    slots: Box<[u64]>,
    len: usize,
}

impl Table {
    fn with_slots(slots: usize) -> Self {
        Self {
            slots: vec![FREE; slots].into_boxed_slice(),
            len: 0,
        }
    }

    fn max_len(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u64>()
    }

    fn home(&self, tag: KeyTag) -> usize {
        // Tags are uniform (hashes): the low bits are as good as any.
        tag as usize & (self.slots.len() - 1)
    }

    fn next(&self, slot: usize) -> usize {
        (slot + 1) & (self.slots.len() - 1)
    }

    fn insert(&mut self, tag: KeyTag) {
        debug_assert!(
            self.len < self.slots.len(),
            "a table always has a free slot"
        );
        let mut slot = self.home(tag);
        while self.slots[slot] >= FIRST_TAG {
            slot = self.next(slot);
        }
        self.slots[slot] = tag;
        self.len += 1;
    }

    fn find(&self, tag: KeyTag) -> Option<usize> {
        let mut slot = self.home(tag);
        loop {
            match self.slots[slot] {
                FREE => return None,
                found if found == tag => return Some(slot),
                _ => slot = self.next(slot),
            }
        }
    }

    fn contains(&self, tag: KeyTag) -> bool {
        self.find(tag).is_some()
    }

    /// Takes one copy of `tag` out, closing the gap by moving later tags of its run back (no
    /// markers left behind, so lookups stay short). Only for a table that holds no vacated
    /// slots: the current one.
    fn remove(&mut self, tag: KeyTag) -> bool {
        let Some(mut gap) = self.find(tag) else {
            return false;
        };
        let mut slot = gap;
        loop {
            slot = self.next(slot);
            let moved = self.slots[slot];
            if moved == FREE {
                break;
            }
            // A tag may fill the gap only if the gap lies on its way from its home to `slot`.
            let home = self.home(moved);
            let on_the_way = if gap <= slot {
                home <= gap || home > slot
            } else {
                home <= gap && home > slot
            };
            if on_the_way {
                self.slots[gap] = moved;
                gap = slot;
            }
        }
        self.slots[gap] = FREE;
        self.len -= 1;
        true
    }

    /// Takes one copy of `tag` out of a table being emptied, leaving a marker: its tags are
    /// moved slot by slot, so none may move back past the slot being moved.
    fn vacate(&mut self, tag: KeyTag) -> bool {
        let Some(slot) = self.find(tag) else {
            return false;
        };
        self.take(slot);
        true
    }

    /// The tag in `slot`, if any, leaving a marker. Free slots stay free, so every lookup
    /// still ends at one.
    fn take(&mut self, slot: usize) -> Option<KeyTag> {
        let tag = self.slots[slot];
        if tag < FIRST_TAG {
            return None;
        }
        self.slots[slot] = VACATED;
        self.len -= 1;
        Some(tag)
    }
}

/// Tags in the order they were recorded, each with the milliseconds since the one before it.
#[derive(Clone, Default)]
struct ExpiryQueue {
    chunks: VecDeque<Box<Chunk>>,
    /// The front entry's place in the first chunk, and how many entries there are.
    head: usize,
    len: usize,
    /// When the front entry and the back entry were recorded.
    front_at: Timestamp,
    back_at: Timestamp,
}

#[derive(Clone)]
struct Chunk {
    tags: [u64; CHUNK],
    gaps: [u32; CHUNK],
}

impl ExpiryQueue {
    /// Whether an entry recorded at `at` can follow the back one (its gap fits in 32 bits).
    fn fits_after(&self, at: Timestamp) -> bool {
        self.len == 0 || at.as_millis().saturating_sub(self.back_at.as_millis()) <= u32::MAX as i64
    }

    fn push(&mut self, tag: KeyTag, at: Timestamp) {
        // An entry earlier than the back one takes the back one's time: the queue stays in
        // order, and the entry is let go of a little later than it could be.
        let (at, gap) = if self.len == 0 {
            self.front_at = at;
            (at, 0)
        } else {
            let at = at.max(self.back_at);
            let gap = u32::try_from(at.as_millis() - self.back_at.as_millis())
                .expect("fits_after was asked first");
            (at, gap)
        };
        let place = self.head + self.len;
        if place == self.chunks.len() * CHUNK {
            self.chunks.push_back(Box::new(Chunk {
                tags: [FREE; CHUNK],
                gaps: [0; CHUNK],
            }));
        }
        let chunk = &mut self.chunks[place / CHUNK];
        chunk.tags[place % CHUNK] = tag;
        chunk.gaps[place % CHUNK] = gap;
        self.len += 1;
        self.back_at = at;
    }

    /// The front tag, taken off the queue, if it was recorded at or before `horizon`.
    fn pop_recorded_by(&mut self, horizon: Timestamp) -> Option<KeyTag> {
        if self.len == 0 || self.front_at > horizon {
            return None;
        }
        let tag = self.chunks[0].tags[self.head];
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        }
        if self.len > 0 {
            let gap = self.chunks[self.head / CHUNK].gaps[self.head % CHUNK];
            self.front_at = self.front_at.plus_millis(gap as i64);
        } else if self.head > 0 {
            // Empty: start the next entry at the front of a chunk.
            self.chunks.clear();
            self.head = 0;
        }
        Some(tag)
    }

    /// Returns the chunk list's spare capacity once most of it is unused.
    fn shrink(&mut self) {
        if self.chunks.capacity() > 64 && self.chunks.capacity() > 4 * self.chunks.len() {
            self.chunks.shrink_to(2 * self.chunks.len());
        }
    }

    fn bytes(&self) -> usize {
        self.chunks.len() * std::mem::size_of::<Chunk>()
            + self.chunks.capacity() * std::mem::size_of::<Box<Chunk>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct tags spread like hashes (splitmix64's finaliser, a bijection), so tests do not
    /// depend on SHA-256.
    fn tag(n: u64) -> KeyTag {
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn a_key_is_held_from_when_it_is_recorded_until_a_day_later_exactly() {
        let mut index = KeyIndex::default();
        assert!(
            !index.may_hold(tag(1)),
            "an empty index knows every key is new"
        );
        index.insert(tag(1), Timestamp(1_000));
        assert!(index.may_hold(tag(1)));
        assert!(!index.may_hold(tag(2)), "another key is new");
        index.expire(Timestamp(1_000 + KEY_TTL_MS - 1));
        assert!(index.may_hold(tag(1)), "held up to the last millisecond");
        index.expire(Timestamp(1_000 + KEY_TTL_MS));
        assert!(!index.may_hold(tag(1)), "let go of at the horizon");
        assert!(index.is_empty());
    }

    #[test]
    fn the_index_never_goes_back_in_time() {
        let mut index = KeyIndex::default();
        index.insert(tag(1), Timestamp(0));
        index.expire(Timestamp(KEY_TTL_MS));
        index.insert(tag(2), Timestamp(KEY_TTL_MS));
        index.expire(Timestamp(10));
        assert!(index.may_hold(tag(2)));
        index.expire(Timestamp(2 * KEY_TTL_MS - 1));
        assert!(index.may_hold(tag(2)));
        index.expire(Timestamp(2 * KEY_TTL_MS));
        assert!(!index.may_hold(tag(2)));
    }

    #[test]
    fn a_key_recorded_out_of_order_stays_at_least_its_day() {
        let mut index = KeyIndex::default();
        index.insert(tag(1), Timestamp(500));
        index.insert(tag(2), Timestamp(400));
        index.expire(Timestamp(400 + KEY_TTL_MS - 1));
        assert!(index.may_hold(tag(1)) && index.may_hold(tag(2)));
        index.expire(Timestamp(500 + KEY_TTL_MS));
        assert!(!index.may_hold(tag(1)) && !index.may_hold(tag(2)));
    }

    #[test]
    fn two_keys_with_one_tag_are_each_held_for_their_own_day() {
        let mut index = KeyIndex::default();
        index.insert(tag(7), Timestamp(0));
        index.insert(tag(7), Timestamp(1_000));
        index.expire(Timestamp(KEY_TTL_MS));
        assert!(index.may_hold(tag(7)), "the later key is still held");
        index.expire(Timestamp(1_000 + KEY_TTL_MS));
        assert!(!index.may_hold(tag(7)));
    }

    #[test]
    fn reserved_tags_are_held_like_any_other() {
        let mut index = KeyIndex::default();
        index.insert(0, Timestamp(0));
        index.insert(1, Timestamp(0));
        assert!(index.may_hold(0) && index.may_hold(1) && index.may_hold(2));
        index.expire(Timestamp(KEY_TTL_MS));
        assert!(!index.may_hold(0) && !index.may_hold(1));
    }

    #[test]
    fn a_gap_longer_than_32_bits_of_milliseconds_lets_go_of_everything_before_it() {
        let mut index = KeyIndex::default();
        index.insert(tag(1), Timestamp(0));
        let much_later = Timestamp(u32::MAX as i64 + 1);
        index.insert(tag(2), much_later);
        assert!(!index.may_hold(tag(1)));
        index.expire(much_later.plus_millis(KEY_TTL_MS - 1));
        assert!(index.may_hold(tag(2)));
        index.expire(much_later.plus_millis(KEY_TTL_MS));
        assert!(index.is_empty());
    }

    /// Many keys through growth, expiry and shrinking, against a plain model: no key recorded
    /// within the day is ever reported new, and none older is reported held.
    #[test]
    fn growing_and_shrinking_never_lose_a_held_key() {
        let mut index = KeyIndex::default();
        let step = KEY_TTL_MS / 20_000;
        let mut recorded: VecDeque<(u64, Timestamp)> = VecDeque::new();
        let mut shown = Timestamp(i64::MIN);
        for n in 0..60_000u64 {
            let at = Timestamp(n as i64 * step);
            if (30_000..30_010).contains(&n) {
                // A quiet day: every key expires and the table starts to shrink.
                shown = shown.max(at.plus_millis(KEY_TTL_MS));
            } else {
                index.insert(tag(n), at);
                recorded.push_back((n, at));
                shown = shown.max(at);
            }
            index.expire(shown);
            while recorded
                .front()
                .is_some_and(|(_, at)| at.plus_millis(KEY_TTL_MS) <= shown)
            {
                let (gone, _) = recorded.pop_front().unwrap();
                assert!(!index.may_hold(tag(gone)), "key {gone} outlived its day");
            }
            if n % 97 == 0 {
                for (held, _) in recorded.iter().step_by(101) {
                    assert!(index.may_hold(tag(*held)), "key {held} lost at {n}");
                }
            }
        }
        assert_eq!(index.len(), recorded.len());
        for (held, _) in &recorded {
            assert!(index.may_hold(tag(*held)), "key {held} lost");
        }
    }

    #[test]
    fn an_emptied_index_returns_to_its_smallest_size() {
        let mut index = KeyIndex::default();
        let small = index.bytes();
        for n in 0..100_000 {
            index.insert(tag(n), Timestamp(0));
        }
        assert!(index.bytes() > 100 * small);
        index.expire(Timestamp(KEY_TTL_MS));
        assert!(index.is_empty());
        for _ in 0..100 {
            index.tidy();
        }
        assert_eq!(index.table.slots.len(), MIN_SLOTS);
        assert!(index.old.is_none());
        assert!(index.bytes() < 2 * small, "{} bytes", index.bytes());
    }

    /// A key entered or let go of while a resize is under way is found in whichever table holds it.
    #[test]
    fn keys_are_found_in_either_table_while_a_resize_is_under_way() {
        let mut index = KeyIndex::default();
        let grow_at = MIN_SLOTS / 4 * 3;
        for n in 0..grow_at as u64 {
            index.insert(tag(n), Timestamp(n as i64));
        }
        assert!(index.old.is_none());
        index.insert(tag(grow_at as u64), Timestamp(grow_at as i64));
        assert!(index.old.is_some(), "growing");
        for n in 0..=grow_at as u64 {
            assert!(index.may_hold(tag(n)), "key {n}");
        }
        index.expire(Timestamp(KEY_TTL_MS + 9));
        assert!(index.old.is_some(), "still moving");
        for n in 0..10 {
            assert!(!index.may_hold(tag(n)), "key {n} expired");
        }
        for n in 10..=grow_at as u64 {
            assert!(index.may_hold(tag(n)), "key {n}");
        }
        assert_eq!(index.len(), grow_at + 1 - 10);
    }

    /// The figure docs/performance.md gives: `cargo test --lib key_index_bytes -- --nocapture`.
    #[test]
    fn key_index_bytes_per_key_for_a_million_keys() {
        let mut index = KeyIndex::default();
        let keys = 1_000_000u64;
        for n in 0..keys {
            index.insert(tag(n), Timestamp(n as i64));
        }
        let per_key = index.bytes() as f64 / keys as f64;
        println!(
            "key index: {keys} keys in {} bytes, {per_key:.1} bytes per key",
            index.bytes()
        );
        assert!(per_key < 32.0, "{per_key} bytes per key");
    }
}
