//! The key schedule: every key of a context epoch, derived from the epoch's
//! context secret with BLAKE3 `derive_key` under a distinct label.
//!
//! `docs/KEY-SCHEDULE.md` is the specification: labels, inputs and test
//! vectors (checked by `tests/key_schedule.rs`). In short, with `S` the
//! epoch secret, `C` the context id, `e` the epoch as 8 big-endian bytes:
//!
//! ```text
//! S(e+1)         = KDF("rdv context v1 epoch-secret",   S(e) || C || e+1 || R)   R: fresh, sealed to remaining members
//! descriptor key = KDF("rdv context v1 descriptor-key", S || C || e)
//! psk root       = KDF("rdv context v1 psk-root",       S || C || e)
//! psk(a, b)      = KDF("rdv context v1 handshake-psk",  psk root || min(a,b) || max(a,b))
//! commitment(a)  = KDF("rdv context v1 psk-commitment", psk root || a)
//! tag key        = KDF("rdv context v1 rendezvous-tag-key", S || C || e)
//! tag(p)         = KDF("rdv context v1 rendezvous-tag", tag key || p)    p: time period number
//! rekey MAC key  = KDF("rdv context v1 rekey-auth",     S || C || e)
//! ```
//!
//! Every input is fixed-length, so concatenation is unambiguous; each label
//! is used for one purpose only, so no two derivations can collide unless
//! BLAKE3 does.

use zeroize::{Zeroize, Zeroizing};

use crate::codec::{ct_eq, hex};
use crate::ids::{AuthorityId, ContextId, Epoch};

/// Label: next epoch's secret.
pub const LABEL_EPOCH_SECRET: &str = "rdv context v1 epoch-secret";
/// Label: key that seals descriptors.
pub const LABEL_DESCRIPTOR_KEY: &str = "rdv context v1 descriptor-key";
/// Label: root of the pairwise handshake PSKs.
pub const LABEL_PSK_ROOT: &str = "rdv context v1 psk-root";
/// Label: pairwise handshake PSK.
pub const LABEL_HANDSHAKE_PSK: &str = "rdv context v1 handshake-psk";
/// Label: PSK commitment carried in a descriptor.
pub const LABEL_PSK_COMMITMENT: &str = "rdv context v1 psk-commitment";
/// Label: key of the blinded rendezvous tags.
pub const LABEL_TAG_KEY: &str = "rdv context v1 rendezvous-tag-key";
/// Label: blinded rendezvous tag of one period.
pub const LABEL_RENDEZVOUS_TAG: &str = "rdv context v1 rendezvous-tag";
/// Label of the seed of a member's libp2p identity on public points.
pub const LABEL_RENDEZVOUS_PEER: &str = "rdv context v1 rendezvous-peer";
/// Label: key that seals a secret to one member's static X25519 key.
pub const LABEL_SEAL_KEY: &str = "rdv context v1 seal-key";
/// Label: key of the MAC proving an epoch rekey's author holds the epoch
/// secret it advances from.
pub const LABEL_REKEY_AUTH: &str = "rdv context v1 rekey-auth";
/// Label: root of the keys a context uses with a WebSocket relay.
pub const LABEL_RELAY_KEY: &str = "rdv context v1 relay-key";
/// Label: seed of the Ed25519 grant key proving membership to one relay.
pub const LABEL_RELAY_GRANT: &str = "rdv context v1 relay-grant";
/// Label: the opaque handle a member is reached under on one relay.
pub const LABEL_RELAY_HANDLE: &str = "rdv context v1 relay-handle";
/// Label: key that seals the journal's records (channel records,
/// revocations, rekeys).
pub const LABEL_RECORD_KEY: &str = "rdv context v1 record-key";
/// Label: the synthetic nonce of a sealed journal record.
pub const LABEL_RECORD_NONCE: &str = "rdv context v1 record-nonce";

/// Every label, for the separation tests.
pub const ALL_LABELS: [&str; 15] = [
    LABEL_EPOCH_SECRET,
    LABEL_DESCRIPTOR_KEY,
    LABEL_PSK_ROOT,
    LABEL_HANDSHAKE_PSK,
    LABEL_PSK_COMMITMENT,
    LABEL_TAG_KEY,
    LABEL_RENDEZVOUS_TAG,
    LABEL_SEAL_KEY,
    LABEL_REKEY_AUTH,
    LABEL_RENDEZVOUS_PEER,
    LABEL_RELAY_KEY,
    LABEL_RELAY_GRANT,
    LABEL_RELAY_HANDLE,
    LABEL_RECORD_KEY,
    LABEL_RECORD_NONCE,
];

