//! The [`SyncStore`] of a member: its journal, its fingerprint cache and
//! its rendezvous service, with every received fact checked before it is
//! written.
//!
//! Checks, per fact (a bad fact is dropped and counted, the others of the
//! batch still go in):
//!
//! * the journal's own receive checks ([`Journal::check_remote`]): a
//!   descriptor of this context, a timestamp within the retention window
//!   and not beyond the allowed drift;
//! * every fact is sealed (issue 13 item 8), so every other check needs
//!   the keys of the fact's epoch, and a fact of an epoch whose keys this
//!   member does not hold, or that does not open under them (another
//!   secret for that epoch number: a rekey branch this member did not
//!   take), is left out without blame (deferred: it is offered again, and
//!   taken once the member can read it);
//! * the authorities a fact names are members of the context: the two
//!   ends of a `ChannelEstablished` (opened under the record key of the
//!   installed epoch or the one before, its recorder's signature checked),
//!   the author of a revocation (its signature checked). A descriptor's
//!   author need not be known yet, since opening under the epoch key and
//!   verifying is the proof (a member invited by someone else is learnt
//!   this way). A fact naming a member removed recently is left out
//!   without blame (deferred: others that have not followed the removal
//!   yet still hold and offer it);
//! * an epoch rekey is opened and judged by the member
//!   ([`JournalReplica::rekeys`], [`judge_rekey`]): one from its epoch by
//!   someone who is not an admin is refused, one it cannot weigh yet (from
//!   a later epoch, or an earlier one by someone who is not an admin now)
//!   is deferred, so only admins' rekeys that can matter are stored;
//! * a descriptor opens under the current epoch's key and its signature
//!   verifies ([`SealedDescriptor::open_any_time`]: an expired descriptor is
//!   history and is kept), and is not valid only in the future beyond the
//!   policy's skew. A descriptor sealed under another epoch cannot be
//!   checked here: it is left out without blame (deferred).
//!
//! Then the good facts are written in one batch, the index follows the
//! journal, and each fact is applied to the service
//! ([`RendezvousService::apply_fact`]), so descriptors go through
//! `cache_descriptor` and revocations are recorded.
//!
//! [`SealedDescriptor::open_any_time`]: rdv_context::SealedDescriptor::open_any_time

use hashbrown::HashMap;
use rdv_context::hlc::HlcTimestamp;
use rdv_context::journal::{Journal, JournalStore};
use rdv_context::{
    AuthorityId, FactId, JournalEntry, RecordError, RendezvousFact, RendezvousService, SealedRekey,
};

use crate::fingerprint::Key;
use crate::index::SyncIndex;
use crate::session::{Accepted, SyncError, SyncStore};

/// Why a received fact was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FactRejected {
    /// The journal's receive checks refused it.
    #[error(transparent)]
    Journal(#[from] rdv_context::JournalError),
    /// It names an authority that is not a member.
    #[error("{0:?} is not a member of the context")]
    NotMember(AuthorityId),
    /// The descriptor does not open or verify.
    #[error(transparent)]
    Descriptor(#[from] rdv_context::DescriptorError),
    /// A sealed record (channel, revocation, rekey) does not open or
    /// verify under its epoch's key.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// No keys for the context.
    #[error("no keys for the context")]
    NoKeys,
    /// An epoch rekey this member refuses (from its epoch, by someone who
    /// is not an admin of it).
    #[error("an epoch rekey by {0:?}, who is not an admin")]
    Rekey(AuthorityId),
}

/// What a member makes of a received (sealed) epoch rekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyCheck {
    /// Store it: it may move this member, or outrank a transition it made.
    Take,
    /// Cannot be weighed now (a later epoch's, say, or one sealed under a
    /// key this member does not hold): left out without blame;
    /// reconciliation offers it again.
    Later,
    /// Refused, with blame: opened, but no admin made it.
    Refuse(AuthorityId),
    /// Refused, with blame: opens under the epoch's key (so a member made
    /// it) but is malformed or its signature is not its rotator's.
    Bad(RecordError),
}

