//! Rendezvous facts: what the context journal records and synchronises.

use std::fmt;

use crate::channel_record::SealedChannel;
use crate::codec::{DecodeError, Reader, Writer, hex};
use crate::descriptor::{MAX_SEALED_DESCRIPTOR_LEN, SealedDescriptor};
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::rekey::EpochRekey;

/// Largest epoch rekey carried as a fact: 64 KiB, room for about 700
/// members' boxes (80 bytes each) besides the lists. A context too large
/// for it cannot remove members through the journal.
pub const MAX_REKEY_FACT_LEN: usize = 64 * 1024;

/// Largest encoded fact.
pub const MAX_FACT_LEN: usize = 1 + if MAX_SEALED_DESCRIPTOR_LEN > MAX_REKEY_FACT_LEN {
    MAX_SEALED_DESCRIPTOR_LEN
} else {
    MAX_REKEY_FACT_LEN
};
const FACT_ID_LABEL: &str = "rdv context v1 fact-id";
const REVOCATION_DOMAIN: &str = "rdv context v1 descriptor-revocation";

/// A fact of the rendezvous domain (the seed's `RendezvousFact`).
///
/// Three departures from the seed, all for security: a descriptor travels
/// sealed (the journal is synchronised and stored, so it holds ciphertext
/// only members open), a revocation is signed by the revoked descriptor's
/// authority (otherwise any member could silence another), and a channel
/// fact is signed by the end that recorded it (otherwise any member could
/// record channels that never happened between others) and sealed under
/// the epoch (otherwise whoever holds a journal copy reads the context's
/// social graph).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RendezvousFact {
    /// A transport descriptor advertisement.
    Descriptor(SealedDescriptor),
    /// A channel was established, recorded (and signed) by one of its ends,
    /// sealed under the epoch's record key ([`SealedChannel`]: who, with
    /// whom and the signature are readable by members of that epoch only).
    ChannelEstablished(SealedChannel),
    /// An epoch advance by an admin (removing members, or not): how the
    /// other members get their sealed share of the next epoch's secret.
    /// Signed by its rotator (checked on receipt); its MAC under the epoch
    /// it advances from and the admin rules are checked by the members that
    /// apply it ([`crate::Context::apply_rekey`]).
    EpochRekey(Box<EpochRekey>),
    /// A descriptor revocation by its authority.
    DescriptorRevoked {
        /// The authority whose descriptor is revoked.
        authority_id: AuthorityId,
        /// The revoked descriptor's nonce.
        nonce: [u8; 32],
        /// The authority's signature over the context and nonce.
        signature: [u8; 64],
    },
}

/// The kind of a fact, for queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKind {
    /// [`RendezvousFact::Descriptor`].
    Descriptor = 1,
    /// [`RendezvousFact::ChannelEstablished`].
    ChannelEstablished = 2,
    /// [`RendezvousFact::DescriptorRevoked`].
    DescriptorRevoked = 3,
    /// [`RendezvousFact::EpochRekey`].
    EpochRekey = 4,
}

impl FactKind {
    /// All kinds.
    pub const ALL: [FactKind; 4] = [
        FactKind::Descriptor,
        FactKind::ChannelEstablished,
        FactKind::DescriptorRevoked,
        FactKind::EpochRekey,
    ];
    /// The tag byte.
    pub fn tag(self) -> u8 {
        self as u8
    }
    /// The kind of a tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A fact's content address: BLAKE3 (derive-key mode, label
/// `rdv context v1 fact-id`) of its canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactId(pub [u8; 32]);

impl fmt::Debug for FactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FactId({})", &hex(&self.0)[..16])
    }
}

impl fmt::Display for FactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl FactId {
    /// The id of canonical fact bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(FACT_ID_LABEL);
        h.update(bytes);
        Self(*h.finalize().as_bytes())
    }
}

fn revocation_body(context: &ContextId, nonce: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.raw(context.as_bytes()).raw(nonce);
    w.into_vec()
}

impl RendezvousFact {
    /// The record, by `identity` (one of the two ends), of a channel
    /// between `initiator` and `responder` made in `epoch`, sealed under
    /// `keys` (the context's current epoch).
    pub fn channel_established(
        identity: &Identity,
        keys: &EpochKeys,
        initiator: AuthorityId,
        responder: AuthorityId,
        channel_id: [u8; 32],
        epoch: Epoch,
    ) -> Self {
        Self::ChannelEstablished(SealedChannel::seal(
            identity, keys, initiator, responder, channel_id, epoch,
        ))
    }

