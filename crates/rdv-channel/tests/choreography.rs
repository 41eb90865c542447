#![allow(missing_docs, clippy::unwrap_used)]
//! The typed choreographies at run time: a full exchange carries real
//! sealed descriptors and real Noise IKpsk2 messages to working channels,
//! directly or through a relay member, and passes the guard chain at every
//! step; the channel a responder records is the one its handshake produced;
//! a missing capability or an exhausted budget stops the step with no
//! effect and the session unchanged.

mod common;

use common::*;
use rdv_channel::choreography::relayed_rendezvous as rr;
use rdv_channel::choreography::rendezvous_exchange as rx;
use rdv_channel::choreography::{Guard, Session};
use rdv_channel::{Incoming, SecureChannel};
use rdv_context::*;

/// A fresh sealed descriptor of `m` (the publication's own effects are not
/// run: the choreography step produces them).
fn sealed(m: &mut Member, now: u64) -> SealedDescriptor {
    let snap = m.snapshot();
    let out = m
        .service
        .prepare_publish_descriptor(&snap, m.ctx(), direct_hints(), now);
    match &out.effects[1] {
        EffectCommand::JournalAppend {
            fact: RendezvousFact::Descriptor(d),
            ..
        } => d.clone(),
        other => panic!("{other:?}"),
    }
}

fn session(m: &Member) -> Session {
    Session {
        context_id: m.ctx(),
        local: m.me(),
    }
}

fn init_msg(m: &Member) -> HandshakeInit {
    HandshakeInit {
        context_id: m.ctx(),
        epoch: 0,
        route: Route::Direct,
        payload: vec![1; 96],
        mac1: [0; MAC1_LEN],
    }
}

fn remaining(m: &Member) -> u32 {
    m.snapshot().flow_budget_remaining
}

/// What `peer` has left in `m`'s ledger (answers to `peer` are charged there).
fn remaining_of(m: &Member, peer: &Member) -> u32 {
    m.fx.ledger()
        .remaining(&m.context.id(), &peer.me(), m.context.epoch())
}

/// Alice creates a context with Bob and Carol as members. Nobody has
/// published a descriptor: a member learns another's only from the session
/// under test.
fn trio() -> (Member, Member, Member) {
    let ids = [identity(1), identity(2), identity(3)];
    let mut actx = Context::create(&ids[0], &mut rng(10));
    let mut ctxs: Vec<Context> = ids[1..]
        .iter()
        .map(|m| actx.invite(&ids[0], T0 + 86_400_000).accept(m, T0).unwrap())
        .collect();
    for ctx in std::iter::once(&mut actx).chain(ctxs.iter_mut()) {
        for m in &ids {
            ctx.add_member(&m.static_key_binding()).unwrap();
        }
    }
    let [alice, bob, carol] = ids;
    let carol_ctx = ctxs.pop().unwrap();
    let bob_ctx = ctxs.pop().unwrap();
    (
        Member::new(alice, actx, 20),
        Member::new(bob, bob_ctx, 21),
        Member::new(carol, carol_ctx, 22),
    )
}

/// The offer and answer of the exchange with real sealed descriptors, each
/// side caching the other's from the message it received.
fn exchange_descriptors(
    a: &mut Member,
    b: &mut Member,
) -> (rx::Initiator<rx::InitNext>, rx::Responder<rx::AwaitInit>) {
    let i = rx::Initiator::new(session(a), b.me());
    let r = rx::Responder::new(session(b), a.me());

    let snap = a.snapshot();
    let offer = sealed(a, T0 + 5);
    let (i, sent) = i
        .send_descriptor_offer(&Guard::from_service(&a.service, &snap), offer)
        .unwrap();
    assert!(sent.outcome.is_well_ordered());
    a.fx.run(&sent.outcome, T0 + 5).unwrap();
    let r = r.recv_descriptor_offer(&sent.message).unwrap();
    let who = b.service.cache_descriptor(&sent.message.descriptor, T0 + 5);
    assert_eq!(who.unwrap(), a.me());

    let snap = b.snapshot();
    let answer = sealed(b, T0 + 6);
    let (r, sent) = r
        .send_descriptor_answer(&Guard::from_service(&b.service, &snap), answer)
        .unwrap();
    b.fx.run(&sent.outcome, T0 + 6).unwrap();
    let i = i.recv_descriptor_answer(&sent.message).unwrap();
    let who = a.service.cache_descriptor(&sent.message.descriptor, T0 + 6);
    assert_eq!(who.unwrap(), b.me());
    (i, r)
}

