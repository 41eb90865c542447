//! The sans-IO client on virtual time, against the server core and against
//! forged answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdv_stun::stun_types::attribute::{ErrorCode, XorMappedAddress};
use rdv_stun::stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId,
};
use rdv_stun::{ClientConfig, Event, MAX_ANSWER, StunClient, StunServer, Transmit};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

const S1: &str = "203.0.113.1:3478";
const S2: &str = "[2001:db8::1]:3478";

fn config(servers: &[&str]) -> ClientConfig {
    ClientConfig {
        servers: servers.iter().map(|s| addr(s)).collect(),
        ..ClientConfig::default()
    }
}

fn drain(client: &mut StunClient, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| client.poll_transmit(now))
        .take(100)
        .collect()
}

fn events(client: &mut StunClient) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event())
        .take(100)
        .collect()
}

/// A success response to `request` mapping to `mapped`, built by hand.
fn success(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
    let req = Message::from_bytes(request).expect("request parses");
    let mut w = Message::builder_success(&req, MessageWriteVec::new());
    w.add_attribute(&XorMappedAddress::new(mapped, req.transaction_id()))
        .expect("attr");
    w.finish()
}

#[test]
fn learns_the_address_from_every_server_and_reports_a_change() {
    let t0 = Instant::now();
    let mut client = StunClient::new(config(&[S1, S2]), [1; 32], t0);
    let mut server = StunServer::new(Default::default());
    let mapped = addr("198.51.100.20:6000");
    let sent = drain(&mut client, t0);
    assert_eq!(sent.len(), 2, "one request per server at once");
    for t in &sent {
        let mut out = [0u8; MAX_ANSWER];
        // The server core sees the client's (NATed) address.
        let n = server
            .handle(t0, mapped, t.contents(), &mut out)
            .answer_len()
            .expect("answered");
        client.handle_input(t0, t.destination, &out[..n]);
    }
    let got = events(&mut client);
    assert_eq!(
        got,
        vec![
            Event::Reflexive {
                addr: mapped,
                server: addr(S1)
            },
            Event::Reflexive {
                addr: mapped,
                server: addr(S2)
            },
        ]
    );
    assert_eq!(client.reflexive(), Some(mapped));

    // Nothing is due until the re-query, 60 s ± 20 %.
    let next = client.poll_timeout().expect("timer");
    assert!(next >= t0 + Duration::from_secs(48) && next <= t0 + Duration::from_secs(72));
    assert!(drain(&mut client, next - Duration::from_millis(1)).is_empty());

    // The NAT rebinds: the next answer shows a new port.
    let rebound = addr("198.51.100.20:6001");
    let t1 = t0 + Duration::from_secs(73);
    let sent = drain(&mut client, t1);
    assert_eq!(sent.len(), 2);
    let mut out = [0u8; MAX_ANSWER];
    let n = server
        .handle(t1, rebound, sent[0].contents(), &mut out)
        .answer_len()
        .expect("answer");
    client.handle_input(t1, sent[0].destination, &out[..n]);
    assert_eq!(
        events(&mut client),
        vec![
            Event::Reflexive {
                addr: rebound,
                server: sent[0].destination
            },
            Event::Changed {
                old: mapped,
                new: rebound
            },
        ]
    );
    // The same address again from the other server: no Changed.
    let n = server
        .handle(t1, rebound, sent[1].contents(), &mut out)
        .answer_len()
        .expect("answer");
    client.handle_input(t1, sent[1].destination, &out[..n]);
    assert_eq!(
        events(&mut client),
        vec![Event::Reflexive {
            addr: rebound,
            server: sent[1].destination
        }]
    );
}

#[test]
fn retransmits_per_rfc_8489_then_fails_then_queries_again() {
    let t0 = Instant::now();
    let mut client = StunClient::new(config(&[S1]), [2; 32], t0);
    let mut times = Vec::new();
    let mut ids = Vec::new();
    let mut now = t0;
    // Follow the client's own timer, bounded.
    for _ in 0..50 {
        for t in drain(&mut client, now) {
            times.push(now - t0);
            ids.push(
                Message::from_bytes(t.contents())
                    .expect("request")
                    .transaction_id(),
            );
        }
        if let Some(Event::Failed { server }) = client.poll_event() {
            assert_eq!(server, addr(S1));
            break;
        }
        now = client.poll_timeout().expect("timer");
    }
    // RFC 8489 §6.2.1: Rc = 7 requests at 0, 500 ms, 1.5 s, 3.5 s, 7.5 s,
    // 15.5 s, 31.5 s; failure Rm * RTO = 8 s after the last.
    let ms = |v: &[u64]| {
        v.iter()
            .map(|&m| Duration::from_millis(m))
            .collect::<Vec<_>>()
    };
    assert_eq!(times, ms(&[0, 500, 1500, 3500, 7500, 15_500, 31_500]));
    assert_eq!(now - t0, Duration::from_millis(39_500));
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "retransmissions keep the id"
    );
    assert_eq!(client.counters().failed, 1);
    // Then a new transaction after the (jittered) interval, with a new id.
    let next = client.poll_timeout().expect("timer");
    assert!(next >= now + Duration::from_secs(48) && next <= now + Duration::from_secs(72));
    let again = drain(&mut client, next);
    assert_eq!(again.len(), 1);
    let id = Message::from_bytes(again[0].contents())
        .expect("request")
        .transaction_id();
    assert_ne!(id, ids[0]);
}

