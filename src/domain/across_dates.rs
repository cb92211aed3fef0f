//! One user's held seats over every date, for `holds.max_seats_per_user_total`.
//!
//! Each date's seat map decides its own holds and knows nothing of the others, so this is the one
//! figure a hold on one date needs from all of them. It is kept per user beside the seat maps (the
//! actors share one per user, see `actors::hold_tally`), rebuilt at start from the maps' held
//! reservations, and never logged: every entry is a reservation some date holds, so the maps
//! are its durable record. A hold counts until its `expires_at`, then stops counting by time
//! alone, as a hold frees its seats; cancels and payments take it out at once.

use smallvec::SmallVec;

use super::error::DomainError;
use super::events::Event;
use super::seat_map::Reservation;
use super::types::{ReservationId, Timestamp};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldAcrossDates {
    /// At most `max_seats_per_user_total` live holds, plus the expired ones not forgotten yet.
    holds: SmallVec<[Held; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    reservation: ReservationId,
    seats: u32,
    expires_at: Timestamp,
}

impl HeldAcrossDates {
    /// Seats in the user's live holds at `now`, on every date.
    pub fn live_seats(&self, now: Timestamp) -> u32 {
        self.holds
            .iter()
            .filter(|h| h.expires_at > now)
            .map(|h| h.seats)
            .sum()
    }

    /// Refuses a hold of `adding` more seats that would take the user past `max` over all dates.
    pub fn admit(&self, adding: usize, now: Timestamp, max: u32) -> Result<(), DomainError> {
        let adding = u32::try_from(adding).unwrap_or(u32::MAX);
        if self.live_seats(now).saturating_add(adding) > max {
            return Err(DomainError::HoldLimitOverAllDates { max });
        }
        Ok(())
    }

    /// Counts the hold a `HoldPlaced` event places; other events change nothing.
    pub fn record_placed(&mut self, event: &Event) {
        if let Event::HoldPlaced {
            reservation,
            seats,
            expires_at,
            ..
        } = event
        {
            self.record(*reservation, seats.len(), *expires_at);
        }
    }

    /// Counts a reservation a date holds (at start, from the recovered maps).
    pub fn record_held(&mut self, reservation: &Reservation) {
        self.record(
            reservation.id,
            reservation.seats.len(),
            reservation.expires_at,
        );
    }

    fn record(&mut self, reservation: ReservationId, seats: usize, expires_at: Timestamp) {
        if self.holds.iter().any(|h| h.reservation == reservation) {
            return;
        }
        self.holds.push(Held {
            reservation,
            seats: u32::try_from(seats).unwrap_or(u32::MAX),
            expires_at,
        });
    }

    /// The hold ended (cancelled, paid, expired): it counts no more.
    pub fn release(&mut self, reservation: ReservationId) {
        self.holds.retain(|h| h.reservation != reservation);
    }

    /// Lets go of holds past their expiry: they count for nothing already.
    pub fn forget_expired(&mut self, now: Timestamp) {
        self.holds.retain(|h| h.expires_at > now);
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DateId, SeatNo, UserId};

    const MAX: u32 = 8;

    fn placed(date: u32, seq: u32, seats: u32, at: i64, expires_at: i64) -> Event {
        Event::HoldPlaced {
            reservation: ReservationId {
                date: DateId(date),
                seq,
            },
            user: UserId(1),
            seats: (1..=seats).map(SeatNo).collect(),
            price: 0,
            at: Timestamp(at),
            expires_at: Timestamp(expires_at),
            idempotency: None,
            offer: None,
        }
    }

    fn id(date: u32, seq: u32) -> ReservationId {
        ReservationId {
            date: DateId(date),
            seq,
        }
    }

    #[test]
    fn holds_on_different_dates_add_up_to_the_cap_and_no_further() {
        let mut held = HeldAcrossDates::default();
        held.record_placed(&placed(1, 1, 4, 0, 1_000));
        held.record_placed(&placed(2, 1, 3, 0, 1_000));
        let now = Timestamp(10);
        assert_eq!(held.live_seats(now), 7);
        assert_eq!(held.admit(1, now, MAX), Ok(()));
        assert_eq!(
            held.admit(2, now, MAX),
            Err(DomainError::HoldLimitOverAllDates { max: MAX })
        );
    }

    #[test]
    fn a_hold_stops_counting_at_its_expiry_and_when_it_ends() {
        let mut held = HeldAcrossDates::default();
        held.record_placed(&placed(1, 1, 4, 0, 1_000));
        held.record_placed(&placed(2, 1, 4, 500, 1_500));
        assert_eq!(held.live_seats(Timestamp(999)), 8);
        assert_eq!(
            held.live_seats(Timestamp(1_000)),
            4,
            "expired by time alone"
        );
        held.release(id(2, 1));
        assert_eq!(held.live_seats(Timestamp(0)), 4);
        held.forget_expired(Timestamp(1_000));
        assert!(held.is_empty());
    }

    #[test]
    fn a_hold_counted_twice_counts_once() {
        let mut held = HeldAcrossDates::default();
        let event = placed(1, 1, 2, 0, 1_000);
        held.record_placed(&event);
        held.record_held(&Reservation::placed_by(&event).unwrap());
        assert_eq!(held.live_seats(Timestamp(0)), 2);
    }
}
