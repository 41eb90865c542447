//! Behaviour tests on virtual time. The rendezvous point is faked by hand:
//! each test pops the client's transmits and answers them itself.

use std::time::Duration;

use bytes::Bytes;
use rdv_wire::{
    Cookie, DEFAULT_TTL, Discover, DiscoverResponse, Keypair, Message, Multiaddr, Namespace,
    PeerId, RecordFormat, Register, RegisterResponse, Registration, ResponseStatus, Timestamp, Ttl,
    sign_record,
};

use crate::{ClientError, Config, Event, RequestId, Service};

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn secs(s: u64) -> u64 {
    s * 1000
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn new_peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/192.0.2.1/tcp/{port}").parse().unwrap()
}

fn record(key: &Keypair, seq: u64, format: RecordFormat) -> Bytes {
    Bytes::from(sign_record(key, &[addr(4001)], seq, format).unwrap())
}

/// A service with one standard-format record set.
fn service(config: Config) -> (Service, Keypair) {
    seeded(config, 1)
}

fn seeded(config: Config, seed: u64) -> (Service, Keypair) {
    let me = Keypair::generate_ed25519();
    let mut svc = Service::new(config, seed);
    svc.set_signed_records(vec![record(&me, 1, RecordFormat::Standard)]);
    (svc, me)
}

fn events(svc: &mut Service) -> Vec<Event> {
    std::iter::from_fn(|| svc.poll_event()).collect()
}

/// Pops the next transmit, which must be a REGISTER to `point`.
fn expect_register(svc: &mut Service, point: PeerId) -> (RequestId, Register) {
    let t = svc.poll_transmit().expect("a REGISTER was queued");
    assert_eq!(t.point, point);
    match t.message {
        Message::Register(r) => (t.request.expect("REGISTER has a request id"), r),
        other => panic!("expected REGISTER, got {other:?}"),
    }
}

fn expect_discover(svc: &mut Service) -> (RequestId, Discover) {
    let t = svc.poll_transmit().expect("a DISCOVER was queued");
    match t.message {
        Message::Discover(d) => (t.request.expect("DISCOVER has a request id"), d),
        other => panic!("expected DISCOVER, got {other:?}"),
    }
}

fn ok(ttl: u64) -> Message {
    Message::RegisterResponse(RegisterResponse::ok(Ttl::from_secs(ttl)))
}

fn refused(status: ResponseStatus) -> Message {
    Message::RegisterResponse(RegisterResponse::error(status, "no"))
}

fn discover_ok(regs: Vec<Registration>, cookie: Option<&[u8]>) -> Message {
    Message::DiscoverResponse(DiscoverResponse {
        status: ResponseStatus::Ok,
        status_text: String::new(),
        registrations: regs,
        cookie: cookie.map(|c| Cookie::new(Bytes::copy_from_slice(c)).unwrap()),
    })
}

fn reg_of(key: &Keypair, namespace: &str, seq: u64, ttl: u64) -> Registration {
    Registration {
        namespace: ns(namespace),
        signed_peer_record: record(key, seq, RecordFormat::Standard),
        ttl: Ttl::from_secs(ttl),
    }
}

/// Registers at `point` in "chat" and answers OK with `ttl` at `now`.
fn registered(svc: &mut Service, point: PeerId, ttl: u64, now: Timestamp) {
    let id = svc
        .register(point, ns("chat"), Some(Ttl::from_secs(ttl)), now)
        .unwrap();
    let (sent, _) = expect_register(svc, point);
    assert_eq!(sent, id);
    svc.handle_response(id, ok(ttl), now);
}

// ---- registration and refresh ----

#[test]
fn refresh_is_sent_refresh_buffer_before_expiry_and_not_earlier() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    assert_eq!(
        events(&mut svc),
        vec![Event::Registered {
            point,
            namespace: ns("chat"),
            ttl: Ttl::from_secs(7200),
            refresh: false
        }]
    );
    let due = at(secs(7200 - 300));
    assert_eq!(svc.poll_timeout(), Some(due));
    let own: Vec<_> = svc.registrations().collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].expires_at, Some(at(secs(7200))));
    assert_eq!(own[0].next_attempt, Some(due));

    svc.handle_timeout(at(secs(7200 - 300) - 1));
    assert!(svc.poll_transmit().is_none(), "refresh sent early");
    svc.handle_timeout(due);
    let (id, reg) = expect_register(&mut svc, point);
    assert_eq!(reg.ttl, Some(Ttl::from_secs(7200)));
    assert_eq!(reg.namespace, ns("chat"));
    svc.handle_response(id, ok(7200), due);
    assert_eq!(
        events(&mut svc),
        vec![Event::Registered {
            point,
            namespace: ns("chat"),
            ttl: Ttl::from_secs(7200),
            refresh: true
        }]
    );
    assert_eq!(
        svc.poll_timeout(),
        Some(due + Duration::from_secs(7200 - 300))
    );
}

#[test]
fn short_ttl_refreshes_at_half_the_ttl() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    // 600 s <= 2 * 5 min: refresh at 300 s.
    registered(&mut svc, point, 600, at(0));
    assert_eq!(svc.poll_timeout(), Some(at(secs(300))));
    svc.handle_timeout(at(secs(300) - 1));
    assert!(svc.poll_transmit().is_none());
    svc.handle_timeout(at(secs(300)));
    expect_register(&mut svc, point);
}

#[test]
fn response_without_ttl_uses_the_requested_then_the_spec_default() {
    let (mut svc, _) = service(Config::default());
    let (p1, p2) = (new_peer(), new_peer());
    let no_ttl = Message::RegisterResponse(RegisterResponse {
        status: ResponseStatus::Ok,
        status_text: String::new(),
        ttl: None,
    });
    let id = svc
        .register(p1, ns("a"), Some(Ttl::from_secs(10_000)), at(0))
        .unwrap();
    svc.handle_response(id, no_ttl.clone(), at(0));
    let id = svc.register(p2, ns("a"), None, at(0)).unwrap();
    let (_, sent) = expect_register(&mut svc, p1);
    assert_eq!(sent.ttl, Some(Ttl::from_secs(10_000)));
    let (_, sent) = expect_register(&mut svc, p2);
    assert_eq!(sent.ttl, None, "no TTL requested when none configured");
    svc.handle_response(id, no_ttl, at(0));
    let expiry: Vec<_> = svc
        .registrations()
        .map(|r| (r.point, r.expires_at))
        .collect();
    assert!(expiry.contains(&(p1, Some(at(secs(10_000))))));
    assert!(expiry.contains(&(p2, Some(at(DEFAULT_TTL.as_millis())))));
}

