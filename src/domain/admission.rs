//! The waiting room: a FIFO line of tokens, admitted while fewer than `max_active` are active
//! and at most `admit_per_second` per second (a token bucket with one second of burst).
//!
//! Positions are exact and cost O(log n): a Fenwick tree counts waiting tokens by their place in
//! line. Polls only read (behind the owner's read lock) and stamp the token's last poll in an
//! atomic, so a million pollers never queue behind the owner's mailbox.
//!
//! A waiter's estimate is when its place frees, not only how fast tokens were let in lately: with
//! every place taken, the p-th in line gets the p-th place to free, and places free when
//! admissions reach their `expires_at` (or sooner, at the recent rate of payments and leaves).
//! Admissions are made in line order with one TTL, so their expiries are in line order too: a
//! second Fenwick tree over the active tokens' places finds the p-th earliest in O(log n).
//!
//! A room with a sale opening keeps the tokens taken before it in a **pre-queue**. At the
//! opening they are put in line ahead of everyone who comes later, in the order of a keyed hash
//! of each token under the room's seed (`OpeningSeed`): a uniformly random permutation that
//! the seed fixes once and for all, so the order of any two tokens never changes, whatever
//! restarts happen, and arriving early buys nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use foldhash::fast::RandomState;
use sha2::{Digest, Sha256};

use super::error::DomainError;
use super::events::Event;
use super::types::*;

/// How long an ended token is remembered so that presenting it gets a fresh token (`reissued`)
/// rather than 401; past this it is unknown.
const RETIRED_TOKEN_MEMORY_MS: i64 = 3_600_000;

/// The window over which the admission rate, and the rate of admissions ended early (payments,
/// leaves) behind estimates, are measured.
const RATE_WINDOW_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    pub max_active: u32,
    pub admit_per_second: u32,
    pub active_ttl_ms: i64,
    pub waiting_ttl_ms: i64,
    /// At most this many ended tokens are remembered (about 85 bytes each at the cap): past it
    /// the oldest are forgotten first, whatever the rate of payments and expiries. A token whose
    /// holder left keeps its place in that order, and counts, until its turn.
    pub ended_tokens_max: usize,
}

/// A waiting-room token: 128 random bits from the caller's CSPRNG (the domain never makes
/// randomness itself) and the room it belongs to, which it names itself.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct QueueTokenId {
    /// The secret in two halves, so a token is 24 bytes rather than a `u128`'s 32: it is a key
    /// of several maps of every waiting room.
    secret: [u64; 2],
    /// 0 for the general room, else the concert's id.
    room: u32,
}

impl QueueTokenId {
    /// A token of the general room.
    pub const fn general(secret: u128) -> Self {
        Self {
            secret: [(secret >> 64) as u64, secret as u64],
            room: 0,
        }
    }

    /// A token of `room` made of the caller's random bits.
    pub fn in_room(room: RoomId, secret: u128) -> Self {
        let room = match room {
            RoomId::General => 0,
            RoomId::Concert(concert) => concert.0,
        };
        Self {
            room,
            ..Self::general(secret)
        }
    }

    fn with_room(self, room: u32) -> Self {
        Self { room, ..self }
    }

    /// The random bits.
    pub fn secret(self) -> u128 {
        (u128::from(self.secret[0]) << 64) | u128::from(self.secret[1])
    }

    /// The room this token belongs to, read off the token itself.
    pub fn room(self) -> RoomId {
        match self.room {
            0 => RoomId::General,
            concert => RoomId::Concert(ConcertId(concert)),
        }
    }
}

/// A waiting room: the general one, or a concert's own.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RoomId {
    General,
    Concert(ConcertId),
}

impl RoomId {
    /// The concert whose room this is; `None` for the general room.
    pub fn concert(self) -> Option<ConcertId> {
        match self {
            Self::General => None,
            Self::Concert(concert) => Some(concert),
        }
    }

    /// A token is good only in its own room: seats, holds, payments and streams of a date
    /// accept a token of the room of the date's concert.
    pub fn admits(self, token: QueueTokenId) -> Result<(), DomainError> {
        if token.room() == self {
            Ok(())
        } else {
            Err(DomainError::QueueTokenWrongRoom)
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::General => f.write_str("general"),
            Self::Concert(concert) => write!(f, "{concert}"),
        }
    }
}

/// 256 bits from the caller's CSPRNG, drawn once when a room with an opening is made and
/// logged with it: the pre-queue's order at the opening is the order of
/// `SHA-256(seed ‖ token)`, so it is fixed before anyone joins and never drawn again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct OpeningSeed(pub [u8; 32]);

impl OpeningSeed {
    /// Where `token` stands in the opened line relative to the rest of the pre-queue: lower
    /// first. Ties (two equal 128-bit draws) fall back to the token itself.
    pub fn place_of(&self, token: QueueTokenId) -> (u128, QueueTokenId) {
        let digest = Sha256::new()
            .chain_update(self.0)
            .chain_update(token.secret().to_be_bytes())
            .chain_update(token.room.to_be_bytes())
            .finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        (u128::from_be_bytes(first), token)
    }
}

/// When a room's sale opens, and the seed that orders its pre-queue then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub at: Timestamp,
    pub seed: OpeningSeed,
}

/// `q` and 32 lowercase hex digits of the secret; a concert's room adds `-` and its number.
impl fmt::Display for QueueTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{:032x}", self.secret())?;
        if self.room != 0 {
            write!(f, "-{}", self.room)?;
        }
        Ok(())
    }
}

impl FromStr for QueueTokenId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let rest = s.strip_prefix('q').ok_or(())?;
        let (hex, room) = match rest.split_once('-') {
            None => (rest, 0),
            Some((hex, room)) => {
                let canonical = !room.starts_with('0') && room.bytes().all(|b| b.is_ascii_digit());
                let room: u32 = room.parse().map_err(|_| ())?;
                if !canonical || room == 0 {
                    return Err(());
                }
                (hex, room)
            }
        };
        if hex.len() != 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(());
        }
        let secret = u128::from_str_radix(hex, 16).map_err(|_| ())?;
        Ok(Self::general(secret).with_room(room))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    /// Taken before the room's opening: no place in line until then.
    PreQueue,
    Waiting,
    Active {
        expires_at: Timestamp,
    },
    /// Admission ended, the token was dropped for not polling, or its holder paid.
    Ended,
}

#[derive(Debug)]
struct TokenRecord {
    user: UserId,
    seq: u64,
    state: TokenState,
    last_poll_ms: AtomicI64,
    /// When it joined the line (or the opening put it there): its wait is counted from here.
    queued_at: Timestamp,
}

impl TokenRecord {
    fn waiting_deadline(&self, policy: &QueuePolicy) -> Timestamp {
        Timestamp(self.last_poll_ms.load(Ordering::Relaxed)).plus_millis(policy.waiting_ttl_ms)
    }

