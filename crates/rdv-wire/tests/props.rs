//! Property tests: round trips, length functions, agreement with prost's
//! encoder, and robustness against arbitrary bytes.
#![allow(missing_docs)]
// Helpers outside `#[test]` fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;
use rdv_wire::{
    Cookie, DEFAULT_MAX_MESSAGE_SIZE, DecodeError, Discover, DiscoverResponse, FrameDecoder,
    MAX_COOKIE_LEN, MAX_NAMESPACE_LEN, Message, Namespace, Register, RegisterResponse,
    Registration, ResponseStatus, Ttl, Unregister, decode, encode, encode_frame, encoded_len,
    proto, registration_encoded_len,
};

// ---------------------------------------------------------------- strategies

/// Valid namespace strings: 1..=255 bytes of UTF-8, ASCII and not.
fn ns_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/._-]{1,40}",
        "\\PC{1,90}",
        // Lengths near the limit.
        (250usize..=MAX_NAMESPACE_LEN).prop_map(|n| "x".repeat(n)),
    ]
    .prop_filter("1..=255 bytes", |s| {
        (1..=MAX_NAMESPACE_LEN).contains(&s.len())
    })
}

fn namespace() -> impl Strategy<Value = Namespace> {
    ns_string().prop_map(|s| Namespace::new(s).unwrap())
}

fn blob(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 0..=max),
    ]
}

fn nonempty_blob(max: usize) -> impl Strategy<Value = Vec<u8>> {
    blob(max).prop_filter("non-empty", |b| !b.is_empty())
}

/// TTLs and limits across varint widths; never 0, which decodes as absent.
fn nonzero_u64() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..200, 1u64..300_000, 1u64..=u64::MAX]
}

fn status() -> impl Strategy<Value = ResponseStatus> {
    prop_oneof![
        4 => prop_oneof![
            Just(ResponseStatus::Ok),
            Just(ResponseStatus::InvalidNamespace),
            Just(ResponseStatus::InvalidSignedPeerRecord),
            Just(ResponseStatus::InvalidTtl),
            Just(ResponseStatus::InvalidCookie),
            Just(ResponseStatus::NotAuthorized),
            Just(ResponseStatus::InternalError),
            Just(ResponseStatus::Unavailable),
        ],
        // Other(code) only for codes that are not known: Other(100) would
        // come back as InvalidNamespace, which is right.
        1 => any::<i32>().prop_map(ResponseStatus::from_code),
    ]
}

fn cookie() -> impl Strategy<Value = Cookie> {
    blob(MAX_COOKIE_LEN).prop_map(|b| Cookie::new(b).unwrap())
}

fn registration() -> impl Strategy<Value = Registration> {
    (namespace(), blob(400), any::<u64>()).prop_map(|(namespace, spr, ttl)| Registration {
        namespace,
        signed_peer_record: spr.into(),
        ttl: Ttl::from_secs(ttl),
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            namespace(),
            nonempty_blob(600),
            proptest::option::of(nonzero_u64())
        )
            .prop_map(|(namespace, spr, ttl)| Message::Register(Register {
                namespace,
                signed_peer_record: spr.into(),
                ttl: ttl.map(Ttl::from_secs),
            })),
        (status(), ".{0,40}", proptest::option::of(nonzero_u64())).prop_map(
            |(status, status_text, ttl)| Message::RegisterResponse(RegisterResponse {
                status,
                status_text,
                ttl: ttl.map(Ttl::from_secs),
            })
        ),
        (namespace(), proptest::option::of(any::<[u8; 32]>())).prop_map(|(namespace, key)| {
            let id = key.map(|k| {
                rdv_wire::Keypair::ed25519_from_bytes(k)
                    .expect("32 bytes are an Ed25519 secret")
                    .public()
                    .to_peer_id()
            });
            Message::Unregister(Unregister { namespace, id })
        }),
        (
            proptest::option::of(namespace()),
            proptest::option::of(nonzero_u64()),
            // An empty cookie in DISCOVER decodes as no cookie.
            proptest::option::of(nonempty_blob(MAX_COOKIE_LEN))
        )
            .prop_map(|(namespace, limit, cookie)| Message::Discover(Discover {
                namespace,
                limit,
                cookie: cookie.map(|c| Cookie::new(c).unwrap()),
            })),
        (
            status(),
            ".{0,40}",
            proptest::collection::vec(registration(), 0..6),
            proptest::option::of(cookie())
        )
            .prop_map(|(status, status_text, registrations, cookie)| {
                Message::DiscoverResponse(DiscoverResponse {
                    status,
                    status_text,
                    registrations,
                    cookie,
                })
            }),
    ]
}

// ---------------------------------------------- prost structs, valid fields

fn ns_bytes() -> impl Strategy<Value = Vec<u8>> {
    ns_string().prop_map(String::into_bytes)
}

