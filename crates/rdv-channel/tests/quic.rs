#![allow(missing_docs, clippy::unwrap_used)]
//! The QUIC driver over loopback: the Noise handshake on the first stream,
//! bound to the QUIC connection; strangers refused without an answer;
//! STUN taken out of the shared socket.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use rdv_channel::quic::{self, BiStream, QuicEndpoint};
use rdv_channel::tcp::{self, Endpoint};
use rdv_channel::*;
use rdv_context::*;

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    T0 + 20 + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn config() -> TcpConfig {
    TcpConfig {
        clock,
        handshake_timeout: Duration::from_secs(3),
        ..TcpConfig::default()
    }
}

fn endpoint(m: &mut Member) -> Endpoint<'_, ReferenceInterpreter<MemoryJournal>> {
    let snapshot = m.snapshot();
    Endpoint {
        service: &mut m.service,
        handshaker: &mut m.hs,
        interpreter: &mut m.fx,
        snapshot,
    }
}

fn bind() -> (QuicEndpoint, quic::StunSide) {
    QuicEndpoint::bind(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap()
}

/// Republishes `m`'s descriptor with a QUIC direct hint at `addr`.
fn publish_quic(m: &mut Member, addr: SocketAddr, now: u64) {
    let snap = m.snapshot();
    let out = m.service.prepare_publish_descriptor(
        &snap,
        m.ctx(),
        vec![TransportHint::QuicDirect {
            addr: addr.to_string(),
        }],
        now,
    );
    assert!(out.decision.is_allowed());
    m.fx.run(&out, now).unwrap();
}

/// Alice dials Bob over QUIC; returns both channels.
async fn connected() -> (TcpChannel, TcpChannel, Member, Member) {
    let (mut a, mut b) = pair();
    let (qa, _sa) = bind();
    let (qb, _sb) = bind();
    publish_quic(&mut b, qb.local_addr().unwrap(), T0 + 2);
    a.sync_from(&b, T0 + 3);
    let peer = b.me();
    let server = tokio::spawn(async move {
        let incoming = qb.accept().await.unwrap();
        let conn = incoming.await.unwrap();
        let mut stream = BiStream::accept(conn, &config()).await.unwrap();
        let init = quic::read_init(&mut stream, &config()).await.unwrap();
        let ch = quic::accept_init(stream, init, endpoint(&mut b), &config(), tcp::no_rekey())
            .await
            .unwrap();
        (ch, b, qb)
    });
    let conn = qa
        .connect(b_addr_of(&a, peer), Duration::from_secs(5))
        .await
        .unwrap();
    let mut stream = BiStream::open(conn).await.unwrap();
    let init = quic::begin_initiator(&mut endpoint(&mut a), peer, &stream, &config()).unwrap();
    let complete = quic::exchange(&mut stream, &init, &config()).await.unwrap();
    let ca = quic::complete_initiator(
        stream,
        endpoint(&mut a),
        peer,
        &complete,
        &config(),
        tcp::no_rekey(),
    )
    .unwrap();
    let (cb, b, _qb) = server.await.unwrap();
    // Keep the endpoints alive with the channels.
    std::mem::forget(qa);
    std::mem::forget(_qb);
    (ca, cb, a, b)
}

fn b_addr_of(a: &Member, peer: AuthorityId) -> SocketAddr {
    a.service
        .get_cached_descriptor(a.ctx(), peer)
        .unwrap()
        .transport_hints[0]
        .socket_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_open_a_noise_channel_over_quic_and_exchange_both_ways() {
    let (ca, mut cb, a, b) = connected().await;
    assert!(ca.is_initiator() && !cb.is_initiator());
    assert_eq!(ca.id(), cb.id(), "both ends hold one channel");
    let big = vec![7u8; 200_000];
    ca.send(b"hello over quic".to_vec()).await.unwrap();
    ca.send(big.clone()).await.unwrap();
    assert_eq!(cb.recv().await.unwrap(), b"hello over quic");
    assert_eq!(cb.recv().await.unwrap(), big);
    cb.send(b"and back".to_vec()).await.unwrap();
    let mut ca = ca;
    assert_eq!(ca.recv().await.unwrap(), b"and back");
    // Each end recorded the channel in its journal.
    assert_eq!(a.channels_established(), 1);
    assert_eq!(b.channels_established(), 1);
}

/// Message 1 made for one QUIC connection does not open on another: the
/// Noise prologue holds the connection's exporter value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_bound_to_one_connection_fails_on_another() {
    let (mut a, mut b) = pair();
    let (qa, _sa) = bind();
    let (qb, _sb) = bind();
    publish_quic(&mut b, qb.local_addr().unwrap(), T0 + 2);
    a.sync_from(&b, T0 + 3);
    let peer = b.me();
    let addr = b_addr_of(&a, peer);
    // Each connection served on its own task, in the order their streams
    // speak.
    let b = std::sync::Arc::new(tokio::sync::Mutex::new(b));
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for _ in 0..2 {
            let conn = qb.accept().await.unwrap().await.unwrap();
            let (b, tx) = (b.clone(), tx.clone());
            tokio::spawn(async move {
                let r = async {
                    let mut stream = BiStream::accept(conn, &config())
                        .await
                        .map_err(|e| e.to_string())?;
                    let init = quic::read_init(&mut stream, &config())
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut m = b.lock().await;
                    quic::accept_init(stream, init, endpoint(&mut m), &config(), tcp::no_rekey())
                        .await
                        .map(|ch| ch.id())
                        .map_err(|e| e.to_string())
                }
                .await;
                let _ = tx.send(r).await;
            });
        }
        // Keep the endpoint up until the test is done.
        std::future::pending::<()>().await;
    });
    // Two connections; message 1 of the first is sent on the second.
    let c1 = qa.connect(addr, Duration::from_secs(5)).await.unwrap();
    let c2 = qa.connect(addr, Duration::from_secs(5)).await.unwrap();
    let s1 = BiStream::open(c1).await.unwrap();
    let mut s2 = BiStream::open(c2).await.unwrap();
    assert_ne!(
        s1.binding, s2.binding,
        "each connection has its own exporter value"
    );
    let init = quic::begin_initiator(&mut endpoint(&mut a), peer, &s1, &config()).unwrap();
    let answer = quic::exchange(&mut s2, &init, &config()).await;
    assert!(
        answer.is_err(),
        "no message 2 for a handshake bound elsewhere"
    );
    // And a correctly bound one on the first connection works.
    let mut s1 = s1;
    let init = quic::begin_initiator(&mut endpoint(&mut a), peer, &s1, &config()).unwrap();
    let complete = quic::exchange(&mut s1, &init, &config()).await.unwrap();
    let ch = quic::complete_initiator(
        s1,
        endpoint(&mut a),
        peer,
        &complete,
        &config(),
        tcp::no_rekey(),
    )
    .unwrap();
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // The misbound one was refused, the bound one gave the same channel.
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&Ok(ch.id())), "{results:?}");
}

