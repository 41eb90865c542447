// The initiator may not send HandshakeInit before it received the
// responder's DescriptorAnswer.
use rdv_channel::choreography::rendezvous_exchange::Initiator;
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, HandshakeInit, SealedDescriptor};

fn run(s: Session, peer: AuthorityId, g: &Guard<'_>, offer: SealedDescriptor, init: HandshakeInit) {
    let i = Initiator::new(s, peer);
    let (i, _offer) = i.send_descriptor_offer(g, offer).unwrap();
    let _ = i.send_handshake_init(g, init);
}

fn main() {}
