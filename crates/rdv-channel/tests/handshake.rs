#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_channel::*;
use rdv_context::*;

#[test]
fn full_handshake_gives_both_sides_one_channel_id_and_both_journals_a_fact() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    assert_eq!(ca.id(), cb.id());
    assert_ne!(ca.id(), [0; 32]);
    assert_eq!(ca.remote_static(), b.identity.static_public());
    assert_eq!(cb.remote_static(), a.identity.static_public());
    assert_eq!((a.channels_established(), b.channels_established()), (1, 1));
    // Each end records the channel under its own signature: two facts
    // naming the same pair, channel and epoch.
    let fa = a
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 10)
        .unwrap();
    let fb = b
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 10)
        .unwrap();
    // Sealed under the epoch: opened (and the recorder's signature
    // checked) with its keys.
    let keys = a.service.keys(&a.ctx()).unwrap().clone();
    let named = |f: &RendezvousFact| match f {
        RendezvousFact::ChannelEstablished(sealed) => {
            let r = sealed.open(&keys).unwrap();
            (r.initiator, r.responder, r.channel_id, r.epoch, r.recorder)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(named(fa[0].fact()), (a.me(), b.me(), ca.id(), 0, a.me()));
    assert_eq!(named(fb[0].fact()), (a.me(), b.me(), ca.id(), 0, b.me()));
    let wire = ca.encrypt(b"hello bob").unwrap();
    assert_eq!(
        cb.decrypt(&wire, T0).unwrap(),
        vec![Incoming::Message(b"hello bob".to_vec())]
    );
    let wire = cb.encrypt(b"hello alice").unwrap();
    assert_eq!(
        ca.decrypt(&wire, T0).unwrap(),
        vec![Incoming::Message(b"hello alice".to_vec())]
    );
}

#[test]
fn wrong_psk_is_refused_by_the_responder_without_an_answer() {
    let (mut a, mut b) = pair();
    let ctx = b.ctx();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    let receipts = b.fx.receipts().len();

    // Handed a PSK that is not the pair's, Bob's service refuses before the
    // handshaker runs: denied, no effect.
    let who = b.hs.identify_initiator(&init).unwrap();
    let snap = b.snapshot();
    let out = b.service.prepare_handle_handshake(
        &snap,
        ctx,
        who,
        init.clone(),
        &[9; 32],
        &mut b.hs.at(T0 + 11),
    );
    assert!(
        matches!(
            out.decision,
            Decision::Denied(DenyReason::HandshakeRejected(_))
        ),
        "{:?}",
        out.decision
    );
    assert!(out.effects.is_empty());

    // Bob's service holds the keys of another secret for this context and
    // epoch, as a holder of another secret would: its PSK for the pair is
    // not Alice's, so the service passes it on and Noise refuses message 1.
    b.service
        .install_keys(EpochKeys::derive(
            ctx,
            0,
            &EpochSecret::from_bytes([0x5a; 32]),
        ))
        .unwrap();
    let err = b.answer(&init, T0 + 11).unwrap_err();
    assert!(err.contains("initiator does not hold"), "{err}");
    assert_eq!(b.channels_established(), 0);
    assert!(b.fx.take_outbox().is_empty());
    assert_eq!(b.fx.receipts().len(), receipts, "nothing charged");
    assert!(b.hs.take_responded(ctx, a.me()).is_none());
}

#[test]
fn initiator_with_wrong_psk_gets_no_answer_and_no_fact() {
    let (mut a, mut b) = pair();
    // Alice's handshaker is handed a wrong PSK directly (the service would
    // refuse it earlier with PskMismatch; this is the layer below).
    let ctx = a.ctx();
    let desc = a
        .service
        .get_cached_descriptor(ctx, b.me())
        .unwrap()
        .clone();
    let params = HandshakeParams {
        context_id: ctx,
        epoch: 0,
        local: a.me(),
        remote: b.me(),
        psk: &[9; 32],
        remote_static: Some(desc.static_key),
        transport: None,
        route: Route::Direct,
    };
    let payload = a.hs.at(T0 + 10).initiate(&params).unwrap();
    let init = HandshakeInit::new(ctx, 0, Route::Direct, payload, &b.identity.static_public());
    let err = b.answer(&init, T0 + 11).unwrap_err();
    assert!(err.contains("initiator does not hold"), "{err}");
    assert_eq!(b.channels_established(), 0);
    assert!(b.fx.take_outbox().is_empty());
}

#[test]
fn wrong_static_key_fails_message_1() {
    let (mut a, mut b) = pair();
    let ctx = a.ctx();
    let params = HandshakeParams {
        context_id: ctx,
        epoch: 0,
        local: a.me(),
        remote: b.me(),
        psk: &a.service.handshake_psk(&ctx, &b.me()).unwrap(),
        remote_static: Some(identity(9).static_public()),
        transport: None,
        route: Route::Direct,
    };
    let payload = a.hs.at(T0 + 10).initiate(&params).unwrap();
    let init = HandshakeInit::new(ctx, 0, Route::Direct, payload, &b.identity.static_public());
    let err = b.answer(&init, T0 + 11).unwrap_err();
    assert!(err.contains("does not authenticate"), "{err}");
    assert_eq!(b.channels_established(), 0);
}

#[test]
fn stale_epoch_is_refused_by_the_service_and_by_the_prologue() {
    let (mut a, mut b) = pair();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    // Bob moves to epoch 1 alone (Alice's rekey, applied only by Bob).
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[], &mut rng(5))
        .unwrap();
    b.context.apply_rekey(&b.identity, &rekey).unwrap();
    b.rekeyed();
    let err = b.answer(&init, T0 + 11).unwrap_err();
    assert!(err.contains("epoch"), "{err}");
    // Relabelled as epoch 1 (mac1 recomputed, as anyone knowing Bob's
    // static key can), the prologue (context, epoch 0) does not match.
    let relabelled = HandshakeInit::new(
        init.context_id,
        1,
        init.route,
        init.payload.clone(),
        &b.identity.static_public(),
    );
    let err = b.hs.identify_initiator(&relabelled).unwrap_err();
    assert_eq!(err, HandshakeError::NotAuthentic);
    assert_eq!(b.channels_established(), 0);
}

