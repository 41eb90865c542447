//! The fingerprint cache: every journal position in order, in chunks that
//! carry the sum of their elements, with prefix sums over the chunks.
//!
//! A range fingerprint is the difference of two prefix sums; a prefix sum
//! at a position is the prefix over whole chunks (an array lookup) plus at
//! most half a chunk of elements (summed from whichever end of the chunk is
//! nearer). With chunks of at most [`MAX_CHUNK`] keys that is O(log n) to
//! find the position and at most `MAX_CHUNK / 2` additions, whatever `n`.
//! Inserting a key touches one chunk; the arrays over chunks (one entry per
//! chunk, ~n/256 of them) are rebuilt lazily before the next query.
//!
//! Kept in memory (about 48 bytes a fact) and rebuilt from the journal's
//! primary key on open ([`SyncIndex::load`]): the SQLite journal is ordered
//! by (timestamp, id), so the rebuild is one sequential scan of keys.

use rdv_context::journal::{Journal, JournalError, JournalStore};

use crate::fingerprint::{Accumulator, Fingerprint, Key};

/// Most keys in one chunk (a full chunk splits in two).
pub const MAX_CHUNK: usize = 512;
const LOAD_PAGE: usize = 10_000;

#[derive(Clone, Debug, Default)]
struct Chunk {
    keys: Vec<Key>,
    sum: Accumulator,
}

/// Every position of one journal, with cached sums (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SyncIndex {
    chunks: Vec<Chunk>,
    /// `prefix_count[i]`: keys in chunks before `i` (one more entry than
    /// chunks).
    prefix_count: Vec<usize>,
    prefix_sum: Vec<Accumulator>,
    dirty: bool,
    len: usize,
}

