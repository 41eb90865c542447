#![allow(missing_docs, clippy::unwrap_used)]
//! Garbage collection past the retention window keeps the sync index in
//! step with the journal, and sync does not bring collected facts back.

mod common;

use common::*;
use rdv_context::DEFAULT_RETENTION_MS;

#[test]
fn collected_facts_leave_the_index_and_sync_does_not_bring_them_back() {
    let (mut a, mut b, _) = trio();
    let old = a.channel(b.me(), 1, T0);
    let old_id = old.id();
    sync(&mut a, &mut b, T0 + 10);
    assert!(b.journal.get(&old_id).unwrap().is_some());

    // Well past the window, a member adds one fresh fact, then collects.
    let later = T0 + DEFAULT_RETENTION_MS + 60_000;
    let fresh = a.channel(b.me(), 2, later).id();
    let before = a.index.len();
    let gone = a.with_replica(|r| r.collect_garbage(later, 100)).unwrap();
    assert_eq!(gone, 1);
    assert_eq!(a.index.len(), before - 1, "the index follows the journal");
    assert!(a.journal.get(&old_id).unwrap().is_none());
    assert!(a.journal.get(&fresh).unwrap().is_some());

    // Bob has not collected yet and still holds the old fact: a session
    // offers it, Alice's journal refuses it (below the retention floor),
    // and it stays gone; the fresh fact reaches Bob.
    let out = sync(&mut a, &mut b, later + 10);
    assert!(a.journal.get(&old_id).unwrap().is_none());
    assert!(b.journal.get(&fresh).unwrap().is_some());
    assert_eq!(out.initiator.facts_written, 0);

    // Once Bob collects too, the two indexes agree and a session moves
    // no facts at all.
    let gone = b
        .with_replica(|r| r.collect_garbage(later + 20, 100))
        .unwrap();
    assert_eq!(gone, 1);
    let out = sync(&mut a, &mut b, later + 30);
    assert_eq!(out.initiator.facts_sent + out.responder.facts_sent, 0);
    assert_eq!(out.round_trips, 1);
    assert_eq!(a.snapshot(), b.snapshot());
}
