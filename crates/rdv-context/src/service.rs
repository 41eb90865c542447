//! The rendezvous service: pure, synchronous, sans-IO.
//!
//! It holds the authority's identity, the keys of the contexts it belongs
//! to, a cache of verified peer descriptors, and what it needs to refuse
//! replays and revoked descriptors. Its `prepare_*` methods evaluate the
//! guard and return a [`GuardOutcome`] of effects for the caller's
//! interpreter; they never touch a socket, a clock or a random source (time
//! is an argument; randomness comes from a seed drawn at construction).

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::codec::ct_eq;
use crate::descriptor::{
    DescriptorError, DescriptorPolicy, MAX_ADDR_LEN, MAX_TRANSPORT_HINTS, RendezvousDescriptor,
    SealedDescriptor, TransportHint,
};
use crate::facts::RendezvousFact;
use crate::guard::{DenyReason, EffectCommand, GuardOutcome, GuardSnapshot, Operation, evaluate};
use crate::handshake::{HandshakeComplete, HandshakeInit, HandshakeParams, Handshaker, Route};
use crate::identity::Identity;
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::record_seal::RecordError;
use crate::rekey::MAX_MEMBERS;
use crate::rng::{CryptoRng, SeededRng};

/// Configuration of a [`RendezvousService`]. Every table a peer can grow
/// has a bound here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousConfig {
    /// Lifetime of the descriptors this service publishes. Default 1 h.
    pub descriptor_ttl_ms: u64,
    /// How long before a peer descriptor expires it counts as needing a
    /// refresh ([`crate::RendezvousAdapter::peers_needing_refresh`]).
    /// Default 10 min.
    pub refresh_window_ms: u64,
    /// Checks applied when opening descriptors.
    pub policy: DescriptorPolicy,
    /// Contexts this service holds keys for. Default 256.
    pub max_contexts: usize,
    /// Peer descriptors cached per context. Default [`MAX_MEMBERS`].
    pub max_cached_per_context: usize,
    /// Nonces remembered per authority to refuse replays (the oldest
    /// expire first). Default 64.
    pub max_nonces_per_authority: usize,
    /// Revoked nonces remembered per authority. Default 64.
    pub max_revocations_per_authority: usize,
}

impl Default for RendezvousConfig {
    fn default() -> Self {
        Self {
            descriptor_ttl_ms: 3600 * 1000,
            refresh_window_ms: 600 * 1000,
            policy: DescriptorPolicy::default(),
            max_contexts: 256,
            max_cached_per_context: MAX_MEMBERS,
            max_nonces_per_authority: 64,
            max_revocations_per_authority: 64,
        }
    }
}

/// Errors of [`RendezvousService`] calls that are not guard decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No keys for the context.
    #[error("no keys installed for context {0}")]
    UnknownContext(ContextId),
    /// Keys older than those installed.
    #[error("keys for epoch {offered} are older than the installed epoch {installed}")]
    StaleKeys {
        /// Offered.
        offered: Epoch,
        /// Installed.
        installed: Epoch,
    },
    /// Too many contexts.
    #[error("the service holds its maximum of {0} contexts")]
    TooManyContexts(usize),
    /// No valid cached descriptor for the peer.
    #[error("no valid descriptor cached for {0:?}")]
    NoDescriptor(AuthorityId),
    /// The peer's descriptor offers no transport.
    #[error("the peer's descriptor has no transport hint")]
    NoTransport,
    /// The PSK passed is not the pair's PSK for the current epoch.
    #[error("the PSK is not this pair's PSK for the current epoch")]
    PskMismatch,
    /// The peer's PSK commitment does not match this epoch's keys: the
    /// peer holds another epoch secret.
    #[error("the peer's PSK commitment does not match this epoch's keys")]
    CommitmentMismatch,
    /// Connecting to oneself.
    #[error("cannot open a channel to oneself")]
    SelfConnect,
    /// The handshaker failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// What applying a journal fact did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactApplied {
    /// A peer descriptor was verified and cached.
    DescriptorCached(AuthorityId),
    /// A revocation was recorded (and the cached descriptor dropped if it
    /// was the revoked one).
    Revoked(AuthorityId),
    /// Nothing to do (our own descriptor, a channel record, a rekey).
    Ignored,
}

