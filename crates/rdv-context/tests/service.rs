#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_context::receipt::{ReceiptVerifier, verify_chain};
use rdv_context::*;

fn sealed_of(out: &GuardOutcome) -> SealedDescriptor {
    out.effects
        .iter()
        .find_map(|e| match e {
            EffectCommand::JournalAppend {
                fact: RendezvousFact::Descriptor(d),
                ..
            } => Some(d.clone()),
            _ => None,
        })
        .unwrap()
}

fn assert_denied_without_effects(out: &GuardOutcome) {
    assert!(!out.decision.is_allowed(), "{:?}", out);
    assert!(out.effects.is_empty(), "{:?}", out.effects);
    assert_eq!(out.sends().count(), 0);
    assert!(out.is_well_ordered());
}

#[test]
fn seed_flow_publish_sync_cache_establish_handle_end_to_end() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();

    // 1. Bob publishes: charge 1, journal append, receipt — in that order.
    assert!(bob.service.needs_refresh(ctx, T0, 60_000));
    let out = bob.publish(direct_hints(), T0);
    assert!(matches!(
        out.effects.as_slice(),
        [
            EffectCommand::ChargeFlowBudget { cost: 1, .. },
            EffectCommand::JournalAppend { .. },
            EffectCommand::RecordReceipt { .. }
        ]
    ));
    assert!(out.is_well_ordered());
    assert_eq!(bob.fx.ledger().remaining(&ctx, &bob.me(), 0), BUDGET - 1);
    assert_eq!(bob.journal().len(), 1);
    assert!(!bob.service.needs_refresh(ctx, T0, 60_000));
    // Refresh is due within the window before expiry (TTL 1 h).
    assert!(
        bob.service
            .needs_refresh(ctx, T0 + 3_600_000 - 60_000, 60_000)
    );

    // 2. Sync: Alice's journal receives the fact; her service opens and caches it.
    let applied = alice.sync_from(&bob, T0 + 10);
    assert_eq!(applied, vec![Ok(FactApplied::DescriptorCached(bob.me()))]);
    assert_eq!(alice.journal().len(), 1);
    let cached = alice.service.get_cached_descriptor(ctx, bob.me()).unwrap();
    assert_eq!(cached.transport_hints, direct_hints());
    assert_eq!(cached.static_key, bob.identity.static_public());

    // 3. The adapter sees a reachable peer.
    let adapter = RendezvousAdapter::new(&alice.service);
    let info = adapter.get_peer_info(ctx, bob.me(), T0 + 10).unwrap();
    assert!(info.has_direct_transport());
    assert!(adapter.peers_needing_refresh(ctx, T0 + 10).is_empty());
    assert_eq!(
        adapter.peers_needing_refresh(ctx, T0 + 3_600_000 - 1000),
        vec![bob.me()]
    );
    assert!(
        adapter
            .get_peer_info(ctx, bob.me(), T0 + 3_600_000)
            .is_none()
    );

    // 4. Alice starts a handshake: charge 2 before the send.
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();
    let snap = alice.snapshot();
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0 + 20, &mut alice.handshaker)
        .unwrap();
    assert!(matches!(
        out.effects.as_slice(),
        [
            EffectCommand::ChargeFlowBudget { cost: 2, .. },
            EffectCommand::SendHandshake { .. },
            EffectCommand::RecordReceipt { .. }
        ]
    ));
    alice.fx.run(&out, T0 + 20).unwrap();
    let outbox = alice.fx.take_outbox();
    let [Outbound::Handshake { peer, message }] = <[Outbound; 1]>::try_from(outbox).unwrap() else {
        panic!("one handshake expected")
    };
    assert_eq!(peer, bob.me());
    assert_eq!(message.route, Route::Direct);

    // 5. Bob answers over the wire bytes: charge 2, send, ChannelEstablished.
    let message = HandshakeInit::from_bytes(&message.to_bytes()).unwrap();
    let psk_b = bob.service.handshake_psk(&ctx, &alice.me()).unwrap();
    assert_eq!(*psk, *psk_b, "the pair's PSK is order-independent");
    let snap = bob.snapshot();
    let out = bob.service.prepare_handle_handshake(
        &snap,
        ctx,
        alice.me(),
        message,
        &psk_b,
        &mut bob.handshaker,
    );
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    assert!(out.is_well_ordered());
    assert!(matches!(
        out.effects.as_slice(),
        [
            EffectCommand::ChargeFlowBudget { cost: 2, .. },
            EffectCommand::SendHandshakeResponse { .. },
            EffectCommand::JournalAppend {
                fact: RendezvousFact::ChannelEstablished { .. },
                ..
            },
            EffectCommand::RecordReceipt { .. }
        ]
    ));
    bob.fx.run(&out, T0 + 30).unwrap();
    assert_eq!(bob.fx.take_outbox().len(), 1);
    let channels = bob
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 10)
        .unwrap();
    assert_eq!(channels.len(), 1);
    let RendezvousFact::ChannelEstablished(sealed) = channels[0].fact() else {
        panic!("{:?}", channels[0].fact());
    };
    let record = sealed.open(bob.context.keys()).unwrap();
    assert_eq!(
        (
            record.initiator,
            record.responder,
            record.epoch,
            record.recorder
        ),
        (alice.me(), bob.me(), 0, bob.me())
    );
    // Bob paid 1 for his publication; the handshake Alice caused is charged
    // to Alice's budget in Bob's ledger.
    assert_eq!(bob.fx.ledger().remaining(&ctx, &bob.me(), 0), BUDGET - 1);
    assert_eq!(bob.fx.ledger().remaining(&ctx, &alice.me(), 0), BUDGET - 2);

    // 6. Receipts: Bob's two form a valid signed chain.
    assert_eq!(bob.fx.receipts().len(), 2);
    verify_chain(bob.fx.receipts()).unwrap();
    assert_eq!(bob.fx.receipts()[1].operation, Operation::AcceptDirect);
    assert_eq!(bob.fx.receipts()[1].peer, Some(alice.me()));

    // 7. The journal names nobody readably (issue 13, item 8): neither
    // end appears in any fact's bytes, the descriptor and the channel
    // record included.
    let facts = bob.journal().entries(None, 10).unwrap();
    assert_eq!(facts.len(), 2);
    for e in &facts {
        let bytes = e.to_bytes();
        for who in [alice.me(), bob.me()] {
            assert!(!bytes.windows(32).any(|w| w == who.as_bytes()));
        }
    }
}

