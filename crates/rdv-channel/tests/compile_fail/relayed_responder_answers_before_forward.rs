// The relayed responder may not answer before the relay forwarded the
// request to it.
use rdv_channel::choreography::relayed_rendezvous::{RelayEnvelope, Responder};
use rdv_channel::choreography::{Guard, Session};

fn run(s: Session, g: &Guard<'_>, envelope: RelayEnvelope) {
    let r = Responder::new(s);
    let _ = r.send_relay_response(g, envelope);
}

fn main() {}
