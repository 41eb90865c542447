#![allow(missing_docs, clippy::unwrap_used)]

//! Sealing and opening a descriptor against the raw primitives it is made
//! of, on the same bytes in the same run: Ed25519 sign + XChaCha20-Poly1305
//! encrypt (seal), XChaCha20-Poly1305 decrypt + Ed25519 verify (open).
//! Target: seal + open within 1.5x of sign + encrypt + decrypt + verify.
//!
//! `cargo bench -p rdv-context --bench descriptor`

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use rdv_context::*;

fn setup() -> (Identity, EpochKeys, RendezvousDescriptor) {
    let id = Identity::from_secret_bytes([1; 32], [2; 32]);
    let keys = EpochKeys::derive(
        ContextId::from_bytes([3; 32]),
        1,
        &EpochSecret::from_bytes([4; 32]),
    );
    let d = RendezvousDescriptor {
        authority_id: id.authority(),
        context_id: keys.context_id(),
        transport_hints: vec![
            TransportHint::QuicDirect {
                addr: "203.0.113.7:4433".into(),
            },
            TransportHint::QuicReflexive {
                addr: "198.51.100.20:61000".into(),
                stun_server: "stun.example.net:3478".into(),
            },
            TransportHint::WebSocketRelay {
                relay_authority: Identity::from_secret_bytes([9; 32], [9; 32]).authority(),
                addr: "203.0.113.40:4002".into(),
            },
        ],
        handshake_psk_commitment: keys.psk_commitment(&id.authority()),
        valid_from: 1_700_000_000_000,
        valid_until: 1_700_003_600_000,
        nonce: [5; 32],
        static_key: id.static_public(),
    };
    (id, keys, d)
}

fn bench(c: &mut Criterion) {
    let (id, keys, d) = setup();
    let policy = DescriptorPolicy::default();
    let now = d.valid_from + 1;
    let sealed = d.seal(&id, &keys, [6; 24]).unwrap();

    // The raw primitives on the same bytes: the signed message (domain,
    // epoch, body) and a plaintext of body + signature, with the same AD
    // length as the sealed descriptor's.
    let body = d.to_body_bytes();
    let mut message = vec![25u8];
    message.extend_from_slice(b"rdv context v1 descriptor");
    message.extend_from_slice(&1u64.to_be_bytes());
    message.extend_from_slice(&body);
    let signing = SigningKey::from_bytes(&[1; 32]);
    let verifying = signing.verifying_key();
    let cipher_key = *keys.descriptor_key();
    let ad = [7u8; 32 + 1 + 32 + 8 + 32];
    let nonce = XNonce::from([6; 24]);

    let mut g = c.benchmark_group("descriptor");
    g.bench_function("seal", |b| {
        b.iter(|| black_box(&d).seal(&id, &keys, [6; 24]).unwrap())
    });
    g.bench_function("open", |b| {
        b.iter(|| black_box(&sealed).open(&keys, now, &policy).unwrap())
    });
    g.bench_function("seal+open", |b| {
        b.iter(|| {
            let s = black_box(&d).seal(&id, &keys, [6; 24]).unwrap();
            s.open(&keys, now, &policy).unwrap()
        })
    });
    g.bench_function("raw sign+encrypt", |b| {
        b.iter(|| {
            let sig = signing.sign(black_box(&message));
            let mut plain = body.clone();
            plain.extend_from_slice(&sig.to_bytes());
            XChaCha20Poly1305::new(&cipher_key.into())
                .encrypt(
                    &nonce,
                    Payload {
                        msg: &plain,
                        aad: &ad,
                    },
                )
                .unwrap()
        })
    });
    let sig = signing.sign(&message);
    let mut plain = body.clone();
    plain.extend_from_slice(&sig.to_bytes());
    let ct = XChaCha20Poly1305::new(&cipher_key.into())
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &ad,
            },
        )
        .unwrap();
    g.bench_function("raw decrypt+verify", |b| {
        b.iter(|| {
            let p = XChaCha20Poly1305::new(&cipher_key.into())
                .decrypt(
                    &nonce,
                    Payload {
                        msg: black_box(&ct),
                        aad: &ad,
                    },
                )
                .unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&p[p.len() - 64..]).unwrap();
            verifying.verify_strict(&message, &sig).unwrap()
        })
    });
    g.bench_function("raw sign+encrypt+decrypt+verify", |b| {
        b.iter(|| {
            let sig = signing.sign(black_box(&message));
            let mut plain = body.clone();
            plain.extend_from_slice(&sig.to_bytes());
            let cipher = XChaCha20Poly1305::new(&cipher_key.into());
            let ct = cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: &plain,
                        aad: &ad,
                    },
                )
                .unwrap();
            let p = cipher
                .decrypt(&nonce, Payload { msg: &ct, aad: &ad })
                .unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&p[p.len() - 64..]).unwrap();
            verifying.verify_strict(&message, &sig).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
