//! The member agent (issue 12): one process per data directory that keeps
//! a member present in all its contexts.
//!
//! Tasks:
//! * **publish** each context's descriptor (TCP direct hints for every
//!   address it listens on) through the service and the books (guard
//!   chain, charge, receipt, journal), and republish before it expires;
//! * **accept** on the TCP port: introductions ([`crate::intro`]) and
//!   channels, bounded half-open per source address and in all, the mac1
//!   pre-check before any lock ([`crate::accept::answer_init`]);
//! * **connect** to every member whose descriptor it holds and keep one
//!   channel each for journal sync (the member with the lower authority
//!   dials first, the other after a grace, so two dials rarely cross);
//! * **discover** members on public points under the blinded namespace
//!   ([`crate::discovery`]) and introduce itself to those whose descriptor
//!   it lacks;
//! * **pipes** and **status** for the commands, over the control socket
//!   ([`crate::control`]).
//!
//! The first byte of every channel names what it carries: [`PURPOSE_SYNC`]
//! (then the sync agent's messages) or [`PURPOSE_PIPE`] (then
//! [`PIPE_DATA`] records, one [`PIPE_END`], and the listener's
//! [`PIPE_ACK`] once all of it is written out).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use libp2p::Multiaddr;
use rdv_channel::NoiseHandshaker;
use rdv_channel::quic::{self, QuicEndpoint};
use rdv_channel::tcp::{self, TcpChannel, TcpConfig};
use rdv_context::{
    AuthorityId, BudgetLedger, ContextId, EffectCommand, Identity, Journal, JournalEntry,
    ReferenceInterpreter, RendezvousConfig, RendezvousFact, RendezvousService, SqliteJournal,
    TransportHint,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::accept::{self, AcceptLimits, AcceptStats, HalfOpen};
use crate::control::{self, Reply, Request};
use crate::home::{Home, HomeError, os_rng};
use crate::relay::RelayLink;
use crate::sync::{AgentConfig, Books, Node, SyncAgent};
use crate::{discovery, intro};
use rdv_relay::RelayToken;

mod commands;
mod inbound;
mod outbound;
mod relayed;
mod stun;

use commands::serve_control;
use inbound::{accept_quic, accept_tcp};
use outbound::{discover, open_channel};

/// The transport name of a relayed channel.
pub const RELAY: &str = "relay";

/// A channel that carries journal sync.
pub const PURPOSE_SYNC: u8 = 1;
/// A channel that carries one pipe.
pub const PURPOSE_PIPE: u8 = 2;
/// A pipe record with bytes.
pub const PIPE_DATA: u8 = 0x10;
/// The end of a pipe's bytes.
pub const PIPE_END: u8 = 0x11;
/// The listener has written every byte out.
pub const PIPE_ACK: u8 = 0x12;

/// The transport name of a TCP direct channel, as `rdv pipe` prints it.
pub const TCP_DIRECT: &str = "tcp-direct";
/// The transport name of a QUIC channel to a published interface address.
pub const QUIC_DIRECT: &str = "quic-direct";
/// The transport name of a QUIC channel to a STUN-reported address.
pub const QUIC_REFLEXIVE: &str = "quic-reflexive";

const JOURNAL_MAX_ENTRIES: usize = 100_000;
const MAX_DRIFT_MS: u64 = 60_000;
/// How long a dial to one address may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a QUIC dial may take (to one address; punching retries within).
const QUIC_DIAL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a new channel may take to say what it is for.
const PURPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The member with the higher authority waits this long before dialling
/// a member it just learnt of (the lower one dials first).
const HIGHER_WAITS: Duration = Duration::from_secs(2);
/// How long `pipe connect` waits for a punched channel to a member behind
/// a NAT when no transport connects at once.
const PUNCH_WAIT: Duration = Duration::from_secs(20);
/// Hole punching rounds start on multiples of this much wall-clock time.
const PUNCH_ROUND_MS: u64 = 5_000;
/// A round may start this long after its boundary (the maintenance tick
/// is 1 s), so both sides' attempts overlap.
const PUNCH_WINDOW_MS: u64 = 1_100;
/// Longest wait between two dials of an unreachable member.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long `pipe connect` waits for the peer's descriptor to arrive.
const PEER_WAIT: Duration = Duration::from_secs(20);
/// How long `pipe connect` waits for a descriptor of an authority that is
/// not in the roster (a member invited by another is learnt from its
/// descriptor, so it may still come).
const STRANGER_WAIT: Duration = Duration::from_secs(5);
/// How long the connecting side waits for the listener's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// How the agent runs.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// TCP addresses to listen on; empty: every IPv4 interface, a port the
    /// system picks.
    pub listen: Vec<SocketAddr>,
    /// Public rendezvous points (with `/p2p/<id>`) for blinded discovery.
    pub points: Vec<Multiaddr>,
    /// STUN servers (kept for the QUIC transport; unused over TCP).
    pub stun: Vec<SocketAddr>,
    /// The TCP channel driver's settings.
    pub tcp: TcpConfig,
    /// Journal sync settings.
    pub sync: AgentConfig,
    /// Bounds of half-open handshakes.
    pub accept: AcceptLimits,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The data directory.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// Another agent runs on this data directory.
    #[error(
        "an agent already runs for {0}: stop it first, or give this one another --data directory"
    )]
    AlreadyRunning(PathBuf),
    /// A socket could not be opened.
    #[error("{what}: {error}")]
    Io {
        /// What was being opened.
        what: String,
        /// The failure.
        error: std::io::Error,
    },
    /// A context could not be loaded or published.
    #[error("context {name}: {reason}")]
    Context {
        /// Its local name.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// One context of the member, as the agent serves it.
struct Member {
    name: String,
    id: ContextId,
    sync: SyncAgent<SqliteJournal>,
    /// Our latest descriptor's journal entry (what an introduction sends).
    own: std::sync::Mutex<Option<JournalEntry>>,
    /// The waiting `pipe listen`, if any.
    pipe: std::sync::Mutex<Option<mpsc::Sender<TcpChannel>>>,
    /// Dial schedule per peer.
    dials: std::sync::Mutex<HashMap<AuthorityId, Dial>>,
    /// The transport of each peer's sync channel.
    via: std::sync::Mutex<HashMap<AuthorityId, &'static str>>,
    /// What was last saved of the context: a digest of its bytes (any
    /// change is saved) and of its epoch keys (a change there is a new
    /// secret, even at the same epoch number).
    saved: std::sync::Mutex<(u64, u64)>,
    /// A digest of the cached peer descriptors at the last tick.
    seen_descriptors: std::sync::atomic::AtomicU64,
    /// The designated relay and the connection to it.
    relay: std::sync::Mutex<relayed::RelayState>,
}

#[derive(Clone, Copy)]
struct Dial {
    next: tokio::time::Instant,
    backoff: Duration,
    running: bool,
}

struct Shared {
    home: Home,
    identity: Identity,
    me: AuthorityId,
    options: AgentOptions,
    /// The TCP addresses published in descriptors.
    addrs: Vec<SocketAddr>,
    /// The QUIC endpoint on the member's UDP socket (shared with STUN).
    quic: Option<QuicEndpoint>,
    /// The QUIC addresses published in descriptors.
    quic_addrs: Vec<SocketAddr>,
    /// The reflexive address STUN reported, and the server that did.
    reflexive: std::sync::Mutex<Option<(SocketAddr, SocketAddr)>>,
    members: std::sync::Mutex<HashMap<ContextId, Arc<Member>>>,
    stats: Arc<AcceptStats>,
    mac1_key: [u8; 32],
    /// The message-1 cryptography rate, per source and in all, over TCP,
    /// QUIC and the relay together.
    throttle: Arc<accept::Throttle>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms(s: &Shared) -> u64 {
    (s.options.sync.clock)()
}

/// A running agent; dropping it stops every task.
pub struct Agent {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("authority", &self.shared.me)
            .field("addrs", &self.shared.addrs)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the agent of `home`: control socket, listeners, every stored
    /// context loaded and its descriptor published. Returns once
    /// published everywhere (the `ready` moment).
    pub async fn start(home: Home, options: AgentOptions) -> Result<Self, DaemonError> {
        let identity = home.identity()?;
        let me = identity.authority();
        let control = bind_control(&home).await?;
        let listeners = bind_tcp(&options.listen).await?;
        let addrs = published_addrs(listeners.iter().filter_map(|l| l.local_addr().ok()));
        let (quic, stun_side) = bind_quic(&options.listen)?;
        let quic_addrs = published_addrs(quic.local_addr().ok());
        let mac1_key = NoiseHandshaker::new(&identity, &mut os_rng()?).mac1_key();
        let throttle = accept::Throttle::new(options.accept);
        let shared = Arc::new(Shared {
            home,
            identity,
            me,
            options,
            addrs,
            quic: Some(quic.clone()),
            quic_addrs,
            reflexive: Default::default(),
            members: Default::default(),
            stats: Default::default(),
            mac1_key,
            throttle,
        });
        load_new_contexts(&shared).await?;
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_tcp(shared.clone(), l)));
        }
        tasks.push(tokio::spawn(accept_quic(shared.clone(), quic)));
        tasks.push(tokio::spawn(stun::run(shared.clone(), stun_side)));
        tasks.push(tokio::spawn(serve_control(shared.clone(), control)));
        tasks.push(tokio::spawn(maintain(shared.clone())));
        Ok(Self { shared, tasks })
    }

    /// This member's authority.
    pub fn authority(&self) -> AuthorityId {
        self.shared.me
    }

    /// The TCP addresses the agent publishes.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// Stops every task and removes the control socket.
    pub fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(self.shared.home.socket_path());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

