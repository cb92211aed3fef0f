//! `Idempotency-Key`: the same user repeating the same key with the same body on the same
//! endpoint gets the first success back and nothing is applied twice; a different body gets 422.
//! A request still running holds its key, and a concurrent repeat waits for its outcome.
//! Only successes are remembered: a refused request changed nothing, so repeating it is safe.
//! Keys are kept `KEY_TTL` and then forgotten, which bounds the map.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::error::ApiError;
use crate::domain::{IdempotencyKey, IdempotencyStamp, Timestamp, UserId};

pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Charge,
    Reservation,
    Payment,
}

#[derive(Clone)]
pub struct StoredResponse {
    status: StatusCode,
    body: Bytes,
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

enum SlotState {
    Running,
    Done(StoredResponse),
    Abandoned,
}

struct Slot {
    fingerprint: u64,
    created_at: Timestamp,
    state: Mutex<SlotState>,
    settled: Notify,
}

type SlotKey = (UserId, Endpoint, IdempotencyKey);

#[derive(Default)]
pub struct IdempotencyIndex {
    slots: DashMap<SlotKey, Arc<Slot>>,
}

/// What a request with (or without) a key should do.
pub enum Claim {
    /// No key: just run.
    Unkeyed,
    /// This request owns the key: run, then `respond` to remember the success.
    Owner(OwnerGuard),
    /// The key already succeeded with this body: answer this.
    Replay(StoredResponse),
}

pub struct OwnerGuard {
    index: Arc<IdempotencyIndex>,
    key: SlotKey,
    slot: Arc<Slot>,
    stamp: IdempotencyStamp,
    settled: bool,
}

/// A stable digest of the body's JSON value (key order and whitespace do not matter).
pub fn fingerprint(raw: &[u8]) -> u64 {
    let canonical = serde_json::from_slice::<serde_json::Value>(raw)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_else(|_| raw.to_vec());
    let digest = Sha256::digest(&canonical);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl IdempotencyIndex {
    pub async fn claim(
        self: &Arc<Self>,
        user: UserId,
        endpoint: Endpoint,
        key: Option<IdempotencyKey>,
        raw_body: &[u8],
        now: Timestamp,
    ) -> Result<Claim, ApiError> {
        let Some(key) = key else {
            return Ok(Claim::Unkeyed);
        };
        let fingerprint = fingerprint(raw_body);
        let slot_key = (user, endpoint, key.clone());
        loop {
            let slot = match self.slots.entry(slot_key.clone()) {
                Entry::Occupied(existing) if !is_stale(existing.get(), now) => {
                    existing.get().clone()
                }
                entry => {
                    let slot = Arc::new(Slot {
                        fingerprint,
                        created_at: now,
                        state: Mutex::new(SlotState::Running),
                        settled: Notify::new(),
                    });
                    entry.insert(slot.clone());
                    return Ok(Claim::Owner(OwnerGuard {
                        index: self.clone(),
                        key: slot_key,
                        slot,
                        stamp: IdempotencyStamp { key, fingerprint },
                        settled: false,
                    }));
                }
            };
            if slot.fingerprint != fingerprint {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used with a different request; use a new key",
                ));
            }
            let settled = slot.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match &*slot.state.lock() {
                SlotState::Done(response) => return Ok(Claim::Replay(response.clone())),
                SlotState::Abandoned => continue,
                SlotState::Running => {}
            }
            settled.await;
        }
    }

    /// Forgets keys older than `KEY_TTL`.
    pub fn forget_stale(&self, now: Timestamp) {
        self.slots.retain(|_, slot| !is_stale(slot, now));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn is_stale(slot: &Slot, now: Timestamp) -> bool {
    slot.created_at.plus_millis(KEY_TTL.as_millis() as i64) <= now
        && !matches!(*slot.state.lock(), SlotState::Running)
}

impl Claim {
    /// The stamp to put on the event this request produces.
    pub fn stamp(&self) -> Option<IdempotencyStamp> {
        match self {
            Claim::Owner(guard) => Some(guard.stamp.clone()),
            _ => None,
        }
    }

    /// Answers with `body` and, when this request owns a key, remembers the answer.
    pub fn respond(self, status: StatusCode, body: &impl Serialize) -> Response {
        let body = Bytes::from(serde_json::to_vec(body).expect("responses serialize"));
        let stored = StoredResponse { status, body };
        if let Claim::Owner(mut guard) = self {
            *guard.slot.state.lock() = SlotState::Done(stored.clone());
            guard.settled = true;
            guard.slot.settled.notify_waiters();
        }
        stored.into_response()
    }
}

impl Drop for OwnerGuard {
    /// A request that failed (or whose client went away) gives its key back.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        *self.slot.state.lock() = SlotState::Abandoned;
        self.index
            .slots
            .remove_if(&self.key, |_, slot| Arc::ptr_eq(slot, &self.slot));
        self.slot.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_key_order_and_whitespace() {
        assert_eq!(
            fingerprint(br#"{"a":1,"b":2}"#),
            fingerprint(br#"{ "b": 2, "a": 1 }"#)
        );
        assert_ne!(fingerprint(br#"{"a":1}"#), fingerprint(br#"{"a":2}"#));
    }

    #[tokio::test]
    async fn a_key_replays_its_success_and_refuses_another_body() {
        let index = Arc::new(IdempotencyIndex::default());
        let key = IdempotencyKey::parse("k1");
        let first = index
            .claim(
                UserId(1),
                Endpoint::Charge,
                key.clone(),
                b"{\"amount\":5}",
                Timestamp(0),
            )
            .await
            .unwrap();
        assert!(first.stamp().is_some());
        first.respond(
            StatusCode::CREATED,
            &serde_json::json!({"charge_id": "ch_1"}),
        );
        let again = index
            .claim(
                UserId(1),
                Endpoint::Charge,
                key.clone(),
                b"{\"amount\":5}",
                Timestamp(1),
            )
            .await
            .unwrap();
        assert!(matches!(again, Claim::Replay(ref r) if r.status == StatusCode::CREATED));
        let other_user = index
            .claim(
                UserId(2),
                Endpoint::Charge,
                key.clone(),
                b"{\"amount\":6}",
                Timestamp(1),
            )
            .await
            .unwrap();
        assert!(matches!(other_user, Claim::Owner(_)));
        let reused = index
            .claim(
                UserId(1),
                Endpoint::Charge,
                key,
                b"{\"amount\":6}",
                Timestamp(1),
            )
            .await;
        assert_eq!(
            reused.err().map(|e| e.code()),
            Some("idempotency_key_reused")
        );
    }

    #[tokio::test]
    async fn a_failed_request_gives_its_key_back() {
        let index = Arc::new(IdempotencyIndex::default());
        let key = IdempotencyKey::parse("k1");
        let first = index
            .claim(
                UserId(1),
                Endpoint::Payment,
                key.clone(),
                b"{}",
                Timestamp(0),
            )
            .await
            .unwrap();
        drop(first);
        assert!(index.is_empty());
        let again = index
            .claim(UserId(1), Endpoint::Payment, key, b"{}", Timestamp(0))
            .await
            .unwrap();
        assert!(matches!(again, Claim::Owner(_)));
    }
}
