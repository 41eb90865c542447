// The relay may not forward before it received a request.
use rdv_channel::choreography::relayed_rendezvous::Relay;
use rdv_channel::choreography::{Guard, Session};

fn run(s: Session, g: &Guard<'_>) {
    let relay = Relay::new(s);
    let _ = relay.send_relay_forward(g);
}

fn main() {}