#[test]
fn members_whose_clocks_disagree_by_minutes_still_connect() {
    for skew in [6_000, 5 * 60_000] {
        let (mut a, mut b) = pair();
        // Bob's clock is ahead of Alice's, then behind.
        let init = a.initiate(b.me(), T0 + 10).unwrap();
        let complete = b.answer(&init, T0 + 10 + skew).unwrap();
        a.finish(b.me(), &complete, T0 + 20).unwrap();
        let (mut a, mut b) = pair();
        let init = a.initiate(b.me(), T0 + 10 + skew).unwrap();
        let complete = b.answer(&init, T0 + 10).unwrap();
        a.finish(b.me(), &complete, T0 + 20 + skew).unwrap();
        assert_eq!(b.channels_established(), 1);
    }
}

#[test]
fn two_handshakes_in_one_millisecond_are_both_answered() {
    let (mut a, mut b) = pair();
    let first = a.initiate(b.me(), T0 + 10).unwrap();
    b.answer(&first, T0 + 11).unwrap();
    // Same clock reading: the handshaker still sends a newer timestamp.
    let second = a.initiate(b.me(), T0 + 10).unwrap();
    b.answer(&second, T0 + 11).unwrap();
    assert_eq!(b.channels_established(), 2);
}

#[test]
fn replay_state_is_per_initiator_and_never_forgets_a_fresh_one() {
    let now = T0;
    let mut r = rdv_channel::handshake::ReplayCache::new(4);
    let alice = [1u8; 32];
    r.check_and_insert(alice, now, now).unwrap();
    assert_eq!(
        r.check_and_insert(alice, now, now),
        Err(HandshakeError::Replayed)
    );
    assert_eq!(
        r.check_and_insert(alice, now - 1, now),
        Err(HandshakeError::Replayed)
    );
    // Others fill the cache: Alice's entry stays, new ones wait.
    for k in 2..5u8 {
        r.check_and_insert([k; 32], now, now).unwrap();
    }
    assert_eq!(
        r.check_and_insert([9; 32], now, now),
        Err(HandshakeError::Busy)
    );
    assert_eq!(
        r.check_and_insert(alice, now, now),
        Err(HandshakeError::Replayed)
    );
    r.check_and_insert(alice, now + 1, now + 1).unwrap();
    // Once entries are older than the freshness window they make room
    // (a replay of those fails the window check instead).
    let later = now + rdv_channel::handshake::MAX_CLOCK_SKEW_MS + 10;
    r.check_and_insert([9; 32], later, later).unwrap();
    assert!(r.len() <= 4);
}

#[test]
fn replayed_message_1_is_refused() {
    let (mut a, mut b) = pair();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    b.answer(&init, T0 + 11).unwrap();
    assert_eq!(b.channels_established(), 1);
    let err = b.answer(&init, T0 + 12).unwrap_err();
    assert!(err.contains("replayed"), "{err}");
    assert_eq!(b.channels_established(), 1);
}

#[test]
fn message_1_too_old_is_refused_and_a_late_answer_times_out() {
    let (mut a, mut b) = pair();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    let err = b
        .answer(
            &init,
            T0 + 10 + rdv_channel::handshake::MAX_CLOCK_SKEW_MS + 1,
        )
        .unwrap_err();
    assert!(err.contains("window"), "{err}");
    let init = a.initiate(b.me(), T0 + 20).unwrap();
    let complete = b.answer(&init, T0 + 21).unwrap();
    let err = a.finish(b.me(), &complete, T0 + 20 + 5_001).unwrap_err();
    assert!(matches!(err, HandshakeError::TimedOut { .. }), "{err}");
    assert_eq!(a.channels_established(), 0);
}

