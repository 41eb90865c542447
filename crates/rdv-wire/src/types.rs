//! Validated domain types, kept apart from the wire structs in [`crate::proto`].

use std::fmt;

use bytes::Bytes;
use libp2p_identity::PeerId;

/// Longest namespace in bytes (spec: "namespaces are at most 255 bytes").
pub const MAX_NAMESPACE_LEN: usize = 255;
/// Longest cookie accepted from the wire. Our own cookies are
/// 25 bytes (`rdv_point::COOKIE_LEN`); other points use longer ones
/// (rust-libp2p's carry the namespace), so a client accepts up to this.
pub const MAX_COOKIE_LEN: usize = 1024;
/// TTL used when a REGISTER carries none (spec: "default 2h").
pub const DEFAULT_TTL: Ttl = Ttl(2 * 60 * 60);

/// A rendezvous namespace: 1 to 255 bytes of UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

/// Why a namespace was refused. Maps to `E_INVALID_NAMESPACE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// The namespace is the empty string.
    #[error("namespace is empty; give 1 to 255 bytes of UTF-8")]
    Empty,
    /// The namespace is longer than [`MAX_NAMESPACE_LEN`].
    #[error("namespace is {0} bytes long; the limit is 255")]
    TooLong(usize),
    /// The namespace is not UTF-8.
    #[error("namespace is not valid UTF-8")]
    NotUtf8,
}

impl NamespaceError {
    /// The status a point answers with: `E_INVALID_NAMESPACE`.
    pub const fn status(&self) -> ResponseStatus {
        ResponseStatus::InvalidNamespace
    }
}

impl Namespace {
    /// Validates a namespace given as a string.
    pub fn new(ns: impl Into<String>) -> Result<Self, NamespaceError> {
        let ns = ns.into();
        match ns.len() {
            0 => Err(NamespaceError::Empty),
            n if n > MAX_NAMESPACE_LEN => Err(NamespaceError::TooLong(n)),
            _ => Ok(Self(ns)),
        }
    }

    /// Validates a namespace given as raw wire bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NamespaceError> {
        if bytes.len() > MAX_NAMESPACE_LEN {
            return Err(NamespaceError::TooLong(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NamespaceError::NotUtf8)?;
        Self::new(s)
    }

    /// The namespace as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Namespace {
    type Err = NamespaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A registration lifetime in whole seconds, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttl(u64);

impl Ttl {
    /// A TTL of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }
    /// The TTL in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
    /// The TTL in milliseconds, saturating.
    pub const fn as_millis(self) -> u64 {
        self.0.saturating_mul(1000)
    }
    /// This TTL, if it lies within `min..=max` (a point's bounds, both
    /// inclusive). The wire allows any `u64`; the bounds are a point's choice.
    pub const fn within(self, min: Ttl, max: Ttl) -> Result<Self, TtlOutOfRange> {
        if self.0 < min.0 || self.0 > max.0 {
            return Err(TtlOutOfRange {
                ttl: self,
                min,
                max,
            });
        }
        Ok(self)
    }
}

/// A TTL outside the bounds a point accepts. Maps to `E_INVALID_TTL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "ttl {}s is outside the allowed range {}s..={}s",
    .ttl.as_secs(),
    .min.as_secs(),
    .max.as_secs()
)]
pub struct TtlOutOfRange {
    /// The TTL asked for.
    pub ttl: Ttl,
    /// The shortest TTL accepted.
    pub min: Ttl,
    /// The longest TTL accepted.
    pub max: Ttl,
}

impl TtlOutOfRange {
    /// The status a point answers with: `E_INVALID_TTL`.
    pub const fn status(&self) -> ResponseStatus {
        ResponseStatus::InvalidTtl
    }
}

/// An opaque discovery cookie: at most [`MAX_COOKIE_LEN`] bytes.
///
/// A point decides what its cookies mean; a client only stores and returns them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cookie(Bytes);

/// A cookie longer than [`MAX_COOKIE_LEN`]. Maps to `E_INVALID_COOKIE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cookie is {0} bytes long; the limit is 1024")]
pub struct CookieTooLong(pub usize);

impl CookieTooLong {
    /// The status a point answers with: `E_INVALID_COOKIE`.
    pub const fn status(&self) -> ResponseStatus {
        ResponseStatus::InvalidCookie
    }
}

