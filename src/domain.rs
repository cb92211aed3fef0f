//! The business rules, pure and deterministic: no async, no IO, no clock reads, no randomness.
//! Time and random identifiers come in as arguments. Commands decide (returning events or a
//! typed error); `apply` mutates and cannot fail; replaying events rebuilds the state.

pub mod accounts;
pub mod across_dates;
pub mod admission;
pub mod best_available;
pub mod catalog;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod ledger;
pub mod page;
pub mod rate_limit;
pub mod rooms;
pub mod seat_map;
pub mod types;
pub mod venue;
pub mod waitlist;

#[cfg(test)]
mod properties;

pub use error::DomainError;
pub use events::{CancellationRefund, Event, IdempotencyStamp};
pub use types::*;
