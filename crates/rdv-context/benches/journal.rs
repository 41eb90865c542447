#![allow(missing_docs, clippy::unwrap_used)]

//! Journal benchmarks.
//!
//! 1. Load: append `RDV_BENCH_FACTS` facts (default 1 000 000) to a fresh
//!    SQLite journal file in batches of `RDV_BENCH_BATCH` (default 10 000),
//!    one transaction per batch; prints facts per second. Run once, not
//!    sampled: a million-fact file per sample would take minutes. Also
//!    100 000 sealed-descriptor facts (the largest kind) and the in-memory
//!    store for comparison.
//! 2. Criterion: the duplicate check (`contains`) on journals of 1 000 and
//!    of `RDV_BENCH_FACTS` facts, for present and absent ids: O(1) means
//!    the two sizes cost the same.
//!
//! `cargo bench -p rdv-context --bench journal`
//! (`RDV_BENCH_FACTS=100000 cargo bench ...` for a quick run)

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, black_box};
use rdv_context::journal::JournalStore;
use rdv_context::*;

const CTX: ContextId = ContextId::from_bytes([0x42; 32]);
const T0: u64 = 1_700_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A channel fact recorded by `b` (signed: a local append does not check
/// the signature, so signing is outside every timing).
fn channel(i: u64, a: AuthorityId, b: &Identity) -> RendezvousFact {
    let mut channel_id = [0; 32];
    channel_id[..8].copy_from_slice(&i.to_be_bytes());
    let keys = EpochKeys::derive(CTX, 0, &EpochSecret::from_bytes([7; 32]));
    RendezvousFact::channel_established(b, &keys, a, b.authority(), channel_id, 0)
}

struct TempDb(std::path::PathBuf);
impl Drop for TempDb {
    fn drop(&mut self) {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", self.0.display()));
        }
    }
}
fn temp_db(name: &str) -> TempDb {
    let p = std::env::temp_dir().join(format!("rdv-bench-{}-{name}.db", std::process::id()));
    let t = TempDb(p);
    drop(TempDb(t.0.clone()));
    t
}