/// What the service would do to start a handshake from `m` to `peer`
/// (its effects are not run: the choreography step produces them), and
/// the Noise message 1 in it.
fn prepared_init(m: &mut Member, peer: AuthorityId, now: u64) -> (GuardOutcome, HandshakeInit) {
    let ctx = m.ctx();
    let psk = m.service.handshake_psk(&ctx, &peer).unwrap();
    let snap = m.snapshot();
    let out = m
        .service
        .prepare_establish_channel(&snap, ctx, peer, &psk, now, &mut m.hs.at(now))
        .unwrap();
    match &out.effects[1] {
        EffectCommand::SendHandshake { message, .. } => {
            let message = message.clone();
            (out, message)
        }
        other => panic!("{other:?}"),
    }
}

/// What the service would do to answer `init` at `m` (its effects are not
/// run), the Noise message 2 in it, and `m`'s channel of that handshake.
fn prepared_answer(
    m: &mut Member,
    init: &HandshakeInit,
    now: u64,
) -> (GuardOutcome, HandshakeComplete, SecureChannel) {
    let ctx = m.ctx();
    let who = m.hs.identify_initiator(init).unwrap();
    let psk = m.service.handshake_psk(&ctx, &who).unwrap();
    let snap = m.snapshot();
    let out =
        m.service
            .prepare_handle_handshake(&snap, ctx, who, init.clone(), &psk, &mut m.hs.at(now));
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    let complete = match &out.effects[1] {
        EffectCommand::SendHandshakeResponse { message, .. } => message.clone(),
        other => panic!("{other:?}"),
    };
    let channel = m.hs.take_responded(ctx, who).unwrap();
    (out, complete, channel)
}

/// The one `ChannelEstablished` fact in `m`'s journal.
fn established(m: &Member) -> RendezvousFact {
    let facts = m
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 100)
        .unwrap();
    assert_eq!(facts.len(), 1);
    facts[0].fact().clone()
}

/// Operations and peers of `m`'s receipts, in order.
fn receipts(m: &Member) -> Vec<(Operation, Option<AuthorityId>)> {
    m.fx.receipts()
        .iter()
        .map(|r| (r.operation, r.peer))
        .collect()
}

/// Application messages go both ways between `x` and `y`.
fn assert_talk(x: &mut SecureChannel, y: &mut SecureChannel, now: u64) {
    let wire = x.encrypt(b"ping").unwrap();
    assert_eq!(
        y.decrypt(&wire, now).unwrap(),
        vec![Incoming::Message(b"ping".to_vec())]
    );
    let wire = y.encrypt(b"pong").unwrap();
    assert_eq!(
        x.decrypt(&wire, now).unwrap(),
        vec![Incoming::Message(b"pong".to_vec())]
    );
}

#[test]
fn a_rendezvous_exchange_carries_real_descriptors_and_noise_messages_to_working_channels() {
    let (mut a, mut b, _) = trio();
    let (i, r) = exchange_descriptors(&mut a, &mut b);

    // Message 1: the service could build it only from Bob's descriptor,
    // learnt from the answer. The step yields exactly the service's effects
    // (charge, send, receipt), and the interpreter sends message 1.
    let snap = a.snapshot();
    let (service_out, init) = prepared_init(&mut a, b.me(), T0 + 7);
    assert_eq!(init.route, Route::Direct);
    let (i, sent) = i
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init.clone())
        .unwrap();
    assert_eq!(sent.outcome, service_out);
    a.fx.run(&sent.outcome, T0 + 7).unwrap();
    let wire = match a.fx.take_outbox().pop() {
        Some(Outbound::Handshake { peer, message }) if peer == b.me() => message,
        other => panic!("{other:?}"),
    };
    assert_eq!(wire, init);
    let r = r.recv_handshake_init(&sent.message).unwrap();

    // Message 2 and the channel: the fact names the responder's channel.
    let snap = b.snapshot();
    let (service_out, complete, mut cb) = prepared_answer(&mut b, &wire, T0 + 8);
    let (_r, sent) = r
        .send_handshake_complete(&Guard::from_service(&b.service, &snap), complete, &cb)
        .unwrap();
    assert_eq!(sent.outcome, service_out);
    assert_eq!(sent.message.channel_id, cb.id());
    b.fx.run(&sent.outcome, T0 + 8).unwrap();
    let wire = match b.fx.take_outbox().pop() {
        Some(Outbound::HandshakeResponse { peer, message }) if peer == a.me() => message,
        other => panic!("{other:?}"),
    };
    let _done: rx::Initiator<rx::Done> = i.recv_handshake_complete(&sent.message).unwrap();
    let mut ca = a.hs.finish_initiator(b.me(), &wire, T0 + 9).unwrap();

    // One channel, the one recorded, reached by Alice through sync.
    assert_eq!(ca.id(), cb.id());
    // Signed by Bob, who recorded it (Ed25519 signatures are deterministic).
    let fact = b
        .service
        .channel_established(a.ctx(), a.me(), b.me(), ca.id(), 0)
        .unwrap();
    assert_eq!(established(&b), fact);
    a.sync_from(&b, T0 + 10);
    assert_eq!(established(&a), fact);
    assert_talk(&mut ca, &mut cb, T0 + 10);

    // Every step was charged and receipted: publish (1) and connect (2) on
    // each side; Bob's answer is charged to Alice's budget in Bob's ledger.
    assert_eq!(remaining(&a), BUDGET - 3);
    assert_eq!(remaining(&b), BUDGET - 1);
    assert_eq!(remaining_of(&b, &a), BUDGET - 2);
    assert_eq!(
        receipts(&a),
        [
            (Operation::PublishDescriptor, None),
            (Operation::ConnectDirect, Some(b.me()))
        ]
    );
    assert_eq!(
        receipts(&b),
        [
            (Operation::PublishDescriptor, None),
            (Operation::AcceptDirect, Some(a.me()))
        ]
    );
}

