//! Sealing a short secret to one authority's static X25519 key, and the
//! AEAD used throughout.
//!
//! Seal: the sender draws an ephemeral X25519 key `E` (one per message, which
//! may carry several recipients); for recipient static key `P` the key is
//! `KDF("rdv context v1 seal-key", DH(e, P) || E || P || ad)` and the secret
//! is encrypted with XChaCha20-Poly1305 under it, with `ad` as associated
//! data. `ad` names the purpose and binds the context, epoch and recipient,
//! so a sealed box cannot be moved to another message. Only the holder of
//! `P`'s secret recovers the secret.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::keys::{LABEL_SEAL_KEY, kdf};

/// Bytes an AEAD adds (the Poly1305 tag).
pub const AEAD_TAG_LEN: usize = 16;
/// Bytes of an XChaCha20-Poly1305 nonce.
pub const AEAD_NONCE_LEN: usize = 24;

/// XChaCha20-Poly1305 encryption. Random 24-byte nonces are safe under one
/// key for any realistic number of messages, which is why this crate uses
/// the extended-nonce variant: every member seals under the same epoch key.
pub(crate) fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    // Encryption fails only for plaintexts beyond 256 GiB; ours are bounded
    // to a few KiB by every caller.
    cipher
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap_or_else(|_| unreachable!("bounded plaintext"))
}

/// XChaCha20-Poly1305 decryption; `None` if the key, nonce, associated data
/// or ciphertext is wrong.
pub(crate) fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    ad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// The per-recipient key of a sealed box.
fn seal_key(
    dh: &[u8; 32],
    ephemeral_public: &[u8; 32],
    recipient: &[u8; 32],
    ad: &[u8],
) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(kdf(LABEL_SEAL_KEY, &[dh, ephemeral_public, recipient, ad]))
}

/// Seals `secret` (32 bytes) to `recipient_static` with the ephemeral secret
/// `ephemeral`. The box is `secret` encrypted under a one-time key, so a zero
/// nonce is safe.
pub(crate) fn seal_to(
    ephemeral: &x25519_dalek::StaticSecret,
    recipient_static: &[u8; 32],
    ad: &[u8],
    secret: &[u8; 32],
) -> Vec<u8> {
    let eph_pub = x25519_dalek::PublicKey::from(ephemeral).to_bytes();
    let dh = Zeroizing::new(
        ephemeral
            .diffie_hellman(&x25519_dalek::PublicKey::from(*recipient_static))
            .to_bytes(),
    );
    let key = seal_key(&dh, &eph_pub, recipient_static, ad);
    aead_seal(&key, &[0; AEAD_NONCE_LEN], ad, secret)
}

/// Opens a box made by [`seal_to`] for `me`.
pub(crate) fn open_sealed(
    me: &Identity,
    ephemeral_public: &[u8; 32],
    ad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    let dh = me.diffie_hellman(ephemeral_public);
    let key = seal_key(&dh, ephemeral_public, &me.static_public(), ad);
    let plain = aead_open(&key, &[0; AEAD_NONCE_LEN], ad, sealed)?;
    let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_a_sealed_secret() {
        let bob = Identity::from_secret_bytes([1; 32], [2; 32]);
        let eve = Identity::from_secret_bytes([3; 32], [4; 32]);
        let eph = x25519_dalek::StaticSecret::from([9; 32]);
        let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let sealed = seal_to(&eph, &bob.static_public(), b"ad", &[7; 32]);
        assert_eq!(
            *open_sealed(&bob, &eph_pub, b"ad", &sealed).unwrap(),
            [7; 32]
        );
        assert!(open_sealed(&eve, &eph_pub, b"ad", &sealed).is_none());
        assert!(open_sealed(&bob, &eph_pub, b"other ad", &sealed).is_none());
    }
}
