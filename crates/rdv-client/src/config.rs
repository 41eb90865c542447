//! Configuration of the client service.

use std::time::Duration;

use rdv_wire::Ttl;

/// How the client service registers, refreshes, retries and caches.
///
/// Every default is given next to its field; [`Config::default`] uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// TTL requested when [`Service::register`](crate::Service::register) is
    /// given none. Default: `None`, which sends no TTL and lets the point
    /// choose (the spec's default is 2 h).
    pub default_ttl: Option<Ttl>,
    /// Whether to re-register before a registration expires. Default: `true`.
    pub auto_refresh: bool,
    /// How long before expiry a refresh is sent. When the granted TTL is at
    /// most twice this, the refresh is sent at half the TTL instead (and never
    /// sooner than one second after the grant). Default: 5 min.
    pub refresh_buffer: Duration,
    /// Backoff before the first retry of a failed REGISTER; it doubles with
    /// each further consecutive failure, then is scaled by a random factor in
    /// [0.5, 1.0] (and kept at least 1 ms). Default: 2 s.
    pub backoff_initial: Duration,
    /// Cap of the backoff before jitter. Default: 5 min.
    pub backoff_max: Duration,
    /// Most events held for [`Service::poll_event`](crate::Service::poll_event);
    /// when full the oldest is dropped and counted, and the next poll reports
    /// [`Event::EventsDropped`](crate::Event::EventsDropped). At least 1 is
    /// used. Default: 1024.
    pub max_events: usize,
    /// Most registrations cached per discovery key (point, namespace). When
    /// full, a new entry replaces the one that expires soonest, or is dropped
    /// if it expires sooner still. Default: 10 000.
    pub max_cached_per_query: usize,
    /// Consecutive `E_INTERNAL_ERROR` answers to one registration after
    /// which it is given up (reported with no retry): unlike
    /// `E_UNAVAILABLE`, an internal error may be a point bug that answers
    /// the same every time, and retrying it forever only loads the point.
    /// At least 1 is used. Default: 5.
    pub max_internal_error_retries: u32,
    /// Whether discovered registrations may be unsigned `PeerInfo`s (the
    /// original go schema, py-libp2p). Nothing but the point vouches for
    /// one, so a point could invent addresses for any peer id; a client
    /// that dials what it discovers without another check should refuse
    /// them. Default: `true` (interoperability).
    pub accept_unsigned_records: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_ttl: None,
            auto_refresh: true,
            refresh_buffer: Duration::from_secs(5 * 60),
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(5 * 60),
            max_events: 1024,
            max_cached_per_query: 10_000,
            max_internal_error_retries: 5,
            accept_unsigned_records: true,
        }
    }
}
