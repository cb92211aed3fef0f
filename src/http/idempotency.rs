//! `Idempotency-Key` at the edge: one request at a time per (user, endpoint, key), then the
//! domain's `IdempotencyBook` decides: replay the recorded outcome, refuse another body (422),
//! or run and stamp the event so the owner records it. A concurrent repeat waits for the first
//! to finish and then replays it.

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::error::ApiError;
use crate::actors::KeyRecords;
use crate::domain::idempotency::{BookKey, KeyedEndpoint, Outcome};
use crate::domain::{IdempotencyKey, IdempotencyStamp, UserId};

pub struct IdempotencyGate {
    running: DashMap<BookKey, Arc<Notify>>,
    keys: KeyRecords,
}

/// What a request with (or without) a key should do.
pub enum Claim {
    /// No key: just run.
    Unkeyed,
    /// This request holds the key: run with `stamp` on the event it produces.
    Owner(OwnerGuard),
    /// The key already succeeded with this body: answer the same again.
    Replay(Outcome),
}

pub struct OwnerGuard {
    gate: Arc<IdempotencyGate>,
    key: BookKey,
    stamp: IdempotencyStamp,
}

/// A stable digest of the body's JSON value (key order and whitespace do not matter).
pub fn fingerprint(raw: &[u8]) -> u64 {
    let canonical = serde_json::from_slice::<serde_json::Value>(raw)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_else(|_| raw.to_vec());
    let digest = Sha256::digest(&canonical);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl IdempotencyGate {
    pub fn new(keys: KeyRecords) -> Self {
        Self {
            running: DashMap::new(),
            keys,
        }
    }

    pub async fn claim(
        self: &Arc<Self>,
        user: UserId,
        endpoint: KeyedEndpoint,
        key: Option<IdempotencyKey>,
        raw_body: &[u8],
    ) -> Result<Claim, ApiError> {
        let Some(key) = key else {
            return Ok(Claim::Unkeyed);
        };
        // The digest names the key in the gate and in the book alike: hashed once, copied freely.
        let slot_key = BookKey::new(user, endpoint, &key);
        loop {
            let running = match self.running.entry(slot_key) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Arc::new(Notify::new()));
                    break;
                }
                Entry::Occupied(occupied) => occupied.get().clone(),
            };
            let finished = running.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            // The holder may have finished between the entry lookup and `enable`.
            if self
                .running
                .get(&slot_key)
                .is_some_and(|current| Arc::ptr_eq(&current, &running))
            {
                finished.await;
            }
        }
        let guard = OwnerGuard {
            gate: self.clone(),
            key: slot_key,
            stamp: IdempotencyStamp {
                key,
                fingerprint: fingerprint(raw_body),
            },
        };
        match self.keys.find(&slot_key, guard.stamp.fingerprint)? {
            Some(outcome) => Ok(Claim::Replay(outcome)),
            None => Ok(Claim::Owner(guard)),
        }
    }
}

impl Claim {
    /// The stamp to put on the event this request produces.
    pub fn stamp(&self) -> Option<IdempotencyStamp> {
        match self {
            Claim::Owner(guard) => Some(guard.stamp.clone()),
            _ => None,
        }
    }
}

impl Drop for OwnerGuard {
    /// Whether the request succeeded (the owner recorded it) or not, the key is free again.
    fn drop(&mut self) {
        if let Some((_, running)) = self.gate.running.remove(&self.key) {
            running.notify_waiters();
        }
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
    async fn a_second_request_with_the_key_waits_for_the_first() {
        let engine = crate::actors::Engine::start(
            &crate::config::Settings::for_tests(),
            std::sync::Arc::new(crate::clock::SystemClock),
        )
        .await
        .unwrap();
        let gate = Arc::new(IdempotencyGate::new(engine.key_records().clone()));
        let key = IdempotencyKey::parse("k1");
        let first = gate
            .claim(UserId(1), KeyedEndpoint::Charge, key.clone(), b"{}")
            .await
            .unwrap();
        assert!(first.stamp().is_some());
        let waiting = {
            let gate = gate.clone();
            let key = key.clone();
            tokio::spawn(async move {
                gate.claim(UserId(1), KeyedEndpoint::Charge, key, b"{}")
                    .await
                    .map(|c| c.stamp().is_some())
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        // Nothing was recorded (the first failed), so the second now owns the key.
        assert!(waiting.await.unwrap().unwrap());
        engine.stop().await;
    }
}
