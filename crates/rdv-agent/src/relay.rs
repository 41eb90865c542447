//! The member's relay client (issue 11): one WebSocket connection to the
//! context's designated relay, authenticated with the epoch's grant key,
//! carrying any number of circuits. Each circuit is handed to the channel
//! layer as an ordinary byte stream (a `tokio::io::DuplexStream`), so the
//! Noise handshake and the `SecureChannel` frames run over it unchanged,
//! end to end: the relay forwards ciphertext.
//!
//! Flow: the reader task dispatches DATA to per-circuit bounded queues
//! (waiting when one is full, which stops reading the socket: TCP pushes
//! back to the relay, which stalls the sender's circuit); each circuit has
//! a task copying its stream's writes into DATA messages on the writer's
//! bounded queue. A ping every [`KEEPALIVE`] keeps the relay's idle
//! timer and NAT mappings fresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rdv_relay::proto::{self, ClientMsg, CloseReason, ServerMsg};
use rdv_relay::{GrantKey, RelayToken, grant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How often the client pings the relay.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// A relay connection on which nothing (not even a pong) arrives for this
/// long is dead (a NAT mapping expired, the relay vanished): closed, so the
/// member stops advertising it and reconnects.
pub const DEAD_AFTER: Duration = Duration::from_secs(60);
/// A circuit whose reader takes no data for this long is closed, so one
/// slow consumer cannot stop the link's other circuits.
const CIRCUIT_STALL: Duration = Duration::from_secs(5);
/// Bytes buffered inside one circuit's stream pair.
const CIRCUIT_BUFFER: usize = 256 * 1024;
/// Incoming circuits waiting for the agent to take them.
const INCOMING_QUEUE: usize = 16;

/// Why the relay could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No TCP connection or WebSocket upgrade.
    #[error("cannot reach the relay at {addr}: {reason}")]
    Unreachable {
        /// The relay's address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The relay did not prove it holds the token's authority.
    #[error("the relay at {0} is not the one its token names (challenge signature wrong)")]
    Impostor(std::net::SocketAddr),
    /// The relay closed the connection, with its code and reason.
    #[error("the relay refused: {reason} (close code {code})")]
    Refused {
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// A malformed answer or none in time.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    /// The OPEN was refused or the connection ended.
    #[error("circuit refused: {0}")]
    Circuit(CloseReason),
    /// The link is down.
    #[error("the relay connection is closed")]
    Closed,
}

/// A circuit another member opened to this one.
#[derive(Debug)]
pub struct Incoming {
    /// The opener's relay handle.
    pub from: [u8; 32],
    /// The byte stream.
    pub stream: DuplexStream,
}

#[derive(Default)]
struct Circuits {
    open: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    pending: HashMap<u32, oneshot::Sender<Result<(), CloseReason>>>,
}

/// A live connection to a relay.
pub struct RelayLink {
    token: RelayToken,
    out: mpsc::Sender<Vec<u8>>,
    circuits: Arc<Mutex<Circuits>>,
    next: AtomicU32,
    closed: Arc<AtomicBool>,
    /// Tells the writer to close the connection (on drop: the reader and
    /// the circuits hold the queue's other senders, so dropping ours alone
    /// would not end it).
    stop: Arc<tokio::sync::Notify>,
}

impl Drop for RelayLink {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl std::fmt::Debug for RelayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLink")
            .field("relay", &self.token.to_string())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next_binary(ws: &mut Ws) -> Result<Vec<u8>, RelayError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(Vec::from(b)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(Some(f)))) => {
                return Err(RelayError::Refused {
                    code: f.code.into(),
                    reason: f.reason.to_string(),
                });
            }
            Some(Ok(_)) => return Err(RelayError::Protocol("unexpected message".into())),
            Some(Err(e)) => return Err(RelayError::Protocol(e.to_string())),
            None => return Err(RelayError::Closed),
        }
    }
}

