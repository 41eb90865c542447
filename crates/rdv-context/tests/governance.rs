//! Who may advance the epoch and remove whom; concurrent advances resolve
//! to the same epoch secret on every member; the roster survives restarts.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_context::*;

/// The member's context as its own (modified) software might hold it: the
/// same state with another admin list. What a hostile member can always do.
fn with_admins(m: &Member, admins: &[AuthorityId]) -> Context {
    let bytes = m.context.to_bytes();
    // version | id | me | epoch | secret | members (u16 + 64 each) | admins ...
    let members_at = 1 + 32 + 32 + 8 + 32;
    let n = u16::from_be_bytes([bytes[members_at], bytes[members_at + 1]]) as usize;
    let admins_at = members_at + 2 + 64 * n;
    let m_old = u16::from_be_bytes([bytes[admins_at], bytes[admins_at + 1]]) as usize;
    let mut out = bytes[..admins_at].to_vec();
    out.extend_from_slice(&(admins.len() as u16).to_be_bytes());
    for a in admins {
        out.extend_from_slice(a.as_bytes());
    }
    out.extend_from_slice(&bytes[admins_at + 2 + 32 * m_old..]);
    Context::restore(&m.identity, &out).unwrap()
}

/// Alice (creator) appoints Bob admin at epoch 1; Carol stays a member.
fn trio_with_two_admins() -> (Member, Member, Member) {
    let (mut a, mut b, mut c) = trio();
    b.context
        .add_member(&c.identity.static_key_binding())
        .unwrap();
    let r = a
        .context
        .advance_epoch_appointing(&a.identity, &[], &[b.me()], &mut rng(40))
        .unwrap();
    let admins = vec![a.me(), b.me()];
    assert_eq!(r.admins, admins);
    for m in [&mut b, &mut c] {
        assert_eq!(
            m.context.apply_rekey(&m.identity, &r).unwrap(),
            RekeyOutcome::Advanced { epoch: 1 }
        );
        assert_eq!(m.context.admins(), &admins[..]);
    }
    (a, b, c)
}

#[test]
fn the_creator_is_the_first_admin_and_joiners_learn_the_admins() {
    let (a, b, c) = trio();
    assert_eq!(a.context.admins(), &[a.me()]);
    assert_eq!(b.context.admins(), &[a.me()]);
    assert_eq!(c.context.admins(), &[a.me()]);
    assert!(!b.context.is_admin(&b.me()));
}

#[test]
fn a_member_who_is_not_an_admin_cannot_remove_anyone() {
    let (a, mut b, mut c) = trio();
    let before = *b.context.secret().expose();
    assert_eq!(
        b.context
            .advance_epoch(&b.identity, &[c.me()], &mut rng(1))
            .unwrap_err(),
        ContextError::NotAnAdmin
    );
    assert_eq!(b.context.epoch(), 0);
    assert_eq!(*b.context.secret().expose(), before);

    // Bob's own software believes him an admin: his rekey is still refused
    // by everyone else, who know the admins.
    let mut rogue = with_admins(&b, &[b.me()]);
    rogue.add_member(&c.identity.static_key_binding()).unwrap();
    let forged = rogue
        .advance_epoch(&b.identity, &[a.me()], &mut rng(2))
        .unwrap();
    assert_eq!(
        c.context.apply_rekey(&c.identity, &forged),
        Err(RekeyError::NotAnAdmin { rotator: b.me() })
    );
    assert_eq!(c.context.epoch(), 0);
}

#[test]
fn admins_stay_in_order_and_appointments_name_members() {
    let (mut a, mut b, _c) = trio_with_two_admins();
    let stranger = identity(77).authority();
    assert_eq!(
        a.context
            .advance_epoch_appointing(&a.identity, &[], &[stranger], &mut rng(3))
            .unwrap_err(),
        ContextError::BadAppointment(stranger)
    );
    // A rekey that quietly drops an admin without removing it is refused.
    let mut rogue = with_admins(&b, &[b.me()]);
    let r = rogue.advance_epoch(&b.identity, &[], &mut rng(4)).unwrap();
    assert_eq!(
        a.context.apply_rekey(&a.identity, &r),
        Err(RekeyError::BadAdmins(
            "the admins not removed must stay, in their order"
        ))
    );
    let _ = &mut b;
}

