//! The rdv handshake: Noise IKpsk2 bound to a context epoch, sans-IO.
//!
//! * **Prologue** `"rdv channel v1" || context id || epoch (BE)`: two sides
//!   at different epochs or in different contexts fail on message 1. A
//!   rekey inside a channel adds the old handshake hash, so a rekey cannot
//!   be spliced into another channel.
//! * **PSK** the pair's PSK of the epoch (`EpochKeys::handshake_psk`), in
//!   snow slot 2 ([`crate::noise::PSK_SLOT`]).
//! * **Responder answers only peers that prove the PSK.** `psk2` mixes the
//!   PSK only at the end of message 2, so a plain IKpsk2 responder answers
//!   anyone who knows its static key and learns of a wrong PSK never. Message
//!   1's payload (encrypted by Noise under `es`/`ss`) therefore carries the
//!   initiator's authority, the epoch, a timestamp and a PSK confirmation
//!   `BLAKE3-keyed(derive_key("rdv channel v1 psk-confirm", psk), rs || ts)`
//!   (`rs` the responder's static key).
//!   The responder checks it, the static key against the context's
//!   membership, and the timestamp, and sends nothing when any check fails.
//! * **Replays without trusting clocks** (as WireGuard's TAI64N timestamp,
//!   WireGuard paper §5.1): the responder keeps, per initiator static key,
//!   the last timestamp it accepted, and takes only a strictly larger one
//!   ([`ReplayCache`]); an initiator's handshaker makes its timestamps
//!   strictly increasing. The distance to the responder's clock is bounded
//!   only loosely ([`MAX_CLOCK_SKEW_MS`], 10 minutes), so members whose
//!   clocks disagree by seconds or minutes still connect and rotate.
//! * **Timeout** driven by the `now_ms` arguments: an initiator whose answer
//!   comes after `timeout_ms` refuses it.

use rdv_context::{AuthorityId, ContextId, Epoch, Route};
use zeroize::Zeroizing;

use crate::noise::{self, Entropy, MAX_NOISE_MESSAGE, RawConfig, Split};

/// Default handshake timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// How far message 1's timestamp may be from the responder's clock. Replay
/// protection does not rest on it (see [`ReplayCache`]); it only bounds how
/// long a captured message 1 stays worth replaying to a responder that
/// restarted and forgot the initiator's last timestamp.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
const PROLOGUE_LABEL: &[u8] = b"rdv channel v1";
const REKEY_PROLOGUE_LABEL: &[u8] = b"rdv channel v1 rekey";
const CONFIRM_LABEL: &str = "rdv channel v1 psk-confirm";
const PAYLOAD_VERSION: u8 = 1;
/// Message 1 payload: version, initiator, epoch, timestamp, confirmation.
const INIT_PAYLOAD_LEN: usize = 1 + 32 + 8 + 8 + 32;

