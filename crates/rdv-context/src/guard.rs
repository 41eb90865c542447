//! The guard chain: capabilities, flow costs, decisions and the effect
//! commands a caller executes.
//!
//! Every operation that would send something is evaluated against a
//! [`GuardSnapshot`] (who, where, which epoch, what budget and
//! capabilities) before anything is built. A denial carries no effect at
//! all, so nothing reaches the network and the peer learns nothing about
//! why (the seed's "no network packets reveal capability or budget
//! failures"). An allowed outcome always starts with the charge, so an
//! interpreter that stops at the first failure never sends uncharged.

use std::fmt;
use std::str::FromStr;

use crate::facts::RendezvousFact;
use crate::handshake::{HandshakeComplete, HandshakeInit};
use crate::ids::{AuthorityId, ContextId, Epoch};

/// Capability to publish descriptors.
pub const CAP_RENDEZVOUS_PUBLISH: &str = "rendezvous:publish";
/// Capability to connect directly.
pub const CAP_RENDEZVOUS_CONNECT: &str = "rendezvous:connect";
/// Capability to connect through a relay.
pub const CAP_RENDEZVOUS_RELAY: &str = "rendezvous:relay";
/// Capability to forward as a relay.
pub const CAP_RELAY_FORWARD: &str = "relay:forward";

/// Flow cost of publishing a descriptor.
pub const DESCRIPTOR_PUBLISH_COST: u32 = 1;
/// Flow cost of a direct connection (each side).
pub const CONNECT_DIRECT_COST: u32 = 2;
/// Flow cost of a relayed connection (each side).
pub const CONNECT_RELAY_COST: u32 = 3;
/// Flow cost of one relay forward.
pub const RELAY_FORWARD_COST: u32 = 1;

/// A guard capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// `rendezvous:publish`.
    RendezvousPublish,
    /// `rendezvous:connect`.
    RendezvousConnect,
    /// `rendezvous:relay`.
    RendezvousRelay,
    /// `relay:forward`.
    RelayForward,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 4] = [
        Self::RendezvousPublish,
        Self::RendezvousConnect,
        Self::RendezvousRelay,
        Self::RelayForward,
    ];
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RendezvousPublish => CAP_RENDEZVOUS_PUBLISH,
            Self::RendezvousConnect => CAP_RENDEZVOUS_CONNECT,
            Self::RendezvousRelay => CAP_RENDEZVOUS_RELAY,
            Self::RelayForward => CAP_RELAY_FORWARD,
        }
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capability name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capability {0:?} (known: rendezvous:publish, rendezvous:connect, rendezvous:relay, relay:forward)"
)]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCapability(s.chars().take(64).collect()))
    }
}

/// A set of capabilities.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    /// No capability.
    pub const NONE: Self = Self(0);
    /// Every capability.
    pub fn all() -> Self {
        Capability::ALL.into_iter().collect()
    }
    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
    /// The set with `cap` added.
    pub fn with(self, cap: Capability) -> Self {
        Self(self.0 | cap.bit())
    }
    /// The set with `cap` removed.
    pub fn without(self, cap: Capability) -> Self {
        Self(self.0 & !cap.bit())
    }
    /// Parses capability names (as the seed's `Vec<String>`).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownCapability> {
        names
            .into_iter()
            .map(str::parse::<Capability>)
            .collect::<Result<_, _>>()
    }
    /// The capabilities in the set.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Capability::as_str))
            .finish()
    }
}

/// A guarded operation: what it needs and costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Publish (or revoke) a descriptor.
    PublishDescriptor,
    /// Start a handshake over a direct transport.
    ConnectDirect,
    /// Start a handshake through a relay.
    ConnectRelay,
    /// Answer a handshake that arrived directly.
    AcceptDirect,
    /// Answer a handshake that arrived through a relay.
    AcceptRelay,
    /// Forward one envelope as a relay.
    RelayForward,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 6] = [
        Self::PublishDescriptor,
        Self::ConnectDirect,
        Self::ConnectRelay,
        Self::AcceptDirect,
        Self::AcceptRelay,
        Self::RelayForward,
    ];
    /// The capability it needs.
    pub fn capability(self) -> Capability {
        match self {
            Self::PublishDescriptor => Capability::RendezvousPublish,
            Self::ConnectDirect | Self::AcceptDirect => Capability::RendezvousConnect,
            Self::ConnectRelay | Self::AcceptRelay => Capability::RendezvousRelay,
            Self::RelayForward => Capability::RelayForward,
        }
    }
    /// Its flow cost.
    pub fn cost(self) -> u32 {
        match self {
            Self::PublishDescriptor => DESCRIPTOR_PUBLISH_COST,
            Self::ConnectDirect | Self::AcceptDirect => CONNECT_DIRECT_COST,
            Self::ConnectRelay | Self::AcceptRelay => CONNECT_RELAY_COST,
            Self::RelayForward => RELAY_FORWARD_COST,
        }
    }
    /// Whether the peer who caused it pays, rather than the member doing
    /// it: answering a handshake is work the initiator asked for, so it is
    /// charged to the initiator's budget in the responder's ledger (a member
    /// cannot drain another's own budget by flooding it with handshakes).
    pub fn charges_the_peer(self) -> bool {
        matches!(self, Self::AcceptDirect | Self::AcceptRelay)
    }
    /// Its name, as receipts record it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublishDescriptor => "publish_descriptor",
            Self::ConnectDirect => "connect_direct",
            Self::ConnectRelay => "connect_relay",
            Self::AcceptDirect => "accept_direct",
            Self::AcceptRelay => "accept_relay",
            Self::RelayForward => "relay_forward",
        }
    }
    pub(crate) fn tag(self) -> u8 {
        self as u8 + 1
    }
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.tag() == tag)
    }
}