/// Alice (senior admin) removes Bob (admin) while Bob advances first;
/// Carol sees both, in either order. Every remaining member ends on Alice's
/// epoch, with a secret Bob cannot derive.
fn removal_race(bob_removes_alice: bool, carol_sees_bob_first: bool) {
    let (mut a, mut b, mut c) = trio_with_two_admins();
    let bobs_victims = if bob_removes_alice {
        vec![a.me()]
    } else {
        vec![]
    };
    let rb = b
        .context
        .advance_epoch(&b.identity, &bobs_victims, &mut rng(5))
        .unwrap();
    let ra = a
        .context
        .advance_epoch(&a.identity, &[b.me()], &mut rng(6))
        .unwrap();
    let (first, second) = if carol_sees_bob_first {
        (&rb, &ra)
    } else {
        (&ra, &rb)
    };
    assert_eq!(
        c.context.apply_rekey(&c.identity, first).unwrap(),
        RekeyOutcome::Advanced { epoch: 2 }
    );
    let second_outcome = c.context.apply_rekey(&c.identity, second).unwrap();
    if carol_sees_bob_first {
        assert_eq!(second_outcome, RekeyOutcome::Replaced { epoch: 2 });
    } else {
        assert_eq!(second_outcome, RekeyOutcome::Outranked);
    }
    // Alice ignores Bob's, even the one that names her for removal.
    assert_eq!(
        a.context.apply_rekey(&a.identity, &rb).unwrap(),
        RekeyOutcome::Outranked
    );
    assert_eq!(c.context.epoch(), 2);
    assert_eq!(c.context.secret().expose(), a.context.secret().expose());
    assert!(!c.context.is_member(&b.me()));
    assert_eq!(c.context.admins(), &[a.me()]);
    // Bob holds his own epoch-2 secret, not the one the others share.
    assert_ne!(b.context.secret().expose(), a.context.secret().expose());
    assert_eq!(
        b.context.apply_rekey(&b.identity, &ra),
        Err(RekeyError::Removed { to: 2 })
    );
}

#[test]
fn a_removal_outranks_the_removed_admins_own_advance_whatever_arrives_first() {
    removal_race(false, true);
    removal_race(false, false);
}

#[test]
fn the_senior_admin_wins_when_two_admins_remove_each_other() {
    removal_race(true, true);
    removal_race(true, false);
}

#[test]
fn a_removed_admin_racing_ahead_by_several_epochs_is_undone() {
    let (mut a, mut b, mut c) = trio_with_two_admins();
    let rb1 = b
        .context
        .advance_epoch(&b.identity, &[], &mut rng(7))
        .unwrap();
    let rb2 = b
        .context
        .advance_epoch(&b.identity, &[], &mut rng(8))
        .unwrap();
    let ra = a
        .context
        .advance_epoch(&a.identity, &[b.me()], &mut rng(9))
        .unwrap();
    c.context.apply_rekey(&c.identity, &rb1).unwrap();
    c.context.apply_rekey(&c.identity, &rb2).unwrap();
    assert_eq!(c.context.epoch(), 3);
    assert_eq!(
        c.context.apply_rekey(&c.identity, &ra).unwrap(),
        RekeyOutcome::Replaced { epoch: 2 }
    );
    assert_eq!(c.context.secret().expose(), a.context.secret().expose());
    // Bob's later rekey no longer applies (it builds on the losing branch).
    assert!(c.context.apply_rekey(&c.identity, &rb2).is_err());
    assert_eq!(c.context.secret().expose(), a.context.secret().expose());
}

#[test]
fn concurrent_plain_advances_converge_on_one() {
    let (mut a, mut b, mut c) = trio_with_two_admins();
    let ra = a
        .context
        .advance_epoch(&a.identity, &[], &mut rng(10))
        .unwrap();
    let rb = b
        .context
        .advance_epoch(&b.identity, &[], &mut rng(11))
        .unwrap();
    c.context.apply_rekey(&c.identity, &rb).unwrap();
    // Alice is senior: her advance wins everywhere, Bob included.
    assert_eq!(
        c.context.apply_rekey(&c.identity, &ra).unwrap(),
        RekeyOutcome::Replaced { epoch: 2 }
    );
    assert_eq!(
        b.context.apply_rekey(&b.identity, &ra).unwrap(),
        RekeyOutcome::Replaced { epoch: 2 }
    );
    assert_eq!(
        a.context.apply_rekey(&a.identity, &rb).unwrap(),
        RekeyOutcome::Outranked
    );
    for m in [&b, &c] {
        assert_eq!(m.context.secret().expose(), a.context.secret().expose());
    }
}