async fn bind_control(home: &Home) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let path = home.socket_path();
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(home.dir().to_owned()));
        }
        // A socket left by an agent that did not stop cleanly.
        let _ = std::fs::remove_file(&path);
    }
    let l = UnixListener::bind(&path).map_err(|error| DaemonError::Io {
        what: format!("control socket {}", path.display()),
        error,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        DaemonError::Io {
            what: format!("control socket {}", path.display()),
            error,
        }
    })?;
    Ok(l)
}

async fn bind_tcp(listen: &[SocketAddr]) -> Result<Vec<TcpListener>, DaemonError> {
    let wanted: Vec<SocketAddr> = if listen.is_empty() {
        vec![SocketAddr::from(([0, 0, 0, 0], 0))]
    } else {
        listen.to_vec()
    };
    let mut out = Vec::new();
    for a in wanted {
        let l = TcpListener::bind(a)
            .await
            .map_err(|error| DaemonError::Io {
                what: format!("listening on TCP {a}"),
                error,
            })?;
        out.push(l);
    }
    Ok(out)
}

/// The member's one UDP socket (QUIC and STUN): on the first `--listen`
/// address's IP (its port too, when it names one), else on every IPv4
/// interface, a port the system picks.
fn bind_quic(listen: &[SocketAddr]) -> Result<(QuicEndpoint, quic::StunSide), DaemonError> {
    let at = listen
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let socket = std::net::UdpSocket::bind(at).map_err(|error| DaemonError::Io {
        what: format!("listening on UDP {at}"),
        error,
    })?;
    QuicEndpoint::bind(socket).map_err(|e| DaemonError::Io {
        what: format!("QUIC on UDP {at}"),
        error: std::io::Error::other(e.to_string()),
    })
}

