//! TCP direct: the handshake and a [`SecureChannel`] over a real
//! [`TcpStream`], on tokio.
//!
//! # Handshake
//!
//! The two IKpsk2 messages travel as handshake frames
//! `len: u16 BE | HandshakeInit or HandshakeComplete bytes`, with a hard
//! bound ([`TcpConfig::max_handshake_frame`], default
//! [`MAX_HANDSHAKE_FRAME`]: our message 1 is about 230 bytes, so a peer
//! cannot make us buffer 64 KiB before anything authenticates) and a read
//! deadline ([`TcpConfig::handshake_timeout`]).
//!
//! Both sides go through rdv-context's service and an effect interpreter,
//! so the guard chain, the charge and the receipts are the same as for any
//! other transport:
//!
//! * the initiator calls `prepare_establish_channel` **before** connecting
//!   (a denied guard opens no socket), runs the outcome (the charge, the
//!   receipt; the `SendHandshake` effect is what we write on the socket),
//!   and after message 2 appends `ChannelEstablished` through the
//!   interpreter's `execute` (the charge was paid with message 1);
//! * the responder reads message 1, learns the initiator from it
//!   ([`NoiseHandshaker::identify_initiator`]), calls
//!   `prepare_handle_handshake` and runs the outcome, which charges,
//!   appends `ChannelEstablished` and yields message 2.
//!
//! Any failure on the responder side (bad frame, other context, stranger,
//! wrong PSK, denied guard) drops the socket without writing a byte: the
//! peer learns nothing but "closed". The error is returned locally.
//!
//! # Channel
//!
//! After the handshake the stream carries [`SecureChannel`] frames. Two
//! tasks share the channel behind a mutex: a reader (socket → `decrypt` →
//! bounded queue of messages) and a writer (bounded queue of commands →
//! `encrypt` → socket). Separate tasks mean a side blocked writing a large
//! message still reads, so two peers sending to each other cannot deadlock
//! on full socket buffers. Frames the reader must send (the rotation answer,
//! `RekeyDone`) are sealed and appended to a shared output buffer **under
//! the same lock** as the writer's frames, so frames reach the socket in
//! counter order.
//!
//! Any receive error (garbled, truncated, oversized, replayed or reordered
//! frame, a stream ending without a `Close` record) fails the channel (its
//! keys are dropped), is delivered to [`TcpChannel::recv`] as a typed
//! [`TcpError`], and closes the socket.
//!
//! # Rotation
//!
//! When the context epoch advances, [`crate::ChannelManager::advance_epoch`]
//! marks the channel due (through its [`TcpChannelHandle`], or
//! [`TcpChannel::mark_rotation_due`] without a manager). Then:
//!
//! * the channel's **initiator** asks its [`RekeyProvider`] for the new
//!   epoch's material and starts the in-channel handshake; while the
//!   provider has none it retries every [`ROTATION_RETRY`], and after
//!   [`TcpConfig::handshake_timeout`] without material it closes the
//!   channel ([`TcpError::RotationUnavailable`]): a channel must not keep
//!   running on keys its context has retired. [`TcpChannel::rotate`] starts
//!   a rotation with material in hand instead;
//! * the **responder** answers the rotation request through its provider
//!   the same way (the context rekey may reach it a little after the
//!   request). A responder marked due that gets no request within
//!   [`TcpConfig::rotation_grace`] closes the channel
//!   ([`TcpError::RotationOverdue`]): an initiator that does not rotate
//!   (a removed member's, say) cannot keep the old keys in use.
//!
//! Messages keep flowing during a rotation; none is lost.

use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdv_context::{
    AuthorityId, ContextId, DecodeError, DenyReason, EffectCommand, EffectInterpreter, Epoch,
    GuardOutcome, GuardSnapshot, HandshakeComplete, HandshakeInit, RendezvousService, Route,
    ServiceError, TransportHint,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use crate::channel::{
    ChannelError, DEFAULT_MAX_MESSAGE_LEN, Incoming, RekeyMaterial, SecureChannel,
};
use crate::handshake::HandshakeError;
use crate::handshaker::NoiseHandshaker;

/// Default hard bound on one handshake frame (after its 2-byte length).
pub const MAX_HANDSHAKE_FRAME: usize = 2048;
/// Default depth of the send and receive queues (messages).
pub const DEFAULT_QUEUE_DEPTH: usize = 64;
/// How often a responder asks its [`RekeyProvider`] again.
pub const ROTATION_RETRY: Duration = Duration::from_millis(10);
/// Most bytes of queued messages the writer seals into one socket write.
const WRITE_BATCH: usize = 256 * 1024;

/// Milliseconds since the Unix epoch (the default clock).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Settings of the TCP driver.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Deadline for reading a handshake frame.
    pub handshake_timeout: Duration,
    /// Hard bound on a handshake frame.
    pub max_handshake_frame: usize,
    /// Depth of the send and receive queues, in messages.
    pub queue_depth: usize,
    /// Socket read buffer.
    pub read_buffer: usize,
    /// Bound on one application message (both directions).
    pub max_message_len: usize,
    /// How long a responder whose channel is due for rotation waits for
    /// the initiator's rotation request before closing the channel.
    pub rotation_grace: Duration,
    /// The clock, in ms since the Unix epoch (injected so tests can run in
    /// a fixed time frame).
    pub clock: fn() -> u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_handshake_frame: MAX_HANDSHAKE_FRAME,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            read_buffer: 128 * 1024,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            rotation_grace: Duration::from_secs(30),
            clock: system_now_ms,
        }
    }
}

