//! The rendezvous choreographies of seed 001 §5 as typed sessions.
//!
//! Each protocol is a global sequence of messages; each role's projection
//! is a chain of typestates (`Initiator<OfferNext>`, `Initiator<AwaitAnswer>`,
//! ...). A state has exactly the method of its role's next step, which
//! consumes the session and returns the next state, so a role that sends
//! out of order, or twice, **does not compile** (`tests/compile_fail/`).
//!
//! Every message type carries the step's guard annotations as associated
//! constants ([`Step`]): sender and receiver roles, the guard
//! [`Operation`] (hence the capability and flow cost), the journal fact it
//! records and what it leaks. A send first evaluates rdv-context's guard
//! chain ([`guard::evaluate`]) for that operation; only when it allows does
//! the step yield the message and its effects (charge first, then the
//! journal append or send, then the receipt: a [`GuardOutcome`] the caller
//! runs through its effect interpreter). A denial returns the unchanged
//! session and no effect, so nothing reaches the network.
//!
//! Receiving costs nothing and checks the message belongs to the session's
//! context.
//!
//! The responder's `HandshakeComplete` step takes the [`SecureChannel`] of
//! the finished handshake, not an id: the `ChannelEstablished` fact it
//! records names a channel that a handshake between this pair produced.
//!
//! # Departure from the seed
//!
//! The seed's relayed choreography annotates `RelayRequest` and
//! `RelayResponse` with `flow_cost = 2`, while its own cost table (§8.2)
//! and rdv-context's guard chain charge `CONNECT_RELAY_COST = 3` for a
//! relayed connection. The guard chain is what charges, so the steps use
//! its operations ([`Operation::ConnectRelay`], [`Operation::AcceptRelay`]:
//! cost 3); `FLOW_COST` is that cost, and a test checks every step's
//! constants against its operation.

use std::marker::PhantomData;

use rdv_context::guard::{self, DenyReason, EffectCommand, GuardOutcome, GuardSnapshot, Operation};
use rdv_context::{
    AuthorityId, Capability, ContextId, Decision, Epoch, FactKind, RendezvousFact,
    RendezvousService,
};

use crate::channel::SecureChannel;

/// A choreography role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starts the exchange.
    Initiator,
    /// Forwards between the two (relayed protocol).
    Relay,
    /// Answers.
    Responder,
}

/// One step of a choreography: its guard annotations.
pub trait Step {
    /// The message name.
    const NAME: &'static str;
    /// Who sends it.
    const FROM: Role;
    /// Who receives it.
    const TO: Role;
    /// The guard operation evaluated before sending.
    const OPERATION: Operation;
    /// The capability the guard requires (`OPERATION.capability()`).
    const CAPABILITY: Capability;
    /// The flow cost charged (`OPERATION.cost()`).
    const FLOW_COST: u32;
    /// The journal fact the step appends, if any.
    const JOURNAL_FACT: Option<FactKind>;
    /// What the step reveals to the network beyond its endpoints.
    const LEAK: Option<&'static str>;
}

/// What the guard needs besides the session: the sender's snapshot, the
/// context's current epoch (`None`: no keys) and, for steps that record a
/// signed fact, the sender's service (which signs it).
#[derive(Clone, Debug)]
pub struct Guard<'a> {
    /// The sender's guard snapshot.
    pub snapshot: &'a GuardSnapshot,
    /// The context's current epoch.
    pub current_epoch: Option<Epoch>,
    /// The sender's service, to sign the facts a step records (`None`:
    /// such steps are denied).
    pub signer: Option<&'a RendezvousService>,
}

impl<'a> Guard<'a> {
    /// The guard of `snapshot`, with the epoch `service` has installed.
    pub fn from_service(service: &'a RendezvousService, snapshot: &'a GuardSnapshot) -> Self {
        Self {
            snapshot,
            current_epoch: service.current_epoch(&snapshot.context_id),
            signer: Some(service),
        }
    }
}

/// A message produced by an allowed step, with the effects to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent<M> {
    /// The message for the receiving role.
    pub message: M,
    /// Allowed, with the charge, the step's actions and the receipt.
    pub outcome: GuardOutcome,
}

