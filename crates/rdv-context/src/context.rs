//! Relational contexts: membership, the context secret, invitations and
//! epoch advances.
//!
//! A member holds a [`Context`]: the context id, the current epoch, that
//! epoch's secret and the static X25519 keys of the members it knows.
//!
//! - The creator draws the epoch-0 secret ([`Context::create`]).
//! - A member hands it to an invitee in an [`Invitation`], a text to paste:
//!   a bearer invitation (whoever holds the text can join: send it like a
//!   password) or one sealed to the invitee's member card (safe to send in
//!   the clear).
//! - Members learn each other's static keys from invitations, from member
//!   cards ([`Context::add_member`]) and from the descriptors they publish
//!   (which are signed and carry the key).
//! - [`Context::advance_epoch`] removes members: it draws 32 fresh bytes
//!   `R`, seals them to each remaining member's static key, and the next
//!   secret is `KDF(S(e), C, e+1, R)`. A removed member keeps `S(e)` but
//!   never receives `R`, so it cannot derive `S(e+1)` or anything after.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::armor::{self, ArmorError};
use crate::codec::{DecodeError, Reader, Writer, ct_eq};
use crate::descriptor::RendezvousDescriptor;
use crate::identity::{Identity, StaticKeyBinding, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::{EpochKeys, EpochSecret};
use crate::rng::{CryptoRng, random_array};
use crate::seal::{AEAD_TAG_LEN, open_sealed, seal_to};

/// Most members a context tracks (and an epoch rekey can carry).
pub const MAX_MEMBERS: usize = 1024;

const INVITATION_DOMAIN: &str = "rdv context v1 invitation";
const INVITATION_SEAL_AD: &[u8] = b"rdv context v1 invitation-seal";
const REKEY_DOMAIN: &str = "rdv context v1 epoch-rekey";
const REKEY_SEAL_AD: &[u8] = b"rdv context v1 rekey-seal";
const SEALED_SECRET_LEN: usize = 32 + AEAD_TAG_LEN;
const REKEY_VERSION: u8 = 1;

/// A refused membership operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context already tracks [`MAX_MEMBERS`] members.
    #[error("the context already has the maximum of {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A member card whose signature does not verify.
    #[error("the member card's signature does not verify")]
    BadBinding,
    /// An epoch advance that would remove the member making it.
    #[error("a member cannot remove itself by advancing the epoch; another member must")]
    CannotRemoveSelf,
    /// A descriptor of another context.
    #[error("the descriptor belongs to another context")]
    WrongContext,
    /// The epoch counter is exhausted.
    #[error("the epoch counter is exhausted; create a new context")]
    EpochExhausted,
}

/// Why an invitation could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvitationError {
    /// The text did not parse (typo, cut paste, other kind, version).
    #[error("{0}")]
    Text(#[from] ArmorError),
    /// The inviter's signature does not verify: forged or altered.
    #[error("the invitation's signature does not verify: it was forged or altered")]
    BadSignature,
    /// The invitation expired.
    #[error("the invitation expired at {expires_at_ms} ms (now {now_ms} ms); ask for a new one")]
    Expired {
        /// When it expired.
        expires_at_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// A sealed invitation for another authority.
    #[error(
        "this invitation is sealed to another authority ({0}); it cannot be opened with this identity"
    )]
    NotForMe(AuthorityId),
    /// A sealed invitation whose box does not open with this identity's key.
    #[error("the sealed secret does not open with this identity's static key")]
    Unreadable,
}

