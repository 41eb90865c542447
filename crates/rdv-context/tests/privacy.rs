#![allow(missing_docs, clippy::unwrap_used)]
//! Privacy of the journal (issue 13, item 8): a journal copy, as sync
//! carries it and as the SQLite file holds it, names no member. Every kind
//! of fact is written (descriptors, a channel record, a revocation, an
//! epoch rekey removing a member), the journal stored in a file, and the
//! file's bytes searched for every member's authority and static key.
//! Members of the epoch still read every fact.

mod common;

use common::*;
use rdv_context::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_stored_journal_names_no_member_and_members_still_read_it() {
    let (mut a, mut b, mut c) = trio();
    for m in [&mut a, &mut b] {
        m.context
            .add_member(&c.identity.static_key_binding())
            .unwrap();
    }
    let ctx = a.ctx();
    a.publish(direct_hints(), T0);
    b.publish(direct_hints(), T0);
    c.publish(direct_hints(), T0);
    // Bob records a channel with Alice, then revokes his descriptor.
    let channel = RendezvousFact::channel_established(
        &b.identity,
        b.context.keys(),
        a.me(),
        b.me(),
        [3; 32],
        0,
    );
    b.fx.journal_mut(&ctx)
        .unwrap()
        .append(channel, T0 + 1)
        .unwrap();
    let out = b.service.prepare_revoke_descriptor(&b.snapshot(), ctx);
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    b.fx.run(&out, T0 + 2).unwrap();
    // Alice removes Carol.
    a.sync_from(&b, T0 + 3);
    a.sync_from(&c, T0 + 3);
    let snap = a.snapshot();
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[c.me()], &mut rng(50))
        .unwrap();
    let out = a.service.prepare_publish_rekey(&snap, &rekey);
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    a.fx.run(&out, T0 + 4).unwrap();
    let entries = a.journal().entries(None, 100).unwrap();
    let kinds: std::collections::BTreeSet<_> = entries.iter().map(|e| e.fact().kind()).collect();
    assert_eq!(kinds.len(), FactKind::ALL.len(), "every kind is written");

    // The journal as a file.
    let path = std::env::temp_dir().join(format!("rdv-privacy-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let mut j = Journal::new(ctx, SqliteJournal::open(&path, 1000).unwrap(), 60_000).unwrap();
        j.receive(&entries, T0 + 5).unwrap();
    }
    let mut stored = std::fs::read(&path).unwrap();
    stored.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", path.display()));
    }
    // And as sync carries it.
    let wire: Vec<u8> = entries.iter().flat_map(|e| e.to_bytes()).collect();
    for m in [&a, &b, &c] {
        for (what, secret) in [
            ("authority", m.me().as_bytes().to_vec()),
            ("static key", m.identity.static_public().to_vec()),
        ] {
            assert!(
                !contains(&stored, &secret),
                "the file names a member's {what}"
            );
            assert!(
                !contains(&wire, &secret),
                "the wire names a member's {what}"
            );
        }
    }

    // Bob, a member of epoch 0 kept by the rekey, reads every fact.
    let mut read = 0;
    for e in &entries {
        match e.fact() {
            RendezvousFact::Descriptor(d) => {
                d.open_any_time(b.context.keys(), &DescriptorPolicy::default())
                    .unwrap();
            }
            RendezvousFact::ChannelEstablished(r) => {
                let r = r.open(b.context.keys()).unwrap();
                assert_eq!((r.initiator, r.responder), (a.me(), b.me()));
            }
            RendezvousFact::DescriptorRevoked(r) => {
                assert_eq!(r.open(b.context.keys()).unwrap().authority, b.me());
            }
            RendezvousFact::EpochRekey(r) => {
                let r = b.context.open_rekey(r).unwrap();
                assert_eq!(r.removed, vec![c.me()]);
            }
        }
        read += 1;
    }
    assert_eq!(read, entries.len());
}
