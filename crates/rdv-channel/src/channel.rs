//! [`SecureChannel`]: framed, ordered, authenticated transport after the
//! handshake, with epoch rotation by a new IKpsk2 handshake inside the
//! channel.
//!
//! # Framing
//!
//! A frame on the byte stream is
//!
//! ```text
//! len: u16 BE (bytes after it) | epoch: u64 BE | counter: u64 BE | Noise transport message
//! ```
//!
//! The Noise message (at most 65 519 bytes here, under Noise's 65 535) is
//! ChaCha20-Poly1305 with nonce `counter` under the direction key of
//! `epoch`; its plaintext is a record kind byte then the body. Application
//! messages of any size are split into `More` records ended by one `Data`
//! record. The header needs no associated data: the counter is the AEAD
//! nonce and the epoch selects the key, so altering either fails
//! authentication.
//!
//! # Ordering
//!
//! The transport is ordered, so each direction's counter must be exactly
//! the next one: a smaller counter is a replay, a larger one a reordering
//! or loss; both close the channel with a typed error, as does any frame
//! that does not authenticate, a truncated stream or a message above the
//! reassembly bound. Errors are final: the keys are dropped (wiped).
//!
//! # Rotation
//!
//! When the context epoch advances, the side that initiated the channel
//! runs a fresh IKpsk2 handshake with the new epoch's PSK, carried in
//! `RekeyInit`/`RekeyResponse` records under the old keys, with a prologue
//! binding the context, the new epoch and the current handshake hash. The
//! responder switches its sending key after answering and its receiving key
//! at the first frame of the new epoch; the initiator switches both on the
//! answer and sends `RekeyDone` under the new keys. Old keys are dropped
//! (ChaCha20-Poly1305 wipes its key on drop) at each switch, and frames of
//! an older epoch are refused afterwards. New ephemerals give forward
//! secrecy; the new PSK means a holder of only the old epoch secret cannot
//! complete the rotation.

use rdv_context::{AuthorityId, ContextId, Epoch, Psk};
use zeroize::Zeroizing;

use crate::handshake::{
    Established, HandshakeConfig, HandshakeError, Initiator, open_init, rekey_prologue, respond,
};
use crate::noise::{AeadError, DirectionKey, TAG_LEN};

/// Bytes before the Noise message in a frame.
pub const FRAME_HEADER_LEN: usize = 2 + 8 + 8;
/// Largest Noise message in a frame (the 16-bit length covers the header).
pub const MAX_NOISE_IN_FRAME: usize = u16::MAX as usize - 16;
/// Largest application fragment in one record.
pub const MAX_FRAGMENT: usize = MAX_NOISE_IN_FRAME - TAG_LEN - 1;
/// Default bound on one reassembled application message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 << 20;
const MIN_FRAME_BODY: usize = 8 + 8 + TAG_LEN + 1;

const KIND_DATA: u8 = 0;
const KIND_MORE: u8 = 1;
const KIND_REKEY_INIT: u8 = 2;
const KIND_REKEY_RESPONSE: u8 = 3;
const KIND_CLOSE: u8 = 4;
const KIND_REKEY_DONE: u8 = 5;
const KIND_KEY_UPDATE: u8 = 6;

/// Frames sealed under one key before the sender updates it (the volume
/// bound of a key, as WireGuard rekeys after 2^60 messages and TLS 1.3 by
/// key updates; ours is far lower so that a long-lived channel's keys turn
/// over often).
pub const KEY_UPDATE_FRAMES: u64 = 1 << 20;
/// Time a key is used before the sender updates it: 2 minutes, as
/// WireGuard's `REKEY_AFTER_TIME`. Driven by [`SecureChannel::poll_key_update`].
pub const KEY_UPDATE_INTERVAL_MS: u64 = 120_000;