#[test]
fn refresh_carries_the_newest_record() {
    let (mut svc, me) = service(Config::default());
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    let newer = record(&me, 2, RecordFormat::Standard);
    svc.set_signed_records(vec![newer.clone()]);
    svc.handle_timeout(svc.poll_timeout().unwrap());
    let (_, reg) = expect_register(&mut svc, point);
    assert_eq!(reg.signed_peer_record, newer);
}

#[test]
fn register_without_record_or_after_shutdown_is_refused() {
    let mut svc = Service::new(Config::default(), 0);
    let point = new_peer();
    assert_eq!(
        svc.register(point, ns("a"), None, at(0)),
        Err(ClientError::NoRecord)
    );
    svc.set_signed_records(vec![record(
        &Keypair::generate_ed25519(),
        1,
        RecordFormat::Standard,
    )]);
    svc.shutdown();
    assert_eq!(
        svc.register(point, ns("a"), None, at(0)),
        Err(ClientError::ShutDown)
    );
    assert_eq!(
        svc.discover(point, None, None, at(0)),
        Err(ClientError::ShutDown)
    );
}

// ---- failures and backoff ----

/// Fails the in-flight REGISTER at `now` and returns the announced retry time,
/// checking that the retry is then sent exactly at that time.
fn fail_and_retry(
    svc: &mut Service,
    point: PeerId,
    id: RequestId,
    now: Timestamp,
) -> (RequestId, Timestamp) {
    svc.handle_failure(id, "stream reset", now);
    let retry_at = match events(svc).pop() {
        Some(Event::RegisterFailed {
            status: None,
            retry_at: Some(r),
            ..
        }) => r,
        other => panic!("expected a retryable RegisterFailed, got {other:?}"),
    };
    assert_eq!(svc.poll_timeout(), Some(retry_at));
    svc.handle_timeout(Timestamp::from_millis(retry_at.as_millis() - 1));
    assert!(svc.poll_transmit().is_none(), "retry sent early");
    svc.handle_timeout(retry_at);
    let (id, _) = expect_register(svc, point);
    (id, retry_at)
}

