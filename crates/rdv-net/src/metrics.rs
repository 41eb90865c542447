//! Counters for a point, rendered in the Prometheus text format.
//!
//! Plain atomics rather than a metrics crate: a handful of counters and one
//! histogram, read by a scrape every few seconds.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdv_point::store::StoreStats;
use rdv_wire::{MessageKind, ResponseStatus};

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

    /// Renders every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP rdv_build_info The running rdv, by version.\n# TYPE rdv_build_info gauge\nrdv_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "rdv_registrations",
            "Registrations held by the point.",
            self.registrations.load(Relaxed),
        );
        gauge(
            "rdv_namespaces",
            "Namespaces with at least one registration.",
            self.namespaces.load(Relaxed),
        );
        gauge(
            "rdv_record_bytes",
            "Bytes of stored signed peer records.",
            self.record_bytes.load(Relaxed),
        );
        gauge(
            "rdv_connections",
            "Open libp2p connections.",
            self.connections.load(Relaxed),
        );
        gauge(
            "rdv_streams_active",
            "Rendezvous streams being served.",
            self.streams_active.load(Relaxed),
        );
        gauge(
            "rdv_point_queue",
            "Requests waiting for the point thread.",
            self.point_queue.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP rdv_requests_total Requests by type and the status answered (OK for UNREGISTER)."
        );
        let _ = writeln!(out, "# TYPE rdv_requests_total counter");
        for (k, (kname, _)) in KINDS.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let v = self.requests[k][s].load(Relaxed);
                let _ = writeln!(
                    out,
                    "rdv_requests_total{{type=\"{kname}\",status=\"{}\"}} {v}",
                    status.name()
                );
            }
        }
        let counters = [
            (
                "rdv_malformed_total",
                "Streams closed because they carried no rendezvous message.",
                &self.malformed,
            ),
            (
                "rdv_streams_refused_total",
                "Streams refused because too many were open.",
                &self.streams_refused,
            ),
            (
                "rdv_inbound_queue_refused_total",
                "Streams dropped on arrival because the queue to the point was full (stream_queue).",
                &*self.inbound_refused,
            ),
            (
                "rdv_store_failures_total",
                "Store operations that failed (answered E_UNAVAILABLE or E_INTERNAL_ERROR).",
                &self.store_failures,
            ),
            (
                "rdv_verification_skipped_total",
                "REGISTERs whose signed record was in the verification cache (the same bytes checked before), so no signature check ran.",
                &self.verify_skipped,
            ),
            (
                "rdv_store_write_batches_total",
                "Batches of REGISTERs handed to the store (one transaction each on a durable store).",
                &self.write_batches,
            ),
            (
                "rdv_store_batched_registers_total",
                "REGISTERs in those batches, refused ones included (their ratio is the group-commit size).",
                &self.batched_registers,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.stun.render(&mut out);
        self.relay.render(&mut out);
        let name = "rdv_verification_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to verify a signed peer record.\n# TYPE {name} histogram"
        );
        for (i, bound) in VERIFY_BUCKETS_US.iter().enumerate() {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.verify_buckets[i].load(Relaxed)
            );
        }
        let count = self.verify_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.verify_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
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

    fn render(&self, out: &mut String) {
        let name = "rdv_stun_datagrams_total";
        let _ = writeln!(
            out,
            "# HELP {name} Datagrams received by the STUN server, by what became of them.\n# TYPE {name} counter"
        );
        for (result, v) in [
            ("answered", &self.answered),
            ("unknown_attributes", &self.unknown_attributes),
            ("rate_limited", &self.rate_limited),
            ("malformed", &self.malformed),
            ("non_binding", &self.non_binding),
        ] {
            let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", v.load(Relaxed));
        }
        let name = "rdv_stun_io_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed receives and sends on the STUN socket.\n# TYPE {name} counter\n{name} {}",
            self.io_errors.load(Relaxed)
        );
    }
}