impl RelayLink {
    /// Connects to the relay `token` names, checks it is that relay,
    /// proves `grant` and claims `handle`. Returns the link and the
    /// circuits other members open to this one.
    pub async fn connect(
        token: RelayToken,
        grant: &GrantKey,
        handle: [u8; 32],
        timeout: Duration,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), RelayError> {
        let addr = token.addr;
        let unreachable = |reason: String| RelayError::Unreachable { addr, reason };
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let config = WebSocketConfig::default()
            .max_message_size(Some(proto::MAX_MESSAGE))
            .max_frame_size(Some(proto::MAX_MESSAGE))
            .write_buffer_size(0);
        let (mut ws, _) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::client_async_with_config(token.url(), tcp, Some(config)),
        )
        .await
        .map_err(|_| unreachable("no WebSocket upgrade in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| RelayError::Protocol(e.to_string()))?;
        let steps = async {
            ws.send(Message::Binary(ClientMsg::Hello { nonce }.encode().into()))
                .await
                .map_err(|e| RelayError::Protocol(e.to_string()))?;
            let m = next_binary(&mut ws).await?;
            let Ok(ServerMsg::Challenge {
                nonce: relay_nonce,
                sig,
            }) = ServerMsg::decode(&m)
            else {
                return Err(RelayError::Protocol("expected CHALLENGE".into()));
            };
            if !grant::verify(
                token.authority.as_bytes(),
                &grant::challenge_message(&nonce, &relay_nonce),
                &sig,
            ) {
                return Err(RelayError::Impostor(addr));
            }
            let sig = grant.sign_auth(&token.authority, &nonce, &relay_nonce, &handle);
            let auth = ClientMsg::Auth {
                grant: grant.public(),
                handle,
                sig,
            };
            ws.send(Message::Binary(auth.encode().into()))
                .await
                .map_err(|e| RelayError::Protocol(e.to_string()))?;
            match ServerMsg::decode(&next_binary(&mut ws).await?) {
                Ok(ServerMsg::Welcome) => Ok(()),
                _ => Err(RelayError::Protocol("expected WELCOME".into())),
            }
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| RelayError::Protocol("no answer in time".into()))??;
        let (mut sink, mut source) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let circuits = Arc::new(Mutex::new(Circuits::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval(KEEPALIVE);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.notified() => break,
                    m = out_rx.recv() => match m {
                        Some(m) => if sink.send(Message::Binary(m.into())).await.is_err() { break },
                        None => break,
                    },
                    _ = ping.tick() => if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break },
                }
            }
            let _ = sink.close().await;
        });
        let reader = Reader {
            out: out.clone(),
            circuits: circuits.clone(),
            incoming: in_tx,
            closed: closed.clone(),
        };
        tokio::spawn(async move {
            while let Ok(Some(Ok(msg))) = tokio::time::timeout(DEAD_AFTER, source.next()).await {
                let Message::Binary(b) = msg else {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                    continue;
                };
                if !reader.dispatch(&b).await {
                    break;
                }
            }
            reader.closed.store(true, Ordering::Relaxed);
            let mut c = lock(&reader.circuits);
            c.open.clear();
            for (_, p) in c.pending.drain() {
                let _ = p.send(Err(CloseReason::PeerGone));
            }
        });
        Ok((
            Self {
                token,
                out,
                circuits,
                next: AtomicU32::new(1),
                closed,
                stop,
            },
            in_rx,
        ))
    }

    /// The relay this link reaches.
    pub fn token(&self) -> RelayToken {
        self.token
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.out.is_closed()
    }

    /// Opens a circuit to the member holding `to` on this relay, within
    /// `timeout`.
    pub async fn open(&self, to: [u8; 32], timeout: Duration) -> Result<DuplexStream, RelayError> {
        if self.is_closed() {
            return Err(RelayError::Closed);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) % proto::RELAY_CIRCUITS;
        let (tx, rx) = oneshot::channel();
        lock(&self.circuits).pending.insert(id, tx);
        // The stream exists before OPEN is sent: the peer may answer with
        // data before OPENED arrives.
        let stream = make_circuit(id, &self.circuits, &self.out);
        self.out
            .send(ClientMsg::Open { circuit: id, to }.encode())
            .await
            .map_err(|_| RelayError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(stream),
            Ok(Ok(Err(reason))) => Err(RelayError::Circuit(reason)),
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => {
                lock(&self.circuits).pending.remove(&id);
                Err(RelayError::Protocol("no OPENED in time".into()))
            }
        }
    }

    /// Tells the relay to refuse `old` (an earlier epoch's grant) from now
    /// on: a member removed by the epoch advance loses its access.
    pub async fn retire(&self, old: &GrantKey) -> Result<(), RelayError> {
        let msg = ClientMsg::Retire {
            grant: old.public(),
            sig: old.sign_retire(&self.token.authority),
        };
        self.out
            .send(msg.encode())
            .await
            .map_err(|_| RelayError::Closed)
    }
}

