#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use rdv_context::keys::*;
use rdv_context::*;

const DOC: &str = include_str!("../../../docs/KEY-SCHEDULE.md");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Vectors {
    secret: EpochSecret,
    context: ContextId,
    a: AuthorityId,
    b: AuthorityId,
    keys: EpochKeys,
}

fn vectors() -> Vectors {
    let s: [u8; 32] = std::array::from_fn(|i| i as u8);
    let context = ContextId::from_bytes([0x42; 32]);
    let secret = EpochSecret::from_bytes(s);
    Vectors {
        keys: EpochKeys::derive(context, 7, &secret),
        secret,
        context,
        a: Identity::from_secret_bytes([1; 32], [0; 32]).authority(),
        b: Identity::from_secret_bytes([2; 32], [0; 32]).authority(),
    }
}

/// The `| name | `hex` |` rows of the vector table in the doc.
fn documented() -> HashMap<String, String> {
    DOC.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", name, value, ""] if value.starts_with('`') && value.len() == 66 => {
                    Some((name.to_string(), value.trim_matches('`').to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

fn base(v: &Vectors) -> Vec<u8> {
    [
        &v.secret.expose()[..],
        v.context.as_bytes(),
        &7u64.to_be_bytes(),
    ]
    .concat()
}

#[test]
fn vectors_published_in_the_doc_match_the_implementation() {
    let v = vectors();
    let doc = documented();
    assert!(DOC.contains(&hex(v.a.as_bytes())), "input a as documented");
    assert!(DOC.contains(&hex(v.b.as_bytes())), "input b as documented");
    let psk_root = blake3::derive_key(LABEL_PSK_ROOT, &base(&v));
    let tag_key = blake3::derive_key(LABEL_TAG_KEY, &base(&v));
    let computed: Vec<(&str, String)> = vec![
        (
            "next_epoch_secret",
            hex(v.secret.next(&v.context, 8, &[0xff; 32]).expose()),
        ),
        ("descriptor_key", hex(v.keys.descriptor_key())),
        ("psk_root", hex(&psk_root)),
        (
            "handshake_psk_ab",
            hex(&v.keys.handshake_psk(&v.a, &v.b)[..]),
        ),
        ("psk_commitment_a", hex(&v.keys.psk_commitment(&v.a))),
        ("tag_key", hex(&tag_key)),
        ("rendezvous_tag", hex(&v.keys.rendezvous_tag(12345))),
        (
            "rendezvous_peer_seed_a",
            hex(&v.keys.rendezvous_peer_seed(12345, &v.a)[..]),
        ),
        (
            "rekey_auth_key",
            hex(&blake3::derive_key(LABEL_REKEY_AUTH, &base(&v))),
        ),
        (
            "relay_grant_seed_b",
            hex(&v.keys.relay_grant_seed(&v.b)[..]),
        ),
        ("relay_handle_b_a", hex(&v.keys.relay_handle(&v.b, &v.a))),
    ];
    assert_eq!(
        doc.len(),
        computed.len(),
        "every documented vector is checked"
    );
    for (name, value) in computed {
        assert_eq!(doc.get(name), Some(&value), "vector {name}");
    }
    assert!(DOC.contains(&v.keys.rendezvous_namespace(12345)));
}

#[test]
fn documented_formulas_are_what_the_code_computes() {
    let v = vectors();
    let psk_root = blake3::derive_key(LABEL_PSK_ROOT, &base(&v));
    let (lo, hi) = if v.a < v.b { (v.a, v.b) } else { (v.b, v.a) };
    assert_eq!(
        *v.keys.handshake_psk(&v.a, &v.b),
        blake3::derive_key(
            LABEL_HANDSHAKE_PSK,
            &[&psk_root[..], lo.as_bytes(), hi.as_bytes()].concat()
        )
    );
    assert_eq!(
        v.keys.psk_commitment(&v.a),
        blake3::derive_key(
            LABEL_PSK_COMMITMENT,
            &[&psk_root[..], v.a.as_bytes()].concat()
        )
    );
    assert_eq!(
        *v.keys.descriptor_key(),
        blake3::derive_key(LABEL_DESCRIPTOR_KEY, &base(&v))
    );
    let tag_key = blake3::derive_key(LABEL_TAG_KEY, &base(&v));
    assert_eq!(
        v.keys.rendezvous_tag(12345),
        blake3::derive_key(
            LABEL_RENDEZVOUS_TAG,
            &[&tag_key[..], &12345u64.to_be_bytes()].concat()
        )
    );
    assert_eq!(
        *v.keys.rendezvous_peer_seed(12345, &v.a),
        blake3::derive_key(
            LABEL_RENDEZVOUS_PEER,
            &[&tag_key[..], &12345u64.to_be_bytes(), v.a.as_bytes()].concat()
        )
    );
    let relay_key = blake3::derive_key(LABEL_RELAY_KEY, &base(&v));
    assert_eq!(
        *v.keys.relay_grant_seed(&v.b),
        blake3::derive_key(
            LABEL_RELAY_GRANT,
            &[&relay_key[..], v.b.as_bytes()].concat()
        )
    );
    assert_eq!(
        v.keys.relay_handle(&v.b, &v.a),
        blake3::derive_key(
            LABEL_RELAY_HANDLE,
            &[&relay_key[..], v.b.as_bytes(), v.a.as_bytes()].concat()
        )
    );
    assert_eq!(
        *v.secret.next(&v.context, 8, &[0xff; 32]).expose(),
        blake3::derive_key(
            LABEL_EPOCH_SECRET,
            &[
                &v.secret.expose()[..],
                v.context.as_bytes(),
                &8u64.to_be_bytes(),
                &[0xff; 32]
            ]
            .concat()
        )
    );
    for label in ALL_LABELS {
        assert!(DOC.contains(label), "label {label} is documented");
    }
}

#[test]
fn commitment_check_accepts_only_the_publishers_value() {
    let v = vectors();
    let c = v.keys.psk_commitment(&v.a);
    assert!(v.keys.check_psk_commitment(&v.a, &c));
    assert!(!v.keys.check_psk_commitment(&v.b, &c));
    let other = EpochKeys::derive(v.context, 8, &v.secret);
    assert!(!other.check_psk_commitment(&v.a, &c));
}

fn authority(seed: u8) -> AuthorityId {
    Identity::from_secret_bytes([seed; 32], [0; 32]).authority()
}

/// Every 32-byte value an epoch hands out, tagged with what it is.
fn outputs(keys: &EpochKeys, members: &[AuthorityId], periods: &[u64]) -> Vec<(String, [u8; 32])> {
    let mut out = vec![("descriptor".to_string(), *keys.descriptor_key())];
    for (i, a) in members.iter().enumerate() {
        out.push((format!("commit {a:?}"), keys.psk_commitment(a)));
        for b in &members[i + 1..] {
            out.push((format!("psk {a:?} {b:?}"), *keys.handshake_psk(a, b)));
        }
    }
    for p in periods {
        out.push((format!("tag {p}"), keys.rendezvous_tag(*p)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// No two labels, epochs, contexts, pairs or periods give the same key.
    #[test]
    fn no_two_derivations_give_the_same_key(
        secret in any::<[u8; 32]>(),
        ctx_a in any::<[u8; 32]>(),
        ctx_b in any::<[u8; 32]>(),
        epoch in 0u64..1000,
        seeds in prop::collection::btree_set(1u8..200, 2..6),
        periods in prop::collection::btree_set(any::<u64>(), 1..4),
    ) {
        prop_assume!(ctx_a != ctx_b);
        let members: Vec<AuthorityId> = seeds.into_iter().map(authority).collect();
        let periods: Vec<u64> = periods.into_iter().collect();
        let s = EpochSecret::from_bytes(secret);
        let mut all: Vec<(String, [u8; 32])> = Vec::new();
        for (c, ctx) in [("A", ctx_a), ("B", ctx_b)] {
            let ctx = ContextId::from_bytes(ctx);
            for e in [epoch, epoch + 1] {
                let keys = EpochKeys::derive(ctx, e, &s);
                all.extend(outputs(&keys, &members, &periods).into_iter().map(|(n, k)| (format!("{c}/{e}/{n}"), k)));
                all.push((format!("{c}/{e}/next"), *s.next(&ctx, e + 1, &[0; 32]).expose()));
            }
        }
        all.push(("secret".into(), secret));
        let distinct: HashSet<[u8; 32]> = all.iter().map(|(_, k)| *k).collect();
        prop_assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn pairwise_psk_is_order_independent_and_pair_specific(
        secret in any::<[u8; 32]>(),
        x in 1u8..100, y in 100u8..200, z in 200u8..250,
    ) {
        let keys = EpochKeys::derive(ContextId::from_bytes([1; 32]), 3, &EpochSecret::from_bytes(secret));
        let (a, b, c) = (authority(x), authority(y), authority(z));
        prop_assert_eq!(&*keys.handshake_psk(&a, &b), &*keys.handshake_psk(&b, &a));
        prop_assert_ne!(&*keys.handshake_psk(&a, &b), &*keys.handshake_psk(&a, &c));
    }

    #[test]
    fn next_secret_depends_on_every_input(
        secret in any::<[u8; 32]>(), fresh in any::<[u8; 32]>(), other in any::<[u8; 32]>(), e in 0u64..u64::MAX - 1,
    ) {
        prop_assume!(fresh != other && secret != other);
        let s = EpochSecret::from_bytes(secret);
        let c = ContextId::from_bytes([5; 32]);
        let n = *s.next(&c, e + 1, &fresh).expose();
        prop_assert_ne!(n, *s.next(&c, e + 1, &other).expose());
        prop_assert_ne!(n, *EpochSecret::from_bytes(other).next(&c, e + 1, &fresh).expose());
        prop_assert_ne!(n, *s.next(&ContextId::from_bytes([6; 32]), e + 1, &fresh).expose());
        prop_assert_ne!(n, *s.next(&c, e, &fresh).expose());
    }
}
