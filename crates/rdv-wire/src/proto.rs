//! The protobuf messages of `/rendezvous/1.0.0`, as prost structs.
//!
//! Source: libp2p/specs `rendezvous/README.md` (proto2). These structs are used
//! for **encoding**; decoding goes through [`crate::decode`], which walks the
//! fields itself so that it can say which field was wrong and answer with the
//! matching `E_*` status (prost's decoder fails the whole message instead).
//!
//! `ns` is declared `bytes` rather than `string`: the two share a wire type,
//! and a `string` field would make an invalid UTF-8 namespace a decode failure
//! instead of an `E_INVALID_NAMESPACE` answer.
#![allow(missing_docs)]

/// `Message.MessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    Register = 0,
    RegisterResponse = 1,
    Unregister = 2,
    Discover = 3,
    DiscoverResponse = 4,
    /// go-libp2p-rendezvous's original schema (and py-libp2p's).
    DiscoverSubscribe = 100,
    DiscoverSubscribeResponse = 101,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "MessageType", optional, tag = "1")]
    pub r#type: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub register: Option<Register>,
    #[prost(message, optional, tag = "3")]
    pub register_response: Option<RegisterResponse>,
    #[prost(message, optional, tag = "4")]
    pub unregister: Option<Unregister>,
    #[prost(message, optional, tag = "5")]
    pub discover: Option<Discover>,
    #[prost(message, optional, tag = "6")]
    pub discover_response: Option<DiscoverResponse>,
    #[prost(message, optional, tag = "101")]
    pub discover_subscribe_response: Option<DiscoverSubscribeResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Register {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub signed_peer_record: Option<bytes::Bytes>,
    #[prost(uint64, optional, tag = "3")]
    pub ttl: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResponse {
    #[prost(int32, optional, tag = "1")]
    pub status: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub status_text: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub ttl: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Unregister {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    /// Deprecated by the spec; py-libp2p's point requires it.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub id: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Discover {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "2")]
    pub limit: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub cookie: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoverResponse {
    #[prost(message, repeated, tag = "1")]
    pub registrations: Vec<Register>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub cookie: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    pub status: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub status_text: Option<String>,
}

/// `DiscoverSubscribeResponse` of go-libp2p-rendezvous's original schema;
/// fields 1 and 2 (subscription type and details) are never sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoverSubscribeResponse {
    #[prost(int32, optional, tag = "3")]
    pub status: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub status_text: Option<String>,
}

/// `PeerInfo` of go-libp2p-rendezvous's original schema, in `Register`
/// field 2 where the current spec has `signedPeerRecord`: an unsigned peer
/// id and addresses (py-libp2p registers these).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInfo {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// RFC 0003 `PeerRecord`, the payload of a signed envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub peer_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, repeated, tag = "3")]
    pub addresses: Vec<AddressInfo>,
}

/// RFC 0003 `PeerRecord.AddressInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddressInfo {
    #[prost(bytes = "vec", tag = "1")]
    pub multiaddr: Vec<u8>,
}
