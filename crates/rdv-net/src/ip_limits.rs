//! Bounds on inbound connections per remote address group.
//!
//! `libp2p-connection-limits` bounds connections in total and per peer id,
//! but a peer id costs nothing: one host can open a connection under each
//! of a thousand fresh ids and fill a point's connection bound alone. This
//! behaviour counts inbound connections by where they came from (the remote
//! IP, for TCP and QUIC alike) and denies new ones beyond two bounds:
//!
//! - **established** connections per address group;
//! - **pending** ones (still in their Noise/Yamux handshake): the swarm's
//!   global bound on pending connections is small (it protects memory), so
//!   without a per-address share one host could hold every handshake slot
//!   for the handshake timeout and lock every other host out.
//!
//! An address group is an IPv4 address, or an IPv6 prefix (a /64 by
//! default): one IPv6 host is normally given a whole /64 (RFC 6177 §2 and
//! RFC 7934 §6 recommend at least that much per host or subscriber), so
//! counting per /128 would let one host appear as 2^64 hosts.
//! Outbound connections are not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The IPv6 prefix length counted as one host by default.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Where a connection came from, for counting: an IPv4 address, or an IPv6
/// address cut to a prefix (an IPv4-mapped IPv6 address counts as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrGroup(IpAddr);

impl AddrGroup {
    /// The group of `ip` when IPv6 addresses are counted per `/prefix`
    /// (clamped to 128).
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrGroup(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                AddrGroup(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
            }
        }
    }

    /// The group of the IP address at the start of `addr`, if it has one.
    pub fn of_multiaddr(addr: &Multiaddr, ipv6_prefix: u8) -> Option<Self> {
        ip_of(addr).map(|ip| Self::of(ip, ipv6_prefix))
    }

    /// The group's address (the IPv4 address, or the IPv6 prefix with the
    /// host bits zero).
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for AddrGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Denied: too many connections from one address group.
#[derive(Debug, thiserror::Error)]
#[error("{count} {state} connections from {group} already (bound {max})")]
pub struct TooManyFromAddress {
    /// The remote address group.
    pub group: AddrGroup,
    /// `"established"` or `"pending"`.
    pub state: &'static str,
    /// Connections it has in that state.
    pub count: usize,
    /// The bound.
    pub max: usize,
}

/// Bounds inbound connections per remote address group.
#[derive(Debug)]
pub struct Behaviour {
    max: usize,
    max_pending: usize,
    ipv6_prefix: u8,
    by_group: HashMap<AddrGroup, usize>,
    pending_by_group: HashMap<AddrGroup, usize>,
    /// Which group each counted established connection came from.
    counted: HashMap<ConnectionId, AddrGroup>,
    /// Which group each pending connection came from.
    pending: HashMap<ConnectionId, AddrGroup>,
}

impl Behaviour {
    /// At most `max` established inbound connections from one address
    /// group; pending ones are unbounded here until [`Self::with_pending`].
    pub fn new(max: usize) -> Self {
        Self {
            max,
            max_pending: usize::MAX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            by_group: HashMap::new(),
            pending_by_group: HashMap::new(),
            counted: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// At most `max` inbound connections in their handshake from one group.
    pub fn with_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Counts IPv6 addresses per `/prefix` (default [`DEFAULT_IPV6_PREFIX`]).
    pub fn with_ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    /// Established inbound connections from `ip`'s group now.
    pub fn connections_from(&self, ip: &IpAddr) -> usize {
        let group = AddrGroup::of(*ip, self.ipv6_prefix);
        self.by_group.get(&group).copied().unwrap_or(0)
    }

    /// Inbound connections in their handshake from `ip`'s group now.
    pub fn pending_from(&self, ip: &IpAddr) -> usize {
        let group = AddrGroup::of(*ip, self.ipv6_prefix);
        self.pending_by_group.get(&group).copied().unwrap_or(0)
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

fn decrement(map: &mut HashMap<AddrGroup, usize>, group: &AddrGroup) {
    if let Some(n) = map.get_mut(group) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(group);
        }
    }
}

impl Behaviour {
    fn end_pending(&mut self, id: &ConnectionId) {
        if let Some(group) = self.pending.remove(id) {
            decrement(&mut self.pending_by_group, &group);
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(group) = AddrGroup::of_multiaddr(remote, self.ipv6_prefix) else {
            return Ok(());
        };
        let count = self.pending_by_group.get(&group).copied().unwrap_or(0);
        if count >= self.max_pending {
            return Err(ConnectionDenied::new(TooManyFromAddress {
                group,
                state: "pending",
                count,
                max: self.max_pending,
            }));
        }
        // Counted now: a behaviour polled before us that denies it makes
        // the swarm report a `ListenFailure`, which uncounts it.
        *self.pending_by_group.entry(group).or_insert(0) += 1;
        self.pending.insert(id, group);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // The handshake is over, whatever happens next.
        self.end_pending(&id);
        if let Some(group) = AddrGroup::of_multiaddr(remote, self.ipv6_prefix) {
            let count = self.by_group.get(&group).copied().unwrap_or(0);
            if count >= self.max {
                return Err(ConnectionDenied::new(TooManyFromAddress {
                    group,
                    state: "established",
                    count,
                    max: self.max,
                }));
            }
            // Counted once the swarm confirms the connection (another
            // behaviour may still deny it); remembered here for that.
            self.counted.insert(id, group);
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
                self.end_pending(&e.connection_id);
                if let Some(group) = self.counted.get(&e.connection_id) {
                    *self.by_group.entry(*group).or_insert(0) += 1;
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(group) = self.counted.remove(&connection_id) {
                    decrement(&mut self.by_group, &group);
                }
            }
            // The handshake failed or timed out, or a behaviour denied it
            // (before or after we let it through).
            FromSwarm::ListenFailure(f) => {
                self.end_pending(&f.connection_id);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_is_counted_per_prefix_and_ipv4_mapped_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrGroup::of(a, 64), AddrGroup::of(b, 64));
        assert_ne!(AddrGroup::of(a, 64), AddrGroup::of(c, 64));
        assert_ne!(AddrGroup::of(a, 128), AddrGroup::of(b, 128));
        assert_eq!(AddrGroup::of(a, 0), AddrGroup::of(c, 0));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            AddrGroup::of(mapped, 64),
            AddrGroup::of("192.0.2.1".parse().unwrap(), 64)
        );
    }
}
