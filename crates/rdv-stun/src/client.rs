//! The sans-IO STUN client: learns the reflexive address from several
//! servers, in the quinn-proto style.
//!
//! The owner feeds it datagrams ([`StunClient::handle_input`]), sends what
//! [`StunClient::poll_transmit`] returns, wakes it at
//! [`StunClient::poll_timeout`], and reads [`StunClient::poll_event`]. It
//! holds no socket, so the same client runs over a socket of its own or
//! over the STUN half of a socket shared with QUIC (see [`crate::classify`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::{Attribute, MappedSocketAddr, XorMappedAddress};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWriteExt, MessageWriteMutSlice,
    TransactionId,
};

use crate::server::parse_datagram;

/// A Binding request: header and FINGERPRINT (RFC 8489 §7 recommends it
/// when STUN shares a port with another protocol, as it does with QUIC).
const REQUEST_LEN: usize = 28;
/// The smallest retransmission timeout and re-query interval accepted.
const MIN_RTO: Duration = Duration::from_millis(1);
const MIN_REQUERY: Duration = Duration::from_secs(1);
/// The largest retransmission timeout and re-query interval accepted.
const MAX_RTO: Duration = Duration::from_secs(60);
const MAX_REQUERY: Duration = Duration::from_secs(86_400);
/// Events kept for the owner at most; older ones are dropped (and counted).
const MAX_EVENTS: usize = 256;
/// MAPPED-ADDRESS (RFC 8489 §14.1), read when a server of the RFC 3489 era
/// sends no XOR-MAPPED-ADDRESS.
const MAPPED_ADDRESS: u16 = 0x0001;

/// The client's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The STUN servers asked, each on its own schedule.
    pub servers: Vec<SocketAddr>,
    /// The first retransmission timeout (RFC 8489 §6.2.1: 500 ms).
    pub rto: Duration,
    /// Requests sent per transaction at most (RFC 8489 §6.2.1: Rc = 7).
    pub rc: u32,
    /// After the last request, wait `rm` times `rto` for an answer before the
    /// transaction fails (RFC 8489 §6.2.1: Rm = 16).
    pub rm: u32,
    /// The largest retransmission interval: doubling stops here (RFC 8489
    /// §6.2.1 allows an upper bound; 0 means none).
    pub max_rto: Duration,
    /// Time between queries of one server after its last answer or failure.
    pub requery_interval: Duration,
    /// Each interval is drawn uniformly from `interval * (1 ± jitter)`, so
    /// that many clients started together do not query in step. 0..=1.
    pub jitter: f64,
}

impl Default for ClientConfig {
    /// RFC 8489 §6.2.1's constants; a re-query every 60 s ± 20 %, which is
    /// below the 120 s that many NATs keep an idle UDP mapping, so the query
    /// also refreshes it.
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            rto: Duration::from_millis(500),
            rc: 7,
            rm: 16,
            max_rto: Duration::ZERO,
            requery_interval: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

/// What the client learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `server` answered with `addr`: the first answer of this server, or
    /// one with a different address than its previous answer.
    Reflexive {
        /// The reflexive (server-reflexive, RFC 8489 §3) transport address.
        addr: SocketAddr,
        /// The server that reported it.
        server: SocketAddr,
    },
    /// The reflexive address (the last one any server reported) changed.
    Changed {
        /// The address before.
        old: SocketAddr,
        /// The address now.
        new: SocketAddr,
    },
    /// A transaction with `server` got no usable answer: it timed out after
    /// Rc requests (RFC 8489 §6.2.1), or ended with an error response or a
    /// success without a mapped address.
    Failed {
        /// The server.
        server: SocketAddr,
    },
}

/// A datagram to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    bytes: [u8; REQUEST_LEN],
}

impl Transmit {
    /// The datagram's payload.
    pub fn contents(&self) -> &[u8] {
        &self.bytes
    }
}

/// Inputs counted by the client since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Requests handed out by `poll_transmit`, retransmissions included.
    pub requests: u64,
    /// Responses accepted (right transaction id from the right address).
    pub accepted: u64,
    /// Well-formed STUN messages dropped: unknown transaction id, a known one
    /// from another address than its server's, or not a Binding response.
    pub stray: u64,
    /// Datagrams that were not valid STUN.
    pub malformed: u64,
    /// Transactions that failed.
    pub failed: u64,
    /// Events dropped because the owner did not read them.
    pub events_dropped: u64,
}

#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    /// Requests sent so far (the first included).
    sent: u32,
    /// The interval before the next retransmission.
    interval: Duration,
    /// When the next request goes out, or (after the Rc-th) when the
    /// transaction fails.
    due: Instant,
}

