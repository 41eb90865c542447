//! The in-memory [`Store`]: compact tables and ordered indexes, so that
//! every operation costs what it touches, not what is stored.
//!
//! Layout (a registration costs under 256 bytes beyond its record, see
//! `docs/PERFORMANCE.md`):
//! - `slots`: one 40-byte row per registration (peer row, namespace row,
//!   position, deadline, record), recycled through a free list;
//! - `by_key`: a hash table of slot ids keyed by (peer row, namespace row);
//! - `peers` / `namespaces`: interned peer ids and namespaces with their
//!   counts, so a peer id is stored once, not per registration, and in its
//!   byte form (at most 44 bytes) rather than as a 80-byte `PeerId`;
//! - `by_position`, per namespace and global: B-trees from position to slot,
//!   one per record format, for paging: a scan for one format walks only
//!   registrations of that format, and a scan for several merges their trees
//!   in position order, so a DISCOVER costs what it returns whatever the mix
//!   of formats (each registration is in exactly one tree per scope, so this
//!   costs no more memory than a single tree);
//! - `by_expiry`: a B-tree set of (deadline, slot), for expiry in deadline order.

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map};
use std::iter::Peekable;
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};
use rdv_wire::{Namespace, PeerId, RecordFormat, Timestamp};

use crate::store::*;

type Id = u32;

struct Slot {
    peer: Id,
    ns: Id,
    position: u64,
    expires_at: u64,
    /// The record format's tag byte, then the record. `None` when the slot
    /// is free. A box rather than an `Arc`: an `Arc`'s 16-byte header per
    /// registration costs more than copying ~250 bytes into each answer.
    record: Option<Box<[u8]>>,
}

/// How many record formats there are: one position tree each.
const FORMATS: usize = RecordFormat::ALL.len();

fn format_tag(format: RecordFormat) -> u8 {
    match format {
        RecordFormat::Standard => 0,
        RecordFormat::Legacy => 1,
        RecordFormat::PeerInfo => 2,
    }
}

fn boxed(record: &[u8], format: RecordFormat) -> Box<[u8]> {
    let mut v = Vec::with_capacity(record.len() + 1);
    v.push(format_tag(format));
    v.extend_from_slice(record);
    v.into_boxed_slice()
}

/// The format tag of a stored record (as [`unboxed`] reads it), as an index
/// into [`Positions`].
fn tag_of(b: &[u8]) -> usize {
    usize::from(format_tag(unboxed(b).1))
}

/// A stored record and its format.
fn unboxed(b: &[u8]) -> (&[u8], RecordFormat) {
    match b.split_first() {
        Some((1, rest)) => (rest, RecordFormat::Legacy),
        Some((2, rest)) => (rest, RecordFormat::PeerInfo),
        Some((_, rest)) => (rest, RecordFormat::Standard),
        None => (b, RecordFormat::Standard),
    }
}

/// Longest peer id in byte form: an identity multihash (2 bytes of header)
/// of a key of at most 42 bytes (libp2p peer-id spec: longer keys are hashed
/// with SHA-256, 34 bytes).
const MAX_PEER_ID_LEN: usize = 44;

/// A peer id in its byte form, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PeerKey {
    len: u8,
    bytes: [u8; MAX_PEER_ID_LEN],
}

impl PeerKey {
    /// `None` for a peer id longer than any derived from a key (possible only
    /// for a `PeerId` built by hand from an unusual multihash).
    fn new(peer: &PeerId) -> Option<Self> {
        let mut key = PeerKey {
            len: 0,
            bytes: [0; MAX_PEER_ID_LEN],
        };
        let len = peer.as_ref().write(&mut key.bytes[..]).ok()?;
        key.len = u8::try_from(len).ok()?;
        Some(key)
    }

    fn peer_id(&self) -> PeerId {
        // These bytes came from a valid `PeerId`.
        PeerId::from_bytes(&self.bytes[..self.len as usize])
            .unwrap_or_else(|_| unreachable!("stored peer ids parse"))
    }
}

struct PeerRow {
    key: PeerKey,
    count: u32,
}

struct NsRow {
    name: Namespace,
    by_position: Positions,
}

/// Positions to slots, one B-tree per record format (indexed by
/// [`format_tag`]), so that a scan walks only the formats it returns.
#[derive(Default)]
struct Positions([BTreeMap<u64, Id>; FORMATS]);

impl Positions {
    fn insert(&mut self, tag: usize, position: u64, s: Id) {
        self.0[tag].insert(position, s);
    }

