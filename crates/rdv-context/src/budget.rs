//! Flow budgets per (context, authority, epoch).
//!
//! Each authority gets a fixed budget per context epoch. A new epoch starts
//! fresh budgets and closes the old ones: a charge to a past epoch is
//! refused, so a snapshot taken before an epoch advance cannot be spent
//! after it.

use hashbrown::HashMap;

use crate::guard::{Capabilities, GuardSnapshot};
use crate::ids::{AuthorityId, ContextId, Epoch};

/// A refused charge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The epoch is over.
    #[error("budget of past epoch {epoch} (the context is at epoch {current})")]
    PastEpoch {
        /// The epoch charged.
        epoch: Epoch,
        /// The current epoch.
        current: Epoch,
    },
    /// Not enough left.
    #[error("flow budget exhausted: costs {cost}, {remaining} left")]
    Exhausted {
        /// The cost.
        cost: u32,
        /// What is left.
        remaining: u32,
    },
    /// The ledger tracks its maximum number of budgets.
    #[error("budget ledger full ({0} budgets)")]
    Full(usize),
}

/// The budget ledger.
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    per_epoch: u32,
    current: HashMap<ContextId, Epoch>,
    spent: HashMap<(ContextId, AuthorityId, Epoch), u32>,
    max_budgets: usize,
}

impl BudgetLedger {
    /// A ledger granting `per_epoch` units to each authority in each context
    /// epoch, tracking at most `max_budgets` (context, authority) budgets.
    pub fn new(per_epoch: u32, max_budgets: usize) -> Self {
        Self {
            per_epoch,
            current: HashMap::new(),
            spent: HashMap::new(),
            max_budgets,
        }
    }

    /// The current epoch of `context`, if any charge or advance was seen.
    pub fn current_epoch(&self, context: &ContextId) -> Option<Epoch> {
        self.current.get(context).copied()
    }

    /// Moves `context` to `epoch` (never backwards), dropping the old
    /// epochs' budgets.
    pub fn advance_epoch(&mut self, context: ContextId, epoch: Epoch) {
        let cur = self.current.entry(context).or_insert(epoch);
        if epoch > *cur {
            *cur = epoch;
        }
        let cur = *cur;
        self.spent.retain(|(c, _, e), _| *c != context || *e >= cur);
    }

    /// What `authority` has left in `epoch` of `context` (0 for a past epoch).
    pub fn remaining(&self, context: &ContextId, authority: &AuthorityId, epoch: Epoch) -> u32 {
        if self.current.get(context).is_some_and(|c| epoch < *c) {
            return 0;
        }
        let spent = self
            .spent
            .get(&(*context, *authority, epoch))
            .copied()
            .unwrap_or(0);
        self.per_epoch.saturating_sub(spent)
    }

    /// Charges `cost`; returns what is left. A charge to a newer epoch
    /// advances the context to it.
    pub fn charge(
        &mut self,
        context: ContextId,
        authority: AuthorityId,
        epoch: Epoch,
        cost: u32,
    ) -> Result<u32, BudgetError> {
        if let Some(&current) = self.current.get(&context)
            && epoch < current
        {
            return Err(BudgetError::PastEpoch { epoch, current });
        }
        let remaining = self.remaining(&context, &authority, epoch);
        if cost > remaining {
            return Err(BudgetError::Exhausted { cost, remaining });
        }
        let key = (context, authority, epoch);
        if !self.spent.contains_key(&key) && self.spent.len() >= self.max_budgets {
            return Err(BudgetError::Full(self.max_budgets));
        }
        self.advance_epoch(context, epoch);
        *self.spent.entry(key).or_insert(0) += cost;
        Ok(remaining - cost)
    }

    /// A guard snapshot for `authority` in `context` at `epoch`.
    pub fn snapshot(
        &self,
        context: ContextId,
        authority: AuthorityId,
        epoch: Epoch,
        capabilities: Capabilities,
    ) -> GuardSnapshot {
        GuardSnapshot {
            authority_id: authority,
            context_id: context,
            flow_budget_remaining: self.remaining(&context, &authority, epoch),
            capabilities,
            epoch,
        }
    }
}
