#![allow(missing_docs, clippy::unwrap_used)]

//! Truncated, oversized and garbled input: every decoder returns a typed
//! error, never panics, and a refused input changes nothing.

mod common;

use common::*;
use proptest::prelude::*;
use rdv_context::receipt::Receipt;
use rdv_context::*;

/// Runs every decoder of the crate on `bytes`; none may panic.
fn decode_everything(bytes: &[u8]) {
    let _ = SealedDescriptor::from_bytes(bytes);
    let _ = RendezvousDescriptor::from_body_bytes(bytes);
    let _ = RendezvousFact::from_bytes(bytes);
    let _ = JournalEntry::from_bytes(bytes);
    let _ = Invitation::from_bytes(bytes);
    let _ = StaticKeyBinding::from_bytes(bytes);
    let _ = EpochRekey::from_bytes(bytes);
    let _ = Receipt::from_bytes(bytes);
    let _ = HandshakeInit::from_bytes(bytes);
    let _ = HandshakeComplete::from_bytes(bytes);
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = s.parse::<Invitation>();
        let _ = s.parse::<StaticKeyBinding>();
        let _ = s.parse::<AuthorityId>();
        let _ = s.parse::<ContextId>();
    }
}

struct Samples {
    sealed: Vec<u8>,
    body: Vec<u8>,
    facts: Vec<Vec<u8>>,
    entry: Vec<u8>,
    invitation: Vec<u8>,
    sealed_invitation: Vec<u8>,
    binding: Vec<u8>,
    rekey: Vec<u8>,
    receipt: Vec<u8>,
    init: Vec<u8>,
    complete: Vec<u8>,
}

fn samples() -> (Samples, Member, Member) {
    let (mut alice, mut bob, carol) = trio();
    let ctx = alice.ctx();
    let out = bob.publish(direct_hints(), T0);
    let EffectCommand::JournalAppend { fact, .. } = &out.effects[1] else {
        panic!()
    };
    let RendezvousFact::Descriptor(sealed) = fact else {
        panic!()
    };
    let descriptor = sealed
        .open(bob.context.keys(), T0, &DescriptorPolicy::default())
        .unwrap();
    let revoke = RendezvousFact::revoke(&bob.identity, bob.context.keys(), descriptor.nonce);
    let channel = RendezvousFact::channel_established(
        &bob.identity,
        bob.context.keys(),
        alice.me(),
        bob.me(),
        [3; 32],
        0,
    );
    let rekey = alice
        .context
        .advance_epoch(&alice.identity, &[carol.me()], &mut rng(9))
        .unwrap();
    let mut tmp = Context::create(&alice.identity, &mut rng(4));
    let sealed_inv = tmp
        .invite_sealed(
            &alice.identity,
            &carol.identity.static_key_binding(),
            T0 + 1,
            &mut rng(5),
        )
        .unwrap();
    let s = Samples {
        sealed: sealed.to_bytes(),
        body: descriptor.to_body_bytes(),
        facts: vec![fact.to_bytes(), revoke.to_bytes(), channel.to_bytes()],
        entry: bob.journal().entries(None, 1).unwrap()[0].to_bytes(),
        invitation: bob.context.invite(&bob.identity, T0 + 1).to_bytes(),
        sealed_invitation: sealed_inv.to_bytes(),
        binding: bob.identity.static_key_binding().to_bytes().to_vec(),
        rekey: rekey.to_bytes(),
        receipt: bob.fx.receipts()[0].to_bytes(),
        init: HandshakeInit {
            context_id: ctx,
            epoch: 0,
            route: Route::Relay,
            payload: vec![1, 2, 3],
            mac1: [0; MAC1_LEN],
        }
        .to_bytes(),
        complete: HandshakeComplete {
            context_id: ctx,
            epoch: 0,
            payload: vec![4, 5],
        }
        .to_bytes(),
    };
    (s, alice, bob)
}

fn all_samples(s: &Samples) -> Vec<Vec<u8>> {
    let mut v = vec![
        s.sealed.clone(),
        s.body.clone(),
        s.entry.clone(),
        s.invitation.clone(),
        s.sealed_invitation.clone(),
        s.binding.clone(),
        s.rekey.clone(),
        s.receipt.clone(),
        s.init.clone(),
        s.complete.clone(),
    ];
    v.extend(s.facts.iter().cloned());
    v
}

