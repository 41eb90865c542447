//! Journal sync over secure channels: one task per connected member.
//!
//! * **Push.** A fact this member inserts (any `JournalAppend` effect run
//!   through [`SyncAgent::run_outcome`], or a `ChannelEstablished` the TCP
//!   handshake records through [`Books`]) is sent at once to every
//!   connected member, as a sync message holding only facts. The receiver
//!   checks it like any synced fact. Push queues are bounded; a push that
//!   does not fit is dropped (counted) and the next reconciliation brings
//!   the fact instead. Facts learnt by sync are not pushed on: propagation
//!   beyond direct peers is reconciliation's job, not flooding.
//! * **Reconciliation** (`rdv-sync`'s session) on connect (by the channel's
//!   initiator, so the two sides do not both start) and periodically, every
//!   [`AgentConfig::interval`] plus a random jitter of up to
//!   [`AgentConfig::jitter`], peers whose descriptors need a refresh
//!   ([`RendezvousAdapter::peers_needing_refresh`]) first.
//! * **Hostile peers.** Any session error (malformed or oversized message,
//!   too many rounds, too many bad facts, time out) and too many bad pushed
//!   facts close the channel.
//!
//! Envelope of a channel message: one byte, then a sync message.
//! `0` push; `1` to the receiver's responder session (from an initiator);
//! `2` to the receiver's initiator session (from a responder).

use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use rand::Rng;
use rdv_channel::{NoiseHandshaker, TcpChannel, TcpError};
use rdv_context::journal::JournalStore;
use rdv_context::{
    AuthorityId, Context, EffectCommand, EffectInterpreter, GuardOutcome, InterpretError,
    JournalEntry, Outbound, ReferenceInterpreter, RendezvousAdapter, RendezvousService,
};
use rdv_sync::{JournalReplica, Limits, Message, Session, Step, SyncError, SyncIndex};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

const PUSH: u8 = 0;
const TO_RESPONDER: u8 = 1;
const TO_INITIATOR: u8 = 2;

/// Settings of the agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Bounds of every session.
    pub limits: Limits,
    /// Period of reconciliation with each peer.
    pub interval: Duration,
    /// Most random delay added to each period.
    pub jitter: Duration,
    /// Pushes queued per peer before new ones are dropped.
    pub push_queue: usize,
    /// Facts not yet pushed that the books keep (then the oldest go; sync
    /// brings them).
    pub max_fresh: usize,
    /// Bad pushed facts from one peer before its channel is closed.
    pub max_bad_pushed: u32,
    /// The clock, ms since the Unix epoch.
    pub clock: fn() -> u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            interval: Duration::from_secs(60),
            jitter: Duration::from_secs(10),
            push_queue: 64,
            max_fresh: 1024,
            max_bad_pushed: 8,
            clock: rdv_channel::tcp::system_now_ms,
        }
    }
}

/// Rekeys looked at per pass of [`Node::follow_rekeys`], and passes.
const MAX_REKEYS_FOLLOWED: usize = 64;

/// Why [`Node::remove_member`] refused; nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// Not in this member's roster.
    #[error("{0} is not a member of the context")]
    NotAMember(AuthorityId),
    /// The context refused the advance (not an admin, removing itself...).
    #[error("{0}")]
    Context(String),
    /// The guard chain refused recording it.
    #[error("recording the advance was refused: {0}")]
    Denied(String),
    /// The rekey would not fit in a journal fact (a very large context).
    #[error("the context has too many members for an epoch advance through the journal")]
    TooLarge,
}

