//! One host cannot lock others out: every bound a stranger can push
//! against is also counted per source address, tested with a "greedy" host
//! on 127.0.0.2 and a fair one on 127.0.0.1, over real libp2p connections.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_net::{PointServer, ServerConfig};
use rdv_point::{Config, CookieKey, MemoryStore, Point};
use rdv_wire::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GREEDY: &str = "127.0.0.2";
const FAIR: &str = "127.0.0.1";

struct Fixture {
    point_id: PeerId,
    /// TCP.
    addr: Multiaddr,
    /// QUIC: clients dial from their QUIC listening socket, so a client
    /// listening on 127.0.0.2 connects from there.
    quic: Multiaddr,
    server: PointServer<MemoryStore>,
    _node: Node,
}

async fn point_on(node: NodeConfig, config: ServerConfig) -> Fixture {
    let (mut node, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
                "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
            ],
            serve_queue: Some(64),
            ..node
        },
    )
    .unwrap();
    let (mut addr, mut quic) = (None, None);
    while addr.is_none() || quic.is_none() {
        if let Some(NodeEvent::Listening(a)) = events.recv().await {
            if a.to_string().contains("/quic-v1") {
                quic = Some(a);
            } else {
                addr = Some(a);
            }
        }
    }
    let (addr, quic) = (addr.unwrap(), quic.unwrap());
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
        quic,
        server,
        _node: node,
    }
}

/// A client node whose connections come from `source`: it listens there
/// on QUIC, and libp2p's QUIC transport dials from its listening socket.
async fn client_from(f: &Fixture, source: &str) -> (Node, Keypair) {
    let key = Keypair::generate_ed25519();
    let (node, mut events) = Node::start(
        key.clone(),
        NodeConfig {
            listen: vec![format!("/ip4/{source}/udp/0/quic-v1").parse().unwrap()],
            ..NodeConfig::default()
        },
    )
    .unwrap();
    // Listening first, so the dial below reuses that address.
    loop {
        if let Some(NodeEvent::Listening(_)) = events.recv().await {
            break;
        }
    }
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    node.add_address(f.point_id, f.quic.clone()).await;
    let _ = node.dial(f.quic.clone()).await;
    (node, key)
}

async fn stream(node: &Node, f: &Fixture) -> Option<Stream> {
    let mut c = node.control.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        c.open_stream(f.point_id, StreamProtocol::new(PROTOCOL_ID)),
    )
    .await
    .ok()?
    .ok()
}

async fn read_to_close(s: &mut Stream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()
        .map(|_| out)
}

/// Sends `msg` on a fresh stream, closes our side, decodes the one answer.
async fn ask(node: &Node, f: &Fixture, msg: &Message) -> Option<Message> {
    let mut s = stream(node, f).await?;
    s.write_all(&encode_frame(&encode(msg))).await.ok()?;
    s.close().await.ok()?;
    let bytes = read_to_close(&mut s, Duration::from_secs(10)).await?;
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&bytes);
    decode(&d.next_frame().ok()??).ok()
}

fn register(key: &Keypair, ns: &str) -> Message {
    let record = sign_record(
        key,
        &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        1,
        RecordFormat::Standard,
    )
    .unwrap();
    Message::Register(Register {
        namespace: Namespace::new(ns).unwrap(),
        signed_peer_record: record.into(),
        ttl: None,
    })
}

async fn register_status(node: &Node, key: &Keypair, f: &Fixture, ns: &str) -> ResponseStatus {
    match ask(node, f, &register(key, ns)).await {
        Some(Message::RegisterResponse(r)) => r.status,
        other => panic!("no REGISTER_RESPONSE: {other:?}"),
    }
}

fn metric(f: &Fixture, name: &str) -> u64 {
    let text = f.server.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_stream_slot() {
    let f = point_on(
        NodeConfig::default(),
        ServerConfig {
            max_streams: 4,
            max_streams_per_ip: 2,
            stream_timeout: Duration::from_secs(30),
            ..ServerConfig::default()
        },
    )
    .await;
    // The greedy host opens four streams under two peer ids (within the
    // per-peer bound), each holding a partial message.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (node, _) = client_from(&f, GREEDY).await;
        for _ in 0..2 {
            let mut s = stream(&node, &f).await.unwrap();
            let _ = s.write_all(&[0x05]).await;
            held.push(s);
        }
        held_nodes_keepalive(node);
    }
    eventually("all four greedy streams taken or refused", || {
        metric(&f, "rdv_streams_active") + metric(&f, "rdv_streams_refused_total") >= 4
    })
    .await;
    assert_eq!(metric(&f, "rdv_streams_active"), 2, "the address's share");
    // The fair host is served.
    let (fair, fair_key) = client_from(&f, FAIR).await;
    assert_eq!(
        register_status(&fair, &fair_key, &f, "fair").await,
        ResponseStatus::Ok
    );
    drop(held);
}

