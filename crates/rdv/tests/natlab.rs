//! The member agent across NATs (issues 10 and 12), in the NAT lab: Linux
//! network namespaces, veth pairs and nftables (`masquerade` as a cone NAT,
//! `masquerade fully-random` as a symmetric one), each `rdv` a real process
//! inside its namespace. A point with a STUN server sits on the public
//! segment (203.0.113.0/24). Every test skips with one line when no lab can
//! be made, unless RDV_NATLAB_REQUIRED=1 (CI).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdv_natlab::{Host, Lab, NatKind, Natted, lab_or_skip};
use support::members::*;
use support::*;

/// The public side of a lab: a point (rendezvous and STUN) and its address.
struct World {
    lab: Lab,
    tmp: tempfile::TempDir,
    point_host: Host,
    _point: Proc,
    point_addr: String,
    stun: String,
    /// The point's relay token (`relay on` line).
    relay: String,
    /// What the relay forwarded (its test tap).
    tap: PathBuf,
}

fn world() -> Option<World> {
    let lab = lab_or_skip()?;
    let point_host = lab.public_host().expect("public host");
    let tmp = tempfile::tempdir().expect("temp dir");
    let listen = format!("/ip4/{}/tcp/4001", point_host.ip());
    let stun = format!("{}:3478", point_host.ip());
    let relay_listen = format!("{}:4002", point_host.ip());
    let tap = tmp.path().join("relay.tap");
    let mut c = point_host.command(RDV);
    c.arg("--data").arg(tmp.path().join("point")).args([
        "point",
        "--listen",
        &listen,
        "--store",
        "memory",
        "--stun-listen",
        &stun,
        "--relay-listen",
        &relay_listen,
    ]);
    c.env("RDV_RELAY_TAP", &tap);
    let point = Proc::spawn(c);
    let line = point.line("relay on ", Duration::from_secs(20));
    let relay = line["relay on ".len()..].trim().to_owned();
    let line = point.line("listening on ", Duration::from_secs(20));
    let point_addr = line["listening on ".len()..].trim().to_owned();
    Some(World {
        lab,
        tmp,
        point_host,
        _point: point,
        point_addr,
        stun,
        relay,
        tap,
    })
}

/// A member: where it runs and its data directory.
struct Site {
    host: Host,
    data: PathBuf,
}

impl Site {
    fn run(&self) -> Command {
        self.host.command(RDV)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.run();
        c.arg("--data").arg(&self.data).args(args);
        c
    }
    /// Starts its agent on the world's point, with `stun` as STUN server.
    fn agent(&self, w: &World, stun: &str) -> (Proc, String) {
        agent(self.cmd(&["agent", "--point", &w.point_addr, "--stun", stun]))
    }
}

fn public_site(w: &World, name: &str) -> Site {
    Site {
        host: w.lab.public_host().expect("public host"),
        data: w.tmp.path().join(name),
    }
}

fn natted_site(w: &World, name: &str, kind: NatKind) -> (Site, Natted) {
    let n = w.lab.natted_host(kind).expect("natted host");
    (
        Site {
            host: n.host.clone(),
            data: w.tmp.path().join(name),
        },
        n,
    )
}

/// The first site creates context "ctx", the others join with a bearer
/// invitation (everyone names it "ctx").
fn one_context(sites: &[&Site]) {
    let first = sites[0];
    expect_code(&run_cmd(first.cmd(&["context", "create", "ctx"])), 0);
    let invite = run_cmd(first.cmd(&["context", "invite", "ctx"]));
    expect_code(&invite, 0);
    let text = stdout(&invite).trim().to_owned();
    for s in &sites[1..] {
        expect_code(
            &run_cmd(s.cmd(&["context", "join", &text, "--name", "ctx"])),
            0,
        );
    }
}

fn run_cmd(c: Command) -> std::process::Output {
    output(c)
}