    /// Whether a signed fact's signature holds for `context`, as far as it
    /// can be checked without the epoch's keys: a revocation by the
    /// revoked authority, a rekey of this context by its rotator.
    /// Descriptors and channel records are sealed and checked when opened
    /// ([`SealedChannel::open`]): `true`.
    pub fn verify(&self, context: &ContextId) -> bool {
        match self {
            Self::EpochRekey(r) => r.context_id == *context && r.verify_signature(),
            Self::ChannelEstablished(_) => true,
            _ => self.verify_revocation(context),
        }
    }

    /// A revocation of `identity`'s descriptor with `nonce` in `context`.
    pub fn revoke(identity: &Identity, context: &ContextId, nonce: [u8; 32]) -> Self {
        Self::DescriptorRevoked {
            authority_id: identity.authority(),
            nonce,
            signature: identity.sign(REVOCATION_DOMAIN, &revocation_body(context, &nonce)),
        }
    }

    /// For a revocation: whether its signature is its authority's for
    /// `context`. Other facts: `true`.
    pub fn verify_revocation(&self, context: &ContextId) -> bool {
        match self {
            Self::DescriptorRevoked {
                authority_id,
                nonce,
                signature,
            } => authority_id.verify(
                &signing_message(REVOCATION_DOMAIN, &revocation_body(context, nonce)),
                signature,
            ),
            _ => true,
        }
    }

    /// The kind.
    pub fn kind(&self) -> FactKind {
        match self {
            Self::Descriptor(_) => FactKind::Descriptor,
            Self::ChannelEstablished(_) => FactKind::ChannelEstablished,
            Self::DescriptorRevoked { .. } => FactKind::DescriptorRevoked,
            Self::EpochRekey(_) => FactKind::EpochRekey,
        }
    }

    /// The authority the fact is about, where it is readable: the
    /// publisher of a descriptor, the revoker, or the admin who advanced
    /// the epoch. `None` for a channel record (sealed: who recorded it is
    /// for members to read).
    pub fn authority(&self) -> Option<AuthorityId> {
        match self {
            Self::Descriptor(d) => Some(d.authority_id()),
            Self::ChannelEstablished(_) => None,
            Self::DescriptorRevoked { authority_id, .. } => Some(*authority_id),
            Self::EpochRekey(r) => Some(r.rotator),
        }
    }

    /// Whether the fact is readably about `authority`.
    pub fn involves(&self, authority: &AuthorityId) -> bool {
        self.authority() == Some(*authority)
    }

    /// Canonical bytes: a kind tag then the fields.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(160);
        self.write(&mut w);
        w.into_vec()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(self.kind().tag());
        match self {
            Self::Descriptor(d) => d.write(w),
            Self::ChannelEstablished(c) => c.write(w),
            Self::DescriptorRevoked {
                authority_id,
                nonce,
                signature,
            } => {
                w.raw(authority_id.as_bytes()).raw(nonce).raw(signature);
            }
            Self::EpochRekey(r) => {
                w.raw(&r.to_bytes());
            }
        }
    }

    /// Decodes canonical bytes; refuses more than [`MAX_FACT_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FACT_LEN {
            return Err(DecodeError::TooLong {
                what: "fact",
                len: bytes.len(),
                max: MAX_FACT_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let tag = r.u8("fact kind")?;
        let fact = match FactKind::from_tag(tag) {
            Some(FactKind::Descriptor) => Self::Descriptor(SealedDescriptor::read(&mut r)?),
            Some(FactKind::ChannelEstablished) => {
                Self::ChannelEstablished(SealedChannel::read(&mut r)?)
            }
            Some(FactKind::DescriptorRevoked) => Self::DescriptorRevoked {
                authority_id: AuthorityId::from_bytes(r.array("authority")?)?,
                nonce: r.array("nonce")?,
                signature: r.array("signature")?,
            },
            Some(FactKind::EpochRekey) => {
                let rest = r.take(r.remaining(), "epoch rekey")?;
                if rest.len() > MAX_REKEY_FACT_LEN {
                    return Err(DecodeError::TooLong {
                        what: "epoch rekey",
                        len: rest.len(),
                        max: MAX_REKEY_FACT_LEN,
                    });
                }
                Self::EpochRekey(Box::new(EpochRekey::from_bytes(rest)?))
            }
            None => {
                return Err(DecodeError::UnknownTag {
                    what: "fact kind",
                    tag,
                });
            }
        };
        r.finish("fact")?;
        Ok(fact)
    }

    /// The content address.
    pub fn id(&self) -> FactId {
        FactId::of_bytes(&self.to_bytes())
    }
}
