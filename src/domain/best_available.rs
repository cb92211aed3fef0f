//! Best available: the server picks `quantity` adjacent seats for a buyer, by the contract's rule
//! (API.md, "Best available"):
//!
//! 1. one row, consecutive seats, all available, none in the buyer's rehold cooldown;
//! 2. a block that leaves no orphan is preferred to one that does (taking seats `a…b` leaves an
//!    orphan when `a − 1` is available and `a − 2` is not, or does not exist; likewise `b + 1`
//!    with `b + 2`);
//! 3. then the section nearest the stage, then the row nearest the stage;
//! 4. then the block whose middle is nearest the row's middle; a tie goes to the lower seat.
//!
//! Seen from a maximal run of available seats `s…e`, a block `a…b` inside it leaves an orphan
//! exactly when one seat is left on either side (`a − s = 1` or `e − b = 1`). So a run of `L`
//! seats holds a block of `q` that leaves no orphan exactly when `L = q` or `L ≥ q + 2`.
//!
//! `FreeSeats` keeps one bit per seat, row by row, and for every row two masks over quantities
//! 1…64: which quantities fit in some run of the row, and which fit without an orphan. A tree of
//! those masks over the rows, in stage order, finds the first row that can take a block in
//! O(log rows); within that row the runs are read off its bits (at most 8 words) and each run's
//! best block is found in O(1), since the best place is the one nearest the row's middle that is
//! not one of the (at most two) places that leave an orphan. A change of one seat rereads its row
//! and updates the tree along one path. Rows whose places are cut by the buyer's own cooldown
//! seats are checked seat by seat: a buyer has only a few of those.

use super::types::SeatNo;
use super::venue::Layout;

/// Quantities the masks cover; a larger quantity walks the rows instead of the tree.
const MASKED_QUANTITIES: u32 = 64;

/// The block best available chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub first: SeatNo,
    pub quantity: u32,
    /// Whether it leaves an orphan: only when no block that leaves none exists.
    pub leaves_orphan: bool,
}

impl Block {
    pub fn seats(&self) -> impl Iterator<Item = SeatNo> {
        let first = self.first.0;
        (first..first + self.quantity).map(SeatNo)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fits {
    /// Bit `q − 1`: some run of the row holds `q` seats.
    any: u64,
    /// Bit `q − 1`: some run of the row holds `q` seats without leaving an orphan.
    clean: u64,
}

impl Fits {
    fn union(self, other: Fits) -> Fits {
        Fits {
            any: self.any | other.any,
            clean: self.clean | other.clean,
        }
    }

    fn has(self, quantity: u32, clean: bool) -> bool {
        let bit = 1u64 << (quantity - 1);
        (if clean { self.clean } else { self.any }) & bit != 0
    }
}

fn low_bits(count: u32) -> u64 {
    if count >= 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    }
}

impl Fits {
    fn of_run(length: u32) -> Fits {
        let mut clean = low_bits(length.saturating_sub(2));
        if length <= MASKED_QUANTITIES {
            clean |= 1u64 << (length - 1);
        }
        Fits {
            any: low_bits(length),
            clean,
        }
    }
}

/// Which seats of a date are available, with the index best available reads. The default has
/// no seats.
///
/// A seat marked (`mark`) changes its bit at once and leaves its row's masks stale until
/// `settle`: a hold by seat number then costs a bit and a flag, and a row's masks are reread
/// once per best-available decision however many of its seats changed since (`choose` needs
/// every row settled). `set` is `mark` and `settle` together.
#[derive(Debug, Clone, Default)]
pub struct FreeSeats {
    /// One bit per seat, set while it is available; each row starts a word of its own.
    bits: Vec<u64>,
    /// Per row: its first word, its first seat and its length.
    rows: Vec<RowBits>,
    /// A tree of the rows' `Fits` in stage order: leaves from `leaves` on, each node the union
    /// of its two children.
    tree: Vec<Fits>,
    leaves: usize,
    /// Rows whose bits changed since their masks were computed, each once (`stale` says which).
    dirty: Vec<u32>,
    stale: Vec<bool>,
}

/// Equal when the same seats are available: the masks are derived from the bits.
impl PartialEq for FreeSeats {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits && self.rows == other.rows
    }
}

