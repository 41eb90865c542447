//! The rendezvous client service on libp2p streams.
//!
//! A task owns the sans-IO [`rdv_client::Service`]; every request goes out on
//! its own stream (what every implementation accepts), with a timeout, and
//! its answer (or failure) is fed back to the service. Callers use the
//! [`Client`] handle from any task.

use std::time::Duration;

use bytes::Bytes;
use futures::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::Control;
use rdv_client::{CachedRegistration, ClientError, Event, RequestId, Service, Transmit};
use rdv_wire::{FrameDecoder, Message, Namespace, Timestamp, Ttl, decode};
use tokio::sync::{mpsc, oneshot};

use crate::io::{read_frame, send_and_close, write_message};

/// The largest answer the client reads by default: go-libp2p's rendezvous
/// writes messages up to 4 MiB (its `inet.MessageSizeMax`), so a DISCOVER
/// answer of a full page of large records can exceed 1 MiB.
pub const MAX_ANSWER_SIZE: usize = 4 * 1024 * 1024;

/// How the client driver behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The sans-IO service's settings (refresh, backoff, cache bounds).
    pub service: rdv_client::Config,
    /// Longest wait for a point to answer a request. Default 10 s.
    pub request_timeout: Duration,
    /// Seed for the service's jitter.
    pub seed: u64,
    /// Largest answer accepted. Default [`MAX_ANSWER_SIZE`] (4 MiB):
    /// go-libp2p's point writes DISCOVER answers up to that size.
    pub max_message_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            service: rdv_client::Config::default(),
            request_timeout: Duration::from_secs(10),
            seed: 0,
            max_message_size: MAX_ANSWER_SIZE,
        }
    }
}

enum Command {
    Register(
        PeerId,
        Namespace,
        Option<Ttl>,
        oneshot::Sender<Result<RequestId, ClientError>>,
    ),
    Unregister(PeerId, Namespace),
    Discover(
        PeerId,
        Option<Namespace>,
        Option<u64>,
        oneshot::Sender<Result<RequestId, ClientError>>,
    ),
    Cached(
        PeerId,
        Option<Namespace>,
        oneshot::Sender<Vec<CachedRegistration>>,
    ),
    SetRecords(Vec<Bytes>),
    Shutdown,
}

/// Handle to a running client driver.
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
}

/// The driver has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the rendezvous client has stopped")]
pub struct Stopped;

