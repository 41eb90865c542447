//! The conformance suite: the `Store` contract (`rdv_point::store` module
//! docs), checked the same way against every store. Each case takes a
//! [`Harness`]; `conformance!` instantiates all cases for one store.

use bytes::Bytes;
use rdv_point::store::*;
use rdv_point::{Config, CookieKey, Point, Store, Verification};
use rdv_wire::*;

use crate::harness::Harness;

/// A realistic wall-clock start (ms).
pub const T0: u64 = 1_700_000_000_000;

pub fn at(ms_after_t0: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms_after_t0)
}

pub fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

/// A deterministic peer id per index.
pub fn peer(i: u32) -> PeerId {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Keypair::ed25519_from_bytes(seed)
        .unwrap()
        .public()
        .to_peer_id()
}

pub fn reg(peer: PeerId, namespace: &str, record: &[u8], ttl_secs: u64) -> NewRegistration {
    NewRegistration {
        peer,
        namespace: ns(namespace),
        record: Bytes::copy_from_slice(record),
        format: RecordFormat::Standard,
        ttl: Ttl::from_secs(ttl_secs),
    }
}

pub const NO_LIMITS: Limits = Limits {
    per_peer: usize::MAX,
    per_namespace: usize::MAX,
    namespaces: usize::MAX,
    total: usize::MAX,
    total_bytes: usize::MAX,
};

pub fn write1<S: Store>(
    s: &mut S,
    r: NewRegistration,
    limits: &Limits,
    now: Timestamp,
) -> WriteOutcome {
    let out = s.write(&[r], limits, now).unwrap();
    assert_eq!(out.len(), 1);
    out[0]
}

pub fn created(o: WriteOutcome) -> u64 {
    match o {
        WriteOutcome::Created(p) => p,
        other => panic!("expected Created, got {other:?}"),
    }
}

pub fn refreshed(o: WriteOutcome) -> u64 {
    match o {
        WriteOutcome::Refreshed(p) => p,
        other => panic!("expected Refreshed, got {other:?}"),
    }
}

/// Every live registration in `scope`, paging `limit` at a time from
/// `after` the way a client with cookies does.
pub fn page_all<S: Store>(
    s: &S,
    scope: Option<&str>,
    mut after: u64,
    limit: usize,
    formats: Formats,
    now: Timestamp,
) -> Vec<StoredRegistration> {
    let scope = scope.map(ns);
    let mut out = Vec::new();
    loop {
        let page = s.scan(scope.as_ref(), after, limit, formats, now).unwrap();
        assert!(page.scanned_to >= after, "the cookie never moves back");
        let done = page.registrations.len() < limit;
        for r in &page.registrations {
            assert!(r.position > after && r.position <= page.scanned_to);
        }
        out.extend(page.registrations);
        if done {
            return out;
        }
        assert!(page.scanned_to > after, "a full page moves the cookie");
        after = page.scanned_to;
    }
}

fn all<S: Store>(s: &S, now: Timestamp) -> Vec<StoredRegistration> {
    page_all(s, None, 0, 1000, Formats::ALL, now)
}

fn keys(v: &[StoredRegistration]) -> Vec<(PeerId, String)> {
    v.iter()
        .map(|r| (r.peer, r.namespace.as_str().to_string()))
        .collect()
}

// ---------------------------------------------------------------- cases

pub fn registration<H: Harness>(h: &mut H) {
    let mut s = h.fresh(11);
    let now = at(0);
    let mut r = reg(peer(1), "chat", b"record-1", 7200);
    r.format = RecordFormat::Legacy;
    let p = created(write1(&mut s, r.clone(), &NO_LIMITS, now));
    assert!(p >= 1);
    assert_eq!(
        s.record(&peer(1), &ns("chat"), now).unwrap(),
        Some((Bytes::from_static(b"record-1"), RecordFormat::Legacy))
    );
    assert_eq!(s.record(&peer(2), &ns("chat"), now).unwrap(), None);
    assert_eq!(s.record(&peer(1), &ns("other"), now).unwrap(), None);
    let got = all(&s, now);
    assert_eq!(
        got,
        vec![StoredRegistration {
            peer: peer(1),
            namespace: ns("chat"),
            record: Bytes::from_static(b"record-1"),
            format: RecordFormat::Legacy,
            expires_at: Timestamp::from_millis(T0 + 7_200_000),
            position: p,
        }]
    );
    assert_eq!(page_all(&s, Some("chat"), 0, 10, Formats::ALL, now), got);
    assert_eq!(
        s.stats(),
        StoreStats {
            registrations: 1,
            namespaces: 1,
            record_bytes: 8
        }
    );
    // A namespace holding a NUL and multi-byte UTF-8, and a long record.
    let odd = "a\0b-é-🦀";
    let long = vec![0xAB; 4096];
    created(write1(
        &mut s,
        reg(peer(1), odd, &long, 7200),
        &NO_LIMITS,
        now,
    ));
    assert_eq!(
        s.record(&peer(1), &ns(odd), now).unwrap(),
        Some((Bytes::from(long), RecordFormat::Standard))
    );
    assert_eq!(page_all(&s, Some(odd), 0, 10, Formats::ALL, now).len(), 1);
}