/// A step refused by the guard: the session, unchanged, and why. No effect
/// was produced.
#[derive(Debug)]
pub struct Denied<S> {
    /// The session, still at the same step.
    pub session: S,
    /// Why (local only).
    pub reason: DenyReason,
}

/// What a send step returns: the next state and the message, or the
/// unchanged session.
pub type Stepped<Next, M, Session> = Result<(Next, Sent<M>), Denied<Session>>;

/// A received message that does not belong to the session.
#[derive(Debug)]
pub struct Refused<S> {
    /// The session, still waiting for the message.
    pub session: S,
    /// The context the message was for.
    pub found: ContextId,
}

/// Who and where a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// The context.
    pub context_id: ContextId,
    /// This role's authority.
    pub local: AuthorityId,
}

/// Evaluates the guard for step `S` by `session.local`; when allowed,
/// builds the effects: charge, `actions`, receipt.
fn guarded<S: Step>(
    session: &Session,
    guard: &Guard<'_>,
    peer: Option<AuthorityId>,
    actions: Vec<EffectCommand>,
) -> Result<GuardOutcome, DenyReason> {
    guard::evaluate(
        guard.snapshot,
        &session.local,
        &session.context_id,
        guard.current_epoch,
        S::OPERATION,
    )?;
    let snap = guard.snapshot;
    // The same payer rule as the service: an answer is charged to the
    // initiator who asked for it.
    let payer = match peer {
        Some(p) if S::OPERATION.charges_the_peer() => p,
        _ => snap.authority_id,
    };
    let mut effects = Vec::with_capacity(actions.len() + 2);
    effects.push(EffectCommand::ChargeFlowBudget {
        context_id: snap.context_id,
        authority_id: payer,
        epoch: snap.epoch,
        cost: S::FLOW_COST,
    });
    effects.extend(actions);
    effects.push(EffectCommand::RecordReceipt {
        context_id: snap.context_id,
        epoch: snap.epoch,
        operation: S::OPERATION,
        peer,
        cost: S::FLOW_COST,
    });
    Ok(GuardOutcome {
        decision: Decision::Allowed,
        effects,
    })
}

/// Declares a message type and its [`Step`] annotations.
macro_rules! step {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident : $ty:ty),* $(,)? }
        $from:ident -> $to:ident,
        operation = $op:ident,
        capability = $cap:ident,
        flow_cost = $cost:expr,
        journal_fact = $fact:expr,
        leak = $leak:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $(#[allow(missing_docs)] pub $field: $ty),*
        }
        impl $crate::choreography::Step for $name {
            const NAME: &'static str = stringify!($name);
            const FROM: $crate::choreography::Role = $crate::choreography::Role::$from;
            const TO: $crate::choreography::Role = $crate::choreography::Role::$to;
            const OPERATION: rdv_context::Operation = rdv_context::Operation::$op;
            const CAPABILITY: rdv_context::Capability = rdv_context::Capability::$cap;
            const FLOW_COST: u32 = $cost;
            const JOURNAL_FACT: Option<rdv_context::FactKind> = $fact;
            const LEAK: Option<&'static str> = $leak;
        }
    };
}