/// Keeps a node (and its connections) alive for the rest of the test.
fn held_nodes_keepalive(node: Node) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(node);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_any_valid_one_is_not_read() {
    let f = point_on(NodeConfig::default(), ServerConfig::default()).await;
    let (greedy, key) = client_from(&f, GREEDY).await;
    // A REGISTER whose record is 64 KiB: well under the 1 MiB message
    // limit, far over the largest valid request (a 4 KiB record).
    let msg = Message::Register(Register {
        namespace: Namespace::new("big").unwrap(),
        signed_peer_record: vec![0u8; 64 * 1024].into(),
        ttl: None,
    });
    let mut s = stream(&greedy, &f).await.unwrap();
    let _ = s.write_all(&encode_frame(&encode(&msg))).await;
    let _ = s.close().await;
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        answer.as_ref().is_none_or(|a| a.is_empty()),
        "the point read and answered a 64 KiB request: {answer:?}"
    );
    eventually("counted as malformed", || {
        metric(&f, "rdv_malformed_total") >= 1
    })
    .await;
    // A valid REGISTER with a record at the limit is still read.
    let (fair, fair_key) = client_from(&f, FAIR).await;
    assert_eq!(
        register_status(&fair, &fair_key, &f, "fair").await,
        ResponseStatus::Ok
    );
    drop(key);
}

