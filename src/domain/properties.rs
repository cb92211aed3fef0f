//! Property tests: random command sequences with random clocks against the invariants of
//! DESIGN.md, checked after every step, and replay of the produced events against live state.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::admission::{AdmissionQueue, Lookup, QueuePolicy, QueueTokenId, Standing};
use super::ledger::{BalancePolicy, Ledger, LedgerEntry};
use super::seat_map::{
    DatePolicy, Reservation, ReservationChange, ReservationState, SeatMap, SeatStatus,
};
use super::venue::Layout;
use super::*;

const SEATS: u32 = 12;

/// Failures print their minimal case; no regression files are written into the repository.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
const TTL_MS: i64 = 10_000;
const MAX_PER_USER: u32 = 4;
const COOLDOWN_MS: i64 = 15_000;

#[derive(Debug, Clone)]
enum SeatCommand {
    Hold { user: u64, seats: Vec<u32> },
    Cancel { user: u64, seq: u32 },
    Pay { user: u64, seq: u32 },
    Advance { ms: i64 },
    Sweep,
}

fn seat_command() -> impl Strategy<Value = SeatCommand> {
    prop_oneof![
        4 => (0..4u64, prop::collection::vec(0..=SEATS + 1, 0..6))
            .prop_map(|(user, seats)| SeatCommand::Hold { user, seats }),
        1 => (0..4u64, 0..30u32).prop_map(|(user, seq)| SeatCommand::Cancel { user, seq }),
        2 => (0..4u64, 0..30u32).prop_map(|(user, seq)| SeatCommand::Pay { user, seq }),
        2 => (0..(2 * TTL_MS)).prop_map(|ms| SeatCommand::Advance { ms }),
        1 => Just(SeatCommand::Sweep),
    ]
}

fn new_seat_map() -> SeatMap {
    seat_map_of(Layout::general(SEATS, 100))
}

fn seat_map_of(layout: Layout) -> SeatMap {
    SeatMap::new(
        DateId(1),
        Timestamp(i64::MAX),
        layout,
        DatePolicy {
            ttl_ms: TTL_MS,
            max_seats_per_user: MAX_PER_USER,
            max_seats_per_user_total: MAX_PER_USER,
            rehold_cooldown_ms: COOLDOWN_MS,
            refunds: Default::default(),
            offer_ttl_ms: 600_000,
        },
    )
}

/// One to three sections (priced 100, 200, …) of one to three rows of one to nine seats.
fn small_layout() -> impl Strategy<Value = Layout> {
    prop::collection::vec(prop::collection::vec(1..=9i128, 1..=3), 1..=3).prop_map(|sections| {
        Layout::plan(
            sections
                .into_iter()
                .enumerate()
                .map(|(s, rows)| venue::SectionPlan {
                    name: format!("S{s}"),
                    price: 100 * (s as i128 + 1),
                    rows: rows
                        .into_iter()
                        .enumerate()
                        .map(|(r, seats)| venue::RowPlan {
                            label: format!("R{r}"),
                            seats,
                        })
                        .collect(),
                })
                .collect(),
        )
        .expect("within every limit")
    })
}

#[derive(Debug, Clone)]
enum VenueCommand {
    Best {
        user: u64,
        quantity: u32,
        section: Option<u32>,
    },
    Hold {
        user: u64,
        seat: u32,
    },
    Cancel {
        user: u64,
        seq: u32,
    },
    Pay {
        user: u64,
        seq: u32,
    },
    Advance {
        ms: i64,
    },
    Sweep,
}

fn venue_command() -> impl Strategy<Value = VenueCommand> {
    prop_oneof![
        5 => (0..4u64, 0..=MAX_PER_USER + 1, prop::option::of(0..4u32))
            .prop_map(|(user, quantity, section)| VenueCommand::Best { user, quantity, section }),
        2 => (0..4u64, 1..=30u32).prop_map(|(user, seat)| VenueCommand::Hold { user, seat }),
        1 => (0..4u64, 0..30u32).prop_map(|(user, seq)| VenueCommand::Cancel { user, seq }),
        2 => (0..4u64, 0..30u32).prop_map(|(user, seq)| VenueCommand::Pay { user, seq }),
        2 => (0..(2 * TTL_MS)).prop_map(|ms| VenueCommand::Advance { ms }),
        1 => Just(VenueCommand::Sweep),
    ]
}

/// Every reservation the events made, in its latest state: the history the store keeps.
fn history(log: &[Event]) -> HashMap<ReservationId, Reservation> {
    let mut made = HashMap::new();
    for event in log {
        for change in ReservationChange::made_by(event) {
            match change {
                ReservationChange::Placed(r) => {
                    made.insert(r.id, r);
                }
                ReservationChange::Ended { id, state, at } => {
                    let r = made
                        .get_mut(&id)
                        .expect("a reservation ends after it is placed");
                    ReservationChange::end(r, state, at);
                }
                ReservationChange::Transferred { id, to } => {
                    made.get_mut(&id)
                        .expect("a reservation is given after it is placed")
                        .user = to;
                }
            }
        }
    }
    made
}