/// The addresses to publish: a specific bound address as is; a wildcard
/// one as every IPv4 address of the host's interfaces that are up
/// (loopback only if there is no other), on the bound port. At most 7 (a
/// descriptor holds 16 hints: QUIC and TCP for each, and the reflexive).
fn published_addrs(bound: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for bound in bound {
        if !bound.ip().is_unspecified() {
            out.push(bound);
            continue;
        }
        let mut ips: Vec<std::net::IpAddr> = Vec::new();
        if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
            for i in ifs {
                let up = i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
                if let Some(a) = i.address.as_ref().and_then(|a| a.as_sockaddr_in())
                    && up
                {
                    ips.push(std::net::IpAddr::V4(a.ip()));
                }
            }
        }
        // Loopback only when there is nothing else: members on other
        // hosts would dial their own loopback. Members on one host reach
        // each other on the host's interface addresses too.
        ips.sort();
        ips.dedup();
        if ips.iter().any(|ip| !ip.is_loopback()) {
            ips.retain(|ip| !ip.is_loopback());
        }
        if ips.is_empty() {
            ips.push(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, bound.port())));
    }
    // Room for QUIC and TCP per address, the reflexive and the relay hint.
    out.truncate((rdv_context::MAX_TRANSPORT_HINTS - 2) / 2);
    out
}

