//! The Binding-only server core: answers, drops and counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdv_stun::stun_types::attribute::{
    AttributeStaticType, ErrorCode, Fingerprint, RawAttribute, UnknownAttributes, XorMappedAddress,
};
use rdv_stun::stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    Method, TransactionId,
};
use rdv_stun::{Drop, LimiterConfig, MAX_ANSWER, Outcome, ServerConfig, StunServer};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn message(class: MessageClass, method: Method, id: u128, attrs: &[RawAttribute<'_>]) -> Vec<u8> {
    let mut w = Message::builder(
        MessageType::from_class_method(class, method),
        TransactionId::from(id),
        MessageWriteVec::new(),
    );
    for a in attrs {
        w.add_attribute(a).expect("attribute");
    }
    w.add_fingerprint().expect("fingerprint");
    w.finish()
}

fn binding(id: u128) -> Vec<u8> {
    message(MessageClass::Request, BINDING, id, &[])
}

#[test]
fn a_binding_request_is_answered_with_the_source_address() {
    let mut server = StunServer::new(ServerConfig::default());
    let now = Instant::now();
    for (from, want) in [
        ("198.51.100.7:40000", "198.51.100.7:40000"),
        ("[2001:db8::5]:1234", "[2001:db8::5]:1234"),
        // A dual-stack socket's view of an IPv4 source.
        ("[::ffff:203.0.113.9]:5000", "203.0.113.9:5000"),
    ] {
        let mut out = [0u8; MAX_ANSWER];
        let outcome = server.handle(now, addr(from), &binding(77), &mut out);
        let Outcome::Answered(n) = outcome else {
            panic!("{from}: {outcome:?}");
        };
        let answer = Message::from_bytes(&out[..n]).expect("answer parses, FINGERPRINT right");
        assert!(answer.has_class(MessageClass::Success));
        assert!(answer.has_method(BINDING));
        assert_eq!(answer.transaction_id(), TransactionId::from(77));
        assert!(answer.has_attribute(Fingerprint::TYPE));
        let mapped = answer
            .attribute::<XorMappedAddress>()
            .expect("XOR-MAPPED-ADDRESS")
            .addr(answer.transaction_id());
        assert_eq!(mapped, addr(want));
    }
    assert_eq!(server.counters().answered, 3);
}

#[test]
fn garbage_is_dropped_counted_and_never_answered() {
    let mut server = StunServer::new(ServerConfig::default());
    let now = Instant::now();
    let from = addr("192.0.2.1:1");
    let good = binding(5);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 19],
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), &[0, 0, 0, 0]].concat(), // bytes after the message
        b"GET / HTTP/1.1\r\n\r\n\0\0\0\0\0\0".to_vec(),
    ];
    // A wrong FINGERPRINT.
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    cases.push(bad_crc);
    // A length that is not a multiple of four.
    let mut odd = good.clone();
    odd[3] = 7;
    cases.push(odd);
    // The first two bits set (RFC 8489 §6.3).
    let mut high = good.clone();
    high[0] |= 0x80;
    cases.push(high);
    // An attribute claiming more bytes than the message has.
    let mut overlong = binding(6);
    overlong[22..24].copy_from_slice(&[0x00, 0xff]);
    cases.push(overlong);
    for (i, case) in cases.iter().enumerate() {
        let mut out = [0u8; MAX_ANSWER];
        assert_eq!(
            server.handle(now, from, case, &mut out),
            Outcome::Dropped(Drop::Malformed),
            "case {i}"
        );
    }
    assert_eq!(server.counters().malformed, cases.len() as u64);
    assert_eq!(server.counters().answered, 0);
    // Every truncation and every one-byte change of a good request: no
    // panic, and an answer only when the result is still a valid request.
    let mut answered = 0;
    for cut in 0..good.len() {
        let mut out = [0u8; MAX_ANSWER];
        answered += server
            .handle(now, from, &good[..cut], &mut out)
            .answer_len()
            .is_some() as u32;
    }
    assert_eq!(answered, 0, "a truncated request was answered");
    for i in 0..good.len() {
        for v in [0x00, 0x01, 0x80, 0xff] {
            let mut case = good.clone();
            case[i] ^= v;
            let mut out = [0u8; MAX_ANSWER];
            let _ = server.handle(now, from, &case, &mut out);
        }
    }
}

#[test]
fn other_stun_messages_are_dropped_as_non_binding() {
    let mut server = StunServer::new(ServerConfig::default());
    let now = Instant::now();
    let allocate = Method::new(0x003); // TURN Allocate (RFC 8656 §18)
    let cases = [
        message(MessageClass::Indication, BINDING, 1, &[]),
        message(MessageClass::Success, BINDING, 2, &[]),
        message(MessageClass::Error, BINDING, 3, &[]),
        message(MessageClass::Request, allocate, 4, &[]),
    ];
    for case in &cases {
        let mut out = [0u8; MAX_ANSWER];
        assert_eq!(
            server.handle(now, addr("192.0.2.1:9"), case, &mut out),
            Outcome::Dropped(Drop::NotBinding)
        );
    }
    assert_eq!(server.counters().non_binding, 4);
}