impl Cookie {
    /// Wraps cookie bytes, refusing oversized ones.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, CookieTooLong> {
        let bytes = bytes.into();
        if bytes.len() > MAX_COOKIE_LEN {
            return Err(CookieTooLong(bytes.len()));
        }
        Ok(Self(bytes))
    }
    /// The cookie's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// `Message.ResponseStatus` of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseStatus {
    /// `OK = 0`
    Ok,
    /// `E_INVALID_NAMESPACE = 100`
    InvalidNamespace,
    /// `E_INVALID_SIGNED_PEER_RECORD = 101`
    InvalidSignedPeerRecord,
    /// `E_INVALID_TTL = 102`
    InvalidTtl,
    /// `E_INVALID_COOKIE = 103`
    InvalidCookie,
    /// `E_NOT_AUTHORIZED = 200`
    NotAuthorized,
    /// `E_INTERNAL_ERROR = 300`
    InternalError,
    /// `E_UNAVAILABLE = 400`
    Unavailable,
    /// A code this implementation does not know, kept so it can be reported.
    Other(i32),
}

impl ResponseStatus {
    /// The numeric wire code.
    pub fn code(self) -> i32 {
        match self {
            Self::Ok => 0,
            Self::InvalidNamespace => 100,
            Self::InvalidSignedPeerRecord => 101,
            Self::InvalidTtl => 102,
            Self::InvalidCookie => 103,
            Self::NotAuthorized => 200,
            Self::InternalError => 300,
            Self::Unavailable => 400,
            Self::Other(c) => c,
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => Self::Ok,
            100 => Self::InvalidNamespace,
            101 => Self::InvalidSignedPeerRecord,
            102 => Self::InvalidTtl,
            103 => Self::InvalidCookie,
            200 => Self::NotAuthorized,
            300 => Self::InternalError,
            400 => Self::Unavailable,
            c => Self::Other(c),
        }
    }

    /// The spec's name, e.g. `E_INVALID_TTL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::InvalidNamespace => "E_INVALID_NAMESPACE",
            Self::InvalidSignedPeerRecord => "E_INVALID_SIGNED_PEER_RECORD",
            Self::InvalidTtl => "E_INVALID_TTL",
            Self::InvalidCookie => "E_INVALID_COOKIE",
            Self::NotAuthorized => "E_NOT_AUTHORIZED",
            Self::InternalError => "E_INTERNAL_ERROR",
            Self::Unavailable => "E_UNAVAILABLE",
            Self::Other(_) => "E_UNKNOWN",
        }
    }

    /// Whether a client may succeed by retrying the same request later.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::InternalError | Self::Unavailable)
    }
}

impl fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(c) => write!(f, "E_UNKNOWN({c})"),
            s => f.write_str(s.name()),
        }
    }
}

/// The kind of a rendezvous message, i.e. `Message.MessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `REGISTER = 0`
    Register,
    /// `REGISTER_RESPONSE = 1`
    RegisterResponse,
    /// `UNREGISTER = 2`
    Unregister,
    /// `DISCOVER = 3`
    Discover,
    /// `DISCOVER_RESPONSE = 4`
    DiscoverResponse,
    /// `DISCOVER_SUBSCRIBE = 100`: from go-libp2p-rendezvous's original
    /// schema (py-libp2p has it too). Not served: a point answers it with a
    /// [`DiscoverSubscribeResponse`] carrying `E_UNAVAILABLE`.
    DiscoverSubscribe,
    /// `DISCOVER_SUBSCRIBE_RESPONSE = 101`.
    DiscoverSubscribeResponse,
}

impl MessageKind {
    pub(crate) fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Register,
            1 => Self::RegisterResponse,
            2 => Self::Unregister,
            3 => Self::Discover,
            4 => Self::DiscoverResponse,
            100 => Self::DiscoverSubscribe,
            101 => Self::DiscoverSubscribeResponse,
            _ => return None,
        })
    }

    /// The kind of the response a request of this kind gets, if any.
    pub fn response_kind(self) -> Option<MessageKind> {
        match self {
            Self::Register => Some(Self::RegisterResponse),
            Self::Discover => Some(Self::DiscoverResponse),
            Self::DiscoverSubscribe => Some(Self::DiscoverSubscribeResponse),
            _ => None,
        }
    }
}

