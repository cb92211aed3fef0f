//! Token buckets: `capacity` requests at once, refilled at `capacity` per `period_ms`, so a
//! client may burst up to the limit and then goes at the limit's pace.

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

    /// A bucket that has refilled completely carries no information and can be forgotten.
    pub fn is_idle(&self, bucket: &Bucket, now: Timestamp) -> bool {
        self.refilled(*bucket, now) == self.full_milli()
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
}
