//! Configuration of a rendezvous point, with the spec's recommended values
//! as defaults.

use rdv_wire::{DEFAULT_MAX_MESSAGE_SIZE, Ttl};

/// Limits and TTL bounds of a point. Every field a stranger can push against
/// has a bound here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// TTL granted when a REGISTER carries none. Default 2 h (spec).
    pub default_ttl: Ttl,
    /// Shortest TTL accepted. Default 2 h (spec recommendation).
    pub min_ttl: Ttl,
    /// Longest TTL accepted. Default 72 h (spec recommendation).
    pub max_ttl: Ttl,
    /// Registrations one peer may hold across namespaces. Default 100.
    pub max_registrations_per_peer: usize,
    /// Registrations one namespace may hold. Default 1000.
    pub max_registrations_per_namespace: usize,
    /// Namespaces with at least one registration. Default 10 000.
    pub max_namespaces: usize,
    /// Registrations in total. Default 1 000 000: bounds memory, since new
    /// peer ids cost a stranger nothing.
    pub max_registrations: usize,
    /// Most registrations returned by one DISCOVER, whatever `limit` asks.
    /// Default 1000 (spec recommendation).
    pub max_discover_limit: u64,
    /// Largest message read, in bytes. Default 1 MiB. A DISCOVER_RESPONSE is
    /// cut short (with a cookie to continue) to stay inside the smaller of
    /// this and 1 MiB, because rust-libp2p refuses bigger messages.
    pub max_message_size: usize,
    /// Largest signed peer record accepted, in bytes. Default 4 KiB: real
    /// records are a few hundred bytes (go-libp2p caps addresses at 2 KiB).
    pub max_record_size: usize,
    /// Bytes of records stored in total. Default 1 GiB: with free peer ids a
    /// stranger could otherwise fill memory with maximum-size records.
    pub max_stored_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_ttl: Ttl::from_secs(2 * 3600),
            min_ttl: Ttl::from_secs(2 * 3600),
            max_ttl: Ttl::from_secs(72 * 3600),
            max_registrations_per_peer: 100,
            max_registrations_per_namespace: 1000,
            max_namespaces: 10_000,
            max_registrations: 1_000_000,
            max_discover_limit: 1000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_record_size: 4 * 1024,
            max_stored_bytes: 1 << 30,
        }
    }
}

/// Room a DISCOVER_RESPONSE needs besides its registrations: type, status,
/// sub-message header and a cookie, with margin.
pub(crate) const RESPONSE_OVERHEAD: usize = 128;

/// Room a REGISTER needs besides its record: the longest namespace (255
/// bytes), the TTL, field tags and lengths, with margin.
pub const REQUEST_OVERHEAD: usize = 1024;

impl Config {
    /// The largest valid request, in bytes: a REGISTER carrying a record of
    /// `max_record_size` (every other request is smaller). Requests are
    /// read with this limit, so a peer cannot make the point buffer
    /// `max_message_size` per stream; responses keep the larger limit.
    pub fn max_request_size(&self) -> usize {
        (self.max_record_size + REQUEST_OVERHEAD).min(self.max_message_size)
    }

    /// Bytes a DISCOVER_RESPONSE may take: the message size, capped at the
    /// 1 MiB that rust-libp2p reads, less room for everything but registrations.
    pub(crate) fn response_budget(&self) -> usize {
        self.max_message_size
            .min(DEFAULT_MAX_MESSAGE_SIZE)
            .saturating_sub(RESPONSE_OVERHEAD)
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// TTL bounds out of order.
    #[error(
        "ttl bounds must satisfy 1 <= min_ttl ({min}) <= default_ttl ({default}) <= max_ttl ({max}) seconds"
    )]
    TtlBounds {
        /// `min_ttl` in seconds.
        min: u64,
        /// `default_ttl` in seconds.
        default: u64,
        /// `max_ttl` in seconds.
        max: u64,
    },
    /// A count limit is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The record size does not leave room in a message.
    #[error(
        "max_record_size ({record}) must be at most max_message_size ({message}, counted as at most 1 MiB) minus 1024 bytes for the namespace and framing"
    )]
    RecordTooLarge {
        /// `max_record_size`.
        record: usize,
        /// `max_message_size`.
        message: usize,
    },
}

impl Config {
    /// Checks the configuration for values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (min, default, max) = (
            self.min_ttl.as_secs(),
            self.default_ttl.as_secs(),
            self.max_ttl.as_secs(),
        );
        if !(1 <= min && min <= default && default <= max) {
            return Err(ConfigError::TtlBounds { min, default, max });
        }
        for (name, v) in [
            (
                "max_registrations_per_peer",
                self.max_registrations_per_peer,
            ),
            (
                "max_registrations_per_namespace",
                self.max_registrations_per_namespace,
            ),
            ("max_namespaces", self.max_namespaces),
            ("max_registrations", self.max_registrations),
            ("max_discover_limit", self.max_discover_limit as usize),
            ("max_record_size", self.max_record_size),
            ("max_stored_bytes", self.max_stored_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_record_size + 1024 > self.max_message_size.min(DEFAULT_MAX_MESSAGE_SIZE) {
            return Err(ConfigError::RecordTooLarge {
                record: self.max_record_size,
                message: self.max_message_size,
            });
        }
        Ok(())
    }
}
