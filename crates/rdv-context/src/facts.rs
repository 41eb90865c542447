//! Rendezvous facts: what the context journal records and synchronises.

use std::fmt;

use crate::channel_record::SealedChannel;
use crate::codec::{DecodeError, Reader, Writer, hex};
use crate::descriptor::{MAX_SEALED_DESCRIPTOR_LEN, SealedDescriptor};
use crate::identity::Identity;
use crate::ids::{AuthorityId, Epoch};
use crate::keys::EpochKeys;
use crate::rekey::{MAX_SEALED_REKEY_LEN, SealedRekey};
use crate::revocation::SealedRevocation;
use crate::seal::AEAD_NONCE_LEN;

/// Largest encoded fact.
pub const MAX_FACT_LEN: usize = 1 + if MAX_SEALED_DESCRIPTOR_LEN > SEALED_REKEY_FACT_LEN {
    MAX_SEALED_DESCRIPTOR_LEN
} else {
    SEALED_REKEY_FACT_LEN
};
const SEALED_REKEY_FACT_LEN: usize = 8 + AEAD_NONCE_LEN + 2 + MAX_SEALED_REKEY_LEN;
const FACT_ID_LABEL: &str = "rdv context v1 fact-id";

/// A fact of the rendezvous domain (the seed's `RendezvousFact`).
///
/// Three departures from the seed, all for security: a revocation is
/// signed by the revoked descriptor's authority (otherwise any member could
/// silence another), a channel fact is signed by the end that recorded it
/// (otherwise any member could record channels that never happened between
/// others), and every fact travels sealed under a key of its epoch
/// (otherwise whoever holds a journal copy reads the context's social
/// graph: who publishes, who talks to whom, who revoked, who removed whom,
/// who the members are). Readable: the kind, the epoch that picks the key,
/// and for a descriptor the context (`docs/PRIVACY.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RendezvousFact {
    /// A transport descriptor advertisement, sealed under the epoch's
    /// descriptor key; its author is inside.
    Descriptor(SealedDescriptor),
    /// A channel was established, recorded (and signed) by one of its ends,
    /// sealed under the epoch's record key ([`SealedChannel`]: who, with
    /// whom and the signature are readable by members of that epoch only).
    ChannelEstablished(SealedChannel),
    /// An epoch advance by an admin (removing members, or not): how the
    /// other members get their sealed share of the next epoch's secret.
    /// Sealed under the record key of the epoch it advances from
    /// ([`SealedRekey`]); opening checks the rotator's signature, and its
    /// MAC and the admin rules are checked by the members that apply it
    /// ([`crate::Context::apply_rekey`]).
    EpochRekey(Box<SealedRekey>),
    /// A descriptor revocation by its authority, sealed under the epoch's
    /// record key ([`SealedRevocation`]).
    DescriptorRevoked(SealedRevocation),
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

    /// `identity`'s revocation of its descriptor with `nonce`, sealed
    /// under `keys` (its context's current epoch).
    pub fn revoke(identity: &Identity, keys: &EpochKeys, nonce: [u8; 32]) -> Self {
        Self::DescriptorRevoked(SealedRevocation::seal(identity, keys, nonce))
    }

    /// The kind.
    pub fn kind(&self) -> FactKind {
        match self {
            Self::Descriptor(_) => FactKind::Descriptor,
            Self::ChannelEstablished(_) => FactKind::ChannelEstablished,
            Self::DescriptorRevoked(_) => FactKind::DescriptorRevoked,
            Self::EpochRekey(_) => FactKind::EpochRekey,
        }
    }

    /// The epoch whose key opens the fact (readable): the sealing epoch,
    /// or for a rekey the epoch it advances from.
    pub fn epoch(&self) -> Epoch {
        match self {
            Self::Descriptor(d) => d.epoch(),
            Self::ChannelEstablished(c) => c.epoch(),
            Self::EpochRekey(r) => r.from_epoch(),
            Self::DescriptorRevoked(r) => r.epoch(),
        }
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
            Self::DescriptorRevoked(r) => r.write(w),
            Self::EpochRekey(r) => r.write(w),
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
            Some(FactKind::DescriptorRevoked) => {
                Self::DescriptorRevoked(SealedRevocation::read(&mut r)?)
            }
            Some(FactKind::EpochRekey) => Self::EpochRekey(Box::new(SealedRekey::read(&mut r)?)),
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
