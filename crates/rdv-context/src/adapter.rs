//! The bridge between peer discovery and synchronisation (the seed's
//! `RendezvousAdapter`): which peers can be reached, and how; whose
//! descriptors are about to run out.

use crate::descriptor::{RendezvousDescriptor, TransportHint};
use crate::ids::{AuthorityId, ContextId};
use crate::service::RendezvousService;

/// What sync needs to know about a peer, from its valid descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub authority_id: AuthorityId,
    /// The context.
    pub context_id: ContextId,
    /// Its transport hints, in its order of preference.
    pub transport_hints: Vec<TransportHint>,
    /// Its static X25519 key (Noise IK).
    pub static_key: [u8; 32],
    /// When its descriptor expires.
    pub valid_until: u64,
}

impl PeerInfo {
    fn from_descriptor(d: &RendezvousDescriptor) -> Self {
        Self {
            authority_id: d.authority_id,
            context_id: d.context_id,
            transport_hints: d.transport_hints.clone(),
            static_key: d.static_key,
            valid_until: d.valid_until,
        }
    }
    /// Whether it can be reached without a relay.
    pub fn has_direct_transport(&self) -> bool {
        self.transport_hints.iter().any(TransportHint::is_direct)
    }
    /// Its relays.
    pub fn relays(&self) -> impl Iterator<Item = &AuthorityId> {
        self.transport_hints.iter().filter_map(|h| match h {
            TransportHint::WebSocketRelay {
                relay_authority, ..
            } => Some(relay_authority),
            _ => None,
        })
    }
}

/// Read-only view of a [`RendezvousService`] for the sync layer.
#[derive(Debug)]
pub struct RendezvousAdapter<'a> {
    service: &'a RendezvousService,
}

impl<'a> RendezvousAdapter<'a> {
    /// An adapter over `service`.
    pub fn new(service: &'a RendezvousService) -> Self {
        Self { service }
    }

    /// The peer's info if its cached descriptor is valid at `now_ms`.
    pub fn get_peer_info(
        &self,
        context_id: ContextId,
        peer: AuthorityId,
        now_ms: u64,
    ) -> Option<PeerInfo> {
        self.service
            .get_cached_descriptor(context_id, peer)
            .filter(|d| d.is_valid_at(now_ms))
            .map(PeerInfo::from_descriptor)
    }

    /// Peers whose descriptor has expired or expires within the service's
    /// refresh window of `now_ms`, sorted: sync should fetch theirs anew.
    pub fn peers_needing_refresh(&self, context_id: ContextId, now_ms: u64) -> Vec<AuthorityId> {
        let horizon = now_ms.saturating_add(self.service.config().refresh_window_ms);
        let mut peers: Vec<AuthorityId> = self
            .service
            .cached_descriptors(context_id)
            .filter(|d| d.valid_until <= horizon)
            .map(|d| d.authority_id)
            .collect();
        peers.sort();
        peers
    }
}