#[test]
fn handshake_complete_records_only_the_responders_channel_of_this_pair_and_epoch() {
    let (mut a, mut b, mut c) = trio();
    let (i, r) = exchange_descriptors(&mut a, &mut b);
    let snap = a.snapshot();
    let (_, init) = prepared_init(&mut a, b.me(), T0 + 7);
    let (_i, sent) = i
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init.clone())
        .unwrap();
    let r = r.recv_handshake_init(&sent.message).unwrap();
    let (_, complete, cb) = prepared_answer(&mut b, &init, T0 + 8);

    // Real channels that are not this handshake's responder side: Bob's
    // with Carol, and Bob's as initiator with Alice.
    c.sync_from(&b, T0 + 9);
    let from_carol = c.initiate(b.me(), T0 + 9).unwrap();
    let (_, _, bob_carol) = prepared_answer(&mut b, &from_carol, T0 + 9);
    let to_alice = b.initiate(a.me(), T0 + 9).unwrap();
    let answer = a.answer(&to_alice, T0 + 9).unwrap();
    let bob_alice = b.hs.finish_initiator(a.me(), &answer, T0 + 9).unwrap();
    assert!(bob_carol.is_active() && bob_alice.is_active());
    let unfinished = SecureChannel::establishing(b.ctx(), b.me(), a.me(), 0, false);
    let mut next_epoch = complete.clone();
    next_epoch.epoch = 1;
    let mut other_context = complete.clone();
    other_context.context_id = ContextId::from_bytes([9; 32]);

    let before = (
        remaining(&b),
        b.fx.receipts().len(),
        b.channels_established(),
    );
    let snap = b.snapshot();
    let guard = Guard::from_service(&b.service, &snap);
    let mut r = r;
    for (message, channel) in [
        (&complete, &unfinished),
        (&complete, &bob_carol),
        (&complete, &bob_alice),
        (&next_epoch, &cb),
        (&other_context, &cb),
    ] {
        let denied = r
            .send_handshake_complete(&guard, message.clone(), channel)
            .unwrap_err();
        assert!(
            matches!(denied.reason, DenyReason::InvalidRequest(_)),
            "{:?}",
            denied.reason
        );
        r = denied.session;
    }
    assert_eq!(
        (
            remaining(&b),
            b.fx.receipts().len(),
            b.channels_established()
        ),
        before
    );

    // The session is unchanged and records the handshake's own channel.
    let (_r, sent) = r.send_handshake_complete(&guard, complete, &cb).unwrap();
    b.fx.run(&sent.outcome, T0 + 10).unwrap();
    assert_eq!(b.channels_established(), before.2 + 1);
    assert_eq!(sent.message.channel_id, cb.id());
}