#[test]
fn valid_samples_round_trip() {
    let (s, _, _) = samples();
    assert_eq!(
        SealedDescriptor::from_bytes(&s.sealed).unwrap().to_bytes(),
        s.sealed
    );
    assert_eq!(
        RendezvousDescriptor::from_body_bytes(&s.body)
            .unwrap()
            .to_body_bytes(),
        s.body
    );
    for f in &s.facts {
        assert_eq!(&RendezvousFact::from_bytes(f).unwrap().to_bytes(), f);
    }
    assert_eq!(
        JournalEntry::from_bytes(&s.entry).unwrap().to_bytes(),
        s.entry
    );
    assert_eq!(
        Invitation::from_bytes(&s.invitation).unwrap().to_bytes(),
        s.invitation
    );
    assert_eq!(
        Invitation::from_bytes(&s.sealed_invitation)
            .unwrap()
            .to_bytes(),
        s.sealed_invitation
    );
    assert_eq!(
        StaticKeyBinding::from_bytes(&s.binding)
            .unwrap()
            .to_bytes()
            .to_vec(),
        s.binding
    );
    assert_eq!(
        EpochRekey::from_bytes(&s.rekey).unwrap().to_bytes(),
        s.rekey
    );
    assert_eq!(
        Receipt::from_bytes(&s.receipt).unwrap().to_bytes(),
        s.receipt
    );
    assert_eq!(
        HandshakeInit::from_bytes(&s.init).unwrap().to_bytes(),
        s.init
    );
    assert_eq!(
        HandshakeComplete::from_bytes(&s.complete)
            .unwrap()
            .to_bytes(),
        s.complete
    );
}

#[test]
fn every_truncation_of_every_encoding_is_a_typed_error() {
    let (s, _, _) = samples();
    let check = |bytes: &[u8], decode: &dyn Fn(&[u8]) -> bool| {
        for n in 0..bytes.len() {
            assert!(
                !decode(&bytes[..n]),
                "truncated to {n} of {} decoded",
                bytes.len()
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(!decode(&longer), "a trailing byte was accepted");
    };
    check(&s.sealed, &|b| SealedDescriptor::from_bytes(b).is_ok());
    check(&s.body, &|b| {
        RendezvousDescriptor::from_body_bytes(b).is_ok()
    });
    for f in &s.facts {
        check(f, &|b| RendezvousFact::from_bytes(b).is_ok());
    }
    check(&s.entry, &|b| JournalEntry::from_bytes(b).is_ok());
    check(&s.invitation, &|b| Invitation::from_bytes(b).is_ok());
    check(&s.sealed_invitation, &|b| Invitation::from_bytes(b).is_ok());
    check(&s.binding, &|b| StaticKeyBinding::from_bytes(b).is_ok());
    check(&s.rekey, &|b| EpochRekey::from_bytes(b).is_ok());
    check(&s.receipt, &|b| Receipt::from_bytes(b).is_ok());
    check(&s.init, &|b| HandshakeInit::from_bytes(b).is_ok());
    check(&s.complete, &|b| HandshakeComplete::from_bytes(b).is_ok());
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let big = vec![0u8; MAX_SEALED_DESCRIPTOR_LEN + 1];
    assert_eq!(
        SealedDescriptor::from_bytes(&big),
        Err(DescriptorError::TooLarge(MAX_SEALED_DESCRIPTOR_LEN + 1))
    );
    let big = vec![1u8; MAX_FACT_LEN + 1];
    assert!(matches!(
        RendezvousFact::from_bytes(&big),
        Err(DecodeError::TooLong { what: "fact", .. })
    ));
    // A length prefix that claims more than the bound is refused by the
    // prefix, not by reading: a 4 GiB claim allocates nothing.
    let mut init = HandshakeInit {
        context_id: ContextId::from_bytes([0; 32]),
        epoch: 0,
        route: Route::Direct,
        payload: vec![],
        mac1: [0; MAC1_LEN],
    }
    .to_bytes();
    let n = init.len();
    init[n - 4 - MAC1_LEN..n - MAC1_LEN].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        HandshakeInit::from_bytes(&init),
        Err(DecodeError::TooLong { .. })
    ));
    // Too many hints claimed.
    let mut body = RendezvousDescriptor {
        authority_id: identity(1).authority(),
        context_id: ContextId::from_bytes([0; 32]),
        transport_hints: vec![],
        handshake_psk_commitment: [0; 32],
        valid_from: 0,
        valid_until: 1,
        nonce: [0; 32],
        static_key: [0; 32],
    }
    .to_body_bytes();
    let n = body.len();
    body[n - 2..].copy_from_slice(&1000u16.to_be_bytes());
    assert!(matches!(
        RendezvousDescriptor::from_body_bytes(&body),
        Err(DecodeError::TooLong {
            what: "transport hints",
            ..
        })
    ));
}