#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    txn: Option<Transaction>,
    /// A request waits for `poll_transmit`.
    pending: bool,
    /// When the next transaction starts (ignored while one runs).
    next_query: Instant,
    last: Option<SocketAddr>,
}

/// The sans-IO STUN client. See the module documentation.
#[derive(Debug)]
pub struct StunClient {
    config: ClientConfig,
    servers: Vec<Server>,
    rng: blake3::OutputReader,
    events: VecDeque<Event>,
    current: Option<SocketAddr>,
    counters: ClientCounters,
}

impl StunClient {
    /// A client that queries every server from `now` on. `seed` must be
    /// fresh randomness (from the operating system in a process, fixed in
    /// tests): transaction ids derive from it, and RFC 8489 §6 wants them
    /// unpredictable so that an off-path host cannot forge an answer.
    ///
    /// Out-of-range settings are brought into range rather than refused:
    /// `rto` to 1 ms ..= 1 min and `requery_interval` to 1 s ..= 1 day (a
    /// zero would make the owner's timer loop spin, a huge value overflow
    /// `Instant`), `jitter` to 0 ..= 1 (0 when not a number).
    pub fn new(mut config: ClientConfig, seed: [u8; 32], now: Instant) -> Self {
        config.rto = config.rto.clamp(MIN_RTO, MAX_RTO);
        config.max_rto = config.max_rto.min(MAX_RTO);
        config.rc = config.rc.clamp(1, 64);
        config.rm = config.rm.min(1000);
        config.requery_interval = config.requery_interval.clamp(MIN_REQUERY, MAX_REQUERY);
        config.jitter = if config.jitter.is_finite() {
            config.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let key = blake3::derive_key("rdv stun client v1 transaction ids", &seed);
        let servers = config
            .servers
            .iter()
            .map(|&addr| Server {
                addr: canonical(addr),
                txn: None,
                pending: false,
                next_query: now,
                last: None,
            })
            .collect();
        Self {
            config,
            servers,
            rng: blake3::Hasher::new_keyed(&key).finalize_xof(),
            events: VecDeque::new(),
            current: None,
            counters: ClientCounters::default(),
        }
    }

    /// Feeds a datagram received at `now` from `from`. Only a Binding
    /// response with the transaction id of a running transaction and sent
    /// from that transaction's server is used; anything else is dropped and
    /// counted, never answered.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(msg) = parse_datagram(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        let from = canonical(from);
        let id = msg.transaction_id();
        let Some(server) = self
            .servers
            .iter_mut()
            .find(|s| s.addr == from && s.txn.as_ref().is_some_and(|t| t.id == id))
        else {
            self.counters.stray += 1;
            return;
        };
        if !msg.has_method(BINDING) || !msg.is_response() {
            self.counters.stray += 1;
            return;
        }
        self.counters.accepted += 1;
        server.txn = None;
        server.pending = false;
        server.next_query = now + jittered(&mut self.rng, &self.config);
        let mapped = if msg.has_class(MessageClass::Success) && !has_unknown_required(&msg) {
            mapped_address(&msg)
        } else {
            // An error response (a Binding request has no credentials to
            // retry with), or a success this client must not use (RFC 8489
            // §6.3.3 on unknown comprehension-required attributes).
            None
        };
        let server_addr = server.addr;
        let Some(addr) = mapped else {
            self.counters.failed += 1;
            push(
                &mut self.events,
                &mut self.counters,
                Event::Failed {
                    server: server_addr,
                },
            );
            return;
        };
        if server.last != Some(addr) {
            server.last = Some(addr);
            push(
                &mut self.events,
                &mut self.counters,
                Event::Reflexive {
                    addr,
                    server: server_addr,
                },
            );
        }
        match self.current.replace(addr) {
            Some(old) if old != addr => push(
                &mut self.events,
                &mut self.counters,
                Event::Changed { old, new: addr },
            ),
            _ => {}
        }
    }

