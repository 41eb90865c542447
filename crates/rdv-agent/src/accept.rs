//! The TCP accept loop of a member (issue 13, item 4: denial of service on
//! accept).
//!
//! What a stranger can make a member spend, and the bound on each:
//!
//! * **Sockets that say nothing.** Message 1 is read with no lock held
//!   ([`tcp::read_init`]), so an idle socket delays nobody else; it holds
//!   one half-open slot until the handshake deadline.
//! * **Half-open slots.** At most [`AcceptLimits::per_ip`] per source
//!   address and [`AcceptLimits::total`] in all; a connection over either
//!   bound is closed at once, before a byte is read.
//! * **Cryptography.** A message 1 whose `mac1` is not under this member's
//!   static key is dropped before the shared lock is taken and before any
//!   X25519 work (one keyed hash); only messages from someone who knows the
//!   key reach the lock, where the handshake runs in well under a
//!   millisecond with no wait on the network.
//!
//! Refusals write nothing (silence helps a scanner least) and are counted
//! in [`AcceptStats`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use rdv_channel::tcp::{self, Endpoint, RekeyProvider, TcpChannel, TcpConfig, TcpError};
use rdv_context::journal::JournalStore;
use rdv_context::{Capabilities, GuardSnapshot};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::sync::Node;

/// Bounds of the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Half-open handshakes (accepted, message 2 not yet written) per
    /// source IP address. Default 8.
    pub per_ip: usize,
    /// Half-open handshakes in all. Default 256.
    pub total: usize,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            per_ip: 8,
            total: 256,
        }
    }
}

/// Counters of the accept loop (what became of each connection).
#[derive(Debug, Default)]
pub struct AcceptStats {
    /// Closed at once: the source address had `per_ip` half-open.
    pub refused_per_ip: AtomicU64,
    /// Closed at once: `total` half-open in all.
    pub refused_total: AtomicU64,
    /// Message 1 not addressed to this member (mac1), dropped before the lock.
    pub refused_mac1: AtomicU64,
    /// Read failed: nothing in time, oversized, malformed, closed.
    pub failed_read: AtomicU64,
    /// The handshake was refused (stranger, wrong PSK, guard, replay).
    pub refused_handshake: AtomicU64,
    /// Channels established.
    pub accepted: AtomicU64,
}

/// Half-open slots per address and in all. Sans-IO: no clock, no socket.
#[derive(Debug)]
pub struct HalfOpen {
    limits: AcceptLimits,
    inner: std::sync::Mutex<HalfOpenCounts>,
}

#[derive(Debug, Default)]
struct HalfOpenCounts {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Why [`HalfOpen::enter`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This address has `per_ip` half-open.
    PerIp,
    /// `total` half-open in all.
    Total,
}

/// A held half-open slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<HalfOpen>,
    ip: IpAddr,
}

impl HalfOpen {
    /// Slots under `limits`.
    pub fn new(limits: AcceptLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Default::default(),
        })
    }
    fn counts(&self) -> std::sync::MutexGuard<'_, HalfOpenCounts> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Takes a slot for `ip`, or says which bound is reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut c = self.counts();
        if c.total >= self.limits.total {
            return Err(Full::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.per_ip {
            return Err(Full::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            gate: self.clone(),
            ip,
        })
    }
    /// Half-open slots held now, (for `ip`, in all).
    pub fn held(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts();
        (c.per_ip.get(&ip).copied().unwrap_or(0), c.total)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts channels on `listener` for the member `node` until the task is
/// dropped, handing each established channel to `channels` (bounded: when
/// the receiver lags, the accept of that connection waits, not the loop).
/// `rekey` makes the rotation provider of each new channel.
pub async fn accept_loop<S>(
    listener: TcpListener,
    node: Arc<Mutex<Node<S>>>,
    limits: AcceptLimits,
    config: TcpConfig,
    rekey: Arc<dyn Fn() -> RekeyProvider + Send + Sync>,
    channels: mpsc::Sender<TcpChannel>,
    stats: Arc<AcceptStats>,
) where
    S: JournalStore + Send + 'static,
{
    let gate = HalfOpen::new(limits);
    let mac1_key = node.lock().await.handshaker.mac1_key();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: do not spin on it.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match gate.enter(from.ip()) {
            Ok(s) => s,
            Err(full) => {
                let c = match full {
                    Full::PerIp => &stats.refused_per_ip,
                    Full::Total => &stats.refused_total,
                };
                c.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, ?full, "half-open bound: connection closed");
                continue;
            }
        };
        let (node, config, rekey, channels, stats) = (
            node.clone(),
            config.clone(),
            rekey.clone(),
            channels.clone(),
            stats.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match handshake(stream, &node, &mac1_key, &config, rekey(), &stats).await {
                Ok(ch) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    drop(_slot);
                    let _ = channels.send(ch).await;
                }
                Err(e) => tracing::debug!(%from, error = %e, "handshake refused"),
            }
        });
    }
}