fn append_all<S: JournalStore>(
    j: &mut Journal<S>,
    facts: Vec<RendezvousFact>,
    batch: usize,
) -> f64 {
    let start = Instant::now();
    let mut it = facts.into_iter().peekable();
    let mut now = T0;
    while it.peek().is_some() {
        let chunk: Vec<_> = it.by_ref().take(batch).collect();
        j.append_batch(chunk, now).unwrap();
        now += 1;
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n = env("RDV_BENCH_FACTS", 1_000_000);
    let batch = env("RDV_BENCH_BATCH", 10_000);
    let people: Vec<Identity> = (1..=8u8)
        .map(|s| Identity::from_secret_bytes([s; 32], [s; 32]))
        .collect();
    let ids: Vec<AuthorityId> = people.iter().map(Identity::authority).collect();
    let facts = |count: usize| -> Vec<RendezvousFact> {
        (0..count as u64)
            .map(|i| channel(i, ids[i as usize % 8], &people[(i as usize + 3) % 8]))
            .collect()
    };

    println!("journal load, {n} facts, batches of {batch}");
    println!("| store | facts | kind | seconds | facts/s |");
    println!("|---|---:|---|---:|---:|");
    {
        let db = temp_db("load");
        let mut j =
            Journal::new(CTX, SqliteJournal::open(&db.0, usize::MAX).unwrap(), 60_000).unwrap();
        let secs = append_all(&mut j, facts(n), batch);
        assert_eq!(j.len(), n);
        println!(
            "| SQLite (WAL, file) | {n} | ChannelEstablished | {secs:.2} | {:.0} |",
            n as f64 / secs
        );
        let size = std::fs::metadata(&db.0).map(|m| m.len()).unwrap_or(0);
        eprintln!("  file size {:.1} MB", size as f64 / 1e6);
        let start = Instant::now();
        drop(j);
        let j = SqliteJournal::open(&db.0, usize::MAX).unwrap();
        eprintln!(
            "  reopen (loads {} ids) {:.2} s",
            j.len(),
            start.elapsed().as_secs_f64()
        );
    }
    {
        // Sealed descriptors: the largest fact (~330 bytes). Building them
        // (a signature each) is outside the timing.
        let count = n.min(100_000);
        let id = Identity::from_secret_bytes([1; 32], [1; 32]);
        let keys = EpochKeys::derive(CTX, 0, &EpochSecret::from_bytes([2; 32]));
        let mut rng = SeededRng::from_seed([3; 32]);
        let descriptors: Vec<RendezvousFact> = (0..count)
            .map(|_| {
                let d = RendezvousDescriptor {
                    authority_id: id.authority(),
                    context_id: CTX,
                    transport_hints: vec![
                        TransportHint::QuicDirect {
                            addr: "203.0.113.7:4433".into(),
                        },
                        TransportHint::TcpDirect {
                            addr: "203.0.113.7:4434".into(),
                        },
                    ],
                    handshake_psk_commitment: keys.psk_commitment(&id.authority()),
                    valid_from: T0,
                    valid_until: T0 + 3_600_000,
                    nonce: rng.array(),
                    static_key: id.static_public(),
                };
                RendezvousFact::Descriptor(d.seal(&id, &keys, rng.array()).unwrap())
            })
            .collect();
        let bytes = descriptors[0].to_bytes().len();
        let db = temp_db("descriptors");
        let mut j =
            Journal::new(CTX, SqliteJournal::open(&db.0, usize::MAX).unwrap(), 60_000).unwrap();
        let secs = append_all(&mut j, descriptors, batch);
        println!(
            "| SQLite (WAL, file) | {count} | Descriptor ({bytes} B) | {secs:.2} | {:.0} |",
            count as f64 / secs
        );
    }
    let big = {
        let mut j = Journal::new(CTX, MemoryJournal::default(), 60_000).unwrap();
        let secs = append_all(&mut j, facts(n), batch);
        println!(
            "| memory | {n} | ChannelEstablished | {secs:.2} | {:.0} |",
            n as f64 / secs
        );
        j
    };

    // Duplicate check: O(1) in the journal size.
    let small = {
        let mut j = Journal::new(CTX, MemoryJournal::default(), 60_000).unwrap();
        append_all(&mut j, facts(1000), batch);
        j
    };
    let small_sql = {
        let mut j = Journal::new(
            CTX,
            SqliteJournal::open_in_memory(usize::MAX).unwrap(),
            60_000,
        )
        .unwrap();
        append_all(&mut j, facts(1000), batch);
        j
    };
    let db = temp_db("dup");
    let big_sql = {
        let mut j =
            Journal::new(CTX, SqliteJournal::open(&db.0, usize::MAX).unwrap(), 60_000).unwrap();
        append_all(&mut j, facts(n), batch);
        j
    };
    let present: Vec<FactId> = (0..1000u64)
        .map(|i| channel(i, ids[i as usize % 8], &people[(i as usize + 3) % 8]).id())
        .collect();
    let absent: Vec<FactId> = (0..1000u64)
        .map(|i| channel(u64::MAX - i, ids[0], &people[1]).id())
        .collect();

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("duplicate_check");
    for (size, store) in [(1000, &small), (n, &big)] {
        g.bench_with_input(
            BenchmarkId::new("memory/present", size),
            &present,
            |bch, ids| {
                bch.iter(|| {
                    ids.iter()
                        .filter(|id| store.contains(black_box(id)))
                        .count()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("memory/absent", size),
            &absent,
            |bch, ids| {
                bch.iter(|| {
                    ids.iter()
                        .filter(|id| store.contains(black_box(id)))
                        .count()
                })
            },
        );
    }
    for (size, store) in [(1000, &small_sql), (n, &big_sql)] {
        g.bench_with_input(
            BenchmarkId::new("sqlite/present", size),
            &present,
            |bch, ids| {
                bch.iter(|| {
                    ids.iter()
                        .filter(|id| store.contains(black_box(id)))
                        .count()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("sqlite/absent", size),
            &absent,
            |bch, ids| {
                bch.iter(|| {
                    ids.iter()
                        .filter(|id| store.contains(black_box(id)))
                        .count()
                })
            },
        );
    }
    g.finish();
    c.final_summary();
}
