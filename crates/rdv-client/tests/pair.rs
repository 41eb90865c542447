//! A real client `Service` and a real `Point`, wired through the real codec
//! (encode, frame, deframe, decode) in memory, driven on virtual time through
//! hours of TTLs and several refreshes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use rdv_client::{Config, Event, Service};
use rdv_point::{CookieKey, MemoryStore, Point, Store};
use rdv_wire::*;

const H: u64 = 3600 * 1000;

struct Node {
    id: PeerId,
    service: Service,
    events: Vec<(Timestamp, Event)>,
}

impl Node {
    fn new(seed: u8) -> Self {
        let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 5000 + seed as u16)
            .parse()
            .unwrap();
        let mut service = Service::new(Config::default(), seed as u64);
        service.set_signed_records(vec![Bytes::from(
            sign_record(&key, &[addr], 1, RecordFormat::Standard).unwrap(),
        )]);
        Self {
            id: key.public().to_peer_id(),
            service,
            events: Vec::new(),
        }
    }
}

struct World {
    now: Timestamp,
    point_id: PeerId,
    point: Point<MemoryStore>,
    point_events: Vec<(Timestamp, rdv_point::Event)>,
    nodes: Vec<Node>,
}

/// Sends `msg` over a "stream": encode, frame, split in two reads, deframe, decode.
fn over_the_wire(msg: &Message) -> Message {
    let framed = encode_frame(&encode(msg));
    let mut dec = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    let (a, b) = framed.split_at(framed.len() / 2);
    dec.push(a);
    assert_eq!(dec.next_frame().unwrap(), None);
    dec.push(b);
    decode(&dec.next_frame().unwrap().unwrap()).unwrap()
}

impl World {
    fn new(nodes: usize) -> Self {
        let point = Point::new(
            rdv_point::Config::default(),
            MemoryStore::new(1),
            CookieKey::from_bytes([3; 32]),
        )
        .unwrap();
        Self {
            now: Timestamp::from_millis(1_000_000),
            point_id: Keypair::ed25519_from_bytes([200; 32])
                .unwrap()
                .public()
                .to_peer_id(),
            point,
            point_events: Vec::new(),
            nodes: (1..=nodes as u8).map(Node::new).collect(),
        }
    }

    /// Delivers every pending message and its response, and drains events.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for node in &mut self.nodes {
                while let Some(t) = node.service.poll_transmit() {
                    moved = true;
                    assert_eq!(t.point, self.point_id);
                    let request = over_the_wire(&t.message);
                    let response = self.point.handle_request(node.id, request, self.now);
                    match (t.request, response) {
                        (Some(id), Some(resp)) => {
                            node.service
                                .handle_response(id, over_the_wire(&resp), self.now)
                        }
                        (None, None) => {}
                        (req, resp) => panic!("request {req:?} got response {resp:?}"),
                    }
                }
                while let Some(e) = node.service.poll_event() {
                    node.events.push((self.now, e));
                }
            }
            while let Some(e) = self.point.poll_event() {
                self.point_events.push((self.now, e));
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances virtual time to `until`, firing every timer on the way.
    fn run_until(&mut self, until: Timestamp) {
        loop {
            self.pump();
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.service.poll_timeout())
                .chain(self.point.poll_timeout())
                .min();
            match next {
                Some(t) if t <= until => {
                    assert!(t >= self.now, "a timer in the past: {t} < {}", self.now);
                    self.now = t;
                    for n in &mut self.nodes {
                        if n.service.poll_timeout().is_some_and(|d| d <= t) {
                            n.service.handle_timeout(t);
                        }
                    }
                    if self.point.poll_timeout().is_some_and(|d| d <= t) {
                        self.point.handle_timeout(t);
                    }
                }
                _ => {
                    self.now = until;
                    self.pump();
                    return;
                }
            }
        }
    }

    fn after(&self, ms: u64) -> Timestamp {
        self.now + Duration::from_millis(ms)
    }
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

