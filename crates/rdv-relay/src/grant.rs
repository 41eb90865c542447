//! Who may use a relay, and which relay a client is talking to
//! (docs/KEY-SCHEDULE.md, "Relay grants").
//!
//! The session opens with two fresh nonces. The relay signs both with its
//! identity ([`challenge_message`]), so the client knows it reached the
//! relay its token names. The client then signs, with the context's grant
//! key for this relay and epoch ([`GrantKey`], derived from the epoch
//! secret by `EpochKeys::relay_grant_seed`), both nonces, the relay's
//! authority and the handle it claims ([`auth_message`]). The relay checks
//! that signature against the grant *public* key the client presents and
//! from then on routes only between clients that presented the same grant
//! key. It learns nothing but that public key: not the context, not which
//! member. A signature cannot be replayed: the relay's nonce is new for
//! every connection, and the relay's authority is inside what is signed.
//!
//! Every signature here is over `len(domain) || domain || body`, with a
//! domain of its own, as everywhere in rdv.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rdv_context::AuthorityId;

const DOMAIN_CHALLENGE: &str = "rdv relay v1 challenge";
const DOMAIN_AUTH: &str = "rdv relay v1 auth";
const DOMAIN_RETIRE: &str = "rdv relay v1 retire";

fn message(domain: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + domain.len() + 160);
    m.push(domain.len() as u8);
    m.extend_from_slice(domain.as_bytes());
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

/// What the relay signs to answer HELLO: both nonces.
pub fn challenge_message(client_nonce: &[u8; 32], relay_nonce: &[u8; 32]) -> Vec<u8> {
    message(DOMAIN_CHALLENGE, &[client_nonce, relay_nonce])
}

/// What the client signs with the grant key in AUTH.
pub fn auth_message(
    relay: &AuthorityId,
    client_nonce: &[u8; 32],
    relay_nonce: &[u8; 32],
    handle: &[u8; 32],
) -> Vec<u8> {
    message(
        DOMAIN_AUTH,
        &[relay.as_bytes(), client_nonce, relay_nonce, handle],
    )
}

/// What a grant key signs to retire itself on `relay`.
pub fn retire_message(relay: &AuthorityId, grant: &[u8; 32]) -> Vec<u8> {
    message(DOMAIN_RETIRE, &[relay.as_bytes(), grant])
}

/// Verifies a strict Ed25519 signature by the key `public`.
pub fn verify(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public).is_ok_and(|k| {
        k.verify_strict(message, &Signature::from_bytes(sig))
            .is_ok()
    })
}

/// The relay's identity: an Ed25519 key whose public half is the relay's
/// authority (the one descriptors' `WebSocketRelay` hints name).
pub struct RelayIdentity(SigningKey);

impl RelayIdentity {
    /// The identity of a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }
    /// The secret seed, to keep on disk.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// The relay's authority.
    pub fn authority(&self) -> AuthorityId {
        match AuthorityId::from_bytes(self.0.verifying_key().to_bytes()) {
            Ok(a) => a,
            Err(_) => unreachable!("an Ed25519 public key is an authority id"),
        }
    }
    /// Signs the challenge for these nonces.
    pub fn sign_challenge(&self, client_nonce: &[u8; 32], relay_nonce: &[u8; 32]) -> [u8; 64] {
        self.0
            .sign(&challenge_message(client_nonce, relay_nonce))
            .to_bytes()
    }
}

impl std::fmt::Debug for RelayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayIdentity({})", self.authority())
    }
}

/// A context's grant key for one relay and epoch (secret: every member
/// holds it, nobody else).
pub struct GrantKey(SigningKey);

impl GrantKey {
    /// The key of a seed from `EpochKeys::relay_grant_seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }
    /// The public half: what the relay sees and routes by.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
    /// AUTH's signature.
    pub fn sign_auth(
        &self,
        relay: &AuthorityId,
        client_nonce: &[u8; 32],
        relay_nonce: &[u8; 32],
        handle: &[u8; 32],
    ) -> [u8; 64] {
        self.0
            .sign(&auth_message(relay, client_nonce, relay_nonce, handle))
            .to_bytes()
    }
    /// RETIRE's signature.
    pub fn sign_retire(&self, relay: &AuthorityId) -> [u8; 64] {
        self.0
            .sign(&retire_message(relay, &self.public()))
            .to_bytes()
    }
}

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrantKey({:02x?}..)", &self.public()[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_verifies_only_for_its_relay_nonces_and_handle() {
        let relay = RelayIdentity::from_seed(&[1; 32]).authority();
        let other = RelayIdentity::from_seed(&[2; 32]).authority();
        let g = GrantKey::from_seed(&[9; 32]);
        let sig = g.sign_auth(&relay, &[3; 32], &[4; 32], &[5; 32]);
        let ok = |r, c, n, h| verify(&g.public(), &auth_message(r, c, n, h), &sig);
        assert!(ok(&relay, &[3; 32], &[4; 32], &[5; 32]));
        assert!(!ok(&other, &[3; 32], &[4; 32], &[5; 32]), "another relay");
        assert!(
            !ok(&relay, &[3; 32], &[6; 32], &[5; 32]),
            "another challenge"
        );
        assert!(!ok(&relay, &[3; 32], &[4; 32], &[7; 32]), "another handle");
        let stranger = GrantKey::from_seed(&[8; 32]);
        assert!(!verify(
            &stranger.public(),
            &auth_message(&relay, &[3; 32], &[4; 32], &[5; 32]),
            &sig
        ));
        // Not a point on the curve: refused, not a panic.
        assert!(!verify(&[0xff; 32], b"x", &sig));
    }

    #[test]
    fn a_retirement_and_a_challenge_are_not_interchangeable() {
        let id = RelayIdentity::from_seed(&[1; 32]);
        let g = GrantKey::from_seed(&[9; 32]);
        let sig = g.sign_retire(&id.authority());
        assert!(verify(
            &g.public(),
            &retire_message(&id.authority(), &g.public()),
            &sig
        ));
        let c = id.sign_challenge(&[1; 32], &[2; 32]);
        let relay_pub = *id.authority().as_bytes();
        assert!(verify(
            &relay_pub,
            &challenge_message(&[1; 32], &[2; 32]),
            &c
        ));
        assert!(!verify(
            &relay_pub,
            &challenge_message(&[2; 32], &[1; 32]),
            &c
        ));
    }
}
