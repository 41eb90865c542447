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
use rdv_channel::tcp::{self, Endpoint, TcpChannel, TcpConfig};
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
use crate::sync::{AgentConfig, Books, Node, SyncAgent};
use crate::{discovery, intro};

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

const JOURNAL_MAX_ENTRIES: usize = 100_000;
const MAX_DRIFT_MS: u64 = 60_000;
/// How long a dial to one address may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new channel may take to say what it is for.
const PURPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The member with the higher authority waits this long before dialling
/// a member it just learnt of (the lower one dials first).
const HIGHER_WAITS: Duration = Duration::from_secs(2);
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
    /// Members in the stored roster (to notice growth and save it).
    saved_members: std::sync::atomic::AtomicUsize,
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
    members: std::sync::Mutex<HashMap<ContextId, Arc<Member>>>,
    stats: Arc<AcceptStats>,
    mac1_key: [u8; 32],
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
        let addrs = published_addrs(&listeners);
        let mac1_key = NoiseHandshaker::new(&identity, &mut os_rng()?).mac1_key();
        let shared = Arc::new(Shared {
            home,
            identity,
            me,
            options,
            addrs,
            members: Default::default(),
            stats: Default::default(),
            mac1_key,
        });
        load_new_contexts(&shared).await?;
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_tcp(shared.clone(), l)));
        }
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

/// The addresses to publish: a specific bound address as is; a wildcard
/// one as every IPv4 address of the host's interfaces that are up
/// (loopback only if there is no other), on the bound port.
fn published_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for l in listeners {
        let Ok(bound) = l.local_addr() else { continue };
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
    out.truncate(rdv_context::MAX_TRANSPORT_HINTS);
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
    service
        .install_keys(context.keys().clone())
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
    facts.sort_by_key(|f| !matches!(f, RendezvousFact::DescriptorRevoked { .. }));
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
    node.learn_members();
    let count = node.context.members().count();
    Ok(Member {
        name: name.to_owned(),
        id,
        sync: SyncAgent::new(node, shared.options.sync.clone()),
        own: Default::default(),
        pipe: Default::default(),
        dials: Default::default(),
        via: Default::default(),
        saved_members: count.into(),
    })
}

/// Publishes this member's descriptor in `m`'s context.
async fn publish(shared: &Shared, m: &Member) -> Result<(), String> {
    let now = now_ms(shared);
    let hints: Vec<TransportHint> = shared
        .addrs
        .iter()
        .map(|a| TransportHint::TcpDirect {
            addr: a.to_string(),
        })
        .collect();
    let outcome = {
        let mut n = m.sync.node().lock().await;
        let snap = accept::snapshot(&n);
        n.service
            .prepare_publish_descriptor(&snap, m.id, hints, now)
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
    tracing::info!(context = %m.name, addrs = ?shared.addrs, "descriptor published");
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

async fn accept_tcp(shared: Arc<Shared>, listener: TcpListener) {
    let gate = HalfOpen::new(shared.options.accept);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = gate.enter(from.ip()) else {
            shared
                .stats
                .refused_per_ip
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%from, "half-open bound: connection closed");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = serve_connection(&shared, stream, slot).await;
            if let Err(e) = r {
                tracing::debug!(%from, error = %e, "connection refused");
            }
        });
    }
}

/// Waits (bounded by the handshake timeout) for the first two bytes.
async fn peek2(stream: &TcpStream, timeout: Duration) -> Option<[u8; 2]> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 2];
    for _ in 0..100 {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(2)) => return Some(buf),
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

async fn serve_connection(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    slot: accept::Slot,
) -> Result<(), String> {
    let timeout = shared.options.tcp.handshake_timeout;
    let first = peek2(&stream, timeout).await.ok_or("nothing sent")?;
    if intro::is_intro(first) {
        let r = answer_intro(shared, &mut stream).await;
        drop(slot);
        return r;
    }
    let init = tcp::read_init(&mut stream, &shared.options.tcp)
        .await
        .map_err(|e| e.to_string())?;
    // A context this member is not in: silence, as for any refusal.
    let m = member_of(shared, &init.context_id).ok_or("unknown context")?;
    let ch = accept::answer_init(
        stream,
        init,
        m.sync.node(),
        &shared.mac1_key,
        &shared.options.tcp,
        tcp::no_rekey(),
        &shared.stats,
    )
    .await
    .map_err(|e| e.to_string())?;
    drop(slot);
    dispatch(m, ch, TCP_DIRECT).await
}

