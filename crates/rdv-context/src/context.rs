//! Relational contexts: membership, admins, the context secret and epoch
//! advances.
//!
//! A member holds a [`Context`]: the context id, the current epoch, that
//! epoch's secret, the static X25519 keys of the members it knows (the
//! roster), the admins, and the last few epoch transitions it made (so a
//! concurrent advance that should have won can replace one it applied).
//!
//! - The creator draws the epoch-0 secret ([`Context::create`]) and is the
//!   first admin.
//! - A member hands the secret to an invitee in an [`crate::Invitation`].
//! - Members learn each other's static keys from invitations, from member
//!   cards ([`Context::add_member`]) and from the descriptors they publish
//!   (which are signed and carry the key).
//! - [`Context::advance_epoch`] (admins only) removes members: it draws 32
//!   fresh bytes `R`, seals them to each remaining member's static key, and
//!   the next secret is `KDF(S(e), C, e+1, R)`. A removed member keeps
//!   `S(e)` but never receives `R`, so it cannot derive `S(e+1)`.
//! - Concurrent advances from one epoch resolve by [`crate::rekey`]'s rank:
//!   every member ends on the same one, whatever order they arrive in.
//! - [`Context::to_bytes`] / [`Context::restore`] persist all of it, so a
//!   restart keeps the roster and an advance after it reaches everyone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer, ct_eq};
use crate::descriptor::RendezvousDescriptor;
use crate::identity::{Identity, StaticKeyBinding};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::invitation::{Invitation, InvitationSecret, invitation_seal_ad};
use crate::keys::{EpochKeys, EpochSecret};
use crate::record_seal::RecordError;
use crate::rekey::{
    EpochRekey, MAX_ADMINS, MAX_MEMBERS, REKEY_DOMAIN, Rank, SealedRekey, read_authorities,
    write_authorities,
};
use crate::rng::{CryptoRng, random_array};
use crate::seal::{open_sealed, seal_to};

const REKEY_SEAL_AD: &[u8] = b"rdv context v1 rekey-seal";
const STATE_VERSION: u8 = 1;
/// How many past transitions a member keeps to replace one by a concurrent
/// rekey that outranks it. A losing branch longer than this cannot be
/// undone (the member reports [`RekeyError::Conflict`]).
pub const REKEY_HISTORY: usize = 16;

