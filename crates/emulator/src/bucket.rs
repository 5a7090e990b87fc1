//! The rate limit's token bucket, one per emulator: capacity and refill per second both
//! equal [`Config::rate_limit`](crate::Config::rate_limit).

use std::time::Instant;

/// The rate limit's token bucket: capacity and refill per second both equal the limit.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) limit: u32,
    tokens: f64,
    updated: Instant,
}

/// What the bucket said about one request.
pub(crate) enum Take {
    Allowed { remaining: u64 },
    Throttled { retry_after_secs: u64 },
    Unlimited,
}

impl Bucket {
    pub(crate) fn new(limit: u32) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit),
            updated: Instant::now(),
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> Take {
        if self.limit == 0 {
            return Take::Unlimited;
        }
        let rate = f64::from(self.limit);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.updated = now.max(self.updated);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Take::Allowed {
                remaining: self.tokens.floor() as u64,
            };
        }
        let seconds = ((1.0 - self.tokens) / rate).ceil().max(1.0);
        Take::Throttled {
            retry_after_secs: seconds as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_throttles_past_its_capacity_and_asks_for_at_least_a_second() {
        let mut bucket = Bucket::new(3);
        let now = Instant::now();
        let remaining: Vec<u64> = (0..3)
            .map(|_| match bucket.take(now) {
                Take::Allowed { remaining } => remaining,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        assert!(matches!(
            bucket.take(now),
            Take::Throttled {
                retry_after_secs: 1
            }
        ));
        let later = now + std::time::Duration::from_millis(400);
        assert!(matches!(bucket.take(later), Take::Allowed { remaining: 0 }));
    }
}
