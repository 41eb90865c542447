//! Encoding (strict) and decoding (lenient) of rendezvous messages.
//!
//! Strict: every message carries `type`; every response carries `status`;
//! registrations in a DISCOVER_RESPONSE always carry `ns` and `ttl`. Some peers
//! (rust-libp2p) reject messages without them.
//!
//! Lenient: a missing `type` is inferred from the sub-message present, a
//! missing `status` means OK, and zero-valued `ttl`/`limit` count as absent.
//! Some peers (`@canvas-js/libp2p-rendezvous`) omit default-valued fields, so
//! a proto3-style encoder cannot distinguish `0` from "not set".
//!
//! Decoding walks the protobuf fields itself (see [`Fields`]) so that an error
//! inside a request names the field and the `E_*` status the point should
//! answer with, instead of failing the message as a whole.

use bytes::Bytes;
use libp2p_identity::PeerId;
use prost::Message as _;

use crate::proto;
use crate::types::*;
use crate::varint;

/// Why bytes could not be turned into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a protobuf message, or are truncated, in a place that
    /// says nothing about which request it was: there is nobody to answer.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    /// `type` names no message of `/rendezvous/1.0.0`. Not inferred from a
    /// sub-message alongside: an unknown type is not answered as a known one.
    #[error("message type {0} is not one of /rendezvous/1.0.0 (0..=4)")]
    UnknownType(u64),
    /// Neither `type` nor a sub-message is present.
    #[error("message has neither a type nor a body")]
    Empty,
    /// The kind of message is known but its content is invalid; a request of
    /// this kind is answered with `status`.
    #[error("invalid {kind:?}: {reason}")]
    Invalid {
        /// Kind of the offending message.
        kind: MessageKind,
        /// The status a point answers with.
        status: ResponseStatus,
        /// What was wrong, fit for `statusText`.
        reason: String,
    },
}

