//! Waiting rooms: the general one, which every concert without a room of its own shares, and one
//! per concert that has its own (its limits, its sale opening). Each room is an
//! `AdmissionQueue` with its own line, places and rate; no room's state touches another's.
//! A token names its room in its own bits (`QueueTokenId::room`), so finding it is one lookup.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::admission::{
    AdmissionQueue, Lookup, Opening, OpeningSeed, QueuePolicy, QueueSnapshot, QueueStatus,
    QueueTokenId, RoomId, TickOutcome,
};
use super::error::DomainError;
use super::events::Event;
use super::types::*;

/// `waiting_room.max_active` and `waiting_room.admit_per_second`: 1 to this.
pub const ROOM_LIMIT_MAX: i128 = 10_000_000;

/// A room's own limits, where the concert gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLimits {
    pub max_active: u32,
    pub admit_per_second: u32,
}

impl RoomLimits {
    /// Checks the limits a client sent, as they came.
    pub fn checked(max_active: i128, admit_per_second: i128) -> Result<Self, DomainError> {
        let within = |name: &str, value: i128| {
            if (1..=ROOM_LIMIT_MAX).contains(&value) {
                Ok(value as u32)
            } else {
                Err(DomainError::InvalidInput(format!(
                    "waiting_room.{name} must be 1 to {ROOM_LIMIT_MAX}"
                )))
            }
        };
        Ok(Self {
            max_active: within("max_active", max_active)?,
            admit_per_second: within("admit_per_second", admit_per_second)?,
        })
    }
}

/// What a concert's own room is made of, fixed when the concert is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    /// `None`: the general room's limits (`queue.*`), as configured at the time.
    pub limits: Option<RoomLimits>,
    pub sale_opens_at: Option<Timestamp>,
    /// Drawn by the caller from the OS when the concert is created; orders the pre-queue.
    pub seed: OpeningSeed,
}

impl RoomSpec {
    pub fn policy(&self, general: QueuePolicy) -> QueuePolicy {
        match self.limits {
            Some(limits) => QueuePolicy {
                max_active: limits.max_active,
                admit_per_second: limits.admit_per_second,
                ..general
            },
            None => general,
        }
    }

    pub fn opening(&self) -> Option<Opening> {
        self.sale_opens_at.map(|at| Opening {
            at,
            seed: self.seed,
        })
    }
}

/// What a committed event changes in the rooms, read off it whole, so it can be carried to
/// the rooms without the event: a concert's room made, or a payment's token ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomsChange {
    Made { concert: ConcertId, spec: RoomSpec },
    TokenPaid { token: QueueTokenId, at: Timestamp },
}

impl RoomsChange {
    pub fn made_by(event: &Event) -> Option<Self> {
        if let Event::ConcertCreated {
            concert,
            room: Some(spec),
            ..
        } = event
        {
            return Some(Self::Made {
                concert: *concert,
                spec: *spec,
            });
        }
        let (token, at) = AdmissionQueue::token_ended_by(event)?;
        Some(Self::TokenPaid { token, at })
    }
}

/// Every room as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsSnapshot {
    pub general: QueueSnapshot,
    pub own: Vec<(ConcertId, QueueSnapshot)>,
}

#[derive(Debug)]
pub struct Rooms {
    general_policy: QueuePolicy,
    general: AdmissionQueue,
    own: HashMap<ConcertId, AdmissionQueue>,
}

impl Rooms {
    pub fn new(general_policy: QueuePolicy, now: Timestamp) -> Self {
        Self {
            general_policy,
            general: AdmissionQueue::new(general_policy, now),
            own: HashMap::new(),
        }
    }