#[test]
fn relay_only_peer_is_reached_through_the_relay_at_relay_cost() {
    let (mut alice, mut bob, carol) = trio();
    let ctx = alice.ctx();
    bob.publish(relay_hints(carol.me()), T0);
    alice.sync_from(&bob, T0);
    let info = RendezvousAdapter::new(&alice.service)
        .get_peer_info(ctx, bob.me(), T0)
        .unwrap();
    assert!(!info.has_direct_transport());
    assert_eq!(info.relays().collect::<Vec<_>>(), vec![&carol.me()]);
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();

    // connect without rendezvous:relay is denied...
    let caps = Capabilities::all().without(Capability::RendezvousRelay);
    let snap = alice.snapshot_with(caps);
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
        .unwrap();
    assert_eq!(
        out.decision,
        Decision::Denied(DenyReason::MissingCapability(Capability::RendezvousRelay))
    );
    assert_denied_without_effects(&out);
    assert_eq!(
        alice.handshaker.initiated, 0,
        "no crypto before the guard allows"
    );

    // ...and with it costs 3.
    let snap = alice.snapshot();
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
        .unwrap();
    assert!(matches!(
        out.effects[0],
        EffectCommand::ChargeFlowBudget { cost: 3, .. }
    ));
    let EffectCommand::SendHandshake { message, .. } = &out.effects[1] else {
        panic!()
    };
    assert_eq!(message.route, Route::Relay);
    let snap = bob.snapshot();
    let out = bob.service.prepare_handle_handshake(
        &snap,
        ctx,
        alice.me(),
        message.clone(),
        &bob.service.handshake_psk(&ctx, &alice.me()).unwrap(),
        &mut bob.handshaker,
    );
    assert!(matches!(
        out.effects[0],
        EffectCommand::ChargeFlowBudget { cost: 3, .. }
    ));
}

#[test]
fn publish_denials_produce_no_effect() {
    let (_, mut bob, _) = trio();
    let ctx = bob.ctx();
    let me = bob.me();
    let cases: Vec<(GuardSnapshot, DenyReason)> = vec![
        (
            bob.snapshot_with(Capabilities::all().without(Capability::RendezvousPublish)),
            DenyReason::MissingCapability(Capability::RendezvousPublish),
        ),
        (
            GuardSnapshot {
                flow_budget_remaining: 0,
                ..bob.snapshot()
            },
            DenyReason::BudgetExhausted {
                cost: 1,
                remaining: 0,
            },
        ),
        (
            GuardSnapshot {
                context_id: ContextId::from_bytes([0xaa; 32]),
                ..bob.snapshot()
            },
            DenyReason::WrongContext,
        ),
        (
            GuardSnapshot {
                authority_id: identity(9).authority(),
                ..bob.snapshot()
            },
            DenyReason::WrongAuthority,
        ),
        (
            GuardSnapshot {
                epoch: 7,
                ..bob.snapshot()
            },
            DenyReason::EpochMismatch {
                snapshot: 7,
                current: 0,
            },
        ),
    ];
    for (snap, reason) in cases {
        let out = bob
            .service
            .prepare_publish_descriptor(&snap, ctx, direct_hints(), T0);
        assert_eq!(out.decision, Decision::Denied(reason));
        assert_denied_without_effects(&out);
        assert_eq!(bob.fx.run(&out, T0).unwrap(), 0);
    }
    assert!(bob.service.own_descriptor(ctx).is_none());
    assert_eq!(bob.journal().len(), 0);
    assert_eq!(bob.fx.ledger().remaining(&ctx, &me, 0), BUDGET);
    // Unknown context.
    let snap = GuardSnapshot {
        context_id: ContextId::from_bytes([0xaa; 32]),
        ..bob.snapshot()
    };
    let out = bob.service.prepare_publish_descriptor(
        &snap,
        ContextId::from_bytes([0xaa; 32]),
        direct_hints(),
        T0,
    );
    assert_eq!(out.decision, Decision::Denied(DenyReason::UnknownContext));
    // Too many hints.
    let snap = bob.snapshot();
    let out = bob.service.prepare_publish_descriptor(
        &snap,
        ctx,
        vec![TransportHint::TcpDirect { addr: "x".into() }; MAX_TRANSPORT_HINTS + 1],
        T0,
    );
    assert!(matches!(
        out.decision,
        Decision::Denied(DenyReason::InvalidRequest(_))
    ));
    assert_denied_without_effects(&out);
    let out = bob.service.prepare_publish_descriptor(
        &snap,
        ctx,
        vec![TransportHint::TcpDirect {
            addr: "x".repeat(MAX_ADDR_LEN + 1),
        }],
        T0,
    );
    assert_denied_without_effects(&out);
}

