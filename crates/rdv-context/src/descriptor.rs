//! Rendezvous descriptors: how to reach an authority, signed by it and
//! sealed so that only members of the context read it.
//!
//! A descriptor ([`RendezvousDescriptor`], the seed's fields plus the static
//! X25519 key Noise IK needs) is encoded canonically, signed by its authority
//! (Ed25519, domain `rdv context v1 descriptor`, over the epoch and the
//! body), then sealed with the epoch's descriptor key (XChaCha20-Poly1305,
//! random 24-byte nonce) with the version, context id and epoch as
//! associated data. The result, [`SealedDescriptor`], is what travels in
//! the journal. Its header (context, epoch) is readable so that a reader
//! can pick the key; everything else is ciphertext: the author (issue 13
//! item 8: a journal copy must not show who publishes), the transport
//! addresses, relay, validity and nonce.
//!
//! [`SealedDescriptor::open`] makes the checks that need no memory: context,
//! epoch, AEAD (wrong key), structure, header/body agreement, signature,
//! validity window. Replay, revocation and supersession need memory of what
//! was seen; [`crate::RendezvousService::cache_descriptor`] adds them.

use std::net::{IpAddr, SocketAddr};

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::seal::{AEAD_NONCE_LEN, AEAD_TAG_LEN, aead_open, aead_seal};

/// Most transport hints in one descriptor.
pub const MAX_TRANSPORT_HINTS: usize = 16;
/// Longest address or STUN server string, in bytes.
pub const MAX_ADDR_LEN: usize = 64;
/// Largest descriptor body: version, fixed fields and the most hints of the
/// longest kind.
pub const MAX_DESCRIPTOR_BODY_LEN: usize =
    1 + 32 * 5 + 16 + 2 + MAX_TRANSPORT_HINTS * (1 + 2 * (2 + MAX_ADDR_LEN));
/// Largest sealed descriptor, in bytes.
pub const MAX_SEALED_DESCRIPTOR_LEN: usize =
    SEALED_HEADER_LEN + 2 + padded(2 + MAX_DESCRIPTOR_BODY_LEN + 64) + AEAD_TAG_LEN;
/// The sealed plaintext is zero-padded to a multiple of this many bytes, so
/// a descriptor's size says only roughly how many hints it has: members
/// with similar descriptors, and one member's republications, look alike.
const PAD_TO: usize = 256;

const fn padded(n: usize) -> usize {
    n.div_ceil(PAD_TO) * PAD_TO
}

const DESCRIPTOR_VERSION: u8 = 1;
/// 2: the author is no longer in the readable header.
const SEALED_VERSION: u8 = 2;
const SIGNATURE_DOMAIN: &str = "rdv context v1 descriptor";
const SEAL_AD_LABEL: &[u8] = b"rdv context v1 sealed-descriptor";
const SEALED_HEADER_LEN: usize = 1 + 32 + 8 + AEAD_NONCE_LEN;

/// A transport endpoint hint (the seed's `TransportHint`).
///
/// Addresses are numeric socket addresses in their canonical text form
/// (`203.0.113.5:4433`, `[2001:db8::1]:4433`), checked when a descriptor
/// is sealed and when one is decoded: never a host name (a member must not
/// make others resolve and dial a name of its choosing), never unspecified,
/// multicast, broadcast or port 0; loopback and link-local addresses only
/// as [`DescriptorPolicy`] allows. [`TransportHint::socket_addr`] gives the
/// parsed address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TransportHint {
    /// Direct QUIC connection.
    QuicDirect {
        /// Address, e.g. `203.0.113.5:4433`.
        addr: String,
    },
    /// QUIC to a reflexive address found with STUN.
    QuicReflexive {
        /// The reflexive address.
        addr: String,
        /// The STUN server that reported it.
        stun_server: String,
    },
    /// WebSocket relay through a relay authority.
    WebSocketRelay {
        /// The relay.
        relay_authority: AuthorityId,
        /// Where the relay listens (the seed names the relay by authority
        /// only; members also need its address to use it, and this is how
        /// a relay designated by one member reaches the others).
        addr: String,
    },
    /// Direct TCP connection.
    TcpDirect {
        /// Address.
        addr: String,
    },
}

