//! Property tests: paging invariants and limits under random interleavings of
//! register, refresh, unregister, expiry and discovery, on virtual time.
#![allow(missing_docs)]

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use rdv_point::{Config, Formats, MemoryStore, Point, Store};
use rdv_wire::*;

const PEERS: u8 = 6;
/// One more namespace than `max_namespaces`, so that limit binds, and the
/// per-peer limit is below the namespaces a peer can use, so it binds too.
const NAMESPACES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Register { peer: u8, ns: usize, long: bool },
    Unregister { peer: u8, ns: usize },
    Advance { secs: u64 },
    Page { limit: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PEERS, 0..NAMESPACES.len(), any::<bool>()).prop_map(|(peer, ns, long)| Op::Register { peer, ns, long }),
        1 => (0..PEERS, 0..NAMESPACES.len()).prop_map(|(peer, ns)| Op::Unregister { peer, ns }),
        2 => (0..3 * H).prop_map(|secs| Op::Advance { secs }),
        3 => (1..4u64).prop_map(|limit| Op::Page { limit }),
    ]
}

/// What the test knows of one (peer, namespace): its deadline, a generation
/// that changes with every successful REGISTER (a refresh supersedes), and
/// when it last became registered after not being registered.
#[derive(Clone, Copy, Debug)]
struct Known {
    expires_at: u64,
    generation: u64,
    since: u64,
}

