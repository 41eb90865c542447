//! A rendezvous point on libp2p streams: accepts `/rendezvous/1.0.0`
//! streams, serves any number of requests per stream, and drives expiry.
//!
//! Each stream runs in its own task, so signature verification (the only
//! costly step) runs in parallel on the runtime's workers; the point itself
//! lives on a thread of its own and takes work in batches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use rdv_point::{Formats, Point, Store, Verification, precheck};
use rdv_wire::{
    Discover, DiscoverResponse, FrameDecoder, Message, MessageKind, RecordFormat, Register,
    RegisterResponse, ResponseStatus, Timestamp, verify_record,
};
use std::sync::mpsc as std_mpsc;

use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use hashlink::LruCache;

use crate::inbound::InboundStream;
use crate::io::{StreamError, read_frame, read_frame_after_idle, write_message};
use crate::ip_limits::AddrGroup;
use crate::metrics::Metrics;
use crate::quota::Quota;

/// Limits of the stream layer; the registry's own limits are in
/// [`rdv_point::Config`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Longest wait for the rest of a message once it has started, for a
    /// stream's first message, and for a peer to read an answer: a peer
    /// that stalls is cut off. Default 10 s.
    pub stream_timeout: Duration,
    /// Longest a stream may rest between two requests before it is closed
    /// (go-libp2p clients such as waku reuse one stream for DISCOVERs
    /// minutes apart). A resting stream keeps its place in the stream
    /// bounds, per peer and per address. Default 5 min.
    pub stream_idle_timeout: Duration,
    /// Streams served at once; more are closed at once. Default 1024.
    pub max_streams: usize,
    /// Streams one peer may have served at once. Default 16.
    pub max_streams_per_peer: usize,
    /// Streams one address group (an IPv4 address, an IPv6 /64) may have
    /// served at once: peer ids are free, so without it one host with many
    /// peer ids takes all of `max_streams`. Default 128.
    pub max_streams_per_ip: usize,
    /// Live registrations one address group may hold in one namespace;
    /// more are answered `E_UNAVAILABLE` (see [`crate::quota`]). Default
    /// 100: room for a NAT, while one host cannot fill a namespace's 1,000.
    pub max_registrations_per_ip_namespace: usize,
    /// IPv6 addresses are counted per prefix of this length. Default 64.
    pub ipv6_prefix: u8,
    /// Peers remembered with the record formats they read (rust-libp2p:
    /// legacy; js-libp2p, go-libp2p: standard; rdv: both). Default 100 000.
    pub max_legacy_askers: usize,
    /// Verified records remembered (by hash) so that a REGISTER repeating
    /// the same bytes skips the signature check. Default 100 000.
    pub max_verified_records: usize,
    /// How long a DISCOVER from a peer whose identify has not arrived yet
    /// waits for it (see [`PointServer::note_agent_version`]), once per peer.
    /// Zero (the default) answers at once with every format: set it only
    /// when identify results are fed to the server.
    pub identify_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            stream_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
            max_streams: 1024,
            max_streams_per_peer: 16,
            max_streams_per_ip: 128,
            max_registrations_per_ip_namespace: 100,
            ipv6_prefix: crate::ip_limits::DEFAULT_IPV6_PREFIX,
            max_legacy_askers: 100_000,
            max_verified_records: 100_000,
            identify_wait: Duration::ZERO,
        }
    }
}

/// A new configuration was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconfigureError {
    /// It cannot work.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] rdv_point::ConfigError),
    /// The point thread has stopped.
    #[error("the point has stopped")]
    Stopped,
}

/// Where what we know of a peer's record formats comes from, weakest
/// first; a stronger source is never replaced by a weaker one.
///
/// - `Default`: nothing known when it asked (identify did not come in
///   time): every format.
/// - `Agent`: identify's agent version (rust-libp2p: legacy; py-libp2p:
///   unsigned `PeerInfo`; rdv: every format; anything else: standard, what
///   the RFC and go/js implement).
/// - `Registered`: the peer registered a legacy record or a `PeerInfo` of
///   its own. That is evidence of the implementation (rust-libp2p's client
///   writes legacy records, and refuses a whole answer holding one standard
///   record; the original go schema's clients write and read `PeerInfo`
///   only) whatever agent string the application set, so it wins over
///   `Agent`.
/// - `Marker`: the peer lists [`crate::READS_ALL_RECORD_FORMATS`] (rdv's
///   client, which may register legacy records and reads every format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FormatSource {
    Default,
    Agent,
    Registered,
    Marker,
}

