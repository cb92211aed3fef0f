//! A date's venue: sections (each at one price) made of rows of seats. Seat numbers run 1…N over
//! the whole date, section by section, row by row, so a seat named by number needs no layout,
//! and the layout turns a number into its section, row and place in the row.
//!
//! The first section, and the first row of a section, are the ones nearest the stage.

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::types::SeatNo;

pub const SECTIONS_MAX: usize = 50;
pub const SECTION_NAME_CHARS_MAX: usize = 50;
pub const ROWS_PER_SECTION_MAX: usize = 200;
pub const ROW_LABEL_CHARS_MAX: usize = 10;
pub const SEATS_PER_ROW_MAX: u32 = 500;
pub const SEATS_MAX: u32 = 100_000;
/// Prices are exact in a JSON number: at most 2^53 − 1.
pub const PRICE_MAX: u64 = (1 << 53) - 1;
/// A date made with a seat count and one price has one section of this name.
pub const GENERAL_SECTION: &str = "General";
/// ...in rows of this many seats, the last one the rest.
pub const GENERAL_ROW_SEATS: u32 = 500;

/// A section as an administrator describes it, before it is checked: numbers as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionPlan {
    pub name: String,
    pub price: i128,
    pub rows: Vec<RowPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    pub label: String,
    pub seats: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub price: u64,
    /// The section's rows are `rows` of the layout's rows, in order.
    pub rows: std::ops::Range<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    pub section: u32,
    pub first_seat: SeatNo,
    pub seats: u32,
}

impl Row {
    pub fn last_seat(&self) -> SeatNo {
        SeatNo(self.first_seat.0 + self.seats - 1)
    }

    pub fn contains(&self, seat: SeatNo) -> bool {
        (self.first_seat.0..=self.last_seat().0).contains(&seat.0)
    }
}

/// Where a seat is: its section and row (indexes into the layout) and its place in the row,
/// from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatPlace {
    pub section: u32,
    pub row: u32,
    pub seat_in_row: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    sections: Vec<Section>,
    /// Every row of every section, in seat order.
    rows: Vec<Row>,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::InvalidInput(message.into())
}

impl Layout {
    /// Checks an administrator's sections against the limits and numbers their seats.
    pub fn plan(sections: Vec<SectionPlan>) -> Result<Self, DomainError> {
        if sections.is_empty() || sections.len() > SECTIONS_MAX {
            return Err(invalid(format!(
                "a date has 1 to {SECTIONS_MAX} sections, not {}",
                sections.len()
            )));
        }
        let mut layout = Layout {
            sections: Vec::with_capacity(sections.len()),
            rows: Vec::new(),
        };
        let mut next_seat: u64 = 1;
        for plan in sections {
            let chars = plan.name.chars().count();
            if chars == 0 || chars > SECTION_NAME_CHARS_MAX || plan.name.trim().is_empty() {
                return Err(invalid(format!(
                    "a section's name is 1 to {SECTION_NAME_CHARS_MAX} characters"
                )));
            }
            if layout.sections.iter().any(|s| s.name == plan.name) {
                return Err(invalid(format!(
                    "two sections are named \"{}\"; names are unique within a date",
                    plan.name
                )));
            }
            if !(0..=i128::from(PRICE_MAX)).contains(&plan.price) {
                return Err(invalid(format!(
                    "section \"{}\": a price is 0 to {PRICE_MAX}",
                    plan.name
                )));
            }
            if plan.rows.is_empty() || plan.rows.len() > ROWS_PER_SECTION_MAX {
                return Err(invalid(format!(
                    "section \"{}\" has 1 to {ROWS_PER_SECTION_MAX} rows, not {}",
                    plan.name,
                    plan.rows.len()
                )));
            }
            let section = layout.sections.len() as u32;
            let first_row = layout.rows.len() as u32;
            for row in plan.rows {
                let chars = row.label.chars().count();
                if chars == 0 || chars > ROW_LABEL_CHARS_MAX || row.label.trim().is_empty() {
                    return Err(invalid(format!(
                        "section \"{}\": a row's label is 1 to {ROW_LABEL_CHARS_MAX} characters",
                        plan.name
                    )));
                }
                let rows_of_section = &layout.rows[first_row as usize..];
                if rows_of_section.iter().any(|r| r.label == row.label) {
                    return Err(invalid(format!(
                        "section \"{}\" has two rows labelled \"{}\"; labels are unique within a section",
                        plan.name, row.label
                    )));
                }
                if !(1..=i128::from(SEATS_PER_ROW_MAX)).contains(&row.seats) {
                    return Err(invalid(format!(
                        "section \"{}\", row \"{}\": a row has 1 to {SEATS_PER_ROW_MAX} seats",
                        plan.name, row.label
                    )));
                }
                let seats = row.seats as u32;
                if next_seat - 1 + u64::from(seats) > u64::from(SEATS_MAX) {
                    return Err(invalid(format!(
                        "a date has at most {SEATS_MAX} seats in all"
                    )));
                }
                layout.rows.push(Row {
                    label: row.label,
                    section,
                    first_seat: SeatNo(next_seat as u32),
                    seats,
                });
                next_seat += u64::from(seats);
            }
            layout.sections.push(Section {
                name: plan.name,
                price: plan.price as u64,
                rows: first_row..layout.rows.len() as u32,
            });
        }
        Ok(layout)
    }

