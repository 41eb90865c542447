#![allow(missing_docs, clippy::unwrap_used)]
//! A member following epoch rekeys from its journal (`Node::follow_rekeys`,
//! issue 12's `rdv context remove`): two admins advance from the same
//! epoch at once; a member that took the lower-ranked rekey first moves to
//! the one that outranks it when that arrives, at the same epoch number,
//! and its service, handshaker and keys follow (not only its context).

mod common;

use common::*;
use rdv_context::hlc::HlcTimestamp;
use rdv_context::*;

/// `r` as the journal holds it, sealed under the keys its author held of
/// the epoch it advances from.
fn entry(r: &EpochRekey, author: &Context) -> JournalEntry {
    let keys = author.keys_at(r.from_epoch).unwrap();
    JournalEntry::new(
        RendezvousFact::EpochRekey(Box::new(SealedRekey::seal(r, &keys).unwrap())),
        HlcTimestamp {
            wall_ms: clock(),
            counter: 0,
        },
    )
}

#[test]
fn a_rekey_that_outranks_the_one_taken_replaces_it_at_the_same_epoch_number() {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let mut a = Context::create(&alice, &mut rng(10));
    let mut b = a.invite(&alice, T0 + 86_400_000).accept(&bob, T0).unwrap();
    let c = a
        .invite(&alice, T0 + 86_400_000)
        .accept(&carol, T0)
        .unwrap();
    for m in [&bob, &carol] {
        a.add_member(&m.static_key_binding()).unwrap();
    }
    b.add_member(&carol.static_key_binding()).unwrap();
    let mut carol_node = node(carol.clone(), c, 30);
    carol_node
        .context
        .add_member(&bob.static_key_binding())
        .unwrap();

    // Epoch 1: Alice makes Bob an admin too; Carol follows from her journal.
    let appoint = a
        .advance_epoch_appointing(&alice, &[], &[bob.authority()], &mut rng(11))
        .unwrap();
    b.apply_rekey(&bob, &appoint).unwrap();
    carol_node
        .receive(vec![entry(&appoint, &a)], clock())
        .unwrap();
    assert_eq!(carol_node.context.epoch(), 1);
    let ctx = a.id();
    assert!(carol_node.service.keys(&ctx).unwrap().same_as(a.keys()));

    // From epoch 1 at once: Bob advances (removing nobody), Alice removes
    // Bob. Carol gets Bob's first.
    let bobs = b.advance_epoch(&bob, &[], &mut rng(12)).unwrap();
    let alices = a
        .advance_epoch(&alice, &[bob.authority()], &mut rng(13))
        .unwrap();
    carol_node.receive(vec![entry(&bobs, &b)], clock()).unwrap();
    assert_eq!(carol_node.context.epoch(), 2);
    assert!(carol_node.service.keys(&ctx).unwrap().same_as(b.keys()));

    // Alice's outranks it (a removal beats none): Carol goes back and takes
    // it, still epoch 2, under Alice's secret everywhere.
    carol_node
        .receive(vec![entry(&alices, &a)], clock())
        .unwrap();
    assert_eq!(carol_node.context.epoch(), 2);
    assert!(!carol_node.context.is_member(&bob.authority()));
    let keys = carol_node.service.keys(&ctx).unwrap();
    assert!(
        keys.same_as(a.keys()),
        "the service follows the replacement"
    );
    assert!(!keys.same_as(b.keys()));
    // Bob, removed, is no longer a member the handshaker knows, and the
    // epoch before (1) is still answered for members that missed it.
    assert_eq!(
        carol_node
            .handshaker
            .member_by_static(&ctx, &bob.static_public()),
        None
    );
    assert!(
        carol_node
            .service
            .handshake_psk_at(&ctx, &alice.authority(), 1)
            .is_some()
    );
}