#[test]
fn budget_runs_out_and_the_next_publish_is_denied() {
    let (_, mut bob, _) = trio();
    let ctx = bob.ctx();
    for i in 0..BUDGET {
        bob.publish(direct_hints(), T0 + i as u64);
    }
    let out =
        bob.service
            .prepare_publish_descriptor(&bob.snapshot(), ctx, direct_hints(), T0 + 1000);
    assert_eq!(
        out.decision,
        Decision::Denied(DenyReason::BudgetExhausted {
            cost: 1,
            remaining: 0
        })
    );
    assert_denied_without_effects(&out);
    assert_eq!(bob.journal().len(), BUDGET as usize);
}

#[test]
fn budget_of_a_past_epoch_cannot_be_spent() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    let old_snapshot = bob.snapshot();
    // Alice advances (removing nobody); Bob follows.
    let rekey = alice
        .context
        .advance_epoch(&alice.identity, &[], &mut rng(5))
        .unwrap();
    bob.context.apply_rekey(&bob.identity, &rekey).unwrap();
    bob.rekeyed();
    // The service refuses the old snapshot...
    let out = bob
        .service
        .prepare_publish_descriptor(&old_snapshot, ctx, direct_hints(), T0);
    assert_eq!(
        out.decision,
        Decision::Denied(DenyReason::EpochMismatch {
            snapshot: 0,
            current: 1
        })
    );
    assert_denied_without_effects(&out);
    // ...and the ledger refuses a charge to the past epoch even if an
    // outcome carried one.
    assert_eq!(
        {
            let me = bob.me();
            bob.fx.ledger_mut().charge(ctx, me, 0, 1)
        },
        Err(BudgetError::PastEpoch {
            epoch: 0,
            current: 1
        })
    );
    assert_eq!(bob.fx.ledger().remaining(&ctx, &bob.me(), 0), 0);
    assert_eq!(bob.fx.ledger().remaining(&ctx, &bob.me(), 1), BUDGET);
    // The new epoch's snapshot works.
    bob.publish(direct_hints(), T0);
}

#[test]
fn interpreter_stops_at_a_failed_charge_before_any_send() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    bob.publish(direct_hints(), T0);
    alice.sync_from(&bob, T0);
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();
    // A stale snapshot says there is budget; the ledger knows better.
    let snap = alice.snapshot();
    let me = alice.me();
    for _ in 0..BUDGET / 2 {
        alice.fx.ledger_mut().charge(ctx, me, 0, 2).unwrap();
    }
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
        .unwrap();
    assert!(out.decision.is_allowed());
    assert!(matches!(
        alice.fx.run(&out, T0),
        Err(InterpretError::Budget(BudgetError::Exhausted { .. }))
    ));
    assert!(alice.fx.take_outbox().is_empty());
    assert!(alice.fx.receipts().is_empty());
}

#[test]
fn interpreter_refuses_an_outcome_that_sends_before_charging() {
    let (mut alice, _, _) = trio();
    let ctx = alice.ctx();
    let out = GuardOutcome {
        decision: Decision::Allowed,
        effects: vec![
            EffectCommand::SendHandshake {
                peer: identity(2).authority(),
                message: HandshakeInit {
                    context_id: ctx,
                    epoch: 0,
                    route: Route::Direct,
                    payload: vec![1],
                    mac1: [0; MAC1_LEN],
                },
            },
            EffectCommand::ChargeFlowBudget {
                context_id: ctx,
                authority_id: alice.me(),
                epoch: 0,
                cost: 2,
            },
        ],
    };
    assert!(!out.is_well_ordered());
    assert_eq!(alice.fx.run(&out, T0), Err(InterpretError::Unordered));
    assert!(alice.fx.take_outbox().is_empty());
    assert_eq!(alice.fx.ledger().remaining(&ctx, &alice.me(), 0), BUDGET);
}

#[test]
fn establish_refusals() {
    let (mut alice, mut bob, carol) = trio();
    let ctx = alice.ctx();
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();
    let snap = alice.snapshot();
    // No descriptor yet.
    assert_eq!(
        alice
            .service
            .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
            .unwrap_err(),
        ServiceError::NoDescriptor(bob.me())
    );
    bob.publish(direct_hints(), T0);
    alice.sync_from(&bob, T0);
    // Expired by now.
    assert_eq!(
        alice
            .service
            .prepare_establish_channel(
                &snap,
                ctx,
                bob.me(),
                &psk,
                T0 + 3_600_000,
                &mut alice.handshaker
            )
            .unwrap_err(),
        ServiceError::NoDescriptor(bob.me())
    );
    // The PSK of another pair.
    let wrong = alice.service.handshake_psk(&ctx, &carol.me()).unwrap();
    assert_eq!(
        alice
            .service
            .prepare_establish_channel(&snap, ctx, bob.me(), &wrong, T0, &mut alice.handshaker)
            .unwrap_err(),
        ServiceError::PskMismatch
    );
    // Oneself.
    assert_eq!(
        alice
            .service
            .prepare_establish_channel(&snap, ctx, alice.me(), &psk, T0, &mut alice.handshaker)
            .unwrap_err(),
        ServiceError::SelfConnect
    );
    // Missing capability / exhausted budget: denied, no effect, no crypto.
    for snap in [
        alice.snapshot_with(Capabilities::all().without(Capability::RendezvousConnect)),
        GuardSnapshot {
            flow_budget_remaining: 1,
            ..alice.snapshot()
        },
    ] {
        let out = alice
            .service
            .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
            .unwrap();
        assert_denied_without_effects(&out);
    }
    assert_eq!(alice.handshaker.initiated, 0);
}

