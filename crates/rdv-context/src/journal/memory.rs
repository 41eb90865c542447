//! In-memory journal store.

use std::collections::BTreeSet;
use std::ops::Bound;

use hashbrown::HashMap;

use super::{Filter, JournalEntry, JournalStore, OrderKey, StoreError};
use crate::facts::{FactId, FactKind, RendezvousFact};
use crate::hlc::HlcTimestamp;

/// A journal store in memory: a hash map by id (O(1) duplicate check) and
/// ordered indexes for the whole journal and per kind.
#[derive(Debug, Clone)]
pub struct MemoryJournal {
    entries: HashMap<FactId, (HlcTimestamp, RendezvousFact)>,
    order: BTreeSet<OrderKey>,
    by_kind: HashMap<FactKind, BTreeSet<OrderKey>>,
    max_entries: usize,
}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl MemoryJournal {
    /// An empty store holding at most `max_entries`.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            by_kind: HashMap::new(),
            max_entries,
        }
    }

    fn index(&mut self, key: OrderKey, fact: &RendezvousFact) {
        self.order.insert(key);
        self.by_kind.entry(fact.kind()).or_default().insert(key);
    }

    fn unindex(&mut self, key: OrderKey, fact: &RendezvousFact) {
        self.order.remove(&key);
        if let Some(s) = self.by_kind.get_mut(&fact.kind()) {
            s.remove(&key);
        }
    }

    /// Every (id, timestamp) pair, sorted: what two replicas compare to know
    /// they agree.
    pub fn snapshot(&self) -> Vec<(FactId, HlcTimestamp)> {
        self.order.iter().map(|k| (k.id, k.timestamp)).collect()
    }
}

impl JournalStore for MemoryJournal {
    fn insert_batch(&mut self, entries: &[JournalEntry]) -> Result<usize, StoreError> {
        let new_ids: hashbrown::HashSet<FactId> = entries
            .iter()
            .map(JournalEntry::id)
            .filter(|id| !self.entries.contains_key(id))
            .collect();
        if self.entries.len().saturating_add(new_ids.len()) > self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        let mut inserted = 0;
        for e in entries {
            let key = e.order_key();
            match self.entries.get(&e.id()).map(|(t, _)| *t) {
                None => {
                    self.index(key, e.fact());
                    self.entries.insert(e.id(), (e.timestamp, e.fact().clone()));
                    inserted += 1;
                }
                Some(old) if e.timestamp < old => {
                    let fact = e.fact().clone();
                    self.unindex(
                        OrderKey {
                            timestamp: old,
                            id: e.id(),
                        },
                        &fact,
                    );
                    self.index(key, &fact);
                    self.entries.insert(e.id(), (e.timestamp, fact));
                }
                Some(_) => {}
            }
        }
        Ok(inserted)
    }

    fn contains(&self, id: &FactId) -> bool {
        self.entries.contains_key(id)
    }

    fn remove_older_than(
        &mut self,
        wall_ms: u64,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError> {
        let old: Vec<OrderKey> = self
            .order
            .iter()
            .take_while(|k| k.timestamp.wall_ms < wall_ms)
            .take(limit)
            .copied()
            .collect();
        for k in &old {
            if let Some((_, fact)) = self.entries.remove(&k.id) {
                self.unindex(*k, &fact);
            }
        }
        Ok(old)
    }

    fn get(&self, id: &FactId) -> Result<Option<JournalEntry>, StoreError> {
        Ok(self
            .entries
            .get(id)
            .map(|(t, f)| JournalEntry::from_parts_unchecked(*id, *t, f.clone())))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn scan(
        &self,
        filter: Filter,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let empty = BTreeSet::new();
        let set = match filter {
            Filter::All => &self.order,
            Filter::Kind(k) => self.by_kind.get(&k).unwrap_or(&empty),
        };
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        Ok(set
            .range((lower, Bound::Unbounded))
            .take(limit)
            .filter_map(|k| {
                self.entries
                    .get(&k.id)
                    .filter(|(_, f)| filter.matches(f))
                    .map(|(t, f)| JournalEntry::from_parts_unchecked(k.id, *t, f.clone()))
            })
            .collect())
    }

    fn max_timestamp(&self) -> Result<Option<HlcTimestamp>, StoreError> {
        Ok(self.order.last().map(|k| k.timestamp))
    }

    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, StoreError> {
        Ok(self.entries.get(id).map(|(t, _)| *t))
    }

    fn scan_keys(
        &self,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError> {
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        Ok(self
            .order
            .range((lower, Bound::Unbounded))
            .take(limit)
            .copied()
            .collect())
    }
}
