//! The relay's table: which connection holds which handle under which
//! grant, which circuit ends are joined, and every bound on them. Plain
//! state without IO or time, so each bound is tested here; the driver
//! holds it under one lock and does what the answers say.

use std::collections::VecDeque;
use std::net::IpAddr;

use hashbrown::{HashMap, HashSet};

use crate::proto::{CloseReason, RELAY_CIRCUITS, close};

/// A connection, numbered by the router.
pub type ConnId = u64;

/// The relay's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections from one IP address.
    pub per_ip: u32,
    /// Connections in all.
    pub clients: usize,
    /// Circuits one connection may have open (opened or accepted).
    pub circuits_per_client: u32,
    /// Retired grants remembered; past it the oldest is forgotten.
    pub retired: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_ip: 32,
            clients: 10_000,
            circuits_per_client: 64,
            retired: 100_000,
        }
    }
}

/// Why a connection is refused or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections from its address.
    PerIp,
    /// The relay is full.
    Full,
    /// The grant signature did not verify.
    Unauthorized,
    /// The grant is retired.
    Retired,
    /// A malformed or out-of-order message.
    Protocol,
    /// Another connection claimed the same handle.
    Replaced,
    /// It did not read for the relay's stall bound.
    Stalled,
    /// HELLO and AUTH did not come in time.
    HandshakeTimeout,
    /// A message over the size bound.
    TooBig,
}

impl Refusal {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Self::PerIp => close::PER_IP,
            Self::Full => close::FULL,
            Self::Unauthorized => close::UNAUTHORIZED,
            Self::Retired => close::RETIRED,
            Self::Protocol => close::PROTOCOL,
            Self::Replaced => close::REPLACED,
            Self::Stalled => close::STALLED,
            Self::HandshakeTimeout => close::HANDSHAKE_TIMEOUT,
            Self::TooBig => close::TOO_BIG,
        }
    }
    /// The close reason text (also the metric label).
    pub fn reason(self) -> &'static str {
        match self {
            Self::PerIp => "too many connections from this address",
            Self::Full => "relay full",
            Self::Unauthorized => "grant not valid",
            Self::Retired => "grant retired",
            Self::Protocol => "protocol violation",
            Self::Replaced => "handle taken by a newer connection",
            Self::Stalled => "not reading",
            Self::HandshakeTimeout => "no HELLO or AUTH in time",
            Self::TooBig => "message too big",
        }
    }
}

#[derive(Debug)]
struct Client {
    ip: IpAddr,
    session: Option<([u8; 32], [u8; 32])>,
    circuits: u32,
    next_incoming: u32,
}

/// The table. See the module docs.
#[derive(Debug, Default)]
pub struct Router {
    limits: Limits,
    next_id: ConnId,
    clients: HashMap<ConnId, Client>,
    handles: HashMap<([u8; 32], [u8; 32]), ConnId>,
    circuits: HashMap<(ConnId, u32), (ConnId, u32)>,
    per_ip: HashMap<IpAddr, u32>,
    retired: HashSet<[u8; 32]>,
    retired_order: VecDeque<[u8; 32]>,
}

