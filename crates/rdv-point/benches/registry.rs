#![allow(missing_docs)]
//! Registry benchmarks (criterion). Signature checking is excluded: records
//! are passed as already verified, as a driver that verifies off-thread does.
//!
//! `cargo bench -p rdv-point --bench registry`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rdv_point::{Config, CookieKey, CookiePosition, MemoryStore, Point, Verification};
use rdv_wire::{
    Discover, Namespace, PeerId, RecordFormat, Register, Timestamp, Ttl, VerifiedRecord,
};

const KEY: CookieKey = CookieKey::from_bytes([9; 32]);

fn roomy_config() -> Config {
    Config {
        min_ttl: Ttl::from_secs(1),
        max_ttl: Ttl::from_secs(1 << 40),
        max_registrations_per_namespace: usize::MAX,
        max_registrations: usize::MAX,
        max_namespaces: usize::MAX,
        ..Config::default()
    }
}

fn point() -> Point<MemoryStore> {
    Point::new(roomy_config(), MemoryStore::new(1), KEY).expect("valid config")
}

/// A record of typical size (an Ed25519 envelope with two addresses is ~250 bytes).
fn record(i: u64) -> Bytes {
    let mut v = vec![0u8; 240];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

fn verified(peer: PeerId) -> Verification {
    Verification::Verified(VerifiedRecord {
        peer_id: peer,
        seq: 1,
        addresses: Vec::new(),
        format: RecordFormat::Standard,
    })
}

fn register(
    p: &mut Point<MemoryStore>,
    peer: PeerId,
    ns: &Namespace,
    rec: &Bytes,
    ttl: u64,
    now: Timestamp,
) {
    let req = Register {
        namespace: ns.clone(),
        signed_peer_record: rec.clone(),
        ttl: Some(Ttl::from_secs(ttl)),
    };
    let r = p.handle_register(peer, req, verified(peer), now);
    // Checked in every build, `cargo bench` included: a refused REGISTER
    // costs less than a stored one and would inflate the figure unnoticed.
    // One comparison; the message is only formatted on failure.
    assert_eq!(r.status, rdv_wire::ResponseStatus::Ok, "{}", r.status_text);
    while p.poll_event().is_some() {}
}

fn fill(p: &mut Point<MemoryStore>, n: usize, ns: &Namespace, ttl: u64) {
    for i in 0..n {
        register(
            p,
            PeerId::random(),
            ns,
            &record(i as u64),
            ttl,
            Timestamp::from_millis(0),
        );
    }
}

/// REGISTER (new), REGISTER (refresh), UNREGISTER, cycling over 10 000 peers
/// in 100 namespaces: three operations per peer per round.
fn register_refresh_unregister(c: &mut Criterion) {
    let peers: Vec<PeerId> = (0..10_000).map(|_| PeerId::random()).collect();
    let nss: Vec<Namespace> = (0..100)
        .map(|i| Namespace::new(format!("ns-{i}")).expect("valid"))
        .collect();
    let rec = record(1);
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(3));
    g.bench_function("register+refresh+unregister", |b| {
        let mut p = point();
        let mut i = 0usize;
        b.iter(|| {
            let peer = peers[i % peers.len()];
            let ns = &nss[i % nss.len()];
            let now = Timestamp::from_millis(i as u64);
            register(&mut p, peer, ns, &rec, 7200, now);
            register(&mut p, peer, ns, &rec, 7200, now);
            p.handle_unregister(
                peer,
                rdv_wire::Unregister {
                    namespace: ns.clone(),
                    id: None,
                },
                now,
            );
            while p.poll_event().is_some() {}
            i += 1;
        })
    });
    g.finish();
}

/// DISCOVER limit 100 from a cookie in the middle of a namespace of 1 000
/// and of 1 000 000 registrations: the cost must not grow with the namespace.
fn discover_by_namespace_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("discover_limit_100");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let ns = Namespace::new("big").expect("valid");
    for n in [1_000usize, 1_000_000] {
        let mut p = point();
        fill(&mut p, n, &ns, 1 << 30);
        let cookies: Vec<_> = (0..64)
            .map(|k| {
                let position = (k * (n as u64 - 100) / 64).max(1);
                KEY.issue(Some(&ns), CookiePosition { epoch: 1, position })
            })
            .collect();
        let asker = PeerId::random();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                let req = Discover {
                    namespace: Some(ns.clone()),
                    limit: Some(100),
                    cookie: Some(cookies[k % cookies.len()].clone()),
                };
                k += 1;
                let r = p.handle_discover(asker, req, Timestamp::from_millis(1000));
                while p.poll_event().is_some() {}
                assert_eq!(r.registrations.len(), 100);
                black_box(r)
            })
        });
    }
    g.finish();
}

/// `handle_timeout` removing 1 000 expiring registrations among 1 000 and
/// among 1 000 000 long-lived ones.
fn expiry_by_live_count(c: &mut Criterion) {
    let mut g = c.benchmark_group("expire_1000");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let long_ns = Namespace::new("long").expect("valid");
    let short_ns = Namespace::new("short").expect("valid");
    for live in [1_000usize, 1_000_000] {
        let mut p = point();
        fill(&mut p, live, &long_ns, 1 << 30);
        let peers: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        let rec = record(7);
        let mut round = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let t0 = Timestamp::from_millis(round * 10_000);
                    for peer in &peers {
                        register(&mut p, *peer, &short_ns, &rec, 1, t0);
                    }
                    let start = Instant::now();
                    p.handle_timeout(Timestamp::from_millis(round * 10_000 + 1000));
                    total += start.elapsed();
                    let mut expired = 0;
                    while let Some(e) = p.poll_event() {
                        expired +=
                            matches!(e, rdv_point::Event::RegistrationExpired { .. }) as usize;
                    }
                    assert_eq!(expired, 1000);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    register_refresh_unregister,
    discover_by_namespace_size,
    expiry_by_live_count
);
criterion_main!(benches);