#[test]
fn failure_backoff_grows_is_jittered_within_bounds_and_resets_on_success() {
    let config = Config {
        backoff_initial: Duration::from_secs(2),
        backoff_max: Duration::from_secs(300),
        ..Config::default()
    };
    let mut delays_by_seed = Vec::new();
    for seed in [1, 2] {
        let (mut svc, _) = seeded(config.clone(), seed);
        let point = new_peer();
        let mut id = svc.register(point, ns("chat"), None, at(0)).unwrap();
        expect_register(&mut svc, point);
        let mut now = at(0);
        let mut delays = Vec::new();
        for n in 0..12u32 {
            let (next, retry_at) = fail_and_retry(&mut svc, point, id, now);
            let delay = retry_at.saturating_duration_since(now);
            let cap = (Duration::from_secs(2) * 2u32.pow(n)).min(Duration::from_secs(300));
            assert!(
                delay >= cap / 2 && delay <= cap,
                "failure {n}: delay {delay:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
            delays.push(delay);
            id = next;
            now = retry_at;
        }
        // Grows: each cap doubles, so two steps apart even the jitter cannot hide it.
        for w in delays.windows(3).take(6) {
            assert!(w[2] > w[0], "{delays:?}");
        }
        // Success resets: the next failure (of the refresh) waits at most backoff_initial.
        svc.handle_response(id, ok(7200), now);
        assert!(matches!(
            events(&mut svc).pop(),
            Some(Event::Registered { .. })
        ));
        let refresh = svc.poll_timeout().unwrap();
        svc.handle_timeout(refresh);
        let (id, _) = expect_register(&mut svc, point);
        let (_, retry_at) = fail_and_retry(&mut svc, point, id, refresh);
        let delay = retry_at.saturating_duration_since(refresh);
        assert!(
            delay >= Duration::from_secs(1) && delay <= Duration::from_secs(2),
            "{delay:?}"
        );
        delays_by_seed.push(delays);
    }
    assert_ne!(
        delays_by_seed[0], delays_by_seed[1],
        "delays are not jittered"
    );
}

#[test]
fn refresh_without_records_is_retried_later_even_with_zero_backoff() {
    let (mut svc, _) = service(Config {
        backoff_initial: Duration::ZERO,
        backoff_max: Duration::ZERO,
        ..Config::default()
    });
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    events(&mut svc);
    svc.set_signed_records(Vec::new());
    let due = svc.poll_timeout().unwrap();
    svc.handle_timeout(due); // must return
    assert!(svc.poll_transmit().is_none());
    match events(&mut svc).as_slice() {
        [
            Event::RegisterFailed {
                status: None,
                retry_at: Some(r),
                ..
            },
        ] => assert!(*r > due),
        e => panic!("{e:?}"),
    }
    assert!(svc.poll_timeout().unwrap() > due);
}

#[test]
fn transient_status_is_retried_with_backoff() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    for status in [ResponseStatus::Unavailable, ResponseStatus::InternalError] {
        let id = svc.register(point, ns("chat"), None, at(0)).unwrap();
        expect_register(&mut svc, point);
        svc.handle_response(id, refused(status), at(0));
        match events(&mut svc).as_slice() {
            [
                Event::RegisterFailed {
                    status: s,
                    retry_at: Some(r),
                    ..
                },
            ] => {
                assert_eq!(*s, Some(status));
                assert!(*r > at(0) && *r <= at(secs(2)));
                svc.handle_timeout(*r);
                expect_register(&mut svc, point);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn expired_is_emitted_once_when_retries_outlast_the_ttl() {
    let config = Config {
        refresh_buffer: Duration::from_secs(30),
        backoff_initial: Duration::from_secs(4),
        backoff_max: Duration::from_secs(20),
        ..Config::default()
    };
    let (mut svc, _) = service(config);
    let point = new_peer();
    registered(&mut svc, point, 120, at(0));
    events(&mut svc);
    let expiry = at(secs(120));
    let mut now = svc.poll_timeout().unwrap();
    assert_eq!(now, at(secs(90)));
    svc.handle_timeout(now);
    let (mut id, _) = expect_register(&mut svc, point);
    let mut expired = 0;
    let mut retries_after_expiry = 0;
    while now < at(secs(600)) {
        svc.handle_failure(id, "timeout", now);
        // Run deadlines until the retry goes out.
        loop {
            now = svc.poll_timeout().expect("a retry is scheduled");
            svc.handle_timeout(now);
            for e in events(&mut svc) {
                if let Event::Expired {
                    point: p,
                    namespace,
                } = e
                {
                    assert_eq!((p, namespace), (point, ns("chat")));
                    assert_eq!(now, expiry, "Expired not at the expiry");
                    expired += 1;
                }
            }
            if let Some(t) = svc.poll_transmit() {
                assert!(matches!(t.message, Message::Register(_)));
                id = t.request.unwrap();
                break;
            }
        }
        if now > expiry {
            retries_after_expiry += 1;
        }
    }
    assert_eq!(expired, 1, "Expired must be reported exactly once");
    assert!(retries_after_expiry > 5, "retries stop after expiry");
    // A late success re-registers; it is not a refresh of a live registration.
    svc.handle_response(id, ok(120), now);
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::Registered { refresh: false, .. }]
    ));
}

#[test]
fn without_auto_refresh_a_registration_expires_and_is_dropped() {
    let (mut svc, _) = service(Config {
        auto_refresh: false,
        ..Config::default()
    });
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    events(&mut svc);
    assert_eq!(svc.poll_timeout(), Some(at(secs(7200))));
    svc.handle_timeout(at(secs(7200)));
    assert!(
        svc.poll_transmit().is_none(),
        "no refresh without auto_refresh"
    );
    assert_eq!(
        events(&mut svc),
        vec![Event::Expired {
            point,
            namespace: ns("chat")
        }]
    );
    assert_eq!(svc.registrations().count(), 0);
    assert_eq!(svc.poll_timeout(), None);
}

#[test]
fn permanent_status_drops_the_registration() {
    for status in [
        ResponseStatus::NotAuthorized,
        ResponseStatus::InvalidTtl,
        ResponseStatus::InvalidNamespace,
        ResponseStatus::Other(999),
    ] {
        let (mut svc, _) = service(Config::default());
        let point = new_peer();
        // Fails on the refresh of a live registration.
        registered(&mut svc, point, 7200, at(0));
        events(&mut svc);
        let now = svc.poll_timeout().unwrap();
        svc.handle_timeout(now);
        let (id, _) = expect_register(&mut svc, point);
        svc.handle_response(id, refused(status), now);
        assert_eq!(
            events(&mut svc),
            vec![Event::RegisterFailed {
                point,
                namespace: ns("chat"),
                status: Some(status),
                text: "no".into(),
                retry_at: None
            }]
        );
        assert_eq!(svc.registrations().count(), 0);
        assert_eq!(svc.poll_timeout(), None, "{status}: timers left behind");
        svc.handle_timeout(at(secs(100_000)));
        assert!(svc.poll_transmit().is_none());
        assert!(
            events(&mut svc).is_empty(),
            "no Expired for a dropped registration"
        );
    }
}

#[test]
fn invalid_record_falls_back_to_legacy_and_is_remembered_per_point() {
    let me = Keypair::generate_ed25519();
    let standard = record(&me, 1, RecordFormat::Standard);
    let legacy = record(&me, 1, RecordFormat::Legacy);
    let mut svc = Service::new(Config::default(), 3);
    svc.set_signed_records(vec![standard.clone(), legacy.clone()]);
    let (rust_point, go_point) = (new_peer(), new_peer());

    let id = svc.register(rust_point, ns("a"), None, at(0)).unwrap();
    let (_, sent) = expect_register(&mut svc, rust_point);
    assert_eq!(sent.signed_peer_record, standard);
    svc.handle_response(id, refused(ResponseStatus::InvalidSignedPeerRecord), at(0));
    assert!(events(&mut svc).is_empty(), "fallback is silent");
    let (id, sent) = expect_register(&mut svc, rust_point);
    assert_eq!(
        sent.signed_peer_record, legacy,
        "retried at once with the legacy record"
    );
    svc.handle_response(id, ok(7200), at(0));
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::Registered { .. }]
    ));

    // Same point, another namespace: starts with the record that worked.
    svc.register(rust_point, ns("b"), None, at(1)).unwrap();
    assert_eq!(
        expect_register(&mut svc, rust_point).1.signed_peer_record,
        legacy
    );
    // And so does the refresh.
    svc.handle_timeout(at(secs(7200 - 300)));
    assert_eq!(
        expect_register(&mut svc, rust_point).1.signed_peer_record,
        legacy
    );
    // Another point starts with the most preferred.
    let id = svc.register(go_point, ns("a"), None, at(1)).unwrap();
    assert_eq!(
        expect_register(&mut svc, go_point).1.signed_peer_record,
        standard
    );

    // When every record is refused, the failure is permanent.
    svc.handle_response(id, refused(ResponseStatus::InvalidSignedPeerRecord), at(1));
    let (id, _) = expect_register(&mut svc, go_point);
    svc.handle_response(id, refused(ResponseStatus::InvalidSignedPeerRecord), at(1));
    assert!(svc.poll_transmit().is_none());
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::RegisterFailed {
            status: Some(ResponseStatus::InvalidSignedPeerRecord),
            retry_at: None,
            ..
        }]
    ));
}

