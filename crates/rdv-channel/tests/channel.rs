#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use rdv_channel::channel::MAX_FRAGMENT;
use rdv_channel::*;

fn frames(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[p], wire[p + 1]]));
        out.push(wire[p..p + 2 + len].to_vec());
        p += 2 + len;
    }
    out
}

#[test]
fn large_messages_are_split_into_noise_messages_of_at_most_65535_bytes() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    let msg: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let wire = ca.encrypt(&msg).unwrap();
    let fs = frames(&wire);
    assert_eq!(fs.len(), msg.len().div_ceil(MAX_FRAGMENT));
    assert!(fs.iter().all(|f| f.len() - 2 - 16 <= 65_535));
    assert_eq!(cb.decrypt(&wire, T0).unwrap(), vec![Incoming::Message(msg)]);
}

#[test]
fn replayed_reordered_garbled_and_truncated_frames_fail_the_channel_with_typed_errors() {
    let (mut a, mut b) = pair();
    let (mut ca, cb0) = connect(&mut a, &mut b);
    let f1 = ca.encrypt(b"one").unwrap();
    let f2 = ca.encrypt(b"two").unwrap();
    let mut cb = cb0;
    cb.decrypt(&f1, T0).unwrap();
    assert_eq!(
        cb.decrypt(&f1, T0).unwrap_err(),
        ChannelError::Replayed {
            expected: 1,
            found: 0
        }
    );
    assert!(matches!(cb.state(), ChannelState::Error(_)));
    assert_eq!(cb.keys_held(), 0);
    assert!(
        cb.decrypt(&f2, T0).is_err(),
        "a failed channel stays failed"
    );

    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    let _f1 = ca.encrypt(b"one").unwrap();
    let f2 = ca.encrypt(b"two").unwrap();
    assert_eq!(
        cb.decrypt(&f2, T0).unwrap_err(),
        ChannelError::Reordered {
            expected: 0,
            found: 1
        }
    );

    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    let mut f = ca.encrypt(b"one").unwrap();
    let n = f.len();
    f[n - 3] ^= 0x40;
    assert_eq!(cb.decrypt(&f, T0).unwrap_err(), ChannelError::Garbled);

    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    let f = ca.encrypt(b"one").unwrap();
    assert_eq!(cb.decrypt(&f[..f.len() - 1], T0).unwrap(), vec![]);
    assert!(matches!(
        cb.finish().unwrap_err(),
        ChannelError::Truncated(_)
    ));

    let (mut a, mut b) = pair();
    let (_ca, mut cb) = connect(&mut a, &mut b);
    assert_eq!(
        cb.decrypt(&[0, 3, 1, 2, 3], T0).unwrap_err(),
        ChannelError::FrameTooShort(3)
    );
}

#[test]
fn oversized_message_is_refused_on_both_sides() {
    let (mut a, mut b) = pair();
    let (ca, cb) = connect(&mut a, &mut b);
    let (mut ca, mut cb) = (
        ca.with_max_message_len(100_000),
        cb.with_max_message_len(70_000),
    );
    let msg = vec![7u8; 90_000];
    let wire = ca.encrypt(&msg).unwrap();
    assert_eq!(
        cb.decrypt(&wire, T0).unwrap_err(),
        ChannelError::MessageTooLarge { max: 70_000 }
    );
    assert_eq!(
        ca.encrypt(&vec![0; 100_001]).unwrap_err(),
        ChannelError::MessageTooLarge { max: 100_000 }
    );
}

#[test]
fn debug_prints_no_key_material() {
    let (mut a, mut b) = pair();
    let (ca, _) = connect(&mut a, &mut b);
    let s = format!("{ca:?}");
    assert!(s.contains("SecureChannel") && s.contains("Active"));
    assert!(!s.contains("key"), "{s}");
}