/// Declares the typestate markers of a role.
macro_rules! states {
    ($($(#[$doc:meta])* $s:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $s(());
        )*
    };
}

/// `RendezvousExchange` (seed §5.1): Initiator ⇄ Responder.
///
/// ```text
/// Initiator -> Responder: DescriptorOffer      publish, 1, Descriptor fact
/// Responder -> Initiator: DescriptorAnswer     publish, 1, Descriptor fact
/// Initiator -> Responder: HandshakeInit        connect, 2
/// Responder -> Initiator: HandshakeComplete    connect, 2, ChannelEstablished
/// ```
pub mod rendezvous_exchange {
    use super::*;
    use rdv_context::SealedDescriptor;

    step! {
        /// The initiator's sealed descriptor (appended to the journal,
        /// which carries it to the responder).
        DescriptorOffer { descriptor: SealedDescriptor }
        Initiator -> Responder,
        operation = PublishDescriptor,
        capability = RendezvousPublish,
        flow_cost = 1,
        journal_fact = Some(FactKind::Descriptor),
        leak = None,
    }
    step! {
        /// The responder's sealed descriptor in answer.
        DescriptorAnswer { descriptor: SealedDescriptor }
        Responder -> Initiator,
        operation = PublishDescriptor,
        capability = RendezvousPublish,
        flow_cost = 1,
        journal_fact = Some(FactKind::Descriptor),
        leak = None,
    }
    step! {
        /// Noise IKpsk2 message 1, direct.
        HandshakeInit { message: rdv_context::HandshakeInit }
        Initiator -> Responder,
        operation = ConnectDirect,
        capability = RendezvousConnect,
        flow_cost = 2,
        journal_fact = None,
        leak = None,
    }
    step! {
        /// Noise IKpsk2 message 2; the responder records the channel.
        HandshakeComplete { message: rdv_context::HandshakeComplete, channel_id: [u8; 32] }
        Responder -> Initiator,
        operation = AcceptDirect,
        capability = RendezvousConnect,
        flow_cost = 2,
        journal_fact = Some(FactKind::ChannelEstablished),
        leak = None,
    }

    states! {
        /// Initiator: sends `DescriptorOffer` next.
        OfferNext,
        /// Initiator: waits for `DescriptorAnswer`.
        AwaitAnswer,
        /// Initiator: sends `HandshakeInit` next.
        InitNext,
        /// Initiator: waits for `HandshakeComplete`.
        AwaitComplete,
        /// Responder: waits for `DescriptorOffer`.
        AwaitOffer,
        /// Responder: sends `DescriptorAnswer` next.
        AnswerNext,
        /// Responder: waits for `HandshakeInit`.
        AwaitInit,
        /// Responder: sends `HandshakeComplete` next.
        CompleteNext,
        /// Either role: the exchange is over.
        Done,
    }

    /// The initiator's projection; `S` is its next step.
    #[derive(Debug)]
    pub struct Initiator<S> {
        session: Session,
        responder: AuthorityId,
        _state: PhantomData<S>,
    }

    /// The responder's projection; `S` is its next step.
    #[derive(Debug)]
    pub struct Responder<S> {
        session: Session,
        initiator: AuthorityId,
        _state: PhantomData<S>,
    }

    impl<S> Initiator<S> {
        fn to<T>(self) -> Initiator<T> {
            Initiator {
                session: self.session,
                responder: self.responder,
                _state: PhantomData,
            }
        }
        /// The session.
        pub fn session(&self) -> Session {
            self.session
        }
    }

    impl<S> Responder<S> {
        fn to<T>(self) -> Responder<T> {
            Responder {
                session: self.session,
                initiator: self.initiator,
                _state: PhantomData,
            }
        }
        /// The session.
        pub fn session(&self) -> Session {
            self.session
        }
    }

    impl Initiator<OfferNext> {
        /// Starts the exchange with `responder`.
        pub fn new(session: Session, responder: AuthorityId) -> Self {
            Self {
                session,
                responder,
                _state: PhantomData,
            }
        }
        /// Offers our descriptor (guarded as a publication).
        #[allow(clippy::result_large_err)]
        pub fn send_descriptor_offer(
            self,
            guard: &Guard<'_>,
            descriptor: SealedDescriptor,
        ) -> Result<(Initiator<AwaitAnswer>, Sent<DescriptorOffer>), Denied<Self>> {
            let actions = vec![EffectCommand::JournalAppend {
                context_id: self.session.context_id,
                fact: RendezvousFact::Descriptor(descriptor.clone()),
            }];
            match guarded::<DescriptorOffer>(&self.session, guard, None, actions) {
                Ok(outcome) => Ok((
                    self.to(),
                    Sent {
                        message: DescriptorOffer { descriptor },
                        outcome,
                    },
                )),
                Err(reason) => Err(Denied {
                    session: self,
                    reason,
                }),
            }
        }
    }

    impl Initiator<AwaitAnswer> {
        /// Receives the responder's descriptor.
        #[allow(clippy::result_large_err)]
        pub fn recv_descriptor_answer(
            self,
            answer: &DescriptorAnswer,
        ) -> Result<Initiator<InitNext>, Refused<Self>> {
            let found = answer.descriptor.context_id();
            if found != self.session.context_id {
                return Err(Refused {
                    session: self,
                    found,
                });
            }
            Ok(self.to())
        }
    }

    impl Initiator<InitNext> {
        /// Sends Noise message 1 (guarded as a direct connection).
        #[allow(clippy::result_large_err)]
        pub fn send_handshake_init(
            self,
            guard: &Guard<'_>,
            message: rdv_context::HandshakeInit,
        ) -> Result<(Initiator<AwaitComplete>, Sent<HandshakeInit>), Denied<Self>> {
            let actions = vec![EffectCommand::SendHandshake {
                peer: self.responder,
                message: message.clone(),
            }];
            match guarded::<HandshakeInit>(&self.session, guard, Some(self.responder), actions) {
                Ok(outcome) => Ok((
                    self.to(),
                    Sent {
                        message: HandshakeInit { message },
                        outcome,
                    },
                )),
                Err(reason) => Err(Denied {
                    session: self,
                    reason,
                }),
            }
        }
    }

    impl Initiator<AwaitComplete> {
        /// Receives Noise message 2: the exchange is done.
        #[allow(clippy::result_large_err)]
        pub fn recv_handshake_complete(
            self,
            complete: &HandshakeComplete,
        ) -> Result<Initiator<Done>, Refused<Self>> {
            let found = complete.message.context_id;
            if found != self.session.context_id {
                return Err(Refused {
                    session: self,
                    found,
                });
            }
            Ok(self.to())
        }
    }

    impl Responder<AwaitOffer> {
        /// Waits for `initiator`'s offer.
        pub fn new(session: Session, initiator: AuthorityId) -> Self {
            Self {
                session,
                initiator,
                _state: PhantomData,
            }
        }
        /// Receives the initiator's descriptor.
        #[allow(clippy::result_large_err)]
        pub fn recv_descriptor_offer(
            self,
            offer: &DescriptorOffer,
        ) -> Result<Responder<AnswerNext>, Refused<Self>> {
            let found = offer.descriptor.context_id();
            if found != self.session.context_id {
                return Err(Refused {
                    session: self,
                    found,
                });
            }
            Ok(self.to())
        }
    }

    impl Responder<AnswerNext> {
        /// Answers with our descriptor (guarded as a publication).
        #[allow(clippy::result_large_err)]
        pub fn send_descriptor_answer(
            self,
            guard: &Guard<'_>,
            descriptor: SealedDescriptor,
        ) -> Result<(Responder<AwaitInit>, Sent<DescriptorAnswer>), Denied<Self>> {
            let actions = vec![EffectCommand::JournalAppend {
                context_id: self.session.context_id,
                fact: RendezvousFact::Descriptor(descriptor.clone()),
            }];
            match guarded::<DescriptorAnswer>(&self.session, guard, None, actions) {
                Ok(outcome) => Ok((
                    self.to(),
                    Sent {
                        message: DescriptorAnswer { descriptor },
                        outcome,
                    },
                )),
                Err(reason) => Err(Denied {
                    session: self,
                    reason,
                }),
            }
        }
    }

    impl Responder<AwaitInit> {
        /// Receives Noise message 1.
        #[allow(clippy::result_large_err)]
        pub fn recv_handshake_init(
            self,
            init: &HandshakeInit,
        ) -> Result<Responder<CompleteNext>, Refused<Self>> {
            let found = init.message.context_id;
            if found != self.session.context_id {
                return Err(Refused {
                    session: self,
                    found,
                });
            }
            Ok(self.to())
        }
    }

    impl Responder<CompleteNext> {
        /// Sends Noise message 2 and records the channel (guarded as
        /// accepting a direct connection).
        ///
        /// The `ChannelEstablished` fact takes its id and epoch from
        /// `channel`, the responder's channel of the finished handshake
        /// (`NoiseHandshaker::take_responded`), so only a handshake can
        /// name the channel. Refused, with no effect, unless `channel` is
        /// active, is the responder's side of this session's pair in this
        /// context, and is at `message`'s context and epoch.
        #[allow(clippy::result_large_err)]
        pub fn send_handshake_complete(
            self,
            guard: &Guard<'_>,
            message: rdv_context::HandshakeComplete,
            channel: &SecureChannel,
        ) -> Result<(Responder<Done>, Sent<HandshakeComplete>), Denied<Self>> {
            if let Err(why) = self.check_channel(&message, channel) {
                return Err(Denied {
                    session: self,
                    reason: DenyReason::InvalidRequest(why.into()),
                });
            }
            let Some(signer) = guard.signer else {
                return Err(Denied {
                    session: self,
                    reason: DenyReason::InvalidRequest(
                        "recording the channel needs the responder's service to sign it".into(),
                    ),
                });
            };
            let channel_id = channel.id();
            let Some(fact) = signer.channel_established(
                self.session.context_id,
                self.initiator,
                self.session.local,
                channel_id,
                channel.epoch(),
            ) else {
                return Err(Denied {
                    session: self,
                    reason: DenyReason::UnknownContext,
                });
            };
            let actions = vec![
                EffectCommand::SendHandshakeResponse {
                    peer: self.initiator,
                    message: message.clone(),
                },
                EffectCommand::JournalAppend {
                    context_id: self.session.context_id,
                    fact,
                },
            ];
            match guarded::<HandshakeComplete>(&self.session, guard, Some(self.initiator), actions)
            {
                Ok(outcome) => Ok((
                    self.to(),
                    Sent {
                        message: HandshakeComplete {
                            message,
                            channel_id,
                        },
                        outcome,
                    },
                )),
                Err(reason) => Err(Denied {
                    session: self,
                    reason,
                }),
            }
        }

        fn check_channel(
            &self,
            message: &rdv_context::HandshakeComplete,
            channel: &SecureChannel,
        ) -> Result<(), &'static str> {
            if !channel.is_active() {
                return Err("the channel's handshake is not finished");
            }
            if channel.is_initiator()
                || channel.local() != self.session.local
                || channel.remote() != self.initiator
            {
                return Err("the channel is not the responder's side of this pair");
            }
            if channel.context_id() != self.session.context_id
                || message.context_id != self.session.context_id
            {
                return Err("the channel or message is for another context");
            }
            if channel.epoch() != message.epoch {
                return Err("the channel and message are for different epochs");
            }
            Ok(())
        }
    }
}

