//! The sync message and its codec, with hard bounds.
//!
//! ```text
//! message  = version:u8(=1) ranges wants facts
//! ranges   = count:varint range*          (the first range starts at the
//!                                          smallest key; each ends where the
//!                                          next starts; the last ends at +inf)
//! range    = bound mode
//! bound    = wall:varint  (0 = +inf, else wall - previous bound's wall + 1)
//!            counter:varint prefix_len:u8 (<= 32) prefix:bytes
//!                                         (the id, padded with zeros)
//! mode     = 0 skip | 1 fingerprint:[16] | 2 count:varint item*
//! item     = wall:varint (delta from the previous item's, the first from
//!            the range's lower bound's) counter:varint id:[32]
//! wants    = count:varint id:[32]*
//! facts    = count:varint (len:varint entry)*   (entry: a JournalEntry's
//!                                               sync bytes)
//! ```
//!
//! Decoding checks everything a hostile peer could use to make us work or
//! allocate: the message length first, then every count against
//! [`Limits`] before anything is allocated for it, bounds strictly
//! increasing and ending at +inf, items strictly increasing inside their
//! range, varints of at most 10 bytes, no trailing byte. A malformed message
//! is a [`DecodeError`] and the session ends.

use rdv_context::JournalEntry;
use rdv_context::hlc::MAX_WALL_MS;

use crate::fingerprint::{Fingerprint, Key};

/// Wire version. 2: channel records travel sealed; 3: every fact is sealed
/// and names no authority in clear (issue 13 item 8). A member of an older
/// version gets an explicit version error, not a decode error on the first
/// fact of a changed format.
pub const VERSION: u8 = 3;

/// Hard bounds of a session. Both sides enforce them on what they receive
/// and respect them in what they send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in bytes. Default 1 MiB.
    pub max_message_len: usize,
    /// Most messages one side receives in a session. Default 1024.
    pub max_rounds: u32,
    /// Most ranges in a message. Default 4096.
    pub max_ranges: usize,
    /// Most ids in a message (range item lists plus wants). Default 16384.
    pub max_ids: usize,
    /// Most facts in a message. Default 1024.
    pub max_facts: usize,
    /// Longest session, in ms of the injected clock. Default 60 s.
    pub max_session_ms: u64,
    /// Facts failing their checks that end the session (and, in the
    /// driver, the channel). Default 8.
    pub max_bad_facts: u32,
    /// Sub-ranges a differing range is split into. Default 16.
    pub branching: usize,
    /// A differing range with at most this many items is answered with its
    /// item list instead of being split. Default 8.
    pub leaf_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_len: 1 << 20,
            max_rounds: 1024,
            max_ranges: 4096,
            max_ids: 16_384,
            max_facts: 1024,
            max_session_ms: 60_000,
            max_bad_facts: 8,
            branching: 16,
            leaf_items: 8,
        }
    }
}

impl Limits {
    /// These limits made consistent, so that a session always progresses:
    /// at least 2 ranges a split; a settled range, a split and the tail fit
    /// in a message (`branching + 2 <= max_ranges`); a leaf's items and
    /// wants fit in the id and fact budgets; a message holds a few facts of
    /// the largest size.
    pub fn normalized(mut self) -> Self {
        self.max_ranges = self.max_ranges.max(4);
        self.branching = self.branching.clamp(2, self.max_ranges - 2);
        self.max_message_len = self
            .max_message_len
            .max(4 * (rdv_context::MAX_FACT_LEN + 64));
        self.max_facts = self.max_facts.max(1);
        self.max_ids = self.max_ids.max(1);
        self.leaf_items = self.leaf_items.clamp(1, self.max_ids.min(self.max_facts));
        self
    }
}

/// Why a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than the limit.
    #[error("message of {len} bytes exceeds {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another version.
    #[error("unknown sync version {0}")]
    Version(u8),
    /// Ended early.
    #[error("truncated at {0}")]
    Truncated(&'static str),
    /// A count over its limit.
    #[error("{what}: {count} exceeds the limit {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// A value out of its domain (varint too long, prefix over 32 bytes,
    /// unknown mode, timestamp beyond the storable range).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Range bounds not strictly increasing, or not ending at +inf.
    #[error("range bounds out of order")]
    BoundOrder,
    /// Items of a list out of order or outside their range.
    #[error("range items out of order or outside their range")]
    ItemOrder,
    /// A fact that does not decode.
    #[error("fact does not decode: {0}")]
    Fact(#[from] rdv_context::DecodeError),
    /// Bytes after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// What a range carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing to do (settled, or merged with a neighbour).
    Skip,
    /// The sender's fingerprint of its items in the range.
    Fingerprint(Fingerprint),
    /// Every item the sender holds in the range.
    Items(Vec<Key>),
}

/// One range: it ends (exclusive) at `upper`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Exclusive upper bound ([`Key::MAX`] is +inf).
    pub upper: Key,
    /// What it carries.
    pub mode: Mode,
}