/// A point of go-libp2p-rendezvous's original schema (py-libp2p) reads a
/// signed envelope as a PeerInfo naming someone else and answers
/// E_NOT_AUTHORIZED: until a record has worked at a point, that moves on to
/// the next record (the PeerInfo last); afterwards it is a refusal like any.
/// The UNREGISTER names us (its deprecated `id`, which that point requires).
#[test]
fn not_authorized_moves_on_to_the_peer_info_until_a_record_has_worked() {
    let me = Keypair::generate_ed25519();
    let records = RecordFormat::ALL.map(|f| record(&me, 1, f));
    let mut svc = Service::new(Config::default(), 3);
    svc.set_signed_records(records.to_vec());
    let py_point = new_peer();

    svc.register(py_point, ns("a"), None, at(0)).unwrap();
    for (i, expected) in records.iter().enumerate() {
        let (id, sent) = expect_register(&mut svc, py_point);
        assert_eq!(&sent.signed_peer_record, expected, "record {i}");
        if i < 2 {
            svc.handle_response(id, refused(ResponseStatus::NotAuthorized), at(0));
            assert!(events(&mut svc).is_empty(), "fallback is silent");
        } else {
            svc.handle_response(id, ok(7200), at(0));
        }
    }
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::Registered { .. }]
    ));
    svc.unregister(py_point, ns("a"), at(1));
    match svc.poll_transmit().map(|t| t.message) {
        Some(Message::Unregister(u)) => assert_eq!(u.id, Some(me.public().to_peer_id())),
        other => panic!("expected UNREGISTER, got {other:?}"),
    }

    // The PeerInfo worked here: a later E_NOT_AUTHORIZED is a refusal.
    svc.register(py_point, ns("b"), None, at(2)).unwrap();
    let (id, sent) = expect_register(&mut svc, py_point);
    assert_eq!(sent.signed_peer_record, records[2]);
    svc.handle_response(id, refused(ResponseStatus::NotAuthorized), at(2));
    assert!(svc.poll_transmit().is_none());
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::RegisterFailed {
            status: Some(ResponseStatus::NotAuthorized),
            retry_at: None,
            ..
        }]
    ));
}

/// A client that dials what it discovers can refuse unsigned PeerInfo
/// records (the point alone vouches for them); by default they are read.
#[test]
fn unsigned_peer_info_records_are_read_unless_refused() {
    let other = Keypair::generate_ed25519();
    let info = record(&other, 0, RecordFormat::PeerInfo);
    for accept in [true, false] {
        let (mut svc, _) = service(Config {
            accept_unsigned_records: accept,
            ..Config::default()
        });
        let point = new_peer();
        let id = svc.discover(point, Some(ns("chat")), None, at(0)).unwrap();
        expect_discover(&mut svc);
        let reg = Registration {
            namespace: ns("chat"),
            signed_peer_record: info.clone(),
            ttl: Ttl::from_secs(60),
        };
        svc.handle_response(
            id,
            Message::DiscoverResponse(DiscoverResponse {
                registrations: vec![reg],
                ..DiscoverResponse::error(ResponseStatus::Ok, "")
            }),
            at(1),
        );
        let found = events(&mut svc).into_iter().any(|e| match e {
            Event::Discovered { registrations, .. } => !registrations.is_empty(),
            _ => false,
        });
        assert_eq!(found, accept, "accept_unsigned_records = {accept}");
    }
}

// ---- discovery ----

#[test]
fn discover_sends_the_cached_cookie_the_second_time() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let other = Keypair::generate_ed25519();
    let id = svc
        .discover(point, Some(ns("chat")), Some(10), at(0))
        .unwrap();
    let (_, d) = expect_discover(&mut svc);
    assert_eq!(d.cookie, None);
    assert_eq!(d.limit, Some(10));
    svc.handle_response(
        id,
        discover_ok(vec![reg_of(&other, "chat", 1, 7200)], Some(b"c1")),
        at(0),
    );
    match events(&mut svc).as_slice() {
        [
            Event::Discovered {
                registrations,
                namespace,
                ..
            },
        ] => {
            assert_eq!(namespace, &Some(ns("chat")));
            assert_eq!(registrations.len(), 1);
            assert_eq!(registrations[0].peer, other.public().to_peer_id());
            assert_eq!(registrations[0].expires_at, at(secs(7200)));
        }
        e => panic!("{e:?}"),
    }
    let id = svc.discover(point, Some(ns("chat")), None, at(1)).unwrap();
    let (_, d) = expect_discover(&mut svc);
    assert_eq!(d.cookie.as_ref().map(|c| c.as_bytes()), Some(&b"c1"[..]));
    // Another key has its own cookie.
    svc.discover(point, None, None, at(1)).unwrap();
    assert_eq!(expect_discover(&mut svc).1.cookie, None);
    // An answer without a cookie keeps the last one.
    svc.handle_response(id, discover_ok(vec![], None), at(2));
    svc.discover(point, Some(ns("chat")), None, at(3)).unwrap();
    assert_eq!(
        expect_discover(&mut svc)
            .1
            .cookie
            .map(|c| c.as_bytes().to_vec()),
        Some(b"c1".to_vec())
    );
}

#[test]
fn discovered_tells_a_page_of_nothing_new_from_the_end() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let other = Keypair::generate_ed25519();
    let ask = |svc: &mut Service, regs, t| {
        let id = svc.discover(point, Some(ns("chat")), None, at(t)).unwrap();
        expect_discover(svc);
        svc.handle_response(id, discover_ok(regs, Some(b"c")), at(t));
        match events(svc).as_slice() {
            [
                Event::Discovered {
                    registrations,
                    returned,
                    ..
                },
            ] => (registrations.len(), *returned),
            e => panic!("{e:?}"),
        }
    };
    assert_eq!(
        ask(&mut svc, vec![reg_of(&other, "chat", 1, 7200)], 0),
        (1, 1)
    );
    // The same registration again (a refresh came back): nothing new, but
    // not the end either.
    assert_eq!(
        ask(&mut svc, vec![reg_of(&other, "chat", 1, 7200)], 1),
        (0, 1)
    );
    assert_eq!(ask(&mut svc, vec![], 2), (0, 0));
}

