//! The relay's decoders and routing table under arbitrary input: a
//! message from a client or from a relay decodes to a typed error or to a
//! message that encodes back to the same bytes; any sequence of client
//! actions (connect, authenticate, open, close, disconnect, retire) keeps
//! the table consistent (both ends of a circuit route to each other,
//! closing one end frees both) and never panics.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use rdv_relay::proto::{ClientMsg, ServerMsg};
use rdv_relay::{Limits, Router};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ClientMsg::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(m) = ServerMsg::decode(data) {
        assert_eq!(m.encode(), data);
    }
    let mut r = Router::new(Limits {
        per_ip: 3,
        clients: 6,
        circuits_per_client: 3,
        retired: 2,
    });
    let mut conns: Vec<u64> = Vec::new();
    let mut it = data.chunks_exact(4);
    for op in it.by_ref().take(256) {
        let pick = |i: u8| conns.get(i as usize % conns.len().max(1)).copied();
        match op[0] % 6 {
            0 => {
                if let Ok(c) = r.connect(IpAddr::V4(Ipv4Addr::new(10, 0, 0, op[1] % 4))) {
                    conns.push(c);
                }
            }
            1 => {
                if let Some(c) = pick(op[1]) {
                    let _ = r.authenticate(c, [op[2] % 2; 32], [op[3] % 4; 32]);
                }
            }
            2 => {
                if let Some(c) = pick(op[1])
                    && let Ok((peer, pc)) = r.open(c, u32::from(op[2]), [op[3] % 4; 32])
                {
                    assert_eq!(r.route(peer, pc), Some((c, u32::from(op[2]))));
                    assert_eq!(r.route(c, u32::from(op[2])), Some((peer, pc)));
                }
            }
            3 => {
                if let Some(c) = pick(op[1]) {
                    let circuit = u32::from(op[2]);
                    if let Some(other) = r.close(c, circuit) {
                        assert_eq!(r.route(other.0, other.1), None);
                        assert_eq!(r.route(c, circuit), None);
                    }
                }
            }
            4 => {
                if let Some(c) = pick(op[1]) {
                    for (p, pc) in r.disconnect(c) {
                        assert_eq!(r.route(p, pc), None);
                    }
                    conns.retain(|x| *x != c);
                }
            }
            _ => {
                let _ = r.retire([op[1] % 2; 32]);
            }
        }
        assert!(r.circuits() <= r.clients() * 3);
    }
});