/// Loads the contexts of the store that the agent does not serve yet and
/// publishes a descriptor in each.
async fn load_new_contexts(shared: &Arc<Shared>) -> Result<usize, DaemonError> {
    let listed = shared.home.contexts()?.list().map_err(HomeError::from)?;
    let mut added = 0;
    for (name, id) in listed {
        if lock(&shared.members).contains_key(&id) {
            continue;
        }
        let member =
            Arc::new(
                open_member(shared, &name, id).map_err(|reason| DaemonError::Context {
                    name: name.clone(),
                    reason,
                })?,
            );
        publish(shared, &member)
            .await
            .map_err(|reason| DaemonError::Context {
                name: name.clone(),
                reason,
            })?;
        lock(&shared.members).insert(id, member);
        added += 1;
    }
    Ok(added)
}

fn open_member(shared: &Shared, name: &str, id: ContextId) -> Result<Member, String> {
    let context = shared
        .home
        .contexts()
        .map_err(|e| e.to_string())?
        .load(name, &shared.identity)
        .map_err(|e| e.to_string())?
        .ok_or("it is no longer stored")?;
    let path = shared.home.journal_path(&id).map_err(|e| e.to_string())?;
    let store = SqliteJournal::open(&path, JOURNAL_MAX_ENTRIES)
        .map_err(|e| format!("journal {}: {e}", path.display()))?;
    let mut rng = os_rng().map_err(|e| e.to_string())?;
    let mut service = RendezvousService::new(
        shared.identity.clone(),
        RendezvousConfig::default(),
        &mut rng,
    );
    // With the epoch before's too: a member that missed the last advance
    // can still reach this one (docs/KEY-SCHEDULE.md).
    service
        .set_epoch_keys(context.keys().clone(), context.previous_keys())
        .map_err(|e| e.to_string())?;
    let journal = Journal::new(id, store, MAX_DRIFT_MS).map_err(|e| e.to_string())?;
    // What the journal already holds (a restart): revocations first, then
    // descriptors, so the cache matches what sync would have built.
    let now = now_ms(shared);
    let mut facts = Vec::new();
    let mut after = None;
    loop {
        let page = journal.entries(after, 1024).map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = Some(last.order_key());
        facts.extend(page.into_iter().map(|e| e.fact().clone()));
    }
    facts.sort_by_key(|f| !matches!(f, RendezvousFact::DescriptorRevoked(_)));
    for f in &facts {
        let _ = service.apply_fact(id, f, now);
    }
    let mut fx = ReferenceInterpreter::new(
        shared.identity.clone(),
        BudgetLedger::with_refill(512, 8, 4096),
    );
    fx.add_journal(journal);
    let mut handshaker = NoiseHandshaker::new(&shared.identity, &mut rng);
    handshaker.learn_members(&context);
    let books = Books::new(fx, &id, shared.options.sync.max_fresh).map_err(|e| e.to_string())?;
    let mut node = Node {
        service,
        context,
        handshaker,
        books,
    };
    let stored = saved_digests(&node.context);
    node.learn_members();
    // Rekeys written to the journal but not yet applied (the agent stopped
    // in between) are followed now; the next tick saves the context.
    node.follow_rekeys();
    Ok(Member {
        name: name.to_owned(),
        id,
        sync: SyncAgent::new(node, shared.options.sync.clone()),
        own: Default::default(),
        pipe: Default::default(),
        dials: Default::default(),
        via: Default::default(),
        saved: std::sync::Mutex::new(stored),
        seen_descriptors: Default::default(),
        relay: Default::default(),
    })
}

