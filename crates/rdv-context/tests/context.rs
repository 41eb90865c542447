#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_context::*;

#[test]
fn invited_members_share_the_creators_keys() {
    let (a, b, c) = trio();
    for m in [&b, &c] {
        assert_eq!(m.ctx(), a.ctx());
        assert_eq!(m.context.epoch(), 0);
        assert_eq!(
            m.context.keys().descriptor_key(),
            a.context.keys().descriptor_key()
        );
        assert!(m.context.is_member(&a.me()), "the inviter is in the roster");
    }
    assert_eq!(
        a.context.keys().handshake_psk(&a.me(), &b.me()),
        b.context.keys().handshake_psk(&b.me(), &a.me())
    );
}

#[test]
fn invitation_text_is_versioned_and_pasteable() {
    let alice = identity(1);
    let ctx = Context::create(&alice, &mut rng(1));
    let text = ctx.invite(&alice, T0 + 1000).to_string();
    assert!(text.starts_with("rdv-invite-v1:"));
    assert!(text.len() < 450, "{} characters", text.len());
    assert!(text.is_ascii() && !text.contains(char::is_whitespace));
    // Wrapped by a mail client, and upper-cased: still the same invitation.
    let wrapped: String = text
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let parsed: Invitation = wrapped.parse().unwrap();
    assert_eq!(parsed.context_id(), ctx.id());
    assert_eq!(parsed.inviter(), alice.authority());
    assert_eq!(parsed.invitee(), None);
}

#[test]
fn invitation_parse_errors_say_what_is_wrong() {
    let alice = identity(1);
    let ctx = Context::create(&alice, &mut rng(1));
    let text = ctx.invite(&alice, T0 + 1000).to_string();
    let err = |s: &str| s.parse::<Invitation>().unwrap_err();

    assert!(matches!(
        err("hello"),
        InvitationError::Text(ArmorError::NotRdv { .. })
    ));
    let card = alice.static_key_binding().to_string();
    assert!(matches!(
        err(&card),
        InvitationError::Text(ArmorError::WrongKind { .. })
    ));
    assert!(err(&card).to_string().contains("member, not an rdv invite"));
    let v2 = text.replace("-v1:", "-v2:");
    assert!(
        err(&v2)
            .to_string()
            .contains("unsupported invite version 2")
    );
    // A typo in the middle.
    let mut typo = text.clone().into_bytes();
    let i = text.len() / 2;
    typo[i] = if typo[i] == b'q' { b'r' } else { b'q' };
    let e = err(std::str::from_utf8(&typo).unwrap());
    assert_eq!(e, InvitationError::Text(ArmorError::Checksum));
    assert!(e.to_string().contains("mistyped"));
    // Cut short.
    assert!(matches!(
        err(&text[..text.len() - 20]),
        InvitationError::Text(ArmorError::Checksum | ArmorError::BadLength(_))
    ));
    // A character outside the alphabet.
    let bad = format!("{}!{}", &text[..30], &text[31..]);
    assert!(err(&bad).to_string().contains("not base32"));
}

#[test]
fn forged_invitation_is_refused_as_forged_not_mistyped() {
    // Re-armour a payload whose signature no longer matches: the checksum
    // is fine, the signature is not.
    let alice = identity(1);
    let ctx = Context::create(&alice, &mut rng(1));
    let inv = ctx.invite(&alice, T0 + 1000);
    let mut bytes = inv.to_bytes();
    bytes[40] ^= 1; // the epoch
    let forged = Invitation::from_bytes(&bytes).unwrap();
    let text = forged.to_string();
    let parsed: Invitation = text.parse().unwrap();
    assert_eq!(
        parsed.accept(&identity(2), T0).unwrap_err(),
        InvitationError::BadSignature
    );
}

#[test]
fn expired_invitation_is_refused() {
    let alice = identity(1);
    let ctx = Context::create(&alice, &mut rng(1));
    let inv = ctx.invite(&alice, T0 + 1000);
    assert!(matches!(
        inv.accept(&identity(2), T0 + 1000),
        Err(InvitationError::Expired { .. })
    ));
}

