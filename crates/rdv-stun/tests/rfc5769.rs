//! RFC 5769 test vectors through the codec rdv uses (`stun-types`), and
//! through rdv's own client where a vector is a response.

use std::net::SocketAddr;
use std::time::Instant;

use rdv_stun::stun_types::attribute::{
    AttributeStaticType, Fingerprint, MessageIntegrity, Software, Username, XorMappedAddress,
};
use rdv_stun::stun_types::message::{
    BINDING, Message, MessageClass, MessageIntegrityCredentials, ShortTermCredentials,
};

/// RFC 5769 §2: the password of every vector (short-term credentials).
const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 §2.1: sample request.
const REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: sample IPv4 response.
const RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3: sample IPv6 response.
const RESPONSE_V6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

fn credentials() -> MessageIntegrityCredentials {
    ShortTermCredentials::new(PASSWORD.to_owned()).into()
}

/// Parsing checks FINGERPRINT (a wrong CRC-32 is an error), so a vector
/// that parses has a right one; flipping a byte must break both checks.
fn integrity_and_fingerprint_hold(bytes: &[u8]) {
    let msg = Message::from_bytes(bytes).expect("vector parses (FINGERPRINT checked)");
    assert!(msg.has_attribute(Fingerprint::TYPE));
    msg.validate_integrity(&credentials())
        .expect("MESSAGE-INTEGRITY with the vectors' password");
    let wrong: MessageIntegrityCredentials =
        ShortTermCredentials::new("not the password".to_owned()).into();
    assert!(msg.validate_integrity(&wrong).is_err());
    // A flipped bit in the transaction id breaks the FINGERPRINT.
    let mut bad = bytes.to_vec();
    bad[10] ^= 1;
    assert!(Message::from_bytes(&bad).is_err());
}

#[test]
fn rfc5769_2_1_request() {
    integrity_and_fingerprint_hold(&REQUEST);
    let msg = Message::from_bytes(&REQUEST).expect("parses");
    assert!(msg.has_class(MessageClass::Request));
    assert!(msg.has_method(BINDING));
    assert_eq!(
        msg.attribute::<Software>().expect("SOFTWARE").software(),
        "STUN test client"
    );
    assert_eq!(
        msg.attribute::<Username>().expect("USERNAME").username(),
        "evtj:h6vY"
    );
    assert!(msg.has_attribute(MessageIntegrity::TYPE));
}

#[test]
fn rfc5769_2_2_ipv4_response() {
    integrity_and_fingerprint_hold(&RESPONSE_V4);
    let msg = Message::from_bytes(&RESPONSE_V4).expect("parses");
    assert!(msg.has_class(MessageClass::Success));
    let xor = msg
        .attribute::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS");
    let want: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
    assert_eq!(xor.addr(msg.transaction_id()), want);
}

#[test]
fn rfc5769_2_3_ipv6_response() {
    integrity_and_fingerprint_hold(&RESPONSE_V6);
    let msg = Message::from_bytes(&RESPONSE_V6).expect("parses");
    let xor = msg
        .attribute::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS");
    let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(xor.addr(msg.transaction_id()), want);
}

/// The §2.1 request is a Binding request with attributes rdv's server does
/// not know (PRIORITY 0x0024 and USERNAME are comprehension-required), so
/// the server must answer 420 listing them (RFC 8489 §6.3.1.1).
#[test]
fn rdv_server_answers_the_rfc5769_request_with_420() {
    use rdv_stun::stun_types::attribute::{ErrorCode, UnknownAttributes};
    let mut server = rdv_stun::StunServer::new(Default::default());
    let mut out = [0u8; rdv_stun::MAX_ANSWER];
    let from: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
    let outcome = server.handle(Instant::now(), from, &REQUEST, &mut out);
    let rdv_stun::Outcome::UnknownAttributes(n) = outcome else {
        panic!("expected a 420, got {outcome:?}");
    };
    let msg = Message::from_bytes(&out[..n]).expect("answer parses");
    assert!(msg.has_class(MessageClass::Error));
    assert_eq!(
        msg.transaction_id(),
        Message::from_bytes(&REQUEST).expect("p").transaction_id()
    );
    assert_eq!(
        msg.attribute::<ErrorCode>().expect("ERROR-CODE").code(),
        420
    );
    let unknown = msg
        .attribute::<UnknownAttributes>()
        .expect("UNKNOWN-ATTRIBUTES");
    assert!(unknown.has_attribute(0x0024.into()));
    assert!(unknown.has_attribute(Username::TYPE));
    assert_eq!(server.counters().unknown_attributes, 1);
}
