//! The TCP accept loop of a member (issue 13, item 4: denial of service on
//! accept).
//!
//! What a stranger can make a member spend, and the bound on each:
//!
//! * **Sockets that say nothing.** Message 1 is read with no lock held
//!   ([`tcp::read_init`]), so an idle socket delays nobody else; it holds
//!   one half-open slot until the handshake deadline.
//! * **Half-open slots.** At most [`AcceptLimits::per_ip`] per source
//!   address (IPv6 per /64) and [`AcceptLimits::total`] in all; a
//!   connection over either bound is closed at once, before a byte is
//!   read. Idle sockets from enough addresses (32 IPv4 addresses or /64s
//!   at the defaults) fill the total; a *proven* source (below) then takes
//!   a slot from a second pool of the same size, so members that opened a
//!   channel to this member lately, or hold one open, are not locked out
//!   by them.
//! * **Cryptography.** A message 1 whose `mac1` is not under this member's
//!   static key is dropped before the shared lock is taken and before any
//!   X25519 work (one keyed hash); only messages from someone who knows the
//!   key reach the lock, where the handshake runs in well under a
//!   millisecond with no wait on the network.
//! * **Cryptography by someone who knows the key.** mac1 stops strangers,
//!   not a member or anyone a member's card or descriptor reached. What
//!   such a sender can force (an X25519 operation and the member's lock per
//!   message 1) is bounded per source address (IPv6 per /64) and in all by
//!   token buckets ([`CryptoGate`]); over the bound the connection is
//!   closed before the lock. This is where WireGuard sends a cookie reply
//!   under load: its cookie proves the sender can receive at its source
//!   address, which UDP does not. Here every message 1 arrives on a TCP
//!   connection or a QUIC connection (whose handshake validates the
//!   address), so the source is already proven and the rate bound per
//!   source is what the cookie would buy.
//! * **Members behind a flood.** The total bound is shared, so enough
//!   flooding sources (50 at the default rates) would get members' own
//!   handshakes refused too. An address a channel was established from is
//!   *proven* for [`PROVEN_FOR`] ([`CryptoGate::prove`]; the member
//!   agent proves on the channel's first authenticated frame, so a
//!   replayed message 1 proves nothing; [`accept_loop`] here, a library
//!   loop that hands channels on unread, proves on the completed
//!   handshake): its messages 1
//!   are still bounded by their source's rate, and when the total is
//!   spent they draw on a second pool of the same size kept for proven
//!   sources, so members that opened a channel to this member lately (the
//!   agent renews the proof while a sync channel stays open) keep
//!   reconnecting through a flood of others, and all sources together
//!   stay within twice the total. (A member never seen from its address competes with the
//!   flood, as with WireGuard under load.)
//!
//! Refusals write nothing (silence helps a scanner least) and are counted
//! in [`AcceptStats`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use hashbrown::HashMap;
use rdv_channel::tcp::{self, Endpoint, RekeyProvider, TcpChannel, TcpConfig, TcpError};
use rdv_context::journal::JournalStore;
use rdv_context::{Capabilities, GuardSnapshot};
use rdv_net::ip_limits::AddrGroup;
use rdv_relay::TokenBucket;
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
    /// Messages 1 that passed mac1 and get their cryptography, per second
    /// per source address (IPv6: per /64). Default 10.
    pub crypto_per_source: u32,
    /// Burst of `crypto_per_source`. Default 20.
    pub crypto_burst_per_source: u32,
    /// Messages 1 that get their cryptography per second in all (the burst
    /// is the same number). Default 500.
    pub crypto_total: u32,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            per_ip: 8,
            total: 256,
            crypto_per_source: 10,
            crypto_burst_per_source: 20,
            crypto_total: 500,
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
    /// Message 1 over the cryptography rate of its source or of all
    /// ([`CryptoGate`]), dropped before the lock.
    pub refused_rate: AtomicU64,
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
    /// Per source address, IPv6 per /64 (as [`CryptoGate`] and its proof
    /// count them: a /64 is one host's or one household's).
    per_ip: HashMap<AddrGroup, usize>,
    total: usize,
    /// Slots proven sources hold beyond `total` (at most `total` more).
    proven_extra: usize,
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
    group: AddrGroup,
    /// Taken from the pool kept for proven sources.
    extra: bool,
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
    /// Takes a slot for `ip`, or says which bound is reached. A `proven`
    /// source ([`CryptoGate::prove`]: a channel was established from it
    /// lately) keeps its per-address bound; when the total is reached it
    /// takes a slot from a second pool of the same size kept for proven
    /// sources.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, proven: bool) -> Result<Slot, Full> {
        let mut c = self.counts();
        let extra = c.total >= self.limits.total;
        if extra && !(proven && c.proven_extra < self.limits.total) {
            return Err(Full::Total);
        }
        let group = AddrGroup::of(ip, 64);
        let n = c.per_ip.entry(group).or_insert(0);
        if *n >= self.limits.per_ip {
            return Err(Full::PerIp);
        }
        *n += 1;
        if extra {
            c.proven_extra += 1;
        } else {
            c.total += 1;
        }
        Ok(Slot {
            gate: self.clone(),
            group,
            extra,
        })
    }
    /// Half-open slots held now, (for `ip`'s address or /64, in all,
    /// proven sources' extra pool included).
    pub fn held(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts();
        let mine = c.per_ip.get(&AddrGroup::of(ip, 64)).copied();
        (mine.unwrap_or(0), c.total + c.proven_extra)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        if self.extra {
            c.proven_extra = c.proven_extra.saturating_sub(1);
        } else {
            c.total = c.total.saturating_sub(1);
        }
        if let Some(n) = c.per_ip.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.group);
            }
        }
    }
}