pub fn refresh<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let p1 = created(write1(
        &mut s,
        reg(peer(1), "a", b"old", 7200),
        &NO_LIMITS,
        at(0),
    ));
    let other = created(write1(
        &mut s,
        reg(peer(2), "a", b"x", 7200),
        &NO_LIMITS,
        at(0),
    ));
    let mut r = reg(peer(1), "a", b"new record", 9000);
    r.format = RecordFormat::Legacy;
    let p2 = refreshed(write1(&mut s, r, &NO_LIMITS, at(1000)));
    assert!(
        p2 > p1 && p2 > other,
        "a refresh gets a new, higher position"
    );
    let got = all(&s, at(1000));
    assert_eq!(got.len(), 2, "still one registration per (peer, namespace)");
    assert_eq!(got[0].position, other);
    assert_eq!(got[1].position, p2);
    assert_eq!(got[1].record, Bytes::from_static(b"new record"));
    assert_eq!(got[1].format, RecordFormat::Legacy);
    assert_eq!(
        got[1].expires_at,
        Timestamp::from_millis(T0 + 1000 + 9_000_000)
    );
    // A client whose cookie is past the old position sees the refresh.
    let page = s
        .scan(Some(&ns("a")), other, 10, Formats::ALL, at(1000))
        .unwrap();
    assert_eq!(keys(&page.registrations), vec![(peer(1), "a".into())]);
    assert_eq!(
        s.stats(),
        StoreStats {
            registrations: 2,
            namespaces: 1,
            record_bytes: 11
        }
    );
    // Another namespace is another registration.
    created(write1(
        &mut s,
        reg(peer(1), "b", b"y", 7200),
        &NO_LIMITS,
        at(1000),
    ));
    // An expired, unswept registration is replaced, not refreshed.
    created(write1(
        &mut s,
        reg(peer(3), "a", b"z", 10),
        &NO_LIMITS,
        at(1000),
    ));
    let p = created(write1(
        &mut s,
        reg(peer(3), "a", b"z2", 7200),
        &NO_LIMITS,
        at(11_000),
    ));
    let got = page_all(&s, Some("a"), 0, 10, Formats::ALL, at(11_000));
    assert_eq!(got.last().unwrap().position, p);
    assert_eq!(got.len(), 3);
    assert_eq!(s.stats().registrations, 4);
}

pub fn batch_in_order<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        per_peer: 2,
        ..NO_LIMITS
    };
    let batch = vec![
        reg(peer(1), "a", b"1", 7200),
        reg(peer(1), "a", b"2", 7200), // same key: refreshes the first
        reg(peer(1), "b", b"3", 7200),
        reg(peer(1), "c", b"4", 7200), // third for peer 1: refused
        reg(peer(2), "c", b"5", 7200),
    ];
    let out = s.write(&batch, &limits, at(0)).unwrap();
    assert_eq!(out.len(), 5);
    let p0 = created(out[0]);
    let p1 = refreshed(out[1]);
    let p2 = created(out[2]);
    assert_eq!(out[3], WriteOutcome::Refused(Limit::PerPeer));
    let p4 = created(out[4]);
    assert!(p0 < p1 && p1 < p2 && p2 < p4, "positions in batch order");
    assert_eq!(s.stats().registrations, 3);
    assert_eq!(
        s.record(&peer(1), &ns("a"), at(0)).unwrap().unwrap().0,
        &b"2"[..]
    );
    assert_eq!(s.write(&[], &limits, at(0)).unwrap(), vec![]);
}

/// `fill` registrations are accepted, the next is refused by `limit`,
/// a refresh at the cap is accepted, and after one removal one more fits.
fn limit_case<S: Store>(
    s: &mut S,
    limits: &Limits,
    limit: Limit,
    fill: &[NewRegistration],
    extra: NewRegistration,
) {
    let now = at(0);
    let before = s.stats();
    for r in fill {
        created(write1(s, r.clone(), limits, now));
    }
    let full = s.stats();
    assert_eq!(full.registrations, before.registrations + fill.len());
    assert_eq!(
        write1(s, extra.clone(), limits, now),
        WriteOutcome::Refused(limit)
    );
    assert_eq!(s.stats(), full, "a refusal changes nothing");
    assert_eq!(s.record(&extra.peer, &extra.namespace, now).unwrap(), None);
    // Refresh at the cap (even with a bigger record) is always allowed.
    let mut again = fill[0].clone();
    again.record = Bytes::from(vec![1u8; fill[0].record.len() + 1]);
    refreshed(write1(s, again, limits, now));
    assert_eq!(
        write1(s, extra.clone(), limits, now),
        WriteOutcome::Refused(limit)
    );
    assert!(s.remove(&fill[1].peer, &fill[1].namespace).unwrap());
    created(write1(s, extra, limits, now));
}

pub fn limit_per_peer<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        per_peer: 3,
        ..NO_LIMITS
    };
    // Other peers do not count.
    created(write1(
        &mut s,
        reg(peer(9), "a", b"r", 7200),
        &limits,
        at(0),
    ));
    let fill: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| reg(peer(1), n, b"r", 7200))
        .collect();
    limit_case(
        &mut s,
        &limits,
        Limit::PerPeer,
        &fill,
        reg(peer(1), "d", b"r", 7200),
    );
    created(write1(
        &mut s,
        reg(peer(2), "d", b"r", 7200),
        &limits,
        at(0),
    ));
}