impl DecodeError {
    /// The response a point sends for this error, if the message was a
    /// request that gets one (REGISTER or DISCOVER).
    pub fn error_response(&self) -> Option<Message> {
        let DecodeError::Invalid {
            kind,
            status,
            reason,
        } = self
        else {
            return None;
        };
        match kind {
            MessageKind::Register => Some(Message::RegisterResponse(RegisterResponse::error(
                *status,
                reason.clone(),
            ))),
            MessageKind::Discover => Some(Message::DiscoverResponse(DiscoverResponse::error(
                *status,
                reason.clone(),
            ))),
            MessageKind::DiscoverSubscribe => Some(Message::DiscoverSubscribeResponse(
                DiscoverSubscribeResponse {
                    status: *status,
                    status_text: reason.clone(),
                },
            )),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- encoding

/// Encodes a message as protobuf bytes, without the length prefix.
pub fn encode(msg: &Message) -> Vec<u8> {
    to_proto(msg).encode_to_vec()
}

/// Length of [`encode`]'s output, without encoding.
pub fn encoded_len(msg: &Message) -> usize {
    to_proto(msg).encoded_len()
}

/// Bytes a registration adds to an encoded DISCOVER_RESPONSE (field key,
/// length prefix and body). Lets a point stay inside a message-size budget
/// without encoding twice.
pub fn registration_encoded_len(ns_len: usize, record_len: usize, ttl_secs: u64) -> usize {
    let body = 1
        + varint::len(ns_len as u64)
        + ns_len
        + 1
        + varint::len(record_len as u64)
        + record_len
        + 1
        + varint::len(ttl_secs);
    1 + varint::len(body as u64) + body
}

fn register_to_proto(ns: &Namespace, spr: &Bytes, ttl: Option<Ttl>) -> proto::Register {
    proto::Register {
        ns: Some(ns.as_str().as_bytes().to_vec()),
        signed_peer_record: Some(spr.clone()),
        ttl: ttl.map(Ttl::as_secs),
    }
}

fn to_proto(msg: &Message) -> proto::Message {
    let mut out = proto::Message {
        r#type: Some(kind_code(msg.kind())),
        ..Default::default()
    };
    match msg {
        Message::Register(r) => {
            out.register = Some(register_to_proto(
                &r.namespace,
                &r.signed_peer_record,
                r.ttl,
            ))
        }
        Message::RegisterResponse(r) => {
            out.register_response = Some(proto::RegisterResponse {
                status: Some(r.status.code()),
                status_text: non_empty(&r.status_text),
                ttl: r.ttl.map(Ttl::as_secs),
            })
        }
        Message::Unregister(u) => {
            out.unregister = Some(proto::Unregister {
                ns: Some(u.namespace.as_str().as_bytes().to_vec()),
                id: u.id.map(|id| id.to_bytes()),
            })
        }
        Message::Discover(d) => {
            out.discover = Some(proto::Discover {
                ns: d.namespace.as_ref().map(|n| n.as_str().as_bytes().to_vec()),
                limit: d.limit,
                cookie: d.cookie.as_ref().map(|c| c.as_bytes().to_vec()),
            })
        }
        Message::DiscoverResponse(d) => {
            out.discover_response = Some(proto::DiscoverResponse {
                registrations: d
                    .registrations
                    .iter()
                    .map(|r| register_to_proto(&r.namespace, &r.signed_peer_record, Some(r.ttl)))
                    .collect(),
                cookie: d.cookie.as_ref().map(|c| c.as_bytes().to_vec()),
                status: Some(d.status.code()),
                status_text: non_empty(&d.status_text),
            })
        }
        Message::DiscoverSubscribeResponse(d) => {
            out.discover_subscribe_response = Some(proto::DiscoverSubscribeResponse {
                status: Some(d.status.code()),
                status_text: non_empty(&d.status_text),
            })
        }
    }
    out
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn kind_code(kind: MessageKind) -> i32 {
    match kind {
        MessageKind::Register => proto::MessageType::Register as i32,
        MessageKind::RegisterResponse => proto::MessageType::RegisterResponse as i32,
        MessageKind::Unregister => proto::MessageType::Unregister as i32,
        MessageKind::Discover => proto::MessageType::Discover as i32,
        MessageKind::DiscoverResponse => proto::MessageType::DiscoverResponse as i32,
        MessageKind::DiscoverSubscribe => proto::MessageType::DiscoverSubscribe as i32,
        MessageKind::DiscoverSubscribeResponse => {
            proto::MessageType::DiscoverSubscribeResponse as i32
        }
    }
}

// ---------------------------------------------------------------- decoding

/// One protobuf field value.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// Iterates the fields of one protobuf message without knowing its schema.
struct Fields<'a> {
    buf: &'a [u8],
}

/// A field walk failed. `tag` is the field being read when it failed, if the
/// key itself was readable.
struct WalkError {
    tag: Option<u32>,
    what: &'static str,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.read_field())
    }
}

impl<'a> Fields<'a> {
    fn read_field(&mut self) -> Result<(u32, Value<'a>), WalkError> {
        let key = varint::decode(&mut self.buf).ok_or(WalkError {
            tag: None,
            what: "bad field key",
        })?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|t| *t > 0)
            .ok_or(WalkError {
                tag: None,
                what: "bad field number",
            })?;
        let err = |what| WalkError {
            tag: Some(tag),
            what,
        };
        let value = match key & 7 {
            0 => Value::Varint(varint::decode(&mut self.buf).ok_or(err("bad varint"))?),
            2 => {
                let len = varint::decode(&mut self.buf).ok_or(err("bad length"))?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= self.buf.len())
                    .ok_or(err("length runs past the end"))?;
                let (v, rest) = self.buf.split_at(len);
                self.buf = rest;
                Value::Len(v)
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if self.buf.len() < n {
                    return Err(err("truncated fixed field"));
                }
                self.buf = &self.buf[n..];
                Value::Fixed
            }
            _ => return Err(err("unsupported wire type")),
        };
        Ok((tag, value))
    }
}

