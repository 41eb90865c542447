//! The Binding-only STUN server (RFC 8489 §6.3), without state per request.

use std::net::SocketAddr;
use std::time::Instant;

use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, ErrorCode, MessageIntegrity,
    MessageIntegritySha256, UnknownAttributes, XorMappedAddress,
};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageHeader, MessageWrite, MessageWriteExt,
    MessageWriteMutSlice,
};

use crate::limiter::{LimiterConfig, RateLimiter};

/// Unknown comprehension-required attribute types listed in a 420 answer at
/// most; more are truncated (RFC 8489 §14.9 does not require all of them).
pub(crate) const MAX_UNKNOWN: usize = 16;

/// Attribute types a Binding request may carry that this server understands
/// (RFC 8489 §18.3.1; SOFTWARE and FINGERPRINT are comprehension-optional).
/// MESSAGE-INTEGRITY(-SHA256) are understood and ignored: this server has no
/// credentials, and RFC 8489 §9 lets a server without authentication answer
/// without checking them.
const UNDERSTOOD: [AttributeType; 2] = [MessageIntegrity::TYPE, MessageIntegritySha256::TYPE];

/// The server's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerConfig {
    /// The per-source-address limit on answers.
    pub limiter: LimiterConfig,
}

/// Why a datagram got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Not a well-formed STUN message (bad header, length, attribute or
    /// FINGERPRINT). Never answered: answering garbage helps scanners.
    Malformed,
    /// A well-formed STUN message that is not a Binding request (a response,
    /// an indication, a TURN method...). RFC 8489 §6.3 has no answer for
    /// them on a Binding-only server.
    NotBinding,
    /// The source IP address has spent its tokens.
    RateLimited,
}

/// What [`StunServer::handle`] did with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A Binding success response of this many bytes is in the buffer.
    Answered(usize),
    /// A 420 (Unknown Attribute) error response of this many bytes is in the
    /// buffer (RFC 8489 §6.3.1.1).
    UnknownAttributes(usize),
    /// Nothing to send.
    Dropped(Drop),
}

impl Outcome {
    /// The bytes to send back to the source, if any.
    pub fn answer_len(self) -> Option<usize> {
        match self {
            Outcome::Answered(n) | Outcome::UnknownAttributes(n) => Some(n),
            Outcome::Dropped(_) => None,
        }
    }
}

/// Datagrams counted by outcome since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Binding success responses written.
    pub answered: u64,
    /// 420 error responses written.
    pub unknown_attributes: u64,
    /// Binding requests dropped by the rate limiter.
    pub rate_limited: u64,
    /// Datagrams that were not valid STUN.
    pub malformed: u64,
    /// Valid STUN messages other than Binding requests.
    pub non_binding: u64,
}

/// A Binding-only STUN server: one call per received datagram.
#[derive(Debug)]
pub struct StunServer {
    limiter: RateLimiter,
    counters: ServerCounters,
}

impl StunServer {
    /// A server with an empty rate-limit table (allocated here, once).
    pub fn new(config: ServerConfig) -> Self {
        Self {
            limiter: RateLimiter::new(config.limiter),
            counters: ServerCounters::default(),
        }
    }

    /// Handles one datagram `request` received from `from` at `now`, writing
    /// any answer into `out`. Never panics, and allocates nothing on the
    /// Binding path (the rare 420 answer may).
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &[u8],
        out: &mut [u8; crate::MAX_ANSWER],
    ) -> Outcome {
        let outcome = self.decide(now, from, request, out);
        let c = &mut self.counters;
        match outcome {
            Outcome::Answered(_) => c.answered += 1,
            Outcome::UnknownAttributes(_) => c.unknown_attributes += 1,
            Outcome::Dropped(Drop::Malformed) => c.malformed += 1,
            Outcome::Dropped(Drop::NotBinding) => c.non_binding += 1,
            Outcome::Dropped(Drop::RateLimited) => c.rate_limited += 1,
        }
        outcome
    }

    fn decide(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &[u8],
        out: &mut [u8; crate::MAX_ANSWER],
    ) -> Outcome {
        let Some(msg) = parse_datagram(request) else {
            return Outcome::Dropped(Drop::Malformed);
        };
        if !(msg.has_class(MessageClass::Request) && msg.has_method(BINDING)) {
            return Outcome::Dropped(Drop::NotBinding);
        }
        // Only answers spend tokens: they are what a spoofed source would
        // have reflected at a victim.
        if !self.limiter.allow(now, from.ip()) {
            return Outcome::Dropped(Drop::RateLimited);
        }
        // Collect unknown comprehension-required attributes in a fixed array.
        let mut unknown = [AttributeType::new(0); MAX_UNKNOWN];
        let mut n_unknown = 0;
        for (_, attr) in msg.iter_attributes() {
            let t = attr.get_type();
            if t.comprehension_required() && !UNDERSTOOD.contains(&t) && n_unknown < MAX_UNKNOWN {
                unknown[n_unknown] = t;
                n_unknown += 1;
            }
        }
        if n_unknown > 0 {
            return match write_420(&msg, &unknown[..n_unknown], out) {
                Some(n) => Outcome::UnknownAttributes(n),
                None => Outcome::Dropped(Drop::Malformed),
            };
        }
        match write_success(&msg, from, out) {
            Some(n) => Outcome::Answered(n),
            None => Outcome::Dropped(Drop::Malformed),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> ServerCounters {
        self.counters
    }

    /// Source addresses the rate limiter remembers.
    pub fn tracked_sources(&self) -> usize {
        self.limiter.len()
    }
}

/// Parses a datagram as one whole STUN message: the RFC 8489 §6.3 checks
/// (first two bits zero, magic cookie, a length that is a multiple of four
/// and is that of the datagram less the header, FINGERPRINT right when
/// present) and every attribute before MESSAGE-INTEGRITY/FINGERPRINT well
/// framed (attributes after those are ignored, RFC 8489 §14.5, §14.7).
pub(crate) fn parse_datagram(datagram: &[u8]) -> Option<Message<'_>> {
    let header = MessageHeader::from_bytes(datagram).ok()?;
    let len = usize::from(header.data_length());
    if len % 4 != 0 || MessageHeader::LENGTH + len != datagram.len() {
        return None;
    }
    Message::from_bytes(datagram).ok()
}

/// Writes the Binding success response (RFC 8489 §6.3.1.1): the request's
/// transaction id, XOR-MAPPED-ADDRESS of the source, FINGERPRINT (so that
/// the answer is told apart from other protocols on a shared socket, §7).
fn write_success(req: &Message<'_>, from: SocketAddr, out: &mut [u8]) -> Option<usize> {
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    let mut w = Message::builder_success(req, MessageWriteMutSlice::new(out));
    w.add_attribute(&XorMappedAddress::new(from, req.transaction_id()))
        .ok()?;
    w.add_fingerprint().ok()?;
    Some(w.finish())
}

/// Writes the 420 error response RFC 8489 §6.3.1.1 requires when a request
/// carries comprehension-required attributes the server does not know.
fn write_420(req: &Message<'_>, unknown: &[AttributeType], out: &mut [u8]) -> Option<usize> {
    let mut w = Message::builder_error(req, MessageWriteMutSlice::new(out));
    w.add_attribute(
        &ErrorCode::builder(ErrorCode::UNKNOWN_ATTRIBUTE)
            .build()
            .ok()?,
    )
    .ok()?;
    w.add_attribute(&UnknownAttributes::new(unknown)).ok()?;
    w.add_fingerprint().ok()?;
    Some(w.finish())
}