pub(crate) fn kdf(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(label);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// The context secret of one epoch. Outsiders never see it: the creator
/// draws it, invitations carry it, and each epoch advance mixes in fresh
/// randomness sealed to the remaining members only. Wiped on drop; `Debug`
/// prints nothing of it.
#[derive(Clone)]
pub struct EpochSecret(Zeroizing<[u8; 32]>);

impl EpochSecret {
    /// A secret from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
    /// The bytes, for persisting.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// The next epoch's secret: this one, the context, the new epoch number
    /// and `fresh` (32 random bytes that only remaining members receive).
    /// Without `fresh`, the old secret alone does not give the new one.
    pub fn next(&self, context: &ContextId, next_epoch: Epoch, fresh: &[u8; 32]) -> Self {
        Self::from_bytes(kdf(
            LABEL_EPOCH_SECRET,
            &[
                &self.0[..],
                context.as_bytes(),
                &next_epoch.to_be_bytes(),
                fresh,
            ],
        ))
    }
}

impl std::fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochSecret(..)")
    }
}

/// A pairwise handshake PSK (Noise IKpsk2's `psk`). Wiped on drop.
pub type Psk = Zeroizing<[u8; 32]>;

/// The derived keys of one context epoch. Wiped on drop.
#[derive(Clone)]
pub struct EpochKeys {
    context_id: ContextId,
    epoch: Epoch,
    descriptor_key: [u8; 32],
    psk_root: [u8; 32],
    tag_key: [u8; 32],
    rekey_auth_key: [u8; 32],
    relay_key: [u8; 32],
    record_key: [u8; 32],
}

impl EpochKeys {
    /// Derives the keys of `epoch` of `context_id` from its secret.
    pub fn derive(context_id: ContextId, epoch: Epoch, secret: &EpochSecret) -> Self {
        let base: [&[u8]; 3] = [&secret.0[..], context_id.as_bytes(), &epoch.to_be_bytes()];
        Self {
            context_id,
            epoch,
            descriptor_key: kdf(LABEL_DESCRIPTOR_KEY, &base),
            psk_root: kdf(LABEL_PSK_ROOT, &base),
            tag_key: kdf(LABEL_TAG_KEY, &base),
            rekey_auth_key: kdf(LABEL_REKEY_AUTH, &base),
            relay_key: kdf(LABEL_RELAY_KEY, &base),
            record_key: kdf(LABEL_RECORD_KEY, &base),
        }
    }
    /// Whether `other` holds the same keys (constant time): two rekeys to
    /// the same epoch number give different keys.
    pub fn same_as(&self, other: &EpochKeys) -> bool {
        self.context_id == other.context_id
            && self.epoch == other.epoch
            && crate::codec::ct_eq(&self.descriptor_key, &other.descriptor_key)
    }