/// When each of the user's reservations was let go of (cancelled, or expired by time, swept or
/// not), read from the events alone; paid and live ones were not.
fn let_go(log: &[Event], user: UserId, now: Timestamp) -> Vec<(SeatList, Timestamp)> {
    let mut ended_at: HashMap<ReservationId, Timestamp> = HashMap::new();
    // Holds a date's cancellation ended were called off, not let go of: no cooldown.
    let mut called_off: BTreeSet<ReservationId> = BTreeSet::new();
    for event in log {
        match event {
            Event::HoldCancelled { reservation, at }
            | Event::HoldExpired { reservation, at }
            | Event::WaitlistLeft {
                offer: Some(reservation),
                at,
                ..
            } => {
                ended_at.entry(*reservation).or_insert(*at);
            }
            Event::DateCancelled {
                date,
                cancelled_holds,
                ..
            } => called_off.extend(cancelled_holds.iter().map(|seq| ReservationId {
                date: *date,
                seq: *seq,
            })),
            _ => {}
        }
    }
    history(log)
        .into_values()
        .filter(|r| r.user == user)
        .filter_map(|r| {
            let at = match r.state {
                ReservationState::Cancelled if called_off.contains(&r.id) => return None,
                ReservationState::Cancelled | ReservationState::Expired => ended_at[&r.id],
                ReservationState::Held if r.expires_at <= now => r.expires_at,
                ReservationState::Held | ReservationState::Paid | ReservationState::Refunded => {
                    return None
                }
            };
            Some((r.seats, at))
        })
        .collect()
}

/// Seats among `seats` the user let go of less than the cooldown before `now`.
fn cooling(log: &[Event], user: UserId, seats: &[SeatNo], now: Timestamp) -> Vec<SeatNo> {
    let let_go = let_go(log, user, now);
    seats
        .iter()
        .copied()
        .filter(|seat| {
            let_go
                .iter()
                .any(|(held, at)| held.contains(seat) && now < at.plus_millis(COOLDOWN_MS))
        })
        .collect()
}

