//! How the journal's records are sealed under an epoch's record key
//! (issue 13, item 8: privacy of the journal).
//!
//! The journal is copied by sync and stored on every member's disk, so a
//! stolen disk, a backup or an old copy would show in clear whatever a fact
//! names: who published, who opened channels with whom, who revoked what,
//! who removed whom and who the members are. Channel records
//! ([`crate::SealedChannel`]), revocations ([`crate::SealedRevocation`])
//! and epoch rekeys ([`crate::SealedRekey`]) are therefore sealed
//! (XChaCha20-Poly1305) under the record key of an epoch
//! (`docs/KEY-SCHEDULE.md`); descriptors have their own key and the same
//! rule (no authority in the readable header). What stays readable is what
//! a reader needs to pick the key: the context and the epoch.
//!
//! The associated data is a label naming the kind of record, the context
//! and the sealing epoch: a record of one kind cannot be passed off as
//! another, nor moved to another context or epoch.
//!
//! The nonce is derived from the label and the plaintext under the record
//! key: a synthetic nonce as in SIV modes (RFC 5297 §1.3.2). No random
//! source is needed, the same record sealed twice gives the same bytes (the
//! same fact id: recording is idempotent), and two different records share
//! a nonce only with negligible probability. Opening checks that the nonce
//! is the one the content gives, so a member holding the key cannot
//! re-seal a record under another nonce and make it a second fact.

use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ContextId, Epoch};
use crate::keys::{EpochKeys, LABEL_RECORD_NONCE, kdf};
use crate::seal::{AEAD_NONCE_LEN, aead_open, aead_seal};

/// Why a sealed journal record (channel, revocation, rekey) was not
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Sealed under another epoch than the keys given.
    #[error("sealed under epoch {found}, the keys are epoch {expected}")]
    WrongEpoch {
        /// The keys' epoch.
        expected: Epoch,
        /// The record's.
        found: Epoch,
    },
    /// Does not open under the keys (another context or secret, another
    /// kind of record, a forgery, damage).
    #[error("the record does not open under the epoch's key")]
    WrongKey,
    /// Opens but its content is not a record of its kind, or its nonce is
    /// not the one its content gives (not the canonical bytes).
    #[error("the record's content is malformed")]
    Malformed,
    /// Not signed by whom it must be: a channel record by one of its two
    /// ends, a revocation by the revoked descriptor's authority, a rekey
    /// by its rotator.
    #[error("the record is not signed by the member it must be signed by")]
    BadSignature,
}

fn ad(label: &[u8], context: &ContextId, epoch: Epoch) -> Vec<u8> {
    let mut w = Writer::with_capacity(label.len() + 40);
    w.raw(label).raw(context.as_bytes()).u64(epoch);
    w.into_vec()
}

fn synthetic_nonce(keys: &EpochKeys, label: &[u8], plain: &[u8]) -> [u8; AEAD_NONCE_LEN] {
    let derived = kdf(LABEL_RECORD_NONCE, &[keys.record_key(), label, plain]);
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    nonce.copy_from_slice(&derived[..AEAD_NONCE_LEN]);
    nonce
}

/// Seals `plain` as a record of kind `label` under `keys`: the nonce and
/// the ciphertext (plaintext length plus the tag).
pub(crate) fn seal(
    keys: &EpochKeys,
    label: &[u8],
    plain: &[u8],
) -> ([u8; AEAD_NONCE_LEN], Vec<u8>) {
    let nonce = synthetic_nonce(keys, label, plain);
    let sealed = aead_seal(
        keys.record_key(),
        &nonce,
        &ad(label, &keys.context_id(), keys.epoch()),
        plain,
    );
    (nonce, sealed)
}