/// Work run on the point thread with the point in hand.
type PointFn<S> = Box<dyn FnOnce(&mut Point<S>) + Send>;

/// What a stream task asks of the point thread.
enum Job<S> {
    Register(
        PeerId,
        Register,
        Verification,
        oneshot::Sender<RegisterResponse>,
    ),
    Discover(PeerId, Discover, Formats, oneshot::Sender<DiscoverResponse>),
    Request(PeerId, Message, oneshot::Sender<Option<Message>>),
    Bytes(
        PeerId,
        bytes::Bytes,
        oneshot::Sender<Result<Option<Message>, ()>>,
    ),
    With(PointFn<S>),
}

struct Shared<S> {
    jobs: std_mpsc::Sender<Job<S>>,
    /// The point's configuration as the stream tasks see it (prechecks,
    /// the request size limit); the point thread holds its own copy, and
    /// re-checks what a precheck let through.
    point_config: Mutex<rdv_point::Config>,
    metrics: Arc<Metrics>,
    /// What each peer's implementation can read, as far as we know; least
    /// recently used first out, so a stranger churning peer ids evicts its
    /// own entries before those of peers in use.
    formats: Mutex<LruCache<PeerId, (Formats, FormatSource)>>,
    /// Woken whenever identify tells us about a peer.
    identified: tokio::sync::Notify,
    /// Records whose signature checked out, by BLAKE3 hash of their bytes:
    /// the same bytes again (a refresh, typically) need no second check.
    /// Least recently used first out.
    verified: Mutex<LruCache<[u8; 32], (PeerId, RecordFormat)>>,
    /// Registrations per address group and namespace.
    quota: Mutex<Quota>,
    config: ServerConfig,
}

/// A point served over libp2p. Cheap to clone; all clones share one point.
///
/// The point lives on a thread of its own and takes work in batches: every
/// REGISTER waiting when the thread wakes goes to the store in one write
/// (one transaction for a durable store: group commit), and a store that
/// blocks (SQLite's fsync, a PostgreSQL round trip) never blocks the async
/// runtime. Stream tasks do the rest (framing, decoding, signature checks).
pub struct PointServer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for PointServer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug already reported; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Longest a stream waits for the point thread to answer.
const POINT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most jobs taken per wake-up of the point thread.
const MAX_BATCH: usize = 512;

