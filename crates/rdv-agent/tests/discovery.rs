#![allow(missing_docs, clippy::unwrap_used)]
//! Blinded discovery against a real rdv point on loopback: members find
//! each other under the context's namespace and recognise each other by
//! their derived peer ids; what the point holds names no context and no
//! member, and a member's peer id changes with the period and the context.

mod common;

use std::time::Duration;

use common::*;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use rdv_agent::discovery::{Presence, peer_id, recognise};
use rdv_context::*;
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_net::{PointServer, ServerConfig};
use rdv_point::{Config, CookieKey, MemoryStore, Point};
use rdv_wire::Ttl;

/// A point on loopback; its full address (with `/p2p/`).
async fn point() -> (Node, Multiaddr, PointServer<MemoryStore>) {
    let (mut node, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            serve_queue: Some(64),
            ..NodeConfig::default()
        },
    )
    .unwrap();
    let addr = loop {
        if let Some(NodeEvent::Listening(a)) = events.recv().await {
            break a;
        }
    };
    let p = Point::new(
        Config::default(),
        MemoryStore::new(7),
        CookieKey::from_bytes([1; 32]),
    )
    .unwrap();
    let server = PointServer::new(p, ServerConfig::default());
    tokio::spawn(
        server
            .clone()
            .run(node.incoming.take().unwrap(), std::future::pending()),
    );
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (node, addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_find_each_other_under_a_blinded_namespace() {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let mut ctx = Context::create(&alice, &mut rng(10));
    let bctx = ctx
        .invite(&alice, T0 + 86_400_000)
        .accept(&bob, T0)
        .unwrap();
    ctx.add_member(&bob.static_key_binding()).unwrap();
    let keys = ctx.keys().clone();
    assert_eq!(
        bctx.keys().rendezvous_namespace(7),
        keys.rendezvous_namespace(7)
    );
    let (pa, pb) = (alice.authority(), bob.authority());
    let members = [pa, pb];

    let (_point, point_addr, _server) = point().await;
    let period = 7;
    let ttl = Ttl::from_secs(7200); // the spec's minimum
    let wait = Duration::from_secs(20);
    let a_addr: Multiaddr = "/ip4/127.0.0.1/tcp/7001".parse().unwrap();
    let b_addr: Multiaddr = "/ip4/127.0.0.1/udp/7002/quic-v1".parse().unwrap();
    let mut a = Presence::announce(
        &keys,
        &pa,
        period,
        std::slice::from_ref(&point_addr),
        std::slice::from_ref(&a_addr),
        ttl,
        wait,
    )
    .await
    .unwrap();
    let mut b = Presence::announce(
        bctx.keys(),
        &pb,
        period,
        std::slice::from_ref(&point_addr),
        std::slice::from_ref(&b_addr),
        ttl,
        wait,
    )
    .await
    .unwrap();

    let found = a.discover(&keys, &pa, &members).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].authority, pb);
    assert_eq!(found[0].addresses, vec![b_addr]);
    let found = b.discover(bctx.keys(), &pb, &members).await.unwrap();
    assert_eq!(found[0].authority, pa);
    assert_eq!(found[0].addresses, vec![a_addr]);

    // What the point holds: the namespace is the blinded tag, naming
    // neither the context nor anyone; the peer ids are the derived ones.
    let ns = a.namespace().to_string();
    assert!(ns.starts_with("rdv1-"));
    let ctx_hex: String = ctx
        .id()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!ns.contains(&ctx_hex[..16]));

    // Carol, in another context, cannot recognise anyone there, and
    // Alice's peer id differs across periods and contexts.
    let other = Context::create(&carol, &mut rng(11));
    assert_eq!(
        recognise(other.keys(), period, &members, &peer_id(&keys, period, &pa)),
        None
    );
    assert_ne!(peer_id(&keys, period, &pa), peer_id(&keys, period + 1, &pa));
    assert_ne!(
        peer_id(&keys, period, &pa),
        peer_id(other.keys(), period, &pa)
    );
    assert_ne!(
        keys.rendezvous_namespace(period),
        keys.rendezvous_namespace(period + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_address_without_a_peer_id_is_refused_with_a_clear_error() {
    let alice = identity(1);
    let ctx = Context::create(&alice, &mut rng(10));
    let err = Presence::announce(
        ctx.keys(),
        &alice.authority(),
        1,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        &[],
        Ttl::from_secs(7200),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/p2p/"), "{err}");
}
