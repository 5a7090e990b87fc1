//! The client-side pacer of the HTTP layer: spaces requests out so that the product's token
//! bucket never runs dry.
//!
//! It mirrors the product's bucket: it learns the refill rate from `X-RateLimit-FillRate` /
//! `X-RateLimit-Interval-Seconds` and the size from `X-RateLimit-Limit`, refills its own
//! tokens a little slower than the product does, and never believes it has more tokens than
//! the product's last `X-RateLimit-Remaining` minus the requests still in flight. Tokens may
//! go negative: each reservation then starts one refill interval after the previous one. A
//! 429 pauses every request until its `Retry-After` has passed.
//!
//! The headers come from outside and are not trusted: every number is checked before it is
//! used and no arithmetic on them can panic or overflow a [`Duration`] or an [`Instant`].
//! - A rate that is not a finite positive number (a zero, negative, infinite or
//!   underflowing `FillRate / Interval`) is ignored, as if the headers were absent.
//! - The bucket size is clamped to `1..=`[`MAX_CAPACITY`]; a negative `Remaining` is 0.
//! - No reservation and no pause ever waits more than the pacer's `max_wait` (the client's
//!   `max_backoff`), however slow the announced rate, and a debt of tokens never grows past
//!   what that wait refills; instants are added with `checked_add`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// Below the refill rate the product announces, so that timing jitter never empties its
/// bucket.
pub(super) const PACE_SAFETY_FACTOR: f64 = 0.97;
/// The largest bucket the pacer believes in, whatever `X-RateLimit-Limit` says.
const MAX_CAPACITY: f64 = 1e9;

/// See the module documentation.
pub(super) struct Pacer {
    state: Mutex<PacerState>,
    in_flight: AtomicUsize,
    /// The longest any one request is held back.
    max_wait: Duration,
}

struct PacerState {
    /// Our own ceiling, requests per second.
    configured_rate: Option<f64>,
    /// The product's refill rate (already reduced by the safety factor) and bucket size.
    learned: Option<(f64, f64)>,
    tokens: f64,
    /// The instant `tokens` is valid at; in the future while paused.
    updated: Instant,
}

/// Counts a request as in flight until dropped.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pacer {
    /// A pacer that keeps below `configured_rate` requests per second, if set, and never
    /// holds a request back for longer than `max_wait`.
    pub(super) fn new(configured_rate: Option<f64>, max_wait: Duration) -> Pacer {
        Pacer {
            state: Mutex::new(PacerState {
                configured_rate,
                learned: None,
                tokens: configured_rate.unwrap_or(1.0).clamp(1.0, MAX_CAPACITY),
                updated: Instant::now(),
            }),
            in_flight: AtomicUsize::new(0),
            max_wait,
        }
    }

    pub(super) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// `from + wait`, with `wait` at most `max_wait`; `from` itself should that overflow.
    fn after(&self, from: Instant, wait: Duration) -> Instant {
        from.checked_add(wait.min(self.max_wait)).unwrap_or(from)
    }

    /// When the next request may start: never later than `max_wait` after `now` or the end
    /// of a pause.
    pub(super) fn reserve(&self, now: Instant) -> Instant {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((rate, capacity)) = state.rate_and_capacity() else {
            return state.updated.max(now);
        };
        state.refill(now, rate, capacity);
        // A debt larger than `max_wait` refills would only be waited off at `max_wait` a
        // request: do not let it grow without bound.
        let floor = -(rate * self.max_wait.as_secs_f64()).max(1.0);
        state.tokens = (state.tokens - 1.0).max(floor);
        let base = state.updated.max(now);
        if state.tokens >= 0.0 {
            return base;
        }
        let wait = Duration::try_from_secs_f64(-state.tokens / rate).unwrap_or(self.max_wait);
        self.after(base, wait)
    }

    /// Learns from a response's `X-RateLimit-*` headers; absurd values are ignored or
    /// clamped (see the module documentation).
    pub(super) fn observe(&self, now: Instant, headers: &HeaderMap) {
        let fill_rate = header_number(headers, "X-RateLimit-FillRate");
        let interval = header_number(headers, "X-RateLimit-Interval-Seconds");
        let limit = header_number(headers, "X-RateLimit-Limit");
        let remaining = header_number(headers, "X-RateLimit-Remaining");
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let (Some(fill_rate), Some(interval)) = (fill_rate, interval)
            && fill_rate > 0.0
            && interval > 0.0
        {
            let rate = fill_rate / interval * PACE_SAFETY_FACTOR;
            if rate.is_finite() && rate > 0.0 {
                let capacity = limit.unwrap_or(fill_rate).clamp(1.0, MAX_CAPACITY);
                if state.learned.is_none() && state.configured_rate.is_none() {
                    // Until now nothing limited us; `remaining` below says what is really
                    // left.
                    state.tokens = capacity;
                }
                state.learned = Some((rate, capacity));
            }
        }
        if let Some(remaining) = remaining
            && let Some((rate, capacity)) = state.rate_and_capacity()
        {
            state.refill(now, rate, capacity);
            let in_flight = self.in_flight.load(Ordering::Relaxed) as f64;
            // The answering request is still counted as in flight, and its token is already
            // out of `remaining`.
            let allowed = remaining.max(0.0) - (in_flight - 1.0).max(0.0);
            state.tokens = state.tokens.min(allowed);
        }
    }

    /// Holds every request back until `wait` (at most `max_wait`) has passed.
    pub(super) fn pause(&self, now: Instant, wait: Duration) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((rate, capacity)) = state.rate_and_capacity() {
            state.refill(now, rate, capacity);
        }
        state.tokens = state.tokens.min(0.0);
        state.updated = state.updated.max(self.after(now, wait));
    }
}

