//! Decoding rules: what is accepted leniently, and which status a bad request
//! is answered with. Inputs are hex or built field by field (see `common`),
//! never produced by the encoder under test.
#![allow(missing_docs)]
// Helpers outside `#[test]` fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cat, hex, len_field, varint_field};
use rdv_wire::{
    Cookie, DecodeError, Discover, DiscoverResponse, Message, MessageKind, Namespace, Register,
    RegisterResponse, ResponseStatus, Ttl, Unregister, decode, encode,
};

const SPR: &[u8] = &[0xde, 0xad, 0xbe, 0xef];

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

/// A top-level message: `type` (when given) and the sub-message under `sub_tag`.
fn message(type_code: Option<u64>, sub_tag: u64, body: &[u8]) -> Vec<u8> {
    let mut out = type_code.map(|t| varint_field(1, t)).unwrap_or_default();
    out.extend(len_field(sub_tag, body));
    out
}

fn register(body: &[u8]) -> Vec<u8> {
    message(Some(0), 2, body)
}
fn unregister(body: &[u8]) -> Vec<u8> {
    message(Some(2), 4, body)
}
fn discover(body: &[u8]) -> Vec<u8> {
    message(Some(3), 5, body)
}

/// Asserts `bytes` decode to `Invalid { kind, status }` and returns the error.
fn invalid(bytes: &[u8], kind: MessageKind, status: ResponseStatus) -> DecodeError {
    let err = decode(bytes).expect_err("must be refused");
    match &err {
        DecodeError::Invalid {
            kind: k, status: s, ..
        } => {
            assert_eq!((*k, *s), (kind, status), "{err}");
        }
        other => panic!("expected Invalid({kind:?}, {status:?}), got {other:?}"),
    }
    err
}

/// Asserts a REGISTER refusal is answered with a REGISTER_RESPONSE of `status`.
fn register_refused(bytes: &[u8], status: ResponseStatus) {
    let err = invalid(bytes, MessageKind::Register, status);
    match err.error_response() {
        Some(Message::RegisterResponse(r)) => {
            assert_eq!(r.status, status);
            assert!(!r.status_text.is_empty(), "a refusal should say why");
            assert_eq!(r.ttl, None);
        }
        other => panic!("expected a RegisterResponse, got {other:?}"),
    }
}

// ------------------------------------------------------------ lenient decode

#[test]
fn register_without_type_field_is_inferred_from_sub_message() {
    // 12 0c | register (2) only, no type (1): what @canvas-js sends.
    let bytes = hex("12 0c 0a 04 63 68 61 74 12 04 de ad be ef");
    assert_eq!(
        decode(&bytes),
        Ok(Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: SPR.to_vec().into(),
            ttl: None,
        }))
    );
}

#[test]
fn every_kind_is_inferred_without_type() {
    let cases: [(u64, &[u8], MessageKind); 5] = [
        (2, &hex("0a 01 78 12 01 01"), MessageKind::Register),
        (3, &[], MessageKind::RegisterResponse),
        (4, &hex("0a 01 78"), MessageKind::Unregister),
        (5, &[], MessageKind::Discover),
        (6, &[], MessageKind::DiscoverResponse),
    ];
    for (tag, body, kind) in cases {
        let got = decode(&message(None, tag, body)).unwrap();
        assert_eq!(got.kind(), kind, "sub-message {tag}");
    }
}

#[test]
fn register_response_without_status_is_ok() {
    // 1a 03 | registerResponse (3) = { 18 a0 38 | ttl = 7200 }, no type, no status
    assert_eq!(
        decode(&hex("1a 03 18 a0 38")),
        Ok(Message::RegisterResponse(RegisterResponse::ok(
            Ttl::from_secs(7200)
        )))
    );
    // With type but an empty body: OK, no ttl.
    assert_eq!(
        decode(&hex("08 01 1a 00")),
        Ok(Message::RegisterResponse(RegisterResponse {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            ttl: None,
        }))
    );
}

#[test]
fn discover_response_without_status_is_ok() {
    // 32 04 | discoverResponse (6) = { 12 02 c0 0c | cookie }, no type, no status
    assert_eq!(
        decode(&hex("32 04 12 02 c0 0c")),
        Ok(Message::DiscoverResponse(DiscoverResponse {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            registrations: vec![],
            cookie: Some(Cookie::new(vec![0xc0, 0x0c]).unwrap()),
        }))
    );
    assert_eq!(
        decode(&hex("08 04 32 00")),
        Ok(Message::DiscoverResponse(DiscoverResponse::error(
            ResponseStatus::Ok,
            ""
        )))
    );
}