/// Why a handshake failed. Local only: nothing of it is ever sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A call out of order (e.g. `complete` before the response).
    #[error("handshake call out of order: {0}")]
    OutOfOrder(&'static str),
    /// The message is for another epoch than this side's.
    #[error("handshake for epoch {found}, this side is at epoch {expected}")]
    EpochMismatch {
        /// This side's epoch.
        expected: Epoch,
        /// The message's.
        found: Epoch,
    },
    /// The answer came too late.
    #[error("handshake timed out after {elapsed_ms} ms (limit {timeout_ms} ms)")]
    TimedOut {
        /// Time since message 1.
        elapsed_ms: u64,
        /// The limit.
        timeout_ms: u64,
    },
    /// The Noise message did not decrypt or authenticate: wrong static key,
    /// wrong PSK, other prologue (context or epoch), or altered bytes.
    #[error("handshake message does not authenticate")]
    NotAuthentic,
    /// Message 1's `mac1` is not under this responder's key: the sender
    /// does not know this member's static key. Checked before any X25519
    /// operation, so such a message costs one keyed hash.
    #[error("message 1 is not addressed to this member (mac1)")]
    Mac1Mismatch,
    /// Message 1 decrypted but its PSK confirmation does not match: the
    /// initiator holds another PSK (another epoch secret, or none).
    #[error("the initiator does not hold this pair's PSK")]
    PskMismatch,
    /// The initiator's static key is not a member's of the context.
    #[error("the initiator's static key belongs to no member of the context")]
    UnknownInitiator,
    /// The initiator's static key is a member's, but not the expected one.
    #[error("the initiator's static key is not {0:?}'s")]
    WrongInitiator(AuthorityId),
    /// Message 1's timestamp is outside the accepted window around now.
    #[error("message 1 is {skew_ms} ms away from now (window {window_ms} ms)")]
    Stale {
        /// Distance from now.
        skew_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// Message 1 was seen before: its timestamp is not newer than the last
    /// one accepted from this initiator.
    #[error("message 1 replayed")]
    Replayed,
    /// The replay state is full of initiators seen within the freshness
    /// window.
    #[error("too many initiators within the freshness window")]
    Busy,
    /// The message is malformed or too large.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// snow refused (a bug or a bad key).
    #[error("noise: {0}")]
    Noise(String),
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt | snow::Error::Dh => Self::NotAuthentic,
            snow::Error::Input => Self::Malformed("noise input"),
            other => Self::Noise(other.to_string()),
        }
    }
}

/// The prologue binding a handshake to a context epoch and to its route.
///
/// The route travels in clear in `HandshakeInit` and selects the
/// responder's operation (`AcceptDirect` or `AcceptRelay`, with their own
/// costs and capabilities); in the prologue, an on-path flip of it makes
/// message 1 fail to authenticate instead of silently changing what the
/// responder charges and checks (Noise rev. 34, section 6: both sides must
/// hold the same prologue).
pub fn prologue(context: &ContextId, epoch: Epoch, route: Route) -> Vec<u8> {
    bound_prologue(context, epoch, route, None)
}

/// [`prologue`] followed by a transport's channel binding, when it has
/// one: QUIC's TLS exporter value (RFC 9266-style, RFC 5705 exporter of
/// the QUIC connection), so a Noise session cannot be carried over a QUIC
/// connection other than the one both ends see (a relay or middlebox that
/// terminates QUIC on each side has two connections with two exporter
/// values, and message 1 does not open).
pub fn bound_prologue(
    context: &ContextId,
    epoch: Epoch,
    route: Route,
    binding: Option<&[u8; 32]>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 73);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(context.as_bytes());
    p.extend_from_slice(&epoch.to_be_bytes());
    p.push(match route {
        Route::Direct => 0,
        Route::Relay => 1,
    });
    if let Some(b) = binding {
        p.extend_from_slice(b);
    }
    p
}

/// The prologue of a rekey inside the channel `channel_hash`.
pub fn rekey_prologue(context: &ContextId, epoch: Epoch, channel_hash: &[u8; 32]) -> Vec<u8> {
    let mut p = Vec::with_capacity(REKEY_PROLOGUE_LABEL.len() + 72);
    p.extend_from_slice(REKEY_PROLOGUE_LABEL);
    p.extend_from_slice(context.as_bytes());
    p.extend_from_slice(&epoch.to_be_bytes());
    p.extend_from_slice(channel_hash);
    p
}

fn confirmation(psk: &[u8; 32], ephemeral: &[u8], ts: u64) -> [u8; 32] {
    let key = Zeroizing::new(blake3::derive_key(CONFIRM_LABEL, psk));
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(ephemeral);
    h.update(&ts.to_be_bytes());
    *h.finalize().as_bytes()
}

/// What both sides of a handshake know.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// The context.
    pub context_id: ContextId,
    /// The epoch whose PSK is used.
    pub epoch: Epoch,
    /// This side.
    pub local: AuthorityId,
    /// The other side.
    pub remote: AuthorityId,
    /// This side's static X25519 private key.
    pub local_static: Zeroizing<[u8; 32]>,
    /// The pair's PSK of `epoch`.
    pub psk: Zeroizing<[u8; 32]>,
    /// Handshake timeout (initiator: response deadline; responder: accepted
    /// distance of message 1's timestamp from now).
    pub timeout_ms: u64,
    /// The Noise prologue ([`prologue`] or [`rekey_prologue`]).
    pub prologue: Vec<u8>,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("context_id", &self.context_id)
            .field("epoch", &self.epoch)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A finished handshake: the transport keys and the handshake hash.