async fn handshake<S: JournalStore>(
    mut stream: tokio::net::TcpStream,
    node: &Mutex<Node<S>>,
    mac1_key: &[u8; 32],
    config: &TcpConfig,
    rekey: RekeyProvider,
    stats: &AcceptStats,
) -> Result<TcpChannel, TcpError> {
    // No lock while the peer takes its time.
    let init = tcp::read_init(&mut stream, config).await.inspect_err(|_| {
        stats.failed_read.fetch_add(1, Ordering::Relaxed);
    })?;
    answer_init(stream, init, node, mac1_key, config, rekey, stats).await
}

/// Answers a message 1 already read from `stream` (with no lock held):
/// the mac1 pre-check, then, under the member's lock, one handshake's
/// cryptography. Refusals write nothing and are counted in `stats`.
pub async fn answer_init<S: JournalStore>(
    stream: tokio::net::TcpStream,
    init: rdv_context::HandshakeInit,
    node: &Mutex<Node<S>>,
    mac1_key: &[u8; 32],
    config: &TcpConfig,
    rekey: RekeyProvider,
    stats: &AcceptStats,
) -> Result<TcpChannel, TcpError> {
    if !init.mac1_matches(mac1_key) {
        stats.refused_mac1.fetch_add(1, Ordering::Relaxed);
        return Err(TcpError::Handshake(
            rdv_channel::handshake::HandshakeError::Mac1Mismatch,
        ));
    }
    let mut guard = node.lock().await;
    tcp::accept_init(stream, init, endpoint(&mut guard), config, rekey)
        .await
        .inspect_err(|_| {
            stats.refused_handshake.fetch_add(1, Ordering::Relaxed);
        })
}

/// The channel layer's view of a member (service, handshaker, books and
/// the guard snapshot now), for one handshake under the member's lock.
pub fn endpoint<S: JournalStore>(n: &mut Node<S>) -> Endpoint<'_, crate::sync::Books<S>> {
    let snapshot = snapshot(n);
    Endpoint {
        service: &mut n.service,
        handshaker: &mut n.handshaker,
        interpreter: &mut n.books,
        snapshot,
    }
}

/// The member's guard snapshot for its context now.
pub fn snapshot<S: JournalStore>(n: &Node<S>) -> GuardSnapshot {
    n.books.fx.ledger().snapshot(
        n.context.id(),
        n.service.authority(),
        n.context.epoch(),
        Capabilities::all(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_address_and_in_all_and_released_on_drop() {
        let gate = HalfOpen::new(AcceptLimits {
            per_ip: 2,
            total: 3,
        });
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        let s1 = gate.enter(a).ok();
        let s2 = gate.enter(a).ok();
        assert!(s1.is_some() && s2.is_some());
        assert_eq!(gate.enter(a).err(), Some(Full::PerIp));
        let s3 = gate.enter(b).ok();
        assert!(s3.is_some());
        assert_eq!(gate.enter(b).err(), Some(Full::Total));
        drop(s1);
        assert_eq!(gate.held(a), (1, 2));
        assert!(gate.enter(a).is_ok(), "a released slot is free again");
        drop((s2, s3));
        assert_eq!(gate.held(a), (0, 0));
    }
}
