//! Counters for a point, rendered in the OpenMetrics text format.
//!
//! Plain atomics updated on the hot paths (one relaxed add per event, no
//! lock or label lookup); a scrape copies them into families that
//! `prometheus-client` encodes ([`crate::exposition`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdv_point::store::StoreStats;
use rdv_wire::{MessageKind, ResponseStatus};

use crate::exposition::{Family, Value};

const KINDS: [(&str, MessageKind); 4] = [
    ("register", MessageKind::Register),
    ("unregister", MessageKind::Unregister),
    ("discover", MessageKind::Discover),
    // Refused (rdv serves no subscriptions), counted so an operator sees
    // clients that ask.
    ("discover_subscribe", MessageKind::DiscoverSubscribe),
];
const STATUSES: [ResponseStatus; 8] = [
    ResponseStatus::Ok,
    ResponseStatus::InvalidNamespace,
    ResponseStatus::InvalidSignedPeerRecord,
    ResponseStatus::InvalidTtl,
    ResponseStatus::InvalidCookie,
    ResponseStatus::NotAuthorized,
    ResponseStatus::InternalError,
    ResponseStatus::Unavailable,
];
/// Upper bounds of the verification-time histogram, in microseconds.
const VERIFY_BUCKETS_US: [u64; 9] = [25, 50, 100, 250, 500, 1000, 5000, 10_000, 50_000];

/// Point counters. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 8]; KINDS.len()],
    malformed: AtomicU64,
    verify_buckets: [AtomicU64; 9],
    verify_count: AtomicU64,
    verify_sum_ns: AtomicU64,
    verify_skipped: AtomicU64,
    store_failures: AtomicU64,
    connections: AtomicU64,
    registrations: AtomicU64,
    namespaces: AtomicU64,
    record_bytes: AtomicU64,
    streams_active: AtomicU64,
    streams_refused: AtomicU64,
    inbound_refused: Arc<AtomicU64>,
    point_queue: AtomicU64,
    write_batches: AtomicU64,
    batched_registers: AtomicU64,
    stun: Arc<StunMetrics>,
    relay: Arc<rdv_relay::RelayMetrics>,
}

impl Metrics {
    /// Counts a request of `kind` answered with `status` (`Ok` when no answer is due).
    pub fn request(&self, kind: MessageKind, status: ResponseStatus) {
        let k = KINDS.iter().position(|(_, k)| *k == kind);
        let s = STATUSES.iter().position(|s| *s == status);
        if let (Some(k), Some(s)) = (k, s) {
            self.requests[k][s].fetch_add(1, Relaxed);
        }
    }

