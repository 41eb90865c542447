//! QUIC: the same Noise IKpsk2 handshake and [`SecureChannel`] as over
//! TCP, on the first bidirectional stream of a quinn connection, with one
//! UDP socket per member shared with STUN (issue 10, item 1).
//!
//! # Why Noise on top of QUIC's TLS
//!
//! QUIC always runs TLS 1.3; here it only gives congestion control, loss
//! recovery and NAT-friendly UDP. Each endpoint has a throwaway
//! self-signed certificate and accepts any: the authentication is the
//! Noise handshake under the context's pairwise PSK, as for every rdv
//! transport. So that a Noise session cannot be moved to another QUIC
//! connection (one a relay or middlebox terminates and re-originates), both
//! ends bind the handshake to *this* connection: the TLS exporter value
//! (RFC 5705, as RFC 9266 does for TLS 1.3 channel bindings) under the
//! label [`EXPORTER_LABEL`] goes into the Noise prologue
//! ([`crate::handshake::bound_prologue`]). A terminating middlebox holds
//! two TLS sessions with two exporter values, so message 1 does not open.
//!
//! # One socket, two protocols
//!
//! The member's UDP socket also serves STUN (the reflexive address must be
//! the one QUIC uses, or hole punching punches the wrong mapping).
//! [`Demux`] wraps quinn's socket: datagrams whose first byte says STUN
//! (RFC 7983 §7, RFC 9443 §3, checked by `rdv_stun::classify`) go to a
//! bounded queue the STUN client reads; QUIC packets go to quinn; anything
//! else is dropped and counted. [`StunSide::send`] writes STUN requests on
//! the same socket.
//!
//! # Refusals
//!
//! A connection whose message 1 fails (not a member, wrong mac1, garbage,
//! oversized, late) is closed with application error 0 and no reason: the
//! peer learns nothing but that the connection closed.

use std::fmt::Display;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rdv_context::{AuthorityId, EffectInterpreter, HandshakeComplete, HandshakeInit, Route};
use tokio::sync::mpsc;

use crate::tcp::{self, Endpoint, RekeyProvider, TcpChannel, TcpConfig, TcpError};

/// ALPN of rdv's member QUIC connections.
pub const ALPN: &[u8] = b"rdv-member/1";
/// The label of the exporter value bound into the Noise prologue.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-rdv-noise-channel-binding";
/// The server name both sides use (certificates are not checked).
const SERVER_NAME: &str = "rdv";
/// Keep-alive below the 20-30 s after which many NATs drop a UDP mapping.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A connection silent this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// STUN datagrams queued for the STUN client before new ones are dropped.
pub const STUN_QUEUE: usize = 64;

/// Why a QUIC step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The endpoint could not be set up.
    #[error("QUIC endpoint: {0}")]
    Setup(String),
    /// The connection failed or was closed.
    #[error("QUIC connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Dialling failed before any packet.
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake or channel failed.
    #[error(transparent)]
    Channel(#[from] TcpError),
    /// The exporter value could not be derived.
    #[error("TLS exporter unavailable")]
    Exporter,
    /// No answer in time.
    #[error("no QUIC connection within {0:?}")]
    Timeout(Duration),
}

/// Counters of the shared socket.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// STUN datagrams handed to the STUN queue.
    pub stun_in: AtomicU64,
    /// STUN datagrams dropped because the queue was full.
    pub stun_dropped: AtomicU64,
    /// Datagrams that were neither STUN nor QUIC.
    pub other_dropped: AtomicU64,
}

/// quinn's socket with STUN taken out (see the module docs).
#[derive(Debug)]
pub struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    stun: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    stats: Arc<SocketStats>,
}

