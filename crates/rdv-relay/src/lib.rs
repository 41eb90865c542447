//! The sans-IO core of rdv's WebSocket relay (seed `001` §3, §5.2; issue
//! 11): members of a context who cannot reach each other directly open
//! *circuits* to each other through a relay, which forwards opaque frames
//! and never holds a key that opens them (the Noise IKpsk2 handshake and
//! the `SecureChannel` frames run end to end through the circuit).
//!
//! - [`proto`]: the messages, one per WebSocket binary message.
//! - [`grant`]: how a client proves it may use the relay for a context
//!   (a signature under the context's per-epoch, per-relay grant key over
//!   the relay's fresh challenge) and how the relay proves who it is.
//! - [`token`]: the `rdv-relay-v1:` token naming a relay's endpoint and
//!   authority, which `rdv point --relay-listen` prints.
//! - [`router`]: the relay's table of clients and circuits with every
//!   bound (connections per address, clients, circuits per client,
//!   retired grants), as plain state the driver calls into.
//! - [`bucket`]: token buckets for the byte-rate bounds, on injected time.
//! - [`metrics`]: counters the driver updates and the point renders.
//!
//! The drivers are `rdv_net::relay` (the server, in the point daemon) and
//! `rdv_agent::relay` (the member's client).

pub mod bucket;
pub mod grant;
pub mod metrics;
pub mod proto;
pub mod router;
pub mod token;

pub use bucket::TokenBucket;
pub use grant::{GrantKey, RelayIdentity};
pub use metrics::RelayMetrics;
pub use proto::{ClientMsg, CloseReason, ProtoError, ServerMsg};
pub use router::{Limits, Refusal, Router};
pub use token::RelayToken;

/// The URL path the relay serves its WebSocket on.
pub const PATH: &str = "/rdv-relay/v1";
