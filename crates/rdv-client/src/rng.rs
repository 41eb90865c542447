//! The service's only source of randomness: a seeded splitmix64.
//!
//! Used for backoff jitter only, so statistical quality is ample and no crate
//! is needed. Reference: Steele, Lea, Flood, "Fast splittable pseudorandom
//! number generators" (OOPSLA 2014).

use std::time::Duration;

/// splitmix64 state.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `d` scaled by a uniformly drawn factor in [0.5, 1.0], to the millisecond.
    pub(crate) fn jitter(&mut self, d: Duration) -> Duration {
        let per_mille = 500 + u128::from(self.next_u64() % 501);
        let ms = d.as_millis().saturating_mul(per_mille) / 1000;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full() {
        let mut rng = SplitMix64::new(7);
        let d = Duration::from_secs(10);
        for _ in 0..10_000 {
            let j = rng.jitter(d);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let mut c = SplitMix64::new(43);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }
}