/// What the caller knows about itself when asking: the seed's
/// `GuardSnapshot`. Build it from the budget ledger (see
/// [`crate::BudgetLedger::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardSnapshot {
    /// Who is acting.
    pub authority_id: AuthorityId,
    /// In which context.
    pub context_id: ContextId,
    /// Flow budget left for (context, authority, epoch).
    pub flow_budget_remaining: u32,
    /// Capabilities held.
    pub capabilities: Capabilities,
    /// The epoch the budget belongs to.
    pub epoch: Epoch,
}

/// Why the guard denied an operation. Local only: never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// The snapshot is another authority's.
    #[error("the snapshot belongs to another authority")]
    WrongAuthority,
    /// The snapshot is for another context than the operation's.
    #[error("the snapshot is for another context")]
    WrongContext,
    /// No keys are installed for the context.
    #[error("no keys for this context")]
    UnknownContext,
    /// The snapshot's budget is of an epoch other than the current one
    /// (a past epoch's budget cannot be spent).
    #[error("the snapshot is for epoch {snapshot}, the context is at epoch {current}")]
    EpochMismatch {
        /// The snapshot's epoch.
        snapshot: Epoch,
        /// The current epoch.
        current: Epoch,
    },
    /// A capability is missing.
    #[error("missing capability {0}")]
    MissingCapability(Capability),
    /// Not enough budget left.
    #[error("flow budget exhausted: costs {cost}, {remaining} left")]
    BudgetExhausted {
        /// The operation's cost.
        cost: u32,
        /// What is left.
        remaining: u32,
    },
    /// The request itself is invalid (for example a descriptor that cannot
    /// be built from these hints, or a handshake for another epoch).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The handshake did not verify (wrong PSK, garbled message). The
    /// initiator gets no answer.
    #[error("handshake rejected: {0}")]
    HandshakeRejected(String),
}

/// The guard's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead: execute the effects in order.
    Allowed,
    /// Denied; there are no effects.
    Denied(DenyReason),
}

impl Decision {
    /// Whether the operation may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// A command for the caller's effect interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectCommand {
    /// Append a fact to the context journal (which synchronises it).
    JournalAppend {
        /// The journal's context.
        context_id: ContextId,
        /// The fact.
        fact: RendezvousFact,
    },
    /// Charge the flow budget of (context, authority, epoch).
    ChargeFlowBudget {
        /// The context.
        context_id: ContextId,
        /// Whose budget.
        authority_id: AuthorityId,
        /// Which epoch's budget.
        epoch: Epoch,
        /// How much.
        cost: u32,
    },
    /// Send a handshake's first message.
    SendHandshake {
        /// To whom.
        peer: AuthorityId,
        /// The message.
        message: HandshakeInit,
    },
    /// Send a handshake's answer.
    SendHandshakeResponse {
        /// To whom.
        peer: AuthorityId,
        /// The message.
        message: HandshakeComplete,
    },
    /// Record a signed, hash-chained receipt of the operation.
    RecordReceipt {
        /// The context.
        context_id: ContextId,
        /// The epoch.
        epoch: Epoch,
        /// What was done.
        operation: Operation,
        /// With whom, if anyone.
        peer: Option<AuthorityId>,
        /// What it cost.
        cost: u32,
    },
}

impl EffectCommand {
    /// Whether executing the command can put bytes on the network: sends,
    /// and journal appends (the journal synchronises to other members).
    pub fn reaches_network(&self) -> bool {
        matches!(
            self,
            Self::SendHandshake { .. }
                | Self::SendHandshakeResponse { .. }
                | Self::JournalAppend { .. }
        )
    }
    /// Whether it is a direct send.
    pub fn is_send(&self) -> bool {
        matches!(
            self,
            Self::SendHandshake { .. } | Self::SendHandshakeResponse { .. }
        )
    }
}

/// The guard's answer: a decision and, when allowed, the effects to run in
/// order (the seed's `GuardOutcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardOutcome {
    /// Allowed or denied.
    pub decision: Decision,
    /// What to execute, in order. Empty when denied.
    pub effects: Vec<EffectCommand>,
}