/// One sync message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Ranges covering the whole key space, or none.
    pub ranges: Vec<Range>,
    /// Ids the sender asks for.
    pub wants: Vec<[u8; 32]>,
    /// Entries the sender gives.
    pub facts: Vec<JournalEntry>,
}

impl Message {
    /// Whether the peer must answer it: a range to compare, items to
    /// diff, or ids wanted.
    pub fn needs_answer(&self) -> bool {
        !self.wants.is_empty() || self.ranges.iter().any(|r| r.mode != Mode::Skip)
    }

    /// Encodes. Adjacent skips should be merged by the builder.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        varint(&mut out, self.ranges.len() as u64);
        let mut prev = Key::MIN;
        for r in &self.ranges {
            encode_bound(&mut out, &prev, &r.upper);
            match &r.mode {
                Mode::Skip => out.push(0),
                Mode::Fingerprint(f) => {
                    out.push(1);
                    out.extend_from_slice(&f.0);
                }
                Mode::Items(items) => {
                    out.push(2);
                    varint(&mut out, items.len() as u64);
                    let mut wall = prev.wall_ms;
                    for k in items {
                        varint(&mut out, k.wall_ms.saturating_sub(wall));
                        varint(&mut out, u64::from(k.counter));
                        out.extend_from_slice(&k.id);
                        wall = k.wall_ms;
                    }
                }
            }
            prev = r.upper;
        }
        varint(&mut out, self.wants.len() as u64);
        for w in &self.wants {
            out.extend_from_slice(w);
        }
        varint(&mut out, self.facts.len() as u64);
        for f in &self.facts {
            let b = f.to_bytes();
            varint(&mut out, b.len() as u64);
            out.extend_from_slice(&b);
        }
        out
    }

    /// Decodes under `limits` (see the module docs).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        if bytes.len() > limits.max_message_len {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: limits.max_message_len,
            });
        }
        let mut r = Reader(bytes);
        let v = r.u8("version")?;
        if v != VERSION {
            return Err(DecodeError::Version(v));
        }
        let n = r.count("ranges", limits.max_ranges)?;
        let mut ranges = Vec::with_capacity(n);
        let mut ids = 0usize;
        let mut prev = Key::MIN;
        for i in 0..n {
            let upper = r.bound(&prev)?;
            if upper <= prev || (upper == Key::MAX) != (i + 1 == n) {
                return Err(DecodeError::BoundOrder);
            }
            let mode = match r.u8("mode")? {
                0 => Mode::Skip,
                1 => Mode::Fingerprint(Fingerprint(r.array("fingerprint")?)),
                2 => {
                    let k = r.count("items", limits.max_ids - ids)?;
                    ids += k;
                    let mut items = Vec::with_capacity(k);
                    let mut wall = prev.wall_ms;
                    for _ in 0..k {
                        let w = wall
                            .checked_add(r.varint("item wall")?)
                            .filter(|w| *w <= MAX_WALL_MS)
                            .ok_or(DecodeError::Invalid("item timestamp"))?;
                        let counter = u32::try_from(r.varint("item counter")?)
                            .map_err(|_| DecodeError::Invalid("item counter"))?;
                        let key = Key {
                            wall_ms: w,
                            counter,
                            id: r.array("item id")?,
                        };
                        if key < prev || key >= upper || items.last().is_some_and(|l| *l >= key) {
                            return Err(DecodeError::ItemOrder);
                        }
                        items.push(key);
                        wall = w;
                    }
                    Mode::Items(items)
                }
                _ => return Err(DecodeError::Invalid("range mode")),
            };
            ranges.push(Range { upper, mode });
            prev = upper;
        }
        let n = r.count("wants", limits.max_ids - ids)?;
        let mut wants = Vec::with_capacity(n);
        for _ in 0..n {
            wants.push(r.array("want")?);
        }
        let n = r.count("facts", limits.max_facts)?;
        let mut facts = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.varint("fact length")?;
            let len = usize::try_from(len).map_err(|_| DecodeError::Invalid("fact length"))?;
            let body = r.take(len, "fact")?;
            facts.push(JournalEntry::from_bytes(body)?);
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(Self {
            ranges,
            wants,
            facts,
        })
    }
}