/// Errors of the agent's own calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The interpreter refused the outcome.
    #[error(transparent)]
    Interpret(#[from] InterpretError),
    /// Sync failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// The effect interpreter of a member that syncs: the reference
/// interpreter, with every journal append indexed for sync and queued for
/// push.
pub struct Books<S> {
    /// The interpreter (journal, budgets, receipts).
    pub fx: ReferenceInterpreter<S>,
    /// The journal's fingerprint cache.
    pub index: SyncIndex,
    fresh: std::collections::VecDeque<JournalEntry>,
    max_fresh: usize,
}

impl<S: JournalStore> Books<S> {
    /// Books over `fx`, whose journal for the served context must exist;
    /// the index is built from it.
    pub fn new(
        fx: ReferenceInterpreter<S>,
        context: &rdv_context::ContextId,
        max_fresh: usize,
    ) -> Result<Self, AgentError> {
        let journal = fx
            .journal(context)
            .ok_or(InterpretError::NoJournal(*context))?;
        let index = SyncIndex::load(journal).map_err(|e| SyncError::Store(e.to_string()))?;
        Ok(Self {
            fx,
            index,
            fresh: Default::default(),
            max_fresh,
        })
    }
    fn take_fresh(&mut self) -> Vec<JournalEntry> {
        self.fresh.drain(..).collect()
    }
}

impl<S: JournalStore> EffectInterpreter for Books<S> {
    type Error = InterpretError;

    fn execute(&mut self, command: &EffectCommand, now_ms: u64) -> Result<(), InterpretError> {
        self.fx.execute(command, now_ms)?;
        if let EffectCommand::JournalAppend { context_id, fact } = command {
            let id = fact.id();
            if let Some(j) = self.fx.journal(context_id)
                && let Some(e) = j.get(&id)?
                && self.index.insert(e.order_key().into())
            {
                if self.fresh.len() >= self.max_fresh {
                    self.fresh.pop_front();
                }
                self.fresh.push_back(e);
            }
        }
        Ok(())
    }

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

/// Everything of one member in one context that the agent shares with its
/// caller (behind a mutex).
pub struct Node<S> {
    /// The rendezvous service.
    pub service: RendezvousService,
    /// The context (membership).
    pub context: Context,
    /// The Noise handshaker (for the caller's TCP handshakes).
    pub handshaker: NoiseHandshaker,
    /// Journal, index, budgets, receipts.
    pub books: Books<S>,
}

impl<S: JournalStore> Node<S> {
    /// Runs `f` over this member's sync view.
    /// Runs `f` over this member's sync view, then follows any epoch rekey
    /// it wrote ([`Node::follow_rekeys`]).
    fn with_replica<T>(&mut self, f: impl FnOnce(&mut JournalReplica<'_, S>) -> T) -> Option<T> {
        let ctx = self.context.id();
        let (out, rekeys) = {
            let context = &self.context;
            let is_member = |a: &AuthorityId| context.is_member(a);
            let former_member = |a: &AuthorityId| context.was_member(a);
            let rekeys = |r: &rdv_context::SealedRekey| rdv_sync::judge_rekey(context, r);
            let journal = self.books.fx.journal_mut(&ctx)?;
            let mut r = JournalReplica {
                journal,
                index: &mut self.books.index,
                service: &mut self.service,
                is_member: &is_member,
                former_member: &former_member,
                rekeys: &rekeys,
                rekeys_written: 0,
            };
            let out = f(&mut r);
            (out, r.rekeys_written)
        };
        if rekeys > 0 {
            self.follow_rekeys();
        }
        Some(out)
    }
    /// Removes up to `limit` facts past the journal's retention window
    /// (and their index entries); the scheduler calls it every period.
    pub fn collect_garbage(&mut self, now_ms: u64, limit: usize) -> Result<usize, AgentError> {
        Ok(self
            .with_replica(|r| r.collect_garbage(now_ms, limit))
            .unwrap_or(Ok(0))?)
    }
    /// Adds to the roster every member whose descriptor the service has
    /// cached but this member did not know (one invited by someone else:
    /// its descriptor, sealed under the epoch key and signed, is the proof)
    /// and teaches the handshaker its static key. Returns whether the
    /// roster grew (the caller then persists the context).
    pub fn learn_members(&mut self) -> bool {
        let ctx = self.context.id();
        let found: Vec<_> = self
            .service
            .cached_descriptors(ctx)
            .filter(|d| !self.context.is_member(&d.authority_id))
            .cloned()
            .collect();
        let mut grew = false;
        for d in &found {
            grew |= self.context.learn_from_descriptor(d).unwrap_or(false);
        }
        if grew {
            self.handshaker.learn_members(&self.context);
        }
        grew
    }

    /// Follows the epoch advances recorded in the journal (an admin's
    /// `EpochRekey` facts, which sync brings like any other): applies each
    /// that advances from this member's epoch, or outranks one it applied
    /// ([`Context::apply_rekey`]), until none does. On a change, the
    /// service gets the new epoch's keys (so descriptors are republished
    /// and cached ones of the old epoch dropped), the budgets move to it,
    /// and the handshaker forgets removed members. Returns the new epoch,
    /// if it changed. A rekey that removes this member, or that it cannot
    /// open, changes nothing (the member stays behind, locked out).
    pub fn follow_rekeys(&mut self) -> Option<rdv_context::Epoch> {
        use rdv_context::RekeyOutcome;
        let identity = self.service.identity().clone();
        let mut changed = false;
        // Each pass applies at most one; a pass that applies none ends it.
        for _ in 0..MAX_REKEYS_FOLLOWED {
            let rekeys = self.rekeys_in_reach()?;
            let applied = rekeys.iter().any(|r| {
                matches!(
                    self.context.apply_rekey(&identity, r),
                    Ok(RekeyOutcome::Advanced { .. } | RekeyOutcome::Replaced { .. })
                )
            });
            if !applied {
                break;
            }
            changed = true;
        }
        if !changed {
            return None;
        }
        // A replacement may leave the epoch number as it was, or lower it,
        // under another secret: what changed is the secret, not the number.
        self.entered_epoch();
        Some(self.context.epoch())
    }

    /// The journal's rekeys that can still matter to this member and that
    /// it can open now: those into an epoch within
    /// [`rdv_context::REKEY_HISTORY`] of its own or later, sealed under the
    /// keys of an epoch it holds ([`Context::open_rekey`]), oldest
    /// transition first (the journal pages through them all, at most
    /// [`MAX_REKEYS_FOLLOWED`] pages). One from a later epoch opens once
    /// the member has followed the rekeys before it: each pass of
    /// [`Node::follow_rekeys`] asks again.
    fn rekeys_in_reach(&self) -> Option<Vec<rdv_context::EpochRekey>> {
        use rdv_context::{FactKind, RendezvousFact};
        let journal = self.books.fx.journal(&self.context.id())?;
        let floor = self.context.epoch();
        let history = rdv_context::REKEY_HISTORY as u64;
        let mut out = Vec::new();
        let mut after = None;
        for _ in 0..MAX_REKEYS_FOLLOWED {
            let page = journal
                .by_kind(FactKind::EpochRekey, after, MAX_REKEYS_FOLLOWED)
                .ok()?;
            after = page.last().map(|e| e.order_key());
            out.extend(page.iter().filter_map(|e| match e.fact() {
                RendezvousFact::EpochRekey(r)
                    if r.from_epoch().saturating_add(1 + history) > floor =>
                {
                    self.context.open_rekey(r).ok()
                }
                _ => None,
            }));
            if page.len() < MAX_REKEYS_FOLLOWED {
                break;
            }
        }
        out.sort_by_key(|r| r.from_epoch);
        Some(out)
    }

    /// After this member's context moved to a new epoch (its own advance or
    /// one it followed): the service's keys, the budgets' epoch and the
    /// handshaker's roster follow.
    pub fn entered_epoch(&mut self) {
        let (ctx, epoch) = (self.context.id(), self.context.epoch());
        let keys = self.context.keys().clone();
        if let Err(e) = self
            .service
            .set_epoch_keys(keys, self.context.previous_keys())
        {
            tracing::warn!(error = %e, "installing the new epoch's keys failed");
        }
        self.books.fx.ledger_mut().advance_epoch(ctx, epoch);
        self.handshaker.learn_members(&self.context);
    }

    /// Removes `member` as an admin of the context: advances the epoch
    /// ([`Context::advance_epoch`]) and prepares recording the rekey in the
    /// journal through the guard chain. The caller runs the outcome (sync
    /// pushes it to the connected members), then calls
    /// [`Node::entered_epoch`].
    pub fn remove_member<R: rdv_context::CryptoRng + ?Sized>(
        &mut self,
        member: &AuthorityId,
        rng: &mut R,
    ) -> Result<(rdv_context::EpochRekey, GuardOutcome), RemoveError> {
        if !self.context.is_member(member) {
            return Err(RemoveError::NotAMember(*member));
        }
        // The snapshot of the epoch the rekey advances from: it is recorded
        // before the new keys are installed.
        let snapshot = self.books.fx.ledger().snapshot(
            self.context.id(),
            self.service.authority(),
            self.context.epoch(),
            rdv_context::Capabilities::all(),
        );
        let identity = self.service.identity().clone();
        let mut trial = rdv_context::Context::restore(&identity, &self.context.to_bytes())
            .map_err(|e| RemoveError::Context(e.to_string()))?;
        let rekey = trial
            .advance_epoch(&identity, &[*member], rng)
            .map_err(|e| RemoveError::Context(e.to_string()))?;
        if rdv_context::SealedRekey::seal(&rekey, self.context.keys()).is_none() {
            return Err(RemoveError::TooLarge);
        }
        let outcome = self.service.prepare_publish_rekey(&snapshot, &rekey);
        if let rdv_context::Decision::Denied(r) = &outcome.decision {
            return Err(RemoveError::Denied(r.to_string()));
        }
        self.context = trial;
        Ok((rekey, outcome))
    }

    /// Checks and writes entries received outside a sync session (an
    /// introduction) exactly as synced ones, then learns new members.
    pub fn receive(
        &mut self,
        entries: Vec<JournalEntry>,
        now_ms: u64,
    ) -> Result<rdv_sync::Accepted, AgentError> {
        use rdv_sync::SyncStore;
        let accepted = self
            .with_replica(|r| r.accept(entries, now_ms))
            .unwrap_or_else(|| Err(SyncError::Store("no journal".into())))?;
        self.learn_members();
        Ok(accepted)
    }

    /// Handshake messages queued by outcomes (the caller sends them).
    pub fn take_outbox(&mut self) -> Vec<Outbound> {
        self.books.fx.take_outbox()
    }
}

struct Peer {
    push: mpsc::Sender<Vec<JournalEntry>>,
    kick: mpsc::Sender<()>,
    task: JoinHandle<PeerEnd>,
}

/// The sync agent of one member: its peers' tasks and the scheduler.
pub struct SyncAgent<S> {
    node: Arc<Mutex<Node<S>>>,
    peers: Arc<std::sync::Mutex<HashMap<AuthorityId, Peer>>>,
    config: AgentConfig,
    scheduler: Option<JoinHandle<()>>,
    dropped_pushes: Arc<std::sync::atomic::AtomicU64>,
}

impl<S> std::fmt::Debug for SyncAgent<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncAgent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock_peers(
    p: &std::sync::Mutex<HashMap<AuthorityId, Peer>>,
) -> std::sync::MutexGuard<'_, HashMap<AuthorityId, Peer>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S: JournalStore + Send + 'static> SyncAgent<S> {
    /// An agent for `node`; starts the periodic scheduler.
    pub fn new(node: Node<S>, config: AgentConfig) -> Self {
        let mut agent = Self {
            node: Arc::new(Mutex::new(node)),
            peers: Default::default(),
            config,
            scheduler: None,
            dropped_pushes: Default::default(),
        };
        agent.scheduler = Some(tokio::spawn(schedule(
            agent.node.clone(),
            agent.peers.clone(),
            agent.config.clone(),
        )));
        agent
    }

    /// The member's state (lock it to publish, handshake, read the cache).
    pub fn node(&self) -> &Arc<Mutex<Node<S>>> {
        &self.node
    }

    /// Pushes dropped because a peer's queue was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.dropped_pushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a guard outcome through the books and pushes the facts it
    /// inserted to every connected member.
    pub async fn run_outcome(&self, outcome: &GuardOutcome) -> Result<usize, AgentError> {
        let now = (self.config.clock)();
        let (n, fresh) = {
            let mut node = self.node.lock().await;
            let n = node.books.run(outcome, now)?;
            (n, node.books.take_fresh())
        };
        self.push(fresh);
        Ok(n)
    }

    /// Pushes the facts inserted since the last push (after a handshake
    /// recorded a channel, say).
    pub async fn flush(&self) {
        let fresh = self.node.lock().await.books.take_fresh();
        self.push(fresh);
    }

    fn push(&self, fresh: Vec<JournalEntry>) {
        if fresh.is_empty() {
            return;
        }
        for p in lock_peers(&self.peers).values() {
            if p.push.try_send(fresh.clone()).is_err() {
                self.dropped_pushes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Serves sync over an established channel: reconciles at once if this
    /// side initiated the channel, then on schedule and on pushes. A
    /// second channel to the same member replaces the first.
    pub async fn attach(&self, channel: TcpChannel) {
        let remote = channel.remote();
        // The handshake may have recorded a channel fact: push it.
        self.flush().await;
        let (push_tx, push_rx) = mpsc::channel(self.config.push_queue);
        let (kick_tx, kick_rx) = mpsc::channel(1);
        if channel.is_initiator() {
            let _ = kick_tx.try_send(());
        }
        let task = tokio::spawn(serve(
            channel,
            self.node.clone(),
            self.config.clone(),
            push_rx,
            kick_rx,
        ));
        let old = lock_peers(&self.peers).insert(
            remote,
            Peer {
                push: push_tx,
                kick: kick_tx,
                task,
            },
        );
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Asks for a reconciliation with `peer` now (if connected).
    pub fn sync_now(&self, peer: &AuthorityId) -> bool {
        lock_peers(&self.peers)
            .get(peer)
            .is_some_and(|p| p.kick.try_send(()).is_ok())
    }

    /// Waits (up to `timeout`) for the task serving `peer` to end, and
    /// says why it did; `None` if there is none or it still runs.
    pub async fn disconnected(&self, peer: &AuthorityId, timeout: Duration) -> Option<PeerEnd> {
        let task = lock_peers(&self.peers).remove(peer)?;
        let mut handle = task.task;
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(r) => Some(r.unwrap_or(PeerEnd::Stopped)),
            Err(_) => {
                // Still running: put it back.
                lock_peers(&self.peers).insert(
                    *peer,
                    Peer {
                        task: handle,
                        ..task
                    },
                );
                None
            }
        }
    }

    /// Closes the sync channels of peers `keep` refuses (members removed
    /// from the context); returns who they were.
    pub fn retain_peers(&self, keep: impl Fn(&AuthorityId) -> bool) -> Vec<AuthorityId> {
        let mut peers = lock_peers(&self.peers);
        let gone: Vec<AuthorityId> = peers.keys().filter(|a| !keep(a)).copied().collect();
        for a in &gone {
            if let Some(p) = peers.remove(a) {
                p.task.abort();
            }
        }
        gone
    }

    /// Whether a channel task serves `peer`.
    pub fn is_connected(&self, peer: &AuthorityId) -> bool {
        lock_peers(&self.peers)
            .get(peer)
            .is_some_and(|p| !p.task.is_finished())
    }
}

impl<S> Drop for SyncAgent<S> {
    fn drop(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
        for p in lock_peers(&self.peers).values() {
            p.task.abort();
        }
    }
}

/// Facts garbage-collected per scheduler period at most.
const GC_PER_PERIOD: usize = 1_024;

/// Kicks every peer once a period, those needing a refresh first, after
/// collecting the journal's garbage.
async fn schedule<S: JournalStore + Send + 'static>(
    node: Arc<Mutex<Node<S>>>,
    peers: Arc<std::sync::Mutex<HashMap<AuthorityId, Peer>>>,
    config: AgentConfig,
) {
    loop {
        let jitter_ms = u64::try_from(config.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=jitter_ms)
        };
        tokio::time::sleep(config.interval + Duration::from_millis(extra)).await;
        let first = {
            let mut n = node.lock().await;
            let now = (config.clock)();
            // Expired descriptors and old channel records leave the
            // journal (bounded per period, so a long backlog never holds
            // the lock for long); sync cannot bring them back because
            // the journal refuses facts below the same floor.
            if let Err(e) = n.collect_garbage(now, GC_PER_PERIOD) {
                tracing::warn!(error = %e, "journal garbage collection failed");
            }
            RendezvousAdapter::new(&n.service).peers_needing_refresh(n.context.id(), now)
        };
        let peers = lock_peers(&peers);
        let order = first
            .iter()
            .filter(|a| peers.contains_key(*a))
            .chain(peers.keys().filter(|a| !first.contains(a)));
        for a in order {
            if let Some(p) = peers.get(a) {
                let _ = p.kick.try_send(());
            }
        }
    }
}

/// Why a peer's task ended (and its channel was closed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerEnd {
    /// The channel failed or closed.
    #[error("channel: {0}")]
    Channel(#[from] TcpError),
    /// A session failed: malformed message, bounds, bad facts, time.
    #[error("sync: {0}")]
    Sync(#[from] SyncError),
    /// Too many pushed facts failed their checks.
    #[error("{0} bad pushed facts")]
    BadPushes(u32),
    /// The task was stopped (replaced or the agent dropped).
    #[error("stopped")]
    Stopped,
}

async fn serve<S: JournalStore + Send + 'static>(
    mut channel: TcpChannel,
    node: Arc<Mutex<Node<S>>>,
    config: AgentConfig,
    mut push_rx: mpsc::Receiver<Vec<JournalEntry>>,
    mut kick_rx: mpsc::Receiver<()>,
) -> PeerEnd {
    let remote = channel.remote();
    let end = run_peer(&mut channel, &node, &config, &mut push_rx, &mut kick_rx).await;
    tracing::debug!(?remote, %end, "sync with peer ended");
    let _ = channel.close().await;
    end
}

async fn run_peer<S: JournalStore + Send + 'static>(
    channel: &mut TcpChannel,
    node: &Mutex<Node<S>>,
    config: &AgentConfig,
    push_rx: &mut mpsc::Receiver<Vec<JournalEntry>>,
    kick_rx: &mut mpsc::Receiver<()>,
) -> PeerEnd {
    let limits = config.limits;
    let mut initiated: Option<Session> = None;
    let mut responding: Option<Session> = None;
    let mut bad_pushed = 0u32;
    let session_time = Duration::from_millis(limits.max_session_ms);
    let mut deadline = tokio::time::Instant::now() + session_time;
    loop {
        let waiting = initiated.is_some() || responding.is_some();
        tokio::select! {
            m = channel.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return PeerEnd::Channel(e),
                };
                let now = (config.clock)();
                let Some((&tag, body)) = m.split_first() else {
                    return PeerEnd::Sync(SyncError::Decode(rdv_sync::DecodeError::Truncated("envelope")));
                };
                let mut n = node.lock().await;
                let (slot, reply_tag) = match tag {
                    PUSH => {
                        let mut s = Session::respond(limits, now);
                        let r = n.with_replica(|r| s.receive(body, r, now));
                        match r {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return PeerEnd::Sync(e),
                            None => return PeerEnd::Sync(SyncError::Store("no journal".into())),
                        }
                        n.learn_members();
                        bad_pushed += s.stats().facts_rejected;
                        if bad_pushed > config.max_bad_pushed {
                            return PeerEnd::BadPushes(bad_pushed);
                        }
                        continue;
                    }
                    TO_RESPONDER => {
                        if responding.is_none() {
                            responding = Some(Session::respond(limits, now));
                            deadline = tokio::time::Instant::now() + session_time;
                        }
                        (&mut responding, TO_INITIATOR)
                    }
                    TO_INITIATOR => {
                        if initiated.is_none() {
                            continue; // A late answer to a session we ended.
                        }
                        (&mut initiated, TO_RESPONDER)
                    }
                    _ => return PeerEnd::Sync(SyncError::Decode(rdv_sync::DecodeError::Invalid("envelope"))),
                };
                let Some(session) = slot.as_mut() else { continue };
                let step = match n.with_replica(|r| session.receive(body, r, now)) {
                    Some(Ok(step)) => step,
                    Some(Err(e)) => return PeerEnd::Sync(e),
                    None => return PeerEnd::Sync(SyncError::Store("no journal".into())),
                };
                n.learn_members();
                drop(n);
                let reply = match step {
                    Step::Send(b) => Some(b),
                    Step::SendAndFinish(b) => {
                        *slot = None;
                        Some(b)
                    }
                    Step::Finished => {
                        *slot = None;
                        None
                    }
                };
                if let Some(b) = reply
                    && let Err(e) = channel.send(envelope(reply_tag, &b)).await
                {
                    return PeerEnd::Channel(e);
                }
            }
            Some(entries) = push_rx.recv() => {
                let msg = Message { facts: entries, ..Message::default() }.encode();
                if let Err(e) = channel.send(envelope(PUSH, &msg)).await {
                    return PeerEnd::Channel(e);
                }
            }
            Some(()) = kick_rx.recv(), if initiated.is_none() => {
                let now = (config.clock)();
                let mut n = node.lock().await;
                let Some((s, first)) = n.with_replica(|r| Session::initiate(r, limits, now)) else {
                    return PeerEnd::Sync(SyncError::Store("no journal".into()));
                };
                drop(n);
                initiated = Some(s);
                deadline = tokio::time::Instant::now() + session_time;
                if let Err(e) = channel.send(envelope(TO_RESPONDER, &first)).await {
                    return PeerEnd::Channel(e);
                }
            }
            _ = tokio::time::sleep_until(deadline), if waiting => {
                return PeerEnd::Sync(SyncError::TimedOut(limits.max_session_ms));
            }
        }
    }
}

fn envelope(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(tag);
    v.extend_from_slice(body);
    v
}