#[test]
fn invalid_cookie_answer_drops_the_cookie() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let id = svc.discover(point, Some(ns("chat")), None, at(0)).unwrap();
    svc.handle_response(id, discover_ok(vec![], Some(b"c1")), at(0));
    expect_discover(&mut svc);
    events(&mut svc);
    let id = svc.discover(point, Some(ns("chat")), None, at(1)).unwrap();
    assert!(expect_discover(&mut svc).1.cookie.is_some());
    svc.handle_response(
        id,
        Message::DiscoverResponse(DiscoverResponse::error(
            ResponseStatus::InvalidCookie,
            "stale",
        )),
        at(1),
    );
    assert_eq!(
        events(&mut svc),
        vec![Event::DiscoverFailed {
            point,
            namespace: Some(ns("chat")),
            status: Some(ResponseStatus::InvalidCookie),
            text: "stale".into()
        }]
    );
    svc.discover(point, Some(ns("chat")), None, at(2)).unwrap();
    assert_eq!(expect_discover(&mut svc).1.cookie, None, "starts over");
}

#[test]
fn cache_entries_expire_with_discovered_expired_at_their_ttl() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let id = svc.discover(point, None, None, at(0)).unwrap();
    svc.handle_response(
        id,
        discover_ok(vec![reg_of(&a, "x", 1, 100), reg_of(&b, "y", 1, 200)], None),
        at(0),
    );
    events(&mut svc);
    assert_eq!(svc.cached(&point, None, at(0)).len(), 2);
    assert!(
        svc.cached(&point, Some(&ns("x")), at(0)).is_empty(),
        "separate key"
    );
    assert_eq!(svc.poll_timeout(), Some(at(secs(100))));
    svc.handle_timeout(at(secs(100) - 1));
    assert!(events(&mut svc).is_empty());
    svc.handle_timeout(at(secs(100)));
    assert_eq!(
        events(&mut svc),
        vec![Event::DiscoveredExpired {
            point,
            query: None,
            namespace: ns("x"),
            peer: a.public().to_peer_id()
        }]
    );
    let left = svc.cached(&point, None, at(secs(100)));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].peer, b.public().to_peer_id());
    assert_eq!(svc.poll_timeout(), Some(at(secs(200))));
    // `cached` hides an entry whose time is up even before the timer runs.
    assert!(svc.cached(&point, None, at(secs(200))).is_empty());
    svc.handle_timeout(at(secs(250)));
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::DiscoveredExpired { namespace, .. }] if *namespace == ns("y")
    ));
    assert_eq!(svc.poll_timeout(), None);
}

#[test]
fn unverifiable_or_foreign_records_are_dropped_and_counted() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let good = Keypair::generate_ed25519();
    let mut tampered = record(&good, 1, RecordFormat::Standard).to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1; // inside the signature
    let id = svc.discover(point, Some(ns("chat")), None, at(0)).unwrap();
    svc.handle_response(
        id,
        discover_ok(
            vec![
                Registration {
                    namespace: ns("chat"),
                    signed_peer_record: Bytes::from_static(b"garbage"),
                    ttl: Ttl::from_secs(100),
                },
                Registration {
                    namespace: ns("chat"),
                    signed_peer_record: Bytes::from(tampered),
                    ttl: Ttl::from_secs(100),
                },
                // Not the namespace asked for.
                reg_of(&Keypair::generate_ed25519(), "other", 1, 100),
                reg_of(&good, "chat", 1, 100),
            ],
            None,
        ),
        at(0),
    );
    match events(&mut svc).as_slice() {
        [Event::Discovered { registrations, .. }] => {
            assert_eq!(registrations.len(), 1);
            assert_eq!(registrations[0].peer, good.public().to_peer_id());
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(svc.cached(&point, Some(&ns("chat")), at(0)).len(), 1);
    assert_eq!(svc.stats().records_rejected, 3);
}

#[test]
fn newer_record_replaces_older_and_only_new_ones_are_reported() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let a = Keypair::generate_ed25519();
    let b = Keypair::generate_ed25519();
    let mut answer = |regs, now| {
        let id = svc.discover(point, None, None, now).unwrap();
        svc.poll_transmit();
        svc.handle_response(id, discover_ok(regs, None), now);
        match events(&mut svc).pop() {
            Some(Event::Discovered { registrations, .. }) => registrations,
            e => panic!("{e:?}"),
        }
    };
    assert_eq!(answer(vec![reg_of(&a, "x", 2, 100)], at(0)).len(), 1);
    // Same record again: not new, but its expiry is extended.
    assert!(answer(vec![reg_of(&a, "x", 2, 100)], at(secs(50))).is_empty());
    // Older seq: ignored. New peer: reported.
    let new = answer(
        vec![reg_of(&a, "x", 1, 500), reg_of(&b, "x", 1, 100)],
        at(secs(50)),
    );
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].peer, b.public().to_peer_id());
    // Newer seq: replaces and is reported.
    let new = answer(vec![reg_of(&a, "x", 3, 100)], at(secs(60)));
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].record.seq, 3);
    let cached = svc.cached(&point, None, at(secs(60)));
    assert_eq!(cached.len(), 2);
    let a_entry = cached
        .iter()
        .find(|c| c.peer == a.public().to_peer_id())
        .unwrap();
    assert_eq!((a_entry.record.seq, a_entry.expires_at), (3, at(secs(160))));
    // The old expiry deadline of a is gone: b expires first, then a, once each.
    svc.handle_timeout(at(secs(1000)));
    let expired: Vec<_> = events(&mut svc)
        .into_iter()
        .filter(|e| matches!(e, Event::DiscoveredExpired { .. }))
        .collect();
    assert_eq!(expired.len(), 2);
}