    fn remove(&mut self, tag: usize, position: u64) {
        self.0[tag].remove(&position);
    }

    /// Registrations of every format.
    fn len(&self) -> usize {
        self.0.iter().map(BTreeMap::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(BTreeMap::is_empty)
    }

    /// Which trees hold the formats in `formats`.
    fn wanted(formats: Formats) -> [bool; FORMATS] {
        let mut wanted = [false; FORMATS];
        for format in RecordFormat::ALL {
            wanted[usize::from(format_tag(format))] = formats.contains(format);
        }
        wanted
    }

    /// Registrations in `formats`.
    fn len_of(&self, formats: Formats) -> usize {
        let wanted = Self::wanted(formats);
        (0..FORMATS)
            .filter(|&i| wanted[i])
            .map(|i| self.0[i].len())
            .sum()
    }

    /// The highest position, of any format.
    fn last(&self) -> Option<u64> {
        self.0
            .iter()
            .filter_map(|t| t.last_key_value().map(|(&p, _)| p))
            .max()
    }

    /// Registrations in `formats` after `after`, in position order: the
    /// wanted trees' ranges, merged.
    fn after(&self, after: u64, formats: Formats) -> Merged<'_> {
        let wanted = Self::wanted(formats);
        let lane = |i: usize| {
            wanted[i].then(|| {
                self.0[i]
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .peekable()
            })
        };
        Merged(std::array::from_fn(lane))
    }
}

type Lane<'a> = Option<Peekable<btree_map::Range<'a, u64, Id>>>;

/// Position-ordered ranges, one per format, merged into one (positions are
/// unique, so no two entries tie).
struct Merged<'a>([Lane<'a>; FORMATS]);

impl Iterator for Merged<'_> {
    type Item = (u64, Id);

    fn next(&mut self) -> Option<(u64, Id)> {
        fn head(lane: &mut Lane<'_>) -> Option<u64> {
            lane.as_mut()?.peek().map(|&(&p, _)| p)
        }
        let mut side = None;
        let mut lowest = u64::MAX;
        for (i, lane) in self.0.iter_mut().enumerate() {
            if let Some(p) = head(lane)
                && (side.is_none() || p < lowest)
            {
                side = Some(i);
                lowest = p;
            }
        }
        self.0[side?].as_mut()?.next().map(|(&p, &s)| (p, s))
    }
}

/// Registrations held in memory. Lost on restart; the default for tests and
/// for points that do not need durability.
pub struct MemoryStore {
    slots: Vec<Slot>,
    free_slots: Vec<Id>,
    by_key: HashTable<Id>,
    peers: Vec<PeerRow>,
    free_peers: Vec<Id>,
    peer_index: HashTable<Id>,
    namespaces: Vec<Option<NsRow>>,
    record_bytes: usize,
    epoch: u64,
    free_namespaces: Vec<Id>,
    ns_index: HashMap<Namespace, Id>,
    by_position: Positions,
    by_expiry: BTreeSet<(u64, Id)>,
    next_position: u64,
    hasher: DefaultHashBuilder,
    /// Index entries the scans have walked, for tests of their cost.
    #[cfg(test)]
    walked: std::cell::Cell<usize>,
}

impl MemoryStore {
    /// An empty store. `epoch` must differ from that of any earlier store
    /// whose cookies clients may still hold: pass a random value (the store
    /// does not draw one itself, being sans-IO).
    pub fn new(epoch: u64) -> Self {
        Self {
            record_bytes: 0,
            epoch,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashTable::new(),
            peers: Vec::new(),
            free_peers: Vec::new(),
            peer_index: HashTable::new(),
            namespaces: Vec::new(),
            free_namespaces: Vec::new(),
            ns_index: HashMap::new(),
            by_position: Positions::default(),
            by_expiry: BTreeSet::new(),
            next_position: 1,
            hasher: DefaultHashBuilder::default(),
            #[cfg(test)]
            walked: std::cell::Cell::new(0),
        }
    }

