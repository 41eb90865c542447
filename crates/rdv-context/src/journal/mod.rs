//! The context journal: an append-only, content-addressed set of facts,
//! ordered by hybrid logical clock.
//!
//! - **Content-addressed.** An entry's id is its fact's id
//!   ([`FactId`]), so the same fact appended or received twice is one entry:
//!   a duplicate is a no-op, checked in O(1) (every backend keeps its ids in
//!   a hash set).
//! - **Ordered.** Each entry carries the [`HlcTimestamp`] of its first
//!   append; the journal order is (timestamp, id). If two replicas hold the
//!   same fact with different timestamps (both appended it), the earlier
//!   timestamp wins on merge. That rule makes merge a join on a semilattice
//!   (set union, per-id minimum): commutative, associative and idempotent,
//!   so replicas that exchanged everything hold the same journal in the same
//!   order whatever order they synchronised in.
//! - **Bounded.** Facts are bounded in size; remote timestamps further than
//!   the allowed drift into the future are refused (the whole batch, before
//!   anything is written); a store may cap its entry count.

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryJournal;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteJournal;

use crate::codec::{DecodeError, Reader, Writer};
use crate::facts::{FactId, FactKind, MAX_FACT_LEN, RendezvousFact};
use crate::hlc::{ClockDrift, HlcTimestamp, HybridClock};
use crate::ids::ContextId;

/// Most entries one query or page returns.
pub const MAX_PAGE: usize = 10_000;

/// One journal entry: a fact and its timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    id: FactId,
    /// When it was first appended.
    pub timestamp: HlcTimestamp,
    fact: RendezvousFact,
}

impl JournalEntry {
    /// An entry for `fact` at `timestamp` (the id is computed).
    pub fn new(fact: RendezvousFact, timestamp: HlcTimestamp) -> Self {
        Self {
            id: fact.id(),
            timestamp,
            fact,
        }
    }
    pub(crate) fn from_parts_unchecked(
        id: FactId,
        timestamp: HlcTimestamp,
        fact: RendezvousFact,
    ) -> Self {
        Self {
            id,
            timestamp,
            fact,
        }
    }
    /// The fact's content address.
    pub fn id(&self) -> FactId {
        self.id
    }
    /// The fact.
    pub fn fact(&self) -> &RendezvousFact {
        &self.fact
    }
    /// The position in journal order.
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            timestamp: self.timestamp,
            id: self.id,
        }
    }
    /// Bytes for synchronisation: timestamp (12) then the fact.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HlcTimestamp::LEN + 160);
        w.raw(&self.timestamp.to_bytes());
        self.fact.write(&mut w);
        w.into_vec()
    }
    /// Decodes [`JournalEntry::to_bytes`]; the id is recomputed, never read.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > HlcTimestamp::LEN + MAX_FACT_LEN {
            return Err(DecodeError::TooLong {
                what: "journal entry",
                len: bytes.len(),
                max: HlcTimestamp::LEN + MAX_FACT_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let ts = HlcTimestamp::from_bytes(r.array("timestamp")?);
        let rest = r.take(r.remaining(), "fact")?;
        Ok(Self::new(RendezvousFact::from_bytes(rest)?, ts))
    }
}

/// A position in journal order: (timestamp, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderKey {
    /// The entry's timestamp.
    pub timestamp: HlcTimestamp,
    /// The entry's id (breaks ties).
    pub id: FactId,
}

/// Which entries a scan returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every entry.
    All,
    /// Entries of one kind.
    Kind(FactKind),
}

impl Filter {
    fn matches(&self, fact: &RendezvousFact) -> bool {
        match self {
            Filter::All => true,
            Filter::Kind(k) => fact.kind() == *k,
        }
    }
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds its maximum number of entries.
    #[error("journal store full ({0} entries)")]
    Full(usize),
    /// The backend failed (I/O, SQLite).
    #[error("journal backend failed: {0}")]
    Backend(String),
    /// Stored data does not decode or does not match its id.
    #[error("journal store corrupt: {0}")]
    Corrupt(String),
}

