//! `rdv bench`: a load generator for any `/rendezvous/1.0.0` point.
//!
//! Each client is its own peer (its own key and swarm) holding one
//! connection to the point and sending one request per stream, as
//! rust-libp2p's client does. Records use the legacy format so that
//! rust-libp2p's point accepts them too. Prints a progress line on stderr and
//! a table on stdout.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use rdv_net::io::{read_frame, send_and_close, write_message};
use rdv_net::node::{Node, NodeConfig};
use rdv_wire::{
    Discover, FrameDecoder, Message, Namespace, RecordFormat, Register, ResponseStatus, Unregister,
    decode, sign_record,
};

use crate::Failure;
use crate::cli::{BenchArgs, Mix};

struct Client {
    node: Node,
    record: Bytes,
    /// Records signed ahead with increasing sequence numbers, so that every
    /// REGISTER of the `register` mix carries bytes the point has not seen
    /// and must verify (signing during the run would load the generator).
    fresh: Vec<Bytes>,
}

/// Fresh records per client for the `register` mix.
const FRESH_RECORDS: u64 = 2048;

struct Sample {
    ops: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    /// Seconds the clients ran: the mix's length, or less when the
    /// `register` mix ran out of never-seen records first.
    secs: f64,
}

/// Runs every mix against every point and prints one table.
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    if !args.names.is_empty() && args.names.len() != args.points.len() {
        return Err(Failure::usage(format!(
            "{} --name for {} --point: give one name per point, in the same order, or none",
            args.names.len(),
            args.points.len()
        )));
    }
    if let Some(peers) = args.idle {
        return crate::bench_idle::run(&args, peers).await;
    }
    let mut rows = Vec::new();
    for (i, point) in args.points.iter().enumerate() {
        let name = label(&args, i);
        let point = &point.0[0];
        let point_id = point_id(point)?;
        let fresh = args.mixes.contains(&Mix::Register);
        let clients = connect_all(point, point_id, args.clients, fresh).await?;
        for mix in &args.mixes {
            let sample = load(
                &clients,
                point_id,
                *mix,
                Duration::from_secs(args.seconds),
                &name,
            )
            .await?;
            rows.push((name.clone(), *mix, sample));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| point | mix | clients | ops | ops/s | p50 | p90 | p99 | max | errors |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (point, mix, mut s) in rows {
        s.latencies_us.sort_unstable();
        let pct = |p: f64| -> String {
            if s.latencies_us.is_empty() {
                return "-".into();
            }
            let i = ((s.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            format!("{:.2} ms", s.latencies_us[i] as f64 / 1000.0)
        };
        let _ = writeln!(
            out,
            "| {} | {:?} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            point,
            mix,
            args.clients,
            s.ops,
            s.ops as f64 / s.secs.max(f64::EPSILON),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0),
            s.errors
        );
    }
    Ok(())
}

/// The peer id a point address ends in.
pub(crate) fn point_id(point: &Multiaddr) -> Result<PeerId, Failure> {
    match point.iter().last() {
        Some(Protocol::P2p(id)) => Ok(id),
        _ => Err(Failure::usage(format!(
            "--point {point} does not end in /p2p/<peer id>"
        ))),
    }
}

/// What the table calls point `i`: its `--name`, or its address shortened.
pub(crate) fn label(args: &BenchArgs, i: usize) -> String {
    args.names
        .get(i)
        .cloned()
        .unwrap_or_else(|| short(&args.points[i].0[0]))
}

fn short(point: &Multiaddr) -> String {
    let s = point.to_string();
    match s.rsplit_once("/p2p/") {
        Some((addr, id)) => format!("{addr}/p2p/…{}", &id[id.len().saturating_sub(6)..]),
        None => s,
    }
}

async fn connect_all(
    point: &Multiaddr,
    point_id: PeerId,
    n: usize,
    fresh_records: bool,
) -> Result<Vec<Arc<Client>>, Failure> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let key = Keypair::generate_ed25519();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9"
            .parse()
            .map_err(|_| Failure::usage("bad address"))?;
        let sign = |seq| {
            sign_record(&key, std::slice::from_ref(&addr), seq, RecordFormat::Legacy)
                .map(Bytes::from)
                .map_err(|e| Failure::usage(format!("cannot sign: {e}")))
        };
        let record = sign(1)?;
        let fresh = if fresh_records {
            (2..2 + FRESH_RECORDS).map(sign).collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let (node, _events) =
            Node::start(key, NodeConfig::default()).map_err(|e| Failure::network(e.to_string()))?;
        node.add_address(point_id, point.clone()).await;
        node.dial(point.clone())
            .await
            .map_err(|e| Failure::network(format!("cannot reach {point}: {e}")))?;
        clients.push(Arc::new(Client {
            node,
            record,
            fresh,
        }));
    }
    Ok(clients)
}

/// One request on a new stream; `Ok(None)` for UNREGISTER.
pub(crate) async fn request(
    node: &Node,
    point: PeerId,
    msg: &Message,
) -> Result<Option<Message>, String> {
    let mut control = node.control.clone();
    let mut stream = control
        .open_stream(point, StreamProtocol::new(rdv_wire::PROTOCOL_ID))
        .await
        .map_err(|e| e.to_string())?;
    if matches!(msg, Message::Unregister(_)) {
        send_and_close(&mut stream, msg, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(None);
    }
    write_message(&mut stream, msg)
        .await
        .map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::new(rdv_wire::DEFAULT_MAX_MESSAGE_SIZE);
    let frame = read_frame(&mut stream, &mut dec, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed without an answer")?;
    futures::AsyncWriteExt::close(&mut stream).await.ok();
    decode(&frame).map(Some).map_err(|e| e.to_string())
}

pub(crate) fn ok(answer: &Option<Message>) -> bool {
    match answer {
        Some(Message::RegisterResponse(r)) => r.status == ResponseStatus::Ok,
        Some(Message::DiscoverResponse(r)) => r.status == ResponseStatus::Ok,
        _ => false,
    }
}

async fn load(
    clients: &[Arc<Client>],
    point: PeerId,
    mix: Mix,
    length: Duration,
    label: &str,
) -> Result<Sample, Failure> {
    let ns = |s: &str| Namespace::new(s).map_err(|e| Failure::usage(e.to_string()));
    let shared_ns = ns("rdv-bench")?;
    // Every client registered in one namespace: what DISCOVER reads and REFRESH renews.
    for c in clients {
        let msg = Message::Register(Register {
            namespace: shared_ns.clone(),
            signed_peer_record: c.record.clone(),
            ttl: None,
        });
        let answer = request(&c.node, point, &msg)
            .await
            .map_err(Failure::network)?;
        if !ok(&answer) {
            return Err(Failure::refused(format!(
                "{label} refused the warm-up REGISTER: {answer:?}"
            )));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, stop, done, shared_ns) = (c.clone(), stop.clone(), done.clone(), shared_ns.clone());
        let own_ns = ns(&format!("rdv-bench-{i}"))?;
        tasks.spawn(async move {
            let began = Instant::now();
            let mut s = Sample {
                ops: 0,
                errors: 0,
                latencies_us: Vec::new(),
                secs: 0.0,
            };
            while !stop.load(Relaxed) {
                if mix == Mix::Register && s.ops as usize >= c.fresh.len() {
                    break; // out of never-seen records: stop rather than repeat one
                }
                let msg = match mix {
                    Mix::Register => Message::Register(Register {
                        namespace: own_ns.clone(),
                        signed_peer_record: c.fresh[s.ops as usize % c.fresh.len()].clone(),
                        ttl: None,
                    }),
                    Mix::Refresh => Message::Register(Register {
                        namespace: shared_ns.clone(),
                        signed_peer_record: c.record.clone(),
                        ttl: None,
                    }),
                    Mix::Discover => Message::Discover(Discover {
                        namespace: Some(shared_ns.clone()),
                        limit: Some(100),
                        cookie: None,
                    }),
                };
                let started = Instant::now();
                let answer = request(&c.node, point, &msg).await;
                let took = started.elapsed();
                s.ops += 1;
                done.fetch_add(1, Relaxed);
                match answer {
                    Ok(a) if ok(&a) => s
                        .latencies_us
                        .push(took.as_micros().min(u32::MAX as u128) as u32),
                    _ => s.errors += 1,
                }
                if mix == Mix::Register {
                    // Make room for the next new registration (not timed).
                    let un = Message::Unregister(Unregister {
                        namespace: own_ns.clone(),
                        id: None,
                    });
                    let _ = request(&c.node, point, &un).await;
                }
            }
            s.secs = began.elapsed().as_secs_f64();
            s
        });
    }
    let started = Instant::now();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let frac = (started.elapsed().as_secs_f64() / length.as_secs_f64()).min(1.0);
        let bar: String = (0..30)
            .map(|k| if (k as f64) < frac * 30.0 { '#' } else { '.' })
            .collect();
        eprint!(
            "\r{label} {:?} [{bar}] {:>3.0}% {} ops ",
            mix,
            frac * 100.0,
            done.load(Relaxed)
        );
    }
    stop.store(true, Relaxed);
    eprintln!();
    let mut total = Sample {
        ops: 0,
        errors: 0,
        latencies_us: Vec::new(),
        secs: 0.0,
    };
    while let Some(r) = tasks.join_next().await {
        let s = r.map_err(|e| Failure::network(format!("a client task failed: {e}")))?;
        total.ops += s.ops;
        total.errors += s.errors;
        total.secs = total.secs.max(s.secs);
        total.latencies_us.extend(s.latencies_us);
    }
    Ok(total)
}