/// Every limit holds over what the store holds, swept or not (a scan at
/// time zero counts every held registration as live).
fn assert_within_limits(p: &Point<MemoryStore>, config: &Config) -> Result<(), TestCaseError> {
    let stats = p.store().stats();
    prop_assert!(stats.registrations <= config.max_registrations);
    prop_assert!(stats.namespaces <= config.max_namespaces);
    let held = p
        .store()
        .scan(None, 0, usize::MAX, Formats::ALL, Timestamp::from_millis(0))
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .registrations;
    prop_assert_eq!(held.len(), stats.registrations, "the scan saw everything");
    let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
    let mut per_ns: HashMap<String, usize> = HashMap::new();
    for r in &held {
        *per_peer.entry(r.peer).or_default() += 1;
        *per_ns.entry(r.namespace.to_string()).or_default() += 1;
    }
    prop_assert!(
        per_peer
            .values()
            .all(|&n| n <= config.max_registrations_per_peer),
        "a peer holds more than {}: {:?}",
        config.max_registrations_per_peer,
        per_peer
    );
    prop_assert!(
        per_ns
            .values()
            .all(|&n| n <= config.max_registrations_per_namespace),
        "a namespace holds more than {}: {:?}",
        config.max_registrations_per_namespace,
        per_ns
    );
    prop_assert_eq!(per_ns.len(), stats.namespaces);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn paging_never_repeats_and_never_skips_what_stayed_registered(
        setup in proptest::collection::vec((0..PEERS, 0..NAMESPACES.len()), 0..12),
        ops in proptest::collection::vec(op(), 0..50),
        scope in proptest::option::of(0..NAMESPACES.len()),
    ) {
        let config = Config {
            max_registrations_per_peer: 2,
            max_registrations_per_namespace: 3,
            max_namespaces: 3,
            max_registrations: 6,
            ..Config::default()
        };
        let mut p = point(config.clone());
        let peers: Vec<Peer> = (0..PEERS).map(|i| Peer::new(i + 1)).collect();
        let who: HashMap<_, _> = peers.iter().map(|x| (x.record.clone(), x.id)).collect();
        let mut known: HashMap<(PeerId, String), Known> = HashMap::new();
        let mut generation = 0u64;
        let mut now = 0u64; // ms

        let mut apply_register = |p: &mut Point<MemoryStore>, known: &mut HashMap<(PeerId, String), Known>, now: u64, peer: &Peer, ns: &str, long: bool| {
            let ttl = if long { 3 * H } else { 2 * H };
            let live_before = known.get(&(peer.id, ns.to_string())).filter(|k| k.expires_at > now).copied();
            let r = register_response(p.handle_request(peer.id, peer.register(ns, Some(ttl)), Timestamp::from_millis(now)));
            match r.status {
                ResponseStatus::Ok => {
                    generation += 1;
                    let since = live_before.map_or(generation, |k| k.since);
                    known.insert((peer.id, ns.to_string()), Known { expires_at: now + ttl * 1000, generation, since });
                }
                ResponseStatus::Unavailable | ResponseStatus::NotAuthorized => {
                    prop_assert!(live_before.is_none(), "a refresh of a live registration was refused");
                    let live: Vec<_> = known.iter().filter(|(_, k)| k.expires_at > now).map(|(key, _)| key.clone()).collect();
                    let per_peer = live.iter().filter(|(x, _)| *x == peer.id).count();
                    let per_ns = live.iter().filter(|(_, n)| n == ns).count();
                    let nss: HashSet<_> = live.iter().map(|(_, n)| n.clone()).collect();
                    prop_assert!(
                        per_peer >= config.max_registrations_per_peer
                            || per_ns >= config.max_registrations_per_namespace
                            || (!nss.contains(ns) && nss.len() >= config.max_namespaces)
                            || live.len() >= config.max_registrations,
                        "refused without a limit being reached"
                    );
                }
                s => prop_assert!(false, "unexpected status {s}"),
            }
            Ok(())
        };

        for (peer, ns) in setup {
            apply_register(&mut p, &mut known, now, &peers[peer as usize], NAMESPACES[ns], false)?;
            assert_within_limits(&p, &config)?;
        }
        let scope_ns = scope.map(|i| NAMESPACES[i]);
        let in_scope = |n: &str| scope_ns.is_none_or(|s| s == n);
        let live_at_start: HashMap<_, _> = known.iter()
            .filter(|((_, n), k)| k.expires_at > now && in_scope(n))
            .map(|(key, k)| (key.clone(), k.since)).collect();
        let mut returned: HashSet<((PeerId, String), u64)> = HashSet::new();
        let mut cookie = None;

        let mut page = |p: &mut Point<MemoryStore>, known: &HashMap<(PeerId, String), Known>, now: u64, limit: Option<u64>, cookie: &mut Option<Cookie>| -> Result<usize, TestCaseError> {
            let d = discover_response(p.handle_request(peers[0].id, discover(scope_ns, limit, cookie.clone()), Timestamp::from_millis(now)));
            prop_assert_eq!(d.status, ResponseStatus::Ok);
            prop_assert!(d.cookie.is_some());
            for r in &d.registrations {
                let key = (who[&r.signed_peer_record], r.namespace.to_string());
                let k = known.get(&key).copied();
                prop_assert!(k.is_some_and(|k| k.expires_at > now), "returned a registration that is not live");
                let k = k.unwrap_or(Known { expires_at: 0, generation: 0, since: 0 });
                prop_assert_eq!(r.ttl.as_secs(), (k.expires_at - now).div_ceil(1000));
                prop_assert!(returned.insert((key.clone(), k.generation)), "returned {:?} twice", key);
            }
            *cookie = d.cookie;
            Ok(d.registrations.len())
        };

        for op in ops {
            match op {
                Op::Register { peer, ns, long } => apply_register(&mut p, &mut known, now, &peers[peer as usize], NAMESPACES[ns], long)?,
                Op::Unregister { peer, ns } => {
                    let x = &peers[peer as usize];
                    p.handle_request(x.id, Message::Unregister(Unregister { namespace: common::ns(NAMESPACES[ns]), id: None }), Timestamp::from_millis(now));
                    known.remove(&(x.id, NAMESPACES[ns].to_string()));
                }
                Op::Advance { secs } => {
                    now += secs * 1000;
                    if p.poll_timeout().is_some_and(|t| t.as_millis() <= now) {
                        p.handle_timeout(Timestamp::from_millis(now));
                    }
                }
                Op::Page { limit } => { page(&mut p, &known, now, Some(limit), &mut cookie)?; }
            }
            assert_within_limits(&p, &config)?;
        }
        // Finish the walk.
        while page(&mut p, &known, now, Some(2), &mut cookie)? > 0 {}
        // Registered without a gap from the walk's start to its end (refreshes
        // allowed): the walk returned it, in its latest version.
        for (key, since) in live_at_start {
            if let Some(k) = known.get(&key).filter(|k| k.since == since && k.expires_at > now) {
                prop_assert!(returned.contains(&(key.clone(), k.generation)), "skipped {:?}, which stayed registered", key);
            }
        }
    }
}
