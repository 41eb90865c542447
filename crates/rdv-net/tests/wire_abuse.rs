//! A point served over real libp2p connections on loopback, fed malformed,
//! oversized, unknown and stalled messages: each gets its `E_*` answer where
//! one is possible, is cut off otherwise, and the point keeps serving others.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_net::{PointServer, ServerConfig};
use rdv_point::{Config, CookieKey, MemoryStore, Point};
use rdv_wire::*;

struct Fixture {
    point_id: PeerId,
    addr: Multiaddr,
    server: PointServer<MemoryStore>,
    _node: Node,
}

async fn point(config: ServerConfig) -> Fixture {
    point_on(NodeConfig::default(), config).await
}

async fn point_on(node: NodeConfig, config: ServerConfig) -> Fixture {
    let (mut node, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            serve_queue: Some(64),
            ..node
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
    let server = PointServer::new(p, config);
    tokio::spawn(
        server
            .clone()
            .run(node.incoming.take().unwrap(), std::future::pending()),
    );
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Fixture {
        point_id: node.peer_id,
        addr,
        server,
        _node: node,
    }
}

async fn client(f: &Fixture) -> (Node, Keypair) {
    let key = Keypair::generate_ed25519();
    let (node, _events) = Node::start(key.clone(), NodeConfig::default()).unwrap();
    node.add_address(f.point_id, f.addr.clone()).await;
    node.dial(f.addr.clone()).await.unwrap();
    (node, key)
}

async fn stream(node: &Node, f: &Fixture) -> Stream {
    let mut c = node.control.clone();
    c.open_stream(f.point_id, StreamProtocol::new(PROTOCOL_ID))
        .await
        .unwrap()
}

/// Reads until the point closes the stream; the bytes it sent.
async fn read_to_close(s: &mut Stream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .ok()
        .map(|_| out)
}

async fn register_ok(node: &Node, key: &Keypair, f: &Fixture, ns: &str) {
    register_seq(node, key, f, ns, 1).await
}

async fn register_seq(node: &Node, key: &Keypair, f: &Fixture, ns: &str, seq: u64) {
    let record = sign_record(
        key,
        &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        seq,
        RecordFormat::Standard,
    )
    .unwrap();
    let msg = Message::Register(Register {
        namespace: Namespace::new(ns).unwrap(),
        signed_peer_record: record.into(),
        ttl: None,
    });
    let mut s = stream(node, f).await;
    s.write_all(&encode_frame(&encode(&msg))).await.unwrap();
    s.close().await.unwrap();
    let bytes = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&bytes);
    match decode(&d.next_frame().unwrap().unwrap()).unwrap() {
        Message::RegisterResponse(r) => {
            assert_eq!(r.status, ResponseStatus::Ok, "{}", r.status_text)
        }
        other => panic!("{other:?}"),
    }
}

