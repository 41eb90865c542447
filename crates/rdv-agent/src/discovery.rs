//! Blinded discovery on public rendezvous points (issue 12, item 2).
//!
//! For each context and time period a member registers, on every point it
//! is given, under the context's blinded namespace for that period
//! (`EpochKeys::rendezvous_namespace`) and under a libp2p identity derived
//! for that context, period and member (`EpochKeys::rendezvous_peer_seed`).
//! The point sees a random-looking namespace and a random-looking peer id,
//! both new every period and every epoch and different in every context:
//! it cannot tell which context a registration serves nor link one
//! member's registrations to each other. Members, who hold the epoch keys,
//! compute every member's peer id for the period and so recognise who is
//! who among a namespace's registrations ([`recognise`]); the addresses
//! they find there serve first contact, after which journal sync brings
//! the sealed descriptors. What the point still learns (IP addresses,
//! timing, namespace sizes) is in `docs/PRIVACY.md`.
//!
//! Periods are [`PERIOD_MS`] long; within [`OVERLAP_MS`] of a boundary a
//! member registers in and looks at both periods ([`periods_at`]), so two
//! members whose clocks straddle the boundary still meet.
//!
//! The pure functions here take time as an argument; [`Presence`] is the
//! tokio driver (one libp2p node per derived identity, rdv's rendezvous
//! client on it).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rdv_client::Event;
use rdv_context::{AuthorityId, EpochKeys};
use rdv_net::client::{self, Client, ClientConfig};
use rdv_net::node::{Node, NodeConfig};
use rdv_wire::{Namespace, RecordFormat, Ttl, sign_record};

/// Length of a discovery period: one hour.
pub const PERIOD_MS: u64 = 3_600_000;
/// Around a period boundary, members use both periods for this long on
/// each side (covers clock skew between members).
pub const OVERLAP_MS: u64 = 300_000;

/// The periods a member registers in and discovers at `now_ms`: the
/// current one, and its neighbour when `now_ms` is within [`OVERLAP_MS`]
/// of the boundary between them.
pub fn periods_at(now_ms: u64) -> Vec<u64> {
    let p = now_ms / PERIOD_MS;
    let into = now_ms % PERIOD_MS;
    let mut v = vec![p];
    if into < OVERLAP_MS && p > 0 {
        v.insert(0, p - 1);
    }
    if PERIOD_MS - into <= OVERLAP_MS {
        v.push(p + 1);
    }
    v
}

/// The libp2p identity `authority` registers under in `period`.
pub fn peer_keypair(keys: &EpochKeys, period: u64, authority: &AuthorityId) -> Keypair {
    let mut seed = keys.rendezvous_peer_seed(period, authority);
    // `ed25519_from_bytes` wipes the slice it is given; the Zeroizing
    // holder wipes it again on drop.
    match Keypair::ed25519_from_bytes(&mut seed[..]) {
        Ok(k) => k,
        // 32 bytes are always a valid Ed25519 secret.
        Err(_) => unreachable!("an Ed25519 seed is any 32 bytes"),
    }
}

/// The peer id `authority` registers under in `period`.
pub fn peer_id(keys: &EpochKeys, period: u64, authority: &AuthorityId) -> PeerId {
    peer_keypair(keys, period, authority).public().to_peer_id()
}

/// Which of `members` registered as `peer` in `period`, if any.
pub fn recognise<'a>(
    keys: &EpochKeys,
    period: u64,
    members: impl IntoIterator<Item = &'a AuthorityId>,
    peer: &PeerId,
) -> Option<AuthorityId> {
    members
        .into_iter()
        .find(|m| peer_id(keys, period, m) == *peer)
        .copied()
}

/// A member found on a point: who, and where it says it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The member.
    pub authority: AuthorityId,
    /// The addresses of its registration.
    pub addresses: Vec<Multiaddr>,
}

/// Why the discovery driver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A point address without `/p2p/<peer id>`.
    #[error("point address {0} has no /p2p/<peer id>: give the full address `rdv point` printed")]
    NoPeerId(Multiaddr),
    /// The libp2p node could not start.
    #[error("libp2p node: {0}")]
    Node(String),
    /// Signing the peer record failed.
    #[error("signing the peer record: {0}")]
    Sign(String),
    /// The point refused or could not be reached.
    #[error("point {point}: {text}")]
    Point {
        /// The point.
        point: PeerId,
        /// What happened.
        text: String,
    },
    /// No answer in time.
    #[error("point {0} did not answer in time")]
    Timeout(PeerId),
}

/// The point's peer id, from the `/p2p/` suffix of its address.
pub fn point_peer(addr: &Multiaddr) -> Result<PeerId, DiscoveryError> {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .ok_or_else(|| DiscoveryError::NoPeerId(addr.clone()))
}