#[test]
fn handshake_refusals_send_nothing() {
    let (mut alice, mut bob, carol) = trio();
    let ctx = alice.ctx();
    bob.publish(direct_hints(), T0);
    alice.sync_from(&bob, T0);
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();
    let snap = alice.snapshot();
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, T0, &mut alice.handshaker)
        .unwrap();
    let EffectCommand::SendHandshake { message, .. } = out.effects[1].clone() else {
        panic!()
    };
    let psk_b = bob.service.handshake_psk(&ctx, &alice.me()).unwrap();
    let psk_bc = bob.service.handshake_psk(&ctx, &carol.me()).unwrap();
    let good = bob.snapshot();
    let no_connect = bob.snapshot_with(Capabilities::all().without(Capability::RendezvousConnect));
    let mut handle =
        |snap: GuardSnapshot, initiator: AuthorityId, msg: HandshakeInit, psk: &[u8; 32]| {
            let out = bob.service.prepare_handle_handshake(
                &snap,
                ctx,
                initiator,
                msg,
                psk,
                &mut bob.handshaker,
            );
            assert_denied_without_effects(&out);
            out
        };
    // Missing capability.
    handle(no_connect, alice.me(), message.clone(), &psk_b);
    // Exhausted budget.
    handle(
        GuardSnapshot {
            flow_budget_remaining: 1,
            ..good.clone()
        },
        alice.me(),
        message.clone(),
        &psk_b,
    );
    // Message for another epoch.
    handle(
        good.clone(),
        alice.me(),
        HandshakeInit {
            epoch: 5,
            ..message.clone()
        },
        &psk_b,
    );
    // Message for another context.
    handle(
        good.clone(),
        alice.me(),
        HandshakeInit {
            context_id: ContextId::from_bytes([1; 32]),
            ..message.clone()
        },
        &psk_b,
    );
    // Claimed to come from Carol: the pair's PSK differs, rejected.
    let out = handle(good.clone(), carol.me(), message.clone(), &psk_bc);
    assert!(matches!(
        out.decision,
        Decision::Denied(DenyReason::HandshakeRejected(_))
    ));
    // Garbled message 1.
    handle(
        good.clone(),
        alice.me(),
        HandshakeInit {
            payload: vec![0; 32],
            ..message.clone()
        },
        &psk_b,
    );
    // A PSK that is not the pair's.
    handle(good, alice.me(), message, &[0; 32]);
    assert_eq!(bob.handshaker.responded, 0);
}

#[test]
fn cached_descriptor_refusals_change_nothing() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    let first = sealed_of(&bob.publish(direct_hints(), T0));
    assert_eq!(alice.service.cache_descriptor(&first, T0 + 1), Ok(bob.me()));
    // Replay of the same descriptor.
    assert_eq!(
        alice.service.cache_descriptor(&first, T0 + 2),
        Err(DescriptorError::Replayed)
    );
    // A newer descriptor replaces it; the older one, if new to us, is superseded.
    let second = sealed_of(&bob.publish(
        vec![TransportHint::TcpDirect {
            addr: "198.51.100.1:1".into(),
        }],
        T0 + 100,
    ));
    let dave = identity(4);
    let dave_ctx = Context::from_parts(&dave, ctx, 0, alice.context.secret().clone());
    let mut carol_view = Member::new(dave, dave_ctx, 40);
    carol_view
        .service
        .cache_descriptor(&second, T0 + 101)
        .unwrap();
    assert_eq!(
        carol_view.service.cache_descriptor(&first, T0 + 102),
        Err(DescriptorError::Superseded)
    );
    assert_eq!(
        alice.service.cache_descriptor(&second, T0 + 101),
        Ok(bob.me())
    );
    let cached = alice
        .service
        .get_cached_descriptor(ctx, bob.me())
        .unwrap()
        .clone();
    assert_eq!(cached.valid_from, T0 + 100);

    // Expired / not yet valid.
    let third = sealed_of(&bob.publish(direct_hints(), T0 + 200));
    assert!(matches!(
        alice.service.cache_descriptor(&third, T0 + 200 + 3_600_000),
        Err(DescriptorError::Expired { .. })
    ));
    assert!(matches!(
        alice.service.cache_descriptor(&third, T0 + 200 - 31_000),
        Err(DescriptorError::NotYetValid { .. })
    ));
    // Within the allowed skew it is fine.
    assert_eq!(
        alice.service.cache_descriptor(&third, T0 + 200 - 29_000),
        Ok(bob.me())
    );
    assert_eq!(
        alice
            .service
            .get_cached_descriptor(ctx, bob.me())
            .unwrap()
            .valid_from,
        T0 + 200
    );
    // Another context's descriptor.
    let outsider = identity(8);
    let mut other = Member::new(
        outsider.clone(),
        Context::create(&outsider, &mut rng(60)),
        61,
    );
    let foreign = sealed_of(&other.publish(direct_hints(), T0));
    assert!(matches!(
        alice.service.cache_descriptor(&foreign, T0),
        Err(DescriptorError::UnknownContext(_))
    ));
    assert!(matches!(
        alice
            .service
            .apply_fact(ctx, &RendezvousFact::Descriptor(foreign.clone()), T0),
        Err(DescriptorError::WrongContext { .. })
    ));
    let foreign_keys = EpochKeys::derive(ctx, 0, other.context.secret());
    assert!(matches!(
        foreign.open(&foreign_keys, T0, &DescriptorPolicy::default()),
        Err(DescriptorError::WrongContext { .. })
    ));
    // Same context id, another secret: the wrong key.
    let mut imposter = Member::new(
        outsider.clone(),
        Context::from_parts(&outsider, ctx, 0, EpochSecret::from_bytes([3; 32])),
        62,
    );
    let wrong_key = sealed_of(&imposter.publish(direct_hints(), T0 + 300));
    assert_eq!(
        alice.service.cache_descriptor(&wrong_key, T0 + 300),
        Err(DescriptorError::WrongKey)
    );
    assert!(
        alice
            .service
            .get_cached_descriptor(ctx, outsider.authority())
            .is_none()
    );
    assert_eq!(
        alice
            .service
            .get_cached_descriptor(ctx, bob.me())
            .unwrap()
            .valid_from,
        T0 + 200
    );
}

