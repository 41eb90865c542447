//! Store benchmarks, `cargo bench -p rdv-store-sql --bench stores`:
//!
//! - `register/{memory,sqlite}/batch-N` (criterion): REGISTERs written in
//!   batches of N (one transaction, one fsync each for SQLite), new
//!   registrations into a growing store; throughput in registrations/s.
//! - `register+unregister/{memory,sqlite}/batch-64` (criterion): the same,
//!   each registration then removed by its own UNREGISTER.
//! - with `RDV_BENCH_DAEMON=path/to/rdv`: the same file size, but the daemon
//!   itself restarting on it, to its first DISCOVER answer.
//! - `open`: time to open an SQLite file of `RDV_BENCH_OPEN_N`
//!   registrations (default 100 000; the figure is 1 000 000) and
//!   answer the first DISCOVER, printed as a table; with
//!   `RDV_BENCH_DROP_CACHES=1` (as root) from a cold OS page cache.
//! - `postgres`: REGISTER throughput with one and with two stores on the
//!   same database (`RDV_TEST_POSTGRES=postgres://...`; skipped without).
//!
//! A positional argument filters as criterion does (`-- open`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use rdv_point::store::{Formats, Limits, NewRegistration, WriteOutcome};
use rdv_point::{MemoryStore, Store};
use rdv_store_sql::{PostgresStore, SqliteStore};
use rdv_wire::{Namespace, PeerId, RecordFormat, Timestamp, Ttl};

const NO_LIMITS: Limits = Limits {
    per_peer: usize::MAX,
    per_namespace: usize::MAX,
    namespaces: usize::MAX,
    total: usize::MAX,
    total_bytes: usize::MAX,
};

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// 10 000 peers × 100 namespaces: a million distinct (peer, namespace)
/// keys, 240-byte records (a typical signed peer record).
struct Keys {
    peers: Vec<PeerId>,
    namespaces: Vec<Namespace>,
    record: Bytes,
}

impl Keys {
    fn new() -> Self {
        Self {
            peers: (0..10_000).map(|_| PeerId::random()).collect(),
            namespaces: (0..100)
                .map(|i| Namespace::new(format!("namespace-{i}")).unwrap())
                .collect(),
            record: Bytes::from(vec![0x5A; 240]),
        }
    }

    /// Registration `i`: a new key for each `i` below a million, spread so
    /// that a batch holds many peers and namespaces.
    fn reg(&self, i: u64) -> NewRegistration {
        let (p, n) = (self.peers.len() as u64, self.namespaces.len() as u64);
        let ns = i % n;
        NewRegistration {
            peer: self.peers[((i / n + ns * 37) % p) as usize],
            namespace: self.namespaces[ns as usize].clone(),
            record: self.record.clone(),
            format: RecordFormat::Standard,
            ttl: Ttl::from_secs(7200),
        }
    }

