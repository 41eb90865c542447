#![allow(missing_docs, clippy::unwrap_used)]
//! A hostile peer is cut off without writing anything and without making
//! us allocate beyond the limits.

mod common;

use common::*;
use rdv_context::*;
use rdv_sync::DecodeError;
use rdv_sync::*;

fn entry(fact: RendezvousFact, wall: u64) -> JournalEntry {
    JournalEntry::new(
        fact,
        hlc::HlcTimestamp {
            wall_ms: wall,
            counter: 0,
        },
    )
}

fn facts_message(facts: Vec<JournalEntry>) -> Vec<u8> {
    Message {
        facts,
        ..Message::default()
    }
    .encode()
}

/// Feeds one message to a fresh responder session of `victim`.
fn feed(victim: &mut Member, limits: Limits, bytes: &[u8], now: u64) -> Result<Step, SyncError> {
    let mut s = Session::respond(limits, now);
    victim.with_replica(|r| s.receive(bytes, r, now))
}

/// A channel record Mallory (no member) signs, sealed under `keys` (as a
/// member who leaks the key would): well signed, but naming a stranger.
fn stranger_fact(keys: &EpochKeys, n: u8) -> RendezvousFact {
    let mallory = identity(66);
    RendezvousFact::channel_established(
        &mallory,
        keys,
        mallory.authority(),
        identity(2).authority(),
        [n; 32],
        0,
    )
}

#[test]
fn an_oversized_message_is_refused_before_decoding_and_writes_nothing() {
    let (mut a, mut b, _) = trio();
    let good = entry(a.publish(T0 + 10), T0 + 10);
    let limits = Limits::default();
    let mut bytes = facts_message(vec![good]);
    bytes.resize(limits.max_message_len + 1, 0);
    let err = feed(&mut b, limits, &bytes, T0 + 11).unwrap_err();
    assert!(
        matches!(err, SyncError::Decode(DecodeError::TooLong { .. })),
        "{err}"
    );
    assert_eq!(b.journal.len(), 0);
}

#[test]
fn a_malformed_message_writes_none_of_its_good_facts() {
    let (mut a, mut b, _) = trio();
    let good = entry(a.publish(T0 + 10), T0 + 10);
    let mut bytes = facts_message(vec![good]);
    bytes.push(0x42);
    let err = feed(&mut b, Limits::default(), &bytes, T0 + 11).unwrap_err();
    assert_eq!(err, SyncError::Decode(DecodeError::Trailing(1)));
    assert_eq!(b.journal.len(), 0);
    assert!(b.service.get_cached_descriptor(b.ctx(), a.me()).is_none());
}

#[test]
fn huge_counts_are_refused_without_allocating_for_them() {
    let (_, mut b, _) = trio();
    // version, then 2^62 ranges: refused on the count, nothing reserved.
    let bytes = [
        rdv_sync::message::VERSION,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0x3f,
    ];
    let err = feed(&mut b, Limits::default(), &bytes, T0).unwrap_err();
    assert!(matches!(
        err,
        SyncError::Decode(DecodeError::TooMany { what: "ranges", .. })
    ));
    // 2^62 facts after no range and no want.
    let bytes = [
        rdv_sync::message::VERSION,
        0,
        0,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0x3f,
    ];
    let err = feed(&mut b, Limits::default(), &bytes, T0).unwrap_err();
    assert!(matches!(
        err,
        SyncError::Decode(DecodeError::TooMany { what: "facts", .. })
    ));
}

#[test]
fn endless_rounds_end_at_the_round_limit() {
    let (_, mut b, _) = trio();
    let pa = identity(1).authority();
    for n in 0..50u8 {
        b.channel(pa, n, T0 + 10 + u64::from(n));
    }
    let limits = Limits {
        max_rounds: 12,
        ..Limits::default()
    };
    let mut s = Session::respond(limits, T0 + 100);
    let mut ended = None;
    // The hostile peer never agrees: a fresh fingerprint every round.
    for round in 0..1000u32 {
        let msg = Message {
            ranges: vec![Range {
                upper: Key::MAX,
                mode: Mode::Fingerprint(Fingerprint([round as u8; 16])),
            }],
            ..Message::default()
        }
        .encode();
        match b.with_replica(|r| s.receive(&msg, r, T0 + 100)) {
            Ok(Step::Send(_)) => {}
            other => {
                ended = Some((round, other));
                break;
            }
        }
    }
    let (round, outcome) = ended.unwrap();
    assert_eq!(round, 12);
    assert_eq!(outcome, Err(SyncError::TooManyRounds(12)));
    assert_eq!(b.journal.len(), 50);
}