/// Why an epoch rekey was refused. Nothing changes on refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// Malformed bytes.
    #[error("malformed epoch rekey: {0}")]
    Decode(#[from] DecodeError),
    /// For another context.
    #[error("epoch rekey for another context")]
    WrongContext,
    /// Not from the current epoch (already applied, stale, or from an epoch
    /// this member has not reached).
    #[error("epoch rekey from epoch {from} to {to}, but this member is at epoch {current}")]
    WrongEpoch {
        /// The rekey's starting epoch.
        from: Epoch,
        /// Its target epoch.
        to: Epoch,
        /// This member's epoch.
        current: Epoch,
    },
    /// A second, different rekey for a transition this member already made:
    /// two members advanced the epoch at once. Members disagree on the
    /// secret until one of them advances again from the agreed epoch.
    #[error("a different epoch rekey to epoch {to} was already applied (concurrent advances)")]
    Conflict {
        /// The contested epoch.
        to: Epoch,
    },
    /// The author does not hold the current epoch secret.
    #[error("the rekey's author does not hold this epoch's secret")]
    NotAMember,
    /// The author's signature does not verify.
    #[error("the rekey's signature does not verify")]
    BadSignature,
    /// This member was removed: it gets no new secret.
    #[error("this member was removed from the context at epoch {to}")]
    Removed {
        /// The epoch it no longer reaches.
        to: Epoch,
    },
    /// This member is not among the recipients, or its box does not open.
    #[error("the rekey carries no secret this member can open")]
    NoSecretForMe,
}

/// What [`Context::apply_rekey`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyOutcome {
    /// The context moved to the new epoch.
    Advanced {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The same rekey had already been applied: nothing changed.
    AlreadyApplied,
}

/// A member's view of a context: the current epoch's secret and keys, and
/// the static keys of known members.
pub struct Context {
    id: ContextId,
    epoch: Epoch,
    secret: EpochSecret,
    keys: EpochKeys,
    me: AuthorityId,
    members: BTreeMap<AuthorityId, [u8; 32]>,
    /// The id of the rekey that brought us to `epoch`, to recognise a
    /// re-delivery and tell it apart from a concurrent advance.
    last_rekey: Option<[u8; 32]>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A new context created by `identity`: random id and epoch-0 secret.
    pub fn create<R: CryptoRng + ?Sized>(identity: &Identity, rng: &mut R) -> Self {
        let id = ContextId::from_bytes(random_array::<32, R>(rng));
        let secret = EpochSecret::from_bytes(random_array::<32, R>(rng));
        Self::from_parts(identity, id, 0, secret)
    }

    /// A context from stored parts (for example after a restart). The member
    /// itself is always in the roster.
    pub fn from_parts(
        identity: &Identity,
        id: ContextId,
        epoch: Epoch,
        secret: EpochSecret,
    ) -> Self {
        let keys = EpochKeys::derive(id, epoch, &secret);
        let mut members = BTreeMap::new();
        members.insert(identity.authority(), identity.static_public());
        Self {
            id,
            epoch,
            secret,
            keys,
            me: identity.authority(),
            members,
            last_rekey: None,
        }
    }

    /// The context id.
    pub fn id(&self) -> ContextId {
        self.id
    }
    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// The current epoch's keys.
    pub fn keys(&self) -> &EpochKeys {
        &self.keys
    }
    /// The current epoch's secret, for persisting.
    pub fn secret(&self) -> &EpochSecret {
        &self.secret
    }
    /// Known members and their static X25519 keys (this member included).
    pub fn members(&self) -> impl Iterator<Item = (&AuthorityId, &[u8; 32])> {
        self.members.iter()
    }
    /// Whether `authority` is a known member.
    pub fn is_member(&self, authority: &AuthorityId) -> bool {
        self.members.contains_key(authority)
    }

    /// Records a member's static key from its member card (verified).
    /// Returns whether it was new.
    pub fn add_member(&mut self, binding: &StaticKeyBinding) -> Result<bool, ContextError> {
        if !binding.verify() {
            return Err(ContextError::BadBinding);
        }
        self.learn_member(binding.authority, binding.static_key)
    }