/// Where a journal's entries live. Implementations keep the set semantics
/// described in the module docs: a new id is inserted; a known id keeps the
/// earlier of its two timestamps; nothing else changes.
pub trait JournalStore {
    /// Inserts `entries` atomically (all or nothing). Returns how many ids
    /// were new.
    fn insert_batch(&mut self, entries: &[JournalEntry]) -> Result<usize, StoreError>;
    /// Whether the id is stored. O(1).
    fn contains(&self, id: &FactId) -> bool;
    /// The entry with this id.
    fn get(&self, id: &FactId) -> Result<Option<JournalEntry>, StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether the store is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `limit` entries matching `filter` strictly after `after`, in
    /// journal order.
    fn scan(
        &self,
        filter: Filter,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// The largest timestamp stored (to restore the clock after a restart).
    fn max_timestamp(&self) -> Result<Option<HlcTimestamp>, StoreError>;
    /// Removes up to `limit` entries stamped before `wall_ms`, oldest
    /// first, and returns their positions (for indexes kept elsewhere, such
    /// as journal sync's).
    fn remove_older_than(
        &mut self,
        wall_ms: u64,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError>;
    /// The timestamp of the entry with this id. The default reads the
    /// entry; stores that keep ids in memory answer without I/O.
    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, StoreError> {
        Ok(self.get(id)?.map(|e| e.timestamp))
    }
    /// Up to `limit` positions strictly after `after`, in journal order,
    /// without the facts (what journal sync indexes). The default pages
    /// through [`JournalStore::scan`]; stores override it to skip decoding.
    fn scan_keys(
        &self,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError> {
        Ok(self
            .scan(Filter::All, after, limit)?
            .iter()
            .map(JournalEntry::order_key)
            .collect())
    }
}

/// Why a journal operation was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A descriptor fact of another context.
    #[error("fact belongs to context {found}, this journal is {expected}")]
    WrongContext {
        /// This journal's context.
        expected: ContextId,
        /// The fact's.
        found: ContextId,
    },
    /// A remote timestamp older than the retention window.
    #[error("remote fact stamped {wall_ms} ms is older than the retention floor {floor_ms} ms")]
    TooOld {
        /// The fact's time.
        wall_ms: u64,
        /// The oldest time accepted.
        floor_ms: u64,
    },
    /// A remote timestamp too far in the future.
    #[error(transparent)]
    ClockDrift(#[from] ClockDrift),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The fact's id.
    pub id: FactId,
    /// The entry's timestamp (the existing one for a duplicate).
    pub timestamp: HlcTimestamp,
    /// Whether the fact was new.
    pub inserted: bool,
}

/// The journal of one context over a store.
pub struct Journal<S> {
    context_id: ContextId,
    store: S,
    clock: HybridClock,
    retention_ms: u64,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Journal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("context_id", &self.context_id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Default drift allowed for remote timestamps: 60 s.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;
/// Default retention: remote facts older than this are refused. 7 days:
/// far beyond a descriptor's longest life (24 h), so whatever a member
/// still needs (a live descriptor, the revocation of one) is younger.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

impl<S: JournalStore> Journal<S> {
    /// The journal of `context_id` over `store`, with the clock restored
    /// from what the store holds.
    pub fn new(context_id: ContextId, store: S, max_drift_ms: u64) -> Result<Self, JournalError> {
        let mut clock = HybridClock::new(max_drift_ms);
        if let Some(t) = store.max_timestamp()? {
            clock.restore(t);
        }
        Ok(Self {
            context_id,
            store,
            clock,
            retention_ms: DEFAULT_RETENTION_MS,
        })
    }

    /// Sets the retention window: remote facts stamped more than
    /// `retention_ms` before now are refused ([`JournalError::TooOld`]).
    pub fn with_retention(mut self, retention_ms: u64) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Removes facts older than the retention window at `now_ms` (up to
    /// `limit` per call, oldest first) and returns their positions. A
    /// member runs it periodically: expired descriptors, their revocations
    /// and old channel records leave the journal, and since
    /// [`Journal::receive`] refuses anything below the same floor, sync
    /// cannot bring them back.
    pub fn collect_garbage(
        &mut self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<OrderKey>, JournalError> {
        let floor = now_ms.saturating_sub(self.retention_ms);
        Ok(self.store.remove_older_than(floor, limit)?)
    }

    /// The floor for remote timestamps. A backdated fact would sort before
    /// everything a replica holds; nothing a member needs is that old.
    fn check_age(&self, timestamp: HlcTimestamp, now_ms: u64) -> Result<(), JournalError> {
        let floor = now_ms.saturating_sub(self.retention_ms);
        if timestamp.wall_ms < floor {
            return Err(JournalError::TooOld {
                wall_ms: timestamp.wall_ms,
                floor_ms: floor,
            });
        }
        Ok(())
    }

    /// The context.
    pub fn context_id(&self) -> ContextId {
        self.context_id
    }
    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The clock's last timestamp.
    pub fn clock(&self) -> HlcTimestamp {
        self.clock.last()
    }

    /// Checks what can be checked of a fact without the epoch's keys: a
    /// descriptor's readable context. Everything else of every fact is
    /// sealed and checked by the members that open it (journal sync's
    /// replica, the service, [`crate::Context::apply_rekey`]).
    fn check_fact(&self, fact: &RendezvousFact) -> Result<(), JournalError> {
        if let RendezvousFact::Descriptor(d) = fact
            && d.context_id() != self.context_id
        {
            return Err(JournalError::WrongContext {
                expected: self.context_id,
                found: d.context_id(),
            });
        }
        Ok(())
    }

    /// Checks a remote entry as [`Journal::receive`] would at physical
    /// time `now_ms` (a descriptor's context, retention floor, clock drift), without
    /// writing anything: journal sync drops a bad fact alone instead of
    /// refusing its whole batch.
    pub fn check_remote(&self, entry: &JournalEntry, now_ms: u64) -> Result<(), JournalError> {
        self.check_fact(&entry.fact)?;
        self.check_age(entry.timestamp, now_ms)?;
        self.clock.check(entry.timestamp, now_ms)?;
        Ok(())
    }

    /// Appends a local fact at physical time `now_ms`. A duplicate is a
    /// no-op that reports the existing entry.
    pub fn append(&mut self, fact: RendezvousFact, now_ms: u64) -> Result<Appended, JournalError> {
        self.check_fact(&fact)?;
        let id = fact.id();
        if self.store.contains(&id) {
            let timestamp = self
                .store
                .get(&id)?
                .map(|e| e.timestamp)
                .unwrap_or_default();
            return Ok(Appended {
                id,
                timestamp,
                inserted: false,
            });
        }
        let mut clock = self.clock.clone();
        let timestamp = clock.tick(now_ms);
        let inserted = self
            .store
            .insert_batch(&[JournalEntry::from_parts_unchecked(id, timestamp, fact)])?
            > 0;
        self.clock = clock;
        Ok(Appended {
            id,
            timestamp,
            inserted,
        })
    }

    /// Appends local facts in one batch (one transaction in SQLite). Returns
    /// how many were new. All or nothing.
    pub fn append_batch(
        &mut self,
        facts: Vec<RendezvousFact>,
        now_ms: u64,
    ) -> Result<usize, JournalError> {
        for f in &facts {
            self.check_fact(f)?;
        }
        let mut clock = self.clock.clone();
        let entries: Vec<JournalEntry> = facts
            .into_iter()
            .map(|f| JournalEntry::new(f, clock.tick(now_ms)))
            .collect();
        let n = self.store.insert_batch(&entries)?;
        self.clock = clock;
        Ok(n)
    }

    /// Receives entries from another replica at physical time `now_ms`:
    /// checks every entry first (a descriptor's context, age, drift) and
    /// refuses the whole batch on the first bad one; then inserts them and
    /// advances the clock past them. Returns how many were new. Every fact
    /// is sealed and cannot be checked further here without the epoch's
    /// keys: remote ones must pass `rdv_sync`'s `JournalReplica::check` (or
    /// be opened) first.
    pub fn receive(
        &mut self,
        entries: &[JournalEntry],
        now_ms: u64,
    ) -> Result<usize, JournalError> {
        let mut clock = self.clock.clone();
        for e in entries {
            self.check_fact(&e.fact)?;
            self.check_age(e.timestamp, now_ms)?;
            clock.observe(e.timestamp, now_ms)?;
        }
        let n = self.store.insert_batch(entries)?;
        self.clock = clock;
        Ok(n)
    }

    /// Merges every entry of `other` (set union; see the module docs),
    /// page by page. Returns how many were new here.
    pub fn merge_from<T: JournalStore>(
        &mut self,
        other: &Journal<T>,
        now_ms: u64,
    ) -> Result<usize, JournalError> {
        let mut after = None;
        let mut new = 0;
        loop {
            let page = other.store.scan(Filter::All, after, 1000)?;
            let Some(last) = page.last() else {
                return Ok(new);
            };
            after = Some(last.order_key());
            new += self.receive(&page, now_ms)?;
        }
    }

    /// The timestamp of the fact with this id, if present.
    pub fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, JournalError> {
        Ok(self.store.timestamp_of(id)?)
    }
    /// Whether the fact is present. O(1).
    pub fn contains(&self, id: &FactId) -> bool {
        self.store.contains(id)
    }
    /// The entry with this id.
    pub fn get(&self, id: &FactId) -> Result<Option<JournalEntry>, JournalError> {
        Ok(self.store.get(id)?)
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.store.len()
    }
    /// Whether the journal is empty.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
    /// Up to `limit` (at most [`MAX_PAGE`]) entries after `after`, in order.
    pub fn entries(
        &self,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        Ok(self.store.scan(Filter::All, after, limit.min(MAX_PAGE))?)
    }
    /// Entries of `kind`, in order.
    pub fn by_kind(
        &self,
        kind: FactKind,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        Ok(self
            .store
            .scan(Filter::Kind(kind), after, limit.min(MAX_PAGE))?)
    }
}