/// This member's transport hints in `m`'s context, in the seed's order of
/// preference (§3): QUIC direct, QUIC through the reflexive address, TCP
/// direct, and the relay while this member is connected to it.
fn hints(shared: &Shared, m: &Member) -> Vec<TransportHint> {
    let mut out: Vec<TransportHint> = shared
        .quic_addrs
        .iter()
        .map(|a| TransportHint::QuicDirect {
            addr: a.to_string(),
        })
        .collect();
    if let Some((addr, server)) = *lock(&shared.reflexive)
        && !shared.quic_addrs.contains(&addr)
    {
        out.push(TransportHint::QuicReflexive {
            addr: addr.to_string(),
            stun_server: server.to_string(),
        });
    }
    out.extend(shared.addrs.iter().map(|a| TransportHint::TcpDirect {
        addr: a.to_string(),
    }));
    if let Some(link) = relayed::link(m) {
        let t = link.token();
        out.push(TransportHint::WebSocketRelay {
            relay_authority: t.authority,
            addr: t.addr.to_string(),
        });
    }
    out
}

/// Publishes this member's descriptor in `m`'s context.
async fn publish(shared: &Shared, m: &Member) -> Result<(), String> {
    let now = now_ms(shared);
    let hints = hints(shared, m);
    // A descriptor whose addresses changed (a new reflexive address) is
    // revoked, not only superseded: members that cached it stop dialling
    // the old addresses at once.
    let revoke = {
        let mut n = m.sync.node().lock().await;
        let changed = n
            .service
            .own_descriptor(m.id)
            .is_some_and(|d| d.transport_hints != hints && d.is_valid_at(now));
        if changed {
            let snap = accept::snapshot(&n);
            Some(n.service.prepare_revoke_descriptor(&snap, m.id))
        } else {
            None
        }
    };
    if let Some(outcome) = revoke
        && outcome.decision.is_allowed()
    {
        m.sync
            .run_outcome(&outcome)
            .await
            .map_err(|e| e.to_string())?;
    }
    let outcome = {
        let mut n = m.sync.node().lock().await;
        let snap = accept::snapshot(&n);
        n.service
            .prepare_publish_descriptor(&snap, m.id, hints.clone(), now)
    };
    if let rdv_context::Decision::Denied(r) = &outcome.decision {
        return Err(format!("publishing was refused: {r}"));
    }
    m.sync
        .run_outcome(&outcome)
        .await
        .map_err(|e| e.to_string())?;
    let id = outcome.effects.iter().find_map(|e| match e {
        EffectCommand::JournalAppend { fact, .. } => Some(fact.id()),
        _ => None,
    });
    if let Some(id) = id {
        let n = m.sync.node().lock().await;
        let entry = n
            .books
            .fx
            .journal(&m.id)
            .and_then(|j| j.get(&id).ok().flatten());
        *lock(&m.own) = entry;
    }
    tracing::info!(context = %m.name, hints = ?hints, "descriptor published");
    Ok(())
}

fn member_of(shared: &Shared, id: &ContextId) -> Option<Arc<Member>> {
    lock(&shared.members).get(id).cloned()
}

fn member_named(shared: &Shared, name: &str) -> Option<Arc<Member>> {
    lock(&shared.members)
        .values()
        .find(|m| m.name == name)
        .cloned()
}