    fn key_hash(&self, peer: Id, ns: Id) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((peer, ns))
    }

    fn peer_hash(&self, peer: &PeerKey) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(peer)
    }

    fn find_peer(&self, peer: &PeerId) -> Option<Id> {
        self.find_peer_key(&PeerKey::new(peer)?)
    }

    fn find_peer_key(&self, key: &PeerKey) -> Option<Id> {
        let peers = &self.peers;
        self.peer_index
            .find(self.peer_hash(key), |&i| peers[i as usize].key == *key)
            .copied()
    }

    fn ns_row(&self, ns: Id) -> &NsRow {
        // Ids in `by_key`/slots always name live rows: rows are freed only
        // when their last slot goes.
        self.namespaces[ns as usize]
            .as_ref()
            .unwrap_or_else(|| unreachable!("live namespace row"))
    }

    fn ns_row_mut(&mut self, ns: Id) -> &mut NsRow {
        self.namespaces[ns as usize]
            .as_mut()
            .unwrap_or_else(|| unreachable!("live namespace row"))
    }

    fn find_slot(&self, peer: Id, ns: Id) -> Option<Id> {
        let slots = &self.slots;
        self.by_key
            .find(self.key_hash(peer, ns), |&s| {
                let s = &slots[s as usize];
                s.peer == peer && s.ns == ns
            })
            .copied()
    }

    fn intern_peer(&mut self, key: PeerKey) -> Id {
        if let Some(i) = self.find_peer_key(&key) {
            return i;
        }
        let row = PeerRow { key, count: 0 };
        let i = match self.free_peers.pop() {
            Some(i) => {
                self.peers[i as usize] = row;
                i
            }
            None => {
                self.peers.push(row);
                (self.peers.len() - 1) as Id
            }
        };
        let hash = self.peer_hash(&key);
        let peers = &self.peers;
        let hasher = &self.hasher;
        self.peer_index.insert_unique(hash, i, |&j| {
            use std::hash::BuildHasher;
            hasher.hash_one(peers[j as usize].key)
        });
        i
    }

    fn intern_ns(&mut self, ns: &Namespace) -> Id {
        if let Some(&i) = self.ns_index.get(ns) {
            return i;
        }
        let row = Some(NsRow {
            name: ns.clone(),
            by_position: Positions::default(),
        });
        let i = match self.free_namespaces.pop() {
            Some(i) => {
                self.namespaces[i as usize] = row;
                i
            }
            None => {
                self.namespaces.push(row);
                (self.namespaces.len() - 1) as Id
            }
        };
        self.ns_index.insert(ns.clone(), i);
        i
    }

    fn take_position(&mut self) -> u64 {
        let position = self.next_position;
        self.next_position += 1;
        position
    }

    fn insert_slot(&mut self, peer: Id, ns: Id, expires_at: u64, record: Box<[u8]>) -> u64 {
        let position = self.take_position();
        self.record_bytes += record.len() - 1;
        let tag = tag_of(&record);
        let slot = Slot {
            peer,
            ns,
            position,
            expires_at,
            record: Some(record),
        };
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as Id
            }
        };
        let hash = self.key_hash(peer, ns);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key.insert_unique(hash, s, |&t| {
            use std::hash::BuildHasher;
            let t = &slots[t as usize];
            hasher.hash_one((t.peer, t.ns))
        });
        self.peers[peer as usize].count += 1;
        self.ns_row_mut(ns).by_position.insert(tag, position, s);
        self.by_position.insert(tag, position, s);
        self.by_expiry.insert((expires_at, s));
        position
    }

    fn remove_slot(&mut self, s: Id) {
        let (peer, ns, position, expires_at, tag) = {
            let slot = &mut self.slots[s as usize];
            let record = slot.record.take().unwrap_or_default();
            self.record_bytes -= record.len().saturating_sub(1);
            let tag = tag_of(&record);
            (slot.peer, slot.ns, slot.position, slot.expires_at, tag)
        };
        let hash = self.key_hash(peer, ns);
        if let Ok(entry) = self.by_key.find_entry(hash, |&t| t == s) {
            entry.remove();
        }
        self.by_position.remove(tag, position);
        self.by_expiry.remove(&(expires_at, s));
        let row = self.ns_row_mut(ns);
        row.by_position.remove(tag, position);
        if row.by_position.is_empty() {
            if let Some(row) = self.namespaces[ns as usize].take() {
                self.ns_index.remove(&row.name);
            }
            self.free_namespaces.push(ns);
        }
        let p = &mut self.peers[peer as usize];
        p.count -= 1;
        if p.count == 0 {
            let hash = self.peer_hash(&self.peers[peer as usize].key);
            if let Ok(entry) = self.peer_index.find_entry(hash, |&j| j == peer) {
                entry.remove();
            }
            self.free_peers.push(peer);
        }
        self.free_slots.push(s);
    }

    fn write_one(
        &mut self,
        reg: &NewRegistration,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let Some(key) = PeerKey::new(&reg.peer) else {
            return Err(StoreError {
                transient: false,
                message: format!(
                    "peer id {} is longer than any key-derived peer id",
                    reg.peer
                ),
            });
        };
        let expires_at = now.as_millis().saturating_add(reg.ttl.as_millis());
        let peer = self.find_peer_key(&key);
        let ns = self.ns_index.get(&reg.namespace).copied();
        if let (Some(p), Some(n)) = (peer, ns)
            && let Some(s) = self.find_slot(p, n)
        {
            let slot = &self.slots[s as usize];
            if slot.expires_at > now.as_millis() {
                // Supersede: same slot, new record, deadline and position
                // (and perhaps format: the new one's tree).
                let (old_expiry, old_position) = (slot.expires_at, slot.position);
                let old_len = slot.record.as_ref().map_or(1, |r| r.len());
                let old_tag = tag_of(slot.record.as_deref().unwrap_or_default());
                let tag = usize::from(format_tag(reg.format));
                let position = self.take_position();
                self.by_expiry.remove(&(old_expiry, s));
                self.by_expiry.insert((expires_at, s));
                self.by_position.remove(old_tag, old_position);
                self.by_position.insert(tag, position, s);
                let row = self.ns_row_mut(n);
                row.by_position.remove(old_tag, old_position);
                row.by_position.insert(tag, position, s);
                self.record_bytes = self.record_bytes + reg.record.len() + 1 - old_len;
                let slot = &mut self.slots[s as usize];
                slot.expires_at = expires_at;
                slot.position = position;
                slot.record = Some(boxed(&reg.record, reg.format));
                return Ok(WriteOutcome::Refreshed(position));
            }
            // Expired but not swept yet: it is gone as far as anyone can tell.
            self.remove_slot(s);
            return self.write_one(reg, limits, now);
        }
        let peer_count = peer.map_or(0, |p| self.peers[p as usize].count as usize);
        if peer_count >= limits.per_peer {
            return Ok(WriteOutcome::Refused(Limit::PerPeer));
        }
        match ns {
            Some(n) if self.ns_row(n).by_position.len() >= limits.per_namespace => {
                return Ok(WriteOutcome::Refused(Limit::PerNamespace));
            }
            None if self.ns_index.len() >= limits.namespaces => {
                return Ok(WriteOutcome::Refused(Limit::Namespaces));
            }
            _ => {}
        }
        if self.by_position.len() >= limits.total {
            return Ok(WriteOutcome::Refused(Limit::Total));
        }
        if self.record_bytes + reg.record.len() > limits.total_bytes {
            return Ok(WriteOutcome::Refused(Limit::Bytes));
        }
        let p = self.intern_peer(key);
        let n = self.intern_ns(&reg.namespace);
        let record = boxed(&reg.record, reg.format);
        Ok(WriteOutcome::Created(
            self.insert_slot(p, n, expires_at, record),
        ))
    }

    fn stored(&self, s: Id) -> StoredRegistration {
        let slot = &self.slots[s as usize];
        let (record, format) = unboxed(slot.record.as_deref().unwrap_or_default());
        StoredRegistration {
            peer: self.peers[slot.peer as usize].key.peer_id(),
            namespace: self.ns_row(slot.ns).name.clone(),
            record: Bytes::copy_from_slice(record),
            format,
            expires_at: Timestamp::from_millis(slot.expires_at),
            position: slot.position,
        }
    }
}