    /// Runs the timers due at `now`: starts queries, schedules
    /// retransmissions, fails transactions that ran out of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (rto, rc, rm, max_rto) = (
            self.config.rto,
            self.config.rc,
            self.config.rm,
            self.config.max_rto,
        );
        for server in &mut self.servers {
            match &mut server.txn {
                Some(txn) if now >= txn.due => {
                    if txn.sent >= rc {
                        server.txn = None;
                        server.pending = false;
                        server.next_query = now + jittered(&mut self.rng, &self.config);
                        self.counters.failed += 1;
                        let server = server.addr;
                        push(
                            &mut self.events,
                            &mut self.counters,
                            Event::Failed { server },
                        );
                    } else {
                        txn.sent += 1;
                        server.pending = true;
                        txn.interval = next_interval(txn.interval, max_rto);
                        txn.due = if txn.sent >= rc {
                            now + rto * rm
                        } else {
                            now + txn.interval
                        };
                    }
                }
                Some(_) => {}
                None if now >= server.next_query => {
                    let mut id = [0u8; 16];
                    self.rng.fill(&mut id);
                    // The top 32 bits of the u128 are the magic cookie in
                    // the header; stun-types keeps the low 96 bits.
                    let id = TransactionId::from(u128::from_be_bytes(id) & ((1 << 96) - 1));
                    server.txn = Some(Transaction {
                        id,
                        sent: 1,
                        interval: rto,
                        due: if rc <= 1 { now + rto * rm } else { now + rto },
                    });
                    server.pending = true;
                }
                None => {}
            }
        }
    }

    /// The next datagram to send at `now`, if any (runs due timers first).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.handle_timeout(now);
        let server = self.servers.iter_mut().find(|s| s.pending)?;
        server.pending = false;
        let id = server.txn.as_ref()?.id;
        let mut bytes = [0u8; REQUEST_LEN];
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Request, BINDING),
            id,
            MessageWriteMutSlice::new(&mut bytes),
        );
        w.add_fingerprint().ok()?;
        self.counters.requests += 1;
        Some(Transmit {
            destination: server.addr,
            bytes,
        })
    }

    /// When [`StunClient::handle_timeout`] (or `poll_transmit`) must run
    /// next; `None` when there are no servers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers
            .iter()
            .map(|s| s.txn.as_ref().map_or(s.next_query, |t| t.due))
            .min()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queries every server that has no transaction running at once, e.g.
    /// when the local address or the network changed.
    pub fn requery(&mut self, now: Instant) {
        for s in &mut self.servers {
            if s.txn.is_none() {
                s.next_query = now;
            }
        }
    }

    /// The reflexive address last reported by any server.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.current
    }

    /// The counters so far.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }
}

/// RFC 8489 §6.2.1: the first retransmission after RTO, then each interval
/// doubles (500 ms, 1 s, 2 s, ...: requests at 0, 0.5, 1.5, 3.5 s ... with
/// RTO 500 ms), up to `max_rto` when that is not zero, and never past an
/// hour (with up to 64 requests, doubling would otherwise overflow time).
fn next_interval(interval: Duration, max_rto: Duration) -> Duration {
    let doubled = interval.saturating_mul(2).min(Duration::from_secs(3600));
    if max_rto.is_zero() {
        doubled
    } else {
        doubled.min(max_rto)
    }
}

fn push(events: &mut VecDeque<Event>, counters: &mut ClientCounters, event: Event) {
    if events.len() >= MAX_EVENTS {
        events.pop_front();
        counters.events_dropped += 1;
    }
    events.push_back(event);
}

/// `interval * (1 ± jitter)`, uniformly.
fn jittered(rng: &mut blake3::OutputReader, config: &ClientConfig) -> Duration {
    let mut b = [0u8; 8];
    rng.fill(&mut b);
    // 53 random bits as a float in [0, 1).
    let unit = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    // `jitter` is within 0..=1 (see `StunClient::new`): a factor in 0..=2.
    config
        .requery_interval
        .mul_f64(1.0 - config.jitter + 2.0 * config.jitter * unit)
}

/// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (RFC 8489 §14.1, for servers of
/// the RFC 3489 era).
fn mapped_address(msg: &Message<'_>) -> Option<SocketAddr> {
    if let Ok(x) = msg.attribute::<XorMappedAddress>() {
        return Some(x.addr(msg.transaction_id()));
    }
    let raw = msg.raw_attribute(MAPPED_ADDRESS.into())?;
    MappedSocketAddr::from_raw(&raw).ok().map(|m| m.addr())
}

/// Whether a response carries comprehension-required attributes this client
/// does not know (RFC 8489 §6.3.3: it is then not used).
fn has_unknown_required(msg: &Message<'_>) -> bool {
    const KNOWN: [u16; 6] = [
        MAPPED_ADDRESS,
        0x0008, // MESSAGE-INTEGRITY
        0x0009, // ERROR-CODE
        0x000A, // UNKNOWN-ATTRIBUTES
        0x001C, // MESSAGE-INTEGRITY-SHA256
        0x0020, // XOR-MAPPED-ADDRESS
    ];
    msg.iter_attributes().any(|(_, a)| {
        let t = a.get_type();
        t.comprehension_required() && !KNOWN.contains(&t.value())
    })
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