/// A rendezvous message, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client asks to be registered.
    Register(Register),
    /// Point answers a REGISTER.
    RegisterResponse(RegisterResponse),
    /// Client asks to be removed; gets no answer.
    Unregister(Unregister),
    /// Client asks for registrations.
    Discover(Discover),
    /// Point answers a DISCOVER.
    DiscoverResponse(DiscoverResponse),
    /// Point answers a DISCOVER_SUBSCRIBE (always with a refusal: rdv does
    /// not offer subscriptions). There is no `DiscoverSubscribe` variant: a
    /// request of that type decodes to [`crate::DecodeError::Invalid`],
    /// whose answer is this.
    DiscoverSubscribeResponse(DiscoverSubscribeResponse),
}

impl Message {
    /// The kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Register(_) => MessageKind::Register,
            Self::RegisterResponse(_) => MessageKind::RegisterResponse,
            Self::Unregister(_) => MessageKind::Unregister,
            Self::Discover(_) => MessageKind::Discover,
            Self::DiscoverResponse(_) => MessageKind::DiscoverResponse,
            Self::DiscoverSubscribeResponse(_) => MessageKind::DiscoverSubscribeResponse,
        }
    }
}

/// `Message.Register`: a request to be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// Namespace to register in.
    pub namespace: Namespace,
    /// The signed envelope holding the registrant's peer record, unverified.
    pub signed_peer_record: Bytes,
    /// Requested TTL; `None` means the point's default.
    pub ttl: Option<Ttl>,
}

/// `Message.RegisterResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterResponse {
    /// Outcome; a missing status on the wire decodes as `Ok`.
    pub status: ResponseStatus,
    /// Human-readable explanation of a refusal.
    pub status_text: String,
    /// TTL actually granted (on success).
    pub ttl: Option<Ttl>,
}

/// `Message.Unregister`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unregister {
    /// Namespace to leave.
    pub namespace: Namespace,
    /// The leaving peer's id, field 2. The spec deprecates it (a point
    /// unregisters the authenticated remote peer, whatever this says), but
    /// py-libp2p's point ignores an UNREGISTER whose `id` is not the
    /// sender's, so rdv's client sends it. A point ignores it.
    pub id: Option<PeerId>,
}

/// `Message.DiscoverSubscribeResponse` (go-libp2p-rendezvous's original
/// schema): only the status fields, 3 and 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoverSubscribeResponse {
    /// The outcome.
    pub status: ResponseStatus,
    /// Human-readable explanation of a refusal.
    pub status_text: String,
}

/// `Message.Discover`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Discover {
    /// Namespace to query; `None` asks for all namespaces.
    pub namespace: Option<Namespace>,
    /// Most registrations wanted; `None` leaves it to the point.
    pub limit: Option<u64>,
    /// Cookie from an earlier response, to get only what was not returned before.
    pub cookie: Option<Cookie>,
}

/// One registration as returned by DISCOVER (a `Message.Register` on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Namespace the registration is in.
    pub namespace: Namespace,
    /// The registrant's signed envelope, as it registered it.
    pub signed_peer_record: Bytes,
    /// Time remaining until it expires.
    pub ttl: Ttl,
}

/// `Message.DiscoverResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoverResponse {
    /// Outcome; a missing status on the wire decodes as `Ok`.
    pub status: ResponseStatus,
    /// Human-readable explanation of a refusal.
    pub status_text: String,
    /// Registrations found.
    pub registrations: Vec<Registration>,
    /// Cookie for the next, incremental query.
    pub cookie: Option<Cookie>,
}

impl RegisterResponse {
    /// A successful response granting `ttl`.
    pub fn ok(ttl: Ttl) -> Self {
        Self {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            ttl: Some(ttl),
        }
    }
    /// A refusal.
    pub fn error(status: ResponseStatus, text: impl Into<String>) -> Self {
        Self {
            status,
            status_text: text.into(),
            ttl: None,
        }
    }
}

impl DiscoverResponse {
    /// A refusal.
    pub fn error(status: ResponseStatus, text: impl Into<String>) -> Self {
        Self {
            status,
            status_text: text.into(),
            registrations: Vec::new(),
            cookie: None,
        }
    }
}