#[test]
fn a_missing_capability_or_an_exhausted_budget_stops_the_step_with_no_effect() {
    let (mut a, mut b) = pair();
    let i = rx::Initiator::new(session(&a), b.me());
    let snap = a.snapshot();
    let offer = sealed(&mut a, T0 + 5);
    let (i, _) = i
        .send_descriptor_offer(&Guard::from_service(&a.service, &snap), offer)
        .unwrap();
    let answer = rx::DescriptorAnswer {
        descriptor: sealed(&mut b, T0 + 6),
    };
    let i = i.recv_descriptor_answer(&answer).unwrap();
    let before = (remaining(&a), a.fx.receipts().len());

    // No rendezvous:connect.
    let mut snap = a.snapshot();
    snap.capabilities = Capabilities::all().without(Capability::RendezvousConnect);
    let denied = i
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init_msg(&a))
        .unwrap_err();
    assert_eq!(
        denied.reason,
        DenyReason::MissingCapability(Capability::RendezvousConnect)
    );
    // Budget of 1 for a step costing 2.
    let mut snap = a.snapshot();
    snap.flow_budget_remaining = 1;
    let denied = denied
        .session
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init_msg(&a))
        .unwrap_err();
    assert_eq!(
        denied.reason,
        DenyReason::BudgetExhausted {
            cost: 2,
            remaining: 1
        }
    );
    // Nothing ran; the session is still at the same step and goes on once
    // allowed.
    assert_eq!((remaining(&a), a.fx.receipts().len()), before);
    let snap = a.snapshot();
    let (_i, sent) = denied
        .session
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init_msg(&a))
        .unwrap();
    assert!(sent.outcome.decision.is_allowed());
}

#[test]
fn a_relayed_rendezvous_runs_in_order_and_a_relay_without_relay_forward_is_stopped() {
    let (a, b) = pair();
    let ctx = a.ctx();
    let relay_id = identity(5).authority();
    let relay_snap = |caps: Capabilities| GuardSnapshot {
        authority_id: relay_id,
        context_id: ctx,
        flow_budget_remaining: 10,
        capabilities: caps,
        epoch: 0,
    };
    let guard = |s| Guard {
        snapshot: s,
        current_epoch: Some(0),
        signer: None,
    };
    let env = |to: AuthorityId, p: u8| rr::RelayEnvelope {
        context_id: ctx,
        to,
        payload: vec![p; 32],
    };

    let i = rr::Initiator::new(session(&a));
    let relay = rr::Relay::new(Session {
        context_id: ctx,
        local: relay_id,
    });
    let r = rr::Responder::new(session(&b));

    let snap = a.snapshot();
    let (i, req) = i.send_relay_request(&guard(&snap), env(b.me(), 1)).unwrap();
    assert_eq!(
        req.outcome.effects[0],
        EffectCommand::ChargeFlowBudget {
            context_id: ctx,
            authority_id: a.me(),
            epoch: 0,
            cost: 3
        }
    );
    let relay = relay.recv_relay_request(&req.message).unwrap();

    // A relay without relay:forward is stopped and keeps the envelope.
    let no_cap = relay_snap(
        Capability::ALL
            .into_iter()
            .collect::<Capabilities>()
            .without(Capability::RelayForward),
    );
    let denied = relay.send_relay_forward(&guard(&no_cap)).unwrap_err();
    assert_eq!(
        denied.reason,
        DenyReason::MissingCapability(Capability::RelayForward)
    );
    let ok = relay_snap(Capabilities::NONE.with(Capability::RelayForward));
    let (relay, fwd) = denied.session.send_relay_forward(&guard(&ok)).unwrap();
    assert_eq!(fwd.message.envelope, req.message.envelope);

    let r = r.recv_relay_forward(&fwd.message).unwrap();
    let snap = b.snapshot();
    let (_r, resp) = r
        .send_relay_response(&guard(&snap), env(a.me(), 2))
        .unwrap();
    let relay = relay.recv_relay_response(&resp.message).unwrap();
    let (_relay, done) = relay.send_relay_complete(&guard(&ok)).unwrap();
    assert_eq!(done.message.envelope.payload, vec![2; 32]);
    let _i: rr::Initiator<rr::Done> = i.recv_relay_complete(&done.message).unwrap();
}

