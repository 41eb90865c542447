//! Given/when/then tests of every rule of the point, on virtual time.
#![allow(missing_docs)]

mod common;

use common::*;
use rdv_point::{Config, CookieKey, Event, MemoryStore, Point, Store, Verification};
use rdv_wire::*;

fn ok_ttl(r: &RegisterResponse) -> u64 {
    assert_eq!(r.status, ResponseStatus::Ok, "{}", r.status_text);
    r.ttl.expect("granted ttl").as_secs()
}

#[test]
fn registered_peer_is_discovered_with_remaining_ttl() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let r = register_response(p.handle_request(a.id, a.register("chat", Some(3 * H)), at(0)));
    assert_eq!(ok_ttl(&r), 3 * H);
    let d = discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(100)));
    assert_eq!(d.status, ResponseStatus::Ok);
    assert_eq!(d.registrations.len(), 1);
    assert_eq!(d.registrations[0].signed_peer_record, a.record);
    assert_eq!(d.registrations[0].namespace, ns("chat"));
    assert_eq!(d.registrations[0].ttl, Ttl::from_secs(3 * H - 100));
    assert!(d.cookie.is_some(), "a cookie is always returned");
}

#[test]
fn register_without_ttl_is_granted_the_default() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let r = register_response(p.handle_request(a.id, a.register("chat", None), at(0)));
    assert_eq!(ok_ttl(&r), 2 * H);
}

#[test]
fn ttl_bounds_are_inclusive_and_outside_is_invalid_ttl() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    for (ttl, ok) in [
        (2 * H - 1, false),
        (2 * H, true),
        (72 * H, true),
        (72 * H + 1, false),
    ] {
        let r = register_response(p.handle_request(a.id, a.register("chat", Some(ttl)), at(0)));
        if ok {
            assert_eq!(ok_ttl(&r), ttl);
        } else {
            assert_eq!(r.status, ResponseStatus::InvalidTtl, "ttl {ttl}");
            assert!(
                r.status_text.contains("7200s..=259200s"),
                "{}",
                r.status_text
            );
        }
    }
}

/// Registers `peer` in "chat" for 3 h at time zero and gives what the store
/// holds for it, so a test can check a refused request left it as it was.
fn registered_for_3h(
    p: &mut Point<MemoryStore>,
    peer: &Peer,
) -> rdv_point::store::StoredRegistration {
    ok_ttl(&register_response(p.handle_request(
        peer.id,
        peer.register("chat", Some(3 * H)),
        at(0),
    )));
    let held = held(p, &peer.id, "chat").expect("registered");
    assert_eq!(held.record, peer.record);
    assert_eq!(held.expires_at, at(3 * H));
    held
}

/// The registration of `peer` in "chat" is still `before`: same record
/// bytes, same expiry, same position (not superseded).
fn assert_unchanged(
    p: &Point<MemoryStore>,
    peer: &Peer,
    before: &rdv_point::store::StoredRegistration,
) {
    let now = held(p, &peer.id, "chat").expect("still registered");
    assert_eq!(now.record, before.record, "record bytes changed");
    assert_eq!(now.expires_at, before.expires_at, "expiry changed");
    assert_eq!(now, *before);
}

#[test]
fn registering_someone_elses_record_is_not_authorized_and_changes_nothing() {
    let mut p = point(Config::default());
    let (a, b) = (Peer::new(1), Peer::new(2));
    let before = registered_for_3h(&mut p, &b);
    // b presents a's (valid) record, in a namespace b is registered in.
    let r = register_response(p.handle_request(b.id, a.register("chat", None), at(10)));
    assert_eq!(r.status, ResponseStatus::NotAuthorized);
    assert_unchanged(&p, &b, &before);
    assert_eq!(held(&p, &a.id, "chat"), None);
    assert_eq!(p.store().stats().registrations, 1);
}

#[test]
fn garbage_record_is_invalid_signed_peer_record_and_changes_nothing() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let before = registered_for_3h(&mut p, &a);
    let mut tampered = a.record.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1; // inside the signature
    for bad in [b"not an envelope".to_vec(), tampered] {
        let msg = Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: bad.into(),
            ttl: None,
        });
        let r = register_response(p.handle_request(a.id, msg, at(10)));
        assert_eq!(r.status, ResponseStatus::InvalidSignedPeerRecord);
        assert_unchanged(&p, &a, &before);
    }
    assert_eq!(p.store().stats().registrations, 1);
}

#[test]
fn standard_and_legacy_records_are_both_accepted() {
    let mut p = point(Config::default());
    let a = Peer::with_format(1, RecordFormat::Standard);
    let b = Peer::with_format(2, RecordFormat::Legacy);
    for peer in [&a, &b] {
        let r = register_response(p.handle_request(peer.id, peer.register("chat", None), at(0)));
        ok_ttl(&r);
    }
    let d = discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(1)));
    assert_eq!(peers_of(&d), vec![a.id, b.id]);
}

