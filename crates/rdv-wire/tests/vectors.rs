//! Byte-exact wire vectors for every message type.
//!
//! Each expectation was derived by hand from the protobuf encoding rules
//! (field key = field number << 3 | wire type; wire type 0 = varint,
//! 2 = length-delimited) and the rendezvous `.proto`, NOT by running our
//! encoder. Field order follows field numbers, as every protobuf encoder does.
//!
//! Varints used below:
//!   7200 = 0b111000_0100000  -> a0 38
//!   3600 = 0b11100_0010000   -> 90 1c
//!   300  = 0b10_0101100      -> ac 02
//!   400  = 0b11_0010000      -> 90 03   (E_UNAVAILABLE)
//!   -1 as int32 is sign-extended to 64 bits -> ff ff ff ff ff ff ff ff ff 01
#![allow(missing_docs)]
// Helpers outside `#[test]` fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::hex;
use rdv_wire::{
    Cookie, Discover, DiscoverResponse, Message, Namespace, Register, RegisterResponse,
    Registration, ResponseStatus, Ttl, Unregister, decode, encode, encode_frame, encoded_len,
};

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

/// `encode` yields exactly `wire`, `encoded_len` agrees, and `decode` gives `msg` back.
fn check(msg: Message, wire: &str) {
    let wire = hex(wire);
    assert_eq!(encode(&msg), wire, "encoding of {msg:?}");
    assert_eq!(encoded_len(&msg), wire.len(), "encoded_len of {msg:?}");
    assert_eq!(decode(&wire), Ok(msg));
}

#[test]
fn register_with_ttl() {
    check(
        Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            ttl: Some(Ttl::from_secs(7200)),
        }),
        "08 00                 | type (1, varint) = REGISTER (0)
         12 0f                 | register (2, len) = 15 bytes:
            0a 04 63 68 61 74  |   ns (1, len) = \"chat\"
            12 04 de ad be ef  |   signedPeerRecord (2, len) = de ad be ef
            18 a0 38           |   ttl (3, varint) = 7200",
    );
}

#[test]
fn register_without_ttl() {
    check(
        Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            ttl: None,
        }),
        "08 00                 | type = REGISTER
         12 0c                 | register (2, len) = 12 bytes:
            0a 04 63 68 61 74  |   ns = \"chat\"
            12 04 de ad be ef  |   signedPeerRecord; no ttl field at all",
    );
}

#[test]
fn register_response_ok_with_ttl() {
    check(
        Message::RegisterResponse(RegisterResponse::ok(Ttl::from_secs(7200))),
        "08 01                 | type = REGISTER_RESPONSE (1)
         1a 05                 | registerResponse (3, len) = 5 bytes:
            08 00              |   status (1, varint) = OK: written although it is the default
            18 a0 38           |   ttl (3, varint) = 7200; no statusText",
    );
}

#[test]
fn register_response_error_with_status_text() {
    check(
        Message::RegisterResponse(RegisterResponse::error(
            ResponseStatus::InvalidTtl,
            "bad ttl",
        )),
        "08 01                 | type = REGISTER_RESPONSE
         1a 0b                 | registerResponse (3, len) = 11 bytes:
            08 66              |   status = E_INVALID_TTL (102 = 0x66)
            12 07 62 61 64 20 74 74 6c | statusText (2, len) = \"bad ttl\"; no ttl",
    );
}

#[test]
fn register_response_with_negative_unknown_status() {
    // int32 negatives are sign-extended to ten varint bytes on the wire.
    check(
        Message::RegisterResponse(RegisterResponse::error(ResponseStatus::Other(-1), "")),
        "08 01
         1a 0b                 | registerResponse = 11 bytes:
            08 ff ff ff ff ff ff ff ff ff 01 | status = -1",
    );
}

#[test]
fn unregister() {
    check(
        Message::Unregister(Unregister {
            namespace: ns("chat"),
            id: None,
        }),
        "08 02                 | type = UNREGISTER (2)
         22 06                 | unregister (4, len) = 6 bytes:
            0a 04 63 68 61 74  |   ns = \"chat\"",
    );
}

#[test]
fn discover_with_namespace_limit_and_cookie() {
    check(
        Message::Discover(Discover {
            namespace: Some(ns("chat")),
            limit: Some(300),
            cookie: Some(Cookie::new(vec![1, 2, 3]).unwrap()),
        }),
        "08 03                 | type = DISCOVER (3)
         2a 0e                 | discover (5, len) = 14 bytes:
            0a 04 63 68 61 74  |   ns = \"chat\"
            10 ac 02           |   limit (2, varint) = 300
            1a 03 01 02 03     |   cookie (3, len) = 01 02 03",
    );
}

#[test]
fn discover_all_namespaces() {
    check(
        Message::Discover(Discover::default()),
        "08 03                 | type = DISCOVER
         2a 00                 | discover (5, len) = empty: no ns means all namespaces",
    );
}

#[test]
fn discover_response_with_two_registrations_and_cookie() {
    check(
        Message::DiscoverResponse(DiscoverResponse {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            registrations: vec![
                Registration {
                    namespace: ns("chat"),
                    signed_peer_record: Bytes::from_static(&[0xaa]),
                    ttl: Ttl::from_secs(60),
                },
                Registration {
                    namespace: ns("game"),
                    signed_peer_record: Bytes::from_static(&[0xbb, 0xcc]),
                    ttl: Ttl::from_secs(3600),
                },
            ],
            cookie: Some(Cookie::new(vec![0xc0, 0x0c]).unwrap()),
        }),
        "08 04                 | type = DISCOVER_RESPONSE (4)
         32 22                 | discoverResponse (6, len) = 34 bytes:
            0a 0b              |   registrations[0] (1, len) = 11 bytes:
               0a 04 63 68 61 74 |     ns = \"chat\"
               12 01 aa        |     signedPeerRecord = aa
               18 3c           |     ttl = 60
            0a 0d              |   registrations[1] (1, len) = 13 bytes:
               0a 04 67 61 6d 65 |     ns = \"game\"
               12 02 bb cc     |     signedPeerRecord = bb cc
               18 90 1c        |     ttl = 3600
            12 02 c0 0c        |   cookie (2, len) = c0 0c
            18 00              |   status (3, varint) = OK",
    );
}

#[test]
fn discover_response_error() {
    check(
        Message::DiscoverResponse(DiscoverResponse::error(ResponseStatus::Unavailable, "busy")),
        "08 04                 | type = DISCOVER_RESPONSE
         32 09                 | discoverResponse (6, len) = 9 bytes:
            18 90 03           |   status (3, varint) = E_UNAVAILABLE (400)
            22 04 62 75 73 79  |   statusText (4, len) = \"busy\"; no registrations, no cookie",
    );
}

#[test]
fn frame_prefix_is_an_unsigned_varint() {
    assert_eq!(encode_frame(&[]), hex("00"));
    assert_eq!(encode_frame(&[0x42]), hex("01 42"));
    let body = vec![0u8; 200];
    let framed = encode_frame(&body);
    // 200 = 0b1_1001000 -> c8 01
    assert_eq!(&framed[..2], &hex("c8 01")[..]);
    assert_eq!(&framed[2..], &body[..]);
}
