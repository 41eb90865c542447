//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`, issue 14 item
//! 3): valid inputs of every decoder, made here with rdv's own encoders and
//! fixed keys, so each run of `fuzz/run.sh` starts from inputs that reach
//! past the first length check instead of from nothing.
//!
//! The default test checks that the committed corpus is what the encoders
//! make today (a format change that would leave the seeds stale fails
//! here); `RDV_WRITE_FUZZ_SEEDS=1 cargo test -p rdv --test fuzz_seeds`
//! writes them. What a long fuzz run finds worth keeping goes in the same
//! directories under other names (this test looks only at its own).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rdv_context::hlc::HlcTimestamp;
use rdv_context::journal::JournalEntry;
use rdv_context::{
    BudgetLedger, Capabilities, Context, EffectCommand, HandshakeComplete, HandshakeInit, Identity,
    RendezvousConfig, RendezvousFact, RendezvousService, Route, SeededRng, TransportHint,
};
use rdv_wire::{
    Discover, DiscoverResponse, DiscoverSubscribeResponse, Keypair, Message, Multiaddr, Namespace,
    RecordFormat, Register, RegisterResponse, Registration, ResponseStatus, Ttl, Unregister,
    encode, encode_frame, sign_record,
};

/// A seed: target, file name, bytes.
type Seed = (&'static str, String, Vec<u8>);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus() -> PathBuf {
    fuzz_dir().join("corpus")
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

/// Rendezvous messages, frames, records and cookies (rdv-wire, rdv-point).
fn public_side() -> Vec<Seed> {
    let key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
    let addr: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
    let records: Vec<(RecordFormat, Vec<u8>)> = RecordFormat::ALL
        .iter()
        .map(|f| {
            (
                *f,
                sign_record(&key, std::slice::from_ref(&addr), 7, *f).unwrap(),
            )
        })
        .collect();
    let register = |r: &[u8]| {
        Message::Register(Register {
            namespace: ns("chat"),
            signed_peer_record: r.to_vec().into(),
            ttl: Some(Ttl::from_secs(7200)),
        })
    };
    let cookie = rdv_point::CookieKey::from_bytes([7; 32]).issue(
        Some(&ns("fuzz")),
        rdv_point::CookiePosition {
            epoch: 3,
            position: 42,
        },
    );
    let messages = vec![
        ("register", register(&records[0].1)),
        ("register_legacy", register(&records[1].1)),
        ("register_peer_info", register(&records[2].1)),
        (
            "register_response",
            Message::RegisterResponse(RegisterResponse::ok(Ttl::from_secs(7200))),
        ),
        (
            "unregister",
            Message::Unregister(Unregister {
                namespace: ns("chat"),
                id: Some(key.public().to_peer_id()),
            }),
        ),
        (
            "discover",
            Message::Discover(Discover {
                namespace: Some(ns("chat")),
                limit: Some(100),
                cookie: Some(cookie.clone()),
            }),
        ),
        (
            "discover_response",
            Message::DiscoverResponse(DiscoverResponse {
                registrations: vec![Registration {
                    namespace: ns("chat"),
                    signed_peer_record: records[0].1.clone().into(),
                    ttl: Ttl::from_secs(60),
                }],
                cookie: Some(cookie.clone()),
                ..DiscoverResponse::error(ResponseStatus::Ok, "")
            }),
        ),
        (
            "discover_subscribe_response",
            Message::DiscoverSubscribeResponse(DiscoverSubscribeResponse {
                status: ResponseStatus::Unavailable,
                status_text: "no".into(),
            }),
        ),
    ];
    let mut out: Vec<Seed> = Vec::new();
    for (name, m) in &messages {
        out.push(("decode_message", (*name).into(), encode(m)));
    }
    // DISCOVER_SUBSCRIBE (type 100) with its body in field 100.
    out.push((
        "decode_message",
        "discover_subscribe".into(),
        vec![
            0x08, 0x64, 0xa2, 0x06, 0x06, 0x12, 0x04, b'c', b'h', b'a', b't',
        ],
    ));
    // Byte 0 sets the largest frame (x4); then a length byte and the bytes.
    let frame = encode_frame(&encode(&messages[0].1));
    let mut framed = vec![255];
    for chunk in frame.chunks(200) {
        framed.push(chunk.len() as u8);
        framed.extend_from_slice(chunk);
    }
    out.push(("frame_decoder", "register_in_chunks".into(), framed));
    for (format, bytes) in &records {
        out.push((
            "verify_record",
            format!("{format:?}").to_lowercase(),
            bytes.clone(),
        ));
    }
    out.push(("cookie", "issued".into(), cookie.as_bytes().to_vec()));
    out
}

/// Facts, descriptors, invitations, rekeys, handshake messages, contexts
/// (rdv-context), and sync messages holding facts (rdv-sync).
fn private_side() -> Vec<Seed> {
    // The keys the context_input target opens descriptors with.
    let alice = Identity::from_secret_bytes([1; 32], [2; 32]);
    let bob = Identity::from_secret_bytes([5; 32], [6; 32]);
    let mut rng = SeededRng::from_seed([3; 32]);
    let mut ctx = Context::create(&alice, &mut rng);
    let invitation = ctx.invite(&alice, 1_800_000_000_000);
    ctx.add_member(&bob.static_key_binding()).unwrap();
    let mut service = RendezvousService::new(alice.clone(), RendezvousConfig::default(), &mut rng);
    service.install_keys(ctx.keys().clone()).unwrap();
    let ledger = BudgetLedger::new(100, 10_000);
    let snapshot = ledger.snapshot(ctx.id(), alice.authority(), 0, Capabilities::all());
    let hints = vec![TransportHint::TcpDirect {
        addr: "192.0.2.1:4001".into(),
    }];
    let outcome = service.prepare_publish_descriptor(&snapshot, ctx.id(), hints, 1_700_000_000_000);
    let descriptor = outcome
        .effects
        .iter()
        .find_map(|e| match e {
            EffectCommand::JournalAppend { fact, .. } => Some(fact.clone()),
            _ => None,
        })
        .unwrap();
    let sealed = match &descriptor {
        RendezvousFact::Descriptor(s) => s.to_bytes(),
        _ => unreachable!(),
    };
    let channel = RendezvousFact::channel_established(
        &alice,
        ctx.keys(),
        bob.authority(),
        alice.authority(),
        [9; 32],
        0,
    );
    let revocation = RendezvousFact::revoke(&alice, ctx.keys(), [4; 32]);
    let before = ctx.keys().clone();
    let rekey = ctx.advance_epoch(&alice, &[], &mut rng).unwrap();
    let rekey_fact = RendezvousFact::EpochRekey(Box::new(
        rdv_context::SealedRekey::seal(&rekey, &before).unwrap(),
    ));
    let init = HandshakeInit::new(
        ctx.id(),
        1,
        Route::Direct,
        vec![7; 96],
        &bob.static_public(),
    );
    let complete = HandshakeComplete {
        context_id: ctx.id(),
        epoch: 1,
        payload: vec![8; 48],
    };
    let ts = HlcTimestamp {
        wall_ms: 1_700_000_000_000,
        counter: 1,
    };
    let facts = [
        ("descriptor", descriptor),
        ("channel", channel),
        ("revocation", revocation),
        ("rekey", rekey_fact),
    ];
    // context_input: the first byte picks the decoder (its `match`).
    let tagged = |tag: u8, bytes: &[u8]| {
        let mut v = vec![tag];
        v.extend_from_slice(bytes);
        v
    };
    let mut out: Vec<Seed> = Vec::new();
    for (name, f) in &facts {
        out.push((
            "context_input",
            format!("fact_{name}"),
            tagged(0, &f.to_bytes()),
        ));
        let entry = JournalEntry::new(f.clone(), ts);
        out.push((
            "context_input",
            format!("entry_{name}"),
            tagged(1, &entry.to_bytes()),
        ));
    }
    out.push((
        "context_input",
        "sealed_descriptor".into(),
        tagged(2, &sealed),
    ));
    out.push((
        "context_input",
        "invitation".into(),
        tagged(3, &invitation.to_bytes()),
    ));
    out.push((
        "context_input",
        "invitation_text".into(),
        tagged(3, invitation.to_string().as_bytes()),
    ));
    out.push((
        "context_input",
        "rekey".into(),
        tagged(4, &rekey.to_bytes()),
    ));
    out.push((
        "context_input",
        "handshake_init".into(),
        tagged(6, &init.to_bytes()),
    ));
    out.push((
        "context_input",
        "handshake_complete".into(),
        tagged(7, &complete.to_bytes()),
    ));
    out.push((
        "context_input",
        "static_key_binding".into(),
        tagged(8, &bob.static_key_binding().to_bytes()),
    ));
    out.push((
        "context_input",
        "context".into(),
        tagged(9, &ctx.to_bytes()),
    ));
    let message = rdv_sync::Message {
        facts: facts
            .iter()
            .map(|(_, f)| JournalEntry::new(f.clone(), ts))
            .collect(),
        ..rdv_sync::Message::default()
    };
    out.push(("sync_message", "facts".into(), message.encode()));
    out
}

/// Relay protocol messages (rdv-relay) and STUN datagrams (RFC 5769).
fn transports() -> Vec<Seed> {
    use rdv_relay::proto::{ClientMsg, ServerMsg};
    let client = [
        ("hello", ClientMsg::Hello { nonce: [1; 32] }),
        (
            "auth",
            ClientMsg::Auth {
                grant: [2; 32],
                handle: [3; 32],
                sig: [4; 64],
            },
        ),
        (
            "open",
            ClientMsg::Open {
                circuit: 1,
                to: [5; 32],
            },
        ),
        (
            "data",
            ClientMsg::Data {
                circuit: 1,
                payload: b"ciphertext",
            },
        ),
        ("close", ClientMsg::Close { circuit: 1 }),
    ];
    let server = [
        (
            "challenge",
            ServerMsg::Challenge {
                nonce: [6; 32],
                sig: [7; 64],
            },
        ),
        ("welcome", ServerMsg::Welcome),
        (
            "incoming",
            ServerMsg::Incoming {
                circuit: 2,
                from: [8; 32],
            },
        ),
        ("opened", ServerMsg::Opened { circuit: 2 }),
    ];
    let mut out: Vec<Seed> = Vec::new();
    for (name, m) in &client {
        out.push(("relay_input", format!("client_{name}"), m.encode()));
    }
    for (name, m) in &server {
        out.push(("relay_input", format!("server_{name}"), m.encode()));
    }
    // RFC 5769 §2.1 sample request, and a bare Binding request.
    let sample: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    out.push(("stun_input", "rfc5769_request".into(), sample.to_vec()));
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend_from_slice(&[0x5a; 12]);
    out.push(("stun_input", "binding".into(), binding));
    out
}

fn seeds() -> Vec<Seed> {
    let mut all = public_side();
    all.extend(private_side());
    all.extend(transports());
    all
}

/// Every fuzz target has seeds, and the committed ones are what the
/// encoders make now (or, with `RDV_WRITE_FUZZ_SEEDS=1`, they are written).
#[test]
fn the_seed_corpus_is_current() {
    let write = std::env::var_os("RDV_WRITE_FUZZ_SEEDS").is_some();
    let seeds = seeds();
    let targets = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for line in targets.lines() {
        if let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|l| l.strip_suffix('"'))
            && name != "rdv-fuzz"
            && name != "channel_frame"
        {
            assert!(
                seeds.iter().any(|(t, _, _)| *t == name),
                "no seeds for the fuzz target {name}"
            );
        }
    }
    for (target, name, bytes) in seeds {
        let path = corpus().join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let held = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with RDV_WRITE_FUZZ_SEEDS=1 cargo test -p rdv --test fuzz_seeds",
                path.display()
            )
        });
        assert!(
            held == bytes,
            "{} is stale: the encoder makes other bytes now; rewrite the seeds with RDV_WRITE_FUZZ_SEEDS=1 cargo test -p rdv --test fuzz_seeds",
            path.display()
        );
    }
}
