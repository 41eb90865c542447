//! The WebSocket relay server (issue 11), driven on tokio with
//! tokio-tungstenite: the IO around `rdv_relay`'s table and bounds. `rdv
//! point --relay-listen` runs it beside the rendezvous point.
//!
//! One task reads each connection and one writes it; every queue is
//! bounded. A connection's slot (per address, in all) is taken at TCP
//! accept, before the WebSocket handshake. A DATA message is decoded
//! once, handed to the test observer if any, rewritten in place for the
//! other end and queued on that end's writer. While that queue is full the
//! sender's reading waits (all its circuits, as on one TCP connection); a
//! receiver that makes no room within [`RelayConfig::stall`] is not
//! reading and is ended (close code 4007), which closes its circuits at
//! their other ends. Control messages (INCOMING, OPENED, CLOSED) take the
//! same path, so none is dropped while a connection lives. Byte rates are
//! enforced by pausing the reading of the sender's socket, so TCP flow
//! control slows it down and nothing piles up in the relay; every message
//! costs at least 64 bytes, a RETIRE 16 KiB (it costs a signature check).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rdv_relay::proto::{self, ClientMsg, CloseReason, ServerMsg};
use rdv_relay::router::ConnId;
use rdv_relay::{Limits, Refusal, RelayIdentity, RelayMetrics, Router, TokenBucket, grant};
use std::collections::HashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Refused connections told why at once; see [`Relay::refusing`].
const REFUSING: usize = 64;
/// What a message costs against the byte rates at least (so that empty
/// DATA, OPEN, CLOSE are not free).
const MESSAGE_COST: u64 = 64;
/// What a RETIRE costs (it makes the relay verify a signature).
const RETIRE_COST: u64 = 16 * 1024;

/// Sees every DATA payload the relay forwards (tests check that only
/// ciphertext passes).
pub type Observer = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The relay's bounds and timers.
#[derive(Clone)]
pub struct RelayConfig {
    /// Connections, circuits and retired grants.
    pub limits: Limits,
    /// Bytes per second one connection may send.
    pub client_rate: u64,
    /// Burst above the per-connection rate.
    pub client_burst: u64,
    /// Bytes per second all connections together may send.
    pub total_rate: u64,
    /// A connection that sends nothing (not even a ping) this long ends.
    pub idle: Duration,
    /// HELLO and AUTH must arrive within this, after the WebSocket is up.
    pub handshake_timeout: Duration,
    /// How long a forward may wait for a full peer queue before the
    /// circuit is closed as stalled.
    pub stall: Duration,
    /// Messages queued per connection's writer.
    pub queue: usize,
    /// Test hook: called with every forwarded payload.
    pub observer: Option<Observer>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            client_rate: 16 * 1024 * 1024,
            client_burst: 4 * 1024 * 1024,
            total_rate: 256 * 1024 * 1024,
            idle: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            stall: Duration::from_secs(10),
            queue: 32,
            observer: None,
        }
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("limits", &self.limits)
            .field("client_rate", &self.client_rate)
            .field("total_rate", &self.total_rate)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

enum Out {
    Msg(Vec<u8>),
    /// A close frame (code, reason), then the writer ends.
    Close(u16, &'static str),
}

struct Conn {
    tx: mpsc::Sender<Out>,
    kill: Arc<Notify>,
}

struct Relay {
    identity: RelayIdentity,
    /// Refused connections being told why (a WebSocket handshake and a
    /// close frame each); past it a refused connection is just closed.
    refusing: Arc<tokio::sync::Semaphore>,
    cfg: RelayConfig,
    router: Mutex<Router>,
    conns: Mutex<HashMap<ConnId, Conn>>,
    total: Mutex<TokenBucket>,
    metrics: Arc<RelayMetrics>,
    epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The WebSocket settings: messages no larger than the protocol's
/// largest, small buffers so an idle client costs little memory.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(proto::MAX_MESSAGE))
        .max_frame_size(Some(proto::MAX_MESSAGE))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(proto::MAX_MESSAGE * 4)
}

type Request = tokio_tungstenite::tungstenite::handshake::server::Request;
type Response = tokio_tungstenite::tungstenite::handshake::server::Response;
type ErrorResponse = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse;

/// Answers the WebSocket upgrade only on [`rdv_relay::PATH`]; anything
/// else gets 404 and a line saying where the relay is.
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == rdv_relay::PATH {
        Ok(resp)
    } else {
        let mut r = ErrorResponse::new(Some(format!("the relay is at {}\n", rdv_relay::PATH)));
        *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
        Err(r)
    }
}

