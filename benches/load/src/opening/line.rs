//! What the buyers saw of the line, and what it proves: each buyer's admission instant, its
//! drawn place, and the order check.
//!
//! Times are milliseconds since the sale opening (`sale_opens_at`). The client's are its own
//! clock mapped onto the wall clock; the server's come from its answers. Client and server
//! run on one machine and read the same wall clock.
//!
//! **The admission instant.** An active token's `expires_at` is the instant of its admission
//! plus the active TTL, the same for every token of the room; the run reads the TTL off the
//! answers (`active_ttl_ms`), so it knows every admission to the millisecond the server
//! stamped it with, not only to the poll that saw it.
//!
//! **The order check.** A waiting answer at position p says that when the server read the
//! token, p − 1 tokens were ahead of it. In line order only those get in before it, and the
//! run's tokens leave the line only by being admitted. So between two things a buyer saw — a
//! waiting answer at p, then a later one at p′, or then its own admission — the admissions
//! the run saw must number at most p − p′ (p − 1 up to its own admission). Counted are only
//! the admissions surely in between: stamped more than `slack_ms` after the first answer
//! arrived, and more than `slack_ms` before the later answer was sent, or in an earlier
//! millisecond than the buyer's own admission (admissions of one tick share their stamp, and
//! their order within it is not visible). Admissions the run did not see (a buyer that stopped
//! polling) only lower the counts. An excess means that at least that many admissions passed
//! the buyer while it waited ahead of them; the count reported is the largest excess over every
//! buyer's pairs (its first and last waiting answers, and its admission when it saw one), a lower
//! bound on what the server's `order_violations` counts, which must be 0.
//!
//! **The drawn place.** The first waiting answer after the opening gives the token's position
//! then; the admissions already made had come off the head of the line, so the place drawn at
//! the opening is that position plus the admissions stamped before the middle of the poll (its
//! send and its answer; off by the few admissions of that interval at most). A buyer whose first
//! answer already said active takes its rank among the admissions (tokens of one tick share
//! their mean rank).

use serde::Serialize;

/// A waiting answer: the token's position at some instant between `sent_ms` and `answered_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    pub sent_ms: f64,
    pub answered_ms: f64,
    pub position: u64,
}

/// One buyer's view of the line.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// When its pre-queue token was issued, from 1: the pre-queue's size in the issuing answer.
    pub arrival: u64,
    /// The first waiting answer after the opening, if the first answer said waiting.
    pub first: Option<Sighting>,
    /// The last waiting answer.
    pub last: Option<Sighting>,
    /// The `expires_at` of the first answer that said active, in ms since the opening.
    pub expires_ms: Option<i64>,
    /// When that answer arrived.
    pub seen_active_ms: Option<f64>,
    /// The token was dropped and a fresh one issued at the back: its place was lost, so the
    /// buyer counts in neither check.
    pub reissued: bool,
}

impl Seen {
    fn checked(&self) -> bool {
        !self.reissued
    }
}

/// The room's active TTL in ms, read off the answers that said active: no answer can come
/// before the admission it reports, so the TTL (`expires_at` − admission) is at least
/// `expires_at` − the answer's arrival for every buyer; the largest of those, from the buyer
/// that saw its admission soonest, is off by that buyer's delay only, and the server's TTL is
/// whole seconds (`queue.active_ttl_seconds`), so it is rounded up to one. `None` when no
/// buyer was seen admitted.
pub fn active_ttl_ms(seen: &[Seen]) -> Option<i64> {
    let lower = seen
        .iter()
        .filter_map(|s| Some(s.expires_ms? as f64 - s.seen_active_ms?))
        .fold(None, |most: Option<f64>, gap| {
            Some(most.map_or(gap, |m| m.max(gap)))
        })?;
    Some(((lower / 1000.0).ceil() as i64).max(1) * 1000)
}

/// Each buyer's admission instant (ms since the opening), given the active TTL.
pub fn admissions(seen: &[Seen], ttl_ms: i64) -> Vec<Option<i64>> {
    seen.iter()
        .map(|s| s.expires_ms.map(|e| e - ttl_ms))
        .collect()
}

/// The order check over every buyer's first and last waiting answers and its admission.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderCheck {
    /// Buyers with at least one pair to check.
    pub buyers_checked: u64,
    /// Pairs (an answer, then a later answer or the admission) checked.
    pub pairs_checked: u64,
    /// Pairs with more admissions in between than tokens that were ahead.
    pub pairs_passed: u64,
    /// At least this many admissions passed a token still waiting ahead of them (0 in line
    /// order): the largest excess over the pairs checked.
    pub violations_at_least: u64,
    /// An admission counts as between two things only when stamped this far inside them.
    pub slack_ms: f64,
    #[serde(skip)]
    pub examples: Vec<String>,
}

