//! Invitations: the text a member hands to a newcomer.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::armor::{self, ArmorError};
use crate::codec::{DecodeError, Reader, Writer};
use crate::context::Context;
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochSecret;
use crate::rekey::{MAX_ADMINS, SEALED_SECRET_LEN, read_authorities, write_authorities};
use crate::seal::open_sealed;

const INVITATION_DOMAIN: &str = "rdv context v1 invitation";
const INVITATION_SEAL_AD: &[u8] = b"rdv context v1 invitation-seal";

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

/// The secret part of an invitation.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum InvitationSecret {
    Bearer(Zeroizing<[u8; 32]>),
    Sealed {
        invitee: AuthorityId,
        ephemeral_public: [u8; 32],
        boxed: Vec<u8>,
    },
}

/// An invitation to a context: the context id, epoch and secret, the
/// inviter's authority and static key, an expiry, the context's admins (the
/// joiner takes them on its inviter's word, as it takes the secret), and
/// the inviter's signature over all of it.
///
/// As text: `rdv-invite-v1:<base32>` (see the crate's armour: a checksum
/// tells typos from forgeries, whitespace is ignored). Payload, version 1:
///
/// ```text
/// mode (1: 0 bearer, 1 sealed) | context id (32) | epoch (8) | inviter (32)
/// | inviter static X25519 key (32) | expires_at_ms (8)
/// | admins: count (2) | authority (32) each, most senior first
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
    admins: Vec<AuthorityId>,
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
    pub(crate) fn sign(
        identity: &Identity,
        context: &Context,
        expires_at_ms: u64,
        secret: InvitationSecret,
    ) -> Self {
        let mut inv = Self {
            context_id: context.id(),
            epoch: context.epoch(),
            inviter: identity.authority(),
            inviter_static_key: identity.static_public(),
            expires_at_ms,
            admins: context.admins().to_vec(),
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
        write_authorities(&mut w, self.admins.iter());
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
    /// The context's admins, most senior first, as the inviter states them.
    pub fn admins(&self) -> &[AuthorityId] {
        &self.admins
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
        Ok(Context::joined(
            identity,
            self.context_id,
            self.epoch,
            secret,
            (self.inviter, self.inviter_static_key),
            self.admins.clone(),
        ))
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
        let admins = read_authorities(&mut r, "admins", MAX_ADMINS)?;
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
            admins,
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

pub(crate) fn invitation_seal_ad(
    context: &ContextId,
    epoch: Epoch,
    invitee: &AuthorityId,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(100);
    w.raw(INVITATION_SEAL_AD)
        .raw(context.as_bytes())
        .u64(epoch)
        .raw(invitee.as_bytes());
    w.into_vec()
}