#[test]
fn the_roster_and_admins_survive_a_restart() {
    let (mut a, mut b, mut c) = trio_with_two_admins();
    let bytes = a.context.to_bytes();
    let mut restored = Context::restore(&a.identity, &bytes).unwrap();
    assert_eq!(restored.admins(), a.context.admins());
    assert_eq!(
        restored.members().collect::<Vec<_>>(),
        a.context.members().collect::<Vec<_>>()
    );
    // After the restart an advance still reaches Bob and Carol.
    let r = restored
        .advance_epoch(&a.identity, &[], &mut rng(12))
        .unwrap();
    for m in [&mut b, &mut c] {
        assert_eq!(
            m.context.apply_rekey(&m.identity, &r).unwrap(),
            RekeyOutcome::Advanced { epoch: 2 }
        );
        assert_eq!(m.context.secret().expose(), restored.secret().expose());
    }
    // Another identity cannot load it.
    assert!(Context::restore(&b.identity, &bytes).is_err());
    // Truncated state is an error, not a panic.
    for cut in [0, 1, 40, bytes.len() - 1] {
        assert!(Context::restore(&a.identity, &bytes[..cut]).is_err());
    }
    // The restored history still weighs concurrent rekeys.
    a.context = restored;
}

#[test]
fn an_advance_refuses_to_drop_a_member_seen_publishing_without_its_key() {
    let (a, _b, _c) = trio();
    // A context whose roster was lost (only the member itself), seeing in
    // the journal that Dave published in this epoch.
    let mut ctx = with_admins(&a, &[a.me()]);
    let mut lost = Context::restore(&a.identity, &ctx.to_bytes()).unwrap();
    let dave = identity(44).authority();
    assert!(lost.note_publisher(dave, 0));
    assert!(
        !lost.note_publisher(identity(45).authority(), 9),
        "other epoch"
    );
    assert_eq!(
        lost.advance_epoch(&a.identity, &[], &mut rng(13))
            .unwrap_err(),
        ContextError::UnknownMemberKey(dave)
    );
    assert_eq!(lost.epoch(), 0);
    // Named for removal, it may go.
    assert!(
        lost.advance_epoch(&a.identity, &[dave], &mut rng(14))
            .is_ok()
    );
    // Learning its key makes the advance reach it.
    ctx.note_publisher(dave, 0);
    ctx.add_member(&identity(44).static_key_binding()).unwrap();
    let r = ctx.advance_epoch(&a.identity, &[], &mut rng(15)).unwrap();
    assert!(r.recipients.iter().any(|(who, _)| *who == dave));
}

#[test]
fn a_context_from_bare_parts_cannot_advance() {
    let alice = identity(1);
    let mut ctx = Context::from_parts(
        &alice,
        ContextId::from_bytes([5; 32]),
        0,
        EpochSecret::from_bytes([6; 32]),
    );
    assert_eq!(
        ctx.advance_epoch(&alice, &[], &mut rng(1)).unwrap_err(),
        ContextError::NotAnAdmin
    );
}

