//! `rdv point --stun-listen` against a third-party STUN client: coturn's
//! `turnutils_stunclient` (Debian's `coturn` package, installed by
//! `.ci/run`), and the `stun on` line and metrics the flag adds.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const RDV: &str = env!("CARGO_BIN_EXE_rdv");

struct Point {
    child: Child,
    stun: SocketAddr,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Point {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a point serving STUN on a port the system picks (by the flag, or
/// by the config file when `by_file`), and reads the `stun on` line.
fn point(by_file: bool) -> Point {
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let mut cmd = Command::new(RDV);
    cmd.args([
        "point",
        "--store",
        "memory",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ])
    .args(["--metrics", &metrics.to_string()]);
    if by_file {
        let file = dir.path().join("point.toml");
        std::fs::write(&file, "stun_listen = \"127.0.0.1:0\"\n").unwrap();
        cmd.arg("--config").arg(file);
    } else {
        cmd.args(["--stun-listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut stun, mut listening) = (Vec::new(), 0);
    while stun.is_empty() || listening == 0 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("rdv point printed its lines");
        if let Some(a) = line.strip_prefix("stun on ") {
            stun.push(a.parse::<SocketAddr>().expect("stun on IP:PORT"));
        } else if line.starts_with("listening on ") {
            listening += 1;
        }
    }
    assert_eq!(stun.len(), 1, "exactly one `stun on` line");
    assert_ne!(stun[0].port(), 0, "the bound port, not the requested 0");
    Point {
        child,
        stun: stun[0],
        metrics,
        _dir: dir,
    }
}

fn scrape(addr: SocketAddr) -> String {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn counter(metrics: &str, result: &str) -> u64 {
    let key = format!("rdv_stun_datagrams_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in metrics"))
}

#[test]
fn coturn_stunclient_gets_its_address_from_rdv_point() {
    let Some(stunclient) = binary("turnutils_stunclient", "coturn") else {
        return;
    };
    let point = point(false);
    let out = Command::new(stunclient)
        .args(["-p", &point.stun.port().to_string()])
        // From another loopback address than the server's, so that the
        // answer must carry the client's address, not one the server knows.
        .args(["-L", "127.0.0.2"])
        .arg(point.stun.ip().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // turnutils_stunclient prints "UDP reflexive addr: IP:PORT".
    let reflexive: SocketAddr = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in the client's output:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    // On loopback the reflexive address is the client's own (its port is
    // the system's choice, so only the address and a real port are known).
    assert_eq!(reflexive.ip().to_string(), "127.0.0.2");
    assert_ne!(reflexive.port(), 0);
    assert!(out.status.success(), "{text}");
    let metrics = scrape(point.metrics);
    assert!(counter(&metrics, "answered") >= 1, "{metrics}");
    assert_eq!(counter(&metrics, "malformed"), 0, "{metrics}");
}

#[test]
fn the_config_key_serves_stun_too_and_rdv_client_gets_an_answer() {
    let point = point(true);
    let socket = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One Binding request by rdv's client core, over a plain socket.
    let now = std::time::Instant::now();
    let config = rdv_stun::ClientConfig {
        servers: vec![point.stun],
        ..Default::default()
    };
    let mut client = rdv_stun::StunClient::new(config, [9; 32], now);
    let request = client.poll_transmit(now).unwrap();
    socket.send_to(request.contents(), point.stun).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    client.handle_input(now, from, &buf[..n]);
    assert_eq!(client.reflexive(), Some(socket.local_addr().unwrap()));
    // Junk gets no answer and is counted.
    socket
        .send_to(b"\x00\x01junk junk junk junk", point.stun)
        .unwrap();
    let mut malformed = 0;
    for _ in 0..100 {
        malformed = counter(&scrape(point.metrics), "malformed");
        if malformed == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(malformed, 1);
}

/// The path of `name` on PATH, or a one-line skip reason. In CI (`CI` set)
/// a missing binary is a failure: `.ci/run` installs it.
fn binary(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} missing in CI: .ci/run installs {package}"
        );
        eprintln!("skipped: {name} not installed (apt-get install {package})");
    }
    found
}