/// Decodes protobuf bytes (no length prefix) into a validated [`Message`].
///
/// Never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut type_code = None;
    let mut subs: [Option<&[u8]>; 5] = [None; 5];
    // Known fields with the wrong wire type: remembered, not fatal yet, so
    // that a request whose kind is still clear gets an answer.
    let mut bad_type_field = false;
    let mut bad_subs = [false; 5];
    let mut subscribe_response = None;
    for field in (Fields { buf: bytes }) {
        let (tag, value) = field.map_err(|e| DecodeError::Malformed(e.what))?;
        match (tag, value) {
            (1, Value::Varint(v)) => type_code = Some(v),
            (2..=6, Value::Len(b)) => subs[tag as usize - 2] = Some(b),
            (101, Value::Len(b)) => subscribe_response = Some(b),
            (1, _) => bad_type_field = true,
            (2..=6, _) => bad_subs[tag as usize - 2] = true,
            _ => {} // unknown fields are skipped, as protobuf requires
        }
    }
    let kind = match type_code {
        // A type we do not know is not guessed from the sub-message: a
        // future message type may well carry a REGISTER-shaped body and
        // mean something else.
        Some(code) => match MessageKind::from_code(code) {
            // go-libp2p-rendezvous's original schema has subscriptions;
            // rdv serves none and says so, rather than closing the stream.
            Some(kind @ MessageKind::DiscoverSubscribe) => {
                return Err(invalid(
                    kind,
                    ResponseStatus::Unavailable,
                    "DISCOVER_SUBSCRIBE is not supported by this point: use DISCOVER",
                ));
            }
            Some(MessageKind::DiscoverSubscribeResponse) => {
                return decode_subscribe_response(subscribe_response.unwrap_or_default())
                    .map(Message::DiscoverSubscribeResponse);
            }
            Some(kind) => kind,
            None => return Err(DecodeError::UnknownType(code)),
        },
        None => {
            let mut present = subs.iter().enumerate().filter(|(_, s)| s.is_some());
            match (present.next(), present.next()) {
                (Some((i, _)), None) => {
                    MessageKind::from_code(i as u64).ok_or(DecodeError::Empty)?
                }
                (None, _) if bad_type_field || bad_subs.contains(&true) => {
                    return Err(DecodeError::Malformed(
                        "known field has the wrong wire type",
                    ));
                }
                (None, _) => return Err(DecodeError::Empty),
                (Some(_), Some(_)) => {
                    return Err(DecodeError::Malformed(
                        "no type and more than one sub-message",
                    ));
                }
            }
        }
    };
    if bad_type_field || bad_subs[kind_code(kind) as usize] {
        if !matches!(kind, MessageKind::Register | MessageKind::Discover) {
            // Nothing is answered to these: as before, a malformed message.
            return Err(DecodeError::Malformed(
                "known field has the wrong wire type",
            ));
        }
        // The request is known, its encoding is not: say so in an answer.
        return Err(invalid(
            kind,
            ResponseStatus::InternalError,
            "a known field has the wrong protobuf wire type",
        ));
    }
    let body = subs[kind_code(kind) as usize].unwrap_or(&[]);
    match kind {
        MessageKind::Register => decode_register(body).map(Message::Register),
        MessageKind::RegisterResponse => {
            decode_register_response(body).map(Message::RegisterResponse)
        }
        MessageKind::Unregister => decode_unregister(body).map(Message::Unregister),
        MessageKind::Discover => decode_discover(body).map(Message::Discover),
        MessageKind::DiscoverResponse => {
            decode_discover_response(body).map(Message::DiscoverResponse)
        }
        // Only reached by their type code, handled above.
        MessageKind::DiscoverSubscribe | MessageKind::DiscoverSubscribeResponse => Err(
            DecodeError::Malformed("subscription message without its type"),
        ),
    }
}

fn invalid(kind: MessageKind, status: ResponseStatus, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        kind,
        status,
        reason: reason.into(),
    }
}

/// Walks a sub-message of `kind`. A walk error on field `tag` is reported with
/// the status `status_of(tag)` gives, or as malformed when that is `None`.
fn walk<'a>(
    kind: MessageKind,
    body: &'a [u8],
    status_of: fn(u32) -> Option<ResponseStatus>,
    mut on_field: impl FnMut(u32, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    for field in (Fields { buf: body }) {
        match field {
            Ok((tag, value)) => on_field(tag, value)?,
            Err(e) => {
                // The kind is known, so there is someone to answer: a field
                // with its own status gets it, anything else (a broken key,
                // `limit`) E_INTERNAL_ERROR with the reason in statusText:
                // the spec has no "bad request" status, and an answer beats
                // a reset stream.
                let status = e
                    .tag
                    .and_then(status_of)
                    .unwrap_or(ResponseStatus::InternalError);
                let field = e
                    .tag
                    .map_or("a field key".to_string(), |t| format!("field {t}"));
                return Err(invalid(
                    kind,
                    status,
                    format!("malformed {field}: {}", e.what),
                ));
            }
        }
    }
    Ok(())
}