#[test]
fn rotation_rekeys_both_sides_without_losing_in_flight_messages() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    let old_binding = ca.binding();
    advance(&mut a, &mut b);
    let mut to_b = ca.encrypt(b"before").unwrap();
    let m = a.rekey_material(b.me());
    to_b.extend(ca.begin_rotation(m, T0 + 100).unwrap());
    to_b.extend(ca.encrypt(b"during, old keys").unwrap());
    let old_frame_replay = ca.encrypt(b"x").unwrap();
    let ev = cb.decrypt(&to_b, T0 + 101).unwrap();
    assert_eq!(ev[0], Incoming::Message(b"before".to_vec()));
    assert_eq!(ev[1], Incoming::RotationRequested { epoch: 1 });
    assert_eq!(ev[2], Incoming::Message(b"during, old keys".to_vec()));
    cb.decrypt(&old_frame_replay, T0 + 101).unwrap();
    let m = b.rekey_material(a.me());
    let mut to_a = cb.accept_rotation(m, T0 + 102).unwrap();
    to_a.extend(cb.encrypt(b"bob, new keys").unwrap());
    let ev = ca.decrypt(&to_a, T0 + 103).unwrap();
    let Incoming::Rotated { epoch: 1, send } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(ev[1], Incoming::Message(b"bob, new keys".to_vec()));
    assert_eq!(ca.epoch(), 1);
    assert_ne!(ca.binding(), old_binding);
    assert_eq!(ca.id(), cb.id(), "the channel keeps its id");
    assert_eq!(
        cb.keys_held(),
        3,
        "responder holds the old receive key until the switch"
    );
    let mut to_b = send.clone();
    to_b.extend(ca.encrypt(b"alice, new keys").unwrap());
    let ev = cb.decrypt(&to_b, T0 + 104).unwrap();
    assert_eq!(
        ev,
        vec![
            Incoming::Rotated {
                epoch: 1,
                send: vec![]
            },
            Incoming::Message(b"alice, new keys".to_vec())
        ]
    );
    assert_eq!((cb.epoch(), cb.keys_held(), ca.keys_held()), (1, 2, 2));
    assert_eq!(ca.binding(), cb.binding());
}

#[test]
fn after_rotation_frames_sealed_with_old_keys_are_refused() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    advance(&mut a, &mut b);
    let r = ca
        .begin_rotation(a.rekey_material(b.me()), T0 + 100)
        .unwrap();
    cb.decrypt(&r, T0 + 100).unwrap();
    let r = cb
        .accept_rotation(b.rekey_material(a.me()), T0 + 100)
        .unwrap();
    let ev = ca.decrypt(&r, T0 + 100).unwrap();
    let Incoming::Rotated { send, .. } = &ev[0] else {
        panic!()
    };
    cb.decrypt(send, T0 + 100).unwrap();
    // A frame claiming the old epoch is refused: its keys are gone.
    let mut stale = ca.encrypt(b"new").unwrap();
    stale[2..10].copy_from_slice(&0u64.to_be_bytes());
    assert_eq!(
        cb.decrypt(&stale, T0).unwrap_err(),
        ChannelError::StaleEpoch {
            current: 1,
            found: 0
        }
    );
}

/// Alice starts a rotation to epoch 1, then seals one more message under
/// epoch 0's keys; Bob answers, Alice switches. Returns Bob's channel
/// (its old receive key still in place, expecting the held frame's
/// counter next), the held epoch-0 frame and Alice's `RekeyDone`.
fn rotation_with_a_held_old_frame() -> (SecureChannel, Vec<u8>, Vec<u8>) {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    advance(&mut a, &mut b);
    let request = ca
        .begin_rotation(a.rekey_material(b.me()), T0 + 100)
        .unwrap();
    let held = ca.encrypt(b"sealed under epoch 0").unwrap();
    assert_eq!(held[2..10], 0u64.to_be_bytes(), "an epoch-0 frame");
    assert_eq!(
        cb.decrypt(&request, T0 + 101).unwrap(),
        vec![Incoming::RotationRequested { epoch: 1 }]
    );
    let answer = cb
        .accept_rotation(b.rekey_material(a.me()), T0 + 102)
        .unwrap();
    let ev = ca.decrypt(&answer, T0 + 103).unwrap();
    let [Incoming::Rotated { epoch: 1, send }] = &ev[..] else {
        panic!("{ev:?}")
    };
    (cb, held, send.clone())
}

#[test]
fn a_real_frame_sealed_with_the_old_keys_is_refused_after_the_switch() {
    // Delivered before Bob's switch, the held frame is genuine: it opens.
    let (mut cb, held, done) = rotation_with_a_held_old_frame();
    assert_eq!(
        cb.decrypt(&held, T0 + 104).unwrap(),
        vec![Incoming::Message(b"sealed under epoch 0".to_vec())]
    );
    cb.decrypt(&done, T0 + 105).unwrap();
    assert_eq!(cb.epoch(), 1);

    // The same bytes (the handshakes are deterministic here) delivered after
    // Bob switched to epoch 1: the old receive key is gone, so the frame is
    // refused and the channel fails.
    let (mut cb, held_again, done) = rotation_with_a_held_old_frame();
    assert_eq!(held_again, held);
    assert_eq!(
        cb.decrypt(&done, T0 + 104).unwrap(),
        vec![Incoming::Rotated {
            epoch: 1,
            send: vec![]
        }]
    );
    assert_eq!(cb.keys_held(), 2, "the old receive key was dropped");
    assert_eq!(
        cb.decrypt(&held, T0 + 105).unwrap_err(),
        ChannelError::StaleEpoch {
            current: 1,
            found: 0
        }
    );
    assert!(matches!(
        cb.state(),
        ChannelState::Error(ChannelError::StaleEpoch { .. })
    ));
    assert_eq!(cb.keys_held(), 0);
}