/// `RelayedRendezvous` (seed §5.2): Initiator → Relay → Responder and back.
///
/// ```text
/// Initiator -> Relay:     RelayRequest    rendezvous:relay, 3
/// Relay     -> Responder: RelayForward    relay:forward, 1, leaks neighbor:1
/// Responder -> Relay:     RelayResponse   rendezvous:relay, 3
/// Relay     -> Initiator: RelayComplete   relay:forward, 1, leaks neighbor:1
/// ```
pub mod relayed_rendezvous {
    use super::*;

    /// An opaque envelope the relay carries (a sealed handshake message).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct RelayEnvelope {
        /// The context.
        pub context_id: ContextId,
        /// The final recipient.
        pub to: AuthorityId,
        /// Opaque bytes (the relay cannot read them).
        pub payload: Vec<u8>,
    }

    step! {
        /// Initiator asks the relay to carry an envelope.
        RelayRequest { envelope: RelayEnvelope }
        Initiator -> Relay,
        operation = ConnectRelay,
        capability = RendezvousRelay,
        flow_cost = 3,
        journal_fact = None,
        leak = None,
    }
    step! {
        /// The relay forwards it to the responder.
        RelayForward { envelope: RelayEnvelope }
        Relay -> Responder,
        operation = RelayForward,
        capability = RelayForward,
        flow_cost = 1,
        journal_fact = None,
        leak = Some("neighbor:1"),
    }
    step! {
        /// The responder answers through the relay.
        RelayResponse { envelope: RelayEnvelope }
        Responder -> Relay,
        operation = AcceptRelay,
        capability = RendezvousRelay,
        flow_cost = 3,
        journal_fact = None,
        leak = None,
    }
    step! {
        /// The relay carries the answer back.
        RelayComplete { envelope: RelayEnvelope }
        Relay -> Initiator,
        operation = RelayForward,
        capability = RelayForward,
        flow_cost = 1,
        journal_fact = None,
        leak = Some("neighbor:1"),
    }

    states! {
        /// Initiator: sends `RelayRequest` next.
        RequestNext,
        /// Initiator: waits for `RelayComplete`.
        AwaitComplete,
        /// Relay: waits for `RelayRequest`.
        AwaitRequest,
        /// Relay: sends `RelayForward` next.
        ForwardNext,
        /// Relay: waits for `RelayResponse`.
        AwaitResponse,
        /// Relay: sends `RelayComplete` next.
        CompleteNext,
        /// Responder: waits for `RelayForward`.
        AwaitForward,
        /// Responder: sends `RelayResponse` next.
        ResponseNext,
        /// Any role: done.
        Done,
    }

    /// A role's projection of the relayed protocol; `R` the role marker,
    /// `S` its next step.
    #[derive(Debug)]
    pub struct Party<R, S> {
        session: Session,
        /// Envelope held between receiving and forwarding (relay).
        held: Option<RelayEnvelope>,
        _state: PhantomData<(R, S)>,
    }

    /// Role marker: the initiator.
    #[derive(Debug)]
    pub struct InitiatorRole(());
    /// Role marker: the relay.
    #[derive(Debug)]
    pub struct RelayRole(());
    /// Role marker: the responder.
    #[derive(Debug)]
    pub struct ResponderRole(());

    /// The initiator's session.
    pub type Initiator<S> = Party<InitiatorRole, S>;
    /// The relay's session.
    pub type Relay<S> = Party<RelayRole, S>;
    /// The responder's session.
    pub type Responder<S> = Party<ResponderRole, S>;

    impl<R, S> Party<R, S> {
        fn to<T>(self, held: Option<RelayEnvelope>) -> Party<R, T> {
            Party {
                session: self.session,
                held,
                _state: PhantomData,
            }
        }
        /// The session.
        pub fn session(&self) -> Session {
            self.session
        }
        #[allow(clippy::result_large_err)]
        fn send<M: Step, T>(
            self,
            guard: &Guard<'_>,
            peer: Option<AuthorityId>,
            message: M,
        ) -> Stepped<Party<R, T>, M, Self> {
            match guarded::<M>(&self.session, guard, peer, Vec::new()) {
                Ok(outcome) => Ok((self.to(None), Sent { message, outcome })),
                Err(reason) => Err(Denied {
                    session: self,
                    reason,
                }),
            }
        }
        #[allow(clippy::result_large_err)]
        fn receive<T>(
            self,
            envelope: &RelayEnvelope,
            keep: bool,
        ) -> Result<Party<R, T>, Refused<Self>> {
            if envelope.context_id != self.session.context_id {
                return Err(Refused {
                    found: envelope.context_id,
                    session: self,
                });
            }
            Ok(self.to(keep.then(|| envelope.clone())))
        }
    }

    impl<R, S> Denied<Party<R, S>> {
        /// Puts the envelope back: a denied session is unchanged.
        fn restore(mut self, envelope: RelayEnvelope) -> Self {
            self.session.held = Some(envelope);
            self
        }
    }

    fn new<R, S>(session: Session) -> Party<R, S> {
        Party {
            session,
            held: None,
            _state: PhantomData,
        }
    }

    impl Initiator<RequestNext> {
        /// Starts a relayed rendezvous.
        pub fn new(session: Session) -> Self {
            new(session)
        }
        /// Hands the envelope to the relay (guarded as a relayed connection).
        #[allow(clippy::result_large_err)]
        pub fn send_relay_request(
            self,
            guard: &Guard<'_>,
            envelope: RelayEnvelope,
        ) -> Result<(Initiator<AwaitComplete>, Sent<RelayRequest>), Denied<Self>> {
            let peer = Some(envelope.to);
            self.send(guard, peer, RelayRequest { envelope })
        }
    }

    impl Initiator<AwaitComplete> {
        /// Receives the answer: done.
        #[allow(clippy::result_large_err)]
        pub fn recv_relay_complete(
            self,
            m: &RelayComplete,
        ) -> Result<Initiator<Done>, Refused<Self>> {
            self.receive(&m.envelope, false)
        }
    }

    impl Relay<AwaitRequest> {
        /// A relay waiting for a request.
        pub fn new(session: Session) -> Self {
            new(session)
        }
        /// Receives the initiator's request.
        #[allow(clippy::result_large_err)]
        pub fn recv_relay_request(
            self,
            m: &RelayRequest,
        ) -> Result<Relay<ForwardNext>, Refused<Self>> {
            self.receive(&m.envelope, true)
        }
    }

    impl Relay<ForwardNext> {
        /// Forwards the request's envelope (guarded as a relay forward).
        #[allow(clippy::result_large_err)]
        pub fn send_relay_forward(
            mut self,
            guard: &Guard<'_>,
        ) -> Result<(Relay<AwaitResponse>, Sent<RelayForward>), Denied<Self>> {
            let Some(envelope) = self.held.take() else {
                // Unreachable by construction: `recv_relay_request` keeps it.
                return Err(Denied {
                    session: self,
                    reason: DenyReason::InvalidRequest("no envelope held".into()),
                });
            };
            let peer = Some(envelope.to);
            let kept = envelope.clone();
            self.send(guard, peer, RelayForward { envelope })
                .map_err(|d| d.restore(kept))
        }
    }

    impl Relay<AwaitResponse> {
        /// Receives the responder's answer.
        #[allow(clippy::result_large_err)]
        pub fn recv_relay_response(
            self,
            m: &RelayResponse,
        ) -> Result<Relay<CompleteNext>, Refused<Self>> {
            self.receive(&m.envelope, true)
        }
    }

    impl Relay<CompleteNext> {
        /// Carries the answer back (guarded as a relay forward).
        #[allow(clippy::result_large_err)]
        pub fn send_relay_complete(
            mut self,
            guard: &Guard<'_>,
        ) -> Result<(Relay<Done>, Sent<RelayComplete>), Denied<Self>> {
            let Some(envelope) = self.held.take() else {
                return Err(Denied {
                    session: self,
                    reason: DenyReason::InvalidRequest("no envelope held".into()),
                });
            };
            let peer = Some(envelope.to);
            let kept = envelope.clone();
            self.send(guard, peer, RelayComplete { envelope })
                .map_err(|d| d.restore(kept))
        }
    }

    impl Responder<AwaitForward> {
        /// A responder waiting for a forwarded request.
        pub fn new(session: Session) -> Self {
            new(session)
        }
        /// Receives the forwarded envelope.
        #[allow(clippy::result_large_err)]
        pub fn recv_relay_forward(
            self,
            m: &RelayForward,
        ) -> Result<Responder<ResponseNext>, Refused<Self>> {
            self.receive(&m.envelope, false)
        }
    }

    impl Responder<ResponseNext> {
        /// Answers through the relay (guarded as accepting a relayed
        /// connection).
        #[allow(clippy::result_large_err)]
        pub fn send_relay_response(
            self,
            guard: &Guard<'_>,
            envelope: RelayEnvelope,
        ) -> Result<(Responder<Done>, Sent<RelayResponse>), Denied<Self>> {
            let peer = Some(envelope.to);
            self.send(guard, peer, RelayResponse { envelope })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::relayed_rendezvous as rr;
    use super::rendezvous_exchange as rx;
    use super::*;

    fn check<S: Step>() {
        assert_eq!(S::CAPABILITY, S::OPERATION.capability(), "{}", S::NAME);
        assert_eq!(S::FLOW_COST, S::OPERATION.cost(), "{}", S::NAME);
        assert_ne!(S::FROM, S::TO);
    }

    #[test]
    fn every_steps_annotations_agree_with_the_guard_chain() {
        check::<rx::DescriptorOffer>();
        check::<rx::DescriptorAnswer>();
        check::<rx::HandshakeInit>();
        check::<rx::HandshakeComplete>();
        check::<rr::RelayRequest>();
        check::<rr::RelayForward>();
        check::<rr::RelayResponse>();
        check::<rr::RelayComplete>();
        assert_eq!(rr::RelayForward::LEAK, Some("neighbor:1"));
        assert_eq!(
            rx::HandshakeComplete::JOURNAL_FACT,
            Some(FactKind::ChannelEstablished)
        );
    }
}