/// go-libp2p-rendezvous's original schema (py-libp2p): an unsigned PeerInfo
/// is taken when its id is the peer on the connection (nothing else vouches
/// for it), refused as not authorized otherwise, and served only to askers
/// that read that format.
#[test]
fn an_unsigned_peer_info_is_accepted_only_from_the_peer_it_names() {
    let mut p = point(Config::default());
    let (s, py, other) = (
        Peer::new(1),
        Peer::with_format(2, RecordFormat::PeerInfo),
        Peer::new(3),
    );
    ok_ttl(&register_response(p.handle_request(
        s.id,
        s.register("chat", None),
        at(0),
    )));
    // Someone else's PeerInfo: refused, nothing written.
    let r = register_response(p.handle_request(other.id, py.register("chat", None), at(1)));
    assert_eq!(r.status, ResponseStatus::NotAuthorized, "{r:?}");
    assert_eq!(held(&p, &py.id, "chat"), None);
    assert_eq!(held(&p, &other.id, "chat"), None);
    // Its own: accepted and stored with its kind.
    ok_ttl(&register_response(p.handle_request(
        py.id,
        py.register("chat", None),
        at(2),
    )));
    assert_eq!(held(&p, &py.id, "chat").unwrap().record, py.record);
    let mut only = |f| {
        let req = match discover(Some("chat"), None, None) {
            Message::Discover(d) => d,
            _ => unreachable!(),
        };
        peers_of(&p.handle_discover_for(s.id, req, rdv_point::Formats::only(f), at(3)))
    };
    assert_eq!(only(RecordFormat::PeerInfo), vec![py.id]);
    assert_eq!(only(RecordFormat::Standard), vec![s.id]);
    assert_eq!(only(RecordFormat::Legacy), Vec::<PeerId>::new());
    let d = discover_response(p.handle_request(s.id, discover(Some("chat"), None, None), at(3)));
    assert_eq!(peers_of(&d), vec![s.id, py.id]);
}

#[test]
fn record_size_limit_accepts_exactly_the_bound_and_refuses_one_byte_over() {
    let a = Peer::new(1);
    let len = a.record.len();
    let mut p = limited(|c| c.max_record_size = len);
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("chat", None),
        at(0),
    )));
    let mut p = limited(|c| c.max_record_size = len - 1);
    let r = register_response(p.handle_request(a.id, a.register("chat", None), at(0)));
    assert_eq!(r.status, ResponseStatus::InvalidSignedPeerRecord);
    assert!(
        r.status_text.contains(&format!(
            "{len} bytes; this point accepts at most {}",
            len - 1
        )),
        "{}",
        r.status_text
    );
    assert_eq!(p.store().stats().registrations, 0);
}

#[test]
fn oversized_record_is_refused() {
    let mut p = point(Config {
        max_record_size: 100,
        ..Config::default()
    });
    let a = Peer::new(1);
    assert!(a.record.len() > 100);
    let r = register_response(p.handle_request(a.id, a.register("chat", None), at(0)));
    assert_eq!(r.status, ResponseStatus::InvalidSignedPeerRecord);
    assert!(r.status_text.contains("at most 100"));
}

#[test]
fn refresh_replaces_the_registration_and_extends_its_expiry() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("chat", None),
        at(0),
    )));
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("chat", None),
        at(H),
    )));
    assert_eq!(p.store().stats().registrations, 1);
    // The first registration would have expired at 2 h; the refresh keeps it to 3 h.
    p.handle_timeout(at(2 * H + 1));
    assert_eq!(p.store().stats().registrations, 1);
    assert_eq!(p.poll_timeout(), Some(at(3 * H)));
    let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::PeerRegistered { refresh: true, .. }))
    );
}

#[test]
fn identical_refresh_skips_verification_but_a_changed_record_does_not() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let req = |peer: &Peer| match peer.register("chat", None) {
        Message::Register(r) => r,
        _ => unreachable!(),
    };
    assert!(p.needs_verification(&a.id, &req(&a), at(0)));
    p.handle_request(a.id, a.register("chat", None), at(0));
    assert!(!p.needs_verification(&a.id, &req(&a), at(1)));
    // A caller claiming "same as stored" for a record that is not: the point verifies it.
    let b = Peer::new(2);
    let r = p.handle_register(a.id, req(&b), Verification::SameAsStored, at(2));
    assert_eq!(r.status, ResponseStatus::NotAuthorized);
}

fn limited(f: impl FnOnce(&mut Config)) -> Point<MemoryStore> {
    let mut c = Config::default();
    f(&mut c);
    point(c)
}