/// A refused membership operation. Nothing changes on refusal.
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
    #[error("a member cannot remove itself by advancing the epoch; another admin must")]
    CannotRemoveSelf,
    /// A descriptor of another context.
    #[error("the descriptor belongs to another context")]
    WrongContext,
    /// The epoch counter is exhausted.
    #[error("the epoch counter is exhausted; create a new context")]
    EpochExhausted,
    /// Only admins advance the epoch.
    #[error("only an admin of the context can advance its epoch or remove members; ask one")]
    NotAnAdmin,
    /// Appointing a non-member, or beyond [`MAX_ADMINS`].
    #[error("cannot appoint {0} as admin: not a known member, or too many admins")]
    BadAppointment(AuthorityId),
    /// A member seen publishing in this epoch whose static key is not in the
    /// roster: the advance would lock it out silently.
    #[error(
        "member {0} published in this epoch but its key is not in the roster; \
         learn its member card or descriptor first, or name it for removal"
    )]
    UnknownMemberKey(AuthorityId),
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
    /// Not from the current epoch nor from one this member can still revisit.
    #[error("epoch rekey from epoch {from} to {to}, but this member is at epoch {current}")]
    WrongEpoch {
        /// The rekey's starting epoch.
        from: Epoch,
        /// Its target epoch.
        to: Epoch,
        /// This member's epoch.
        current: Epoch,
    },
    /// A concurrent rekey for a transition older than [`REKEY_HISTORY`]
    /// epochs: it can no longer be weighed against the one applied.
    #[error("a concurrent epoch rekey to epoch {to} arrived too late to be weighed")]
    Conflict {
        /// The contested epoch.
        to: Epoch,
    },
    /// The author does not hold the epoch secret it advances from.
    #[error("the rekey's author does not hold this epoch's secret")]
    NotAMember,
    /// The author's signature does not verify.
    #[error("the rekey's signature does not verify")]
    BadSignature,
    /// The author is not an admin of the epoch it advances from.
    #[error("the rekey's author {rotator} is not an admin of the context")]
    NotAnAdmin {
        /// The author.
        rotator: AuthorityId,
    },
    /// The admin list breaks the rules (an admin removing itself, admins
    /// dropped without removal, appointing a non-recipient).
    #[error("the rekey's admin list breaks the context's rules: {0}")]
    BadAdmins(&'static str),
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
#[non_exhaustive]
pub enum RekeyOutcome {
    /// The context moved to the new epoch.
    Advanced {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The same rekey had already been applied: nothing changed.
    AlreadyApplied,
    /// A concurrent rekey that outranks the one this member had applied: the
    /// member went back and took it instead. Its secret changed: republish
    /// descriptors and rotate channels.
    Replaced {
        /// The epoch it is at now.
        epoch: Epoch,
    },
    /// A concurrent rekey outranked by the one applied: ignored, as every
    /// other member ignores it.
    Outranked,
}

/// One epoch's membership view.
#[derive(Clone)]
struct EpochState {
    epoch: Epoch,
    secret: EpochSecret,
    members: BTreeMap<AuthorityId, [u8; 32]>,
    /// Most senior first. Empty when unknown ([`Context::from_parts`]).
    admins: Vec<AuthorityId>,
    /// Authorities seen publishing in this epoch.
    seen: BTreeSet<AuthorityId>,
}

/// A transition this member made: the state before it and the rekey taken.
#[derive(Clone)]
struct Transition {
    before: EpochState,
    rekey_id: [u8; 32],
    rank: Rank,
}

/// A member's view of a context.
pub struct Context {
    id: ContextId,
    me: AuthorityId,
    state: EpochState,
    keys: EpochKeys,
    /// Oldest first, at most [`REKEY_HISTORY`].
    history: VecDeque<Transition>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("epoch", &self.state.epoch)
            .field("members", &self.state.members.len())
            .field("admins", &self.state.admins.len())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A new context created by `identity`, its first admin: random id and
    /// epoch-0 secret.
    pub fn create<R: CryptoRng + ?Sized>(identity: &Identity, rng: &mut R) -> Self {
        let id = ContextId::from_bytes(random_array::<32, R>(rng));
        let secret = EpochSecret::from_bytes(random_array::<32, R>(rng));
        let mut ctx = Self::from_parts(identity, id, 0, secret);
        ctx.state.admins = vec![identity.authority()];
        ctx
    }

    /// A context known only by its id, epoch and secret (tools, tests): the
    /// roster holds only this member and the admins are unknown, so it can
    /// neither advance the epoch nor follow an advance. A member restarting
    /// uses [`Context::restore`].
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
            me: identity.authority(),
            state: EpochState {
                epoch,
                secret,
                members,
                admins: Vec::new(),
                seen: BTreeSet::new(),
            },
            keys,
            history: VecDeque::new(),
        }
    }

    /// A joiner's context: the inviter in the roster, the admins as stated.
    pub(crate) fn joined(
        identity: &Identity,
        id: ContextId,
        epoch: Epoch,
        secret: EpochSecret,
        inviter: (AuthorityId, [u8; 32]),
        admins: Vec<AuthorityId>,
    ) -> Self {
        let mut ctx = Self::from_parts(identity, id, epoch, secret);
        ctx.state.members.insert(inviter.0, inviter.1);
        ctx.state.admins = admins;
        ctx
    }

    /// Whether `authority` was a member in one of this member's recent
    /// transitions ([`REKEY_HISTORY`]) and is not now: removed lately.
    pub fn was_member(&self, authority: &AuthorityId) -> bool {
        !self.is_member(authority)
            && self
                .history
                .iter()
                .any(|t| t.before.members.contains_key(authority))
    }

    /// The keys of the epoch this member was at before the current one
    /// (from its recent transitions, which survive restarts), if any: what
    /// a responder accepts a handshake under from a member that missed the
    /// last advance.
    pub fn previous_keys(&self) -> Option<EpochKeys> {
        self.history
            .back()
            .map(|t| EpochKeys::derive(self.id, t.before.epoch, &t.before.secret))
    }

    /// The keys of `epoch`: the current epoch's, or one this member passed
    /// through in its recent transitions ([`REKEY_HISTORY`]).
    pub fn keys_at(&self, epoch: Epoch) -> Option<EpochKeys> {
        if epoch == self.state.epoch {
            return Some(self.keys.clone());
        }
        self.history
            .iter()
            .rev()
            .find(|t| t.before.epoch == epoch)
            .map(|t| EpochKeys::derive(self.id, t.before.epoch, &t.before.secret))
    }

    /// Opens a rekey from the journal with the keys of the epoch it
    /// advances from ([`Context::keys_at`]) and checks its rotator's
    /// signature. A rekey from an epoch this member holds no keys of (a
    /// later one, or one older than its history) is
    /// [`RecordError::WrongEpoch`]: it cannot be read yet, or any more.
    pub fn open_rekey(&self, sealed: &SealedRekey) -> Result<EpochRekey, RecordError> {
        let keys = self
            .keys_at(sealed.from_epoch())
            .ok_or(RecordError::WrongEpoch {
                expected: self.state.epoch,
                found: sealed.from_epoch(),
            })?;
        sealed.open(&keys)
    }

    /// The context id.
    pub fn id(&self) -> ContextId {
        self.id
    }
    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.state.epoch
    }
    /// The current epoch's keys.
    pub fn keys(&self) -> &EpochKeys {
        &self.keys
    }
    /// The current epoch's secret.
    pub fn secret(&self) -> &EpochSecret {
        &self.state.secret
    }
    /// Known members and their static X25519 keys (this member included).
    pub fn members(&self) -> impl Iterator<Item = (&AuthorityId, &[u8; 32])> {
        self.state.members.iter()
    }
    /// Whether `authority` is a known member.
    pub fn is_member(&self, authority: &AuthorityId) -> bool {
        self.state.members.contains_key(authority)
    }
    /// The admins, most senior first.
    pub fn admins(&self) -> &[AuthorityId] {
        &self.state.admins
    }
    /// Whether `authority` is an admin.
    pub fn is_admin(&self, authority: &AuthorityId) -> bool {
        self.state.admins.contains(authority)
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
    /// context, current epoch, that the service verified (opened, signature
    /// checked): how members learn of members invited by others, so that the
    /// next epoch advance reaches them. Returns whether the member was new.
    pub fn learn_from_descriptor(
        &mut self,
        descriptor: &RendezvousDescriptor,
    ) -> Result<bool, ContextError> {
        if descriptor.context_id != self.id {
            return Err(ContextError::WrongContext);
        }
        let new = self.learn_member(descriptor.authority_id, descriptor.static_key)?;
        self.state.seen.insert(descriptor.authority_id);
        Ok(new)
    }

    /// Notes that `authority` published in `epoch` (from a journal entry's
    /// clear header, even one this member cannot open). An advance refuses
    /// to drop such a member silently: see [`ContextError::UnknownMemberKey`].
    /// Returns whether it was new; other epochs are ignored.
    pub fn note_publisher(&mut self, authority: AuthorityId, epoch: Epoch) -> bool {
        if epoch != self.state.epoch || self.state.seen.len() >= MAX_MEMBERS {
            return false;
        }
        self.state.seen.insert(authority)
    }

    fn learn_member(
        &mut self,
        authority: AuthorityId,
        static_key: [u8; 32],
    ) -> Result<bool, ContextError> {
        if let Some(k) = self.state.members.get_mut(&authority) {
            *k = static_key;
            return Ok(false);
        }
        if self.state.members.len() >= MAX_MEMBERS {
            return Err(ContextError::TooManyMembers);
        }
        self.state.members.insert(authority, static_key);
        Ok(true)
    }

    /// A bearer invitation to the current epoch, valid until
    /// `expires_at_ms`: whoever holds the text joins, so send it like a
    /// password.
    pub fn invite(&self, identity: &Identity, expires_at_ms: u64) -> Invitation {
        Invitation::sign(
            identity,
            self,
            expires_at_ms,
            InvitationSecret::Bearer(Zeroizing::new(*self.state.secret.expose())),
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
        let ad = invitation_seal_ad(&self.id, self.state.epoch, &invitee.authority);
        let boxed = seal_to(&eph, &invitee.static_key, &ad, self.state.secret.expose());
        Ok(Invitation::sign(
            identity,
            self,
            expires_at_ms,
            InvitationSecret::Sealed {
                invitee: invitee.authority,
                ephemeral_public,
                boxed,
            },
        ))
    }

    /// Advances to the next epoch, removing `remove` (admins only). Returns
    /// the rekey to deliver to the remaining members (each can open only its
    /// own box); this context is already advanced.
    pub fn advance_epoch<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        remove: &[AuthorityId],
        rng: &mut R,
    ) -> Result<EpochRekey, ContextError> {
        self.advance_epoch_appointing(identity, remove, &[], rng)
    }

    /// [`Context::advance_epoch`], also appointing `appoint` (known members)
    /// as admins of the next epoch, after the current ones.
    pub fn advance_epoch_appointing<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        remove: &[AuthorityId],
        appoint: &[AuthorityId],
        rng: &mut R,
    ) -> Result<EpochRekey, ContextError> {
        if !self.is_admin(&self.me) {
            return Err(ContextError::NotAnAdmin);
        }
        if remove.contains(&self.me) {
            return Err(ContextError::CannotRemoveSelf);
        }
        let to = self
            .state
            .epoch
            .checked_add(1)
            .ok_or(ContextError::EpochExhausted)?;
        let mut removed: Vec<AuthorityId> = remove.to_vec();
        removed.sort();
        removed.dedup();
        removed.truncate(MAX_MEMBERS);
        let is_removed = |a: &AuthorityId| removed.binary_search(a).is_ok();
        if let Some(a) = self
            .state
            .seen
            .iter()
            .find(|a| !self.state.members.contains_key(a) && !is_removed(a))
        {
            return Err(ContextError::UnknownMemberKey(*a));
        }
        let mut admins: Vec<AuthorityId> = self
            .state
            .admins
            .iter()
            .filter(|a| !is_removed(a))
            .copied()
            .collect();
        for a in appoint {
            if admins.contains(a) {
                continue;
            }
            if !self.state.members.contains_key(a) || is_removed(a) || admins.len() >= MAX_ADMINS {
                return Err(ContextError::BadAppointment(*a));
            }
            admins.push(*a);
        }
        let fresh = Zeroizing::new(random_array::<32, R>(rng));
        let eph = x25519_dalek::StaticSecret::from(random_array::<32, R>(rng));
        let ephemeral_public = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let recipients: Vec<(AuthorityId, Vec<u8>)> = self
            .state
            .members
            .iter()
            .filter(|(a, _)| **a != self.me && !is_removed(a))
            .map(|(a, key)| {
                let ad = rekey_seal_ad(&self.id, to, a);
                (*a, seal_to(&eph, key, &ad, &fresh))
            })
            .collect();
        let mut rekey = EpochRekey {
            context_id: self.id,
            from_epoch: self.state.epoch,
            to_epoch: to,
            rotator: self.me,
            removed,
            admins,
            ephemeral_public,
            recipients,
            membership_mac: [0; 32],
            signature: [0; 64],
        };
        rekey.membership_mac = self.keys.rekey_mac(&rekey.mac_body());
        rekey.signature = identity.sign(REKEY_DOMAIN, &rekey.signed_body());
        let rank = rekey
            .rank(&self.state.admins)
            .ok_or(ContextError::NotAnAdmin)?;
        let next = self.state.secret.next(&self.id, to, &fresh);
        self.enter(&rekey, rank, next);
        Ok(rekey)
    }

    /// Applies a rekey made by an admin. A rekey from the current epoch is
    /// checked (context, epoch, the author holds the secret (MAC), its
    /// signature, that it is an admin and keeps the admin rules, that this
    /// member was not removed) and its box opened. A rekey concurrent with
    /// one applied in the last [`REKEY_HISTORY`] epochs is checked against
    /// the epoch it advances from and kept if it outranks the applied one
    /// (see [`crate::rekey`]). On any refusal nothing changes.
    pub fn apply_rekey(
        &mut self,
        identity: &Identity,
        rekey: &EpochRekey,
    ) -> Result<RekeyOutcome, RekeyError> {
        if rekey.context_id != self.id {
            return Err(RekeyError::WrongContext);
        }
        if rekey.from_epoch.checked_add(1) != Some(rekey.to_epoch) {
            return Err(self.wrong_epoch(rekey));
        }
        if rekey.from_epoch == self.state.epoch {
            let rank = check_rekey(&self.id, &self.state, &self.keys, rekey)?;
            let next = self.open_box(identity, &self.state, rekey)?;
            self.enter(rekey, rank, next);
            return Ok(RekeyOutcome::Advanced {
                epoch: self.epoch(),
            });
        }
        if rekey.from_epoch > self.state.epoch {
            return Err(self.wrong_epoch(rekey));
        }
        let Some(at) = self
            .history
            .iter()
            .position(|t| t.before.epoch == rekey.from_epoch)
        else {
            return Err(RekeyError::Conflict { to: rekey.to_epoch });
        };
        let applied = &self.history[at];
        if applied.rekey_id == rekey.id() {
            return Ok(RekeyOutcome::AlreadyApplied);
        }
        let before = applied.before.clone();
        let keys = EpochKeys::derive(self.id, before.epoch, &before.secret);
        let rank = check_rekey(&self.id, &before, &keys, rekey)?;
        if rank < applied.rank {
            return Ok(RekeyOutcome::Outranked);
        }
        let next = self.open_box(identity, &before, rekey)?;
        self.history.truncate(at);
        self.keys = keys;
        self.state = before;
        self.enter(rekey, rank, next);
        Ok(RekeyOutcome::Replaced {
            epoch: self.epoch(),
        })
    }

    fn wrong_epoch(&self, rekey: &EpochRekey) -> RekeyError {
        RekeyError::WrongEpoch {
            from: rekey.from_epoch,
            to: rekey.to_epoch,
            current: self.state.epoch,
        }
    }

    /// This member's box in `rekey`, opened: the next epoch's secret.
    fn open_box(
        &self,
        identity: &Identity,
        before: &EpochState,
        rekey: &EpochRekey,
    ) -> Result<EpochSecret, RekeyError> {
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
        Ok(before.secret.next(&self.id, rekey.to_epoch, &fresh))
    }

    /// Moves from the current state through `rekey` to `next`.
    fn enter(&mut self, rekey: &EpochRekey, rank: Rank, next: EpochSecret) {
        let mut members = self.state.members.clone();
        for a in &rekey.removed {
            members.remove(a);
        }
        let after = EpochState {
            epoch: rekey.to_epoch,
            secret: next,
            members,
            admins: rekey.admins.clone(),
            seen: BTreeSet::new(),
        };
        let before = std::mem::replace(&mut self.state, after);
        self.keys = EpochKeys::derive(self.id, self.state.epoch, &self.state.secret);
        if self.history.len() == REKEY_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            before,
            rekey_id: rekey.id(),
            rank,
        });
    }

    /// Everything this member holds of the context, secrets included, for
    /// its own store (keep it as private as the identity key).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(1024);
        w.u8(STATE_VERSION)
            .raw(self.id.as_bytes())
            .raw(self.me.as_bytes());
        write_state(&mut w, &self.state);
        w.u8(self.history.len() as u8);
        for t in &self.history {
            write_state(&mut w, &t.before);
            w.raw(&t.rekey_id)
                .u8(u8::from(t.rank.removes))
                .u16(t.rank.seniority.0 as u16);
        }
        Zeroizing::new(w.into_vec())
    }

    /// Restores what [`Context::to_bytes`] wrote, for `identity` (refused if
    /// the bytes belong to another member).
    pub fn restore(identity: &Identity, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("context state version")?;
        if v != STATE_VERSION {
            return Err(DecodeError::UnknownTag {
                what: "context state version",
                tag: v,
            });
        }
        let id = ContextId::from_bytes(r.array("context id")?);
        let me = AuthorityId::from_bytes(r.array("member")?)?;
        if me != identity.authority() {
            return Err(DecodeError::Invalid {
                what: "context state",
                reason: "it belongs to another identity",
            });
        }
        let state = read_state(&mut r)?;
        let n = r.u8("transitions")? as usize;
        if n > REKEY_HISTORY {
            return Err(DecodeError::Invalid {
                what: "transitions",
                reason: "more than the history keeps",
            });
        }
        let mut history = VecDeque::with_capacity(n);
        for _ in 0..n {
            let before = read_state(&mut r)?;
            let rekey_id: [u8; 32] = r.array("rekey id")?;
            let removes = r.u8("rank")? != 0;
            let seniority = r.u16("rank")? as usize;
            history.push_back(Transition {
                before,
                rekey_id,
                rank: Rank::new(removes, seniority, rekey_id),
            });
        }
        r.finish("context state")?;
        let keys = EpochKeys::derive(id, state.epoch, &state.secret);
        Ok(Self {
            id,
            me,
            state,
            keys,
            history,
        })
    }
}