impl Router {
    /// An empty table with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A new connection from `ip`, or why not.
    pub fn connect(&mut self, ip: IpAddr) -> Result<ConnId, Refusal> {
        if self.clients.len() >= self.limits.clients {
            return Err(Refusal::Full);
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        self.next_id += 1;
        self.clients.insert(
            self.next_id,
            Client {
                ip,
                session: None,
                circuits: 0,
                next_incoming: RELAY_CIRCUITS,
            },
        );
        Ok(self.next_id)
    }

    /// Records that `conn` proved `grant` (the driver verified the
    /// signature) and is reached under `handle`. A grant that was retired
    /// is refused. Returns the connection that held the handle before, if
    /// any: it loses it, and the driver ends it with [`Refusal::Replaced`].
    pub fn authenticate(
        &mut self,
        conn: ConnId,
        grant: [u8; 32],
        handle: [u8; 32],
    ) -> Result<Option<ConnId>, Refusal> {
        if self.retired.contains(&grant) {
            return Err(Refusal::Retired);
        }
        let c = self.clients.get_mut(&conn).ok_or(Refusal::Protocol)?;
        if c.session.is_some() {
            return Err(Refusal::Protocol);
        }
        c.session = Some((grant, handle));
        let old = self.handles.insert((grant, handle), conn);
        if let Some(o) = old
            && let Some(oc) = self.clients.get_mut(&o)
        {
            oc.session = None;
        }
        Ok(old)
    }

    /// The grant `conn` proved, if it did.
    pub fn grant_of(&self, conn: ConnId) -> Option<[u8; 32]> {
        self.clients.get(&conn)?.session.map(|(g, _)| g)
    }

    /// Joins `conn`'s new circuit `circuit` to the client holding `to`
    /// under the same grant. Returns that client and its id for the
    /// circuit (to announce with INCOMING), or why not (to answer with
    /// CLOSED).
    pub fn open(
        &mut self,
        conn: ConnId,
        circuit: u32,
        to: [u8; 32],
    ) -> Result<(ConnId, u32), CloseReason> {
        let limit = self.limits.circuits_per_client;
        let c = self.clients.get(&conn).ok_or(CloseReason::BadCircuit)?;
        let (grant, _) = c.session.ok_or(CloseReason::BadCircuit)?;
        if circuit >= RELAY_CIRCUITS || self.circuits.contains_key(&(conn, circuit)) {
            return Err(CloseReason::BadCircuit);
        }
        if c.circuits >= limit {
            return Err(CloseReason::CircuitLimit);
        }
        let peer = *self.handles.get(&(grant, to)).ok_or(CloseReason::NoPeer)?;
        if peer == conn {
            return Err(CloseReason::NoPeer);
        }
        let pc = self.clients.get_mut(&peer).ok_or(CloseReason::NoPeer)?;
        if pc.circuits >= limit {
            return Err(CloseReason::CircuitLimit);
        }
        // The peer's ids run from 2^31 and wrap within that half, skipping
        // ids in use (at most `limit` are).
        let mut id = pc.next_incoming;
        while self.circuits.contains_key(&(peer, id)) {
            id = id.wrapping_add(1).max(RELAY_CIRCUITS);
        }
        pc.next_incoming = id.wrapping_add(1).max(RELAY_CIRCUITS);
        pc.circuits += 1;
        if let Some(c) = self.clients.get_mut(&conn) {
            c.circuits += 1;
        }
        self.circuits.insert((conn, circuit), (peer, id));
        self.circuits.insert((peer, id), (conn, circuit));
        Ok((peer, id))
    }

    /// The other end of `conn`'s `circuit`.
    pub fn route(&self, conn: ConnId, circuit: u32) -> Option<(ConnId, u32)> {
        self.circuits.get(&(conn, circuit)).copied()
    }

    /// Closes `conn`'s `circuit`; returns the other end to tell.
    pub fn close(&mut self, conn: ConnId, circuit: u32) -> Option<(ConnId, u32)> {
        let other = self.circuits.remove(&(conn, circuit))?;
        self.circuits.remove(&other);
        for c in [conn, other.0] {
            if let Some(cl) = self.clients.get_mut(&c) {
                cl.circuits = cl.circuits.saturating_sub(1);
            }
        }
        Some(other)
    }

    /// Forgets `conn`; returns the other ends of its circuits to tell.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<(ConnId, u32)> {
        let Some(c) = self.clients.remove(&conn) else {
            return Vec::new();
        };
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        if let Some(key) = c.session
            && self.handles.get(&key) == Some(&conn)
        {
            self.handles.remove(&key);
        }
        let mine: Vec<u32> = self
            .circuits
            .keys()
            .filter(|(k, _)| *k == conn)
            .map(|(_, id)| *id)
            .collect();
        mine.into_iter()
            .filter_map(|id| self.close(conn, id))
            .collect()
    }

