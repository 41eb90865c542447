//! An authority's own keys, and the binding of its static X25519 key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::armor::{self, ArmorError};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::AuthorityId;
use crate::rng::{CryptoRng, random_array};

/// Signature domain of the static-key binding.
pub(crate) const STATIC_KEY_DOMAIN: &str = "rdv context v1 static-key-binding";

/// Builds the message an authority signs in `domain`: the domain, length
/// prefixed, then the body. Every signature of this crate goes through here
/// with its own domain, so a signature made for one purpose never verifies
/// for another.
pub(crate) fn signing_message(domain: &str, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + domain.len() + body.len());
    w.u8(domain.len() as u8).raw(domain.as_bytes()).raw(body);
    w.into_vec()
}

/// An authority's secret keys: the Ed25519 signing key that is its identity
/// and the static X25519 key that Noise IK uses. Held only by the authority
/// itself. `Debug` prints the public id only; the secrets are wiped on drop
/// (each clone too).
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    static_secret: StaticSecret,
    static_public: [u8; 32],
}

impl Identity {
    /// A new identity with both keys drawn from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let ed = Zeroizing::new(random_array::<32, R>(rng));
        let x = Zeroizing::new(random_array::<32, R>(rng));
        Self::from_secret_bytes(*ed, *x)
    }

    /// An identity from stored secret bytes: the Ed25519 seed and the X25519
    /// secret scalar.
    pub fn from_secret_bytes(ed25519_seed: [u8; 32], x25519_secret: [u8; 32]) -> Self {
        let static_secret = StaticSecret::from(x25519_secret);
        let static_public = X25519Public::from(&static_secret).to_bytes();
        Self {
            signing: SigningKey::from_bytes(&ed25519_seed),
            static_secret,
            static_public,
        }
    }

    /// The secret bytes, for persisting: `(ed25519_seed, x25519_secret)`.
    /// Wiped when the returned value is dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<([u8; 32], [u8; 32])> {
        Zeroizing::new((self.signing.to_bytes(), self.static_secret.to_bytes()))
    }

    /// This authority's public id.
    pub fn authority(&self) -> AuthorityId {
        AuthorityId::from_verifying_key(&self.signing.verifying_key())
    }

    /// The static X25519 public key.
    pub fn static_public(&self) -> [u8; 32] {
        self.static_public
    }

    /// The static X25519 secret, for the secure-channel handshake (Noise IK
    /// needs it as the local static key).
    pub fn static_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.static_secret.to_bytes())
    }

    /// A signed statement that the static X25519 key belongs to this
    /// authority: what others need to seal secrets to it and to run Noise IK.
    pub fn static_key_binding(&self) -> StaticKeyBinding {
        let authority = self.authority();
        let signature = self.sign(
            STATIC_KEY_DOMAIN,
            &StaticKeyBinding::signed_body(&authority, &self.static_public),
        );
        StaticKeyBinding {
            authority,
            static_key: self.static_public,
            signature,
        }
    }

    /// Ed25519 signature over `body` in `domain`.
    pub(crate) fn sign(&self, domain: &str, body: &[u8]) -> [u8; 64] {
        self.signing.sign(&signing_message(domain, body)).to_bytes()
    }

    /// Ed25519 signature over a message already built by [`signing_message`].
    pub(crate) fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// X25519 with the static secret.
    pub(crate) fn diffie_hellman(&self, their_public: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(
            self.static_secret
                .diffie_hellman(&X25519Public::from(*their_public))
                .to_bytes(),
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("authority", &self.authority())
            .finish_non_exhaustive()
    }
}

/// A static X25519 key bound to an authority by the authority's Ed25519
/// signature. Shared as a member card (`rdv-member-v1:...`) so a member can
/// send this authority a sealed invitation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StaticKeyBinding {
    /// The authority.
    pub authority: AuthorityId,
    /// Its static X25519 public key.
    pub static_key: [u8; 32],
    /// The authority's signature over both.
    pub signature: [u8; 64],
}

/// Encoded size of a [`StaticKeyBinding`].
pub const STATIC_KEY_BINDING_LEN: usize = 32 + 32 + 64;

impl StaticKeyBinding {
    fn signed_body(authority: &AuthorityId, static_key: &[u8; 32]) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.raw(authority.as_bytes()).raw(static_key);
        w.into_vec()
    }

    /// Whether the signature is the authority's over this static key.
    pub fn verify(&self) -> bool {
        self.authority.verify(
            &signing_message(
                STATIC_KEY_DOMAIN,
                &Self::signed_body(&self.authority, &self.static_key),
            ),
            &self.signature,
        )
    }

    /// Canonical bytes.
    pub fn to_bytes(&self) -> [u8; STATIC_KEY_BINDING_LEN] {
        let mut out = [0; STATIC_KEY_BINDING_LEN];
        out[..32].copy_from_slice(self.authority.as_bytes());
        out[32..64].copy_from_slice(&self.static_key);
        out[64..].copy_from_slice(&self.signature);
        out
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let authority = AuthorityId::from_bytes(r.array("binding authority")?)?;
        let static_key = r.array("binding static key")?;
        let signature = r.array("binding signature")?;
        Ok(Self {
            authority,
            static_key,
            signature,
        })
    }

    /// Decodes and verifies canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let b = Self::read(&mut r)?;
        r.finish("static key binding")?;
        if !b.verify() {
            return Err(DecodeError::Invalid {
                what: "static key binding",
                reason: "signature does not verify",
            });
        }
        Ok(b)
    }
}

impl fmt::Debug for StaticKeyBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeyBinding")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for StaticKeyBinding {
    /// The member card text: `rdv-member-v1:<base32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&armor::encode("member", 1, &self.to_bytes()))
    }
}

impl FromStr for StaticKeyBinding {
    type Err = ArmorError;
    /// Parses and verifies a member card.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = armor::decode("member", 1, s)?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_verifies_and_round_trips_as_member_card() {
        let id = Identity::from_secret_bytes([1; 32], [2; 32]);
        let b = id.static_key_binding();
        assert!(b.verify());
        let text = b.to_string();
        assert!(text.starts_with("rdv-member-v1:"));
        assert_eq!(text.parse::<StaticKeyBinding>().unwrap(), b);
    }

    #[test]
    fn binding_with_another_static_key_is_refused() {
        let id = Identity::from_secret_bytes([1; 32], [2; 32]);
        let mut b = id.static_key_binding();
        b.static_key = Identity::from_secret_bytes([1; 32], [3; 32]).static_public();
        assert!(!b.verify());
        assert!(StaticKeyBinding::from_bytes(&b.to_bytes()).is_err());
    }

    #[test]
    fn identity_round_trips_through_secret_bytes_and_debug_hides_secrets() {
        let id = Identity::from_secret_bytes([1; 32], [2; 32]);
        let s = id.to_secret_bytes();
        let again = Identity::from_secret_bytes(s.0, s.1);
        assert_eq!(again.authority(), id.authority());
        assert_eq!(again.static_public(), id.static_public());
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("0101"));
    }
}
