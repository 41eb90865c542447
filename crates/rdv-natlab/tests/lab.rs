//! The NAT lab behaves like the NATs it claims to be. Every test skips
//! (one line on stderr) where no lab can be made, unless
//! RDV_NATLAB_REQUIRED=1.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdv_natlab::{Host, Lab, NatKind, lab_or_skip};

const READ: Duration = Duration::from_millis(100);
const PUNCH_TRIES: usize = 50;

/// A UDP socket made inside `host` (it stays there, whatever thread uses it).
fn udp(host: &Host) -> UdpSocket {
    let sock = host
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("enter namespace")
        .expect("bind");
    sock.set_read_timeout(Some(READ)).expect("timeout");
    sock
}

/// A STUN-like echo on a public host: answers every datagram with the
/// source address it saw, as "ip:port" text.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(host: &Host) -> Echo {
        let sock = udp(host);
        let port = sock.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // At most 60 s, checking the stop flag every read timeout.
            for _ in 0..600 {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(from.to_string().as_bytes(), from);
                }
            }
        });
        Echo {
            addr: SocketAddr::from((host.ip(), port)),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The address `echo` sees `sock` as, or None after 10 tries.
fn mapped(sock: &UdpSocket, echo: SocketAddr) -> Option<SocketAddr> {
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        sock.send_to(b"?", echo).ok()?;
        for _ in 0..3 {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == echo => {
                    return std::str::from_utf8(&buf[..n]).ok()?.parse().ok();
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    None
}

/// Sends to `peer` until a datagram from `peer` arrives (then 3 more sends
/// so the peer hears us too), at most PUNCH_TRIES rounds of one send and
/// one read of READ. True when the peer was heard.
fn punch(sock: &UdpSocket, peer: SocketAddr) -> bool {
    let mut buf = [0u8; 64];
    let mut heard = false;
    let mut after = 0;
    for _ in 0..PUNCH_TRIES {
        let _ = sock.send_to(b"punch", peer);
        if heard {
            after += 1;
            if after == 3 {
                break;
            }
            continue;
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            heard = from == peer && &buf[..n] == b"punch";
        }
    }
    heard
}

/// Both sides punch at the same time; returns (a heard b, b heard a).
fn punch_both(a: UdpSocket, a_peer: SocketAddr, b: UdpSocket, b_peer: SocketAddr) -> (bool, bool) {
    let ta = std::thread::spawn(move || (punch(&a, a_peer), a));
    let tb = std::thread::spawn(move || (punch(&b, b_peer), b));
    let (ra, _) = ta.join().expect("punch a");
    let (rb, _) = tb.join().expect("punch b");
    (ra, rb)
}

/// Two echoes on two public hosts, and the mappings one socket of a host
/// behind `kind` gets towards each.
fn two_mappings(lab: &Lab, kind: NatKind) -> (Ipv4Addr, SocketAddr, SocketAddr) {
    let e1 = Echo::start(&lab.public_host().expect("public host"));
    let e2 = Echo::start(&lab.public_host().expect("public host"));
    let natted = lab.natted_host(kind).expect("natted host");
    let sock = udp(&natted.host);
    let m1 = mapped(&sock, e1.addr).expect("echo 1 answers");
    let m2 = mapped(&sock, e2.addr).expect("echo 2 answers");
    (natted.public_ip, m1, m2)
}

#[test]
fn cone_maps_one_socket_to_one_public_address() {
    let Some(lab) = lab_or_skip() else { return };
    let (public_ip, m1, m2) = two_mappings(&lab, NatKind::Cone);
    assert_eq!(m1.ip(), public_ip);
    assert_eq!(m1, m2, "cone NAT: same mapping towards both destinations");
}

#[test]
fn symmetric_maps_each_destination_to_a_new_port() {
    let Some(lab) = lab_or_skip() else { return };
    let (public_ip, m1, m2) = two_mappings(&lab, NatKind::Symmetric);
    assert_eq!(m1.ip(), public_ip);
    assert_eq!(m2.ip(), public_ip);
    // fully-random picks each port at random: equal by chance ~1 in 64k.
    assert_ne!(
        m1.port(),
        m2.port(),
        "symmetric NAT: a new port per destination"
    );
}

/// Two hosts behind `kind` routers learn their mappings and punch.
fn punch_through(lab: &Lab, kind: NatKind) -> (bool, bool, Vec<u8>) {
    let echo = Echo::start(&lab.public_host().expect("public host"));
    let a = lab.natted_host(kind).expect("natted a");
    let b = lab.natted_host(kind).expect("natted b");
    let sa = udp(&a.host);
    let sb = udp(&b.host);
    let ma = mapped(&sa, echo.addr).expect("a's mapping");
    let mb = mapped(&sb, echo.addr).expect("b's mapping");
    assert_eq!(ma.ip(), a.public_ip);
    assert_eq!(mb.ip(), b.public_ip);
    let stranger_got = {
        // A stranger on the public side knows a's mapping but a never sent
        // to it: nothing gets through.
        let stranger = udp(&lab.public_host().expect("stranger"));
        for _ in 0..5 {
            stranger.send_to(b"stranger", ma).expect("stranger sends");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            if let Ok((n, _)) = sa.recv_from(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    };
    let (a_heard, b_heard) = punch_both(sa, mb, sb, ma);
    (a_heard, b_heard, stranger_got)
}

#[test]
fn cone_to_cone_hole_punching_works_and_strangers_stay_out() {
    let Some(lab) = lab_or_skip() else { return };
    let (a_heard, b_heard, stranger_got) = punch_through(&lab, NatKind::Cone);
    assert!(
        stranger_got.is_empty(),
        "a stranger got through the cone NAT: {stranger_got:?}"
    );
    assert!(a_heard, "a heard b through two cone NATs");
    assert!(b_heard, "b heard a through two cone NATs");
}

#[test]
fn symmetric_to_symmetric_hole_punching_fails() {
    let Some(lab) = lab_or_skip() else { return };
    let (a_heard, b_heard, stranger_got) = punch_through(&lab, NatKind::Symmetric);
    assert!(stranger_got.is_empty(), "a stranger got through");
    assert!(!a_heard, "a heard b through two symmetric NATs");
    assert!(!b_heard, "b heard a through two symmetric NATs");
}

#[test]
fn block_udp_lets_only_tcp_out() {
    let Some(lab) = lab_or_skip() else { return };
    let public = lab.public_host().expect("public host");
    let echo = Echo::start(&public);
    let listener = public
        .run(|| TcpListener::bind((public.ip(), 0)))
        .expect("enter")
        .expect("listen");
    let tcp_addr = listener.local_addr().expect("listener addr");
    let natted = lab.natted_host(NatKind::Cone).expect("natted host");

    // UDP works before the block...
    let before = udp(&natted.host);
    assert!(mapped(&before, echo.addr).is_some(), "UDP before the block");

    natted.block_udp().expect("block udp");
    // ...and not after, from the same socket or a new one.
    assert_eq!(mapped(&before, echo.addr), None, "UDP after the block");
    let after = udp(&natted.host);
    assert_eq!(mapped(&after, echo.addr), None, "UDP after the block");

    let stream = natted
        .host
        .run(|| TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(2)))
        .expect("enter")
        .expect("TCP connects through the NAT");
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), natted.public_ip, "TCP is masqueraded");
    drop(stream);
}

fn listed() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn dropping_the_lab_deletes_its_namespaces() {
    let Some(lab) = lab_or_skip() else { return };
    lab.public_host().expect("public host");
    lab.natted_host(NatKind::Symmetric).expect("natted host");
    let names = lab.namespaces();
    assert_eq!(names.len(), 4, "pub, public host, router, natted host");
    let before = listed();
    assert!(names.iter().all(|n| before.contains(n)), "{before:?}");
    drop(lab);
    let after = listed();
    assert!(
        names.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}

#[test]
fn a_panic_still_deletes_the_namespaces() {
    let Some(probe) = lab_or_skip() else { return };
    drop(probe);
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new().expect("lab");
        lab.natted_host(NatKind::Cone).expect("natted host");
        *names.lock().expect("names") = lab.namespaces();
        panic!("on purpose, with a lab alive");
    }));
    assert!(result.is_err());
    let names = names.into_inner().expect("names");
    assert_eq!(names.len(), 3, "pub, router, natted host");
    let after = listed();
    assert!(
        names.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}

#[test]
fn commands_and_threads_run_inside_the_namespace() {
    let Some(lab) = lab_or_skip() else { return };
    let natted = lab.natted_host(NatKind::Cone).expect("natted host");
    // A child process sees the host's interfaces, not the machine's.
    let out = natted
        .host
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .expect("ip netns exec");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10."), "{text}");
    assert!(text.contains(&natted.host.ip().to_string()), "{text}");
    // A spawned thread sees the router's sysctls.
    let forward = natted
        .router
        .spawn(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .expect("spawn")
        .join()
        .expect("join")
        .expect("read sysctl");
    assert_eq!(forward.trim(), "1");
}
