#![allow(missing_docs, clippy::unwrap_used)]
//! Handshake vs snow's raw IKpsk2; channel bulk vs raw ChaCha20-Poly1305.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdv_channel::handshake::{HandshakeConfig, Initiator, open_init, prologue, respond};
use rdv_channel::{Incoming, SecureChannel};
use rdv_context::{ContextId, Identity};
use zeroize::Zeroizing;

fn ids() -> (Identity, Identity) {
    (
        Identity::from_secret_bytes([1; 32], [101; 32]),
        Identity::from_secret_bytes([2; 32], [102; 32]),
    )
}

fn configs(a: &Identity, b: &Identity) -> (HandshakeConfig, HandshakeConfig) {
    let ctx = ContextId::from_bytes([5; 32]);
    let mk = |l: &Identity, r: &Identity| HandshakeConfig {
        context_id: ctx,
        epoch: 0,
        local: l.authority(),
        remote: r.authority(),
        local_static: l.static_secret_bytes(),
        psk: Zeroizing::new([9; 32]),
        timeout_ms: 5_000,
        prologue: prologue(&ctx, 0, rdv_context::Route::Direct),
    };
    (mk(a, b), mk(b, a))
}

fn handshake(a: &Identity, b: &Identity, n: u8) -> (SecureChannel, SecureChannel) {
    let (ca, cb) = configs(a, b);
    let mut i = Initiator::new(ca, b.static_public(), [n; 32]);
    let m1 = i.create_init_message(0, 1_000).unwrap();
    let opened = open_init(&cb.local_static, &cb.prologue, &m1, [n ^ 0xff; 32]).unwrap();
    let (m2, eb) = respond(&cb, &a.static_public(), opened, None, 1_000).unwrap();
    i.process_response(&m2, 1_000).unwrap();
    (
        SecureChannel::new(i.complete().unwrap()),
        SecureChannel::new(eb),
    )
}

struct Rng(u8);
impl snow::types::Random for Rng {
    fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), snow::Error> {
        self.0 = self.0.wrapping_add(1);
        d.fill(self.0);
        Ok(())
    }
}
struct Res;
impl snow::resolvers::CryptoResolver for Res {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(Rng(3)))
    }
    fn resolve_dh(&self, c: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        snow::resolvers::DefaultResolver.resolve_dh(c)
    }
    fn resolve_hash(&self, c: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::DefaultResolver.resolve_hash(c)
    }
    fn resolve_cipher(
        &self,
        c: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::DefaultResolver.resolve_cipher(c)
    }
}

/// snow alone: same pattern, same payload size, no rdv checks.
fn raw_snow(a: &Identity, b: &Identity) {
    let p: snow::params::NoiseParams = rdv_channel::noise::PATTERN.parse().unwrap();
    let (sa, sb) = (a.static_secret_bytes(), b.static_secret_bytes());
    let mut i = snow::Builder::with_resolver(p.clone(), Box::new(Res))
        .local_private_key(&sa[..])
        .unwrap()
        .remote_public_key(&b.static_public())
        .unwrap()
        .psk(2, &[9; 32])
        .unwrap()
        .prologue(b"x")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::with_resolver(p, Box::new(Res))
        .local_private_key(&sb[..])
        .unwrap()
        .psk(2, &[9; 32])
        .unwrap()
        .prologue(b"x")
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut m, mut o) = ([0u8; 512], [0u8; 512]);
    let n = i.write_message(&[0u8; 81], &mut m).unwrap();
    r.read_message(&m[..n], &mut o).unwrap();
    let n = r.write_message(&[], &mut m).unwrap();
    i.read_message(&m[..n], &mut o).unwrap();
    std::hint::black_box((
        i.into_transport_mode().unwrap(),
        r.into_transport_mode().unwrap(),
    ));
}

fn benches(c: &mut Criterion) {
    let (a, b) = ids();
    let mut g = c.benchmark_group("handshake");
    g.bench_function("rdv_ikpsk2_both_sides", |bn| {
        let mut n = 0u8;
        bn.iter(|| {
            n = n.wrapping_add(1);
            std::hint::black_box(handshake(&a, &b, n))
        })
    });
    g.bench_function("snow_raw_ikpsk2_both_sides", |bn| {
        bn.iter(|| raw_snow(&a, &b))
    });
    g.finish();

    let msg = vec![0x5au8; 64 * 1024];
    let mut g = c.benchmark_group("bulk_64KiB");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    let (mut ca, mut cb) = handshake(&a, &b, 1);
    let mut wire = Vec::with_capacity(70_000);
    g.bench_function("channel_encrypt_decrypt", |bn| {
        bn.iter(|| {
            wire.clear();
            ca.encrypt_into(&msg, &mut wire).unwrap();
            let ev = cb.decrypt(&wire, 0).unwrap();
            assert!(matches!(ev.as_slice(), [Incoming::Message(m)] if m.len() == msg.len()));
        })
    });
    let cipher = ChaCha20Poly1305::new(&Key::from([7u8; 32]));
    let mut buf = msg.clone();
    let mut ctr = 0u64;
    g.bench_function("raw_chacha20poly1305_seal_open", |bn| {
        bn.iter(|| {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&ctr.to_le_bytes());
            ctr += 1;
            let nonce = Nonce::from(n);
            buf.copy_from_slice(&msg);
            let tag = cipher
                .encrypt_inout_detached(&nonce, &[], (&mut buf[..]).into())
                .unwrap();
            let mut out = buf.clone();
            cipher
                .decrypt_inout_detached(&nonce, &[], (&mut out[..]).into(), &tag)
                .unwrap();
            std::hint::black_box(out);
        })
    });
    g.finish();
}

criterion_group!(name = all; config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)); targets = benches);
criterion_main!(all);
