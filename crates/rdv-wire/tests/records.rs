//! Signed peer records (RFC 0002 envelopes holding RFC 0003 records), in the
//! standard format and rust-libp2p's legacy one, checked against
//! libp2p-core's own implementation in both directions.
#![allow(missing_docs)]
// Helpers outside `#[test]` fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use libp2p_core::{PeerRecord, SignedEnvelope};
use prost::Message as _;
use rdv_wire::record::{
    LEGACY_DOMAIN, LEGACY_PAYLOAD_TYPE, STANDARD_DOMAIN, STANDARD_PAYLOAD_TYPE,
};
use rdv_wire::{
    Keypair, Multiaddr, RecordError, RecordFormat, ResponseStatus, proto, sign_record,
    verify_record,
};

const FORMATS: [RecordFormat; 2] = [RecordFormat::Standard, RecordFormat::Legacy];

/// The envelope of RFC 0002, written out here so tests can tamper with it.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(bytes = "vec", tag = "1")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    payload_type: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    signature: Vec<u8>,
}

fn keys() -> Vec<(&'static str, Keypair)> {
    vec![
        ("ed25519", Keypair::generate_ed25519()),
        ("secp256k1", Keypair::generate_secp256k1()),
    ]
}

fn addrs() -> Vec<Multiaddr> {
    vec![
        "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
    ]
}

fn domain_and_type(format: RecordFormat) -> (&'static str, &'static [u8]) {
    match format {
        RecordFormat::Standard => (STANDARD_DOMAIN, STANDARD_PAYLOAD_TYPE),
        RecordFormat::Legacy => (LEGACY_DOMAIN, LEGACY_PAYLOAD_TYPE),
        RecordFormat::PeerInfo => unreachable!("a PeerInfo is not signed"),
    }
}

fn payload_naming(key: &Keypair, seq: u64) -> Vec<u8> {
    proto::PeerRecord {
        peer_id: key.public().to_peer_id().to_bytes(),
        seq,
        addresses: addrs()
            .iter()
            .map(|a| proto::AddressInfo {
                multiaddr: a.to_vec(),
            })
            .collect(),
    }
    .encode_to_vec()
}

#[test]
fn constants_are_the_published_ones() {
    // RFC 0003 / multicodec `libp2p-peer-record` = 0x0301, and rust-libp2p's legacy pair.
    assert_eq!(STANDARD_DOMAIN, "libp2p-peer-record");
    assert_eq!(STANDARD_PAYLOAD_TYPE, &[0x03, 0x01]);
    assert_eq!(LEGACY_DOMAIN, "libp2p-routing-state");
    assert_eq!(LEGACY_PAYLOAD_TYPE, b"/libp2p/routing-state-record");
}

#[test]
fn sign_then_verify_round_trips_in_both_formats() {
    for (name, key) in keys() {
        for format in FORMATS {
            let bytes = sign_record(&key, &addrs(), 42, format).unwrap();
            let r = verify_record(&bytes).unwrap_or_else(|e| panic!("{name} {format:?}: {e}"));
            assert_eq!(r.peer_id, key.public().to_peer_id(), "{name} {format:?}");
            assert_eq!(r.seq, 42);
            assert_eq!(r.addresses, addrs());
            assert_eq!(r.format, format, "{name}");

            // And the envelope really uses that format's payload type.
            let env = Envelope::decode(&bytes[..]).unwrap();
            assert_eq!(env.payload_type, domain_and_type(format).1);
        }
    }
}

#[test]
fn record_without_addresses_verifies() {
    let key = Keypair::generate_ed25519();
    let bytes = sign_record(&key, &[], 0, RecordFormat::Standard).unwrap();
    let r = verify_record(&bytes).unwrap();
    assert!(r.addresses.is_empty());
    assert_eq!(r.seq, 0);
}

#[test]
fn libp2p_core_records_verify_with_ours() {
    for (name, key) in keys() {
        let legacy = PeerRecord::new(&key, addrs()).unwrap();
        let bytes = legacy.to_signed_envelope().into_protobuf_encoding();
        let r = verify_record(&bytes).unwrap_or_else(|e| panic!("{name} legacy: {e}"));
        assert_eq!(r.format, RecordFormat::Legacy, "{name}");
        assert_eq!(
            (r.peer_id, r.seq, &r.addresses[..]),
            (legacy.peer_id(), legacy.seq(), legacy.addresses())
        );

        let standard = PeerRecord::new_interop(&key, addrs()).unwrap();
        let bytes = standard.to_signed_envelope().into_protobuf_encoding();
        let r = verify_record(&bytes).unwrap_or_else(|e| panic!("{name} standard: {e}"));
        assert_eq!(r.format, RecordFormat::Standard, "{name}");
        assert_eq!(
            (r.peer_id, r.seq, &r.addresses[..]),
            (standard.peer_id(), standard.seq(), standard.addresses())
        );
    }
}