pub fn limit_per_namespace<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        per_namespace: 3,
        ..NO_LIMITS
    };
    created(write1(
        &mut s,
        reg(peer(1), "other", b"r", 7200),
        &limits,
        at(0),
    ));
    let fill: Vec<_> = (1..=3).map(|i| reg(peer(i), "a", b"r", 7200)).collect();
    limit_case(
        &mut s,
        &limits,
        Limit::PerNamespace,
        &fill,
        reg(peer(4), "a", b"r", 7200),
    );
    created(write1(
        &mut s,
        reg(peer(4), "b", b"r", 7200),
        &limits,
        at(0),
    ));
}

pub fn limit_namespaces<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        namespaces: 3,
        ..NO_LIMITS
    };
    let fill: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| reg(peer(1), n, b"r", 7200))
        .collect();
    limit_case(
        &mut s,
        &limits,
        Limit::Namespaces,
        &fill,
        reg(peer(2), "d", b"r", 7200),
    );
    // A namespace in use takes more registrations at the cap.
    created(write1(
        &mut s,
        reg(peer(2), "a", b"r", 7200),
        &limits,
        at(0),
    ));
    assert_eq!(
        write1(&mut s, reg(peer(3), "e", b"r", 7200), &limits, at(0)),
        WriteOutcome::Refused(Limit::Namespaces)
    );
    assert_eq!(s.stats().namespaces, 3);
}

pub fn limit_total<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        total: 3,
        ..NO_LIMITS
    };
    let fill: Vec<_> = (1..=3).map(|i| reg(peer(i), "a", b"r", 7200)).collect();
    limit_case(
        &mut s,
        &limits,
        Limit::Total,
        &fill,
        reg(peer(4), "b", b"r", 7200),
    );
}

pub fn limit_bytes<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let limits = Limits {
        total_bytes: 100,
        ..NO_LIMITS
    };
    let fill = vec![
        reg(peer(1), "a", &[1; 30], 7200),
        reg(peer(2), "a", &[1; 30], 7200),
        reg(peer(3), "a", &[1; 40], 7200), // exactly 100: accepted
    ];
    limit_case(
        &mut s,
        &limits,
        Limit::Bytes,
        &fill,
        reg(peer(4), "a", &[1; 29], 7200),
    );
    // The refresh grew peer 1's record to 31 bytes (101 in all, allowed);
    // peer 2's 30 went and peer 4's 29 came: exactly 100 again.
    assert_eq!(s.stats().record_bytes, 31 + 40 + 29);
    assert_eq!(
        write1(&mut s, reg(peer(5), "a", &[1; 1], 7200), &limits, at(0)),
        WriteOutcome::Refused(Limit::Bytes)
    );
}

