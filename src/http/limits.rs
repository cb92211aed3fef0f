//! Per-session request rate and per-IP sign-up/sign-in attempts (`limits.*`): past them a
//! client gets 429 `rate_limited` with `Retry-After`. Buckets that have refilled completely are
//! forgotten, which bounds both maps by the clients active in the last period.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use dashmap::DashMap;

use super::error::ApiError;
use crate::clock::SharedClock;
use crate::config::LimitSettings;
use crate::domain::rate_limit::{Bucket, RateLimit};
use crate::domain::Timestamp;

const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

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

    fn take(&self, key: &K, now: Timestamp) -> Result<(), ApiError> {
        let mut bucket = self
            .buckets
            .entry(key.clone())
            .or_insert_with(|| self.limit.full_bucket(now));
        self.limit
            .take(&mut bucket, now)
            .map_err(|retry_after_seconds| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests; retry in {retry_after_seconds} s"),
                )
                .retry_after(retry_after_seconds)
            })
    }

    fn forget_idle(&self, now: Timestamp) {
        self.buckets
            .retain(|_, bucket| !self.limit.is_idle(bucket, now));
    }
}

pub struct RateLimits {
    sessions: Option<Limiter<u64>>,
    auth_by_ip: Option<Limiter<IpAddr>>,
}

impl RateLimits {
    pub fn new(settings: &LimitSettings, clock: SharedClock) -> Arc<Self> {
        let limits = Arc::new(Self {
            sessions: Limiter::new(settings.session_requests_per_second, 1_000),
            auth_by_ip: Limiter::new(settings.auth_attempts_per_minute_per_ip, 60_000),
        });
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
            loop {
                ticks.tick().await;
                let Some(limits) = weak.upgrade() else { break };
                let now = clock.now();
                if let Some(l) = &limits.sessions {
                    l.forget_idle(now);
                }
                if let Some(l) = &limits.auth_by_ip {
                    l.forget_idle(now);
                }
            }
        });
        limits
    }

    pub fn session_request(&self, session: u64, now: Timestamp) -> Result<(), ApiError> {
        self.sessions
            .as_ref()
            .map_or(Ok(()), |l| l.take(&session, now))
    }

    pub fn auth_attempt(&self, ip: IpAddr, now: Timestamp) -> Result<(), ApiError> {
        self.auth_by_ip
            .as_ref()
            .map_or(Ok(()), |l| l.take(&ip, now))
    }
}
