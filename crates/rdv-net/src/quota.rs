//! A quota of registrations per address group and namespace.
//!
//! A namespace holds at most `max_registrations_per_namespace` registrations
//! (1,000 by default) and peer ids are free: one host with 1,000 keys could
//! hold a namespace alone for the longest TTL. The point's store does not
//! know where a registration came from, so this table, kept by the stream
//! layer, counts the live registrations each address group made in each
//! namespace and refuses more than its quota (answered `E_UNAVAILABLE`).
//!
//! A REGISTER first takes a *reservation* (so concurrent REGISTERs from one
//! group cannot race past the quota), which becomes the registration's
//! deadline when the point accepts it and is dropped otherwise. Entries are
//! forgotten at their deadline, on UNREGISTER, or when the same peer
//! registers in the namespace from another group. The table lives in memory:
//! after a restart, registrations made before count against nobody until
//! they are refreshed (lenient, never wrong in the stranger's favour for
//! longer than one TTL).
//!
//! Sans-IO: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rdv_wire::Namespace;

use crate::ip_limits::AddrGroup;

/// How long a reservation holds without an answer from the point.
const RESERVATION: Duration = Duration::from_secs(60);

/// Live registrations per (address group, namespace).
#[derive(Debug)]
pub struct Quota {
    max: usize,
    table: HashMap<(AddrGroup, Namespace), HashMap<PeerId, Instant>>,
    /// Which group each (peer, namespace) was counted under.
    owner: HashMap<(PeerId, Namespace), AddrGroup>,
    /// Sweep every expired entry once `owner` grows past this.
    sweep_at: usize,
}

/// The quota is full for this address group and namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{held} registrations from {group} in this namespace already (quota {max})")]
pub struct QuotaFull {
    /// The address group.
    pub group: AddrGroup,
    /// Live registrations it holds there.
    pub held: usize,
    /// The quota.
    pub max: usize,
}

const MIN_SWEEP: usize = 1024;

impl Quota {
    /// At most `max` live registrations per address group and namespace.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            table: HashMap::new(),
            owner: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    /// Changes the quota (entries above it stay until they end).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Reserves a place for `peer` in `namespace` from `group`. A peer that
    /// already holds one there (a refresh) always gets it.
    pub fn reserve(
        &mut self,
        group: AddrGroup,
        peer: PeerId,
        namespace: &Namespace,
        now: Instant,
    ) -> Result<(), QuotaFull> {
        if self.owner.len() >= self.sweep_at {
            self.sweep(now);
        }
        let key = (group, namespace.clone());
        let entries = self.table.entry(key.clone()).or_default();
        entries.retain(|_, deadline| *deadline > now);
        if !entries.contains_key(&peer) && entries.len() >= self.max {
            let held = entries.len();
            if held == 0 {
                self.table.remove(&key);
            }
            return Err(QuotaFull {
                group,
                held,
                max: self.max,
            });
        }
        // Held until the point answers (then `confirm` or `release`).
        let until = now + RESERVATION;
        let deadline = entries.entry(peer).or_insert(until);
        *deadline = (*deadline).max(until);
        if let Some(previous) = self.owner.insert((peer, namespace.clone()), group)
            && previous != group
        {
            self.forget_in(previous, peer, namespace);
        }
        Ok(())
    }

    /// The point accepted the registration: it holds its place for `ttl`.
    pub fn confirm(
        &mut self,
        group: AddrGroup,
        peer: PeerId,
        namespace: &Namespace,
        ttl: Duration,
        now: Instant,
    ) {
        if let Some(entries) = self.table.get_mut(&(group, namespace.clone())) {
            entries.insert(peer, now + ttl);
        }
    }

    /// The point refused the registration (or never answered): a new one
    /// gives its place back; a refused refresh keeps the old registration's.
    pub fn release(&mut self, group: AddrGroup, peer: PeerId, namespace: &Namespace, now: Instant) {
        let key = (group, namespace.clone());
        if let Some(entries) = self.table.get_mut(&key)
            && entries
                .get(&peer)
                .is_some_and(|d| d.saturating_duration_since(now) <= RESERVATION)
        {
            self.remove(peer, namespace);
        }
    }

    /// `peer` unregistered from `namespace`.
    pub fn remove(&mut self, peer: PeerId, namespace: &Namespace) {
        if let Some(group) = self.owner.remove(&(peer, namespace.clone())) {
            self.forget_in(group, peer, namespace);
        }
    }

