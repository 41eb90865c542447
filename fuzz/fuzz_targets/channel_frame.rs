//! A secure channel fed any bytes as a received frame (what a peer or an
//! on-path attacker can send after the handshake) never panics: it returns
//! a typed error or, for a genuine frame, the message. A frame sealed by
//! the peer with the input as the message always opens to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdv_channel::SecureChannel;
use rdv_channel::handshake::{HandshakeConfig, Initiator, open_init, prologue, respond};
use rdv_channel::Incoming;
use rdv_context::{ContextId, Identity, Route};
use zeroize::Zeroizing;

/// A fresh channel pair (a real IKpsk2 handshake with fixed inputs).
fn pair() -> (SecureChannel, SecureChannel) {
    let a = Identity::from_secret_bytes([1; 32], [101; 32]);
    let b = Identity::from_secret_bytes([2; 32], [102; 32]);
    let ctx = ContextId::from_bytes([5; 32]);
    let cfg = |l: &Identity, r: &Identity| HandshakeConfig {
        context_id: ctx,
        epoch: 0,
        local: l.authority(),
        remote: r.authority(),
        local_static: l.static_secret_bytes(),
        psk: Zeroizing::new([9; 32]),
        timeout_ms: 5_000,
        prologue: prologue(&ctx, 0, Route::Direct),
    };
    let (ca, cb) = (cfg(&a, &b), cfg(&b, &a));
    let mut i = Initiator::new(ca, b.static_public(), [7; 32]);
    let m1 = i.create_init_message(0, 1_000).expect("message 1");
    let opened = open_init(&cb.local_static, &cb.prologue, &m1, [8; 32]).expect("open");
    let (m2, eb) = respond(&cb, &a.static_public(), opened, None, 1_000).expect("respond");
    i.process_response(&m2, 1_000).expect("message 2");
    (
        SecureChannel::new(i.complete().expect("split")),
        SecureChannel::new(eb),
    )
}

fuzz_target!(|data: &[u8]| {
    let (mut a, mut b) = pair();
    // The input as a message: sealed by Alice, opened by Bob.
    if let Ok(frame) = a.encrypt(data) {
        let got: Vec<u8> = b
            .decrypt(&frame, 1_000)
            .expect("a genuine frame opens")
            .into_iter()
            .filter_map(|i| match i {
                Incoming::Message(m) => Some(m),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(got, data);
    }
    // Then the input as a frame: an error or a message, never a panic.
    let _ = b.decrypt(data, 1_000);
});
