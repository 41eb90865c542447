// The responder may not answer before it received the initiator's offer.
use rdv_channel::choreography::rendezvous_exchange::Responder;
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, SealedDescriptor};

fn run(s: Session, peer: AuthorityId, g: &Guard<'_>, answer: SealedDescriptor) {
    let r = Responder::new(s, peer);
    let _ = r.send_descriptor_answer(g, answer);
}

fn main() {}