/// Checks an introduction like a synced fact and answers with our own
/// descriptor only if it passed.
async fn answer_intro(shared: &Shared, stream: &mut TcpStream) -> Result<(), String> {
    let timeout = shared.options.tcp.handshake_timeout;
    let entry = intro::read(stream, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let RendezvousFact::Descriptor(sealed) = entry.fact() else {
        return Err("introduction without a descriptor".into());
    };
    let m = member_of(shared, &sealed.context_id()).ok_or("unknown context")?;
    let now = now_ms(shared);
    let accepted = {
        let mut n = m.sync.node().lock().await;
        n.receive(vec![entry], now).map_err(|e| e.to_string())?
    };
    if accepted.rejected > 0 || accepted.deferred > 0 {
        return Err("introduction refused".into());
    }
    let mine = lock(&m.own).clone().ok_or("nothing published yet")?;
    intro::write(stream, &mine)
        .await
        .map_err(|e| e.to_string())?;
    save_roster(shared, &m).await;
    Ok(())
}

/// Routes an established channel by its first message.
async fn dispatch(m: Arc<Member>, mut ch: TcpChannel, via: &'static str) -> Result<(), String> {
    let first = tokio::time::timeout(PURPOSE_TIMEOUT, ch.recv())
        .await
        .map_err(|_| "no purpose in time")?
        .map_err(|e| e.to_string())?;
    match first.as_slice() {
        [PURPOSE_SYNC] => {
            lock(&m.via).insert(ch.remote(), via);
            m.sync.attach(ch).await;
            Ok(())
        }
        [PURPOSE_PIPE] => {
            let waiting = lock(&m.pipe).take();
            match waiting {
                Some(tx) => tx.send(ch).await.map_err(|_| "the listener left".into()),
                None => {
                    let _ = ch.close().await;
                    Err("a pipe but nobody listens".into())
                }
            }
        }
        _ => {
            let _ = ch.close().await;
            Err("unknown channel purpose".into())
        }
    }
}

/// Opens a channel to `peer` for `purpose`: its descriptor's TCP
/// addresses in order, the handshake without holding the member's lock
/// while the peer answers.
async fn open_channel(
    shared: &Shared,
    m: &Member,
    peer: AuthorityId,
    purpose: u8,
) -> Result<(TcpChannel, &'static str), String> {
    let now = now_ms(shared);
    let addrs: Vec<SocketAddr> = {
        let n = m.sync.node().lock().await;
        let d = n
            .service
            .get_cached_descriptor(m.id, peer)
            .filter(|d| d.is_valid_at(now))
            .ok_or_else(|| format!("no valid descriptor of {peer} yet"))?;
        d.transport_hints
            .iter()
            .filter_map(|h| match h {
                TransportHint::TcpDirect { .. } => h.socket_addr(),
                _ => None,
            })
            .collect()
    };
    let mut last = format!("{peer} publishes no TCP address");
    for addr in addrs {
        let mut stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = format!("{addr}: {e}");
                continue;
            }
            Err(_) => {
                last = format!("{addr}: no answer within {DIAL_TIMEOUT:?}");
                continue;
            }
        };
        let cfg = &shared.options.tcp;
        let init = {
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            let snapshot = accept::snapshot(n);
            let mut ep = Endpoint {
                service: &mut n.service,
                handshaker: &mut n.handshaker,
                interpreter: &mut n.books,
                snapshot,
            };
            tcp::begin_initiator(&mut ep, peer, cfg).map_err(|e| e.to_string())?
        };
        let complete = match tcp::exchange(&mut stream, &init, cfg).await {
            Ok(c) => c,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let ch = {
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            let snapshot = accept::snapshot(n);
            let ep = Endpoint {
                service: &mut n.service,
                handshaker: &mut n.handshaker,
                interpreter: &mut n.books,
                snapshot,
            };
            tcp::complete_initiator(stream, ep, peer, &complete, cfg, tcp::no_rekey())
                .map_err(|e| e.to_string())?
        };
        ch.send(vec![purpose]).await.map_err(|e| e.to_string())?;
        return Ok((ch, TCP_DIRECT));
    }
    Err(last)
}

