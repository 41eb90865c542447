// Receiving consumes the session: one responder session takes one
// HandshakeInit, a second one cannot be fed to the same state.
use rdv_channel::choreography::rendezvous_exchange::{DescriptorOffer, HandshakeInit, Responder};
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, SealedDescriptor};

fn run(
    s: Session,
    peer: AuthorityId,
    g: &Guard<'_>,
    offer: &DescriptorOffer,
    answer: SealedDescriptor,
    first: &HandshakeInit,
    second: &HandshakeInit,
) {
    let r = Responder::new(s, peer)
        .recv_descriptor_offer(offer)
        .unwrap();
    let (r, _answer) = r.send_descriptor_answer(g, answer).unwrap();
    let _one = r.recv_handshake_init(first);
    let _two = r.recv_handshake_init(second);
}

fn main() {}