    /// Rebuilds every room: each concert's from its spec (which the catalog keeps), with the
    /// saved line where there is one. Every waiter counts as having polled `now`.
    pub fn restore(
        general_policy: QueuePolicy,
        specs: impl IntoIterator<Item = (ConcertId, RoomSpec)>,
        snapshot: Option<&RoomsSnapshot>,
        now: Timestamp,
    ) -> Self {
        let saved: HashMap<ConcertId, &QueueSnapshot> = snapshot
            .map(|s| s.own.iter().map(|(c, q)| (*c, q)).collect())
            .unwrap_or_default();
        let general = match snapshot {
            Some(s) => AdmissionQueue::restore(general_policy, None, &s.general, now),
            None => AdmissionQueue::new(general_policy, now),
        };
        let own = specs
            .into_iter()
            .map(|(concert, spec)| {
                let (policy, opening) = (spec.policy(general_policy), spec.opening());
                let room = match saved.get(&concert) {
                    Some(saved) => AdmissionQueue::restore(policy, opening, saved, now),
                    None => AdmissionQueue::with_opening(policy, opening, now),
                };
                (concert, room)
            })
            .collect();
        Self {
            general_policy,
            general,
            own,
        }
    }

    /// Opens a concert's room; a room already there is left as it is.
    pub fn add(&mut self, concert: ConcertId, spec: &RoomSpec, now: Timestamp) {
        let policy = spec.policy(self.general_policy);
        self.own
            .entry(concert)
            .or_insert_with(|| AdmissionQueue::with_opening(policy, spec.opening(), now));
    }

    pub fn room(&self, id: RoomId) -> Option<&AdmissionQueue> {
        match id {
            RoomId::General => Some(&self.general),
            RoomId::Concert(concert) => self.own.get(&concert),
        }
    }

    fn room_mut(&mut self, id: RoomId) -> Option<&mut AdmissionQueue> {
        match id {
            RoomId::General => Some(&mut self.general),
            RoomId::Concert(concert) => self.own.get_mut(&concert),
        }
    }

    /// Every room, the general one first.
    pub fn all(&self) -> impl Iterator<Item = (RoomId, &AdmissionQueue)> {
        std::iter::once((RoomId::General, &self.general))
            .chain(self.own.iter().map(|(c, q)| (RoomId::Concert(*c), q)))
    }

    /// A token of `room` (new, `true`, or the user's live one there), from the caller's random
    /// bits. A room that does not exist is `NotFound`.
    pub fn issue(
        &mut self,
        room: RoomId,
        user: UserId,
        random: u128,
        now: Timestamp,
    ) -> Result<(QueueStatus, bool), DomainError> {
        let queue = self.room_mut(room).ok_or(DomainError::NotFound)?;
        Ok(queue.issue(user, QueueTokenId::in_room(room, random), now))
    }

    /// The room a presented token belongs to: one that names no room is unknown.
    fn room_of(&self, token: QueueTokenId) -> Result<&AdmissionQueue, DomainError> {
        self.room(token.room())
            .ok_or(DomainError::QueueTokenInvalid)
    }

    pub fn poll(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        self.room_of(token)?.poll(token, user, now)
    }

    pub fn check_admitted(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.room_of(token)?.check_admitted(token, user, now)
    }

    /// A fresh token at the back of the ended token's own room.
    pub fn reissue(
        &mut self,
        ended: QueueTokenId,
        user: UserId,
        random: u128,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        let room = ended.room();
        let queue = self.room_mut(room).ok_or(DomainError::QueueTokenInvalid)?;
        queue.reissue(ended, user, QueueTokenId::in_room(room, random), now)
    }

    pub fn leave(
        &mut self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.room_mut(token.room())
            .ok_or(DomainError::QueueTokenInvalid)?
            .leave(token, user, now)
    }

    /// Whether the rooms take a share of `event` (`RoomsChange::made_by`).
    pub fn concerns(event: &Event) -> bool {
        RoomsChange::made_by(event).is_some()
    }

    /// Applies a committed event, live or on replay; twice changes nothing.
    pub fn apply(&mut self, event: &Event) {
        if let Some(change) = RoomsChange::made_by(event) {
            self.change(change);
        }
    }

    /// Applies the rooms' share of a committed event; twice changes nothing.
    pub fn change(&mut self, change: RoomsChange) {
        match change {
            // The bucket starts full whatever the time given, so any past instant will do.
            RoomsChange::Made { concert, spec } => self.add(concert, &spec, Timestamp(0)),
            RoomsChange::TokenPaid { token, at } => {
                if let Some(queue) = self.room_mut(token.room()) {
                    queue.end_paid(token, at);
                }
            }
        }
    }