impl Store for MemoryStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn write(
        &mut self,
        batch: &[NewRegistration],
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        batch
            .iter()
            .map(|r| self.write_one(r, limits, now))
            .collect()
    }

    fn remove(&mut self, peer: &PeerId, namespace: &Namespace) -> Result<bool, StoreError> {
        let found = self
            .find_peer(peer)
            .zip(self.ns_index.get(namespace).copied())
            .and_then(|(p, n)| self.find_slot(p, n));
        if let Some(s) = found {
            self.remove_slot(s);
        }
        Ok(found.is_some())
    }

    fn record(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        now: Timestamp,
    ) -> Result<Option<(Bytes, RecordFormat)>, StoreError> {
        let found = self
            .find_peer(peer)
            .zip(self.ns_index.get(namespace).copied())
            .and_then(|(p, n)| self.find_slot(p, n))
            .map(|s| &self.slots[s as usize])
            .filter(|s| s.expires_at > now.as_millis())
            .and_then(|s| s.record.as_deref())
            .map(unboxed);
        Ok(found.map(|(r, f)| (Bytes::copy_from_slice(r), f)))
    }

    fn scan(
        &self,
        scope: Option<&Namespace>,
        after: u64,
        limit: usize,
        formats: Formats,
        now: Timestamp,
    ) -> Result<Page, StoreError> {
        let index = match scope {
            None => &self.by_position,
            Some(ns) => match self.ns_index.get(ns) {
                Some(&n) => &self.ns_row(n).by_position,
                None => {
                    return Ok(Page {
                        registrations: Vec::new(),
                        scanned_to: after,
                    });
                }
            },
        };
        let mut page = Page {
            registrations: Vec::with_capacity(limit.min(index.len_of(formats))),
            scanned_to: after,
        };
        if limit == 0 {
            return Ok(page);
        }
        // Only the trees of the formats asked for are walked: records the
        // asker cannot read cost nothing. Expired, unswept ones of those
        // formats are passed over.
        for (position, s) in index.after(after, formats) {
            #[cfg(test)]
            self.walked.set(self.walked.get() + 1);
            page.scanned_to = position;
            if self.slots[s as usize].expires_at > now.as_millis() {
                page.registrations.push(self.stored(s));
                if page.registrations.len() >= limit {
                    // A full page: the cookie stops at its last registration.
                    return Ok(page);
                }
            }
        }
        // A short page looked at everything in scope: its cookie moves past
        // the records of other formats too (one position lookup per tree).
        page.scanned_to = index.last().map_or(after, |last| last.max(after));
        Ok(page)
    }

    fn next_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .by_expiry
            .first()
            .map(|&(t, _)| Timestamp::from_millis(t)))
    }

    fn expire(
        &mut self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredRegistration>, StoreError> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(deadline, s)) = self.by_expiry.first() else {
                break;
            };
            if deadline > now.as_millis() {
                break;
            }
            let slot = &self.slots[s as usize];
            out.push(ExpiredRegistration {
                peer: self.peers[slot.peer as usize].key.peer_id(),
                namespace: self.ns_row(slot.ns).name.clone(),
            });
            self.remove_slot(s);
        }
        Ok(out)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            registrations: self.by_position.len(),
            namespaces: self.ns_index.len(),
            record_bytes: self.record_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rdv_wire::Ttl;

    const NOW: Timestamp = Timestamp::from_millis(1_000);

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap()
    }

    fn reg(peer: PeerId, namespace: &str, format: RecordFormat) -> NewRegistration {
        NewRegistration {
            peer,
            namespace: ns(namespace),
            record: Bytes::from_static(b"record"),
            format,
            ttl: Ttl::from_secs(7200),
        }
    }

    const NO_LIMITS: Limits = Limits {
        per_peer: usize::MAX,
        per_namespace: usize::MAX,
        namespaces: usize::MAX,
        total: usize::MAX,
        total_bytes: usize::MAX,
    };

    /// A store whose namespace "big" holds `standard` standard records with
    /// five legacy ones spread among them (one more in "other"); returns the
    /// legacy positions in "big".
    fn filled(standard: usize) -> (MemoryStore, Vec<u64>) {
        let mut s = MemoryStore::new(1);
        let mut legacy = Vec::new();
        for i in 0..standard {
            if i % (standard / 5) == standard / 10 {
                let r = reg(PeerId::random(), "big", RecordFormat::Legacy);
                match s.write(&[r], &NO_LIMITS, NOW).unwrap()[0] {
                    WriteOutcome::Created(p) => legacy.push(p),
                    other => panic!("{other:?}"),
                }
            }
            let r = reg(PeerId::random(), "big", RecordFormat::Standard);
            s.write(&[r], &NO_LIMITS, NOW).unwrap();
        }
        let r = reg(PeerId::random(), "other", RecordFormat::Standard);
        s.write(&[r], &NO_LIMITS, NOW).unwrap();
        assert_eq!(legacy.len(), 5);
        (s, legacy)
    }

    /// Scans `scope` and returns the page and the index entries walked.
    fn walk(
        s: &MemoryStore,
        scope: Option<&str>,
        after: u64,
        limit: usize,
        formats: Formats,
    ) -> (Page, usize) {
        s.walked.set(0);
        let page = s
            .scan(scope.map(ns).as_ref(), after, limit, formats, NOW)
            .unwrap();
        (page, s.walked.get())
    }

    /// A scan walks the registrations it returns (plus expired ones of the
    /// formats asked for), not those of other formats: the same count among
    /// 100 standard records as among 20 000, in one namespace or all.
    #[test]
    fn scans_walk_only_the_formats_asked_for() {
        let legacy_only = Formats::only(RecordFormat::Legacy);
        let standard_only = Formats::only(RecordFormat::Standard);
        for size in [100, 20_000] {
            let (s, legacy) = filled(size);
            for scope in [Some("big"), None] {
                let end = match scope {
                    Some(n) => s.ns_row(s.ns_index[&ns(n)]).by_position.last(),
                    None => s.by_position.last(),
                };
                let end = end.unwrap();
                // Legacy, two at a time, as a cookie-holding client pages.
                let mut after = 0;
                let mut seen = Vec::new();
                loop {
                    let (page, walked) = walk(&s, scope, after, 2, legacy_only);
                    assert_eq!(walked, page.registrations.len(), "size {size}");
                    seen.extend(page.registrations.iter().map(|r| r.position));
                    after = page.scanned_to;
                    if page.registrations.len() < 2 {
                        break;
                    }
                }
                assert_eq!(seen, legacy, "size {size} scope {scope:?}");
                // The short page's cookie is past the standard records too.
                assert_eq!(after, end);
                // Standard, and both formats: a page walks what it returns.
                for formats in [standard_only, Formats::ALL] {
                    let (page, walked) = walk(&s, scope, 0, 50, formats);
                    assert_eq!((page.registrations.len(), walked), (50, 50));
                    let (page, walked) = walk(&s, scope, page.scanned_to, 50, formats);
                    assert_eq!((page.registrations.len(), walked), (50, 50));
                }
                let (page, walked) = walk(&s, scope, 0, 0, Formats::ALL);
                assert_eq!((page.scanned_to, walked), (0, 0));
                let (page, walked) = walk(&s, scope, 0, 10, Formats::NONE);
                assert_eq!(
                    (page.registrations.len(), page.scanned_to, walked),
                    (0, end, 0)
                );
            }
        }
    }

    /// Both formats come back merged in position order, and a refresh that
    /// changes a record's format moves it to the other format's index.
    #[test]
    fn formats_merge_in_order_and_refresh_moves_between_them() {
        let mut s = MemoryStore::new(1);
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        let formats = [RecordFormat::Standard, RecordFormat::Legacy];
        for (i, p) in peers.iter().enumerate() {
            s.write(&[reg(*p, "a", formats[i % 2])], &NO_LIMITS, NOW)
                .unwrap();
        }
        let positions = |s: &MemoryStore, f: Formats| -> Vec<(u64, RecordFormat)> {
            s.scan(Some(&ns("a")), 0, 100, f, NOW)
                .unwrap()
                .registrations
                .iter()
                .map(|r| (r.position, r.format))
                .collect()
        };
        assert_eq!(
            positions(&s, Formats::ALL),
            (1..=6)
                .map(|p| (p, formats[(p as usize - 1) % 2]))
                .collect::<Vec<_>>()
        );
        // Peer 0's standard record becomes legacy, at position 7.
        let out = s.write(&[reg(peers[0], "a", RecordFormat::Legacy)], &NO_LIMITS, NOW);
        assert_eq!(out.unwrap(), vec![WriteOutcome::Refreshed(7)]);
        let standard = positions(&s, Formats::only(RecordFormat::Standard));
        let legacy = positions(&s, Formats::only(RecordFormat::Legacy));
        assert_eq!(standard.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(
            legacy.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![2, 4, 6, 7]
        );
        let all = positions(&s, Formats::ALL);
        assert_eq!(
            all.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6, 7]
        );
        assert_eq!(s.stats().registrations, 6);
        // Removal and expiry take entries out of the right index.
        assert!(s.remove(&peers[0], &ns("a")).unwrap());
        assert!(s.remove(&peers[2], &ns("a")).unwrap());
        assert_eq!(positions(&s, Formats::ALL).len(), 4);
        assert_eq!(s.by_position.0.each_ref().map(|t| t.len()), [1, 3, 0]);
        let later = Timestamp::from_millis(NOW.as_millis() + 7_200_000);
        assert_eq!(s.expire(later, usize::MAX).unwrap().len(), 4);
        assert!(s.by_position.is_empty());
        assert_eq!(s.stats().namespaces, 0);
    }
}