#[test]
fn per_peer_limit_refuses_one_more_but_allows_refresh_at_the_cap() {
    let mut p = limited(|c| c.max_registrations_per_peer = 3);
    let a = Peer::new(1);
    for i in 0..3 {
        ok_ttl(&register_response(p.handle_request(
            a.id,
            a.register(&format!("ns{i}"), None),
            at(0),
        )));
    }
    let r = register_response(p.handle_request(a.id, a.register("ns3", None), at(0)));
    assert_eq!(r.status, ResponseStatus::NotAuthorized);
    assert!(
        r.status_text.contains("at most 3 registrations per peer"),
        "{}",
        r.status_text
    );
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("ns1", None),
        at(1),
    )));
    // Another peer is not affected.
    let b = Peer::new(2);
    ok_ttl(&register_response(p.handle_request(
        b.id,
        b.register("ns3", None),
        at(1),
    )));
    // After an unregister there is room again.
    p.handle_request(
        a.id,
        Message::Unregister(Unregister {
            namespace: ns("ns0"),
            id: None,
        }),
        at(2),
    );
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("ns3", None),
        at(2),
    )));
}

#[test]
fn per_namespace_limit_refuses_one_more_but_allows_refresh_at_the_cap() {
    let mut p = limited(|c| c.max_registrations_per_namespace = 2);
    let peers: Vec<_> = (1..=3).map(Peer::new).collect();
    for x in &peers[..2] {
        ok_ttl(&register_response(p.handle_request(
            x.id,
            x.register("chat", None),
            at(0),
        )));
    }
    let r =
        register_response(p.handle_request(peers[2].id, peers[2].register("chat", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable);
    ok_ttl(&register_response(p.handle_request(
        peers[0].id,
        peers[0].register("chat", None),
        at(1),
    )));
    ok_ttl(&register_response(p.handle_request(
        peers[2].id,
        peers[2].register("other", None),
        at(1),
    )));
}

#[test]
fn namespace_limit_refuses_a_new_namespace_but_not_existing_ones() {
    let mut p = limited(|c| c.max_namespaces = 2);
    let (a, b) = (Peer::new(1), Peer::new(2));
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("x", None),
        at(0),
    )));
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("y", None),
        at(0),
    )));
    let r = register_response(p.handle_request(a.id, a.register("z", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable);
    ok_ttl(&register_response(p.handle_request(
        b.id,
        b.register("y", None),
        at(0),
    )));
    // When a namespace empties it no longer counts.
    p.handle_request(
        a.id,
        Message::Unregister(Unregister {
            namespace: ns("x"),
            id: None,
        }),
        at(1),
    );
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("z", None),
        at(1),
    )));
}

#[test]
fn namespace_limit_allows_a_refresh_at_the_cap() {
    let mut p = limited(|c| c.max_namespaces = 2);
    let a = Peer::new(1);
    for n in ["x", "y"] {
        ok_ttl(&register_response(p.handle_request(
            a.id,
            a.register(n, None),
            at(0),
        )));
    }
    let r = register_response(p.handle_request(a.id, a.register("z", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable, "at the cap");
    assert_eq!(
        ok_ttl(&register_response(p.handle_request(
            a.id,
            a.register("x", Some(3 * H)),
            at(1),
        ))),
        3 * H
    );
    assert_eq!(held(&p, &a.id, "x").unwrap().expires_at, at(1 + 3 * H));
    let stats = p.store().stats();
    assert_eq!((stats.namespaces, stats.registrations), (2, 2));
}

#[test]
fn total_limit_allows_a_refresh_at_the_cap() {
    let mut p = limited(|c| c.max_registrations = 2);
    let peers: Vec<_> = (1..=3).map(Peer::new).collect();
    for (i, x) in peers[..2].iter().enumerate() {
        ok_ttl(&register_response(p.handle_request(
            x.id,
            x.register(&format!("n{i}"), None),
            at(0),
        )));
    }
    let r = register_response(p.handle_request(peers[2].id, peers[2].register("n0", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable, "at the cap");
    assert_eq!(
        ok_ttl(&register_response(p.handle_request(
            peers[1].id,
            peers[1].register("n1", Some(3 * H)),
            at(1),
        ))),
        3 * H
    );
    assert_eq!(
        held(&p, &peers[1].id, "n1").unwrap().expires_at,
        at(1 + 3 * H)
    );
    assert_eq!(p.store().stats().registrations, 2);
}

#[test]
fn total_limit_refuses_one_more() {
    let mut p = limited(|c| c.max_registrations = 2);
    let peers: Vec<_> = (1..=3).map(Peer::new).collect();
    for (i, x) in peers.iter().enumerate() {
        let r =
            register_response(p.handle_request(x.id, x.register(&format!("n{i}"), None), at(0)));
        assert_eq!(r.status == ResponseStatus::Ok, i < 2);
    }
}

#[test]
fn expired_registrations_free_their_slot_under_a_limit() {
    let mut p = limited(|c| c.max_registrations_per_namespace = 1);
    let (a, b) = (Peer::new(1), Peer::new(2));
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("chat", None),
        at(0),
    )));
    // No handle_timeout call in between: a request sweeps what is due.
    ok_ttl(&register_response(p.handle_request(
        b.id,
        b.register("chat", None),
        at(2 * H),
    )));
}

#[test]
fn unregister_removes_and_unknown_unregister_is_a_silent_no_op() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    p.handle_request(a.id, a.register("chat", None), at(0));
    while p.poll_event().is_some() {}
    let un = |s: &str| {
        Message::Unregister(Unregister {
            namespace: ns(s),
            id: None,
        })
    };
    assert_eq!(p.handle_request(a.id, un("other"), at(1)), None);
    assert_eq!(p.poll_event(), None);
    // Another peer cannot remove a's registration.
    let b = Peer::new(2);
    assert_eq!(p.handle_request(b.id, un("chat"), at(1)), None);
    assert_eq!(p.store().stats().registrations, 1);
    assert_eq!(p.handle_request(a.id, un("chat"), at(1)), None);
    assert_eq!(p.store().stats().registrations, 0);
    assert!(matches!(
        p.poll_event(),
        Some(Event::PeerUnregistered { .. })
    ));
}