pub fn remove<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    created(write1(
        &mut s,
        reg(peer(1), "b", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    created(write1(
        &mut s,
        reg(peer(2), "b", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    assert!(!s.remove(&peer(3), &ns("a")).unwrap());
    assert!(!s.remove(&peer(2), &ns("a")).unwrap());
    assert!(!s.remove(&peer(1), &ns("zz")).unwrap());
    assert!(s.remove(&peer(1), &ns("a")).unwrap());
    assert!(!s.remove(&peer(1), &ns("a")).unwrap());
    assert_eq!(
        s.stats(),
        StoreStats {
            registrations: 2,
            namespaces: 1,
            record_bytes: 2
        }
    );
    assert_eq!(s.record(&peer(1), &ns("a"), at(0)).unwrap(), None);
    assert_eq!(
        keys(&all(&s, at(0))),
        vec![(peer(1), "b".into()), (peer(2), "b".into())]
    );
    assert!(s.remove(&peer(1), &ns("b")).unwrap());
    assert!(s.remove(&peer(2), &ns("b")).unwrap());
    assert_eq!(s.stats(), StoreStats::default());
    assert_eq!(s.next_expiry().unwrap(), None);
}

pub fn paging<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let now = at(0);
    // 30 registrations over 3 namespaces, alternating formats, some short-lived.
    let mut batch = Vec::new();
    for i in 0..30u32 {
        let mut r = reg(
            peer(i),
            ["a", "b", "c"][i as usize % 3],
            format!("record {i}").as_bytes(),
            if i % 7 == 3 { 10 } else { 7200 },
        );
        r.format = if i % 2 == 0 {
            RecordFormat::Standard
        } else {
            RecordFormat::Legacy
        };
        batch.push(r);
    }
    let out = s.write(&batch, &NO_LIMITS, now).unwrap();
    let positions: Vec<u64> = out.into_iter().map(created).collect();
    let later = at(10_000); // the short-lived ones have expired (not swept)
    let live = |i: usize| i % 7 != 3;
    for scope in [None, Some("a"), Some("b"), Some("c")] {
        for formats in [
            Formats::ALL,
            Formats::only(RecordFormat::Standard),
            Formats::only(RecordFormat::Legacy),
        ] {
            let expected: Vec<u64> = (0..30)
                .filter(|&i| live(i))
                .filter(|&i| scope.is_none_or(|n| n == ["a", "b", "c"][i % 3]))
                .filter(|&i| formats.contains(batch[i].format))
                .map(|i| positions[i])
                .collect();
            for limit in [1, 2, 3, 7, 100] {
                let got: Vec<u64> = page_all(&s, scope, 0, limit, formats, later)
                    .iter()
                    .map(|r| r.position)
                    .collect();
                assert_eq!(
                    got, expected,
                    "scope {scope:?} formats {formats:?} limit {limit}"
                );
            }
        }
    }
    // A short page's cookie is past everything in scope, expired and
    // filtered ones included; a full page's is its last registration.
    let max = *positions.iter().max().unwrap();
    let page = s.scan(None, 0, 1000, Formats::ALL, later).unwrap();
    assert_eq!(page.scanned_to, max);
    let page = s
        .scan(None, 0, 1000, Formats::only(RecordFormat::Legacy), later)
        .unwrap();
    assert_eq!(page.scanned_to, max);
    let page = s.scan(None, 0, 2, Formats::ALL, later).unwrap();
    assert_eq!(page.scanned_to, page.registrations[1].position);
    // Nothing after the end; no such namespace; a limit of zero.
    let page = s.scan(None, max, 10, Formats::ALL, later).unwrap();
    assert_eq!((page.registrations.len(), page.scanned_to), (0, max));
    let page = s.scan(None, max + 50, 10, Formats::ALL, later).unwrap();
    assert_eq!((page.registrations.len(), page.scanned_to), (0, max + 50));
    let page = s
        .scan(Some(&ns("nope")), 5, 10, Formats::ALL, later)
        .unwrap();
    assert_eq!((page.registrations.len(), page.scanned_to), (0, 5));
    let page = s.scan(Some(&ns("a")), 0, 0, Formats::ALL, later).unwrap();
    assert_eq!((page.registrations.len(), page.scanned_to), (0, 0));
    let page = s.scan(Some(&ns("a")), 0, 10, Formats::NONE, later).unwrap();
    assert!(page.registrations.is_empty());
    // A page served from a cookie, then writes: the next page has exactly
    // the new and refreshed ones (never a repeat, never a skip).
    let first = page_all(&s, Some("a"), 0, 1000, Formats::ALL, later);
    let cookie = s
        .scan(Some(&ns("a")), 0, 1000, Formats::ALL, later)
        .unwrap()
        .scanned_to;
    refreshed(write1(
        &mut s,
        reg(peer(0), "a", b"again", 7200),
        &NO_LIMITS,
        later,
    ));
    created(write1(
        &mut s,
        reg(peer(100), "a", b"new", 7200),
        &NO_LIMITS,
        later,
    ));
    created(write1(
        &mut s,
        reg(peer(101), "b", b"elsewhere", 7200),
        &NO_LIMITS,
        later,
    ));
    let next = page_all(&s, Some("a"), cookie, 1, Formats::ALL, later);
    assert_eq!(
        keys(&next),
        vec![(peer(0), "a".into()), (peer(100), "a".into())]
    );
    assert!(first.iter().all(|r| r.position <= cookie));
}

/// A namespace of many records of one format and a few of the other (and
/// another namespace around it): a scan for one format returns exactly the
/// live records of that format, in position order, with the usual cookies
/// (a full page's stops at its last registration, a short page's moves past
/// everything in scope, other formats and expired records included); a scan
/// of several formats interleaves them in position order. Refreshes that
/// change a record's format move it from one format's answers to another's.
pub fn format_filtered_paging<H: Harness>(h: &mut H) {
    struct Entry {
        position: u64,
        peer: PeerId,
        namespace: &'static str,
        format: RecordFormat,
        record: Bytes,
        expires_at: u64,
    }
    let mut s = h.fresh(1);
    let now = at(0);
    let mut batch = Vec::new();
    let other = |i: u32, format| {
        let mut r = reg(peer(50_000 + i), "other", format!("o{i}").as_bytes(), 7200);
        r.format = format;
        r
    };
    batch.push(other(0, RecordFormat::Legacy));
    batch.push(other(1, RecordFormat::Standard));
    batch.push(other(3, RecordFormat::PeerInfo));
    // 1 000 in "many": standard but two in every hundred (one legacy, one
    // unsigned PeerInfo), one of the legacy ones expiring.
    for i in 0..1000u32 {
        let ttl = if i == 537 { 5 } else { 7200 };
        let mut r = reg(peer(i), "many", format!("m{i}").as_bytes(), ttl);
        if i % 100 == 37 {
            r.format = RecordFormat::Legacy;
        }
        if i % 100 == 71 {
            r.format = RecordFormat::PeerInfo;
        }
        batch.push(r);
    }
    batch.push(other(2, RecordFormat::Legacy));
    let out = s.write(&batch, &NO_LIMITS, now).unwrap();
    let mut model: Vec<Entry> = batch
        .iter()
        .zip(out)
        .map(|(r, o)| Entry {
            position: created(o),
            peer: r.peer,
            namespace: if r.namespace == ns("many") {
                "many"
            } else {
                "other"
            },
            format: r.format,
            record: r.record.clone(),
            expires_at: T0 + r.ttl.as_millis(),
        })
        .collect();
    // Refreshes: a standard record turns legacy, a legacy one standard, a
    // PeerInfo one legacy.
    for (i, format) in [
        (5u32, RecordFormat::Legacy),
        (237, RecordFormat::Standard),
        (471, RecordFormat::Legacy),
    ] {
        let mut r = reg(peer(i), "many", b"refreshed", 7200);
        r.format = format;
        let position = refreshed(write1(&mut s, r.clone(), &NO_LIMITS, at(1)));
        model.retain(|e| !(e.peer == r.peer && e.namespace == "many"));
        model.push(Entry {
            position,
            peer: r.peer,
            namespace: "many",
            format,
            record: r.record,
            expires_at: T0 + 1 + 7_200_000,
        });
    }
    model.sort_by_key(|e| e.position);
    let later = at(10_000); // peer 537's legacy record has expired, unswept
    let legacy_live = model
        .iter()
        .filter(|e| e.namespace == "many" && e.format == RecordFormat::Legacy)
        .filter(|e| e.expires_at > T0 + 10_000)
        .count();
    assert_eq!(legacy_live, 10, "10 written, one expired, one out, two in");
    for scope in [Some("many"), None] {
        let in_scope = |e: &&Entry| scope.is_none_or(|n| n == e.namespace);
        let end = model.iter().filter(in_scope).map(|e| e.position).max();
        let end = end.unwrap();
        for (formats, limits) in [
            (Formats::only(RecordFormat::Legacy), &[1, 2, 3, 1000][..]),
            (Formats::only(RecordFormat::Standard), &[7, 1000][..]),
            (Formats::only(RecordFormat::PeerInfo), &[1, 4, 1000][..]),
            (
                Formats::only(RecordFormat::Legacy).with(RecordFormat::PeerInfo),
                &[3, 1000][..],
            ),
            (
                Formats::only(RecordFormat::Standard).with(RecordFormat::PeerInfo),
                &[7, 1000][..],
            ),
            (Formats::ALL, &[7, 1000][..]),
        ] {
            let expected: Vec<(u64, PeerId, &str, RecordFormat, Bytes)> = model
                .iter()
                .filter(in_scope)
                .filter(|e| formats.contains(e.format) && e.expires_at > T0 + 10_000)
                .map(|e| (e.position, e.peer, e.namespace, e.format, e.record.clone()))
                .collect();
            for &limit in limits {
                let what = format!("scope {scope:?} formats {formats:?} limit {limit}");
                let mut after = 0;
                let mut got = Vec::new();
                loop {
                    let page = s
                        .scan(scope.map(ns).as_ref(), after, limit, formats, later)
                        .unwrap();
                    let n = page.registrations.len();
                    assert!(n <= limit, "{what}");
                    got.extend(page.registrations.iter().map(|r| {
                        (
                            r.position,
                            r.peer,
                            if r.namespace == ns("many") {
                                "many"
                            } else {
                                "other"
                            },
                            r.format,
                            r.record.clone(),
                        )
                    }));
                    if n == limit {
                        assert_eq!(
                            page.scanned_to,
                            page.registrations[n - 1].position,
                            "{what}: a full page's cookie is its last registration"
                        );
                        after = page.scanned_to;
                    } else {
                        assert_eq!(
                            page.scanned_to, end,
                            "{what}: a short page's cookie is past everything in scope"
                        );
                        break;
                    }
                }
                assert_eq!(got, expected, "{what}");
            }
        }
    }
    // From a cookie at the last legacy record, nothing more in that format,
    // and the cookie still moves to the end of the namespace.
    let last_legacy = model
        .iter()
        .filter(|e| e.namespace == "many" && e.format == RecordFormat::Legacy)
        .map(|e| e.position)
        .max()
        .unwrap();
    let many_end = model
        .iter()
        .filter(|e| e.namespace == "many")
        .map(|e| e.position)
        .max()
        .unwrap();
    let page = s
        .scan(
            Some(&ns("many")),
            last_legacy,
            5,
            Formats::only(RecordFormat::Legacy),
            later,
        )
        .unwrap();
    assert_eq!((page.registrations.len(), page.scanned_to), (0, many_end));
}

pub fn record_liveness<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 60),
        &NO_LIMITS,
        at(0),
    ));
    let deadline = 60_000;
    assert!(
        s.record(&peer(1), &ns("a"), at(deadline - 1))
            .unwrap()
            .is_some()
    );
    assert_eq!(s.record(&peer(1), &ns("a"), at(deadline)).unwrap(), None);
    assert_eq!(all(&s, at(deadline - 1)).len(), 1);
    assert_eq!(all(&s, at(deadline)).len(), 0);
    // Not swept: still counted and still due.
    assert_eq!(s.stats().registrations, 1);
    assert_eq!(s.next_expiry().unwrap(), Some(at(deadline)));
    // A refresh after the deadline is a new registration.
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 60),
        &NO_LIMITS,
        at(deadline),
    ));
}