    /// What a date made with `{seat_count, price}` is: one section, rows of 500 seats.
    pub fn general(seat_count: u32, price: u64) -> Self {
        let rows = (0..seat_count.div_ceil(GENERAL_ROW_SEATS))
            .map(|n| RowPlan {
                label: (n + 1).to_string(),
                seats: (seat_count - n * GENERAL_ROW_SEATS)
                    .min(GENERAL_ROW_SEATS)
                    .into(),
            })
            .collect();
        let plan = vec![SectionPlan {
            name: GENERAL_SECTION.to_owned(),
            price: price.into(),
            rows,
        }];
        // The seat count and price were checked by the caller; rows of 500 are always valid.
        Self::plan(plan).expect("a general layout is within every limit")
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn seat_count(&self) -> u32 {
        self.rows.last().map_or(0, |r| r.last_seat().0)
    }

    /// The section named `name`, by index.
    pub fn section_named(&self, name: &str) -> Option<u32> {
        self.sections
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u32)
    }

    /// The row that holds `seat`, by index.
    pub fn row_of(&self, seat: SeatNo) -> Option<u32> {
        let after = self.rows.partition_point(|r| r.first_seat.0 <= seat.0);
        let row = after.checked_sub(1)?;
        self.rows[row].contains(seat).then_some(row as u32)
    }

    pub fn place_of(&self, seat: SeatNo) -> Option<SeatPlace> {
        let row = self.row_of(seat)?;
        let r = &self.rows[row as usize];
        Some(SeatPlace {
            section: r.section,
            row,
            seat_in_row: seat.0 - r.first_seat.0 + 1,
        })
    }

    /// The cheapest section's price.
    pub fn lowest_price(&self) -> u64 {
        self.sections.iter().map(|s| s.price).min().unwrap_or(0)
    }