/// Why the TCP driver failed. Local only: the peer sees a closed socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake frame above the bound.
    #[error("handshake frame of {len} bytes (bound {max})")]
    HandshakeFrameTooLarge {
        /// Announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An empty handshake frame.
    #[error("empty handshake frame")]
    EmptyHandshakeFrame,
    /// No handshake frame before the deadline.
    #[error("handshake timed out")]
    HandshakeTimedOut,
    /// The peer closed during the handshake (a responder refuses by
    /// closing, and says nothing about why).
    #[error("the peer closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// A handshake frame that does not decode.
    #[error("handshake frame: {0}")]
    Decode(#[from] DecodeError),
    /// A handshake for another context, epoch or route than this side's.
    #[error("handshake for another context, epoch or route")]
    WrongContext,
    /// No TCP address for the peer in its cached descriptor.
    #[error("no TCP direct address for {0:?}")]
    NoTcpAddress(AuthorityId),
    /// No keys for the context.
    #[error("no keys for the context")]
    UnknownContext,
    /// The guard chain denied the operation (nothing was sent).
    #[error("denied: {0}")]
    Denied(DenyReason),
    /// The service refused.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The Noise handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The effect interpreter failed.
    #[error("effect interpreter: {0}")]
    Interpret(String),
    /// The channel failed (garbled, truncated, oversized, replayed or
    /// reordered frame, failed rotation...). Its keys are gone.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The stream ended without a `Close` record: the tail may have been
    /// cut.
    #[error("the stream ended without a close record")]
    UnexpectedEof,
    /// No rekey material for the requested epoch before the deadline.
    #[error("no rekey material for epoch {0}")]
    RotationUnavailable(Epoch),
    /// This side asked to rotate to this epoch and the peer did not answer
    /// within the handshake timeout.
    #[error("the peer did not answer the rotation to epoch {0}")]
    RotationTimedOut(Epoch),
    /// The channel was due to rotate to this epoch and the initiator did
    /// not start the rotation within the grace period.
    #[error("the peer did not rotate to epoch {0} in time")]
    RotationOverdue(Epoch),
    /// The channel is closed (by either side).
    #[error("channel closed")]
    Closed,
}

/// What a side needs to run a handshake: borrowed for its duration.
pub struct Endpoint<'a, I> {
    /// The rendezvous service (guard, PSK, descriptors).
    pub service: &'a mut RendezvousService,
    /// The Noise handshaker.
    pub handshaker: &'a mut NoiseHandshaker,
    /// The effect interpreter (journal, budget, receipts).
    pub interpreter: &'a mut I,
    /// This side's guard snapshot; its context is the one served.
    pub snapshot: GuardSnapshot,
}

impl<I> std::fmt::Debug for Endpoint<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

/// Gives the responder side the material of a rotation to `epoch`, or
/// `None` while this side does not have that epoch's keys yet.
pub type RekeyProvider = Box<dyn FnMut(Epoch) -> Option<RekeyMaterial> + Send>;

/// A provider that never has material (a side that never answers
/// rotations; the channel closes when one is requested).
pub fn no_rekey() -> RekeyProvider {
    Box::new(|_| None)
}

/// The interpreter seen by the driver: sends are captured (we write them on
/// the socket), everything else goes to the caller's interpreter.
struct Capture<'a, I> {
    inner: &'a mut I,
    init: Option<HandshakeInit>,
    complete: Option<HandshakeComplete>,
}

impl<I: EffectInterpreter> Capture<'_, I> {
    /// Runs `outcome` as `ReferenceInterpreter::run` does: refused if not
    /// well ordered, nothing if denied, else every effect in order.
    fn run(&mut self, outcome: &GuardOutcome, now_ms: u64) -> Result<(), TcpError>
    where
        I::Error: Display,
    {
        if let rdv_context::Decision::Denied(r) = &outcome.decision {
            return Err(TcpError::Denied(r.clone()));
        }
        if !outcome.is_well_ordered() {
            return Err(TcpError::Interpret("effects send before charging".into()));
        }
        for c in &outcome.effects {
            match c {
                EffectCommand::SendHandshake { message, .. } => {
                    self.init = Some(message.clone());
                }
                EffectCommand::SendHandshakeResponse { message, .. } => {
                    self.complete = Some(message.clone());
                }
                other => self
                    .inner
                    .execute(other, now_ms)
                    .map_err(|e| TcpError::Interpret(e.to_string()))?,
            }
        }
        Ok(())
    }
}

/// Writes one handshake frame (`u16 len | bytes`).
pub async fn write_handshake_frame<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
) -> Result<(), TcpError> {
    let len = u16::try_from(bytes.len()).map_err(|_| TcpError::HandshakeFrameTooLarge {
        len: bytes.len(),
        max: usize::from(u16::MAX),
    })?;
    let mut frame = Vec::with_capacity(2 + bytes.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await?;
    Ok(())
}

/// Reads one handshake frame within the deadline and the bound.
pub async fn read_handshake_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    config: &TcpConfig,
) -> Result<Vec<u8>, TcpError> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return Err(TcpError::EmptyHandshakeFrame);
        }
        if len > config.max_handshake_frame {
            return Err(TcpError::HandshakeFrameTooLarge {
                len,
                max: config.max_handshake_frame,
            });
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(body)
    };
    match tokio::time::timeout(config.handshake_timeout, read).await {
        Err(_) => Err(TcpError::HandshakeTimedOut),
        Ok(Err(TcpError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(TcpError::ClosedDuringHandshake)
        }
        Ok(r) => r,
    }
}