/// The judgement of a member holding `context` on a received rekey: from
/// a later epoch, or one too old to weigh, left for later; otherwise
/// opened with the keys of the epoch it advances from
/// ([`rdv_context::Context::open_rekey`]; no keys of it, or another
/// secret for it, as on a branch this member did not take: left for
/// later). Opened, one from the member's epoch is taken only from an admin
/// of it; one from an earlier epoch still in its history (one that may
/// outrank a transition it made) is taken only from a current admin and
/// otherwise left for later.
pub fn judge_rekey(context: &rdv_context::Context, sealed: &SealedRekey) -> RekeyCheck {
    let now = context.epoch();
    let history = rdv_context::REKEY_HISTORY as u64;
    let from = sealed.from_epoch();
    if from > now || from.saturating_add(history) < now {
        return RekeyCheck::Later;
    }
    let r = match context.open_rekey(sealed) {
        Ok(r) => r,
        Err(RecordError::WrongEpoch { .. } | RecordError::WrongKey) => return RekeyCheck::Later,
        Err(e) => return RekeyCheck::Bad(e),
    };
    match (context.is_admin(&r.rotator), from == now) {
        (true, _) => RekeyCheck::Take,
        (false, true) => RekeyCheck::Refuse(r.rotator),
        (false, false) => RekeyCheck::Later,
    }
}

/// A member's journal, index and service, as sync sees them.
pub struct JournalReplica<'a, S> {
    /// The journal.
    pub journal: &'a mut Journal<S>,
    /// Its fingerprint cache (kept in step with the journal).
    pub index: &'a mut SyncIndex,
    /// The service that caches descriptors and records revocations.
    pub service: &'a mut RendezvousService,
    /// Membership of the journal's context.
    pub is_member: &'a dyn Fn(&AuthorityId) -> bool,
    /// Members removed recently: their facts are deferred, not refused.
    pub former_member: &'a dyn Fn(&AuthorityId) -> bool,
    /// The member's judgement of an epoch rekey ([`judge_rekey`]).
    pub rekeys: &'a dyn Fn(&SealedRekey) -> RekeyCheck,
    /// Epoch rekeys written by [`SyncStore::accept`] so far (the member
    /// follows them when this grows).
    pub rekeys_written: u32,
}

impl<S: JournalStore> std::fmt::Debug for JournalReplica<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReplica")
            .field("context", &self.journal.context_id())
            .field("indexed", &self.index.len())
            .finish_non_exhaustive()
    }
}

/// Outcome of checking one fact.
enum Checked {
    Good,
    Deferred,
}

impl<S: JournalStore> JournalReplica<'_, S> {
    /// Checks one received entry at `now_ms` without writing anything.
    pub fn check(&self, entry: &JournalEntry, now_ms: u64) -> Result<(), FactRejected> {
        self.check_inner(entry, now_ms).map(|_| ())
    }

    fn check_inner(&self, entry: &JournalEntry, now_ms: u64) -> Result<Checked, FactRejected> {
        self.journal.check_remote(entry, now_ms)?;
        let ctx = self.journal.context_id();
        if self.service.keys(&ctx).is_none() {
            return Err(FactRejected::NoKeys);
        }
        // A sealed record opens with the keys of its epoch: the installed
        // one or the one before (a member one epoch behind, which missed a
        // rekey and is still answered under the epoch before, seals under
        // the epoch it has). One that does not open under them (the AEAD
        // refuses) is deferred, not blamed: it may be sealed under another
        // secret for the same epoch number, on the branch of two concurrent
        // rekeys this member did not take (or left), and an honest member
        // can hold and offer such facts; damage cannot be told apart from
        // that. What only a key holder can produce (a malformed record, a
        // bad signature, a stranger named) is refused with blame.
        let keys_at = |epoch| self.service.keys_at(&ctx, epoch);
        let named: Vec<AuthorityId> = match entry.fact() {
            // A descriptor proves its author's membership by itself: it
            // opens only under the epoch's key and its signature binds the
            // author's static key. That is how members learn of members
            // that others invited (bearer invitations).
            RendezvousFact::Descriptor(sealed) => {
                let Some(keys) = self
                    .service
                    .keys(&ctx)
                    .filter(|k| k.epoch() == sealed.epoch())
                else {
                    return Ok(Checked::Deferred);
                };
                let policy = self.service.config().policy;
                let d = match sealed.open_any_time(keys, &policy) {
                    Err(rdv_context::DescriptorError::WrongKey) => return Ok(Checked::Deferred),
                    other => other?,
                };
                if now_ms.saturating_add(policy.max_clock_skew_ms) < d.valid_from {
                    return Err(rdv_context::DescriptorError::NotYetValid {
                        valid_from: d.valid_from,
                        now_ms,
                    }
                    .into());
                }
                Vec::new()
            }
            RendezvousFact::ChannelEstablished(sealed) => {
                let Some(keys) = keys_at(sealed.epoch()) else {
                    return Ok(Checked::Deferred);
                };
                let record = match sealed.open(keys) {
                    Err(RecordError::WrongKey) => return Ok(Checked::Deferred),
                    other => other?,
                };
                vec![record.initiator, record.responder]
            }
            RendezvousFact::DescriptorRevoked(sealed) => {
                let Some(keys) = keys_at(sealed.epoch()) else {
                    return Ok(Checked::Deferred);
                };
                match sealed.open(keys) {
                    Err(RecordError::WrongKey) => return Ok(Checked::Deferred),
                    other => vec![other?.authority],
                }
            }
            RendezvousFact::EpochRekey(sealed) => match (self.rekeys)(sealed) {
                RekeyCheck::Take => Vec::new(),
                RekeyCheck::Later => return Ok(Checked::Deferred),
                RekeyCheck::Refuse(rotator) => return Err(FactRejected::Rekey(rotator)),
                RekeyCheck::Bad(e) => return Err(e.into()),
            },
        };
        for a in named {
            if !(self.is_member)(&a) {
                if (self.former_member)(&a) {
                    return Ok(Checked::Deferred);
                }
                return Err(FactRejected::NotMember(a));
            }
        }
        Ok(Checked::Good)
    }

    /// Indexes a fact the journal just took (a local append): call after
    /// every append so the index follows the journal.
    pub fn note_appended(&mut self, id: &FactId) -> Result<(), SyncError> {
        if let Some(ts) = self.journal.timestamp_of(id).map_err(store_err)? {
            self.index.insert(key(ts, id));
        }
        Ok(())
    }

    /// Garbage collection with the index kept in step: removes up to
    /// `limit` facts older than the journal's retention window at `now_ms`
    /// ([`Journal::collect_garbage`]) and their index entries, so the
    /// fingerprints sync compares stop counting them. Returns how many went.
    pub fn collect_garbage(&mut self, now_ms: u64, limit: usize) -> Result<usize, SyncError> {
        let gone = self
            .journal
            .collect_garbage(now_ms, limit)
            .map_err(store_err)?;
        for k in &gone {
            self.index.remove(&Key::from(*k));
        }
        Ok(gone.len())
    }
}