#[test]
fn a_session_past_its_time_ends() {
    let (mut a, mut b, _) = trio();
    a.publish(T0 + 10);
    let limits = Limits {
        max_session_ms: 1000,
        ..Limits::default()
    };
    let (_, first) = a.with_replica(|r| Session::initiate(r, limits, T0 + 10));
    let mut s = Session::respond(limits, T0 + 10);
    let late = b.with_replica(|r| s.receive(&first, r, T0 + 1011));
    assert_eq!(late, Err(SyncError::TimedOut(1000)));
    assert!(s.is_finished());
    assert_eq!(
        b.with_replica(|r| s.receive(&first, r, T0 + 12)),
        Err(SyncError::Ended)
    );
}

#[test]
fn forged_foreign_and_stranger_facts_are_dropped_counted_and_end_the_session() {
    let (mut a, mut b, _) = trio();
    let ctx = a.ctx();
    // A descriptor sealed in another context (Mallory's own).
    let mallory = identity(66);
    let mut m = Member::new(mallory.clone(), Context::create(&mallory, &mut rng(67)), 68);
    let foreign = entry(m.publish(T0 + 10), T0 + 10);
    // A revocation of Alice's descriptor, sealed under the context's key
    // by a member, not signed by Alice.
    let d = a.publish(T0 + 10);
    let nonce = a.service.own_descriptor(ctx).unwrap().nonce;
    let alices = Revocation {
        authority: a.me(),
        nonce,
    };
    let forged_revocation = entry(
        RendezvousFact::DescriptorRevoked(SealedRevocation::from_parts(
            a.context.keys(),
            &alices,
            &[7; 64],
        )),
        T0 + 11,
    );
    // A revocation Mallory signs for herself, sealed under our key (as a
    // removed member still holding it could): a stranger.
    let stranger_revocation = entry(
        RendezvousFact::revoke(&mallory, a.context.keys(), [1; 32]),
        T0 + 11,
    );
    // Alice's descriptor and her revocation, one ciphertext byte flipped:
    // they do not open, which a member cannot tell from a fact sealed
    // under another secret for the epoch (a rekey branch it did not take),
    // so they are deferred without blame, and nothing is written.
    let mut revocation = RendezvousFact::revoke(&a.identity, a.context.keys(), nonce).to_bytes();
    let last = revocation.len() - 1;
    revocation[last] ^= 1;
    let altered_revocation = entry(RendezvousFact::from_bytes(&revocation).unwrap(), T0 + 11);
    let mut sealed = match &d {
        RendezvousFact::Descriptor(s) => s.to_bytes(),
        _ => unreachable!(),
    };
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let altered = entry(
        RendezvousFact::Descriptor(SealedDescriptor::from_bytes(&sealed).unwrap()),
        T0 + 10,
    );
    // A timestamp an hour ahead.
    let future = entry(b.channel_fact_for_test(), T0 + 3_600_000);
    for e in [altered, altered_revocation] {
        let mut s = Session::respond(Limits::default(), T0 + 20);
        b.with_replica(|r| s.receive(&facts_message(vec![e.clone()]), r, T0 + 20))
            .unwrap();
        assert_eq!(s.stats().facts_rejected, 0, "{:?}", e.fact().kind());
        assert_eq!(b.journal.len(), 0);
    }
    let bad = vec![
        foreign,
        forged_revocation,
        stranger_revocation,
        future,
        entry(stranger_fact(a.context.keys(), 1), T0 + 12),
        // A member recording a channel between two others.
        entry(
            RendezvousFact::channel_established(
                &identity(3),
                a.context.keys(),
                a.me(),
                b.me(),
                [3; 32],
                0,
            ),
            T0 + 12,
        ),
    ];
    let limits = Limits {
        max_bad_facts: 5,
        ..Limits::default()
    };
    // Each one alone is dropped and counted; nothing is written.
    for e in &bad {
        let mut s = Session::respond(limits, T0 + 20);
        let step = b
            .with_replica(|r| s.receive(&facts_message(vec![e.clone()]), r, T0 + 20))
            .unwrap();
        assert_eq!(step, Step::Finished);
        assert_eq!(s.stats().facts_rejected, 1, "{:?}", e.fact().kind());
        assert_eq!(b.journal.len(), 0);
    }
    // Together they pass the threshold: the session ends with an error.
    let err = feed(&mut b, limits, &facts_message(bad), T0 + 20).unwrap_err();
    assert_eq!(err, SyncError::TooManyBadFacts(6));
    assert_eq!(b.journal.len(), 0);
    assert!(b.service.get_cached_descriptor(ctx, a.me()).is_none());
}