#[test]
fn a_relayed_rendezvous_carries_a_real_handshake_through_a_relay_member_that_pays_for_forwarding() {
    let (mut a, mut b, mut c) = trio();
    let ctx = a.ctx();
    // Bob is reachable only through Carol's relay.
    let snap = b.snapshot();
    let hints = vec![TransportHint::WebSocketRelay {
        relay_authority: c.me(),
        addr: "203.0.113.40:4002".into(),
    }];
    let out = b
        .service
        .prepare_publish_descriptor(&snap, ctx, hints, T0 + 1);
    b.fx.run(&out, T0 + 1).unwrap();
    a.sync_from(&b, T0 + 2);

    let i = rr::Initiator::new(session(&a));
    let relay = rr::Relay::new(session(&c));
    let r = rr::Responder::new(session(&b));

    // Message 1 (routed through the relay) in the request.
    let snap = a.snapshot();
    let (service_out, init) = prepared_init(&mut a, b.me(), T0 + 3);
    assert_eq!(init.route, Route::Relay);
    let envelope = rr::RelayEnvelope {
        context_id: ctx,
        to: b.me(),
        payload: init.to_bytes(),
    };
    let (i, req) = i
        .send_relay_request(&Guard::from_service(&a.service, &snap), envelope)
        .unwrap();
    // The step charges and receipts what the service would (rendezvous:relay).
    assert_eq!(req.outcome.effects[0], service_out.effects[0]);
    assert_eq!(req.outcome.effects.last(), service_out.effects.last());
    a.fx.run(&req.outcome, T0 + 3).unwrap();

    // Carol forwards bytes she cannot open.
    let relay = relay.recv_relay_request(&req.message).unwrap();
    let carried = HandshakeInit::from_bytes(&req.message.envelope.payload).unwrap();
    assert!(c.hs.identify_initiator(&carried).is_err());
    let snap = c.snapshot();
    let (relay, fwd) = relay
        .send_relay_forward(&Guard::from_service(&c.service, &snap))
        .unwrap();
    c.fx.run(&fwd.outcome, T0 + 4).unwrap();

    // Bob answers message 1 as it arrived and replies through Carol.
    let r = r.recv_relay_forward(&fwd.message).unwrap();
    let init = HandshakeInit::from_bytes(&fwd.message.envelope.payload).unwrap();
    let snap = b.snapshot();
    let (service_out, complete, mut cb) = prepared_answer(&mut b, &init, T0 + 5);
    let envelope = rr::RelayEnvelope {
        context_id: ctx,
        to: a.me(),
        payload: complete.to_bytes(),
    };
    let (_r, resp) = r
        .send_relay_response(&Guard::from_service(&b.service, &snap), envelope)
        .unwrap();
    assert_eq!(resp.outcome.effects[0], service_out.effects[0]);
    assert_eq!(resp.outcome.effects.last(), service_out.effects.last());
    b.fx.run(&resp.outcome, T0 + 5).unwrap();
    // The relayed protocol has no journal step (seed §5.2): Bob records the
    // channel the service computed from the handshake, its charge paid by
    // RelayResponse.
    let record = service_out
        .effects
        .iter()
        .find(|e| matches!(e, EffectCommand::JournalAppend { .. }))
        .unwrap();
    b.fx.execute(record, T0 + 5).unwrap();

    let relay = relay.recv_relay_response(&resp.message).unwrap();
    let snap = c.snapshot();
    let (_relay, done) = relay
        .send_relay_complete(&Guard::from_service(&c.service, &snap))
        .unwrap();
    c.fx.run(&done.outcome, T0 + 6).unwrap();
    let _i: rr::Initiator<rr::Done> = i.recv_relay_complete(&done.message).unwrap();
    let complete = HandshakeComplete::from_bytes(&done.message.envelope.payload).unwrap();
    let mut ca = a.hs.finish_initiator(b.me(), &complete, T0 + 7).unwrap();

    assert_eq!(ca.id(), cb.id());
    // Signed by Bob, who recorded it (Ed25519 signatures are deterministic).
    let fact = b
        .service
        .channel_established(a.ctx(), a.me(), b.me(), ca.id(), 0)
        .unwrap();
    assert_eq!(established(&b), fact);
    a.sync_from(&b, T0 + 8);
    assert_eq!(established(&a), fact);
    assert_talk(&mut ca, &mut cb, T0 + 8);

    // Charges: relay 3 for each end (Bob's answer to Alice's budget in his
    // ledger), relay:forward 1 per hop on Carol.
    assert_eq!(remaining(&a), BUDGET - 3);
    assert_eq!(remaining(&b), BUDGET - 1);
    assert_eq!(remaining_of(&b, &a), BUDGET - 3);
    assert_eq!(remaining(&c), BUDGET - 2);
    assert_eq!(receipts(&a), [(Operation::ConnectRelay, Some(b.me()))]);
    assert_eq!(
        receipts(&b),
        [
            (Operation::PublishDescriptor, None),
            (Operation::AcceptRelay, Some(a.me()))
        ]
    );
    assert_eq!(
        receipts(&c),
        [
            (Operation::RelayForward, Some(b.me())),
            (Operation::RelayForward, Some(a.me()))
        ]
    );
}