/// Saves the context if its roster grew (members learnt from descriptors).
async fn save_roster(shared: &Shared, m: &Member) {
    let n = m.sync.node().lock().await;
    let count = n.context.members().count();
    if count == m.saved_members.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    m.saved_members
        .store(count, std::sync::atomic::Ordering::Relaxed);
    // Under the member's lock: one small SQLite write.
    match shared.home.contexts().map(|mut s| s.save(&n.context)) {
        Ok(Ok(_)) => tracing::info!(context = %m.name, members = count, "roster saved"),
        Ok(Err(e)) => tracing::warn!(context = %m.name, error = %e, "saving the roster failed"),
        Err(e) => tracing::warn!(context = %m.name, error = %e, "saving the roster failed"),
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
            let due = {
                let n = m.sync.node().lock().await;
                n.service
                    .needs_refresh(m.id, now, n.service.config().refresh_window_ms)
            };
            if due && let Err(e) = publish(&shared, &m).await {
                tracing::warn!(context = %m.name, error = %e, "republishing failed");
            }
            save_roster(&shared, &m).await;
            dial_peers(&shared, &m).await;
            if !shared.options.points.is_empty() && !discovering.contains_key(&m.id) {
                discovering.insert(m.id, tokio::spawn(discover(shared.clone(), m.clone())));
            }
        }
    }
}