#[test]
fn answers_with_a_wrong_id_or_from_a_wrong_address_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut client = StunClient::new(config(&[S1, S2]), [3; 32], t0);
    let sent = drain(&mut client, t0);
    let to_s1 = sent.iter().find(|t| t.destination == addr(S1)).expect("S1");
    let to_s2 = sent.iter().find(|t| t.destination == addr(S2)).expect("S2");
    let forged = addr("192.0.2.66:1");

    // Right id, wrong source (an off-path host that saw the request).
    client.handle_input(
        t0,
        addr("192.0.2.99:3478"),
        &success(to_s1.contents(), forged),
    );
    // Right id of S1's transaction, but from S2.
    client.handle_input(t0, addr(S2), &success(to_s1.contents(), forged));
    // From S1, but an id the client never used.
    let mut other = to_s1.contents().to_vec();
    other[8] ^= 1;
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        Message::from_bytes(&other)
            .map(|m| m.transaction_id())
            .unwrap_or(TransactionId::from(1)),
        MessageWriteVec::new(),
    );
    w.add_fingerprint().expect("fp");
    client.handle_input(t0, addr(S1), &success(&w.finish(), forged));
    // Garbage from the server's address.
    client.handle_input(t0, addr(S1), b"\x00\x01\x00\x00 definitely not stun");

    assert_eq!(client.poll_event(), None);
    assert_eq!(client.reflexive(), None);
    let c = client.counters();
    assert_eq!((c.stray, c.malformed, c.accepted), (3, 1, 0));

    // The genuine answers still go through, even with the server's address
    // seen as an IPv4-mapped IPv6 address by a dual-stack socket.
    let real = addr("198.51.100.1:4000");
    client.handle_input(
        t0,
        addr("[::ffff:203.0.113.1]:3478"),
        &success(to_s1.contents(), real),
    );
    client.handle_input(t0, addr(S2), &success(to_s2.contents(), real));
    assert_eq!(client.reflexive(), Some(real));
    assert_eq!(client.counters().accepted, 2);
    // A replay of an answered transaction is stray now.
    client.handle_input(t0, addr(S2), &success(to_s2.contents(), forged));
    assert_eq!(client.counters().stray, 4);
    assert_eq!(client.reflexive(), Some(real));
}

#[test]
fn an_error_response_fails_the_transaction() {
    let t0 = Instant::now();
    let mut client = StunClient::new(config(&[S1]), [4; 32], t0);
    let sent = drain(&mut client, t0);
    let req = Message::from_bytes(sent[0].contents()).expect("request");
    let mut w = Message::builder_error(&req, MessageWriteVec::new());
    w.add_attribute(&ErrorCode::builder(400).build().expect("code"))
        .expect("attr");
    client.handle_input(t0, addr(S1), &w.finish());
    assert_eq!(
        client.poll_event(),
        Some(Event::Failed { server: addr(S1) })
    );
    // No retransmission follows: the transaction is over.
    assert!(drain(&mut client, t0 + Duration::from_secs(5)).is_empty());
}

#[test]
fn requery_on_demand_starts_at_once() {
    let t0 = Instant::now();
    let mut client = StunClient::new(config(&[S1]), [5; 32], t0);
    let sent = drain(&mut client, t0);
    client.handle_input(
        t0,
        addr(S1),
        &success(sent[0].contents(), addr("198.51.100.1:1")),
    );
    let t1 = t0 + Duration::from_secs(1);
    assert!(drain(&mut client, t1).is_empty());
    client.requery(t1);
    assert_eq!(client.poll_timeout(), Some(t1));
    assert_eq!(drain(&mut client, t1).len(), 1);
}

#[test]
fn a_client_without_servers_never_wakes() {
    let mut client = StunClient::new(ClientConfig::default(), [6; 32], Instant::now());
    assert_eq!(client.poll_timeout(), None);
    assert!(client.poll_transmit(Instant::now()).is_none());
}

#[test]
fn zero_timers_are_raised_so_the_owner_cannot_spin() {
    let t0 = Instant::now();
    let config = ClientConfig {
        rto: Duration::ZERO,
        requery_interval: Duration::ZERO,
        jitter: 0.0,
        ..config(&[S1])
    };
    let mut client = StunClient::new(config, [7; 32], t0);
    let mut now = t0;
    // Follow the timer until the transaction fails: the clock must advance
    // at every step.
    for _ in 0..20 {
        let _ = drain(&mut client, now);
        if client.poll_event().is_some() {
            break;
        }
        let next = client.poll_timeout().expect("timer");
        assert!(next > now);
        now = next;
    }
    assert_eq!(client.counters().failed, 1);
    assert!(client.poll_timeout().expect("timer") >= now + Duration::from_secs(1));
}

#[test]
fn extreme_settings_do_not_panic() {
    let t0 = Instant::now();
    let config = ClientConfig {
        rto: Duration::MAX,
        max_rto: Duration::MAX,
        rc: u32::MAX,
        rm: u32::MAX,
        requery_interval: Duration::MAX,
        jitter: f64::NAN,
        ..config(&[S1])
    };
    let mut client = StunClient::new(config, [8; 32], t0);
    let mut now = t0;
    for _ in 0..200 {
        let _ = drain(&mut client, now);
        if client.poll_event().is_some() {
            break;
        }
        now = client.poll_timeout().expect("timer");
    }
    assert_eq!(client.counters().failed, 1);
    assert_eq!(client.counters().requests, 64);
}
