//! Positions in journal order and the additive fingerprint of a set of
//! them.
//!
//! A range's fingerprint is BLAKE3 (derive-key mode) of the sum, modulo
//! 2^256, of its items' *elements*, and of its item count, truncated to 16
//! bytes. A sum can be split and recombined (the sum of a range is the
//! difference of two prefix sums), which is what makes a fingerprint cost
//! O(log n) with the cache of [`crate::SyncIndex`] instead of O(n).
//!
//! An item's element is its fact id (a BLAKE3 output, so uniform) with its
//! timestamp mixed in by a non-linear 64-bit finaliser: two replicas that
//! hold the same fact under different timestamps (both appended it) have
//! different fingerprints, so sync also converges the *order*, not only the
//! set. Additive set hashes can be attacked by a party that picks many
//! ids (Wagner's generalised birthday); ids here are hashes of facts a
//! member must sign or seal, and a member that fools a range comparison
//! only withholds facts it could withhold anyway.

use rdv_context::FactId;
use rdv_context::hlc::HlcTimestamp;
use rdv_context::journal::OrderKey;

/// Bytes of a fingerprint on the wire.
pub const FINGERPRINT_LEN: usize = 16;
const FINGERPRINT_LABEL: &str = "rdv sync v1 range fingerprint";

/// A position in journal order: (wall ms, counter, id), compared in that
/// order (the journal's own order, see `rdv_context::journal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// HLC wall time.
    pub wall_ms: u64,
    /// HLC counter.
    pub counter: u32,
    /// Fact id (or, in a range bound, an id prefix padded with zeros).
    pub id: [u8; 32],
}

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key {
        wall_ms: 0,
        counter: 0,
        id: [0; 32],
    };
    /// The largest key: stands for "+infinity" as a range bound.
    pub const MAX: Key = Key {
        wall_ms: u64::MAX,
        counter: u32::MAX,
        id: [0xff; 32],
    };
    /// The timestamp part.
    pub fn timestamp(&self) -> HlcTimestamp {
        HlcTimestamp {
            wall_ms: self.wall_ms,
            counter: self.counter,
        }
    }
    /// The id part as a fact id.
    pub fn fact_id(&self) -> FactId {
        FactId(self.id)
    }
}

impl From<OrderKey> for Key {
    fn from(k: OrderKey) -> Self {
        Key {
            wall_ms: k.timestamp.wall_ms,
            counter: k.timestamp.counter,
            id: k.id.0,
        }
    }
}

/// A sum of elements modulo 2^256 (four little-endian 64-bit limbs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accumulator([u64; 4]);

fn mix64(mut x: u64) -> u64 {
    // SplitMix64's finaliser: a bijection with full avalanche.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Accumulator {
    /// The element of one item.
    pub fn element(key: &Key) -> Self {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key.id[i * 8..i * 8 + 8]);
            *limb = u64::from_le_bytes(b);
        }
        limbs[0] ^= mix64(key.wall_ms);
        limbs[1] ^= mix64(u64::from(key.counter) ^ 0x5bd1_e995_0000_0000);
        Self(limbs)
    }
    /// Adds `other`.
    pub fn add(&mut self, other: &Self) {
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
    }
    /// Subtracts `other`.
    pub fn sub(&mut self, other: &Self) {
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let (s1, c1) = a.overflowing_sub(b);
            let (s2, c2) = s1.overflowing_sub(u64::from(borrow));
            *a = s2;
            borrow = c1 || c2;
        }
    }
    /// Adds one item.
    pub fn add_key(&mut self, key: &Key) {
        self.add(&Self::element(key));
    }
    /// The fingerprint of a range whose elements sum to `self` and which
    /// holds `count` items.
    pub fn fingerprint(&self, count: u64) -> Fingerprint {
        let mut h = blake3::Hasher::new_derive_key(FINGERPRINT_LABEL);
        for limb in self.0 {
            h.update(&limb.to_le_bytes());
        }
        h.update(&count.to_le_bytes());
        let mut out = [0u8; FINGERPRINT_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..FINGERPRINT_LEN]);
        Fingerprint(out)
    }
}

/// A range fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(w: u64, c: u32, b: u8) -> Key {
        Key {
            wall_ms: w,
            counter: c,
            id: [b; 32],
        }
    }

    #[test]
    fn sums_split_and_recombine() {
        let ks = [key(1, 0, 1), key(2, 0, 0xff), key(2, 1, 7)];
        let mut all = Accumulator::default();
        ks.iter().for_each(|k| all.add_key(k));
        let mut tail = all;
        tail.sub(&Accumulator::element(&ks[0]));
        let mut rest = Accumulator::default();
        ks[1..].iter().for_each(|k| rest.add_key(k));
        assert_eq!(tail, rest);
    }

    #[test]
    fn swapping_timestamps_changes_the_fingerprint() {
        let mut a = Accumulator::default();
        a.add_key(&key(1, 0, 1));
        a.add_key(&key(2, 0, 2));
        let mut b = Accumulator::default();
        b.add_key(&key(2, 0, 1));
        b.add_key(&key(1, 0, 2));
        assert_ne!(a.fingerprint(2), b.fingerprint(2));
    }
}