#[test]
fn discover_of_unknown_namespace_is_empty_with_a_cookie() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let d = discover_response(p.handle_request(a.id, discover(Some("nobody"), None, None), at(0)));
    assert_eq!(d.status, ResponseStatus::Ok);
    assert!(d.registrations.is_empty());
    assert!(d.cookie.is_some());
}

#[test]
fn discover_without_namespace_returns_all_namespaces() {
    let mut p = point(Config::default());
    let (a, b) = (Peer::new(1), Peer::new(2));
    p.handle_request(a.id, a.register("x", None), at(0));
    p.handle_request(b.id, b.register("y", None), at(0));
    let d = discover_response(p.handle_request(a.id, discover(None, None, None), at(1)));
    let got: Vec<_> = d
        .registrations
        .iter()
        .map(|r| r.namespace.to_string())
        .collect();
    assert_eq!(got, ["x", "y"]);
}

#[test]
fn discover_limit_at_the_cap_above_it_or_absent_returns_the_cap() {
    let mut p = limited(|c| c.max_discover_limit = 3);
    let peers: Vec<_> = (1..=5).map(Peer::new).collect();
    for x in &peers {
        ok_ttl(&register_response(p.handle_request(
            x.id,
            x.register("chat", None),
            at(0),
        )));
    }
    for limit in [Some(3), Some(4), None] {
        let d = discover_response(p.handle_request(
            peers[0].id,
            discover(Some("chat"), limit, None),
            at(0),
        ));
        assert_eq!(d.status, ResponseStatus::Ok);
        assert_eq!(
            peers_of(&d),
            peers[..3].iter().map(|x| x.id).collect::<Vec<_>>(),
            "limit {limit:?}"
        );
    }
}

#[test]
fn discover_limit_is_honoured_and_capped() {
    let mut p = limited(|c| c.max_discover_limit = 3);
    let peers: Vec<_> = (1..=5).map(Peer::new).collect();
    for x in &peers {
        p.handle_request(x.id, x.register("chat", None), at(0));
    }
    let d = discover_response(p.handle_request(
        peers[0].id,
        discover(Some("chat"), Some(2), None),
        at(0),
    ));
    assert_eq!(d.registrations.len(), 2);
    let d = discover_response(p.handle_request(
        peers[0].id,
        discover(Some("chat"), Some(100), None),
        at(0),
    ));
    assert_eq!(d.registrations.len(), 3);
}

#[test]
fn paging_with_cookies_returns_each_registration_once_then_nothing_new() {
    let mut p = point(Config::default());
    let peers: Vec<_> = (1..=7).map(Peer::new).collect();
    for x in &peers {
        p.handle_request(x.id, x.register("chat", None), at(0));
    }
    let mut seen = Vec::new();
    let mut cookie = None;
    for _ in 0..4 {
        let d = discover_response(p.handle_request(
            peers[0].id,
            discover(Some("chat"), Some(3), cookie),
            at(1),
        ));
        seen.extend(peers_of(&d));
        cookie = d.cookie;
    }
    let want: Vec<_> = peers.iter().map(|x| x.id).collect();
    assert_eq!(seen, want);
    // Incremental: a newcomer appears on the next poll with the same cookie, alone.
    let z = Peer::new(99);
    p.handle_request(z.id, z.register("chat", None), at(2));
    let d = discover_response(p.handle_request(
        peers[0].id,
        discover(Some("chat"), None, cookie),
        at(2),
    ));
    assert_eq!(peers_of(&d), vec![z.id]);
}

#[test]
fn reregistration_after_expiry_is_new_to_an_incremental_poller() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    p.handle_request(a.id, a.register("chat", None), at(0));
    let d = discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(1)));
    assert_eq!(d.registrations.len(), 1);
    p.handle_request(a.id, a.register("chat", None), at(2 * H + 5)); // old one expired
    let d = discover_response(p.handle_request(
        a.id,
        discover(Some("chat"), None, d.cookie),
        at(2 * H + 6),
    ));
    assert_eq!(peers_of(&d), vec![a.id]);
}