#[derive(Default)]
struct ContextState {
    keys: Option<EpochKeys>,
    /// The keys of the epoch before, kept for one purpose: a member that
    /// missed the advance (offline when the rekey was pushed) can still
    /// make a handshake under them, sync, and so find the rekey.
    previous: Option<EpochKeys>,
    cache: HashMap<AuthorityId, RendezvousDescriptor>,
    own: Option<RendezvousDescriptor>,
    /// Per authority: (nonce, valid_until) of descriptors seen, oldest first.
    seen: HashMap<AuthorityId, VecDeque<([u8; 32], u64)>>,
    revoked: HashMap<AuthorityId, VecDeque<[u8; 32]>>,
}

/// The rendezvous service of one authority (the seed's `RendezvousService`).
pub struct RendezvousService {
    identity: Identity,
    config: RendezvousConfig,
    rng: SeededRng,
    contexts: HashMap<ContextId, ContextState>,
}

impl std::fmt::Debug for RendezvousService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RendezvousService")
            .field("authority", &self.identity.authority())
            .field("contexts", &self.contexts.len())
            .finish_non_exhaustive()
    }
}

impl RendezvousService {
    /// A service for `identity`. Draws one 32-byte seed from `rng` for all
    /// the nonces it will make (pass the operating system's generator in a
    /// process, a seeded one in tests).
    pub fn new<R: CryptoRng + ?Sized>(
        identity: Identity,
        config: RendezvousConfig,
        rng: &mut R,
    ) -> Self {
        Self {
            identity,
            config,
            rng: SeededRng::from_rng(rng),
            contexts: HashMap::new(),
        }
    }

    /// This service's authority.
    pub fn authority(&self) -> AuthorityId {
        self.identity.authority()
    }
    /// This service's identity (to open the member's box in an epoch
    /// rekey, say).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// The configuration.
    pub fn config(&self) -> &RendezvousConfig {
        &self.config
    }

    /// The state of `ctx`, made if new (within `max_contexts`).
    fn state_for(&mut self, ctx: ContextId) -> Result<&mut ContextState, ServiceError> {
        let max = self.config.max_contexts;
        if !self.contexts.contains_key(&ctx) && self.contexts.len() >= max {
            return Err(ServiceError::TooManyContexts(max));
        }
        Ok(self.contexts.entry(ctx).or_default())
    }

    /// Installs the keys of a context epoch (joining it, or moving to a new
    /// epoch). A new epoch drops every cached descriptor of the old one
    /// (peers republish under the new key) and our own, so
    /// [`RendezvousService::needs_refresh`] says to publish again.
    pub fn install_keys(&mut self, keys: EpochKeys) -> Result<(), ServiceError> {
        let ctx = keys.context_id();
        let state = self.state_for(ctx)?;
        match &state.keys {
            Some(k) if keys.epoch() < k.epoch() => {
                return Err(ServiceError::StaleKeys {
                    offered: keys.epoch(),
                    installed: k.epoch(),
                });
            }
            Some(k) if keys.epoch() == k.epoch() => {}
            _ => {
                state.cache.clear();
                state.own = None;
                state.previous = state.keys.take();
            }
        }
        state.keys = Some(keys);
        Ok(())
    }

    /// Sets the keys of a context as its [`crate::Context`] holds them now,
    /// whatever was installed: a member that followed a rekey outranking
    /// one it had applied may be back at the same or a lower epoch number
    /// under another secret. `previous` is the epoch before's (see
    /// [`crate::Context::previous_keys`]): the only other epoch a
    /// handshake is answered under. Keys that differ from the installed
    /// ones drop every cached descriptor and our own, as
    /// [`RendezvousService::install_keys`] does for a new epoch.
    pub fn set_epoch_keys(
        &mut self,
        keys: EpochKeys,
        previous: Option<EpochKeys>,
    ) -> Result<(), ServiceError> {
        let ctx = keys.context_id();
        let state = self.state_for(ctx)?;
        if !state.keys.as_ref().is_some_and(|k| k.same_as(&keys)) {
            state.cache.clear();
            state.own = None;
        }
        state.keys = Some(keys);
        state.previous = previous.filter(|p| p.context_id() == ctx);
        Ok(())
    }

    /// Forgets a context.
    pub fn leave_context(&mut self, context: &ContextId) {
        self.contexts.remove(context);
    }

    /// The installed epoch of `context`.
    pub fn current_epoch(&self, context: &ContextId) -> Option<Epoch> {
        self.keys(context).map(EpochKeys::epoch)
    }