pub struct Established {
    pub(crate) split: Split,
    /// The context.
    pub context_id: ContextId,
    /// The epoch.
    pub epoch: Epoch,
    /// This side.
    pub local: AuthorityId,
    /// The peer.
    pub remote: AuthorityId,
    /// The peer's static key (authenticated by the handshake).
    pub remote_static: [u8; 32],
    /// Whether this side initiated.
    pub initiator: bool,
}

impl Established {
    /// The handshake hash: the channel id.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.split.handshake_hash
    }
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("context_id", &self.context_id)
            .field("epoch", &self.epoch)
            .field("remote", &self.remote)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

enum InitiatorState {
    Ready,
    Sent {
        hs: Box<snow::HandshakeState>,
        at_ms: u64,
    },
    Received {
        hs: Box<snow::HandshakeState>,
    },
    Done,
}

/// The initiator side (the seed's `Handshaker` initiator API).
pub struct Initiator {
    config: HandshakeConfig,
    remote_static: [u8; 32],
    entropy: Option<Zeroizing<[u8; 32]>>,
    state: InitiatorState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// An initiator towards a responder whose static key is
    /// `remote_static` (from its verified descriptor); `entropy` is 32
    /// bytes from the caller's generator (the ephemeral key's seed).
    pub fn new(config: HandshakeConfig, remote_static: [u8; 32], entropy: [u8; 32]) -> Self {
        Self {
            config,
            remote_static,
            entropy: Some(Zeroizing::new(entropy)),
            state: InitiatorState::Ready,
        }
    }

    /// Builds message 1 for `epoch` (which must be the configured one: the
    /// PSK belongs to it) at `now_ms`.
    pub fn create_init_message(
        &mut self,
        epoch: Epoch,
        now_ms: u64,
    ) -> Result<Vec<u8>, HandshakeError> {
        if epoch != self.config.epoch {
            return Err(HandshakeError::EpochMismatch {
                expected: self.config.epoch,
                found: epoch,
            });
        }
        if !matches!(self.state, InitiatorState::Ready) {
            return Err(HandshakeError::OutOfOrder("message 1 already built"));
        }
        let entropy = self
            .entropy
            .take()
            .ok_or(HandshakeError::OutOfOrder("no entropy"))?;
        let mut hs = noise::build(RawConfig {
            initiator: true,
            local_private: &self.config.local_static,
            remote_public: Some(&self.remote_static),
            psk: Some(&self.config.psk),
            prologue: &self.config.prologue,
            entropy: Entropy::Seed(entropy),
            #[cfg(test)]
            psk_slot: noise::PSK_SLOT,
        })?;
        // snow exposes no ephemeral before writing, so the confirmation
        // covers the responder's static key and the timestamp; Noise binds
        // the payload to `e` (it is encrypted under a key mixed with it).
        let mut payload = Vec::with_capacity(INIT_PAYLOAD_LEN);
        payload.push(PAYLOAD_VERSION);
        payload.extend_from_slice(self.config.local.as_bytes());
        payload.extend_from_slice(&epoch.to_be_bytes());
        payload.extend_from_slice(&now_ms.to_be_bytes());
        payload.extend_from_slice(&confirmation(&self.config.psk, &self.remote_static, now_ms));
        let mut msg = vec![0u8; MAX_NOISE_MESSAGE];
        let n = hs.write_message(&payload, &mut msg)?;
        msg.truncate(n);
        self.state = InitiatorState::Sent {
            hs: Box::new(hs),
            at_ms: now_ms,
        };
        Ok(msg)
    }