impl AsyncUdpSocket for Demux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        // Bounded: each round either returns QUIC packets or consumes
        // datagrams from the kernel; Pending ends it.
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                let len = m.len.min(bufs[i].len());
                let first = &bufs[i][..len.min(m.stride.max(1))];
                match rdv_stun::classify(first) {
                    rdv_stun::Kind::Quic => {
                        if kept != i {
                            let (head, tail) = bufs.split_at_mut(i);
                            head[kept][..len].copy_from_slice(&tail[0][..len]);
                            meta[kept] = m;
                        }
                        kept += 1;
                    }
                    rdv_stun::Kind::Stun => {
                        let stride = if m.stride == 0 { len } else { m.stride };
                        for seg in bufs[i][..len].chunks(stride) {
                            match self.stun.try_send((m.addr, seg.to_vec())) {
                                Ok(()) => self.stats.stun_in.fetch_add(1, Ordering::Relaxed),
                                Err(_) => self.stats.stun_dropped.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }
                    rdv_stun::Kind::Other => {
                        self.stats.other_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The STUN side of the member's socket: datagrams in, requests out.
#[derive(Debug)]
pub struct StunSide {
    /// STUN datagrams received on the socket, with their source.
    pub incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    socket: Arc<dyn AsyncUdpSocket>,
}

impl StunSide {
    /// Sends one datagram on the member's socket (best effort: a full
    /// socket buffer drops it, and STUN retransmits).
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        };
        self.socket.try_send(&t)
    }
}

/// A member's QUIC endpoint on its UDP socket.
#[derive(Clone, Debug)]
pub struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    stats: Arc<SocketStats>,
}

impl QuicEndpoint {
    /// Serves and dials on `socket`, STUN taken out (see [`StunSide`]).
    pub fn bind(socket: std::net::UdpSocket) -> Result<(Self, StunSide), QuicError> {
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let inner = runtime
            .wrap_udp_socket(socket)
            .map_err(|e| QuicError::Setup(e.to_string()))?;
        let (tx, rx) = mpsc::channel(STUN_QUEUE);
        let stats = Arc::new(SocketStats::default());
        let demux = Arc::new(Demux {
            inner: inner.clone(),
            stun: tx,
            stats: stats.clone(),
        });
        let (server, client) = configs()?;
        // The socket is demultiplexed by the QUIC bit (RFC 9443 §3), so
        // peers must not grease it: RFC 9287 §3 lets an endpoint that
        // needs the bit leave out the grease_quic_bit transport parameter.
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.grease_quic_bit(false);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            demux,
            runtime,
        )
        .map_err(|e| QuicError::Setup(e.to_string()))?;
        Ok((
            Self {
                endpoint,
                client,
                stats,
            },
            StunSide {
                incoming: rx,
                socket: inner,
            },
        ))
    }

    /// The socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The shared socket's counters.
    pub fn stats(&self) -> &SocketStats {
        &self.stats
    }

    /// Opens a QUIC connection to `addr` (no Noise yet), within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<quinn::Connection, QuicError> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, SERVER_NAME)?;
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| QuicError::Timeout(timeout))?
            .map_err(QuicError::from)
    }

    /// The next incoming connection attempt (`None` once closed).
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Closes every connection and stops.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"");
    }
}

/// The value both ends bind into the Noise prologue.
pub fn channel_binding(conn: &quinn::Connection) -> Result<[u8; 32], QuicError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| QuicError::Exporter)?;
    Ok(out)
}

/// The first bidirectional stream of a connection, where the handshake and
/// then the channel run.
#[derive(Debug)]
pub struct BiStream {
    /// The sending half.
    pub send: quinn::SendStream,
    /// The receiving half.
    pub recv: quinn::RecvStream,
    /// The connection's binding value.
    pub binding: [u8; 32],
    /// The connection (kept so it can be closed on refusal).
    pub connection: quinn::Connection,
}

impl BiStream {
    /// Opens the stream on a connection this side dialled.
    pub async fn open(connection: quinn::Connection) -> Result<Self, QuicError> {
        let binding = channel_binding(&connection)?;
        let (send, recv) = connection.open_bi().await?;
        Ok(Self {
            send,
            recv,
            binding,
            connection,
        })
    }

    /// Accepts the stream on a connection this side accepted, within the
    /// handshake deadline.
    pub async fn accept(
        connection: quinn::Connection,
        config: &TcpConfig,
    ) -> Result<Self, QuicError> {
        let binding = channel_binding(&connection)?;
        let (send, recv) = tokio::time::timeout(config.handshake_timeout, connection.accept_bi())
            .await
            .map_err(|_| QuicError::Channel(TcpError::HandshakeTimedOut))??;
        Ok(Self {
            send,
            recv,
            binding,
            connection,
        })
    }

    /// Closes the connection without a reason (a refusal).
    pub fn refuse(&self) {
        self.connection.close(0u32.into(), b"");
    }
}

