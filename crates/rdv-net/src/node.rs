//! A libp2p node with the transports and protocols rdv speaks: TCP and QUIC,
//! Noise, Yamux, identify, ping, connection limits, and raw streams for
//! `/rendezvous/1.0.0`. The swarm runs in its own task; the rest of the
//! program talks to it through [`Node`].

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, identify, identity::Keypair, noise, ping, tcp,
    yamux,
};
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    // The derive generates an undocumented event enum.
    #![allow(missing_docs)]
    use super::*;

    /// The behaviours of an rdv node. A rust-libp2p application embeds
    /// rendezvous the same way: a `libp2p_stream::Behaviour` field in its own
    /// `#[derive(NetworkBehaviour)]`, and a [`Control`] from it handed to
    /// [`crate::PointServer::run`] or [`crate::client::spawn`].
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Accepts inbound `/rendezvous/1.0.0` streams (for a point).
        pub inbound: libp2p::swarm::behaviour::toggle::Toggle<crate::inbound::Behaviour>,
        /// Opens outbound streams (for a client).
        pub stream: libp2p_stream::Behaviour,
        /// Exchanges listen addresses and agent versions.
        pub identify: identify::Behaviour,
        /// Keeps connections alive and measures round trips.
        pub ping: ping::Behaviour,
        /// Bounds connections.
        pub limits: connection_limits::Behaviour,
        /// Bounds inbound connections per remote IP address.
        pub ip_limits: crate::ip_limits::Behaviour,
    }
}

