//! The relay's counters: updated by the driver, encoded with the point's
//! other metrics (rdv-net's exposition).

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

    /// Connections refused or ended so far, by reason label
    /// (`per_ip`, `full`, ...), for the metrics page.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REFUSALS
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (label(*r), n.load(Relaxed)))
    }
}
