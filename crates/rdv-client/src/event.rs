//! What the service reports: events, cached registrations, our own
//! registrations and counters.

use bytes::Bytes;
use rdv_wire::{Namespace, PeerId, ResponseStatus, Timestamp, Ttl, VerifiedRecord};

/// A fact the service reports through [`Service::poll_event`](crate::Service::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The point accepted our REGISTER.
    Registered {
        /// The rendezvous point.
        point: PeerId,
        /// The namespace we are registered in.
        namespace: Namespace,
        /// The TTL granted (the requested or default TTL if the point named none).
        ttl: Ttl,
        /// Whether this renewed a registration that was still live; `false`
        /// for a first registration and for one that had lapsed.
        refresh: bool,
    },
    /// A REGISTER failed.
    RegisterFailed {
        /// The rendezvous point.
        point: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// The point's refusal, or `None` for a network failure (or an answer
        /// of the wrong kind, or no signed record to send).
        status: Option<ResponseStatus>,
        /// The point's status text or the failure's reason.
        text: String,
        /// When the REGISTER will be retried; `None` means never: the failure
        /// is permanent and the registration was dropped.
        retry_at: Option<Timestamp>,
    },
    /// Our registration lapsed without a successful refresh. Reported once per
    /// lapse; with retries in progress they go on, otherwise the registration
    /// is dropped.
    Expired {
        /// The rendezvous point.
        point: PeerId,
        /// The namespace.
        namespace: Namespace,
    },
    /// A DISCOVER succeeded.
    Discovered {
        /// The rendezvous point.
        point: PeerId,
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// Registrations of this response not cached before (or whose signed
        /// record changed), verified.
        registrations: Vec<CachedRegistration>,
        /// How many registrations the point returned, before any was
        /// filtered out or found already cached. Zero means the point had
        /// nothing after the cookie: the end of a walk. (An empty
        /// `registrations` alone does not tell the end from a page of
        /// nothing new.)
        returned: usize,
        /// Whether the answer carried a cookie. Without one a point cannot
        /// continue where this answer ended (the next DISCOVER starts over
        /// or repeats it), so a walk stops here.
        cookie: bool,
    },
    /// A DISCOVER failed. Discovery is never retried by the service.
    DiscoverFailed {
        /// The rendezvous point.
        point: PeerId,
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// The point's refusal, or `None` for a network failure (or an answer
        /// of the wrong kind).
        status: Option<ResponseStatus>,
        /// The point's status text or the failure's reason.
        text: String,
    },
    /// A cached registration's TTL ran out and it left the cache.
    DiscoveredExpired {
        /// The rendezvous point it was discovered at.
        point: PeerId,
        /// The discovery key it was cached under: the namespace asked for,
        /// `None` for all namespaces. Tells apart the two reports of a
        /// registration cached under both.
        query: Option<Namespace>,
        /// The registration's namespace.
        namespace: Namespace,
        /// The registered peer.
        peer: PeerId,
    },
    /// `count` events were dropped, oldest first, because the queue was full.
    EventsDropped {
        /// How many.
        count: u64,
    },
    /// The service was shut down; this is the last event.
    ShutDown,
}

/// A discovered registration whose signed record verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRegistration {
    /// The registered peer (the record's signer).
    pub peer: PeerId,
    /// The namespace it is registered in.
    pub namespace: Namespace,
    /// The verified peer record: addresses, sequence number, format.
    pub record: VerifiedRecord,
    /// The signed envelope as the point returned it.
    pub signed_peer_record: Bytes,
    /// When the registration expires at the point (`now` + its remaining TTL).
    pub expires_at: Timestamp,
}

/// One of our own registrations, as [`Service::registrations`](crate::Service::registrations) lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnRegistration {
    /// The rendezvous point.
    pub point: PeerId,
    /// The namespace.
    pub namespace: Namespace,
    /// The TTL last granted; `None` until the first success.
    pub ttl: Option<Ttl>,
    /// When the registration expires (or expired) at the point; `None` until
    /// the first success.
    pub expires_at: Option<Timestamp>,
    /// When the next REGISTER (refresh or retry) is due; `None` while one is
    /// in flight or when none is planned.
    pub next_attempt: Option<Timestamp>,
}

/// Counters of what the service dropped, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Discovered registrations dropped because their signed record did not
    /// verify or their namespace was not the one asked for.
    pub records_rejected: u64,
    /// Discovered registrations dropped or evicted because a cache entry was
    /// full.
    pub cache_overflow: u64,
}