/// Why a channel failed. Local: the peer is never told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel is not in a state that allows the call.
    #[error("channel is {0}")]
    NotActive(&'static str),
    /// A frame shorter than a header and a tag.
    #[error("frame of {0} bytes is shorter than a header and a tag")]
    FrameTooShort(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
    /// A counter below the next expected: a replay.
    #[error("frame counter {found} replayed (expected {expected})")]
    Replayed {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// A counter above the next expected: reordered or lost frames.
    #[error("frame counter {found} out of order (expected {expected})")]
    Reordered {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// A frame of an epoch whose keys are gone.
    #[error("frame of epoch {found}, the channel is at epoch {current}")]
    StaleEpoch {
        /// Current.
        current: Epoch,
        /// Found.
        found: Epoch,
    },
    /// A frame of an epoch the channel has no keys for.
    #[error("frame of unknown epoch {0}")]
    UnknownEpoch(Epoch),
    /// A frame that does not authenticate (garbled, or another key).
    #[error("frame does not authenticate")]
    Garbled,
    /// A reassembled message above the bound.
    #[error("message of more than {max} bytes")]
    MessageTooLarge {
        /// The bound.
        max: usize,
    },
    /// An unknown record kind.
    #[error("unknown record kind {0}")]
    UnknownRecord(u8),
    /// A record that makes no sense now (e.g. a rekey answer never asked).
    #[error("unexpected record: {0}")]
    Unexpected(&'static str),
    /// The send counter reached its end: rotate.
    #[error("send counter exhausted")]
    CounterExhausted,
    /// The rotation handshake failed.
    #[error("rotation failed: {0}")]
    Rotation(#[from] HandshakeError),
}

/// A channel's state (the seed's `ChannelState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    /// Handshake under way; no keys yet.
    Establishing,
    /// Keys in place; traffic flows.
    Active,
    /// A rotation to `to` is under way; traffic still flows.
    Rotating {
        /// The epoch rotated to.
        to: Epoch,
    },
    /// Closed cleanly.
    Closed,
    /// Failed; keys dropped.
    Error(ChannelError),
}

impl ChannelState {
    fn name(&self) -> &'static str {
        match self {
            Self::Establishing => "establishing",
            Self::Active => "active",
            Self::Rotating { .. } => "rotating",
            Self::Closed => "closed",
            Self::Error(_) => "failed",
        }
    }
}

/// What the peer sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An application message.
    Message(Vec<u8>),
    /// The peer asks to rotate to `epoch`: call
    /// [`SecureChannel::accept_rotation`] with that epoch's material.
    RotationRequested {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The channel now runs on `epoch`'s keys. On the initiator, `send`
    /// holds the `RekeyDone` frame to send (empty on the responder).
    Rotated {
        /// The new epoch.
        epoch: Epoch,
        /// Bytes to send to the peer.
        send: Vec<u8>,
    },
    /// The peer closed the channel.
    Closed,
}

/// What a rotation needs from this side: the new epoch's pair PSK, the
/// static key and fresh entropy.
pub struct RekeyMaterial {
    /// The new epoch.
    pub epoch: Epoch,
    /// This side's static X25519 private key.
    pub local_static: Zeroizing<[u8; 32]>,
    /// The pair's PSK of the new epoch.
    pub psk: Psk,
    /// 32 bytes from the caller's generator (wiped on drop).
    pub entropy: Zeroizing<[u8; 32]>,
    /// Handshake timeout.
    pub timeout_ms: u64,
}

impl std::fmt::Debug for RekeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RekeyMaterial")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

struct Direction {
    epoch: Epoch,
    key: DirectionKey,
    counter: u64,
    /// Frames sealed or opened under `key`.
    used: u64,
    /// Key updates since the handshake of `epoch`.
    generation: u64,
}

impl Direction {
    fn new(epoch: Epoch, key: DirectionKey) -> Self {
        Self {
            epoch,
            key,
            counter: 0,
            used: 0,
            generation: 0,
        }
    }
    /// Moves to the next key (`REKEY`); the old one is dropped (wiped).
    fn update(&mut self) -> Result<(), ChannelError> {
        self.key = self.key.rekeyed().map_err(|_| ChannelError::Garbled)?;
        self.used = 0;
        self.generation += 1;
        Ok(())
    }
}

/// A secure channel between two members of a context (the seed's
/// `SecureChannel`). `Debug` prints no key.
pub struct SecureChannel {
    id: [u8; 32],
    binding: [u8; 32],
    context_id: ContextId,
    local: AuthorityId,
    remote: AuthorityId,
    remote_static: [u8; 32],
    initiator: bool,
    epoch: Epoch,
    state: ChannelState,
    rotation_due: Option<Epoch>,
    send: Option<Direction>,
    recv: Option<Direction>,
    next_recv: Option<Direction>,
    rekey: Option<Initiator>,
    rekey_request: Option<(Epoch, Vec<u8>)>,
    inbuf: Vec<u8>,
    message: Vec<u8>,
    max_message_len: usize,
    key_update_frames: u64,
    /// When the current send key's time started (first
    /// [`SecureChannel::poll_key_update`], or the rotation).
    keys_at_ms: Option<u64>,
}

impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("id", &short_hex(&self.id))
            .field("context_id", &self.context_id)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("epoch", &self.epoch)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn short_hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

impl SecureChannel {
    /// A channel whose handshake is under way ([`ChannelState::Establishing`]).
    pub fn establishing(
        context_id: ContextId,
        local: AuthorityId,
        remote: AuthorityId,
        epoch: Epoch,
        initiator: bool,
    ) -> Self {
        Self {
            id: [0; 32],
            binding: [0; 32],
            context_id,
            local,
            remote,
            remote_static: [0; 32],
            initiator,
            epoch,
            state: ChannelState::Establishing,
            rotation_due: None,
            send: None,
            recv: None,
            next_recv: None,
            rekey: None,
            rekey_request: None,
            inbuf: Vec::new(),
            message: Vec::new(),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            key_update_frames: KEY_UPDATE_FRAMES,
            keys_at_ms: None,
        }
    }

    /// An active channel from a finished handshake; its id is the
    /// handshake hash.
    pub fn new(established: Established) -> Self {
        let mut c = Self::establishing(
            established.context_id,
            established.local,
            established.remote,
            established.epoch,
            established.initiator,
        );
        c.install(established);
        c
    }

    /// Installs the keys of a finished handshake into an `Establishing`
    /// channel.
    pub fn install(&mut self, e: Established) {
        self.id = e.split.handshake_hash;
        self.binding = e.split.handshake_hash;
        self.remote_static = e.remote_static;
        self.epoch = e.epoch;
        self.send = Some(Direction::new(e.epoch, e.split.send));
        self.recv = Some(Direction::new(e.epoch, e.split.recv));
        self.state = ChannelState::Active;
    }

    /// Bounds one reassembled message (default [`DEFAULT_MAX_MESSAGE_LEN`]).
    pub fn with_max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max;
        self
    }

    /// The channel id: the first handshake's hash.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }
    /// The hash of the handshake whose keys are in use (changes on rotation).
    pub fn binding(&self) -> [u8; 32] {
        self.binding
    }
    /// The context.
    pub fn context_id(&self) -> ContextId {
        self.context_id
    }
    /// This side.
    pub fn local(&self) -> AuthorityId {
        self.local
    }
    /// The peer.
    pub fn remote(&self) -> AuthorityId {
        self.remote
    }
    /// The peer's authenticated static key.
    pub fn remote_static(&self) -> [u8; 32] {
        self.remote_static
    }
    /// Whether this side initiated (and so drives rotations).
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }
    /// The epoch of the keys in use.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// The state.
    pub fn state(&self) -> &ChannelState {
        &self.state
    }
    /// Whether traffic flows.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            ChannelState::Active | ChannelState::Rotating { .. }
        )
    }
    /// Whether the channel is closed or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ChannelState::Closed | ChannelState::Error(_))
    }
    /// Whether the channel runs on keys older than `current_epoch`.
    pub fn needs_epoch_rotation(&self, current_epoch: Epoch) -> bool {
        self.epoch < current_epoch || self.rotation_due.is_some_and(|e| e > self.epoch)
    }
    /// Marks the channel for rotation to `epoch` (the manager does this).
    pub fn mark_rotation_due(&mut self, epoch: Epoch) {
        if epoch > self.epoch {
            self.rotation_due = Some(epoch);
        }
    }
    /// How many direction keys the channel holds (2 when settled, 3 on a
    /// responder between its answer and the first new-epoch frame, 0 when
    /// closed or failed).
    pub fn keys_held(&self) -> usize {
        usize::from(self.send.is_some())
            + usize::from(self.recv.is_some())
            + usize::from(self.next_recv.is_some())
    }

    fn fail(&mut self, e: ChannelError) -> ChannelError {
        self.send = None;
        self.recv = None;
        self.next_recv = None;
        self.rekey = None;
        self.rekey_request = None;
        self.message = Vec::new();
        self.inbuf = Vec::new();
        self.state = ChannelState::Error(e.clone());
        e
    }

    fn check_can_send(&self) -> Result<(), ChannelError> {
        if self.is_active() {
            Ok(())
        } else {
            Err(ChannelError::NotActive(self.state.name()))
        }
    }

    fn seal_record(
        &mut self,
        kind: u8,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        let d = self
            .send
            .as_mut()
            .ok_or(ChannelError::NotActive("without keys"))?;
        if d.counter == u64::MAX {
            return Err(ChannelError::CounterExhausted);
        }
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&d.epoch.to_be_bytes());
        out.extend_from_slice(&d.counter.to_be_bytes());
        let plain = out.len();
        out.push(kind);
        out.extend_from_slice(body);
        d.key
            .seal_in_place(d.counter, out, plain)
            .map_err(|_: AeadError| ChannelError::Garbled)?;
        d.counter += 1;
        d.used += 1;
        if kind == KIND_KEY_UPDATE {
            // The update travels under the old key; everything after it
            // under the new one.
            d.update()?;
        }
        let len = u16::try_from(out.len() - start - 2)
            .map_err(|_| ChannelError::MessageTooLarge { max: MAX_FRAGMENT })?;
        out[start..start + 2].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Encrypts one application message of any size into frames appended
    /// to `out`.
    pub fn encrypt_into(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.check_can_send()?;
        let used = self.send.as_ref().map_or(0, |d| d.used);
        if used >= self.key_update_frames {
            self.seal_record(KIND_KEY_UPDATE, &[], out)?;
        }
        if message.len() > self.max_message_len {
            return Err(ChannelError::MessageTooLarge {
                max: self.max_message_len,
            });
        }
        let n = message.len().div_ceil(MAX_FRAGMENT).max(1);
        out.reserve(message.len() + n * (FRAME_HEADER_LEN + 1 + TAG_LEN));
        let mut chunks = message.chunks(MAX_FRAGMENT).peekable();
        if chunks.peek().is_none() {
            return self.seal_record(KIND_DATA, &[], out);
        }
        while let Some(c) = chunks.next() {
            let kind = if chunks.peek().is_some() {
                KIND_MORE
            } else {
                KIND_DATA
            };
            self.seal_record(kind, c, out)?;
        }
        Ok(())
    }

    /// Encrypts one application message of any size into frames.
    pub fn encrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let mut out = Vec::new();
        self.encrypt_into(message, &mut out)?;
        Ok(out)
    }

    /// The time half of key updates: the first call starts the clock of
    /// the current send key; once it has been in use for
    /// [`KEY_UPDATE_INTERVAL_MS`], returns a key-update frame to send (the
    /// key after it is `REKEY` of this one, Noise spec §4.2) and restarts
    /// the clock. Drivers call it from their writer, with the time. The
    /// volume half ([`KEY_UPDATE_FRAMES`]) is automatic in
    /// [`SecureChannel::encrypt_into`]. Not while a rotation is under way
    /// (the rotation brings new keys anyway).
    pub fn poll_key_update(&mut self, now_ms: u64) -> Result<Option<Vec<u8>>, ChannelError> {
        if !matches!(self.state, ChannelState::Active) {
            return Ok(None);
        }
        let since = *self.keys_at_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < KEY_UPDATE_INTERVAL_MS {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.seal_record(KIND_KEY_UPDATE, &[], &mut out)?;
        self.keys_at_ms = Some(now_ms);
        Ok(Some(out))
    }

    /// Key updates since the last handshake, (send, receive).
    pub fn key_generations(&self) -> (u64, u64) {
        (
            self.send.as_ref().map_or(0, |d| d.generation),
            self.recv.as_ref().map_or(0, |d| d.generation),
        )
    }

    /// Sets the volume bound of a key (default [`KEY_UPDATE_FRAMES`]).
    pub fn with_key_update_frames(mut self, frames: u64) -> Self {
        self.key_update_frames = frames.max(1);
        self
    }

    /// Closes the channel: returns the `Close` frame to send, drops the keys.
    pub fn close(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.check_can_send()?;
        let mut out = Vec::new();
        self.seal_record(KIND_CLOSE, &[], &mut out)?;
        self.send = None;
        self.recv = None;
        self.next_recv = None;
        self.state = ChannelState::Closed;
        Ok(out)
    }

    /// Feeds bytes of the stream, split anywhere; returns what completed.
    /// Any bad frame fails the channel (keys dropped) with a typed error.
    pub fn decrypt(&mut self, bytes: &[u8], now_ms: u64) -> Result<Vec<Incoming>, ChannelError> {
        if !self.is_active() {
            return Err(ChannelError::NotActive(self.state.name()));
        }
        self.inbuf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut pos = 0;
        let result = loop {
            let rest = &self.inbuf[pos..];
            if rest.len() < 2 {
                break Ok(());
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if len < MIN_FRAME_BODY {
                break Err(ChannelError::FrameTooShort(len));
            }
            if rest.len() < 2 + len {
                break Ok(());
            }
            let mut frame = rest[2..2 + len].to_vec();
            pos += 2 + len;
            if let Err(e) = self.open_frame(&mut frame, now_ms, &mut events) {
                break Err(e);
            }
            if !self.is_active() {
                break Ok(());
            }
        };
        match result {
            Ok(()) => {
                if self.is_active() {
                    self.inbuf.drain(..pos);
                }
                Ok(events)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Declares the end of the stream: an error if it ended inside a frame
    /// or inside a message.
    pub fn finish(&mut self) -> Result<(), ChannelError> {
        if !self.inbuf.is_empty() || !self.message.is_empty() {
            let n = self.inbuf.len() + self.message.len();
            return Err(self.fail(ChannelError::Truncated(n)));
        }
        Ok(())
    }

    fn open_frame(
        &mut self,
        frame: &mut [u8],
        now_ms: u64,
        events: &mut Vec<Incoming>,
    ) -> Result<(), ChannelError> {
        let epoch = u64::from_be_bytes(
            frame[0..8]
                .try_into()
                .map_err(|_| ChannelError::FrameTooShort(0))?,
        );
        let counter = u64::from_be_bytes(
            frame[8..16]
                .try_into()
                .map_err(|_| ChannelError::FrameTooShort(0))?,
        );
        let recv_epoch = self
            .recv
            .as_ref()
            .map(|d| d.epoch)
            .ok_or(ChannelError::NotActive("without keys"))?;
        let mut switched = false;
        if epoch != recv_epoch {
            match &self.next_recv {
                Some(n) if n.epoch == epoch => {
                    // The peer moved to the new keys: the old receive key
                    // goes (and is wiped) now.
                    self.recv = self.next_recv.take();
                    switched = true;
                }
                _ if epoch < recv_epoch => {
                    return Err(ChannelError::StaleEpoch {
                        current: recv_epoch,
                        found: epoch,
                    });
                }
                _ => return Err(ChannelError::UnknownEpoch(epoch)),
            }
        }
        let d = self
            .recv
            .as_mut()
            .ok_or(ChannelError::NotActive("without keys"))?;
        if counter != d.counter {
            return Err(if counter < d.counter {
                ChannelError::Replayed {
                    expected: d.counter,
                    found: counter,
                }
            } else {
                ChannelError::Reordered {
                    expected: d.counter,
                    found: counter,
                }
            });
        }
        let n = d
            .key
            .open_in_place(counter, &mut frame[16..])
            .map_err(|_| ChannelError::Garbled)?;
        d.counter += 1;
        d.used += 1;
        if switched {
            self.epoch = epoch;
            self.state = ChannelState::Active;
            self.rotation_due = None;
            events.push(Incoming::Rotated {
                epoch,
                send: Vec::new(),
            });
        }
        let plain = &frame[16..16 + n];
        let (&kind, body) = plain.split_first().ok_or(ChannelError::Garbled)?;
        match kind {
            KIND_MORE | KIND_DATA => {
                if self.message.len() + body.len() > self.max_message_len {
                    return Err(ChannelError::MessageTooLarge {
                        max: self.max_message_len,
                    });
                }
                if kind == KIND_DATA && self.message.is_empty() {
                    events.push(Incoming::Message(body.to_vec()));
                } else {
                    self.message.extend_from_slice(body);
                    if kind == KIND_DATA {
                        events.push(Incoming::Message(std::mem::take(&mut self.message)));
                    }
                }
            }
            KIND_CLOSE => {
                self.send = None;
                self.recv = None;
                self.next_recv = None;
                self.state = ChannelState::Closed;
                events.push(Incoming::Closed);
            }
            KIND_REKEY_INIT => {
                if self.initiator || self.rekey_request.is_some() || self.next_recv.is_some() {
                    return Err(ChannelError::Unexpected("rekey request"));
                }
                let (e, msg) = split_epoch(body)?;
                if e <= self.epoch {
                    return Err(ChannelError::Unexpected("rekey to an epoch not newer"));
                }
                self.rekey_request = Some((e, msg.to_vec()));
                self.state = ChannelState::Rotating { to: e };
                events.push(Incoming::RotationRequested { epoch: e });
            }
            KIND_REKEY_RESPONSE => {
                let rekey = self
                    .rekey
                    .take()
                    .ok_or(ChannelError::Unexpected("rekey answer"))?;
                let (e, msg) = split_epoch(body)?;
                let ChannelState::Rotating { to } = self.state else {
                    return Err(ChannelError::Unexpected("rekey answer"));
                };
                if e != to {
                    return Err(ChannelError::Unexpected("rekey answer for another epoch"));
                }
                let mut rekey = rekey;
                rekey.process_response(msg, now_ms)?;
                let est = rekey.complete()?;
                self.binding = est.split.handshake_hash;
                // Both directions move now; the old keys are dropped here.
                self.send = Some(Direction::new(e, est.split.send));
                self.recv = Some(Direction::new(e, est.split.recv));
                self.epoch = e;
                self.state = ChannelState::Active;
                self.rotation_due = None;
                self.keys_at_ms = Some(now_ms);
                let mut send = Vec::new();
                self.seal_record(KIND_REKEY_DONE, &[], &mut send)?;
                events.push(Incoming::Rotated { epoch: e, send });
            }
            KIND_REKEY_DONE => {
                if !switched {
                    return Err(ChannelError::Unexpected("rekey done"));
                }
            }
            KIND_KEY_UPDATE => {
                if !body.is_empty() {
                    return Err(ChannelError::Garbled);
                }
                // The peer's next frame comes under REKEY of this key.
                self.recv
                    .as_mut()
                    .ok_or(ChannelError::NotActive("without keys"))?
                    .update()?;
            }
            other => return Err(ChannelError::UnknownRecord(other)),
        }
        Ok(())
    }

    /// Starts rotating to `material.epoch` (initiator of the channel only):
    /// returns the frame carrying IKpsk2 message 1 under the current keys.
    pub fn begin_rotation(
        &mut self,
        material: RekeyMaterial,
        now_ms: u64,
    ) -> Result<Vec<u8>, ChannelError> {
        if !self.initiator {
            return Err(ChannelError::Unexpected(
                "only the channel's initiator starts a rotation",
            ));
        }
        if !matches!(self.state, ChannelState::Active) {
            return Err(ChannelError::NotActive(self.state.name()));
        }
        if material.epoch <= self.epoch {
            return Err(ChannelError::Unexpected("rotation to an epoch not newer"));
        }
        let config = self.rekey_config(&material);
        let mut init = Initiator::new(config, self.remote_static, *material.entropy);
        let msg = init.create_init_message(material.epoch, now_ms)?;
        let mut body = material.epoch.to_be_bytes().to_vec();
        body.extend_from_slice(&msg);
        let mut out = Vec::new();
        self.seal_record(KIND_REKEY_INIT, &body, &mut out)?;
        self.rekey = Some(init);
        self.state = ChannelState::Rotating { to: material.epoch };
        Ok(out)
    }

    /// Answers a [`Incoming::RotationRequested`] with this side's material
    /// of the requested epoch: returns the frame to send. The sending key
    /// switches at once; the receiving key at the peer's first new frame.
    /// A failure (another PSK, another key) fails the channel and sends
    /// nothing.
    pub fn accept_rotation(
        &mut self,
        material: RekeyMaterial,
        now_ms: u64,
    ) -> Result<Vec<u8>, ChannelError> {
        let Some((epoch, msg)) = self.rekey_request.take() else {
            return Err(ChannelError::Unexpected("no rotation requested"));
        };
        let r = (|| {
            if material.epoch != epoch {
                return Err(HandshakeError::EpochMismatch {
                    expected: material.epoch,
                    found: epoch,
                });
            }
            let config = self.rekey_config(&material);
            let opened = open_init(
                &material.local_static,
                &config.prologue,
                &msg,
                *material.entropy,
            )?;
            respond(&config, &self.remote_static, opened, None, now_ms)
        })();
        let (msg2, est) = match r {
            Ok(x) => x,
            Err(e) => return Err(self.fail(e.into())),
        };
        let mut body = epoch.to_be_bytes().to_vec();
        body.extend_from_slice(&msg2);
        let mut out = Vec::new();
        self.seal_record(KIND_REKEY_RESPONSE, &body, &mut out)?;
        self.binding = est.split.handshake_hash;
        self.send = Some(Direction::new(epoch, est.split.send));
        self.next_recv = Some(Direction::new(epoch, est.split.recv));
        self.keys_at_ms = Some(now_ms);
        Ok(out)
    }

    fn rekey_config(&self, m: &RekeyMaterial) -> HandshakeConfig {
        HandshakeConfig {
            context_id: self.context_id,
            epoch: m.epoch,
            local: self.local,
            remote: self.remote,
            local_static: m.local_static.clone(),
            psk: m.psk.clone(),
            timeout_ms: m.timeout_ms,
            prologue: rekey_prologue(&self.context_id, m.epoch, &self.binding),
        }
    }
}

fn split_epoch(body: &[u8]) -> Result<(Epoch, &[u8]), ChannelError> {
    if body.len() < 8 {
        return Err(ChannelError::Unexpected("short rekey record"));
    }
    let (e, rest) = body.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(e);
    Ok((u64::from_be_bytes(b), rest))
}
