//! Binding requests answered per second by the sans-IO server on one core.
//!
//! `cargo bench -p rdv-stun --bench server`
//!
//! Each iteration is one `StunServer::handle` call: parse and check the
//! request (FINGERPRINT included), look the source up in the rate-limit
//! table, write XOR-MAPPED-ADDRESS and FINGERPRINT into the caller's buffer.
//! Sources rotate over 1024 addresses (a table lookup each time, no
//! eviction) or are all new (eviction each time).
#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdv_stun::stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId,
};
use rdv_stun::{LimiterConfig, MAX_ANSWER, Outcome, ServerConfig, StunServer};

fn request(id: u128) -> Vec<u8> {
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        TransactionId::from(id),
        MessageWriteVec::new(),
    );
    w.add_fingerprint().expect("fingerprint");
    w.finish()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stun_server");
    group.throughput(Throughput::Elements(1));
    let req = request(0x1234_5678_9abc);
    let t0 = Instant::now();

    // Generous limits: every request is answered.
    let unlimited = LimiterConfig {
        rate: 1e12,
        burst: 1e12,
        max_sources: 4096,
    };
    let sources: Vec<SocketAddr> = (0..1024u32)
        .map(|i| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 40_000)))
        .collect();
    let mut server = StunServer::new(ServerConfig { limiter: unlimited });
    let mut out = [0u8; MAX_ANSWER];
    let mut i = 0usize;
    group.bench_function("binding_1024_sources", |b| {
        b.iter(|| {
            i = (i + 1) % sources.len();
            let o = server.handle(t0, sources[i], &req, &mut out);
            assert!(matches!(o, Outcome::Answered(_)));
        })
    });

    // Every source new: the CLOCK eviction runs on each request.
    let mut server = StunServer::new(ServerConfig {
        limiter: LimiterConfig {
            max_sources: 1024,
            ..unlimited
        },
    });
    let mut n = 0u32;
    group.bench_function("binding_new_source_each", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let from = SocketAddr::from((Ipv4Addr::from(n), 40_000));
            let o = server.handle(t0, from, &req, &mut out);
            assert!(matches!(o, Outcome::Answered(_)));
        })
    });

    // Junk: what a flood of non-STUN costs.
    let mut server = StunServer::new(ServerConfig::default());
    let junk = [0x17u8; 64];
    group.bench_function("junk_dropped", |b| {
        b.iter(|| server.handle(t0, sources[0], &junk, &mut out))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