#[test]
fn our_records_verify_with_libp2p_core() {
    for (name, key) in keys() {
        let peer = key.public().to_peer_id();

        let bytes = sign_record(&key, &addrs(), 7, RecordFormat::Legacy).unwrap();
        let env = SignedEnvelope::from_protobuf_encoding(&bytes).unwrap();
        let r = PeerRecord::from_signed_envelope(env.clone())
            .unwrap_or_else(|e| panic!("{name} legacy: {e}"));
        assert_eq!(
            (r.peer_id(), r.seq(), r.addresses()),
            (peer, 7, &addrs()[..])
        );
        // A legacy record is not a standard one.
        assert!(PeerRecord::from_signed_envelope_interop(env).is_err());

        let bytes = sign_record(&key, &addrs(), 8, RecordFormat::Standard).unwrap();
        let env = SignedEnvelope::from_protobuf_encoding(&bytes).unwrap();
        let r = PeerRecord::from_signed_envelope_interop(env.clone())
            .unwrap_or_else(|e| panic!("{name} standard: {e}"));
        assert_eq!(
            (r.peer_id(), r.seq(), r.addresses()),
            (peer, 8, &addrs()[..])
        );
        assert!(PeerRecord::from_signed_envelope(env).is_err());
    }
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    for (name, key) in keys() {
        for format in FORMATS {
            let bytes = sign_record(&key, &addrs(), 1, format).unwrap();
            let env = Envelope::decode(&bytes[..]).unwrap();
            for at in [0, env.signature.len() / 2, env.signature.len() - 1] {
                let mut bad = env.clone();
                bad.signature[at] ^= 0x01;
                let got = verify_record(&bad.encode_to_vec());
                assert!(
                    matches!(got, Err(RecordError::BadSignature)),
                    "{name} {format:?} byte {at}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn tampered_payload_is_bad_signature() {
    let key = Keypair::generate_ed25519();
    for format in FORMATS {
        let bytes = sign_record(&key, &addrs(), 1, format).unwrap();
        let mut env = Envelope::decode(&bytes[..]).unwrap();
        env.payload = payload_naming(&key, 2); // seq 1 -> 2, signature unchanged
        let got = verify_record(&env.encode_to_vec());
        assert!(
            matches!(got, Err(RecordError::BadSignature)),
            "{format:?}: {got:?}"
        );
    }
}

#[test]
fn record_naming_another_peer_is_bad_signature() {
    let a = Keypair::generate_ed25519();
    for (name, b) in keys() {
        for format in FORMATS {
            let (domain, payload_type) = domain_and_type(format);
            // Payload names A; B signs it, correctly for B.
            let env = SignedEnvelope::new(
                &b,
                domain.to_owned(),
                payload_type.to_vec(),
                payload_naming(&a, 1),
            )
            .unwrap();
            let got = verify_record(&env.into_protobuf_encoding());
            assert!(
                matches!(got, Err(RecordError::BadSignature)),
                "{name} {format:?}: {got:?}"
            );
        }
    }
}

#[test]
fn payload_type_of_one_format_with_domain_of_the_other_is_bad_signature() {
    let key = Keypair::generate_ed25519();
    for (domain, payload_type) in [
        (LEGACY_DOMAIN, STANDARD_PAYLOAD_TYPE),
        (STANDARD_DOMAIN, LEGACY_PAYLOAD_TYPE),
    ] {
        let env = SignedEnvelope::new(
            &key,
            domain.to_owned(),
            payload_type.to_vec(),
            payload_naming(&key, 1),
        )
        .unwrap();
        let got = verify_record(&env.into_protobuf_encoding());
        assert!(
            matches!(got, Err(RecordError::BadSignature)),
            "{domain}: {got:?}"
        );
    }
}

#[test]
fn garbage_is_an_envelope_error() {
    for bytes in [
        &b""[..],
        b"not an envelope",
        &[0x0a, 0x05, 0x01],       // public_key announces 5 bytes, has 1
        &[0x0a, 0x02, 0xff, 0xff], // public_key that is no libp2p key
    ] {
        let got = verify_record(bytes);
        assert!(
            matches!(got, Err(RecordError::Envelope(_))),
            "{bytes:02x?}: {got:?}"
        );
    }
}

#[test]
fn envelope_with_another_payload_type_is_not_a_peer_record() {
    let key = Keypair::generate_ed25519();
    let env = SignedEnvelope::new(
        &key,
        "some-other-domain".to_owned(),
        b"/some/other/type".to_vec(),
        payload_naming(&key, 1),
    )
    .unwrap();
    let got = verify_record(&env.into_protobuf_encoding());
    assert!(matches!(got, Err(RecordError::NotAPeerRecord)), "{got:?}");
}

#[test]
fn correctly_signed_garbage_payload_is_malformed() {
    let key = Keypair::generate_ed25519();
    for format in FORMATS {
        let (domain, payload_type) = domain_and_type(format);
        let env = SignedEnvelope::new(
            &key,
            domain.to_owned(),
            payload_type.to_vec(),
            vec![0xff, 0xff, 0xff],
        )
        .unwrap();
        let got = verify_record(&env.into_protobuf_encoding());
        assert!(
            matches!(got, Err(RecordError::Malformed(_))),
            "{format:?}: {got:?}"
        );
    }
}

#[test]
fn unparseable_addresses_are_left_out_not_fatal() {
    use libp2p_core::SignedEnvelope;
    use prost::Message as _;
    let key = Keypair::generate_ed25519();
    let good: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
    let payload = rdv_wire::proto::PeerRecord {
        peer_id: key.public().to_peer_id().to_bytes(),
        seq: 9,
        addresses: vec![
            rdv_wire::proto::AddressInfo {
                multiaddr: good.to_vec(),
            },
            // Protocol code 0x3fff_ffff is unknown to every multiaddr table.
            rdv_wire::proto::AddressInfo {
                multiaddr: vec![0xff, 0xff, 0xff, 0xff, 0x03, 1, 2],
            },
        ],
    }
    .encode_to_vec();
    let env =
        SignedEnvelope::new(&key, "libp2p-peer-record".into(), vec![0x03, 0x01], payload).unwrap();
    let v = verify_record(&env.into_protobuf_encoding()).unwrap();
    assert_eq!(v.addresses, vec![good]);
    assert_eq!(v.seq, 9);
    assert_eq!(v.format, RecordFormat::Standard);
}

#[test]
fn every_record_error_maps_to_invalid_signed_peer_record() {
    let key = Keypair::generate_ed25519();
    let signed = |domain: &str, payload_type: &[u8], payload: Vec<u8>| {
        SignedEnvelope::new(&key, domain.to_owned(), payload_type.to_vec(), payload)
            .unwrap()
            .into_protobuf_encoding()
    };
    let mut bad_signature =
        Envelope::decode(&sign_record(&key, &addrs(), 1, RecordFormat::Standard).unwrap()[..])
            .unwrap();
    bad_signature.signature[0] ^= 0x01;
    let errors = [
        verify_record(b"not an envelope").unwrap_err(),
        verify_record(&signed("other", b"/other", payload_naming(&key, 1))).unwrap_err(),
        verify_record(&bad_signature.encode_to_vec()).unwrap_err(),
        verify_record(&signed(STANDARD_DOMAIN, STANDARD_PAYLOAD_TYPE, vec![0xff])).unwrap_err(),
    ];
    assert!(
        matches!(errors[0], RecordError::Envelope(_)),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(errors[1], RecordError::NotAPeerRecord),
        "{:?}",
        errors[1]
    );
    assert!(
        matches!(errors[2], RecordError::BadSignature),
        "{:?}",
        errors[2]
    );
    assert!(
        matches!(errors[3], RecordError::Malformed(_)),
        "{:?}",
        errors[3]
    );
    for e in errors {
        assert_eq!(e.status(), ResponseStatus::InvalidSignedPeerRecord, "{e:?}");
        assert_eq!(e.status().name(), "E_INVALID_SIGNED_PEER_RECORD");
    }
}

/// go-libp2p-rendezvous's original schema, as py-libp2p writes it:
/// `PeerInfo { bytes id = 1; repeated bytes addrs = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct PeerInfo {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    addrs: Vec<Vec<u8>>,
}

#[test]
fn an_unsigned_peer_info_is_read_as_its_own_format() {
    for (name, key) in keys() {
        let peer = key.public().to_peer_id();
        // As py-libp2p encodes it (written out here, not by rdv).
        let bytes = PeerInfo {
            id: peer.to_bytes(),
            addrs: addrs().iter().map(|a| a.to_vec()).collect(),
        }
        .encode_to_vec();
        let r = verify_record(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.format, RecordFormat::PeerInfo, "{name}");
        assert_eq!(
            (r.peer_id, r.seq, r.addresses),
            (peer, 0, addrs()),
            "{name}"
        );
        // rdv writes the same bytes.
        assert_eq!(
            sign_record(&key, &addrs(), 9, RecordFormat::PeerInfo).unwrap(),
            bytes,
            "{name}"
        );
        assert_eq!(rdv_wire::peer_info(&peer, &addrs()), bytes, "{name}");
        // Signed records of either format are still envelopes, never PeerInfos.
        for format in FORMATS {
            let signed = verify_record(&sign_record(&key, &addrs(), 1, format).unwrap()).unwrap();
            assert_eq!(signed.format, format, "{name}");
        }
    }
}

#[test]
fn a_peer_info_without_a_peer_id_is_refused() {
    for id in [Vec::new(), vec![0x08, 0x01, 0x12], b"someone".to_vec()] {
        let bytes = PeerInfo {
            id: id.clone(),
            addrs: vec![addrs()[0].to_vec()],
        }
        .encode_to_vec();
        let e = verify_record(&bytes).unwrap_err();
        assert!(matches!(e, RecordError::Envelope(_)), "{id:?}: {e:?}");
        assert_eq!(e.status(), ResponseStatus::InvalidSignedPeerRecord);
    }
    // An envelope whose signature is broken is refused as one, not read as
    // a PeerInfo.
    let key = Keypair::generate_ed25519();
    let mut env =
        Envelope::decode(&sign_record(&key, &addrs(), 1, RecordFormat::Legacy).unwrap()[..])
            .unwrap();
    env.signature[3] ^= 0x40;
    assert!(matches!(
        verify_record(&env.encode_to_vec()),
        Err(RecordError::BadSignature)
    ));
}
