//! Injected randomness.
//!
//! Nothing in this crate reads a random source by itself: functions that
//! need randomness take a [`CryptoRng`] (the `rand_core` trait, re-exported
//! as [`crate::rand_core`]), and [`crate::RendezvousService`] draws one seed
//! at construction. [`SeededRng`] is a deterministic CSPRNG for tests and
//! for holding a seed that came from the operating system.

use x25519_dalek::rand_core::{TryCryptoRng, TryRng};

pub use x25519_dalek::rand_core::CryptoRng;

const LABEL: &str = "rdv context v1 seeded-rng";
const RESEED_LABEL: &str = "rdv context v1 seeded-rng-reseed";

/// A deterministic cryptographic generator: the BLAKE3 extendable output
/// keyed with a 32-byte seed. Seed it from the operating system in a
/// process, and with a fixed value in tests. Two generators with the same
/// seed give the same bytes, so never reuse a seed across process starts:
/// descriptor and AEAD nonces would repeat.
pub struct SeededRng {
    stream: blake3::OutputReader,
}

impl SeededRng {
    /// A generator from `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = blake3::derive_key(LABEL, &seed);
        Self {
            stream: blake3::Hasher::new_keyed(&key).finalize_xof(),
        }
    }
    /// A generator seeded from 32 bytes of `rng`.
    pub fn from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }
    /// Mixes `fresh` bytes (from the operating system) into the generator:
    /// the next output depends on both the old state and `fresh`. A driver
    /// reseeds before every handshake, so a process that was forked or a VM
    /// that was cloned with this generator in memory does not repeat
    /// ephemeral keys.
    pub fn reseed(&mut self, fresh: &[u8; 32]) {
        let mut old = [0u8; 32];
        self.stream.fill(&mut old);
        let mut h = blake3::Hasher::new_derive_key(RESEED_LABEL);
        h.update(&old);
        h.update(fresh);
        self.stream = blake3::Hasher::new_keyed(h.finalize().as_bytes()).finalize_xof();
        zeroize::Zeroize::zeroize(&mut old);
    }
    /// `N` fresh bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.stream.fill(&mut out);
        out
    }
}

impl std::fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededRng(..)")
    }
}

impl TryRng for SeededRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(u32::from_le_bytes(self.array()))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from_le_bytes(self.array()))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.stream.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

/// `N` bytes from any injected generator.
pub(crate) fn random_array<const N: usize, R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0; N];
    rng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reseed_changes_what_follows_and_depends_on_both_inputs() {
        let mut a = SeededRng::from_seed([1; 32]);
        let mut b = SeededRng::from_seed([1; 32]);
        // Two clones of one generator (a fork) reseeded differently part.
        a.reseed(&[2; 32]);
        b.reseed(&[3; 32]);
        assert_ne!(a.array::<32>(), b.array::<32>());
        // The same fresh bytes on different states give different outputs.
        let mut c = SeededRng::from_seed([4; 32]);
        let mut d = SeededRng::from_seed([5; 32]);
        c.reseed(&[9; 32]);
        d.reseed(&[9; 32]);
        assert_ne!(c.array::<32>(), d.array::<32>());
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a: [u8; 64] = SeededRng::from_seed([1; 32]).array();
        let b: [u8; 64] = SeededRng::from_seed([1; 32]).array();
        let c: [u8; 64] = SeededRng::from_seed([2; 32]).array();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn successive_draws_differ() {
        let mut r = SeededRng::from_seed([1; 32]);
        assert_ne!(r.array::<32>(), r.array::<32>());
    }
}