impl TransportHint {
    /// The address to dial (`None` for a relay hint). Checked at decode, so
    /// this parses for every hint of an opened descriptor.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::QuicDirect { addr }
            | Self::TcpDirect { addr }
            | Self::QuicReflexive { addr, .. } => addr.parse().ok(),
            Self::WebSocketRelay { .. } => None,
        }
    }
    /// Whether the hint reaches the authority without a relay.
    pub fn is_direct(&self) -> bool {
        !matches!(self, Self::WebSocketRelay { .. })
    }
    fn tag(&self) -> u8 {
        match self {
            Self::QuicDirect { .. } => 1,
            Self::QuicReflexive { .. } => 2,
            Self::WebSocketRelay { .. } => 3,
            Self::TcpDirect { .. } => 4,
        }
    }
    fn strings(&self) -> impl Iterator<Item = &String> {
        let (a, b) = match self {
            Self::QuicDirect { addr } | Self::TcpDirect { addr } => (Some(addr), None),
            Self::QuicReflexive { addr, stun_server } => (Some(addr), Some(stun_server)),
            Self::WebSocketRelay { addr, .. } => (Some(addr), None),
        };
        a.into_iter().chain(b)
    }
    fn write(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Self::QuicDirect { addr } | Self::TcpDirect { addr } => {
                w.bytes16(addr.as_bytes());
            }
            Self::QuicReflexive { addr, stun_server } => {
                w.bytes16(addr.as_bytes()).bytes16(stun_server.as_bytes());
            }
            Self::WebSocketRelay {
                relay_authority,
                addr,
            } => {
                w.raw(relay_authority.as_bytes());
                w.bytes16(addr.as_bytes());
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("transport hint kind")?;
        let hint = Self::read_tagged(tag, r)?;
        for s in hint.strings() {
            check_address(s)?;
        }
        Ok(hint)
    }
    fn read_tagged(tag: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match tag {
            1 => Self::QuicDirect {
                addr: r.string16("address", MAX_ADDR_LEN)?,
            },
            2 => Self::QuicReflexive {
                addr: r.string16("address", MAX_ADDR_LEN)?,
                stun_server: r.string16("stun server", MAX_ADDR_LEN)?,
            },
            3 => Self::WebSocketRelay {
                relay_authority: AuthorityId::from_bytes(r.array("relay authority")?)?,
                addr: r.string16("relay address", MAX_ADDR_LEN)?,
            },
            4 => Self::TcpDirect {
                addr: r.string16("address", MAX_ADDR_LEN)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "transport hint kind",
                    tag,
                });
            }
        })
    }
}

/// How to reach an authority in a context (the seed's
/// `RendezvousDescriptor`, plus the static X25519 key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousDescriptor {
    /// The publishing authority.
    pub authority_id: AuthorityId,
    /// The context it is for.
    pub context_id: ContextId,
    /// Endpoints, in the publisher's order of preference.
    pub transport_hints: Vec<TransportHint>,
    /// The publisher's PSK commitment for the epoch
    /// ([`EpochKeys::psk_commitment`]).
    pub handshake_psk_commitment: [u8; 32],
    /// Start of validity, ms since the Unix epoch.
    pub valid_from: u64,
    /// End of validity (exclusive), ms since the Unix epoch.
    pub valid_until: u64,
    /// Random nonce: makes each descriptor unique; replays are refused by it.
    pub nonce: [u8; 32],
    /// The publisher's static X25519 key (Noise IK's responder key).
    pub static_key: [u8; 32],
}