#[test]
fn revoked_descriptor_is_dropped_and_refused() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0));
    // Bob revokes it (guarded like a publication) before Alice syncs.
    let snap = bob.snapshot();
    let out = bob.service.prepare_revoke_descriptor(&snap, ctx);
    assert!(out.decision.is_allowed());
    bob.fx.run(&out, T0 + 1).unwrap();
    assert!(bob.service.needs_refresh(ctx, T0 + 1, 0));
    let results = alice.sync_from(&bob, T0 + 2);
    // Whatever the order sync delivered them in, the descriptor is not cached.
    assert!(results.contains(&Ok(FactApplied::Revoked(bob.me()))));
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_none());
    assert_eq!(
        alice.service.cache_descriptor(&sealed, T0 + 3),
        Err(DescriptorError::Revoked)
    );
    assert!(
        RendezvousAdapter::new(&alice.service)
            .get_peer_info(ctx, bob.me(), T0 + 3)
            .is_none()
    );
}

#[test]
fn revocation_by_someone_else_is_refused() {
    let (mut alice, mut bob, carol) = trio();
    let ctx = alice.ctx();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0));
    alice.service.cache_descriptor(&sealed, T0).unwrap();
    let nonce = alice
        .service
        .get_cached_descriptor(ctx, bob.me())
        .unwrap()
        .nonce;
    // Carol, holding the epoch's key, seals a revocation naming Bob that
    // Bob did not sign: refused, Bob's descriptor stays.
    let keys = alice.service.keys(&ctx).unwrap().clone();
    let bobs = Revocation {
        authority: bob.me(),
        nonce,
    };
    let forged =
        RendezvousFact::DescriptorRevoked(SealedRevocation::from_parts(&keys, &bobs, &[7; 64]));
    assert_eq!(
        alice.service.apply_fact(ctx, &forged, T0),
        Err(DescriptorError::BadSignature)
    );
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_some());
    // Carol revokes Bob's nonce with her own signature: a revocation names
    // its signer, so this one is Carol's, of a descriptor she never
    // published. Bob's stays cached.
    let carols = RendezvousFact::revoke(&carol.identity, &keys, nonce);
    assert_eq!(
        alice.service.apply_fact(ctx, &carols, T0),
        Ok(FactApplied::Revoked(carol.me()))
    );
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_some());
    // Altered on the way: refused.
    let mut bytes = carols.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        alice
            .service
            .apply_fact(ctx, &RendezvousFact::from_bytes(&bytes).unwrap(), T0),
        Err(DescriptorError::WrongKey)
    );
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_some());
}

#[test]
fn receipt_chain_detects_missing_and_reordered_receipts() {
    let (_, mut bob, _) = trio();
    for i in 0..4 {
        bob.publish(direct_hints(), T0 + i);
    }
    let r = bob.fx.receipts().to_vec();
    verify_chain(&r).unwrap();
    let mut v = ReceiptVerifier::new(10);
    v.accept(&r[0]).unwrap();
    assert!(matches!(
        v.accept(&r[2]),
        Err(receipt::ReceiptError::Missing {
            expected: 1,
            found: 2
        })
    ));
    v.accept(&r[1]).unwrap();
    assert!(matches!(
        v.accept(&r[0]),
        Err(receipt::ReceiptError::Reordered { .. })
    ));
    // Swapped pair.
    assert!(verify_chain([&r[0], &r[2], &r[1], &r[3]]).is_err());
    // A re-signed receipt with the right sequence but another history.
    let mut forked = r[2].clone();
    forked.prev = [0; 32];
    assert!(matches!(
        v.accept(&forked),
        Err(receipt::ReceiptError::BadSignature)
    ));
    // Altered cost.
    let mut altered = r[2].clone();
    altered.cost = 0;
    assert_eq!(v.accept(&altered), Err(receipt::ReceiptError::BadSignature));
    v.accept(&r[2]).unwrap();
    v.accept(&r[3]).unwrap();
    // Bytes round-trip.
    let back = receipt::Receipt::from_bytes(&r[3].to_bytes()).unwrap();
    assert_eq!(back, r[3]);
}