/// Initiator step 1 (under the member's lock): guard, charge and message 1
/// bound to `stream`'s connection.
pub fn begin_initiator<I>(
    ep: &mut Endpoint<'_, I>,
    peer: AuthorityId,
    stream: &BiStream,
    config: &TcpConfig,
) -> Result<HandshakeInit, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    ep.handshaker.set_channel_binding(Some(stream.binding));
    let r = tcp::begin_initiator(ep, peer, config);
    ep.handshaker.set_channel_binding(None);
    r
}

/// Initiator step 2 (no lock): message 1 out, message 2 in.
pub async fn exchange(
    stream: &mut BiStream,
    init: &HandshakeInit,
    config: &TcpConfig,
) -> Result<HandshakeComplete, TcpError> {
    tcp::exchange_on(&mut stream.recv, &mut stream.send, init, config).await
}

/// Initiator step 3 (under the lock): the channel over the stream.
pub fn complete_initiator<I>(
    stream: BiStream,
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
    let BiStream {
        send,
        recv,
        connection,
        ..
    } = stream;
    tcp::complete_initiator_on(
        Box::new(Keep::new(recv, connection)),
        Box::new(send),
        ep,
        peer,
        complete,
        config,
        rekey,
    )
}

/// Responder: reads message 1 (no lock needed).
pub async fn read_init(
    stream: &mut BiStream,
    config: &TcpConfig,
) -> Result<HandshakeInit, TcpError> {
    tcp::read_init(&mut stream.recv, config).await
}

/// Responder: answers message 1 under the member's lock, bound to the
/// stream's connection; the channel runs over the stream.
pub async fn accept_init<I>(
    stream: BiStream,
    init: HandshakeInit,
    ep: Endpoint<'_, I>,
    config: &TcpConfig,
    rekey: RekeyProvider,
) -> Result<TcpChannel, TcpError>
where
    I: EffectInterpreter,
    I::Error: Display,
{
    let BiStream {
        send,
        recv,
        binding,
        connection,
    } = stream;
    let Endpoint {
        service,
        handshaker,
        interpreter,
        snapshot,
    } = ep;
    handshaker.set_channel_binding(Some(binding));
    let ep = Endpoint {
        service,
        handshaker: &mut *handshaker,
        interpreter,
        snapshot,
    };
    let r = tcp::accept_init_on(
        Box::new(Keep::new(recv, connection.clone())),
        Box::new(send),
        init,
        ep,
        config,
        rekey,
        Route::Direct,
    )
    .await;
    handshaker.set_channel_binding(None);
    if r.is_err() {
        connection.close(0u32.into(), b"");
    }
    r
}

/// A receive stream that also holds its connection handle, so the
/// connection lives exactly as long as the channel's reader.
struct Keep {
    recv: quinn::RecvStream,
    _connection: quinn::Connection,
}

impl Keep {
    fn new(recv: quinn::RecvStream, connection: quinn::Connection) -> Self {
        Self {
            recv,
            _connection: connection,
        }
    }
}

impl tokio::io::AsyncRead for Keep {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

fn configs() -> Result<(quinn::ServerConfig, quinn::ClientConfig), QuicError> {
    // X25519 alone for QUIC's TLS key exchange. rustls prefers the hybrid
    // X25519MLKEM768, whose 1.2 KB key share splits the ClientHello over
    // two Initial packets and adds ML-KEM work to every dial. The TLS layer
    // here authenticates nothing (Noise IKpsk2 inside does, and its PSK,
    // derived from the context's epoch secret, keeps recorded channels
    // closed to whoever breaks X25519 later); it only hides the handshake
    // and frames from a passive observer.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(|e| QuicError::Setup(e.to_string()))?;
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der.into())
        .map_err(|e| QuicError::Setup(e.to_string()))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| QuicError::Setup(e.to_string()))?,
    ));
    // One bidirectional stream per connection is all a channel uses.
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    let transport = Arc::new(transport);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server)
            .map_err(|e| QuicError::Setup(e.to_string()))?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client)
            .map_err(|e| QuicError::Setup(e.to_string()))?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

/// Accepts any server certificate (the Noise handshake authenticates), but
/// still checks the TLS handshake signature against the certificate's key,
/// so the TLS layer itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is never offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
