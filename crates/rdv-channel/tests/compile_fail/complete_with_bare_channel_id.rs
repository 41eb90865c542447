// The channel recorded by HandshakeComplete comes from the finished
// handshake: a bare channel id is not accepted.
use rdv_channel::choreography::rendezvous_exchange::{DescriptorOffer, HandshakeInit, Responder};
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, HandshakeComplete, SealedDescriptor};

fn run(
    s: Session,
    peer: AuthorityId,
    g: &Guard<'_>,
    offer: &DescriptorOffer,
    answer: SealedDescriptor,
    init: &HandshakeInit,
    complete: HandshakeComplete,
) {
    let r = Responder::new(s, peer)
        .recv_descriptor_offer(offer)
        .unwrap();
    let (r, _answer) = r.send_descriptor_answer(g, answer).unwrap();
    let r = r.recv_handshake_init(init).unwrap();
    let _ = r.send_handshake_complete(g, complete, [7u8; 32]);
}

fn main() {}
