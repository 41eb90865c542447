//! Executing a guard outcome's effects.
//!
//! [`EffectInterpreter`] is what a caller implements (the daemon: journal
//! on disk, budgets, receipts, real sends). [`ReferenceInterpreter`] does it
//! all in memory over a journal store, a [`BudgetLedger`] and a
//! [`ReceiptLog`], and queues sends in an outbox: tests use it, and the
//! daemon can wrap it.

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::budget::{BudgetError, BudgetLedger};
use crate::guard::{EffectCommand, GuardOutcome};
use crate::handshake::{HandshakeComplete, HandshakeInit};
use crate::identity::Identity;
use crate::ids::{AuthorityId, ContextId};
use crate::journal::{Journal, JournalError, JournalStore};
use crate::receipt::{Receipt, ReceiptLog};

/// Executes effect commands.
pub trait EffectInterpreter {
    /// The error type.
    type Error: std::error::Error;

    /// Executes one command at physical time `now_ms`.
    fn execute(&mut self, command: &EffectCommand, now_ms: u64) -> Result<(), Self::Error>;

    /// Executes an outcome: nothing if denied; otherwise the effects in
    /// order, stopping at the first failure (the charge comes first, so a
    /// failed charge stops every send). Returns how many ran.
    fn run(&mut self, outcome: &GuardOutcome, now_ms: u64) -> Result<usize, Self::Error> {
        if !outcome.decision.is_allowed() {
            return Ok(0);
        }
        for c in &outcome.effects {
            self.execute(c, now_ms)?;
        }
        Ok(outcome.effects.len())
    }
}

/// A message the reference interpreter queued for the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Handshake message 1.
    Handshake {
        /// To whom.
        peer: AuthorityId,
        /// The message.
        message: HandshakeInit,
    },
    /// Handshake message 2.
    HandshakeResponse {
        /// To whom.
        peer: AuthorityId,
        /// The message.
        message: HandshakeComplete,
    },
}

/// Why the reference interpreter stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterpretError {
    /// A journal append for a context without a journal here.
    #[error("no journal for context {0}")]
    NoJournal(ContextId),
    /// The journal refused.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The ledger refused the charge.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// A send or append came before any charge in the outcome.
    #[error("effect list sends before charging; refused before running anything")]
    Unordered,
    /// The outbox is full: the driver is not draining it.
    #[error("outbox full ({0} messages)")]
    OutboxFull(usize),
    /// The receipt log is full.
    #[error("receipt log full ({0} receipts)")]
    ReceiptsFull(usize),
}

/// The reference interpreter of one authority.
pub struct ReferenceInterpreter<S> {
    identity: Identity,
    journals: HashMap<ContextId, Journal<S>>,
    ledger: BudgetLedger,
    receipts: ReceiptLog,
    recorded: Vec<Receipt>,
    outbox: VecDeque<Outbound>,
    max_outbox: usize,
    max_receipts: usize,
}

impl<S> std::fmt::Debug for ReferenceInterpreter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceInterpreter")
            .field("authority", &self.identity.authority())
            .field("journals", &self.journals.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl<S: JournalStore> ReferenceInterpreter<S> {
    /// An interpreter signing receipts as `identity`, charging `ledger`.
    pub fn new(identity: Identity, ledger: BudgetLedger) -> Self {
        Self {
            identity,
            journals: HashMap::new(),
            ledger,
            receipts: ReceiptLog::new(),
            recorded: Vec::new(),
            outbox: VecDeque::new(),
            max_outbox: 1024,
            max_receipts: 1 << 20,
        }
    }
    /// Adds the journal of a context.
    pub fn add_journal(&mut self, journal: Journal<S>) {
        self.journals.insert(journal.context_id(), journal);
    }
    /// The journal of a context.
    pub fn journal(&self, context: &ContextId) -> Option<&Journal<S>> {
        self.journals.get(context)
    }
    /// The journal of a context, mutably (for sync).
    pub fn journal_mut(&mut self, context: &ContextId) -> Option<&mut Journal<S>> {
        self.journals.get_mut(context)
    }
    /// The budget ledger.
    pub fn ledger(&self) -> &BudgetLedger {
        &self.ledger
    }
    /// The budget ledger, mutably (to advance epochs).
    pub fn ledger_mut(&mut self) -> &mut BudgetLedger {
        &mut self.ledger
    }
    /// Receipts recorded so far, in order.
    pub fn receipts(&self) -> &[Receipt] {
        &self.recorded
    }
    /// Takes the queued outbound messages.
    pub fn take_outbox(&mut self) -> Vec<Outbound> {
        self.outbox.drain(..).collect()
    }
}

impl<S: JournalStore> EffectInterpreter for ReferenceInterpreter<S> {
    type Error = InterpretError;

    fn execute(&mut self, command: &EffectCommand, now_ms: u64) -> Result<(), InterpretError> {
        self.ledger.tick(now_ms);
        match command {
            EffectCommand::ChargeFlowBudget {
                context_id,
                authority_id,
                epoch,
                cost,
            } => {
                self.ledger
                    .charge(*context_id, *authority_id, *epoch, *cost)?;
            }
            EffectCommand::JournalAppend { context_id, fact } => {
                let j = self
                    .journals
                    .get_mut(context_id)
                    .ok_or(InterpretError::NoJournal(*context_id))?;
                j.append(fact.clone(), now_ms)?;
            }
            EffectCommand::SendHandshake { peer, message } => {
                if self.outbox.len() >= self.max_outbox {
                    return Err(InterpretError::OutboxFull(self.max_outbox));
                }
                self.outbox.push_back(Outbound::Handshake {
                    peer: *peer,
                    message: message.clone(),
                });
            }
            EffectCommand::SendHandshakeResponse { peer, message } => {
                if self.outbox.len() >= self.max_outbox {
                    return Err(InterpretError::OutboxFull(self.max_outbox));
                }
                self.outbox.push_back(Outbound::HandshakeResponse {
                    peer: *peer,
                    message: message.clone(),
                });
            }
            EffectCommand::RecordReceipt {
                context_id,
                epoch,
                operation,
                peer,
                cost,
            } => {
                if self.recorded.len() >= self.max_receipts {
                    return Err(InterpretError::ReceiptsFull(self.max_receipts));
                }
                let r = self.receipts.issue(
                    &self.identity,
                    *context_id,
                    *epoch,
                    *operation,
                    *peer,
                    *cost,
                    now_ms,
                );
                self.recorded.push(r);
            }
        }
        Ok(())
    }

    /// As the trait's `run`, but first refuses an outcome whose effects
    /// would reach the network before a charge.
    fn run(&mut self, outcome: &GuardOutcome, now_ms: u64) -> Result<usize, InterpretError> {
        if !outcome.is_well_ordered() {
            return Err(InterpretError::Unordered);
        }
        if !outcome.decision.is_allowed() {
            return Ok(0);
        }
        for c in &outcome.effects {
            self.execute(c, now_ms)?;
        }
        Ok(outcome.effects.len())
    }
}