#[test]
fn cache_is_bounded_per_query_keeping_the_longest_lived() {
    let (mut svc, _) = service(Config {
        max_cached_per_query: 2,
        ..Config::default()
    });
    let point = new_peer();
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
    let id = svc.discover(point, None, None, at(0)).unwrap();
    svc.handle_response(
        id,
        discover_ok(
            vec![
                reg_of(&keys[0], "x", 1, 300),
                reg_of(&keys[1], "x", 1, 100),
                reg_of(&keys[2], "x", 1, 200), // evicts keys[1]
                reg_of(&keys[3], "x", 1, 50),  // shorter than all: dropped
            ],
            None,
        ),
        at(0),
    );
    let mut peers: Vec<_> = svc
        .cached(&point, None, at(0))
        .iter()
        .map(|c| c.peer)
        .collect();
    peers.sort();
    let mut want = vec![keys[0].public().to_peer_id(), keys[2].public().to_peer_id()];
    want.sort();
    assert_eq!(peers, want);
    assert_eq!(svc.stats().cache_overflow, 2);
    assert_eq!(
        svc.poll_timeout(),
        Some(at(secs(200))),
        "evicted entry's deadline left"
    );
}

#[test]
fn discover_failure_and_wrong_kind_answer_are_reported() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let id = svc.discover(point, None, None, at(0)).unwrap();
    svc.handle_failure(id, "connection refused", at(0));
    let id2 = svc.discover(point, None, None, at(0)).unwrap();
    svc.handle_response(id2, ok(10), at(0));
    let evs = events(&mut svc);
    assert!(matches!(
        evs.as_slice(),
        [
            Event::DiscoverFailed { status: None, text, .. },
            Event::DiscoverFailed { status: None, .. }
        ] if text == "connection refused"
    ));
}

// ---- unregister, stale answers ----

#[test]
fn unregister_stops_refreshes_and_a_late_response_does_not_resurrect() {
    let (mut svc, me) = service(Config::default());
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    events(&mut svc);
    // A refresh goes out, then we leave before its answer.
    let due = svc.poll_timeout().unwrap();
    svc.handle_timeout(due);
    let (id, _) = expect_register(&mut svc, point);
    svc.unregister(point, ns("chat"), due);
    let t = svc.poll_transmit().unwrap();
    assert_eq!(t.request, None);
    assert_eq!(
        t.message,
        Message::Unregister(rdv_wire::Unregister {
            namespace: ns("chat"),
            id: Some(me.public().to_peer_id())
        })
    );
    svc.handle_response(id, ok(7200), due);
    assert!(events(&mut svc).is_empty());
    assert_eq!(svc.registrations().count(), 0);
    assert_eq!(svc.poll_timeout(), None, "no refresh or expiry left");
    svc.handle_timeout(at(secs(1_000_000)));
    assert!(svc.poll_transmit().is_none());
    assert!(events(&mut svc).is_empty());
}

#[test]
fn unregister_withdraws_an_unsent_register() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    let id = svc.register(point, ns("chat"), None, at(0)).unwrap();
    svc.unregister(point, ns("chat"), at(0));
    let t = svc.poll_transmit().unwrap();
    assert!(
        matches!(t.message, Message::Unregister(_)),
        "REGISTER was not withdrawn"
    );
    assert!(svc.poll_transmit().is_none());
    svc.handle_failure(id, "late", at(1));
    assert!(events(&mut svc).is_empty());
    assert_eq!(svc.poll_timeout(), None);
}

#[test]
fn stale_and_wrong_kind_responses_are_ignored() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    // Unknown id.
    svc.handle_response(RequestId(12345), ok(7200), at(0));
    svc.handle_failure(RequestId(12345), "x", at(0));
    assert!(events(&mut svc).is_empty());
    // Superseded request: a second register for the same key replaces the first.
    let first = svc.register(point, ns("chat"), None, at(0)).unwrap();
    expect_register(&mut svc, point);
    let second = svc.register(point, ns("chat"), None, at(0)).unwrap();
    svc.handle_response(first, ok(7200), at(0));
    svc.handle_failure(first, "late", at(0));
    assert!(
        events(&mut svc).is_empty(),
        "answer to a superseded request was used"
    );
    // A DISCOVER_RESPONSE to a REGISTER does not register us (it fails the request).
    svc.handle_response(second, discover_ok(vec![], None), at(0));
    let evs = events(&mut svc);
    assert!(
        matches!(
            evs.as_slice(),
            [Event::RegisterFailed {
                status: None,
                retry_at: Some(_),
                ..
            }]
        ),
        "{evs:?}"
    );
    assert_eq!(svc.registrations().next().unwrap().expires_at, None);
    // The same id answered twice: the second is unknown.
    svc.handle_timeout(svc.poll_timeout().unwrap());
    let mut third = None;
    while let Some(t) = svc.poll_transmit() {
        third = t.request;
    }
    let third = third.unwrap();
    assert_ne!(third, second);
    svc.handle_response(third, ok(7200), at(secs(10)));
    svc.handle_response(third, refused(ResponseStatus::NotAuthorized), at(secs(10)));
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::Registered { .. }]
    ));
    assert_eq!(svc.registrations().count(), 1);
    // Requests echoed back as answers are not answers either.
    let id = svc.discover(point, None, None, at(secs(11))).unwrap();
    svc.handle_response(id, Message::Discover(Discover::default()), at(secs(11)));
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::DiscoverFailed { status: None, .. }]
    ));
    assert!(svc.cached(&point, None, at(secs(11))).is_empty());
}

// ---- events and shutdown ----

