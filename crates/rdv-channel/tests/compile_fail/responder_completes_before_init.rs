// The responder may not send HandshakeComplete (and record a channel)
// before it received the initiator's HandshakeInit.
use rdv_channel::SecureChannel;
use rdv_channel::choreography::rendezvous_exchange::{DescriptorOffer, Responder};
use rdv_channel::choreography::{Guard, Session};
use rdv_context::{AuthorityId, HandshakeComplete, SealedDescriptor};

fn run(
    s: Session,
    peer: AuthorityId,
    g: &Guard<'_>,
    offer: &DescriptorOffer,
    answer: SealedDescriptor,
    complete: HandshakeComplete,
    channel: &SecureChannel,
) {
    let r = Responder::new(s, peer)
        .recv_descriptor_offer(offer)
        .unwrap();
    let (r, _answer) = r.send_descriptor_answer(g, answer).unwrap();
    let _ = r.send_handshake_complete(g, complete, channel);
}

fn main() {}
