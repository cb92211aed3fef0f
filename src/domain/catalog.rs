//! Concerts and their dates. A date's layout (its sections, rows and prices) is fixed when it is
//! created.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::admission::{OpeningSeed, RoomId};
use super::error::DomainError;
use super::events::Event;
use super::rooms::{RoomLimits, RoomSpec};
use super::types::*;
use super::venue::{Layout, SectionPlan};

/// `max_tickets_per_user`: 1 to this.
pub const TICKETS_PER_USER_MAX: i128 = 100;

pub const SEATS_PER_DATE_MAX: i128 = 100_000;
/// A concert's `title` and `venue`: 1 to this many characters, not all of them blank.
pub const TEXT_CHARS_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
    pub dates: Vec<DateId>,
    /// Its own waiting room; `None`: the general room.
    pub room: Option<RoomSpec>,
    /// Seats a user may hold plus own on each of its dates.
    pub max_tickets_per_user: Option<u32>,
}

impl Concert {
    pub fn room_id(&self) -> RoomId {
        match self.room {
            Some(_) => RoomId::Concert(self.id),
            None => RoomId::General,
        }
    }
}

/// How a concert's sale runs, as the administrator asked (unchecked numbers, as sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleTerms {
    pub sale_opens_at: Option<Timestamp>,
    /// `(max_active, admit_per_second)` of its own room.
    pub waiting_room: Option<(i128, i128)>,
    pub max_tickets_per_user: Option<i128>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateInfo {
    pub id: DateId,
    pub concert: ConcertId,
    pub starts_at: Timestamp,
    /// Shared, so reading a date (every catalogue request) copies a pointer, not its rows.
    pub layout: Arc<Layout>,
    /// The waiting room whose tokens its seats, holds and payments accept.
    pub room: RoomId,
}

impl DateInfo {
    pub fn seat_count(&self) -> u32 {
        self.layout.seat_count()
    }

    /// The lowest price of a seat: the only one when the date has one section.
    pub fn price_from(&self) -> u64 {
        self.layout.lowest_price()
    }
}

/// How an administrator describes a date's seats: a count at one price, or sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatPlan {
    /// Unchecked numbers, as the client sent them.
    Uniform {
        seat_count: i128,
        price: i128,
    },
    Sections(Vec<SectionPlan>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Index `id - 1`.
    concerts: Vec<Concert>,
    /// Index `id - 1`.
    dates: Vec<DateInfo>,
}

fn text(field: &str, raw: &str) -> Result<String, DomainError> {
    let chars = raw.chars().count();
    if chars == 0 || chars > TEXT_CHARS_MAX || raw.trim().is_empty() {
        return Err(DomainError::InvalidInput(format!(
            "{field} must be 1 to {TEXT_CHARS_MAX} characters"
        )));
    }
    Ok(raw.to_owned())
}

impl Catalog {
    pub fn concerts(&self) -> &[Concert] {
        &self.concerts
    }

    pub fn concert(&self, id: ConcertId) -> Option<&Concert> {
        self.concerts.get((id.0 as usize).checked_sub(1)?)
    }

    pub fn date(&self, id: DateId) -> Option<&DateInfo> {
        self.dates.get((id.0 as usize).checked_sub(1)?)
    }

    pub fn dates(&self) -> &[DateInfo] {
        &self.dates
    }

    /// Concerts sold as before: the general room, no ticket limit.
    pub fn create_concert(&self, title: &str, venue: &str) -> Result<Event, DomainError> {
        self.create_concert_with(title, venue, SaleTerms::default(), OpeningSeed([0; 32]))
    }