    /// Ticks every room: openings that are due, sweeps, admissions.
    pub fn tick(&mut self, now: Timestamp) -> TickOutcome {
        let mut outcome = self.general.tick(now);
        for queue in self.own.values_mut() {
            let room = queue.tick(now);
            outcome.admitted.extend(room.admitted);
            outcome.dropped.extend(room.dropped);
            outcome.expired.extend(room.expired);
        }
        outcome
    }

    pub fn to_snapshot(&self) -> RoomsSnapshot {
        let mut own: Vec<(ConcertId, QueueSnapshot)> = self
            .own
            .iter()
            .map(|(c, q)| (*c, q.to_snapshot()))
            .collect();
        own.sort_by_key(|(c, _)| *c);
        RoomsSnapshot {
            general: self.general.to_snapshot(),
            own,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::domain::admission::Standing;

    const OPENS_AT: Timestamp = Timestamp(30_000);

    fn general_policy() -> QueuePolicy {
        QueuePolicy {
            max_active: 3,
            admit_per_second: 2,
            active_ttl_ms: 30_000,
            waiting_ttl_ms: 20_000,
            ended_tokens_max: 1_000,
        }
    }

    fn seed(n: u64) -> OpeningSeed {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        OpeningSeed(bytes)
    }

    /// Concert 1: its own limits, open at once. Concert 2: the general limits, an opening.
    fn rooms() -> Rooms {
        let specs = [
            (
                ConcertId(1),
                RoomSpec {
                    limits: Some(RoomLimits {
                        max_active: 2,
                        admit_per_second: 1,
                    }),
                    sale_opens_at: None,
                    seed: seed(1),
                },
            ),
            (
                ConcertId(2),
                RoomSpec {
                    limits: None,
                    sale_opens_at: Some(OPENS_AT),
                    seed: seed(2),
                },
            ),
        ];
        Rooms::restore(general_policy(), specs, None, Timestamp(0))
    }

    const ROOMS: [RoomId; 3] = [
        RoomId::General,
        RoomId::Concert(ConcertId(1)),
        RoomId::Concert(ConcertId(2)),
    ];

    fn standing(rooms: &Rooms, token: QueueTokenId, user: u64, now: Timestamp) -> Standing {
        match rooms.poll(token, UserId(user), now) {
            Ok(Lookup::Live(status)) => status.standing,
            other => panic!("{token} is not live: {other:?}"),
        }
    }

    #[test]
    fn a_token_names_its_room_in_its_own_bits() {
        for room in ROOMS {
            for random in [0, 1, u128::MAX, 0xdead_beef << 90] {
                let token = QueueTokenId::in_room(room, random);
                assert_eq!(token.room(), room);
                assert_eq!(token.to_string().parse::<QueueTokenId>(), Ok(token));
            }
        }
        assert_eq!(
            RoomId::Concert(ConcertId(2)).admits(QueueTokenId::in_room(ROOMS[1], 7)),
            Err(DomainError::QueueTokenWrongRoom)
        );
        assert_eq!(
            RoomId::General.admits(QueueTokenId::in_room(ROOMS[2], 7)),
            Err(DomainError::QueueTokenWrongRoom)
        );
        assert_eq!(ROOMS[2].admits(QueueTokenId::in_room(ROOMS[2], 7)), Ok(()));
        // A token of a room that does not exist is unknown, as any made-up token.
        let nowhere = QueueTokenId::in_room(RoomId::Concert(ConcertId(9)), 1);
        assert_eq!(
            rooms().poll(nowhere, UserId(1), Timestamp(0)),
            Err(DomainError::QueueTokenInvalid)
        );
        assert_eq!(
            rooms().issue(RoomId::Concert(ConcertId(9)), UserId(1), 1, Timestamp(0)),
            Err(DomainError::NotFound)
        );
    }

    #[test]
    fn before_the_opening_a_token_waits_in_the_pre_queue_and_is_never_dropped() {
        let mut rooms = rooms();
        let mut tokens = Vec::new();
        for user in 1..=3 {
            let (status, created) = rooms
                .issue(ROOMS[2], UserId(user), user.into(), Timestamp(1_000))
                .unwrap();
            assert!(created);
            tokens.push(status.token);
        }
        // A random place among 3 at 2 a second: half a second on average, rounded up.
        let now = Timestamp(10_000);
        assert_eq!(
            standing(&rooms, tokens[0], 1, now),
            Standing::PreQueue {
                size: 3,
                estimated_wait_seconds: 20 + 1
            }
        );
        let Ok(Lookup::Live(status)) = rooms.poll(tokens[0], UserId(1), now) else {
            panic!("live")
        };
        assert_eq!(status.expires_at, OPENS_AT.plus_millis(20_000));
        assert_eq!(
            rooms.check_admitted(tokens[0], UserId(1), now),
            Err(DomainError::NotAdmitted)
        );
        // Never polled, well past the waiting TTL: still there, and no one is let in early.
        rooms.tick(Timestamp(29_999));
        let room = rooms.room(ROOMS[2]).unwrap();
        assert_eq!((room.pre_queue_len(), room.active_len()), (3, 0));
        // The rule after the opening: dropped once the opening plus the TTL passes unpolled.
        rooms.tick(OPENS_AT);
        assert_eq!(rooms.room(ROOMS[2]).unwrap().pre_queue_len(), 0);
        let outcome = rooms.tick(OPENS_AT.plus_millis(20_000));
        let room = rooms.room(ROOMS[2]).unwrap();
        assert_eq!(
            room.waiting_len() + room.active_len() + outcome.dropped.len(),
            3
        );
        assert!(
            !outcome.dropped.is_empty(),
            "the silent waiters are dropped"
        );
    }

    #[test]
    fn the_opening_puts_the_pre_queue_in_the_seeds_order_ahead_of_everyone_later() {
        let mut rooms = rooms();
        let early: Vec<QueueTokenId> = (1..=8)
            .map(|user| {
                rooms
                    .issue(
                        ROOMS[2],
                        UserId(user),
                        u128::from(user) * 7919,
                        Timestamp(0),
                    )
                    .unwrap()
                    .0
                    .token
            })
            .collect();
        let (late, _) = rooms
            .issue(ROOMS[2], UserId(100), 5, OPENS_AT.plus_millis(10))
            .unwrap();
        assert!(matches!(late.standing, Standing::Waiting { .. }));
        let mut drawn = early.clone();
        drawn.sort_by_key(|t| seed(2).place_of(*t));
        let room = rooms.room(ROOMS[2]).unwrap();
        // Two were let in at once (a second's worth at 2 a second), in the drawn order.
        let admitted: HashSet<QueueTokenId> =
            room.to_snapshot().active.iter().map(|a| a.0).collect();
        assert_eq!(admitted, HashSet::from([drawn[0], drawn[1]]));
        let line: Vec<QueueTokenId> = room.waiting_in_order().collect();
        assert_eq!(line[..6], drawn[2..]);
        assert_eq!(line[6], late.token);
        for (i, token) in drawn.iter().enumerate().skip(2) {
            let user = early.iter().position(|t| t == token).unwrap() as u64 + 1;
            assert!(matches!(
                standing(&rooms, *token, user, OPENS_AT.plus_millis(10)),
                Standing::Waiting { position, .. } if position == i as u64 - 1
            ));
        }
        assert_ne!(
            drawn, early,
            "eight tokens are not left in arrival order by chance here"
        );
        assert_eq!(room.audit().order_violations, 0);
        assert_eq!(room.audit().admitted_total, 2);
    }

    #[test]
    fn a_restart_before_or_after_the_opening_keeps_its_order() {
        let mut live = rooms();
        for user in 1..=12 {
            live.issue(ROOMS[2], UserId(user), u128::from(user) << 40, Timestamp(0))
                .unwrap();
        }
        let before = live.to_snapshot();
        // Down across the opening: it happens at the first tick back, as drawn before.
        let specs: Vec<(ConcertId, RoomSpec)> = [(ConcertId(1), 1), (ConcertId(2), 2)]
            .into_iter()
            .map(|(c, n)| {
                let spec = RoomSpec {
                    limits: (n == 1).then_some(RoomLimits {
                        max_active: 2,
                        admit_per_second: 1,
                    }),
                    sale_opens_at: (n == 2).then_some(OPENS_AT),
                    seed: seed(n),
                };
                (c, spec)
            })
            .collect();
        let back_at = OPENS_AT.plus_millis(5_000);
        let mut restored = Rooms::restore(general_policy(), specs.clone(), Some(&before), back_at);
        assert_eq!(restored.room(ROOMS[2]).unwrap().pre_queue_len(), 12);
        restored.tick(back_at);
        live.tick(back_at);
        let order = |r: &Rooms| {
            let room = r.room(ROOMS[2]).unwrap();
            let mut all: Vec<(QueueTokenId, UserId, Timestamp)> = room.to_snapshot().active;
            all.sort_by_key(|(t, _, _)| seed(2).place_of(*t));
            (
                all.iter().map(|(t, ..)| *t).collect::<Vec<_>>(),
                room.waiting_in_order().collect::<Vec<_>>(),
            )
        };
        assert_eq!(order(&restored), order(&live));
        // A graceful restart after the opening: every room exactly as it was, never reopened.
        let after = live.to_snapshot();
        let mut again = Rooms::restore(general_policy(), specs, Some(&after), back_at);
        assert_eq!(again.to_snapshot(), after);
        again.tick(back_at);
        assert_eq!(again.to_snapshot(), after);
    }

    /// Wilson–Hilferty: the chi-square quantile of `dof` degrees of freedom at the standard
    /// normal quantile `z` (within 0.5% of the exact value for these sizes).
    fn chi_square_quantile(dof: f64, z: f64) -> f64 {
        let c = 2.0 / (9.0 * dof);
        dof * (1.0 - c + z * c.sqrt()).powi(3)
    }

    /// Over 12,000 openings of a pre-queue of five, each drawn from its own fixed seed with
    /// tokens of their own: every order of the five comes up as often as chance allows, each
    /// arrival lands in each place as often, and place is not correlated with arrival.
    ///
    /// Each of the three checks is at significance 0.001: were the seeds drawn afresh on every
    /// run, a perfect shuffle would fail this test at most 0.3% of the time. With the seeds
    /// fixed, the outcome is the same on every run.
    #[test]
    fn the_openings_order_is_uniform_and_independent_of_arrival() {
        const N: usize = 5;
        const OPENINGS: u64 = 12_000;
        const Z_999: f64 = 3.0902;
        let policy = QueuePolicy {
            max_active: 1,
            admit_per_second: 1,
            ..general_policy()
        };
        let mut by_order: BTreeMap<Vec<usize>, u64> = BTreeMap::new();
        let mut by_place = [[0u64; N]; N];
        let mut rho_sum = 0.0;
        for opening in 0..OPENINGS {
            let spec = RoomSpec {
                limits: None,
                sale_opens_at: Some(OPENS_AT),
                seed: seed(1_000_000 + opening),
            };
            let mut room = AdmissionQueue::with_opening(policy, spec.opening(), Timestamp(0));
            // Made-up random bits, distinct per opening, arriving in index order.
            let arrivals: Vec<QueueTokenId> = (0..N as u64)
                .map(|i| {
                    let bits = (opening * 31 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    room.issue(
                        UserId(i + 1),
                        QueueTokenId::general(u128::from(bits)),
                        Timestamp(i as i64),
                    )
                    .0
                    .token
                })
                .collect();
            room.tick(OPENS_AT);
            let active: Vec<QueueTokenId> = room.to_snapshot().active.iter().map(|a| a.0).collect();
            let line: Vec<QueueTokenId> =
                active.into_iter().chain(room.waiting_in_order()).collect();
            let places: Vec<usize> = arrivals
                .iter()
                .map(|t| {
                    line.iter()
                        .position(|l| l == t)
                        .expect("everyone is in line")
                })
                .collect();
            for (arrival, place) in places.iter().enumerate() {
                by_place[arrival][*place] += 1;
            }
            let d2: f64 = places
                .iter()
                .enumerate()
                .map(|(a, p)| (a as f64 - *p as f64).powi(2))
                .sum();
            rho_sum += 1.0 - 6.0 * d2 / (N * (N * N - 1)) as f64;
            *by_order.entry(places).or_default() += 1;
        }
        let orders = (1..=N).product::<usize>() as f64;
        let expected = OPENINGS as f64 / orders;
        assert_eq!(by_order.len() as f64, orders, "every order comes up");
        let chi_orders: f64 = by_order
            .values()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum();
        let limit = chi_square_quantile(orders - 1.0, Z_999);
        assert!(
            chi_orders < limit,
            "orders: chi-square {chi_orders:.1} ≥ {limit:.1}"
        );

        let expected = OPENINGS as f64 / N as f64;
        let chi_places: f64 = by_place
            .iter()
            .flatten()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum();
        let limit = chi_square_quantile(((N - 1) * (N - 1)) as f64, Z_999);
        assert!(
            chi_places < limit,
            "places: chi-square {chi_places:.1} ≥ {limit:.1}"
        );

        // Spearman's rho of one opening of five has variance 1/(N-1) when place and arrival
        // are independent; the mean over all openings is then within 3.29 of its standard
        // deviations from 0 at significance 0.001, two-sided.
        let mean_rho = rho_sum / OPENINGS as f64;
        let bound = 3.29 * (1.0 / (N as f64 - 1.0) / OPENINGS as f64).sqrt();
        assert!(
            mean_rho.abs() < bound,
            "rank correlation {mean_rho:.4} beyond ±{bound:.4}"
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Issue { room: usize, user: u64 },
        Poll { room: usize, user: u64 },
        Leave { room: usize, user: u64 },
        Pay { room: usize, user: u64 },
        Wait { ms: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 1..12u64).prop_map(|(room, user)| Step::Issue { room, user }),
            3 => (0..3usize, 1..12u64).prop_map(|(room, user)| Step::Poll { room, user }),
            1 => (0..3usize, 1..12u64).prop_map(|(room, user)| Step::Leave { room, user }),
            1 => (0..3usize, 1..12u64).prop_map(|(room, user)| Step::Pay { room, user }),
            3 => (0..15_000i64).prop_map(|ms| Step::Wait { ms }),
        ]
    }

    /// The same steps, applied to the rooms together and to each room alone.
    struct Run {
        rooms: Rooms,
        alone: Vec<AdmissionQueue>,
        tokens: HashMap<(usize, u64), QueueTokenId>,
        /// Tokens taken in room 2 before its opening, and the ones taken after it.
        pre_queue: HashSet<QueueTokenId>,
        now: Timestamp,
        random: u128,
    }

    impl Run {
        fn new() -> Self {
            let rooms = rooms();
            let alone = ROOMS
                .iter()
                .map(|room| {
                    let q = rooms.room(*room).unwrap();
                    AdmissionQueue::with_opening(q.policy(), q.opening(), Timestamp(0))
                })
                .collect();
            Self {
                rooms,
                alone,
                tokens: HashMap::new(),
                pre_queue: HashSet::new(),
                now: Timestamp(0),
                random: 0,
            }
        }

        /// What admission must do at the next tick of `room`: take the head of its line,
        /// up to its free places.
        fn line_of(&self, room: usize) -> Vec<QueueTokenId> {
            self.rooms
                .room(ROOMS[room])
                .unwrap()
                .waiting_in_order()
                .collect()
        }

        fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
            let lines: Vec<Vec<QueueTokenId>> = (0..3).map(|r| self.line_of(r)).collect();
            let mut dropped = Vec::new();
            let admitted = match *step {
                Step::Issue { room, user } => {
                    self.random += 1;
                    let was_open = self.rooms.room(ROOMS[room]).unwrap().is_open();
                    let together =
                        self.rooms
                            .issue(ROOMS[room], UserId(user), self.random, self.now);
                    let alone = self.alone[room].issue(
                        UserId(user),
                        QueueTokenId::in_room(ROOMS[room], self.random),
                        self.now,
                    );
                    let (status, created) = together.expect("the room exists");
                    prop_assert_eq!((status, created), alone);
                    if created && !was_open && self.now < OPENS_AT {
                        self.pre_queue.insert(status.token);
                    }
                    self.tokens.insert((room, user), status.token);
                    Vec::new()
                }
                Step::Poll { room, user }
                | Step::Leave { room, user }
                | Step::Pay { room, user } => {
                    let Some(&token) = self.tokens.get(&(room, user)) else {
                        return Ok(());
                    };
                    match step {
                        Step::Poll { .. } => {
                            let together = self.rooms.poll(token, UserId(user), self.now);
                            prop_assert_eq!(
                                &together,
                                &self.alone[room].poll(token, UserId(user), self.now)
                            );
                            if let Ok(Lookup::Live(status)) = together {
                                if let Standing::Waiting { position, .. } = status.standing {
                                    let at = lines[room].iter().position(|t| *t == token);
                                    prop_assert_eq!(
                                        Some(position as usize - 1),
                                        at,
                                        "positions are exact"
                                    );
                                }
                            }
                        }
                        Step::Leave { .. } => {
                            let together = self.rooms.leave(token, UserId(user), self.now);
                            prop_assert_eq!(
                                together,
                                self.alone[room].leave(token, UserId(user), self.now)
                            );
                        }
                        _ => {
                            self.rooms.change(RoomsChange::TokenPaid {
                                token,
                                at: self.now,
                            });
                            self.alone[room].end_paid(token, self.now);
                        }
                    }
                    Vec::new()
                }
                Step::Wait { ms } => {
                    self.now = self.now.plus_millis(ms);
                    let together = self.rooms.tick(self.now);
                    let mut alone = Vec::new();
                    for queue in &mut self.alone {
                        alone.extend(queue.tick(self.now).admitted);
                    }
                    let mut both = together.admitted.clone();
                    both.sort();
                    alone.sort();
                    prop_assert_eq!(both, alone);
                    dropped = together.dropped;
                    together.admitted
                }
            };
            for (room, id) in ROOMS.iter().enumerate() {
                let queue = self.rooms.room(*id).unwrap();
                prop_assert!(queue.active_len() <= queue.policy().max_active as usize);
                prop_assert_eq!(queue.audit().order_violations, 0);
                prop_assert_eq!(
                    queue.to_snapshot(),
                    self.alone[room].to_snapshot(),
                    "room {} differs from itself alone",
                    room
                );
                // Admission takes the head of the line as it stood (less the silent waiters the
                // same tick dropped), in order; an opening in the same tick puts its pre-queue
                // ahead of that line.
                let here: Vec<QueueTokenId> = admitted
                    .iter()
                    .copied()
                    .filter(|t| t.room() == *id)
                    .collect();
                let stood: Vec<QueueTokenId> = lines[room]
                    .iter()
                    .copied()
                    .filter(|t| !dropped.contains(t))
                    .collect();
                let opened_now = here.iter().any(|t| !lines[room].contains(t));
                if !opened_now {
                    prop_assert!(here.len() <= stood.len());
                    prop_assert_eq!(
                        &here[..],
                        &stood[..here.len()],
                        "admitted from the head of the line"
                    );
                }
                // Every pre-queue token stands ahead of every later one.
                let line = self.line_of(room);
                let drawn: Vec<(u128, QueueTokenId)> = line
                    .iter()
                    .filter(|t| self.pre_queue.contains(t))
                    .map(|t| seed(2).place_of(*t))
                    .collect();
                prop_assert!(
                    drawn.is_sorted(),
                    "the pre-queue stands in the seed's order"
                );
                if let Some(first_later) = line.iter().position(|t| !self.pre_queue.contains(t)) {
                    prop_assert!(
                        line[first_later..]
                            .iter()
                            .all(|t| !self.pre_queue.contains(t)),
                        "a later token is ahead of a pre-queue token"
                    );
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn every_room_admits_within_its_cap_in_line_order_and_alone(steps in prop::collection::vec(step(), 1..160)) {
            let mut run = Run::new();
            for step in &steps {
                run.apply(step)?;
            }
        }
    }
}