#[test]
fn good_facts_alongside_a_few_bad_ones_are_written() {
    let (mut a, mut b, _) = trio();
    let good = entry(a.publish(T0 + 10), T0 + 10);
    let bytes = facts_message(vec![
        good,
        entry(stranger_fact(b.context.keys(), 2), T0 + 11),
    ]);
    let mut s = Session::respond(Limits::default(), T0 + 20);
    b.with_replica(|r| s.receive(&bytes, r, T0 + 20)).unwrap();
    assert_eq!(s.stats().facts_rejected, 1);
    assert_eq!(b.journal.len(), 1);
    assert!(b.service.get_cached_descriptor(b.ctx(), a.me()).is_some());
}

/// Bob's context with Bob as its only admin: what a member's modified
/// software can always hold (its state, with another admin list).
fn as_admin(m: &Member) -> Context {
    let bytes = m.context.to_bytes();
    // version | id | me | epoch | secret | members (u16 + 64 each) | admins
    let members_at = 1 + 32 + 32 + 8 + 32;
    let n = u16::from_be_bytes([bytes[members_at], bytes[members_at + 1]]) as usize;
    let admins_at = members_at + 2 + 64 * n;
    let old = u16::from_be_bytes([bytes[admins_at], bytes[admins_at + 1]]) as usize;
    let mut out = bytes[..admins_at].to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(m.me().as_bytes());
    out.extend_from_slice(&bytes[admins_at + 2 + 32 * old..]);
    Context::restore(&m.identity, &out).unwrap()
}

/// Epoch rekeys in the journal: only an admin's that can matter to the
/// receiver is stored (and counted, so the member follows it); one signed
/// by a member who is not an admin, from the receiver's epoch, is refused
/// with blame (a member flooding forged rekeys is cut off like any bad
/// peer); an admin's from an epoch the receiver has not reached waits,
/// without blame, for a later reconciliation.
#[test]
fn only_rekeys_that_can_matter_are_stored() {
    let (a, b, mut c) = trio();
    let forged = as_admin(&b)
        .advance_epoch(&b.identity, &[a.me()], &mut rng(70))
        .unwrap();
    let mut copy = Context::restore(&a.identity, &a.context.to_bytes()).unwrap();
    let first = copy.advance_epoch(&a.identity, &[], &mut rng(71)).unwrap();
    let second = copy.advance_epoch(&a.identity, &[], &mut rng(72)).unwrap();
    // Sealed under the keys of the epoch each advances from.
    let sealed = |r: &EpochRekey| {
        let keys = copy.keys_at(r.from_epoch).unwrap();
        RendezvousFact::EpochRekey(Box::new(SealedRekey::seal(r, &keys).unwrap()))
    };
    // The admin's first rekey with its signature broken, sealed under the
    // right key by a member: refused with blame. The same rekey sealed
    // under another secret for epoch 0 (as on a branch this member never
    // took): deferred.
    let mut broken = first.clone();
    broken.signature[0] ^= 1;
    let broken = sealed(&broken);
    let elsewhere = {
        let other = EpochKeys::derive(a.ctx(), 0, &EpochSecret::from_bytes([0xEE; 32]));
        RendezvousFact::EpochRekey(Box::new(SealedRekey::seal(&first, &other).unwrap()))
    };
    let (forged, first_fact, second) = (sealed(&forged), sealed(&first), sealed(&second));
    let offer = |c: &mut Member, fact: RendezvousFact, at: u64| {
        let bytes = facts_message(vec![entry(fact, at)]);
        let mut s = Session::respond(Limits::default(), at);
        let written = c.with_replica(|rep| {
            s.receive(&bytes, rep, at).unwrap();
            rep.rekeys_written
        });
        (written, s.stats().facts_rejected)
    };
    assert_eq!(
        offer(&mut c, forged, T0 + 1),
        (0, 1),
        "not an admin: refused"
    );
    assert_eq!(
        offer(&mut c, second.clone(), T0 + 2),
        (0, 0),
        "too early: deferred"
    );
    assert_eq!(offer(&mut c, broken, T0 + 2), (0, 1), "bad signature");
    assert_eq!(
        offer(&mut c, elsewhere, T0 + 2),
        (0, 0),
        "another secret: deferred"
    );
    assert_eq!(
        offer(&mut c, first_fact, T0 + 3),
        (1, 0),
        "the admin's: stored"
    );
    let kinds = c.journal.by_kind(FactKind::EpochRekey, None, 10).unwrap();
    assert_eq!(kinds.len(), 1);
    // Once it is followed, the next one can matter, and is stored.
    c.context.apply_rekey(&c.identity, &first).unwrap();
    assert_eq!(offer(&mut c, second, T0 + 4), (1, 0));
}
