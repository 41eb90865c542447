#![allow(missing_docs, clippy::unwrap_used, dead_code)]
//! Members of one context with real identities, sealed descriptors and
//! signed revocations, and an in-memory driver for sessions between them.

use rdv_context::*;
use rdv_sync::*;

pub const T0: u64 = 1_700_000_000_000;

pub fn rng(seed: u8) -> SeededRng {
    SeededRng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32], [seed.wrapping_add(100); 32])
}

pub struct Member {
    pub identity: Identity,
    pub context: Context,
    pub service: RendezvousService,
    pub journal: Journal<MemoryJournal>,
    pub index: SyncIndex,
    pub ledger: BudgetLedger,
}

impl Member {
    pub fn new(identity: Identity, context: Context, seed: u8) -> Self {
        let mut service = RendezvousService::new(
            identity.clone(),
            RendezvousConfig::default(),
            &mut rng(seed),
        );
        service.install_keys(context.keys().clone()).unwrap();
        let journal = Journal::new(context.id(), MemoryJournal::default(), 60_000).unwrap();
        Self {
            identity,
            context,
            service,
            journal,
            index: SyncIndex::new(),
            ledger: BudgetLedger::new(1_000_000, 100),
        }
    }
    pub fn me(&self) -> AuthorityId {
        self.identity.authority()
    }
    pub fn ctx(&self) -> ContextId {
        self.context.id()
    }
    /// The sync view; membership from this member's context.
    pub fn with_replica<T>(
        &mut self,
        f: impl FnOnce(&mut JournalReplica<'_, MemoryJournal>) -> T,
    ) -> T {
        let context = &self.context;
        let is_member = |a: &AuthorityId| context.is_member(a);
        let former_member = |a: &AuthorityId| context.was_member(a);
        let rekeys = |r: &rdv_context::SealedRekey| rdv_sync::judge_rekey(context, r);
        let mut r = JournalReplica {
            journal: &mut self.journal,
            index: &mut self.index,
            service: &mut self.service,
            is_member: &is_member,
            former_member: &former_member,
            rekeys: &rekeys,
            rekeys_written: 0,
        };
        f(&mut r)
    }
    /// Appends a local fact (as the interpreter would) and indexes it.
    pub fn append(&mut self, fact: RendezvousFact, now: u64) -> FactId {
        let a = self.journal.append(fact, now).unwrap();
        self.with_replica(|r| r.note_appended(&a.id)).unwrap();
        a.id
    }
    fn snap(&self) -> GuardSnapshot {
        self.ledger.snapshot(
            self.ctx(),
            self.me(),
            self.context.epoch(),
            Capabilities::all(),
        )
    }
    /// Publishes a descriptor through the service; returns the fact.
    pub fn publish(&mut self, now: u64) -> RendezvousFact {
        let snap = self.snap();
        let out = self.service.prepare_publish_descriptor(
            &snap,
            self.ctx(),
            vec![TransportHint::TcpDirect {
                addr: "127.0.0.1:9".into(),
            }],
            now,
        );
        let fact = journal_fact(&out);
        self.append(fact.clone(), now);
        fact
    }
    /// Revokes the current descriptor; returns the fact.
    pub fn revoke(&mut self, now: u64) -> RendezvousFact {
        let snap = self.snap();
        let out = self.service.prepare_revoke_descriptor(&snap, self.ctx());
        let fact = journal_fact(&out);
        self.append(fact.clone(), now);
        fact
    }
    /// A channel record with `peer`.
    pub fn channel(&mut self, peer: AuthorityId, n: u8, now: u64) -> RendezvousFact {
        let fact = self
            .service
            .channel_established(self.ctx(), peer, self.me(), [n; 32], self.context.epoch())
            .unwrap();
        self.append(fact.clone(), now);
        fact
    }
    /// A channel record with the first other member, not appended.
    pub fn channel_fact_for_test(&self) -> RendezvousFact {
        self.service
            .channel_established(
                self.ctx(),
                identity(1).authority(),
                self.me(),
                [0xee; 32],
                self.context.epoch(),
            )
            .unwrap()
    }
    /// Every (id, timestamp) in journal order.
    pub fn snapshot(&self) -> Vec<(FactId, hlc::HlcTimestamp)> {
        self.journal.store().snapshot()
    }
}

fn journal_fact(out: &GuardOutcome) -> RendezvousFact {
    assert!(out.decision.is_allowed(), "{:?}", out.decision);
    out.effects
        .iter()
        .find_map(|e| match e {
            EffectCommand::JournalAppend { fact, .. } => Some(fact.clone()),
            _ => None,
        })
        .unwrap()
}

/// Alice, Bob and Carol, members of Alice's context.
pub fn trio() -> (Member, Member, Member) {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let mut actx = Context::create(&alice, &mut rng(10));
    let mut bctx = actx
        .invite(&alice, T0 + 86_400_000)
        .accept(&bob, T0)
        .unwrap();
    actx.add_member(&bob.static_key_binding()).unwrap();
    let mut cctx = actx
        .invite(&alice, T0 + 86_400_000)
        .accept(&carol, T0)
        .unwrap();
    actx.add_member(&carol.static_key_binding()).unwrap();
    bctx.add_member(&carol.static_key_binding()).unwrap();
    cctx.add_member(&bob.static_key_binding()).unwrap();
    (
        Member::new(alice, actx, 20),
        Member::new(bob, bctx, 21),
        Member::new(carol, cctx, 22),
    )
}

/// What both sides' sessions saw.
#[derive(Debug)]
pub struct Outcome {
    pub initiator: Stats,
    pub responder: Stats,
    pub round_trips: u32,
}

/// Runs one session between two stores, `a` initiating, at `now`.
pub fn run<A: SyncStore, B: SyncStore>(
    a: &mut A,
    b: &mut B,
    limits: Limits,
    now: u64,
) -> Result<Outcome, SyncError> {
    let (mut sa, first) = Session::initiate(a, limits, now);
    let mut sb = Session::respond(limits, now);
    let mut msg = Some(first);
    let mut to_b = true;
    let mut messages = 1u32;
    for _ in 0..100_000 {
        let Some(m) = msg.take() else { break };
        let step = if to_b {
            sb.receive(&m, b, now)?
        } else {
            sa.receive(&m, a, now)?
        };
        to_b = !to_b;
        msg = match step {
            Step::Send(x) | Step::SendAndFinish(x) => {
                messages += 1;
                Some(x)
            }
            Step::Finished => None,
        };
    }
    assert!(msg.is_none(), "session did not end");
    Ok(Outcome {
        initiator: sa.stats(),
        responder: sb.stats(),
        round_trips: messages.div_ceil(2),
    })
}

/// Syncs two members (a initiates) at `now`.
pub fn sync(a: &mut Member, b: &mut Member, now: u64) -> Outcome {
    let limits = Limits::default();
    a.with_replica(|ra| b.with_replica(|rb| run(ra, rb, limits, now)))
        .unwrap()
}