    /// The state as of `now`, counting deadlines that passed before the owner swept them.
    fn state_at(&self, now: Timestamp, policy: &QueuePolicy) -> TokenState {
        match self.state {
            TokenState::Active { expires_at } if expires_at <= now => TokenState::Ended,
            TokenState::Waiting if self.waiting_deadline(policy) <= now => TokenState::Ended,
            state => state,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Before the room's opening: `size` tokens wait for their places to be drawn.
    PreQueue {
        size: u64,
        estimated_wait_seconds: u64,
    },
    Waiting {
        position: u64,
        estimated_wait_seconds: u64,
    },
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    pub token: QueueTokenId,
    pub standing: Standing,
    pub expires_at: Timestamp,
    pub poll_after_seconds: u64,
}

/// What presenting a token finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Live(QueueStatus),
    /// It ended (expired, dropped or paid): the holder may be reissued a token at the back.
    Ended,
}

/// The waiting room as saved: who waits in which order and who is admitted until when.
/// Polls and retired tokens are not kept; see `AdmissionQueue::restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// In line order, each with when it joined the line.
    pub waiting: Vec<(QueueTokenId, UserId, Timestamp)>,
    pub active: Vec<(QueueTokenId, UserId, Timestamp)>,
    /// Tokens taken before the opening, while it is still ahead; their order is the seed's.
    pub pre_queue: Vec<(QueueTokenId, UserId)>,
    pub opened: bool,
    pub audit: AdmissionAudit,
    /// The admission bucket (thousandths of an admission) and when it was last filled, so a
    /// quick restart neither bursts nor stalls.
    pub credit: (u64, Timestamp),
}

/// A room's figures: `AdmissionQueue::report`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoomReport {
    pub sale_opens_at: Option<Timestamp>,
    pub pre_queue: u64,
    pub waiting: u64,
    pub active: u64,
    pub admitted_total: u64,
    pub order_violations: u64,
    /// `None` until someone is admitted.
    pub wait_ms_p50: Option<f64>,
    pub wait_ms_p99: Option<f64>,
}

/// What lets anyone check that a room admitted fairly: how many it let in, how many of those
/// passed a token still waiting ahead of them (never any), and how long they waited.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionAudit {
    pub admitted_total: u64,
    pub order_violations: u64,
    pub waits: WaitHistogram,
}

/// Waits in milliseconds, in buckets within 1/8 of their value (exact below 16 ms): bounded
/// memory however many are admitted, and percentiles good to about 6%.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitHistogram {
    counts: Vec<u64>,
}

impl WaitHistogram {
    const EXACT: u64 = 16;
    const SUB_BUCKETS: u64 = 8;

    fn bucket_of(ms: u64) -> usize {
        if ms < Self::EXACT {
            return ms as usize;
        }
        let exponent = u64::from(63 - ms.leading_zeros());
        let sub = (ms >> (exponent - 3)) & (Self::SUB_BUCKETS - 1);
        (Self::EXACT + (exponent - 4) * Self::SUB_BUCKETS + sub) as usize
    }

    /// The middle of a bucket's range of milliseconds.
    fn value_of(bucket: usize) -> f64 {
        let bucket = bucket as u64;
        if bucket < Self::EXACT {
            return bucket as f64;
        }
        let exponent = (bucket - Self::EXACT) / Self::SUB_BUCKETS + 4;
        let sub = (bucket - Self::EXACT) % Self::SUB_BUCKETS;
        let width = 1u64 << (exponent - 3);
        let low = (1u64 << exponent) + sub * width;
        low as f64 + (width as f64 - 1.0) / 2.0
    }

    pub fn record(&mut self, ms: u64) {
        let bucket = Self::bucket_of(ms);
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The wait, in milliseconds, that a share `q` (0–1) of the recorded waits do not pass.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value_of(bucket));
            }
        }
        None
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickOutcome {
    pub admitted: Vec<QueueTokenId>,
    pub dropped: Vec<QueueTokenId>,
    pub expired: Vec<QueueTokenId>,
}

/// Counts of waiting tokens by place in line. Index `i` stands for sequence `base + i`.
#[derive(Debug, Default)]
struct Fenwick {
    base: u64,
    tree: Vec<u32>,
}

impl Fenwick {
    fn covers(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < self.tree.len() as u64
    }

    fn add(&mut self, seq: u64, delta: i32) {
        let mut i = (seq - self.base) as usize;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i |= i + 1;
        }
    }

    /// Waiting tokens with sequence ≤ `seq`.
    fn prefix(&self, seq: u64) -> u64 {
        let mut k = (seq - self.base) as usize + 1;
        let mut sum = 0u64;
        while k > 0 {
            sum += self.tree[k - 1] as u64;
            k &= k - 1;
        }
        sum
    }

    /// The sequence of the `k`-th counted entry (from 1) in sequence order, if there are `k`.
    fn select(&self, mut k: u64) -> Option<u64> {
        let n = self.tree.len();
        if k == 0 || n == 0 {
            return None;
        }
        // Descends by powers of two to the longest prefix that counts fewer than `k`.
        let mut prefix = 0usize;
        let mut step = 1usize << (usize::BITS - 1 - n.leading_zeros());
        while step > 0 {
            let next = prefix + step;
            if next <= n && u64::from(self.tree[next - 1]) < k {
                prefix = next;
                k -= u64::from(self.tree[next - 1]);
            }
            step >>= 1;
        }
        (prefix < n).then(|| self.base + prefix as u64)
    }

    /// Makes room to count `seq`, which is past every sequence counted so far: past the end,
    /// the tree is rebuilt from `live` (the sequences counted now, ascending).
    fn make_room(&mut self, seq: u64, live: impl Iterator<Item = u64> + Clone) {
        if self.covers(seq) {
            return;
        }
        let base = live.clone().next().unwrap_or(seq);
        let capacity = ((seq - base + 1) as usize * 2).max(1024);
        *self = Self::rebuild(base, capacity, live);
    }

    fn rebuild(base: u64, capacity: usize, seqs: impl Iterator<Item = u64>) -> Self {
        let mut tree = vec![0u32; capacity];
        for seq in seqs {
            tree[(seq - base) as usize] += 1;
        }
        for i in 0..capacity {
            let parent = i | (i + 1);
            if parent < capacity {
                tree[parent] += tree[i];
            }
        }
        Self { base, tree }
    }
}

