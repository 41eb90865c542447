//! rdv's client against a point that answers with more than 1 MiB, as
//! go-libp2p's may (it writes up to 4 MiB): a real libp2p node that serves
//! `/rendezvous/1.0.0` with `libp2p-stream` and answers one big DISCOVER.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;
use rdv_client::Event;
use rdv_net::client::{self, ClientConfig};
use rdv_net::io::{read_frame, write_message};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_wire::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_a_discover_answer_larger_than_one_mebibyte() {
    let (point, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
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
    // 2,500 registrations of 900 bytes each: about 2.2 MiB. The records
    // are not valid (the client drops them after counting them), which
    // keeps the test from spending its time on signature checks.
    let record = Bytes::from(vec![0x0a; 900]);
    let answer = Message::DiscoverResponse(DiscoverResponse {
        status: ResponseStatus::Ok,
        status_text: String::new(),
        registrations: (0..2500)
            .map(|i| Registration {
                namespace: Namespace::new(format!("ns{i}")).unwrap(),
                signed_peer_record: record.clone(),
                ttl: Ttl::from_secs(7200),
            })
            .collect(),
        cookie: None,
    });
    let size = encode(&answer).len();
    assert!(size > DEFAULT_MAX_MESSAGE_SIZE, "{size}");
    let mut incoming = point
        .control
        .clone()
        .accept(StreamProtocol::new(PROTOCOL_ID))
        .unwrap();
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
            if let Ok(Some(_)) = read_frame(&mut s, &mut d, Duration::from_secs(10)).await {
                let _ = write_message(&mut s, &answer).await;
            }
        }
    });

    let (node, _ev) = Node::start(Keypair::generate_ed25519(), NodeConfig::default()).unwrap();
    node.add_address(point.peer_id, addr.clone()).await;
    node.dial(addr).await.unwrap();
    let mut c = client::spawn(node.control.clone(), ClientConfig::default(), Vec::new());
    c.discover(point.peer_id, None, None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), c.next_event())
        .await
        .unwrap();
    match event {
        Some(Event::Discovered { returned, .. }) => assert_eq!(returned, 2500),
        other => panic!("{other:?}"),
    }
}
