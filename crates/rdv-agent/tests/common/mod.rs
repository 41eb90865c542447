#![allow(missing_docs, clippy::unwrap_used, dead_code)]
//! Members with real identities, contexts and services for the agent's
//! loopback tests.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdv_agent::{AgentConfig, Books, Node};
use rdv_channel::NoiseHandshaker;
use rdv_context::*;

pub const T0: u64 = 1_700_000_000_000;

pub fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    T0 + 20 + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub fn rng(seed: u8) -> SeededRng {
    SeededRng::from_seed([seed; 32])
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32], [seed.wrapping_add(100); 32])
}

pub fn node(identity: Identity, context: Context, seed: u8) -> Node<MemoryJournal> {
    let mut service = RendezvousService::new(
        identity.clone(),
        RendezvousConfig::default(),
        &mut rng(seed),
    );
    service.install_keys(context.keys().clone()).unwrap();
    let mut fx = ReferenceInterpreter::new(identity.clone(), BudgetLedger::new(1000, 100));
    fx.add_journal(Journal::new(context.id(), MemoryJournal::default(), 60_000).unwrap());
    let mut handshaker = NoiseHandshaker::new(&identity, &mut rng(seed.wrapping_add(50)));
    handshaker.learn_members(&context);
    let books = Books::new(fx, &context.id(), 1024).unwrap();
    Node {
        service,
        context,
        handshaker,
        books,
    }
}

pub fn snapshot(n: &Node<MemoryJournal>) -> GuardSnapshot {
    n.books.fx.ledger().snapshot(
        n.context.id(),
        n.service.authority(),
        n.context.epoch(),
        Capabilities::all(),
    )
}

pub fn publish_outcome(n: &mut Node<MemoryJournal>, addr: &str, now: u64) -> GuardOutcome {
    let snap = snapshot(n);
    let ctx = n.context.id();
    n.service.prepare_publish_descriptor(
        &snap,
        ctx,
        vec![TransportHint::TcpDirect { addr: addr.into() }],
        now,
    )
}

pub fn config() -> AgentConfig {
    AgentConfig {
        clock,
        // No periodic sync in this test: what arrives comes from the
        // reconciliation on connect or from the push.
        interval: Duration::from_secs(3600),
        jitter: Duration::ZERO,
        ..AgentConfig::default()
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