#[derive(Debug)]
pub struct AdmissionQueue {
    policy: QueuePolicy,
    opening: Option<Opening>,
    opened: bool,
    /// Tokens taken before the opening, in the order the opening will put them in line.
    pre_queue: BTreeSet<(u128, QueueTokenId)>,
    audit: AdmissionAudit,
    /// Waiting and active tokens (an active one past its expiry until the sweep ends it).
    /// Keys here and below are the server's own (random tokens, user ids; a client only looks
    /// one up), so a fast hasher is safe; a sale's polls and its opening are lookups in these.
    tokens: HashMap<QueueTokenId, TokenRecord, RandomState>,
    /// Ended tokens and their holders: all that answering `reissued` or `forbidden` needs.
    ended: HashMap<QueueTokenId, UserId, RandomState>,
    live_by_user: HashMap<UserId, QueueTokenId, RandomState>,
    waiting: BTreeMap<u64, QueueTokenId>,
    ranks: Fenwick,
    /// When to look again at a waiting token's last poll; re-armed if it polled since.
    poll_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    active: BTreeSet<(Timestamp, QueueTokenId)>,
    /// Active tokens by place in line, which is the order they were admitted in, and (with one
    /// TTL) the order they expire in.
    active_by_seq: BTreeMap<u64, Timestamp>,
    active_ranks: Fenwick,
    retired: VecDeque<(Timestamp, QueueTokenId)>,
    next_seq: u64,
    credit_milli: u64,
    credit_at: Timestamp,
    recent_admissions: VecDeque<Timestamp>,
    /// When active tokens ended before their expiry (payments, leaves), over the last window.
    recent_early_ends: VecDeque<Timestamp>,
}

impl AdmissionQueue {
    pub fn new(policy: QueuePolicy, now: Timestamp) -> Self {
        Self::with_opening(policy, None, now)
    }