    /// Seats in each section, in section order: a section's seats are numbered in one run.
    pub fn section_seats(&self) -> impl Iterator<Item = u32> + '_ {
        self.sections.iter().map(|s| {
            let first = &self.rows[s.rows.start as usize];
            let last = &self.rows[s.rows.end as usize - 1];
            last.last_seat().0 - first.first_seat.0 + 1
        })
    }

    pub fn price_of(&self, seat: SeatNo) -> Option<u64> {
        let place = self.place_of(seat)?;
        Some(self.sections[place.section as usize].price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, seats: u32) -> RowPlan {
        RowPlan {
            label: label.into(),
            seats: seats.into(),
        }
    }

    fn section(name: &str, price: u64, rows: Vec<RowPlan>) -> SectionPlan {
        SectionPlan {
            name: name.into(),
            price: price.into(),
            rows,
        }
    }

    #[test]
    fn seats_are_numbered_section_by_section_and_row_by_row() {
        let layout = Layout::plan(vec![
            section("Floor", 150_000, vec![row("A", 20), row("B", 22)]),
            section("Balcony", 80_000, vec![row("1", 30)]),
        ])
        .unwrap();
        assert_eq!(layout.seat_count(), 72);
        assert_eq!(
            layout.place_of(SeatNo(21)),
            Some(SeatPlace {
                section: 0,
                row: 1,
                seat_in_row: 1
            })
        );
        assert_eq!(
            layout.place_of(SeatNo(43)),
            Some(SeatPlace {
                section: 1,
                row: 2,
                seat_in_row: 1
            })
        );
        assert_eq!(layout.price_of(SeatNo(42)), Some(150_000));
        assert_eq!(layout.price_of(SeatNo(72)), Some(80_000));
        assert_eq!(layout.place_of(SeatNo(73)), None);
        assert_eq!(layout.place_of(SeatNo(0)), None);
        assert_eq!(layout.section_named("Balcony"), Some(1));
    }

    #[test]
    fn a_seat_count_and_price_make_one_general_section_in_rows_of_500() {
        let layout = Layout::general(1_201, 10);
        assert_eq!(layout.sections().len(), 1);
        assert_eq!(layout.sections()[0].name, "General");
        let rows: Vec<(&str, u32, u32)> = layout
            .rows()
            .iter()
            .map(|r| (r.label.as_str(), r.first_seat.0, r.seats))
            .collect();
        assert_eq!(rows, [("1", 1, 500), ("2", 501, 500), ("3", 1_001, 201)]);
        assert_eq!(Layout::general(500, 10).rows().len(), 1);
    }

    #[test]
    fn every_limit_of_a_layout_is_an_invalid_input() {
        let too_many_seats: Vec<SectionPlan> = (0..3)
            .map(|n| {
                section(
                    &format!("S{n}"),
                    1,
                    (0..70).map(|r| row(&r.to_string(), 500)).collect(),
                )
            })
            .collect();
        let cases = [
            vec![],
            (0..51)
                .map(|n| section(&format!("S{n}"), 1, vec![row("A", 1)]))
                .collect(),
            vec![section("", 1, vec![row("A", 1)])],
            vec![section(&"x".repeat(51), 1, vec![row("A", 1)])],
            vec![
                section("Same", 1, vec![row("A", 1)]),
                section("Same", 1, vec![row("A", 1)]),
            ],
            vec![section("S", PRICE_MAX + 1, vec![row("A", 1)])],
            vec![section("S", 1, vec![])],
            vec![section(
                "S",
                1,
                (0..201).map(|r| row(&r.to_string(), 1)).collect(),
            )],
            vec![section("S", 1, vec![row("", 1)])],
            vec![section("S", 1, vec![row("ABCDEFGHIJK", 1)])],
            vec![section("S", 1, vec![row("A", 1), row("A", 1)])],
            vec![section("S", 1, vec![row("A", 0)])],
            vec![section("S", 1, vec![row("A", 501)])],
            too_many_seats,
        ];
        for plan in cases {
            let described = format!("{plan:?}").chars().take(80).collect::<String>();
            assert!(
                matches!(Layout::plan(plan), Err(DomainError::InvalidInput(_))),
                "{described}"
            );
        }
        // The same row label in two sections, and the largest date, are fine.
        Layout::plan(vec![
            section("A", 0, vec![row("1", 1)]),
            section("B", PRICE_MAX, vec![row("1", 1)]),
        ])
        .unwrap();
        let largest = Layout::plan(
            (0..2)
                .map(|n| {
                    section(
                        &format!("S{n}"),
                        1,
                        (0..100).map(|r| row(&r.to_string(), 500)).collect(),
                    )
                })
                .collect(),
        )
        .unwrap();
        assert_eq!(largest.seat_count(), SEATS_MAX);
    }
}
