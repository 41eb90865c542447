//! A bound on inbound connections per remote IP address.
//!
//! `libp2p-connection-limits` bounds connections in total and per peer id,
//! but a peer id costs nothing: one host can open a connection under each
//! of a thousand fresh ids and fill a point's connection bound alone. This
//! behaviour counts established inbound connections by the remote IP (the
//! address the connection came from, for TCP and QUIC alike) and denies new
//! ones beyond the bound; outbound connections are not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Denied: too many connections from one address.
#[derive(Debug, thiserror::Error)]
#[error("{count} connections from {ip} already (bound {max})")]
pub struct TooManyFromAddress {
    /// The remote address.
    pub ip: IpAddr,
    /// Connections it has.
    pub count: usize,
    /// The bound.
    pub max: usize,
}

/// Bounds established inbound connections per remote IP address.
#[derive(Debug)]
pub struct Behaviour {
    max: usize,
    by_ip: HashMap<IpAddr, usize>,
    /// Which address each counted connection came from.
    counted: HashMap<ConnectionId, IpAddr>,
}

impl Behaviour {
    /// At most `max` established inbound connections from one IP address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            by_ip: HashMap::new(),
            counted: HashMap::new(),
        }
    }

    /// Established inbound connections from `ip` now.
    pub fn connections_from(&self, ip: &IpAddr) -> usize {
        self.by_ip.get(ip).copied().unwrap_or(0)
    }
}

/// The IP address at the start of `addr` (`/ip4/...` or `/ip6/...`).
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = ip_of(remote) {
            let count = self.connections_from(&ip);
            if count >= self.max {
                return Err(ConnectionDenied::new(TooManyFromAddress {
                    ip,
                    count,
                    max: self.max,
                }));
            }
            // Counted once the swarm confirms the connection (another
            // behaviour may still deny it); remembered here for that.
            self.counted.insert(id, ip);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let Some(ip) = self.counted.get(&e.connection_id) {
                    *self.by_ip.entry(*ip).or_insert(0) += 1;
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.counted.remove(&connection_id)
                    && let Some(n) = self.by_ip.get_mut(&ip)
                {
                    *n -= 1;
                    if *n == 0 {
                        self.by_ip.remove(&ip);
                    }
                }
            }
            // Denied by another behaviour after we let it through.
            FromSwarm::ListenFailure(f) => {
                self.counted.remove(&f.connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