    /// A room whose sale opens at `opening.at`: tokens taken before then wait in the pre-queue.
    pub fn with_opening(policy: QueuePolicy, opening: Option<Opening>, now: Timestamp) -> Self {
        Self {
            policy,
            opening,
            opened: opening.is_none(),
            pre_queue: BTreeSet::new(),
            audit: AdmissionAudit::default(),
            tokens: HashMap::default(),
            ended: HashMap::default(),
            live_by_user: HashMap::default(),
            waiting: BTreeMap::new(),
            ranks: Fenwick::default(),
            poll_deadlines: BinaryHeap::new(),
            active: BTreeSet::new(),
            active_by_seq: BTreeMap::new(),
            active_ranks: Fenwick::default(),
            retired: VecDeque::new(),
            next_seq: 1,
            credit_milli: policy.admit_per_second as u64 * 1000,
            credit_at: now,
            recent_admissions: VecDeque::new(),
            recent_early_ends: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> QueuePolicy {
        self.policy
    }
    pub fn opening(&self) -> Option<Opening> {
        self.opening
    }
    /// Whether the sale has opened (always, for a room without an opening).
    pub fn is_open(&self) -> bool {
        self.opened
    }
    pub fn pre_queue_len(&self) -> usize {
        self.pre_queue.len()
    }
    pub fn audit(&self) -> &AdmissionAudit {
        &self.audit
    }

    /// The room's figures for its operators, as of the last tick.
    pub fn report(&self) -> RoomReport {
        RoomReport {
            sale_opens_at: self.opening.map(|o| o.at),
            pre_queue: self.pre_queue.len() as u64,
            waiting: self.waiting.len() as u64,
            active: self.active.len() as u64,
            admitted_total: self.audit.admitted_total,
            order_violations: self.audit.order_violations,
            wait_ms_p50: self.audit.waits.quantile_ms(0.5),
            wait_ms_p99: self.audit.waits.quantile_ms(0.99),
        }
    }
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
    /// Every token remembered: waiting, active, and ended ones kept to answer `reissued`.
    pub fn remembered_len(&self) -> usize {
        self.tokens.len() + self.ended.len()
    }
    /// Active tokens as of the last sweep.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Takes a place in line, or returns the user's live token (counted as a poll).
    /// Returns the status and whether a new token was issued.
    pub fn issue(
        &mut self,
        user: UserId,
        fresh: QueueTokenId,
        now: Timestamp,
    ) -> (QueueStatus, bool) {
        self.tick(now);
        if let Some(existing) = self.live_by_user.get(&user).copied() {
            if let Ok(Lookup::Live(status)) = self.poll(existing, user, now) {
                return (status, false);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let before_opening = !self.opened;
        self.tokens.insert(
            fresh,
            TokenRecord {
                user,
                seq,
                state: if before_opening {
                    TokenState::PreQueue
                } else {
                    TokenState::Waiting
                },
                last_poll_ms: AtomicI64::new(now.as_millis()),
                queued_at: now,
            },
        );
        self.live_by_user.insert(user, fresh);
        if let Some(opening) = self.opening.filter(|_| before_opening) {
            self.pre_queue.insert(opening.seed.place_of(fresh));
        } else if self.waiting.is_empty() && self.may_admit_one() {
            self.activate(fresh, now);
        } else {
            self.enqueue(seq, fresh, now);
        }
        let status = match self.poll(fresh, user, now) {
            Ok(Lookup::Live(status)) => status,
            _ => unreachable!("a token issued at `now` is live at `now`"),
        };
        (status, true)
    }

    /// Reads a token's status and counts the read as a poll. Needs only `&self`.
    pub fn poll(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        let Some(record) = self.owned(token, user)? else {
            return Ok(Lookup::Ended);
        };
        match record.state_at(now, &self.policy) {
            TokenState::Ended => Ok(Lookup::Ended),
            TokenState::Active { expires_at } => Ok(Lookup::Live(QueueStatus {
                token,
                standing: Standing::Active,
                expires_at,
                poll_after_seconds: 30,
            })),
            TokenState::PreQueue => {
                let opens_at = self.opening.map_or(now, |o| o.at);
                let size = self.pre_queue.len() as u64;
                // A random place in the pre-queue is, on average, its middle.
                let drawn_place_ms = (size + 1)
                    .saturating_mul(1000)
                    .div_ceil(2 * u64::from(self.policy.admit_per_second.max(1)));
                let estimated_wait_seconds = now
                    .seconds_until(opens_at)
                    .saturating_add(drawn_place_ms.div_ceil(1000));
                Ok(Lookup::Live(QueueStatus {
                    token,
                    standing: Standing::PreQueue {
                        size,
                        estimated_wait_seconds,
                    },
                    expires_at: opens_at.plus_millis(self.policy.waiting_ttl_ms),
                    poll_after_seconds: now.seconds_until(opens_at).clamp(1, 5),
                }))
            }
            TokenState::Waiting => {
                record
                    .last_poll_ms
                    .fetch_max(now.as_millis(), Ordering::Relaxed);
                let position = self.ranks.prefix(record.seq);
                let estimated_wait_seconds = self.estimated_wait_seconds(position, now);
                Ok(Lookup::Live(QueueStatus {
                    token,
                    standing: Standing::Waiting {
                        position,
                        estimated_wait_seconds,
                    },
                    expires_at: record.waiting_deadline(&self.policy),
                    poll_after_seconds: estimated_wait_seconds.clamp(1, 5),
                }))
            }
        }
    }

    /// The check behind every request that needs an admitted buyer.
    pub fn check_admitted(
        &self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let Some(record) = self.owned(token, user)? else {
            return Err(DomainError::QueueTokenExpired);
        };
        match record.state_at(now, &self.policy) {
            TokenState::Active { .. } => Ok(()),
            TokenState::PreQueue | TokenState::Waiting => Err(DomainError::NotAdmitted),
            TokenState::Ended => Err(DomainError::QueueTokenExpired),
        }
    }

    /// The user's token: its record while it is live, `None` once it has ended.
    fn owned(
        &self,
        token: QueueTokenId,
        user: UserId,
    ) -> Result<Option<&TokenRecord>, DomainError> {
        let (holder, record) = match (self.tokens.get(&token), self.ended.get(&token)) {
            (Some(record), _) => (record.user, Some(record)),
            (None, Some(holder)) => (*holder, None),
            (None, None) => return Err(DomainError::QueueTokenInvalid),
        };
        if holder != user {
            return Err(DomainError::Forbidden);
        }
        Ok(record)
    }

    /// Replaces an ended token with a fresh one at the back of the line.
    pub fn reissue(
        &mut self,
        ended: QueueTokenId,
        user: UserId,
        fresh: QueueTokenId,
        now: Timestamp,
    ) -> Result<Lookup, DomainError> {
        self.tick(now);
        match self.poll(ended, user, now)? {
            Lookup::Live(status) => Ok(Lookup::Live(status)),
            Lookup::Ended => Ok(Lookup::Live(self.issue(user, fresh, now).0)),
        }
    }

    /// The holder leaves the line; the token becomes unknown.
    pub fn leave(
        &mut self,
        token: QueueTokenId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.owned(token, user)?;
        self.end_early(token, now);
        self.ended.remove(&token);
        self.tick(now);
        Ok(())
    }

    /// A payment ends the payer's admission and frees its place for the next in line.
    /// The token a committed event ends, and when: a payment ends the token it was made with.
    pub fn token_ended_by(event: &Event) -> Option<(QueueTokenId, Timestamp)> {
        match event {
            Event::PaymentCompleted {
                queue_token: Some(token),
                at,
                ..
            } => Some((*token, *at)),
            _ => None,
        }
    }

    /// Applies a committed event (`token_ended_by`), live or on replay after a snapshot. A token
    /// already ended, or unknown, is left alone, so applying an event twice changes nothing.
    /// Its place is taken at the next tick.
    pub fn apply(&mut self, event: &Event) {
        if let Some((token, at)) = Self::token_ended_by(event) {
            self.end_paid(token, at);
        }
    }

    /// `apply` for the token and time `token_ended_by` read off the event.
    pub fn end_paid(&mut self, token: QueueTokenId, at: Timestamp) {
        if self.tokens.contains_key(&token) {
            self.end_early(token, at);
        }
    }

    /// Sweeps ended admissions and silent waiters, then admits from the head of the line.
    pub fn tick(&mut self, now: Timestamp) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        self.open_if_due(now);
        self.refill(now);
        while let Some(&(expires_at, token)) = self.active.first() {
            if expires_at > now {
                break;
            }
            self.end(token, now);
            outcome.expired.push(token);
        }
        while let Some(&Reverse((deadline, seq))) = self.poll_deadlines.peek() {
            if deadline > now {
                break;
            }
            self.poll_deadlines.pop();
            let Some(&token) = self.waiting.get(&seq) else {
                continue;
            };
            let actual = self.tokens[&token].waiting_deadline(&self.policy);
            if actual <= now {
                self.end(token, now);
                outcome.dropped.push(token);
            } else {
                self.poll_deadlines.push(Reverse((actual, seq)));
            }
        }
        while let Some((&seq, &token)) = self.waiting.first_key_value() {
            if self.tokens[&token].waiting_deadline(&self.policy) <= now {
                // Silent past its deadline: drop it rather than admit it.
                self.end(token, now);
                outcome.dropped.push(token);
                continue;
            }
            if !self.may_admit_one() {
                break;
            }
            self.waiting.remove(&seq);
            self.ranks.add(seq, -1);
            self.activate(token, now);
            outcome.admitted.push(token);
        }
        while let Some(&(at, token)) = self.retired.front() {
            let crowded = self.retired.len() > self.policy.ended_tokens_max;
            if at.plus_millis(RETIRED_TOKEN_MEMORY_MS) > now && !crowded {
                break;
            }
            self.retired.pop_front();
            self.ended.remove(&token);
        }
        outcome
    }

    /// At (or after) the opening, the pre-queue goes into line in the seed's order, ahead of
    /// every later token, and its waiting rules start: none is dropped before `at` plus the
    /// waiting TTL, and its wait counts from now.
    fn open_if_due(&mut self, now: Timestamp) {
        let Some(opening) = self.opening else {
            return;
        };
        if self.opened || now < opening.at {
            return;
        }
        self.opened = true;
        let drawn = std::mem::take(&mut self.pre_queue);
        let mut placed = Vec::with_capacity(drawn.len());
        for (_, token) in drawn {
            let seq = self.next_seq;
            self.next_seq += 1;
            let record = self
                .tokens
                .get_mut(&token)
                .expect("a pre-queue token is known");
            record.seq = seq;
            record.state = TokenState::Waiting;
            record.queued_at = now;
            record
                .last_poll_ms
                .fetch_max(opening.at.as_millis(), Ordering::Relaxed);
            placed.push((seq, token));
        }
        if !self.waiting.is_empty() {
            for (seq, token) in placed {
                self.enqueue(seq, token, now);
            }
            return;
        }
        // The line is empty (a token taken at or after the opening opens it first), so it is
        // built in one pass rather than token by token: this runs under the rooms' write lock.
        let base = placed.first().map_or(self.next_seq, |(seq, _)| *seq);
        let seqs = placed.iter().map(|(seq, _)| *seq);
        self.ranks = Fenwick::rebuild(base, (placed.len() * 2).max(1024), seqs);
        let deadline = now.plus_millis(self.policy.waiting_ttl_ms);
        let mut deadlines = std::mem::take(&mut self.poll_deadlines).into_vec();
        deadlines.extend(placed.iter().map(|(seq, _)| Reverse((deadline, *seq))));
        self.poll_deadlines = BinaryHeap::from(deadlines);
        self.waiting = placed.into_iter().collect();
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed_ms = now
            .as_millis()
            .saturating_sub(self.credit_at.as_millis())
            .max(0) as u64;
        let capacity = self.policy.admit_per_second as u64 * 1000;
        self.credit_milli = (self.credit_milli
            + elapsed_ms.saturating_mul(self.policy.admit_per_second as u64))
        .min(capacity);
        self.credit_at = self.credit_at.max(now);
    }

    fn may_admit_one(&self) -> bool {
        self.active.len() < self.policy.max_active as usize && self.credit_milli >= 1000
    }

    fn activate(&mut self, token: QueueTokenId, now: Timestamp) {
        let expires_at = now.plus_millis(self.policy.active_ttl_ms);
        let record = self
            .tokens
            .get_mut(&token)
            .expect("activating a known token");
        record.state = TokenState::Active { expires_at };
        let (seq, queued_at) = (record.seq, record.queued_at);
        // Admission takes the head of the line: a token still waiting ahead of this one, or
        // still in a pre-queue, would have been passed.
        let passed = self
            .waiting
            .first_key_value()
            .is_some_and(|(&s, _)| s < seq)
            || !self.pre_queue.is_empty();
        self.audit.order_violations += u64::from(passed);
        self.audit.admitted_total += 1;
        self.audit
            .waits
            .record((now.as_millis() - queued_at.as_millis()).max(0) as u64);
        self.active.insert((expires_at, token));
        self.count_active(seq, expires_at);
        self.credit_milli -= 1000;
        self.recent_admissions.push_back(now);
        while self
            .recent_admissions
            .front()
            .is_some_and(|t| t.plus_millis(RATE_WINDOW_MS) <= now)
        {
            self.recent_admissions.pop_front();
        }
    }

    /// Counts an admission at its place in line, which is past every active token's.
    fn count_active(&mut self, seq: u64, expires_at: Timestamp) {
        self.active_ranks
            .make_room(seq, self.active_by_seq.keys().copied());
        self.active_by_seq.insert(seq, expires_at);
        self.active_ranks.add(seq, 1);
    }

    fn enqueue(&mut self, seq: u64, token: QueueTokenId, now: Timestamp) {
        self.ranks.make_room(seq, self.waiting.keys().copied());
        self.waiting.insert(seq, token);
        self.ranks.add(seq, 1);
        self.poll_deadlines
            .push(Reverse((now.plus_millis(self.policy.waiting_ttl_ms), seq)));
    }

    fn end(&mut self, token: QueueTokenId, now: Timestamp) {
        let Some(record) = self.tokens.remove(&token) else {
            return;
        };
        match record.state {
            TokenState::PreQueue => {
                if let Some(opening) = self.opening {
                    self.pre_queue.remove(&opening.seed.place_of(token));
                }
            }
            TokenState::Waiting => {
                self.waiting.remove(&record.seq);
                self.ranks.add(record.seq, -1);
            }
            TokenState::Active { expires_at } => {
                self.active.remove(&(expires_at, token));
                self.active_by_seq.remove(&record.seq);
                self.active_ranks.add(record.seq, -1);
            }
            TokenState::Ended => {}
        }
        if self.live_by_user.get(&record.user) == Some(&token) {
            self.live_by_user.remove(&record.user);
        }
        self.ended.insert(token, record.user);
        self.retired.push_back((now, token));
    }

    /// Ends a token before its time (a payment, a leave). An active one frees its place early,
    /// which the estimates count.
    fn end_early(&mut self, token: QueueTokenId, now: Timestamp) {
        let active_until = match self.tokens.get(&token).map(|r| r.state) {
            Some(TokenState::Active { expires_at }) => Some(expires_at),
            _ => None,
        };
        if active_until.is_some_and(|expires_at| expires_at > now) {
            self.recent_early_ends.push_back(now);
            while self
                .recent_early_ends
                .front()
                .is_some_and(|t| t.plus_millis(RATE_WINDOW_MS) <= now)
            {
                self.recent_early_ends.pop_front();
            }
        }
        self.end(token, now);
    }

    /// Admissions per second over the last few seconds, once at least two are measured.
    pub fn measured_admissions_per_second(&self, now: Timestamp) -> Option<f64> {
        // Admissions are recorded in time order, so the ones inside the window are a suffix:
        // a binary search, not a walk over up to `RATE_WINDOW_MS` worth of admissions per poll.
        let start = self
            .recent_admissions
            .partition_point(|t| t.plus_millis(RATE_WINDOW_MS) <= now);
        let count = self.recent_admissions.len() - start;
        if count < 2 {
            return None;
        }
        let oldest = self.recent_admissions[start];
        let span_ms = (now.as_millis() - oldest.as_millis()).max(1000) as f64;
        Some(count as f64 * 1000.0 / span_ms)
    }

    /// How long the `position`-th in line waits: until its place frees and the metering lets
    /// it in, whichever is later.
    fn estimated_wait_seconds(&self, position: u64, now: Timestamp) -> u64 {
        let metered_ms = (position.saturating_mul(1000))
            .div_ceil(u64::from(self.policy.admit_per_second.max(1)));
        let wait_ms = metered_ms.max(self.place_frees_in_ms(position, now));
        wait_ms.div_ceil(1000)
    }

    /// When the `position`-th place frees, from `now`, in milliseconds. Every admission ends at
    /// its `expires_at` at the latest, and its place then takes the next in line for a TTL, so
    /// the places come round in turns; payments and leaves free places sooner, at their recent
    /// rate. With every place taken and none ended early lately, this is never before the
    /// earliest `expires_at`. O(log n): no walk over the active tokens.
    fn place_frees_in_ms(&self, position: u64, now: Timestamp) -> u64 {
        let places = u64::from(self.policy.max_active.max(1));
        let active = self.active_by_seq.len() as u64;
        let free = places.saturating_sub(active);
        // After a restart with fewer places, the surplus admissions must end first.
        let surplus = active.saturating_sub(places);
        let needed = (position + surplus).saturating_sub(free);
        if needed == 0 {
            return 0;
        }
        let (turn, place) = ((position - 1) / places, (position - 1) % places);
        let first_frees_at = if place < free {
            now
        } else {
            self.active_ranks
                .select(surplus + place - free + 1)
                .and_then(|seq| self.active_by_seq.get(&seq))
                .map_or(now, |&expires_at| expires_at.max(now))
        };
        let by_expiry_ms = (first_frees_at.as_millis() - now.as_millis()).max(0) as u64
            + turn.saturating_mul(self.policy.active_ttl_ms.max(0) as u64);
        let start = self
            .recent_early_ends
            .partition_point(|t| t.plus_millis(RATE_WINDOW_MS) <= now);
        let ended_early = (self.recent_early_ends.len() - start) as u64;
        if ended_early == 0 {
            return by_expiry_ms;
        }
        let by_early_ends_ms = needed.saturating_mul(RATE_WINDOW_MS as u64) / ended_early;
        by_expiry_ms.min(by_early_ends_ms)
    }

    /// The line and the admitted tokens, for a snapshot.
    pub fn to_snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            pre_queue: self
                .pre_queue
                .iter()
                .map(|(_, t)| (*t, self.tokens[t].user))
                .collect(),
            opened: self.opened,
            audit: self.audit.clone(),
            credit: (self.credit_milli, self.credit_at),
            waiting: self
                .waiting
                .values()
                .map(|t| (*t, self.tokens[t].user, self.tokens[t].queued_at))
                .collect(),
            active: self
                .active
                .iter()
                .map(|(expires_at, t)| (*t, self.tokens[t].user, *expires_at))
                .collect(),
        }
    }

    /// Rebuilds the waiting room from a snapshot: the same line in the same order, the same
    /// admissions until the same instants. Every waiter counts as having polled `now`, so no
    /// one is dropped for the time the server was down.
    pub fn restore(
        policy: QueuePolicy,
        opening: Option<Opening>,
        snapshot: &QueueSnapshot,
        now: Timestamp,
    ) -> Self {
        let mut queue = Self::with_opening(policy, opening, now);
        queue.opened = opening.is_none() || snapshot.opened;
        queue.audit = snapshot.audit.clone();
        let capacity = u64::from(policy.admit_per_second) * 1000;
        (queue.credit_milli, queue.credit_at) =
            (snapshot.credit.0.min(capacity), snapshot.credit.1);
        queue.refill(now);
        for (token, user, expires_at) in &snapshot.active {
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let token = *token;
            queue.tokens.insert(
                token,
                TokenRecord {
                    user: *user,
                    seq,
                    state: TokenState::Active {
                        expires_at: *expires_at,
                    },
                    last_poll_ms: AtomicI64::new(now.as_millis()),
                    queued_at: now,
                },
            );
            queue.active.insert((*expires_at, token));
            queue.count_active(seq, *expires_at);
            queue.live_by_user.insert(*user, token);
        }
        for (token, user, queued_at) in &snapshot.waiting {
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let token = *token;
            queue.tokens.insert(
                token,
                TokenRecord {
                    user: *user,
                    seq,
                    state: TokenState::Waiting,
                    last_poll_ms: AtomicI64::new(now.as_millis()),
                    queued_at: *queued_at,
                },
            );
            queue.live_by_user.insert(*user, token);
            queue.enqueue(seq, token, now);
        }
        if let Some(opening) = opening.filter(|_| !queue.opened) {
            for (token, user) in &snapshot.pre_queue {
                let token = *token;
                queue.tokens.insert(
                    token,
                    TokenRecord {
                        user: *user,
                        seq: 0,
                        state: TokenState::PreQueue,
                        last_poll_ms: AtomicI64::new(now.as_millis()),
                        queued_at: now,
                    },
                );
                queue.live_by_user.insert(*user, token);
                queue.pre_queue.insert(opening.seed.place_of(token));
            }
        }
        queue
    }

    /// Waiting tokens in line order; for tests and the admin view.
    pub fn waiting_in_order(&self) -> impl Iterator<Item = QueueTokenId> + '_ {
        self.waiting.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QueuePolicy {
        QueuePolicy {
            max_active: 2,
            admit_per_second: 10,
            active_ttl_ms: 60_000,
            waiting_ttl_ms: 30_000,
            ended_tokens_max: 1_000,
        }
    }

    fn standing(q: &AdmissionQueue, token: QueueTokenId, user: u64, now: i64) -> Standing {
        match q.poll(token, UserId(user), Timestamp(now)).unwrap() {
            Lookup::Live(s) => s.standing,
            Lookup::Ended => panic!("token ended"),
        }
    }

    #[test]
    fn tokens_are_admitted_at_once_while_there_is_room() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        let (a, new_a) = q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        assert!(new_a);
        assert_eq!(a.standing, Standing::Active);
        q.issue(UserId(2), QueueTokenId::general(2), Timestamp(0));
        let (c, _) = q.issue(UserId(3), QueueTokenId::general(3), Timestamp(0));
        assert!(matches!(c.standing, Standing::Waiting { position: 1, .. }));
    }