/// Examples kept for the report.
const EXAMPLES_MAX: usize = 10;

pub fn order_check(seen: &[Seen], admitted: &[Option<i64>], slack_ms: f64) -> OrderCheck {
    let mut stamps: Vec<i64> = seen
        .iter()
        .zip(admitted)
        .filter(|(s, _)| s.checked())
        .filter_map(|(_, a)| *a)
        .collect();
    stamps.sort_unstable();
    // Admissions stamped after `from_ms` and before `to`.
    let between = |from_ms: f64, to: Until| {
        let from = stamps.partition_point(|&t| t as f64 <= from_ms);
        let to = match to {
            Until::Stamp(own) => stamps.partition_point(|&t| t < own),
            Until::Ms(ms) => stamps.partition_point(|&t| (t as f64) < ms),
        };
        to.saturating_sub(from) as u64
    };
    let mut check = OrderCheck {
        slack_ms,
        ..OrderCheck::default()
    };
    for (buyer, (s, own)) in seen.iter().zip(admitted).enumerate() {
        if !s.checked() {
            continue;
        }
        let answers: Vec<Sighting> = match (s.first, s.last) {
            (Some(first), Some(last)) if first == last => vec![first],
            (first, last) => first.into_iter().chain(last).collect(),
        };
        let mut pairs: Vec<(Sighting, Until, u64, String)> = Vec::new();
        if let [first, last] = answers[..] {
            pairs.push((
                first,
                Until::Ms(last.sent_ms - slack_ms),
                first.position.saturating_sub(last.position),
                format!(
                    "its answer at {} ({:.0} ms)",
                    last.position, last.answered_ms
                ),
            ));
        }
        if let Some(own) = *own {
            for &answer in &answers {
                pairs.push((
                    answer,
                    Until::Stamp(own),
                    answer.position.saturating_sub(1),
                    format!("its own admission ({own} ms)"),
                ));
            }
        }
        if !pairs.is_empty() {
            check.buyers_checked += 1;
        }
        for (answer, until, ahead, later) in pairs {
            check.pairs_checked += 1;
            let seen_between = between(answer.answered_ms + slack_ms, until);
            if seen_between > ahead {
                let excess = seen_between - ahead;
                check.pairs_passed += 1;
                check.violations_at_least = check.violations_at_least.max(excess);
                if check.examples.len() < EXAMPLES_MAX {
                    check.examples.push(format!(
                        "buyer {buyer}: waiting at {} ({:.0} ms after the opening), then \
                         {seen_between} admissions before {later}, {excess} more than were ahead",
                        answer.position, answer.answered_ms,
                    ));
                }
            }
        }
    }
    check
}

/// Where a pair of the order check ends.
#[derive(Clone, Copy)]
enum Until {
    /// The buyer's own admission: admissions stamped in an earlier millisecond are before it.
    Stamp(i64),
    /// A later answer: admissions stamped before this are before it.
    Ms(f64),
}