/// Opens two idle streams (a byte each makes them arrive), then a third
/// asking DISCOVER; gives the held streams and what the third got back.
async fn hold_two_then_ask(node: &Node, f: &Fixture) -> (Vec<Stream>, Option<Vec<u8>>) {
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = stream(node, f).await;
        s.write_all(&[0x05]).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = stream(node, f).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover::default())));
    let _ = third.write_all(&discover).await;
    let answer = read_to_close(&mut third, Duration::from_secs(5)).await;
    (held, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_or_the_stream_closed_and_others_are_served() {
    let f = point(ServerConfig::default()).await;
    let (node, key) = client(&f).await;

    // A REGISTER whose namespace is not UTF-8: answered E_INVALID_NAMESPACE,
    // and the same stream goes on serving.
    let mut s = stream(&node, &f).await;
    let bad_ns = [0x08, 0x00, 0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    s.write_all(&encode_frame(&bad_ns)).await.unwrap();
    let disc = encode(&Message::Discover(Discover::default()));
    s.write_all(&encode_frame(&disc)).await.unwrap();
    s.close().await.unwrap();
    let bytes = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&bytes);
    match decode(&d.next_frame().unwrap().unwrap()).unwrap() {
        Message::RegisterResponse(r) => assert_eq!(r.status, ResponseStatus::InvalidNamespace),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode(&d.next_frame().unwrap().unwrap()).unwrap(),
        Message::DiscoverResponse(_)
    ));

    // Bytes that are no message, an unknown type, an oversized length: closed without an answer.
    for bad in [
        encode_frame(&[0xff, 0xff, 0xff]),
        encode_frame(&[0x08, 0x09]),
        vec![0x80, 0x80, 0x80, 0x01], // announces 2 MiB
    ] {
        let mut s = stream(&node, &f).await;
        s.write_all(&bad).await.unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert_eq!(
            answer,
            Some(Vec::new()),
            "closed, nothing sent, for {bad:02x?}"
        );
    }
    // The point is still up for a well-behaved peer.
    let (other, other_key) = client(&f).await;
    register_ok(&other, &other_key, &f, "after-abuse").await;
    register_ok(&node, &key, &f, "same-peer-too").await;
    assert!(
        f.server
            .metrics()
            .requests(MessageKind::Register, ResponseStatus::InvalidNamespace)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stalled_mid_message_is_closed_after_the_timeout() {
    let f = point(ServerConfig {
        stream_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .await;
    let (node, key) = client(&f).await;
    // A message sent in two parts with a short pause is still served: a
    // partial frame alone is not what closes a stream.
    let discover = encode_frame(&encode(&Message::Discover(Discover::default())));
    let mut slow = stream(&node, &f).await;
    slow.write_all(&discover[..2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.write_all(&discover[2..]).await.unwrap();
    slow.close().await.unwrap();
    let answer = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert!(
        answer.is_some_and(|a| !a.is_empty()),
        "the slow stream was not served"
    );

    let mut s = stream(&node, &f).await;
    let started = Instant::now();
    s.write_all(&[0x20, 0x08]).await.unwrap(); // 32 bytes announced, 1 sent
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert_eq!(answer, Some(Vec::new()));
    // Timers do not fire early: a close before most of the timeout would be
    // a close for some other reason.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert!(
        took < Duration::from_secs(8),
        "closed by the stream timeout"
    );
    register_ok(&node, &key, &f, "still-served").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_and_the_rest_served() {
    let f = point(ServerConfig {
        max_streams: 2,
        stream_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let (node, key) = client(&f).await;
    // Two idle streams take both slots.
    let (held, answer) = hold_two_then_ask(&node, &f).await;
    assert_eq!(
        answer,
        Some(Vec::new()),
        "refused while both slots are taken"
    );
    drop(held);
    // Once the held streams go, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = sign_record(
            &key,
            &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            1,
            RecordFormat::Standard,
        )
        .unwrap();
        let msg = Message::Register(Register {
            namespace: Namespace::new("x").unwrap(),
            signed_peer_record: record.into(),
            ttl: None,
        });
        let mut s = stream(&node, &f).await;
        // The point may still be refusing (dropping) new streams: a failed
        // write just means "not yet".
        let sent =
            s.write_all(&encode_frame(&encode(&msg))).await.is_ok() && s.close().await.is_ok();
        if sent
            && read_to_close(&mut s, Duration::from_secs(5))
                .await
                .is_some_and(|b| !b.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_the_stored_record_skips_the_signature_check() {
    let f = point(ServerConfig::default()).await;
    let (node, key) = client(&f).await;
    register_ok(&node, &key, &f, "twice").await; // verified
    register_ok(&node, &key, &f, "twice").await; // same bytes: not verified again
    register_seq(&node, &key, &f, "twice", 2).await; // a new record: verified
    let text = f.server.render_metrics();
    assert!(
        text.lines()
            .any(|l| l == "rdv_verification_skipped_total 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "rdv_verification_seconds_count 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_stream() {
    let f = point(ServerConfig {
        max_streams_per_peer: 2,
        stream_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let (greedy, _) = client(&f).await;
    let (held, answer) = hold_two_then_ask(&greedy, &f).await;
    assert_eq!(
        answer,
        Some(Vec::new()),
        "a third stream from the same peer is refused"
    );
    // Another peer is served meanwhile.
    let (other, other_key) = client(&f).await;
    register_ok(&other, &other_key, &f, "fair").await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_answers_is_cut_off() {
    let f = point(ServerConfig {
        stream_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let (node, key) = client(&f).await;
    let mut s = stream(&node, &f).await;
    // Far more answers than flow control lets through unread.
    let one = encode_frame(&encode(&Message::Discover(Discover::default())));
    let burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&burst)).await;
    // Let the point's write stall past its timeout before reading anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&got);
    let mut answers = 0;
    while let Ok(Some(_)) = d.next_frame() {
        answers += 1;
    }
    assert!(
        answers < 20_000,
        "the point gave up on the stalled stream (it sent {answers} answers)"
    );
    register_ok(&node, &key, &f, "still-served").await;
}

/// Waits until the point serves `n` streams.
async fn until_streams_active(f: &Fixture, n: u64) {
    let want = format!("rdv_streams_active {n}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.server.render_metrics().lines().any(|l| l == want) {
        assert!(Instant::now() < deadline, "never had {n} streams");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peers_requests_reach_the_point_in_stream_order() {
    // Clients open a stream per request, and UNREGISTER has no answer: a
    // DISCOVER sent right after it must not see the registration, even when
    // its stream's bytes are all there first.
    let f = point(ServerConfig::default()).await;
    let (node, key) = client(&f).await;
    register_ok(&node, &key, &f, "order").await;

    let unregister = encode_frame(&encode(&Message::Unregister(Unregister {
        namespace: Namespace::new("order").unwrap(),
        id: None,
    })));
    let mut first = stream(&node, &f).await;
    first.write_all(&unregister[..1]).await.unwrap();
    until_streams_active(&f, 1).await;

    let mut second = stream(&node, &f).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover {
        namespace: Some(Namespace::new("order").unwrap()),
        ..Discover::default()
    })));
    second.write_all(&discover).await.unwrap();
    second.close().await.unwrap();
    until_streams_active(&f, 2).await;
    // Give an unordered point every chance to answer the DISCOVER first.
    let mut early = Vec::new();
    let answered_early =
        tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut early))
            .await
            .is_ok();

    first.write_all(&unregister[1..]).await.unwrap();
    first.close().await.unwrap();
    let bytes = if answered_early {
        early
    } else {
        read_to_close(&mut second, Duration::from_secs(5))
            .await
            .unwrap()
    };
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&bytes);
    match decode(&d.next_frame().unwrap().unwrap()).unwrap() {
        Message::DiscoverResponse(r) => {
            assert_eq!(r.status, ResponseStatus::Ok, "{}", r.status_text);
            assert!(
                r.registrations.is_empty(),
                "the DISCOVER overtook the UNREGISTER sent before it"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// DISCOVER `ns` on a fresh stream; the registrations' count.
async fn discover_count(node: &Node, f: &Fixture, ns: &str) -> usize {
    let mut s = stream(node, f).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover {
        namespace: Some(Namespace::new(ns).unwrap()),
        ..Discover::default()
    })));
    s.write_all(&discover).await.unwrap();
    s.close().await.unwrap();
    let bytes = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&bytes);
    match decode(&d.next_frame().unwrap().unwrap()).unwrap() {
        Message::DiscoverResponse(r) => r.registrations.len(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_listing_the_marker_protocol_read_every_format_whatever_their_agent() {
    let f = point(ServerConfig::default()).await;
    let (node, key) = client(&f).await;
    register_ok(&node, &key, &f, "formats").await; // a standard record
    let rust_agent = "rust-libp2p/0.48.0";

    // A rust-libp2p client: only legacy records, so none here.
    let (plain, _) = client(&f).await;
    f.server.note_identify(plain.peer_id, rust_agent, &[]);
    assert_eq!(discover_count(&plain, &f, "formats").await, 0);

    // rdv's client embedded in a rust-libp2p app: same agent, plus the
    // marker, so it gets the standard record.
    let (embedded, _) = client(&f).await;
    let marker = StreamProtocol::new(rdv_net::READS_ALL_RECORD_FORMATS);
    f.server
        .note_identify(embedded.peer_id, rust_agent, &[marker]);
    assert_eq!(discover_count(&embedded, &f, "formats").await, 1);
}

/// Whether `node` gets a REGISTER answered by the point (any answer).
async fn served(node: &Node, key: &Keypair, f: &Fixture) -> bool {
    let record = sign_record(
        key,
        &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        1,
        RecordFormat::Standard,
    )
    .unwrap();
    let msg = Message::Register(Register {
        namespace: Namespace::new("conn").unwrap(),
        signed_peer_record: record.into(),
        ttl: None,
    });
    let mut c = node.control.clone();
    let Ok(mut s) = c
        .open_stream(f.point_id, StreamProtocol::new(PROTOCOL_ID))
        .await
    else {
        return false;
    };
    if s.write_all(&encode_frame(&encode(&msg))).await.is_err() || s.close().await.is_err() {
        return false;
    }
    read_to_close(&mut s, Duration::from_secs(5))
        .await
        .is_some_and(|b| !b.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_configured_bound_are_refused() {
    let f = point_on(
        NodeConfig {
            max_connections: 1,
            ..NodeConfig::default()
        },
        ServerConfig::default(),
    )
    .await;
    let (first, first_key) = client(&f).await;
    assert!(served(&first, &first_key, &f).await);
    // A second peer's connection is turned away while the first is up.
    let key = Keypair::generate_ed25519();
    let (second, _events) = Node::start(key.clone(), NodeConfig::default()).unwrap();
    second.add_address(f.point_id, f.addr.clone()).await;
    let _ = second.dial(f.addr.clone()).await;
    assert!(
        !served(&second, &key, &f).await,
        "a second connection was served"
    );
    // Once the first is gone, the second gets in.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = second.dial(f.addr.clone()).await;
        if served(&second, &key, &f).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served after the first left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(f: &Fixture, name: &str) -> u64 {
    let text = f.server.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_arriving_on_many_connections_are_written_in_one_batch() {
    let f = point(ServerConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(client(&f).await);
    }
    // Hold the point thread while the REGISTERs arrive.
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let server = f.server.clone();
    let held = tokio::spawn(async move {
        server
            .with_point(move |_| {
                let _ = entered_tx.send(());
                let _ = released.recv();
            })
            .await
    });
    entered.await.unwrap();
    let (batches, written) = (
        metric(&f, "rdv_store_write_batches_total"),
        metric(&f, "rdv_store_batched_registers_total"),
    );
    let registers = futures::future::join_all(
        clients
            .iter()
            .map(|(node, key)| register_ok(node, key, &f, "batched")),
    );
    let open_the_gate = async {
        // Every REGISTER (each from its own connection) waits in the queue.
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(&f, "rdv_point_queue") < 8 {
            assert!(Instant::now() < deadline, "the REGISTERs never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
    };
    tokio::join!(registers, open_the_gate);
    held.await.unwrap();
    assert_eq!(metric(&f, "rdv_store_batched_registers_total") - written, 8);
    assert_eq!(
        metric(&f, "rdv_store_write_batches_total") - batches,
        1,
        "eight REGISTERs from eight connections, one store write"
    );
    assert_eq!(metric(&f, "rdv_point_queue"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lingers_after_its_last_stream_then_idles_out() {
    let f = point_on(
        NodeConfig {
            idle_timeout: Duration::from_millis(200),
            linger: Duration::from_secs(1),
            ..NodeConfig::default()
        },
        ServerConfig::default(),
    )
    .await;
    let key = Keypair::generate_ed25519();
    let (node, mut events) = Node::start(key.clone(), NodeConfig::default()).unwrap();
    node.add_address(f.point_id, f.addr.clone()).await;
    node.dial(f.addr.clone()).await.unwrap();
    register_ok(&node, &key, &f, "linger").await;
    let done = Instant::now();
    // The point closes the connection only after the linger and its idle
    // timeout; timers never fire early, so not before the linger.
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(NodeEvent::Connections(0))) => break done.elapsed(),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the connection never closed"),
        }
    };
    assert!(
        closed_after >= Duration::from_millis(950),
        "closed {closed_after:?} after the last stream, before the linger ran out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_peer_ids_from_one_address_cannot_take_every_connection() {
    // Each client is a new peer id, all from 127.0.0.1: the per-peer bound
    // does not see them, the per-address one does.
    let f = point_on(
        NodeConfig {
            max_connections_per_ip: 2,
            ..NodeConfig::default()
        },
        ServerConfig::default(),
    )
    .await;
    let (one, one_key) = client(&f).await;
    let (two, two_key) = client(&f).await;
    assert!(served(&one, &one_key, &f).await);
    assert!(served(&two, &two_key, &f).await);
    let key = Keypair::generate_ed25519();
    let (third, _events) = Node::start(key.clone(), NodeConfig::default()).unwrap();
    third.add_address(f.point_id, f.addr.clone()).await;
    let _ = third.dial(f.addr.clone()).await;
    assert!(
        !served(&third, &key, &f).await,
        "a third connection from 127.0.0.1 was served"
    );
    // When one leaves, the address has room again.
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = third.dial(f.addr.clone()).await;
        if served(&third, &key, &f).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served after a connection left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
