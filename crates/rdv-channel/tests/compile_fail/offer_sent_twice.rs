// A step consumes the session: the same offer cannot be sent twice.
use rdv_channel::choreography::rendezvous_exchange::Initiator;
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, SealedDescriptor};

fn run(s: Session, peer: AuthorityId, g: &Guard<'_>, offer: SealedDescriptor) {
    let i = Initiator::new(s, peer);
    let _first = i.send_descriptor_offer(g, offer.clone());
    let _again = i.send_descriptor_offer(g, offer);
}

fn main() {}
