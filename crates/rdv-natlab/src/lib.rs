//! A NAT lab of Linux network namespaces, for tests.
//!
//! [`Lab::new`] makes a public segment: a namespace holding a bridge `br0`,
//! on which hosts get 203.0.113.10, .11, ... /24 (TEST-NET-3). On it:
//!
//! - [`Lab::public_host`]: a namespace with a leg `pub0` on the bridge.
//! - [`Lab::natted_host`]: a router namespace (leg `pub0` on the bridge, leg
//!   `lan0` to a private host namespace on 10.k.0.0/24) doing NAT with
//!   nftables, either [`NatKind::Cone`] (Linux masquerade keeps the source
//!   port when it is free: endpoint-independent mapping) or
//!   [`NatKind::Symmetric`] (`masquerade fully-random`: a new port per
//!   destination). Both filter inbound traffic by conntrack (only replies to
//!   what went out come in).
//!
//! Code runs inside a namespace with [`Host::run`] / [`Host::spawn`] (a fresh
//! OS thread enters the namespace with `setns`) and child processes with
//! [`Host::command`] (`ip netns exec`). Dropping the [`Lab`] deletes every
//! namespace it made, also while a test panics; [`Lab::new`] also deletes
//! namespaces left behind by lab processes that no longer run.
//!
//! Tests get a lab from [`lab_or_skip`], which skips (one line on stderr)
//! when the machine cannot run one, unless [`REQUIRED_ENV`] is `1`.
//!
//! Traffic only ever goes to addresses inside the lab's own namespaces.

mod cmd;
mod host;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

pub use cmd::LabError;
pub use host::Host;

/// When this environment variable is `1`, [`lab_or_skip`] panics instead of
/// skipping (CI sets it, so CI never skips silently).
pub const REQUIRED_ENV: &str = "RDV_NATLAB_REQUIRED";

/// Prefix of every namespace a lab makes: `rdvlab-<pid>-<lab>-<part>`.
const PREFIX: &str = "rdvlab-";

/// Name of the public leg of public hosts and routers.
const PUBLIC_IF: &str = "pub0";

/// First host number on the public /24 (203.0.113.10).
const FIRST_PUBLIC: u32 = 10;

/// Labs made by this process so far (names stay unique across parallel tests).
static LABS: AtomicU32 = AtomicU32::new(0);

/// The NAT behaviour of a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping: the source port is kept when free, so
    /// one socket shows the same public address to every destination.
    Cone,
    /// A new random public port for every new destination.
    Symmetric,
}

/// A host behind a NAT router.
#[derive(Debug, Clone)]
pub struct Natted {
    /// The router: public leg `pub0`, private leg `lan0` (10.k.0.1).
    pub router: Host,
    /// The private host (10.k.0.2, default route via the router).
    pub host: Host,
    /// The router's public address, which the host's traffic shows.
    pub public_ip: Ipv4Addr,
}

impl Natted {
    /// Drops all UDP the router would forward from the private side, so
    /// only TCP (and ICMP) leaves.
    pub fn block_udp(&self) -> Result<(), LabError> {
        // A table of its own (its chain runs before the main filter), so
        // that unblocking is deleting it.
        nft(
            &self.router.name,
            "table inet rdvblock {
    chain forward {
        type filter hook forward priority filter - 1; policy accept;
        iifname \"lan0\" meta l4proto udp drop
    }
}
",
        )
    }

    /// Lets UDP through again after [`Natted::block_udp`].
    pub fn unblock_udp(&self) -> Result<(), LabError> {
        nft(&self.router.name, "delete table inet rdvblock\n")
    }
}

#[derive(Debug, Default)]
struct State {
    /// Every namespace made, in order (deleted in reverse order).
    namespaces: Vec<String>,
    /// Legs on the public bridge so far.
    public_legs: u32,
    /// NAT routers so far.
    routers: u32,
    /// Public hosts so far.
    public_hosts: u32,
}

/// A set of network namespaces: a public segment and the hosts and routers
/// on it. Dropping it deletes them all.
#[derive(Debug)]
pub struct Lab {
    /// `rdvlab-<pid>-<n>`: the prefix of this lab's namespace names.
    base: String,
    /// The namespace holding the bridge.
    public: String,
    state: Mutex<State>,
}

