//! Any datagram given to rdv's STUN server and client: no panic; the server
//! answers only what classifies as STUN, and every answer it writes parses
//! as a response to the same transaction; the client never reports an
//! address from input it did not ask for.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rdv_stun::stun_types::message::Message;
use rdv_stun::{ClientConfig, Kind, MAX_ANSWER, StunClient, StunServer, classify};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let from: SocketAddr = ([192, 0, 2, 1], 3478).into();
    let mut server = StunServer::new(Default::default());
    let mut out = [0u8; MAX_ANSWER];
    if let Some(n) = server.handle(now, from, data, &mut out).answer_len() {
        assert_eq!(classify(data), Kind::Stun);
        let answer = Message::from_bytes(&out[..n]).expect("answers parse");
        let request = Message::from_bytes(data).expect("answered requests parse");
        assert!(answer.is_response());
        assert_eq!(answer.transaction_id(), request.transaction_id());
    }
    let config = ClientConfig {
        servers: vec![from],
        ..ClientConfig::default()
    };
    let mut client = StunClient::new(config, [7; 32], now);
    let _ = client.poll_transmit(now);
    client.handle_input(now, from, data);
    // The transaction id is random: fuzz input cannot match it.
    assert_eq!(client.reflexive(), None);
});
