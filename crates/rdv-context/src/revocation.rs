//! A descriptor revocation, signed by the revoked descriptor's authority
//! and sealed under the epoch's record key ([`crate::record_seal`]).
//!
//! Signed, so that no member can silence another by revoking its
//! descriptors; sealed, so that a journal copy does not say which member
//! revoked (and so moved, or went away) when.
//!
//! Bytes: `epoch (8) | nonce (24) | ciphertext (144)`. Plaintext:
//! `authority (32) | descriptor nonce (32) | signature (64)`, the signature
//! the authority's over the context, the sealing epoch and the descriptor
//! nonce (so a member holding two epochs' keys cannot re-seal someone
//! else's revocation under the other epoch as a second fact).
//!
//! A member's own descriptor is always of the installed epoch (the service
//! drops it when the epoch changes), so a revocation is sealed under the
//! epoch of the descriptor it revokes.

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::record_seal::{FixedRecord, RecordError};
use crate::seal::AEAD_TAG_LEN;

const REVOCATION_DOMAIN: &str = "rdv context v1 descriptor-revocation";
const AD_LABEL: &[u8] = b"rdv context v1 sealed revocation";
const PLAIN_LEN: usize = 32 + 32 + 64;
const CIPHERTEXT_LEN: usize = PLAIN_LEN + AEAD_TAG_LEN;

/// An opened revocation: `authority` withdrew its descriptor with `nonce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The authority whose descriptor is revoked (and who signed).
    pub authority: AuthorityId,
    /// The revoked descriptor's nonce.
    pub nonce: [u8; 32],
}

/// A [`Revocation`] sealed under one epoch's record key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SealedRevocation(FixedRecord<CIPHERTEXT_LEN>);

fn signed_body(context: &ContextId, epoch: Epoch, nonce: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::with_capacity(72);
    w.raw(context.as_bytes()).u64(epoch).raw(nonce);
    w.into_vec()
}

impl SealedRevocation {
    /// `identity`'s revocation of its descriptor with `descriptor_nonce`,
    /// sealed under `keys` (its context's current epoch).
    pub fn seal(identity: &Identity, keys: &EpochKeys, descriptor_nonce: [u8; 32]) -> Self {
        let signature = identity.sign(
            REVOCATION_DOMAIN,
            &Self::signed_body(keys, &descriptor_nonce),
        );
        let revocation = Revocation {
            authority: identity.authority(),
            nonce: descriptor_nonce,
        };
        Self::from_parts(keys, &revocation, &signature)
    }

    /// The bytes a revocation's author signs (Ed25519, domain
    /// `rdv context v1 descriptor-revocation`) for a revocation of its
    /// descriptor with `descriptor_nonce` sealed under `keys`.
    pub fn signed_body(keys: &EpochKeys, descriptor_nonce: &[u8; 32]) -> Vec<u8> {
        signed_body(&keys.context_id(), keys.epoch(), descriptor_nonce)
    }

    /// Seals a revocation signed elsewhere (a key held outside this
    /// process): `signature` over [`SealedRevocation::signed_body`].
    /// Nothing is checked here; [`SealedRevocation::open`] checks the
    /// signature is the named authority's.
    pub fn from_parts(keys: &EpochKeys, revocation: &Revocation, signature: &[u8; 64]) -> Self {
        let mut w = Writer::with_capacity(PLAIN_LEN);
        w.raw(revocation.authority.as_bytes())
            .raw(&revocation.nonce)
            .raw(signature);
        Self(FixedRecord::seal(keys, AD_LABEL, &w.into_vec()))
    }

    /// The epoch whose key sealed it (readable).
    pub fn epoch(&self) -> Epoch {
        self.0.epoch
    }

    /// Opens with `keys` and checks the signature is the named authority's.
    pub fn open(&self, keys: &EpochKeys) -> Result<Revocation, RecordError> {
        let plain = self.0.open(keys, AD_LABEL)?;
        let mut r = Reader::new(&plain);
        let mut read = || -> Result<(Revocation, [u8; 64]), DecodeError> {
            let revocation = Revocation {
                authority: AuthorityId::from_bytes(r.array("authority")?)?,
                nonce: r.array("descriptor nonce")?,
            };
            Ok((revocation, r.array("signature")?))
        };
        let (revocation, signature) = read().map_err(|_| RecordError::Malformed)?;
        let message = signing_message(
            REVOCATION_DOMAIN,
            &Self::signed_body(keys, &revocation.nonce),
        );
        if !revocation.authority.verify(&message, &signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(revocation)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.0.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        FixedRecord::read(r, "sealed revocation").map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::EpochSecret;

    fn keys(secret: u8) -> EpochKeys {
        crate::record_seal::test_keys(2, secret)
    }

    #[test]
    fn a_revocation_opens_for_members_and_names_no_one_in_clear() {
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let k = keys(1);
        let sealed = SealedRevocation::seal(&bob, &k, [7; 32]);
        assert_eq!(
            sealed.open(&k),
            Ok(Revocation {
                authority: bob.authority(),
                nonce: [7; 32]
            })
        );
        let mut w = Writer::with_capacity(200);
        sealed.write(&mut w);
        let bytes = w.into_vec();
        assert!(!bytes.windows(32).any(|x| x == bob.authority().as_bytes()));
        assert!(!bytes.windows(32).any(|x| x == [7; 32]));
        assert_eq!(sealed.open(&keys(2)), Err(RecordError::WrongKey));
    }

    #[test]
    fn a_revocation_signed_by_someone_else_is_refused() {
        let (bob, mallory) = (
            Identity::from_secret_bytes([1; 32], [2; 32]),
            Identity::from_secret_bytes([3; 32], [4; 32]),
        );
        let k = keys(1);
        // Mallory, holding the key, seals Bob's name over her signature.
        let bobs = Revocation {
            authority: bob.authority(),
            nonce: [7; 32],
        };
        let signature = mallory.sign(
            REVOCATION_DOMAIN,
            &SealedRevocation::signed_body(&k, &[7; 32]),
        );
        let forged = SealedRevocation::from_parts(&k, &bobs, &signature);
        assert_eq!(forged.open(&k), Err(RecordError::BadSignature));
        // Bob's own revocation of epoch 2, re-sealed under epoch 3's key by
        // a member holding both: his signature names epoch 2.
        let signature = bob.sign(
            REVOCATION_DOMAIN,
            &SealedRevocation::signed_body(&k, &[7; 32]),
        );
        let k3 = EpochKeys::derive(k.context_id(), 3, &EpochSecret::from_bytes([1; 32]));
        let moved = SealedRevocation::from_parts(&k3, &bobs, &signature);
        assert_eq!(moved.open(&k3), Err(RecordError::BadSignature));
        assert_eq!(
            SealedRevocation::from_parts(&k, &bobs, &signature).open(&k),
            Ok(bobs)
        );
    }
}
