//! Token buckets: `capacity` requests at once, refilled at `capacity` per `period_ms`, so a
//! client may burst up to the limit and then goes at the limit's pace. And the rule that
//! bounds password guesses at one account (`SignInThrottle`) without letting a guesser shut its
//! owner out.

use smallvec::SmallVec;

use super::types::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub capacity: u32,
    pub period_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Thousandths of a request, so slow refills stay exact in integers.
    milli: u64,
    at: Timestamp,
}

impl RateLimit {
    fn full_milli(&self) -> u64 {
        self.capacity as u64 * 1000
    }

    pub fn full_bucket(&self, now: Timestamp) -> Bucket {
        Bucket {
            milli: self.full_milli(),
            at: now,
        }
    }

    fn refilled(&self, bucket: Bucket, now: Timestamp) -> u64 {
        let elapsed_ms = now.as_millis().saturating_sub(bucket.at.as_millis()).max(0) as u64;
        let gained = elapsed_ms.saturating_mul(self.full_milli()) / self.period_ms.max(1) as u64;
        bucket.milli.saturating_add(gained).min(self.full_milli())
    }

    /// Takes one request from the bucket, or says in how many whole seconds one will be there.
    pub fn take(&self, bucket: &mut Bucket, now: Timestamp) -> Result<(), u64> {
        let milli = self.refilled(*bucket, now);
        bucket.at = bucket.at.max(now);
        if milli >= 1000 {
            bucket.milli = milli - 1000;
            return Ok(());
        }
        bucket.milli = milli;
        let missing = 1000 - milli;
        let wait_ms = (missing * self.period_ms.max(1) as u64).div_ceil(self.full_milli());
        Err(wait_ms.div_ceil(1000).max(1))
    }

    /// Returns a request taken from the bucket (one that turned out not to count).
    pub fn give_back(&self, bucket: &mut Bucket, now: Timestamp) {
        let milli = self.refilled(*bucket, now);
        bucket.at = bucket.at.max(now);
        bucket.milli = (milli + 1000).min(self.full_milli());
    }

    /// A bucket that has refilled completely carries no information and can be forgotten.
    pub fn is_idle(&self, bucket: &Bucket, now: Timestamp) -> bool {
        self.refilled(*bucket, now) == self.full_milli()
    }
}

/// Bounds password guesses at one account, by this rule:
///
/// - An account has one bucket of `failures.capacity` failed sign-ins, refilled at that many
///   per `failures.period_ms`, shared by every address that is not *known* to it.
/// - An address is known to an account for `known_for_ms` after a sign-in to that account
///   from it succeeded (at most `known_max` addresses per account, the most recent ones). Each
///   known address has a bucket of its own, of the same size.
/// - Every attempt takes one failure from the bucket its address draws on *before* the
///   password is checked, and an empty bucket refuses the attempt unchecked, so a refused
///   guess costs no password hash. A right password gives its failure back.
///
/// So guesses at one account come at most `capacity` per period from all unknown addresses
/// together, plus as many from each known address. A guesser who keeps the shared bucket
/// empty shuts out only addresses that have not signed in to the account lately; its owner
/// still signs in from any address it used within `known_for_ms`, unless the guesser sends
/// from that very address (a shared one), and then that address only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInThrottle {
    pub failures: RateLimit,
    pub known_for_ms: i64,
    pub known_max: usize,
}

/// One account's standing under a `SignInThrottle`, for addresses of type `A`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInRecord<A> {
    strangers: Bucket,
    /// Most recently signed in first.
    known: SmallVec<[KnownAddress<A>; 1]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownAddress<A> {
    address: A,
    signed_in_at: Timestamp,
    failures: Bucket,
}

impl SignInThrottle {
    /// How long an address that signed in to an account stays known to it.
    pub const KNOWN_FOR_MS: i64 = 30 * 86_400_000;
    /// Known addresses kept per account, the most recent.
    pub const KNOWN_MAX: usize = 4;

