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
//!   for paging;
//! - `by_expiry`: a B-tree set of (deadline, slot), for expiry in deadline order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

fn format_tag(format: RecordFormat) -> u8 {
    match format {
        RecordFormat::Standard => 0,
        RecordFormat::Legacy => 1,
    }
}

fn boxed(record: &[u8], format: RecordFormat) -> Box<[u8]> {
    let mut v = Vec::with_capacity(record.len() + 1);
    v.push(format_tag(format));
    v.extend_from_slice(record);
    v.into_boxed_slice()
}

/// A stored record and its format.
fn unboxed(b: &[u8]) -> (&[u8], RecordFormat) {
    match b.split_first() {
        Some((1, rest)) => (rest, RecordFormat::Legacy),
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
    by_position: BTreeMap<u64, Id>,
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
    by_position: BTreeMap<u64, Id>,
    by_expiry: BTreeSet<(u64, Id)>,
    next_position: u64,
    hasher: DefaultHashBuilder,
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
            by_position: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            next_position: 1,
            hasher: DefaultHashBuilder::default(),
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
            by_position: BTreeMap::new(),
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
        self.ns_row_mut(ns).by_position.insert(position, s);
        self.by_position.insert(position, s);
        self.by_expiry.insert((expires_at, s));
        position
    }

    fn remove_slot(&mut self, s: Id) {
        let (peer, ns, position, expires_at) = {
            let slot = &mut self.slots[s as usize];
            if let Some(r) = slot.record.take() {
                self.record_bytes -= r.len() - 1;
            }
            (slot.peer, slot.ns, slot.position, slot.expires_at)
        };
        let hash = self.key_hash(peer, ns);
        if let Ok(entry) = self.by_key.find_entry(hash, |&t| t == s) {
            entry.remove();
        }
        self.by_position.remove(&position);
        self.by_expiry.remove(&(expires_at, s));
        let row = self.ns_row_mut(ns);
        row.by_position.remove(&position);
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
                // Supersede: same slot, new record, deadline and position.
                let (old_expiry, old_position) = (slot.expires_at, slot.position);
                let old_len = slot.record.as_ref().map_or(1, |r| r.len());
                let position = self.take_position();
                self.by_expiry.remove(&(old_expiry, s));
                self.by_expiry.insert((expires_at, s));
                self.by_position.remove(&old_position);
                self.by_position.insert(position, s);
                let row = self.ns_row_mut(n);
                row.by_position.remove(&old_position);
                row.by_position.insert(position, s);
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
            registrations: Vec::with_capacity(limit.min(index.len())),
            scanned_to: after,
        };
        for (&position, &s) in index.range((Bound::Excluded(after), Bound::Unbounded)) {
            if page.registrations.len() >= limit {
                break;
            }
            page.scanned_to = position;
            let slot = &self.slots[s as usize];
            let format = unboxed(slot.record.as_deref().unwrap_or_default()).1;
            // Records in formats the asker cannot read are passed over (the
            // cookie moves past them): costs a scan, never an answer it refuses.
            if slot.expires_at > now.as_millis() && formats.contains(format) {
                page.registrations.push(self.stored(s));
            }
        }
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
