#![allow(missing_docs, clippy::unwrap_used)]
//! The typed choreographies at run time: a full exchange passes the guard
//! chain and its effects run; a missing capability or an exhausted budget
//! stops the step with no effect and the session unchanged.

mod common;

use common::*;
use rdv_channel::choreography::relayed_rendezvous as rr;
use rdv_channel::choreography::rendezvous_exchange as rx;
use rdv_channel::choreography::{Guard, Session};
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
    }
}

fn remaining(m: &Member) -> u32 {
    m.snapshot().flow_budget_remaining
}

#[test]
fn a_full_rendezvous_exchange_passes_the_guard_chain_and_records_the_channel() {
    let (mut a, mut b) = pair();
    let (a_budget, b_budget) = (remaining(&a), remaining(&b));
    let i = rx::Initiator::new(session(&a), b.me());
    let r = rx::Responder::new(session(&b), a.me());

    let snap = a.snapshot();
    let offer = sealed(&mut a, T0 + 5);
    let (i, sent) = i
        .send_descriptor_offer(&Guard::from_service(&a.service, &snap), offer)
        .unwrap();
    assert!(sent.outcome.is_well_ordered());
    a.fx.run(&sent.outcome, T0 + 5).unwrap();
    let r = r.recv_descriptor_offer(&sent.message).unwrap();

    let snap = b.snapshot();
    let answer = sealed(&mut b, T0 + 6);
    let (r, sent) = r
        .send_descriptor_answer(&Guard::from_service(&b.service, &snap), answer)
        .unwrap();
    b.fx.run(&sent.outcome, T0 + 6).unwrap();
    let i = i.recv_descriptor_answer(&sent.message).unwrap();

    let snap = a.snapshot();
    let (i, sent) = i
        .send_handshake_init(&Guard::from_service(&a.service, &snap), init_msg(&a))
        .unwrap();
    assert!(matches!(
        sent.outcome.effects[1],
        EffectCommand::SendHandshake { .. }
    ));
    a.fx.run(&sent.outcome, T0 + 7).unwrap();
    let r = r.recv_handshake_init(&sent.message).unwrap();

    let snap = b.snapshot();
    let complete = HandshakeComplete {
        context_id: b.ctx(),
        epoch: 0,
        payload: vec![2; 48],
    };
    let (_r, sent) = r
        .send_handshake_complete(&Guard::from_service(&b.service, &snap), complete, [7; 32])
        .unwrap();
    assert!(sent.outcome.is_well_ordered());
    b.fx.run(&sent.outcome, T0 + 8).unwrap();
    let _done: rx::Initiator<rx::Done> = i.recv_handshake_complete(&sent.message).unwrap();

    // Each side paid publish (1) + connect (2), and the responder recorded
    // the channel.
    assert_eq!(remaining(&a), a_budget - 3);
    assert_eq!(remaining(&b), b_budget - 3);
    assert_eq!(b.channels_established(), 1);
    let ops: Vec<_> = b.fx.receipts().iter().map(|r| r.operation).collect();
    assert_eq!(ops.last(), Some(&Operation::AcceptDirect));
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