    /// Processes message 2 at `now_ms`.
    pub fn process_response(&mut self, message: &[u8], now_ms: u64) -> Result<(), HandshakeError> {
        let InitiatorState::Sent { hs, at_ms } =
            std::mem::replace(&mut self.state, InitiatorState::Done)
        else {
            return Err(HandshakeError::OutOfOrder("no message 1 outstanding"));
        };
        let elapsed_ms = now_ms.saturating_sub(at_ms);
        if elapsed_ms > self.config.timeout_ms {
            return Err(HandshakeError::TimedOut {
                elapsed_ms,
                timeout_ms: self.config.timeout_ms,
            });
        }
        if message.len() > MAX_NOISE_MESSAGE {
            return Err(HandshakeError::Malformed("message 2 too large"));
        }
        let mut hs = hs;
        let mut out = vec![0u8; message.len()];
        match hs.read_message(message, &mut out) {
            Ok(_) => {
                self.state = InitiatorState::Received { hs };
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The established handshake, after [`Initiator::process_response`].
    pub fn complete(self) -> Result<Established, HandshakeError> {
        let InitiatorState::Received { hs } = self.state else {
            return Err(HandshakeError::OutOfOrder("no verified message 2"));
        };
        Ok(Established {
            split: noise::split(*hs)?,
            context_id: self.config.context_id,
            epoch: self.config.epoch,
            local: self.config.local,
            remote: self.config.remote,
            remote_static: self.remote_static,
            initiator: true,
        })
    }
}

/// Per-initiator replay state: the last message-1 timestamp accepted from
/// each initiator static key. A message 1 is accepted only with a larger
/// timestamp, whatever other peers do (a global FIFO of ephemerals could be
/// flushed by handshakes of others). Entries are added only after the
/// initiator proved the PSK, so only members fill it; when full, entries
/// older than the freshness window go first (a replay of those is refused by
/// the window), and if none is that old a new initiator is refused
/// ([`HandshakeError::Busy`]) rather than an entry forgotten.
#[derive(Debug)]
pub struct ReplayCache {
    last: hashbrown::HashMap<[u8; 32], u64>,
    max: usize,
}

impl ReplayCache {
    /// A cache of at most `max` initiators.
    pub fn new(max: usize) -> Self {
        Self {
            last: hashbrown::HashMap::new(),
            max: max.max(1),
        }
    }
    /// Accepts `ts` from `initiator` at `now_ms` if it is newer than the
    /// last one accepted from it, and remembers it.
    pub fn check_and_insert(
        &mut self,
        initiator: [u8; 32],
        ts: u64,
        now_ms: u64,
    ) -> Result<(), HandshakeError> {
        if let Some(last) = self.last.get_mut(&initiator) {
            if ts <= *last {
                return Err(HandshakeError::Replayed);
            }
            *last = ts;
            return Ok(());
        }
        if self.last.len() >= self.max {
            let floor = now_ms.saturating_sub(MAX_CLOCK_SKEW_MS);
            self.last.retain(|_, t| *t >= floor);
            if self.last.len() >= self.max {
                return Err(HandshakeError::Busy);
            }
        }
        self.last.insert(initiator, ts);
        Ok(())
    }
    /// Initiators remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }
    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// Message 1 read without the PSK: who it claims to be from.
pub struct OpenedInit {
    hs: Box<snow::HandshakeState>,
    payload: Vec<u8>,
    /// The initiator's static key (authenticated by `es`/`ss`).
    pub initiator_static: [u8; 32],
    /// The authority named in the payload.
    pub claimed: AuthorityId,
    message: Vec<u8>,
}

impl std::fmt::Debug for OpenedInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedInit")
            .field("claimed", &self.claimed)
            .finish_non_exhaustive()
    }
}

/// Reads message 1 as the responder with static key `local_static`, before
/// knowing the pair (hence the PSK): IK reveals the initiator's static key
/// in message 1, and `psk2` needs the PSK only for message 2.
pub fn open_init(
    local_static: &[u8; 32],
    prologue: &[u8],
    message: &[u8],
    entropy: [u8; 32],
) -> Result<OpenedInit, HandshakeError> {
    if message.len() > MAX_NOISE_MESSAGE || message.len() < 32 {
        return Err(HandshakeError::Malformed("message 1 size"));
    }
    let mut hs = noise::build(RawConfig {
        initiator: false,
        local_private: local_static,
        remote_public: None,
        psk: None,
        prologue,
        entropy: Entropy::Seed(Zeroizing::new(entropy)),
        #[cfg(test)]
        psk_slot: noise::PSK_SLOT,
    })?;
    let mut payload = vec![0u8; message.len()];
    let n = hs.read_message(message, &mut payload)?;
    payload.truncate(n);
    if payload.len() != INIT_PAYLOAD_LEN || payload[0] != PAYLOAD_VERSION {
        return Err(HandshakeError::Malformed("message 1 payload"));
    }
    let initiator_static: [u8; 32] = hs
        .get_remote_static()
        .and_then(|s| s.try_into().ok())
        .ok_or(HandshakeError::Malformed("no initiator static key"))?;
    let claimed = AuthorityId::from_bytes(
        payload[1..33]
            .try_into()
            .map_err(|_| HandshakeError::Malformed("authority"))?,
    )
    .map_err(|_| HandshakeError::Malformed("authority"))?;
    Ok(OpenedInit {
        hs: Box::new(hs),
        payload,
        initiator_static,
        claimed,
        message: message.to_vec(),
    })
}

impl OpenedInit {
    /// Whether this is the reading of `message`.
    pub fn is_of(&self, message: &[u8]) -> bool {
        self.message == message
    }
}

/// Finishes the responder side: checks message 1 against `config` (the
/// pair's PSK and epoch), the expected initiator static key, the time and
/// the replay cache, then writes message 2. Any error: send nothing.
pub fn respond(
    config: &HandshakeConfig,
    expected_static: &[u8; 32],
    opened: OpenedInit,
    replay: Option<&mut ReplayCache>,
    now_ms: u64,
) -> Result<(Vec<u8>, Established), HandshakeError> {
    let OpenedInit {
        mut hs,
        payload,
        initiator_static,
        claimed,
        ..
    } = opened;
    if initiator_static != *expected_static || claimed != config.remote {
        return Err(HandshakeError::WrongInitiator(config.remote));
    }
    let epoch = u64::from_be_bytes(
        payload[33..41]
            .try_into()
            .map_err(|_| HandshakeError::Malformed("epoch"))?,
    );
    if epoch != config.epoch {
        return Err(HandshakeError::EpochMismatch {
            expected: config.epoch,
            found: epoch,
        });
    }
    let ts = u64::from_be_bytes(
        payload[41..49]
            .try_into()
            .map_err(|_| HandshakeError::Malformed("ts"))?,
    );
    let skew_ms = ts.abs_diff(now_ms);
    if skew_ms > MAX_CLOCK_SKEW_MS {
        return Err(HandshakeError::Stale {
            skew_ms,
            window_ms: MAX_CLOCK_SKEW_MS,
        });
    }
    // The initiator computed the confirmation over our static key.
    let mut own_public = [0u8; 32];
    own_public.copy_from_slice(&x25519_public(&config.local_static));
    let expected = confirmation(&config.psk, &own_public, ts);
    if !constant_time_eq(&expected, &payload[49..81]) {
        return Err(HandshakeError::PskMismatch);
    }
    if let Some(r) = replay {
        r.check_and_insert(initiator_static, ts, now_ms)?;
    }
    noise::set_psk(&mut hs, &config.psk)?;
    let mut msg = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs.write_message(&[], &mut msg)?;
    msg.truncate(n);
    Ok((
        msg,
        Established {
            split: noise::split(*hs)?,
            context_id: config.context_id,
            epoch: config.epoch,
            local: config.local,
            remote: config.remote,
            remote_static: initiator_static,
            initiator: false,
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The X25519 public key of a private key (snow's own derivation).
pub(crate) fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    use snow::resolvers::CryptoResolver;
    let mut out = [0u8; 32];
    if let Some(mut dh) =
        snow::resolvers::DefaultResolver.resolve_dh(&snow::params::DHChoice::Curve25519)
    {
        dh.set(private);
        out.copy_from_slice(dh.pubkey());
    }
    out
}