impl<S: Store + Send + 'static> PointServer<S> {
    /// Moves `point` to a thread of its own and serves it. If the thread
    /// cannot be started, every request is closed unanswered: a daemon
    /// should use [`Self::start`] and stop instead.
    pub fn new(point: Point<S>, config: ServerConfig) -> Self {
        let (server, spawned) = Self::build(point, config, |run| {
            std::thread::Builder::new()
                .name("rdv-point".into())
                .spawn(run)
                .map(drop)
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the point thread");
        }
        server
    }

    /// Moves `point` to a thread of its own and serves it; an error if the
    /// thread cannot be started (out of threads or memory), so that the
    /// caller stops with a clear message instead of serving nothing.
    pub fn start(point: Point<S>, config: ServerConfig) -> Result<Self, std::io::Error> {
        Self::start_with(point, config, |run| {
            std::thread::Builder::new()
                .name("rdv-point".into())
                .spawn(run)
                .map(drop)
        })
    }

    fn start_with(
        point: Point<S>,
        config: ServerConfig,
        spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> std::io::Result<()>,
    ) -> Result<Self, std::io::Error> {
        let (server, spawned) = Self::build(point, config, spawn);
        spawned.map(|()| server)
    }

    fn build(
        point: Point<S>,
        config: ServerConfig,
        spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> std::io::Result<()>,
    ) -> (Self, std::io::Result<()>) {
        let (jobs, rx) = std_mpsc::channel();
        let metrics = Arc::new(Metrics::default());
        let point_config = point.config().clone();
        let thread_metrics = metrics.clone();
        // The thread ends when the last `PointServer` clone is dropped.
        let spawned = spawn(Box::new(move || {
            let run = std::panic::AssertUnwindSafe(|| point_thread(point, rx, thread_metrics));
            if std::panic::catch_unwind(run).is_err() {
                // A bug in the point or its store: a daemon that looks
                // alive but answers nothing is worse than one that stops.
                eprintln!(
                    "error: the point thread panicked; stopping (this is a bug, please report it)"
                );
                std::process::exit(70);
            }
        }));
        let server = Self {
            shared: Arc::new(Shared {
                jobs,
                point_config: Mutex::new(point_config),
                metrics,
                formats: Mutex::new(LruCache::new(config.max_legacy_askers.max(1))),
                identified: tokio::sync::Notify::new(),
                verified: Mutex::new(LruCache::new(config.max_verified_records.max(1))),
                quota: Mutex::new(Quota::new(config.max_registrations_per_ip_namespace)),
                config,
            }),
        };
        (server, spawned)
    }

    /// Replaces the point's configuration (TTL bounds, registry limits,
    /// record and message sizes) and the per-address registration quota,
    /// for requests from now on; the stream bounds stay as started.
    /// Nothing changes if `config` cannot work.
    pub async fn reconfigure(
        &self,
        config: rdv_point::Config,
        max_registrations_per_ip_namespace: usize,
    ) -> Result<(), ReconfigureError> {
        config.validate()?;
        let for_point = config.clone();
        self.with_point(move |p| p.set_config(for_point))
            .await
            .ok_or(ReconfigureError::Stopped)??;
        *lock(&self.shared.point_config) = config;
        lock(&self.shared.quota).set_max(max_registrations_per_ip_namespace);
        Ok(())
    }

    /// The point's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Renders the metrics (store counts as of the last batch).
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render()
    }

    /// Runs `f` on the point's thread and gives back its result (for
    /// inspection and tests).
    pub async fn with_point<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Point<S>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job = Job::With(Box::new(move |p: &mut Point<S>| {
            let _ = tx.send(f(p));
        }));
        self.shared.jobs.send(job).ok()?;
        rx.await.ok()
    }

    /// Tells the server what identify said about a peer, so its DISCOVERs
    /// get only records it can verify: rust-libp2p's client refuses a whole
    /// DISCOVER_RESPONSE holding one standard-format record, and js-libp2p's
    /// and go-libp2p's refuse legacy ones. rdv reads both.
    pub fn note_agent_version(&self, peer: PeerId, agent_version: &str) {
        // go-libp2p's default agent is "github.com/libp2p/go-libp2p" and apps
        // set their own: anything not known to read legacy records gets the
        // standard format, which is what the RFC and go/js implement.
        let formats = if agent_version.starts_with("rust-libp2p") {
            Formats::only(RecordFormat::Legacy)
        } else if agent_version.starts_with("py-libp2p") {
            // Its schema is go-libp2p-rendezvous's original one: it parses
            // every registration as an unsigned PeerInfo.
            Formats::only(RecordFormat::PeerInfo)
        } else if agent_version.starts_with("rdv/") {
            Formats::ALL
        } else {
            Formats::only(RecordFormat::Standard)
        };
        self.remember_formats(peer, formats, FormatSource::Agent);
        self.shared.identified.notify_waiters();
    }

    /// Tells the server what identify said about a peer, protocols included:
    /// a peer listing [`crate::READS_ALL_RECORD_FORMATS`] (rdv's client,
    /// even embedded in a rust-libp2p application) gets every format; other
    /// peers as [`Self::note_agent_version`].
    pub fn note_identify<'a>(
        &self,
        peer: PeerId,
        agent_version: &str,
        protocols: impl IntoIterator<Item = &'a libp2p::StreamProtocol>,
    ) {
        if protocols
            .into_iter()
            .any(|p| p.as_ref() == crate::READS_ALL_RECORD_FORMATS)
        {
            self.remember_formats(peer, Formats::ALL, FormatSource::Marker);
            self.shared.identified.notify_waiters();
        } else {
            self.note_agent_version(peer, agent_version);
        }
    }

    /// Remembers what `peer` reads, unless something stronger is known
    /// (see [`FormatSource`]); a source as strong replaces it.
    fn remember_formats(&self, peer: PeerId, formats: Formats, source: FormatSource) {
        // Bounded, least recently used out: a stranger churning peer ids
        // evicts its own entries first.
        let mut known = lock(&self.shared.formats);
        if known.peek(&peer).is_none_or(|(_, was)| *was <= source) {
            known.insert(peer, (formats, source));
        }
    }

    /// The formats to serve `peer`, waiting (once, up to `identify_wait`)
    /// for its identify if we know nothing of it yet.
    async fn formats_for(&self, peer: &PeerId) -> Formats {
        if let Some((f, _)) = lock(&self.shared.formats).get(peer) {
            return *f;
        }
        let wait = self.shared.config.identify_wait;
        if !wait.is_zero() {
            let _ = tokio::time::timeout(wait, async {
                loop {
                    let notified = self.shared.identified.notified();
                    if lock(&self.shared.formats).contains_key(peer) {
                        return;
                    }
                    notified.await;
                }
            })
            .await;
        }
        // Asked once: from now on answer at once, with what we know.
        let known = lock(&self.shared.formats).get(peer).copied();
        match known {
            Some((f, _)) => f,
            None => {
                self.remember_formats(*peer, Formats::ALL, FormatSource::Default);
                Formats::ALL
            }
        }
    }

    /// Serves the streams [`crate::inbound::Behaviour`] accepts until
    /// `shutdown` completes. Every stream task ends when this returns.
    pub async fn run(
        self,
        mut incoming: crate::inbound::Incoming,
        shutdown: impl Future<Output = ()>,
    ) {
        let permits = Arc::new(Semaphore::new(
            self.shared.config.max_streams.min(Semaphore::MAX_PERMITS),
        ));
        let per_peer: Arc<Mutex<HashMap<PeerId, PeerStreams>>> = Arc::default();
        let per_group: Arc<Mutex<HashMap<AddrGroup, usize>>> = Arc::default();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                next = incoming.recv() => {
                    let Some(InboundStream { peer, remote, stream }) = next else { break };
                    let group = AddrGroup::of_multiaddr(&remote, self.shared.config.ipv6_prefix);
                    // A global permit first: a stream refused here must
                    // not take a place in its peer's order.
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        self.shared.metrics.stream_refused();
                        tracing::debug!(%peer, "too many rendezvous streams; closing a new one");
                        drop(stream);
                        continue;
                    };
                    // Then the address's share: one host with many peer ids
                    // cannot take every slot.
                    if let Some(group) = group {
                        let mut counts = lock(&per_group);
                        let open = counts.entry(group).or_insert(0);
                        if *open >= self.shared.config.max_streams_per_ip {
                            if *open == 0 {
                                counts.remove(&group);
                            }
                            drop(counts);
                            drop(permit);
                            self.shared.metrics.stream_refused();
                            tracing::debug!(%peer, %group, "too many rendezvous streams from one address; closing a new one");
                            drop(stream);
                            continue;
                        }
                        *open += 1;
                    }
                    let turn = {
                        let mut counts = lock(&per_peer);
                        let streams = counts.entry(peer).or_default();
                        if streams.open < self.shared.config.max_streams_per_peer {
                            streams.open += 1;
                            // This stream's first request goes to the point
                            // after the previous stream's first request.
                            let (done, next) = oneshot::channel();
                            Some(Turn { wait: streams.last.replace(next), done: Some(done) })
                        } else {
                            if streams.open == 0 {
                                counts.remove(&peer);
                            }
                            None
                        }
                    };
                    let Some(mut turn) = turn else {
                        release_group_slot(&per_group, group.as_ref());
                        drop(permit);
                        self.shared.metrics.stream_refused();
                        tracing::debug!(%peer, "too many rendezvous streams from one peer; closing a new one");
                        drop(stream);
                        continue;
                    };
                    let this = self.clone();
                    let per_peer = per_peer.clone();
                    let per_group = per_group.clone();
                    tasks.spawn(async move {
                        this.shared.metrics.stream_opened();
                        this.serve_stream(peer, group, stream, &mut turn).await;
                        drop(turn);
                        this.shared.metrics.stream_closed();
                        drop(permit);
                        release_peer_slot(&per_peer, &peer);
                        release_group_slot(&per_group, group.as_ref());
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    }

    /// Checks a REGISTER's record, in this stream's task (so checks run in
    /// parallel), unless the very same bytes were checked before.
    fn verify(&self, peer: PeerId, req: &Register) -> Verification {
        let hash = *blake3::hash(&req.signed_peer_record).as_bytes();
        let cached = lock(&self.shared.verified).get(&hash).copied();
        if let Some((peer_id, format)) = cached {
            self.shared.metrics.verification_skipped();
            self.note_registered(peer, peer_id, format);
            return Verification::Verified(rdv_wire::VerifiedRecord {
                peer_id,
                seq: 0,
                addresses: Vec::new(),
                format,
            });
        }
        let started = Instant::now();
        let v = verify_record(&req.signed_peer_record);
        self.shared.metrics.verified(started.elapsed());
        match v {
            Ok(v) => {
                self.note_registered(peer, v.peer_id, v.format);
                // Bounded, least recently used out (forgetting costs one check).
                lock(&self.shared.verified).insert(hash, (v.peer_id, v.format));
                Verification::Verified(v)
            }
            Err(e) => Verification::Failed(e),
        }
    }

    /// What a peer's own registration says it reads: one that registers
    /// legacy records or `PeerInfo`s reads only those, most likely (see
    /// [`FormatSource::Registered`]). A standard record says nothing: every
    /// implementation but rdv that writes one reads only those anyway.
    fn note_registered(&self, peer: PeerId, registrant: PeerId, format: RecordFormat) {
        if registrant == peer && format != RecordFormat::Standard {
            self.remember_formats(peer, Formats::only(format), FormatSource::Registered);
        }
    }

    async fn ask<T>(
        &self,
        turn: &mut Turn,
        job: impl FnOnce(oneshot::Sender<T>) -> Job<S>,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if let Some(previous) = turn.wait.take() {
            // Resolves when the peer's previous stream has handed its first
            // request over, or has ended; bounded by its stream timeout.
            let _ = previous.await;
        }
        self.shared.metrics.job_queued();
        if self.shared.jobs.send(job(tx)).is_err() {
            self.shared.metrics.jobs_taken(1);
            return None;
        }
        turn.done.take();
        // A store that hangs (a half-open database link) must not hold the
        // stream forever: give up and close it.
        match tokio::time::timeout(POINT_ANSWER_TIMEOUT, rx).await {
            Ok(answer) => answer.ok(),
            Err(_) => {
                tracing::warn!(
                    "the point did not answer within {POINT_ANSWER_TIMEOUT:?}; closing the stream"
                );
                None
            }
        }
    }

    async fn serve_stream(
        &self,
        peer: PeerId,
        group: Option<AddrGroup>,
        mut stream: Stream,
        turn: &mut Turn,
    ) {
        // Requests are read with a limit sized to the largest valid one (a
        // REGISTER with the largest record), not to the largest response:
        // a peer cannot make the point buffer a mebibyte per stream.
        let max_request = lock(&self.shared.point_config).max_request_size();
        let mut decoder = FrameDecoder::new(max_request);
        let timeout = self.shared.config.stream_timeout;
        let idle = self.shared.config.stream_idle_timeout;
        let mut first = true;
        loop {
            // The first message must come promptly (a stream opened and
            // left silent is a stall); between requests a stream may rest.
            let read = if first {
                read_frame(&mut stream, &mut decoder, timeout).await
            } else {
                read_frame_after_idle(&mut stream, &mut decoder, idle, timeout).await
            };
            first = false;
            let frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    if !matches!(e, StreamError::Timeout(_)) || decoder.buffered() > 0 {
                        tracing::debug!(%peer, error = %e, "closing rendezvous stream");
                    }
                    if matches!(e, StreamError::Frame(_)) {
                        self.shared.metrics.malformed();
                    }
                    break;
                }
            };
            match self.handle_frame(peer, group, frame, turn).await {
                Ok(Some(response)) => {
                    // A peer that stops reading must not hold the stream.
                    match tokio::time::timeout(timeout, write_message(&mut stream, &response)).await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "could not answer");
                            break;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "peer does not read its answers; closing");
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(()) => {
                    self.shared.metrics.malformed();
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(timeout, stream.close()).await;
    }

    /// Handles one request frame. `Err(())`: not a rendezvous message, or
    /// the point is gone; the stream should close.
    async fn handle_frame(
        &self,
        peer: PeerId,
        group: Option<AddrGroup>,
        frame: bytes::Bytes,
        turn: &mut Turn,
    ) -> Result<Option<Message>, ()> {
        let msg = match rdv_wire::decode(&frame) {
            Ok(msg) => msg,
            Err(_) => {
                // Let the core give the right E_* answer (and its event).
                let answer = self
                    .ask(turn, |tx| Job::Bytes(peer, frame, tx))
                    .await
                    .ok_or(())??;
                if let Some(kind) = answer.as_ref().map(request_kind_of_response) {
                    self.shared
                        .metrics
                        .request(kind, status_of(answer.as_ref()));
                }
                return Ok(answer);
            }
        };
        let kind = msg.kind();
        let answer = match msg {
            Message::Register(req) => {
                let namespace = req.namespace.clone();
                if let Some(group) = group
                    && let Err(full) =
                        lock(&self.shared.quota).reserve(group, peer, &namespace, Instant::now())
                {
                    tracing::debug!(%peer, %full, "registration quota of an address");
                    let response = RegisterResponse {
                        status: ResponseStatus::Unavailable,
                        status_text: "too many registrations from your address in this namespace"
                            .into(),
                        ttl: None,
                    };
                    self.shared
                        .metrics
                        .request(kind, ResponseStatus::Unavailable);
                    return Ok(Some(Message::RegisterResponse(response)));
                }
                // Cheap checks first; a hopeless request goes straight to the
                // point thread, which refuses it without a signature check.
                let hopeless = precheck(&lock(&self.shared.point_config), &req).is_err();
                let verification = if hopeless {
                    // Hopeless: the point thread refuses it before any check.
                    Verification::SameAsStored
                } else {
                    self.verify(peer, &req)
                };
                let response = self
                    .ask(turn, |tx| Job::Register(peer, req, verification, tx))
                    .await;
                if let Some(group) = group {
                    let mut quota = lock(&self.shared.quota);
                    let now = Instant::now();
                    match &response {
                        Some(r) if r.status == ResponseStatus::Ok => {
                            let ttl = r
                                .ttl
                                .map_or(Duration::ZERO, |t| Duration::from_secs(t.as_secs()));
                            quota.confirm(group, peer, &namespace, ttl, now);
                        }
                        _ => quota.release(group, peer, &namespace, now),
                    }
                }
                Some(Message::RegisterResponse(response.ok_or(())?))
            }
            Message::Unregister(req) => {
                lock(&self.shared.quota).remove(peer, &req.namespace);
                self.ask(turn, |tx| Job::Request(peer, Message::Unregister(req), tx))
                    .await
                    .ok_or(())?
            }
            Message::Discover(req) => {
                let formats = self.formats_for(&peer).await;
                let response = self
                    .ask(turn, |tx| Job::Discover(peer, req, formats, tx))
                    .await
                    .ok_or(())?;
                Some(Message::DiscoverResponse(response))
            }
            other => self
                .ask(turn, |tx| Job::Request(peer, other, tx))
                .await
                .ok_or(())?,
        };
        if matches!(
            kind,
            MessageKind::Register | MessageKind::Unregister | MessageKind::Discover
        ) {
            self.shared
                .metrics
                .request(kind, status_of(answer.as_ref()));
        }
        Ok(answer)
    }
}

/// The point's thread: waits for work or the next expiry, takes what is
/// queued, writes all waiting REGISTERs in one batch.
fn point_thread<S: Store>(
    mut point: Point<S>,
    jobs: std_mpsc::Receiver<Job<S>>,
    metrics: Arc<Metrics>,
) {
    let mut queue: Vec<Job<S>> = Vec::with_capacity(MAX_BATCH);
    // Store counts can cost a query on a SQL store: under load refresh them
    // at most twice a second, and otherwise whenever the thread goes idle.
    let mut counted: Option<Instant> = None;
    let mut dirty = false;
    let mut count = |point: &Point<S>, idle: bool, dirty: &mut bool| {
        if *dirty && (idle || counted.is_none_or(|t| t.elapsed() >= Duration::from_millis(500))) {
            metrics.set_store(point.store().stats());
            counted = Some(Instant::now());
            *dirty = false;
        }
    };
    loop {
        count(&point, true, &mut dirty);
        let first = match point.poll_timeout() {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Timestamp::now());
                match jobs.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        point.handle_timeout(Timestamp::now());
                        drain_events(&mut point, &metrics);
                        dirty = true;
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        queue.push(first);
        while queue.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => queue.push(job),
                Err(_) => break,
            }
        }
        // `With` jobs (inspection) are not counted as queued requests.
        let requests = queue.iter().filter(|j| !matches!(j, Job::With(_))).count();
        metrics.jobs_taken(requests);
        let now = Timestamp::now();
        let mut registers = Vec::new();
        let mut replies = Vec::new();
        for job in queue.drain(..) {
            if let Job::Register(peer, req, v, reply) = job {
                registers.push((peer, req, v));
                replies.push(reply);
                continue;
            }
            // Keep order: REGISTERs queued before this job are written first.
            flush_registers(&mut point, &mut registers, &mut replies, now, &metrics);
            match job {
                Job::Discover(peer, req, formats, reply) => {
                    let _ = reply.send(point.handle_discover_for(peer, req, formats, now));
                }
                Job::Request(peer, msg, reply) => {
                    let _ = reply.send(point.handle_request(peer, msg, now));
                }
                Job::Bytes(peer, frame, reply) => {
                    let _ = reply.send(point.handle_bytes(peer, &frame, now).map_err(|_| ()));
                }
                Job::With(f) => f(&mut point),
                Job::Register(..) => {}
            }
        }
        flush_registers(&mut point, &mut registers, &mut replies, now, &metrics);
        drain_events(&mut point, &metrics);
        dirty = true;
        count(&point, false, &mut dirty);
    }
}