pub fn expiry<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    assert_eq!(s.next_expiry().unwrap(), None);
    assert_eq!(s.expire(at(0), usize::MAX).unwrap(), vec![]);
    // Deadlines out of write order: peer i expires at (10 - i) seconds... for
    // i in 1..=5, plus one long-lived.
    let batch: Vec<_> = (1..=5u32)
        .map(|i| reg(peer(i), ["a", "b"][i as usize % 2], b"r", u64::from(20 - i)))
        .chain([reg(peer(9), "a", b"r", 7200)])
        .collect();
    s.write(&batch, &NO_LIMITS, at(0)).unwrap();
    assert_eq!(s.next_expiry().unwrap(), Some(at(15_000)));
    let key = |e: &ExpiredRegistration| (e.peer, e.namespace.as_str().to_string());
    assert_eq!(s.expire(at(14_999), usize::MAX).unwrap(), vec![]);
    // At the deadline, earliest first, at most `max`.
    let got = s.expire(at(17_000), 2).unwrap();
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![(peer(5), "b".into()), (peer(4), "a".into())]
    );
    assert_eq!(s.expire(at(17_000), 0).unwrap(), vec![]);
    let got = s.expire(at(17_000), usize::MAX).unwrap();
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![(peer(3), "b".into())]
    );
    assert_eq!(s.next_expiry().unwrap(), Some(at(18_000)));
    let got = s.expire(at(1_000_000), usize::MAX).unwrap();
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![(peer(2), "a".into()), (peer(1), "b".into())]
    );
    assert_eq!(
        s.stats(),
        StoreStats {
            registrations: 1,
            namespaces: 1,
            record_bytes: 1
        }
    );
    assert_eq!(s.next_expiry().unwrap(), Some(at(7_200_000)));
    assert!(s.remove(&peer(9), &ns("a")).unwrap());
    assert_eq!(s.next_expiry().unwrap(), None);
}