fn wrong_type(kind: MessageKind, status: Option<ResponseStatus>, field: &str) -> DecodeError {
    let status = status.unwrap_or(ResponseStatus::InternalError);
    invalid(
        kind,
        status,
        format!("field {field} has the wrong wire type"),
    )
}

fn register_status(tag: u32) -> Option<ResponseStatus> {
    match tag {
        1 => Some(ResponseStatus::InvalidNamespace),
        2 => Some(ResponseStatus::InvalidSignedPeerRecord),
        3 => Some(ResponseStatus::InvalidTtl),
        _ => None,
    }
}

/// Fields of a wire `Register`, before validation.
#[derive(Default)]
struct RawRegister<'a> {
    ns: Option<&'a [u8]>,
    spr: Option<&'a [u8]>,
    ttl: Option<u64>,
}

fn walk_register(kind: MessageKind, body: &[u8]) -> Result<RawRegister<'_>, DecodeError> {
    let mut raw = RawRegister::default();
    walk(kind, body, register_status, |tag, value| {
        match (tag, value) {
            (1, Value::Len(b)) => raw.ns = Some(b),
            (2, Value::Len(b)) => raw.spr = Some(b),
            (3, Value::Varint(v)) => raw.ttl = Some(v),
            (1..=3, _) => return Err(wrong_type(kind, register_status(tag), &tag.to_string())),
            _ => {}
        }
        Ok(())
    })?;
    Ok(raw)
}

fn decode_register(body: &[u8]) -> Result<Register, DecodeError> {
    let kind = MessageKind::Register;
    let raw = walk_register(kind, body)?;
    let namespace = Namespace::from_bytes(raw.ns.unwrap_or_default())
        .map_err(|e| invalid(kind, e.status(), e.to_string()))?;
    let spr = raw.spr.filter(|s| !s.is_empty()).ok_or_else(|| {
        invalid(
            kind,
            ResponseStatus::InvalidSignedPeerRecord,
            "signedPeerRecord is missing",
        )
    })?;
    Ok(Register {
        namespace,
        signed_peer_record: Bytes::copy_from_slice(spr),
        ttl: raw.ttl.filter(|t| *t != 0).map(Ttl::from_secs),
    })
}

fn decode_unregister(body: &[u8]) -> Result<Unregister, DecodeError> {
    let kind = MessageKind::Unregister;
    let mut ns = None;
    let mut id = None;
    walk(
        kind,
        body,
        |_| Some(ResponseStatus::InvalidNamespace),
        |tag, value| {
            match (tag, value) {
                (1, Value::Len(b)) => ns = Some(b),
                (1, _) => {
                    return Err(wrong_type(
                        kind,
                        Some(ResponseStatus::InvalidNamespace),
                        "ns",
                    ));
                }
                // Deprecated and ignored by points: read leniently (an id
                // that does not parse is as good as none).
                (2, Value::Len(b)) => id = PeerId::from_bytes(b).ok(),
                _ => {}
            }
            Ok(())
        },
    )?;
    let namespace = Namespace::from_bytes(ns.unwrap_or_default())
        .map_err(|e| invalid(kind, e.status(), e.to_string()))?;
    Ok(Unregister { namespace, id })
}

fn discover_status(tag: u32) -> Option<ResponseStatus> {
    match tag {
        1 => Some(ResponseStatus::InvalidNamespace),
        3 => Some(ResponseStatus::InvalidCookie),
        _ => None,
    }
}

fn decode_discover(body: &[u8]) -> Result<Discover, DecodeError> {
    let kind = MessageKind::Discover;
    let (mut ns, mut limit, mut cookie) = (None, None, None);
    walk(kind, body, discover_status, |tag, value| {
        match (tag, value) {
            (1, Value::Len(b)) => ns = Some(b),
            (2, Value::Varint(v)) => limit = Some(v),
            (3, Value::Len(b)) => cookie = Some(b),
            (1..=3, _) => return Err(wrong_type(kind, discover_status(tag), &tag.to_string())),
            _ => {}
        }
        Ok(())
    })?;
    // An empty namespace is what a proto3-style encoder sends for "none".
    let namespace = match ns.filter(|n| !n.is_empty()) {
        Some(n) => {
            Some(Namespace::from_bytes(n).map_err(|e| invalid(kind, e.status(), e.to_string()))?)
        }
        None => None,
    };
    let cookie = match cookie.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            Cookie::new(Bytes::copy_from_slice(c))
                .map_err(|e| invalid(kind, e.status(), e.to_string()))?,
        ),
        None => None,
    };
    Ok(Discover {
        namespace,
        limit: limit.filter(|l| *l != 0),
        cookie,
    })
}