/// A period that stands for "not again": libp2p's timers take a duration,
/// and a year outlives any connection (the timer is armed but never fires).
const NEVER_AGAIN: Duration = Duration::from_secs(365 * 24 * 3600);

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Addresses to listen on (`/ip4/.../tcp/N`, `/ip4/.../udp/N/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Established connections at most, in and out. Default 4096.
    pub max_connections: u32,
    /// Established connections with one peer at most. Default 8.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake at most. Default 256.
    pub max_pending_incoming: u32,
    /// Established inbound connections from one IP address at most
    /// (peer ids are free to make; addresses are not). Default 256: room
    /// for many peers behind one NAT, while a single host cannot take
    /// all of `max_connections`.
    pub max_connections_per_ip: usize,
    /// Inbound connections still in their handshake from one IP address at
    /// most. Default 16: without it one host could hold all of
    /// `max_pending_incoming` for the handshake timeout.
    pub max_pending_per_ip: usize,
    /// IPv6 addresses are counted per prefix of this length for the per-IP
    /// bounds (one host normally has a whole /64). Default 64.
    pub ipv6_prefix: u8,
    /// Connections with no stream open are closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// A serving node keeps a connection up this long after its last
    /// rendezvous stream, before the idle timeout starts (see
    /// [`crate::inbound`]). Default [`crate::inbound::DEFAULT_LINGER`].
    pub linger: Duration,
    /// Sent to peers in identify.
    pub agent_version: String,
    /// How often this node pings each connection. `None`: once when the
    /// connection opens, then only answers the peer's pings. A point sets
    /// `None`: its pings would be timer work per connection at rest, and
    /// libp2p's ping does not keep a connection open; a peer that vanished
    /// without closing is dropped by the idle timeout once it holds no
    /// stream (60 s by default; longer with a longer `idle_timeout`).
    /// Default 15 s, rust-libp2p's.
    pub ping_interval: Option<Duration>,
    /// How often this node asks each connection for identify again. `None`:
    /// only when the connection opens (a failed first request is then not
    /// retried). Default 5 min, rust-libp2p's.
    pub identify_interval: Option<Duration>,
    /// Serve `/rendezvous/1.0.0`: queue up to this many inbound streams for
    /// [`Node::incoming`]. `None` for a client-only node. Default `None`.
    pub serve_queue: Option<usize>,
    /// Where to count the streams refused because that queue was full
    /// (a point's [`crate::metrics::Metrics::inbound_refused_counter`]). Default
    /// `None`: counted only inside the node.
    pub inbound_refused: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            max_connections: 4096,
            max_connections_per_peer: 8,
            max_pending_incoming: 256,
            max_connections_per_ip: 256,
            max_pending_per_ip: 16,
            ipv6_prefix: crate::ip_limits::DEFAULT_IPV6_PREFIX,
            idle_timeout: Duration::from_secs(60),
            linger: crate::inbound::DEFAULT_LINGER,
            agent_version: format!("rdv/{}", env!("CARGO_PKG_VERSION")),
            ping_interval: Some(Duration::from_secs(15)),
            identify_interval: Some(Duration::from_secs(5 * 60)),
            serve_queue: None,
            inbound_refused: None,
        }
    }
}

/// Something the swarm reported.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Now listening on this address (with our peer id appended).
    Listening(Multiaddr),
    /// A listen address could not be used.
    ListenFailed(String),
    /// Identify told us about a peer.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version string.
        agent_version: String,
        /// The protocols it listens on.
        protocols: Vec<libp2p::StreamProtocol>,
    },
    /// The number of open connections changed.
    Connections(u64),
}

enum Command {
    AddAddress(PeerId, Multiaddr),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
}

/// A running node.
pub struct Node {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Opens rendezvous streams.
    pub control: Control,
    /// Inbound rendezvous streams, when the node serves them.
    pub incoming: Option<crate::inbound::Incoming>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Building the transports failed.
    #[error("could not set up transports: {0}")]
    Transport(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

impl Node {
    /// Starts a node with `keypair`, listening where `config` says. Events
    /// arrive on the returned receiver (bounded; drain it).
    pub fn start(
        keypair: Keypair,
        config: NodeConfig,
    ) -> Result<(Node, mpsc::Receiver<NodeEvent>), NodeError> {
        let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending_incoming));
        let agent = config.agent_version.clone();
        let (inbound, incoming) = match config.serve_queue {
            Some(n) => {
                let (mut b, rx) = crate::inbound::Behaviour::new(n);
                if let Some(c) = &config.inbound_refused {
                    b = b.counting_refusals_in(c.clone());
                }
                (Some(b.with_linger(config.linger)), Some(rx))
            }
            None => (None, None),
        };
        let mut inbound = Some(inbound);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport_err(&e))?
            .with_quic()
            .with_behaviour(|key| Behaviour {
                inbound: inbound.take().flatten().into(),
                stream: libp2p_stream::Behaviour::new(),
                identify: identify::Behaviour::new(
                    identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                        .with_agent_version(agent)
                        .with_interval(config.identify_interval.unwrap_or(NEVER_AGAIN)),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(config.ping_interval.unwrap_or(NEVER_AGAIN)),
                ),
                limits: connection_limits::Behaviour::new(limits),
                ip_limits: crate::ip_limits::Behaviour::new(config.max_connections_per_ip)
                    .with_pending(config.max_pending_per_ip)
                    .with_ipv6_prefix(config.ipv6_prefix),
            })
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(256);
        let task = tokio::spawn(drive(swarm, command_rx, event_tx));
        Ok((
            Node {
                peer_id,
                control,
                incoming,
                commands,
                task,
            },
            event_rx,
        ))
    }

    /// Tells the swarm where `peer` can be reached, so streams to it dial there.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.commands.send(Command::AddAddress(peer, addr)).await;
    }

    /// Dials `addr` and waits until connected (or failed).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial(addr, tx))
            .await
            .map_err(|_| "node stopped".to_string())?;
        rx.await.map_err(|_| "node stopped".to_string())?
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
) {
    use libp2p::swarm::dial_opts::DialOpts;
    let mut pending_dials: Vec<(
        libp2p::swarm::ConnectionId,
        oneshot::Sender<Result<(), String>>,
    )> = Vec::new();
    let local = *swarm.local_peer_id();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::AddAddress(peer, addr)) => swarm.add_peer_address(peer, addr),
                Some(Command::Dial(addr, reply)) => {
                    let opts = DialOpts::unknown_peer_id().address(addr).build();
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => pending_dials.push((id, reply)),
                        Err(e) => { let _ = reply.send(Err(e.to_string())); }
                    }
                }
            },
            event = swarm.select_next_some() => {
                let report = match event {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        Some(NodeEvent::Listening(address.with_p2p(local).unwrap_or_else(|a| a)))
                    }
                    SwarmEvent::ListenerError { error, .. } => Some(NodeEvent::ListenFailed(error.to_string())),
                    SwarmEvent::ListenerClosed { reason: Err(error), .. } => Some(NodeEvent::ListenFailed(error.to_string())),
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                        Some(NodeEvent::Identified { peer: peer_id, agent_version: info.agent_version, protocols: info.protocols })
                    }
                    SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                        if let Some(i) = pending_dials.iter().position(|(id, _)| *id == connection_id) {
                            let _ = pending_dials.swap_remove(i).1.send(Ok(()));
                        }
                        Some(NodeEvent::Connections(u64::from(swarm.network_info().connection_counters().num_established())))
                    }
                    SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                        if let Some(i) = pending_dials.iter().position(|(id, _)| *id == connection_id) {
                            let _ = pending_dials.swap_remove(i).1.send(Err(error.to_string()));
                        }
                        None
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        Some(NodeEvent::Connections(u64::from(swarm.network_info().connection_counters().num_established())))
                    }
                    _ => None,
                };
                match report {
                    // What identify says decides which records a peer is
                    // served: worth waiting for the consumer.
                    Some(r @ NodeEvent::Identified { .. }) => {
                        let _ = events.send(r).await;
                    }
                    // Bounded: if nobody drains, drop rather than stall the swarm.
                    Some(r) => {
                        let _ = events.try_send(r);
                    }
                    None => {}
                }
            }
        }
    }
}
