//! Relay and channel performance (issues 10, 11; docs/PERFORMANCE.md),
//! not in the default suite. Run in release, one test at a time:
//!
//! ```sh
//! cargo test --release -p rdv --test relay_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Prints tables: pipe throughput through each transport between two
//! agents on loopback (the same bytes, the same processes, the channel's
//! Noise and framing on every path), the point's CPU time per relayed
//! MiB, the point's resident memory per idle relay client, and what
//! racing the transports adds to a channel's open time.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::members::*;
use support::*;

/// CPU time (user + system) of process `pid`, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 here; in
    // clock ticks of 10 ms on Linux (CLK_TCK 100).
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn point_with_relay(dir: &std::path::Path, config: Option<&str>) -> (Daemon, String) {
    let mut args = vec![
        "point",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--store",
        "memory",
        "--relay-listen",
        "127.0.0.1:0",
    ];
    let path = dir.join("point.toml");
    if let Some(c) = config {
        std::fs::write(&path, c).expect("config");
        args.extend(["--config", path.to_str().expect("utf-8 path")]);
    }
    let point = start_env(RDV, &args, dir, 1, &[]);
    let token = point
        .said
        .iter()
        .find_map(|l| l.strip_prefix("relay on "))
        .expect("relay on")
        .to_owned();
    (point, token)
}

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn relayed_pipe_throughput_against_direct_paths_and_relay_cpu_per_mib() {
    let mib: usize = std::env::var("RDV_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = temp();
    // The relay's capacity, not its default per-connection rate (16 MiB/s,
    // which the last row measures).
    let (point, token) = point_with_relay(
        tmp.path(),
        Some("relay_client_rate = 4294967296\nrelay_total_rate = 4294967296\n"),
    );
    let (a, b): (PathBuf, PathBuf) = (tmp.path().join("alice"), tmp.path().join("bob"));
    create_and_join(&plain, &a, &b);
    expect_code(
        &output(cmd(plain, &a, &["context", "relay", "add", "home", &token])),
        0,
    );
    let common = ["agent", "--point", point.tcp(), "--listen", "127.0.0.1:0"];
    let (_alice, _) = agent(cmd(plain, &a, &common));
    let (_bob, bob_auth) = agent(cmd(plain, &b, &common));
    assert!(wait_reachable_by_relay(
        &plain,
        &a,
        &bob_auth,
        Duration::from_secs(60)
    ));
    let bytes = random_bytes(mib << 20);
    let pid = point.child.id();
    println!("\n| transport | MiB | seconds | MiB/s | point CPU ms per MiB |");
    println!("|---|---|---|---|---|");
    let mut rates = Vec::new();
    for via in ["tcp-direct", "quic-direct", "relay"] {
        let cpu0 = cpu_ms(pid);
        let t0 = Instant::now();
        let (got, err, sent, _) = pipe_via(
            plain_side(&a, "home"),
            plain_side(&b, "family"),
            &bob_auth,
            &bytes,
            Some(via),
        );
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_ms(pid) - cpu0;
        assert_eq!(sent, Some(0), "{err}");
        assert!(got == bytes, "{via}: {} bytes arrived", got.len());
        let rate = mib as f64 / secs;
        rates.push((via, rate));
        println!(
            "| {via} | {mib} | {secs:.2} | {rate:.1} | {:.2} |",
            cpu as f64 / mib as f64
        );
    }
    let tcp = rates[0].1;
    let relay = rates[2].1;
    println!(
        "\nrelay / tcp-direct throughput: {:.0} %",
        100.0 * relay / tcp
    );
}

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn point_memory_per_idle_relay_client() {
    let n: usize = std::env::var("RDV_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = temp();
    let (point, token) = point_with_relay(
        tmp.path(),
        Some("relay_connections_per_ip = 20000\nrelay_clients = 20000\n"),
    );
    let token: rdv_relay::RelayToken = token.parse().expect("token");
    let pid = point.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = rdv_context::EpochKeys::derive(
        rdv_context::ContextId::from_bytes([1; 32]),
        0,
        &rdv_context::EpochSecret::from_bytes([2; 32]),
    );
    let grant = std::sync::Arc::new(rdv_relay::GrantKey::from_seed(
        &keys.relay_grant_seed(&token.authority),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let links = rt.block_on(async {
        let mut links = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let g = grant.clone();
            let mut handle = [0u8; 32];
            handle[..8].copy_from_slice(&(i as u64).to_be_bytes());
            set.spawn(async move {
                rdv_agent::relay::RelayLink::connect(token, &g, handle, Duration::from_secs(30))
                    .await
            });
            if set.len() >= 64
                && let Some(r) = set.join_next().await
            {
                links.push(r.expect("task").expect("connect"));
            }
        }
        while let Some(r) = set.join_next().await {
            links.push(r.expect("task").expect("connect"));
        }
        links
    });
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    println!("\n| idle relay clients | point RSS before (KiB) | after (KiB) | KiB per client |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {before} | {after} | {:.1} |",
        links.len(),
        (after.saturating_sub(before)) as f64 / links.len() as f64
    );
    drop(links);
}

/// Opens one pipe channel from the agent of `data` to `peer` through its
/// control socket (as `rdv pipe connect` does) with `via` (all transports
/// raced when `None`), sends nothing, and returns the transport and the
/// channel's open time in microseconds the agent reported, or the agent's
/// refusal.
fn open_once(
    data: &std::path::Path,
    peer: &str,
    via: Option<&str>,
) -> Result<(String, u64), String> {
    use std::io::{BufRead, Read, Write};
    let request = rdv_agent::control::Request::PipeConnect {
        context: "home".into(),
        peer: peer.into(),
        via: via.map(str::to_owned),
    };
    let mut sock =
        std::os::unix::net::UnixStream::connect(data.join("agent.sock")).expect("control socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut line = serde_json::to_string(&request).expect("request");
    line.push('\n');
    sock.write_all(line.as_bytes()).expect("request");
    let mut reader = std::io::BufReader::new(sock.try_clone().expect("clone"));
    let mut answer = String::new();
    reader.read_line(&mut answer).expect("reply");
    let reply: rdv_agent::control::Reply = serde_json::from_str(&answer).expect("reply json");
    if !reply.ok {
        return Err(reply.error);
    }
    // An empty frame ends the pipe; the listener's acknowledgement follows.
    sock.write_all(&0u32.to_be_bytes()).expect("end");
    let mut ack = [0u8; 1];
    reader.read_exact(&mut ack).expect("ack");
    Ok((reply.via, reply.open_us.expect("open_us")))
}

/// Runs `rdv pipe listen` in the agent of `data` and waits for its
/// `listening` line.
fn listener(data: &std::path::Path) -> std::process::Child {
    let mut listen = cmd(plain, data, &["pipe", "listen", "--context", "family"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pipe listen");
    let err = lines(listen.stderr.take().expect("stderr"));
    assert!(wait_line(&err, "listening", Duration::from_secs(30)).is_some());
    listen
}

/// What racing the transports costs when the first one succeeds (issue 10:
/// "racing adds under 5 ms"): the same two agents open channels
/// alternately raced and with QUIC direct forced, and the agent reports
/// each channel's open time (transport connection and Noise handshake).
#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn racing_adds_little_when_the_first_transport_succeeds() {
    let rounds: usize = std::env::var("RDV_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(41);
    let tmp = temp();
    let point = rdv_point(tmp.path(), &["--store", "memory"]);
    let (a, b): (PathBuf, PathBuf) = (tmp.path().join("alice"), tmp.path().join("bob"));
    create_and_join(&plain, &a, &b);
    let common = ["agent", "--point", point.tcp(), "--listen", "127.0.0.1:0"];
    let (_alice, _) = agent(cmd(plain, &a, &common));
    let (_bob, bob_auth) = agent(cmd(plain, &b, &common));
    // Until the two agents know each other (descriptors exchanged), a
    // channel is refused: warm up, bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut listen = listener(&b);
        let done = open_once(&a, &bob_auth, None);
        if done.is_err() {
            let _ = listen.kill();
        }
        let _ = listen.wait();
        match done {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("no channel within 60 s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let mut times: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds * 2 {
        let raced = round % 2 == 0;
        let mut listen = listener(&b);
        let (via, us) =
            open_once(&a, &bob_auth, (!raced).then_some("quic-direct")).expect("channel");
        assert_eq!(via, "quic-direct", "QUIC direct wins the race on loopback");
        times[usize::from(!raced)].push(us);
        let _ = listen.wait();
        // The responder takes at most 10 messages 1 a second from one
        // address (burst 20, `AcceptLimits`): stay under it.
        std::thread::sleep(Duration::from_millis(150));
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    let p90 = |v: &Vec<u64>| v[v.len() * 9 / 10] as f64 / 1000.0;
    let (raced, forced) = (median(&mut times[0].clone()), median(&mut times[1].clone()));
    let (mut r, mut f) = (times[0].clone(), times[1].clone());
    r.sort_unstable();
    f.sort_unstable();
    println!("\n| channel open | channels | median ms | p90 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| raced (all transports) | {} | {raced:.2} | {:.2} |",
        r.len(),
        p90(&r)
    );
    println!(
        "| --via quic-direct | {} | {forced:.2} | {:.2} |",
        f.len(),
        p90(&f)
    );
    println!("\nracing adds {:.2} ms (median)", raced - forced);
}
