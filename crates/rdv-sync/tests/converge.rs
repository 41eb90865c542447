#![allow(missing_docs, clippy::unwrap_used)]
//! Replicas converge: 2 and 3 members, every fact kind, real sealed
//! descriptors and signed revocations, any interleaving of inserts and
//! sessions.

mod common;

use common::*;
use proptest::prelude::*;
use rdv_context::*;
use rdv_sync::SyncStore;

#[derive(Clone, Debug)]
enum Op {
    /// Member publishes a descriptor.
    Publish(usize),
    /// Member revokes its current descriptor (if any).
    Revoke(usize),
    /// Member records a channel with the next member.
    Channel(usize, u8),
    /// Member appends a fact another member also appends (same id,
    /// different timestamps).
    Shared(u8),
    /// A session, first initiating.
    Sync(usize, usize),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..n).prop_map(Op::Publish),
        (0..n).prop_map(Op::Revoke),
        ((0..n), any::<u8>()).prop_map(|(m, c)| Op::Channel(m, c)),
        any::<u8>().prop_map(Op::Shared),
        ((0..n), (0..n)).prop_map(|(a, b)| Op::Sync(a, b)),
    ]
}

fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

fn check(members: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (a, b, c) = trio();
    let mut m = vec![a, b, c];
    m.truncate(members);
    let mut published = vec![false; members];
    let mut now = T0 + 10;
    for op in ops {
        now += 7;
        match op {
            Op::Publish(i) => {
                m[i].publish(now);
                published[i] = true;
            }
            Op::Revoke(i) if published[i] => {
                m[i].revoke(now);
                published[i] = false;
            }
            Op::Revoke(_) => {}
            Op::Channel(i, n) => {
                let peer = m[(i + 1) % members].me();
                m[i].channel(peer, n, now);
            }
            Op::Shared(n) => {
                // The same channel record (signed by its responder)
                // appended by two members at different times.
                let (x, y) = (m[0].me(), m[1].me());
                let fact = m[1]
                    .service
                    .channel_established(m[1].ctx(), x, y, [n; 32], m[0].context.epoch())
                    .unwrap();
                m[(n as usize) % members].append(fact.clone(), now);
                m[(n as usize + 1) % members].append(fact, now + 3);
            }
            Op::Sync(x, y) if x != y => {
                let (p, q) = pair_mut(&mut m, x, y);
                sync(p, q, now);
            }
            Op::Sync(..) => {}
        }
    }
    // Then everyone syncs with everyone (a ring twice is enough).
    for _ in 0..2 {
        for i in 0..members {
            let j = (i + 1) % members;
            now += 1;
            let (p, q) = pair_mut(&mut m, i, j);
            sync(p, q, now);
        }
    }
    let first = m[0].snapshot();
    for x in &m[1..] {
        prop_assert_eq!(&x.snapshot(), &first);
    }
    // Nothing left: one more session is one round trip with no fact.
    let (p, q) = pair_mut(&mut m, 0, members - 1);
    let o = sync(p, q, now + 1);
    prop_assert_eq!(o.round_trips, 1);
    prop_assert_eq!(o.initiator.facts_sent + o.responder.facts_sent, 0);
    // Services: a member's newest descriptor, when not revoked, is what
    // every other replica caches; a revoked descriptor is cached nowhere.
    let revoked: Vec<[u8; 32]> = m[0]
        .journal
        .by_kind(FactKind::DescriptorRevoked, None, 10_000)
        .unwrap()
        .iter()
        .filter_map(|e| match e.fact() {
            // Every revocation in the journal opens under the keys of its
            // epoch when this member holds them (all of them here).
            RendezvousFact::DescriptorRevoked(r) => {
                let keys = m[0].service.keys_at(&m[0].ctx(), r.epoch());
                let keys = keys.expect("keys of the revocation's epoch");
                Some(r.open(keys).expect("a synced revocation opens").nonce)
            }
            _ => None,
        })
        .collect();
    for i in 0..members {
        for j in 0..members {
            if i == j {
                continue;
            }
            let cached = m[i]
                .service
                .get_cached_descriptor(m[i].ctx(), m[j].me())
                .map(|d| d.nonce);
            if let Some(own) = m[j].service.own_descriptor(m[j].ctx()) {
                prop_assert_eq!(cached, Some(own.nonce));
            }
            if let Some(n) = cached {
                prop_assert!(!revoked.contains(&n), "a revoked descriptor is cached");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn two_replicas_converge_to_the_same_set_and_order(ops in proptest::collection::vec(op(2), 1..40)) {
        check(2, ops)?;
    }
    #[test]
    fn three_replicas_converge_to_the_same_set_and_order(ops in proptest::collection::vec(op(3), 1..40)) {
        check(3, ops)?;
    }
}

#[test]
fn many_facts_converge_across_several_rounds_and_split_ranges() {
    let (mut a, mut b, _) = trio();
    let (pa, pb) = (a.me(), b.me());
    for n in 0..=255u8 {
        a.channel(pb, n, T0 + 20 + u64::from(n));
    }
    for n in 0..200u8 {
        b.channel(pa, n, T0 + 30 + u64::from(n));
    }
    a.publish(T0 + 1000);
    let o = sync(&mut a, &mut b, T0 + 2000);
    assert!(o.round_trips > 1, "{o:?}");
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.snapshot().len(), 256 + 200 + 1);
    assert!(b.service.get_cached_descriptor(b.ctx(), pa).is_some());
}

#[test]
fn a_revoked_descriptor_stays_revoked_when_it_arrives_after_its_revocation() {
    let (mut a, mut b, mut c) = trio();
    let pa = a.me();
    let d = a.publish(T0 + 20);
    let r = a.revoke(T0 + 21);
    // Carol receives the revocation alone first (through a session with a
    // replica that holds only it), then the descriptor.
    let ctx = a.ctx();
    c.with_replica(|rc| {
        let e = JournalEntry::new(
            r.clone(),
            hlc::HlcTimestamp {
                wall_ms: T0 + 21,
                counter: 0,
            },
        );
        rc.accept(vec![e], T0 + 22).unwrap()
    });
    assert!(c.service.get_cached_descriptor(ctx, pa).is_none());
    sync(&mut c, &mut a, T0 + 30);
    assert!(
        c.journal.contains(&d.id()),
        "the descriptor is journal history"
    );
    assert!(
        c.service.get_cached_descriptor(ctx, pa).is_none(),
        "revoked stays revoked"
    );
    // And Bob, who gets both in one session.
    sync(&mut b, &mut c, T0 + 40);
    assert!(b.journal.contains(&d.id()) && b.journal.contains(&r.id()));
    assert!(b.service.get_cached_descriptor(ctx, pa).is_none());
}

#[test]
fn tight_limits_still_converge_and_every_message_respects_them() {
    let (mut a, mut b, _) = trio();
    let (pa, pb) = (a.me(), b.me());
    for n in 0..=255u8 {
        a.channel(pb, n, T0 + 20 + u64::from(n));
        if n % 3 == 0 {
            b.channel(pa, n, T0 + 25 + u64::from(n));
        }
    }
    // The receiving side decodes with the same limits: a message over any
    // of them would end the session with an error (and `unwrap` fails).
    let limits = rdv_sync::Limits {
        max_ranges: 12,
        max_ids: 40,
        max_facts: 10,
        branching: 4,
        leaf_items: 3,
        ..rdv_sync::Limits::default()
    };
    let o = a
        .with_replica(|ra| b.with_replica(|rb| run(ra, rb, limits, T0 + 2000)))
        .unwrap();
    assert!(o.round_trips > 10, "{o:?}");
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn inconsistent_limits_are_normalized_and_sessions_still_converge() {
    let (mut a, mut b, _) = trio();
    let pb = b.me();
    for n in 0..30u8 {
        a.channel(pb, n, T0 + 20 + u64::from(n));
    }
    // A split could never fit next to the tail; leaves larger than the
    // fact budget.
    let limits = rdv_sync::Limits {
        max_ranges: 4,
        branching: 64,
        max_facts: 2,
        leaf_items: 50,
        ..rdv_sync::Limits::default()
    };
    let o = a
        .with_replica(|ra| b.with_replica(|rb| run(ra, rb, limits, T0 + 2000)))
        .unwrap();
    assert!(o.round_trips > 1);
    assert_eq!(a.snapshot(), b.snapshot());
}

/// `m` advances its context one epoch (rekey seed `seed`) and its service
/// follows, keeping the epoch before's keys.
fn advance(m: &mut Member, seed: u8) {
    let previous = m.context.keys().clone();
    m.context
        .advance_epoch(&m.identity, &[], &mut rng(seed))
        .unwrap();
    m.service
        .set_epoch_keys(m.context.keys().clone(), Some(previous))
        .unwrap();
}

/// A member one epoch behind (it missed a rekey; handshakes under the epoch
/// before are answered for it) seals its channel records under the epoch
/// it has: a member that moved on stores them. One sealed two epochs back
/// is left out without blame.
#[test]
fn channel_records_from_a_member_one_epoch_behind_are_stored() {
    let (mut alice, mut bob, _) = trio();
    // Bob records a channel with Alice while both are at epoch 0.
    let at_0 = bob.channel(alice.me(), 1, T0 + 10);
    // Alice moves to epoch 1 (Bob has not heard yet).
    advance(&mut alice, 40);
    assert_eq!(alice.context.epoch(), 1);
    sync(&mut bob, &mut alice, T0 + 20);
    assert!(
        alice.journal.contains(&at_0.id()),
        "stored, opened under epoch 0"
    );

    // At epoch 2, with only epoch 1 kept as the one before, a record sealed
    // at epoch 0 cannot be checked: deferred, nothing written, no blame.
    let at_0_again = bob.channel(alice.me(), 2, T0 + 30);
    advance(&mut alice, 41);
    let out = sync(&mut bob, &mut alice, T0 + 40);
    assert!(!alice.journal.contains(&at_0_again.id()));
    assert_eq!(out.responder.facts_rejected, 0, "{out:?}");
}