fn flush_registers<S: Store>(
    point: &mut Point<S>,
    registers: &mut Vec<(PeerId, Register, Verification)>,
    replies: &mut Vec<oneshot::Sender<RegisterResponse>>,
    now: Timestamp,
    metrics: &Metrics,
) {
    if registers.is_empty() {
        return;
    }
    metrics.write_batch(registers.len());
    let answers = point.handle_register_batch(std::mem::take(registers), now);
    for (reply, answer) in replies.drain(..).zip(answers) {
        let _ = reply.send(answer);
    }
}

/// Gives back one of an address group's stream slots.
fn release_group_slot(per_group: &Mutex<HashMap<AddrGroup, usize>>, group: Option<&AddrGroup>) {
    let Some(group) = group else { return };
    let mut counts = lock(per_group);
    if let Some(open) = counts.get_mut(group) {
        *open = open.saturating_sub(1);
        if *open == 0 {
            counts.remove(group);
        }
    }
}

/// Gives back one of `peer`'s stream slots.
fn release_peer_slot(per_peer: &Mutex<HashMap<PeerId, PeerStreams>>, peer: &PeerId) {
    let mut counts = lock(per_peer);
    if let Some(streams) = counts.get_mut(peer) {
        streams.open -= 1;
        if streams.open == 0 {
            counts.remove(peer);
        }
    }
}