/// Invariants 1 and 4, plus the hold limit, read from the map's own answers and the history
/// its events make.
fn check_seats(map: &SeatMap, log: &[Event], now: Timestamp, users: u64) {
    let mut live_holders: HashMap<u32, u32> = HashMap::new();
    let mut buyers: HashMap<u32, u32> = HashMap::new();
    let history = history(log);
    for user in 0..users {
        let mut live_seats = 0;
        for r in history.values().filter(|r| r.user == UserId(user)) {
            for seat in &r.seats {
                if r.state == ReservationState::Paid {
                    *buyers.entry(seat.0).or_default() += 1;
                }
                if r.state == ReservationState::Held && r.expires_at > now {
                    *live_holders.entry(seat.0).or_default() += 1;
                    live_seats += 1;
                }
            }
        }
        assert!(
            live_seats <= MAX_PER_USER,
            "user {user} holds {live_seats} seats"
        );
    }
    for seat in 1..=map.seat_count() {
        let held = live_holders.get(&seat).copied().unwrap_or(0);
        let sold = buyers.get(&seat).copied().unwrap_or(0);
        assert!(sold <= 1, "seat {seat} sold {sold} times");
        assert!(
            held + sold <= 1,
            "seat {seat}: {held} live holds, sold {sold}"
        );
        let expected = match (held, sold) {
            (0, 0) => SeatStatus::Available,
            (_, 1) => SeatStatus::Sold,
            _ => map.seat_status(SeatNo(seat), now).unwrap(),
        };
        let status = map.seat_status(SeatNo(seat), now).unwrap();
        assert_eq!(status, expected, "seat {seat}");
        if held == 1 {
            assert!(matches!(status, SeatStatus::Held { until } if until > now));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn seats_are_never_double_booked_and_expired_holds_never_block(
        commands in prop::collection::vec(seat_command(), 1..80)
    ) {
        let mut map = new_seat_map();
        let mut now = Timestamp(1_000);
        let mut log: Vec<Event> = Vec::new();
        for command in commands {
            let decided = match command {
                SeatCommand::Hold { user, seats } => {
                    let seats: Vec<SeatNo> = seats.into_iter().map(SeatNo).collect();
                    let outcome = map.place_hold(UserId(user), &seats, now, None);
                    if let Err(DomainError::SeatUnavailable(seat)) = &outcome {
                        // Invariant 4: refusal only for a seat that is sold or in a live hold.
                        let blocked = matches!(
                            map.seat_status(*seat, now),
                            Some(SeatStatus::Sold | SeatStatus::Held { .. })
                        );
                        prop_assert!(blocked, "seat {} refused while free", seat.0);
                    }
                    if let Err(DomainError::HoldLimit { .. }) = &outcome {
                        // The limit refuses only a user who really is at it: count the user's
                        // live holds from the whole history, not the map's own index.
                        let live: usize = history(&log)
                            .into_values()
                            .filter(|r| r.user == UserId(user))
                            .filter(|r| r.state == ReservationState::Held && r.expires_at > now)
                            .map(|r| r.seats.len())
                            .sum();
                        prop_assert!(
                            live + seats.len() > MAX_PER_USER as usize,
                            "hold_limit with {} live seats and {} asked", live, seats.len()
                        );
                    }
                    let cooling = cooling(&log, UserId(user), &seats, now);
                    if let Err(DomainError::ReholdCooldown { seat, retry_after_seconds }) = &outcome {
                        // Refused only for a seat this user really let go of within the cooldown.
                        prop_assert!(cooling.contains(seat), "seat {} refused as cooling", seat.0);
                        prop_assert!(*retry_after_seconds >= 1);
                    }
                    if outcome.is_ok() {
                        // No seat held forever: never again by the same user within the cooldown.
                        prop_assert!(cooling.is_empty(), "seats {:?} held again within the cooldown", cooling);
                    }
                    if outcome.is_err() && seats.len() == 1 && seats[0].0 >= 1 && seats[0].0 <= SEATS {
                        let free = map.seat_status(seats[0], now) == Some(SeatStatus::Available);
                        let over_limit = matches!(outcome, Err(DomainError::HoldLimit { .. }));
                        prop_assert!(
                            !free || over_limit || !cooling.is_empty(),
                            "a free seat was refused: {:?}", outcome
                        );
                    }
                    outcome.ok().into_iter().collect()
                }
                SeatCommand::Cancel { user, seq } => map
                    .cancel_hold(UserId(user), ReservationId { date: DateId(1), seq }, now)
                    .ok()
                    .into_iter()
                    .collect(),
                SeatCommand::Pay { user, seq } => map
                    .prepare_payment(UserId(user), ReservationId { date: DateId(1), seq }, now, None, None)
                    .ok()
                    .into_iter()
                    .collect(),
                SeatCommand::Advance { ms } => {
                    now = now.plus_millis(ms);
                    Vec::new()
                }
                SeatCommand::Sweep => map.expire_due(now),
            };
            for event in decided {
                map.apply(&event);
                log.push(event);
            }
            check_seats(&map, &log, now, 4);
        }
        // Invariant 6 for this owner: replaying the events from empty gives the same state.
        let mut replayed = new_seat_map();
        for event in &log {
            replayed.apply(event);
        }
        prop_assert_eq!(replayed, map);
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random layouts, fills (holds by number, payments, cancels, expiry by time with or
    /// without a sweep) and best-available requests: every choice is the one the contract's
    /// rule makes, read literally by the reference (so adjacent, in the asked section, never an
    /// avoidable orphan, never a seat in the buyer's cooldown); it is refused only when the
    /// reference finds no block; no seat is ever held or sold twice; replay gives the same map.
    #[test]
    fn best_available_holds_follow_the_rule_and_never_double_book(
        layout in small_layout(),
        commands in prop::collection::vec(venue_command(), 1..80)
    ) {
        let mut map = seat_map_of(layout.clone());
        let mut now = Timestamp(1_000);
        let mut log: Vec<Event> = Vec::new();
        let every_seat: Vec<SeatNo> = (1..=map.seat_count()).map(SeatNo).collect();
        for command in commands {
            let decided = match command {
                VenueCommand::Best { user, quantity, section } => {
                    // Half the decisions on a settled map (the actor's way, the fast path when
                    // no expiry is due), half on one with seats marked since (a swept copy).
                    if user % 2 == 0 {
                        map.settle();
                    }
                    let user = UserId(user);
                    let name = section.map(|s| format!("S{s}"));
                    let outcome = map.place_best_available_among(
                        user, quantity, name.as_deref(), now, None, &Default::default(),
                    );
                    let live_seats: u32 = history(&log)
                        .into_values()
                        .filter(|r| r.user == user && r.state == ReservationState::Held && r.expires_at > now)
                        .map(|r| r.seats.len() as u32)
                        .sum();
                    let known_section = section.is_none_or(|s| (s as usize) < layout.sections().len());
                    let available: Vec<bool> = every_seat
                        .iter()
                        .map(|seat| map.seat_status(*seat, now) == Some(SeatStatus::Available))
                        .collect();
                    let avoid = cooling(&log, user, &every_seat, now);
                    let expected = best_available::reference(&layout, &available, quantity, section, &avoid);
                    match &outcome {
                        Err(DomainError::InvalidInput(_)) => {
                            prop_assert!(quantity == 0 || quantity > MAX_PER_USER || !known_section);
                        }
                        Err(DomainError::HoldLimit { .. }) => {
                            prop_assert!(known_section && live_seats + quantity > MAX_PER_USER);
                        }
                        Err(DomainError::NoAdjacentSeats { .. }) => {
                            prop_assert!(expected.is_none(), "refused, yet {:?} was there", expected);
                        }
                        Ok(Event::HoldPlaced { seats, price, .. }) => {
                            let block = expected.expect("the reference finds a block too");
                            let chosen: Vec<SeatNo> = block.seats().collect();
                            prop_assert_eq!(seats.as_slice(), chosen.as_slice());
                            let row = layout.row_of(seats[0]).unwrap();
                            prop_assert!(seats.iter().all(|s| layout.row_of(*s) == Some(row)));
                            if let Some(section) = section {
                                prop_assert_eq!(layout.rows()[row as usize].section, section);
                            }
                            let expected_price: u64 =
                                seats.iter().map(|s| layout.price_of(*s).unwrap()).sum();
                            prop_assert_eq!(*price, expected_price);
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                    outcome.ok().into_iter().collect()
                }
                VenueCommand::Hold { user, seat } => map
                    .place_hold(UserId(user), &[SeatNo(seat)], now, None)
                    .ok()
                    .into_iter()
                    .collect(),
                VenueCommand::Cancel { user, seq } => map
                    .cancel_hold(UserId(user), ReservationId { date: DateId(1), seq }, now)
                    .ok()
                    .into_iter()
                    .collect(),
                VenueCommand::Pay { user, seq } => map
                    .prepare_payment(UserId(user), ReservationId { date: DateId(1), seq }, now, None, None)
                    .ok()
                    .into_iter()
                    .collect(),
                VenueCommand::Advance { ms } => {
                    now = now.plus_millis(ms);
                    Vec::new()
                }
                VenueCommand::Sweep => map.expire_due(now),
            };
            for event in decided {
                map.apply(&event);
                log.push(event);
            }
            check_seats(&map, &log, now, 4);
        }
        // Replay from empty gives the same map, its derived index of free seats included; and
        // so does a snapshot's copy once restored.
        let mut replayed = seat_map_of(layout.clone());
        for event in &log {
            replayed.apply(event);
        }
        prop_assert_eq!(&replayed, &map);
        let bytes = bincode::serde::encode_to_vec(&map, bincode::config::standard()).unwrap();
        let (mut restored, _): (SeatMap, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        restored.restore(map.policy());
        prop_assert_eq!(restored, map);
    }
}

#[derive(Debug, Clone)]
enum MoneyCommand {
    Charge { user: u64, amount: i128 },
    Pay { user: u64, amount: u64 },
}

fn money_command() -> impl Strategy<Value = MoneyCommand> {
    let amount = prop_oneof![
        4 => 1..=1_000i128,
        1 => Just(0i128),
        1 => -5..0i128,
        1 => 1_001..=3_000i128,
        1 => Just(1i128 << 64),
    ];
    prop_oneof![
        3 => (0..3u64, amount).prop_map(|(user, amount)| MoneyCommand::Charge { user, amount }),
        2 => (0..3u64, 1..800u64).prop_map(|(user, amount)| MoneyCommand::Pay { user, amount }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn money_is_conserved_and_balances_stay_in_range(
        commands in prop::collection::vec(money_command(), 1..100)
    ) {
        let policy = BalancePolicy { max_charge: 1_000, max_balance: 2_500 };
        let mut ledger = Ledger::new(policy);
        let mut charged: HashMap<u64, u64> = HashMap::new();
        let mut paid: HashMap<u64, u64> = HashMap::new();
        let mut log = Vec::new();
        for (i, command) in commands.into_iter().enumerate() {
            let now = Timestamp(i as i64);
            match command {
                MoneyCommand::Charge { user, amount } => {
                    if let Ok(event) = ledger.charge(UserId(user), amount, now, None) {
                        ledger.apply(&event);
                        *charged.entry(user).or_default() += amount as u64;
                        log.push(event);
                    }
                }
                MoneyCommand::Pay { user, amount } => {
                    let payment = Event::PaymentCompleted {
                        reservation: ReservationId { date: DateId(1), seq: i as u32 + 1 },
                        user: UserId(user),
                        seats: smallvec::smallvec![SeatNo(1)],
                        amount,
                        balance_after: 0,
                        at: now,
                        idempotency: None,
                        queue_token: None,
                    };
                    if let Ok(payment) = ledger.settle_payment(&payment) {
                        ledger.apply(&payment);
                        *paid.entry(user).or_default() += amount;
                        log.push(payment);
                    }
                }
            }
            for user in 0..3u64 {
                let balance = ledger.balance(UserId(user));
                let expected = charged.get(&user).copied().unwrap_or(0) - paid.get(&user).copied().unwrap_or(0);
                prop_assert_eq!(balance, expected);
                prop_assert!(balance <= policy.max_balance);
                // The history the log's events make ends at the balance.
                let last_entry = log
                    .iter()
                    .enumerate()
                    .rev()
                    .flat_map(|(seq, e)| LedgerEntry::made_by(seq as u64 + 1, e))
                    .find(|(owner, _)| *owner == UserId(user));
                prop_assert_eq!(last_entry.map(|(_, e)| e.balance_after).unwrap_or(0), balance);
            }
        }
        let mut replayed = Ledger::new(policy);
        for event in &log {
            replayed.apply(event);
        }
        prop_assert_eq!(replayed, ledger);
    }
}

#[derive(Debug, Clone)]
enum QueueCommand {
    Issue { user: u64 },
    Poll { user: u64 },
    Leave { user: u64 },
    Pay { user: u64 },
    Advance { ms: i64 },
    Tick,
}

fn queue_command() -> impl Strategy<Value = QueueCommand> {
    prop_oneof![
        4 => (0..12u64).prop_map(|user| QueueCommand::Issue { user }),
        4 => (0..12u64).prop_map(|user| QueueCommand::Poll { user }),
        1 => (0..12u64).prop_map(|user| QueueCommand::Leave { user }),
        1 => (0..12u64).prop_map(|user| QueueCommand::Pay { user }),
        3 => (0..4_000i64).prop_map(|ms| QueueCommand::Advance { ms }),
        2 => Just(QueueCommand::Tick),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn admission_is_fifo_bounded_and_positions_are_exact(
        commands in prop::collection::vec(queue_command(), 1..120)
    ) {
        let policy = QueuePolicy {
            max_active: 3,
            admit_per_second: 2,
            active_ttl_ms: 6_000,
            waiting_ttl_ms: 5_000,
            ended_tokens_max: 100_000,
        };
        let mut now = Timestamp(0);
        let mut queue = AdmissionQueue::new(policy, now);
        // Token ids grow with issue order, so a larger id was issued later.
        let mut next_id = 1u128;
        let mut token_of: HashMap<u64, QueueTokenId> = HashMap::new();
        let mut ever_admitted: BTreeSet<QueueTokenId> = BTreeSet::new();
        for command in commands {
            match command {
                QueueCommand::Issue { user } => {
                    let (status, created) = queue.issue(UserId(user), QueueTokenId::general(next_id), now);
                    if created {
                        prop_assert_eq!(status.token, QueueTokenId::general(next_id));
                        next_id += 1;
                    }
                    token_of.insert(user, status.token);
                }
                QueueCommand::Poll { user } => {
                    if let Some(token) = token_of.get(&user) {
                        if let Ok(Lookup::Live(status)) = queue.poll(*token, UserId(user), now) {
                            if let Standing::Waiting { position, .. } = status.standing {
                                let index = queue.waiting_in_order().position(|t| t == *token);
                                prop_assert_eq!(index.map(|i| i as u64 + 1), Some(position));
                            }
                        }
                    }
                }
                QueueCommand::Leave { user } => {
                    if let Some(token) = token_of.remove(&user) {
                        let _ = queue.leave(token, UserId(user), now);
                    }
                }
                QueueCommand::Pay { user } => {
                    if let Some(token) = token_of.get(&user) {
                        queue.end_paid(*token, now);
                    }
                }
                QueueCommand::Advance { ms } => now = now.plus_millis(ms),
                QueueCommand::Tick => {
                    queue.tick(now);
                }
            }
            // Invariant 5: never more than max_active admitted at once...
            prop_assert!(queue.active_len() <= policy.max_active as usize);
            let live_active = token_of
                .iter()
                .filter(|(user, token)| queue.check_admitted(**token, UserId(**user), now).is_ok())
                .count();
            prop_assert!(live_active <= policy.max_active as usize);
            // ...and in FIFO order: everyone ever admitted was issued before everyone waiting.
            for (user, token) in &token_of {
                if queue.check_admitted(*token, UserId(*user), now).is_ok() {
                    ever_admitted.insert(*token);
                }
            }
            if let (Some(last_admitted), Some(first_waiting)) =
                (ever_admitted.last(), queue.waiting_in_order().next())
            {
                prop_assert!(last_admitted < &first_waiting, "{last_admitted:?} admitted before {first_waiting:?}");
            }
            let waiting: Vec<_> = queue.waiting_in_order().collect();
            prop_assert!(waiting.windows(2).all(|w| w[0] < w[1]), "line out of order");
        }
    }
}

/// `pick` chooses among the reservations made so far (most commands name one that exists);
/// `as_holder` sends the command as whoever holds it now, else as `user`.
#[derive(Debug, Clone)]
enum ReturnCommand {
    Charge {
        user: u64,
        amount: u64,
    },
    Hold {
        user: u64,
        seats: Vec<u32>,
    },
    Cancel {
        user: u64,
        pick: usize,
        as_holder: bool,
    },
    Pay {
        user: u64,
        pick: usize,
        as_holder: bool,
    },
    Refund {
        user: u64,
        pick: usize,
        as_holder: bool,
    },
    Transfer {
        user: u64,
        to: Option<u64>,
        pick: usize,
        as_holder: bool,
    },
    CancelDate,
    /// A hold paid at once, as most buyers do.
    Buy {
        user: u64,
        seats: Vec<u32>,
    },
    Join {
        user: u64,
        quantity: u32,
    },
    Leave {
        user: u64,
    },
    Advance {
        ms: i64,
    },
    Sweep,
}

/// A small date, so that it sells out and its waiting list fills.
const RETURN_SEATS: u32 = 5;

fn return_command() -> impl Strategy<Value = ReturnCommand> {
    let target = || (0..4u64, any::<usize>(), prop::bool::weighted(0.8));
    prop_oneof![
        8 => (0..4u64, 1..=400u64).prop_map(|(user, amount)| ReturnCommand::Charge { user, amount }),
        16 => (0..4u64, prop::collection::vec(1..=RETURN_SEATS + 1, 1..4))
            .prop_map(|(user, seats)| ReturnCommand::Hold { user, seats }),
        3 => target().prop_map(|(user, pick, as_holder)| ReturnCommand::Cancel { user, pick, as_holder }),
        24 => target().prop_map(|(user, pick, as_holder)| ReturnCommand::Pay { user, pick, as_holder }),
        8 => target().prop_map(|(user, pick, as_holder)| ReturnCommand::Refund { user, pick, as_holder }),
        8 => (target(), prop::option::weighted(0.9, 0..4u64))
            .prop_map(|((user, pick, as_holder), to)| ReturnCommand::Transfer { user, to, pick, as_holder }),
        1 => Just(ReturnCommand::CancelDate),
        10 => (0..4u64, prop::collection::vec(1..=RETURN_SEATS, 1..3))
            .prop_map(|(user, seats)| ReturnCommand::Buy { user, seats }),
        6 => (0..4u64, 1..=3u32).prop_map(|(user, quantity)| ReturnCommand::Join { user, quantity }),
        2 => (0..4u64).prop_map(|user| ReturnCommand::Leave { user }),
        6 => (0..(2 * TTL_MS)).prop_map(|ms| ReturnCommand::Advance { ms }),
        2 => Just(ReturnCommand::Sweep),
    ]
}

/// What the date's actor does around every message: due expiries become events, then seats
/// that came back are offered to the waiting list. After a pass that something woke (seats
/// came back, an entry joined, left or lapsed), invariant 8 holds; an entry that did not fit
/// then (its user's cooldown or limits) waits for the next such change, as API.md says.
fn sweep_and_offer(map: &mut SeatMap, log: &mut Vec<Event>, now: Timestamp, tickets: u32) {
    for expired in map.expire_due(now) {
        map.apply(&expired);
        log.push(expired);
    }
    let woken = map.waitlist().is_pending();
    log.extend(map.make_offers(now));
    if woken {
        check_no_fitting_entry_waits(map, log, now, tickets);
    }
}

/// Invariant 8: once offers are made, no waiting entry fits the seats free to its user: fewer
/// than its quantity are available outside the user's cooldown, or the user's live holds on
/// the date plus the quantity pass the per-date limit, or those plus the seats the user owns
/// pass `tickets` (the concert's limit). Read from the map's answers and the events alone.
fn check_no_fitting_entry_waits(map: &SeatMap, log: &[Event], now: Timestamp, tickets: u32) {
    if map.sale_state(now) != seat_map::SaleState::OnSale {
        return;
    }
    let every_seat: Vec<SeatNo> = (1..=map.seat_count()).map(SeatNo).collect();
    let history = history(log);
    for entry in map.waitlist().waiting() {
        let cooling = cooling(log, entry.user, &every_seat, now);
        let free = every_seat
            .iter()
            .filter(|seat| map.seat_status(**seat, now) == Some(SeatStatus::Available))
            .filter(|seat| !cooling.contains(seat))
            .count() as u32;
        let held: u32 = history
            .values()
            .filter(|r| {
                r.user == entry.user && r.state == ReservationState::Held && r.expires_at > now
            })
            .map(|r| r.seats.len() as u32)
            .sum();
        let owned: u32 = history
            .values()
            .filter(|r| r.user == entry.user && r.state == ReservationState::Paid)
            .map(|r| r.seats.len() as u32)
            .sum();
        assert!(
            free < entry.quantity
                || held + entry.quantity > MAX_PER_USER
                || held + owned + entry.quantity > tickets,
            "entry {:?} waits while {free} seats are free to its user (holding {held})",
            entry.id
        );
    }
}

/// Per user, from the events alone: charges − payments + refunds.
fn balances_from(log: &[Event]) -> HashMap<UserId, i128> {
    let mut balances: HashMap<UserId, i128> = HashMap::new();
    for event in log {
        match event {
            Event::BalanceCharged { user, amount, .. } => {
                *balances.entry(*user).or_default() += *amount as i128
            }
            Event::PaymentCompleted { user, amount, .. } => {
                *balances.entry(*user).or_default() -= *amount as i128
            }
            Event::RefundCompleted { payer, amount, .. } => {
                *balances.entry(*payer).or_default() += *amount as i128
            }
            Event::DateCancelled { refunds, .. } => {
                for refund in refunds {
                    *balances.entry(refund.payer).or_default() += refund.amount as i128;
                }
            }
            _ => {}
        }
    }
    balances
}

proptest! {
    #![proptest_config(config())]

    /// Holds, payments, refunds, transfers and a cancellation, with clock jumps past TTLs, the
    /// refund window and the start: invariants 1, 2 and 4 after every step, every refund to the
    /// payer, and replay (and a snapshot) equal to live.
    #[test]
    fn refunds_transfers_and_cancellations_keep_seats_single_and_money_conserved(
        commands in prop::collection::vec(return_command(), 1..100)
    ) {
        const STARTS_MS: i64 = 400_000;
        const WINDOW_MS: i64 = 100_000;
        let policy = DatePolicy {
            refunds: seat_map::RefundPolicy { fee_percent: 15, window_closes_ms_before_start: WINDOW_MS },
            ..new_seat_map().policy()
        };
        // Held plus owned per user: binds once a user owns seats and holds more.
        const TICKETS: usize = 3;
        let layout = Layout::general(RETURN_SEATS, 101);
        let mut map = SeatMap::new(DateId(1), Timestamp(STARTS_MS), layout.clone(), policy)
            .sold_as(Some(TICKETS as u32));
        let mut ledger = Ledger::new(BalancePolicy { max_charge: 400, max_balance: 600 });
        let mut now = Timestamp(1_000);
        let mut log: Vec<Event> = Vec::new();
        // Who paid for each reservation, as the model sees it.
        let mut payer_of: HashMap<u32, UserId> = HashMap::new();
        // Every buyer starts funded, so the small date sells out and its list fills.
        for user in 0..4u64 {
            let charge = ledger.charge(UserId(user), 400, now, None).unwrap();
            ledger.apply(&charge);
            log.push(charge);
        }
        for command in commands {
            // As the date's actor does before deciding anything: due expiries, then the offers
            // the seats they free make to the waiting list.
            sweep_and_offer(&mut map, &mut log, now, TICKETS as u32);
            let made = history(&log);
            // The reservation `pick` names, and who sends the command about it.
            let target = |user: u64, pick: usize, as_holder: bool| {
                let mut ids: Vec<&Reservation> = made.values().collect();
                ids.sort_by_key(|r| r.id);
                // Half the time one of the newest three, which are most often still live.
                let index = if pick.is_multiple_of(2) {
                    ids.len().saturating_sub(1 + (pick / 2) % 3)
                } else {
                    pick % ids.len().max(1)
                };
                match ids.get(index) {
                    Some(r) if as_holder => (r.user, r.id),
                    Some(r) => (UserId(user), r.id),
                    None => (UserId(user), ReservationId { date: DateId(1), seq: 1 }),
                }
            };
            let decided: Vec<Event> = match command {
                ReturnCommand::Charge { user, amount } => ledger
                    .charge(UserId(user), amount.into(), now, None)
                    .ok()
                    .into_iter()
                    .collect(),
                ReturnCommand::Hold { user, seats } => {
                    let seats: Vec<SeatNo> = seats.into_iter().map(SeatNo).collect();
                    let outcome = map.place_hold(UserId(user), &seats, now, None);
                    match map.sale_state(now) {
                        seat_map::SaleState::Cancelled => {
                            prop_assert_eq!(&outcome, &Err(DomainError::DateCancelled))
                        }
                        seat_map::SaleState::SalesClosed => {
                            prop_assert_eq!(&outcome, &Err(DomainError::SalesClosed))
                        }
                        seat_map::SaleState::OnSale => {}
                    }
                    outcome.ok().into_iter().collect()
                }
                ReturnCommand::Cancel { user, pick, as_holder } => {
                    let (user, id) = target(user, pick, as_holder);
                    map.cancel_hold(user, id, now).ok().into_iter().collect()
                }
                ReturnCommand::Pay { user, pick, as_holder } => {
                    let (user, id) = target(user, pick, as_holder);
                    map.prepare_payment(user, id, now, None, None)
                        .and_then(|payment| ledger.settle(&payment))
                        .ok()
                        .into_iter()
                        .collect()
                }
                ReturnCommand::Refund { user, pick, as_holder } => {
                    let (user, id) = target(user, pick, as_holder);
                    let outcome = map.prepare_refund(user, id, now, None);
                    let holder = made.get(&id).map(|r| r.user);
                    let state = made.get(&id).map(|r| r.state);
                    match &outcome {
                        Ok(Event::RefundCompleted { payer, amount, fee, .. }) => {
                            prop_assert_eq!(Some(payer), payer_of.get(&id.seq), "the payer is credited");
                            prop_assert_eq!(holder, Some(user), "only the holder asks");
                            prop_assert_eq!(state, Some(ReservationState::Paid));
                            prop_assert!(now.as_millis() < STARTS_MS - WINDOW_MS);
                            let price = *amount + *fee;
                            prop_assert_eq!(*fee, price * 15 / 100);
                        }
                        Err(DomainError::RefundWindowClosed { .. }) => {
                            prop_assert!(now.as_millis() >= STARTS_MS - WINDOW_MS);
                        }
                        Err(DomainError::ReservationNotPaid) => {
                            prop_assert_eq!(holder, Some(user));
                            prop_assert_eq!(state, Some(ReservationState::Held));
                        }
                        Err(DomainError::NotFound) => {
                            prop_assert!(holder != Some(user) || state != Some(ReservationState::Paid));
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                    outcome.and_then(|refund| ledger.settle(&refund)).ok().into_iter().collect()
                }
                ReturnCommand::Transfer { user, to, pick, as_holder } => {
                    let (user, id) = target(user, pick, as_holder);
                    map.prepare_transfer(user, to.map(UserId), id, now, None)
                        .ok()
                        .into_iter()
                        .collect()
                }
                ReturnCommand::CancelDate => map
                    .prepare_cancellation(now)
                    .and_then(|cancelled| ledger.settle(&cancelled))
                    .ok()
                    .into_iter()
                    .collect(),
                ReturnCommand::Buy { user, seats } => {
                    let seats: Vec<SeatNo> = seats.into_iter().map(SeatNo).collect();
                    match map.place_hold(UserId(user), &seats, now, None) {
                        Ok(hold) => {
                            let mut after = map.clone();
                            after.apply(&hold);
                            let Event::HoldPlaced { reservation, .. } = &hold else {
                                unreachable!()
                            };
                            let payment = after
                                .prepare_payment(UserId(user), *reservation, now, None, None)
                                .and_then(|payment| ledger.settle(&payment));
                            std::iter::once(hold).chain(payment.ok()).collect()
                        }
                        Err(_) => Vec::new(),
                    }
                }
                ReturnCommand::Join { user, quantity } => {
                    match map.join_waitlist(UserId(user), quantity, None, now) {
                        Ok(seat_map::Joined::New(event)) => vec![event],
                        _ => Vec::new(),
                    }
                }
                ReturnCommand::Leave { user } => {
                    match map.waitlist().entry_of(UserId(user)).map(|e| e.id) {
                        Some(entry) => map
                            .leave_waitlist(UserId(user), entry, now)
                            .ok()
                            .into_iter()
                            .collect(),
                        None => Vec::new(),
                    }
                }
                ReturnCommand::Advance { ms } => {
                    now = now.plus_millis(ms);
                    Vec::new()
                }
                ReturnCommand::Sweep => map.expire_due(now),
            };
            for event in decided {
                if let Event::PaymentCompleted { reservation, user, .. } = &event {
                    payer_of.insert(reservation.seq, *user);
                }
                if let Event::DateCancelled { refunds, .. } = &event {
                    for refund in refunds {
                        prop_assert_eq!(Some(&refund.payer), payer_of.get(&refund.seq));
                    }
                }
                map.apply(&event);
                ledger.apply(&event);
                log.push(event);
            }
            sweep_and_offer(&mut map, &mut log, now, TICKETS as u32);
            check_seats(&map, &log, now, 4);
            let expected = balances_from(&log);
            for user in 0..4u64 {
                let user = UserId(user);
                let expected = expected.get(&user).copied().unwrap_or(0);
                prop_assert!(expected >= 0, "never below zero");
                prop_assert_eq!(ledger.balance(user) as i128, expected, "{:?}", user);
            }
            if map.sale_state(now) == seat_map::SaleState::Cancelled {
                prop_assert_eq!(map.sold_seats(), 0, "a cancelled date keeps no sale");
            }
            let mut tickets: HashMap<UserId, usize> = HashMap::new();
            for r in history(&log).values() {
                let counts = match r.state {
                    ReservationState::Paid => true,
                    ReservationState::Held => r.expires_at > now,
                    _ => false,
                };
                if counts {
                    *tickets.entry(r.user).or_default() += r.seats.len();
                }
            }
            for (user, held_and_owned) in tickets {
                prop_assert!(held_and_owned <= TICKETS, "{:?} holds and owns {}", user, held_and_owned);
            }
        }
        let mut replayed_map = SeatMap::new(DateId(1), Timestamp(STARTS_MS), layout, policy)
            .sold_as(Some(TICKETS as u32));
        let mut replayed_ledger = Ledger::new(ledger.policy());
        for event in &log {
            replayed_map.apply(event);
            replayed_ledger.apply(event);
        }
        prop_assert_eq!(&replayed_map, &map);
        prop_assert_eq!(&replayed_ledger, &ledger);
        let bytes = bincode::serde::encode_to_vec(&map, bincode::config::standard()).unwrap();
        let (mut restored, _): (SeatMap, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        restored.restore(map.policy());
        prop_assert_eq!(restored, map);
    }
}