    /// A concert with the sale terms asked for. One with a waiting room or an opening gets a
    /// room of its own, whose pre-queue `seed` orders (the caller draws it from the OS).
    pub fn create_concert_with(
        &self,
        title: &str,
        venue: &str,
        terms: SaleTerms,
        seed: OpeningSeed,
    ) -> Result<Event, DomainError> {
        let title = text("title", title)?;
        let venue = text("venue", venue)?;
        let limits = terms
            .waiting_room
            .map(|(max_active, rate)| RoomLimits::checked(max_active, rate))
            .transpose()?;
        let max_tickets_per_user = terms
            .max_tickets_per_user
            .map(|max| {
                if (1..=TICKETS_PER_USER_MAX).contains(&max) {
                    Ok(max as u32)
                } else {
                    Err(DomainError::InvalidInput(format!(
                        "max_tickets_per_user must be 1 to {TICKETS_PER_USER_MAX}"
                    )))
                }
            })
            .transpose()?;
        let own_room = limits.is_some() || terms.sale_opens_at.is_some();
        Ok(Event::ConcertCreated {
            concert: ConcertId(self.concerts.len() as u32 + 1),
            title,
            venue,
            room: own_room.then_some(RoomSpec {
                limits,
                sale_opens_at: terms.sale_opens_at,
                seed,
            }),
            max_tickets_per_user,
        })
    }

    /// The room a token asked for with `concert` belongs to: only a concert with a room of its
    /// own gives tokens (the others' buyers use the general room).
    pub fn room_for_tokens(&self, concert: ConcertId) -> Result<RoomId, DomainError> {
        let concert = self.concert(concert).ok_or(DomainError::NotFound)?;
        match concert.room_id() {
            RoomId::General => Err(DomainError::InvalidInput(
                "this concert uses the general waiting room: take a token without a body".into(),
            )),
            own => Ok(own),
        }
    }