#[test]
fn sealed_invitation_opens_only_for_its_invitee() {
    let alice = identity(1);
    let carol = identity(3);
    let eve = identity(4);
    let mut ctx = Context::create(&alice, &mut rng(1));
    let inv = ctx
        .invite_sealed(&alice, &carol.static_key_binding(), T0 + 1000, &mut rng(2))
        .unwrap();
    assert_eq!(inv.invitee(), Some(carol.authority()));
    assert!(matches!(
        inv.accept(&eve, T0),
        Err(InvitationError::NotForMe(_))
    ));
    // Eve with Carol's Ed25519 key but not her X25519 key cannot open it.
    let half = Identity::from_secret_bytes(carol.to_secret_bytes().0, [77; 32]);
    assert_eq!(
        inv.accept(&half, T0).unwrap_err(),
        InvitationError::Unreadable
    );
    assert_eq!(
        inv.accept(&carol, T0).unwrap().keys().descriptor_key(),
        ctx.keys().descriptor_key()
    );
    assert!(ctx.is_member(&carol.authority()));
}

#[test]
fn sealed_invitation_text_does_not_contain_the_secret() {
    let alice = identity(1);
    let carol = identity(3);
    let mut ctx = Context::create(&alice, &mut rng(1));
    let inv = ctx
        .invite_sealed(&alice, &carol.static_key_binding(), T0 + 1000, &mut rng(2))
        .unwrap();
    let bytes = inv.to_bytes();
    let secret = ctx.secret().expose();
    assert!(!bytes.windows(32).any(|w| w == secret));
    let bearer = ctx.invite(&alice, T0 + 1000).to_bytes();
    assert!(
        bearer.windows(32).any(|w| w == secret),
        "bearer carries it, as documented"
    );
}

#[test]
fn member_card_with_bad_signature_is_refused() {
    let alice = identity(1);
    let mut ctx = Context::create(&alice, &mut rng(1));
    let mut card = identity(2).static_key_binding();
    card.static_key = [9; 32];
    assert_eq!(ctx.add_member(&card), Err(ContextError::BadBinding));
    assert!(!ctx.is_member(&card.authority));
}

#[test]
fn advancing_the_epoch_locks_the_removed_member_out_and_remaining_members_agree() {
    let (mut a, mut b, mut c) = trio();
    // Alice learned Carol from the sealed invitation and Bob from his card.
    let old_secret = b.context.secret().clone();
    let old_keys = b.context.keys().clone();
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[b.me()], &mut rng(50))
        .unwrap();
    assert_eq!(a.context.epoch(), 1);
    assert!(!a.context.is_member(&b.me()));
    // The rekey carries no box for Bob.
    assert!(rekey.recipients.iter().all(|(who, _)| *who != b.me()));

    // Carol follows.
    assert_eq!(
        c.context.apply_rekey(&c.identity, &rekey).unwrap(),
        RekeyOutcome::Advanced { epoch: 1 }
    );
    assert_eq!(c.context.secret().expose(), a.context.secret().expose());
    assert_eq!(
        c.context.keys().descriptor_key(),
        a.context.keys().descriptor_key()
    );
    assert_eq!(
        c.context.keys().handshake_psk(&c.me(), &a.me()),
        a.context.keys().handshake_psk(&a.me(), &c.me())
    );

    // Bob is told he was removed, and stays at epoch 0.
    assert_eq!(
        b.context.apply_rekey(&b.identity, &rekey),
        Err(RekeyError::Removed { to: 1 })
    );
    assert_eq!(b.context.epoch(), 0);

    // What Bob can compute from everything he holds is not the new keys:
    // the old secret advanced with anything but Alice's fresh bytes.
    let new = a.context.keys();
    for guess in [[0u8; 32], *old_secret.expose(), *old_keys.descriptor_key()] {
        let s = old_secret.next(&a.ctx(), 1, &guess);
        let k = EpochKeys::derive(a.ctx(), 1, &s);
        assert_ne!(k.descriptor_key(), new.descriptor_key());
        assert_ne!(k.rendezvous_tag(0), new.rendezvous_tag(0));
    }
    assert_ne!(
        EpochKeys::derive(a.ctx(), 1, &old_secret).descriptor_key(),
        new.descriptor_key()
    );
    // And Bob cannot open Carol's box (sealed to Carol's key).
    let mut stolen = rekey.clone();
    let carols = stolen
        .recipients
        .iter()
        .find(|(who, _)| *who == c.me())
        .unwrap()
        .1
        .clone();
    stolen.recipients = vec![(b.me(), carols)];
    assert!(b.context.apply_rekey(&b.identity, &stolen).is_err());
    assert_eq!(b.context.epoch(), 0);

    // A descriptor Alice publishes at epoch 1 is unreadable to Bob.
    a.rekeyed();
    c.rekeyed();
    let out = a.publish(direct_hints(), T0);
    let EffectCommand::JournalAppend {
        fact: RendezvousFact::Descriptor(sealed),
        ..
    } = &out.effects[1]
    else {
        panic!("{:?}", out.effects)
    };
    assert!(c.service.cache_descriptor(sealed, T0 + 1).is_ok());
    assert!(matches!(
        b.service.cache_descriptor(sealed, T0 + 1),
        Err(DescriptorError::WrongEpoch { .. })
    ));
    // Even with a forged epoch-1 key derived from the old secret alone.
    let guess = EpochKeys::derive(a.ctx(), 1, &old_secret);
    assert_eq!(
        sealed.open(&guess, T0 + 1, &DescriptorPolicy::default()),
        Err(DescriptorError::WrongKey)
    );
}