/// Serves the relay on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    identity: RelayIdentity,
    cfg: RelayConfig,
    metrics: Arc<RelayMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let now = Instant::now();
    let relay = Arc::new(Relay {
        identity,
        refusing: Arc::new(tokio::sync::Semaphore::new(REFUSING)),
        router: Mutex::new(Router::new(cfg.limits.clone())),
        conns: Mutex::new(HashMap::new()),
        total: Mutex::new(TokenBucket::new(
            cfg.total_rate,
            cfg.total_rate,
            Duration::ZERO,
        )),
        cfg,
        metrics,
        epoch: now,
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    // The slot is taken before the WebSocket handshake, so
                    // connections still upgrading count against the
                    // per-address and total bounds too.
                    let reserved = lock(&relay.router).connect(from.ip());
                    let relay = relay.clone();
                    match reserved {
                        Ok(id) => {
                            tokio::spawn(async move { relay.connection(stream, from, id).await });
                        }
                        Err(why) => {
                            relay.metrics.refused(why);
                            if let Ok(permit) = relay.refusing.clone().try_acquire_owned() {
                                tokio::spawn(async move {
                                    relay.refuse(stream, why).await;
                                    drop(permit);
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let conns: Vec<Arc<Notify>> = lock(&relay.conns)
        .values()
        .map(|c| c.kill.clone())
        .collect();
    for k in conns {
        k.notify_one();
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

impl Relay {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Queues `msg` for `conn`, waiting at most the stall bound; a
    /// connection that does not make room in that time is not reading and
    /// is ended ([`Refusal::Stalled`]), which tells the other end of each
    /// of its circuits. Nothing is dropped while the connection lives.
    async fn send(&self, conn: ConnId, msg: Vec<u8>) -> bool {
        let tx = lock(&self.conns).get(&conn).map(|c| c.tx.clone());
        match tx {
            Some(tx) => self.send_to(&tx, conn, msg).await,
            None => false,
        }
    }

    /// Completes the WebSocket handshake of a refused connection (bounded
    /// in time) only to say why in a close frame.
    async fn refuse(&self, stream: TcpStream, why: Refusal) {
        let ws = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config())),
        )
        .await;
        if let Ok(Ok(mut ws)) = ws {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                ws.send(close_frame(why.code(), why.reason())),
            )
            .await;
        }
    }

    /// Ends `conn` with `why` (its writer sends the close frame if there
    /// is room; a connection that is not reading just has its socket
    /// closed).
    /// Once per connection: it leaves the table of writers at once, so
    /// nothing else waits on its queue.
    fn end(&self, conn: ConnId, why: Refusal) {
        let c = lock(&self.conns).remove(&conn);
        if let Some(c) = c {
            self.metrics.refused(why);
            let _ = c.tx.try_send(Out::Close(why.code(), why.reason()));
            c.kill.notify_one();
        }
    }

    fn gauges(&self, r: &Router) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.clients.store(r.clients() as u64, Relaxed);
        self.metrics.circuits.store(r.circuits() as u64, Relaxed);
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, from: SocketAddr, id: ConnId) {
        let _ = stream.set_nodelay(true);
        let ws = tokio::time::timeout(
            self.cfg.handshake_timeout,
            tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config())),
        )
        .await;
        let Ok(Ok(ws)) = ws else {
            tracing::debug!(%from, "relay WebSocket handshake failed");
            let mut r = lock(&self.router);
            r.disconnect(id);
            self.gauges(&r);
            return;
        };
        self.metrics
            .connections_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mut sink, mut source) = ws.split();
        let (tx, mut rx) = mpsc::channel::<Out>(self.cfg.queue.max(1));
        let kill = Arc::new(Notify::new());
        lock(&self.conns).insert(
            id,
            Conn {
                tx: tx.clone(),
                kill: kill.clone(),
            },
        );
        {
            let r = lock(&self.router);
            self.gauges(&r);
        }
        let writer = tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match out {
                    Out::Msg(m) => {
                        if sink.send(Message::Binary(m.into())).await.is_err() {
                            break;
                        }
                    }
                    Out::Close(code, reason) => {
                        let _ = sink.send(close_frame(code, reason)).await;
                        break;
                    }
                }
            }
        });
        let ended = tokio::select! {
            r = self.session(id, &mut source, &tx) => r,
            _ = kill.notified() => None,
        };
        if let Some(why) = ended {
            self.metrics.refused(why);
            let _ = tx.try_send(Out::Close(why.code(), why.reason()));
        }
        let told = {
            let mut r = lock(&self.router);
            let told = r.disconnect(id);
            self.gauges(&r);
            told
        };
        for (peer, circuit) in told {
            let msg = ServerMsg::Closed {
                circuit,
                reason: CloseReason::PeerGone,
            };
            self.send(peer, msg.encode()).await;
        }
        lock(&self.conns).remove(&id);
        drop(tx);
        // A writer blocked on a client that does not read would hold the
        // socket and its queue forever: give it 2 s to flush, then stop it.
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// Reads one connection until it ends; returns why the relay ends it,
    /// or `None` when the client left.
    async fn session<S>(
        &self,
        id: ConnId,
        source: &mut S,
        tx: &mpsc::Sender<Out>,
    ) -> Option<Refusal>
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        let hs = self.cfg.handshake_timeout;
        // HELLO, CHALLENGE, AUTH, WELCOME.
        let hello = match tokio::time::timeout(hs, next_binary(source)).await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(_) => return Some(Refusal::HandshakeTimeout),
        };
        let Ok(ClientMsg::Hello {
            nonce: client_nonce,
        }) = ClientMsg::decode(&hello)
        else {
            return Some(Refusal::Protocol);
        };
        let mut relay_nonce = [0u8; 32];
        if getrandom::fill(&mut relay_nonce).is_err() {
            tracing::error!("the OS random source failed: refusing relay clients");
            return Some(Refusal::Full);
        }
        let sig = self.identity.sign_challenge(&client_nonce, &relay_nonce);
        let _ = tx
            .send(Out::Msg(
                ServerMsg::Challenge {
                    nonce: relay_nonce,
                    sig,
                }
                .encode(),
            ))
            .await;
        let auth = match tokio::time::timeout(hs, next_binary(source)).await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(_) => return Some(Refusal::HandshakeTimeout),
        };
        let Ok(ClientMsg::Auth { grant, handle, sig }) = ClientMsg::decode(&auth) else {
            return Some(Refusal::Protocol);
        };
        let me = self.identity.authority();
        if !grant::verify(
            &grant,
            &grant::auth_message(&me, &client_nonce, &relay_nonce, &handle),
            &sig,
        ) {
            return Some(Refusal::Unauthorized);
        }
        let replaced = lock(&self.router).authenticate(id, grant, handle);
        match replaced {
            Err(why) => return Some(why),
            Ok(Some(old)) => self.end(old, Refusal::Replaced),
            Ok(None) => {}
        }
        let _ = tx.send(Out::Msg(ServerMsg::Welcome.encode())).await;
        let mut bucket = TokenBucket::new(self.cfg.client_rate, self.cfg.client_burst, self.now());
        loop {
            let msg = match tokio::time::timeout(self.cfg.idle, source.next()).await {
                Err(_) => {
                    self.metrics
                        .idle_closed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = tx.try_send(Out::Close(proto::close::IDLE, "idle timeout"));
                    return None;
                }
                Ok(None) => return None,
                Ok(Some(Err(WsError::Capacity(_)))) => return Some(Refusal::TooBig),
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(m))) => m,
            };
            let data = match msg {
                Message::Binary(b) => b,
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return None,
                _ => return Some(Refusal::Protocol),
            };
            let Ok(m) = ClientMsg::decode(&data) else {
                return Some(Refusal::Protocol);
            };
            // Every message costs its length against the byte rates, at
            // least MESSAGE_COST, a RETIRE more (a signature check).
            let cost = match m {
                ClientMsg::Retire { .. } => RETIRE_COST,
                _ => (data.len() as u64).max(MESSAGE_COST),
            };
            match m {
                ClientMsg::Data { circuit, payload } => {
                    if let Some(obs) = &self.cfg.observer {
                        obs(payload);
                    }
                    self.forward(id, circuit, Vec::from(data)).await;
                }
                ClientMsg::Open { circuit, to } => self.open(id, circuit, to, handle).await,
                ClientMsg::Close { circuit } => {
                    let other = {
                        let mut r = lock(&self.router);
                        let o = r.close(id, circuit);
                        self.gauges(&r);
                        o
                    };
                    if let Some((peer, pc)) = other {
                        let msg = ServerMsg::Closed {
                            circuit: pc,
                            reason: CloseReason::Closed,
                        };
                        self.send(peer, msg.encode()).await;
                    }
                }
                ClientMsg::Retire { grant: old, sig } => {
                    if !grant::verify(&old, &grant::retire_message(&me, &old), &sig) {
                        return Some(Refusal::Unauthorized);
                    }
                    let holders = lock(&self.router).retire(old);
                    for h in holders {
                        self.end(h, Refusal::Retired);
                    }
                }
                ClientMsg::Hello { .. } | ClientMsg::Auth { .. } => {
                    return Some(Refusal::Protocol);
                }
            }
            self.pace(&mut bucket, cost).await;
        }
    }

    async fn open(&self, id: ConnId, circuit: u32, to: [u8; 32], from: [u8; 32]) {
        use std::sync::atomic::Ordering::Relaxed;
        let r = {
            let mut r = lock(&self.router);
            let o = r.open(id, circuit, to);
            self.gauges(&r);
            o
        };
        match r {
            Ok((peer, pc)) => {
                if !self
                    .send(peer, ServerMsg::Incoming { circuit: pc, from }.encode())
                    .await
                {
                    // The peer is gone or was ended for not reading: the
                    // circuit is refused, not left half open.
                    {
                        let mut r = lock(&self.router);
                        r.close(id, circuit);
                        self.gauges(&r);
                    }
                    let reason = CloseReason::PeerGone;
                    self.send(id, ServerMsg::Closed { circuit, reason }.encode())
                        .await;
                    return;
                }
                self.send(id, ServerMsg::Opened { circuit }.encode()).await;
            }
            Err(reason) => {
                match reason {
                    CloseReason::NoPeer => self.metrics.open_no_peer.fetch_add(1, Relaxed),
                    CloseReason::CircuitLimit => self.metrics.open_limit.fetch_add(1, Relaxed),
                    _ => self.metrics.open_bad_circuit.fetch_add(1, Relaxed),
                };
                self.send(id, ServerMsg::Closed { circuit, reason }.encode())
                    .await;
            }
        }
    }

    /// Queues a DATA message for the other end of `circuit`, waiting at
    /// most [`RelayConfig::stall`] for room.
    async fn forward(&self, id: ConnId, circuit: u32, mut msg: Vec<u8>) {
        use std::sync::atomic::Ordering::Relaxed;
        let route = lock(&self.router).route(id, circuit);
        let Some((peer, pc)) = route else {
            // Closed while this was in flight: dropped, as TCP drops data
            // after a reset.
            return;
        };
        let tx = lock(&self.conns).get(&peer).map(|c| c.tx.clone());
        let Some(tx) = tx else {
            return;
        };
        let len = (msg.len() - proto::DATA_HEADER) as u64;
        proto::rewrite_for_peer(&mut msg, pc);
        // Waits while the peer's queue is full: the sender's reading
        // pauses (its other circuits with it, as on one TCP connection);
        // a peer that makes no room within the stall bound is ended.
        if self.send_to(&tx, peer, msg).await {
            self.metrics.bytes_forwarded.fetch_add(len, Relaxed);
            self.metrics.frames_forwarded.fetch_add(1, Relaxed);
        }
    }

    async fn send_to(&self, tx: &mpsc::Sender<Out>, conn: ConnId, msg: Vec<u8>) -> bool {
        match tx.send_timeout(Out::Msg(msg), self.cfg.stall).await {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.metrics
                    .stalled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.end(conn, Refusal::Stalled);
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }

    /// Pauses reading this connection while it, or the relay in all, is
    /// over its byte rate.
    async fn pace(&self, bucket: &mut TokenBucket, len: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now();
        let mine = bucket.take(len, now);
        let all = { lock(&self.total).take(len, now) };
        if !mine.is_zero() {
            self.metrics.throttled_client.fetch_add(1, Relaxed);
        }
        if !all.is_zero() {
            self.metrics.throttled_total.fetch_add(1, Relaxed);
        }
        let wait = mine.max(all);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The next binary message, skipping pings; `None` when the connection
/// ends or sends anything else.
async fn next_binary<S>(source: &mut S) -> Option<Vec<u8>>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match source.next().await? {
            Ok(Message::Binary(b)) => return Some(Vec::from(b)),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}
