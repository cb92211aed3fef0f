//! Each user's held seats over every date, shared by every date's actor: the one figure a hold
//! on one date needs from the others (`holds.max_seats_per_user_total`).
//!
//! Dates stay independent owners: no date calls another, and a hold makes no extra mailbox
//! round trip. Instead, the date's actor decides the hold while it holds the user's entry in this
//! sharded map, and counts the hold there before letting go, so two holds of one user on two dates
//! take turns on that entry (for the microseconds a decision takes, never across an `await`) and
//! cannot pass the cap together. A refused hold counts nothing. Ends are taken out as the owning
//! date applies them; expiry needs no one, as an entry stops counting at its `expires_at`.
//! The rule itself is the domain's (`HeldAcrossDates`); this is only where it is kept.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::domain::across_dates::HeldAcrossDates;
use crate::domain::seat_map::Reservation;
use crate::domain::{DomainError, Event, ReservationId, Timestamp, UserId};

#[derive(Default)]
pub struct HoldTally {
    /// Only users with a hold not yet released or forgotten have an entry.
    users: DashMap<UserId, HeldAcrossDates>,
}

impl HoldTally {
    /// Runs `decide` with what `user` holds over every date and counts the hold it places, as
    /// one step for that user. `decide` must not touch this tally.
    pub fn place(
        &self,
        user: UserId,
        now: Timestamp,
        decide: impl FnOnce(&HeldAcrossDates) -> Result<Event, DomainError>,
    ) -> Result<Event, DomainError> {
        // Either arm holds the entry's shard locked until it returns.
        match self.users.entry(user) {
            Entry::Occupied(mut entry) => {
                let held = entry.get_mut();
                held.forget_expired(now);
                let decided = decide(held);
                if let Ok(event) = &decided {
                    held.record_placed(event);
                } else if held.is_empty() {
                    entry.remove();
                }
                decided
            }
            // Most holds come from users who hold nothing yet; a refused one then costs no
            // insertion.
            Entry::Vacant(entry) => {
                let decided = decide(&HeldAcrossDates::default());
                if let Ok(event) = &decided {
                    entry
                        .insert(HeldAcrossDates::default())
                        .record_placed(event);
                }
                decided
            }
        }
    }

    /// A hold ended (cancelled, paid, expired, or overtaken past its expiry).
    pub fn release(&self, user: UserId, reservation: ReservationId, now: Timestamp) {
        let empty = match self.users.get_mut(&user) {
            Some(mut held) => {
                held.release(reservation);
                held.forget_expired(now);
                held.is_empty()
            }
            None => false,
        };
        if empty {
            self.forget_if_empty(user);
        }
    }

    /// Counts the holds a date starts with (recovered from disk).
    pub fn adopt<'a>(&self, holds: impl IntoIterator<Item = &'a Reservation>) {
        for reservation in holds {
            self.users
                .entry(reservation.user)
                .or_default()
                .record_held(reservation);
        }
    }

    /// Seats `user` holds over every date at `now`.
    pub fn held_seats(&self, user: UserId, now: Timestamp) -> u32 {
        self.users.get(&user).map_or(0, |held| held.live_seats(now))
    }

    /// Users with an entry: each holds, or held until lately, at least one seat.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    fn forget_if_empty(&self, user: UserId) {
        self.users.remove_if(&user, |_, held| held.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::domain::seat_map::{DatePolicy, SeatMap};
    use crate::domain::{DateId, SeatNo};

    const TOTAL: u32 = 8;

    fn map(date: u32) -> SeatMap {
        SeatMap::new(
            DateId(date),
            crate::domain::Timestamp(i64::MAX),
            crate::domain::venue::Layout::general(100, 10),
            DatePolicy {
                ttl_ms: 1_000,
                max_seats_per_user: 4,
                max_seats_per_user_total: TOTAL,
                rehold_cooldown_ms: 0,
                refunds: Default::default(),
                offer_ttl_ms: 600_000,
            },
        )
    }

    #[test]
    fn holds_racing_on_many_dates_from_many_threads_never_pass_the_total() {
        let tally = Arc::new(HoldTally::default());
        let user = UserId(7);
        let threads = 6;
        let start = Arc::new(Barrier::new(threads));
        let placed: u32 = (0..threads as u32)
            .map(|date| {
                let (tally, start) = (tally.clone(), start.clone());
                std::thread::spawn(move || {
                    // One thread per date, as one actor per date.
                    let mut map = map(date + 1);
                    start.wait();
                    let mut placed = 0;
                    for seat in 1..=4 {
                        let decided = tally.place(user, Timestamp(0), |across| {
                            map.place_hold_among(user, &[SeatNo(seat)], Timestamp(0), None, across)
                        });
                        if let Ok(event) = decided {
                            map.apply(&event);
                            placed += 1;
                        }
                    }
                    placed
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum();
        assert_eq!(placed, TOTAL);
        assert_eq!(tally.held_seats(user, Timestamp(0)), TOTAL);
    }

    #[test]
    fn a_refused_hold_leaves_no_entry_and_a_released_one_is_forgotten() {
        let tally = HoldTally::default();
        let mut map = map(1);
        let user = UserId(1);
        let refused = tally.place(user, Timestamp(0), |across| {
            map.place_hold_among(user, &[SeatNo(101)], Timestamp(0), None, across)
        });
        assert!(refused.is_err());
        assert_eq!(tally.users(), 0);
        let event = tally
            .place(user, Timestamp(0), |across| {
                map.place_hold_among(user, &[SeatNo(1)], Timestamp(0), None, across)
            })
            .unwrap();
        map.apply(&event);
        assert_eq!(tally.held_seats(user, Timestamp(0)), 1);
        assert_eq!(
            tally.held_seats(user, Timestamp(1_000)),
            0,
            "expired by time"
        );
        let held: Vec<_> = map.held_reservations().cloned().collect();
        tally.release(user, held[0].id, Timestamp(0));
        assert_eq!(tally.users(), 0);
        tally.adopt(&held);
        assert_eq!(
            tally.held_seats(user, Timestamp(0)),
            1,
            "rebuilt from the map"
        );
    }
}