impl SyncIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            prefix_count: vec![0],
            prefix_sum: vec![Accumulator::default()],
            ..Self::default()
        }
    }

    /// The index of every entry of `journal`.
    pub fn load<S: JournalStore>(journal: &Journal<S>) -> Result<Self, JournalError> {
        let mut keys = Vec::with_capacity(journal.len());
        let mut after = None;
        loop {
            let page = journal.store().scan_keys(after, LOAD_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(*last);
            keys.extend(page.into_iter().map(Key::from));
        }
        Ok(Self::from_sorted(keys))
    }

    /// An index of keys already in strictly increasing order (duplicates
    /// and disorder are repaired by sorting).
    pub fn from_sorted(mut keys: Vec<Key>) -> Self {
        if !keys.is_sorted_by(|a, b| a < b) {
            keys.sort_unstable();
            keys.dedup();
        }
        let mut index = Self::new();
        index.len = keys.len();
        for part in keys.chunks(MAX_CHUNK / 2) {
            let mut sum = Accumulator::default();
            part.iter().for_each(|k| sum.add_key(k));
            index.chunks.push(Chunk {
                keys: part.to_vec(),
                sum,
            });
        }
        index.dirty = true;
        index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts a key; `false` if it was there.
    pub fn insert(&mut self, key: Key) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(Chunk::default());
        }
        // The first chunk whose last key is >= key, or the last chunk.
        let ci = self
            .chunks
            .partition_point(|c| c.keys.last().is_some_and(|l| *l < key))
            .min(self.chunks.len() - 1);
        let chunk = &mut self.chunks[ci];
        let Err(pos) = chunk.keys.binary_search(&key) else {
            return false;
        };
        chunk.keys.insert(pos, key);
        chunk.sum.add_key(&key);
        if chunk.keys.len() > MAX_CHUNK {
            let tail = chunk.keys.split_off(MAX_CHUNK / 2);
            let mut tail_sum = Accumulator::default();
            tail.iter().for_each(|k| tail_sum.add_key(k));
            chunk.sum.sub(&tail_sum);
            self.chunks.insert(
                ci + 1,
                Chunk {
                    keys: tail,
                    sum: tail_sum,
                },
            );
        }
        self.len += 1;
        self.dirty = true;
        true
    }

    /// Removes a key (a fact whose timestamp merge lowered); `false` if
    /// absent.
    pub fn remove(&mut self, key: &Key) -> bool {
        let ci = self
            .chunks
            .partition_point(|c| c.keys.last().is_some_and(|l| l < key));
        let Some(chunk) = self.chunks.get_mut(ci) else {
            return false;
        };
        let Ok(pos) = chunk.keys.binary_search(key) else {
            return false;
        };
        chunk.keys.remove(pos);
        chunk.sum.sub(&Accumulator::element(key));
        if chunk.keys.is_empty() {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        self.dirty = true;
        true
    }

    fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.prefix_count.clear();
        self.prefix_sum.clear();
        let (mut n, mut s) = (0usize, Accumulator::default());
        self.prefix_count.push(n);
        self.prefix_sum.push(s);
        for c in &self.chunks {
            n += c.keys.len();
            s.add(&c.sum);
            self.prefix_count.push(n);
            self.prefix_sum.push(s);
        }
        self.dirty = false;
    }

    /// (chunk, offset) of the first key `>= key`.
    fn locate(&self, key: &Key) -> (usize, usize) {
        let ci = self
            .chunks
            .partition_point(|c| c.keys.last().is_some_and(|l| l < key));
        match self.chunks.get(ci) {
            Some(c) => (ci, c.keys.partition_point(|k| k < key)),
            None => (self.chunks.len(), 0),
        }
    }

    /// Number of keys `< key`.
    pub fn rank(&mut self, key: &Key) -> usize {
        self.refresh();
        let (ci, off) = self.locate(key);
        self.prefix_count[ci] + off
    }

    fn prefix(&self, (ci, off): (usize, usize)) -> Accumulator {
        let Some(c) = self.chunks.get(ci) else {
            return self.prefix_sum[ci];
        };
        if off <= c.keys.len() / 2 {
            let mut s = self.prefix_sum[ci];
            c.keys[..off].iter().for_each(|k| s.add_key(k));
            s
        } else {
            let mut s = self.prefix_sum[ci + 1];
            c.keys[off..]
                .iter()
                .for_each(|k| s.sub(&Accumulator::element(k)));
            s
        }
    }

    /// Count and fingerprint of the keys in `[lower, upper)`.
    pub fn fingerprint(&mut self, lower: &Key, upper: &Key) -> (usize, Fingerprint) {
        self.refresh();
        let (lo, hi) = (self.locate(lower), self.locate(upper));
        let count = (self.prefix_count[hi.0] + hi.1).saturating_sub(self.prefix_count[lo.0] + lo.1);
        let mut sum = self.prefix(hi);
        sum.sub(&self.prefix(lo));
        (count, sum.fingerprint(count as u64))
    }

    /// The key of rank `rank` (0-based), if any.
    pub fn nth(&mut self, rank: usize) -> Option<Key> {
        self.refresh();
        if rank >= self.len {
            return None;
        }
        let ci = self.prefix_count.partition_point(|n| *n <= rank) - 1;
        self.chunks
            .get(ci)?
            .keys
            .get(rank - self.prefix_count[ci])
            .copied()
    }

    /// Up to `limit` keys in `[lower, upper)`, in order.
    pub fn keys_in(&mut self, lower: &Key, upper: &Key, limit: usize) -> Vec<Key> {
        self.refresh();
        let (mut ci, mut off) = self.locate(lower);
        let mut out = Vec::new();
        while let Some(c) = self.chunks.get(ci) {
            for k in &c.keys[off..] {
                if k >= upper || out.len() >= limit {
                    return out;
                }
                out.push(*k);
            }
            ci += 1;
            off = 0;
        }
        out
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &Key) -> bool {
        let (ci, off) = self.locate(key);
        self.chunks
            .get(ci)
            .and_then(|c| c.keys.get(off))
            .is_some_and(|k| k == key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key(i: u64) -> Key {
        let id = *blake3::hash(&i.to_le_bytes()).as_bytes();
        Key {
            wall_ms: i % 97,
            counter: (i % 3) as u32,
            id,
        }
    }

    fn naive(keys: &[Key], lo: &Key, hi: &Key) -> (usize, Fingerprint) {
        let mut s = Accumulator::default();
        let mut n = 0;
        for k in keys.iter().filter(|k| *k >= lo && *k < hi) {
            s.add_key(k);
            n += 1;
        }
        (n, s.fingerprint(n as u64))
    }

    proptest! {
        #[test]
        fn fingerprints_match_a_naive_sum(
            ids in proptest::collection::vec(0u64..5000, 0..2000),
            removed in proptest::collection::vec(0u64..5000, 0..200),
            bounds in proptest::collection::vec((0u64..5000, 0u64..5000), 1..20),
        ) {
            let mut index = SyncIndex::new();
            let mut set = std::collections::BTreeSet::new();
            for i in &ids {
                prop_assert_eq!(index.insert(key(*i)), set.insert(key(*i)));
            }
            for i in &removed {
                prop_assert_eq!(index.remove(&key(*i)), set.remove(&key(*i)));
            }
            let all: Vec<Key> = set.iter().copied().collect();
            prop_assert_eq!(index.len(), all.len());
            for (a, b) in bounds {
                let (lo, hi) = if key(a) <= key(b) { (key(a), key(b)) } else { (key(b), key(a)) };
                prop_assert_eq!(index.fingerprint(&lo, &hi), naive(&all, &lo, &hi));
                prop_assert_eq!(index.rank(&lo), all.partition_point(|k| *k < lo));
            }
            for (r, k) in all.iter().enumerate().step_by(37) {
                prop_assert_eq!(index.nth(r), Some(*k));
            }
            prop_assert_eq!(index.keys_in(&Key::MIN, &Key::MAX, usize::MAX), all.clone());
            let rebuilt = SyncIndex::from_sorted(all.clone());
            let mut rebuilt = rebuilt;
            prop_assert_eq!(rebuilt.fingerprint(&Key::MIN, &Key::MAX), index.fingerprint(&Key::MIN, &Key::MAX));
        }
    }
}