impl Lab {
    /// Makes the public segment: a namespace `rdvlab-<pid>-<n>-pub` with a
    /// bridge `br0`. Deletes leftovers of lab processes that have exited
    /// first.
    pub fn new() -> Result<Lab, LabError> {
        sweep_dead();
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            public: format!("{base}-pub"),
            base,
            state: Mutex::new(State::default()),
        };
        // On any error below, dropping `lab` deletes what was made.
        let public = lab.new_namespace("pub")?;
        ip(&["-n", &public, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &public, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The namespaces this lab has made so far.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock().namespaces.clone()
    }

    /// A host on the public segment with the next public address.
    pub fn public_host(&self) -> Result<Host, LabError> {
        let k = {
            let mut state = self.lock();
            state.public_hosts += 1;
            state.public_hosts
        };
        let name = self.new_namespace(&format!("p{k}"))?;
        let ip = self.attach_public(&name)?;
        Ok(Host { name, ip })
    }

    /// A private host behind a new NAT router of the given kind.
    ///
    /// The router (`rdvlab-…-r<k>`) has `pub0` on the public segment and
    /// `lan0` = 10.k.0.1/24; the host (`rdvlab-…-n<k>`) has `eth0` =
    /// 10.k.0.2/24 and a default route via the router. nftables in the
    /// router: masquerade out of `pub0`; forward only replies and what comes
    /// from `lan0`; drop new inbound TCP/UDP to the router itself on `pub0`.
    pub fn natted_host(&self, kind: NatKind) -> Result<Natted, LabError> {
        let k = {
            let mut state = self.lock();
            if state.routers >= 254 {
                return Err(LabError::Full);
            }
            state.routers += 1;
            state.routers
        };
        let router = self.new_namespace(&format!("r{k}"))?;
        let host = self.new_namespace(&format!("n{k}"))?;
        let public_ip = self.attach_public(&router)?;
        let router_ip = format!("10.{k}.0.1");
        let host_ip = Ipv4Addr::new(10, k as u8, 0, 2);
        ip(&[
            "-n", &router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns",
            &host,
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{router_ip}/24"),
            "dev",
            "lan0",
        ])?;
        ip(&["-n", &router, "link", "set", "lan0", "up"])?;
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        ip(&["-n", &host, "route", "add", "default", "via", &router_ip])?;
        let router = Host {
            name: router,
            ip: public_ip,
        };
        // /proc/sys/net shows the namespace of the thread that opens it.
        router
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|e| LabError::Enter {
                ns: router.name.clone(),
                reason: format!("cannot enable ip_forward: {e}"),
            })?;
        nft(&router.name, &ruleset(kind))?;
        Ok(Natted {
            router,
            host: Host {
                name: host,
                ip: host_ip,
            },
            public_ip,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters and a list
        // behind, which stay usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes namespace `<base>-<part>` with loopback up; it is recorded
    /// before it exists, so Drop deletes it whatever happens next.
    fn new_namespace(&self, part: &str) -> Result<String, LabError> {
        let name = format!("{}-{part}", self.base);
        self.lock().namespaces.push(name.clone());
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Gives namespace `ns` a leg `pub0` on the bridge with the next public
    /// address. The bridge end is `v<k>` inside the public namespace (short
    /// names: interface names are at most 15 bytes).
    fn attach_public(&self, ns: &str) -> Result<Ipv4Addr, LabError> {
        let k = {
            let mut state = self.lock();
            if FIRST_PUBLIC + state.public_legs > 254 {
                return Err(LabError::Full);
            }
            state.public_legs += 1;
            state.public_legs
        };
        let addr = Ipv4Addr::new(203, 0, 113, (FIRST_PUBLIC + k - 1) as u8);
        let port = format!("v{k}");
        let public = self.public.as_str();
        ip(&[
            "-n", public, "link", "add", &port, "type", "veth", "peer", "name", PUBLIC_IF, "netns",
            ns,
        ])?;
        ip(&["-n", public, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            PUBLIC_IF,
        ])?;
        ip(&["-n", ns, "link", "set", PUBLIC_IF, "up"])?;
        Ok(addr)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut self.lock().namespaces);
        for name in namespaces.iter().rev() {
            // Errors are ignored: a namespace whose creation failed does not
            // exist, and Drop must not panic during an unwind.
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The nftables rules of a NAT router.
///
/// The input drop matters for hole punching: without it, a peer's punch
/// packet that arrives before our own outbound one is accepted as a new
/// connection to the router itself, and its conntrack entry holds the
/// public port, so our outbound packet is then mapped to another port and
/// the peer's packets never match.
fn ruleset(kind: NatKind) -> String {
    let masquerade = match kind {
        NatKind::Cone => "masquerade",
        NatKind::Symmetric => "masquerade fully-random",
    };
    format!(
        "table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"{PUBLIC_IF}\" {masquerade}
    }}
}}
table inet filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname \"lan0\" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname \"{PUBLIC_IF}\" meta l4proto {{ tcp, udp }} ct state new drop
    }}
}}
"
    )
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    cmd::run("ip", args)
}

/// Loads nftables commands into namespace `ns`.
fn nft(ns: &str, rules: &str) -> Result<(), LabError> {
    cmd::run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(rules))
}

/// Deletes namespaces `rdvlab-<pid>-...` whose process no longer exists
/// (left by a killed test run). Errors are ignored: another process may be
/// sweeping the same ones.
fn sweep_dead() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Why this machine cannot run a lab, if it cannot.
fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".to_owned());
    }
    if let Err(e) = cmd::output("ip", &["-V"]) {
        return Some(format!("iproute2 `ip` unusable: {e}"));
    }
    if let Err(e) = cmd::output("nft", &["--version"]) {
        return Some(format!("nftables `nft` unusable: {e}"));
    }
    None
}

/// A lab, or `None` after printing `skipped: <reason>` to stderr when this
/// machine cannot make one (not root, `ip` or `nft` missing, namespaces not
/// allowed). Panics with the reason instead when [`REQUIRED_ENV`] is `1`.
pub fn lab_or_skip() -> Option<Lab> {
    let required = std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1");
    let reason = match unsupported() {
        Some(reason) => reason,
        None => match Lab::new() {
            Ok(lab) => return Some(lab),
            Err(e) => format!("cannot make a lab: {e}"),
        },
    };
    if required {
        panic!("{REQUIRED_ENV}=1 but the NAT lab cannot run: {reason}");
    }
    eprintln!("skipped: {reason}");
    None
}