    /// Every concert's own room.
    pub fn rooms(&self) -> impl Iterator<Item = (ConcertId, RoomSpec)> + '_ {
        self.concerts
            .iter()
            .filter_map(|c| c.room.map(|spec| (c.id, spec)))
    }

    pub fn create_date(
        &self,
        concert: ConcertId,
        starts_at: Timestamp,
        seats: SeatPlan,
    ) -> Result<Event, DomainError> {
        self.concert(concert).ok_or(DomainError::NotFound)?;
        let layout = match seats {
            SeatPlan::Uniform { seat_count, price } => {
                if !(1..=SEATS_PER_DATE_MAX).contains(&seat_count) {
                    return Err(DomainError::InvalidInput(format!(
                        "seat_count must be 1 to {SEATS_PER_DATE_MAX}"
                    )));
                }
                if !(0..=MAX_MONEY as i128).contains(&price) {
                    return Err(DomainError::InvalidInput(
                        "price must be 0 to 2^53-1 won".into(),
                    ));
                }
                Layout::general(seat_count as u32, price as u64)
            }
            SeatPlan::Sections(sections) => Layout::plan(sections)?,
        };
        Ok(Event::DateCreated {
            date: DateId(self.dates.len() as u32 + 1),
            concert,
            starts_at,
            layout,
            max_tickets_per_user: self.concert(concert).and_then(|c| c.max_tickets_per_user),
        })
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ConcertCreated {
                concert,
                title,
                venue,
                room,
                max_tickets_per_user,
            } => {
                assert_eq!(concert.0 as usize, self.concerts.len() + 1);
                self.concerts.push(Concert {
                    id: *concert,
                    title: title.clone(),
                    venue: venue.clone(),
                    dates: Vec::new(),
                    room: *room,
                    max_tickets_per_user: *max_tickets_per_user,
                });
            }
            Event::DateCreated {
                date,
                concert,
                starts_at,
                layout,
                ..
            } => {
                assert_eq!(date.0 as usize, self.dates.len() + 1);
                let room = self.concerts[concert.0 as usize - 1].room_id();
                self.dates.push(DateInfo {
                    id: *date,
                    concert: *concert,
                    starts_at: *starts_at,
                    layout: Arc::new(layout.clone()),
                    room,
                });
                self.concerts[concert.0 as usize - 1].dates.push(*date);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_needs_an_existing_concert_and_sane_numbers() {
        let mut catalog = Catalog::default();
        let uniform = |seat_count, price| SeatPlan::Uniform { seat_count, price };
        assert_eq!(
            catalog.create_date(ConcertId(1), Timestamp(0), uniform(10, 10)),
            Err(DomainError::NotFound)
        );
        let e = catalog.create_concert("Night", "Hall").unwrap();
        catalog.apply(&e);
        for (seats, price) in [(0, 1), (100_001, 1), (10, -1), (10, 1 << 53), (-5, 0)] {
            assert!(matches!(
                catalog.create_date(ConcertId(1), Timestamp(0), uniform(seats, price)),
                Err(DomainError::InvalidInput(_))
            ));
        }
        let e = catalog
            .create_date(ConcertId(1), Timestamp(0), uniform(50, 0))
            .unwrap();
        catalog.apply(&e);
        assert_eq!(
            catalog.concert(ConcertId(1)).unwrap().dates,
            vec![DateId(1)]
        );
        assert_eq!(catalog.date(DateId(1)).unwrap().seat_count(), 50);
        assert_eq!(
            *catalog.date(DateId(1)).unwrap().layout,
            Layout::general(50, 0)
        );
        assert!(catalog.date(DateId(0)).is_none());
    }

    #[test]
    fn sale_terms_give_a_room_of_its_own_only_with_an_opening_or_limits() {
        let mut catalog = Catalog::default();
        let seed = OpeningSeed([7; 32]);
        let terms = [
            SaleTerms::default(),
            SaleTerms {
                sale_opens_at: Some(Timestamp(5_000)),
                ..SaleTerms::default()
            },
            SaleTerms {
                waiting_room: Some((10, 20)),
                max_tickets_per_user: Some(100),
                ..SaleTerms::default()
            },
            SaleTerms {
                max_tickets_per_user: Some(1),
                ..SaleTerms::default()
            },
        ];
        for terms in terms {
            let event = catalog.create_concert_with("t", "v", terms, seed).unwrap();
            catalog.apply(&event);
        }
        let rooms: Vec<(ConcertId, RoomSpec)> = catalog.rooms().collect();
        assert_eq!(
            rooms,
            vec![
                (
                    ConcertId(2),
                    RoomSpec {
                        limits: None,
                        sale_opens_at: Some(Timestamp(5_000)),
                        seed
                    }
                ),
                (
                    ConcertId(3),
                    RoomSpec {
                        limits: Some(RoomLimits {
                            max_active: 10,
                            admit_per_second: 20
                        }),
                        sale_opens_at: None,
                        seed
                    }
                ),
            ]
        );
        assert!(matches!(
            catalog.room_for_tokens(ConcertId(1)),
            Err(DomainError::InvalidInput(_))
        ));
        assert_eq!(
            catalog.room_for_tokens(ConcertId(2)),
            Ok(RoomId::Concert(ConcertId(2)))
        );
        assert_eq!(
            catalog.room_for_tokens(ConcertId(9)),
            Err(DomainError::NotFound)
        );
        // A date carries its concert's room and ticket limit.
        for concert in [3, 4] {
            let event = catalog
                .create_date(
                    ConcertId(concert),
                    Timestamp(0),
                    SeatPlan::Uniform {
                        seat_count: 5,
                        price: 1,
                    },
                )
                .unwrap();
            catalog.apply(&event);
            let Event::DateCreated {
                max_tickets_per_user,
                ..
            } = event
            else {
                unreachable!()
            };
            assert_eq!(
                max_tickets_per_user,
                Some(if concert == 3 { 100 } else { 1 })
            );
        }
        assert_eq!(
            catalog.date(DateId(1)).unwrap().room,
            RoomId::Concert(ConcertId(3))
        );
        assert_eq!(catalog.date(DateId(2)).unwrap().room, RoomId::General);

        for bad in [
            SaleTerms {
                waiting_room: Some((0, 1)),
                ..SaleTerms::default()
            },
            SaleTerms {
                waiting_room: Some((1, 10_000_001)),
                ..SaleTerms::default()
            },
            SaleTerms {
                max_tickets_per_user: Some(0),
                ..SaleTerms::default()
            },
            SaleTerms {
                max_tickets_per_user: Some(101),
                ..SaleTerms::default()
            },
        ] {
            assert!(matches!(
                catalog.create_concert_with("t", "v", bad, seed),
                Err(DomainError::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn titles_and_venues_are_one_to_two_hundred_characters() {
        let catalog = Catalog::default();
        assert!(catalog.create_concert("", "Hall").is_err());
        assert!(catalog.create_concert("   ", "Hall").is_err());
        assert!(catalog.create_concert(&"t".repeat(201), "Hall").is_err());
        assert!(catalog.create_concert(&"가".repeat(200), "Hall").is_ok());
    }
}