#[test]
fn invalid_cookies_are_refused_and_change_nothing() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    p.handle_request(a.id, a.register("chat", None), at(0));
    let d = discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(0)));
    let good = d.cookie.unwrap();
    let mut forged = good.as_bytes().to_vec();
    forged[3] ^= 0x10;
    let truncated = good.as_bytes()[..10].to_vec();
    let cases = [
        (Some("other"), good.clone()),
        (None, good.clone()),
        (Some("chat"), Cookie::new(forged).unwrap()),
        (Some("chat"), Cookie::new(truncated).unwrap()),
    ];
    let before = held(&p, &a.id, "chat").expect("registered");
    for (scope, cookie) in cases {
        let d =
            discover_response(p.handle_request(a.id, discover(scope, None, Some(cookie)), at(1)));
        assert_eq!(d.status, ResponseStatus::InvalidCookie, "scope {scope:?}");
        assert!(d.registrations.is_empty());
        assert_unchanged(&p, &a, &before);
    }
    assert_eq!(p.store().stats().registrations, 1);
}

#[test]
fn cookies_are_honoured_by_any_point_holding_the_secret() {
    let mut first = point(Config::default());
    let peers: Vec<_> = (1..=4).map(Peer::new).collect();
    for x in &peers {
        first.handle_request(x.id, x.register("chat", None), at(0));
    }
    let d = discover_response(first.handle_request(
        peers[0].id,
        discover(Some("chat"), Some(2), None),
        at(1),
    ));
    let cookie = d.cookie.clone();
    // "Restart": the same store under a new point with the same secret.
    let store = first.into_store();
    assert_eq!(store.epoch(), 1);
    let mut second = Point::new(Config::default(), store, CookieKey::from_bytes([42; 32])).unwrap();
    let rest = discover_response(second.handle_request(
        peers[0].id,
        discover(Some("chat"), None, cookie.clone()),
        at(2),
    ));
    assert_eq!(peers_of(&rest), vec![peers[2].id, peers[3].id]);
    let mut other_key = Point::new(
        Config::default(),
        MemoryStore::new(1),
        CookieKey::from_bytes([1; 32]),
    )
    .unwrap();
    let r = discover_response(other_key.handle_request(
        peers[0].id,
        discover(Some("chat"), None, cookie),
        at(2),
    ));
    assert_eq!(r.status, ResponseStatus::InvalidCookie);
}

#[test]
fn expiry_fires_at_the_deadline_not_before() {
    let mut p = point(Config::default());
    let (a, b) = (Peer::new(1), Peer::new(2));
    p.handle_request(a.id, a.register("chat", Some(2 * H)), at(0));
    p.handle_request(b.id, b.register("chat", Some(3 * H)), at(0));
    while p.poll_event().is_some() {}
    assert_eq!(p.poll_timeout(), Some(at(2 * H)));
    p.handle_timeout(Timestamp::from_millis(2 * H * 1000 - 1));
    assert_eq!(p.poll_event(), None);
    p.handle_timeout(at(2 * H));
    assert_eq!(
        p.poll_event(),
        Some(Event::RegistrationExpired {
            peer: a.id,
            namespace: ns("chat")
        })
    );
    assert_eq!(p.poll_timeout(), Some(at(3 * H)));
    let d =
        discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(2 * H)));
    assert_eq!(peers_of(&d), vec![b.id]);
}

#[test]
fn discover_response_stays_inside_the_message_size_and_pages_on() {
    let max = 4096;
    let mut p = limited(|c| {
        c.max_message_size = max;
        c.max_record_size = 2048;
    });
    let peers: Vec<_> = (1..=60).map(Peer::new).collect();
    for x in &peers {
        p.handle_request(x.id, x.register("chat", None), at(0));
    }
    let mut seen = Vec::new();
    let mut cookie = None;
    let mut pages = 0;
    loop {
        let msg = p.handle_request(peers[0].id, discover(Some("chat"), None, cookie), at(1));
        let len = encode(msg.as_ref().unwrap()).len();
        assert!(len <= max, "response of {len} bytes exceeds {max}");
        let d = discover_response(msg);
        if d.registrations.is_empty() {
            break;
        }
        pages += 1;
        seen.extend(peers_of(&d));
        cookie = d.cookie;
    }
    assert!(pages > 1, "the budget must have split the answer");
    assert_eq!(seen, peers.iter().map(|x| x.id).collect::<Vec<_>>());
}

/// A protobuf length-delimited field: key, length, bytes.
fn len_field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut n = bytes.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend(bytes);
    out
}

/// A REGISTER message (type 0) with `body` as its sub-message.
fn register_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08, 0x00];
    out.extend(len_field(2, body));
    out
}