#[test]
fn registration_stays_alive_through_refreshes_for_eight_hours() {
    let mut w = World::new(2);
    let (point, start) = (w.point_id, w.now);
    w.nodes[0]
        .service
        .register(point, ns("chat"), None, w.now)
        .unwrap();
    w.run_until(w.after(8 * H));

    let refreshes: Vec<Timestamp> = w.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Registered { refresh: true, .. }))
        .map(|(t, _)| *t)
        .collect();
    // Granted 2 h, refreshed 5 min before expiry: at 1h55, 3h50, 5h45, 7h40.
    let every = 2 * H - 5 * 60 * 1000;
    let want: Vec<Timestamp> = (1..=4)
        .map(|k| start + Duration::from_millis(k * every))
        .collect();
    assert_eq!(refreshes, want);
    assert!(
        !w.point_events
            .iter()
            .any(|(_, e)| matches!(e, rdv_point::Event::RegistrationExpired { .. })),
        "the point never saw the registration lapse"
    );
    assert_eq!(w.point.store().stats().registrations, 1);

    // Another node finds it, with the TTL the point has left.
    w.nodes[1]
        .service
        .discover(point, Some(ns("chat")), None, w.now)
        .unwrap();
    w.pump();
    let found = w.nodes[1].service.cached(&point, Some(&ns("chat")), w.now);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].peer, w.nodes[0].id);
    assert_eq!(
        found[0].expires_at,
        start + Duration::from_millis(4 * every + 2 * H)
    );
}

#[test]
fn a_stopped_node_lapses_at_the_point_and_in_the_cache() {
    let mut w = World::new(2);
    let point = w.point_id;
    let registered_at = w.now.as_millis();
    w.nodes[0]
        .service
        .register(point, ns("chat"), None, w.now)
        .unwrap();
    w.run_until(w.after(1000));
    w.nodes[1]
        .service
        .discover(point, Some(ns("chat")), None, w.now)
        .unwrap();
    w.run_until(w.after(1000));
    assert_eq!(
        w.nodes[1]
            .service
            .cached(&point, Some(&ns("chat")), w.now)
            .len(),
        1
    );

    w.nodes[0].service.shutdown();
    w.run_until(w.after(3 * H));
    let expired_at_point: Vec<u64> = w
        .point_events
        .iter()
        .filter(|(_, e)| matches!(e, rdv_point::Event::RegistrationExpired { .. }))
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(expired_at_point, vec![registered_at + 2 * H]);
    let lapsed = w.nodes[1]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::DiscoveredExpired { .. }))
        .count();
    assert_eq!(lapsed, 1);
    assert!(
        w.nodes[1]
            .service
            .cached(&point, Some(&ns("chat")), w.now)
            .is_empty()
    );
}

#[test]
fn repeated_discovery_is_incremental_through_the_cookie() {
    let mut w = World::new(3);
    let point = w.point_id;
    w.nodes[0]
        .service
        .register(point, ns("chat"), None, w.now)
        .unwrap();
    w.pump();
    let new_in_last_discover = |w: &mut World| {
        let now = w.now;
        w.nodes[2]
            .service
            .discover(point, Some(ns("chat")), None, now)
            .unwrap();
        w.pump();
        match w.nodes[2].events.last() {
            Some((_, Event::Discovered { registrations, .. })) => {
                registrations.iter().map(|r| r.peer).collect::<Vec<_>>()
            }
            other => panic!("expected Discovered, got {other:?}"),
        }
    };
    assert_eq!(new_in_last_discover(&mut w), vec![w.nodes[0].id]);
    assert_eq!(new_in_last_discover(&mut w), vec![]);
    w.nodes[1]
        .service
        .register(point, ns("chat"), None, w.now)
        .unwrap();
    w.pump();
    assert_eq!(new_in_last_discover(&mut w), vec![w.nodes[1].id]);
    assert_eq!(
        w.nodes[2]
            .service
            .cached(&point, Some(&ns("chat")), w.now)
            .len(),
        2
    );
}
