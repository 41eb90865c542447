//! Accepting `/rendezvous/1.0.0` streams into a queue the point drains.
//!
//! `libp2p-stream` hands each inbound stream over through a channel with a
//! single slot and drops the stream when that slot is taken, which loses
//! requests as soon as two arrive together. This behaviour queues up to a
//! configured number instead, and counts what it has to refuse.
//!
//! It also keeps a connection up for [`DEFAULT_LINGER`] after each
//! rendezvous stream, on a tokio timer. Clients open one stream per request;
//! without this, every request that ends leaves the connection idle, and
//! the swarm arms a fresh idle timer for it, a `futures-timer` delay whose
//! every creation wakes that crate's timer thread. Measured A/B under
//! `rdv bench` (register mix, 64 clients): 2-5 % less point CPU per
//! request. After the linger the swarm's own idle timeout applies as usual.
//! Needs a tokio runtime (the swarm's executor).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::{Endpoint, transport::PortUse};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant, Sleep};

/// How long a connection is kept up after its last rendezvous stream.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(10);

/// An inbound rendezvous stream and where it came from.
pub struct InboundStream {
    /// The remote peer.
    pub peer: PeerId,
    /// The remote address of the connection it arrived on (the bounds per
    /// address group are counted from it).
    pub remote: Multiaddr,
    /// The stream.
    pub stream: Stream,
}

/// Inbound rendezvous streams, in arrival order.
pub type Incoming = mpsc::Receiver<InboundStream>;

/// Accepts `/rendezvous/1.0.0` streams. Put it in the swarm's behaviour and
/// give the [`Incoming`] queue to [`crate::PointServer::run`].
pub struct Behaviour {
    queue: mpsc::Sender<InboundStream>,
    refused: Arc<AtomicU64>,
    linger: Duration,
}

impl Behaviour {
    /// A behaviour queueing up to `capacity` streams not yet picked up.
    pub fn new(capacity: usize) -> (Self, Incoming) {
        let (queue, incoming) = mpsc::channel(capacity.max(1));
        (
            Self {
                queue,
                refused: Arc::default(),
                linger: DEFAULT_LINGER,
            },
            incoming,
        )
    }

    /// Keeps connections up this long after their last rendezvous stream
    /// (default [`DEFAULT_LINGER`]; zero leaves it to the swarm's idle
    /// timeout alone).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Counts the streams refused because the queue was full in `counter`
    /// (shared with the point's metrics) instead of a counter of its own.
    pub fn counting_refusals_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.refused = counter;
        self
    }

    /// Streams refused because the queue was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    fn handler(&self, peer: PeerId, remote: &Multiaddr) -> Handler {
        Handler {
            peer,
            remote: remote.clone(),
            queue: self.queue.clone(),
            refused: self.refused.clone(),
            linger: self.linger,
            active_until: None,
            wake: None,
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, addr))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Per-connection half of [`Behaviour`].
pub struct Handler {
    peer: PeerId,
    remote: Multiaddr,
    queue: mpsc::Sender<InboundStream>,
    refused: Arc<AtomicU64>,
    linger: Duration,
    /// Keep-alive holds until then (the last stream plus the linger).
    active_until: Option<Instant>,
    /// Wakes the connection when the keep-alive ends, so the swarm looks
    /// at it again; reset (cheaply) on each stream.
    wake: Option<Pin<Box<Sleep>>>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(
            ReadyUpgrade::new(StreamProtocol::new(rdv_wire::PROTOCOL_ID)),
            (),
        )
    }

    fn connection_keep_alive(&self) -> bool {
        self.active_until.is_some_and(|t| Instant::now() < t)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(wake) = &mut self.wake
            && wake.as_mut().poll(cx).is_ready()
        {
            // Keep-alive is over; the swarm re-checks after this poll.
            self.wake = None;
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            (),
            Self::OutboundOpenInfo,
        >,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            if !self.linger.is_zero() {
                let until = Instant::now() + self.linger;
                self.active_until = Some(until);
                match &mut self.wake {
                    Some(wake) => wake.as_mut().reset(until),
                    None => self.wake = Some(Box::pin(tokio::time::sleep_until(until))),
                }
            }
            let inbound = InboundStream {
                peer: self.peer,
                remote: self.remote.clone(),
                stream,
            };
            if self.queue.try_send(inbound).is_err() {
                self.refused.fetch_add(1, Relaxed);
                tracing::debug!(peer = %self.peer, "rendezvous stream queue full; dropping a stream");
            }
        }
    }
}