    fn batch(&self, start: u64, n: usize) -> Vec<NewRegistration> {
        (start..start + n as u64).map(|i| self.reg(i)).collect()
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join("rdv-store-sql-bench")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes batches of `batch` for `iters` iterations, timing only `write`.
fn timed_writes<S: Store>(
    s: &mut S,
    keys: &Keys,
    next: &mut u64,
    batch: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let b = keys.batch(*next, batch);
        *next += batch as u64;
        let t = Instant::now();
        let out = s.write(&b, &NO_LIMITS, NOW).unwrap();
        total += t.elapsed();
        debug_assert!(!matches!(out[0], WriteOutcome::Refused(_)));
    }
    total
}

fn register(c: &mut Criterion, keys: &Keys) {
    let dir = temp_dir("register");
    let mut g = c.benchmark_group("register");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for batch in [1usize, 64, 512] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut memory = MemoryStore::new(1);
        let mut next = 0;
        g.bench_function(BenchmarkId::new("memory", format!("batch-{batch}")), |b| {
            b.iter_custom(|iters| timed_writes(&mut memory, keys, &mut next, batch, iters))
        });
        drop(memory);
        let mut sqlite = SqliteStore::open(dir.join(format!("batch-{batch}.db")), 1).unwrap();
        let mut next = 0;
        g.bench_function(BenchmarkId::new("sqlite", format!("batch-{batch}")), |b| {
            b.iter_custom(|iters| timed_writes(&mut sqlite, keys, &mut next, batch, iters))
        });
    }
    g.finish();
    // The load tool's REGISTER mix: a batch of 64 new registrations, each
    // then removed by its own UNREGISTER (one transaction each, no fsync).
    let mut g = c.benchmark_group("register+unregister");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(64));
    let mut memory = MemoryStore::new(1);
    let mut next = 0;
    g.bench_function("memory/batch-64", |b| {
        b.iter_custom(|iters| timed_pairs(&mut memory, keys, &mut next, iters))
    });
    drop(memory);
    let mut sqlite = SqliteStore::open(dir.join("pairs.db"), 1).unwrap();
    let mut next = 0;
    g.bench_function("sqlite/batch-64", |b| {
        b.iter_custom(|iters| timed_pairs(&mut sqlite, keys, &mut next, iters))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn timed_pairs<S: Store>(s: &mut S, keys: &Keys, next: &mut u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let b = keys.batch(*next, 64);
        *next += 64;
        let t = Instant::now();
        s.write(&b, &NO_LIMITS, NOW).unwrap();
        for r in &b {
            s.remove(&r.peer, &r.namespace).unwrap();
        }
        total += t.elapsed();
    }
    total
}

fn open_large(keys: &Keys) {
    let n: u64 = std::env::var("RDV_BENCH_OPEN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = temp_dir("open");
    let path = dir.join("point.db");
    let t = Instant::now();
    let mut s = SqliteStore::open(&path, 1).unwrap();
    let mut next = 0;
    while next < n {
        let size = (n - next).min(10_000) as usize;
        let b = keys.batch(next, size);
        next += size as u64;
        s.write(&b, &NO_LIMITS, NOW).unwrap();
    }
    let fill = t.elapsed();
    drop(s);
    let file_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    // A cold start (after a reboot) if asked and allowed (root).
    let cold = std::env::var_os("RDV_BENCH_DROP_CACHES").is_some()
        && std::process::Command::new("sync").status().is_ok()
        && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    // What a restarting point does before its first answer: open, then a
    // DISCOVER (which sweeps first) in one namespace and across all.
    let t = Instant::now();
    let mut s = SqliteStore::open(&path, 2).unwrap();
    let opened = t.elapsed();
    s.expire(NOW, usize::MAX).unwrap();
    let _ = s.next_expiry().unwrap();
    let page = s
        .scan(Some(&keys.namespaces[42]), 0, 100, Formats::ALL, NOW)
        .unwrap();
    let first_ns = t.elapsed();
    assert_eq!(page.registrations.len(), 100.min((n / 100) as usize));
    let t2 = Instant::now();
    let page = s.scan(None, n / 2, 100, Formats::ALL, NOW).unwrap();
    let all = t2.elapsed();
    assert_eq!(page.registrations.len(), 100.min((n / 2) as usize));
    let stats = s.stats();
    assert_eq!(stats.registrations as u64, n);
    println!();
    let cache = if cold {
        "OS page cache dropped"
    } else {
        "file in the OS page cache"
    };
    println!(
        "open: SQLite file of {n} registrations ({file_mb:.0} MB, filled in {fill:.1?}; {cache})"
    );
    println!("| step | time |");
    println!("|---|---:|");
    println!("| open (schema check, WAL, probes) | {opened:.2?} |");
    println!("| open + sweep + first DISCOVER in a namespace, limit 100 | {first_ns:.2?} |");
    println!("| then DISCOVER all from the middle, limit 100 | {all:.2?} |");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon itself restarting on a large file: time from starting
/// `rdv point` (the binary at `rdv`) to the answer of its first DISCOVER,
/// asked by the `rdv discover` command as soon as the point says it listens.
/// The registrations are live (real time, 2 h TTL); their records are
/// 240 filler bytes, which the asking client drops: the answer is what counts.
fn daemon_restart(keys: &Keys, rdv: &std::path::Path) {
    use std::io::BufRead;
    let n: u64 = std::env::var("RDV_BENCH_OPEN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = temp_dir("daemon");
    let path = dir.join("point.db");
    let now = Timestamp::now();
    let mut s = SqliteStore::open(&path, 1).unwrap();
    let mut next = 0;
    while next < n {
        let size = (n - next).min(10_000) as usize;
        s.write(&keys.batch(next, size), &NO_LIMITS, now).unwrap();
        next += size as u64;
    }
    drop(s);
    let file_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    let spec = format!("sqlite:{}", path.display());
    let t = Instant::now();
    let mut point = std::process::Command::new(rdv)
        .args([
            "point",
            "--store",
            &spec,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rdv point");
    let mut lines = std::io::BufReader::new(point.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("rdv point exited").unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    let listening = t.elapsed();
    let out = std::process::Command::new(rdv)
        .args([
            "discover",
            "--point",
            &addr,
            "--namespace",
            "namespace-42",
            "--limit",
            "100",
        ])
        .current_dir(&dir)
        .output()
        .expect("run rdv discover");
    let answered = t.elapsed();
    let _ = point.kill();
    let _ = point.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!();
    println!(
        "daemon restart: `rdv point` on an SQLite file of {n} live registrations ({file_mb:.0} MB, in the OS page cache)"
    );
    println!("| step | time from start |");
    println!("|---|---:|");
    println!("| prints `listening on` | {listening:.2?} |");
    println!("| first DISCOVER answered (`rdv discover`, namespace, limit 100) | {answered:.2?} |");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Registrations per second over `secs` from `stores.len()` threads, each
/// with its own store on the same database, in batches of `batch`.
fn pg_rate(url: &str, schema: &str, writers: u32, batch: usize, secs: u64) -> f64 {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(writers as usize));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let mut s = PostgresStore::connect(url, schema, 1).unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Each writer its own peers, so every write is a new registration.
                let keys = Keys::new();
                barrier.wait();
                let t = Instant::now();
                let mut next = u64::from(w) << 40;
                let mut done = 0u64;
                while t.elapsed() < Duration::from_secs(secs) {
                    let b = keys.batch(next % 1_000_000, batch);
                    next += batch as u64;
                    s.write(&b, &NO_LIMITS, NOW).unwrap();
                    done += batch as u64;
                }
                done as f64 / t.elapsed().as_secs_f64()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn postgres() {
    let Some(url) = std::env::var("RDV_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("\npostgres: skipped; set RDV_TEST_POSTGRES=postgres://... to measure");
        return;
    };
    let schema = format!("rdv_bench_{}", std::process::id());
    println!("\npostgres: REGISTERs/s, new registrations, 3 s per cell");
    println!("| batch | one store | two stores, same database |");
    println!("|---:|---:|---:|");
    for batch in [1usize, 64, 512] {
        let one = pg_rate(&url, &schema, 1, batch, 3);
        let two = pg_rate(&url, &schema, 2, batch, 3);
        println!("| {batch} | {one:.0} | {two:.0} |");
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let wanted = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    // `cargo test --benches` runs benches without `--bench`: stay quick.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let keys = Keys::new();
    let mut c = Criterion::default().configure_from_args();
    register(&mut c, &keys);
    c.final_summary();
    if wanted("open") {
        open_large(&keys);
    }
    if let Some(rdv) = std::env::var_os("RDV_BENCH_DAEMON") {
        daemon_restart(&keys, std::path::Path::new(&rdv));
    }
    if wanted("postgres") {
        postgres();
    }
}
