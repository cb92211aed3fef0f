//! Concerts and their dates. A date's layout (its sections, rows and prices) is fixed when it is
//! created.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::events::Event;
use super::types::*;
use super::venue::{Layout, SectionPlan};

pub const SEATS_PER_DATE_MAX: i128 = 100_000;
/// A concert's `title` and `venue`: 1 to this many characters, not all of them blank.
pub const TEXT_CHARS_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
    pub dates: Vec<DateId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateInfo {
    pub id: DateId,
    pub concert: ConcertId,
    pub starts_at: Timestamp,
    /// Shared, so reading a date (every catalogue request) copies a pointer, not its rows.
    pub layout: Arc<Layout>,
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

    pub fn create_concert(&self, title: &str, venue: &str) -> Result<Event, DomainError> {
        Ok(Event::ConcertCreated {
            concert: ConcertId(self.concerts.len() as u32 + 1),
            title: text("title", title)?,
            venue: text("venue", venue)?,
        })
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
        })
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ConcertCreated {
                concert,
                title,
                venue,
            } => {
                assert_eq!(concert.0 as usize, self.concerts.len() + 1);
                self.concerts.push(Concert {
                    id: *concert,
                    title: title.clone(),
                    venue: venue.clone(),
                    dates: Vec::new(),
                });
            }
            Event::DateCreated {
                date,
                concert,
                starts_at,
                layout,
            } => {
                assert_eq!(date.0 as usize, self.dates.len() + 1);
                self.dates.push(DateInfo {
                    id: *date,
                    concert: *concert,
                    starts_at: *starts_at,
                    layout: Arc::new(layout.clone()),
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
    fn titles_and_venues_are_one_to_two_hundred_characters() {
        let catalog = Catalog::default();
        assert!(catalog.create_concert("", "Hall").is_err());
        assert!(catalog.create_concert("   ", "Hall").is_err());
        assert!(catalog.create_concert(&"t".repeat(201), "Hall").is_err());
        assert!(catalog.create_concert(&"가".repeat(200), "Hall").is_ok());
    }
}