#[test]
fn malformed_requests_get_their_status_and_change_nothing() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    let before = registered_for_3h(&mut p, &a);
    // REGISTER (type 0) whose ns is 256 bytes.
    let mut body = vec![0x0a, 0x80, 0x02];
    body.extend([b'x'; 256]);
    let mut reg = vec![0x08, 0x00, 0x12, 0x83, 0x02];
    reg.extend(&body);
    let r = register_response(p.handle_bytes(a.id, &reg, at(10)).unwrap());
    assert_eq!(r.status, ResponseStatus::InvalidNamespace);
    assert_unchanged(&p, &a, &before);
    // REGISTERs for the namespace a is registered in, with a's own record:
    // `ttl` (field 3) sent length-delimited instead of as a varint ...
    let body = [
        len_field(1, b"chat"),
        len_field(2, &a.record),
        len_field(3, &[]),
    ]
    .concat();
    let r = register_response(
        p.handle_bytes(a.id, &register_bytes(&body), at(10))
            .unwrap(),
    );
    assert_eq!(r.status, ResponseStatus::InvalidTtl, "{}", r.status_text);
    assert_unchanged(&p, &a, &before);
    // ... and no signedPeerRecord at all.
    let r = register_response(
        p.handle_bytes(a.id, &register_bytes(&len_field(1, b"chat")), at(10))
            .unwrap(),
    );
    assert_eq!(r.status, ResponseStatus::InvalidSignedPeerRecord);
    assert_unchanged(&p, &a, &before);
    // DISCOVER (type 3) with a 2000-byte cookie.
    let mut disc = vec![0x08, 0x03, 0x2a, 0xd3, 0x0f, 0x1a, 0xd0, 0x0f];
    disc.extend([7u8; 2000]);
    let d = discover_response(p.handle_bytes(a.id, &disc, at(0)).unwrap());
    assert_eq!(d.status, ResponseStatus::InvalidCookie);
    // UNREGISTER (type 2) with an empty namespace: refused, but no answer is due.
    assert_eq!(
        p.handle_bytes(a.id, &[0x08, 0x02, 0x22, 0x02, 0x0a, 0x00], at(0)),
        Ok(None)
    );
    // Bytes that are not protobuf: nothing to answer, the stream should close.
    assert!(p.handle_bytes(a.id, &[0xff, 0xff, 0xff], at(0)).is_err());
    assert_unchanged(&p, &a, &before);
    assert_eq!(p.store().stats().registrations, 1);
}

#[test]
fn invalid_configurations_are_refused_with_the_reason() {
    let bad = Config {
        min_ttl: Ttl::from_secs(100),
        default_ttl: Ttl::from_secs(50),
        ..Config::default()
    };
    let err = Point::new(bad, MemoryStore::new(1), CookieKey::from_bytes([0; 32]))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("min_ttl (100) <= default_ttl (50)"),
        "{err}"
    );
    let zero = Config {
        max_namespaces: 0,
        ..Config::default()
    };
    assert!(Point::new(zero, MemoryStore::new(1), CookieKey::from_bytes([0; 32])).is_err());
}

#[test]
fn a_refresh_is_seen_again_by_an_incremental_poller_with_its_new_ttl() {
    let mut p = point(Config::default());
    let (a, b) = (Peer::new(1), Peer::new(2));
    p.handle_request(a.id, a.register("chat", None), at(0));
    p.handle_request(b.id, b.register("chat", None), at(0));
    let d = discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(10)));
    assert_eq!(peers_of(&d), vec![a.id, b.id]);
    p.handle_request(b.id, b.register("chat", Some(3 * H)), at(H));
    let d =
        discover_response(p.handle_request(a.id, discover(Some("chat"), None, d.cookie), at(H)));
    assert_eq!(peers_of(&d), vec![b.id]);
    assert_eq!(d.registrations[0].ttl, Ttl::from_secs(3 * H));
    let d =
        discover_response(p.handle_request(a.id, discover(Some("chat"), None, d.cookie), at(H)));
    assert!(d.registrations.is_empty());
}

#[test]
fn a_cookie_from_a_lost_store_starts_over_instead_of_skipping() {
    let mut first = point(Config::default());
    let peers: Vec<_> = (1..=5).map(Peer::new).collect();
    for x in &peers {
        first.handle_request(x.id, x.register("chat", None), at(0));
    }
    let d = discover_response(first.handle_request(
        peers[0].id,
        discover(Some("chat"), None, None),
        at(1),
    ));
    // The point restarts with the same secret but an empty in-memory store
    // (new epoch); two peers register again, at positions below the cookie's.
    let mut second = Point::new(
        Config::default(),
        MemoryStore::new(2),
        CookieKey::from_bytes([42; 32]),
    )
    .unwrap();
    for x in &peers[..2] {
        second.handle_request(x.id, x.register("chat", None), at(2));
    }
    let again = discover_response(second.handle_request(
        peers[0].id,
        discover(Some("chat"), None, d.cookie),
        at(3),
    ));
    assert_eq!(again.status, ResponseStatus::Ok);
    assert_eq!(peers_of(&again), vec![peers[0].id, peers[1].id]);
}