    /// The installed keys of `context`.
    pub fn keys(&self, context: &ContextId) -> Option<&EpochKeys> {
        self.contexts.get(context).and_then(|s| s.keys.as_ref())
    }

    /// The keys of `epoch` of `context`, if it is the installed epoch or
    /// the one before (see [`RendezvousService::prepare_handle_handshake`]):
    /// what records (channel records, revocations) sealed by a member one
    /// epoch behind open with.
    pub fn keys_at(&self, context: &ContextId, epoch: Epoch) -> Option<&EpochKeys> {
        let state = self.contexts.get(context)?;
        [state.keys.as_ref(), state.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.epoch() == epoch)
    }

    /// The PSK this authority shares with `peer` in `epoch` of `context`,
    /// the installed one or the one before (what a responder needs for a
    /// message 1 of that epoch).
    pub fn handshake_psk_at(
        &self,
        context: &ContextId,
        peer: &AuthorityId,
        epoch: Epoch,
    ) -> Option<crate::keys::Psk> {
        self.keys_at(context, epoch)
            .map(|k| k.handshake_psk(&self.identity.authority(), peer))
    }

    /// The PSK this authority shares with `peer` in `context`'s current
    /// epoch.
    pub fn handshake_psk(
        &self,
        context: &ContextId,
        peer: &AuthorityId,
    ) -> Option<crate::keys::Psk> {
        self.keys(context)
            .map(|k| k.handshake_psk(&self.identity.authority(), peer))
    }

    /// Prepares publishing a new descriptor with `transport_hints`, valid
    /// from `now_ms` for the configured lifetime. Effects when allowed:
    /// charge 1, append the sealed descriptor to the journal, receipt.
    pub fn prepare_publish_descriptor(
        &mut self,
        snapshot: &GuardSnapshot,
        context_id: ContextId,
        transport_hints: Vec<TransportHint>,
        now_ms: u64,
    ) -> GuardOutcome {
        let me = self.identity.authority();
        if let Err(reason) = evaluate(
            snapshot,
            &me,
            &context_id,
            self.current_epoch(&context_id),
            Operation::PublishDescriptor,
        ) {
            return GuardOutcome::denied(reason);
        }
        if transport_hints.len() > MAX_TRANSPORT_HINTS {
            return GuardOutcome::denied(DenyReason::InvalidRequest(format!(
                "{} transport hints, at most {MAX_TRANSPORT_HINTS}",
                transport_hints.len()
            )));
        }
        let nonce = self.rng.array();
        let aead_nonce = self.rng.array();
        let Some(state) = self.contexts.get_mut(&context_id) else {
            return GuardOutcome::denied(DenyReason::UnknownContext);
        };
        let Some(keys) = state.keys.as_ref() else {
            return GuardOutcome::denied(DenyReason::UnknownContext);
        };
        let descriptor = RendezvousDescriptor {
            authority_id: me,
            context_id,
            transport_hints,
            handshake_psk_commitment: keys.psk_commitment(&me),
            valid_from: now_ms,
            valid_until: now_ms.saturating_add(self.config.descriptor_ttl_ms),
            nonce,
            static_key: self.identity.static_public(),
        };
        let sealed = match descriptor.seal(&self.identity, keys, aead_nonce) {
            Ok(s) => s,
            Err(e) => {
                return GuardOutcome::denied(DenyReason::InvalidRequest(format!(
                    "{e} (addresses at most {MAX_ADDR_LEN} bytes)"
                )));
            }
        };
        state.own = Some(descriptor);
        GuardOutcome::allowed(
            snapshot,
            Operation::PublishDescriptor,
            None,
            vec![EffectCommand::JournalAppend {
                context_id,
                fact: RendezvousFact::Descriptor(sealed),
            }],
        )
    }