/// Checks a rekey from `before` (whose keys are `keys`): MAC, signature,
/// admin rules. Returns its rank.
fn check_rekey(
    id: &ContextId,
    before: &EpochState,
    keys: &EpochKeys,
    rekey: &EpochRekey,
) -> Result<Rank, RekeyError> {
    debug_assert_eq!(keys.context_id(), *id);
    if !ct_eq(&keys.rekey_mac(&rekey.mac_body()), &rekey.membership_mac) {
        return Err(RekeyError::NotAMember);
    }
    if !rekey.verify_signature() {
        return Err(RekeyError::BadSignature);
    }
    let rank = rekey.rank(&before.admins).ok_or(RekeyError::NotAnAdmin {
        rotator: rekey.rotator,
    })?;
    if rekey.removed.contains(&rekey.rotator) {
        return Err(RekeyError::BadAdmins("an admin cannot remove itself"));
    }
    let kept: Vec<&AuthorityId> = before
        .admins
        .iter()
        .filter(|a| !rekey.removed.contains(a))
        .collect();
    if rekey.admins.len() < kept.len() || rekey.admins.iter().zip(&kept).any(|(a, b)| a != *b) {
        return Err(RekeyError::BadAdmins(
            "the admins not removed must stay, in their order",
        ));
    }
    let appointed = &rekey.admins[kept.len()..];
    for (i, a) in appointed.iter().enumerate() {
        let recipient = rekey.recipients.iter().any(|(r, _)| r == a);
        if !recipient || appointed[..i].contains(a) || kept.contains(&a) {
            return Err(RekeyError::BadAdmins(
                "an appointed admin must be a remaining member, named once",
            ));
        }
    }
    Ok(rank)
}

