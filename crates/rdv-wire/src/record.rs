//! Signed envelopes (libp2p RFC 0002) carrying peer records (RFC 0003), in
//! both formats found in the field.
//!
//! - **Standard**: domain `libp2p-peer-record`, payload type `0x03 0x01`
//!   (go-libp2p, js-libp2p, the RFC).
//! - **Legacy**: domain `libp2p-routing-state`, payload type
//!   `/libp2p/routing-state-record` (rust-libp2p's rendezvous).
//! - **PeerInfo**: not an envelope at all. go-libp2p-rendezvous's original
//!   schema has an unsigned `PeerInfo { bytes id = 1; repeated bytes addrs
//!   = 2; }` in `Register` field 2, and py-libp2p (0.8) still speaks it.
//!   Nothing in it is signed: what vouches for it is the connection it
//!   arrived on, so a point accepts one only when `id` is the authenticated
//!   remote peer (the check a point makes of every record's peer anyway),
//!   and a client that reads one trusts the point it asked.
//!
//! Envelope signing and verification are libp2p-core's [`SignedEnvelope`];
//! this module chooses the format and reads the RFC 0003 payload. Signing takes the
//! sequence number as an argument, so records are deterministic in tests.

use libp2p_core::SignedEnvelope;
use libp2p_identity::{Keypair, PeerId};
use prost::Message as _;

pub use libp2p_core::Multiaddr;

use crate::proto;
use crate::types::ResponseStatus;

/// Domain of standard peer records (RFC 0003).
pub const STANDARD_DOMAIN: &str = "libp2p-peer-record";
/// Payload type of standard peer records: multicodec `libp2p-peer-record` (0x0301).
pub const STANDARD_PAYLOAD_TYPE: &[u8] = &[0x03, 0x01];
/// Domain rust-libp2p's rendezvous signs with.
pub const LEGACY_DOMAIN: &str = "libp2p-routing-state";
/// Payload type rust-libp2p's rendezvous signs with.
pub const LEGACY_PAYLOAD_TYPE: &[u8] = b"/libp2p/routing-state-record";

/// Which envelope format a record uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// RFC 0003 (go, js).
    Standard,
    /// rust-libp2p's rendezvous.
    Legacy,
    /// The unsigned `PeerInfo` of go-libp2p-rendezvous's original schema
    /// (py-libp2p): vouched for by the connection, not by a signature.
    PeerInfo,
}

impl RecordFormat {
    /// Every format, in the order a client tries them.
    pub const ALL: [RecordFormat; 3] = [Self::Standard, Self::Legacy, Self::PeerInfo];

    /// Domain and payload type of the signed formats.
    fn domain_and_type(self) -> Option<(&'static str, &'static [u8])> {
        match self {
            Self::Standard => Some((STANDARD_DOMAIN, STANDARD_PAYLOAD_TYPE)),
            Self::Legacy => Some((LEGACY_DOMAIN, LEGACY_PAYLOAD_TYPE)),
            Self::PeerInfo => None,
        }
    }
}

/// A peer record whose envelope signature checked out and whose signer is the
/// peer it names, or a well-formed unsigned `PeerInfo` (format
/// [`RecordFormat::PeerInfo`]: `peer_id` is only what it claims, to be held
/// against the connection it came on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The peer the record describes and that signed it.
    pub peer_id: PeerId,
    /// The record's sequence number (0 for a `PeerInfo`, which has none).
    pub seq: u64,
    /// The addresses it advertises.
    pub addresses: Vec<Multiaddr>,
    /// The envelope format it was signed in.
    pub format: RecordFormat,
}

/// Why a signed peer record was refused. All map to `E_INVALID_SIGNED_PEER_RECORD`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a signed envelope, or its public key is not a libp2p key.
    #[error("neither a signed envelope nor a PeerInfo: {0}")]
    Envelope(#[from] libp2p_core::signed_envelope::DecodingError),
    /// The envelope holds something other than a peer record.
    #[error(
        "envelope does not hold a peer record (neither the standard nor the rust-libp2p payload type)"
    )]
    NotAPeerRecord,
    /// The signature does not verify, or the record's peer id is not the signer's.
    #[error("peer record signature is invalid or not by the peer it names")]
    BadSignature,
    /// The payload is not a valid peer record.
    #[error("peer record payload is malformed: {0}")]
    Malformed(String),
}

impl RecordError {
    /// The status a point answers with: `E_INVALID_SIGNED_PEER_RECORD`,
    /// whatever was wrong with the record.
    pub const fn status(&self) -> ResponseStatus {
        ResponseStatus::InvalidSignedPeerRecord
    }
}

