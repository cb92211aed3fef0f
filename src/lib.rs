//! boxoffice: a concert-ticket reservation engine for one machine. Buyers wait in a metered FIFO
//! waiting room, hold seats for a few minutes and pay from a prepaid balance; no seat is sold
//! twice, no won is lost, and no acknowledged change is lost when the process is killed.
//!
//! # The map
//!
//! A request travels down this list; each module knows only the ones below it.
//!
//! - [`app`]: wires config, engine and HTTP together; binds the listener and serves until stopped.
//! - [`http`]: axum routes and extractors (session, queue token, idempotency key), problem+json
//!   errors, the OpenAPI document, live streams and the page. Holds no business rule.
//! - [`actors`]: the owners of state, one ractor actor each: a `DateActor` per concert date, the
//!   `QueueActor`, `LedgerActor`, `AccountsActor` and `CatalogActor`, all under one `Supervisor`;
//!   and the views hot reads use without a mailbox round trip.
//! - [`domain`]: pure state machines with every business rule (`SeatMap`, `Ledger`,
//!   `AdmissionQueue`, `Accounts`, `Catalog`): commands decide events, `apply` changes state.
//! - [`store`]: the only module that touches disk: the event log and its writer thread, the
//!   history database and its writer thread, snapshots, recovery and backups.
//! - [`config`]: typed settings from `config.toml` and `BOXOFFICE__*` variables;
//!   [`policies`] turns them into the domain's policies and the store's setup where `app` wires.
//! - [`clock`]: the one place that reads the wall clock; tests use a `ManualClock`.
//! - [`security`]: password hashing and unguessable tokens.
//! - [`telemetry`]: the Prometheus recorder behind `/metrics`.
//!
//! # The life of a hold
//!
//! `POST /api/v1/reservations` reaches `http::reservations::hold`. Its extractors prove who is
//! asking from views, without a mailbox: `Admitted` (a live session and an active queue token),
//! `IdempotencyHeader` and `ApiJson<HoldRequest>`. The `IdempotencyGate` replays a key it has seen;
//! otherwise `DateHandle::hold` asks the date's `DateActor` (`DateMsg::Hold`). The actor first
//! turns holds that are due into `HoldExpired` events, then `SeatMap::place_hold_among` decides: a
//! `HoldPlaced` event or a `DomainError` (the limits, per date and over every date, then the
//! seats' state, then the user's rehold cooldown). It decides while holding the user's entry in
//! the `HoldTally` the date actors share, which counts the hold before another date can decide
//! one for the same user. `DateState::commit` applies the event to the `SeatMap`, hands it
//! to the `EventLog`, whose writer thread commits it with others in one SQLite transaction, and
//! then publishes the changed seats to the `SeatView` (listings and live streams read it). The
//! actor answers at once with a `Durable` ticket and takes its next message; the handler waits
//! on the ticket and answers 201 only once the event is committed. Any answer that may show
//! logged state, a listing or a refusal included, leaves only once everything queued before it
//! is committed (`http::after_what_it_saw`), so nobody sees a change a crash could take back. The history
//! writer then stores the reservation's row. A hold that is never paid stops blocking its seats
//! at `expires_at`, before any sweep: the view reads a seat held past that instant as available,
//! and the actor expires due holds before it decides anything, logging each expiry.
//!
//! # The life of a payment
//!
//! `POST /api/v1/payments` reaches `http::reservations::pay`, which checks the idempotency key
//! before the queue token (`DeferredAdmission`), since a payment ends the token its retry would
//! carry. `DateHandle::pay` asks the `DateActor`; `SeatMap::prepare_payment` checks the hold is
//! the payer's and alive and prices it, and the actor asks the `LedgerActor` to settle it:
//! `Ledger::settle_payment` checks the balance and decides one `PaymentCompleted` event that
//! carries the seats, the amount and the balance after. The ledger applies and logs that event
//! and answers; the date, which takes no other message meanwhile, applies the same event to its
//! seats and answers: HTTP → date → ledger → date → HTTP, four hand-offs. The event also names the
//! queue token the payment was made with, and the waiting room's share of it runs as the commit
//! lands, before anyone hears of it (`Durability::append`): the token ends because the committed
//! event says so, and recovery applies the payments after the waiting room's snapshot the same
//! way. One event for every owner means replay needs no coordination and a crash never leaves
//! half a payment. The handler waits for the commit, then answers 201 with the receipt; the
//! history writer stores the ledger entry and the reservation's new status.

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