impl Eq for FreeSeats {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowBits {
    word: u32,
    first_seat: u32,
    seats: u32,
}

impl RowBits {
    fn words(&self) -> std::ops::Range<usize> {
        let start = self.word as usize;
        start..start + self.seats.div_ceil(64) as usize
    }
}

/// A run of available seats in a row, by place in the row (from 1).
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u32,
    end: u32,
}

/// The next place at or after `from` (from 0) whose bit is `set`, below `length`.
fn next_bit(words: &[u64], from: u32, length: u32, set: bool) -> Option<u32> {
    if from >= length {
        return None;
    }
    let mut index = (from / 64) as usize;
    let read = |i: usize| if set { words[i] } else { !words[i] };
    let mut word = read(index) & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            let place = index as u32 * 64 + word.trailing_zeros();
            return (place < length).then_some(place);
        }
        index += 1;
        if index >= words.len() {
            return None;
        }
        word = read(index);
    }
}

fn runs(words: &[u64], length: u32, mut each: impl FnMut(Run)) {
    let mut from = 0;
    while let Some(start) = next_bit(words, from, length, true) {
        let end = next_bit(words, start, length, false).unwrap_or(length);
        each(Run {
            start: start + 1,
            end,
        });
        from = end;
    }
}

impl FreeSeats {
    /// Every seat of `layout` available.
    pub fn new(layout: &Layout) -> Self {
        let mut rows = Vec::with_capacity(layout.rows().len());
        let mut words = 0u32;
        for row in layout.rows() {
            rows.push(RowBits {
                word: words,
                first_seat: row.first_seat.0,
                seats: row.seats,
            });
            words += row.seats.div_ceil(64);
        }
        let mut bits = vec![0u64; words as usize];
        for row in &rows {
            let words = row.words();
            let full = (row.seats / 64) as usize;
            bits[words.start..words.start + full].fill(u64::MAX);
            if row.seats % 64 != 0 {
                bits[words.start + full] = low_bits(row.seats % 64);
            }
        }
        let leaves = rows.len().next_power_of_two().max(1);
        let stale = vec![false; rows.len()];
        let mut free = Self {
            bits,
            rows,
            tree: vec![Fits::default(); 2 * leaves],
            leaves,
            dirty: Vec::new(),
            stale,
        };
        for row in 0..free.rows.len() {
            free.tree[leaves + row] = free.fits_of_row(row);
        }
        for node in (1..leaves).rev() {
            free.tree[node] = free.tree[2 * node].union(free.tree[2 * node + 1]);
        }
        free
    }

    fn row_index(&self, seat: SeatNo) -> Option<usize> {
        let after = self.rows.partition_point(|r| r.first_seat <= seat.0);
        let row = after.checked_sub(1)?;
        let r = &self.rows[row];
        (seat.0 < r.first_seat + r.seats).then_some(row)
    }

    pub fn is_free(&self, seat: SeatNo) -> bool {
        let Some(row) = self.row_index(seat) else {
            return false;
        };
        let r = &self.rows[row];
        let place = seat.0 - r.first_seat;
        self.bits[r.word as usize + (place / 64) as usize] & (1 << (place % 64)) != 0
    }

    /// Marks `seat` available (`free`) or not and brings the masks up to date; a seat outside
    /// the layout is ignored. Whether that changed it.
    pub fn set(&mut self, seat: SeatNo, free: bool) -> bool {
        let changed = self.mark(seat, free).is_some();
        self.settle();
        changed
    }