/// The peer's TCP direct address, from its cached, valid descriptor.
pub fn tcp_address(
    service: &RendezvousService,
    context: ContextId,
    peer: AuthorityId,
    now_ms: u64,
) -> Result<String, TcpError> {
    service
        .get_cached_descriptor(context, peer)
        .filter(|d| d.is_valid_at(now_ms))
        .and_then(|d| {
            d.transport_hints.iter().find_map(|h| match h {
                TransportHint::TcpDirect { addr } => Some(addr.clone()),
                _ => None,
            })
        })
        .ok_or(TcpError::NoTcpAddress(peer))
}

/// Mixes 32 bytes from the operating system into the handshaker before a
/// handshake, so a forked process or a cloned VM that copied its generator
/// state still draws ephemerals of its own (issue 13, item 9).
fn reseed(handshaker: &mut NoiseHandshaker) -> Result<(), TcpError> {
    let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut fresh[..]).map_err(|e| TcpError::Io(std::io::Error::other(e)))?;
    handshaker.reseed(&fresh);
    Ok(())
}

/// Guards and builds message 1 (charge and receipt run; nothing sent yet).
fn prepare_init<I>(
    ep: &mut Endpoint<'_, I>,
    peer: AuthorityId,
    now_ms: u64,
    route: Route,
) -> Result<HandshakeInit, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let ctx = ep.snapshot.context_id;
    let psk = ep
        .service
        .handshake_psk(&ctx, &peer)
        .ok_or(TcpError::UnknownContext)?;
    reseed(ep.handshaker)?;
    let outcome = ep.service.prepare_establish_channel_on(
        &ep.snapshot,
        ctx,
        peer,
        &psk,
        now_ms,
        Some(route),
        &mut ep.handshaker.at(now_ms),
    )?;
    let mut cap = Capture {
        inner: &mut *ep.interpreter,
        init: None,
        complete: None,
    };
    cap.run(&outcome, now_ms)?;
    let init = cap
        .init
        .ok_or(TcpError::Interpret("no handshake message to send".into()))?;
    if init.route != route {
        return Err(TcpError::NoTcpAddress(peer));
    }
    Ok(init)
}

/// Connects to `peer` (its TCP address from its cached descriptor) and runs
/// the handshake as initiator. The guard is evaluated before the socket is
/// opened.
pub async fn connect<I>(
    mut ep: Endpoint<'_, I>,
    peer: AuthorityId,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let now = (config.clock)();
    let addr = tcp_address(ep.service, ep.snapshot.context_id, peer, now)?;
    let init = prepare_init(&mut ep, peer, now, Route::Direct)?;
    let stream = TcpStream::connect(addr.as_str()).await?;
    finish_initiator(stream, ep, peer, init, config, rekey).await
}

/// Runs the handshake as initiator on an open stream (the caller chose the
/// address).
pub async fn connect_stream<I>(
    stream: TcpStream,
    mut ep: Endpoint<'_, I>,
    peer: AuthorityId,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let init = prepare_init(&mut ep, peer, (config.clock)(), Route::Direct)?;
    finish_initiator(stream, ep, peer, init, config, rekey).await
}

/// The initiator in three steps, for a caller whose endpoint sits behind
/// a lock it must not hold while the network answers (two members dialling
/// each other at once would otherwise each wait for the other's lock until
/// the handshake timeout). Step 1, under the lock: guard, charge and
/// message 1 ([`begin_initiator`]). Step 2, no lock: write it, read message
/// 2 ([`exchange`]). Step 3, under the lock: finish the handshake, record
/// the channel, start the channel's tasks ([`complete_initiator`]).
pub fn begin_initiator<I>(
    ep: &mut Endpoint<'_, I>,
    peer: AuthorityId,
    config: &TcpConfig,
) -> Result<HandshakeInit, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    prepare_init(ep, peer, (config.clock)(), Route::Direct)
}

/// [`begin_initiator`] for a relay circuit: message 1 carries
/// `Route::Relay` (bound into the Noise prologue) and the attempt is
/// charged `rendezvous:relay`; needs a relay hint in the peer's
/// descriptor.
pub fn begin_relayed_initiator<I>(
    ep: &mut Endpoint<'_, I>,
    peer: AuthorityId,
    config: &TcpConfig,
) -> Result<HandshakeInit, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    prepare_init(ep, peer, (config.clock)(), Route::Relay)
}

/// Step 2 of [`begin_initiator`]: sends message 1 on `stream` and reads
/// message 2 within the handshake deadline.
pub async fn exchange(
    stream: &mut TcpStream,
    init: &HandshakeInit,
    config: &TcpConfig,
) -> Result<HandshakeComplete, TcpError> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.split();
    exchange_on(&mut rd, &mut wr, init, config).await
}