#[test]
fn rekey_redelivered_is_a_no_op() {
    let (mut a, _b, mut c) = trio();
    let r1 = a
        .context
        .advance_epoch(&a.identity, &[], &mut rng(1))
        .unwrap();
    assert_eq!(
        c.context.apply_rekey(&c.identity, &r1).unwrap(),
        RekeyOutcome::Advanced { epoch: 1 }
    );
    let before = *c.context.secret().expose();
    assert_eq!(
        c.context.apply_rekey(&c.identity, &r1).unwrap(),
        RekeyOutcome::AlreadyApplied
    );
    assert_eq!(*c.context.secret().expose(), before);
}

#[test]
fn rekey_refusals_change_nothing() {
    let (mut a, _b, mut c) = trio();
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[], &mut rng(1))
        .unwrap();
    let before = *c.context.secret().expose();

    // Wrong context.
    let mut other = rekey.clone();
    other.context_id = ContextId::from_bytes([0xee; 32]);
    assert_eq!(
        c.context.apply_rekey(&c.identity, &other),
        Err(RekeyError::WrongContext)
    );
    // From an epoch we are not at.
    let mut skip = rekey.clone();
    skip.from_epoch = 1;
    skip.to_epoch = 2;
    assert!(matches!(
        c.context.apply_rekey(&c.identity, &skip),
        Err(RekeyError::WrongEpoch { .. })
    ));
    // Altered after the MAC: the author no longer proves membership.
    let mut altered = rekey.clone();
    altered.removed = vec![c.me()];
    assert_eq!(
        c.context.apply_rekey(&c.identity, &altered),
        Err(RekeyError::NotAMember)
    );
    // Signature replaced.
    let mut unsigned = rekey.clone();
    unsigned.signature[0] ^= 1;
    assert_eq!(
        c.context.apply_rekey(&c.identity, &unsigned),
        Err(RekeyError::BadSignature)
    );
    // An outsider (no epoch secret) cannot make one: its own context's
    // rekey, relabelled for ours, fails the membership MAC.
    let outsider = identity(9);
    let mut fake = Context::create(&outsider, &mut rng(3));
    fake.add_member(&c.identity.static_key_binding()).unwrap();
    let mut forged = fake.advance_epoch(&outsider, &[], &mut rng(3)).unwrap();
    forged.context_id = a.ctx();
    assert_eq!(
        c.context.apply_rekey(&c.identity, &forged),
        Err(RekeyError::NotAMember)
    );

    assert_eq!(*c.context.secret().expose(), before);
    assert_eq!(c.context.epoch(), 0);
    assert!(c.context.apply_rekey(&c.identity, &rekey).is_ok());
}

#[test]
fn member_cannot_remove_itself() {
    let (mut a, _, _) = trio();
    let me = a.me();
    assert_eq!(
        a.context
            .advance_epoch(&a.identity.clone(), &[me], &mut rng(1))
            .unwrap_err(),
        ContextError::CannotRemoveSelf
    );
    assert_eq!(a.context.epoch(), 0);
}

#[test]
fn rekey_bytes_round_trip() {
    let (mut a, _, mut c) = trio();
    let r = a
        .context
        .advance_epoch(&a.identity, &[identity(2).authority()], &mut rng(1))
        .unwrap();
    let back = EpochRekey::from_bytes(&r.to_bytes()).unwrap();
    assert_eq!(back, r);
    assert!(c.context.apply_rekey(&c.identity, &back).is_ok());
}
