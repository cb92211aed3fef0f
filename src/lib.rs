//! boxoffice: a concert-ticket reservation engine for one machine.
//!
//! A request travels outside in:
//!
//! - [`http`]: axum routes and extractors (session, queue token, idempotency key); turns JSON into
//!   typed commands and domain errors into problem+json. Holds no business rule.
//! - [`actors`]: ractor actors that own state: one `DateActor` per concert date (its seats, holds
//!   and payments), the `QueueActor` (admission), the `LedgerActor` (balances), and the
//!   `AccountsActor` and `CatalogActor`. Hot reads (sessions, queue tokens, seat listings) are
//!   served from views the owner updates, without a mailbox round trip.
//! - [`domain`]: pure state machines with every business rule; commands return events.
//! - [`store`]: the only module that touches disk: the event log, the history database that
//!   follows it, snapshots, recovery and backups.
//! - [`config`]: typed settings from `config.toml` and `BOXOFFICE__*` variables;
//!   [`policies`] turns them into the domain's policies and the store's setup.
//! - [`app`]: wires the pieces together, binds the listener and runs until stopped.

pub mod actors;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod policies;
pub mod security;
pub mod store;
pub mod telemetry;