/// [`exchange`] on any byte stream's two halves (a QUIC stream, a relay
/// circuit).
pub async fn exchange_on<R, W>(
    rd: &mut R,
    wr: &mut W,
    init: &HandshakeInit,
    config: &TcpConfig,
) -> Result<HandshakeComplete, TcpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    write_handshake_frame(wr, &init.to_bytes()).await?;
    wr.flush().await?;
    let bytes = read_handshake_frame(rd, config).await?;
    let complete = HandshakeComplete::from_bytes(&bytes)?;
    if complete.context_id != init.context_id || complete.epoch != init.epoch {
        return Err(TcpError::WrongContext);
    }
    Ok(complete)
}

/// Step 3 of [`begin_initiator`]: checks message 2, records the channel
/// (`ChannelEstablished` through the interpreter) and starts it on
/// `stream`.
pub fn complete_initiator<I>(
    stream: TcpStream,
    ep: Endpoint<'_, I>,
    peer: AuthorityId,
    complete: &HandshakeComplete,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let (rd, wr) = stream.into_split();
    complete_initiator_on(
        Box::new(rd),
        Box::new(wr),
        ep,
        peer,
        complete,
        config,
        rekey,
    )
}

/// [`complete_initiator`] on any byte stream's two halves.
pub fn complete_initiator_on<I>(
    rd: ByteReader,
    wr: ByteWriter,
    ep: Endpoint<'_, I>,
    peer: AuthorityId,
    complete: &HandshakeComplete,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let now = (config.clock)();
    let channel = ep.handshaker.finish_initiator(peer, complete, now)?;
    let fact = ep
        .service
        .channel_established(
            channel.context_id(),
            channel.local(),
            peer,
            channel.id(),
            channel.epoch(),
        )
        .ok_or_else(|| TcpError::Interpret("no keys for the channel's context".into()))?;
    ep.interpreter
        .execute(
            &EffectCommand::JournalAppend {
                context_id: channel.context_id(),
                fact,
            },
            now,
        )
        .map_err(|e| TcpError::Interpret(e.to_string()))?;
    Ok(spawn_on(rd, wr, channel, config, rekey))
}

async fn finish_initiator<I>(
    mut stream: TcpStream,
    ep: Endpoint<'_, I>,
    peer: AuthorityId,
    init: HandshakeInit,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let complete = exchange(&mut stream, &init, config).await?;
    complete_initiator(stream, ep, peer, &complete, config, rekey)
}

/// Runs the handshake as responder on an accepted stream, for the context
/// of `ep.snapshot`. On any failure the stream is dropped without a byte
/// written. [`read_init`] then [`accept_init`]; a server that shares its
/// endpoint between connections calls those two itself, so the wait for
/// message 1 holds no lock (issue 13, item 4).
pub async fn accept<I>(
    mut stream: TcpStream,
    ep: Endpoint<'_, I>,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let init = read_init(&mut stream, config).await?;
    accept_init(stream, init, ep, config, rekey).await
}

/// Reads and decodes message 1 from an accepted stream, within the
/// handshake deadline and the frame bound. Needs nothing of the endpoint:
/// a stranger who opens a socket and sends nothing holds no lock and
/// blocks no other accept while this waits.
pub async fn read_init<R: AsyncRead + Unpin>(
    stream: &mut R,
    config: &TcpConfig,
) -> Result<HandshakeInit, TcpError> {
    let bytes = read_handshake_frame(stream, config).await?;
    Ok(HandshakeInit::from_bytes(&bytes)?)
}

/// Answers message 1 read by [`read_init`]: identifies the initiator (the
/// mac1 pre-check first), runs `prepare_handle_handshake` through the
/// caller's interpreter and writes message 2. Quick (one handshake's
/// cryptography, no wait on the peer), so it may run under a shared lock.
pub async fn accept_init<I>(
    stream: TcpStream,
    init: HandshakeInit,
    ep: Endpoint<'_, I>,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    accept_init_on(
        Box::new(rd),
        Box::new(wr),
        init,
        ep,
        config,
        rekey,
        Route::Direct,
    )
    .await
}

/// [`accept_init`] on any byte stream's two halves, for message 1 on
/// `route` (a relay circuit carries `Route::Relay`; anything else is
/// refused without a byte written).
pub async fn accept_init_on<I>(
    rd: ByteReader,
    mut wr: ByteWriter,
    init: HandshakeInit,
    ep: Endpoint<'_, I>,
    config: &TcpConfig,
    rekey: RekeyProvider,
    route: Route,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let ctx = ep.snapshot.context_id;
    if init.context_id != ctx || init.route != route {
        return Err(TcpError::WrongContext);
    }
    let now = (config.clock)();
    reseed(ep.handshaker)?;
    let who = ep.handshaker.identify_initiator(&init)?;
    // The installed epoch's PSK, or the one before's for a member that
    // missed an advance (the service decides which epochs it accepts).
    let psk = ep
        .service
        .handshake_psk_at(&ctx, &who, init.epoch)
        .ok_or(TcpError::UnknownContext)?;
    let outcome = ep.service.prepare_handle_handshake(
        &ep.snapshot,
        ctx,
        who,
        init,
        &psk,
        &mut ep.handshaker.at(now),
    );
    let mut cap = Capture {
        inner: &mut *ep.interpreter,
        init: None,
        complete: None,
    };
    cap.run(&outcome, now)?;
    let complete = cap
        .complete
        .ok_or(TcpError::Interpret("no handshake answer to send".into()))?;
    let channel = ep
        .handshaker
        .take_responded(ctx, who)
        .ok_or(TcpError::Interpret("no responded channel".into()))?;
    write_handshake_frame(&mut wr, &complete.to_bytes()).await?;
    wr.flush().await?;
    Ok(spawn_on(rd, wr, channel, config, rekey))
}