    /// Records the static key of the publisher of a descriptor of this
    /// context that the service verified (opened, signature checked): how
    /// members learn of members invited by others, so that the next epoch
    /// advance reaches them. Returns whether the member was new.
    pub fn learn_from_descriptor(
        &mut self,
        descriptor: &RendezvousDescriptor,
    ) -> Result<bool, ContextError> {
        if descriptor.context_id != self.id {
            return Err(ContextError::WrongContext);
        }
        self.learn_member(descriptor.authority_id, descriptor.static_key)
    }

    /// Records a member seen in a verified descriptor or invitation.
    pub(crate) fn learn_member(
        &mut self,
        authority: AuthorityId,
        static_key: [u8; 32],
    ) -> Result<bool, ContextError> {
        if let Some(k) = self.members.get_mut(&authority) {
            *k = static_key;
            return Ok(false);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(ContextError::TooManyMembers);
        }
        self.members.insert(authority, static_key);
        Ok(true)
    }

    /// A bearer invitation to the current epoch, valid until
    /// `expires_at_ms`: whoever holds the text joins, so send it like a
    /// password.
    pub fn invite(&self, identity: &Identity, expires_at_ms: u64) -> Invitation {
        Invitation::sign(
            identity,
            self.id,
            self.epoch,
            expires_at_ms,
            InvitationSecret::Bearer(Zeroizing::new(*self.secret.expose())),
        )
    }

    /// An invitation sealed to `invitee` (its member card): only it can open
    /// the secret, so the text may travel in the clear. The invitee is added
    /// to the roster.
    pub fn invite_sealed<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        invitee: &StaticKeyBinding,
        expires_at_ms: u64,
        rng: &mut R,
    ) -> Result<Invitation, ContextError> {
        self.add_member(invitee)?;
        let eph = x25519_dalek::StaticSecret::from(random_array::<32, R>(rng));
        let ephemeral_public = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let ad = invitation_seal_ad(&self.id, self.epoch, &invitee.authority);
        let boxed = seal_to(&eph, &invitee.static_key, &ad, self.secret.expose());
        Ok(Invitation::sign(
            identity,
            self.id,
            self.epoch,
            expires_at_ms,
            InvitationSecret::Sealed {
                invitee: invitee.authority,
                ephemeral_public,
                boxed,
            },
        ))
    }

    /// Advances to the next epoch, removing `remove`. Returns the rekey to
    /// deliver to the remaining members (each can open only its own box);
    /// this context is already advanced.
    pub fn advance_epoch<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        remove: &[AuthorityId],
        rng: &mut R,
    ) -> Result<EpochRekey, ContextError> {
        if remove.contains(&self.me) {
            return Err(ContextError::CannotRemoveSelf);
        }
        let to = self
            .epoch
            .checked_add(1)
            .ok_or(ContextError::EpochExhausted)?;
        let mut removed: Vec<AuthorityId> = remove.to_vec();
        removed.sort();
        removed.dedup();
        removed.truncate(MAX_MEMBERS);
        let fresh = Zeroizing::new(random_array::<32, R>(rng));
        let eph = x25519_dalek::StaticSecret::from(random_array::<32, R>(rng));
        let ephemeral_public = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let recipients: Vec<(AuthorityId, Vec<u8>)> = self
            .members
            .iter()
            .filter(|(a, _)| **a != self.me && removed.binary_search(a).is_err())
            .map(|(a, key)| {
                let ad = rekey_seal_ad(&self.id, to, a);
                (*a, seal_to(&eph, key, &ad, &fresh))
            })
            .collect();
        let mut rekey = EpochRekey {
            context_id: self.id,
            from_epoch: self.epoch,
            to_epoch: to,
            rotator: self.me,
            removed,
            ephemeral_public,
            recipients,
            membership_mac: [0; 32],
            signature: [0; 64],
        };
        rekey.membership_mac = self.keys.rekey_mac(&rekey.mac_body());
        rekey.signature = identity.sign(REKEY_DOMAIN, &rekey.signed_body());
        let id = rekey.id();
        self.enter_epoch(to, self.secret.next(&self.id, to, &fresh), Some(id));
        for a in &rekey.removed {
            self.members.remove(a);
        }
        Ok(rekey)
    }

    /// Applies a rekey made by another member. Checks, in order: context,
    /// epoch, that the author holds the current secret (MAC), its signature,
    /// that this member was not removed, then opens its box. On any refusal
    /// nothing changes.
    pub fn apply_rekey(
        &mut self,
        identity: &Identity,
        rekey: &EpochRekey,
    ) -> Result<RekeyOutcome, RekeyError> {
        if rekey.context_id != self.id {
            return Err(RekeyError::WrongContext);
        }
        if rekey.to_epoch == self.epoch && rekey.from_epoch.checked_add(1) == Some(self.epoch) {
            return if self.last_rekey == Some(rekey.id()) {
                Ok(RekeyOutcome::AlreadyApplied)
            } else {
                Err(RekeyError::Conflict { to: rekey.to_epoch })
            };
        }
        if rekey.from_epoch != self.epoch || rekey.from_epoch.checked_add(1) != Some(rekey.to_epoch)
        {
            return Err(RekeyError::WrongEpoch {
                from: rekey.from_epoch,
                to: rekey.to_epoch,
                current: self.epoch,
            });
        }
        if !ct_eq(
            &self.keys.rekey_mac(&rekey.mac_body()),
            &rekey.membership_mac,
        ) {
            return Err(RekeyError::NotAMember);
        }
        if !rekey.rotator.verify(
            &signing_message(REKEY_DOMAIN, &rekey.signed_body()),
            &rekey.signature,
        ) {
            return Err(RekeyError::BadSignature);
        }
        let me = identity.authority();
        if rekey.removed.contains(&me) {
            return Err(RekeyError::Removed { to: rekey.to_epoch });
        }
        let (_, boxed) = rekey
            .recipients
            .iter()
            .find(|(a, _)| *a == me)
            .ok_or(RekeyError::NoSecretForMe)?;
        let ad = rekey_seal_ad(&self.id, rekey.to_epoch, &me);
        let fresh = open_sealed(identity, &rekey.ephemeral_public, &ad, boxed)
            .ok_or(RekeyError::NoSecretForMe)?;
        let next = self.secret.next(&self.id, rekey.to_epoch, &fresh);
        self.enter_epoch(rekey.to_epoch, next, Some(rekey.id()));
        for a in &rekey.removed {
            self.members.remove(a);
        }
        Ok(RekeyOutcome::Advanced { epoch: self.epoch })
    }

    fn enter_epoch(&mut self, epoch: Epoch, secret: EpochSecret, rekey: Option<[u8; 32]>) {
        self.keys = EpochKeys::derive(self.id, epoch, &secret);
        self.secret = secret;
        self.epoch = epoch;
        self.last_rekey = rekey;
    }
}