#[test]
fn zero_ttl_and_zero_limit_decode_as_absent() {
    // REGISTER with ttl (3) = 0
    let Ok(Message::Register(r)) = decode(&hex(
        "08 00 12 0e 0a 04 63 68 61 74 12 04 de ad be ef 18 00",
    )) else {
        panic!("REGISTER with ttl 0 must decode");
    };
    assert_eq!(r.ttl, None);

    // REGISTER_RESPONSE with ttl (3) = 0
    let Ok(Message::RegisterResponse(r)) = decode(&hex("08 01 1a 04 08 00 18 00")) else {
        panic!("REGISTER_RESPONSE with ttl 0 must decode");
    };
    assert_eq!(r.ttl, None);

    // DISCOVER with ns "chat", limit (2) = 0
    assert_eq!(
        decode(&hex("08 03 2a 08 0a 04 63 68 61 74 10 00")),
        Ok(Message::Discover(Discover {
            namespace: Some(ns("chat")),
            limit: None,
            cookie: None,
        }))
    );
}

#[test]
fn empty_namespace_in_discover_means_all() {
    // 2a 02 | discover = { 0a 00 | ns = "" }
    assert_eq!(
        decode(&hex("08 03 2a 02 0a 00")),
        Ok(Message::Discover(Discover::default()))
    );
    // An empty cookie is no cookie either.
    assert_eq!(
        decode(&hex("08 03 2a 02 1a 00")),
        Ok(Message::Discover(Discover::default()))
    );
}

#[test]
fn unknown_fields_are_skipped_everywhere() {
    let register_body = cat(&[
        &hex("38 05"),                      // field 7, varint
        &len_field(1, b"chat"),             // ns
        &hex("4a 02 ff ff"),                // field 9, len
        &hex("51 01 02 03 04 05 06 07 08"), // field 10, fixed64
        &len_field(2, SPR),                 // signedPeerRecord
        &hex("5d 01 02 03 04"),             // field 11, fixed32
        &varint_field(3, 60),               // ttl
        &hex("a0 06 01"),                   // field 100 (key 800 = a0 06), varint
    ]);
    let bytes = cat(&[
        &hex("7a 01 ff"),                   // top-level field 15, len
        &varint_field(1, 0),                // type = REGISTER
        &hex("39 00 00 00 00 00 00 00 00"), // top-level field 7, fixed64
        &len_field(2, &register_body),
        &hex("f8 ff ff ff 0f 2a"), // top-level field 2^29-1 (largest legal), varint 42
    ]);
    assert_eq!(
        decode(&bytes),
        Ok(Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: SPR.to_vec().into(),
            ttl: Some(Ttl::from_secs(60)),
        }))
    );

    // The deprecated UNREGISTER `id` (field 2) is ignored.
    assert_eq!(
        decode(&unregister(&cat(&[
            &len_field(1, b"chat"),
            &len_field(2, b"Qm...")
        ]))),
        Ok(Message::Unregister(Unregister {
            namespace: ns("chat"),
            id: None
        }))
    );
}

#[test]
fn type_wins_over_other_sub_messages() {
    // type = DISCOVER, with a stray register sub-message and an empty discover.
    let bytes = cat(&[
        &varint_field(1, 3),
        &len_field(2, &hex("0a 01 78 12 01 01")),
        &len_field(5, &[]),
    ]);
    assert_eq!(decode(&bytes), Ok(Message::Discover(Discover::default())));
}

#[test]
fn status_text_that_is_not_utf8_is_kept_lossily() {
    // registerResponse = { 08 64 | E_INVALID_NAMESPACE, 12 02 ff 41 | statusText }
    let Ok(Message::RegisterResponse(r)) = decode(&hex("08 01 1a 06 08 64 12 02 ff 41")) else {
        panic!("must decode");
    };
    assert_eq!(r.status, ResponseStatus::InvalidNamespace);
    assert_eq!(r.status_text, "\u{fffd}A");
}

#[test]
fn unknown_status_code_is_kept() {
    // registerResponse = { 08 f4 03 | status = 500 }
    let Ok(Message::RegisterResponse(r)) = decode(&hex("08 01 1a 03 08 f4 03")) else {
        panic!("must decode");
    };
    assert_eq!(r.status, ResponseStatus::Other(500));
    assert_eq!(r.status.code(), 500);
}

// ------------------------------------------------------- bad input -> status

