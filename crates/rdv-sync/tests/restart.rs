#![allow(missing_docs, clippy::unwrap_used)]
//! A member whose journal is in SQLite restarts: the index is rebuilt from
//! the journal's (timestamp, id) key, and the next session resends nothing.

mod common;

use common::*;
use rdv_context::*;
use rdv_sync::*;

fn path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rdv-sync-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("journal.db")
}

/// Runs a session between `m` (initiating, memory journal) and a replica
/// over the SQLite journal `j`, with `service` and `context` for checks.
fn session(
    m: &mut Member,
    j: &mut Journal<SqliteJournal>,
    index: &mut SyncIndex,
    service: &mut RendezvousService,
    context: &Context,
    now: u64,
) -> Outcome {
    let is_member = |a: &AuthorityId| context.is_member(a);
    let former_member = |a: &AuthorityId| context.was_member(a);
    let rekeys = |r: &rdv_context::SealedRekey| rdv_sync::judge_rekey(context, r);
    let mut r = JournalReplica {
        journal: j,
        index,
        service,
        is_member: &is_member,
        former_member: &former_member,
        rekeys: &rekeys,
        rekeys_written: 0,
    };
    m.with_replica(|rm| run(rm, &mut r, Limits::default(), now))
        .unwrap()
}

#[test]
fn after_a_restart_the_next_session_resends_nothing() {
    let (mut a, mut b, _) = trio();
    let pb = b.me();
    for n in 0..100u8 {
        a.channel(pb, n, T0 + 10 + u64::from(n));
    }
    a.publish(T0 + 200);
    let file = path("restart");
    let mut service = std::mem::replace(
        &mut b.service,
        RendezvousService::new(identity(9), RendezvousConfig::default(), &mut rng(9)),
    );
    {
        let mut j = Journal::new(
            a.ctx(),
            SqliteJournal::open(&file, 1 << 20).unwrap(),
            60_000,
        )
        .unwrap();
        let mut index = SyncIndex::load(&j).unwrap();
        let o = session(
            &mut a,
            &mut j,
            &mut index,
            &mut service,
            &b.context,
            T0 + 300,
        );
        assert_eq!(o.initiator.facts_sent, 101);
        assert_eq!(j.len(), 101);
    }
    // Restart: reopen the file, rebuild the index.
    let mut j = Journal::new(
        a.ctx(),
        SqliteJournal::open(&file, 1 << 20).unwrap(),
        60_000,
    )
    .unwrap();
    let mut index = SyncIndex::load(&j).unwrap();
    assert_eq!(index.len(), 101);
    let o = session(
        &mut a,
        &mut j,
        &mut index,
        &mut service,
        &b.context,
        T0 + 400,
    );
    assert_eq!(o.round_trips, 1, "{o:?}");
    assert_eq!(o.initiator.facts_sent + o.responder.facts_sent, 0);
    assert!(
        o.initiator.bytes_sent + o.responder.bytes_sent < 64,
        "{o:?}"
    );
    // One new fact: exactly one travels.
    a.channel(pb, 200, T0 + 500);
    let o = session(
        &mut a,
        &mut j,
        &mut index,
        &mut service,
        &b.context,
        T0 + 600,
    );
    assert_eq!(o.initiator.facts_sent, 1);
    assert_eq!(o.responder.facts_sent, 0);
    assert_eq!(j.len(), 102);
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}
