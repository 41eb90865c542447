#![allow(missing_docs, clippy::unwrap_used, dead_code)]

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
    vec![
        TransportHint::QuicDirect {
            addr: "192.0.2.10:4433".into(),
        },
        TransportHint::TcpDirect {
            addr: "192.0.2.10:4434".into(),
        },
    ]
}

pub fn relay_hints(relay: AuthorityId) -> Vec<TransportHint> {
    vec![TransportHint::WebSocketRelay {
        relay_authority: relay,
        addr: "203.0.113.40:4002".into(),
    }]
}

/// A stand-in for the secure-channel layer that still checks what matters
/// here: message 1 is a MAC under the PSK the initiator used, and the
/// responder refuses it unless its own PSK is the same. The channel id is
/// a hash of both messages.
#[derive(Default)]
pub struct MacHandshaker {
    pub initiated: usize,
    pub responded: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("message 1 does not verify under this PSK")]
pub struct MacMismatch;

fn mac(psk: &[u8; 32], a: &AuthorityId, b: &AuthorityId, epoch: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(psk);
    h.update(a.as_bytes());
    h.update(b.as_bytes());
    h.update(&epoch.to_be_bytes());
    *h.finalize().as_bytes()
}

impl Handshaker for MacHandshaker {
    type Error = MacMismatch;
    fn initiate(&mut self, p: &HandshakeParams<'_>) -> Result<Vec<u8>, MacMismatch> {
        self.initiated += 1;
        Ok(mac(p.psk, &p.local, &p.remote, p.epoch).to_vec())
    }
    fn respond(&mut self, p: &HandshakeParams<'_>, init: &[u8]) -> Result<Responded, MacMismatch> {
        if init != mac(p.psk, &p.remote, &p.local, p.epoch) {
            return Err(MacMismatch);
        }
        self.responded += 1;
        let response = mac(p.psk, &p.local, &p.remote, p.epoch).to_vec();
        let mut h = blake3::Hasher::new();
        h.update(init);
        h.update(&response);
        Ok(Responded {
            payload: response,
            channel_id: *h.finalize().as_bytes(),
        })
    }
}

/// One member: identity, context view, service and interpreter.
pub struct Member {
    pub identity: Identity,
    pub context: Context,
    pub service: RendezvousService,
    pub fx: ReferenceInterpreter<MemoryJournal>,
    pub handshaker: MacHandshaker,
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
        Self {
            identity,
            context,
            service,
            fx,
            handshaker: MacHandshaker::default(),
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

    pub fn snapshot_with(&self, caps: Capabilities) -> GuardSnapshot {
        self.fx
            .ledger()
            .snapshot(self.ctx(), self.me(), self.context.epoch(), caps)
    }

    pub fn journal(&self) -> &Journal<MemoryJournal> {
        self.fx.journal(&self.ctx()).unwrap()
    }

    pub fn publish(&mut self, hints: Vec<TransportHint>, now: u64) -> GuardOutcome {
        let snap = self.snapshot();
        let out = self
            .service
            .prepare_publish_descriptor(&snap, self.ctx(), hints, now);
        assert!(out.decision.is_allowed(), "{:?}", out.decision);
        self.fx.run(&out, now).unwrap();
        out
    }

    /// Pulls every entry of `other`'s journal into ours and applies the
    /// facts to our service, as sync would. Returns the apply results.
    pub fn sync_from(
        &mut self,
        other: &Member,
        now: u64,
    ) -> Vec<Result<FactApplied, DescriptorError>> {
        let entries = other.journal().entries(None, 10_000).unwrap();
        let ctx = self.ctx();
        self.fx
            .journal_mut(&ctx)
            .unwrap()
            .receive(&entries, now)
            .unwrap();
        entries
            .iter()
            .map(|e| self.service.apply_fact(ctx, e.fact(), now))
            .collect()
    }

    pub fn rekeyed(&mut self) {
        self.service
            .install_keys(self.context.keys().clone())
            .unwrap();
        let (ctx, epoch) = (self.ctx(), self.context.epoch());
        self.fx.ledger_mut().advance_epoch(ctx, epoch);
    }
}

/// Alice creates a context; Bob joins by bearer invitation, Carol by a
/// sealed one.
pub fn trio() -> (Member, Member, Member) {
    let alice = identity(1);
    let bob = identity(2);
    let carol = identity(3);
    let mut actx = Context::create(&alice, &mut rng(10));
    let bob_ctx = actx
        .invite(&alice, T0 + 86_400_000)
        .to_string()
        .parse::<Invitation>()
        .unwrap()
        .accept(&bob, T0)
        .unwrap();
    let inv = actx
        .invite_sealed(
            &alice,
            &carol.static_key_binding(),
            T0 + 86_400_000,
            &mut rng(11),
        )
        .unwrap();
    let carol_ctx = inv
        .to_string()
        .parse::<Invitation>()
        .unwrap()
        .accept(&carol, T0)
        .unwrap();
    actx.add_member(&bob.static_key_binding()).unwrap();
    (
        Member::new(alice, actx, 20),
        Member::new(bob, bob_ctx, 21),
        Member::new(carol, carol_ctx, 22),
    )
}