/// Expiry costs what it removes, not what is stored: removing 20 due among
/// 2 000 live takes about as long as among 20 live.
pub fn expiry_cost<H: Harness>(h: &mut H) {
    let mut timings = Vec::new();
    for live in [20u32, 2000] {
        let mut s = h.fresh(1);
        let mut best = std::time::Duration::MAX;
        for round in 0..3u64 {
            let base = round * 100_000;
            let mut batch: Vec<_> = (0..live)
                .map(|i| reg(peer(i), "live", b"r", 7200))
                .collect();
            batch.extend((0..20).map(|i| reg(peer(100_000 + i), "due", b"r", 1)));
            s.write(&batch, &NO_LIMITS, at(base)).unwrap();
            let t = std::time::Instant::now();
            let gone = s.expire(at(base + 1000), usize::MAX).unwrap();
            best = best.min(t.elapsed());
            assert_eq!(gone.len(), 20);
        }
        timings.push(best);
    }
    let (small, large) = (timings[0], timings[1]);
    assert!(
        large < small * 5 + std::time::Duration::from_millis(20),
        "expire among 2000 live took {large:?}, among 20 {small:?}"
    );
}

pub fn epoch<H: Harness>(h: &mut H) {
    let s = h.fresh(0xDEAD_BEEF_0000_0001);
    assert_eq!(s.epoch(), 0xDEAD_BEEF_0000_0001);
    let s = h.fresh(u64::MAX);
    assert_eq!(s.epoch(), u64::MAX);
    if let Some(s) = h.reopen(s, 42) {
        assert_eq!(s.epoch(), u64::MAX, "a reopened store keeps its epoch");
    }
}

pub fn positions_monotonic<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let a = created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    let b = created(write1(
        &mut s,
        reg(peer(2), "a", b"r", 10),
        &NO_LIMITS,
        at(0),
    ));
    assert!(b > a);
    // Deleting the highest does not hand its position out again...
    assert!(s.remove(&peer(2), &ns("a")).unwrap());
    let c = created(write1(
        &mut s,
        reg(peer(3), "a", b"r", 10),
        &NO_LIMITS,
        at(0),
    ));
    assert!(c > b);
    // ...nor does expiring it...
    assert_eq!(s.expire(at(10_000), usize::MAX).unwrap().len(), 1);
    let d = created(write1(
        &mut s,
        reg(peer(4), "b", b"r", 7200),
        &NO_LIMITS,
        at(10_000),
    ));
    assert!(d > c);
    // ...nor emptying the store.
    assert!(s.remove(&peer(1), &ns("a")).unwrap());
    assert!(s.remove(&peer(4), &ns("b")).unwrap());
    let e = created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(10_000),
    ));
    assert!(e > d);
    // Nor a restart, with the highest deleted just before.
    let f = created(write1(
        &mut s,
        reg(peer(5), "a", b"r", 7200),
        &NO_LIMITS,
        at(10_000),
    ));
    assert!(s.remove(&peer(5), &ns("a")).unwrap());
    if let Some(mut s) = h.reopen(s, 2) {
        let g = created(write1(
            &mut s,
            reg(peer(6), "a", b"r", 7200),
            &NO_LIMITS,
            at(10_000),
        ));
        assert!(g > f, "position {g} after restart, {f} before");
    }
}

