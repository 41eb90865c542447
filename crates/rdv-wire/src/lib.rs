//! Wire formats of rdv's public side: the libp2p rendezvous protocol
//! (`/rendezvous/1.0.0`), its length-prefixed framing, and the signed peer
//! records that registrations carry.
//!
//! Pure encode/decode: no I/O, no clock, no randomness. Every decoder here is
//! safe to feed hostile bytes (it returns an error, never panics) and is the
//! entry point for fuzzing.
//!
//! Spec: libp2p/specs `rendezvous/README.md`; envelopes and records:
//! libp2p/specs RFC 0002 and RFC 0003.

mod codec;
mod framing;
pub mod proto;
pub mod record;
mod time;
mod types;
mod varint;

pub use codec::{DecodeError, decode, encode, encoded_len, registration_encoded_len};
pub use framing::{DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, FrameError, encode_frame};
pub use libp2p_identity::{Keypair, PeerId};
pub use record::{
    Multiaddr, RecordError, RecordFormat, VerifiedRecord, peer_info, sign_record, verify_record,
};
pub use time::Timestamp;
pub use types::*;

/// The protocol id of libp2p rendezvous.
pub const PROTOCOL_ID: &str = "/rendezvous/1.0.0";