/// Each buyer's drawn place (see the module's doc), `None` for a buyer seen neither waiting nor
/// admitted after the opening, or reissued.
pub fn drawn_places(seen: &[Seen], admitted: &[Option<i64>]) -> Vec<Option<f64>> {
    let mut stamps: Vec<i64> = admitted.iter().filter_map(|a| *a).collect();
    stamps.sort_unstable();
    seen.iter()
        .zip(admitted)
        .map(|(s, own)| {
            if !s.checked() {
                return None;
            }
            if let Some(first) = s.first {
                let middle = (first.sent_ms + first.answered_ms) / 2.0;
                let before = stamps.partition_point(|&t| (t as f64) < middle);
                return Some(first.position as f64 + before as f64);
            }
            let own = (*own)?;
            let before = stamps.partition_point(|&t| t < own);
            let with = stamps.partition_point(|&t| t <= own);
            // Ranks before + 1 ..= with share their mean.
            Some((before + 1 + with) as f64 / 2.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(answered_ms: f64, position: u64) -> Sighting {
        Sighting {
            sent_ms: answered_ms - 2.0,
            answered_ms,
            position,
        }
    }

    /// Six buyers in drawn places 1..=6 (buyer i has place i + 1), admitted two a tick at 100,
    /// 200 and 300 ms; `admitted` overrides the stamps. Buyer 4 (place 5) was seen waiting at
    /// 150 ms, buyer 3 (place 4) at 150 ms.
    fn line(admitted: [i64; 6]) -> (Vec<Seen>, Vec<Option<i64>>) {
        let mut seen: Vec<Seen> = (0..6)
            .map(|i| Seen {
                arrival: 6 - i as u64,
                ..Seen::default()
            })
            .collect();
        // After the first tick two were gone: place 5 is third, place 4 second.
        seen[4].first = Some(sighting(150.0, 3));
        seen[4].last = seen[4].first;
        seen[3].first = Some(sighting(150.0, 2));
        seen[3].last = seen[3].first;
        (seen, admitted.iter().map(|&t| Some(t)).collect())
    }

    #[test]
    fn admissions_in_line_order_pass_the_order_check() {
        let (seen, admitted) = line([100, 100, 200, 200, 300, 300]);
        let check = order_check(&seen, &admitted, 10.0);
        // Buyers 3 and 4: one answer each, then their admission.
        assert_eq!((check.buyers_checked, check.pairs_checked), (2, 2));
        assert_eq!((check.pairs_passed, check.violations_at_least), (0, 0));
    }

    #[test]
    fn an_admission_that_passes_a_waiting_token_is_counted() {
        // Place 6 got in at 200, with place 3, while places 4 and 5 waited until 300.
        let (seen, admitted) = line([100, 100, 200, 300, 300, 200]);
        let check = order_check(&seen, &admitted, 10.0);
        // Buyer 3 (place 4) saw 1 ahead and then 2 admissions (places 3 and 6) before its own.
        assert_eq!((check.pairs_passed, check.violations_at_least), (1, 1));
        assert_eq!(check.examples.len(), 1);
        assert!(check.examples[0].starts_with("buyer 3:"), "{check:?}");
    }

    #[test]
    fn admissions_of_one_tick_are_not_ordered_against_each_other() {
        // Places 4, 5 and 6 all in the tick of 200: the order within it is not visible.
        let (seen, admitted) = line([100, 100, 200, 200, 200, 200]);
        assert_eq!(order_check(&seen, &admitted, 10.0).violations_at_least, 0);
    }

    #[test]
    fn an_admission_too_close_to_an_answer_is_not_counted_as_after_it() {
        // Place 6 stamped at 155 ms, 5 ms after buyer 3's answer: within the slack, so it may
        // have been in before the read.
        let (seen, admitted) = line([100, 100, 155, 300, 300, 155]);
        let check = order_check(&seen, &admitted, 10.0);
        assert_eq!(check.violations_at_least, 0);
        // With no slack the same stamps are a violation.
        assert_eq!(order_check(&seen, &admitted, 0.0).violations_at_least, 1);
    }

    #[test]
    fn between_two_answers_only_the_tokens_ahead_may_get_in() {
        let (mut seen, mut admitted) = line([100, 100, 200, 200, 300, 300]);
        // Place 5 seen at 3, then at 250 ms at 1 (places 3 and 4 got in at 200), and then it
        // stopped polling: its admission was never seen.
        seen[4].last = Some(sighting(250.0, 1));
        admitted[4] = None;
        let check = order_check(&seen, &admitted, 10.0);
        assert_eq!(check.violations_at_least, 0, "{check:?}");
        // Had place 6 got in at 200 as well, that is one more than the two ahead.
        admitted[5] = Some(200);
        let check = order_check(&seen, &admitted, 10.0);
        assert_eq!((check.pairs_passed, check.violations_at_least), (1, 1));
        // A reissued token lost its place: it is not checked.
        seen[4].reissued = true;
        assert_eq!(order_check(&seen, &admitted, 10.0).violations_at_least, 0);
    }

    #[test]
    fn a_token_never_seen_admitted_after_its_last_answer_proves_nothing_more() {
        // Place 5 seen once, at 150 ms, then never again: places 3, 4 and 6 getting in after
        // it is no evidence, since it may have got in unseen before place 6.
        let (seen, mut admitted) = line([100, 100, 200, 200, 300, 300]);
        admitted[4] = None;
        assert_eq!(order_check(&seen, &admitted, 10.0).violations_at_least, 0);
    }

    #[test]
    fn drawn_places_add_the_admissions_made_before_the_first_answer() {
        let (seen, admitted) = line([100, 100, 200, 200, 300, 300]);
        let places = drawn_places(&seen, &admitted);
        // Seen waiting: position + the two admitted at 100.
        assert_eq!(places[4], Some(5.0));
        assert_eq!(places[3], Some(4.0));
        // Seen active at once: the mean rank of its tick.
        assert_eq!(places[0], Some(1.5));
        assert_eq!(places[5], Some(5.5));
    }

    #[test]
    fn the_active_ttl_is_the_largest_gap_rounded_up_to_whole_seconds() {
        let seen = [(600_100, 150.0), (600_200, 900.0), (600_300, 320.0)].map(|(e, s)| Seen {
            expires_ms: Some(e),
            seen_active_ms: Some(s),
            ..Seen::default()
        });
        // Gaps 599 950, 599 300, 599 980: the TTL is 600 s.
        assert_eq!(active_ttl_ms(&seen), Some(600_000));
        assert_eq!(active_ttl_ms(&[Seen::default()]), None);
        assert_eq!(
            admissions(&seen, 600_000),
            vec![Some(100), Some(200), Some(300)]
        );
    }
}
