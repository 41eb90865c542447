//! A token bucket on injected time, for the relay's byte-rate bounds (per
//! client and in total). Bytes are always taken, even past zero; the
//! answer is how long the caller must pause before it reads more, which
//! is how an over-rate client is slowed: the relay stops reading its
//! socket, TCP's flow control pushes back to the sender, nothing queues.

use std::time::Duration;

/// Bytes per second with a burst allowance.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens in micro-bytes (bytes × 10^6), negative when in debt.
    level: i128,
    last_us: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` bytes per second up to `burst`.
    pub fn new(rate: u64, burst: u64, now: Duration) -> Self {
        Self {
            rate: rate.max(1),
            burst,
            level: i128::from(burst) * 1_000_000,
            last_us: now.as_micros() as u64,
        }
    }
    fn refill(&mut self, now: Duration) {
        let now_us = now.as_micros() as u64;
        let dt = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        let cap = i128::from(self.burst) * 1_000_000;
        self.level = (self.level + i128::from(dt) * i128::from(self.rate)).min(cap);
    }
    /// Takes `n` at `now` if the bucket holds that many, leaving it as it
    /// was otherwise (for bounds that refuse rather than pace: a refused
    /// caller does not dig the bucket deeper).
    pub fn try_take(&mut self, n: u64, now: Duration) -> bool {
        self.refill(now);
        let want = i128::from(n) * 1_000_000;
        if self.level < want {
            return false;
        }
        self.level -= want;
        true
    }

    /// Puts back `n` taken by [`TokenBucket::try_take`] for something that
    /// did not happen after all (up to the burst).
    pub fn refund(&mut self, n: u64) {
        let cap = i128::from(self.burst) * 1_000_000;
        self.level = (self.level + i128::from(n) * 1_000_000).min(cap);
    }

    /// Whether the bucket has refilled to its burst at `now` (it then holds
    /// no state worth keeping).
    pub fn is_full(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.level >= i128::from(self.burst) * 1_000_000
    }

    /// Takes `bytes` at `now`; returns how long to wait until the bucket
    /// is out of debt (zero when it is not in debt).
    pub fn take(&mut self, bytes: u64, now: Duration) -> Duration {
        self.refill(now);
        self.level -= i128::from(bytes) * 1_000_000;
        if self.level >= 0 {
            Duration::ZERO
        } else {
            let rate = i128::from(self.rate);
            let us = (-self.level + rate - 1) / rate;
            Duration::from_micros(us as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn try_take_refuses_without_digging_and_refills_at_the_rate() {
        let mut b = TokenBucket::new(2, 3, Duration::ZERO);
        assert!((0..3).all(|_| b.try_take(1, Duration::ZERO)));
        assert!(!b.try_take(1, Duration::ZERO));
        assert!(!b.try_take(1, 100 * MS), "refused attempts take nothing");
        // Half a second at 2 per second: one more, not two.
        assert!(b.try_take(1, 500 * MS));
        assert!(!b.try_take(1, 500 * MS));
        assert!(!b.is_full(500 * MS));
        b.refund(1);
        assert!(b.try_take(1, 500 * MS), "a refunded token is there again");
        assert!(b.is_full(2000 * MS));
    }

    #[test]
    fn within_the_burst_nothing_waits_then_the_rate_holds() {
        let mut b = TokenBucket::new(1000, 500, Duration::ZERO);
        assert_eq!(b.take(500, Duration::ZERO), Duration::ZERO);
        // 250 bytes over at 1000 B/s: a quarter second.
        assert_eq!(b.take(250, Duration::ZERO), 250 * MS);
        // After waiting it out, the debt is gone and 100 ms earn 100 bytes.
        assert_eq!(b.take(0, 250 * MS), Duration::ZERO);
        assert_eq!(b.take(100, 350 * MS), Duration::ZERO);
        assert_eq!(b.take(1, 350 * MS), MS);
    }

    #[test]
    fn a_sender_kept_at_the_rate_moves_rate_bytes_per_second() {
        // Virtual time: a sender that always waits as told moves 10 s of
        // 64 KiB writes at 100 KiB/s in about 10 s.
        let rate = 100 * 1024;
        let mut b = TokenBucket::new(rate, 64 * 1024, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut sent = 0u64;
        while now < Duration::from_secs(10) {
            now += b.take(64 * 1024, now);
            sent += 64 * 1024;
        }
        let expected = rate * 10 + 64 * 1024;
        assert!(
            sent.abs_diff(expected) <= 2 * 64 * 1024,
            "{sent} vs {expected}"
        );
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst_and_time_never_runs_back() {
        let mut b = TokenBucket::new(1000, 100, Duration::ZERO);
        assert_eq!(b.take(100, Duration::from_secs(3600)), Duration::ZERO);
        assert_eq!(b.take(1, Duration::from_secs(3600)), MS);
        // A clock that steps back changes nothing.
        assert_eq!(b.take(0, Duration::from_secs(10)), MS);
    }
}