/// Sources whose buckets a [`CryptoGate`] keeps at most; past it, idle
/// ones (refilled to their burst) are forgotten, and a new source with
/// none forgotten is bounded by the total only.
const MAX_SOURCES: usize = 4096;

/// Why [`CryptoGate::admit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// The source address is over its rate.
    Source,
    /// All sources together are over the total rate.
    Total,
}

/// Token buckets on the message-1 cryptography: per source address and in
/// all. Sans-IO: time comes in as the offset from any fixed origin.
#[derive(Debug)]
pub struct CryptoGate {
    limits: AcceptLimits,
    inner: std::sync::Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    total: TokenBucket,
    sources: HashMap<AddrGroup, TokenBucket>,
    /// Source groups a channel was established from, and until when
    /// they count as proven.
    proven: HashMap<AddrGroup, Duration>,
    /// What proven sources may take when `total` is spent.
    proven_total: TokenBucket,
}

/// How long an address a channel was established from counts as proven
/// (drawing on the pool kept for proven sources when the total is spent;
/// its own bound always applies): 10 minutes, longer than agents wait
/// between reconnections. The member agent renews it every 5 minutes while
/// a sync channel from that address stays open.
pub const PROVEN_FOR: Duration = Duration::from_secs(600);

impl CryptoGate {
    /// Full buckets under `limits`, at time `now`.
    pub fn new(limits: AcceptLimits, now: Duration) -> Self {
        let total = u64::from(limits.crypto_total);
        Self {
            limits,
            inner: std::sync::Mutex::new(GateState {
                total: TokenBucket::new(total, total, now),
                sources: HashMap::new(),
                proven: HashMap::new(),
                proven_total: TokenBucket::new(total, total, now),
            }),
        }
    }