    /// Retires `grant` (the driver verified its RETIRE signature): it is
    /// refused from now on. Returns the connections that hold it, for the
    /// driver to end with [`Refusal::Retired`]. Remembers at most
    /// [`Limits::retired`] grants, forgetting the oldest first.
    pub fn retire(&mut self, grant: [u8; 32]) -> Vec<ConnId> {
        if self.retired.insert(grant) {
            self.retired_order.push_back(grant);
            while self.retired_order.len() > self.limits.retired {
                if let Some(old) = self.retired_order.pop_front() {
                    self.retired.remove(&old);
                }
            }
        }
        self.clients
            .iter()
            .filter(|(_, c)| c.session.is_some_and(|(g, _)| g == grant))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections held.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
    /// Circuits open (each counted once).
    pub fn circuits(&self) -> usize {
        self.circuits.len() / 2
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn limits() -> Limits {
        Limits {
            per_ip: 3,
            clients: 4,
            circuits_per_client: 2,
            retired: 2,
        }
    }

    fn authed(r: &mut Router, grant: u8, handle: u8) -> ConnId {
        let c = r.connect(IP).unwrap();
        assert_eq!(r.authenticate(c, [grant; 32], [handle; 32]), Ok(None));
        c
    }

    #[test]
    fn circuits_join_clients_of_one_grant_only_and_both_ends_route() {
        let mut r = Router::new(limits());
        let a = authed(&mut r, 1, 10);
        let b = authed(&mut r, 1, 11);
        let x = authed(&mut r, 2, 12);
        let (peer, id) = r.open(a, 5, [11; 32]).unwrap();
        assert_eq!(peer, b);
        assert!(id >= RELAY_CIRCUITS);
        assert_eq!(r.route(a, 5), Some((b, id)));
        assert_eq!(r.route(b, id), Some((a, 5)));
        // A client of another grant cannot reach b, even knowing its handle.
        assert_eq!(r.open(x, 1, [11; 32]), Err(CloseReason::NoPeer));
        assert_eq!(r.open(a, 6, [12; 32]), Err(CloseReason::NoPeer));
        // Nor itself, nor with an id in the relay's half or in use.
        assert_eq!(r.open(a, 7, [10; 32]), Err(CloseReason::NoPeer));
        assert_eq!(
            r.open(a, RELAY_CIRCUITS, [11; 32]),
            Err(CloseReason::BadCircuit)
        );
        assert_eq!(r.open(a, 5, [11; 32]), Err(CloseReason::BadCircuit));
        assert_eq!(r.close(b, id), Some((a, 5)));
        assert_eq!(r.route(a, 5), None);
        assert_eq!(r.circuits(), 0);
    }

    #[test]
    fn an_unauthenticated_connection_opens_nothing() {
        let mut r = Router::new(limits());
        let _b = authed(&mut r, 1, 11);
        let c = r.connect(IP).unwrap();
        assert_eq!(r.open(c, 1, [11; 32]), Err(CloseReason::BadCircuit));
    }

    #[test]
    fn circuit_limits_hold_on_both_ends_and_free_on_close() {
        let mut r = Router::new(limits());
        let a = authed(&mut r, 1, 10);
        let b = authed(&mut r, 1, 11);
        r.open(a, 1, [11; 32]).unwrap();
        r.open(a, 2, [11; 32]).unwrap();
        assert_eq!(r.open(a, 3, [11; 32]), Err(CloseReason::CircuitLimit));
        let c = authed(&mut r, 1, 12);
        // b has two (accepted) circuits: it is full as a target too.
        assert_eq!(r.open(c, 1, [11; 32]), Err(CloseReason::CircuitLimit));
        r.close(a, 1);
        r.open(c, 1, [11; 32]).unwrap();
        // Disconnecting b closes its circuits at both others.
        let mut told = r.disconnect(b);
        told.sort();
        assert_eq!(told, vec![(a, 2), (c, 1)]);
        assert_eq!(r.circuits(), 0);
        assert_eq!(r.open(a, 9, [11; 32]), Err(CloseReason::NoPeer));
    }

    #[test]
    fn connections_per_address_and_in_all_are_bounded() {
        let mut r = Router::new(limits());
        let ids: Vec<_> = (0..3).map(|_| r.connect(IP).unwrap()).collect();
        assert_eq!(r.connect(IP), Err(Refusal::PerIp));
        let other = "198.51.100.1".parse().unwrap();
        r.connect(other).unwrap();
        assert_eq!(
            r.connect("198.51.100.2".parse().unwrap()),
            Err(Refusal::Full)
        );
        r.disconnect(ids[0]);
        assert!(r.connect(IP).is_ok());
    }

    #[test]
    fn a_retired_grant_is_refused_and_its_connections_named() {
        let mut r = Router::new(limits());
        let a = authed(&mut r, 1, 10);
        let _b = authed(&mut r, 2, 11);
        assert_eq!(r.retire([1; 32]), vec![a]);
        let c = r.connect(IP).unwrap();
        assert_eq!(r.authenticate(c, [1; 32], [13; 32]), Err(Refusal::Retired));
        // Bounded: past the limit the oldest is forgotten.
        r.retire([3; 32]);
        r.retire([4; 32]);
        assert_eq!(r.authenticate(c, [1; 32], [13; 32]), Ok(None));
    }

    #[test]
    fn a_newer_connection_takes_a_handle_and_the_older_loses_it() {
        let mut r = Router::new(limits());
        let a = authed(&mut r, 1, 10);
        let old = authed(&mut r, 1, 11);
        let new = r.connect(IP).unwrap();
        assert_eq!(r.authenticate(new, [1; 32], [11; 32]), Ok(Some(old)));
        assert_eq!(r.open(a, 1, [11; 32]).unwrap().0, new);
        // The old one's end does not take the handle away from the new.
        r.disconnect(old);
        assert_eq!(r.open(a, 2, [11; 32]).unwrap().0, new);
        // Authenticating twice on one connection is a protocol error.
        assert_eq!(r.authenticate(a, [1; 32], [14; 32]), Err(Refusal::Protocol));
    }
}
