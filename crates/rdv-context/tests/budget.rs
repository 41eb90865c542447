//! Flow budgets refill over time, and the work a member causes is charged
//! to that member's budget.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_context::*;

#[test]
fn a_bucket_refills_at_its_rate_up_to_its_capacity() {
    let ctx = ContextId::from_bytes([1; 32]);
    let who = identity(1).authority();
    let mut ledger = BudgetLedger::with_refill(10, 2, 100);
    ledger.tick(T0);
    assert_eq!(ledger.charge(ctx, who, 0, 10), Ok(0));
    assert_eq!(
        ledger.charge(ctx, who, 0, 1),
        Err(BudgetError::Exhausted {
            cost: 1,
            remaining: 0
        })
    );
    ledger.tick(T0 + 499);
    assert_eq!(ledger.remaining(&ctx, &who, 0), 0);
    ledger.tick(T0 + 1_500);
    assert_eq!(ledger.remaining(&ctx, &who, 0), 3);
    ledger.tick(T0 + 60_000);
    assert_eq!(ledger.remaining(&ctx, &who, 0), 10, "capped at capacity");
    // The clock never runs backwards.
    ledger.tick(T0);
    assert_eq!(ledger.remaining(&ctx, &who, 0), 10);
    // A ledger without refill is one budget per epoch.
    let mut fixed = BudgetLedger::new(5, 100);
    fixed.tick(T0);
    fixed.charge(ctx, who, 0, 5).unwrap();
    fixed.tick(T0 + 3_600_000);
    assert_eq!(fixed.remaining(&ctx, &who, 0), 0);
}

#[test]
fn refilled_buckets_make_room_in_a_full_ledger() {
    let ctx = ContextId::from_bytes([1; 32]);
    let mut ledger = BudgetLedger::with_refill(10, 10, 2);
    ledger.tick(T0);
    ledger.charge(ctx, identity(1).authority(), 0, 1).unwrap();
    ledger.charge(ctx, identity(2).authority(), 0, 1).unwrap();
    assert_eq!(
        ledger.charge(ctx, identity(3).authority(), 0, 1),
        Err(BudgetError::Full(2))
    );
    ledger.tick(T0 + 1_000);
    assert!(ledger.charge(ctx, identity(3).authority(), 0, 1).is_ok());
}

/// Alice sends Bob one handshake; returns whether Bob's interpreter ran
/// the answer (charge first: a refused charge sends nothing).
fn handshake(alice: &mut Member, bob: &mut Member, now: u64) -> bool {
    let ctx = alice.ctx();
    let psk = alice.service.handshake_psk(&ctx, &bob.me()).unwrap();
    let snap = alice.snapshot();
    let out = alice
        .service
        .prepare_establish_channel(&snap, ctx, bob.me(), &psk, now, &mut alice.handshaker)
        .unwrap();
    alice.fx.run(&out, now).unwrap();
    let Some(Outbound::Handshake { message, .. }) = alice.fx.take_outbox().pop() else {
        panic!("no message 1")
    };
    let psk_b = bob.service.handshake_psk(&ctx, &alice.me()).unwrap();
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
    let ran = bob.fx.run(&out, now).is_ok();
    let sent = bob.fx.take_outbox().len();
    assert_eq!(sent, usize::from(ran), "an answer only when charged");
    ran
}

#[test]
fn a_member_flooding_handshakes_spends_its_own_allowance_not_the_responders() {
    let (mut alice, mut bob, _) = trio();
    let ctx = alice.ctx();
    *alice.fx.ledger_mut() = BudgetLedger::new(1_000_000, 100);
    // Bob: 100 units per authority, one unit back a second.
    *bob.fx.ledger_mut() = BudgetLedger::with_refill(BUDGET, 1, 100);
    bob.publish(direct_hints(), T0);
    alice.sync_from(&bob, T0);

    let mut answered = 0;
    for i in 0..80 {
        if handshake(&mut alice, &mut bob, T0 + i) {
            answered += 1;
        }
    }
    // Each accept costs 2 of Alice's allowance at Bob.
    assert_eq!(answered, BUDGET / 2);
    assert_eq!(bob.fx.ledger().remaining(&ctx, &alice.me(), 0), 0);
    // Bob's own budget paid only his publication: he can still publish.
    assert_eq!(bob.fx.ledger().remaining(&ctx, &bob.me(), 0), BUDGET - 1);
    bob.publish(direct_hints(), T0 + 100);
    // Time refills Alice's allowance: 10 s later she is answered again.
    assert!(handshake(&mut alice, &mut bob, T0 + 10_100));
}