#[test]
fn register_namespace_errors_get_invalid_namespace() {
    use ResponseStatus::InvalidNamespace;
    let spr = len_field(2, SPR);
    // missing ns
    register_refused(&register(&spr), InvalidNamespace);
    // empty ns
    register_refused(
        &register(&cat(&[&len_field(1, b""), &spr])),
        InvalidNamespace,
    );
    // 256-byte ns
    register_refused(
        &register(&cat(&[&len_field(1, &[b'a'; 256]), &spr])),
        InvalidNamespace,
    );
    // invalid UTF-8 ns
    register_refused(
        &register(&cat(&[&len_field(1, &[0xff, 0xfe]), &spr])),
        InvalidNamespace,
    );
    // ns sent as a varint (wire type 0)
    register_refused(&register(&cat(&[&hex("08 01"), &spr])), InvalidNamespace);
    // ns length runs past the end of the register body
    register_refused(&register(&cat(&[&spr, &hex("0a 05 61")])), InvalidNamespace);
}

#[test]
fn register_record_errors_get_invalid_signed_peer_record() {
    use ResponseStatus::InvalidSignedPeerRecord;
    let ns = len_field(1, b"chat");
    // missing signedPeerRecord
    register_refused(&register(&ns), InvalidSignedPeerRecord);
    // empty signedPeerRecord
    register_refused(
        &register(&cat(&[&ns, &len_field(2, b"")])),
        InvalidSignedPeerRecord,
    );
    // signedPeerRecord sent as a varint
    register_refused(
        &register(&cat(&[&ns, &hex("10 01")])),
        InvalidSignedPeerRecord,
    );
}

#[test]
fn register_ttl_with_wrong_wire_type_gets_invalid_ttl() {
    // ttl (3) as length-delimited: key 1a
    let body = cat(&[&len_field(1, b"chat"), &len_field(2, SPR), &hex("1a 01 00")]);
    register_refused(&register(&body), ResponseStatus::InvalidTtl);
}

#[test]
fn namespace_length_limit_is_255_bytes_exactly() {
    let spr = len_field(2, SPR);
    for (len, ok) in [(1, true), (254, true), (255, true), (256, false)] {
        let name = vec![b'n'; len];
        let expected = String::from_utf8(name.clone()).unwrap();

        let got = decode(&register(&cat(&[&len_field(1, &name), &spr])));
        match got {
            Ok(Message::Register(r)) if ok => assert_eq!(r.namespace.as_str(), expected),
            Err(DecodeError::Invalid {
                status: ResponseStatus::InvalidNamespace,
                ..
            }) if !ok => {}
            other => panic!("REGISTER, ns of {len} bytes: {other:?}"),
        }

        let got = decode(&discover(&len_field(1, &name)));
        match got {
            Ok(Message::Discover(d)) if ok => {
                assert_eq!(
                    d.namespace.as_ref().map(Namespace::as_str),
                    Some(&*expected)
                )
            }
            Err(DecodeError::Invalid {
                status: ResponseStatus::InvalidNamespace,
                ..
            }) if !ok => {}
            other => panic!("DISCOVER, ns of {len} bytes: {other:?}"),
        }

        assert_eq!(
            Namespace::new(expected.clone()).is_ok(),
            ok,
            "Namespace::new({len})"
        );
        assert_eq!(
            Namespace::from_bytes(&name).is_ok(),
            ok,
            "from_bytes({len})"
        );
    }
    // 255 bytes of multi-byte characters count bytes, not chars: 85 × "€" (3 bytes).
    assert!(Namespace::new("€".repeat(85)).is_ok());
    assert!(Namespace::new(format!("{}a", "€".repeat(85))).is_err());
}

#[test]
fn discover_cookie_limit_is_1024_bytes() {
    // 1024 bytes: accepted
    let Ok(Message::Discover(d)) = decode(&discover(&len_field(3, &[7; 1024]))) else {
        panic!("1024-byte cookie must be accepted");
    };
    assert_eq!(d.cookie.map(|c| c.as_bytes().len()), Some(1024));

    // 1025 bytes: E_INVALID_COOKIE, answered with a DISCOVER_RESPONSE
    let err = invalid(
        &discover(&len_field(3, &[7; 1025])),
        MessageKind::Discover,
        ResponseStatus::InvalidCookie,
    );
    match err.error_response() {
        Some(Message::DiscoverResponse(r)) => {
            assert_eq!(r.status, ResponseStatus::InvalidCookie);
            assert!(r.registrations.is_empty());
            assert_eq!(r.cookie, None);
        }
        other => panic!("expected a DiscoverResponse, got {other:?}"),
    }
}

