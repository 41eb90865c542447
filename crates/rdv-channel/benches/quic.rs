#![allow(missing_docs, clippy::unwrap_used)]
//! Issue 10's channel figures on loopback, one process, a 2-worker tokio
//! runtime: bulk throughput of 64 KiB messages through the Noise channel
//! over QUIC and over TCP, and of the same bytes on a raw quinn stream
//! (no Noise); and the time to first byte of a new channel (from the
//! dial to the responder holding the first message: transport set-up,
//! IKpsk2, one frame) over TCP and over QUIC, beside the first byte of the
//! bare transports (a TCP connection, a quinn connection and stream), so
//! the gap between the channels can be put down to its layer. A small
//! binary printing a table, not criterion.
//!
//! `cargo bench -p rdv-channel --bench quic`

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use rdv_channel::TcpConfig;
use rdv_channel::quic::{self, BiStream, QuicEndpoint};
use rdv_channel::tcp::{self, Endpoint, TcpChannel};
use rdv_context::*;
use tokio::net::TcpListener;

const MSG: usize = 64 * 1024;
const COUNT: usize = 2048;
const ROUNDS: usize = 3;
const TTFB_TRIALS: usize = 21;

fn clock() -> u64 {
    T0 + 20
}

fn config() -> TcpConfig {
    TcpConfig {
        clock,
        handshake_timeout: Duration::from_secs(5),
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

fn bind() -> QuicEndpoint {
    QuicEndpoint::bind(UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap()
        .0
}

/// Bob publishes `hint`, Alice learns it.
fn publish(a: &mut Member, b: &mut Member, hint: TransportHint) {
    let snap = b.snapshot();
    let out = b
        .service
        .prepare_publish_descriptor(&snap, b.ctx(), vec![hint], T0 + 2);
    b.fx.run(&out, T0 + 2).unwrap();
    a.sync_from(b, T0 + 3);
}

/// Members and a listener for a TCP channel, set up before any timing.
async fn prepare_tcp() -> (Member, Member, TcpListener) {
    let (mut a, mut b) = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    publish(&mut a, &mut b, TransportHint::TcpDirect { addr });
    (a, b, listener)
}

/// A TCP channel from Alice to Bob: (Alice's end, Bob's end).
async fn dial_tcp(mut a: Member, mut b: Member, listener: TcpListener) -> (TcpChannel, TcpChannel) {
    let peer = b.me();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tcp::accept(s, endpoint(&mut b), &config(), tcp::no_rekey())
            .await
            .unwrap()
    });
    let ca = tcp::connect(endpoint(&mut a), peer, &config(), tcp::no_rekey())
        .await
        .unwrap();
    (ca, server.await.unwrap())
}

/// Members and endpoints for a QUIC channel, set up before any timing.
fn prepare_quic() -> (Member, Member, QuicEndpoint, QuicEndpoint) {
    let (mut a, mut b) = pair();
    let (qa, qb) = (bind(), bind());
    let addr = qb.local_addr().unwrap().to_string();
    publish(&mut a, &mut b, TransportHint::QuicDirect { addr });
    (a, b, qa, qb)
}

/// A QUIC channel from Alice to Bob.
async fn dial_quic(
    mut a: Member,
    mut b: Member,
    qa: &QuicEndpoint,
    qb: &QuicEndpoint,
) -> (TcpChannel, TcpChannel) {
    let addr = qb.local_addr().unwrap();
    let peer = b.me();
    let qb2 = qb.clone();
    let server = tokio::spawn(async move {
        let conn = qb2.accept().await.unwrap().await.unwrap();
        let mut stream = BiStream::accept(conn, &config()).await.unwrap();
        let init = quic::read_init(&mut stream, &config()).await.unwrap();
        quic::accept_init(stream, init, endpoint(&mut b), &config(), tcp::no_rekey())
            .await
            .unwrap()
    });
    let conn = qa.connect(addr, Duration::from_secs(5)).await.unwrap();
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
    (ca, server.await.unwrap())
}

/// MB/s of COUNT messages of MSG bytes from `tx` to `rx`.
async fn bulk(tx: TcpChannel, mut rx: TcpChannel) -> f64 {
    let reader = tokio::spawn(async move {
        for _ in 0..COUNT {
            assert_eq!(rx.recv().await.unwrap().len(), MSG);
        }
    });
    let t = Instant::now();
    for _ in 0..COUNT {
        tx.send(vec![7u8; MSG]).await.unwrap();
    }
    reader.await.unwrap();
    (MSG * COUNT) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// The same bytes on a raw quinn stream (QUIC's own TLS, no Noise).
async fn raw_quinn() -> f64 {
    let (qa, qb) = (bind(), bind());
    let addr = qb.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let conn = qb.accept().await.unwrap().await.unwrap();
        let (_s, mut r) = conn.accept_bi().await.unwrap();
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0;
        while total < MSG * COUNT {
            let n = r.read(&mut buf).await.unwrap().expect("the stream goes on");
            total += n;
        }
    });
    let conn = qa.connect(addr, Duration::from_secs(5)).await.unwrap();
    let (mut s, _r) = conn.open_bi().await.unwrap();
    let msg = vec![7u8; MSG];
    let t = Instant::now();
    for _ in 0..COUNT {
        s.write_all(&msg).await.unwrap();
    }
    reader.await.unwrap();
    (MSG * COUNT) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Milliseconds from the dial to the responder holding the first message.
async fn ttfb(quic: bool) -> f64 {
    if quic {
        let (ma, mb, qa, qb) = prepare_quic();
        let t = Instant::now();
        let (a, mut b) = dial_quic(ma, mb, &qa, &qb).await;
        a.send(vec![1]).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), vec![1]);
        t.elapsed().as_secs_f64() * 1e3
    } else {
        let (ma, mb, l) = prepare_tcp().await;
        let t = Instant::now();
        let (a, mut b) = dial_tcp(ma, mb, l).await;
        a.send(vec![1]).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), vec![1]);
        t.elapsed().as_secs_f64() * 1e3
    }
}