fn key(ts: HlcTimestamp, id: &FactId) -> Key {
    Key {
        wall_ms: ts.wall_ms,
        counter: ts.counter,
        id: id.0,
    }
}

fn store_err(e: impl std::fmt::Display) -> SyncError {
    SyncError::Store(e.to_string())
}

impl<S: JournalStore> SyncStore for JournalReplica<'_, S> {
    fn index(&mut self) -> &mut SyncIndex {
        self.index
    }

    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, SyncError> {
        self.journal.timestamp_of(id).map_err(store_err)
    }

    fn entry(&self, id: &FactId) -> Result<Option<JournalEntry>, SyncError> {
        self.journal.get(id).map_err(store_err)
    }

    fn accept(&mut self, entries: Vec<JournalEntry>, now_ms: u64) -> Result<Accepted, SyncError> {
        let mut out = Accepted::default();
        let mut good: Vec<JournalEntry> = Vec::with_capacity(entries.len());
        // Timestamps before the write, to move index keys that the merge
        // lowers.
        let mut before: HashMap<FactId, Option<HlcTimestamp>> = HashMap::new();
        for e in entries {
            let held = self.timestamp_of(&e.id())?;
            if held.is_some_and(|t| t <= e.timestamp) {
                continue; // Nothing would change.
            }
            match self.check_inner(&e, now_ms) {
                Ok(Checked::Good) => {
                    before.entry(e.id()).or_insert(held);
                    good.push(e);
                }
                Ok(Checked::Deferred) => out.deferred += 1,
                Err(_) => out.rejected += 1,
            }
        }
        if good.is_empty() {
            return Ok(out);
        }
        out.written = self.journal.receive(&good, now_ms).map_err(store_err)?;
        for (id, old) in &before {
            let now_ts = self.timestamp_of(id)?;
            if now_ts == *old {
                continue;
            }
            if let Some(old) = old {
                self.index.remove(&key(*old, id));
                out.written += 1;
            }
            if let Some(t) = now_ts {
                self.index.insert(key(t, id));
            }
        }
        // Revocations first, so a descriptor revoked in the same batch is
        // never cached.
        let ctx = self.journal.context_id();
        let rekeys = good
            .iter()
            .filter(|e| matches!(e.fact(), RendezvousFact::EpochRekey(_)))
            .count();
        self.rekeys_written = self
            .rekeys_written
            .saturating_add(u32::try_from(rekeys).unwrap_or(u32::MAX));
        good.sort_by_key(|e| !matches!(e.fact(), RendezvousFact::DescriptorRevoked(_)));
        for e in &good {
            // A refusal here (revoked, expired, superseded, replayed) keeps
            // the fact in the journal and out of the cache.
            let _ = self.service.apply_fact(ctx, e.fact(), now_ms);
        }
        Ok(out)
    }
}