fn response_status(tag: u32) -> Option<ResponseStatus> {
    // Responses are never answered; any error is reported as invalid content.
    let _ = tag;
    Some(ResponseStatus::InternalError)
}

/// A status varint as the `int32` enum it is: negative values come as
/// 64-bit two's complement (protobuf encoding, "Signed Integers"), so a
/// value outside `i32` is malformed, not a status to truncate into one
/// (2^32 would otherwise read as OK).
fn status_code(kind: MessageKind, v: u64) -> Result<ResponseStatus, DecodeError> {
    i32::try_from(v as i64)
        .map(ResponseStatus::from_code)
        .map_err(|_| {
            invalid(
                kind,
                ResponseStatus::InternalError,
                format!("status {v} is out of the int32 range"),
            )
        })
}

fn decode_register_response(body: &[u8]) -> Result<RegisterResponse, DecodeError> {
    let kind = MessageKind::RegisterResponse;
    let mut out = RegisterResponse::ok(DEFAULT_TTL);
    out.ttl = None;
    walk(kind, body, response_status, |tag, value| {
        match (tag, value) {
            (1, Value::Varint(v)) => out.status = status_code(kind, v)?,
            (2, Value::Len(b)) => out.status_text = String::from_utf8_lossy(b).into_owned(),
            (3, Value::Varint(v)) => out.ttl = (v != 0).then_some(Ttl::from_secs(v)),
            (1..=3, _) => return Err(wrong_type(kind, response_status(tag), &tag.to_string())),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn decode_subscribe_response(body: &[u8]) -> Result<DiscoverSubscribeResponse, DecodeError> {
    let kind = MessageKind::DiscoverSubscribeResponse;
    let mut out = DiscoverSubscribeResponse {
        status: ResponseStatus::Ok,
        status_text: String::new(),
    };
    walk(kind, body, response_status, |tag, value| {
        match (tag, value) {
            (3, Value::Varint(v)) => out.status = status_code(kind, v)?,
            (4, Value::Len(b)) => out.status_text = String::from_utf8_lossy(b).into_owned(),
            (3 | 4, _) => return Err(wrong_type(kind, response_status(tag), &tag.to_string())),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn decode_discover_response(body: &[u8]) -> Result<DiscoverResponse, DecodeError> {
    let kind = MessageKind::DiscoverResponse;
    let mut out = DiscoverResponse::error(ResponseStatus::Ok, "");
    let mut regs = Vec::new();
    walk(kind, body, response_status, |tag, value| {
        match (tag, value) {
            (1, Value::Len(b)) => regs.push(b),
            (2, Value::Len(b)) => {
                out.cookie = Some(
                    Cookie::new(Bytes::copy_from_slice(b))
                        .map_err(|e| invalid(kind, e.status(), e.to_string()))?,
                )
            }
            (3, Value::Varint(v)) => out.status = status_code(kind, v)?,
            (4, Value::Len(b)) => out.status_text = String::from_utf8_lossy(b).into_owned(),
            (1..=4, _) => return Err(wrong_type(kind, response_status(tag), &tag.to_string())),
            _ => {}
        }
        Ok(())
    })?;
    // A registration we cannot represent (other points accept an empty or
    // over-long namespace) is left out rather than failing the whole answer.
    out.registrations = regs
        .into_iter()
        .filter_map(|body| {
            let raw = walk_register(kind, body).ok()?;
            let namespace = Namespace::from_bytes(raw.ns.unwrap_or_default()).ok()?;
            Some(Registration {
                namespace,
                signed_peer_record: Bytes::copy_from_slice(raw.spr.unwrap_or_default()),
                ttl: Ttl::from_secs(raw.ttl.unwrap_or(0)),
            })
        })
        .collect();
    Ok(out)
}
