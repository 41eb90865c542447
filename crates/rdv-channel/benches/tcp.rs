#![allow(missing_docs, clippy::unwrap_used)]
//! Loopback TCP throughput: 64 KiB messages through `TcpChannel` (both
//! tasks in one process, multi-threaded runtime) vs the same bytes over a
//! plain `TcpStream`. A small binary, not criterion: each round moves
//! 128 MiB, and the figure of interest is MB/s.
//!
//! `cargo bench -p rdv-channel --bench tcp`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use rdv_channel::TcpConfig;
use rdv_channel::tcp::{self, Endpoint};
use rdv_context::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MSG: usize = 64 * 1024;
const COUNT: usize = 2048;
const ROUNDS: usize = 5;

fn clock() -> u64 {
    T0 + 20
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

async fn plain() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0;
        while total < MSG * COUNT {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = vec![7u8; MSG];
    let t = Instant::now();
    for _ in 0..COUNT {
        s.write_all(&msg).await.unwrap();
    }
    reader.await.unwrap();
    (MSG * COUNT) as f64 / t.elapsed().as_secs_f64() / 1e6
}

async fn channel() -> f64 {
    let (mut a, mut b) = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snap = b.snapshot();
    let out = b.service.prepare_publish_descriptor(
        &snap,
        b.ctx(),
        vec![TransportHint::TcpDirect {
            addr: addr.to_string(),
        }],
        T0 + 2,
    );
    b.fx.run(&out, T0 + 2).unwrap();
    a.sync_from(&b, T0 + 3);
    let b_id = b.me();
    let config = TcpConfig {
        clock,
        ..TcpConfig::default()
    };
    let cfg = config.clone();
    let reader = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut ch = tcp::accept(s, endpoint(&mut b), &cfg, tcp::no_rekey())
            .await
            .unwrap();
        for _ in 0..COUNT {
            assert_eq!(ch.recv().await.unwrap().len(), MSG);
        }
    });
    let ch = tcp::connect(endpoint(&mut a), b_id, &config, tcp::no_rekey())
        .await
        .unwrap();
    let t = Instant::now();
    for _ in 0..COUNT {
        ch.send(vec![7u8; MSG]).await.unwrap();
    }
    reader.await.unwrap();
    (MSG * COUNT) as f64 / t.elapsed().as_secs_f64() / 1e6
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
    let (mut p, mut c) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        p.push(rt.block_on(plain()));
        c.push(rt.block_on(channel()));
    }
    let (p, c) = (median(p), median(c));
    println!(
        "loopback TCP, {COUNT} x 64 KiB, median of {ROUNDS}: plain {p:.0} MB/s, TcpChannel {c:.0} MB/s ({:.0} %)",
        100.0 * c / p
    );
}
