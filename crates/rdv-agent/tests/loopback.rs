#![allow(missing_docs, clippy::unwrap_used)]
//! Two members on loopback over the TCP channel: what one publishes, the
//! other sees through `get_cached_descriptor`, by reconciliation on connect
//! and by push, with no other coupling.

mod common;

use std::time::Duration;

use common::*;
use rdv_agent::{AgentConfig, SyncAgent};
use rdv_channel::TcpConfig;
use rdv_channel::tcp::{self, Endpoint};
use rdv_context::*;
use tokio::net::TcpListener;

struct Setup {
    a: SyncAgent<MemoryJournal>,
    b: SyncAgent<MemoryJournal>,
    ch_a: rdv_channel::TcpChannel,
    ch_b: rdv_channel::TcpChannel,
    ctx: ContextId,
    pa: AuthorityId,
    pb: AuthorityId,
    first_nonce: [u8; 32],
}

/// Alice and Bob with their agents, Alice's first descriptor published
/// before any channel, and a TCP channel between them (not attached yet).
async fn setup() -> Setup {
    setup_with(config()).await
}

/// As [`setup`], Bob's agent with `b_config`.
async fn setup_with(b_config: AgentConfig) -> Setup {
    let (alice, bob) = (identity(1), identity(2));
    let mut actx = Context::create(&alice, &mut rng(10));
    let bctx = actx
        .invite(&alice, T0 + 86_400_000)
        .accept(&bob, T0)
        .unwrap();
    actx.add_member(&bob.static_key_binding()).unwrap();
    let ctx = actx.id();
    let (pa, pb) = (alice.authority(), bob.authority());
    let a = SyncAgent::new(node(alice, actx, 20), config());
    let b = SyncAgent::new(node(bob, bctx, 21), b_config);

    // Bob listens and publishes his address; Alice learns it (the
    // bootstrap a first contact needs: to dial, she needs his descriptor).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sealed = {
        let mut n = b.node().lock().await;
        let out = publish_outcome(&mut n, &addr, clock());
        drop(n);
        b.run_outcome(&out).await.unwrap();
        let n = b.node().lock().await;
        let e = n.books.fx.journal(&ctx).unwrap().entries(None, 10).unwrap();
        match e[0].fact() {
            RendezvousFact::Descriptor(s) => s.clone(),
            _ => unreachable!(),
        }
    };
    a.node()
        .lock()
        .await
        .service
        .cache_descriptor(&sealed, clock())
        .unwrap();

    // Alice publishes before any channel exists: no push can carry it.
    let first = {
        let mut n = a.node().lock().await;
        publish_outcome(&mut n, "127.0.0.1:1", clock())
    };
    a.run_outcome(&first).await.unwrap();
    let first_nonce = a
        .node()
        .lock()
        .await
        .service
        .own_descriptor(ctx)
        .unwrap()
        .nonce;
    assert!(
        b.node()
            .lock()
            .await
            .service
            .get_cached_descriptor(ctx, pa)
            .is_none()
    );

    // The channel: Bob accepts, Alice dials.
    let tcp_config = TcpConfig {
        clock,
        ..TcpConfig::default()
    };
    let bn = b.node().clone();
    let tc = tcp_config.clone();
    let accepting = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut guard = bn.lock().await;
        let n = &mut *guard;
        let snap = snapshot(n);
        tcp::accept(
            stream,
            Endpoint {
                service: &mut n.service,
                handshaker: &mut n.handshaker,
                interpreter: &mut n.books,
                snapshot: snap,
            },
            &tc,
            tcp::no_rekey(),
        )
        .await
        .unwrap()
    });
    let ch_a = {
        let mut guard = a.node().lock().await;
        let n = &mut *guard;
        let snap = snapshot(n);
        tcp::connect(
            Endpoint {
                service: &mut n.service,
                handshaker: &mut n.handshaker,
                interpreter: &mut n.books,
                snapshot: snap,
            },
            pb,
            &tcp_config,
            tcp::no_rekey(),
        )
        .await
        .unwrap()
    };
    let ch_b = accepting.await.unwrap();
    Setup {
        a,
        b,
        ch_a,
        ch_b,
        ctx,
        pa,
        pb,
        first_nonce,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_published_by_one_member_reaches_the_other_over_tcp() {
    let Setup {
        a,
        b,
        ch_a,
        ch_b,
        ctx,
        pa,
        pb,
        first_nonce,
    } = setup().await;
    b.attach(ch_b).await;
    a.attach(ch_a).await;

    // Reconciliation on connect brings Alice's first descriptor.
    let got_first = eventually(async || {
        b.node()
            .lock()
            .await
            .service
            .get_cached_descriptor(ctx, pa)
            .is_some_and(|d| d.nonce == first_nonce)
    })
    .await;
    assert!(got_first, "Bob never saw Alice's descriptor");
    {
        let n = b.node().lock().await;
        let info = RendezvousAdapter::new(&n.service).get_peer_info(ctx, pa, clock());
        assert_eq!(info.map(|i| i.authority_id), Some(pa));
    }

    // A new descriptor is pushed at once (no periodic sync runs).
    let second = {
        let mut n = a.node().lock().await;
        publish_outcome(&mut n, "127.0.0.1:2", clock() + 1)
    };
    a.run_outcome(&second).await.unwrap();
    let second_nonce = a
        .node()
        .lock()
        .await
        .service
        .own_descriptor(ctx)
        .unwrap()
        .nonce;
    let got_second = eventually(async || {
        b.node()
            .lock()
            .await
            .service
            .get_cached_descriptor(ctx, pa)
            .is_some_and(|d| d.nonce == second_nonce)
    })
    .await;
    assert!(got_second, "the push never arrived");
    // The journals agree (the channel records included), after one more
    // reconciliation.
    assert!(a.sync_now(&pb));
    let same = eventually(async || {
        let ja = a
            .node()
            .lock()
            .await
            .books
            .fx
            .journal(&ctx)
            .unwrap()
            .store()
            .snapshot();
        let jb = b
            .node()
            .lock()
            .await
            .books
            .fx
            .journal(&ctx)
            .unwrap()
            .store()
            .snapshot();
        ja == jb
    })
    .await;
    assert!(same, "journals differ");
    assert!(a.is_connected(&pb) && b.is_connected(&pa));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_a_malformed_sync_message_is_disconnected_and_nothing_is_written() {
    let Setup {
        a,
        b,
        ch_a,
        ch_b,
        ctx,
        pa,
        ..
    } = setup().await;
    let before = b.node().lock().await.books.fx.journal(&ctx).unwrap().len();
    b.attach(ch_b).await;
    // A push envelope holding a good descriptor, then garbage: the whole
    // message is refused.
    let alice_fact: Vec<JournalEntry> = {
        let n = a.node().lock().await;
        let all = n.books.fx.journal(&ctx).unwrap().entries(None, 10).unwrap();
        let keys = n.service.keys(&ctx).unwrap();
        // The author is sealed inside: Alice's are those that open as hers.
        let hers = |e: &JournalEntry| match e.fact() {
            RendezvousFact::Descriptor(d) => d
                .open_any_time(keys, &DescriptorPolicy::default())
                .is_ok_and(|d| d.authority_id == pa),
            _ => false,
        };
        all.into_iter().filter(hers).collect()
    };
    assert_eq!(alice_fact.len(), 1);
    let mut bytes = vec![0u8];
    bytes.extend(
        rdv_sync::Message {
            facts: alice_fact,
            ..rdv_sync::Message::default()
        }
        .encode(),
    );
    bytes.extend_from_slice(&[0xde, 0xad]);
    ch_a.send(bytes).await.unwrap();
    let end = b.disconnected(&pa, Duration::from_secs(20)).await;
    assert!(
        matches!(
            end,
            Some(rdv_agent::PeerEnd::Sync(rdv_sync::SyncError::Decode(_)))
        ),
        "{end:?}"
    );
    assert_eq!(
        b.node().lock().await.books.fx.journal(&ctx).unwrap().len(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_pushing_forged_facts_is_disconnected_without_writing_them() {
    let Setup {
        b,
        ch_a,
        ch_b,
        ctx,
        pa,
        ..
    } = setup().await;
    let before = b.node().lock().await.books.fx.journal(&ctx).unwrap().len();
    b.attach(ch_b).await;
    let stranger = identity(66).authority();
    // Channel records naming a stranger (sealed under the epoch, as a
    // member holding the key would), one push each.
    let keys = b.node().lock().await.context.keys().clone();
    for n in 0..20u8 {
        let e = JournalEntry::new(
            RendezvousFact::channel_established(&identity(66), &keys, stranger, pa, [n; 32], 0),
            hlc::HlcTimestamp {
                wall_ms: T0 + 30,
                counter: 0,
            },
        );
        let mut bytes = vec![0u8];
        bytes.extend(
            rdv_sync::Message {
                facts: vec![e],
                ..rdv_sync::Message::default()
            }
            .encode(),
        );
        if ch_a.send(bytes).await.is_err() {
            break;
        }
    }
    let end = b.disconnected(&pa, Duration::from_secs(20)).await;
    assert!(
        matches!(end, Some(rdv_agent::PeerEnd::BadPushes(9))),
        "{end:?}"
    );
    assert_eq!(
        b.node().lock().await.books.fx.journal(&ctx).unwrap().len(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reconciliation_brings_a_fact_that_was_never_pushed() {
    // Bob reconciles every 200 to 300 ms; Alice only answers.
    let Setup {
        a,
        b,
        ch_a,
        ch_b,
        ctx,
        pa,
        pb,
        ..
    } = setup_with(AgentConfig {
        interval: Duration::from_millis(200),
        jitter: Duration::from_millis(100),
        ..config()
    })
    .await;
    b.attach(ch_b).await;
    a.attach(ch_a).await;
    // The reconciliation on connect ends (Bob has all Alice had).
    let synced = eventually(async || {
        let ja = a.node().lock().await.books.fx.journal(&ctx).unwrap().len();
        let jb = b.node().lock().await.books.fx.journal(&ctx).unwrap().len();
        ja == jb
    })
    .await;
    assert!(synced);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A fact written into Alice's journal behind the agent's back: no push.
    let fact = a
        .node()
        .lock()
        .await
        .service
        .channel_established(ctx, pb, pa, [0x77; 32], 0)
        .unwrap();
    {
        let mut n = a.node().lock().await;
        let appended = n
            .books
            .fx
            .journal_mut(&ctx)
            .unwrap()
            .append(fact.clone(), clock())
            .unwrap();
        n.books.index.insert(rdv_sync::Key {
            wall_ms: appended.timestamp.wall_ms,
            counter: appended.timestamp.counter,
            id: appended.id.0,
        });
    }
    let id = fact.id();
    let arrived = eventually(async || {
        b.node()
            .lock()
            .await
            .books
            .fx
            .journal(&ctx)
            .unwrap()
            .contains(&id)
    })
    .await;
    assert!(arrived, "periodic reconciliation never brought the fact");
}