#[test]
fn new_epoch_clears_cache_and_asks_for_a_new_descriptor() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    bob.publish(direct_hints(), T0);
    alice.sync_from(&bob, T0);
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_some());
    let rekey = alice
        .context
        .advance_epoch(&alice.identity, &[], &mut rng(7))
        .unwrap();
    alice.rekeyed();
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_none());
    assert!(alice.service.needs_refresh(ctx, T0, 0));
    // Old keys cannot be installed again.
    let old = bob.context.keys().clone();
    assert!(matches!(
        alice.service.install_keys(old),
        Err(ServiceError::StaleKeys { .. })
    ));
    bob.context.apply_rekey(&bob.identity, &rekey).unwrap();
    bob.rekeyed();
    bob.publish(direct_hints(), T0 + 5);
    let res = alice.sync_from(&bob, T0 + 6);
    // The epoch-0 descriptor is refused, the epoch-1 one cached.
    assert!(
        res.iter()
            .any(|r| matches!(r, Err(DescriptorError::WrongEpoch { .. })))
    );
    assert!(res.contains(&Ok(FactApplied::DescriptorCached(bob.me()))));
}

#[test]
fn member_invited_by_another_is_learned_from_its_descriptor_and_gets_the_next_epoch() {
    // Bob joined through a bearer invitation from Alice; Carol never met him.
    // Alice makes Carol an admin too.
    let (mut alice, mut bob, mut carol) = trio();
    let ctx = carol.ctx();
    let appoint = alice
        .context
        .advance_epoch_appointing(&alice.identity, &[], &[carol.me()], &mut rng(2))
        .unwrap();
    alice.rekeyed();
    for m in [&mut bob, &mut carol] {
        m.context.apply_rekey(&m.identity, &appoint).unwrap();
        m.rekeyed();
    }
    assert!(!carol.context.is_member(&bob.me()));
    bob.publish(direct_hints(), T0);
    carol.sync_from(&bob, T0);
    let d = carol
        .service
        .get_cached_descriptor(ctx, bob.me())
        .unwrap()
        .clone();
    assert!(carol.context.learn_from_descriptor(&d).unwrap());
    assert!(carol.context.is_member(&bob.me()));
    // Carol advances, removing Alice: Bob can follow.
    let rekey = carol
        .context
        .advance_epoch(&carol.identity, &[alice.me()], &mut rng(3))
        .unwrap();
    assert_eq!(
        bob.context.apply_rekey(&bob.identity, &rekey),
        Ok(RekeyOutcome::Advanced { epoch: 2 })
    );
    assert_eq!(
        bob.context.keys().descriptor_key(),
        carol.context.keys().descriptor_key()
    );
    assert_eq!(
        alice.context.apply_rekey(&alice.identity.clone(), &rekey),
        Err(RekeyError::Removed { to: 2 })
    );
    // A descriptor of another context teaches nothing.
    let outsider = identity(8);
    let other = Context::create(&outsider, &mut rng(1));
    let mut foreign = d.clone();
    foreign.context_id = other.id();
    assert_eq!(
        carol.context.learn_from_descriptor(&foreign),
        Err(ContextError::WrongContext)
    );
}

/// A descriptor of `who` in `keys`' context, valid for an hour from `from`,
/// with the commitment given: what `prepare_publish_descriptor` would make,
/// but with a commitment of the caller's choosing.
fn descriptor_with_commitment(
    who: &Identity,
    keys: &EpochKeys,
    commitment: [u8; 32],
    from: u64,
    nonce: u8,
) -> SealedDescriptor {
    RendezvousDescriptor {
        authority_id: who.authority(),
        context_id: keys.context_id(),
        transport_hints: direct_hints(),
        handshake_psk_commitment: commitment,
        valid_from: from,
        valid_until: from + 3_600_000,
        nonce: [nonce; 32],
        static_key: who.static_public(),
    }
    .seal(who, keys, [nonce; 24])
    .unwrap()
}

/// `member` asks to start a handshake with `peer` at `now` with the pair's
/// true PSK.
fn try_establish(
    member: &mut Member,
    peer: AuthorityId,
    now: u64,
) -> Result<GuardOutcome, ServiceError> {
    let ctx = member.ctx();
    let psk = member.service.handshake_psk(&ctx, &peer).unwrap();
    let snap = member.snapshot();
    member
        .service
        .prepare_establish_channel(&snap, ctx, peer, &psk, now, &mut member.handshaker)
}

