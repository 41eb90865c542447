//! Identifiers: who ([`AuthorityId`]) and where ([`ContextId`]).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::codec::{DecodeError, hex, unhex};

/// An authority: an Ed25519 public key. Its signing key stays with its owner
/// ([`crate::Identity`]). The bytes are checked to be a valid curve point
/// when the id is made, so every `AuthorityId` can verify signatures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthorityId([u8; 32]);

impl AuthorityId {
    /// The id for these public-key bytes, or an error if they are not an
    /// Ed25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, DecodeError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| DecodeError::Invalid {
            what: "authority id",
            reason: "not an Ed25519 public key",
        })?;
        Ok(Self(bytes))
    }
    /// The public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The key that checks this authority's signatures.
    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        // Checked in every constructor; `from_verifying_key` takes a valid key.
        VerifyingKey::from_bytes(&self.0)
            .unwrap_or_else(|_| unreachable!("validated on construction"))
    }
    pub(crate) fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }
    /// Verifies an Ed25519 signature (strict: no malleable or small-order
    /// encodings) by this authority over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.verifying_key().verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for AuthorityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityId({})", &hex(&self.0)[..16])
    }
}

impl fmt::Display for AuthorityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl FromStr for AuthorityId {
    type Err = DecodeError;
    /// Parses the 64 hex digits that `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = unhex::<32>(s.trim()).ok_or(DecodeError::Invalid {
            what: "authority id",
            reason: "expected 64 hex digits",
        })?;
        Self::from_bytes(bytes)
    }
}

/// A relational context: 32 random bytes chosen by the member who created
/// it. The id is not secret (it names which keys to use); the context
/// secret is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId([u8; 32]);

impl ContextId {
    /// A context id from its bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({})", &hex(&self.0)[..16])
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl FromStr for ContextId {
    type Err = DecodeError;
    /// Parses the 64 hex digits that `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        unhex::<32>(s.trim()).map(Self).ok_or(DecodeError::Invalid {
            what: "context id",
            reason: "expected 64 hex digits",
        })
    }
}

/// An epoch of a context. Each epoch has its own keys; advancing it
/// (see [`crate::Context::advance_epoch`]) locks removed members out.
pub type Epoch = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_id_refuses_bytes_that_are_not_a_point() {
        // y = 2 has no x on the curve.
        let mut b = [0u8; 32];
        b[0] = 2;
        assert!(AuthorityId::from_bytes(b).is_err());
    }

    #[test]
    fn ids_round_trip_through_text() {
        let c = ContextId::from_bytes([7; 32]);
        assert_eq!(c.to_string().parse::<ContextId>().unwrap(), c);
        let a = crate::Identity::from_secret_bytes([1; 32], [2; 32]).authority();
        assert_eq!(a.to_string().parse::<AuthorityId>().unwrap(), a);
        assert!("xyz".parse::<AuthorityId>().is_err());
    }
}
