//! A deterministic smoke run of what `fuzz/fuzz_targets/stun_input.rs`
//! checks, in the default test suite: valid requests and responses with
//! random bytes changed, cut or appended go through the server and through a
//! client that has the matching transaction running. No panic; the server
//! answers only what classifies as STUN, with the request's transaction id.

use std::net::SocketAddr;
use std::time::Instant;

use rdv_stun::stun_types::attribute::{RawAttribute, Software, XorMappedAddress};
use rdv_stun::stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec};
use rdv_stun::{ClientConfig, Kind, MAX_ANSWER, StunClient, StunServer, classify};

/// A deterministic byte stream (BLAKE3 XOF of a fixed key).
struct Bytes(blake3::OutputReader);

impl Bytes {
    fn next(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Bytes, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            _ => v.extend(std::iter::repeat_n(rng.next() as u8, rng.below(9))),
        }
    }
    v
}

#[test]
fn mutated_messages_never_panic_and_answers_stay_well_formed() {
    let mut rng = Bytes(
        blake3::Hasher::new()
            .update(b"rdv stun mutations")
            .finalize_xof(),
    );
    let server_addr: SocketAddr = "192.0.2.10:3478".parse().expect("addr");
    let from: SocketAddr = "198.51.100.4:5555".parse().expect("addr");
    let now = Instant::now();
    let mut server = StunServer::new(Default::default());
    let (mut answers, mut accepted) = (0u32, 0u64);
    for round in 0..300u32 {
        let config = ClientConfig {
            servers: vec![server_addr],
            ..ClientConfig::default()
        };
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&round.to_le_bytes());
        let mut client = StunClient::new(config, seed, now);
        let request = client
            .poll_transmit(now)
            .expect("request")
            .contents()
            .to_vec();
        let req = Message::from_bytes(&request).expect("request parses");
        // A valid response with a few attributes, to mutate.
        let mut w = Message::builder_success(&req, MessageWriteVec::new());
        w.add_attribute(&Software::new("x").expect("software"))
            .expect("attr");
        w.add_attribute(&XorMappedAddress::new(from, req.transaction_id()))
            .expect("attr");
        w.add_attribute(&RawAttribute::new(0x8030.into(), &[1, 2, 3]))
            .expect("attr");
        w.add_fingerprint().expect("fp");
        let response = w.finish();
        for _ in 0..100 {
            let base = if rng.below(2) == 0 {
                &request
            } else {
                &response
            };
            let input = mutate(&mut rng, base);
            let mut out = [0u8; MAX_ANSWER];
            if let Some(n) = server.handle(now, from, &input, &mut out).answer_len() {
                answers += 1;
                assert_eq!(classify(&input), Kind::Stun);
                let answer = Message::from_bytes(&out[..n]).expect("answer parses");
                let asked = Message::from_bytes(&input).expect("answered input parses");
                assert_eq!(answer.transaction_id(), asked.transaction_id());
            }
            client.handle_input(now, server_addr, &input);
        }
        let c = client.counters();
        assert!(c.accepted <= 1, "one transaction, one answer: {c:?}");
        accepted += c.accepted;
    }
    // Some mutations (in padding, in comprehension-optional values) stay
    // valid, so the run reaches the answering and accepting code too.
    assert!(answers > 0 && accepted > 0, "{answers} {accepted}");
}
