//! Heap bytes per registration at 1 000 000 registrations, beyond the record
//! bytes themselves, measured with a counting allocator. Prints a table. The
//! last row alternates standard and legacy records (the store keeps a
//! position index per format).
//!
//! `cargo bench -p rdv-point --bench memory`
#![allow(missing_docs)]
#![allow(unsafe_code)] // a GlobalAlloc wrapper is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use rdv_point::{Config, CookieKey, MemoryStore, Point, Verification};
use rdv_wire::{Namespace, PeerId, RecordFormat, Register, Timestamp, Ttl, VerifiedRecord};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too, so stay quick there.
    let n: usize = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let config = Config {
        max_registrations_per_namespace: usize::MAX,
        max_registrations: usize::MAX,
        max_namespaces: usize::MAX,
        ..Config::default()
    };
    // `RDV_MEMORY_SIZES=10000,100000,...`: only the worst case (every
    // registration its own peer) at each size, for the plot of memory
    // against registrations (scripts/plots.sh).
    let shapes: Vec<(usize, usize, usize, bool)> = match std::env::var("RDV_MEMORY_SIZES") {
        Ok(sizes) => sizes
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("RDV_MEMORY_SIZES: numbers, comma-separated")
            })
            .map(|n| (n, n, 1000, false))
            .collect(),
        Err(_) => vec![
            (n, n, 1000, false),
            (n, n / 100, 100, false),
            (n, n, 1000, true),
        ],
    };
    println!(
        "| registrations | peers | namespaces | formats | record bytes | heap bytes | overhead bytes/registration |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|");
    for (n, label_peers, namespaces, mixed) in shapes {
        let peers: Vec<PeerId> = (0..label_peers).map(|_| PeerId::random()).collect();
        let nss: Vec<Namespace> = (0..namespaces)
            .map(|i| Namespace::new(format!("namespace-{i}")).expect("valid"))
            .collect();
        let records: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 240])).collect();
        let record_bytes: usize = records.iter().map(|r| r.len()).sum();
        let before = LIVE.load(Relaxed);
        let mut p = Point::new(
            config.clone(),
            MemoryStore::new(1),
            CookieKey::from_bytes([1; 32]),
        )
        .expect("valid config");
        for (i, rec) in records.iter().enumerate() {
            // Spread registrations so each (peer, namespace) pair is distinct.
            let peer = peers[i % peers.len()];
            let ns = &nss[(i / peers.len() + i) % nss.len()];
            let req = Register {
                namespace: ns.clone(),
                signed_peer_record: rec.clone(),
                ttl: Some(Ttl::from_secs(7200 + (i % 1000) as u64)),
            };
            let v = Verification::Verified(VerifiedRecord {
                peer_id: peer,
                seq: 1,
                addresses: Vec::new(),
                format: if mixed && i % 2 == 1 {
                    RecordFormat::Legacy
                } else {
                    RecordFormat::Standard
                },
            });
            let r = p.handle_register(peer, req, v, Timestamp::from_millis(0));
            assert_eq!(r.status, rdv_wire::ResponseStatus::Ok, "{}", r.status_text);
            while p.poll_event().is_some() {}
        }
        assert_eq!(rdv_point::Store::stats(p.store()).registrations, n);
        let heap = LIVE.load(Relaxed) - before;
        // The store copies records into its own allocations; the `records`
        // vector above is the caller's and is not counted in `heap`.
        let formats = if mixed { "both" } else { "standard" };
        println!(
            "| {n} | {label_peers} | {namespaces} | {formats} | {record_bytes} | {heap} | {:.1} |",
            (heap - record_bytes) as f64 / n as f64
        );
        drop(p);
    }
}
