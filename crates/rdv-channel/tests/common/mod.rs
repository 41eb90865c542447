#![allow(missing_docs, clippy::unwrap_used, dead_code)]

use rdv_channel::*;
use rdv_context::*;

pub const T0: u64 = 1_700_000_000_000;
pub const BUDGET: u32 = 100;

pub fn rng(seed: u8) -> SeededRng {
    SeededRng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32], [seed.wrapping_add(100); 32])
}

pub fn direct_hints() -> Vec<TransportHint> {
    vec![TransportHint::TcpDirect {
        addr: "127.0.0.1:1".into(),
    }]
}

/// One member: identity, context view, service, interpreter, handshaker.
pub struct Member {
    pub identity: Identity,
    pub context: Context,
    pub service: RendezvousService,
    pub fx: ReferenceInterpreter<MemoryJournal>,
    pub hs: NoiseHandshaker,
}

impl Member {
    pub fn new(identity: Identity, context: Context, seed: u8) -> Self {
        let mut service = RendezvousService::new(
            identity.clone(),
            RendezvousConfig::default(),
            &mut rng(seed),
        );
        service.install_keys(context.keys().clone()).unwrap();
        let mut fx = ReferenceInterpreter::new(identity.clone(), BudgetLedger::new(BUDGET, 10_000));
        fx.add_journal(Journal::new(context.id(), MemoryJournal::default(), 60_000).unwrap());
        let mut hs = NoiseHandshaker::new(&identity, &mut rng(seed.wrapping_add(50)));
        hs.learn_members(&context);
        Self {
            identity,
            context,
            service,
            fx,
            hs,
        }
    }
    pub fn me(&self) -> AuthorityId {
        self.identity.authority()
    }
    pub fn ctx(&self) -> ContextId {
        self.context.id()
    }
    pub fn snapshot(&self) -> GuardSnapshot {
        self.fx.ledger().snapshot(
            self.ctx(),
            self.me(),
            self.context.epoch(),
            Capabilities::all(),
        )
    }
    pub fn journal(&self) -> &Journal<MemoryJournal> {
        self.fx.journal(&self.ctx()).unwrap()
    }
    pub fn publish(&mut self, now: u64) {
        let snap = self.snapshot();
        let out = self
            .service
            .prepare_publish_descriptor(&snap, self.ctx(), direct_hints(), now);
        assert!(out.decision.is_allowed(), "{:?}", out.decision);
        self.fx.run(&out, now).unwrap();
    }
    pub fn sync_from(&mut self, other: &Member, now: u64) {
        let entries = other.journal().entries(None, 10_000).unwrap();
        let ctx = self.ctx();
        self.fx
            .journal_mut(&ctx)
            .unwrap()
            .receive(&entries, now)
            .unwrap();
        for e in &entries {
            let _ = self.service.apply_fact(ctx, e.fact(), now);
        }
    }
    pub fn channels_established(&self) -> usize {
        self.journal()
            .by_kind(FactKind::ChannelEstablished, None, 100)
            .unwrap()
            .len()
    }
    /// Starts a handshake with `peer`: the HandshakeInit that would be sent.
    pub fn initiate(&mut self, peer: AuthorityId, now: u64) -> Result<HandshakeInit, String> {
        let ctx = self.ctx();
        let psk = self.service.handshake_psk(&ctx, &peer).unwrap();
        let snap = self.snapshot();
        let out = self
            .service
            .prepare_establish_channel(&snap, ctx, peer, &psk, now, &mut self.hs.at(now))
            .map_err(|e| e.to_string())?;
        if !out.decision.is_allowed() {
            return Err(format!("{:?}", out.decision));
        }
        self.fx.run(&out, now).unwrap();
        match self.fx.take_outbox().pop() {
            Some(Outbound::Handshake { message, .. }) => Ok(message),
            other => panic!("{other:?}"),
        }
    }
    /// Answers a handshake as a driver would: identify, then the service.
    pub fn answer(&mut self, init: &HandshakeInit, now: u64) -> Result<HandshakeComplete, String> {
        let init = HandshakeInit::from_bytes(&init.to_bytes()).unwrap();
        let who = self
            .hs
            .identify_initiator(&init)
            .map_err(|e| e.to_string())?;
        self.answer_as(who, init, now)
    }
    pub fn answer_as(
        &mut self,
        who: AuthorityId,
        init: HandshakeInit,
        now: u64,
    ) -> Result<HandshakeComplete, String> {
        let ctx = self.ctx();
        let psk = self.service.handshake_psk(&ctx, &who).unwrap();
        let snap = self.snapshot();
        let out = self.service.prepare_handle_handshake(
            &snap,
            ctx,
            who,
            init,
            &psk,
            &mut self.hs.at(now),
        );
        if !out.decision.is_allowed() {
            assert!(out.effects.is_empty());
            return Err(format!("{:?}", out.decision));
        }
        self.fx.run(&out, now).unwrap();
        match self.fx.take_outbox().pop() {
            Some(Outbound::HandshakeResponse { message, .. }) => Ok(message),
            other => panic!("{other:?}"),
        }
    }
    /// Finishes as initiator and records ChannelEstablished.
    pub fn finish(
        &mut self,
        peer: AuthorityId,
        complete: &HandshakeComplete,
        now: u64,
    ) -> Result<SecureChannel, HandshakeError> {
        let ch = self.hs.finish_initiator(peer, complete, now)?;
        self.fx
            .execute(
                &EffectCommand::JournalAppend {
                    context_id: ch.context_id(),
                    fact: self
                        .service
                        .channel_established(self.ctx(), self.me(), peer, ch.id(), ch.epoch())
                        .expect("the context's keys are installed"),
                },
                now,
            )
            .unwrap();
        Ok(ch)
    }
    pub fn rekey_material(&mut self, peer: AuthorityId) -> RekeyMaterial {
        let ctx = self.ctx();
        RekeyMaterial {
            epoch: self.context.epoch(),
            local_static: self.hs.static_secret(),
            psk: self.service.handshake_psk(&ctx, &peer).unwrap(),
            entropy: self.hs.entropy(),
            timeout_ms: 5_000,
        }
    }
    /// Applies an epoch rekey to this member's context and service.
    pub fn rekeyed(&mut self) {
        self.service
            .install_keys(self.context.keys().clone())
            .unwrap();
        let (ctx, epoch) = (self.ctx(), self.context.epoch());
        self.fx.ledger_mut().advance_epoch(ctx, epoch);
        self.hs.learn_members(&self.context);
    }
}