    /// Prepares revoking our current descriptor in `context_id` (guarded as
    /// a publication). Effects when allowed: charge 1, append the signed
    /// revocation, receipt.
    pub fn prepare_revoke_descriptor(
        &mut self,
        snapshot: &GuardSnapshot,
        context_id: ContextId,
    ) -> GuardOutcome {
        let me = self.identity.authority();
        if let Err(reason) = evaluate(
            snapshot,
            &me,
            &context_id,
            self.current_epoch(&context_id),
            Operation::PublishDescriptor,
        ) {
            return GuardOutcome::denied(reason);
        }
        let Some(state) = self.contexts.get_mut(&context_id) else {
            return GuardOutcome::denied(DenyReason::InvalidRequest(
                "no published descriptor to revoke".into(),
            ));
        };
        let (Some(keys), Some(own)) = (state.keys.as_ref(), state.own.as_ref()) else {
            return GuardOutcome::denied(DenyReason::InvalidRequest(
                "no published descriptor to revoke".into(),
            ));
        };
        // Sealed under the installed epoch, which may be later than the
        // descriptor's: members open it with the keys they hold.
        let fact = RendezvousFact::revoke(&self.identity, keys, own.nonce);
        state.own = None;
        GuardOutcome::allowed(
            snapshot,
            Operation::PublishDescriptor,
            None,
            vec![EffectCommand::JournalAppend { context_id, fact }],
        )
    }

    /// Prepares recording an epoch advance this member made (guarded as a
    /// publication, before the new epoch's keys are installed: `rekey`
    /// advances from the installed epoch). Effects when allowed: charge 1,
    /// append the rekey, which sync carries to the other members, receipt.
    pub fn prepare_publish_rekey(
        &mut self,
        snapshot: &GuardSnapshot,
        rekey: &crate::EpochRekey,
    ) -> GuardOutcome {
        let me = self.identity.authority();
        let context_id = rekey.context_id;
        let current = self.current_epoch(&context_id);
        if let Err(reason) = evaluate(
            snapshot,
            &me,
            &context_id,
            current,
            Operation::PublishDescriptor,
        ) {
            return GuardOutcome::denied(reason);
        }
        if rekey.rotator != me || current != Some(rekey.from_epoch) {
            return GuardOutcome::denied(DenyReason::InvalidRequest(
                "not this member's advance from the installed epoch".into(),
            ));
        }
        // Sealed under the epoch it advances from: every member it keeps or
        // removes holds that key; a journal copy shows none of its lists.
        let Some(sealed) = self
            .keys(&context_id)
            .and_then(|keys| crate::SealedRekey::seal(rekey, keys))
        else {
            return GuardOutcome::denied(DenyReason::InvalidRequest(
                "the rekey is larger than a journal fact can carry".into(),
            ));
        };
        GuardOutcome::allowed(
            snapshot,
            Operation::PublishDescriptor,
            None,
            vec![EffectCommand::JournalAppend {
                context_id,
                fact: RendezvousFact::EpochRekey(Box::new(sealed)),
            }],
        )
    }

    /// Prepares starting a handshake with `peer`, whose descriptor must be
    /// cached and valid at `now_ms`. `psk` must be the pair's PSK of the
    /// current epoch and the peer's PSK commitment must match it. The route
    /// is direct when the descriptor has a direct transport (cost 2,
    /// `rendezvous:connect`), otherwise through its relay (cost 3,
    /// `rendezvous:relay`). The handshaker runs only if the guard allows.
    /// Effects when allowed: charge, send message 1, receipt.
    pub fn prepare_establish_channel<H: Handshaker>(
        &mut self,
        snapshot: &GuardSnapshot,
        context_id: ContextId,
        peer: AuthorityId,
        psk: &[u8; 32],
        now_ms: u64,
        handshaker: &mut H,
    ) -> Result<GuardOutcome, ServiceError> {
        self.prepare_establish_channel_on(snapshot, context_id, peer, psk, now_ms, None, handshaker)
    }