    #[test]
    fn a_second_issue_returns_the_live_token() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        let (again, created) = q.issue(UserId(1), QueueTokenId::general(99), Timestamp(5));
        assert!(!created);
        assert_eq!(again.token, QueueTokenId::general(1));
    }

    #[test]
    fn positions_are_exact_after_someone_ahead_leaves() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        for u in 1..=6 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        assert!(matches!(
            standing(&q, QueueTokenId::general(6), 6, 0),
            Standing::Waiting { position: 4, .. }
        ));
        q.leave(QueueTokenId::general(4), UserId(4), Timestamp(0))
            .unwrap();
        assert!(matches!(
            standing(&q, QueueTokenId::general(6), 6, 0),
            Standing::Waiting { position: 3, .. }
        ));
        assert_eq!(
            q.poll(QueueTokenId::general(4), UserId(4), Timestamp(0)),
            Err(DomainError::QueueTokenInvalid)
        );
    }

    #[test]
    fn a_payment_frees_a_place_for_the_next_in_line() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        for u in 1..=3 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        assert_eq!(
            q.check_admitted(QueueTokenId::general(3), UserId(3), Timestamp(0)),
            Err(DomainError::NotAdmitted)
        );
        q.end_paid(QueueTokenId::general(1), Timestamp(10));
        assert_eq!(
            q.check_admitted(QueueTokenId::general(1), UserId(1), Timestamp(10)),
            Err(DomainError::QueueTokenExpired)
        );
        q.tick(Timestamp(10));
        q.check_admitted(QueueTokenId::general(3), UserId(3), Timestamp(10))
            .unwrap();
    }

    fn payment_with(token: Option<QueueTokenId>, at: i64) -> Event {
        Event::PaymentCompleted {
            reservation: ReservationId {
                date: DateId(1),
                seq: 1,
            },
            user: UserId(1),
            seats: smallvec::smallvec![SeatNo(1)],
            amount: 100,
            balance_after: 0,
            at: Timestamp(at),
            idempotency: None,
            queue_token: token,
        }
    }

    #[test]
    fn a_payment_ends_the_token_it_was_made_with_and_replayed_ends_no_later_one() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        q.issue(UserId(2), QueueTokenId::general(2), Timestamp(0));
        let paid = payment_with(Some(QueueTokenId::general(1)), 5);
        q.apply(&paid);
        assert_eq!(
            q.check_admitted(QueueTokenId::general(1), UserId(1), Timestamp(5)),
            Err(DomainError::QueueTokenExpired)
        );
        q.check_admitted(QueueTokenId::general(2), UserId(2), Timestamp(5))
            .unwrap();
        // The payer takes a new token at the same instant; the payment, applied again (as by
        // a replay over a snapshot taken after it), must not end that one.
        let (status, fresh) = q.issue(UserId(1), QueueTokenId::general(11), Timestamp(5));
        assert!(fresh);
        q.tick(Timestamp(5));
        q.apply(&paid);
        q.check_admitted(status.token, UserId(1), Timestamp(5))
            .unwrap();
        // A payment without a token (no waiting room in its path) ends nothing.
        q.apply(&payment_with(None, 6));
        q.check_admitted(QueueTokenId::general(2), UserId(2), Timestamp(6))
            .unwrap();
    }

    #[test]
    fn admission_is_metered_per_second() {
        let mut q = AdmissionQueue::new(
            QueuePolicy {
                max_active: 1000,
                admit_per_second: 2,
                ..policy()
            },
            Timestamp(0),
        );
        let admitted_at_once = (1..=5)
            .filter(|u| {
                q.issue(UserId(*u), QueueTokenId::general(*u as u128), Timestamp(0))
                    .0
                    .standing
                    == Standing::Active
            })
            .count();
        assert_eq!(admitted_at_once, 2);
        assert!(q.tick(Timestamp(499)).admitted.is_empty());
        assert_eq!(
            q.tick(Timestamp(500)).admitted,
            vec![QueueTokenId::general(3)]
        );
        assert_eq!(
            q.tick(Timestamp(1000)).admitted,
            vec![QueueTokenId::general(4)]
        );
    }

    #[test]
    fn a_silent_waiter_is_dropped_and_a_poller_is_kept() {
        let mut q = AdmissionQueue::new(
            QueuePolicy {
                max_active: 1,
                ..policy()
            },
            Timestamp(0),
        );
        for u in 1..=3 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        standing(&q, QueueTokenId::general(3), 3, 20_000);
        let outcome = q.tick(Timestamp(30_000));
        assert_eq!(outcome.dropped, vec![QueueTokenId::general(2)]);
        assert_eq!(
            q.poll(QueueTokenId::general(2), UserId(2), Timestamp(30_000)),
            Ok(Lookup::Ended)
        );
        assert!(matches!(
            standing(&q, QueueTokenId::general(3), 3, 30_000),
            Standing::Waiting { position: 1, .. }
        ));
    }

    #[test]
    fn an_active_token_past_its_ttl_reads_as_expired_before_the_sweep() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        assert_eq!(
            q.check_admitted(QueueTokenId::general(1), UserId(1), Timestamp(60_000)),
            Err(DomainError::QueueTokenExpired)
        );
        assert_eq!(
            q.check_admitted(QueueTokenId::general(1), UserId(2), Timestamp(0)),
            Err(DomainError::Forbidden)
        );
    }

    #[test]
    fn ended_tokens_are_remembered_an_hour_and_at_most_their_bound() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        q.end_paid(QueueTokenId::general(1), Timestamp(10));
        assert_eq!(
            q.poll(QueueTokenId::general(1), UserId(1), Timestamp(20)),
            Ok(Lookup::Ended)
        );
        assert_eq!(
            q.poll(QueueTokenId::general(1), UserId(2), Timestamp(20)),
            Err(DomainError::Forbidden),
            "an ended token still belongs to its holder"
        );
        assert_eq!(
            q.check_admitted(QueueTokenId::general(1), UserId(1), Timestamp(20)),
            Err(DomainError::QueueTokenExpired)
        );
        q.tick(Timestamp(10 + RETIRED_TOKEN_MEMORY_MS));
        assert_eq!(
            q.poll(QueueTokenId::general(1), UserId(1), Timestamp(20)),
            Err(DomainError::QueueTokenInvalid),
            "forgotten after an hour"
        );
        assert_eq!(q.remembered_len(), 0);

        // Many payments in a short time: only the newest ended tokens are kept.
        let mut q = AdmissionQueue::new(
            QueuePolicy {
                max_active: 1_000_000,
                admit_per_second: 1_000_000,
                ..policy()
            },
            Timestamp(0),
        );
        let total = policy().ended_tokens_max as u64 + 5;
        for n in 1..=total {
            q.issue(UserId(n), QueueTokenId::general(n as u128), Timestamp(0));
            q.end_paid(QueueTokenId::general(n.into()), Timestamp(0));
        }
        q.tick(Timestamp(1));
        assert_eq!(q.remembered_len(), policy().ended_tokens_max);
        assert_eq!(
            q.poll(QueueTokenId::general(1), UserId(1), Timestamp(1)),
            Err(DomainError::QueueTokenInvalid)
        );
        assert_eq!(
            q.poll(
                QueueTokenId::general(total as u128),
                UserId(total),
                Timestamp(1)
            ),
            Ok(Lookup::Ended)
        );
    }

    #[test]
    fn a_restored_queue_keeps_the_line_and_the_admissions() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        for u in 1..=5 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        let restored = AdmissionQueue::restore(policy(), None, &q.to_snapshot(), Timestamp(50_000));
        assert_eq!(restored.active_len(), 2);
        restored
            .check_admitted(QueueTokenId::general(1), UserId(1), Timestamp(50_000))
            .unwrap();
        assert_eq!(
            restored.waiting_in_order().collect::<Vec<_>>(),
            vec![
                QueueTokenId::general(3),
                QueueTokenId::general(4),
                QueueTokenId::general(5)
            ]
        );
        assert!(matches!(
            standing(&restored, QueueTokenId::general(5), 5, 50_000),
            Standing::Waiting { position: 3, .. }
        ));
        // The bucket goes on filling from where it was saved: full after the 50 s away.
        let mut before = q.to_snapshot();
        assert_eq!(before.credit, (8_000, Timestamp(0)));
        before.credit = (10_000, Timestamp(50_000));
        assert_eq!(restored.to_snapshot(), before);
    }

    fn eta(q: &AdmissionQueue, token: u128, now: i64) -> (u64, u64) {
        match standing(q, QueueTokenId::general(token), token as u64, now) {
            Standing::Waiting {
                position,
                estimated_wait_seconds,
            } => (position, estimated_wait_seconds),
            other => panic!("token {token} is not waiting but {other:?}"),
        }
    }

    #[test]
    fn with_every_place_taken_the_pth_waiter_waits_for_the_pth_place_to_free() {
        // Two places, admissions end 60 s after they start; the line is not metered tight.
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        q.issue(UserId(2), QueueTokenId::general(2), Timestamp(10_000));
        for u in 3..=6 {
            q.issue(
                UserId(u),
                QueueTokenId::general(u as u128),
                Timestamp(10_000),
            );
        }
        // Places free at 60 s and 70 s; then the first comes round again at 120 s, and so on.
        assert_eq!(eta(&q, 3, 10_000), (1, 50));
        assert_eq!(eta(&q, 4, 10_000), (2, 60));
        assert_eq!(eta(&q, 5, 10_000), (3, 110));
        assert_eq!(eta(&q, 6, 10_000), (4, 120));
        // Time passes with nobody leaving: the estimates count down (rounded up).
        assert_eq!(eta(&q, 3, 30_500), (1, 30));
        assert_eq!(eta(&q, 4, 30_500), (2, 40));
        assert_eq!(eta(&q, 5, 30_500), (3, 90));
        assert_eq!(eta(&q, 6, 30_500), (4, 100));
        // At the first expiry the head of the line takes that place.
        q.tick(Timestamp(60_000));
        assert_eq!(eta(&q, 4, 60_000), (1, 10));
        assert_eq!(eta(&q, 5, 60_000), (2, 60));
        assert_eq!(eta(&q, 6, 60_000), (3, 70));
    }

    #[test]
    fn while_places_are_free_the_metering_rules_the_estimate() {
        let mut q = AdmissionQueue::new(
            QueuePolicy {
                max_active: 1_000,
                admit_per_second: 2,
                ..policy()
            },
            Timestamp(0),
        );
        for u in 1..=7 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        assert_eq!(eta(&q, 3, 0), (1, 1));
        assert_eq!(eta(&q, 7, 0), (5, 3));
    }

    #[test]
    fn recent_payments_shorten_the_estimate_until_they_are_out_of_the_window() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        for u in 1..=4 {
            q.issue(UserId(u), QueueTokenId::general(u as u128), Timestamp(0));
        }
        assert_eq!(eta(&q, 4, 1_000), (2, 59));
        // One buyer pays: its place goes to the head of the line (after the metering allows).
        q.end_paid(QueueTokenId::general(1), Timestamp(1_000));
        q.tick(Timestamp(1_000));
        // One early end in the last ten seconds: about one place every ten seconds.
        assert_eq!(eta(&q, 4, 1_000), (1, 10));
        // A waiter leaving is not a place freed.
        q.issue(UserId(5), QueueTokenId::general(5), Timestamp(1_000));
        q.leave(QueueTokenId::general(5), UserId(5), Timestamp(1_000))
            .unwrap();
        assert_eq!(eta(&q, 4, 1_000), (1, 10));
        // Out of the window, the next expiry rules again.
        assert_eq!(eta(&q, 4, 11_000), (1, 49));
    }

    #[test]
    fn the_estimate_is_the_nth_earliest_expiry_whatever_ended_in_between() {
        // A brute-force reference: the sorted expiries of the active tokens, in turns.
        fn reference(q: &AdmissionQueue, position: u64, now: Timestamp) -> u64 {
            let policy = q.policy();
            let places = u64::from(policy.max_active);
            let mut slots: Vec<i64> = q.active.iter().map(|(e, _)| e.as_millis()).collect();
            let surplus = (slots.len() as u64).saturating_sub(places) as usize;
            slots.drain(..surplus);
            while (slots.len() as u64) < places {
                slots.insert(0, now.as_millis());
            }
            let (turn, place) = ((position - 1) / places, (position - 1) % places);
            let frees_at =
                slots[place as usize].max(now.as_millis()) + turn as i64 * policy.active_ttl_ms;
            let metered = (position * 1000).div_ceil(u64::from(policy.admit_per_second));
            ((frees_at - now.as_millis()).max(0) as u64)
                .max(metered)
                .div_ceil(1000)
        }

        let policy = QueuePolicy {
            max_active: 50,
            admit_per_second: 20,
            active_ttl_ms: 300_000,
            waiting_ttl_ms: 10_000_000,
            ended_tokens_max: 10_000,
        };
        let mut q = AdmissionQueue::new(policy, Timestamp(0));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now = 0i64;
        let mut user = 0u64;
        let mut checked = 0;
        for _ in 0..3_000 {
            now += (next() % 3_000) as i64;
            match next() % 10 {
                0..=5 => {
                    user += 1;
                    q.issue(
                        UserId(user),
                        QueueTokenId::general(user.into()),
                        Timestamp(now),
                    );
                }
                6 => {
                    let payer = next() % user.max(1) + 1;
                    q.end_paid(QueueTokenId::general(payer.into()), Timestamp(now));
                }
                _ => {
                    q.tick(Timestamp(now));
                }
            }
            // Early ends shorten estimates on purpose; compare where none is recent.
            let start = q
                .recent_early_ends
                .partition_point(|t| t.plus_millis(RATE_WINDOW_MS) <= Timestamp(now));
            if start < q.recent_early_ends.len() {
                continue;
            }
            let waiting: Vec<QueueTokenId> = q.waiting_in_order().collect();
            for (i, token) in waiting.iter().enumerate().step_by(7) {
                let user = q.tokens[token].user;
                let Ok(Lookup::Live(status)) = q.poll(*token, user, Timestamp(now)) else {
                    continue;
                };
                let Standing::Waiting {
                    position,
                    estimated_wait_seconds,
                } = status.standing
                else {
                    continue;
                };
                assert_eq!(position, i as u64 + 1);
                assert_eq!(
                    estimated_wait_seconds,
                    reference(&q, position, Timestamp(now)),
                    "position {position} at {now} ms"
                );
                checked += 1;
            }
        }
        assert!(checked > 1_000, "{checked} estimates compared");
    }

    #[test]
    fn a_restored_queue_gives_the_same_estimates() {
        let mut q = AdmissionQueue::new(policy(), Timestamp(0));
        q.issue(UserId(1), QueueTokenId::general(1), Timestamp(0));
        q.issue(UserId(2), QueueTokenId::general(2), Timestamp(5_000));
        for u in 3..=5 {
            q.issue(
                UserId(u),
                QueueTokenId::general(u as u128),
                Timestamp(5_000),
            );
        }
        let restored = AdmissionQueue::restore(policy(), None, &q.to_snapshot(), Timestamp(20_000));
        for token in 3..=5 {
            assert_eq!(eta(&restored, token, 20_000), eta(&q, token, 20_000));
        }
        assert_eq!(eta(&restored, 3, 20_000), (1, 40));

        // Restarted with one place: both admissions must end before the first waiter's turn.
        let fewer = QueuePolicy {
            max_active: 1,
            ..policy()
        };
        let restored = AdmissionQueue::restore(fewer, None, &q.to_snapshot(), Timestamp(20_000));
        assert_eq!(eta(&restored, 3, 20_000), (1, 45));
        assert_eq!(eta(&restored, 4, 20_000), (2, 105));
    }

    #[test]
    fn the_fenwick_tree_selects_the_kth_counted_sequence() {
        let mut tree = Fenwick::default();
        let mut live = Vec::new();
        for seq in [3u64, 4, 9, 10, 2_000, 2_001] {
            tree.make_room(seq, live.iter().copied());
            tree.add(seq, 1);
            live.push(seq);
        }
        tree.add(9, -1);
        let selected: Vec<Option<u64>> = (0..=6).map(|k| tree.select(k)).collect();
        assert_eq!(
            selected,
            vec![
                None,
                Some(3),
                Some(4),
                Some(10),
                Some(2_000),
                Some(2_001),
                None
            ]
        );
    }

    #[test]
    fn token_ids_round_trip_and_reject_other_spellings() {
        let id = QueueTokenId::general(0xdead_beef);
        assert_eq!(id.to_string().parse::<QueueTokenId>(), Ok(id));
        assert!("q123".parse::<QueueTokenId>().is_err());
        assert!(id
            .to_string()
            .to_uppercase()
            .parse::<QueueTokenId>()
            .is_err());
    }
}