/// Why a descriptor was refused. On every refusal nothing is cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// Malformed bytes (truncated, oversized, garbled).
    #[error("malformed descriptor: {0}")]
    Malformed(#[from] DecodeError),
    /// Larger than [`MAX_SEALED_DESCRIPTOR_LEN`].
    #[error("sealed descriptor of {0} bytes exceeds the maximum {MAX_SEALED_DESCRIPTOR_LEN}")]
    TooLarge(usize),
    /// For another context than the one asked.
    #[error("descriptor for context {found}, expected {expected}")]
    WrongContext {
        /// The context expected.
        expected: ContextId,
        /// The context found.
        found: ContextId,
    },
    /// Sealed for another epoch than the reader's.
    #[error("descriptor sealed for epoch {found}, the context is at epoch {expected}")]
    WrongEpoch {
        /// The reader's epoch.
        expected: Epoch,
        /// The descriptor's.
        found: Epoch,
    },
    /// The AEAD did not open: sealed with another key (not a member, or
    /// another secret), or the ciphertext was altered.
    #[error("descriptor does not open with this context's key (wrong key or altered)")]
    WrongKey,
    /// The readable header (the context) disagrees with the signed body.
    #[error("descriptor header disagrees with its body")]
    HeaderMismatch,
    /// The signature is not the authority's.
    #[error("descriptor signature does not verify for its authority")]
    BadSignature,
    /// `valid_from > valid_until`, or a window longer than allowed.
    #[error(
        "invalid validity window {valid_from}..{valid_until} (at most {max_lifetime_ms} ms long)"
    )]
    InvalidWindow {
        /// Start.
        valid_from: u64,
        /// End.
        valid_until: u64,
        /// The longest window accepted.
        max_lifetime_ms: u64,
    },
    /// Not valid yet (beyond the allowed clock skew).
    #[error("descriptor not valid before {valid_from} ms (now {now_ms} ms)")]
    NotYetValid {
        /// Start.
        valid_from: u64,
        /// Now.
        now_ms: u64,
    },
    /// Expired.
    #[error("descriptor expired at {valid_until} ms (now {now_ms} ms)")]
    Expired {
        /// End.
        valid_until: u64,
        /// Now.
        now_ms: u64,
    },
    /// This authority's nonce was seen before.
    #[error("descriptor nonce already seen for this authority (replay)")]
    Replayed,
    /// A `DescriptorRevoked` fact revoked it.
    #[error("descriptor was revoked by its authority")]
    Revoked,
    /// A newer descriptor of the same authority is already cached.
    #[error("a newer descriptor of this authority is already cached")]
    Superseded,
    /// Sealing with an identity that is not the descriptor's authority, or
    /// keys of another context.
    #[error("cannot seal: {0}")]
    CannotSeal(&'static str),
    /// The reader has no keys for this context.
    #[error("no keys for context {0}")]
    UnknownContext(ContextId),
    /// The cache for this context is full.
    #[error("descriptor cache full ({0} authorities)")]
    CacheFull(usize),
    /// A hint's address is one the reader's policy refuses (loopback,
    /// link-local).
    #[error("transport address {0} is not allowed by this member's policy")]
    AddressNotAllowed(String),
}

/// Limits applied when opening descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorPolicy {
    /// Clock difference tolerated on `valid_from`. Default 30 s.
    pub max_clock_skew_ms: u64,
    /// Longest validity window accepted. Default 24 h: bounds how long a
    /// nonce must be remembered to refuse replays.
    pub max_lifetime_ms: u64,
    /// Accept hints with loopback addresses. Default true: members on one
    /// host (two agents, tests) reach each other so. A member on a shared
    /// machine sets it false, so no member can make it dial its own
    /// loopback services.
    pub allow_loopback: bool,
    /// Accept hints with link-local addresses (169.254/16, fe80::/10).
    /// Default false: they name no host beyond one link.
    pub allow_link_local: bool,
}

impl Default for DescriptorPolicy {
    fn default() -> Self {
        Self {
            max_clock_skew_ms: 30_000,
            max_lifetime_ms: 24 * 3600 * 1000,
            allow_loopback: true,
            allow_link_local: false,
        }
    }
}