    /// Live places `group` holds in `namespace`.
    pub fn held(&self, group: AddrGroup, namespace: &Namespace, now: Instant) -> usize {
        self.table
            .get(&(group, namespace.clone()))
            .map_or(0, |e| e.values().filter(|d| **d > now).count())
    }

    fn forget_in(&mut self, group: AddrGroup, peer: PeerId, namespace: &Namespace) {
        let key = (group, namespace.clone());
        if let Some(entries) = self.table.get_mut(&key) {
            entries.remove(&peer);
            if entries.is_empty() {
                self.table.remove(&key);
            }
        }
    }

    /// Drops every expired entry; amortized O(1) per reservation, since it
    /// runs only after the table has doubled.
    fn sweep(&mut self, now: Instant) {
        self.table.retain(|_, entries| {
            entries.retain(|_, d| *d > now);
            !entries.is_empty()
        });
        let table = &self.table;
        self.owner.retain(|(peer, ns), group| {
            table
                .get(&(*group, ns.clone()))
                .is_some_and(|e| e.contains_key(peer))
        });
        self.sweep_at = (self.owner.len() * 2).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn group(ip: &str) -> AddrGroup {
        AddrGroup::of(ip.parse().unwrap(), 64)
    }

    #[test]
    fn a_group_holds_at_most_its_quota_per_namespace_and_refreshes_always_pass() {
        let mut q = Quota::new(2);
        let ns = Namespace::new("n").unwrap();
        let other_ns = Namespace::new("m").unwrap();
        let t0 = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let host = group("127.0.0.2");
        q.reserve(host, a, &ns, t0).unwrap();
        q.confirm(host, a, &ns, Duration::from_secs(100), t0);
        q.reserve(host, b, &ns, t0).unwrap();
        q.confirm(host, b, &ns, Duration::from_secs(50), t0);
        assert_eq!(q.reserve(host, c, &ns, t0).unwrap_err().held, 2);
        // A refresh, another namespace, another address: all fine.
        q.reserve(host, a, &ns, t0).unwrap();
        q.reserve(host, c, &other_ns, t0).unwrap();
        q.reserve(group("127.0.0.1"), c, &ns, t0).unwrap();
        // b's registration ends: its place is free again.
        let later = t0 + Duration::from_secs(51);
        q.reserve(host, c, &ns, later).unwrap();
        // An unregister frees a place at once.
        q.remove(a, &ns);
        assert_eq!(q.held(host, &ns, later), 1);
    }

    #[test]
    fn a_refused_new_registration_gives_its_place_back_a_refused_refresh_does_not() {
        let mut q = Quota::new(1);
        let ns = Namespace::new("n").unwrap();
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let host = group("::1");
        q.reserve(host, a, &ns, t0).unwrap();
        q.release(host, a, &ns, t0);
        q.reserve(host, b, &ns, t0).unwrap();
        q.confirm(host, b, &ns, Duration::from_secs(7200), t0);
        q.reserve(host, b, &ns, t0).unwrap();
        q.release(host, b, &ns, t0);
        assert_eq!(q.held(host, &ns, t0), 1);
    }

    #[test]
    fn expired_entries_are_swept_so_memory_follows_live_registrations() {
        let mut q = Quota::new(1);
        let t0 = Instant::now();
        for i in 0..3 * MIN_SWEEP {
            let ns = Namespace::new(format!("n{i}")).unwrap();
            let p = PeerId::random();
            q.reserve(group("127.0.0.3"), p, &ns, t0).unwrap();
            q.confirm(group("127.0.0.3"), p, &ns, Duration::from_secs(1), t0);
        }
        let later = t0 + Duration::from_secs(2);
        // New reservations after the deadline grow the table to its next
        // sweep, which drops every expired entry.
        for i in 0..2 * MIN_SWEEP {
            let ns = Namespace::new(format!("later{i}")).unwrap();
            q.reserve(group("127.0.0.3"), PeerId::random(), &ns, later)
                .unwrap();
        }
        assert!(q.owner.len() <= 2 * MIN_SWEEP, "{}", q.owner.len());
        assert!(q.table.len() <= 2 * MIN_SWEEP, "{}", q.table.len());
    }
}