/// Dials every member with a descriptor and no sync channel, by schedule.
async fn dial_peers(shared: &Arc<Shared>, m: &Arc<Member>) {
    let now = now_ms(shared);
    let peers: Vec<AuthorityId> = {
        let n = m.sync.node().lock().await;
        n.service
            .cached_descriptors(m.id)
            .filter(|d| d.is_valid_at(now) && d.authority_id != shared.me)
            .map(|d| d.authority_id)
            .collect()
    };
    let t = tokio::time::Instant::now();
    for peer in peers {
        if m.sync.is_connected(&peer) {
            continue;
        }
        {
            let mut dials = lock(&m.dials);
            let d = dials.entry(peer).or_insert_with(|| Dial {
                next: if shared.me < peer {
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
            d.running = true;
        }
        let (shared, m) = (shared.clone(), m.clone());
        tokio::spawn(async move {
            let r = open_channel(&shared, &m, peer, PURPOSE_SYNC).await;
            let ok = match r {
                Ok((ch, via)) => {
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
                } else {
                    d.next = tokio::time::Instant::now() + d.backoff;
                    d.backoff = (d.backoff * 2).min(MAX_BACKOFF);
                }
            }
        });
    }
}

/// Announces on the points under the blinded namespace and introduces
/// itself to members found there whose descriptor it lacks.
async fn discover(shared: Arc<Shared>, m: Arc<Member>) {
    use libp2p::multiaddr::Protocol;
    let addresses: Vec<Multiaddr> = shared
        .addrs
        .iter()
        .map(|a| Multiaddr::from(a.ip()).with(Protocol::Tcp(a.port())))
        .collect();
    let ttl = rdv_wire::Ttl::from_secs(7200);
    let timeout = Duration::from_secs(10);
    let mut presences: Vec<discovery::Presence> = Vec::new();
    let mut round = 0u32;
    loop {
        round += 1;
        let now = now_ms(&shared);
        let (keys, members): (rdv_context::EpochKeys, Vec<AuthorityId>) = {
            let n = m.sync.node().lock().await;
            (
                n.context.keys().clone(),
                n.context.members().map(|(a, _)| *a).collect(),
            )
        };
        let periods = discovery::periods_at(now);
        presences.retain(|p| periods.contains(&p.period()));
        for period in periods {
            if presences.iter().any(|p| p.period() == period) {
                continue;
            }
            match discovery::Presence::announce(
                &keys,
                &shared.me,
                period,
                &shared.options.points,
                &addresses,
                ttl,
                timeout,
            )
            .await
            {
                Ok(p) => presences.push(p),
                Err(e) => {
                    tracing::warn!(context = %m.name, error = %e, "announcing on the points failed")
                }
            }
        }
        let mut candidates: Vec<(Option<AuthorityId>, Vec<Multiaddr>)> = Vec::new();
        for p in &mut presences {
            let period = p.period();
            let mine = discovery::peer_id(&keys, period, &shared.me);
            match p.registrations().await {
                Ok(regs) => {
                    for (peer, addrs) in regs {
                        if peer == mine {
                            continue;
                        }
                        let who = discovery::recognise(&keys, period, members.iter(), &peer);
                        candidates.push((who, addrs));
                    }
                }
                Err(e) => tracing::debug!(context = %m.name, error = %e, "discovery failed"),
            }
        }
        for (who, addrs) in candidates {
            let known = match who {
                Some(a) => {
                    let n = m.sync.node().lock().await;
                    n.service
                        .get_cached_descriptor(m.id, a)
                        .is_some_and(|d| d.is_valid_at(now))
                }
                None => false,
            };
            if !known {
                introduce(&shared, &m, &addrs).await;
            }
        }
        let wait = if round < 15 { 2 } else { 20 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Sends our descriptor to each TCP address until one answers with theirs.
async fn introduce(shared: &Shared, m: &Member, addresses: &[Multiaddr]) {
    let Some(mine) = lock(&m.own).clone() else {
        return;
    };
    for a in addresses {
        let Some(addr) = tcp_socket_addr(a) else {
            continue;
        };
        match intro::introduce(addr, &mine, DIAL_TIMEOUT).await {
            Ok(theirs) => {
                let now = now_ms(shared);
                let r = m.sync.node().lock().await.receive(vec![theirs], now);
                match r {
                    Ok(a) if a.rejected == 0 && a.deferred == 0 => {
                        tracing::info!(context = %m.name, %addr, "introduced");
                        save_roster(shared, m).await;
                        return;
                    }
                    other => tracing::debug!(%addr, ?other, "introduction answer refused"),
                }
            }
            Err(e) => tracing::debug!(%addr, error = %e, "introduction failed"),
        }
    }
}

fn tcp_socket_addr(a: &Multiaddr) -> Option<SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut it = a.iter();
    let ip: std::net::IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

async fn serve_control(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = control_session(&shared, stream).await {
                tracing::debug!(error = %e, "control session ended");
            }
        });
    }
}

async fn control_session(
    shared: &Arc<Shared>,
    stream: UnixStream,
) -> Result<(), control::ControlError> {
    let mut stream = BufReader::new(stream);
    let request: Request = match control::read_line(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::fail(2, format!("bad request: {e}"));
            return control::write_line(&mut stream, &reply).await;
        }
    };
    match request {
        Request::Status => {
            let mut reply = Reply {
                ok: true,
                authority: shared.me.to_string(),
                ..Reply::default()
            };
            reply.status = Some(status(shared).await);
            control::write_line(&mut stream, &reply).await
        }
        Request::PipeListen { context } => pipe_listen(shared, stream, &context).await,
        Request::PipeConnect { context, peer } => {
            pipe_connect(shared, stream, &context, &peer).await
        }
    }
}

fn unknown_context(name: &str) -> Reply {
    Reply::fail(
        1,
        format!(
            "no context named {name:?} in this agent: `rdv context list` shows the names; a context created or joined just now is picked up within 5 s"
        ),
    )
}

async fn pipe_listen(
    shared: &Shared,
    mut stream: BufReader<UnixStream>,
    context: &str,
) -> Result<(), control::ControlError> {
    let Some(m) = member_named(shared, context) else {
        return control::write_line(&mut stream, &unknown_context(context)).await;
    };
    let (tx, mut rx) = mpsc::channel(1);
    let taken = {
        let mut slot = lock(&m.pipe);
        let taken = slot.as_ref().is_some_and(|s| !s.is_closed());
        if !taken {
            *slot = Some(tx);
        }
        taken
    };
    if taken {
        let reply = Reply::fail(
            1,
            format!("another `rdv pipe listen` already waits in context {context:?}"),
        );
        return control::write_line(&mut stream, &reply).await;
    }
    let reply = Reply {
        ok: true,
        authority: shared.me.to_string(),
        ..Reply::default()
    };
    control::write_line(&mut stream, &reply).await?;
    // Wait for a member, or for the listener to leave.
    let mut probe = [0u8; 1];
    let mut ch = tokio::select! {
        ch = rx.recv() => match ch {
            Some(ch) => ch,
            None => return Ok(()),
        },
        _ = stream.read(&mut probe) => {
            lock(&m.pipe).take();
            return Ok(());
        }
    };
    let mut out = stream.into_inner();
    loop {
        let msg = match ch.recv().await {
            Ok(msg) => msg,
            Err(e) => {
                // Closed without an end: the listener sees the socket
                // close without its end frame and says the pipe broke.
                tracing::debug!(error = %e, "pipe broke");
                return Ok(());
            }
        };
        match msg.split_first() {
            Some((&PIPE_DATA, bytes)) => {
                for chunk in bytes.chunks(control::MAX_FRAME) {
                    control::write_frame(&mut out, chunk).await?;
                }
            }
            Some((&PIPE_END, _)) => {
                control::write_frame(&mut out, &[]).await?;
                out.flush().await?;
                let mut ack = [0u8; 1];
                out.read_exact(&mut ack).await?;
                if ack[0] == control::ACK {
                    let _ = ch.send(vec![PIPE_ACK]).await;
                }
                // Give the ack a moment to leave before the close.
                let _ = tokio::time::timeout(Duration::from_secs(5), ch.recv()).await;
                let _ = ch.close().await;
                return Ok(());
            }
            _ => {
                let _ = ch.close().await;
                return Ok(());
            }
        }
    }
}

async fn pipe_connect(
    shared: &Shared,
    mut stream: BufReader<UnixStream>,
    context: &str,
    peer: &str,
) -> Result<(), control::ControlError> {
    let Some(m) = member_named(shared, context) else {
        return control::write_line(&mut stream, &unknown_context(context)).await;
    };
    let Ok(peer) = peer.parse::<AuthorityId>() else {
        let reply = Reply::fail(
            2,
            format!(
                "{peer:?} is not an authority: give the 64 hex digits the peer's agent printed after `ready`"
            ),
        );
        return control::write_line(&mut stream, &reply).await;
    };
    if peer == shared.me {
        let reply = Reply::fail(
            2,
            "that is this member itself: give another member's authority",
        );
        return control::write_line(&mut stream, &reply).await;
    }
    // The descriptor may still be on its way (sync, introduction); less
    // patience for an authority the roster does not know.
    let started = tokio::time::Instant::now();
    loop {
        let now = now_ms(shared);
        let (known, member) = {
            let n = m.sync.node().lock().await;
            (
                n.service
                    .get_cached_descriptor(m.id, peer)
                    .is_some_and(|d| d.is_valid_at(now)),
                n.context.is_member(&peer),
            )
        };
        if known {
            break;
        }
        let patience = if member { PEER_WAIT } else { STRANGER_WAIT };
        if started.elapsed() >= patience {
            let reply = if member {
                Reply::fail(
                    3,
                    format!(
                        "{peer} is a member of {context:?} but no current descriptor of it reached this agent within {patience:?}: is its agent running, and can the two agents reach each other or a common --point?"
                    ),
                )
            } else {
                Reply::fail(
                    1,
                    format!(
                        "{peer} is not a known member of {context:?}: check the authority (its agent prints it after `ready`), or wait until its agent has published"
                    ),
                )
            };
            return control::write_line(&mut stream, &reply).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut ch, via) = match open_channel(shared, &m, peer, PURPOSE_PIPE).await {
        Ok(c) => c,
        Err(e) => {
            let reply = Reply::fail(3, format!("no channel to {peer}: {e}"));
            return control::write_line(&mut stream, &reply).await;
        }
    };
    let reply = Reply {
        ok: true,
        authority: shared.me.to_string(),
        via: via.to_owned(),
        ..Reply::default()
    };
    control::write_line(&mut stream, &reply).await?;
    loop {
        let frame = control::read_frame(&mut stream).await?;
        if frame.is_empty() {
            break;
        }
        let mut msg = Vec::with_capacity(frame.len() + 1);
        msg.push(PIPE_DATA);
        msg.extend_from_slice(&frame);
        if let Err(e) = ch.send(msg).await {
            tracing::debug!(error = %e, "pipe channel failed");
            return Ok(());
        }
    }
    if ch.send(vec![PIPE_END]).await.is_err() {
        return Ok(());
    }
    let acked = matches!(
        tokio::time::timeout(ACK_WAIT, ch.recv()).await,
        Ok(Ok(m)) if m.as_slice() == [PIPE_ACK]
    );
    if acked {
        let mut out = stream.into_inner();
        out.write_all(&[control::ACK]).await?;
        out.flush().await?;
    }
    let _ = ch.close().await;
    Ok(())
}

/// The status document: contexts, members, descriptors, channels.
async fn status(shared: &Shared) -> serde_json::Value {
    let now = now_ms(shared);
    let members: Vec<Arc<Member>> = lock(&shared.members).values().cloned().collect();
    let mut contexts = Vec::new();
    for m in members {
        let n = m.sync.node().lock().await;
        let mut list = Vec::new();
        for (a, _) in n.context.members() {
            let d = n.service.get_cached_descriptor(m.id, *a);
            let hints: Vec<String> = d
                .map(|d| {
                    d.transport_hints
                        .iter()
                        .filter_map(|h| h.socket_addr().map(|s| s.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            list.push(serde_json::json!({
                "authority": a.to_string(),
                "me": *a == shared.me,
                "descriptor_valid_until_ms": d.map(|d| d.valid_until),
                "descriptor_current": d.is_some_and(|d| d.is_valid_at(now)),
                "addresses": hints,
                "connected": m.sync.is_connected(a),
                "transport": lock(&m.via).get(a).copied().filter(|_| m.sync.is_connected(a)),
            }));
        }
        contexts.push(serde_json::json!({
            "name": m.name,
            "id": m.id.to_string(),
            "epoch": n.context.epoch(),
            "members": list,
        }));
    }
    serde_json::json!({
        "authority": shared.me.to_string(),
        "addresses": shared.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "points": shared.options.points.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "contexts": contexts,
    })
}