#[test]
fn the_context_store_keeps_the_roster_across_a_reopen() {
    let (mut a, mut b, _c) = trio_with_two_admins();
    let dir = std::env::temp_dir().join(format!("rdv-ctx-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("contexts.db");
    let _ = std::fs::remove_file(&path);
    {
        let mut store = ContextStore::open(&path).unwrap();
        store.insert("team", &a.context).unwrap();
        assert!(matches!(
            store.insert("team", &a.context),
            Err(ContextStoreError::NameTaken(_))
        ));
        assert!(matches!(
            store.insert("again", &a.context),
            Err(ContextStoreError::AlreadyStored(n)) if n == "team"
        ));
        assert!(matches!(
            store.insert("", &a.context),
            Err(ContextStoreError::BadName(_))
        ));
        // An advance is saved.
        let r = a
            .context
            .advance_epoch(&a.identity, &[], &mut rng(20))
            .unwrap();
        b.context.apply_rekey(&b.identity, &r).unwrap();
        assert!(store.save(&a.context).unwrap());
    }
    let store = ContextStore::open(&path).unwrap();
    assert_eq!(store.list().unwrap(), vec![("team".to_owned(), a.ctx())]);
    let mut back = store.load("team", &a.identity).unwrap().unwrap();
    assert_eq!(back.epoch(), 2);
    assert_eq!(back.secret().expose(), b.context.secret().expose());
    assert!(back.is_member(&b.me()));
    assert!(matches!(
        store.load("team", &b.identity),
        Err(ContextStoreError::Corrupt { .. })
    ));
    assert!(store.load("other", &a.identity).unwrap().is_none());
    let r = back.advance_epoch(&a.identity, &[], &mut rng(21)).unwrap();
    assert!(r.recipients.iter().any(|(who, _)| *who == b.me()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An advance travels between members as a journal fact (issue 12,
/// `rdv context remove`): the admin records it through the guard chain,
/// a remaining member that syncs the journal applies it and shares the new
/// secret, the removed member gets the fact and no secret, and a forged
/// or foreign rekey does not get into a journal.
#[test]
fn a_removal_travels_as_a_journal_fact() {
    let (mut a, mut b, mut c) = trio();
    b.context
        .add_member(&c.identity.static_key_binding())
        .unwrap();
    let snap = a.snapshot();
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[c.me()], &mut rng(50))
        .unwrap();
    // Someone else's advance, or one recorded after moving on: refused.
    let out = b.service.prepare_publish_rekey(&b.snapshot(), &rekey);
    assert!(!out.decision.is_allowed(), "{:?}", out.decision);
    let out = a.service.prepare_publish_rekey(&snap, &rekey);
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    a.fx.run(&out, T0).unwrap();
    a.rekeyed();
    let again = a.service.prepare_publish_rekey(&a.snapshot(), &rekey);
    assert!(!again.decision.is_allowed());

    let rekeys = |m: &Member| -> Vec<EpochRekey> {
        m.journal()
            .by_kind(FactKind::EpochRekey, None, 10)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.fact() {
                // Sealed under the epoch it advances from, which every
                // member it keeps or removes holds.
                RendezvousFact::EpochRekey(r) => m.context.open_rekey(r).ok(),
                _ => None,
            })
            .collect()
    };
    b.sync_from(&a, T0 + 1);
    let got = rekeys(&b);
    assert_eq!(got, vec![rekey.clone()]);
    assert_eq!(
        b.context.apply_rekey(&b.identity, &got[0]).unwrap(),
        RekeyOutcome::Advanced { epoch: 1 }
    );
    b.rekeyed();
    assert_eq!(
        b.context.keys().handshake_psk(&a.me(), &b.me()),
        a.context.keys().handshake_psk(&a.me(), &b.me()),
        "the same epoch-1 secret"
    );
    assert!(!b.context.is_member(&c.me()));

    c.sync_from(&a, T0 + 1);
    let got = rekeys(&c);
    assert_eq!(
        c.context.apply_rekey(&c.identity, &got[0]),
        Err(RekeyError::Removed { to: 1 })
    );
    assert_eq!(c.context.epoch(), 0);

    // A forged signature (sealed by a member holding the key), and a
    // rekey of another context, do not open as rekeys of this one.
    let mut forged = rekey.clone();
    forged.signature[5] ^= 1;
    let forged = SealedRekey::seal(&forged, &a.context.keys_at(0).unwrap()).unwrap();
    let mut other = Context::create(&a.identity, &mut rng(51));
    let foreign = other.advance_epoch(&a.identity, &[], &mut rng(52)).unwrap();
    let foreign = SealedRekey::seal(&foreign, &other.keys_at(0).unwrap()).unwrap();
    assert_eq!(
        b.context.open_rekey(&forged),
        Err(RecordError::BadSignature)
    );
    assert_eq!(b.context.open_rekey(&foreign), Err(RecordError::WrongKey));
}