/// Digests (change detectors, not commitments) of a context's bytes and
/// of its epoch's secret, to notice what changed since the last save.
fn saved_digests(c: &rdv_context::Context) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let digest = |bytes: &[u8]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    };
    (
        digest(&c.to_bytes()),
        digest(c.keys().rendezvous_namespace(0).as_bytes()),
    )
}

/// Saves the context if anything of it changed (members learnt from
/// descriptors or removed, the epoch advanced or a rekey replaced). Returns
/// whether its epoch secret changed since the last save.
async fn save_roster(shared: &Shared, m: &Member) -> bool {
    let n = m.sync.node().lock().await;
    let now = saved_digests(&n.context);
    let before = std::mem::replace(&mut *lock(&m.saved), now);
    if before == now {
        return false;
    }
    let (count, epoch) = (n.context.members().count(), n.context.epoch());
    // Under the member's lock: one small SQLite write.
    match shared.home.contexts().map(|mut s| s.save(&n.context)) {
        Ok(Ok(_)) => tracing::info!(context = %m.name, members = count, epoch, "context saved"),
        Ok(Err(e)) => tracing::warn!(context = %m.name, error = %e, "saving the context failed"),
        Err(e) => tracing::warn!(context = %m.name, error = %e, "saving the context failed"),
    }
    before.1 != now.1
}

/// After the context moved to a new epoch (a removal made here, or a rekey
/// followed from the journal), once it is saved: closes the sync channels
/// of members no longer in it, publishes this member's descriptor under
/// the new epoch's key at once, and reconciles with every connected member
/// (their new descriptors, and the rekey for those that lack it).
async fn after_epoch_change(shared: &Shared, m: &Member) {
    let members: Vec<AuthorityId> = {
        let n = m.sync.node().lock().await;
        n.context.members().map(|(a, _)| *a).collect()
    };
    let gone = m.sync.retain_peers(|a| members.contains(a));
    for a in &gone {
        lock(&m.via).remove(a);
        tracing::info!(context = %m.name, member = %a, "sync channel of a removed member closed");
    }
    if let Err(e) = publish(shared, m).await {
        tracing::warn!(context = %m.name, error = %e, "publishing under the new epoch failed");
    }
    for a in &members {
        m.sync.sync_now(a);
    }
}

/// Once a second: new contexts, republishing, rosters, dials; and the
/// discovery tasks.
async fn maintain(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut discovering: HashMap<ContextId, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        if n.is_multiple_of(5)
            && let Err(e) = load_new_contexts(&shared).await
        {
            tracing::warn!(error = %e, "loading a new context failed");
        }
        let members: Vec<Arc<Member>> = lock(&shared.members).values().cloned().collect();
        for m in members {
            let now = now_ms(&shared);
            relayed::ensure(&shared, &m).await;
            let wanted = hints(&shared, &m);
            let due = {
                let n = m.sync.node().lock().await;
                n.service
                    .needs_refresh(m.id, now, n.service.config().refresh_window_ms)
                    || n.service
                        .own_descriptor(m.id)
                        .is_some_and(|d| d.transport_hints != wanted)
            };
            if due && let Err(e) = publish(&shared, &m).await {
                tracing::warn!(context = %m.name, error = %e, "republishing failed");
            }
            if save_roster(&shared, &m).await {
                after_epoch_change(&shared, &m).await;
            }
            spread_news(&m, now).await;
            dial_peers(&shared, &m).await;
            if !shared.options.points.is_empty() && !discovering.contains_key(&m.id) {
                discovering.insert(m.id, tokio::spawn(discover(shared.clone(), m.clone())));
            }
        }
    }
}