/// Makes circuit `id`'s stream pair and its two pumps; returns the end
/// the channel layer uses.
fn make_circuit(
    id: u32,
    circuits: &Arc<Mutex<Circuits>>,
    out: &mpsc::Sender<Vec<u8>>,
) -> DuplexStream {
    let (app, ours) = tokio::io::duplex(CIRCUIT_BUFFER);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    lock(circuits).open.insert(id, tx);
    let up = out.clone();
    let table = circuits.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; proto::MAX_PAYLOAD];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = ClientMsg::Data {
                        circuit: id,
                        payload: &buf[..n],
                    };
                    if up.send(m.encode()).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Our side finished writing (or dropped the stream): close.
        lock(&table).open.remove(&id);
        let _ = up.send(ClientMsg::Close { circuit: id }.encode()).await;
    });
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if wr.write_all(&p).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    app
}

struct Reader {
    out: mpsc::Sender<Vec<u8>>,
    circuits: Arc<Mutex<Circuits>>,
    incoming: mpsc::Sender<Incoming>,
    closed: Arc<AtomicBool>,
}

impl Reader {
    /// Handles one message; false ends the link.
    async fn dispatch(&self, b: &[u8]) -> bool {
        let Ok(m) = ServerMsg::decode(b) else {
            return false;
        };
        match m {
            ServerMsg::Data { circuit, payload } => {
                let tx = lock(&self.circuits).open.get(&circuit).cloned();
                if let Some(tx) = tx
                    && tx
                        .send_timeout(payload.to_vec(), CIRCUIT_STALL)
                        .await
                        .is_err()
                {
                    // Gone, or not reading: close this circuit rather than
                    // hold every other one behind it.
                    lock(&self.circuits).open.remove(&circuit);
                    let _ = self.out.try_send(ClientMsg::Close { circuit }.encode());
                }
            }
            ServerMsg::Opened { circuit } => {
                if let Some(p) = lock(&self.circuits).pending.remove(&circuit) {
                    let _ = p.send(Ok(()));
                }
            }
            ServerMsg::Closed { circuit, reason } => {
                let mut c = lock(&self.circuits);
                c.open.remove(&circuit);
                if let Some(p) = c.pending.remove(&circuit) {
                    let _ = p.send(Err(reason));
                }
            }
            ServerMsg::Incoming { circuit, from } => {
                let stream = make_circuit(circuit, &self.circuits, &self.out);
                if let Err(e) = self.incoming.try_send(Incoming { from, stream }) {
                    // Nobody takes circuits this fast: refuse it.
                    drop(e);
                    lock(&self.circuits).open.remove(&circuit);
                    let _ = self.out.try_send(ClientMsg::Close { circuit }.encode());
                }
            }
            ServerMsg::Challenge { .. } | ServerMsg::Welcome => return false,
        }
        true
    }
}
