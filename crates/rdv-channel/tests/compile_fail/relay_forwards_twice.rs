// The relay forwards a request once: after forwarding it waits for the
// response and has no second forward.
use rdv_channel::choreography::relayed_rendezvous::{Relay, RelayRequest};
use rdv_channel::choreography::{Guard, Session};

fn run(s: Session, g: &Guard<'_>, request: &RelayRequest) {
    let relay = Relay::new(s).recv_relay_request(request).unwrap();
    let (relay, _forward) = relay.send_relay_forward(g).unwrap();
    let _ = relay.send_relay_forward(g);
}

fn main() {}