/// When a descriptor this member did not have arrives (sync, push,
/// introduction), reconcile with every connected member now instead of at
/// the next period: facts learnt by sync are not pushed on, and a new
/// member's addresses are exactly what the others need soon (two members
/// behind NATs learn each other through a third).
async fn spread_news(m: &Member, now: u64) {
    use std::hash::{Hash, Hasher};
    let (digest, peers) = {
        let n = m.sync.node().lock().await;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut all: Vec<(AuthorityId, u64)> = n
            .service
            .cached_descriptors(m.id)
            .filter(|d| d.is_valid_at(now))
            .map(|d| (d.authority_id, d.valid_from))
            .collect();
        all.sort();
        all.hash(&mut h);
        let peers: Vec<AuthorityId> = n.context.members().map(|(a, _)| *a).collect();
        (h.finish(), peers)
    };
    let before = m
        .seen_descriptors
        .swap(digest, std::sync::atomic::Ordering::Relaxed);
    if before != digest {
        for p in peers {
            m.sync.sync_now(&p);
        }
    }
}

/// Dials every member with a descriptor and no sync channel, by schedule.
async fn dial_peers(shared: &Arc<Shared>, m: &Arc<Member>) {
    let now = now_ms(shared);
    let peers: Vec<(AuthorityId, bool)> = {
        let n = m.sync.node().lock().await;
        n.service
            .cached_descriptors(m.id)
            .filter(|d| d.is_valid_at(now) && d.authority_id != shared.me)
            .map(|d| {
                let natted = d
                    .transport_hints
                    .iter()
                    .any(|h| matches!(h, TransportHint::QuicReflexive { .. }));
                (d.authority_id, natted)
            })
            .collect()
    };
    let punching = lock(&shared.reflexive).is_some() && shared.quic.is_some();
    let t = tokio::time::Instant::now();
    for (peer, natted) in peers {
        // A sync channel through the relay is upgraded: direct paths are
        // tried on the same schedule (punch rounds included), and a direct
        // channel that comes up replaces the relayed one. Nothing is lost
        // in the switch: the new channel starts with a reconciliation.
        let connected = m.sync.is_connected(&peer);
        let relayed = connected && lock(&m.via).get(&peer).copied() == Some(RELAY);
        if connected && !relayed {
            continue;
        }
        // Both behind NATs: only packets sent at about the same time from
        // both sides get through (each opens its own NAT's mapping for the
        // other's). No signalling path exists yet, so both dial in rounds
        // on the wall clock's PUNCH_ROUND boundaries, which members whose
        // clocks agree within a second hit together.
        let punch = natted && punching;
        {
            let mut dials = lock(&m.dials);
            let d = dials.entry(peer).or_insert_with(|| Dial {
                next: if shared.me < peer || punch {
                    t
                } else {
                    t + HIGHER_WAITS
                },
                backoff: Duration::from_secs(1),
                running: false,
            });
            if d.running || t < d.next {
                continue;
            }
            if punch && now % PUNCH_ROUND_MS > PUNCH_WINDOW_MS {
                continue;
            }
            d.running = true;
        }
        let (shared, m) = (shared.clone(), m.clone());
        tokio::spawn(async move {
            let only = relayed.then_some(outbound::DIRECT_ONLY);
            let r = open_channel(&shared, &m, peer, PURPOSE_SYNC, only).await;
            let ok = match r {
                Ok((ch, via)) => {
                    if relayed {
                        tracing::info!(context = %m.name, %peer, via, "sync channel upgraded from the relay");
                    }
                    lock(&m.via).insert(peer, via);
                    m.sync.attach(ch).await;
                    true
                }
                Err(e) => {
                    tracing::debug!(context = %m.name, %peer, error = %e, "dial failed");
                    false
                }
            };
            let mut dials = lock(&m.dials);
            if let Some(d) = dials.get_mut(&peer) {
                d.running = false;
                if ok {
                    d.backoff = Duration::from_secs(1);
                    d.next = tokio::time::Instant::now() + d.backoff;
                } else if punch {
                    // Next round: try again at the next boundary.
                    d.next =
                        tokio::time::Instant::now() + Duration::from_millis(PUNCH_WINDOW_MS + 1);
                } else {
                    d.next = tokio::time::Instant::now() + d.backoff;
                    d.backoff = (d.backoff * 2).min(MAX_BACKOFF);
                }
            }
        });
    }
}