impl GuardOutcome {
    /// A denial: no effects.
    pub fn denied(reason: DenyReason) -> Self {
        Self {
            decision: Decision::Denied(reason),
            effects: Vec::new(),
        }
    }

    /// An allowed `operation`: the charge, then `actions`, then the receipt.
    pub(crate) fn allowed(
        snapshot: &GuardSnapshot,
        operation: Operation,
        peer: Option<AuthorityId>,
        actions: Vec<EffectCommand>,
    ) -> Self {
        let payer = match peer {
            Some(p) if operation.charges_the_peer() => p,
            _ => snapshot.authority_id,
        };
        Self::allowed_charging(snapshot, payer, operation, peer, actions)
    }

    /// An allowed `operation` charged to `payer`'s budget in this ledger
    /// (the authority that caused the work, such as a handshake's
    /// initiator); the ledger refuses the charge, and so every send, when
    /// that budget is spent.
    fn allowed_charging(
        snapshot: &GuardSnapshot,
        payer: AuthorityId,
        operation: Operation,
        peer: Option<AuthorityId>,
        actions: Vec<EffectCommand>,
    ) -> Self {
        let mut effects = Vec::with_capacity(actions.len() + 2);
        effects.push(EffectCommand::ChargeFlowBudget {
            context_id: snapshot.context_id,
            authority_id: payer,
            epoch: snapshot.epoch,
            cost: operation.cost(),
        });
        effects.extend(actions);
        effects.push(EffectCommand::RecordReceipt {
            context_id: snapshot.context_id,
            epoch: snapshot.epoch,
            operation,
            peer,
            cost: operation.cost(),
        });
        Self {
            decision: Decision::Allowed,
            effects,
        }
    }

    /// Whether the effects respect the chain's rule: nothing that reaches
    /// the network before a charge, and no effects at all when denied.
    pub fn is_well_ordered(&self) -> bool {
        if !self.decision.is_allowed() {
            return self.effects.is_empty();
        }
        let first_charge = self
            .effects
            .iter()
            .position(|e| matches!(e, EffectCommand::ChargeFlowBudget { .. }));
        let first_network = self.effects.iter().position(EffectCommand::reaches_network);
        match (first_charge, first_network) {
            (_, None) => true,
            (Some(c), Some(n)) => c < n,
            (None, Some(_)) => false,
        }
    }

    /// The send effects (for tests and drivers).
    pub fn sends(&self) -> impl Iterator<Item = &EffectCommand> {
        self.effects.iter().filter(|e| e.is_send())
    }
}

/// Evaluates the guard for `operation` by `me` in `context`, whose current
/// epoch is `current_epoch` (`None`: no keys). Checks, in order: authority,
/// context, keys, epoch, capability, budget.
pub fn evaluate(
    snapshot: &GuardSnapshot,
    me: &AuthorityId,
    context: &ContextId,
    current_epoch: Option<Epoch>,
    operation: Operation,
) -> Result<(), DenyReason> {
    if snapshot.authority_id != *me {
        return Err(DenyReason::WrongAuthority);
    }
    if snapshot.context_id != *context {
        return Err(DenyReason::WrongContext);
    }
    let current = current_epoch.ok_or(DenyReason::UnknownContext)?;
    if snapshot.epoch != current {
        return Err(DenyReason::EpochMismatch {
            snapshot: snapshot.epoch,
            current,
        });
    }
    let cap = operation.capability();
    if !snapshot.capabilities.contains(cap) {
        return Err(DenyReason::MissingCapability(cap));
    }
    let cost = operation.cost();
    if snapshot.flow_budget_remaining < cost {
        return Err(DenyReason::BudgetExhausted {
            cost,
            remaining: snapshot.flow_budget_remaining,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip_and_unknown_is_refused() {
        for c in Capability::ALL {
            assert_eq!(c.as_str().parse::<Capability>().unwrap(), c);
        }
        assert!("rendezvous:everything".parse::<Capability>().is_err());
        let set = Capabilities::parse(["rendezvous:publish", "relay:forward"]).unwrap();
        assert!(set.contains(Capability::RendezvousPublish));
        assert!(!set.contains(Capability::RendezvousConnect));
    }

    #[test]
    fn costs_are_the_seeds() {
        assert_eq!(Operation::PublishDescriptor.cost(), 1);
        assert_eq!(Operation::ConnectDirect.cost(), 2);
        assert_eq!(Operation::ConnectRelay.cost(), 3);
        assert_eq!(Operation::RelayForward.cost(), 1);
    }

    #[test]
    fn operation_tags_round_trip() {
        for o in Operation::ALL {
            assert_eq!(Operation::from_tag(o.tag()), Some(o));
        }
        assert_eq!(Operation::from_tag(0), None);
    }
}
