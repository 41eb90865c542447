//! Flow budgets per (context, authority, epoch), as token buckets.
//!
//! Each authority's budget in a context epoch is a bucket of `capacity`
//! units that refills at `refill_per_sec` (0: never, one budget per epoch).
//! A new epoch starts fresh buckets and closes the old ones: a charge to a
//! past epoch is refused, so a snapshot taken before an epoch advance
//! cannot be spent after it. Time comes from the caller
//! ([`BudgetLedger::tick`], which the interpreter calls with each effect's
//! `now`); the ledger never reads a clock.
//!
//! Whose bucket pays: the guard charges the authority that causes the
//! work. An accepted handshake is charged to the *initiator's* bucket in the
//! responder's ledger, so a member flooding another with handshakes drains
//! its own allowance there, not the responder's (see
//! [`crate::RendezvousService::prepare_handle_handshake`]).

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

/// One bucket: its level in thousandths of a unit at `at_ms`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level_milli: u64,
    at_ms: u64,
}

/// The budget ledger.
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    capacity: u32,
    refill_per_sec: u32,
    now_ms: u64,
    current: HashMap<ContextId, Epoch>,
    buckets: HashMap<(ContextId, AuthorityId, Epoch), Bucket>,
    max_budgets: usize,
}

impl BudgetLedger {
    /// A ledger granting `per_epoch` units to each authority in each context
    /// epoch, never refilled, tracking at most `max_budgets` budgets.
    pub fn new(per_epoch: u32, max_budgets: usize) -> Self {
        Self::with_refill(per_epoch, 0, max_budgets)
    }

    /// A ledger of token buckets: `capacity` units each, refilled at
    /// `refill_per_sec` units a second, at most `max_budgets` tracked (full
    /// buckets are forgotten first: they are what an absent one means).
    pub fn with_refill(capacity: u32, refill_per_sec: u32, max_budgets: usize) -> Self {
        Self {
            capacity,
            refill_per_sec,
            now_ms: 0,
            current: HashMap::new(),
            buckets: HashMap::new(),
            max_budgets,
        }
    }

    /// Moves the ledger's clock to `now_ms` (never backwards).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
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
        self.buckets
            .retain(|(c, _, e), _| *c != context || *e >= cur);
    }

    fn level_milli(&self, bucket: Option<&Bucket>) -> u64 {
        let full = u64::from(self.capacity) * 1000;
        match bucket {
            None => full,
            Some(b) => {
                let elapsed = self.now_ms.saturating_sub(b.at_ms);
                let refill = elapsed.saturating_mul(u64::from(self.refill_per_sec));
                b.level_milli.saturating_add(refill).min(full)
            }
        }
    }

    /// What `authority` has left in `epoch` of `context` at the ledger's
    /// time (0 for a past epoch).
    pub fn remaining(&self, context: &ContextId, authority: &AuthorityId, epoch: Epoch) -> u32 {
        if self.current.get(context).is_some_and(|c| epoch < *c) {
            return 0;
        }
        let level = self.level_milli(self.buckets.get(&(*context, *authority, epoch)));
        (level / 1000) as u32
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
        let key = (context, authority, epoch);
        let level = self.level_milli(self.buckets.get(&key));
        let remaining = (level / 1000) as u32;
        if cost > remaining {
            return Err(BudgetError::Exhausted { cost, remaining });
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_budgets {
            self.forget_full();
            if self.buckets.len() >= self.max_budgets {
                return Err(BudgetError::Full(self.max_budgets));
            }
        }
        self.advance_epoch(context, epoch);
        self.buckets.insert(
            key,
            Bucket {
                level_milli: level - u64::from(cost) * 1000,
                at_ms: self.now_ms,
            },
        );
        Ok(remaining - cost)
    }

    /// Drops the buckets that have refilled: an absent bucket is a full one.
    fn forget_full(&mut self) {
        let full = u64::from(self.capacity) * 1000;
        let (now, rate) = (self.now_ms, u64::from(self.refill_per_sec));
        self.buckets.retain(|_, b| {
            let refill = now.saturating_sub(b.at_ms).saturating_mul(rate);
            b.level_milli.saturating_add(refill) < full
        });
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