    /// Counts a stream closed because its bytes were not a rendezvous message.
    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Relaxed);
    }

    /// Records one signature verification.
    pub fn verified(&self, took: Duration) {
        let us = took.as_micros() as u64;
        for (i, bound) in VERIFY_BUCKETS_US.iter().enumerate() {
            if us <= *bound {
                self.verify_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.verify_count.fetch_add(1, Relaxed);
        self.verify_sum_ns
            .fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Counts a REGISTER whose record was in the verification cache.
    pub fn verification_skipped(&self) {
        self.verify_skipped.fetch_add(1, Relaxed);
    }

    /// Counts a store operation that failed (the point answered
    /// `E_UNAVAILABLE` or `E_INTERNAL_ERROR`).
    pub fn store_failed(&self) {
        self.store_failures.fetch_add(1, Relaxed);
    }

    /// Records the store's counts (after each batch of the point thread).
    pub fn set_store(&self, stats: StoreStats) {
        self.registrations
            .store(stats.registrations as u64, Relaxed);
        self.namespaces.store(stats.namespaces as u64, Relaxed);
        self.record_bytes.store(stats.record_bytes as u64, Relaxed);
    }

    /// Sets the number of open connections.
    pub fn set_connections(&self, n: u64) {
        self.connections.store(n, Relaxed);
    }

    pub(crate) fn stream_opened(&self) {
        self.streams_active.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        self.streams_active.fetch_sub(1, Relaxed);
    }

    /// The counter of streams the node's inbound queue refused because it
    /// was full (give it to [`crate::node::NodeConfig::inbound_refused`]).
    pub fn inbound_refused_counter(&self) -> Arc<AtomicU64> {
        self.inbound_refused.clone()
    }

    pub(crate) fn stream_refused(&self) {
        self.streams_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn job_queued(&self) {
        self.point_queue.fetch_add(1, Relaxed);
    }

    pub(crate) fn jobs_taken(&self, n: usize) {
        self.point_queue.fetch_sub(n as u64, Relaxed);
    }

    /// Records one store write of `n` REGISTERs (one transaction on a
    /// durable store).
    pub(crate) fn write_batch(&self, n: usize) {
        self.write_batches.fetch_add(1, Relaxed);
        self.batched_registers.fetch_add(n as u64, Relaxed);
    }

    /// The STUN server's counters (shared with its UDP loop, see
    /// [`crate::stun::serve`]); rendered with the rest.
    pub fn stun(&self) -> Arc<StunMetrics> {
        self.stun.clone()
    }

    /// The relay's counters (shared with [`crate::relay::serve`]);
    /// rendered with the rest.
    pub fn relay(&self) -> Arc<rdv_relay::RelayMetrics> {
        self.relay.clone()
    }

    /// Requests counted so far of `kind` with `status`.
    pub fn requests(&self, kind: MessageKind, status: ResponseStatus) -> u64 {
        let k = KINDS.iter().position(|(_, k)| *k == kind);
        let s = STATUSES.iter().position(|s| *s == status);
        match (k, s) {
            (Some(k), Some(s)) => self.requests[k][s].load(Relaxed),
            _ => 0,
        }
    }

    /// Renders every metric in the OpenMetrics text format
    /// ([`crate::exposition::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        crate::exposition::encode(self.families())
    }

    /// Every metric as of now, for [`crate::exposition::encode`].
    pub fn families(&self) -> Vec<Family> {
        let load = |a: &AtomicU64| a.load(Relaxed);
        let mut requests = Vec::with_capacity(KINDS.len() * STATUSES.len());
        for (k, (kname, _)) in KINDS.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                requests.push((
                    vec![("type", *kname), ("status", status.name())],
                    Value::Counter(load(&self.requests[k][s])),
                ));
            }
        }
        let mut families = vec![
            Family::by(
                "rdv_build_info",
                "The running rdv, by version.",
                "version",
                [(env!("CARGO_PKG_VERSION"), Value::Gauge(1))],
            ),
            gauge(
                "rdv_registrations",
                "Registrations held by the point.",
                &self.registrations,
            ),
            gauge(
                "rdv_namespaces",
                "Namespaces with at least one registration.",
                &self.namespaces,
            ),
            gauge(
                "rdv_record_bytes",
                "Bytes of stored signed peer records.",
                &self.record_bytes,
            ),
            gauge(
                "rdv_connections",
                "Open libp2p connections.",
                &self.connections,
            ),
            gauge(
                "rdv_streams_active",
                "Rendezvous streams being served.",
                &self.streams_active,
            ),
            gauge(
                "rdv_point_queue",
                "Requests waiting for the point thread.",
                &self.point_queue,
            ),
            Family {
                name: "rdv_requests",
                help: "Requests by type and the status answered (OK for UNREGISTER).",
                values: requests,
            },
            counter(
                "rdv_malformed",
                "Streams closed because they carried no rendezvous message.",
                &self.malformed,
            ),
            counter(
                "rdv_streams_refused",
                "Streams refused because too many were open.",
                &self.streams_refused,
            ),
            counter(
                "rdv_inbound_queue_refused",
                "Streams dropped on arrival because the queue to the point was full (stream_queue).",
                &self.inbound_refused,
            ),
            counter(
                "rdv_store_failures",
                "Store operations that failed (answered E_UNAVAILABLE or E_INTERNAL_ERROR).",
                &self.store_failures,
            ),
            counter(
                "rdv_verification_skipped",
                "REGISTERs whose signed record was in the verification cache (the same bytes checked before), so no signature check ran.",
                &self.verify_skipped,
            ),
            counter(
                "rdv_store_write_batches",
                "Batches of REGISTERs handed to the store (one transaction each on a durable store).",
                &self.write_batches,
            ),
            counter(
                "rdv_store_batched_registers",
                "REGISTERs in those batches, refused ones included (their ratio is the group-commit size).",
                &self.batched_registers,
            ),
        ];
        families.extend(self.stun.families());
        families.extend(relay_families(&self.relay));
        families.push(Family::one(
            "rdv_verification_seconds",
            "Time to verify a signed peer record.",
            Value::Histogram {
                sum: load(&self.verify_sum_ns) as f64 / 1e9,
                count: load(&self.verify_count),
                cumulative: VERIFY_BUCKETS_US
                    .iter()
                    .zip(&self.verify_buckets)
                    .map(|(bound, n)| (*bound as f64 / 1e6, load(n)))
                    .collect(),
            },
        ));
        families
    }
}

