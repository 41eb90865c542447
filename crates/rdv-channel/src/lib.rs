//! Secure channels of rdv (issue 6), sans-IO except [`tcp`].
//!
//! | concept | module |
//! |---|---|
//! | Noise IKpsk2 on snow (PSK slot 2), injected randomness, transport keys | [`noise`] |
//! | rdv handshake: prologue, PSK confirmation, timeout, replay cache | [`handshake`] |
//! | rdv-context's `Handshaker` on Noise | [`handshaker`]: [`NoiseHandshaker`] |
//! | framing, ordering, rotation | [`channel`]: [`SecureChannel`] |
//! | channels by (context, peer) | [`manager`]: [`ChannelManager`] |
//! | typed choreographies (seed §5) with guard annotations | [`choreography`] |
//! | TCP direct driver (tokio) | [`tcp`]: [`tcp::connect`], [`tcp::accept`], [`TcpChannel`] |

pub mod channel;
pub mod choreography;
pub mod handshake;
pub mod handshaker;
pub mod manager;
pub mod noise;
pub mod quic;
pub mod tcp;

pub use channel::{ChannelError, ChannelState, Incoming, RekeyMaterial, SecureChannel};
pub use handshake::{HandshakeConfig, HandshakeError, Initiator};
pub use handshaker::NoiseHandshaker;
pub use manager::{ChannelManager, ManagedChannel, ManagerError};
pub use tcp::{TcpChannel, TcpConfig, TcpError};