/// Milliseconds from the dial to the accepting side holding one byte on
/// the bare transport (no Noise, no guard chain): a quinn connection and
/// stream on the same endpoints the channel uses, or a TCP connection. The
/// difference between the two is what QUIC's own handshake costs.
async fn raw_ttfb(quic: bool) -> f64 {
    if quic {
        let (qa, qb) = (bind(), bind());
        let addr = qb.local_addr().unwrap();
        let t = Instant::now();
        let server = tokio::spawn(async move {
            let conn = qb.accept().await.unwrap().await.unwrap();
            let (_s, mut r) = conn.accept_bi().await.unwrap();
            let mut one = [0u8; 1];
            r.read_exact(&mut one).await.unwrap();
            conn
        });
        let conn = qa.connect(addr, Duration::from_secs(5)).await.unwrap();
        let (mut s, _r) = conn.open_bi().await.unwrap();
        s.write_all(&[1]).await.unwrap();
        let _held = server.await.unwrap();
        t.elapsed().as_secs_f64() * 1e3
    } else {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Instant::now();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            s
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        c.write_all(&[1]).await.unwrap();
        let _held = server.await.unwrap();
        t.elapsed().as_secs_f64() * 1e3
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut t, mut q, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        t.push(rt.block_on(async {
            let (ma, mb, l) = prepare_tcp().await;
            let (a, b) = dial_tcp(ma, mb, l).await;
            bulk(a, b).await
        }));
        q.push(rt.block_on(async {
            let (ma, mb, qa, qb) = prepare_quic();
            let (a, b) = dial_quic(ma, mb, &qa, &qb).await;
            bulk(a, b).await
        }));
        r.push(rt.block_on(raw_quinn()));
    }
    let (t, q, r) = (median(t), median(q), median(r));
    println!("bulk, {COUNT} x 64 KiB one way, median of {ROUNDS} rounds:");
    println!("| path | MB/s |\n|---|---:|");
    println!("| Noise channel over TCP | {t:.0} |");
    println!("| Noise channel over QUIC | {q:.0} |");
    println!("| raw quinn stream (no Noise) | {r:.0} |");
    println!(
        "QUIC channel / TCP channel: {:.0} %; QUIC channel / raw quinn: {:.0} %",
        100.0 * q / t,
        100.0 * q / r
    );
    let (mut tt, mut tq) = (Vec::new(), Vec::new());
    for _ in 0..TTFB_TRIALS {
        tt.push(rt.block_on(ttfb(false)));
        tq.push(rt.block_on(ttfb(true)));
    }
    let (mut bare_tcp, mut bare_quic) = (Vec::new(), Vec::new());
    for _ in 0..TTFB_TRIALS {
        bare_tcp.push(rt.block_on(raw_ttfb(false)));
        bare_quic.push(rt.block_on(raw_ttfb(true)));
    }
    let (tt, tq) = (median(tt), median(tq));
    let (bare_tcp, bare_quic) = (median(bare_tcp), median(bare_quic));
    println!("\ntime to first byte of a new channel, median of {TTFB_TRIALS}:");
    println!("| path | ms |\n|---|---:|");
    println!("| TCP direct | {tt:.2} |");
    println!("| QUIC direct | {tq:.2} |");
    println!("| bare TCP connection, no Noise | {bare_tcp:.2} |");
    println!("| bare quinn connection, no Noise | {bare_quic:.2} |");
    println!("QUIC / TCP: {:.2}x", tq / tt);
    println!(
        "QUIC's handshake over TCP's connect: {:.2} ms of the channels' {:.2} ms difference",
        bare_quic - bare_tcp,
        tq - tt
    );
}