/// A gauge family of one unlabelled value, read from `a`.
fn gauge(name: &'static str, help: &'static str, a: &AtomicU64) -> Family {
    Family::one(name, help, Value::Gauge(a.load(Relaxed)))
}

/// A counter family of one unlabelled value, read from `a`.
fn counter(name: &'static str, help: &'static str, a: &AtomicU64) -> Family {
    Family::one(name, help, Value::Counter(a.load(Relaxed)))
}

/// The relay's counters (kept by the relay core) as families.
fn relay_families(r: &rdv_relay::RelayMetrics) -> Vec<Family> {
    let load = |a: &AtomicU64| a.load(Relaxed);
    vec![
        gauge("rdv_relay_clients", "Relay connections held.", &r.clients),
        gauge("rdv_relay_circuits", "Relay circuits open.", &r.circuits),
        counter(
            "rdv_relay_connections",
            "Relay WebSocket connections accepted.",
            &r.connections_total,
        ),
        counter(
            "rdv_relay_stalled",
            "Forwards that found the receiver not reading for the stall bound.",
            &r.stalled,
        ),
        counter(
            "rdv_relay_idle_closed",
            "Relay connections ended for idleness.",
            &r.idle_closed,
        ),
        counter(
            "rdv_relay_forwarded_bytes",
            "Payload bytes forwarded between circuit ends.",
            &r.bytes_forwarded,
        ),
        counter(
            "rdv_relay_forwarded_frames",
            "DATA messages forwarded.",
            &r.frames_forwarded,
        ),
        Family::by(
            "rdv_relay_refused",
            "Relay connections refused or ended, by reason.",
            "reason",
            r.refusals().map(|(reason, n)| (reason, Value::Counter(n))),
        ),
        Family::by(
            "rdv_relay_open_refused",
            "Circuit OPENs refused, by reason.",
            "reason",
            [
                ("no_peer", Value::Counter(load(&r.open_no_peer))),
                ("circuit_limit", Value::Counter(load(&r.open_limit))),
                ("bad_circuit", Value::Counter(load(&r.open_bad_circuit))),
            ],
        ),
        Family::by(
            "rdv_relay_throttled",
            "Pauses in reading a client because of a byte rate, by which.",
            "limit",
            [
                ("client", Value::Counter(load(&r.throttled_client))),
                ("total", Value::Counter(load(&r.throttled_total))),
            ],
        ),
    ]
}

/// Counters of the STUN server (`rdv point --stun-listen`): one per outcome
/// of a datagram, and socket errors.
#[derive(Default, Debug)]
pub struct StunMetrics {
    answered: AtomicU64,
    unknown_attributes: AtomicU64,
    rate_limited: AtomicU64,
    malformed: AtomicU64,
    non_binding: AtomicU64,
    io_errors: AtomicU64,
}

impl StunMetrics {
    /// Counts what became of one datagram.
    pub fn record(&self, outcome: rdv_stun::Outcome) {
        use rdv_stun::{Drop, Outcome};
        let counter = match outcome {
            Outcome::Answered(_) => &self.answered,
            Outcome::UnknownAttributes(_) => &self.unknown_attributes,
            Outcome::Dropped(Drop::RateLimited) => &self.rate_limited,
            Outcome::Dropped(Drop::Malformed) => &self.malformed,
            Outcome::Dropped(Drop::NotBinding) => &self.non_binding,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a failed receive or send.
    pub fn io_error(&self) {
        self.io_errors.fetch_add(1, Relaxed);
    }

    /// The counts so far, as the core's counter type.
    pub fn snapshot(&self) -> rdv_stun::ServerCounters {
        rdv_stun::ServerCounters {
            answered: self.answered.load(Relaxed),
            unknown_attributes: self.unknown_attributes.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            non_binding: self.non_binding.load(Relaxed),
        }
    }

    fn families(&self) -> [Family; 2] {
        let load = |a: &AtomicU64| Value::Counter(a.load(Relaxed));
        [
            Family::by(
                "rdv_stun_datagrams",
                "Datagrams received by the STUN server, by what became of them.",
                "result",
                [
                    ("answered", load(&self.answered)),
                    ("unknown_attributes", load(&self.unknown_attributes)),
                    ("rate_limited", load(&self.rate_limited)),
                    ("malformed", load(&self.malformed)),
                    ("non_binding", load(&self.non_binding)),
                ],
            ),
            Family::one(
                "rdv_stun_io_errors",
                "Failed receives and sends on the STUN socket.",
                load(&self.io_errors),
            ),
        ]
    }
}