fn proto_register(spr_required: bool) -> impl Strategy<Value = proto::Register> {
    let spr = if spr_required {
        nonempty_blob(300).prop_map(Some).boxed()
    } else {
        proptest::option::of(blob(300)).boxed()
    };
    (
        ns_bytes(),
        spr,
        proptest::option::of(prop_oneof![Just(0u64), any::<u64>()]),
    )
        .prop_map(|(ns, spr, ttl)| proto::Register {
            ns: Some(ns),
            signed_peer_record: spr.map(Bytes::from),
            ttl,
        })
}

fn opt_type(code: i32) -> impl Strategy<Value = Option<i32>> {
    prop_oneof![Just(Some(code)), Just(None)]
}

fn proto_message() -> impl Strategy<Value = proto::Message> {
    let status = proptest::option::of(any::<i32>());
    let text = proptest::option::of(".{0,30}");
    prop_oneof![
        (opt_type(0), proto_register(true)).prop_map(|(t, r)| proto::Message {
            r#type: t,
            register: Some(r),
            ..Default::default()
        }),
        (
            opt_type(1),
            status.clone(),
            text.clone(),
            proptest::option::of(prop_oneof![Just(0u64), any::<u64>()])
        )
            .prop_map(|(t, status, status_text, ttl)| proto::Message {
                r#type: t,
                register_response: Some(proto::RegisterResponse {
                    status,
                    status_text,
                    ttl,
                }),
                ..Default::default()
            }),
        (opt_type(2), ns_bytes()).prop_map(|(t, ns)| proto::Message {
            r#type: t,
            unregister: Some(proto::Unregister {
                ns: Some(ns),
                id: None
            }),
            ..Default::default()
        }),
        (
            opt_type(3),
            proptest::option::of(prop_oneof![Just(Vec::new()), ns_bytes()]),
            proptest::option::of(prop_oneof![Just(0u64), any::<u64>()]),
            proptest::option::of(blob(MAX_COOKIE_LEN))
        )
            .prop_map(|(t, ns, limit, cookie)| proto::Message {
                r#type: t,
                discover: Some(proto::Discover { ns, limit, cookie }),
                ..Default::default()
            }),
        (
            opt_type(4),
            proptest::collection::vec(proto_register(false), 0..5),
            proptest::option::of(blob(MAX_COOKIE_LEN)),
            status,
            text
        )
            .prop_map(
                |(t, registrations, cookie, status, status_text)| proto::Message {
                    r#type: t,
                    discover_response: Some(proto::DiscoverResponse {
                        registrations,
                        cookie,
                        status,
                        status_text,
                    }),
                    ..Default::default()
                }
            ),
    ]
}

/// What `decode` must make of a valid prost message, field by field, by the
/// lenient rules: absent status = OK, 0 ttl/limit = absent, empty DISCOVER
/// ns/cookie = absent.
fn expected_from_proto(x: &proto::Message) -> Message {
    let ns = |b: &Option<Vec<u8>>| Namespace::from_bytes(b.as_deref().unwrap_or_default()).unwrap();
    let ttl = |t: Option<u64>| t.filter(|t| *t != 0).map(Ttl::from_secs);
    let status = |s: Option<i32>| ResponseStatus::from_code(s.unwrap_or(0));
    if let Some(r) = &x.register {
        Message::Register(Register {
            namespace: ns(&r.ns),
            signed_peer_record: r.signed_peer_record.clone().unwrap_or_default(),
            ttl: ttl(r.ttl),
        })
    } else if let Some(r) = &x.register_response {
        Message::RegisterResponse(RegisterResponse {
            status: status(r.status),
            status_text: r.status_text.clone().unwrap_or_default(),
            ttl: ttl(r.ttl),
        })
    } else if let Some(u) = &x.unregister {
        Message::Unregister(Unregister {
            namespace: ns(&u.ns),
            id: None,
        })
    } else if let Some(d) = &x.discover {
        Message::Discover(Discover {
            namespace: d
                .ns
                .as_ref()
                .filter(|n| !n.is_empty())
                .map(|n| Namespace::new(String::from_utf8(n.clone()).unwrap()).unwrap()),
            limit: d.limit.filter(|l| *l != 0),
            cookie: d
                .cookie
                .clone()
                .filter(|c| !c.is_empty())
                .map(|c| Cookie::new(c).unwrap()),
        })
    } else if let Some(d) = &x.discover_response {
        Message::DiscoverResponse(DiscoverResponse {
            status: status(d.status),
            status_text: d.status_text.clone().unwrap_or_default(),
            registrations: d
                .registrations
                .iter()
                .map(|r| Registration {
                    namespace: ns(&r.ns),
                    signed_peer_record: r.signed_peer_record.clone().unwrap_or_default(),
                    ttl: Ttl::from_secs(r.ttl.unwrap_or(0)),
                })
                .collect(),
            cookie: d.cookie.clone().map(|c| Cookie::new(c).unwrap()),
        })
    } else {
        unreachable!("strategy always sets one sub-message")
    }
}