fn invitation_seal_ad(context: &ContextId, epoch: Epoch, invitee: &AuthorityId) -> Vec<u8> {
    let mut w = Writer::with_capacity(100);
    w.raw(INVITATION_SEAL_AD)
        .raw(context.as_bytes())
        .u64(epoch)
        .raw(invitee.as_bytes());
    w.into_vec()
}

fn rekey_seal_ad(context: &ContextId, to_epoch: Epoch, recipient: &AuthorityId) -> Vec<u8> {
    let mut w = Writer::with_capacity(100);
    w.raw(REKEY_SEAL_AD)
        .raw(context.as_bytes())
        .u64(to_epoch)
        .raw(recipient.as_bytes());
    w.into_vec()
}

/// The secret part of an invitation.
#[derive(Clone, PartialEq, Eq)]
enum InvitationSecret {
    Bearer(Zeroizing<[u8; 32]>),
    Sealed {
        invitee: AuthorityId,
        ephemeral_public: [u8; 32],
        boxed: Vec<u8>,
    },
}

/// An invitation to a context: the context id, epoch and secret, the
/// inviter's authority and static key, an expiry, and the inviter's
/// signature over all of it.
///
/// As text: `rdv-invite-v1:<base32>` (see the crate's armour: a checksum
/// tells typos from forgeries, whitespace is ignored). Payload, version 1:
///
/// ```text
/// mode (1: 0 bearer, 1 sealed) | context id (32) | epoch (8) | inviter (32)
/// | inviter static X25519 key (32) | expires_at_ms (8)
/// | bearer: secret (32)  or  sealed: invitee (32) | ephemeral key (32) | box (48)
/// | inviter's Ed25519 signature (64)
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    context_id: ContextId,
    epoch: Epoch,
    inviter: AuthorityId,
    inviter_static_key: [u8; 32],
    expires_at_ms: u64,
    secret: InvitationSecret,
    signature: [u8; 64],
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("context_id", &self.context_id)
            .field("epoch", &self.epoch)
            .field("inviter", &self.inviter)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl Invitation {
    fn sign(
        identity: &Identity,
        context_id: ContextId,
        epoch: Epoch,
        expires_at_ms: u64,
        secret: InvitationSecret,
    ) -> Self {
        let mut inv = Self {
            context_id,
            epoch,
            inviter: identity.authority(),
            inviter_static_key: identity.static_public(),
            expires_at_ms,
            secret,
            signature: [0; 64],
        };
        inv.signature = identity.sign(INVITATION_DOMAIN, &inv.body());
        inv
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        match &self.secret {
            InvitationSecret::Bearer(_) => w.u8(0),
            InvitationSecret::Sealed { .. } => w.u8(1),
        };
        w.raw(self.context_id.as_bytes())
            .u64(self.epoch)
            .raw(self.inviter.as_bytes())
            .raw(&self.inviter_static_key)
            .u64(self.expires_at_ms);
        match &self.secret {
            InvitationSecret::Bearer(s) => w.raw(&s[..]),
            InvitationSecret::Sealed {
                invitee,
                ephemeral_public,
                boxed,
            } => w.raw(invitee.as_bytes()).raw(ephemeral_public).raw(boxed),
        };
        w.into_vec()
    }

    /// The context it invites to.
    pub fn context_id(&self) -> ContextId {
        self.context_id
    }
    /// The epoch whose secret it carries.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Who signed it.
    pub fn inviter(&self) -> AuthorityId {
        self.inviter
    }
    /// When it stops being accepted.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }
    /// The invitee of a sealed invitation; `None` for a bearer one.
    pub fn invitee(&self) -> Option<AuthorityId> {
        match &self.secret {
            InvitationSecret::Bearer(_) => None,
            InvitationSecret::Sealed { invitee, .. } => Some(*invitee),
        }
    }

    /// Joins the context: checks the signature and expiry, opens the secret
    /// (sealed: with `identity`'s static key) and returns the member's
    /// context, with the inviter in the roster.
    pub fn accept(&self, identity: &Identity, now_ms: u64) -> Result<Context, InvitationError> {
        if !self.inviter.verify(
            &signing_message(INVITATION_DOMAIN, &self.body()),
            &self.signature,
        ) {
            return Err(InvitationError::BadSignature);
        }
        if now_ms >= self.expires_at_ms {
            return Err(InvitationError::Expired {
                expires_at_ms: self.expires_at_ms,
                now_ms,
            });
        }
        let secret = match &self.secret {
            InvitationSecret::Bearer(s) => EpochSecret::from_bytes(**s),
            InvitationSecret::Sealed {
                invitee,
                ephemeral_public,
                boxed,
            } => {
                if *invitee != identity.authority() {
                    return Err(InvitationError::NotForMe(*invitee));
                }
                let ad = invitation_seal_ad(&self.context_id, self.epoch, invitee);
                let s = open_sealed(identity, ephemeral_public, &ad, boxed)
                    .ok_or(InvitationError::Unreadable)?;
                EpochSecret::from_bytes(*s)
            }
        };
        let mut ctx = Context::from_parts(identity, self.context_id, self.epoch, secret);
        // The roster is empty but for ourselves: this cannot hit the limit.
        let _ = ctx.learn_member(self.inviter, self.inviter_static_key);
        Ok(ctx)
    }

    /// Canonical payload bytes (what the text armours).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes payload bytes. Structure only: [`Invitation::accept`] checks
    /// the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let mode = r.u8("invitation mode")?;
        if mode > 1 {
            return Err(DecodeError::UnknownTag {
                what: "invitation mode",
                tag: mode,
            });
        }
        let context_id = ContextId::from_bytes(r.array("context id")?);
        let epoch = r.u64("epoch")?;
        let inviter = AuthorityId::from_bytes(r.array("inviter")?)?;
        let inviter_static_key = r.array("inviter static key")?;
        let expires_at_ms = r.u64("expiry")?;
        let secret = if mode == 0 {
            InvitationSecret::Bearer(Zeroizing::new(r.array("secret")?))
        } else {
            InvitationSecret::Sealed {
                invitee: AuthorityId::from_bytes(r.array("invitee")?)?,
                ephemeral_public: r.array("ephemeral key")?,
                boxed: r.take(SEALED_SECRET_LEN, "sealed secret")?.to_vec(),
            }
        };
        let signature = r.array("signature")?;
        r.finish("invitation")?;
        Ok(Self {
            context_id,
            epoch,
            inviter,
            inviter_static_key,
            expires_at_ms,
            secret,
            signature,
        })
    }
}