#[test]
fn discover_namespace_errors() {
    for body in [
        len_field(1, &[b'a'; 256]),
        len_field(1, &[0xc3, 0x28]), // invalid UTF-8
        hex("08 01"),                // ns as a varint
    ] {
        let err = invalid(
            &discover(&body),
            MessageKind::Discover,
            ResponseStatus::InvalidNamespace,
        );
        assert!(matches!(
            err.error_response(),
            Some(Message::DiscoverResponse(DiscoverResponse {
                status: ResponseStatus::InvalidNamespace,
                ..
            }))
        ));
    }
}

#[test]
fn unknown_type_is_refused() {
    assert_eq!(decode(&hex("08 09")), Err(DecodeError::UnknownType(9)));
    // Even with a valid register sub-message alongside.
    let bytes = cat(&[
        &varint_field(1, 9),
        &len_field(2, &hex("0a 01 78 12 01 01")),
    ]);
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownType(9)));
    assert_eq!(DecodeError::UnknownType(9).error_response(), None);
}

#[test]
fn empty_input_is_empty() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    // Only unknown fields: still nothing to act on.
    assert_eq!(decode(&hex("7a 01 ff")), Err(DecodeError::Empty));
    assert_eq!(DecodeError::Empty.error_response(), None);
}

#[test]
fn truncated_top_level_is_malformed_and_unanswered() {
    for bytes in [
        hex("08"),          // type key, no value
        hex("08 80"),       // type value's varint never ends
        hex("12 05 0a 01"), // register announces 5 bytes, has 2
        hex("80"),          // field key never ends
        hex("0a 00"),       // type (1) as length-delimited
        hex("12 01"),       // length with nothing after
    ] {
        let err = decode(&bytes).expect_err("must be refused");
        assert!(
            matches!(err, DecodeError::Malformed(_)),
            "{bytes:02x?}: {err:?}"
        );
        assert_eq!(err.error_response(), None, "{bytes:02x?}");
    }
}

#[test]
fn unregister_with_bad_namespace_is_invalid_but_unanswered() {
    for body in [
        vec![],
        len_field(1, b""),
        len_field(1, &[b'a'; 256]),
        len_field(1, &[0xff]),
        hex("08 01"),
    ] {
        let err = invalid(
            &unregister(&body),
            MessageKind::Unregister,
            ResponseStatus::InvalidNamespace,
        );
        assert_eq!(err.error_response(), None, "UNREGISTER gets no response");
    }
}

#[test]
fn discover_with_unmappable_bad_field_is_still_answered() {
    // type=3, discover { limit (field 2) sent length-delimited: "x" }
    let bytes = [0x08, 0x03, 0x2a, 0x03, 0x12, 0x01, 0x78];
    let err = rdv_wire::decode(&bytes).unwrap_err();
    match err.error_response() {
        Some(rdv_wire::Message::DiscoverResponse(r)) => {
            assert_eq!(r.status, rdv_wire::ResponseStatus::InternalError);
            assert!(
                r.status_text.contains("wrong wire type"),
                "{}",
                r.status_text
            );
        }
        other => panic!("expected a DISCOVER_RESPONSE refusal, got {other:?}"),
    }
}

#[test]
fn discover_response_keeps_good_registrations_around_a_bad_one() {
    let bytes = [
        0x08, 0x04, 0x32, 0x13, // type=4, discoverResponse (19 bytes)
        0x0a, 0x07, 0x0a, 0x00, 0x12, 0x01, 0xaa, 0x18,
        0x05, // reg: ns "" (invalid here), spr aa, ttl 5
        0x0a, 0x08, 0x0a, 0x01, b'b', 0x12, 0x01, 0xbb, 0x18,
        0x05, // reg: ns "b", spr bb, ttl 5
    ];
    match rdv_wire::decode(&bytes).unwrap() {
        rdv_wire::Message::DiscoverResponse(r) => {
            assert_eq!(r.registrations.len(), 1);
            assert_eq!(r.registrations[0].namespace.as_str(), "b");
            assert_eq!(&r.registrations[0].signed_peer_record[..], &[0xbb]);
        }
        other => panic!("expected DISCOVER_RESPONSE, got {other:?}"),
    }
}