/// One member's registration for one context epoch and period, on a set
/// of points: the derived identity's node and client. Dropping it stops
/// refreshing (the registration then expires at the points).
pub struct Presence {
    period: u64,
    namespace: Namespace,
    points: Vec<PeerId>,
    client: Client,
    _node: Node,
    timeout: Duration,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("period", &self.period)
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// Registers `me` for `period` of `keys`' context on every point of
    /// `points`, advertising `addresses` for `ttl`, and waits (up to
    /// `timeout` per point) until each point accepted. The client keeps the
    /// registrations refreshed while the `Presence` lives.
    pub async fn announce(
        keys: &EpochKeys,
        me: &AuthorityId,
        period: u64,
        points: &[Multiaddr],
        addresses: &[Multiaddr],
        ttl: Ttl,
        timeout: Duration,
    ) -> Result<Self, DiscoveryError> {
        let key = peer_keypair(keys, period, me);
        let record = sign_record(&key, addresses, 1, RecordFormat::Standard)
            .map_err(|e| DiscoveryError::Sign(e.to_string()))?;
        let namespace = Namespace::new(keys.rendezvous_namespace(period))
            .map_err(|e| DiscoveryError::Sign(e.to_string()))?;
        let (node, mut events) = Node::start(key, NodeConfig::default())
            .map_err(|e| DiscoveryError::Node(e.to_string()))?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        // Only signed records: the agent dials what it discovers, and an
        // unsigned PeerInfo is whatever the point says.
        let mut config = ClientConfig::default();
        config.service.accept_unsigned_records = false;
        let mut client = client::spawn(node.control.clone(), config, vec![record.into()]);
        let mut ids = Vec::new();
        for addr in points {
            let point = point_peer(addr)?;
            node.add_address(point, addr.clone()).await;
            // Connected before the first stream, so the REGISTER does not
            // race the swarm learning the address.
            tokio::time::timeout(timeout, node.dial(addr.clone()))
                .await
                .map_err(|_| DiscoveryError::Timeout(point))?
                .map_err(|text| DiscoveryError::Point { point, text })?;
            ids.push(point);
        }
        for point in &ids {
            client
                .register(*point, namespace.clone(), Some(ttl))
                .await
                .map_err(|e| DiscoveryError::Point {
                    point: *point,
                    text: e.to_string(),
                })?;
            wait_for(&mut client, timeout, *point, |e| match e {
                Event::Registered { point: p, .. } if p == point => Some(Ok(())),
                Event::RegisterFailed { point: p, text, .. } if p == point => {
                    Some(Err(text.clone()))
                }
                _ => None,
            })
            .await?;
        }
        Ok(Self {
            period,
            namespace,
            points: ids,
            client,
            _node: node,
            timeout,
        })
    }

    /// The period of this registration.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The namespace registered under (what the point sees).
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Asks every point for the namespace's registrations and returns the
    /// members among them (not `me`), recognised by their derived peer ids.
    /// Registrations of unknown peer ids (a stale epoch, a stranger who
    /// guessed the namespace) are ignored.
    pub async fn discover<'a>(
        &mut self,
        keys: &EpochKeys,
        me: &AuthorityId,
        members: impl IntoIterator<Item = &'a AuthorityId> + Clone,
    ) -> Result<Vec<Found>, DiscoveryError> {
        let mut found: Vec<Found> = Vec::new();
        for (peer, addresses) in self.registrations().await? {
            let Some(authority) = recognise(keys, self.period, members.clone(), &peer) else {
                continue;
            };
            if authority == *me || found.iter().any(|f| f.authority == authority) {
                continue;
            }
            found.push(Found {
                authority,
                addresses,
            });
        }
        Ok(found)
    }

    /// Every registration in the namespace on every point: peer id and
    /// addresses (this member's own included). Only members know the
    /// namespace, so a peer id no member's derivation gives is a member
    /// this one has not heard of yet (invited by another), or someone who
    /// learnt the namespace from a point; the agent offers those an
    /// introduction, which gives nothing to a non-member.
    pub async fn registrations(&mut self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, DiscoveryError> {
        let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for point in self.points.clone() {
            self.client
                .discover(point, Some(self.namespace.clone()), None)
                .await
                .map_err(|e| DiscoveryError::Point {
                    point,
                    text: e.to_string(),
                })?;
            wait_for(&mut self.client, self.timeout, point, |e| match e {
                Event::Discovered { point: p, .. } if *p == point => Some(Ok(())),
                Event::DiscoverFailed { point: p, text, .. } if *p == point => {
                    Some(Err(text.clone()))
                }
                _ => None,
            })
            .await?;
            let cached = self
                .client
                .cached(point, Some(self.namespace.clone()))
                .await
                .map_err(|e| DiscoveryError::Point {
                    point,
                    text: e.to_string(),
                })?;
            for reg in cached {
                if out.iter().any(|(p, _)| *p == reg.peer) {
                    continue;
                }
                out.push((reg.peer, reg.record.addresses.clone()));
            }
        }
        Ok(out)
    }

    /// Unregisters at every point (best effort) and stops.
    pub async fn withdraw(self) {
        for p in &self.points {
            self.client.unregister(*p, self.namespace.clone()).await;
        }
        self.client.shutdown().await;
    }
}

/// Waits for the first event `pick` decides on, up to `timeout`.
async fn wait_for(
    client: &mut Client,
    timeout: Duration,
    point: PeerId,
    mut pick: impl FnMut(&Event) -> Option<Result<(), String>>,
) -> Result<(), DiscoveryError> {
    let wait = async {
        while let Some(e) = client.next_event().await {
            if let Some(r) = pick(&e) {
                return r.map_err(|text| DiscoveryError::Point { point, text });
            }
        }
        Err(DiscoveryError::Point {
            point,
            text: "the rendezvous client stopped".into(),
        })
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| DiscoveryError::Timeout(point))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_overlap_only_near_a_boundary() {
        let p = 1000;
        let start = p * PERIOD_MS;
        assert_eq!(periods_at(start + PERIOD_MS / 2), vec![p]);
        assert_eq!(periods_at(start + 1), vec![p - 1, p]);
        assert_eq!(periods_at(start + OVERLAP_MS), vec![p]);
        assert_eq!(periods_at(start + PERIOD_MS - 1), vec![p, p + 1]);
        assert_eq!(periods_at(start + PERIOD_MS - OVERLAP_MS), vec![p, p + 1]);
        assert_eq!(periods_at(start + PERIOD_MS - OVERLAP_MS - 1), vec![p]);
        assert_eq!(periods_at(5), vec![0]);
    }
}
