//! `rdv bench --idle N`: what holding idle peers costs a point.
//!
//! Most of a public point's load is idle: libp2p peers keep their
//! connection open between requests. This holds N peers on each point in
//! turn, each its own identity with one connection and one live
//! registration, lets them rest, and reads the point's process from /proc:
//! resident memory before and after (bytes per peer), and CPU time and
//! thread wake-ups during the rest. The peers neither ping nor identify
//! again, so what the point does at rest is its own timer work. Then one
//! peer times DISCOVERs in the namespace that holds them all (latency
//! against namespace size).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_wire::{Discover, Message, Namespace, RecordFormat, Register, sign_record};

use crate::Failure;
use crate::bench_cmd::{label, ok, point_id, request};
use crate::cli::BenchArgs;

/// Peers connecting at once (each dial is a Noise handshake and a
/// REGISTER whose signature the point verifies).
const CONNECTING_AT_ONCE: usize = 64;

/// What /proc says about a process at one moment.
#[derive(Clone, Copy)]
struct ProcSample {
    rss_bytes: u64,
    /// User and system CPU time of the process, threads that have exited
    /// included (`/proc/PID/stat`, in USER_HZ ticks of 10 ms: over a 20 s
    /// rest that resolves 0.5 ms of CPU a second).
    cpu_ns: u64,
    /// Context switches of its live threads: each is a thread going to
    /// sleep or being preempted, so at rest it counts wake-ups (a thread
    /// that exits during the rest takes its count with it).
    switches: u64,
}

/// USER_HZ: the unit of /proc's CPU times, 100 on Linux.
const TICK_NS: u64 = 10_000_000;

fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in
    // parentheses: state is the 3rd field, utime the 14th, stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/stat field {i} unreadable")))
    };
    let cpu_ns = (ticks(14)? + ticks(15)?) * TICK_NS;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rss_bytes = field(&status, "VmRSS:") * 1024;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        // A thread can exit between the listing and the read: skip it.
        if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
            switches +=
                field(&s, "voluntary_ctxt_switches:") + field(&s, "nonvoluntary_ctxt_switches:");
        }
    }
    Ok(ProcSample {
        rss_bytes,
        cpu_ns,
        switches,
    })
}

/// DISCOVERs (limit 100) one peer sends, one after another, once the
/// namespace holds every idle peer: their latency against namespace size.
const DISCOVER_ROUNDS: usize = 200;

/// Between the last registration and the start of the rest.
const SETTLE: Duration = Duration::from_secs(12);

/// The namespace every idle peer registers in.
const NAMESPACE: &str = "rdv-bench-idle";

/// One idle peer: its node (dropping it closes the connection).
struct Peer {
    node: Node,
}

struct Row {
    point: String,
    peers: usize,
    set_up: Duration,
    connected_after_rest: usize,
    before: Option<ProcSample>,
    at_rest: Option<ProcSample>,
    after: Option<ProcSample>,
    /// DISCOVER latencies (µs, sorted), after the rest.
    discover_us: Vec<u64>,
}