impl fmt::Display for Invitation {
    /// `rdv-invite-v1:<base32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&armor::encode("invite", 1, &self.to_bytes()))
    }
}

impl FromStr for Invitation {
    type Err = InvitationError;
    /// Parses the text (checksum and structure; the signature is checked by
    /// [`Invitation::accept`], which can then say "forged" rather than
    /// "mistyped").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = armor::decode("invite", 1, s)?;
        Self::from_bytes(&bytes).map_err(|e| InvitationError::Text(ArmorError::Payload(e)))
    }
}

/// The message that moves members to the next epoch: the fresh randomness
/// sealed to each remaining member, the removal list, a MAC proving the
/// author holds the current secret, and the author's signature.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochRekey {
    /// The context.
    pub context_id: ContextId,
    /// The epoch it advances from.
    pub from_epoch: Epoch,
    /// The epoch it advances to (`from_epoch + 1`).
    pub to_epoch: Epoch,
    /// The member who advanced.
    pub rotator: AuthorityId,
    /// Removed members, sorted.
    pub removed: Vec<AuthorityId>,
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
            .field("recipients", &self.recipients.len())
            .finish_non_exhaustive()
    }
}

impl EpochRekey {
    fn mac_body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128 + 80 * self.recipients.len());
        w.u8(REKEY_VERSION)
            .raw(self.context_id.as_bytes())
            .u64(self.from_epoch)
            .u64(self.to_epoch)
            .raw(self.rotator.as_bytes())
            .u16(self.removed.len() as u16);
        for a in &self.removed {
            w.raw(a.as_bytes());
        }
        w.raw(&self.ephemeral_public)
            .u16(self.recipients.len() as u16);
        for (a, b) in &self.recipients {
            w.raw(a.as_bytes()).raw(b);
        }
        w.into_vec()
    }
    fn signed_body(&self) -> Vec<u8> {
        let mut b = self.mac_body();
        b.extend_from_slice(&self.membership_mac);
        b
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
    /// Decodes bytes (structure only; [`Context::apply_rekey`] checks the rest).
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
        let n = r.count16("removed members", MAX_MEMBERS)?;
        let mut removed = Vec::with_capacity(n);
        for _ in 0..n {
            removed.push(AuthorityId::from_bytes(r.array("removed member")?)?);
        }
        if removed.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::Invalid {
                what: "removed members",
                reason: "not sorted and distinct",
            });
        }
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
            ephemeral_public,
            recipients,
            membership_mac,
            signature,
        })
    }
}