impl Client {
    /// Registers at `point` in `namespace`.
    pub async fn register(
        &self,
        point: PeerId,
        namespace: Namespace,
        ttl: Option<Ttl>,
    ) -> Result<RequestId, ClientError> {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Register(point, namespace, ttl, tx))
            .await;
        rx.await.unwrap_or(Err(ClientError::ShutDown))
    }

    /// Unregisters from `namespace` at `point`.
    pub async fn unregister(&self, point: PeerId, namespace: Namespace) {
        let _ = self
            .commands
            .send(Command::Unregister(point, namespace))
            .await;
    }

    /// Asks `point` for registrations (incrementally: the cached cookie is sent).
    pub async fn discover(
        &self,
        point: PeerId,
        namespace: Option<Namespace>,
        limit: Option<u64>,
    ) -> Result<RequestId, ClientError> {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Discover(point, namespace, limit, tx))
            .await;
        rx.await.unwrap_or(Err(ClientError::ShutDown))
    }

    /// The unexpired registrations cached for (`point`, `namespace`).
    pub async fn cached(
        &self,
        point: PeerId,
        namespace: Option<Namespace>,
    ) -> Result<Vec<CachedRegistration>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Cached(point, namespace, tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Replaces the signed records to register with.
    pub async fn set_records(&self, records: Vec<Bytes>) {
        let _ = self.commands.send(Command::SetRecords(records)).await;
    }

    /// Stops refreshing; queued UNREGISTERs still go out. The event stream
    /// ends with [`Event::ShutDown`].
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    /// The next event; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

/// Starts a client driver on `control` registering with `records` (signed
/// envelopes, most preferred first).
pub fn spawn(control: Control, config: ClientConfig, records: Vec<Bytes>) -> Client {
    let (commands, command_rx) = mpsc::channel(64);
    let (event_tx, events) = mpsc::channel(1024);
    let mut service = Service::new(config.service.clone(), config.seed);
    service.set_signed_records(records);
    // Announce (through identify's protocol list) that we read both record
    // formats. Nothing is ever served on it: streams are dropped. The
    // listener lives as long as the swarm (its stream ends with it), not as
    // long as this client, so a second client on the same swarm, which finds
    // it registered already, keeps the announcement after the first stops.
    if let Ok(mut marker) = control
        .clone()
        .accept(StreamProtocol::new(crate::READS_ALL_RECORD_FORMATS))
    {
        tokio::spawn(async move {
            use futures::StreamExt;
            while marker.next().await.is_some() {}
        });
    }
    tokio::spawn(drive(control, config, service, command_rx, event_tx));
    Client { commands, events }
}

type Outcome = (RequestId, Result<Message, String>);

async fn drive(
    control: Control,
    config: ClientConfig,
    mut service: Service,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(256);
    let mut sends = tokio::task::JoinSet::new();
    loop {
        while let Some(t) = service.poll_transmit() {
            sends.spawn(send(control.clone(), config.clone(), t, done_tx.clone()));
        }
        while let Some(e) = service.poll_event() {
            let last = matches!(e, Event::ShutDown);
            if last {
                // Let what is on its way (a last UNREGISTER) arrive; each
                // send is bounded by the request timeout. Answers are no
                // longer wanted: closing their queue keeps senders from
                // waiting on it.
                done_rx.close();
                while sends.join_next().await.is_some() {}
            }
            let gone = events.send(e).await.is_err();
            if last || (gone && service.is_shut_down()) {
                return;
            }
        }
        let deadline = service.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep(t.saturating_duration_since(Timestamp::now())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => {
                let now = Timestamp::now();
                match cmd {
                    None | Some(Command::Shutdown) => service.shutdown(),
                    Some(Command::Register(p, ns, ttl, reply)) => { let _ = reply.send(service.register(p, ns, ttl, now)); }
                    Some(Command::Unregister(p, ns)) => service.unregister(p, ns, now),
                    Some(Command::Discover(p, ns, limit, reply)) => { let _ = reply.send(service.discover(p, ns, limit, now)); }
                    Some(Command::Cached(p, ns, reply)) => { let _ = reply.send(service.cached(&p, ns.as_ref(), now)); }
                    Some(Command::SetRecords(r)) => service.set_signed_records(r),
                }
            }
            Some(_) = sends.join_next(), if !sends.is_empty() => {}
            Some((id, outcome)) = done_rx.recv() => {
                let now = Timestamp::now();
                match outcome {
                    Ok(message) => service.handle_response(id, message, now),
                    Err(reason) => service.handle_failure(id, &reason, now),
                }
            }
            _ = sleep => service.handle_timeout(Timestamp::now()),
        }
    }
}

/// Sends one message on a new stream and, for a request, reads the answer.
async fn send(
    mut control: Control,
    config: ClientConfig,
    t: Transmit,
    done: mpsc::Sender<Outcome>,
) {
    let exchange = async {
        let mut stream = control
            .open_stream(t.point, StreamProtocol::new(rdv_wire::PROTOCOL_ID))
            .await
            .map_err(|e| format!("cannot open a rendezvous stream to {}: {e}", t.point))?;
        if t.request.is_none() {
            send_and_close(&mut stream, &t.message, config.request_timeout)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
        write_message(&mut stream, &t.message)
            .await
            .map_err(|e| e.to_string())?;
        let mut decoder = FrameDecoder::new(config.max_message_size);
        let frame = read_frame(&mut stream, &mut decoder, config.request_timeout)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the point closed the stream without answering".to_string())?;
        let _ = stream.close().await;
        decode(&frame)
            .map(Some)
            .map_err(|e| format!("the point's answer is malformed: {e}"))
    };
    let result = tokio::time::timeout(config.request_timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", config.request_timeout)));
    if let Some(id) = t.request {
        let outcome = result.and_then(|m| m.ok_or_else(|| "no answer".to_string()));
        let _ = done.send((id, outcome)).await;
    } else if let Err(e) = result {
        tracing::debug!(point = %t.point, error = %e, "UNREGISTER not delivered");
    }
}
