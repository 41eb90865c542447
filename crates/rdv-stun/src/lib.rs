//! Sans-IO STUN (RFC 8489) for rdv.
//!
//! - [`classify`]: tells STUN from QUIC on a shared UDP socket by the first
//!   byte (RFC 7983 §7, RFC 9443 §3) and the STUN magic cookie.
//! - [`StunServer`]: answers Binding requests with XOR-MAPPED-ADDRESS, keeps no
//!   state per request, limits answers per source IP address, and writes each
//!   answer into a buffer the caller owns (no heap allocation per request).
//! - [`StunClient`]: learns the reflexive address from several servers, in the
//!   quinn-proto style (`handle_input`, `poll_transmit`, `poll_timeout`,
//!   `poll_event`), with RFC 8489 §6.2.1 retransmissions.
//!
//! Nothing here reads a clock, a socket or a random source: time is passed
//! in as [`std::time::Instant`] values, randomness as a seed. The wire format
//! is the `stun-types` crate's (zero-copy parsing, writing into a slice).

mod classify;
mod client;
mod limiter;
mod server;

pub use classify::{Kind, classify};
pub use client::{ClientConfig, ClientCounters, Event, StunClient, Transmit};
pub use limiter::{LimiterConfig, RateLimiter};
pub use server::{Drop, Outcome, ServerConfig, ServerCounters, StunServer};
/// The STUN codec, re-exported so that drivers and tests use the same version.
pub use stun_types;

/// The size of the buffer [`StunServer::handle`] writes into. Its largest
/// answer is a 420 error response listing 16 attribute types (92 bytes);
/// Binding success responses are 52 bytes at most (IPv6
/// XOR-MAPPED-ADDRESS and FINGERPRINT).
pub const MAX_ANSWER: usize = 128;