/// Parses a hint's address: a numeric socket address in canonical form,
/// not unspecified, multicast, broadcast, nor port 0.
fn check_address(s: &str) -> Result<SocketAddr, DecodeError> {
    let bad = |reason| DecodeError::Invalid {
        what: "transport address",
        reason,
    };
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| bad("not a numeric IP:port socket address (host names are refused)"))?;
    if addr.to_string() != s {
        return Err(bad("not in canonical form"));
    }
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast || addr.port() == 0 {
        return Err(bad(
            "unspecified, multicast or broadcast address, or port 0",
        ));
    }
    Ok(addr)
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl RendezvousDescriptor {
    /// Canonical body bytes (what is signed, with the epoch).
    pub fn to_body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(DESCRIPTOR_VERSION)
            .raw(self.authority_id.as_bytes())
            .raw(self.context_id.as_bytes())
            .raw(&self.static_key)
            .raw(&self.handshake_psk_commitment)
            .u64(self.valid_from)
            .u64(self.valid_until)
            .raw(&self.nonce)
            .u16(self.transport_hints.len() as u16);
        for h in &self.transport_hints {
            h.write(&mut w);
        }
        w.into_vec()
    }

    /// Decodes body bytes.
    pub fn from_body_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let d = Self::read_body(&mut r)?;
        r.finish("descriptor")?;
        Ok(d)
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8("descriptor version")?;
        if v != DESCRIPTOR_VERSION {
            return Err(DecodeError::UnknownTag {
                what: "descriptor version",
                tag: v,
            });
        }
        let authority_id = AuthorityId::from_bytes(r.array("authority")?)?;
        let context_id = ContextId::from_bytes(r.array("context id")?);
        let static_key = r.array("static key")?;
        let handshake_psk_commitment = r.array("psk commitment")?;
        let valid_from = r.u64("valid_from")?;
        let valid_until = r.u64("valid_until")?;
        let nonce = r.array("nonce")?;
        let n = r.count16("transport hints", MAX_TRANSPORT_HINTS)?;
        let mut transport_hints = Vec::with_capacity(n);
        for _ in 0..n {
            transport_hints.push(TransportHint::read(r)?);
        }
        Ok(Self {
            authority_id,
            context_id,
            transport_hints,
            handshake_psk_commitment,
            valid_from,
            valid_until,
            nonce,
            static_key,
        })
    }

    /// Whether any hint reaches the authority without a relay.
    pub fn has_direct_transport(&self) -> bool {
        self.transport_hints.iter().any(TransportHint::is_direct)
    }

    /// Whether `now_ms` is inside the validity window.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        self.valid_from <= now_ms && now_ms < self.valid_until
    }

    fn check_limits(&self) -> Result<(), DescriptorError> {
        if self.transport_hints.len() > MAX_TRANSPORT_HINTS {
            return Err(DecodeError::TooLong {
                what: "transport hints",
                len: self.transport_hints.len(),
                max: MAX_TRANSPORT_HINTS,
            }
            .into());
        }
        for s in self.transport_hints.iter().flat_map(TransportHint::strings) {
            if s.len() > MAX_ADDR_LEN {
                return Err(DecodeError::TooLong {
                    what: "address",
                    len: s.len(),
                    max: MAX_ADDR_LEN,
                }
                .into());
            }
            check_address(s)?;
        }
        Ok(())
    }

    /// Refuses hints whose addresses the policy does not allow.
    fn check_policy(&self, policy: &DescriptorPolicy) -> Result<(), DescriptorError> {
        for s in self.transport_hints.iter().flat_map(TransportHint::strings) {
            let ip = check_address(s)?.ip();
            if ip.is_loopback() && !policy.allow_loopback {
                return Err(DescriptorError::AddressNotAllowed(s.clone()));
            }
            if is_link_local(&ip) && !policy.allow_link_local {
                return Err(DescriptorError::AddressNotAllowed(s.clone()));
            }
        }
        Ok(())
    }

    fn signed_message(&self, epoch: Epoch, body: &[u8]) -> Vec<u8> {
        let mut w = Writer::with_capacity(8 + body.len());
        w.u64(epoch).raw(body);
        signing_message(SIGNATURE_DOMAIN, &w.into_vec())
    }

    /// Signs with `identity` (which must be the descriptor's authority) and
    /// seals under `keys` (which must be the descriptor's context) with the
    /// AEAD nonce `aead_nonce` (24 random bytes: inject them).
    pub fn seal(
        &self,
        identity: &Identity,
        keys: &EpochKeys,
        aead_nonce: [u8; AEAD_NONCE_LEN],
    ) -> Result<SealedDescriptor, DescriptorError> {
        if identity.authority() != self.authority_id {
            return Err(DescriptorError::CannotSeal(
                "the identity is not the descriptor's authority",
            ));
        }
        if keys.context_id() != self.context_id {
            return Err(DescriptorError::CannotSeal(
                "the keys are for another context",
            ));
        }
        self.check_limits()?;
        let body = self.to_body_bytes();
        let signature = identity.sign_message(&self.signed_message(keys.epoch(), &body));
        let mut plain = Writer::with_capacity(padded(2 + body.len() + 64));
        plain.bytes16(&body).raw(&signature);
        let padding = padded(plain.buf.len()) - plain.buf.len();
        plain.raw(&vec![0; padding]);
        let header = SealedHeader {
            context_id: self.context_id,
            epoch: keys.epoch(),
            aead_nonce,
        };
        let ciphertext = aead_seal(keys.descriptor_key(), &aead_nonce, &header.ad(), &plain.buf);
        Ok(SealedDescriptor { header, ciphertext })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SealedHeader {
    context_id: ContextId,
    epoch: Epoch,
    aead_nonce: [u8; AEAD_NONCE_LEN],
}

impl SealedHeader {
    fn ad(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SEAL_AD_LABEL.len() + SEALED_HEADER_LEN);
        w.raw(SEAL_AD_LABEL)
            .u8(SEALED_VERSION)
            .raw(self.context_id.as_bytes())
            .u64(self.epoch);
        w.into_vec()
    }
}