/// Appends a LEB128 varint.
pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn encode_bound(out: &mut Vec<u8>, prev: &Key, bound: &Key) {
    if *bound == Key::MAX {
        out.push(0);
        return;
    }
    varint(out, bound.wall_ms - prev.wall_ms + 1);
    varint(out, u64::from(bound.counter));
    // Trailing zero bytes of the id are implied.
    let len = bound.id.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    out.push(len as u8);
    out.extend_from_slice(&bound.id[..len]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(DecodeError::Invalid("varint"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint"))
    }
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(DecodeError::TooMany {
                what,
                count: n,
                max,
            });
        }
        Ok(n as usize)
    }
    fn bound(&mut self, prev: &Key) -> Result<Key, DecodeError> {
        let w = self.varint("bound wall")?;
        if w == 0 {
            return Ok(Key::MAX);
        }
        let wall_ms = prev
            .wall_ms
            .checked_add(w - 1)
            .filter(|w| *w <= MAX_WALL_MS)
            .ok_or(DecodeError::Invalid("bound timestamp"))?;
        let counter = u32::try_from(self.varint("bound counter")?)
            .map_err(|_| DecodeError::Invalid("bound counter"))?;
        let len = usize::from(self.u8("bound prefix length")?);
        if len > 32 {
            return Err(DecodeError::Invalid("bound prefix length"));
        }
        let mut id = [0u8; 32];
        id[..len].copy_from_slice(self.take(len, "bound prefix")?);
        Ok(Key {
            wall_ms,
            counter,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_what_decodes_round_trips(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let l = Limits::default();
            let mut b = bytes;
            // The current version, so the decoder gets past the first byte.
            if let Some(first) = b.first_mut() {
                *first = VERSION;
            }
            if let Ok(m) = Message::decode(&b, &l) {
                prop_assert_eq!(Message::decode(&m.encode(), &l), Ok(m));
            }
        }
    }

    #[test]
    fn round_trips_and_refuses_each_malformation() {
        let k = |w, b| Key {
            wall_ms: w,
            counter: 1,
            id: [b; 32],
        };
        let m = Message {
            ranges: vec![
                Range {
                    upper: Key {
                        wall_ms: 10,
                        counter: 0,
                        id: [0; 32],
                    },
                    mode: Mode::Items(vec![k(3, 1), k(9, 2)]),
                },
                Range {
                    upper: Key::MAX,
                    mode: Mode::Fingerprint(Fingerprint([7; 16])),
                },
            ],
            wants: vec![[9; 32]],
            facts: vec![],
        };
        let l = Limits::default();
        let b = m.encode();
        assert_eq!(Message::decode(&b, &l).unwrap(), m);
        // Each truncation is refused, never a panic.
        for n in 0..b.len() {
            assert!(Message::decode(&b[..n], &l).is_err(), "{n}");
        }
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(
            Message::decode(&trailing, &l),
            Err(DecodeError::Trailing(1))
        );
        let small = Limits {
            max_message_len: b.len() - 1,
            ..l
        };
        assert!(matches!(
            Message::decode(&b, &small),
            Err(DecodeError::TooLong { .. })
        ));
        let few = Limits { max_ids: 2, ..l };
        assert!(matches!(
            Message::decode(&b, &few),
            Err(DecodeError::TooMany { what: "wants", .. })
        ));
        // A list that does not end at +inf.
        let open = Message {
            ranges: vec![m.ranges[0].clone()],
            ..Message::default()
        };
        assert_eq!(
            Message::decode(&open.encode(), &l),
            Err(DecodeError::BoundOrder)
        );
        // Items out of their range.
        let mut outside = m.clone();
        outside.ranges[0].mode = Mode::Items(vec![k(11, 1)]);
        assert_eq!(
            Message::decode(&outside.encode(), &l),
            Err(DecodeError::ItemOrder)
        );
    }
}