#[derive(Debug)]
enum Command {
    Send(Vec<u8>),
    Rotate(RekeyMaterial),
    Close,
}

struct Shared {
    channel: SecureChannel,
    /// Sealed frames waiting for the writer, in counter order.
    out: Vec<u8>,
    /// The reader ended (error or close): the writer stops.
    done: bool,
    /// When this side (the initiator) sent its rotation request.
    rotation_started: Option<tokio::time::Instant>,
}

type Locked = Arc<Mutex<Shared>>;

fn lock(s: &Locked) -> MutexGuard<'_, Shared> {
    // A poisoned lock means a task panicked while holding it; the channel
    // state is still consistent (every mutation is a whole call), so go on.
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An established channel over TCP: `send`/`recv` of whole messages through
/// bounded queues, served by a reader and a writer task.
pub struct TcpChannel {
    commands: mpsc::Sender<Command>,
    incoming: mpsc::Receiver<Result<Vec<u8>, TcpError>>,
    epoch: watch::Receiver<Epoch>,
    due: Arc<watch::Sender<Epoch>>,
    id: [u8; 32],
    context_id: ContextId,
    local: AuthorityId,
    remote: AuthorityId,
    initiator: bool,
    max_message_len: usize,
    shared: Locked,
}

impl std::fmt::Debug for TcpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpChannel")
            .field("context_id", &self.context_id)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("epoch", &*self.epoch.borrow())
            .finish_non_exhaustive()
    }
}

impl TcpChannel {
    /// Key updates since the last handshake, (send, receive): every
    /// [`crate::channel::KEY_UPDATE_INTERVAL_MS`] of use and every
    /// [`crate::channel::KEY_UPDATE_FRAMES`] frames each key is replaced.
    pub fn key_generations(&self) -> (u64, u64) {
        lock(&self.shared).channel.key_generations()
    }
    /// The channel id (first handshake hash).
    pub fn id(&self) -> [u8; 32] {
        self.id
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
    /// Whether this side initiated (and so drives rotations).
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }
    /// The epoch of the keys in use for receiving.
    pub fn epoch(&self) -> Epoch {
        *self.epoch.borrow()
    }
    /// Waits until the channel runs on `epoch`'s keys (or a newer one).
    pub async fn wait_epoch(&mut self, epoch: Epoch) -> Result<Epoch, TcpError> {
        self.epoch
            .wait_for(|e| *e >= epoch)
            .await
            .map(|e| *e)
            .map_err(|_| TcpError::Closed)
    }
    /// Queues one message (any size up to the bound); waits while the send
    /// queue is full.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), TcpError> {
        self.sender().send(message).await
    }
    /// A clonable handle that only sends (to send and receive concurrently).
    pub fn sender(&self) -> TcpSender {
        TcpSender {
            commands: self.commands.clone(),
            max_message_len: self.max_message_len,
        }
    }
    /// The next message, in order. A typed error when the channel failed;
    /// [`TcpError::Closed`] after the peer (or this side) closed it.
    pub async fn recv(&mut self) -> Result<Vec<u8>, TcpError> {
        self.incoming.recv().await.unwrap_or(Err(TcpError::Closed))
    }
    /// Starts a rotation to `material.epoch` (the channel's initiator only;
    /// the responder answers through its [`RekeyProvider`]). Messages sent
    /// before and after are delivered in order across it.
    pub async fn rotate(&self, material: RekeyMaterial) -> Result<(), TcpError> {
        self.commands
            .send(Command::Rotate(material))
            .await
            .map_err(|_| TcpError::Closed)
    }
    /// The context moved to `epoch`: rotate to it (see the module docs).
    pub fn mark_rotation_due(&self, epoch: Epoch) {
        mark_due(&self.due, epoch);
    }
    /// A handle for a [`crate::ChannelManager`]: ids, epoch, liveness, and
    /// rotation, without the send and receive queues.
    pub fn handle(&self) -> TcpChannelHandle {
        TcpChannelHandle {
            commands: self.commands.downgrade(),
            epoch: self.epoch.clone(),
            due: self.due.clone(),
            id: self.id,
            context_id: self.context_id,
            remote: self.remote,
            initiator: self.initiator,
        }
    }
    /// Sends a `Close` record after the queued messages and closes.
    pub async fn close(self) -> Result<(), TcpError> {
        self.commands
            .send(Command::Close)
            .await
            .map_err(|_| TcpError::Closed)
    }
}

fn mark_due(due: &watch::Sender<Epoch>, epoch: Epoch) {
    due.send_if_modified(|d| {
        let newer = epoch > *d;
        if newer {
            *d = epoch;
        }
        newer
    });
}