/// Runs `--idle PEERS` against every `--point` and prints one table.
pub async fn run(args: &BenchArgs, peers: usize) -> Result<(), Failure> {
    if !args.pids.is_empty() && args.pids.len() != args.points.len() {
        return Err(Failure::usage(format!(
            "{} --pid for {} --point: give one process id per point, in the same order, or none",
            args.pids.len(),
            args.points.len()
        )));
    }
    if peers == 0 {
        return Err(Failure::usage("--idle needs at least one peer"));
    }
    if args.seconds == 0 {
        return Err(Failure::usage(
            "--idle needs a rest of at least 1 --seconds",
        ));
    }
    let ping = match args.peer_ping {
        Some(0) => return Err(Failure::usage("--peer-ping needs at least 1 second")),
        p => p.map(Duration::from_secs),
    };
    let rest = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    for (i, point) in args.points.iter().enumerate() {
        let pid = args.pids.get(i).copied();
        rows.push(measure(&point.0, &label(args, i), pid, peers, rest, ping).await?);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| point | idle peers | set-up | connected after rest | point RSS before | RSS with peers | RSS per peer | CPU at rest | wake-ups at rest | DISCOVER p50 | DISCOVER p99 |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let secs = rest.as_secs_f64();
    for r in rows {
        let mib = |s: Option<ProcSample>| {
            s.map_or("-".into(), |s| {
                format!("{:.1} MiB", s.rss_bytes as f64 / 1048576.0)
            })
        };
        let per_peer = match (r.before, r.at_rest) {
            (Some(b), Some(a)) => format!(
                "{:.1} KiB",
                a.rss_bytes.saturating_sub(b.rss_bytes) as f64 / 1024.0 / r.peers as f64
            ),
            _ => "-".into(),
        };
        let (cpu, wakeups) = match (r.at_rest, r.after) {
            (Some(a), Some(b)) => (
                format!(
                    "{:.2} ms/s",
                    b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e6 / secs
                ),
                format!(
                    "{:.1} /s",
                    b.switches.saturating_sub(a.switches) as f64 / secs
                ),
            ),
            _ => ("-".into(), "-".into()),
        };
        let pct = |p: f64| {
            let v = &r.discover_us;
            if v.is_empty() {
                return "-".to_string();
            }
            let i = ((v.len() - 1) as f64 * p).round() as usize;
            format!("{:.2} ms", v[i] as f64 / 1000.0)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.point,
            r.peers,
            r.set_up.as_secs_f64(),
            r.connected_after_rest,
            mib(r.before),
            mib(r.at_rest),
            per_peer,
            cpu,
            wakeups,
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}

fn read(pid: Option<u32>) -> Result<Option<ProcSample>, Failure> {
    pid.map(|p| {
        sample(p).map_err(|e| Failure::usage(format!("cannot read /proc/{p} (--pid): {e}")))
    })
    .transpose()
}

async fn measure(
    addrs: &[Multiaddr],
    label: &str,
    pid: Option<u32>,
    n: usize,
    rest: Duration,
    ping: Option<Duration>,
) -> Result<Row, Failure> {
    let point = point_id(&addrs[0])?;
    let before = read(pid)?;
    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let made = AtomicUsize::new(0);
    let peers: Vec<Peer> = futures::stream::iter(0..n)
        .map(|i| {
            let (addr, connected, made) =
                (addrs[i % addrs.len()].clone(), connected.clone(), &made);
            async move {
                let peer = connect_one(addr, point, connected, ping).await?;
                let m = made.fetch_add(1, Relaxed) + 1;
                if m % 500 == 0 || m == n {
                    eprint!("\r{label}: {m}/{n} idle peers registered ");
                }
                Ok::<_, Failure>(peer)
            }
        })
        .buffer_unordered(CONNECTING_AT_ONCE)
        .try_collect()
        .await?;
    eprintln!();
    let set_up = started.elapsed();
    // Let the work that follows the last requests finish before the rest
    // starts: identify, the store's batch, and the linger an rdv point
    // keeps after a peer's last request (10 s, one timer per connection
    // that fires once). The rest then shows the steady state.
    tokio::time::sleep(SETTLE).await;
    let at_rest = read(pid)?;
    eprintln!("{label}: resting {} s", rest.as_secs());
    tokio::time::sleep(rest).await;
    let after = read(pid)?;
    let connected_after_rest = connected.load(Relaxed);
    let discover_us = discover_latencies(&peers[0].node, point, n).await?;
    drop(peers);
    Ok(Row {
        point: label.to_string(),
        peers: n,
        set_up,
        connected_after_rest,
        before,
        at_rest,
        after,
        discover_us,
    })
}

/// [`DISCOVER_ROUNDS`] DISCOVERs with limit 100 in the namespace holding
/// all `n` peers, one at a time; their latencies in µs, sorted.
async fn discover_latencies(node: &Node, point: PeerId, n: usize) -> Result<Vec<u64>, Failure> {
    let msg = Message::Discover(Discover {
        namespace: Some(Namespace::new(NAMESPACE).map_err(|e| Failure::usage(e.to_string()))?),
        limit: Some(100),
        cookie: None,
    });
    let mut took = Vec::with_capacity(DISCOVER_ROUNDS);
    for _ in 0..DISCOVER_ROUNDS {
        let started = Instant::now();
        let answer = request(node, point, &msg).await.map_err(Failure::network)?;
        let elapsed = started.elapsed();
        match &answer {
            Some(Message::DiscoverResponse(r))
                if ok(&answer) && r.registrations.len() == n.min(100) =>
            {
                took.push(elapsed.as_micros() as u64)
            }
            _ => {
                return Err(Failure::refused(format!(
                    "a DISCOVER in a namespace of {n} did not return {} registrations: {answer:?}",
                    n.min(100)
                )));
            }
        }
    }
    took.sort_unstable();
    Ok(took)
}

/// A new identity that connects to `addr`, registers once (legacy record,
/// which both points accept) and then only listens (and pings every
/// `ping`, if given).
async fn connect_one(
    addr: Multiaddr,
    point: PeerId,
    connected: Arc<AtomicUsize>,
    ping: Option<Duration>,
) -> Result<Peer, Failure> {
    let key = Keypair::generate_ed25519();
    let own: Multiaddr = "/ip4/127.0.0.1/tcp/9"
        .parse()
        .map_err(|_| Failure::usage("bad address"))?;
    let record = sign_record(&key, std::slice::from_ref(&own), 1, RecordFormat::Legacy)
        .map(Bytes::from)
        .map_err(|e| Failure::usage(format!("cannot sign: {e}")))?;
    let config = NodeConfig {
        // Quiet peers unless asked: whatever happens at rest is then the
        // point's doing.
        ping_interval: ping,
        identify_interval: None,
        idle_timeout: Duration::from_secs(24 * 3600),
        ..NodeConfig::default()
    };
    let (node, mut events) =
        Node::start(key, config).map_err(|e| Failure::network(e.to_string()))?;
    // Follow this peer's connection count into the shared tally.
    tokio::spawn(async move {
        let mut up = false;
        while let Some(e) = events.recv().await {
            if let NodeEvent::Connections(k) = e {
                match (up, k > 0) {
                    (false, true) => connected.fetch_add(1, Relaxed),
                    (true, false) => connected.fetch_sub(1, Relaxed),
                    _ => 0,
                };
                up = k > 0;
            }
        }
        if up {
            connected.fetch_sub(1, Relaxed);
        }
    });
    node.add_address(point, addr.clone()).await;
    node.dial(addr.clone())
        .await
        .map_err(|e| Failure::network(format!("cannot reach {addr}: {e}")))?;
    let msg = Message::Register(Register {
        namespace: Namespace::new(NAMESPACE).map_err(|e| Failure::usage(e.to_string()))?,
        signed_peer_record: record,
        ttl: None,
    });
    let answer = request(&node, point, &msg)
        .await
        .map_err(Failure::network)?;
    if !ok(&answer) {
        return Err(Failure::refused(format!(
            "{addr} refused an idle peer's REGISTER: {answer:?} (raise the point's per-IP and total limits; see docs/PERFORMANCE.md)"
        )));
    }
    Ok(Peer { node })
}