#[test]
fn a_peer_holding_only_the_old_epoch_secret_cannot_follow_a_rotation() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    // Alice advances, Bob is removed (keeps only epoch 0's secret).
    let bob_id = b.me();
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[bob_id], &mut rng(8))
        .unwrap();
    assert!(b.context.apply_rekey(&b.identity, &rekey).is_err());
    a.rekeyed();
    let r = ca
        .begin_rotation(a.rekey_material(bob_id), T0 + 100)
        .unwrap();
    let ev = cb.decrypt(&r, T0 + 100).unwrap();
    assert_eq!(ev, vec![Incoming::RotationRequested { epoch: 1 }]);
    // Bob answers with the only PSK he has, relabelled as epoch 1.
    let mut m = b.rekey_material(a.me());
    m.epoch = 1;
    let err = cb.accept_rotation(m, T0 + 100).unwrap_err();
    assert_eq!(err, ChannelError::Rotation(HandshakeError::PskMismatch));
    assert_eq!(cb.keys_held(), 0);
    // Bob sent nothing; Alice is still waiting and will time out.
    assert!(matches!(ca.state(), ChannelState::Rotating { to: 1 }));
}

#[test]
fn only_the_initiator_starts_a_rotation_and_only_to_a_newer_epoch() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    assert!(cb.begin_rotation(b.rekey_material(a.me()), T0).is_err());
    assert!(
        ca.begin_rotation(a.rekey_material(b.me()), T0).is_err(),
        "epoch 0 is not newer"
    );
    assert!(ca.is_active());
}

#[test]
fn manager_registers_finds_marks_and_prunes_within_its_bound() {
    let (mut a, mut b) = pair();
    let (ca, _cb) = connect(&mut a, &mut b);
    let (mut a2, mut b2) = pair();
    let (_, mut other) = connect(&mut a2, &mut b2);
    let mut m = ChannelManager::with_capacity_limit(1);
    let (ctx, peer) = (ca.context_id(), ca.remote());
    assert!(m.register(ca).unwrap().is_none());
    assert!(m.find_by_context_peer(ctx, peer).unwrap().is_active());
    // Full: a channel with another peer is refused while the first is live.
    assert_eq!(
        m.register(other_with_new_key(&mut other)).unwrap_err(),
        ManagerError::Full(1)
    );
    assert_eq!(m.advance_epoch(ctx, 1), vec![peer]);
    assert!(
        m.find_by_context_peer(ctx, peer)
            .unwrap()
            .needs_epoch_rotation(0)
    );
    let ch = m.find_mut(ctx, peer).unwrap();
    ch.close().unwrap();
    assert_eq!(m.prune(), 1);
    assert!(m.is_empty());
}

fn other_with_new_key(c: &mut SecureChannel) -> SecureChannel {
    let _ = c.close();
    SecureChannel::establishing(c.context_id(), c.local(), c.remote(), 0, false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn any_message_sizes_over_any_split_of_the_stream_arrive_intact(
        sizes in proptest::collection::vec(0usize..150_000, 1..4),
        cuts in proptest::collection::vec(1usize..70_000, 0..12),
    ) {
        let (mut a, mut b) = pair();
        let (mut ca, mut cb) = connect(&mut a, &mut b);
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![i as u8; *n]).collect();
        let mut wire = Vec::new();
        for m in &msgs {
            ca.encrypt_into(m, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for c in cuts {
            let c = c.min(rest.len());
            let (head, tail) = rest.split_at(c);
            got.extend(cb.decrypt(head, T0).unwrap());
            rest = tail;
        }
        got.extend(cb.decrypt(rest, T0).unwrap());
        cb.finish().unwrap();
        let want: Vec<Incoming> = msgs.into_iter().map(Incoming::Message).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_byte_garbage_fails_or_waits_but_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut a, mut b) = pair();
        let (_ca, mut cb) = connect(&mut a, &mut b);
        let _ = cb.decrypt(&bytes, T0);
    }
}