/// A [`TcpChannel`] as a [`crate::ChannelManager`] holds it (see
/// [`TcpChannel::handle`]). Finished once the channel's tasks ended.
#[derive(Clone, Debug)]
pub struct TcpChannelHandle {
    /// Weak: a handle in a manager must not keep a channel its application
    /// dropped from closing (the writer closes when the last sender goes).
    commands: mpsc::WeakSender<Command>,
    epoch: watch::Receiver<Epoch>,
    due: Arc<watch::Sender<Epoch>>,
    id: [u8; 32],
    context_id: ContextId,
    remote: AuthorityId,
    initiator: bool,
}

impl TcpChannelHandle {
    /// The channel id (first handshake hash).
    pub fn id(&self) -> [u8; 32] {
        self.id
    }
    /// Whether this side initiated (and so drives rotations).
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }
}

impl crate::ManagedChannel for TcpChannelHandle {
    fn context_id(&self) -> ContextId {
        self.context_id
    }
    fn remote(&self) -> AuthorityId {
        self.remote
    }
    fn epoch(&self) -> Epoch {
        *self.epoch.borrow()
    }
    fn is_finished(&self) -> bool {
        // Finished when the application let go of the channel (every
        // sender gone), or when the writer task, which owns the receiving
        // end, ended (the channel closed or failed).
        self.commands.upgrade().is_none_or(|c| c.is_closed())
    }
    fn mark_rotation_due(&mut self, epoch: Epoch) {
        mark_due(&self.due, epoch);
    }
}

/// The sending half of a [`TcpChannel`] (see [`TcpChannel::sender`]).
#[derive(Clone, Debug)]
pub struct TcpSender {
    commands: mpsc::Sender<Command>,
    max_message_len: usize,
}

impl TcpSender {
    /// Queues one message; waits while the send queue is full.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), TcpError> {
        if message.len() > self.max_message_len {
            // Refused here so the channel stays up (the writer would fail).
            return Err(ChannelError::MessageTooLarge {
                max: self.max_message_len,
            }
            .into());
        }
        self.commands
            .send(Command::Send(message))
            .await
            .map_err(|_| TcpError::Closed)
    }
}