    /// Whether a message 1 from `ip` gets its cryptography at `now`; takes
    /// a token from its source's bucket and the total if so, none if not.
    /// A proven source ([`Self::prove`]) keeps its own bucket's bound; it
    /// takes from the total when a token is there (so strangers get fewer)
    /// and otherwise from the pool kept for proven sources.
    pub fn admit(&self, ip: IpAddr, now: Duration) -> Result<(), Throttled> {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let GateState {
            total,
            sources,
            proven,
            proven_total,
        } = &mut *g;
        let group = AddrGroup::of(ip, 64);
        let is_proven = proven.get(&group).is_some_and(|until| *until > now);
        if !sources.contains_key(&group) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, b| !b.is_full(now));
        }
        let (rate, burst) = (
            u64::from(self.limits.crypto_per_source),
            u64::from(self.limits.crypto_burst_per_source),
        );
        let source = if sources.len() < MAX_SOURCES {
            Some(
                sources
                    .entry(group)
                    .or_insert_with(|| TokenBucket::new(rate, burst, now)),
            )
        } else {
            sources.get_mut(&group)
        };
        let mut in_all =
            |now| total.try_take(1, now) || (is_proven && proven_total.try_take(1, now));
        let Some(source) = source else {
            // No bucket of its own (the table is full): the totals alone.
            return if in_all(now) {
                Ok(())
            } else {
                Err(Throttled::Total)
            };
        };
        if !source.try_take(1, now) {
            return Err(Throttled::Source);
        }
        if !in_all(now) {
            // Refused in all: the source's token was not used.
            source.refund(1);
            return Err(Throttled::Total);
        }
        Ok(())
    }

    /// Marks `ip`'s source group as proven until `now + PROVEN_FOR`: a
    /// channel was just established from it. The table of proven sources
    /// is bounded like the buckets: when full, expired entries go, and a
    /// new one that finds no room is not recorded.
    pub fn prove(&self, ip: IpAddr, now: Duration) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let group = AddrGroup::of(ip, 64);
        if !g.proven.contains_key(&group) && g.proven.len() >= MAX_SOURCES {
            g.proven.retain(|_, until| *until > now);
            if g.proven.len() >= MAX_SOURCES {
                return;
            }
        }
        g.proven.insert(group, now + PROVEN_FOR);
    }

    /// Whether `ip`'s source group is proven at `now`.
    pub fn is_proven(&self, ip: IpAddr, now: Duration) -> bool {
        let group = AddrGroup::of(ip, 64);
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .proven
            .get(&group)
            .is_some_and(|until| *until > now)
    }

    /// Sources with a bucket now.
    pub fn sources(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sources
            .len()
    }
}

/// A [`CryptoGate`] on the monotonic clock, as the accept loops use it.
#[derive(Debug)]
pub struct Throttle {
    gate: CryptoGate,
    origin: Instant,
}

impl Throttle {
    /// A gate under `limits`, starting now.
    pub fn new(limits: AcceptLimits) -> Arc<Self> {
        Arc::new(Self {
            gate: CryptoGate::new(limits, Duration::ZERO),
            origin: Instant::now(),
        })
    }

