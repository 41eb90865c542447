//! The STUN drivers on real loopback sockets: rdv's client against rdv's
//! server, and against coturn (Debian's `coturn` package, installed by
//! `.ci/run`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rdv_net::metrics::StunMetrics;
use rdv_net::stun::{DriveError, reflexive_address, serve};
use tokio::net::UdpSocket;

/// Generous: the client's own retransmissions (RFC 8489 §6.2.1) cover a
/// server that is still starting; the deadline only bounds a broken test.
const TIMEOUT: Duration = Duration::from_secs(30);

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

async fn rdv_server() -> (
    SocketAddr,
    Arc<StunMetrics>,
    tokio::sync::oneshot::Sender<()>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let metrics = Arc::new(StunMetrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(socket, Default::default(), metrics.clone(), async {
        let _ = stopped.await;
    }));
    (addr, metrics, stop)
}

#[tokio::test]
async fn rdv_client_learns_its_address_from_rdv_server_and_junk_is_counted() {
    let (server, metrics, _stop) = rdv_server().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Junk first: dropped, counted, never answered.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    junk.send_to(b"\x00\x01\x00\x00not stun at all!!!!!", server)
        .await
        .unwrap();
    let mapped = reflexive_address(&client, vec![server], seed(1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(mapped, client.local_addr().unwrap());
    // The junk was sent first on loopback; its count shows up by the time a
    // second request is answered.
    let again = reflexive_address(&client, vec![server], seed(2), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(again, mapped);
    let c = metrics.snapshot();
    assert_eq!(c.malformed, 1, "{c:?}");
    assert!(c.answered >= 2, "{c:?}");
    let mut buf = [0u8; 64];
    let nothing = tokio::time::timeout(Duration::from_millis(200), junk.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "junk was answered");
}

#[tokio::test]
async fn a_silent_server_makes_the_client_fail_within_its_deadline() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = reflexive_address(
        &client,
        vec![silent.local_addr().unwrap()],
        seed(3),
        Duration::from_millis(700),
    )
    .await;
    assert!(matches!(r, Err(DriveError::Deadline)), "{r:?}");
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

/// A child process, killed (and its scratch directory removed) when dropped.
struct Killed(Child, std::path::PathBuf);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_udp_port() -> u16 {
    StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// coturn as a plain STUN server: `--stun-only` (no TURN, no allocation,
/// no authentication), no config file (`-n`), no CLI, TLS or DTLS
/// listeners, the loopback addresses, logs to stderr of a discarded pipe.
fn start_coturn(turnserver: &std::path::Path, port: u16) -> Killed {
    let dir = std::env::temp_dir().join(format!("rdv-coturn-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(turnserver)
        .args(["-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls"])
        .args(["-L", "127.0.0.1", "-L", "::1"])
        .args(["--listening-port", &port.to_string()])
        .args([
            "--log-file",
            "stdout",
            "--simple-log",
            "--no-software-attribute",
        ])
        .arg("--userdb")
        .arg(dir.join("turndb"))
        .args(["--pidfile", dir.join("turnserver.pid").to_str().unwrap()])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child, dir)
}

#[tokio::test]
async fn rdv_client_against_coturn() {
    let Some(turnserver) = binary("turnserver", "coturn") else {
        return;
    };
    let port = free_udp_port();
    let _coturn = start_coturn(&turnserver, port);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Started before coturn listens: the client's retransmissions reach it.
    let mapped = reflexive_address(&client, vec![server], seed(4), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(mapped, client.local_addr().unwrap());
    // IPv6 (XOR-MAPPED-ADDRESS's 128-bit form), where the host has ::1.
    let Ok(client6) = UdpSocket::bind("[::1]:0").await else {
        eprintln!("skipped the IPv6 half: no ::1 on this host");
        return;
    };
    let server6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    let mapped6 = reflexive_address(&client6, vec![server6], seed(5), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(mapped6, client6.local_addr().unwrap());
}

/// Binding requests answered per second by [`serve`] over UDP loopback:
/// one client socket keeps a window of requests in flight. A measurement,
/// not a check: `cargo test --release -p rdv-net --test stun -- --ignored
/// --nocapture loopback_throughput`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement; run by hand (see docs/PERFORMANCE.md)"]
async fn loopback_throughput() {
    use rdv_stun::LimiterConfig;
    use rdv_stun::stun_types::message::{
        BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt,
        MessageWriteVec, TransactionId,
    };
    // The server on a thread of its own, like a core of a daemon.
    let std_socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let server = std_socket.local_addr().unwrap();
    let metrics = Arc::new(StunMetrics::default());
    let m = metrics.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let socket = UdpSocket::from_std(std_socket).unwrap();
            let config = rdv_stun::ServerConfig {
                limiter: LimiterConfig {
                    rate: 1e12,
                    burst: 1e12,
                    ..LimiterConfig::default()
                },
            };
            serve(socket, config, m, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        TransactionId::from(42),
        MessageWriteVec::new(),
    );
    w.add_fingerprint().unwrap();
    let request = w.finish();
    const WINDOW: u64 = 32;
    const TOTAL: u64 = 200_000;
    let mut buf = [0u8; 256];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(60);
    while received < TOTAL && std::time::Instant::now() < deadline {
        while sent < TOTAL && sent - received < WINDOW {
            client.send_to(&request, server).await.unwrap();
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf)).await {
            Ok(r) => {
                r.unwrap();
                received += 1;
            }
            // A lost datagram: let the window refill.
            Err(_) => received = received.max(sent.saturating_sub(WINDOW / 2)),
        }
    }
    let took = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    thread.join().unwrap();
    let answered = metrics.snapshot().answered;
    println!("| path | requests | answered | seconds | answers/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| UDP loopback, 1 client socket, window {WINDOW} | {sent} | {answered} | {took:.2} | {:.0} |",
        answered as f64 / took
    );
}
