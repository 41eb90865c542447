//! Tokio drivers for the sans-IO STUN core in `rdv-stun`.
//!
//! - [`serve`]: the STUN server's UDP loop (`rdv point --stun-listen`).
//! - [`drive_client`] / [`reflexive_address`]: a [`StunClient`] over a
//!   socket of its own. A member whose socket also carries QUIC feeds the
//!   client from its own demultiplexer instead ([`rdv_stun::classify`]); the
//!   client core has no socket in it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdv_stun::{ClientConfig, Event, Kind, MAX_ANSWER, ServerConfig, StunClient, StunServer};
use tokio::net::UdpSocket;

use crate::metrics::StunMetrics;

/// Datagrams larger than this are cut by `recv_from` and then fail the STUN
/// length check: a Binding request is 20 to a few hundred bytes.
const RECV_BUFFER: usize = 2048;

/// Serves STUN Binding requests on `socket` until `shutdown` completes.
/// Every datagram is counted in `metrics` by what became of it. Errors of
/// one datagram (a send refused by the kernel) are counted and skipped;
/// the loop only ends on `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    config: ServerConfig,
    metrics: Arc<StunMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut server = StunServer::new(config);
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut out = [0u8; MAX_ANSWER];
    tokio::pin!(shutdown);
    loop {
        let (n, from) = tokio::select! {
            _ = &mut shutdown => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    metrics.io_error();
                    tracing::debug!(error = %e, "stun: receive failed");
                    // A persistent error must not spin a core.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let outcome = server.handle(Instant::now(), from, &buf[..n], &mut out);
        metrics.record(outcome);
        if let Some(len) = outcome.answer_len()
            && let Err(e) = socket.send_to(&out[..len], from).await
        {
            metrics.io_error();
            tracing::debug!(error = %e, %from, "stun: send failed");
        }
    }
}

/// Why [`drive_client`] or [`reflexive_address`] stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The socket failed.
    #[error("STUN socket: {0}")]
    Io(#[from] io::Error),
    /// The deadline passed first.
    #[error("no STUN answer before the deadline")]
    Deadline,
    /// Every server's transaction failed.
    #[error("every STUN server failed")]
    AllFailed,
}

/// Runs `client` over `socket` (sending its requests, feeding it the STUN
/// datagrams received, waking it on its timer) and hands every event to
/// `on_event` until that breaks or `deadline` passes. Datagrams that are
/// not STUN are ignored.
pub async fn drive_client(
    socket: &UdpSocket,
    client: &mut StunClient,
    deadline: tokio::time::Instant,
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<(), DriveError> {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let now = Instant::now();
        while let Some(t) = client.poll_transmit(now) {
            // A lost request is what the retransmissions are for.
            if let Err(e) = socket.send_to(t.contents(), t.destination).await {
                tracing::debug!(error = %e, to = %t.destination, "stun: send failed");
            }
        }
        while let Some(event) = client.poll_event() {
            if on_event(event).is_break() {
                return Ok(());
            }
        }
        let wake = client
            .poll_timeout()
            .map(|at| tokio::time::Instant::from_std(at).min(deadline))
            .unwrap_or(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Err(DriveError::Deadline),
            _ = tokio::time::sleep_until(wake) => {}
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                if rdv_stun::classify(&buf[..n]) == Kind::Stun {
                    client.handle_input(Instant::now(), from, &buf[..n]);
                }
            }
        }
    }
}

/// The reflexive address of `socket` as the first of `servers` to answer
/// sees it, within `timeout`. `seed` must be fresh randomness (transaction
/// ids derive from it).
pub async fn reflexive_address(
    socket: &UdpSocket,
    servers: Vec<SocketAddr>,
    seed: [u8; 32],
    timeout: Duration,
) -> Result<SocketAddr, DriveError> {
    let n = servers.len();
    let config = ClientConfig {
        servers,
        ..ClientConfig::default()
    };
    let mut client = StunClient::new(config, seed, Instant::now());
    let (mut found, mut failed) = (None, 0);
    drive_client(
        socket,
        &mut client,
        tokio::time::Instant::now() + timeout,
        |event| match event {
            Event::Reflexive { addr, .. } => {
                found = Some(addr);
                ControlFlow::Break(())
            }
            Event::Failed { .. } => {
                failed += 1;
                if failed >= n {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Event::Changed { .. } => ControlFlow::Continue(()),
        },
    )
    .await?;
    found.ok_or(DriveError::AllFailed)
}
