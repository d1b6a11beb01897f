//! Retry settings and exponential backoff with full jitter.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// How often a failed job is tried again, and how long to wait in between.
///
/// The delay before attempt `n + 1` is drawn uniformly from
/// `0 ..= min(cap, base * 2^(n - 1))` ("full jitter"), so retries of many jobs
/// that failed together spread out instead of arriving together.
///
/// A job waiting for its retry does not hold a worker. Errors are always
/// retried unless marked [`permanent`](crate::permanent); timeouts are retried
/// by default, panics are not (both configurable).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use workpool::RetryPolicy;
///
/// let policy = RetryPolicy::attempts(5)
///     .with_backoff(Duration::from_millis(10), Duration::from_secs(1))
///     .retry_panics(true);
/// assert_eq!(policy.max_attempts(), 5);
/// assert_eq!(policy.max_delay(3), Duration::from_millis(40));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    retry_timeouts: bool,
    retry_panics: bool,
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub const fn never() -> Self {
        Self::attempts(1)
    }

    /// At most `max_attempts` attempts in all (the first try included; 0 is
    /// taken as 1), with backoff base 100 ms and cap 30 s, retrying timeouts
    /// but not panics.
    pub const fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: if max_attempts == 0 { 1 } else { max_attempts },
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            retry_timeouts: true,
            retry_panics: false,
        }
    }

    /// Sets the backoff: the ceiling starts at `base` and doubles per attempt up
    /// to `cap`. A `base` above `cap` is capped.
    pub const fn with_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap;
        self
    }

    /// Whether an attempt that timed out is retried (default: yes).
    pub const fn retry_timeouts(mut self, yes: bool) -> Self {
        self.retry_timeouts = yes;
        self
    }

    /// Whether an attempt that panicked is retried (default: no).
    pub const fn retry_panics(mut self, yes: bool) -> Self {
        self.retry_panics = yes;
        self
    }

    /// The most attempts a job gets.
    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether timeouts are retried.
    pub const fn retries_timeouts(&self) -> bool {
        self.retry_timeouts
    }

    /// Whether panics are retried.
    pub const fn retries_panics(&self) -> bool {
        self.retry_panics
    }

    /// The longest delay after failed attempt `attempt` (counted from 1):
    /// `min(cap, base * 2^(attempt - 1))`.
    pub fn max_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << shift;
        let nanos = (self.base.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.cap)
    }

    /// A delay drawn uniformly from `0 ..= max_delay(attempt)`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let max = self.max_delay(attempt).as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (max + 1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::never()
    }
}

/// splitmix64 on a per-thread state seeded from the standard library's random
/// hasher keys: plenty for jitter, and no dependency.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
    }
    STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy::attempts(0).max_attempts(), 1);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = RetryPolicy::attempts(10)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<_> = (1..=5).map(|a| p.max_delay(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        assert_eq!(p.max_delay(200), Duration::from_millis(500));
    }

    proptest! {
        #[test]
        fn delay_stays_within_its_ceiling(base_ms in 0u64..10_000, cap_ms in 0u64..100_000, attempt in 1u32..100) {
            let p = RetryPolicy::attempts(100)
                .with_backoff(Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let d = p.delay(attempt);
            prop_assert!(d <= p.max_delay(attempt));
            prop_assert!(d <= Duration::from_millis(cap_ms));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let p =
            RetryPolicy::attempts(3).with_backoff(Duration::from_secs(1), Duration::from_secs(1));
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| p.delay(1)).collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct delays",
            distinct.len()
        );
    }
}