#[test]
fn garbled_descriptor_is_refused_and_the_cache_is_unchanged() {
    let (s, mut alice, bob) = samples();
    let ctx = alice.ctx();
    let sealed = SealedDescriptor::from_bytes(&s.sealed).unwrap();
    // Every single-byte change of the ciphertext or header is refused.
    for i in 0..s.sealed.len() {
        let mut g = s.sealed.clone();
        g[i] ^= 0x20;
        match SealedDescriptor::from_bytes(&g) {
            Err(_) => {}
            Ok(d) => assert!(
                alice.service.cache_descriptor(&d, T0 + 1).is_err(),
                "byte {i} flipped was accepted"
            ),
        }
        assert!(alice.service.get_cached_descriptor(ctx, bob.me()).is_none());
    }
    // The genuine one is still accepted afterwards.
    assert_eq!(
        alice.service.cache_descriptor(&sealed, T0 + 1),
        Ok(bob.me())
    );
}

#[test]
fn garbled_journal_entry_never_reaches_the_journal() {
    let (s, mut alice, _) = samples();
    let ctx = alice.ctx();
    let before = alice.journal().len();
    for i in 0..s.entry.len() {
        let mut g = s.entry.clone();
        g[i] ^= 0x01;
        if let Ok(e) = JournalEntry::from_bytes(&g) {
            // It decodes as a different fact (a timestamp or ciphertext
            // byte): content addressing gives it a different id.
            assert_ne!(e.to_bytes(), s.entry);
            let _ = alice.fx.journal_mut(&ctx).unwrap().receive(&[e], T0);
        }
    }
    // Whatever went in was validated (context, signatures, drift): the
    // genuine entries are untouched.
    assert!(alice.journal().len() >= before);
    let genuine = JournalEntry::from_bytes(&s.entry).unwrap();
    alice
        .fx
        .journal_mut(&ctx)
        .unwrap()
        .receive(std::slice::from_ref(&genuine), T0)
        .unwrap();
    assert!(alice.journal().contains(&genuine.id()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes);
    }

    #[test]
    fn random_text_never_panics_the_text_parsers(s in "\\PC{0,400}") {
        decode_everything(s.as_bytes());
        let _ = format!("rdv-invite-v1:{s}").parse::<Invitation>();
        let _ = format!("rdv-member-v1:{s}").parse::<StaticKeyBinding>();
    }

    #[test]
    fn random_base32_with_a_valid_prefix_is_refused_cleanly(s in "[a-z2-7]{0,500}") {
        let invite = format!("rdv-invite-v1:{s}");
        let member = format!("rdv-member-v1:{s}");
        prop_assert!(invite.parse::<Invitation>().is_err());
        prop_assert!(member.parse::<StaticKeyBinding>().is_err());
    }
}

#[test]
fn mutated_valid_encodings_never_panic() {
    let (s, _, _) = samples();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    let all = all_samples(&s);
    runner
        .run(
            &(
                0..all.len(),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            ),
            |(which, edits)| {
                let mut b = all[which].clone();
                for (i, v) in edits {
                    let i = i.index(b.len());
                    b[i] = v;
                }
                decode_everything(&b);
                Ok(())
            },
        )
        .unwrap();
}

/// A channel record is sealed, so the journal cannot check it (sync opens
/// it with the epoch's keys before writing, `rdv-sync`'s replica): what
/// opening refuses is a record its recorder was no end of, and one sealed
/// in another context.
#[test]
fn channel_records_not_signed_by_one_of_their_ends_do_not_open() {
    let (alice, bob, carol) = trio();
    let keys = alice.context.keys();
    let record = |fact: &RendezvousFact| match fact {
        RendezvousFact::ChannelEstablished(sealed) => sealed.open(keys),
        other => panic!("{other:?}"),
    };
    let honest =
        RendezvousFact::channel_established(&bob.identity, keys, alice.me(), bob.me(), [7; 32], 0);
    assert_eq!(record(&honest).unwrap().recorder, bob.me());
    // Carol records a channel between Alice and Bob that she was no end of.
    let by_carol = RendezvousFact::channel_established(
        &carol.identity,
        keys,
        alice.me(),
        bob.me(),
        [7; 32],
        0,
    );
    assert_eq!(record(&by_carol), Err(RecordError::BadSignature));
    // Bob's record of the same channel sealed in another context.
    let elsewhere = EpochKeys::derive(
        ContextId::from_bytes([9; 32]),
        keys.epoch(),
        &EpochSecret::from_bytes([9; 32]),
    );
    let other_context = RendezvousFact::channel_established(
        &bob.identity,
        &elsewhere,
        alice.me(),
        bob.me(),
        [7; 32],
        0,
    );
    assert_eq!(record(&other_context), Err(RecordError::WrongKey));
    // The bytes name neither end.
    let bytes = honest.to_bytes();
    for who in [alice.me(), bob.me()] {
        assert!(!bytes.windows(32).any(|w| w == who.as_bytes()));
    }
}