/// Opens a record of kind `label` sealed under `keys` for `epoch`.
pub(crate) fn open(
    keys: &EpochKeys,
    label: &[u8],
    epoch: Epoch,
    nonce: &[u8; AEAD_NONCE_LEN],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    if epoch != keys.epoch() {
        return Err(RecordError::WrongEpoch {
            expected: keys.epoch(),
            found: epoch,
        });
    }
    let plain = aead_open(
        keys.record_key(),
        nonce,
        &ad(label, &keys.context_id(), keys.epoch()),
        ciphertext,
    )
    .ok_or(RecordError::WrongKey)?;
    if synthetic_nonce(keys, label, &plain) != *nonce {
        return Err(RecordError::Malformed);
    }
    Ok(plain)
}

/// A sealed record of fixed length as the journal holds it (channel
/// records, revocations): `epoch (8) | nonce (24) | ciphertext (N)`, the
/// plaintext `N - 16` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FixedRecord<const N: usize> {
    pub(crate) epoch: Epoch,
    pub(crate) nonce: [u8; AEAD_NONCE_LEN],
    pub(crate) ciphertext: [u8; N],
}

impl<const N: usize> FixedRecord<N> {
    /// Seals `plain`, exactly `N - 16` bytes (each caller's fixed layout),
    /// as a record of kind `label` under `keys`.
    pub(crate) fn seal(keys: &EpochKeys, label: &[u8], plain: &[u8]) -> Self {
        let (nonce, sealed) = seal(keys, label, plain);
        let mut ciphertext = [0u8; N];
        ciphertext.copy_from_slice(&sealed);
        Self {
            epoch: keys.epoch(),
            nonce,
            ciphertext,
        }
    }

    /// Opens a record of kind `label` with `keys`.
    pub(crate) fn open(
        &self,
        keys: &EpochKeys,
        label: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RecordError> {
        open(keys, label, self.epoch, &self.nonce, &self.ciphertext)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.epoch).raw(&self.nonce).raw(&self.ciphertext);
    }

    pub(crate) fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: r.u64("epoch")?,
            nonce: r.array("nonce")?,
            ciphertext: r.array(what)?,
        })
    }
}

/// Keys of epoch `epoch` of a fixed test context under a secret of
/// `secret` bytes (the sealed records' unit tests).
#[cfg(test)]
pub(crate) fn test_keys(epoch: Epoch, secret: u8) -> EpochKeys {
    EpochKeys::derive(
        ContextId::from_bytes([9; 32]),
        epoch,
        &crate::keys::EpochSecret::from_bytes([secret; 32]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(epoch: Epoch, secret: u8) -> EpochKeys {
        test_keys(epoch, secret)
    }

    #[test]
    fn a_record_opens_only_as_its_kind_under_its_keys() {
        let k = keys(3, 1);
        let (nonce, ct) = seal(&k, b"kind a", b"plain");
        assert_eq!(&**open(&k, b"kind a", 3, &nonce, &ct).unwrap(), b"plain");
        assert_eq!(
            open(&keys(4, 1), b"kind a", 3, &nonce, &ct),
            Err(RecordError::WrongEpoch {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(seal(&k, b"kind a", b"plain"), (nonce, ct.clone()));
        for (keys, label) in [(keys(3, 2), &b"kind a"[..]), (k.clone(), b"kind b")] {
            assert_eq!(
                open(&keys, label, 3, &nonce, &ct),
                Err(RecordError::WrongKey),
                "{label:?}"
            );
        }
        // The same plaintext as another kind gets another nonce.
        assert_ne!(seal(&k, b"kind b", b"plain").0, nonce);
    }

    #[test]
    fn a_record_resealed_under_another_nonce_is_refused() {
        let k = keys(3, 1);
        let other = [7u8; AEAD_NONCE_LEN];
        let ct = aead_seal(
            k.record_key(),
            &other,
            &ad(b"kind a", &k.context_id(), 3),
            b"plain",
        );
        assert_eq!(
            open(&k, b"kind a", 3, &other, &ct),
            Err(RecordError::Malformed)
        );
    }
}