/// The read half of a channel's byte stream (a TCP socket's, a QUIC
/// stream's, a relay circuit's).
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a channel's byte stream.
pub type ByteWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Runs an established [`SecureChannel`] over any reliable, ordered byte
/// stream: the same framing, reader and writer tasks, rotation and key
/// updates as over TCP. Other transports (QUIC streams, relay circuits)
/// run their handshake frames on the stream, then hand it over here.
pub fn spawn_on(
    rd: ByteReader,
    wr: ByteWriter,
    channel: SecureChannel,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> TcpChannel {
    let channel = channel.with_max_message_len(config.max_message_len);
    let depth = config.queue_depth.max(1);
    let (cmd_tx, cmd_rx) = mpsc::channel(depth);
    let (in_tx, in_rx) = mpsc::channel(depth);
    let (epoch_tx, epoch_rx) = watch::channel(channel.epoch());
    let (due_tx, due_rx) = watch::channel(channel.epoch());
    let initiator = channel.is_initiator();
    let (id, context_id, local, remote) = (
        channel.id(),
        channel.context_id(),
        channel.local(),
        channel.remote(),
    );
    let shared = Arc::new(Mutex::new(Shared {
        channel,
        out: Vec::new(),
        done: false,
        rotation_started: None,
    }));
    let handle = TcpChannel {
        commands: cmd_tx,
        incoming: in_rx,
        epoch: epoch_rx,
        due: Arc::new(due_tx),
        id,
        context_id,
        local,
        remote,
        initiator,
        max_message_len: config.max_message_len,
        shared: shared.clone(),
    };
    let notify = Arc::new(Notify::new());
    let kick = Arc::new(Notify::new());
    let reader = Reader {
        rd,
        shared: shared.clone(),
        notify: notify.clone(),
        kick: kick.clone(),
        incoming: in_tx.clone(),
        epoch: epoch_tx,
        due: due_rx,
        rekey,
        config: config.clone(),
    };
    tokio::spawn(reader.run());
    let signals = WriterSignals {
        notify,
        kick,
        due: handle.due.clone(),
    };
    tokio::spawn(writer(wr, shared, signals, cmd_rx, in_tx, config.clock));
    handle
}

struct Reader {
    rd: ByteReader,
    shared: Locked,
    notify: Arc<Notify>,
    /// The writer started a rotation: look at its deadline.
    kick: Arc<Notify>,
    incoming: mpsc::Sender<Result<Vec<u8>, TcpError>>,
    epoch: watch::Sender<Epoch>,
    /// The epoch the channel is due to rotate to (from the manager).
    due: watch::Receiver<Epoch>,
    rekey: RekeyProvider,
    config: TcpConfig,
}

/// Where a due rotation stands on this side.
enum Due {
    /// Nothing to do (up to date, or this side waits for the peer's
    /// request and its grace runs).
    Settled,
    /// The initiator waits for its provider's material.
    NoMaterial(Epoch),
    /// A rotation is in flight; look again when it completes.
    Busy,
}

impl Reader {
    async fn run(mut self) {
        if let Err(e) = self.serve().await {
            self.stop();
            // The app may be gone; then nobody needs the error.
            let _ = self.incoming.send(Err(e)).await;
        }
    }

    fn stop(&self) {
        lock(&self.shared).done = true;
        self.notify.notify_one();
    }

    async fn serve(&mut self) -> Result<(), TcpError> {
        use tokio::time::Instant;
        let mut buf = vec![0u8; self.config.read_buffer.max(1024)];
        // (epoch, deadline) of a rotation request without material yet.
        let mut pending: Option<(Epoch, Instant)> = None;
        // (epoch, deadline) of a due rotation the initiator has no material
        // for yet.
        let mut starting: Option<(Epoch, Instant)> = None;
        // (epoch, deadline) of a due rotation the responder waits for.
        let mut overdue: Option<(Epoch, Instant)> = None;
        let mut due_open = true;
        // A fixed schedule, so that steady traffic cannot starve the retries.
        let mut next_retry = Instant::now();
        loop {
            let retry = pending.is_some() || starting.is_some();
            let grace = overdue.map(|(_, d)| d);
            // A rotation this side started must be answered in time: a
            // peer that never answers must not keep the old keys in use.
            let answer_by = {
                let g = lock(&self.shared);
                match (g.channel.state(), g.rotation_started) {
                    (crate::ChannelState::Rotating { to }, Some(t)) if g.channel.is_initiator() => {
                        Some((*to, t + self.config.handshake_timeout))
                    }
                    _ => None,
                }
            };
            let n = tokio::select! {
                r = self.rd.read(&mut buf) => r?,
                () = self.kick.notified() => continue,
                _ = tokio::time::sleep_until(answer_by.map_or_else(Instant::now, |(_, d)| d)), if answer_by.is_some() => {
                    let Some((epoch, _)) = answer_by else { continue };
                    let g = lock(&self.shared);
                    if matches!(g.channel.state(), crate::ChannelState::Rotating { to } if *to == epoch) {
                        drop(g);
                        return Err(TcpError::RotationTimedOut(epoch));
                    }
                    continue;
                }
                changed = self.due.changed(), if due_open => {
                    // All handles gone: no more marks can come.
                    due_open = changed.is_ok();
                    self.on_due(&mut starting, &mut overdue)?;
                    continue;
                }
                _ = tokio::time::sleep_until(next_retry), if retry => {
                    next_retry = Instant::now() + ROTATION_RETRY;
                    if let Some((epoch, deadline)) = pending {
                        if self.try_accept_rotation(epoch)? {
                            pending = None;
                        } else if Instant::now() >= deadline {
                            return Err(TcpError::RotationUnavailable(epoch));
                        }
                    }
                    if starting.is_some() {
                        self.on_due(&mut starting, &mut overdue)?;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                    let Some((epoch, _)) = overdue.take() else { continue };
                    if lock(&self.shared).channel.epoch() < epoch {
                        return Err(TcpError::RotationOverdue(epoch));
                    }
                    continue;
                }
            };
            if n == 0 {
                let mut g = lock(&self.shared);
                if g.channel.is_finished() {
                    drop(g);
                    self.stop();
                    return Ok(());
                }
                g.channel.finish()?;
                return Err(TcpError::UnexpectedEof);
            }
            let now = (self.config.clock)();
            let events = {
                let mut g = lock(&self.shared);
                let events = g.channel.decrypt(&buf[..n], now)?;
                let mut wake = false;
                for e in &events {
                    if let Incoming::Rotated { send, .. } = e {
                        g.out.extend_from_slice(send);
                        wake |= !send.is_empty();
                    }
                }
                if wake {
                    self.notify.notify_one();
                }
                events
            };
            for e in events {
                match e {
                    Incoming::Message(m) => {
                        if self.incoming.send(Ok(m)).await.is_err() {
                            // The app dropped its handle: stop reading.
                            self.stop();
                            return Ok(());
                        }
                    }
                    Incoming::RotationRequested { epoch } => {
                        if overdue.is_some_and(|(due, _)| epoch >= due) {
                            overdue = None;
                        }
                        if !self.try_accept_rotation(epoch)? {
                            let deadline = Instant::now() + self.config.handshake_timeout;
                            pending = Some((epoch, deadline));
                        }
                    }
                    Incoming::Rotated { epoch, .. } => {
                        self.epoch.send_replace(epoch);
                        // The manager may have moved on meanwhile.
                        self.on_due(&mut starting, &mut overdue)?;
                    }
                    Incoming::Closed => {
                        self.stop();
                        return Err(TcpError::Closed);
                    }
                }
            }
        }
    }

    /// Acts on the due epoch: the initiator starts the rotation when it has
    /// the material (or keeps `starting` until it does, within the
    /// handshake timeout); the responder starts its grace period.
    fn on_due(
        &mut self,
        starting: &mut Option<(Epoch, tokio::time::Instant)>,
        overdue: &mut Option<(Epoch, tokio::time::Instant)>,
    ) -> Result<(), TcpError> {
        let now = tokio::time::Instant::now();
        match self.start_due_rotation()? {
            Due::Settled => *starting = None,
            // Looked at again when the rotation in flight completes.
            Due::Busy => *starting = None,
            // The deadline runs from the first epoch found without
            // material: a context moving on faster than the timeout must not
            // put it off forever.
            Due::NoMaterial(epoch) => match *starting {
                Some((_, deadline)) => {
                    if now >= deadline {
                        return Err(TcpError::RotationUnavailable(epoch));
                    }
                    *starting = Some((epoch, deadline));
                }
                None => *starting = Some((epoch, now + self.config.handshake_timeout)),
            },
        }
        let due = *self.due.borrow();
        let g = lock(&self.shared);
        if !g.channel.is_initiator() && due > g.channel.epoch() {
            // Likewise the grace runs from the first mark the peer has not
            // followed.
            *overdue = Some(match *overdue {
                Some((_, deadline)) => (due, deadline),
                None => (due, now + self.config.rotation_grace),
            });
        } else {
            *overdue = None;
        }
        Ok(())
    }

    /// Starts the rotation to the due epoch if this side is the initiator,
    /// the channel is behind and idle, and the provider has the material.
    fn start_due_rotation(&mut self) -> Result<Due, TcpError> {
        let due = *self.due.borrow();
        {
            let g = lock(&self.shared);
            if !g.channel.is_initiator() || due <= g.channel.epoch() {
                return Ok(Due::Settled);
            }
            if !matches!(g.channel.state(), crate::ChannelState::Active) {
                return Ok(Due::Busy);
            }
        }
        let Some(material) = (self.rekey)(due) else {
            return Ok(Due::NoMaterial(due));
        };
        let now = (self.config.clock)();
        let mut g = lock(&self.shared);
        // The writer may have started a rotation (`TcpChannel::rotate`)
        // while the provider ran.
        if due <= g.channel.epoch() {
            return Ok(Due::Settled);
        }
        if !matches!(g.channel.state(), crate::ChannelState::Active) {
            return Ok(Due::Busy);
        }
        let frame = g.channel.begin_rotation(material, now)?;
        g.out.extend_from_slice(&frame);
        g.rotation_started = Some(tokio::time::Instant::now());
        drop(g);
        self.notify.notify_one();
        Ok(Due::Settled)
    }

    /// Answers a rotation request if the provider has the material now.
    fn try_accept_rotation(&mut self, epoch: Epoch) -> Result<bool, TcpError> {
        let Some(material) = (self.rekey)(epoch) else {
            return Ok(false);
        };
        let now = (self.config.clock)();
        let mut g = lock(&self.shared);
        let frame = g.channel.accept_rotation(material, now)?;
        g.out.extend_from_slice(&frame);
        drop(g);
        self.notify.notify_one();
        Ok(true)
    }
}

/// How the writer wakes and tells the reader.
struct WriterSignals {
    /// Wakes the writer: the reader queued frames.
    notify: Arc<Notify>,
    /// Wakes the reader: the writer started a rotation.
    kick: Arc<Notify>,
    /// The due epoch, for a rotation asked while another is in flight.
    due: Arc<watch::Sender<Epoch>>,
}

async fn writer(
    mut wr: ByteWriter,
    shared: Locked,
    signals: WriterSignals,
    mut commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Result<Vec<u8>, TcpError>>,
    clock: fn() -> u64,
) {
    // Key updates by time (issue 13, item 9): the writer looks at the send
    // key's age before every batch and, on an idle channel, every quarter
    // of the interval.
    let mut key_check = tokio::time::interval(Duration::from_millis(
        crate::channel::KEY_UPDATE_INTERVAL_MS / 4,
    ));
    key_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let r = async {
        loop {
            let first = tokio::select! {
                c = commands.recv() => Some(c.unwrap_or(Command::Close)),
                _ = signals.notify.notified() => None,
                _ = key_check.tick() => None,
            };
            let (bytes, finish) = {
                let mut g = lock(&shared);
                if g.done {
                    return Ok(());
                }
                let mut out = std::mem::take(&mut g.out);
                if let Some(update) = g.channel.poll_key_update(clock())? {
                    out.extend(update);
                }
                let mut finish = false;
                let mut next = first;
                while let Some(c) = next.take() {
                    match c {
                        Command::Send(m) => g.channel.encrypt_into(&m, &mut out)?,
                        Command::Rotate(material) => {
                            let target = match g.channel.state() {
                                crate::ChannelState::Rotating { to } => *to,
                                _ => g.channel.epoch(),
                            };
                            // Already there or on the way (the manager may
                            // have started it): nothing to do. Behind a
                            // rotation in flight to an older epoch: mark it
                            // due, and the reader rotates on when that one
                            // completes (with its provider's material).
                            if material.epoch > target {
                                if matches!(g.channel.state(), crate::ChannelState::Active) {
                                    let now = clock();
                                    out.extend(g.channel.begin_rotation(material, now)?);
                                    g.rotation_started = Some(tokio::time::Instant::now());
                                    signals.kick.notify_one();
                                } else {
                                    mark_due(&signals.due, material.epoch);
                                }
                            }
                        }
                        Command::Close => {
                            out.extend(g.channel.close()?);
                            finish = true;
                            break;
                        }
                    }
                    // Coalesce queued messages into one write.
                    if out.len() < WRITE_BATCH {
                        next = commands.try_recv().ok();
                    }
                }
                (out, finish)
            };
            if !bytes.is_empty() {
                wr.write_all(&bytes).await?;
            }
            if finish {
                return Ok::<(), TcpError>(());
            }
        }
    }
    .await;
    let _ = wr.shutdown().await;
    if let Err(e) = r {
        lock(&shared).done = true;
        let _ = incoming.try_send(Err(e));
    }
}