/// Signs a peer record for `key` with `addresses` in `format`, returning the
/// envelope bytes that go in `signedPeerRecord`. For
/// [`RecordFormat::PeerInfo`], the unsigned `PeerInfo` bytes that go in the
/// same field (`seq` is not part of it).
pub fn sign_record(
    key: &Keypair,
    addresses: &[Multiaddr],
    seq: u64,
    format: RecordFormat,
) -> Result<Vec<u8>, libp2p_identity::SigningError> {
    let Some((domain, payload_type)) = format.domain_and_type() else {
        return Ok(peer_info(&key.public().to_peer_id(), addresses));
    };
    let payload = proto::PeerRecord {
        peer_id: key.public().to_peer_id().to_bytes(),
        seq,
        addresses: addresses
            .iter()
            .map(|a| proto::AddressInfo {
                multiaddr: a.to_vec(),
            })
            .collect(),
    }
    .encode_to_vec();
    let envelope = SignedEnvelope::new(key, domain.to_owned(), payload_type.to_vec(), payload)?;
    Ok(envelope.into_protobuf_encoding())
}

/// The unsigned `PeerInfo` bytes of `peer` with `addresses`
/// (go-libp2p-rendezvous's original schema).
pub fn peer_info(peer: &PeerId, addresses: &[Multiaddr]) -> Vec<u8> {
    proto::PeerInfo {
        id: peer.to_bytes(),
        addrs: addresses.iter().map(|a| a.to_vec()).collect(),
    }
    .encode_to_vec()
}

/// Reads the bytes of `Register` field 2 in any of the three formats:
/// verifies a signed envelope (standard or legacy), or reads an unsigned
/// `PeerInfo` if the bytes are not an envelope.
///
/// A `PeerInfo` passes on form alone (its id a peer id): the caller must
/// hold its `peer_id` against the peer that sent it, as a point does for
/// every format. The two cannot be confused: an envelope's field 1 is a
/// public key message (first byte `0x08`), which is not a peer id, and a
/// peer id (first byte `0x00` or `0x12`) is not a public key message.
///
/// Addresses this build cannot parse (a protocol newer than our `multiaddr`)
/// are left out rather than failing the record: the signature covers them
/// and the point serves the envelope verbatim, so other peers still get them.
///
/// CPU-bound (one signature check); a driver should run it off its event loop.
pub fn verify_record(bytes: &[u8]) -> Result<VerifiedRecord, RecordError> {
    use libp2p_core::signed_envelope::ReadPayloadError as P;

    let envelope = match SignedEnvelope::from_protobuf_encoding(bytes) {
        Ok(envelope) => envelope,
        Err(e) => return read_peer_info(bytes).ok_or(RecordError::Envelope(e)),
    };
    for format in [RecordFormat::Standard, RecordFormat::Legacy] {
        let Some((domain, payload_type)) = format.domain_and_type() else {
            continue;
        };
        let (payload, signer) =
            match envelope.payload_and_signing_key(domain.to_owned(), payload_type) {
                Ok(found) => found,
                // Wrong format: try the other one.
                Err(P::UnexpectedPayloadType { .. }) => continue,
                Err(P::InvalidSignature) => return Err(RecordError::BadSignature),
            };
        let record = proto::PeerRecord::decode(payload)
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        let peer_id = PeerId::from_bytes(&record.peer_id)
            .map_err(|e| RecordError::Malformed(format!("peer id: {e}")))?;
        if peer_id != signer.to_peer_id() {
            return Err(RecordError::BadSignature);
        }
        let addresses = record
            .addresses
            .into_iter()
            .filter_map(|a| Multiaddr::try_from(a.multiaddr).ok())
            .collect();
        return Ok(VerifiedRecord {
            peer_id,
            seq: record.seq,
            addresses,
            format,
        });
    }
    Err(RecordError::NotAPeerRecord)
}

/// An unsigned `PeerInfo`, if `bytes` are one with a valid peer id.
fn read_peer_info(bytes: &[u8]) -> Option<VerifiedRecord> {
    let info = proto::PeerInfo::decode(bytes).ok()?;
    let peer_id = PeerId::from_bytes(&info.id).ok()?;
    Some(VerifiedRecord {
        peer_id,
        seq: 0,
        // As for signed records: what this build cannot parse is left out
        // here and still served verbatim.
        addresses: info
            .addrs
            .into_iter()
            .filter_map(|a| Multiaddr::try_from(a).ok())
            .collect(),
        format: RecordFormat::PeerInfo,
    })
}
