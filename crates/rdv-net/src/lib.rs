//! rust-libp2p drivers for rdv's sans-IO cores.
//!
//! - [`PointServer`]: serves `/rendezvous/1.0.0` from a [`rdv_point::Point`].
//! - [`client::spawn`]: runs a [`rdv_client::Service`] and gives a [`client::Client`] handle.
//! - [`node::Node`]: a ready libp2p node (TCP, QUIC, Noise, Yamux, identify,
//!   ping, connection limits) for the daemon and the CLI.
//!
//! An application that already has a swarm embeds rendezvous by adding
//! [`inbound::Behaviour`] (to serve) and/or `libp2p_stream::Behaviour` (to
//! open streams as a client) to its `#[derive(NetworkBehaviour)]`; see
//! `examples/embed.rs`.

pub mod client;
pub mod inbound;
pub mod io;
pub mod metrics;
pub mod node;
mod server;

pub use libp2p_stream;
pub use server::{PointServer, ServerConfig};