    /// The rule above with `per_minute` failures a minute per bucket.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            failures: RateLimit {
                capacity: per_minute,
                period_ms: 60_000,
            },
            known_for_ms: Self::KNOWN_FOR_MS,
            known_max: Self::KNOWN_MAX,
        }
    }

    pub fn record<A>(&self, now: Timestamp) -> SignInRecord<A> {
        SignInRecord {
            strangers: self.failures.full_bucket(now),
            known: SmallVec::new(),
        }
    }

    fn forget_stale<A>(&self, record: &mut SignInRecord<A>, now: Timestamp) {
        let known_for_ms = self.known_for_ms;
        record
            .known
            .retain(|known| now.as_millis() < known.signed_in_at.plus_millis(known_for_ms).0);
    }

    fn bucket<'r, A: PartialEq>(
        &self,
        record: &'r mut SignInRecord<A>,
        address: &A,
    ) -> &'r mut Bucket {
        match record.known.iter_mut().find(|k| k.address == *address) {
            Some(known) => &mut known.failures,
            None => &mut record.strangers,
        }
    }

    /// Before the password is checked: takes one failure from the bucket `address` draws on,
    /// or refuses, saying in how many whole seconds one will be there.
    pub fn attempt<A: PartialEq>(
        &self,
        record: &mut SignInRecord<A>,
        address: &A,
        now: Timestamp,
    ) -> Result<(), u64> {
        self.forget_stale(record, now);
        let bucket = self.bucket(record, address);
        self.failures.take(bucket, now)
    }

    /// The password was right: the attempt's failure goes back, and `address` is known to
    /// the account from now on (the least recent known address makes room past `known_max`).
    pub fn signed_in<A: PartialEq>(
        &self,
        record: &mut SignInRecord<A>,
        address: A,
        now: Timestamp,
    ) {
        self.forget_stale(record, now);
        let bucket = self.bucket(record, &address);
        self.failures.give_back(bucket, now);
        let known = match record.known.iter().position(|k| k.address == address) {
            Some(at) => {
                let mut known = record.known.remove(at);
                known.signed_in_at = now;
                known
            }
            None => KnownAddress {
                address,
                signed_in_at: now,
                failures: self.failures.full_bucket(now),
            },
        };
        record.known.insert(0, known);
        record.known.truncate(self.known_max);
    }

    /// A record with a full bucket and no address known any more says nothing: forget it.
    pub fn is_idle<A>(&self, record: &SignInRecord<A>, now: Timestamp) -> bool {
        let known_for_ms = self.known_for_ms;
        self.failures.is_idle(&record.strangers, now)
            && record
                .known
                .iter()
                .all(|known| now.as_millis() >= known.signed_in_at.plus_millis(known_for_ms).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_capacity_passes_and_then_the_pace_is_the_limit() {
        let limit = RateLimit {
            capacity: 3,
            period_ms: 1_000,
        };
        let mut bucket = limit.full_bucket(Timestamp(0));
        for _ in 0..3 {
            limit.take(&mut bucket, Timestamp(0)).unwrap();
        }
        assert_eq!(limit.take(&mut bucket, Timestamp(0)), Err(1));
        assert_eq!(limit.take(&mut bucket, Timestamp(332)), Err(1));
        limit.take(&mut bucket, Timestamp(334)).unwrap();
        assert!(!limit.is_idle(&bucket, Timestamp(334)));
        assert!(limit.is_idle(&bucket, Timestamp(1_334)));
    }

    #[test]
    fn retry_after_counts_whole_seconds_for_slow_limits() {
        let limit = RateLimit {
            capacity: 4,
            period_ms: 60_000,
        };
        let mut bucket = limit.full_bucket(Timestamp(0));
        for _ in 0..4 {
            limit.take(&mut bucket, Timestamp(0)).unwrap();
        }
        assert_eq!(limit.take(&mut bucket, Timestamp(0)), Err(15));
    }

    #[test]
    fn a_request_given_back_can_be_taken_again_but_never_past_the_capacity() {
        let limit = RateLimit {
            capacity: 1,
            period_ms: 60_000,
        };
        let mut bucket = limit.full_bucket(Timestamp(0));
        limit.take(&mut bucket, Timestamp(0)).unwrap();
        limit.give_back(&mut bucket, Timestamp(0));
        limit.give_back(&mut bucket, Timestamp(0));
        limit.take(&mut bucket, Timestamp(0)).unwrap();
        assert_eq!(limit.take(&mut bucket, Timestamp(0)), Err(60));
    }

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    fn throttle() -> SignInThrottle {
        SignInThrottle {
            failures: RateLimit {
                capacity: 3,
                period_ms: MINUTE,
            },
            known_for_ms: 30 * DAY,
            known_max: 2,
        }
    }

    /// Attempts from `address` until one is refused; how many got through.
    fn attempts_until_refused(
        throttle: &SignInThrottle,
        record: &mut SignInRecord<&'static str>,
        address: &'static str,
        now: Timestamp,
    ) -> usize {
        (0..)
            .take_while(|_| throttle.attempt(record, &address, now).is_ok())
            .count()
    }

    #[test]
    fn guesses_from_every_unknown_address_share_one_bucket() {
        let throttle = throttle();
        let mut record = throttle.record(Timestamp(0));
        throttle.attempt(&mut record, &"a", Timestamp(0)).unwrap();
        throttle.attempt(&mut record, &"b", Timestamp(0)).unwrap();
        throttle.attempt(&mut record, &"c", Timestamp(0)).unwrap();
        assert_eq!(throttle.attempt(&mut record, &"d", Timestamp(0)), Err(20));
        assert!(!throttle.is_idle(&record, Timestamp(0)));
        assert!(throttle.is_idle(&record, Timestamp(MINUTE)));
    }

    #[test]
    fn an_address_that_signed_in_is_not_shut_out_by_guesses_elsewhere() {
        let throttle = throttle();
        let mut record = throttle.record(Timestamp(0));
        throttle
            .attempt(&mut record, &"home", Timestamp(0))
            .unwrap();
        throttle.signed_in(&mut record, "home", Timestamp(0));
        assert_eq!(
            attempts_until_refused(&throttle, &mut record, "guesser", Timestamp(1)),
            3
        );
        assert!(throttle
            .attempt(&mut record, &"cafe", Timestamp(1))
            .is_err());
        // Home draws on its own bucket, and a right password costs it nothing.
        for _ in 0..10 {
            throttle
                .attempt(&mut record, &"home", Timestamp(2))
                .unwrap();
            throttle.signed_in(&mut record, "home", Timestamp(2));
        }
        // Its wrong passwords are bounded like anyone's.
        assert_eq!(
            attempts_until_refused(&throttle, &mut record, "home", Timestamp(3)),
            3
        );
    }

    #[test]
    fn a_right_password_from_an_unknown_address_gives_its_attempt_back() {
        let throttle = throttle();
        let mut record = throttle.record(Timestamp(0));
        throttle.attempt(&mut record, &"a", Timestamp(0)).unwrap();
        throttle.attempt(&mut record, &"b", Timestamp(0)).unwrap();
        throttle.signed_in(&mut record, "b", Timestamp(0));
        assert_eq!(
            attempts_until_refused(&throttle, &mut record, "c", Timestamp(0)),
            2
        );
    }

    #[test]
    fn an_address_is_known_for_a_while_and_only_the_most_recent_are_kept() {
        let throttle = throttle();
        let mut record = throttle.record(Timestamp(0));
        for (address, at) in [("old", 0), ("newer", 1), ("newest", 2)] {
            throttle
                .attempt(&mut record, &address, Timestamp(at))
                .unwrap();
            throttle.signed_in(&mut record, address, Timestamp(at));
        }
        assert_eq!(
            attempts_until_refused(&throttle, &mut record, "guesser", Timestamp(3)),
            3
        );
        // Two are kept: "old" made room, and is a stranger again.
        assert!(throttle.attempt(&mut record, &"old", Timestamp(3)).is_err());
        throttle
            .attempt(&mut record, &"newer", Timestamp(3))
            .unwrap();
        throttle
            .attempt(&mut record, &"newest", Timestamp(3))
            .unwrap();
        // Past the window they are strangers too, and the record can be forgotten once the
        // buckets refill.
        let later = Timestamp(2 + 30 * DAY);
        assert!(!throttle.is_idle(&record, Timestamp(30 * DAY)));
        assert!(throttle.is_idle(&record, later));
        assert_eq!(
            attempts_until_refused(&throttle, &mut record, "newest", later),
            3
        );
        assert!(throttle.attempt(&mut record, &"newer", later).is_err());
    }
}