    /// The context.
    pub fn context_id(&self) -> ContextId {
        self.context_id
    }
    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// The AEAD key that seals descriptors of this epoch.
    pub fn descriptor_key(&self) -> &[u8; 32] {
        &self.descriptor_key
    }
    /// The key that seals the journal's records of this epoch: channel
    /// records, revocations, and the rekeys that advance from it.
    pub fn record_key(&self) -> &[u8; 32] {
        &self.record_key
    }
    /// The handshake PSK of authorities `a` and `b`: the same whichever
    /// side asks, different for every pair and every epoch.
    pub fn handshake_psk(&self, a: &AuthorityId, b: &AuthorityId) -> Psk {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Zeroizing::new(kdf(
            LABEL_HANDSHAKE_PSK,
            &[&self.psk_root, lo.as_bytes(), hi.as_bytes()],
        ))
    }
    /// The PSK commitment that `authority` puts in its descriptors.
    ///
    /// The PSK is pairwise but a descriptor is read by every member, so the
    /// descriptor cannot commit to one PSK. It commits instead to the PSK
    /// root of the epoch (from which every pairwise PSK is derived), bound
    /// to the publisher: a reader holding the same root recomputes it and
    /// knows that the PSK it derives for the pair is the one the publisher
    /// will use, before spending a handshake. It reveals nothing about the
    /// root (a one-way derivation, sealed inside the descriptor anyway).
    pub fn psk_commitment(&self, authority: &AuthorityId) -> [u8; 32] {
        kdf(
            LABEL_PSK_COMMITMENT,
            &[&self.psk_root, authority.as_bytes()],
        )
    }
    /// Whether `commitment` is `authority`'s commitment for this epoch
    /// (constant time).
    pub fn check_psk_commitment(&self, authority: &AuthorityId, commitment: &[u8; 32]) -> bool {
        ct_eq(&self.psk_commitment(authority), commitment)
    }
    /// The blinded rendezvous tag of time period `period` (for example
    /// `now_ms / period_ms`): members register under it on a public point
    /// to find each other; the point learns nothing linking it to the
    /// context, and it changes every period and every epoch.
    pub fn rendezvous_tag(&self, period: u64) -> [u8; 32] {
        kdf(
            LABEL_RENDEZVOUS_TAG,
            &[&self.tag_key, &period.to_be_bytes()],
        )
    }
    /// The seed of the Ed25519 libp2p identity under which `authority`
    /// registers on public points in period `period` (issue 12: blinded
    /// discovery). Every member can compute every member's seed, so a
    /// member recognises the others among a namespace's registrations;
    /// without the epoch secret the peer ids look random, change every
    /// period and every epoch, and differ between contexts, so a point
    /// cannot link one member's registrations. (A member could register
    /// under another's seed; nothing rests on it: Noise authenticates the
    /// channel that follows.)
    pub fn rendezvous_peer_seed(
        &self,
        period: u64,
        authority: &AuthorityId,
    ) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(kdf(
            LABEL_RENDEZVOUS_PEER,
            &[&self.tag_key, &period.to_be_bytes(), authority.as_bytes()],
        ))
    }
    /// The seed of this epoch's Ed25519 *grant key* for the relay whose
    /// authority is `relay` (docs/KEY-SCHEDULE.md, "Relay grants"). Every
    /// member derives the same key; its public half names the context's
    /// circuits on that relay and a signature under it, bound to the
    /// relay's fresh challenge, proves to the relay that the client holds
    /// the epoch secret, without saying which member it is. It changes
    /// with every epoch, so a member removed by an epoch advance cannot
    /// make the next epoch's grant; it differs per relay, so one relay
    /// cannot present a context's grant to another.
    pub fn relay_grant_seed(&self, relay: &AuthorityId) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(kdf(LABEL_RELAY_GRANT, &[&self.relay_key, relay.as_bytes()]))
    }
    /// The opaque handle under which `authority` is reached on the relay
    /// `relay` in this epoch: every member computes every member's handle,
    /// the relay sees 32 bytes it cannot link to an authority or to
    /// another relay or epoch.
    pub fn relay_handle(&self, relay: &AuthorityId, authority: &AuthorityId) -> [u8; 32] {
        kdf(
            LABEL_RELAY_HANDLE,
            &[&self.relay_key, relay.as_bytes(), authority.as_bytes()],
        )
    }
    /// MAC under the rekey key: proves knowledge of this epoch's secret.
    pub(crate) fn rekey_mac(&self, message: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.rekey_auth_key, message).as_bytes()
    }
    /// The rendezvous tag as a namespace string for a public point:
    /// `rdv1-` and 64 hex digits (69 bytes, under the 255-byte limit).
    pub fn rendezvous_namespace(&self, period: u64) -> String {
        format!("rdv1-{}", hex(&self.rendezvous_tag(period)))
    }
}

impl Drop for EpochKeys {
    fn drop(&mut self) {
        self.descriptor_key.zeroize();
        self.psk_root.zeroize();
        self.tag_key.zeroize();
        self.rekey_auth_key.zeroize();
        self.relay_key.zeroize();
        self.record_key.zeroize();
    }
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKeys")
            .field("context_id", &self.context_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let set: std::collections::HashSet<_> = ALL_LABELS.iter().collect();
        assert_eq!(set.len(), ALL_LABELS.len());
    }

    #[test]
    fn next_epoch_secret_needs_the_fresh_bytes() {
        let s = EpochSecret::from_bytes([1; 32]);
        let c = ContextId::from_bytes([2; 32]);
        let a = s.next(&c, 1, &[3; 32]);
        let b = s.next(&c, 1, &[4; 32]);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose(), s.next(&c, 1, &[3; 32]).expose());
    }
}