    /// [`Self::prepare_establish_channel`] on a route the caller chose
    /// (the agent races transports, the relay last): `Some(Route::Relay)`
    /// needs a relay hint and is charged `rendezvous:relay`,
    /// `Some(Route::Direct)` a direct hint; `None` picks as above.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_establish_channel_on<H: Handshaker>(
        &mut self,
        snapshot: &GuardSnapshot,
        context_id: ContextId,
        peer: AuthorityId,
        psk: &[u8; 32],
        now_ms: u64,
        route: Option<Route>,
        handshaker: &mut H,
    ) -> Result<GuardOutcome, ServiceError> {
        let me = self.identity.authority();
        if peer == me {
            return Err(ServiceError::SelfConnect);
        }
        let state = self
            .contexts
            .get(&context_id)
            .ok_or(ServiceError::UnknownContext(context_id))?;
        let keys = state
            .keys
            .as_ref()
            .ok_or(ServiceError::UnknownContext(context_id))?;
        let descriptor = state
            .cache
            .get(&peer)
            .filter(|d| d.is_valid_at(now_ms))
            .ok_or(ServiceError::NoDescriptor(peer))?;
        if !ct_eq(&keys.handshake_psk(&me, &peer)[..], psk) {
            return Err(ServiceError::PskMismatch);
        }
        if !keys.check_psk_commitment(&peer, &descriptor.handshake_psk_commitment) {
            return Err(ServiceError::CommitmentMismatch);
        }
        let direct = descriptor.transport_hints.iter().find(|h| h.is_direct());
        let relayed = descriptor.transport_hints.iter().find(|h| !h.is_direct());
        let (operation, route, hint) = match (route, direct, relayed) {
            (None | Some(Route::Direct), Some(h), _) => {
                (Operation::ConnectDirect, Route::Direct, h)
            }
            (None | Some(Route::Relay), _, Some(h)) => (Operation::ConnectRelay, Route::Relay, h),
            _ => return Err(ServiceError::NoTransport),
        };
        if let Err(reason) = evaluate(snapshot, &me, &context_id, Some(keys.epoch()), operation) {
            return Ok(GuardOutcome::denied(reason));
        }
        let params = HandshakeParams {
            context_id,
            epoch: keys.epoch(),
            local: me,
            remote: peer,
            psk,
            remote_static: Some(descriptor.static_key),
            transport: Some(hint),
            route,
        };
        let payload = handshaker
            .initiate(&params)
            .map_err(|e| ServiceError::Handshake(e.to_string()))?;
        Ok(GuardOutcome::allowed(
            snapshot,
            operation,
            Some(peer),
            vec![EffectCommand::SendHandshake {
                peer,
                message: HandshakeInit::new(
                    context_id,
                    keys.epoch(),
                    route,
                    payload,
                    &descriptor.static_key,
                ),
            }],
        ))
    }

    /// Prepares answering a handshake from `initiator`. Refused (denied,
    /// no effect, nothing sent) when the guard denies, when the message is
    /// for another context or epoch, when `psk` is not the pair's PSK, or
    /// when the handshaker rejects the message. Effects when allowed:
    /// charge, send message 2, append `ChannelEstablished`, receipt. The
    /// charge goes to the *initiator's* budget in this member's ledger: it
    /// caused the work, so a member flooding handshakes spends its own
    /// allowance here and cannot drain this member's (issue 13, item 5).
    pub fn prepare_handle_handshake<H: Handshaker>(
        &mut self,
        snapshot: &GuardSnapshot,
        context_id: ContextId,
        initiator: AuthorityId,
        handshake: HandshakeInit,
        psk: &[u8; 32],
        handshaker: &mut H,
    ) -> GuardOutcome {
        let me = self.identity.authority();
        let operation = match handshake.route {
            Route::Direct => Operation::AcceptDirect,
            Route::Relay => Operation::AcceptRelay,
        };
        let current = self.current_epoch(&context_id);
        if let Err(reason) = evaluate(snapshot, &me, &context_id, current, operation) {
            return GuardOutcome::denied(reason);
        }
        let Some(installed) = self.current_epoch(&context_id) else {
            return GuardOutcome::denied(DenyReason::UnknownContext);
        };
        // The installed epoch, or the one before: a member that missed an
        // advance (offline when its rekey was pushed) must still reach
        // someone to sync the rekey from. Safe for the one before: the PSK
        // only adds context membership to Noise IK, which authenticates the
        // initiator's static key, and a removed member is no longer in the
        // roster the initiator is looked up in.
        let keys = match self.keys_at(&context_id, handshake.epoch) {
            Some(k) if handshake.context_id == context_id => k,
            _ => {
                return GuardOutcome::denied(DenyReason::InvalidRequest(format!(
                    "handshake for epoch {} of another or the same context; this context is at epoch {installed}",
                    handshake.epoch,
                )));
            }
        };
        if initiator == me || !ct_eq(&keys.handshake_psk(&me, &initiator)[..], psk) {
            return GuardOutcome::denied(DenyReason::HandshakeRejected(
                "the PSK is not this pair's PSK for the handshake's epoch".into(),
            ));
        }
        let epoch = keys.epoch();
        let params = HandshakeParams {
            context_id,
            epoch,
            local: me,
            remote: initiator,
            psk,
            remote_static: None,
            transport: None,
            route: handshake.route,
        };
        let responded = match handshaker.respond(&params, &handshake.payload) {
            Ok(r) => r,
            Err(e) => return GuardOutcome::denied(DenyReason::HandshakeRejected(e.to_string())),
        };
        GuardOutcome::allowed(
            snapshot,
            operation,
            Some(initiator),
            vec![
                EffectCommand::SendHandshakeResponse {
                    peer: initiator,
                    message: HandshakeComplete {
                        context_id,
                        epoch,
                        payload: responded.payload,
                    },
                },
                EffectCommand::JournalAppend {
                    context_id,
                    // Sealed under the installed epoch (the handshake's may
                    // be the one before; it is inside the record).
                    fact: RendezvousFact::channel_established(
                        &self.identity,
                        self.keys(&context_id).unwrap_or(keys),
                        initiator,
                        me,
                        responded.channel_id,
                        epoch,
                    ),
                },
            ],
        )
    }

    /// Caches a peer's sealed descriptor (from journal sync) if it opens and
    /// verifies at `now_ms`, was not revoked, is not a replay of a nonce
    /// seen before, and is not older than the one cached. A refusal changes
    /// nothing. This member's own descriptor (its author is sealed, so
    /// known only once opened) is checked the same way but not cached:
    /// `Ok` with this member's authority.
    pub fn cache_descriptor(
        &mut self,
        sealed: &SealedDescriptor,
        now_ms: u64,
    ) -> Result<AuthorityId, DescriptorError> {
        self.cache_unless_own(sealed, now_ms)
            .map(|who| who.unwrap_or(self.identity.authority()))
    }

    /// [`RendezvousService::cache_descriptor`], except that this member's
    /// own descriptor (the author is known only once it is opened) is
    /// checked but not cached: `None`.
    fn cache_unless_own(
        &mut self,
        sealed: &SealedDescriptor,
        now_ms: u64,
    ) -> Result<Option<AuthorityId>, DescriptorError> {
        let me = self.identity.authority();
        let context = sealed.context_id();
        let max_cached = self.config.max_cached_per_context;
        let max_nonces = self.config.max_nonces_per_authority;
        let policy = self.config.policy;
        let state = self
            .contexts
            .get_mut(&context)
            .ok_or(DescriptorError::UnknownContext(context))?;
        let keys = state
            .keys
            .as_ref()
            .ok_or(DescriptorError::UnknownContext(context))?;
        let d = sealed.open(keys, now_ms, &policy)?;
        let who = d.authority_id;
        if who == me {
            return Ok(None);
        }
        if state
            .revoked
            .get(&who)
            .is_some_and(|r| r.contains(&d.nonce))
        {
            return Err(DescriptorError::Revoked);
        }
        if state
            .seen
            .get(&who)
            .is_some_and(|s| s.iter().any(|(n, _)| *n == d.nonce))
        {
            return Err(DescriptorError::Replayed);
        }
        if let Some(c) = state.cache.get(&who)
            && c.valid_from > d.valid_from
        {
            return Err(DescriptorError::Superseded);
        }
        if !state.cache.contains_key(&who) && state.cache.len() >= max_cached {
            // Make room by dropping expired entries first.
            state.cache.retain(|_, c| c.valid_until > now_ms);
            if state.cache.len() >= max_cached {
                return Err(DescriptorError::CacheFull(max_cached));
            }
        }
        if !state.seen.contains_key(&who) && state.seen.len() >= max_cached {
            state
                .seen
                .retain(|_, s| s.iter().any(|(_, until)| *until > now_ms));
            if state.seen.len() >= max_cached {
                return Err(DescriptorError::CacheFull(max_cached));
            }
        }
        let seen = state.seen.entry(who).or_default();
        // Nonces of expired descriptors need no memory: `open` refuses them.
        seen.retain(|(_, until)| *until > now_ms);
        if seen.len() >= max_nonces {
            seen.pop_front();
        }
        seen.push_back((d.nonce, d.valid_until));
        state.cache.insert(who, d);
        Ok(Some(who))
    }

    /// Applies a fact from the journal of `context`: caches descriptors of
    /// other members, records revocations (checking their signature).
    pub fn apply_fact(
        &mut self,
        context: ContextId,
        fact: &RendezvousFact,
        now_ms: u64,
    ) -> Result<FactApplied, DescriptorError> {
        match fact {
            RendezvousFact::Descriptor(sealed) => {
                if sealed.context_id() != context {
                    return Err(DescriptorError::WrongContext {
                        expected: context,
                        found: sealed.context_id(),
                    });
                }
                Ok(match self.cache_unless_own(sealed, now_ms)? {
                    Some(who) => FactApplied::DescriptorCached(who),
                    None => FactApplied::Ignored,
                })
            }
            RendezvousFact::DescriptorRevoked(sealed) => {
                let keys = self
                    .keys_at(&context, sealed.epoch())
                    .ok_or(DescriptorError::UnknownContext(context))?;
                let revocation = sealed.open(keys).map_err(|e| match e {
                    RecordError::BadSignature => DescriptorError::BadSignature,
                    RecordError::WrongEpoch { expected, found } => {
                        DescriptorError::WrongEpoch { expected, found }
                    }
                    _ => DescriptorError::WrongKey,
                })?;
                let (authority_id, nonce) = (&revocation.authority, &revocation.nonce);
                let max = self.config.max_revocations_per_authority;
                let state = self
                    .contexts
                    .get_mut(&context)
                    .ok_or(DescriptorError::UnknownContext(context))?;
                if state
                    .cache
                    .get(authority_id)
                    .is_some_and(|d| d.nonce == *nonce)
                {
                    state.cache.remove(authority_id);
                }
                if !state.revoked.contains_key(authority_id)
                    && state.revoked.len() >= self.config.max_cached_per_context
                {
                    return Err(DescriptorError::CacheFull(
                        self.config.max_cached_per_context,
                    ));
                }
                let r = state.revoked.entry(*authority_id).or_default();
                if !r.contains(nonce) {
                    if r.len() >= max {
                        r.pop_front();
                    }
                    r.push_back(*nonce);
                }
                Ok(FactApplied::Revoked(*authority_id))
            }
            // Rekeys are the context's to apply (`Context::apply_rekey`), not
            // the service's.
            RendezvousFact::ChannelEstablished(_) | RendezvousFact::EpochRekey(_) => {
                Ok(FactApplied::Ignored)
            }
        }
    }

    /// This member's signed record of a channel it is an end of, sealed
    /// under the context's installed epoch (the initiator's driver appends
    /// it once its handshake completes; the responder's comes with
    /// [`RendezvousService::prepare_handle_handshake`]). `None` for a
    /// context this service has no keys of.
    pub fn channel_established(
        &self,
        context_id: ContextId,
        initiator: AuthorityId,
        responder: AuthorityId,
        channel_id: [u8; 32],
        epoch: Epoch,
    ) -> Option<RendezvousFact> {
        Some(RendezvousFact::channel_established(
            &self.identity,
            self.keys(&context_id)?,
            initiator,
            responder,
            channel_id,
            epoch,
        ))
    }

    /// The cached descriptor of `peer` in `context_id` (verified when
    /// cached; check [`RendezvousDescriptor::is_valid_at`] for expiry).
    pub fn get_cached_descriptor(
        &self,
        context_id: ContextId,
        peer: AuthorityId,
    ) -> Option<&RendezvousDescriptor> {
        self.contexts.get(&context_id)?.cache.get(&peer)
    }

    /// Every cached peer descriptor of `context_id`.
    pub fn cached_descriptors(
        &self,
        context_id: ContextId,
    ) -> impl Iterator<Item = &RendezvousDescriptor> {
        self.contexts
            .get(&context_id)
            .into_iter()
            .flat_map(|s| s.cache.values())
    }

    /// Our own latest descriptor in `context_id`, if published this epoch.
    pub fn own_descriptor(&self, context_id: ContextId) -> Option<&RendezvousDescriptor> {
        self.contexts.get(&context_id)?.own.as_ref()
    }

    /// Whether our descriptor in `context_id` must be (re)published: none
    /// this epoch, or it expires within `refresh_window_ms` of `now_ms`.
    pub fn needs_refresh(
        &self,
        context_id: ContextId,
        now_ms: u64,
        refresh_window_ms: u64,
    ) -> bool {
        match self.own_descriptor(context_id) {
            None => true,
            Some(d) => d.valid_until <= now_ms.saturating_add(refresh_window_ms),
        }
    }
}