#[test]
fn descriptor_committing_to_another_psk_root_is_refused_before_any_send() {
    let (_, bob, carol) = trio();
    let ctx = bob.ctx();
    let keys = bob.context.keys().clone();
    // Bob's descriptor is sealed and signed by him under the context's
    // descriptor key, so it opens and caches; only its commitment is off:
    // made from the PSK root of another secret (same context and epoch), or
    // from the right root but bound to another authority.
    let stray = EpochKeys::derive(ctx, 0, &EpochSecret::from_bytes([0x5a; 32]));
    for commitment in [
        stray.psk_commitment(&bob.me()),
        keys.psk_commitment(&carol.me()),
    ] {
        let (mut alice, _, _) = trio();
        let sealed = descriptor_with_commitment(&bob.identity, &keys, commitment, T0, 1);
        assert_eq!(alice.service.cache_descriptor(&sealed, T0), Ok(bob.me()));
        assert_eq!(
            try_establish(&mut alice, bob.me(), T0 + 1).unwrap_err(),
            ServiceError::CommitmentMismatch
        );
        assert_eq!(alice.handshaker.initiated, 0, "no message 1 was built");
        assert!(alice.fx.take_outbox().is_empty());
        assert_eq!(alice.fx.ledger().remaining(&ctx, &alice.me(), 0), BUDGET);

        // The same descriptor with Bob's true commitment goes through, so the
        // refusal above is the commitment's doing.
        let honest = descriptor_with_commitment(
            &bob.identity,
            &keys,
            keys.psk_commitment(&bob.me()),
            T0 + 10,
            2,
        );
        assert_eq!(
            alice.service.cache_descriptor(&honest, T0 + 10),
            Ok(bob.me())
        );
        let out = try_establish(&mut alice, bob.me(), T0 + 11).unwrap();
        assert!(out.decision.is_allowed(), "{:?}", out.decision);
        assert!(
            out.effects.iter().any(
                |e| matches!(e, EffectCommand::SendHandshake { peer, .. } if *peer == bob.me())
            )
        );
    }
}

/// Re-seals `sealed` as a member holding the epoch's descriptor key could:
/// the same header and body, the signature's last byte flipped. The layout
/// is the one `SealedDescriptor` documents: plaintext `len16 | body |
/// signature (64) | zero padding`, associated data `label | version | context | epoch
/// (BE)`; the sealed bytes `version | context | epoch | AEAD nonce (24) |
/// len16 | ciphertext`. Opening with the epoch's key is
/// asserted, so a change of layout fails loudly here.
fn with_altered_signature(sealed: &SealedDescriptor, keys: &EpochKeys) -> SealedDescriptor {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    let bytes = sealed.to_bytes();
    let header_len = 1 + 32 + 8;
    let nonce: [u8; 24] = bytes[header_len..header_len + 24].try_into().unwrap();
    let ciphertext = &bytes[header_len + 24 + 2..];
    let mut ad = b"rdv context v1 sealed-descriptor".to_vec();
    ad.extend_from_slice(&bytes[..header_len]);
    let cipher = XChaCha20Poly1305::new(&(*keys.descriptor_key()).into());
    let mut plain = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .expect("a member opens the descriptor with the epoch's key");
    // The signature ends 2 + body length + 64 bytes in (zero padding
    // follows).
    let body_len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    plain[2 + body_len + 63] ^= 1;
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &ad,
            },
        )
        .unwrap();
    let mut out = bytes[..header_len + 24].to_vec();
    out.extend_from_slice(&(ciphertext.len() as u16).to_be_bytes());
    out.extend_from_slice(&ciphertext);
    SealedDescriptor::from_bytes(&out).unwrap()
}

/// The peer has no usable descriptor: asking to connect errs with
/// `NoDescriptor`, no outcome (so no `SendHandshake`), no message 1 built.
fn assert_unreachable(member: &mut Member, peer: AuthorityId, now: u64) {
    let before = member.handshaker.initiated;
    match try_establish(member, peer, now) {
        Err(e) => assert_eq!(e, ServiceError::NoDescriptor(peer)),
        Ok(out) => panic!(
            "a handshake to a refused peer: {:?}, {} send(s)",
            out.decision,
            out.sends().count()
        ),
    }
    assert_eq!(member.handshaker.initiated, before);
    assert!(
        member
            .service
            .get_cached_descriptor(member.ctx(), peer)
            .is_none()
    );
}

