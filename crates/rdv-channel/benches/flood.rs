#![allow(missing_docs, clippy::unwrap_used)]
//! What a stranger's message 1 costs the responder (issue 13, item 4):
//! before the mac1 pre-check, every message reached Noise (`open_init`:
//! at least one X25519 and an AEAD); with it, a message not addressed to
//! this member's static key ends after one keyed BLAKE3 hash.
//!
//! `cargo bench -p rdv-channel --bench flood`

use criterion::{Criterion, criterion_group, criterion_main};
use rdv_channel::handshake::{HandshakeConfig, Initiator, open_init, prologue};
use rdv_context::{ContextId, HandshakeInit, Identity, Route, mac1_key};
use std::hint::black_box;
use zeroize::Zeroizing;

fn benches(c: &mut Criterion) {
    let bob = Identity::from_secret_bytes([2; 32], [102; 32]);
    let mallory = Identity::from_secret_bytes([7; 32], [107; 32]);
    let ctx = ContextId::from_bytes([5; 32]);
    let p = prologue(&ctx, 0, Route::Direct);
    // A stranger guesses at Bob's static key (it is sealed in descriptors
    // only members can open): its message 1 is made for another key.
    let guessed = Identity::from_secret_bytes([9; 32], [109; 32]).static_public();
    let cfg = HandshakeConfig {
        context_id: ctx,
        epoch: 0,
        local: mallory.authority(),
        remote: bob.authority(),
        local_static: mallory.static_secret_bytes(),
        psk: Zeroizing::new([3; 32]),
        timeout_ms: 5_000,
        prologue: p.clone(),
    };
    let payload = Initiator::new(cfg, guessed, [4; 32])
        .create_init_message(0, 1_000)
        .unwrap();
    let init = HandshakeInit::new(ctx, 0, Route::Direct, payload.clone(), &guessed);
    let bob_static = bob.static_secret_bytes();
    let key = mac1_key(&bob.static_public());
    assert!(!init.mac1_matches(&key));
    assert!(open_init(&bob_static, &p, &payload, [1; 32]).is_err());

    let mut g = c.benchmark_group("stranger_message_1");
    g.bench_function("noise_open (no pre-check)", |b| {
        b.iter(|| open_init(&bob_static, &p, black_box(&payload), [1; 32]).is_err())
    });
    g.bench_function("mac1 pre-check", |b| {
        b.iter(|| black_box(&init).mac1_matches(&key))
    });
    g.finish();
}

criterion_group!(name = all; config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)); targets = benches);
criterion_main!(all);