#[test]
fn discover_for_a_legacy_only_asker_passes_over_standard_records() {
    let mut p = point(Config::default());
    let std1 = Peer::with_format(1, RecordFormat::Standard);
    let leg = Peer::with_format(2, RecordFormat::Legacy);
    let std2 = Peer::with_format(3, RecordFormat::Standard);
    for x in [&std1, &leg, &std2] {
        p.handle_request(x.id, x.register("chat", None), at(0));
    }
    let legacy = rdv_point::Formats::only(RecordFormat::Legacy);
    let req = |cookie| match discover(Some("chat"), Some(1), cookie) {
        Message::Discover(d) => d,
        _ => unreachable!(),
    };
    let d = p.handle_discover_for(std1.id, req(None), legacy, at(1));
    assert_eq!(peers_of(&d), vec![leg.id]);
    let d = p.handle_discover_for(std1.id, req(d.cookie), legacy, at(1));
    assert!(d.registrations.is_empty());
    // Everyone else still sees all three.
    let d = discover_response(p.handle_request(std1.id, discover(Some("chat"), None, None), at(1)));
    assert_eq!(peers_of(&d), vec![std1.id, leg.id, std2.id]);
}

#[test]
fn stored_bytes_limit_refuses_one_more_record() {
    let a = Peer::new(1);
    let mut p = limited(|c| c.max_stored_bytes = 2 * a.record.len());
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("x", None),
        at(0),
    )));
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("y", None),
        at(0),
    )));
    let r = register_response(p.handle_request(a.id, a.register("z", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable);
    assert!(
        r.status_text.contains("bytes of records"),
        "{}",
        r.status_text
    );
    assert_eq!(p.store().stats().record_bytes, 2 * a.record.len());
    // One byte short of two records: the second is refused.
    let mut p = limited(|c| c.max_stored_bytes = 2 * a.record.len() - 1);
    ok_ttl(&register_response(p.handle_request(
        a.id,
        a.register("x", None),
        at(0),
    )));
    let r = register_response(p.handle_request(a.id, a.register("y", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable);
}

#[test]
fn stored_bytes_limit_allows_a_refresh_at_the_cap() {
    let a = Peer::new(1);
    let mut p = limited(|c| c.max_stored_bytes = 2 * a.record.len());
    for n in ["x", "y"] {
        ok_ttl(&register_response(p.handle_request(
            a.id,
            a.register(n, None),
            at(0),
        )));
    }
    let r = register_response(p.handle_request(a.id, a.register("z", None), at(0)));
    assert_eq!(r.status, ResponseStatus::Unavailable, "at the cap");
    assert_eq!(
        ok_ttl(&register_response(p.handle_request(
            a.id,
            a.register("x", Some(3 * H)),
            at(1),
        ))),
        3 * H
    );
    assert_eq!(held(&p, &a.id, "x").unwrap().expires_at, at(1 + 3 * H));
    assert_eq!(p.store().stats().record_bytes, 2 * a.record.len());
}

#[test]
fn hopeless_register_is_refused_before_its_signature_is_checked() {
    let mut p = point(Config::default());
    let a = Peer::new(1);
    // A garbage record with a bad TTL: the TTL is reported, so the record was never looked at.
    let msg = Message::Register(Register {
        namespace: ns("chat"),
        signed_peer_record: b"garbage".to_vec().into(),
        ttl: Some(Ttl::from_secs(1)),
    });
    let r = register_response(p.handle_request(a.id, msg, at(0)));
    assert_eq!(r.status, ResponseStatus::InvalidTtl);
}

#[test]
fn a_batch_answers_each_register_in_order_with_one_write() {
    let mut p = point(Config::default());
    let (a, b) = (Peer::new(1), Peer::new(2));
    let req = |peer: &Peer, ttl| match peer.register("chat", ttl) {
        Message::Register(r) => r,
        _ => unreachable!(),
    };
    let verified = |peer: &Peer| Verification::Verified(verify_record(&peer.record).unwrap());
    let answers = p.handle_register_batch(
        vec![
            (a.id, req(&a, None), verified(&a)),
            (b.id, req(&b, Some(5)), verified(&b)),
            (b.id, req(&a, None), verified(&a)),
            (a.id, req(&a, Some(3 * H)), verified(&a)),
        ],
        at(0),
    );
    let statuses: Vec<_> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            ResponseStatus::Ok,
            ResponseStatus::InvalidTtl,
            ResponseStatus::NotAuthorized,
            ResponseStatus::Ok
        ]
    );
    assert_eq!(answers[3].ttl, Some(Ttl::from_secs(3 * H)));
    assert_eq!(
        p.store().stats().registrations,
        1,
        "the second write refreshed the first"
    );
}

/// A store that fails every call: the point answers, and keeps running.
struct Down(bool);

impl rdv_point::Store for Down {
    fn epoch(&self) -> u64 {
        0
    }
    fn write(
        &mut self,
        _: &[rdv_point::store::NewRegistration],
        _: &rdv_point::store::Limits,
        _: Timestamp,
    ) -> Result<Vec<rdv_point::store::WriteOutcome>, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn remove(&mut self, _: &PeerId, _: &Namespace) -> Result<bool, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn record(
        &self,
        _: &PeerId,
        _: &Namespace,
        _: Timestamp,
    ) -> Result<Option<(bytes::Bytes, RecordFormat)>, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn scan(
        &self,
        _: Option<&Namespace>,
        _: u64,
        _: usize,
        _: rdv_point::Formats,
        _: Timestamp,
    ) -> Result<rdv_point::store::Page, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn next_expiry(&self) -> Result<Option<Timestamp>, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn expire(
        &mut self,
        _: Timestamp,
        _: usize,
    ) -> Result<Vec<rdv_point::store::ExpiredRegistration>, rdv_point::store::StoreError> {
        Err(self.err())
    }
    fn stats(&self) -> rdv_point::store::StoreStats {
        rdv_point::store::StoreStats::default()
    }
}

impl Down {
    fn err(&self) -> rdv_point::store::StoreError {
        rdv_point::store::StoreError {
            transient: self.0,
            message: "database unreachable".into(),
        }
    }
}

#[test]
fn a_failing_store_gets_unavailable_or_internal_error_and_the_point_goes_on() {
    for (transient, want) in [
        (true, ResponseStatus::Unavailable),
        (false, ResponseStatus::InternalError),
    ] {
        let mut p = Point::new(
            Config::default(),
            Down(transient),
            CookieKey::from_bytes([0; 32]),
        )
        .unwrap();
        let a = Peer::new(1);
        let r = register_response(p.handle_request(a.id, a.register("chat", None), at(0)));
        assert_eq!(r.status, want);
        let d =
            discover_response(p.handle_request(a.id, discover(Some("chat"), None, None), at(0)));
        assert_eq!(d.status, want);
        assert_eq!(
            p.handle_request(
                a.id,
                Message::Unregister(Unregister {
                    namespace: ns("chat"),
                    id: None
                }),
                at(0)
            ),
            None
        );
        assert_eq!(p.poll_timeout(), None);
        let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::StoreFailed { .. }))
        );
    }
}