/// Alice creates a context and invites Bob; Mallory is a stranger with her
/// own context.
pub fn pair() -> (Member, Member) {
    let alice = identity(1);
    let bob = identity(2);
    let mut actx = Context::create(&alice, &mut rng(10));
    let bob_ctx = actx
        .invite(&alice, T0 + 86_400_000)
        .accept(&bob, T0)
        .unwrap();
    actx.add_member(&bob.static_key_binding()).unwrap();
    let mut a = Member::new(alice, actx, 20);
    let mut b = Member::new(bob, bob_ctx, 21);
    a.hs.learn_members(&a.context);
    a.publish(T0);
    b.publish(T0);
    a.sync_from(&b, T0 + 1);
    b.sync_from(&a, T0 + 1);
    (a, b)
}

/// Both advance to the next epoch (Alice authors the rekey).
pub fn advance(a: &mut Member, b: &mut Member) {
    let rekey = a
        .context
        .advance_epoch(&a.identity, &[], &mut rng(77))
        .unwrap();
    b.context.apply_rekey(&b.identity, &rekey).unwrap();
    a.rekeyed();
    b.rekeyed();
}

/// A full handshake a -> b at T0+10: both channels.
pub fn connect(a: &mut Member, b: &mut Member) -> (SecureChannel, SecureChannel) {
    let init = a.initiate(b.me(), T0 + 10).unwrap();
    let complete = b.answer(&init, T0 + 11).unwrap();
    let ca = a.finish(b.me(), &complete, T0 + 12).unwrap();
    let cb = b.hs.take_responded(b.ctx(), a.me()).unwrap();
    (ca, cb)
}