#[test]
fn refused_descriptors_leave_the_peer_unreachable() {
    // Expired: refused when it arrives late, and no handshake at that time.
    let (mut alice, mut bob, _) = trio();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0));
    let late = T0 + 3_600_000;
    assert!(matches!(
        alice.service.cache_descriptor(&sealed, late),
        Err(DescriptorError::Expired { .. })
    ));
    assert_unreachable(&mut alice, bob.me(), late);

    // Not yet valid: refused 100 s early; had it been kept, it would be
    // valid by the time Alice tries to connect.
    let (mut alice, mut bob, _) = trio();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0 + 100_000));
    assert!(matches!(
        alice.service.cache_descriptor(&sealed, T0),
        Err(DescriptorError::NotYetValid { .. })
    ));
    assert_unreachable(&mut alice, bob.me(), T0 + 100_000);

    // Another context's descriptor.
    let (mut alice, _, _) = trio();
    let ctx = alice.ctx();
    let outsider = identity(8);
    let mut other = Member::new(
        outsider.clone(),
        Context::create(&outsider, &mut rng(60)),
        61,
    );
    let foreign = sealed_of(&other.publish(direct_hints(), T0));
    assert!(matches!(
        alice
            .service
            .apply_fact(ctx, &RendezvousFact::Descriptor(foreign.clone()), T0),
        Err(DescriptorError::WrongContext { .. })
    ));
    assert!(matches!(
        alice.service.cache_descriptor(&foreign, T0),
        Err(DescriptorError::UnknownContext(_))
    ));
    assert_unreachable(&mut alice, outsider.authority(), T0);

    // Sealed under another secret of the same context id: the wrong key.
    let (mut alice, _, _) = trio();
    let mut imposter = Member::new(
        outsider.clone(),
        Context::from_parts(&outsider, ctx, 0, EpochSecret::from_bytes([3; 32])),
        62,
    );
    let wrong_key = sealed_of(&imposter.publish(direct_hints(), T0));
    assert_eq!(
        alice.service.cache_descriptor(&wrong_key, T0),
        Err(DescriptorError::WrongKey)
    );
    assert_unreachable(&mut alice, outsider.authority(), T0);

    // Bad signature: Carol, a member, alters Bob's signature and re-seals.
    let (mut alice, mut bob, carol) = trio();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0));
    let forged = with_altered_signature(&sealed, carol.context.keys());
    assert_ne!(forged, sealed);
    assert_eq!(
        alice.service.cache_descriptor(&forged, T0),
        Err(DescriptorError::BadSignature)
    );
    assert_unreachable(&mut alice, bob.me(), T0);
    // The untouched descriptor still caches: only the signature was at fault.
    assert_eq!(alice.service.cache_descriptor(&sealed, T0), Ok(bob.me()));

    // Revoked: the revocation arrives first, then the descriptor.
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    let sealed = sealed_of(&bob.publish(direct_hints(), T0));
    let revocation = revocation_of(&mut bob, T0 + 1);
    assert_eq!(
        alice.service.apply_fact(ctx, &revocation, T0 + 2),
        Ok(FactApplied::Revoked(bob.me()))
    );
    assert_eq!(
        alice.service.cache_descriptor(&sealed, T0 + 3),
        Err(DescriptorError::Revoked)
    );
    assert_unreachable(&mut alice, bob.me(), T0 + 3);

    // Replay: Bob's newer descriptor was cached then revoked; replaying his
    // older one (not revoked, still within its window) brings nothing back.
    let (mut alice, mut bob, _) = trio();
    let first = sealed_of(&bob.publish(direct_hints(), T0));
    let second = sealed_of(&bob.publish(direct_hints(), T0 + 100));
    assert_eq!(
        alice.service.cache_descriptor(&first, T0 + 100),
        Ok(bob.me())
    );
    assert_eq!(
        alice.service.cache_descriptor(&second, T0 + 101),
        Ok(bob.me())
    );
    let revocation = revocation_of(&mut bob, T0 + 102);
    alice
        .service
        .apply_fact(ctx, &revocation, T0 + 103)
        .unwrap();
    assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_none());
    assert_eq!(
        alice.service.cache_descriptor(&first, T0 + 104),
        Err(DescriptorError::Replayed)
    );
    assert_unreachable(&mut alice, bob.me(), T0 + 104);
}

/// Bob revokes his current descriptor: the signed fact his journal gets.
fn revocation_of(bob: &mut Member, now: u64) -> RendezvousFact {
    let snap = bob.snapshot();
    let out = bob.service.prepare_revoke_descriptor(&snap, bob.ctx());
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    bob.fx.run(&out, now).unwrap();
    out.effects
        .iter()
        .find_map(|e| match e {
            EffectCommand::JournalAppend { fact, .. } => Some(fact.clone()),
            _ => None,
        })
        .unwrap()
}

/// A member that missed an advance (offline when the rekey was pushed)
/// still gets a handshake under the epoch it knows, the one before the
/// responder's, so it can sync and find the rekey; two epochs behind it
/// does not.
#[test]
fn a_handshake_under_the_epoch_before_is_answered_and_older_ones_are_not() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    alice.publish(direct_hints(), T0);
    bob.sync_from(&alice, T0);
    let hello = |alice: &mut Member, bob: &mut Member| {
        let snap = bob.snapshot();
        let psk = bob.service.handshake_psk(&ctx, &alice.me()).unwrap();
        let out = bob
            .service
            .prepare_establish_channel(&snap, ctx, alice.me(), &psk, T0 + 1, &mut bob.handshaker)
            .unwrap();
        let EffectCommand::SendHandshake { message, .. } = &out.effects[1] else {
            panic!("{:?}", out.effects)
        };
        assert_eq!(message.epoch, 0, "bob knows only epoch 0");
        let psk = alice
            .service
            .handshake_psk_at(&ctx, &bob.me(), message.epoch);
        let snap = alice.snapshot();
        let out = alice.service.prepare_handle_handshake(
            &snap,
            ctx,
            bob.me(),
            message.clone(),
            &psk.clone().unwrap_or_default(),
            &mut alice.handshaker,
        );
        (psk.is_some(), out)
    };
    alice
        .context
        .advance_epoch(&alice.identity, &[], &mut rng(60))
        .unwrap();
    alice.rekeyed();
    let (known, out) = hello(&mut alice, &mut bob);
    assert!(known && out.decision.is_allowed(), "{:?}", out.decision);
    // Recorded by Alice, sealed under her installed epoch (1), for a
    // channel of epoch 0.
    let recorded_epochs: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            EffectCommand::JournalAppend {
                fact: RendezvousFact::ChannelEstablished(sealed),
                ..
            } => Some(sealed.open(alice.context.keys()).unwrap().epoch),
            _ => None,
        })
        .collect();
    assert_eq!(recorded_epochs, [0]);
    alice
        .context
        .advance_epoch(&alice.identity, &[], &mut rng(61))
        .unwrap();
    alice.rekeyed();
    let (known, out) = hello(&mut alice, &mut bob);
    assert!(!known);
    assert!(
        matches!(
            out.decision,
            Decision::Denied(DenyReason::InvalidRequest(_))
        ),
        "{:?}",
        out.decision
    );
}
