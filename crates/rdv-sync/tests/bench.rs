#![allow(missing_docs, clippy::unwrap_used)]
//! Bytes on the wire and round trips of a session, against the naive
//! exchange of every id, for n = 1,000 / 100,000 / 1,000,000 facts and
//! d = 0, 1, 10, 1,000 differences; and the CPU of d = 10 at n = 1,000,000
//! with a warm fingerprint cache. Run (release, prints a table):
//!
//! ```text
//! cargo test -p rdv-sync --release --test bench -- --ignored --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use hashbrown::HashMap;
use rdv_context::hlc::HlcTimestamp;
use rdv_context::*;
use rdv_sync::*;

/// A replica of the benchmark: its keys over one shared table of facts
/// (checks are the replica's business, measured elsewhere; here the
/// protocol's cost).
struct SetStore {
    facts: Arc<HashMap<FactId, RendezvousFact>>,
    held: HashMap<FactId, HlcTimestamp>,
    index: SyncIndex,
}

impl SetStore {
    fn new(facts: Arc<HashMap<FactId, RendezvousFact>>, keys: Vec<Key>) -> Self {
        let held = keys.iter().map(|k| (k.fact_id(), k.timestamp())).collect();
        Self {
            facts,
            held,
            index: SyncIndex::from_sorted(keys),
        }
    }
}

impl SyncStore for SetStore {
    fn index(&mut self) -> &mut SyncIndex {
        &mut self.index
    }
    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, SyncError> {
        Ok(self.held.get(id).copied())
    }
    fn entry(&self, id: &FactId) -> Result<Option<JournalEntry>, SyncError> {
        Ok(self
            .held
            .get(id)
            .map(|t| JournalEntry::new(self.facts[id].clone(), *t)))
    }
    fn accept(&mut self, entries: Vec<JournalEntry>, _now: u64) -> Result<Accepted, SyncError> {
        let mut a = Accepted::default();
        for e in entries {
            if self.held.insert(e.id(), e.timestamp).is_none() {
                self.index.insert(e.order_key().into());
                a.written += 1;
            }
        }
        Ok(a)
    }
}

fn fact(i: u64, a: AuthorityId, b: AuthorityId) -> RendezvousFact {
    let mut channel_id = [0u8; 32];
    channel_id[..8].copy_from_slice(&i.to_le_bytes());
    // Revocation-shaped bytes that open under no key: the bench's set
    // store checks nothing, and signing and sealing a million facts would
    // only slow the setup. Kind 3, epoch, nonce, 144 bytes of ciphertext.
    let _ = (a, b);
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&0u64.to_be_bytes());
    bytes.extend_from_slice(&channel_id[..24]);
    bytes.extend_from_slice(&[0; 144]);
    RendezvousFact::from_bytes(&bytes).unwrap()
}

/// Two replicas sharing `n` facts, plus `d` facts spread over the key
/// space, alternately on one side only.
fn replicas(n: u64, d: u64) -> (SetStore, SetStore) {
    let (a, b) = (identity(1).authority(), identity(2).authority());
    let mut facts = HashMap::with_capacity((n + d) as usize);
    let mut common = Vec::with_capacity(n as usize);
    for i in 0..n {
        let f = fact(i, a, b);
        let id = f.id();
        common.push(Key {
            wall_ms: T0 + i * 10,
            counter: 0,
            id: id.0,
        });
        facts.insert(id, f);
    }
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    for j in 0..d {
        let f = fact(n + j, a, b);
        let id = f.id();
        // Spread: between common facts, at a deterministic pseudo-random
        // place.
        let at = (j.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % n.max(1);
        let k = Key {
            wall_ms: T0 + at * 10 + 5,
            counter: 0,
            id: id.0,
        };
        facts.insert(id, f);
        if j % 2 == 0 {
            only_a.push(k);
        } else {
            only_b.push(k);
        }
    }
    let facts = Arc::new(facts);
    let mut ka = common.clone();
    ka.extend(only_a);
    ka.sort_unstable();
    let mut kb = common;
    kb.extend(only_b);
    kb.sort_unstable();
    (SetStore::new(facts.clone(), ka), SetStore::new(facts, kb))
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn bytes_and_round_trips_against_the_naive_exchange() {
    let limits = Limits::default();
    let fact_len = JournalEntry::new(
        fact(0, identity(1).authority(), identity(2).authority()),
        HlcTimestamp::default(),
    )
    .to_bytes()
    .len() as u64;
    println!();
    println!(
        "| n | d | round trips | bytes A→B | bytes B→A | total | naive A→B (ids) | naive total |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in [1_000u64, 100_000, 1_000_000] {
        for d in [0u64, 1, 10, 1_000] {
            let (mut a, mut b) = replicas(n, d);
            let o = run(&mut a, &mut b, limits, T0 + 100 * n).unwrap();
            assert_eq!(a.index.len(), b.index.len(), "n={n} d={d} converged");
            let (ab, ba) = (o.initiator.bytes_sent, o.responder.bytes_sent);
            // Naive: A sends every id it holds (32 bytes each); B answers
            // with the ids it wants and the facts A lacks; A sends those.
            let na = n + d.div_ceil(2);
            let naive_ab = 32 * na;
            let naive_total = naive_ab + 32 * (d / 2 + d.div_ceil(2)) + fact_len * d;
            println!(
                "| {n} | {d} | {} | {ab} | {ba} | {} | {naive_ab} | {naive_total} |",
                o.round_trips,
                ab + ba
            );
        }
    }
    // CPU, warm cache: d = 10 at n = 1,000,000, both sides in this thread.
    let (mut a, mut b) = replicas(1_000_000, 10);
    let start = Instant::now();
    let o = run(&mut a, &mut b, limits, T0).unwrap();
    let cpu = start.elapsed();
    println!(
        "\nd = 10, n = 1,000,000, warm cache: {:.2} ms CPU for both sides ({} round trips)",
        cpu.as_secs_f64() * 1000.0,
        o.round_trips
    );
    // And the cold cache: building one index from sorted keys.
    let keys = a.index.keys_in(&Key::MIN, &Key::MAX, usize::MAX);
    let start = Instant::now();
    let index = SyncIndex::from_sorted(keys);
    println!(
        "building the cache of {} keys: {:.1} ms",
        index.len(),
        start.elapsed().as_secs_f64() * 1000.0
    );
}
