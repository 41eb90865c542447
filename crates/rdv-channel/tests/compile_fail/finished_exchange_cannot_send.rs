// A finished exchange has no step left: the done session cannot start
// another offer.
use rdv_channel::choreography::rendezvous_exchange::{
    DescriptorAnswer, HandshakeComplete, Initiator,
};
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, HandshakeInit, SealedDescriptor};

fn run(
    s: Session,
    peer: AuthorityId,
    g: &Guard<'_>,
    offer: SealedDescriptor,
    answer: &DescriptorAnswer,
    init: HandshakeInit,
    complete: &HandshakeComplete,
) {
    let (i, _) = Initiator::new(s, peer)
        .send_descriptor_offer(g, offer.clone())
        .unwrap();
    let i = i.recv_descriptor_answer(answer).unwrap();
    let (i, _) = i.send_handshake_init(g, init).unwrap();
    let i = i.recv_handshake_complete(complete).unwrap();
    let _ = i.send_descriptor_offer(g, offer);
}

fn main() {}