/// Opens a TCP connection from `source` that starts libp2p's handshake
/// (the multistream-select header) and goes no further. `true` if the
/// point took it into its handshake (it answers the header), `false` if
/// it was denied (closed at once).
async fn half_open(target: std::net::SocketAddr, source: &str) -> (bool, tokio::net::TcpStream) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = sock.connect(target).await.unwrap();
    let header = b"\x13/multistream/1.0.0\n";
    let _ = tcp.write_all(header).await;
    let mut buf = [0u8; 20];
    let answered = matches!(
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut buf)).await,
        Ok(Ok(_))
    );
    (answered, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_pending_handshake() {
    let f = point_on(
        NodeConfig {
            max_pending_incoming: 8,
            max_pending_per_ip: 3,
            ..NodeConfig::default()
        },
        ServerConfig::default(),
    )
    .await;
    let target = match f.addr.iter().nth(1) {
        Some(libp2p::multiaddr::Protocol::Tcp(port)) => {
            std::net::SocketAddr::from(([127, 0, 0, 1], port))
        }
        other => panic!("{other:?}"),
    };
    let mut held = Vec::new();
    let mut taken = 0;
    for _ in 0..8 {
        let (answered, tcp) = half_open(target, GREEDY).await;
        taken += usize::from(answered);
        held.push(tcp);
    }
    assert_eq!(taken, 3, "handshakes the greedy address holds");
    // The fair host still gets a handshake slot and is served.
    let (fair, fair_key) = client_from(&f, FAIR).await;
    assert_eq!(
        register_status(&fair, &fair_key, &f, "fair").await,
        ResponseStatus::Ok
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_a_namespace() {
    let f = point_on(
        NodeConfig::default(),
        ServerConfig {
            max_registrations_per_ip_namespace: 2,
            ..ServerConfig::default()
        },
    )
    .await;
    let mut greedy = Vec::new();
    for _ in 0..3 {
        greedy.push(client_from(&f, GREEDY).await);
    }
    let statuses = [
        register_status(&greedy[0].0, &greedy[0].1, &f, "ns").await,
        register_status(&greedy[1].0, &greedy[1].1, &f, "ns").await,
        register_status(&greedy[2].0, &greedy[2].1, &f, "ns").await,
    ];
    assert_eq!(
        statuses,
        [
            ResponseStatus::Ok,
            ResponseStatus::Ok,
            ResponseStatus::Unavailable
        ]
    );
    // A refresh within the quota still passes; another namespace too.
    assert_eq!(
        register_status(&greedy[0].0, &greedy[0].1, &f, "ns").await,
        ResponseStatus::Ok
    );
    assert_eq!(
        register_status(&greedy[2].0, &greedy[2].1, &f, "other").await,
        ResponseStatus::Ok
    );
    // Another address is not affected.
    let (fair, fair_key) = client_from(&f, FAIR).await;
    assert_eq!(
        register_status(&fair, &fair_key, &f, "ns").await,
        ResponseStatus::Ok
    );
    // An UNREGISTER frees a place.
    let unregister = Message::Unregister(Unregister {
        namespace: Namespace::new("ns").unwrap(),
        id: None,
    });
    let mut s = stream(&greedy[1].0, &f).await.unwrap();
    s.write_all(&encode_frame(&encode(&unregister)))
        .await
        .unwrap();
    s.close().await.unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while register_status(&greedy[2].0, &greedy[2].1, &f, "ns").await != ResponseStatus::Ok {
        assert!(Instant::now() < deadline, "the place never came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one answer frame from a stream that stays open.
async fn read_answer(s: &mut Stream) -> Option<Message> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(frame) = d.next_frame().ok()? {
                return decode(&frame).ok();
            }
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            d.push(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resting_between_requests_is_kept_until_the_idle_timeout() {
    let f = point_on(
        NodeConfig::default(),
        ServerConfig {
            stream_timeout: Duration::from_millis(500),
            stream_idle_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .await;
    let (node, _) = client_from(&f, FAIR).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover::default())));
    // As go-libp2p's waku does: one stream, DISCOVERs with pauses between
    // them longer than the stall timeout.
    let mut s = stream(&node, &f).await.unwrap();
    for round in 0..3 {
        s.write_all(&discover).await.unwrap();
        assert!(
            matches!(
                read_answer(&mut s).await,
                Some(Message::DiscoverResponse(_))
            ),
            "round {round}: no answer on the resting stream"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // A message started and not finished is still cut off at the stall
    // timeout, long before the idle timeout.
    s.write_all(&discover[..1]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled message was not cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_stream_is_closed_after_the_idle_timeout() {
    let f = point_on(
        NodeConfig::default(),
        ServerConfig {
            stream_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        },
    )
    .await;
    let (node, _) = client_from(&f, FAIR).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover::default())));
    let mut s = stream(&node, &f).await.unwrap();
    s.write_all(&discover).await.unwrap();
    assert!(matches!(
        read_answer(&mut s).await,
        Some(Message::DiscoverResponse(_))
    ));
    // Resting past the idle timeout (well under the 30 s stall timeout):
    // the point closes the stream and gives its slot back.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the resting stream was never closed");
    eventually("the slot given back", || {
        metric(&f, "rdv_streams_active") == 0
    })
    .await;
}

/// Streams resting between requests (kept for the idle timeout, as waku
/// needs) still hold their place in the address's share: one host cannot
/// park more than `max_streams_per_ip` of them, while another is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resting_streams_count_against_the_addresss_share() {
    let f = point_on(
        NodeConfig::default(),
        ServerConfig {
            max_streams_per_ip: 2,
            stream_idle_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .await;
    let (node, _) = client_from(&f, GREEDY).await;
    let discover = encode_frame(&encode(&Message::Discover(Discover::default())));
    let mut resting = Vec::new();
    for _ in 0..2 {
        let mut s = stream(&node, &f).await.unwrap();
        s.write_all(&discover).await.unwrap();
        assert!(matches!(
            read_answer(&mut s).await,
            Some(Message::DiscoverResponse(_))
        ));
        resting.push(s);
    }
    assert_eq!(metric(&f, "rdv_streams_active"), 2, "both rest, both held");
    // A third from the same address is closed unanswered.
    let refused_before = metric(&f, "rdv_streams_refused_total");
    let mut third = stream(&node, &f).await.unwrap();
    let _ = third.write_all(&discover).await;
    assert_eq!(read_answer(&mut third).await, None);
    eventually("the third stream counted as refused", || {
        metric(&f, "rdv_streams_refused_total") > refused_before
    })
    .await;
    // Another address is served.
    let (fair, fair_key) = client_from(&f, FAIR).await;
    assert_eq!(
        register_status(&fair, &fair_key, &f, "fair").await,
        ResponseStatus::Ok
    );
    held_nodes_keepalive(node);
    drop(resting);
}
