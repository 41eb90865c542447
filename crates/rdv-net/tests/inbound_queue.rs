//! Streams a point's node cannot queue for the point (its `serve_queue` is
//! full) are dropped and counted in the counter the point's metrics render
//! (`rdv_inbound_queue_refused_total`, issue 14).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::identity::Keypair;
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_wire::PROTOCOL_ID;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_a_full_queue_are_counted_where_the_metrics_read() {
    let refused = Arc::new(AtomicU64::new(0));
    // A queue of one that nobody reads.
    let (point, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            serve_queue: Some(1),
            inbound_refused: Some(refused.clone()),
            ..NodeConfig::default()
        },
    )
    .unwrap();
    let addr = loop {
        if let Some(NodeEvent::Listening(a)) = events.recv().await {
            break a;
        }
    };
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut point = point;
    let _unread = point.incoming.take();

    let (node, _ev) = Node::start(Keypair::generate_ed25519(), NodeConfig::default()).unwrap();
    node.add_address(point.peer_id, addr.clone()).await;
    node.dial(addr).await.unwrap();
    let mut control = node.control.clone();
    let mut open = Vec::new();
    for _ in 0..5 {
        if let Ok(s) = control
            .open_stream(point.peer_id, StreamProtocol::new(PROTOCOL_ID))
            .await
        {
            open.push(s);
        }
    }
    // One fits in the queue; the other four are dropped and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused.load(Ordering::Relaxed) < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused.load(Ordering::Relaxed), 4);

    // And the point's metrics render that counter.
    let metrics = rdv_net::metrics::Metrics::default();
    metrics
        .inbound_refused_counter()
        .fetch_add(3, Ordering::Relaxed);
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l == "rdv_inbound_queue_refused_total 3")
    );
}