impl PacerState {
    fn rate_and_capacity(&self) -> Option<(f64, f64)> {
        match (self.learned, self.configured_rate) {
            (Some((rate, capacity)), Some(configured)) => {
                Some((rate.min(configured), capacity.min(configured.max(1.0))))
            }
            (Some(learned), None) => Some(learned),
            (None, Some(configured)) => Some((configured, configured.clamp(1.0, MAX_CAPACITY))),
            (None, None) => None,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, capacity: f64) {
        if now <= self.updated {
            return;
        }
        let elapsed = (now - self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.updated = now;
    }
}

/// A header's value as a finite number; `None` when absent or not one.
fn header_number(headers: &HeaderMap, name: &str) -> Option<f64> {
    let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WAIT: Duration = Duration::from_secs(60);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                *name,
                reqwest::header::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn pacer_lets_requests_through_at_once_when_nothing_is_known() {
        let pacer = Pacer::new(None, MAX_WAIT);
        let now = Instant::now();
        assert_eq!(pacer.reserve(now), now);
        assert_eq!(pacer.reserve(now), now);
    }

    #[test]
    fn pacer_spaces_requests_at_the_announced_fill_rate_once_the_bucket_is_empty() {
        let pacer = Pacer::new(None, MAX_WAIT);
        let now = Instant::now();
        pacer.observe(
            now,
            &headers(&[
                ("X-RateLimit-Limit", "10"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-FillRate", "10"),
                ("X-RateLimit-Interval-Seconds", "1"),
            ]),
        );
        let first = pacer.reserve(now);
        let second = pacer.reserve(now);
        let gap = (second - first).as_secs_f64();
        let expected = 1.0 / (10.0 * PACE_SAFETY_FACTOR);
        assert!(
            (gap - expected).abs() < 1e-6,
            "gap {gap}, expected {expected}"
        );
    }

    #[test]
    fn pacer_spends_the_remaining_tokens_before_pacing() {
        let pacer = Pacer::new(None, MAX_WAIT);
        let now = Instant::now();
        pacer.observe(
            now,
            &headers(&[
                ("X-RateLimit-Limit", "100"),
                ("X-RateLimit-Remaining", "5"),
                ("X-RateLimit-FillRate", "100"),
                ("X-RateLimit-Interval-Seconds", "1"),
            ]),
        );
        for _ in 0..5 {
            assert_eq!(pacer.reserve(now), now);
        }
        assert!(pacer.reserve(now) > now);
    }

    #[test]
    fn pacer_holds_everything_back_during_a_pause() {
        let pacer = Pacer::new(None, MAX_WAIT);
        let now = Instant::now();
        pacer.pause(now, Duration::from_secs(2));
        assert!(pacer.reserve(now) >= now + Duration::from_secs(2));
    }

    #[test]
    fn pacer_never_exceeds_the_configured_rate() {
        let pacer = Pacer::new(Some(4.0), MAX_WAIT);
        let now = Instant::now();
        let starts: Vec<Instant> = (0..12).map(|_| pacer.reserve(now)).collect();
        let last = *starts.last().unwrap();
        // Four may start at once (the bucket), the next eight take two seconds.
        assert!(last >= now + Duration::from_millis(1999));
    }

    #[test]
    fn absurd_rate_limit_headers_neither_panic_nor_hold_a_request_past_the_max_wait() {
        let max_wait = Duration::from_secs(3);
        let absurd: [&[(&'static str, &str)]; 4] = [
            &[
                ("X-RateLimit-FillRate", "1e-300"),
                ("X-RateLimit-Interval-Seconds", "1e300"),
                ("X-RateLimit-Remaining", "-1e300"),
            ],
            &[
                ("X-RateLimit-FillRate", "1e300"),
                ("X-RateLimit-Interval-Seconds", "1e-300"),
                ("X-RateLimit-Limit", "1e308"),
                ("X-RateLimit-Remaining", "-5"),
            ],
            &[
                ("X-RateLimit-FillRate", "0.000001"),
                ("X-RateLimit-Interval-Seconds", "86400"),
                ("X-RateLimit-Remaining", "0"),
            ],
            &[
                ("X-RateLimit-FillRate", "-3"),
                ("X-RateLimit-Interval-Seconds", "NaN"),
                ("X-RateLimit-Remaining", "inf"),
            ],
        ];
        for pairs in absurd {
            let pacer = Pacer::new(None, max_wait);
            let now = Instant::now();
            pacer.observe(now, &headers(pairs));
            for _ in 0..1000 {
                let start = pacer.reserve(now);
                assert!(start <= now + max_wait, "{pairs:?}");
            }
            pacer.pause(now, Duration::MAX);
            assert!(pacer.reserve(now) <= now + max_wait + max_wait, "{pairs:?}");
        }
    }
}