#[test]
fn unknown_comprehension_required_attributes_get_420_optional_ones_do_not() {
    let mut server = StunServer::new(ServerConfig::default());
    let now = Instant::now();
    let from = addr("192.0.2.1:9");
    let required = RawAttribute::new(0x0030.into(), &[1, 2, 3, 4]);
    let optional = RawAttribute::new(0x8030.into(), &[1, 2, 3, 4]);

    let mut out = [0u8; MAX_ANSWER];
    let req = message(MessageClass::Request, BINDING, 9, &[required]);
    let Outcome::UnknownAttributes(n) = server.handle(now, from, &req, &mut out) else {
        panic!("no 420");
    };
    let answer = Message::from_bytes(&out[..n]).expect("420 parses");
    assert!(answer.has_class(MessageClass::Error));
    assert_eq!(answer.transaction_id(), TransactionId::from(9));
    assert_eq!(answer.attribute::<ErrorCode>().expect("code").code(), 420);
    assert!(
        answer
            .attribute::<UnknownAttributes>()
            .expect("list")
            .has_attribute(0x0030.into())
    );

    let req = message(MessageClass::Request, BINDING, 10, &[optional]);
    assert!(matches!(
        server.handle(now, from, &req, &mut out),
        Outcome::Answered(_)
    ));
    // Many unknown attributes: the list is cut, the answer still fits.
    let many: Vec<RawAttribute<'_>> = (0..40u16)
        .map(|i| RawAttribute::new((0x0040 + i).into(), &[0; 4]))
        .collect();
    let req = message(MessageClass::Request, BINDING, 11, &many);
    // Header 20, ERROR-CODE 28, UNKNOWN-ATTRIBUTES with 16 types 36,
    // FINGERPRINT 8: the largest answer (see MAX_ANSWER).
    assert_eq!(
        server.handle(now, from, &req, &mut out),
        Outcome::UnknownAttributes(92)
    );
    let answer = Message::from_bytes(&out[..92]).expect("parses");
    assert!(answer.has_attribute(UnknownAttributes::TYPE));
}

#[test]
fn each_source_ip_is_limited_and_others_are_not() {
    let config = ServerConfig {
        limiter: LimiterConfig {
            rate: 2.0,
            burst: 3.0,
            max_sources: 64,
        },
    };
    let mut server = StunServer::new(config);
    let t0 = Instant::now();
    let mut out = [0u8; MAX_ANSWER];
    // Any source port of the same host shares the bucket.
    let outcomes: Vec<Outcome> = (0..10u16)
        .map(|p| {
            server.handle(
                t0,
                addr(&format!("192.0.2.1:{}", 1000 + p)),
                &binding(1),
                &mut out,
            )
        })
        .collect();
    let answered = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(_)))
        .count();
    assert_eq!(answered, 3);
    assert_eq!(server.counters().rate_limited, 7);
    assert!(matches!(
        server.handle(t0, addr("192.0.2.2:1"), &binding(1), &mut out),
        Outcome::Answered(_)
    ));
    // Two seconds later (virtual), 2 per second: the bucket holds 3 again
    // (capped at the burst), not 4.
    let t1 = t0 + Duration::from_secs(2);
    let again = (0..10)
        .filter(|_| {
            matches!(
                server.handle(t1, addr("192.0.2.1:1"), &binding(1), &mut out),
                Outcome::Answered(_)
            )
        })
        .count();
    assert_eq!(again, 3);
    // Malformed datagrams spend no tokens: they are never answered anyway.
    let t2 = t1 + Duration::from_secs(10);
    for _ in 0..100 {
        let _ = server.handle(t2, addr("192.0.2.3:1"), b"junk", &mut out);
    }
    assert!(matches!(
        server.handle(t2, addr("192.0.2.3:1"), &binding(1), &mut out),
        Outcome::Answered(_)
    ));
}

#[test]
fn spoofed_sources_do_not_grow_the_table() {
    let config = ServerConfig {
        limiter: LimiterConfig {
            max_sources: 100,
            ..LimiterConfig::default()
        },
    };
    let mut server = StunServer::new(config);
    let now = Instant::now();
    let mut out = [0u8; MAX_ANSWER];
    for i in 0..5_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let _ = server.handle(now, SocketAddr::from((ip, 1)), &binding(1), &mut out);
    }
    assert_eq!(server.tracked_sources(), 100);
    assert_eq!(server.counters().answered, 5_000);
}
