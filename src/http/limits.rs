//! Per-session request rate, per-IP sign-up/sign-in attempts, per-account failed sign-ins,
//! per-IP wrong admin tokens (`limits.*`) and live streams per session
//! (`server.max_streams_per_session`): past them a client gets 429 `rate_limited` with
//! `Retry-After`. Buckets that have refilled completely (and accounts no address is known to
//! any more) are forgotten, which bounds the maps by the clients active in the last period;
//! stream counts leave their map when a session's last stream ends.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::rate_limit::{Bucket, RateLimit, SignInRecord, SignInThrottle};
use crate::domain::Timestamp;

const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);
/// A session past its stream bound is told to come back after the time the server takes, at
/// most, to notice that one of its streams was closed (the heartbeat).
const STREAM_RETRY_AFTER_SECONDS: u64 = 15;

fn rate_limited(retry_after_seconds: u64, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{what}; retry in {retry_after_seconds} s"),
    )
    .retry_after(retry_after_seconds)
}

struct Limiter<K: Eq + Hash> {
    limit: RateLimit,
    buckets: DashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    fn new(per_period: u32, period_ms: i64) -> Option<Self> {
        (per_period > 0).then(|| Self {
            limit: RateLimit {
                capacity: per_period,
                period_ms,
            },
            buckets: DashMap::new(),
        })
    }

    fn take(&self, key: &K, now: Timestamp, what: &str) -> Result<(), ApiError> {
        let mut bucket = self
            .buckets
            .entry(key.clone())
            .or_insert_with(|| self.limit.full_bucket(now));
        self.limit
            .take(&mut bucket, now)
            .map_err(|retry_after_seconds| rate_limited(retry_after_seconds, what))
    }

    fn give_back(&self, key: &K, now: Timestamp) {
        if let Some(mut bucket) = self.buckets.get_mut(key) {
            self.limit.give_back(&mut bucket, now);
        }
    }

    fn forget_idle(&self, now: Timestamp) {
        self.buckets
            .retain(|_, bucket| !self.limit.is_idle(bucket, now));
    }
}

/// An account, named by a digest of the username as sent: the same size for every name, and
/// names that belong to no one are throttled exactly like real ones, so a 429 tells nothing
/// about which usernames exist.
type AccountKey = [u8; 16];

fn account_key(username: &str) -> AccountKey {
    let digest = Sha256::digest(username.as_bytes());
    digest[..16].try_into().expect("16 bytes")
}

/// Failed sign-ins per account, by `SignInThrottle`'s rule.
struct SignIns {
    throttle: SignInThrottle,
    accounts: DashMap<AccountKey, SignInRecord<IpAddr>>,
}

impl SignIns {
    fn new(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            throttle: SignInThrottle::per_minute(per_minute),
            accounts: DashMap::new(),
        })
    }

    fn forget_idle(&self, now: Timestamp) {
        self.accounts
            .retain(|_, record| !self.throttle.is_idle(record, now));
    }
}

/// One session's live streams, counted while they are open.
struct StreamsPerSession {
    max: usize,
    open: Arc<DashMap<u64, usize>>,
}

/// A session's place among its live streams; the place is free again when this is dropped.
pub struct SessionStreamSlot {
    open: Arc<DashMap<u64, usize>>,
    session: u64,
}

impl Drop for SessionStreamSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut open) = self.open.entry(self.session) {
            if *open.get() <= 1 {
                open.remove();
            } else {
                *open.get_mut() -= 1;
            }
        }
    }
}

pub struct RateLimits {
    sessions: Option<Limiter<u64>>,
    auth_by_ip: Option<Limiter<IpAddr>>,
    sign_ins: Option<SignIns>,
    admin_failures_by_ip: Option<Limiter<IpAddr>>,
    streams: StreamsPerSession,
}