pub fn restart<H: Harness>(h: &mut H) {
    let mut s = h.fresh(77);
    let mut batch: Vec<_> = (0..10u32)
        .map(|i| {
            reg(
                peer(i),
                ["a", "b"][i as usize % 2],
                format!("r{i}").as_bytes(),
                7200,
            )
        })
        .collect();
    batch.push(reg(peer(50), "a", b"short", 5));
    batch.push(reg(peer(51), "c", b"short", 5));
    s.write(&batch, &NO_LIMITS, at(0)).unwrap();
    refreshed(write1(
        &mut s,
        reg(peer(0), "a", b"r0 again", 7200),
        &NO_LIMITS,
        at(1),
    ));
    let before = all(&s, at(1));
    let stats = s.stats();
    let Some(mut s) = h.reopen(s, 78) else {
        return; // not durable
    };
    assert_eq!(s.epoch(), 77);
    assert_eq!(
        all(&s, at(1)),
        before,
        "registrations survive, positions and all"
    );
    assert_eq!(s.stats(), stats);
    // Later, before any sweep: the expired are not served.
    let later = at(5_000);
    let served = all(&s, later);
    assert_eq!(served.len(), 10);
    assert!(
        served
            .iter()
            .all(|r| r.peer != peer(50) && r.peer != peer(51))
    );
    assert!(page_all(&s, Some("c"), 0, 10, Formats::ALL, later).is_empty());
    assert_eq!(s.record(&peer(50), &ns("a"), later).unwrap(), None);
    assert!(s.record(&peer(1), &ns("b"), later).unwrap().is_some());
    assert_eq!(s.next_expiry().unwrap(), Some(at(5_000)));
    // Paging resumes from a position handed out before the restart.
    let cookie = before[4].position;
    let rest = page_all(&s, None, cookie, 3, Formats::ALL, at(1));
    assert_eq!(rest, before[5..].to_vec());
    // The sweep after the restart removes exactly the expired.
    let gone = s.expire(later, usize::MAX).unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(s.stats().registrations, 10);
    assert_eq!(s.stats().namespaces, 2);
}

/// Random operations against the store and a `MemoryStore` side by side:
/// every answer must be the same (positions included).
pub fn differential<H: Harness>(h: &mut H) {
    let mut s = h.fresh(1);
    let mut m = rdv_point::MemoryStore::new(1);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let limits = Limits {
        per_peer: 3,
        per_namespace: 4,
        namespaces: 3,
        total: 9,
        total_bytes: 300,
    };
    let names = ["a", "b", "c", "d"];
    let mut now = 0u64;
    // Deadlines are kept distinct, so expiry order is fully determined.
    let mut deadlines = std::collections::HashSet::new();
    let formats = [
        Formats::ALL,
        Formats::only(RecordFormat::Standard),
        Formats::only(RecordFormat::Legacy),
    ];
    for step in 0..300 {
        now += 1 + next(700);
        let t = at(now);
        match next(10) {
            0..=3 => {
                let batch: Vec<_> = (0..1 + next(3))
                    .map(|_| {
                        let mut ttl = 1 + next(5);
                        while !deadlines.insert(now + ttl * 1000) {
                            ttl += 1;
                        }
                        let len = 1 + next(60) as usize;
                        let mut r = reg(
                            peer(next(6) as u32),
                            names[next(4) as usize],
                            &vec![step as u8; len],
                            ttl,
                        );
                        if next(2) == 0 {
                            r.format = RecordFormat::Legacy;
                        }
                        r
                    })
                    .collect();
                assert_eq!(
                    s.write(&batch, &limits, t).unwrap(),
                    m.write(&batch, &limits, t).unwrap(),
                    "step {step}: write"
                );
            }
            4 => {
                let (p, n) = (peer(next(6) as u32), ns(names[next(4) as usize]));
                assert_eq!(
                    s.remove(&p, &n).unwrap(),
                    m.remove(&p, &n).unwrap(),
                    "step {step}: remove"
                );
            }
            5 => {
                let max = next(4) as usize;
                assert_eq!(
                    s.expire(t, max).unwrap(),
                    m.expire(t, max).unwrap(),
                    "step {step}: expire"
                );
            }
            6 | 7 => {
                let scope = (next(5) < 4).then(|| ns(names[next(4) as usize]));
                let after = next(step + 2);
                let limit = next(6) as usize;
                let f = formats[next(3) as usize];
                assert_eq!(
                    s.scan(scope.as_ref(), after, limit, f, t).unwrap(),
                    m.scan(scope.as_ref(), after, limit, f, t).unwrap(),
                    "step {step}: scan {scope:?} after {after} limit {limit}"
                );
            }
            8 => {
                let (p, n) = (peer(next(6) as u32), ns(names[next(4) as usize]));
                assert_eq!(
                    s.record(&p, &n, t).unwrap(),
                    m.record(&p, &n, t).unwrap(),
                    "step {step}: record"
                );
            }
            _ => {
                assert_eq!(
                    s.next_expiry().unwrap(),
                    m.next_expiry().unwrap(),
                    "step {step}: next_expiry"
                );
            }
        }
        assert_eq!(s.stats(), m.stats(), "step {step}: stats");
    }
}

// ------------------------------------------------------ a point end to end

struct Signer {
    id: PeerId,
    record: Bytes,
}

fn signer(seed: u8) -> Signer {
    let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 4000 + u16::from(seed))
        .parse()
        .unwrap();
    let record = Bytes::from(sign_record(&key, &[addr], 1, RecordFormat::Standard).unwrap());
    Signer {
        id: key.public().to_peer_id(),
        record,
    }
}

fn register(s: &Signer, namespace: &str) -> Message {
    Message::Register(Register {
        namespace: ns(namespace),
        signed_peer_record: s.record.clone(),
        ttl: None,
    })
}

fn discover(namespace: Option<&str>, limit: u64, cookie: Option<Cookie>) -> Message {
    Message::Discover(Discover {
        namespace: namespace.map(ns),
        limit: Some(limit),
        cookie,
    })
}

