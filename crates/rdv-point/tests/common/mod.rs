//! Shared test fixtures: peers with signed records, a point on virtual time.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use bytes::Bytes;
use rdv_point::store::StoredRegistration;
use rdv_point::{Config, CookieKey, Formats, MemoryStore, Point, Store};
use rdv_wire::*;

pub const H: u64 = 3600;

pub struct Peer {
    pub key: Keypair,
    pub id: PeerId,
    pub record: Bytes,
}

impl Peer {
    pub fn new(seed: u8) -> Self {
        Self::with_format(seed, RecordFormat::Standard)
    }
    pub fn with_format(seed: u8, format: RecordFormat) -> Self {
        let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 4000 + seed as u16)
            .parse()
            .unwrap();
        let record = Bytes::from(sign_record(&key, &[addr], 1, format).unwrap());
        Self {
            id: key.public().to_peer_id(),
            key,
            record,
        }
    }
    pub fn register(&self, ns: &str, ttl: Option<u64>) -> Message {
        Message::Register(Register {
            namespace: Namespace::new(ns).unwrap(),
            signed_peer_record: self.record.clone(),
            ttl: ttl.map(Ttl::from_secs),
        })
    }
}

pub fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

pub fn point(config: Config) -> Point<MemoryStore> {
    Point::new(config, MemoryStore::new(1), CookieKey::from_bytes([42; 32])).unwrap()
}

pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

pub fn register_response(m: Option<Message>) -> RegisterResponse {
    match m {
        Some(Message::RegisterResponse(r)) => r,
        other => panic!("expected REGISTER_RESPONSE, got {other:?}"),
    }
}

pub fn discover_response(m: Option<Message>) -> DiscoverResponse {
    match m {
        Some(Message::DiscoverResponse(r)) => r,
        other => panic!("expected DISCOVER_RESPONSE, got {other:?}"),
    }
}

pub fn discover(ns: Option<&str>, limit: Option<u64>, cookie: Option<Cookie>) -> Message {
    Message::Discover(Discover {
        namespace: ns.map(|s| Namespace::new(s).unwrap()),
        limit,
        cookie,
    })
}

/// Peer ids named by the records in a response.
pub fn peers_of(r: &DiscoverResponse) -> Vec<PeerId> {
    r.registrations
        .iter()
        .map(|r| verify_record(&r.signed_peer_record).unwrap().peer_id)
        .collect()
}

/// What the store holds for `peer` in `namespace`, swept or not (a scan at
/// time zero counts every held registration as live): its record, format,
/// deadline and position.
pub fn held(p: &Point<MemoryStore>, peer: &PeerId, namespace: &str) -> Option<StoredRegistration> {
    let page = p
        .store()
        .scan(
            Some(&ns(namespace)),
            0,
            usize::MAX,
            Formats::ALL,
            Timestamp::from_millis(0),
        )
        .unwrap();
    page.registrations.into_iter().find(|r| r.peer == *peer)
}