/// One peer's streams being served.
#[derive(Default)]
struct PeerStreams {
    open: usize,
    /// Resolves once the newest stream has handed its first request to the
    /// point (or ended).
    last: Option<oneshot::Receiver<()>>,
}

/// A stream's place in its peer's order. Requests from one peer reach the
/// point in the order their streams arrived: clients open one stream per
/// request, and a client that sends UNREGISTER (which has no answer) and
/// then DISCOVER must not see its own registration come back because the
/// second stream's task happened to run first. Only the hand-over is
/// ordered; reading and signature checks still run in parallel.
struct Turn {
    wait: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

fn status_of(answer: Option<&Message>) -> ResponseStatus {
    match answer {
        Some(Message::RegisterResponse(r)) => r.status,
        Some(Message::DiscoverResponse(r)) => r.status,
        _ => ResponseStatus::Ok,
    }
}

fn request_kind_of_response(m: &Message) -> MessageKind {
    match m {
        Message::DiscoverResponse(_) => MessageKind::Discover,
        Message::DiscoverSubscribeResponse(_) => MessageKind::DiscoverSubscribe,
        _ => MessageKind::Register,
    }
}

fn drain_events<S: Store>(point: &mut Point<S>, metrics: &Metrics) {
    while let Some(event) = point.poll_event() {
        match event {
            rdv_point::Event::RequestRefused {
                peer,
                kind,
                status,
                reason,
            } => tracing::debug!(%peer, ?kind, %status, %reason, "refused"),
            rdv_point::Event::StoreFailed { error } => {
                metrics.store_failed();
                tracing::warn!(%error, "store failed")
            }
            rdv_point::Event::EventsDropped { count } => {
                tracing::warn!(count, "point events dropped")
            }
            other => tracing::trace!(?other, "point event"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rdv_point::{Config, CookieKey, MemoryStore};
    use rdv_wire::{Keypair, Namespace, sign_record};

    fn server(config: ServerConfig) -> PointServer<MemoryStore> {
        let point = Point::new(
            Config::default(),
            MemoryStore::new(1),
            CookieKey::from_bytes([3; 32]),
        )
        .unwrap();
        PointServer::new(point, config)
    }

    fn register(key: &Keypair) -> Register {
        let addr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        Register {
            namespace: Namespace::new("n").unwrap(),
            signed_peer_record: sign_record(key, &[addr], 1, RecordFormat::Standard)
                .unwrap()
                .into(),
            ttl: None,
        }
    }

    #[test]
    fn a_point_thread_that_cannot_start_is_an_error() {
        let point = Point::new(
            Config::default(),
            MemoryStore::new(1),
            CookieKey::from_bytes([3; 32]),
        )
        .unwrap();
        let failed = PointServer::start_with(point, ServerConfig::default(), |_| {
            Err(std::io::Error::other("no more threads"))
        });
        assert!(failed.is_err());
    }

    #[tokio::test]
    async fn churning_peer_ids_does_not_evict_what_we_know_of_a_peer_in_use() {
        let s = server(ServerConfig {
            max_legacy_askers: 8,
            ..ServerConfig::default()
        });
        let in_use = PeerId::random();
        s.note_agent_version(in_use, "rust-libp2p/0.57.0");
        for _ in 0..100 {
            for _ in 0..4 {
                s.note_agent_version(PeerId::random(), "github.com/libp2p/go-libp2p");
            }
            // Each DISCOVER of the peer in use makes it recently used.
            assert_eq!(
                s.formats_for(&in_use).await,
                Formats::only(RecordFormat::Legacy)
            );
        }
    }

    #[tokio::test]
    async fn churning_records_does_not_evict_a_record_refreshed_meanwhile() {
        let s = server(ServerConfig {
            max_verified_records: 4,
            ..ServerConfig::default()
        });
        let key = Keypair::generate_ed25519();
        let req = register(&key);
        let peer = key.public().to_peer_id();
        assert!(matches!(s.verify(peer, &req), Verification::Verified(_)));
        for round in 1..=50u64 {
            for _ in 0..3 {
                let stranger = Keypair::generate_ed25519();
                s.verify(stranger.public().to_peer_id(), &register(&stranger));
            }
            s.verify(peer, &req);
            let text = s.render_metrics();
            let want = format!("rdv_verification_skipped_total {round}");
            assert!(text.lines().any(|l| l == want), "round {round}:\n{text}");
        }
    }

    /// Who reads what: py-libp2p's agent gets PeerInfo records only, and a
    /// peer that registers a PeerInfo of its own (whatever agent it shows,
    /// and again when the same bytes come from the verification cache)
    /// gets PeerInfo only; a PeerInfo naming someone else is no evidence.
    #[tokio::test]
    async fn py_libp2p_peers_get_peer_info_records_by_agent_or_by_evidence() {
        let s = server(ServerConfig::default());
        let py = PeerId::random();
        s.note_agent_version(py, "py-libp2p/0.8.1");
        assert_eq!(
            s.formats_for(&py).await,
            Formats::only(RecordFormat::PeerInfo)
        );

        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let addr: rdv_wire::Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let req = Register {
            namespace: Namespace::new("n").unwrap(),
            signed_peer_record: rdv_wire::peer_info(&peer, &[addr]).into(),
            ttl: None,
        };
        // Someone else sending this PeerInfo learns us nothing of them.
        let other = PeerId::random();
        s.note_agent_version(other, "my-app/1.0");
        s.verify(other, &req);
        assert_eq!(
            s.formats_for(&other).await,
            Formats::only(RecordFormat::Standard)
        );
        // Its own, under a custom agent: the registration wins (here from
        // the verification cache, which the stranger's attempt filled).
        s.note_agent_version(peer, "my-app/1.0");
        assert!(matches!(s.verify(peer, &req), Verification::Verified(_)));
        assert_eq!(
            s.formats_for(&peer).await,
            Formats::only(RecordFormat::PeerInfo)
        );
    }
}