    /// Whether every row's masks are up to date, as `choose` needs.
    pub fn is_settled(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Recomputes the masks of the rows marked since the last call.
    pub fn settle(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for row in dirty.drain(..) {
            let row = row as usize;
            self.stale[row] = false;
            let mut node = self.leaves + row;
            self.tree[node] = self.fits_of_row(row);
            while node > 1 {
                node /= 2;
                self.tree[node] = self.tree[2 * node].union(self.tree[2 * node + 1]);
            }
        }
        // The list keeps its capacity for the next round.
        self.dirty = dirty;
    }

    /// Marks `seat` available (`free`) or not, leaving its row's masks stale until `settle`; a
    /// seat outside the layout is ignored. The seat's row (an index into the layout's rows) if
    /// that changed it.
    pub fn mark(&mut self, seat: SeatNo, free: bool) -> Option<usize> {
        let row = self.row_index(seat)?;
        let r = self.rows[row];
        let place = seat.0 - r.first_seat;
        let word = &mut self.bits[r.word as usize + (place / 64) as usize];
        let bit = 1u64 << (place % 64);
        let before = *word;
        if free {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        if *word == before {
            return None;
        }
        if !self.stale[row] {
            self.stale[row] = true;
            self.dirty.push(row as u32);
        }
        Some(row)
    }

    fn fits_of_row(&self, row: usize) -> Fits {
        let r = &self.rows[row];
        let mut fits = Fits::default();
        runs(&self.bits[r.words()], r.seats, |run| {
            fits = fits.union(Fits::of_run(run.end - run.start + 1));
        });
        fits
    }

    /// The first row in `from..to` whose masks say it can take `quantity` (without an orphan,
    /// when `clean`).
    fn first_row(&self, from: usize, to: usize, quantity: u32, clean: bool) -> Option<usize> {
        if quantity > MASKED_QUANTITIES {
            return (from..to).next();
        }
        self.first_under(1, 0, self.leaves, from, to, quantity, clean)
    }

    #[allow(clippy::too_many_arguments)]
    fn first_under(
        &self,
        node: usize,
        node_from: usize,
        node_to: usize,
        from: usize,
        to: usize,
        quantity: u32,
        clean: bool,
    ) -> Option<usize> {
        if node_to <= from || node_from >= to || !self.tree[node].has(quantity, clean) {
            return None;
        }
        if node_to - node_from == 1 {
            return Some(node_from);
        }
        let middle = (node_from + node_to) / 2;
        self.first_under(2 * node, node_from, middle, from, to, quantity, clean)
            .or_else(|| self.first_under(2 * node + 1, middle, node_to, from, to, quantity, clean))
    }

    /// The contract's best block of `quantity` seats, in section `section` (an index into the
    /// layout's sections) or anywhere, never on a seat of `avoid` (the buyer's cooldown seats,
    /// in any order); `None` when no block of adjacent available seats exists there.
    pub fn choose(
        &self,
        layout: &Layout,
        quantity: u32,
        section: Option<u32>,
        avoid: &[SeatNo],
    ) -> Option<Block> {
        debug_assert!(self.is_settled(), "settle the marked seats before choosing");
        if quantity == 0 {
            return None;
        }
        let (from, to) = match section {
            Some(section) => {
                let rows = &layout.sections().get(section as usize)?.rows;
                (rows.start as usize, rows.end as usize)
            }
            None => (0, self.rows.len()),
        };
        for clean in [true, false] {
            let mut next = from;
            while let Some(row) = self.first_row(next, to, quantity, clean) {
                if let Some(block) = self.best_in_row(row, quantity, clean, avoid) {
                    return Some(block);
                }
                next = row + 1;
            }
        }
        None
    }

    /// The row's best block (nearest its middle, then the lower seat), among blocks that leave
    /// no orphan when `clean`, and among all otherwise. Runs are read from the row's middle
    /// outwards, and each side stops at the first run that cannot beat the best found: on a
    /// fragmented row that is a handful of runs, not all of them.
    fn best_in_row(
        &self,
        row: usize,
        quantity: u32,
        clean: bool,
        avoid: &[SeatNo],
    ) -> Option<Block> {
        let r = self.rows[row];
        let words = &self.bits[r.words()];
        let length = r.seats;
        let avoided: Vec<u32> = avoid
            .iter()
            .filter(|s| (r.first_seat..r.first_seat + length).contains(&s.0))
            .map(|s| s.0 - r.first_seat + 1)
            .collect();
        let mut best = BestInRow {
            // |2·(block middle) − 2·(row middle)| = |2a − target| for the block at place `a`.
            target: i64::from(length) + 2 - i64::from(quantity),
            quantity,
            clean,
            avoided,
            best: None,
        };
        // Places from 0 here; `Run` and blocks count from 1.
        let pivot = (length - 1) / 2;
        let (mut right_from, mut left_before) = (pivot, pivot);
        if next_bit(words, pivot, length, true) == Some(pivot) {
            let start = prev_bit(words, pivot, false).map_or(0, |p| p + 1);
            let end = next_bit(words, pivot, length, false).unwrap_or(length);
            best.consider_run(Run {
                start: start + 1,
                end,
            });
            (right_from, left_before) = (end, start);
        }
        let (mut right_done, mut left_done) = (false, false);
        while !(right_done && left_done) {
            if !right_done {
                match next_bit(words, right_from, length, true) {
                    None => right_done = true,
                    Some(start) => {
                        // No block here or further right starts before `start + 1`.
                        let bound = 2 * i64::from(start + 1) - best.target;
                        if best.beaten_by_bound(bound, false) {
                            right_done = true;
                        } else {
                            let end = next_bit(words, start, length, false).unwrap_or(length);
                            best.consider_run(Run {
                                start: start + 1,
                                end,
                            });
                            right_from = end;
                        }
                    }
                }
            }
            if !left_done {
                match prev_bit(words, left_before, true) {
                    None => left_done = true,
                    Some(last) => {
                        // No block here or further left ends after `last + 1`.
                        let highest_start = i64::from(last) + 2 - i64::from(quantity);
                        let bound = best.target - 2 * highest_start;
                        if best.beaten_by_bound(bound, true) {
                            left_done = true;
                        } else {
                            let start = prev_bit(words, last, false).map_or(0, |p| p + 1);
                            best.consider_run(Run {
                                start: start + 1,
                                end: last + 1,
                            });
                            left_before = start;
                        }
                    }
                }
            }
        }
        best.best.map(|(_, a, leaves_orphan)| Block {
            first: SeatNo(r.first_seat + a - 1),
            quantity,
            leaves_orphan,
        })
    }
}

/// The best block of one row found so far, and what decides it.
struct BestInRow {
    target: i64,
    quantity: u32,
    clean: bool,
    /// The buyer's cooldown seats in this row, by place (from 1).
    avoided: Vec<u32>,
    /// (score, place, leaves an orphan)
    best: Option<(i64, u32, bool)>,
}

impl BestInRow {
    /// Whether no block with a score of at least `bound` can beat the best: on the left side a
    /// tie still wins (it is the lower seat), on the right it loses.
    fn beaten_by_bound(&self, bound: i64, left: bool) -> bool {
        match self.best {
            None => false,
            Some((score, _, _)) if left => bound > score,
            Some((score, _, _)) => bound >= score,
        }
    }

    fn consider(&mut self, run: Run, a: u32) {
        let b = a + self.quantity - 1;
        let leaves_orphan = a - run.start == 1 || run.end - b == 1;
        if self.clean && leaves_orphan {
            return;
        }
        if self.avoided.iter().any(|p| (a..=b).contains(p)) {
            return;
        }
        let score = (2 * i64::from(a) - self.target).abs();
        if self.best.is_none_or(|(s, at, _)| (score, a) < (s, at)) {
            self.best = Some((score, a, leaves_orphan));
        }
    }

    fn consider_run(&mut self, run: Run) {
        if run.end + 1 < run.start + self.quantity {
            return;
        }
        let (lowest, highest) = (run.start, run.end + 1 - self.quantity);
        if self
            .avoided
            .iter()
            .any(|p| (run.start..=run.end).contains(p))
        {
            for a in lowest..=highest {
                self.consider(run, a);
            }
            return;
        }
        // The best place is the allowed one nearest the ideal; at most two places of a run
        // leave an orphan, so it is within two of the ideal (clamped into the run).
        let ideal = (self.target.div_euclid(2)).clamp(i64::from(lowest), i64::from(highest)) as u32;
        for a in ideal.saturating_sub(2).max(lowest)..=(ideal + 2).min(highest) {
            self.consider(run, a);
        }
    }
}

/// The last place before `before` (from 0) whose bit is `set`.
fn prev_bit(words: &[u64], before: u32, set: bool) -> Option<u32> {
    let last = before.checked_sub(1)?;
    let mut index = (last / 64) as usize;
    let read = |i: usize| if set { words[i] } else { !words[i] };
    let mut word = read(index) & (u64::MAX >> (63 - last % 64));
    loop {
        if word != 0 {
            return Some(index as u32 * 64 + 63 - word.leading_zeros());
        }
        index = index.checked_sub(1)?;
        word = read(index);
    }
}

#[cfg(test)]
/// The contract's rule, read literally: every block of every row (of the section, if
/// given) of available seats the buyer may take, ordered by whether it leaves an orphan,
/// then the row's place from the stage, then the distance of its middle from the row's
/// middle, then its first seat.
pub(crate) fn reference(
    layout: &Layout,
    available: &[bool],
    quantity: u32,
    section: Option<u32>,
    avoid: &[SeatNo],
) -> Option<Block> {
    let mut best: Option<((bool, usize, i64, u32), Block)> = None;
    for (index, row) in layout.rows().iter().enumerate() {
        if section.is_some_and(|s| row.section != s) || quantity > row.seats {
            continue;
        }
        let n = i64::from(row.seats);
        let free_at = |place: i64| {
            (1..=n).contains(&place)
                && available[(i64::from(row.first_seat.0) + place - 2) as usize]
        };
        for a in 1..=n - i64::from(quantity) + 1 {
            let b = a + i64::from(quantity) - 1;
            let seat = |place: i64| SeatNo((i64::from(row.first_seat.0) + place - 1) as u32);
            if !(a..=b).all(|p| free_at(p) && !avoid.contains(&seat(p))) {
                continue;
            }
            let leaves_orphan =
                (free_at(a - 1) && !free_at(a - 2)) || (free_at(b + 1) && !free_at(b + 2));
            let key = (leaves_orphan, index, (a + b - (n + 1)).abs(), seat(a).0);
            let block = Block {
                first: seat(a),
                quantity,
                leaves_orphan,
            };
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, block));
            }
        }
    }
    best.map(|(_, block)| block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::venue::{RowPlan, SectionPlan};

    fn one_row(seats: u32) -> Layout {
        Layout::plan(vec![SectionPlan {
            name: "S".into(),
            price: 1,
            rows: vec![RowPlan {
                label: "A".into(),
                seats: seats.into(),
            }],
        }])
        .unwrap()
    }

    fn take(free: &mut FreeSeats, block: Block) -> Vec<u32> {
        let seats: Vec<u32> = block.seats().map(|s| s.0).collect();
        for seat in block.seats() {
            free.set(seat, false);
        }
        seats
    }

    #[test]
    fn the_contracts_worked_example_a_row_of_ten_pairs_from_the_middle_out() {
        let layout = one_row(10);
        let mut free = FreeSeats::new(&layout);
        let mut taken = Vec::new();
        for _ in 0..3 {
            let block = free.choose(&layout, 2, None, &[]).unwrap();
            assert!(!block.leaves_orphan);
            taken.push(take(&mut free, block));
        }
        assert_eq!(taken, [vec![5, 6], vec![3, 4], vec![7, 8]]);
    }

    #[test]
    fn a_block_that_leaves_an_orphan_is_taken_only_when_none_other_is_left() {
        let layout = one_row(5);
        let mut free = FreeSeats::new(&layout);
        // 1 2 3 4 5 with 3 taken: pairs 1–2 and 4–5 leave nothing behind.
        free.set(SeatNo(3), false);
        let block = free.choose(&layout, 2, None, &[]).unwrap();
        assert_eq!((block.first, block.leaves_orphan), (SeatNo(1), false));
        // A run of three takes a pair only by leaving one seat alone.
        let layout = one_row(3);
        let free = FreeSeats::new(&layout);
        let block = free.choose(&layout, 2, None, &[]).unwrap();
        assert_eq!((block.first, block.leaves_orphan), (SeatNo(1), true));
    }

    #[test]
    fn a_cooldown_seat_is_never_chosen_but_still_counts_as_available() {
        let layout = one_row(10);
        let free = FreeSeats::new(&layout);
        let block = free.choose(&layout, 2, None, &[SeatNo(5)]).unwrap();
        // 6–7: 5 stays free beside it, and 4 is free too, so nothing is left alone.
        assert_eq!(block.first, SeatNo(6));
        assert!(free.choose(&layout, 10, None, &[SeatNo(10)]).is_none());
    }

    #[test]
    fn no_block_of_adjacent_seats_is_none_and_sections_are_respected() {
        let layout = Layout::plan(vec![
            SectionPlan {
                name: "Front".into(),
                price: 2,
                rows: vec![RowPlan {
                    label: "A".into(),
                    seats: 4,
                }],
            },
            SectionPlan {
                name: "Back".into(),
                price: 1,
                rows: vec![RowPlan {
                    label: "A".into(),
                    seats: 4,
                }],
            },
        ])
        .unwrap();
        let mut free = FreeSeats::new(&layout);
        // In a row of four, 2–3 would leave 1 and 4 alone: 1–2 and 3–4 tie, the lower wins.
        assert_eq!(free.choose(&layout, 2, None, &[]).unwrap().first, SeatNo(1));
        assert_eq!(
            free.choose(&layout, 2, Some(1), &[]).unwrap().first,
            SeatNo(5)
        );
        free.set(SeatNo(2), false);
        free.set(SeatNo(7), false);
        assert!(free.choose(&layout, 3, None, &[]).is_none());
        assert!(free.choose(&layout, 5, None, &[]).is_none());
        assert!(free.choose(&layout, 2, Some(9), &[]).is_none());
        assert_eq!(free.choose(&layout, 2, None, &[]).unwrap().first, SeatNo(3));
    }

    mod against_the_reference {
        use proptest::prelude::*;

        use super::super::reference;
        use super::*;

        fn layout_of(sections: &[Vec<u32>]) -> Layout {
            Layout::plan(
                sections
                    .iter()
                    .enumerate()
                    .map(|(s, rows)| SectionPlan {
                        name: format!("S{s}"),
                        price: s as i128,
                        rows: rows
                            .iter()
                            .enumerate()
                            .map(|(r, seats)| RowPlan {
                                label: format!("R{r}"),
                                seats: (*seats).into(),
                            })
                            .collect(),
                    })
                    .collect(),
            )
            .unwrap()
        }

        /// The most seats `sections()` makes: 3 sections of 4 rows of 200.
        const SEATS_MAX: usize = 2_400;

        fn sections() -> impl Strategy<Value = Vec<Vec<u32>>> {
            prop::collection::vec(
                prop::collection::vec(prop_oneof![4 => 1..=14u32, 1 => 60..=200u32], 1..=4),
                1..=3,
            )
        }

        #[derive(Debug, Clone)]
        enum Step {
            Choose {
                quantity: u32,
                section: Option<u32>,
                avoid: Vec<u32>,
            },
            Release {
                seat: u32,
            },
            Take {
                seat: u32,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (1..=5u32, prop::option::of(0..4u32), prop::collection::vec(1..=SEATS_MAX as u32, 0..3))
                    .prop_map(|(quantity, section, avoid)| Step::Choose { quantity, section, avoid }),
                1 => (1..=SEATS_MAX as u32).prop_map(|seat| Step::Release { seat }),
                1 => (1..=SEATS_MAX as u32).prop_map(|seat| Step::Take { seat }),
            ]
        }

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Any layout, any fill, any cooldown seats: the index chooses what the rule says.
            #[test]
            fn the_choice_is_the_references(
                sections in sections(),
                fill in prop::collection::vec(prop::bool::weighted(0.6), SEATS_MAX),
                quantity in 1..=6u32,
                section in prop::option::of(0..4u32),
                avoid in prop::collection::vec(1..=SEATS_MAX as u32, 0..4),
            ) {
                let layout = layout_of(&sections);
                let total = layout.seat_count() as usize;
                let available = &fill[..total];
                let mut free = FreeSeats::new(&layout);
                for (i, is_free) in available.iter().enumerate() {
                    free.set(SeatNo(i as u32 + 1), *is_free);
                }
                let avoid: Vec<SeatNo> = avoid.into_iter().map(SeatNo).collect();
                let chosen = free.choose(&layout, quantity, section, &avoid);
                prop_assert_eq!(chosen, reference(&layout, available, quantity, section, &avoid));
            }

            /// A sale of best-available holds, releases and named holds: every block is free,
            /// adjacent, in one row of the asked section, clear of the cooldown seats, never
            /// overlapping another, and leaves an orphan only when the reference finds no block
            /// that leaves none.
            #[test]
            fn a_sale_never_overlaps_and_leaves_orphans_only_when_unavoidable(
                sections in sections(),
                steps in prop::collection::vec(step(), 1..60),
            ) {
                let layout = layout_of(&sections);
                let total = layout.seat_count();
                let mut available = vec![true; total as usize];
                let mut free = FreeSeats::new(&layout);
                for step in steps {
                    match step {
                        Step::Choose { quantity, section, avoid } => {
                            let avoid: Vec<SeatNo> = avoid.into_iter().map(SeatNo).collect();
                            let expected = reference(&layout, &available, quantity, section, &avoid);
                            let chosen = free.choose(&layout, quantity, section, &avoid);
                            prop_assert_eq!(chosen, expected);
                            let Some(block) = chosen else { continue };
                            let row = layout.row_of(block.first).unwrap();
                            let last = SeatNo(block.first.0 + quantity - 1);
                            prop_assert_eq!(layout.row_of(last), Some(row));
                            if let Some(section) = section {
                                prop_assert_eq!(layout.rows()[row as usize].section, section);
                            }
                            for seat in block.seats() {
                                prop_assert!(available[seat.0 as usize - 1], "seat {} taken twice", seat.0);
                                prop_assert!(!avoid.contains(&seat));
                                available[seat.0 as usize - 1] = false;
                                free.set(seat, false);
                            }
                        }
                        Step::Release { seat } | Step::Take { seat } if seat > total => {}
                        Step::Release { seat } => {
                            available[seat as usize - 1] = true;
                            free.set(SeatNo(seat), true);
                        }
                        Step::Take { seat } => {
                            available[seat as usize - 1] = false;
                            free.set(SeatNo(seat), false);
                        }
                    }
                    for seat in 1..=total {
                        prop_assert_eq!(free.is_free(SeatNo(seat)), available[seat as usize - 1]);
                    }
                }
            }
        }
    }
}