#[test]
fn a_known_request_with_a_field_of_the_wrong_wire_type_is_answered() {
    // type=0 (REGISTER) sent as a length-delimited field next to a good
    // register sub-message: the request is still clearly a REGISTER.
    let bytes = cat(&[
        &len_field(1, &[0]),
        &len_field(2, &hex("0a 01 78 12 01 01")),
    ]);
    let err = decode(&bytes).unwrap_err();
    match err.error_response() {
        Some(Message::RegisterResponse(r)) => {
            assert_eq!(r.status, ResponseStatus::InternalError);
            assert!(r.status_text.contains("wire type"), "{}", r.status_text);
        }
        other => panic!("expected a REGISTER_RESPONSE refusal, got {other:?}"),
    }
    // type=3 (DISCOVER) with the discover sub-message sent as a varint.
    let bytes = cat(&[&varint_field(1, 3), &varint_field(5, 7)]);
    match decode(&bytes).unwrap_err().error_response() {
        Some(Message::DiscoverResponse(r)) => {
            assert_eq!(r.status, ResponseStatus::InternalError)
        }
        other => panic!("expected a DISCOVER_RESPONSE refusal, got {other:?}"),
    }
    // UNREGISTER gets no answer: still simply malformed.
    let bytes = cat(&[&varint_field(1, 2), &varint_field(4, 1)]);
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
    // A wrong-typed field of another kind's sub-message does not matter.
    let bytes = cat(&[&varint_field(1, 3), &len_field(5, &[]), &varint_field(2, 1)]);
    assert!(matches!(decode(&bytes), Ok(Message::Discover(_))));
}

#[test]
fn a_status_outside_int32_is_an_error_not_a_truncated_status() {
    // 2^32 would truncate to 0 (OK); 2^32 + 400 to E_UNAVAILABLE.
    for v in [1u64 << 32, (1u64 << 32) + 400, u64::from(u32::MAX)] {
        let reg = message(Some(1), 3, &varint_field(1, v));
        invalid(
            &reg,
            MessageKind::RegisterResponse,
            ResponseStatus::InternalError,
        );
        let disc = message(Some(4), 6, &varint_field(3, v));
        invalid(
            &disc,
            MessageKind::DiscoverResponse,
            ResponseStatus::InternalError,
        );
    }
    // A negative int32 (sign-extended to 64 bits) is a status, kept as such.
    let neg = message(Some(1), 3, &varint_field(1, (-5i64) as u64));
    match decode(&neg).unwrap() {
        Message::RegisterResponse(r) => assert_eq!(r.status, ResponseStatus::Other(-5)),
        other => panic!("{other:?}"),
    }
}

/// DISCOVER_SUBSCRIBE (type 100, go-libp2p-rendezvous's original schema and
/// py-libp2p's) is not served, and says so: an answer of type 101 with
/// `E_UNAVAILABLE` in its field 101, not a closed stream.
#[test]
fn discover_subscribe_is_answered_with_a_status() {
    // type = 100, discoverSubscribe (100) { supported_subscription_types = "x", ns = "chat" }
    let body = cat(&[&len_field(1, b"x"), &len_field(2, b"chat")]);
    let bytes = cat(&[&varint_field(1, 100), &len_field(100, &body)]);
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(
            &err,
            DecodeError::Invalid {
                kind: MessageKind::DiscoverSubscribe,
                status: ResponseStatus::Unavailable,
                ..
            }
        ),
        "{err:?}"
    );
    let answer = err.error_response().unwrap();
    let Message::DiscoverSubscribeResponse(r) = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(r.status, ResponseStatus::Unavailable);
    // On the wire: type 101 and the status (field 3) inside field 101.
    let wire = encode(&answer);
    let text = r.status_text.as_bytes();
    let inner = cat(&[&varint_field(3, 400), &len_field(4, text)]);
    assert_eq!(wire, cat(&[&varint_field(1, 101), &len_field(101, &inner)]));
    assert_eq!(decode(&wire).unwrap(), answer);
    // Other unknown types still have no answer to give.
    assert_eq!(decode(&hex("08 66")), Err(DecodeError::UnknownType(102)));
}

/// UNREGISTER's deprecated `id` (field 2): written by rdv's client (py-libp2p's
/// point ignores an UNREGISTER without it), read leniently.
#[test]
fn unregister_carries_its_deprecated_id() {
    let peer = rdv_wire::Keypair::generate_ed25519().public().to_peer_id();
    let msg = Message::Unregister(Unregister {
        namespace: ns("chat"),
        id: Some(peer),
    });
    let wire = encode(&msg);
    let inner = cat(&[&len_field(1, b"chat"), &len_field(2, &peer.to_bytes())]);
    assert_eq!(wire, cat(&[&varint_field(1, 2), &len_field(4, &inner)]));
    assert_eq!(decode(&wire).unwrap(), msg);
    // An id that is not a peer id is as good as none.
    let junk = cat(&[&len_field(1, b"chat"), &len_field(2, b"junk")]);
    let Message::Unregister(u) =
        decode(&cat(&[&varint_field(1, 2), &len_field(4, &junk)])).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.id, None);
}