fn discovered(m: Option<Message>) -> DiscoverResponse {
    match m {
        Some(Message::DiscoverResponse(r)) => {
            assert_eq!(r.status, ResponseStatus::Ok, "{}", r.status_text);
            r
        }
        other => panic!("expected DISCOVER_RESPONSE, got {other:?}"),
    }
}

fn peers_of(r: &DiscoverResponse) -> Vec<PeerId> {
    r.registrations
        .iter()
        .map(|r| verify_record(&r.signed_peer_record).unwrap().peer_id)
        .collect()
}

/// A real `Point` over the store: REGISTER, DISCOVER paged by cookie,
/// UNREGISTER, limits answered with their status; for a durable store, a
/// restart in the middle of paging, the old cookie carrying on.
pub fn point_end_to_end<H: Harness>(h: &mut H) {
    let key = CookieKey::from_bytes([42; 32]);
    let config = Config {
        max_registrations_per_namespace: 4,
        ..Config::default()
    };
    let mut point = Point::new(config.clone(), h.fresh(5), key.clone()).unwrap();
    let signers: Vec<Signer> = (1..=5).map(signer).collect();
    let now = Timestamp::from_millis(T0);
    for s in &signers[..4] {
        let r = point.handle_request(s.id, register(s, "chat"), now);
        match r {
            Some(Message::RegisterResponse(r)) => {
                assert_eq!(r.status, ResponseStatus::Ok, "{}", r.status_text)
            }
            other => panic!("{other:?}"),
        }
    }
    // The fifth is over the namespace limit.
    match point.handle_request(signers[4].id, register(&signers[4], "chat"), now) {
        Some(Message::RegisterResponse(r)) => assert_eq!(r.status, ResponseStatus::Unavailable),
        other => panic!("{other:?}"),
    }
    // Refresh of the first (a plain refresh: no signature check needed).
    let refresh = register(&signers[0], "chat");
    if let Message::Register(r) = &refresh {
        assert!(!point.needs_verification(&signers[0].id, r, now));
    }
    point.handle_request(signers[0].id, refresh, now);
    let asker = signers[4].id;
    let first = discovered(point.handle_request(asker, discover(Some("chat"), 2, None), now));
    assert_eq!(peers_of(&first), vec![signers[1].id, signers[2].id]);
    let cookie = first.cookie.clone();
    // Restart a durable store in the middle of paging.
    let store = if H::DURABLE {
        h.reopen(point.into_store(), 6).unwrap()
    } else {
        point.into_store()
    };
    let mut point = Point::new(config, store, key).unwrap();
    let second = discovered(point.handle_request(asker, discover(Some("chat"), 2, cookie), now));
    assert_eq!(peers_of(&second), vec![signers[3].id, signers[0].id]);
    let third = discovered(point.handle_request(
        asker,
        discover(Some("chat"), 2, second.cookie.clone()),
        now,
    ));
    assert!(third.registrations.is_empty());
    // UNREGISTER, then a registration that fits again.
    point.handle_request(
        signers[1].id,
        Message::Unregister(Unregister {
            namespace: ns("chat"),
            id: None,
        }),
        now,
    );
    match point.handle_request(signers[4].id, register(&signers[4], "chat"), now) {
        Some(Message::RegisterResponse(r)) => assert_eq!(r.status, ResponseStatus::Ok),
        other => panic!("{other:?}"),
    }
    let fourth =
        discovered(point.handle_request(asker, discover(Some("chat"), 10, third.cookie), now));
    assert_eq!(peers_of(&fourth), vec![signers[4].id]);
    let everything = discovered(point.handle_request(asker, discover(None, 100, None), now));
    assert_eq!(everything.registrations.len(), 4);
    // A batch of REGISTERs in one store write (the daemon's group commit).
    let more: Vec<Signer> = (10..13).map(signer).collect();
    let batch = more
        .iter()
        .map(|s| {
            let Message::Register(r) = register(s, "batch") else {
                unreachable!()
            };
            let v = Verification::Verified(verify_record(&s.record).unwrap());
            (s.id, r, v)
        })
        .collect();
    let answers = point.handle_register_batch(batch, now);
    assert!(
        answers.iter().all(|a| a.status == ResponseStatus::Ok),
        "{answers:?}"
    );
    let batched = discovered(point.handle_request(asker, discover(Some("batch"), 10, None), now));
    assert_eq!(
        peers_of(&batched),
        more.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    // After the TTL (default 2 h) nothing is served, and the sweep runs.
    let later = Timestamp::from_millis(T0 + 2 * 3600 * 1000);
    let none = discovered(point.handle_request(asker, discover(None, 100, None), later));
    assert!(none.registrations.is_empty());
    assert_eq!(point.store().stats().registrations, 0);
}

/// One `#[test]` per case for a store. `$make` is an
/// `Option<impl Harness>`: `None` skips (PostgreSQL without a URL).
#[macro_export]
macro_rules! conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::suite;
            $crate::conformance!(@cases $make;
                registration refresh batch_in_order limit_per_peer limit_per_namespace
                limit_namespaces limit_total limit_bytes remove paging format_filtered_paging
                record_liveness
                expiry expiry_cost epoch positions_monotonic restart differential
                point_end_to_end);
        }
    };
    (@cases $make:expr; $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                if let Some(mut h) = $make {
                    suite::$case(&mut h);
                }
            }
        )*
    };
}