/// A descriptor as it travels: readable header (version, context, epoch,
/// AEAD nonce), then the signed descriptor, its author included, as
/// ciphertext.
///
/// Bytes: `version (1) | context id (32) | epoch (8) | aead nonce (24) |
/// ciphertext length (2) | ciphertext`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SealedDescriptor {
    header: SealedHeader,
    ciphertext: Vec<u8>,
}

impl SealedDescriptor {
    /// The context (readable).
    pub fn context_id(&self) -> ContextId {
        self.header.context_id
    }
    /// The epoch whose key sealed it (readable).
    pub fn epoch(&self) -> Epoch {
        self.header.epoch
    }
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SEALED_HEADER_LEN + 2 + self.ciphertext.len());
        self.write(&mut w);
        w.into_vec()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(SEALED_VERSION)
            .raw(self.header.context_id.as_bytes())
            .u64(self.header.epoch)
            .raw(&self.header.aead_nonce)
            .bytes16(&self.ciphertext);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8("sealed descriptor version")?;
        if v != SEALED_VERSION {
            return Err(DecodeError::UnknownTag {
                what: "sealed descriptor version",
                tag: v,
            });
        }
        let header = SealedHeader {
            context_id: ContextId::from_bytes(r.array("context id")?),
            epoch: r.u64("epoch")?,
            aead_nonce: r.array("aead nonce")?,
        };
        let ciphertext = r
            .bytes16(
                "ciphertext",
                MAX_SEALED_DESCRIPTOR_LEN - SEALED_HEADER_LEN - 2,
            )?
            .to_vec();
        if ciphertext.len() < AEAD_TAG_LEN {
            return Err(DecodeError::Invalid {
                what: "ciphertext",
                reason: "shorter than the AEAD tag",
            });
        }
        Ok(Self { header, ciphertext })
    }

    /// Decodes bytes; refuses more than [`MAX_SEALED_DESCRIPTOR_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.len() > MAX_SEALED_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let s = Self::read(&mut r)?;
        r.finish("sealed descriptor")?;
        Ok(s)
    }

    /// Opens and verifies with `keys` as [`SealedDescriptor::open`] does
    /// (context, epoch, AEAD, structure, header/body agreement, signature,
    /// window length) but at no particular time: journal sync keeps an
    /// expired descriptor (it is history every replica must agree on),
    /// while only [`SealedDescriptor::open`] decides what may be cached.
    pub fn open_any_time(
        &self,
        keys: &EpochKeys,
        policy: &DescriptorPolicy,
    ) -> Result<RendezvousDescriptor, DescriptorError> {
        if self.header.context_id != keys.context_id() {
            return Err(DescriptorError::WrongContext {
                expected: keys.context_id(),
                found: self.header.context_id,
            });
        }
        if self.header.epoch != keys.epoch() {
            return Err(DescriptorError::WrongEpoch {
                expected: keys.epoch(),
                found: self.header.epoch,
            });
        }
        let plain = aead_open(
            keys.descriptor_key(),
            &self.header.aead_nonce,
            &self.header.ad(),
            &self.ciphertext,
        )
        .ok_or(DescriptorError::WrongKey)?;
        let mut r = Reader::new(&plain);
        let body = r.bytes16("descriptor body", MAX_DESCRIPTOR_BODY_LEN)?;
        let signature: [u8; 64] = r.array("descriptor signature")?;
        let padding = r.take(r.remaining(), "padding")?;
        if plain.len() % PAD_TO != 0 || padding.len() >= PAD_TO || padding.iter().any(|b| *b != 0) {
            return Err(DecodeError::Invalid {
                what: "sealed plaintext",
                reason: "not zero-padded to the size buckets",
            }
            .into());
        }
        let d = RendezvousDescriptor::from_body_bytes(body)?;
        if d.context_id != self.header.context_id {
            return Err(DescriptorError::HeaderMismatch);
        }
        if !d
            .authority_id
            .verify(&d.signed_message(self.header.epoch, body), &signature)
        {
            return Err(DescriptorError::BadSignature);
        }
        if d.valid_from > d.valid_until || d.valid_until - d.valid_from > policy.max_lifetime_ms {
            return Err(DescriptorError::InvalidWindow {
                valid_from: d.valid_from,
                valid_until: d.valid_until,
                max_lifetime_ms: policy.max_lifetime_ms,
            });
        }
        Ok(d)
    }

    /// Opens and verifies with `keys` at `now_ms`: context, epoch, AEAD,
    /// structure, header/body agreement, signature, validity window. Cheap
    /// checks come first; the signature is checked before the window so
    /// that a forger learns nothing about timing rules.
    pub fn open(
        &self,
        keys: &EpochKeys,
        now_ms: u64,
        policy: &DescriptorPolicy,
    ) -> Result<RendezvousDescriptor, DescriptorError> {
        let d = self.open_any_time(keys, policy)?;
        if now_ms.saturating_add(policy.max_clock_skew_ms) < d.valid_from {
            return Err(DescriptorError::NotYetValid {
                valid_from: d.valid_from,
                now_ms,
            });
        }
        if now_ms >= d.valid_until {
            return Err(DescriptorError::Expired {
                valid_until: d.valid_until,
                now_ms,
            });
        }
        d.check_policy(policy)?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::EpochSecret;

    fn keys() -> EpochKeys {
        EpochKeys::derive(
            ContextId::from_bytes([9; 32]),
            3,
            &EpochSecret::from_bytes([5; 32]),
        )
    }

    fn descriptor(id: &Identity, keys: &EpochKeys) -> RendezvousDescriptor {
        RendezvousDescriptor {
            authority_id: id.authority(),
            context_id: keys.context_id(),
            transport_hints: vec![TransportHint::QuicDirect {
                addr: "192.0.2.1:4433".into(),
            }],
            handshake_psk_commitment: keys.psk_commitment(&id.authority()),
            valid_from: 1000,
            valid_until: 2000,
            nonce: [1; 32],
            static_key: id.static_public(),
        }
    }

    /// Seals `body` with `signer`'s signature whatever the body says: what
    /// a member forging another member's descriptor would do.
    fn forge(
        body: &RendezvousDescriptor,
        header_context: ContextId,
        signer: &Identity,
        keys: &EpochKeys,
    ) -> SealedDescriptor {
        let bytes = body.to_body_bytes();
        let signature = signer.sign_message(&body.signed_message(keys.epoch(), &bytes));
        let mut plain = Writer::default();
        plain.bytes16(&bytes).raw(&signature);
        let padding = padded(plain.buf.len()) - plain.buf.len();
        plain.raw(&vec![0; padding]);
        let header = SealedHeader {
            context_id: header_context,
            epoch: keys.epoch(),
            aead_nonce: [7; AEAD_NONCE_LEN],
        };
        SealedDescriptor {
            ciphertext: aead_seal(
                keys.descriptor_key(),
                &header.aead_nonce,
                &header.ad(),
                &plain.buf,
            ),
            header,
        }
    }

    #[test]
    fn descriptor_signed_by_another_member_is_refused_as_bad_signature() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let mallory = Identity::from_secret_bytes([3; 32], [4; 32]);
        let forged = forge(&descriptor(&bob, &k), k.context_id(), &mallory, &k);
        assert_eq!(
            forged.open(&k, 1500, &DescriptorPolicy::default()),
            Err(DescriptorError::BadSignature)
        );
    }

    #[test]
    fn header_naming_another_context_than_the_body_is_refused() {
        // A member of two contexts that share a secret (or a forger holding
        // the key) moves a descriptor under another context's header.
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let mut body = descriptor(&bob, &k);
        body.context_id = ContextId::from_bytes([8; 32]);
        let forged = forge(&body, k.context_id(), &bob, &k);
        assert_eq!(
            forged.open(&k, 1500, &DescriptorPolicy::default()),
            Err(DescriptorError::HeaderMismatch)
        );
    }

    #[test]
    fn a_sealed_descriptor_does_not_name_its_author() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let bytes = descriptor(&bob, &k)
            .seal(&bob, &k, [0; 24])
            .unwrap()
            .to_bytes();
        for secret in [bob.authority().as_bytes(), &bob.static_public()] {
            assert!(!bytes.windows(32).any(|x| x == secret));
        }
    }

    #[test]
    fn sealed_sizes_fall_in_buckets_and_padding_must_be_zero() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let one = descriptor(&bob, &k);
        // One IPv4 hint of each kind, the longest addresses there are:
        // the same size as a single hint (docs/PRIVACY.md says so).
        let long = "223.255.255.254:65535".to_owned();
        let mut all = one.clone();
        all.transport_hints = vec![
            TransportHint::QuicDirect { addr: long.clone() },
            TransportHint::QuicReflexive {
                addr: long.clone(),
                stun_server: long.clone(),
            },
            TransportHint::TcpDirect { addr: long.clone() },
            TransportHint::WebSocketRelay {
                relay_authority: bob.authority(),
                addr: long,
            },
        ];
        let size = |d: &RendezvousDescriptor| d.seal(&bob, &k, [0; 24]).unwrap().to_bytes().len();
        assert_eq!(size(&one), size(&all), "four hints more, same bucket");
        // A member holding the key pads with something else than zeros.
        let bytes = one.to_body_bytes();
        let signature = bob.sign_message(&one.signed_message(k.epoch(), &bytes));
        let mut plain = Writer::default();
        plain.bytes16(&bytes).raw(&signature);
        let padding = padded(plain.buf.len()) - plain.buf.len();
        plain.raw(&vec![1; padding]);
        let header = SealedHeader {
            context_id: k.context_id(),
            epoch: k.epoch(),
            aead_nonce: [7; AEAD_NONCE_LEN],
        };
        let odd = SealedDescriptor {
            ciphertext: aead_seal(
                k.descriptor_key(),
                &header.aead_nonce,
                &header.ad(),
                &plain.buf,
            ),
            header,
        };
        assert!(matches!(
            odd.open(&k, 1500, &DescriptorPolicy::default()),
            Err(DescriptorError::Malformed(_))
        ));
    }

    #[test]
    fn signature_binds_the_epoch() {
        // A descriptor signed for epoch 3 but sealed under epoch 4's key
        // (by a member holding both) does not verify.
        let k3 = keys();
        let k4 = EpochKeys::derive(k3.context_id(), 4, &EpochSecret::from_bytes([5; 32]));
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let d = descriptor(&bob, &k3);
        let bytes = d.to_body_bytes();
        let signature = bob.sign_message(&d.signed_message(3, &bytes));
        let mut plain = Writer::default();
        plain.bytes16(&bytes).raw(&signature);
        let padding = padded(plain.buf.len()) - plain.buf.len();
        plain.raw(&vec![0; padding]);
        let header = SealedHeader {
            context_id: k4.context_id(),
            epoch: 4,
            aead_nonce: [7; AEAD_NONCE_LEN],
        };
        let sealed = SealedDescriptor {
            ciphertext: aead_seal(
                k4.descriptor_key(),
                &header.aead_nonce,
                &header.ad(),
                &plain.buf,
            ),
            header,
        };
        assert_eq!(
            sealed.open(&k4, 1500, &DescriptorPolicy::default()),
            Err(DescriptorError::BadSignature)
        );
    }

    #[test]
    fn sealing_as_someone_else_or_for_another_context_is_refused() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let mallory = Identity::from_secret_bytes([3; 32], [4; 32]);
        assert!(matches!(
            descriptor(&bob, &k).seal(&mallory, &k, [0; 24]),
            Err(DescriptorError::CannotSeal(_))
        ));
        let other = EpochKeys::derive(
            ContextId::from_bytes([8; 32]),
            3,
            &EpochSecret::from_bytes([5; 32]),
        );
        assert!(matches!(
            descriptor(&bob, &k).seal(&bob, &other, [0; 24]),
            Err(DescriptorError::CannotSeal(_))
        ));
    }

    #[test]
    fn hint_addresses_are_numeric_socket_addresses_checked_at_decode() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        for bad in [
            "localhost:80",
            "example.com:443",
            "203.0.113.5",
            "203.0.113.5:0",
            "0.0.0.0:4433",
            "[::]:4433",
            "224.0.0.1:5353",
            "255.255.255.255:9",
            "[ff02::1]:4433",
            " 203.0.113.5:4433",
            "203.000.113.5:4433",
        ] {
            let mut d = descriptor(&bob, &k);
            d.transport_hints = vec![TransportHint::TcpDirect { addr: bad.into() }];
            // Refused when sealing...
            assert!(
                matches!(
                    d.seal(&bob, &k, [0; 24]),
                    Err(DescriptorError::Malformed(_))
                ),
                "{bad}"
            );
            // ... and when decoding bytes a hostile member wrote by hand.
            assert!(
                RendezvousDescriptor::from_body_bytes(&d.to_body_bytes()).is_err(),
                "{bad}"
            );
        }
        let mut d = descriptor(&bob, &k);
        d.transport_hints = vec![TransportHint::QuicDirect {
            addr: "[2001:db8::7]:4433".into(),
        }];
        let back = RendezvousDescriptor::from_body_bytes(&d.to_body_bytes()).unwrap();
        assert_eq!(
            back.transport_hints[0].socket_addr(),
            Some("[2001:db8::7]:4433".parse().unwrap())
        );
    }

    #[test]
    fn loopback_and_link_local_hints_follow_the_readers_policy() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let strict = DescriptorPolicy {
            allow_loopback: false,
            ..DescriptorPolicy::default()
        };
        for (addr, default_ok) in [
            ("127.0.0.1:4433", true),
            ("[::1]:4433", true),
            ("169.254.10.1:4433", false),
            ("[fe80::1]:4433", false),
            ("203.0.113.9:4433", true),
        ] {
            let mut d = descriptor(&bob, &k);
            d.transport_hints = vec![TransportHint::TcpDirect { addr: addr.into() }];
            let sealed = d.seal(&bob, &k, [0; 24]).unwrap();
            let got = sealed.open(&k, 1500, &DescriptorPolicy::default());
            assert_eq!(got.is_ok(), default_ok, "{addr}: {got:?}");
            let strict_ok = default_ok && !addr.starts_with("127.") && !addr.starts_with("[::1]");
            let got = sealed.open(&k, 1500, &strict);
            assert_eq!(got.is_ok(), strict_ok, "{addr}: {got:?}");
            if !strict_ok {
                assert_eq!(got, Err(DescriptorError::AddressNotAllowed(addr.into())));
            }
        }
    }

    #[test]
    fn maximal_descriptor_fits_the_bound() {
        let k = keys();
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let mut d = descriptor(&bob, &k);
        // The longest canonical socket address there is.
        let longest = "[efff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";
        assert!(longest.len() <= MAX_ADDR_LEN);
        assert!(check_address(longest).is_ok());
        d.transport_hints = vec![
            TransportHint::QuicReflexive {
                addr: longest.into(),
                stun_server: longest.into(),
            };
            MAX_TRANSPORT_HINTS
        ];
        let sealed = d.seal(&bob, &k, [0; 24]).unwrap();
        let bytes = sealed.to_bytes();
        assert!(bytes.len() <= MAX_SEALED_DESCRIPTOR_LEN, "{}", bytes.len());
        assert_eq!(SealedDescriptor::from_bytes(&bytes).unwrap(), sealed);
        assert_eq!(
            sealed.open(&k, 1500, &DescriptorPolicy::default()).unwrap(),
            d
        );
        d.transport_hints.push(TransportHint::TcpDirect {
            addr: "192.0.2.1:1".into(),
        });
        assert!(matches!(
            d.seal(&bob, &k, [0; 24]),
            Err(DescriptorError::Malformed(_))
        ));
    }
}
