//! The epoch rekey message and the rule that orders concurrent rekeys.
//!
//! Governance (see `docs/KEY-SCHEDULE.md`, "Who may advance the epoch"):
//! only an admin of the current epoch may advance it; the creator is the
//! first admin, and an advance may appoint more (appended, so the list is in
//! order of seniority). An admin cannot remove itself. When two admins
//! advance from the same epoch at once, every member keeps the same one,
//! the higher [`Rank`]: a rekey that removes members beats one that does
//! not (so a member being removed cannot escape by advancing first), then
//! the more senior admin wins, then the lower rekey id.

use std::cmp::Reverse;
use std::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::signing_message;
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::record_seal::{self, RecordError};
use crate::seal::{AEAD_NONCE_LEN, AEAD_TAG_LEN};

pub(crate) const REKEY_DOMAIN: &str = "rdv context v1 epoch-rekey";
pub(crate) const SEALED_SECRET_LEN: usize = 32 + AEAD_TAG_LEN;
const REKEY_VERSION: u8 = 2;

/// Most members a context tracks (and an epoch rekey can carry).
pub const MAX_MEMBERS: usize = 1024;
/// Most admins a context has.
pub const MAX_ADMINS: usize = 64;

/// The message that moves members to the next epoch: the fresh randomness
/// sealed to each remaining member, the removal list, the next epoch's
/// admins, a MAC proving the author holds the current secret, and the
/// author's signature.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EpochRekey {
    /// The context.
    pub context_id: ContextId,
    /// The epoch it advances from.
    pub from_epoch: Epoch,
    /// The epoch it advances to (`from_epoch + 1`).
    pub to_epoch: Epoch,
    /// The admin who advanced.
    pub rotator: AuthorityId,
    /// Removed members, sorted.
    pub removed: Vec<AuthorityId>,
    /// The admins of `to_epoch`, most senior first: the admins of
    /// `from_epoch` that were not removed, in their order, then any the
    /// rotator appointed.
    pub admins: Vec<AuthorityId>,
    /// The ephemeral X25519 key of the boxes.
    pub ephemeral_public: [u8; 32],
    /// One box per remaining member: the fresh randomness sealed to its
    /// static key.
    pub recipients: Vec<(AuthorityId, Vec<u8>)>,
    /// Keyed BLAKE3 under the `from_epoch` rekey key of everything above.
    pub membership_mac: [u8; 32],
    /// The rotator's signature over everything above.
    pub signature: [u8; 64],
}

impl fmt::Debug for EpochRekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochRekey")
            .field("context_id", &self.context_id)
            .field("from_epoch", &self.from_epoch)
            .field("to_epoch", &self.to_epoch)
            .field("rotator", &self.rotator)
            .field("removed", &self.removed)
            .field("admins", &self.admins)
            .field("recipients", &self.recipients.len())
            .finish_non_exhaustive()
    }
}

/// The order of concurrent rekeys from one epoch: the greater is kept by
/// every member. (removes anyone, seniority of the rotator, lower id)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    pub(crate) removes: bool,
    pub(crate) seniority: Reverse<usize>,
    id: Reverse<[u8; 32]>,
}

impl Rank {
    pub(crate) fn new(removes: bool, seniority: usize, id: [u8; 32]) -> Self {
        Self {
            removes,
            seniority: Reverse(seniority),
            id: Reverse(id),
        }
    }
}

impl EpochRekey {
    pub(crate) fn mac_body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            160 + 32 * (self.removed.len() + self.admins.len()) + 80 * self.recipients.len(),
        );
        w.u8(REKEY_VERSION)
            .raw(self.context_id.as_bytes())
            .u64(self.from_epoch)
            .u64(self.to_epoch)
            .raw(self.rotator.as_bytes());
        write_authorities(&mut w, self.removed.iter());
        write_authorities(&mut w, self.admins.iter());
        w.raw(&self.ephemeral_public)
            .u16(self.recipients.len() as u16);
        for (a, b) in &self.recipients {
            w.raw(a.as_bytes()).raw(b);
        }
        w.into_vec()
    }

    pub(crate) fn signed_body(&self) -> Vec<u8> {
        let mut b = self.mac_body();
        b.extend_from_slice(&self.membership_mac);
        b
    }

    /// Where this rekey stands among concurrent ones, given the admins of
    /// the epoch it advances from (`None` if its rotator is not one).
    pub(crate) fn rank(&self, admins: &[AuthorityId]) -> Option<Rank> {
        let seniority = admins.iter().position(|a| *a == self.rotator)?;
        Some(Rank::new(!self.removed.is_empty(), seniority, self.id()))
    }

    /// Whether the signature is the rotator's. What else a rekey must pass
    /// (the MAC under the epoch it advances from, the admin rules) needs the
    /// context: [`crate::Context::apply_rekey`].
    pub fn verify_signature(&self) -> bool {
        self.rotator.verify(
            &signing_message(REKEY_DOMAIN, &self.signed_body()),
            &self.signature,
        )
    }

    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.signed_body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// The rekey's id: BLAKE3 of its bytes.
    pub fn id(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// Decodes bytes (structure only; [`crate::Context::apply_rekey`] checks
    /// the rest).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("rekey version")?;
        if v != REKEY_VERSION {
            return Err(DecodeError::UnknownTag {
                what: "rekey version",
                tag: v,
            });
        }
        let context_id = ContextId::from_bytes(r.array("context id")?);
        let from_epoch = r.u64("from epoch")?;
        let to_epoch = r.u64("to epoch")?;
        let rotator = AuthorityId::from_bytes(r.array("rotator")?)?;
        let removed = read_authorities(&mut r, "removed members", MAX_MEMBERS)?;
        if removed.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::Invalid {
                what: "removed members",
                reason: "not sorted and distinct",
            });
        }
        let admins = read_authorities(&mut r, "admins", MAX_ADMINS)?;
        let ephemeral_public = r.array("ephemeral key")?;
        let n = r.count16("recipients", MAX_MEMBERS)?;
        let mut recipients = Vec::with_capacity(n);
        for _ in 0..n {
            let a = AuthorityId::from_bytes(r.array("recipient")?)?;
            recipients.push((a, r.take(SEALED_SECRET_LEN, "sealed secret")?.to_vec()));
        }
        let membership_mac = r.array("membership mac")?;
        let signature = r.array("signature")?;
        r.finish("epoch rekey")?;
        Ok(Self {
            context_id,
            from_epoch,
            to_epoch,
            rotator,
            removed,
            admins,
            ephemeral_public,
            recipients,
            membership_mac,
            signature,
        })
    }
}