/// `support::members::pipe_via` between two sites' agents (context "ctx").
fn pipe_sites(
    from: &Site,
    to: &Site,
    to_auth: &str,
    bytes: &[u8],
    via: Option<&str>,
) -> (Vec<u8>, String, Option<i32>, Option<i32>) {
    let run_from = || from.run();
    let run_to = || to.run();
    support::members::pipe_via(
        Side {
            base: &run_from,
            data: &from.data,
            context: "ctx",
        },
        Side {
            base: &run_to,
            data: &to.data,
            context: "ctx",
        },
        to_auth,
        bytes,
        via,
    )
}

/// Pipes bytes from `from` to `to` (whose authority is `to_auth`); asserts
/// they arrived intact and returns the transport the connector reported.
fn pipe_ok(from: &Site, to: &Site, to_auth: &str, n: usize) -> String {
    let bytes = random_bytes(n);
    let (got, err, sent, listened) = pipe_sites(from, to, to_auth, &bytes, None);
    assert_eq!(sent, Some(0), "pipe connect failed: {err}");
    assert_eq!(listened, Some(0), "pipe listen failed");
    assert!(got == bytes, "{} of {n} bytes arrived", got.len());
    let line = err.lines().next().unwrap_or_default().to_owned();
    assert!(
        line.starts_with(&format!("connected to {to_auth} via ")),
        "{err}"
    );
    line.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// Retries `pipe_ok`-like connects until one goes through `want` (the
/// first channel may ride another transport while a NAT mapping opens).
fn pipe_via(from: &Site, to: &Site, to_auth: &str, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let via = pipe_ok(from, to, to_auth, 64 * 1024);
        if via == want || Instant::now() > deadline {
            return via;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits (bounded) until `site`'s agent holds a current descriptor of
/// `peer` (learnt by introduction or sync).
fn knows(site: &Site, peer: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let st = run_cmd(site.cmd(&["agent", "status", "--json"]));
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(stdout(&st).trim()) {
            let hit = doc["contexts"][0]["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["authority"] == peer && m["descriptor_current"] == true);
            if hit {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

#[test]
fn public_and_cone_members_connect_by_quic_direct_one_way_and_reflexive_the_other() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (n, _nat) = natted_site(&w, "n", NatKind::Cone);
    one_context(&[&p, &n]);
    let (_pa, p_auth) = p.agent(&w, &w.stun);
    let (_na, n_auth) = n.agent(&w, &w.stun);
    assert!(knows(&n, &p_auth, Duration::from_secs(30)));
    assert!(knows(&p, &n_auth, Duration::from_secs(30)));
    // Natted to public: the public member's interface address.
    assert_eq!(pipe_ok(&n, &p, &p_auth, 1 << 20), "quic-direct");
    // Public to natted: its private address is unreachable; the mapping
    // STUN reported (kept open by their channel) lets QUIC in.
    assert_eq!(
        pipe_via(&p, &n, &n_auth, "quic-reflexive", Duration::from_secs(20)),
        "quic-reflexive"
    );
}

#[test]
fn two_members_behind_cone_nats_punch_through_with_quic_reflexive() {
    let Some(w) = world() else { return };
    // A public member lets the two natted ones learn each other's
    // descriptors (sync): introductions go to registered TCP addresses,
    // which a NAT does not forward. It also designates the relay, which
    // the others adopt from its descriptor.
    let p = public_site(&w, "p");
    let (a, _na) = natted_site(&w, "a", NatKind::Cone);
    let (b, _nb) = natted_site(&w, "b", NatKind::Cone);
    one_context(&[&p, &a, &b]);
    expect_code(
        &run_cmd(p.cmd(&["context", "relay", "add", "ctx", &w.relay])),
        0,
    );
    let (_pa, _p_auth) = p.agent(&w, &w.stun);
    let (_aa, _a_auth) = a.agent(&w, &w.stun);
    let (_ba, b_auth) = b.agent(&w, &w.stun);
    assert!(
        knows(&a, &b_auth, Duration::from_secs(60)),
        "a learnt b's descriptor through p"
    );
    assert!(reachable_by_relay(&a, &b_auth, Duration::from_secs(60)));
    // An earlier channel between them goes through the relay...
    let bytes = random_bytes(64 * 1024);
    let (got, err, sent, _) = pipe_sites(&a, &b, &b_auth, &bytes, Some("relay"));
    assert_eq!(sent, Some(0), "{err}");
    assert!(got == bytes && err.contains("via relay"), "{err}");
    // ...and the direct path through the reflexive addresses still wins.
    assert_eq!(
        pipe_via(&a, &b, &b_auth, "quic-reflexive", Duration::from_secs(40)),
        "quic-reflexive"
    );
}

#[test]
fn members_behind_symmetric_nats_without_a_relay_give_up_within_a_bound() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (a, _na) = natted_site(&w, "a", NatKind::Symmetric);
    let (b, _nb) = natted_site(&w, "b", NatKind::Symmetric);
    one_context(&[&p, &a, &b]);
    let (_pa, _p_auth) = p.agent(&w, &w.stun);
    let (_aa, _a_auth) = a.agent(&w, &w.stun);
    let (_ba, b_auth) = b.agent(&w, &w.stun);
    assert!(knows(&a, &b_auth, Duration::from_secs(60)));
    // Each destination gets another port: the reflexive address STUN saw
    // is not the one a punch to the peer would use. With no relay
    // designated the connect fails, with a clear error and in bounded time.
    let started = Instant::now();
    let r = run_cmd(a.cmd(&["pipe", "connect", "--context", "ctx", "--peer", &b_auth]));
    expect_code(&r, 3);
    assert!(stderr(&r).contains("no channel"), "{}", stderr(&r));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Waits (bounded) until `site`'s agent holds a descriptor of `peer`
/// that can be reached through the relay.
fn reachable_by_relay(site: &Site, peer: &str, within: Duration) -> bool {
    wait_reachable_by_relay(&|| site.run(), &site.data, peer, within)
}

#[test]
fn members_behind_symmetric_nats_connect_through_the_relay_which_sees_only_ciphertext() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (a, _na) = natted_site(&w, "a", NatKind::Symmetric);
    let (b, _nb) = natted_site(&w, "b", NatKind::Symmetric);
    one_context(&[&p, &a, &b]);
    // Only b designates the relay: a learns it from b's descriptor.
    expect_code(
        &run_cmd(b.cmd(&["context", "relay", "add", "ctx", &w.relay])),
        0,
    );
    let (_pa, _p_auth) = p.agent(&w, &w.stun);
    let (_aa, _a_auth) = a.agent(&w, &w.stun);
    let (_ba, b_auth) = b.agent(&w, &w.stun);
    assert!(
        reachable_by_relay(&a, &b_auth, Duration::from_secs(60)),
        "a learnt b's relay hint"
    );
    assert!(
        reachable_by_relay(&b, &_a_auth, Duration::from_secs(60)),
        "a adopted the relay and published its own relay hint"
    );
    const MARKER: &[u8] = b"RDV-NATLAB-PLAINTEXT-93c2";
    let mut bytes = random_bytes(512 * 1024);
    for chunk in bytes.chunks_mut(1024) {
        chunk[..MARKER.len()].copy_from_slice(MARKER);
    }
    let (got, err, sent, listened) = pipe_sites(&a, &b, &b_auth, &bytes, None);
    assert_eq!(sent, Some(0), "pipe connect failed: {err}");
    assert_eq!(listened, Some(0));
    assert!(got == bytes, "{} bytes arrived", got.len());
    assert_eq!(
        err.trim(),
        format!("connected to {b_auth} via relay"),
        "symmetric NATs on both sides: only the relay works"
    );
    let seen = std::fs::read(&w.tap).unwrap_or_default();
    assert!(
        seen.len() >= bytes.len(),
        "the bytes went through the relay"
    );
    assert!(
        !seen.windows(MARKER.len()).any(|x| x == MARKER),
        "the relay saw plaintext"
    );
}

/// The transport of `site`'s sync channel to `peer`, as `agent status`
/// shows it (`None` while there is none).
fn sync_transport(site: &Site, peer: &str) -> Option<String> {
    let st = run_cmd(site.cmd(&["agent", "status", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(stdout(&st).trim()).ok()?;
    doc["contexts"][0]["members"]
        .as_array()?
        .iter()
        .find(|m| m["authority"] == peer)?["transport"]
        .as_str()
        .map(str::to_owned)
}

/// Polls `sync_transport` until `want` holds (bounded).
fn wait_transport(
    site: &Site,
    peer: &str,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = sync_transport(site, peer);
        if last.as_deref().is_some_and(&want) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

#[test]
fn a_sync_channel_through_the_relay_moves_to_a_direct_path_once_one_opens() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (a, na) = natted_site(&w, "a", NatKind::Cone);
    let (b, _nb) = natted_site(&w, "b", NatKind::Cone);
    one_context(&[&p, &a, &b]);
    expect_code(
        &run_cmd(p.cmd(&["context", "relay", "add", "ctx", &w.relay])),
        0,
    );
    // No UDP out of a's NAT: no STUN, no QUIC; a's TCP addresses are
    // private. Only the relay joins a and b.
    na.block_udp().expect("block udp");
    let (_pa, _p_auth) = p.agent(&w, &w.stun);
    let (_aa, a_auth) = a.agent(&w, &w.stun);
    let (_ba, b_auth) = b.agent(&w, &w.stun);
    assert!(reachable_by_relay(&a, &b_auth, Duration::from_secs(60)));
    let first = wait_transport(&a, &b_auth, Duration::from_secs(60), |t| t == "relay");
    assert_eq!(
        first.as_deref(),
        Some("relay"),
        "the sync channel starts on the relay"
    );
    // UDP opens: a learns its reflexive address at its next STUN query
    // (every 60 s), republishes, and the members punch through; the sync
    // channel is replaced by a direct one (each side's status names the
    // transport of the channel it keeps: `quic-reflexive` if it dialled,
    // `quic` if it accepted).
    na.unblock_udp().expect("unblock udp");
    let moved = wait_transport(&a, &b_auth, Duration::from_secs(150), |t| {
        t.starts_with("quic")
    });
    assert!(
        moved.as_deref().is_some_and(|t| t.starts_with("quic")),
        "a's sync channel to b is still {moved:?}"
    );
    let other = wait_transport(&b, &a_auth, Duration::from_secs(30), |t| {
        t.starts_with("quic")
    });
    assert!(
        other.as_deref().is_some_and(|t| t.starts_with("quic")),
        "b: {other:?}"
    );
}

#[test]
fn with_udp_blocked_a_natted_member_reaches_a_public_one_by_tcp_direct() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (n, nat) = natted_site(&w, "n", NatKind::Cone);
    nat.block_udp().expect("block udp");
    one_context(&[&p, &n]);
    let (_pa, p_auth) = p.agent(&w, &w.stun);
    let (_na, _n_auth) = n.agent(&w, &w.stun);
    assert!(knows(&n, &p_auth, Duration::from_secs(30)));
    assert_eq!(pipe_ok(&n, &p, &p_auth, 256 * 1024), "tcp-direct");
}

#[test]
fn without_an_answering_stun_server_members_are_ready_and_connect() {
    let Some(w) = world() else { return };
    let p = public_site(&w, "p");
    let (n, _nat) = natted_site(&w, "n", NatKind::Cone);
    one_context(&[&p, &n]);
    // Port 9 on the point's host: nobody answers there.
    let silent = format!("{}:9", w.point_host.ip());
    let started = Instant::now();
    let (_pa, p_auth) = p.agent(&w, &silent);
    let (_na, _n_auth) = n.agent(&w, &silent);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ready without STUN"
    );
    assert!(knows(&n, &p_auth, Duration::from_secs(30)));
    assert_eq!(pipe_ok(&n, &p, &p_auth, 64 * 1024), "quic-direct");
}