    /// [`CryptoGate::admit`] now, counting a refusal in `stats`.
    pub fn admit(&self, ip: IpAddr, stats: &AcceptStats) -> Result<(), Throttled> {
        self.gate.admit(ip, self.origin.elapsed()).inspect_err(|_| {
            stats.refused_rate.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// [`CryptoGate::prove`] now: a channel was established from `ip`.
    pub fn prove(&self, ip: IpAddr) {
        self.gate.prove(ip, self.origin.elapsed());
    }

    /// [`CryptoGate::is_proven`] now.
    pub fn is_proven(&self, ip: IpAddr) -> bool {
        self.gate.is_proven(ip, self.origin.elapsed())
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
    let throttle = Throttle::new(limits);
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
        let slot = match gate.enter(from.ip(), throttle.is_proven(from.ip())) {
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
        let (node, config, rekey, channels, stats, throttle) = (
            node.clone(),
            config.clone(),
            rekey.clone(),
            channels.clone(),
            stats.clone(),
            throttle.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let gates = Gates {
                mac1_key: &mac1_key,
                throttle: &throttle,
                from: from.ip(),
            };
            match handshake(stream, &node, gates, &config, rekey(), &stats).await {
                Ok(ch) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    throttle.prove(from.ip());
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
    gates: Gates<'_>,
    config: &TcpConfig,
    rekey: RekeyProvider,
    stats: &AcceptStats,
) -> Result<TcpChannel, TcpError> {
    // No lock while the peer takes its time.
    let init = tcp::read_init(&mut stream, config).await.inspect_err(|_| {
        stats.failed_read.fetch_add(1, Ordering::Relaxed);
    })?;
    answer_init(stream, init, node, gates, config, rekey, stats).await
}

/// The checks a message 1 passes before the member's lock: mac1 under the
/// member's key, then the cryptography rate of its source.
#[derive(Clone, Copy)]
pub struct Gates<'a> {
    /// The member's mac1 key.
    pub mac1_key: &'a [u8; 32],
    /// The rate bounds.
    pub throttle: &'a Throttle,
    /// Where the message 1 came from.
    pub from: IpAddr,
}

impl Gates<'_> {
    /// Whether `init` may have its cryptography; a refusal is counted.
    pub fn pass(
        &self,
        init: &rdv_context::HandshakeInit,
        stats: &AcceptStats,
    ) -> Result<(), TcpError> {
        use rdv_channel::handshake::HandshakeError;
        if !init.mac1_matches(self.mac1_key) {
            stats.refused_mac1.fetch_add(1, Ordering::Relaxed);
            return Err(TcpError::Handshake(HandshakeError::Mac1Mismatch));
        }
        self.throttle.admit(self.from, stats).map_err(|t| {
            TcpError::Io(std::io::Error::other(format!(
                "message 1 over the cryptography rate ({t:?})"
            )))
        })
    }
}

/// Answers a message 1 already read from `stream` (with no lock held):
/// the pre-checks ([`Gates`]), then, under the member's lock, one
/// handshake's cryptography. Refusals write nothing and are counted in
/// `stats`.
pub async fn answer_init<S: JournalStore>(
    stream: tokio::net::TcpStream,
    init: rdv_context::HandshakeInit,
    node: &Mutex<Node<S>>,
    gates: Gates<'_>,
    config: &TcpConfig,
    rekey: RekeyProvider,
    stats: &AcceptStats,
) -> Result<TcpChannel, TcpError> {
    gates.pass(&init, stats)?;
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
            ..AcceptLimits::default()
        });
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        let s1 = gate.enter(a, false).ok();
        let s2 = gate.enter(a, false).ok();
        assert!(s1.is_some() && s2.is_some());
        assert_eq!(gate.enter(a, false).err(), Some(Full::PerIp));
        let s3 = gate.enter(b, false).ok();
        assert!(s3.is_some());
        assert_eq!(gate.enter(b, false).err(), Some(Full::Total));
        drop(s1);
        assert_eq!(gate.held(a), (1, 2));
        assert!(
            gate.enter(a, false).is_ok(),
            "a released slot is free again"
        );
        drop((s2, s3));
        assert_eq!(gate.held(a), (0, 0));
    }

    #[test]
    fn a_proven_source_gets_a_slot_when_strangers_hold_them_all() {
        let gate = HalfOpen::new(AcceptLimits {
            per_ip: 2,
            total: 4,
            ..AcceptLimits::default()
        });
        let strangers: Vec<Slot> = (2..4u8)
            .flat_map(|i| {
                let ip = IpAddr::from([127, 0, 0, i]);
                [
                    gate.enter(ip, false).unwrap(),
                    gate.enter(ip, false).unwrap(),
                ]
            })
            .collect();
        let member = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(gate.enter(member, false).err(), Some(Full::Total));
        // Proven: a slot from the second pool, its own bound still applies.
        let m1 = gate.enter(member, true).unwrap();
        let m2 = gate.enter(member, true).unwrap();
        assert_eq!(gate.enter(member, true).err(), Some(Full::PerIp));
        // Proven sources together take at most `total` more.
        let others: Vec<Slot> = (10..11u8)
            .flat_map(|i| {
                let ip = IpAddr::from([127, 0, 0, i]);
                [gate.enter(ip, true).unwrap(), gate.enter(ip, true).unwrap()]
            })
            .collect();
        assert_eq!(
            gate.enter(IpAddr::from([127, 0, 0, 11]), true).err(),
            Some(Full::Total)
        );
        drop((m1, m2, others));
        // Released into the pool they came from: strangers are still out.
        assert_eq!(
            gate.enter(IpAddr::from([127, 0, 0, 12]), false).err(),
            Some(Full::Total)
        );
        drop(strangers);
        assert_eq!(gate.held(member), (0, 0));
        assert!(gate.enter(IpAddr::from([127, 0, 0, 12]), false).is_ok());
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn cryptography_is_rated_per_source_and_in_all() {
        let gate = CryptoGate::new(
            AcceptLimits {
                crypto_per_source: 2,
                crypto_burst_per_source: 3,
                crypto_total: 5,
                ..AcceptLimits::default()
            },
            Duration::ZERO,
        );
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        let t0 = Duration::ZERO;
        assert!((0..3).all(|_| gate.admit(a, t0).is_ok()));
        assert_eq!(gate.admit(a, t0), Err(Throttled::Source));
        // Another source is not held back by the first...
        assert!(gate.admit(b, t0).is_ok());
        assert!(gate.admit(b, t0).is_ok());
        // ...until the total is spent; a refusal in all takes nothing from
        // the source (b still has its third token once the total refills).
        assert_eq!(gate.admit(b, t0), Err(Throttled::Total));
        assert_eq!(gate.admit(b, 200 * MS), Ok(()));
        // Half a second later: one more for a (2/s); the total has refilled
        // 2.5 and b took one at 200 ms.
        assert!(gate.admit(a, 500 * MS).is_ok());
        assert_eq!(gate.admit(a, 500 * MS), Err(Throttled::Source));
        // IPv6 sources are counted per /64.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let gate = CryptoGate::new(AcceptLimits::default(), t0);
        for i in 0..20 {
            assert!(gate.admit(v6(i), t0).is_ok());
        }
        assert_eq!(gate.admit(v6(99), t0), Err(Throttled::Source));
    }

    #[test]
    fn a_proven_source_is_not_refused_by_the_total() {
        let gate = CryptoGate::new(
            AcceptLimits {
                crypto_per_source: 2,
                crypto_burst_per_source: 2,
                crypto_total: 4,
                ..AcceptLimits::default()
            },
            Duration::ZERO,
        );
        let member = IpAddr::from([192, 0, 2, 1]);
        let t0 = Duration::ZERO;
        gate.prove(member, t0);
        // Others spend the whole total...
        for i in 0..4u8 {
            assert!(gate.admit(IpAddr::from([198, 51, 100, i]), t0).is_ok());
        }
        assert_eq!(
            gate.admit(IpAddr::from([198, 51, 100, 9]), t0),
            Err(Throttled::Total)
        );
        // ...and the proven member still gets through, up to its own rate.
        assert_eq!(gate.admit(member, t0), Ok(()));
        assert_eq!(gate.admit(member, t0), Ok(()));
        assert_eq!(gate.admit(member, t0), Err(Throttled::Source));
        // Once the proof has expired it waits for the total like anyone.
        let later = PROVEN_FOR + 1000 * MS;
        for i in 0..4u8 {
            assert!(gate.admit(IpAddr::from([203, 0, 113, i]), later).is_ok());
        }
        assert_eq!(gate.admit(member, later), Err(Throttled::Total));
    }

    #[test]
    fn proven_sources_together_stay_within_their_pool() {
        let gate = CryptoGate::new(
            AcceptLimits {
                crypto_total: 4,
                ..AcceptLimits::default()
            },
            Duration::ZERO,
        );
        let t0 = Duration::ZERO;
        let proven = |i: u8| IpAddr::from([192, 0, 2, i]);
        for i in 0..10 {
            gate.prove(proven(i), t0);
        }
        // The total (4), then the pool kept for proven sources (4): one
        // insider proven from many addresses cannot take more than both.
        let admitted = (0..10)
            .filter(|i| gate.admit(proven(*i), t0).is_ok())
            .count();
        assert_eq!(admitted, 8);
        assert_eq!(gate.admit(proven(0), t0), Err(Throttled::Total));
    }

    #[test]
    fn the_source_table_is_bounded_and_forgets_idle_sources() {
        let gate = CryptoGate::new(
            AcceptLimits {
                crypto_total: 1_000_000,
                ..AcceptLimits::default()
            },
            Duration::ZERO,
        );
        let ip = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        for i in 0..MAX_SOURCES as u32 + 100 {
            let _ = gate.admit(ip(i), Duration::ZERO);
        }
        assert_eq!(gate.sources(), MAX_SOURCES);
        // Two seconds later every bucket has refilled: a new source makes
        // room by forgetting them.
        assert!(gate.admit(ip(1 << 20), 2000 * MS).is_ok());
        assert_eq!(gate.sources(), 1);
    }
}