pub(crate) fn read_authorities(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<Vec<AuthorityId>, DecodeError> {
    let n = r.count16(what, max)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(AuthorityId::from_bytes(r.array(what)?)?);
    }
    Ok(out)
}

pub(crate) fn write_authorities<'a>(
    w: &mut Writer,
    authorities: impl ExactSizeIterator<Item = &'a AuthorityId>,
) {
    w.u16(authorities.len() as u16);
    for a in authorities {
        w.raw(a.as_bytes());
    }
}

const SEALED_REKEY_AD: &[u8] = b"rdv context v1 sealed epoch-rekey";
/// Largest sealed rekey's ciphertext: 64 KiB less a byte (a 16-bit
/// length), room for about 700 members' boxes (80 bytes each) besides the
/// lists. A context too large for it cannot advance its epoch through the
/// journal.
pub const MAX_SEALED_REKEY_LEN: usize = u16::MAX as usize;

/// An [`EpochRekey`] as the journal holds it: sealed under the record key
/// of the epoch it advances from ([`crate::record_seal`]).
///
/// Everyone who must apply a rekey holds that epoch's key: the members it
/// keeps, and the ones it removes (who learn they were removed). A copy of
/// the journal read without it shows neither the rotator, nor who was
/// removed, nor who the admins and members are: only the epoch it advances
/// from. Its signature, MAC and admin rules are checked once opened.
///
/// Bytes: `from epoch (8) | nonce (24) | ciphertext length (2) | ciphertext`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SealedRekey {
    from_epoch: Epoch,
    nonce: [u8; AEAD_NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl SealedRekey {
    /// Seals `rekey` under `keys`, the keys of the epoch it advances from.
    /// `None` if the keys are of another context or epoch, or the rekey is
    /// larger than [`MAX_SEALED_REKEY_LEN`] allows.
    pub fn seal(rekey: &EpochRekey, keys: &EpochKeys) -> Option<Self> {
        if keys.context_id() != rekey.context_id || keys.epoch() != rekey.from_epoch {
            return None;
        }
        let (nonce, ciphertext) = record_seal::seal(keys, SEALED_REKEY_AD, &rekey.to_bytes());
        (ciphertext.len() <= MAX_SEALED_REKEY_LEN).then_some(Self {
            from_epoch: rekey.from_epoch,
            nonce,
            ciphertext,
        })
    }

    /// The epoch it advances from, whose key opens it (readable).
    pub fn from_epoch(&self) -> Epoch {
        self.from_epoch
    }

    /// Opens with the keys of the epoch it advances from and checks its
    /// structure, that it is for that context and epoch, and the rotator's
    /// signature.
    pub fn open(&self, keys: &EpochKeys) -> Result<EpochRekey, RecordError> {
        let plain = record_seal::open(
            keys,
            SEALED_REKEY_AD,
            self.from_epoch,
            &self.nonce,
            &self.ciphertext,
        )?;
        let rekey = EpochRekey::from_bytes(&plain).map_err(|_| RecordError::Malformed)?;
        if rekey.context_id != keys.context_id() || rekey.from_epoch != self.from_epoch {
            return Err(RecordError::Malformed);
        }
        if !rekey.verify_signature() {
            return Err(RecordError::BadSignature);
        }
        Ok(rekey)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.from_epoch)
            .raw(&self.nonce)
            .bytes16(&self.ciphertext);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let from_epoch = r.u64("from epoch")?;
        let nonce = r.array("nonce")?;
        let ciphertext = r
            .bytes16("sealed epoch rekey", MAX_SEALED_REKEY_LEN)?
            .to_vec();
        if ciphertext.len() < AEAD_TAG_LEN {
            return Err(DecodeError::Invalid {
                what: "sealed epoch rekey",
                reason: "shorter than the AEAD tag",
            });
        }
        Ok(Self {
            from_epoch,
            nonce,
            ciphertext,
        })
    }
}