fn write_state(w: &mut Writer, s: &EpochState) {
    w.u64(s.epoch).raw(s.secret.expose());
    w.u16(s.members.len() as u16);
    for (a, k) in &s.members {
        w.raw(a.as_bytes()).raw(k);
    }
    write_authorities(w, s.admins.iter());
    write_authorities(w, s.seen.iter());
}

fn read_state(r: &mut Reader<'_>) -> Result<EpochState, DecodeError> {
    let epoch = r.u64("epoch")?;
    let secret = EpochSecret::from_bytes(r.array("epoch secret")?);
    let n = r.count16("members", MAX_MEMBERS)?;
    let mut members = BTreeMap::new();
    for _ in 0..n {
        let a = AuthorityId::from_bytes(r.array("member")?)?;
        members.insert(a, r.array("member static key")?);
    }
    let admins = read_authorities(r, "admins", MAX_ADMINS)?;
    let seen = read_authorities(r, "publishers", MAX_MEMBERS)?
        .into_iter()
        .collect();
    Ok(EpochState {
        epoch,
        secret,
        members,
        admins,
        seen,
    })
}

fn rekey_seal_ad(context: &ContextId, to_epoch: Epoch, recipient: &AuthorityId) -> Vec<u8> {
    let mut w = Writer::with_capacity(100);
    w.raw(REKEY_SEAL_AD)
        .raw(context.as_bytes())
        .u64(to_epoch)
        .raw(recipient.as_bytes());
    w.into_vec()
}