/// A stranger (not a member) gets its QUIC connection closed with no
/// Noise answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_quic_gets_no_answer() {
    let (_a, mut b) = pair();
    let (b_ctx, b_key) = (b.ctx(), b.identity.static_public());
    let (qb, _sb) = bind();
    let (qm, _sm) = bind();
    let addr = qb.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let conn = qb.accept().await.unwrap().await.unwrap();
        let mut stream = BiStream::accept(conn, &config()).await.unwrap();
        match quic::read_init(&mut stream, &config()).await {
            Ok(init) => {
                quic::accept_init(stream, init, endpoint(&mut b), &config(), tcp::no_rekey())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let conn = qm.connect(addr, Duration::from_secs(5)).await.unwrap();
    let mut s = BiStream::open(conn.clone()).await.unwrap();
    // A message 1 that passes mac1 (Mallory read Bob's static key and the
    // context id somewhere) but is no Noise message of a member.
    let init = HandshakeInit::new(b_ctx, 0, Route::Direct, vec![1; 64], &b_key);
    tcp::write_handshake_frame(&mut s.send, &init.to_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), s.recv.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Err(_)) | Ok(Ok(None))),
        "the stranger read nothing: {read:?}"
    );
    assert!(server.await.unwrap().is_err());
}

/// STUN datagrams sent to the member's socket reach the STUN side, QUIC
/// still works on the same socket, and the STUN side sends from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_and_quic_share_one_socket() {
    let (q, mut stun) = bind();
    let addr = q.local_addr().unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A Binding request: type 0x0001, length 0, magic cookie, id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[9u8; 12]);
    probe.send_to(&req, addr).unwrap();
    let (from, got) = tokio::time::timeout(Duration::from_secs(5), stun.incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, req);
    assert_eq!(from, probe.local_addr().unwrap());
    // RTP-range garbage is neither STUN nor QUIC: dropped and counted.
    probe.send_to(&[0x90; 30], addr).unwrap();
    // The STUN side answers from the QUIC socket's address.
    stun.send(from, b"answer").unwrap();
    let mut buf = [0u8; 64];
    let (n, src) = probe.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");
    assert_eq!(src, addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while q
        .stats()
        .other_dropped
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the garbage datagram was counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        q.stats().stun_in.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