#[test]
fn expired_descriptor_prevents_the_handshake() {
    let (mut a, b) = pair();
    let err = a.initiate(b.me(), T0 + 3_600_000 + 1).unwrap_err();
    assert!(err.contains("no valid descriptor"), "{err}");
    assert_eq!(a.channels_established(), 0);
}

#[test]
fn peer_outside_the_context_gets_no_answer() {
    let (_a, mut b) = pair();
    // Mallory knows Bob's static key and the context id, not the secret.
    let mallory = identity(7);
    let ctx = b.ctx();
    let cfg = HandshakeConfig {
        context_id: ctx,
        epoch: 0,
        local: mallory.authority(),
        remote: b.me(),
        local_static: mallory.static_secret_bytes(),
        psk: zeroize::Zeroizing::new([3; 32]),
        timeout_ms: 5_000,
        prologue: rdv_channel::handshake::prologue(&ctx, 0, Route::Direct),
    };
    let mut init = Initiator::new(cfg, b.identity.static_public(), [4; 32]);
    let payload = init.create_init_message(0, T0 + 10).unwrap();
    // Mallory knows Bob's static key, so her mac1 passes; Noise refuses.
    let msg = HandshakeInit::new(ctx, 0, Route::Direct, payload, &b.identity.static_public());
    assert_eq!(
        b.hs.identify_initiator(&msg).unwrap_err(),
        HandshakeError::UnknownInitiator
    );
    // Even named as a member, the static key does not match.
    let err = b.answer_as(_a.me(), msg, T0 + 11).unwrap_err();
    assert!(err.contains("static key"), "{err}");
    assert_eq!(b.channels_established(), 0);
}

#[test]
fn garbled_message_2_fails_the_initiator() {
    let (mut a, mut b) = pair();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    let mut complete = b.answer(&init, T0 + 11).unwrap();
    let last = complete.payload.len() - 1;
    complete.payload[last] ^= 1;
    assert_eq!(
        a.finish(b.me(), &complete, T0 + 12).unwrap_err(),
        HandshakeError::NotAuthentic
    );
    assert_eq!(a.channels_established(), 0);
}

/// Issue 13, item 6: the route travels in clear beside message 1; an
/// on-path attacker who flips it would change the responder's operation
/// (AcceptRelay instead of AcceptDirect: other cost, other capability).
/// Bound into the prologue, the flip makes message 1 fail to open, and the
/// unflipped message still connects.
#[test]
fn a_route_flipped_on_the_way_breaks_message_1() {
    let (mut a, mut b) = pair();
    let ctx = a.ctx();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    assert_eq!(init.route, Route::Direct);
    // The attacker knows Bob's static key (a member, or anyone it leaked
    // to), so it makes the mac1 right for the flipped route; only the
    // prologue stands in its way.
    let flipped = HandshakeInit::new(
        init.context_id,
        init.epoch,
        Route::Relay,
        init.payload.clone(),
        &b.identity.static_public(),
    );

    let err = b.answer(&flipped, T0 + 11).unwrap_err();
    assert!(err.contains("does not authenticate"), "{err}");
    // Past identification too (a driver that skipped it): the handshaker's
    // own prologue refuses the flipped route.
    let err = b.answer_as(a.me(), flipped, T0 + 11).unwrap_err();
    assert!(err.contains("does not authenticate"), "{err}");
    assert_eq!(b.channels_established(), 0);
    assert!(b.hs.take_responded(ctx, a.me()).is_none());

    let complete = b.answer(&init, T0 + 12).unwrap();
    a.finish(b.me(), &complete, T0 + 13).unwrap();
    assert_eq!(b.channels_established(), 1);
}

/// Issue 13, item 4: message 1 carries a MAC under a key derived from the
/// responder's static key; a message without the right one is refused with
/// `Mac1Mismatch` before any Noise work, whatever else it holds.
#[test]
fn message_1_without_the_responders_mac1_is_refused_before_noise() {
    let (mut a, mut b) = pair();
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    // One bit of mac1 changed.
    let mut bad = init.clone();
    bad.mac1[0] ^= 1;
    assert_eq!(
        b.hs.identify_initiator(&bad).unwrap_err(),
        HandshakeError::Mac1Mismatch
    );
    // A genuine message made for another member's static key.
    let other = HandshakeInit::new(
        init.context_id,
        init.epoch,
        init.route,
        init.payload.clone(),
        &identity(9).static_public(),
    );
    assert_eq!(
        b.hs.identify_initiator(&other).unwrap_err(),
        HandshakeError::Mac1Mismatch
    );
    // The mac1 covers the route too: a flip alone fails the pre-check.
    let mut flipped = init.clone();
    flipped.route = Route::Relay;
    assert_eq!(
        b.hs.identify_initiator(&flipped).unwrap_err(),
        HandshakeError::Mac1Mismatch
    );
    assert_eq!(b.hs.identify_initiator(&init).unwrap(), a.me());
}
