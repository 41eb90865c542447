//! [`NoiseHandshaker`]: rdv-context's [`Handshaker`] on Noise IKpsk2, so
//! `RendezvousService::prepare_establish_channel` and
//! `prepare_handle_handshake` produce and check real Noise messages.
//!
//! The trait has no clock, so [`NoiseHandshaker::at`] lends a view bound to
//! `now_ms`. The responder knows members' static keys from the context
//! (`Context::members`, bindings signed by each member): an initiator whose
//! static key is not a member's is refused before any answer.

use hashbrown::HashMap;
use rdv_context::{
    AuthorityId, Context, ContextId, CryptoRng, HandshakeComplete, HandshakeInit, HandshakeParams,
    Handshaker, Identity, Responded, SeededRng, mac1_key,
};
use zeroize::Zeroizing;

use crate::channel::SecureChannel;
use crate::handshake::{
    DEFAULT_TIMEOUT_MS, Established, HandshakeConfig, HandshakeError, Initiator, OpenedInit,
    ReplayCache, bound_prologue, open_init, respond,
};

/// Most handshakes pending or finished-but-untaken, each side.
pub const MAX_PENDING: usize = 256;

/// Noise IKpsk2 handshakes of one authority.
pub struct NoiseHandshaker {
    local: AuthorityId,
    static_secret: Zeroizing<[u8; 32]>,
    /// [`mac1_key`] of this side's static public key: message 1 must carry
    /// a MAC under it before any X25519 work is spent on it.
    mac1_key: [u8; 32],
    rng: SeededRng,
    timeout_ms: u64,
    members: HashMap<ContextId, HashMap<AuthorityId, [u8; 32]>>,
    pending: HashMap<(ContextId, AuthorityId), Initiator>,
    responded: HashMap<(ContextId, AuthorityId), Established>,
    opened: Option<(ContextId, OpenedInit)>,
    replay: ReplayCache,
    /// The last message-1 timestamp this authority sent: the next is
    /// strictly larger, whatever the clock says (responders refuse one that
    /// is not).
    last_sent_ts: u64,
    /// The channel binding of the handshake in progress (QUIC), if any.
    binding: Option<[u8; 32]>,
}

impl std::fmt::Debug for NoiseHandshaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseHandshaker")
            .field("local", &self.local)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl NoiseHandshaker {
    /// A handshaker for `identity`, drawing a seed from `rng` for every
    /// ephemeral it will make.
    pub fn new<R: CryptoRng + ?Sized>(identity: &Identity, rng: &mut R) -> Self {
        Self {
            local: identity.authority(),
            static_secret: identity.static_secret_bytes(),
            mac1_key: mac1_key(&identity.static_public()),
            rng: SeededRng::from_rng(rng),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            members: HashMap::new(),
            pending: HashMap::new(),
            responded: HashMap::new(),
            opened: None,
            // One entry per initiator (members only): room for many
            // contexts' members.
            replay: ReplayCache::new(1 << 16),
            last_sent_ts: 0,
            binding: None,
        }
    }
    /// Sets the transport's channel binding that the next handshakes bind
    /// into their prologue ([`crate::handshake::bound_prologue`]): a QUIC
    /// driver sets its connection's exporter value, under the same lock
    /// as the handshake step it guards, and clears it after (`None`, the
    /// TCP prologue).
    pub fn set_channel_binding(&mut self, binding: Option<[u8; 32]>) {
        self.binding = binding;
    }
    /// Sets the handshake timeout.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }
    /// Learns (replaces) the members' static keys of `context`.
    pub fn learn_members(&mut self, context: &Context) {
        let m = context.members().map(|(a, k)| (*a, *k)).collect();
        self.members.insert(context.id(), m);
    }
    /// The member of `context` whose static key is `key`.
    pub fn member_by_static(&self, context: &ContextId, key: &[u8; 32]) -> Option<AuthorityId> {
        self.members
            .get(context)?
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(a, _)| *a)
    }
    /// A view at `now_ms` implementing [`Handshaker`].
    pub fn at(&mut self, now_ms: u64) -> At<'_> {
        At {
            inner: self,
            now_ms,
        }
    }
    /// Reads message 1 to learn which member sent it (IK reveals its static
    /// key; the PSK is not needed yet), so a driver can call
    /// `prepare_handle_handshake` with the right initiator. The reading is
    /// kept for `respond`.
    pub fn identify_initiator(
        &mut self,
        init: &HandshakeInit,
    ) -> Result<AuthorityId, HandshakeError> {
        if !init.mac1_matches(&self.mac1_key) {
            return Err(HandshakeError::Mac1Mismatch);
        }
        let p = bound_prologue(
            &init.context_id,
            init.epoch,
            init.route,
            self.binding.as_ref(),
        );
        let opened = open_init(&self.static_secret, &p, &init.payload, self.rng.array())?;
        let who = self
            .member_by_static(&init.context_id, &opened.initiator_static)
            .ok_or(HandshakeError::UnknownInitiator)?;
        self.opened = Some((init.context_id, opened));
        Ok(who)
    }
    /// Finishes an initiated handshake with message 2.
    pub fn finish_initiator(
        &mut self,
        peer: AuthorityId,
        complete: &HandshakeComplete,
        now_ms: u64,
    ) -> Result<SecureChannel, HandshakeError> {
        let mut init = self
            .pending
            .remove(&(complete.context_id, peer))
            .ok_or(HandshakeError::OutOfOrder("no handshake with this peer"))?;
        init.process_response(&complete.payload, now_ms)?;
        Ok(SecureChannel::new(init.complete()?))
    }
    /// The responder channel of a handshake answered with `initiator`.
    pub fn take_responded(
        &mut self,
        context: ContextId,
        initiator: AuthorityId,
    ) -> Option<SecureChannel> {
        self.responded
            .remove(&(context, initiator))
            .map(SecureChannel::new)
    }
    /// This side's static secret (for rotations).
    pub fn static_secret(&self) -> Zeroizing<[u8; 32]> {
        self.static_secret.clone()
    }
    /// Mixes 32 bytes from the operating system into this handshaker's
    /// generator. Drivers call it before every handshake they start or
    /// answer (`tcp.rs`), so a forked process or a cloned VM does not repeat
    /// ephemeral keys; the core itself reads no random source.
    pub fn reseed(&mut self, fresh: &[u8; 32]) {
        self.rng.reseed(fresh);
    }
    /// This side's mac1 key: a server checks
    /// [`HandshakeInit::mac1_matches`] with a copy of it before taking any
    /// lock shared between connections.
    pub fn mac1_key(&self) -> [u8; 32] {
        self.mac1_key
    }
    /// 32 fresh bytes (entropy for a rotation).
    pub fn entropy(&mut self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.rng.array())
    }
    /// The timeout.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }
    fn config(&self, p: &HandshakeParams<'_>) -> HandshakeConfig {
        HandshakeConfig {
            context_id: p.context_id,
            epoch: p.epoch,
            local: p.local,
            remote: p.remote,
            local_static: self.static_secret.clone(),
            psk: Zeroizing::new(*p.psk),
            timeout_ms: self.timeout_ms,
            prologue: bound_prologue(&p.context_id, p.epoch, p.route, self.binding.as_ref()),
        }
    }
}

