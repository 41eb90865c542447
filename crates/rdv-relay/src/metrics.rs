//! The relay's counters: updated by the driver, rendered in Prometheus
//! text with the point's other metrics.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::router::Refusal;

/// Counters and gauges of one relay.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Connections held now.
    pub clients: AtomicU64,
    /// Circuits open now.
    pub circuits: AtomicU64,
    /// Connections accepted (WebSocket up) in all.
    pub connections_total: AtomicU64,
    refused: [AtomicU64; 9],
    /// OPENs refused: no such peer.
    pub open_no_peer: AtomicU64,
    /// OPENs refused: circuit limit.
    pub open_limit: AtomicU64,
    /// OPENs refused: a circuit id in use or in the relay's range.
    pub open_bad_circuit: AtomicU64,
    /// Forwards that found the receiver not reading for the stall bound
    /// (the receiver is then ended, `refused{reason="stalled"}`).
    pub stalled: AtomicU64,
    /// Connections ended for idleness.
    pub idle_closed: AtomicU64,
    /// DATA bytes forwarded.
    pub bytes_forwarded: AtomicU64,
    /// DATA messages forwarded.
    pub frames_forwarded: AtomicU64,
    /// Times a client's reading was paused by its byte rate.
    pub throttled_client: AtomicU64,
    /// Times reading was paused by the relay's total byte rate.
    pub throttled_total: AtomicU64,
}

const REFUSALS: [Refusal; 9] = [
    Refusal::PerIp,
    Refusal::Full,
    Refusal::Unauthorized,
    Refusal::Retired,
    Refusal::Protocol,
    Refusal::Replaced,
    Refusal::Stalled,
    Refusal::HandshakeTimeout,
    Refusal::TooBig,
];

fn label(r: Refusal) -> &'static str {
    match r {
        Refusal::PerIp => "per_ip",
        Refusal::Full => "full",
        Refusal::Unauthorized => "unauthorized",
        Refusal::Retired => "retired",
        Refusal::Protocol => "protocol",
        Refusal::Replaced => "replaced",
        Refusal::Stalled => "stalled",
        Refusal::HandshakeTimeout => "handshake_timeout",
        Refusal::TooBig => "too_big",
    }
}

impl RelayMetrics {
    /// Counts a connection refused or ended for `r`.
    pub fn refused(&self, r: Refusal) {
        if let Some(i) = REFUSALS.iter().position(|x| *x == r) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }
    /// Connections refused or ended for `r` so far.
    pub fn refused_count(&self, r: Refusal) -> u64 {
        REFUSALS
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| self.refused[i].load(Relaxed))
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut one = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        one(
            "rdv_relay_clients",
            "gauge",
            "Relay connections held.",
            &self.clients,
        );
        one(
            "rdv_relay_circuits",
            "gauge",
            "Relay circuits open.",
            &self.circuits,
        );
        one(
            "rdv_relay_connections_total",
            "counter",
            "Relay WebSocket connections accepted.",
            &self.connections_total,
        );
        one(
            "rdv_relay_stalled_total",
            "counter",
            "Forwards that found the receiver not reading for the stall bound.",
            &self.stalled,
        );
        one(
            "rdv_relay_idle_closed_total",
            "counter",
            "Relay connections ended for idleness.",
            &self.idle_closed,
        );
        one(
            "rdv_relay_forwarded_bytes_total",
            "counter",
            "Payload bytes forwarded between circuit ends.",
            &self.bytes_forwarded,
        );
        one(
            "rdv_relay_forwarded_frames_total",
            "counter",
            "DATA messages forwarded.",
            &self.frames_forwarded,
        );
        let name = "rdv_relay_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Relay connections refused or ended, by reason.\n# TYPE {name} counter"
        );
        for (i, r) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                label(*r),
                self.refused[i].load(Relaxed)
            );
        }
        let name = "rdv_relay_open_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Circuit OPENs refused, by reason.\n# TYPE {name} counter\n{name}{{reason=\"no_peer\"}} {}\n{name}{{reason=\"circuit_limit\"}} {}\n{name}{{reason=\"bad_circuit\"}} {}",
            self.open_no_peer.load(Relaxed),
            self.open_limit.load(Relaxed),
            self.open_bad_circuit.load(Relaxed)
        );
        let name = "rdv_relay_throttled_total";
        let _ = writeln!(
            out,
            "# HELP {name} Pauses in reading a client because of a byte rate, by which.\n# TYPE {name} counter\n{name}{{limit=\"client\"}} {}\n{name}{{limit=\"total\"}} {}",
            self.throttled_client.load(Relaxed),
            self.throttled_total.load(Relaxed)
        );
    }
}
