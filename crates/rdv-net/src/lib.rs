//! rust-libp2p drivers for rdv's sans-IO cores.
//!
//! - [`PointServer`]: serves `/rendezvous/1.0.0` from a [`rdv_point::Point`].
//! - [`client::spawn`]: runs a [`rdv_client::Service`] and gives a [`client::Client`] handle.
//! - [`stun::serve`]: a STUN server (Binding only) over UDP; [`stun::drive_client`]
//!   runs an `rdv_stun::StunClient` over a socket.
//! - [`node::Node`]: a ready libp2p node (TCP, QUIC, Noise, Yamux, identify,
//!   ping, connection limits) for the daemon and the CLI.
//!
//! An application that already has a swarm embeds rendezvous by adding
//! [`inbound::Behaviour`] (to serve) and/or `libp2p_stream::Behaviour` (to
//! open streams as a client) to its `#[derive(NetworkBehaviour)]`; see
//! `examples/embed.rs`.

pub mod client;
pub mod exposition;
pub mod inbound;
pub mod io;
pub mod ip_limits;
pub mod metrics;
pub mod node;
pub mod quota;
pub mod relay;
mod server;
pub mod stun;

pub use libp2p_stream;
pub use server::{PointServer, ReconfigureError, ServerConfig};

/// A protocol rdv's client listens on and never serves: its presence in a
/// peer's identify tells an rdv point that the peer reads signed records in
/// both formats, whatever its agent version says. (An rdv client embedded in
/// a rust-libp2p application announces rust-libp2p's agent version, and a
/// rust-libp2p rendezvous client refuses a whole answer holding one
/// standard-format record, so the agent version alone would get it legacy
/// records only.)
pub const READS_ALL_RECORD_FORMATS: &str = "/rdv/reads-all-record-formats/1.0.0";