#[test]
fn event_queue_is_bounded_dropping_the_oldest_and_counting() {
    let (mut svc, _) = service(Config {
        max_events: 3,
        ..Config::default()
    });
    let point = new_peer();
    for i in 0..5u64 {
        let id = svc.discover(point, None, None, at(i)).unwrap();
        svc.handle_failure(id, &format!("f{i}"), at(i));
    }
    let evs = events(&mut svc);
    let texts: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::DiscoverFailed { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(evs[0], Event::EventsDropped { count: 2 });
    assert_eq!(texts, ["f2", "f3", "f4"]);
    assert_eq!(svc.stats().events_dropped, 2);
}

#[test]
fn shutdown_ends_the_event_stream_and_stops_timers() {
    let (mut svc, _) = service(Config::default());
    let point = new_peer();
    registered(&mut svc, point, 7200, at(0));
    let pending = svc.discover(point, None, None, at(0)).unwrap();
    assert!(svc.poll_timeout().is_some());
    svc.unregister(point, ns("other"), at(0));
    svc.shutdown();
    svc.shutdown();
    assert_eq!(svc.poll_timeout(), None);
    let evs = events(&mut svc);
    assert_eq!(evs.last(), Some(&Event::ShutDown));
    assert_eq!(evs.iter().filter(|e| **e == Event::ShutDown).count(), 1);
    // Only the UNREGISTER is still to be sent.
    let mut left = Vec::new();
    while let Some(t) = svc.poll_transmit() {
        left.push(t);
    }
    assert!(matches!(left.as_slice(), [t] if matches!(t.message, Message::Unregister(_))));
    // Nothing more happens, ever.
    svc.handle_response(pending, discover_ok(vec![], None), at(1));
    svc.handle_timeout(at(secs(1_000_000)));
    assert!(svc.poll_transmit().is_none());
    assert_eq!(svc.poll_event(), None);
    assert_eq!(svc.poll_event(), None);
    assert_eq!(svc.poll_timeout(), None);
}

#[test]
fn shutdown_is_last_even_when_the_queue_is_full() {
    let (mut svc, _) = service(Config {
        max_events: 1,
        ..Config::default()
    });
    let id = svc.discover(new_peer(), None, None, at(0)).unwrap();
    svc.handle_failure(id, "x", at(0));
    svc.shutdown();
    assert_eq!(
        events(&mut svc),
        vec![Event::EventsDropped { count: 1 }, Event::ShutDown]
    );
}

// ---- property: no input sequence panics, timers never lag ----

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Register {
            point: usize,
            ns: usize,
            ttl: Option<u64>,
        },
        Unregister {
            point: usize,
            ns: usize,
        },
        Discover {
            point: usize,
            ns: Option<usize>,
            limit: Option<u64>,
        },
        SetRecords(Vec<usize>),
        /// Answer the n-th request seen so far (stale ones included).
        Answer {
            nth: usize,
            answer: Answer,
        },
        Fail {
            nth: usize,
        },
        Advance(u64),
        Shutdown,
    }

    #[derive(Debug, Clone)]
    enum Answer {
        RegisterOk(Option<u64>),
        RegisterStatus(i32),
        Discover {
            regs: Vec<(usize, usize, u64, u64)>,
            cookie: Option<Vec<u8>>,
            status: i32,
        },
        Garbage,
    }

    fn status() -> impl Strategy<Value = i32> {
        prop_oneof![
            Just(0),
            Just(100),
            Just(101),
            Just(102),
            Just(103),
            Just(200),
            Just(300),
            Just(400),
            any::<i32>()
        ]
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            proptest::option::of(0u64..20_000).prop_map(Answer::RegisterOk),
            status().prop_map(Answer::RegisterStatus),
            (
                proptest::collection::vec((0usize..4, 0usize..3, 0u64..4, 0u64..20_000), 0..6),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                prop_oneof![3 => Just(0), 1 => status()],
            )
                .prop_map(|(regs, cookie, status)| Answer::Discover {
                    regs,
                    cookie,
                    status
                }),
            Just(Answer::Garbage),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..2, 0usize..3, proptest::option::of(0u64..20_000))
                .prop_map(|(point, ns, ttl)| Op::Register { point, ns, ttl }),
            1 => (0usize..2, 0usize..3).prop_map(|(point, ns)| Op::Unregister { point, ns }),
            2 => (0usize..2, proptest::option::of(0usize..3), proptest::option::of(0u64..5))
                .prop_map(|(point, ns, limit)| Op::Discover { point, ns, limit }),
            1 => proptest::collection::vec(0usize..3, 0..3).prop_map(Op::SetRecords),
            4 => (any::<usize>(), answer()).prop_map(|(nth, answer)| Op::Answer { nth, answer }),
            2 => any::<usize>().prop_map(|nth| Op::Fail { nth }),
            4 => prop_oneof![0u64..10, 0u64..10_000, 0u64..20_000_000].prop_map(Op::Advance),
            1 => Just(Op::Shutdown),
        ]
    }

    fn config() -> impl Strategy<Value = Config> {
        (
            any::<bool>(),
            0u64..400_000,
            0u64..5_000,
            0u64..400_000,
            0usize..6,
            0usize..4,
        )
            .prop_map(
                |(auto_refresh, buffer, initial, max, max_events, max_cached)| Config {
                    default_ttl: None,
                    auto_refresh,
                    refresh_buffer: Duration::from_millis(buffer),
                    backoff_initial: Duration::from_millis(initial),
                    backoff_max: Duration::from_millis(max),
                    max_events,
                    max_cached_per_query: max_cached,
                    max_internal_error_retries: 3,
                    accept_unsigned_records: true,
                },
            )
    }

    /// Keys and signed records, made once: signing is the slow part.
    struct Fixture {
        points: [PeerId; 2],
        records: [Bytes; 3],
        signed: Vec<Vec<Bytes>>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        FIXTURE.get_or_init(|| {
            let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
            Fixture {
                points: [new_peer(), new_peer()],
                records: [
                    record(&keys[0], 1, RecordFormat::Standard),
                    record(&keys[0], 2, RecordFormat::Legacy),
                    Bytes::from_static(b"not a record"),
                ],
                signed: keys
                    .iter()
                    .map(|k| {
                        (0..4)
                            .map(|seq| record(k, seq, RecordFormat::Standard))
                            .collect()
                    })
                    .collect(),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn random_inputs_never_panic_and_timeouts_never_lag(
            config in config(),
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let Fixture { points, records, signed } = fixture();
            let names = [ns("a"), ns("b"), ns("c")];
            let mut svc = Service::new(config, seed);
            let mut now = at(0);
            let mut seen: Vec<RequestId> = Vec::new();
            let mut shut = false;
            for op in ops {
                match op {
                    Op::Register { point, ns, ttl } => {
                        let r = svc.register(points[point], names[ns].clone(), ttl.map(Ttl::from_secs), now);
                        if shut { prop_assert_eq!(r, Err(ClientError::ShutDown)); }
                    }
                    Op::Unregister { point, ns } => svc.unregister(points[point], names[ns].clone(), now),
                    Op::Discover { point, ns, limit } => {
                        let r = svc.discover(points[point], ns.map(|i| names[i].clone()), limit, now);
                        if shut { prop_assert_eq!(r, Err(ClientError::ShutDown)); }
                    }
                    Op::SetRecords(idx) => svc.set_signed_records(idx.into_iter().map(|i| records[i].clone()).collect()),
                    Op::Answer { nth, answer } => {
                        if seen.is_empty() { continue; }
                        let id = seen[nth % seen.len()];
                        let msg = match answer {
                            Answer::RegisterOk(ttl) => Message::RegisterResponse(RegisterResponse {
                                status: ResponseStatus::Ok,
                                status_text: String::new(),
                                ttl: ttl.map(Ttl::from_secs),
                            }),
                            Answer::RegisterStatus(s) => Message::RegisterResponse(
                                RegisterResponse::error(ResponseStatus::from_code(s), "x"),
                            ),
                            Answer::Discover { regs, cookie, status } => Message::DiscoverResponse(DiscoverResponse {
                                status: ResponseStatus::from_code(status),
                                status_text: String::new(),
                                registrations: regs
                                    .into_iter()
                                    .map(|(k, n, seq, ttl)| Registration {
                                        namespace: names[n].clone(),
                                        signed_peer_record: if k == 3 && seq == 0 {
                                            Bytes::from_static(b"junk")
                                        } else {
                                            signed[k][seq as usize].clone()
                                        },
                                        ttl: Ttl::from_secs(ttl),
                                    })
                                    .collect(),
                                cookie: cookie.map(|c| Cookie::new(c).unwrap()),
                            }),
                            Answer::Garbage => Message::Discover(Discover::default()),
                        };
                        svc.handle_response(id, msg, now);
                    }
                    Op::Fail { nth } => {
                        if seen.is_empty() { continue; }
                        svc.handle_failure(seen[nth % seen.len()], "fail", now);
                    }
                    Op::Advance(ms) => {
                        now = now + Duration::from_millis(ms);
                        svc.handle_timeout(now);
                        if let Some(next) = svc.poll_timeout() {
                            prop_assert!(next > now, "poll_timeout {next} not after {now}");
                        }
                    }
                    Op::Shutdown => {
                        svc.shutdown();
                        shut = true;
                    }
                }
                while let Some(t) = svc.poll_transmit() {
                    if let Some(id) = t.request { seen.push(id); }
                    if shut { prop_assert!(t.request.is_none(), "request sent after shutdown"); }
                }
                let mut after_shutdown = false;
                while let Some(e) = svc.poll_event() {
                    prop_assert!(!after_shutdown, "event after ShutDown");
                    after_shutdown = e == Event::ShutDown;
                }
                if shut {
                    prop_assert_eq!(svc.poll_timeout(), None);
                }
                for c in svc.cached(&points[0], None, now) {
                    prop_assert!(c.expires_at > now);
                }
            }
        }
    }
}

#[test]
fn a_dropped_register_tries_the_next_format_until_one_has_worked() {
    let me = Keypair::generate_ed25519();
    let standard = record(&me, 1, RecordFormat::Standard);
    let legacy = record(&me, 1, RecordFormat::Legacy);
    let mut svc = Service::new(Config::default(), 3);
    svc.set_signed_records(vec![standard.clone(), legacy.clone()]);
    let point = new_peer();

    // A rust-libp2p point closes the stream on a record it cannot parse.
    let id = svc.register(point, ns("a"), None, at(0)).unwrap();
    assert_eq!(
        expect_register(&mut svc, point).1.signed_peer_record,
        standard
    );
    svc.handle_failure(id, "closed without answering", at(0));
    let (id, sent) = expect_register(&mut svc, point);
    assert_eq!(
        sent.signed_peer_record, legacy,
        "retried at once with the next format"
    );
    svc.handle_response(id, ok(7200), at(0));
    events(&mut svc);

    // Once a format has worked there, a failure is a network failure: backoff.
    svc.handle_timeout(at(secs(7200 - 300)));
    let (id, _) = expect_register(&mut svc, point);
    svc.handle_failure(id, "connection reset", at(secs(7200 - 300)));
    assert!(svc.poll_transmit().is_none(), "no immediate resend");
    assert!(matches!(
        events(&mut svc).as_slice(),
        [Event::RegisterFailed {
            status: None,
            retry_at: Some(_),
            ..
        }]
    ));
}

#[test]
fn internal_errors_are_retried_a_bounded_number_of_times() {
    let (mut svc, _) = service(Config {
        max_internal_error_retries: 3,
        ..Config::default()
    });
    let point = new_peer();
    svc.register(point, ns("chat"), None, at(0)).unwrap();
    let (mut id, _) = expect_register(&mut svc, point);
    let internal = Message::RegisterResponse(RegisterResponse {
        status: ResponseStatus::InternalError,
        status_text: "bug".into(),
        ttl: None,
    });
    let mut now = at(0);
    for n in 1..=3u32 {
        svc.handle_response(id, internal.clone(), now);
        match events(&mut svc).pop() {
            Some(Event::RegisterFailed {
                retry_at: Some(r), ..
            }) if n < 3 => {
                svc.handle_timeout(r);
                id = expect_register(&mut svc, point).0;
                now = r;
            }
            Some(Event::RegisterFailed {
                retry_at: None,
                status,
                ..
            }) if n == 3 => {
                assert_eq!(status, Some(ResponseStatus::InternalError));
            }
            other => panic!("answer {n}: {other:?}"),
        }
    }
    // Given up: nothing more is sent, however long we wait.
    svc.handle_timeout(at(10_000_000));
    assert!(svc.poll_transmit().is_none());
}