impl RateLimits {
    pub fn new(settings: &Settings, clock: SharedClock) -> Arc<Self> {
        let limits_settings = &settings.limits;
        let limits = Arc::new(Self {
            sessions: Limiter::new(limits_settings.session_requests_per_second, 1_000),
            auth_by_ip: Limiter::new(limits_settings.auth_attempts_per_minute_per_ip, 60_000),
            sign_ins: SignIns::new(limits_settings.failed_logins_per_account_per_minute),
            admin_failures_by_ip: Limiter::new(
                limits_settings.admin_failures_per_minute_per_ip,
                60_000,
            ),
            streams: StreamsPerSession {
                max: settings.server.max_streams_per_session,
                open: Arc::new(DashMap::new()),
            },
        });
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
            loop {
                ticks.tick().await;
                let Some(limits) = weak.upgrade() else { break };
                let now = clock.now();
                for limiter in [&limits.auth_by_ip, &limits.admin_failures_by_ip]
                    .into_iter()
                    .flatten()
                {
                    limiter.forget_idle(now);
                }
                if let Some(l) = &limits.sessions {
                    l.forget_idle(now);
                }
                if let Some(l) = &limits.sign_ins {
                    l.forget_idle(now);
                }
            }
        });
        limits
    }

    pub fn session_request(&self, session: u64, now: Timestamp) -> Result<(), ApiError> {
        self.sessions.as_ref().map_or(Ok(()), |l| {
            l.take(&session, now, "too many requests on this session")
        })
    }

    pub fn auth_attempt(&self, ip: IpAddr, now: Timestamp) -> Result<(), ApiError> {
        self.auth_by_ip.as_ref().map_or(Ok(()), |l| {
            l.take(&ip, now, "too many sign-ups and sign-ins from this address")
        })
    }

    /// Before the password is checked (`SignInThrottle::attempt`).
    pub fn sign_in_attempt(
        &self,
        username: &str,
        ip: IpAddr,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let Some(sign_ins) = &self.sign_ins else {
            return Ok(());
        };
        let mut record = sign_ins
            .accounts
            .entry(account_key(username))
            .or_insert_with(|| sign_ins.throttle.record(now));
        sign_ins
            .throttle
            .attempt(&mut record, &ip, now)
            .map_err(|retry_after_seconds| {
                rate_limited(
                    retry_after_seconds,
                    "too many failed sign-ins to this account",
                )
            })
    }

    /// The password was right (`SignInThrottle::signed_in`).
    pub fn signed_in(&self, username: &str, ip: IpAddr, now: Timestamp) {
        let Some(sign_ins) = &self.sign_ins else {
            return;
        };
        let mut record = sign_ins
            .accounts
            .entry(account_key(username))
            .or_insert_with(|| sign_ins.throttle.record(now));
        sign_ins.throttle.signed_in(&mut record, ip, now);
    }

    /// Before an admin token is compared: one failure is taken from the address's bucket (an
    /// empty one refuses, so a limited address learns nothing, not even from the right token),
    /// and `admin_token_accepted` gives it back.
    pub fn admin_attempt(&self, ip: IpAddr, now: Timestamp) -> Result<(), ApiError> {
        self.admin_failures_by_ip.as_ref().map_or(Ok(()), |l| {
            l.take(&ip, now, "too many wrong admin tokens from this address")
        })
    }

    pub fn admin_token_accepted(&self, ip: IpAddr, now: Timestamp) {
        if let Some(l) = &self.admin_failures_by_ip {
            l.give_back(&ip, now);
        }
    }

    /// A place for one more live stream of `session`, held until the slot is dropped.
    pub fn open_stream(&self, session: u64) -> Result<SessionStreamSlot, ApiError> {
        let mut open = self.streams.open.entry(session).or_insert(0);
        if *open >= self.streams.max {
            return Err(rate_limited(
                STREAM_RETRY_AFTER_SECONDS,
                &format!(
                    "this session has {} live streams open, the most it may; close one",
                    *open
                ),
            ));
        }
        *open += 1;
        Ok(SessionStreamSlot {
            open: self.streams.open.clone(),
            session,
        })
    }
}