/// [`NoiseHandshaker`] at one instant.
#[derive(Debug)]
pub struct At<'a> {
    inner: &'a mut NoiseHandshaker,
    now_ms: u64,
}

impl Handshaker for At<'_> {
    type Error = HandshakeError;

    fn initiate(&mut self, p: &HandshakeParams<'_>) -> Result<Vec<u8>, HandshakeError> {
        let remote_static = p
            .remote_static
            .ok_or(HandshakeError::OutOfOrder("no responder static key"))?;
        let h = &mut *self.inner;
        if h.pending.len() >= MAX_PENDING && !h.pending.contains_key(&(p.context_id, p.remote)) {
            return Err(HandshakeError::OutOfOrder("too many pending handshakes"));
        }
        let mut init = Initiator::new(h.config(p), remote_static, h.rng.array());
        let ts = self.now_ms.max(h.last_sent_ts.saturating_add(1));
        let msg = init.create_init_message(p.epoch, ts)?;
        h.last_sent_ts = ts;
        h.pending.insert((p.context_id, p.remote), init);
        Ok(msg)
    }

    fn respond(
        &mut self,
        p: &HandshakeParams<'_>,
        init: &[u8],
    ) -> Result<Responded, HandshakeError> {
        let h = &mut *self.inner;
        let expected = *h
            .members
            .get(&p.context_id)
            .and_then(|m| m.get(&p.remote))
            .ok_or(HandshakeError::UnknownInitiator)?;
        let config = h.config(p);
        let opened = match h.opened.take() {
            Some((c, o)) if c == p.context_id && o.is_of(init) => o,
            _ => open_init(&h.static_secret, &config.prologue, init, h.rng.array())?,
        };
        if h.member_by_static(&p.context_id, &opened.initiator_static)
            .is_none()
        {
            return Err(HandshakeError::UnknownInitiator);
        }
        if h.responded.len() >= MAX_PENDING {
            return Err(HandshakeError::OutOfOrder("too many untaken channels"));
        }
        let (payload, est) = respond(&config, &expected, opened, Some(&mut h.replay), self.now_ms)?;
        let channel_id = est.handshake_hash();
        h.responded.insert((p.context_id, p.remote), est);
        Ok(Responded {
            payload,
            channel_id,
        })
    }
}