/// Reads work, expiry fails (a full disk, a read-only standby).
struct CannotExpire(MemoryStore);

impl rdv_point::Store for CannotExpire {
    fn epoch(&self) -> u64 {
        self.0.epoch()
    }
    fn write(
        &mut self,
        b: &[rdv_point::store::NewRegistration],
        l: &rdv_point::store::Limits,
        now: Timestamp,
    ) -> Result<Vec<rdv_point::store::WriteOutcome>, rdv_point::store::StoreError> {
        self.0.write(b, l, now)
    }
    fn remove(&mut self, p: &PeerId, n: &Namespace) -> Result<bool, rdv_point::store::StoreError> {
        self.0.remove(p, n)
    }
    fn record(
        &self,
        p: &PeerId,
        n: &Namespace,
        now: Timestamp,
    ) -> Result<Option<(bytes::Bytes, RecordFormat)>, rdv_point::store::StoreError> {
        self.0.record(p, n, now)
    }
    fn scan(
        &self,
        s: Option<&Namespace>,
        a: u64,
        l: usize,
        f: rdv_point::Formats,
        now: Timestamp,
    ) -> Result<rdv_point::store::Page, rdv_point::store::StoreError> {
        self.0.scan(s, a, l, f, now)
    }
    fn next_expiry(&self) -> Result<Option<Timestamp>, rdv_point::store::StoreError> {
        self.0.next_expiry()
    }
    fn expire(
        &mut self,
        _: Timestamp,
        _: usize,
    ) -> Result<Vec<rdv_point::store::ExpiredRegistration>, rdv_point::store::StoreError> {
        Err(rdv_point::store::StoreError {
            transient: true,
            message: "read-only".into(),
        })
    }
    fn stats(&self) -> rdv_point::store::StoreStats {
        self.0.stats()
    }
}

#[test]
fn a_store_that_cannot_expire_is_retried_after_a_pause_not_at_once() {
    let mut p = Point::new(
        Config::default(),
        CannotExpire(MemoryStore::new(1)),
        CookieKey::from_bytes([0; 32]),
    )
    .unwrap();
    let a = Peer::new(1);
    p.handle_request(a.id, a.register("chat", None), at(0));
    assert_eq!(p.poll_timeout(), Some(at(2 * H)));
    p.handle_timeout(at(2 * H));
    assert_eq!(
        p.poll_timeout(),
        Some(at(2 * H + 1)),
        "one second later, not now"
    );
    let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::StoreFailed { .. }))
    );
}