/// Reads the length prefix of the sub-message in an encoded message laid out
/// as `08 <type> <key> <len> <body>`, checks it spans the rest, and returns it.
fn sub_message_len(wire: &[u8]) -> usize {
    let mut len = 0usize;
    let mut i = 3;
    let mut shift = 0;
    loop {
        let b = wire[i];
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(len, wire.len() - i, "sub-message length prefix");
    len
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_messages_round_trip(msg in message()) {
        let wire = encode(&msg);
        prop_assert_eq!(decode(&wire), Ok(msg));
    }

    #[test]
    fn encoded_len_is_exact(msg in message()) {
        prop_assert_eq!(encoded_len(&msg), encode(&msg).len());
    }

    #[test]
    fn encoding_always_carries_type_and_status(msg in message()) {
        // Strict encoding, for peers (rust-libp2p) that need both: decode
        // what we sent with prost and look at the raw optionals.
        let x = proto::Message::decode(&encode(&msg)[..]).unwrap();
        prop_assert!(x.r#type.is_some());
        if let Some(r) = &x.register_response {
            prop_assert!(r.status.is_some());
        }
        if let Some(d) = &x.discover_response {
            prop_assert!(d.status.is_some());
            for r in &d.registrations {
                prop_assert!(r.ns.is_some() && r.ttl.is_some());
            }
        }
    }

    #[test]
    fn registration_encoded_len_is_the_growth_of_a_discover_response(
        base in proptest::collection::vec(registration(), 0..4),
        added in registration(),
        cookie in proptest::option::of(cookie()),
    ) {
        let mut d = DiscoverResponse {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            registrations: base,
            cookie,
        };
        let before = encode(&Message::DiscoverResponse(d.clone()));
        let predicted = registration_encoded_len(
            added.namespace.as_str().len(),
            added.signed_peer_record.len(),
            added.ttl.as_secs(),
        );
        d.registrations.push(added);
        let after = encode(&Message::DiscoverResponse(d));

        // The DiscoverResponse body grows by exactly the prediction ...
        let body_growth = sub_message_len(&after) - sub_message_len(&before);
        prop_assert_eq!(body_growth, predicted);
        // ... and the whole message by that plus any growth of the body's
        // own length prefix (a varint, so at most 2 bytes more here).
        let growth = after.len() - before.len();
        prop_assert!((predicted..=predicted + 2).contains(&growth), "{growth} vs {predicted}");
    }

    #[test]
    fn decode_agrees_with_prost_encoding(x in proto_message()) {
        let wire = x.encode_to_vec();
        prop_assert_eq!(decode(&wire), Ok(expected_from_proto(&x)));
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_is_stable_on_mutated_valid_messages(
        msg in message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut wire = encode(&msg);
        for (at, byte) in edits {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        if truncate {
            wire.truncate(cut.index(wire.len() + 1));
        }
        // Whatever decodes re-encodes to something that decodes to the same.
        if let Ok(m) = decode(&wire) {
            prop_assert_eq!(decode(&encode(&m)), Ok(m));
        }
    }

    #[test]
    fn invalid_errors_answer_only_requests(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Err(e) = decode(&bytes) {
            let answer = e.error_response();
            match &e {
                DecodeError::Invalid { kind, status, .. } => {
                    let expected_kind = kind.response_kind();
                    prop_assert_eq!(answer.as_ref().map(Message::kind), expected_kind);
                    if let Some(Message::RegisterResponse(r)) = &answer {
                        prop_assert_eq!(r.status, *status);
                    }
                    if let Some(Message::DiscoverResponse(r)) = &answer {
                        prop_assert_eq!(r.status, *status);
                    }
                }
                _ => prop_assert!(answer.is_none()),
            }
        }
    }

    #[test]
    fn frame_decoder_survives_arbitrary_pushes(
        max in prop_oneof![0usize..64, 100usize..400, Just(DEFAULT_MAX_MESSAGE_SIZE)],
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
    ) {
        let mut d = FrameDecoder::new(max);
        'outer: for chunk in chunks {
            d.push(&chunk);
            loop {
                match d.next_frame() {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= max),
                    Ok(None) => break,
                    Err(_) => break 'outer, // the stream is dead
                }
            }
            // Once drained, what is left is part of one frame at most:
            // an incomplete prefix, or a body shorter than max.
            prop_assert!(d.buffered() <= max + 10, "{} buffered, max {}", d.buffered(), max);
        }
    }

    #[test]
    fn frame_decoder_following_capacity_hint_never_buffers_past_max(
        max in 0usize..300,
        stream in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut d = FrameDecoder::new(max);
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = d.capacity_hint().min(rest.len());
            prop_assert!(n > 0);
            d.push(&rest[..n]);
            rest = &rest[n..];
            prop_assert!(d.buffered() <= max + 10, "{} buffered, max {}", d.buffered(), max);
            loop {
                match d.next_frame() {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= max),
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
        }
    }

    #[test]
    fn framed_messages_survive_the_frame_decoder(
        msgs in proptest::collection::vec(message(), 1..4),
        step in 1usize..64,
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(&encode(m))).collect();
        let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut got = Vec::new();
        for chunk in stream.chunks(step) {
            d.push(chunk);
            while let Some(frame) = d.next_frame().unwrap() {
                got.push(decode(&frame).unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(d.buffered(), 0);
    }
}
