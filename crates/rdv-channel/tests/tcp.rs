#![allow(missing_docs, clippy::unwrap_used)]
//! The TCP driver over loopback: two authorities as separate tasks.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rdv_channel::handshake::{HandshakeConfig, Initiator, prologue};
use rdv_channel::tcp::{self, Endpoint, RekeyProvider};
use rdv_channel::*;
use rdv_context::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// Test time: T0 plus real elapsed time (descriptors are valid from T0).
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    T0 + 20 + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn config() -> TcpConfig {
    TcpConfig {
        clock,
        queue_depth: 8,
        ..TcpConfig::default()
    }
}

/// Republishes `m`'s descriptor with its real TCP address.
fn publish_tcp(m: &mut Member, addr: std::net::SocketAddr, now: u64) {
    let snap = m.snapshot();
    let out = m.service.prepare_publish_descriptor(
        &snap,
        m.ctx(),
        vec![TransportHint::TcpDirect {
            addr: addr.to_string(),
        }],
        now,
    );
    assert!(out.decision.is_allowed());
    m.fx.run(&out, now).unwrap();
}

fn endpoint(m: &mut Member) -> Endpoint<'_, ReferenceInterpreter<MemoryJournal>> {
    let snapshot = m.snapshot();
    Endpoint {
        service: &mut m.service,
        handshaker: &mut m.hs,
        interpreter: &mut m.fx,
        snapshot,
    }
}

/// The responder's rotation material: from the shared member, once its
/// context is at the requested epoch.
fn provider(m: Arc<Mutex<Member>>, peer: AuthorityId) -> RekeyProvider {
    Box::new(move |epoch| {
        let mut m = m.try_lock().ok()?;
        (m.context.epoch() >= epoch).then(|| m.rekey_material(peer))
    })
}

const N: u32 = 300;

fn numbered(i: u32) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    // Varying sizes; every 60th above one Noise message (kept small
    // overall: debug-build ChaCha20 is slow).
    let n = if i % 60 == 7 {
        70_000
    } else {
        (i as usize * 977) % 2_000
    };
    v.resize(4 + n, i as u8);
    v
}

fn check(i: u32, m: &[u8]) {
    assert_eq!(m.len(), numbered(i).len(), "message {i}");
    assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), i);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorities_exchange_both_ways_and_rotate_mid_stream_without_loss() {
    let (mut a, mut b) = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    publish_tcp(&mut b, listener.local_addr().unwrap(), T0 + 2);
    a.sync_from(&b, T0 + 3);
    let (a_id, b_id) = (a.me(), b.me());
    let a = Arc::new(Mutex::new(a));
    let b = Arc::new(Mutex::new(b));
    // The context rekey travels from Alice's task to Bob's (in rdv it comes
    // with the context's own messages); Bob acknowledges it.
    let (rekey_tx, mut rekey_rx) = mpsc::channel::<EpochRekey>(1);
    let (ack_tx, mut ack_rx) = mpsc::channel::<()>(1);

    let bob = {
        let b = b.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ch = {
                let mut m = b.lock().await;
                tcp::accept(
                    stream,
                    endpoint(&mut m),
                    &config(),
                    provider(b.clone(), a_id),
                )
                .await
                .unwrap()
            };
            assert!(!ch.is_initiator());
            // Apply the rekey when it comes, while traffic flows.
            let b2 = b.clone();
            let control = tokio::spawn(async move {
                let rekey = rekey_rx.recv().await.unwrap();
                let mut m = b2.lock().await;
                let Member {
                    context, identity, ..
                } = &mut *m;
                context.apply_rekey(identity, &rekey).unwrap();
                m.rekeyed();
                drop(m);
                ack_tx.send(()).await.unwrap();
            });
            // Bob sends his sequence while receiving Alice's.
            let tx = ch.sender();
            let mut got = 0;
            let mut sent = 0;
            while got < N || sent < N {
                tokio::select! {
                    r = ch.recv(), if got < N => { check(got, &r.unwrap()); got += 1; }
                    r = tx.send(numbered(sent)), if sent < N => { r.unwrap(); sent += 1; }
                }
            }
            control.await.unwrap();
            assert_eq!(ch.wait_epoch(1).await.unwrap(), 1);
            // Alice closes: Bob sees a clean close.
            assert!(matches!(ch.recv().await, Err(TcpError::Closed)));
        })
    };

    let alice = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut ch = {
                let mut m = a.lock().await;
                tcp::connect(endpoint(&mut m), b_id, &config(), tcp::no_rekey())
                    .await
                    .unwrap()
            };
            assert!(ch.is_initiator());
            let tx = ch.sender();
            let mut got = 0;
            let mut sent = 0;
            let mut rotated = false;
            while got < N || sent < N {
                if sent == N / 2 && !rotated {
                    // The context epoch advances mid-stream: Alice rekeys
                    // the context, Bob applies it, Alice rotates.
                    rotated = true;
                    let material = {
                        let mut m = a.lock().await;
                        let Member {
                            context, identity, ..
                        } = &mut *m;
                        let rekey = context.advance_epoch(identity, &[], &mut rng(77)).unwrap();
                        m.rekeyed();
                        rekey_tx.send(rekey).await.unwrap();
                        drop(m);
                        ack_rx.recv().await.unwrap();
                        a.lock().await.rekey_material(b_id)
                    };
                    ch.rotate(material).await.unwrap();
                }
                tokio::select! {
                    r = ch.recv(), if got < N => { check(got, &r.unwrap()); got += 1; }
                    r = tx.send(numbered(sent)), if sent < N => { r.unwrap(); sent += 1; }
                }
            }
            assert_eq!(ch.wait_epoch(1).await.unwrap(), 1);
            ch.close().await.unwrap();
        })
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        alice.await.unwrap();
        bob.await.unwrap();
    })
    .await
    .unwrap();

    // ChannelEstablished is in both journals, with the same channel id.
    let (a, b) = (a.lock().await, b.lock().await);
    assert_eq!(a.channels_established(), 1);
    assert_eq!(b.channels_established(), 1);
    let fa = a
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 10)
        .unwrap();
    let fb = b
        .journal()
        .by_kind(FactKind::ChannelEstablished, None, 10)
        .unwrap();
    // Sealed under epoch 0 (the context has moved to 1 since): read with
    // that epoch's keys.
    let keys = a.context.previous_keys().unwrap();
    assert_eq!(keys.epoch(), 0);
    let id_of = |f: &RendezvousFact| match f {
        RendezvousFact::ChannelEstablished(sealed) => {
            let r = sealed.open(&keys).unwrap();
            (r.channel_id, r.recorder)
        }
        other => panic!("{other:?}"),
    };
    let (ida, by_a) = id_of(fa[0].fact());
    let (idb, by_b) = id_of(fb[0].fact());
    assert_eq!(ida, idb);
    assert_eq!(
        (by_a, by_b),
        (a.me(), b.me()),
        "each end signs its own record"
    );
    // Each side paid the direct cost once, with a receipt.
    assert_eq!(a.fx.receipts().len(), 2, "publish + connect");
    assert_eq!(b.fx.receipts().len(), 3, "2 publishes + accept");
}

/// A message 1 from Mallory, who is outside the context but knows its id
/// and Bob's static key.
fn mallory_init(b: &Member) -> Vec<u8> {
    let mallory = identity(9);
    let ctx = b.ctx();
    let cfg = HandshakeConfig {
        context_id: ctx,
        epoch: 0,
        local: mallory.authority(),
        remote: b.me(),
        local_static: mallory.static_secret_bytes(),
        psk: zeroize::Zeroizing::new([3; 32]),
        timeout_ms: 5_000,
        prologue: prologue(&ctx, 0, rdv_context::Route::Direct),
    };
    let mut i = Initiator::new(cfg, b.identity.static_public(), [4; 32]);
    let payload = i.create_init_message(0, clock()).unwrap();
    HandshakeInit::new(ctx, 0, Route::Direct, payload, &b.identity.static_public()).to_bytes()
}

async fn refused(b: &mut Member, frame: Vec<u8>) -> TcpError {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&frame).await.unwrap();
        // The responder closes without a byte.
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf).await;
        assert!(buf.is_empty(), "the responder sent {} bytes", buf.len());
        r.map(|_| ()).or_else(|e| {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            Ok::<(), ()>(())
        })
    });
    let (stream, _) = listener.accept().await.unwrap();
    let err = tcp::accept(stream, endpoint(b), &config(), tcp::no_rekey())
        .await
        .unwrap_err();
    peer.await.unwrap().unwrap();
    err
}

#[tokio::test]
async fn a_peer_outside_the_context_is_closed_on_and_nothing_is_recorded() {
    let (_a, mut b) = pair();
    let receipts = b.fx.receipts().len();
    let init = mallory_init(&b);
    let mut frame = (init.len() as u16).to_be_bytes().to_vec();
    frame.extend(init);
    let err = refused(&mut b, frame).await;
    assert!(
        matches!(err, TcpError::Handshake(HandshakeError::UnknownInitiator)),
        "{err:?}"
    );
    // An oversized handshake frame and garbage are refused the same way.
    let err = refused(&mut b, vec![0xff, 0xff, 1, 2, 3]).await;
    assert!(
        matches!(err, TcpError::HandshakeFrameTooLarge { len: 65_535, .. }),
        "{err:?}"
    );
    let err = refused(&mut b, vec![0, 3, 1, 2, 3]).await;
    assert!(matches!(err, TcpError::Decode(_)), "{err:?}");
    assert_eq!(b.channels_established(), 0);
    assert_eq!(b.fx.receipts().len(), receipts, "nothing charged");
}

/// What a man in the middle does to Alice's first application frame.
#[derive(Clone, Copy)]
enum Tamper {
    FlipByte,
    Duplicate,
    Truncate,
}

async fn read_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await.unwrap();
    let mut f = len.to_vec();
    f.resize(2 + usize::from(u16::from_be_bytes(len)), 0);
    r.read_exact(&mut f[2..]).await.unwrap();
    f
}

/// Forwards Alice ⇄ Bob, tampering with Alice's first frame after the
/// handshake frame.
async fn mitm(alice: TcpStream, bob: TcpStream, how: Tamper) {
    let (mut ar, mut aw) = alice.into_split();
    let (mut br, mut bw) = bob.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
    });
    let hs = read_frame(&mut ar).await;
    bw.write_all(&hs).await.unwrap();
    let mut f = read_frame(&mut ar).await;
    match how {
        Tamper::FlipByte => {
            let n = f.len();
            f[n - 5] ^= 1;
            bw.write_all(&f).await.unwrap();
        }
        Tamper::Duplicate => {
            bw.write_all(&f).await.unwrap();
            bw.write_all(&f).await.unwrap();
        }
        Tamper::Truncate => {
            bw.write_all(&f[..f.len() - 3]).await.unwrap();
            let _ = bw.shutdown().await;
            return;
        }
    }
    let _ = tokio::io::copy(&mut ar, &mut bw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_replayed_or_truncated_frames_close_the_channel_with_typed_errors() {
    for how in [Tamper::FlipByte, Tamper::Duplicate, Tamper::Truncate] {
        let (mut a, mut b) = pair();
        let bob_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mitm_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bob_addr = bob_listener.local_addr().unwrap();
        // Bob's descriptor points at the man in the middle.
        publish_tcp(&mut b, mitm_listener.local_addr().unwrap(), T0 + 2);
        a.sync_from(&b, T0 + 3);
        let b_id = b.me();
        tokio::spawn(async move {
            let (from_alice, _) = mitm_listener.accept().await.unwrap();
            let to_bob = TcpStream::connect(bob_addr).await.unwrap();
            mitm(from_alice, to_bob, how).await;
        });
        let bob = tokio::spawn(async move {
            let (stream, _) = bob_listener.accept().await.unwrap();
            let mut ch = tcp::accept(stream, endpoint(&mut b), &config(), tcp::no_rekey())
                .await
                .unwrap();
            // "first" may come before the error (Duplicate), or not when
            // both frames arrive in one read: the error is what counts.
            loop {
                match ch.recv().await {
                    Ok(m) => assert_eq!(m, b"first"),
                    Err(e) => break e,
                }
            }
        });
        let mut ch = tcp::connect(endpoint(&mut a), b_id, &config(), tcp::no_rekey())
            .await
            .unwrap();
        ch.send(b"first".to_vec()).await.unwrap();
        let _ = ch.send(b"second".to_vec()).await;
        let err = bob.await.unwrap();
        match how {
            Tamper::FlipByte => assert!(
                matches!(err, TcpError::Channel(ChannelError::Garbled)),
                "{err:?}"
            ),
            Tamper::Duplicate => assert!(
                matches!(
                    err,
                    TcpError::Channel(ChannelError::Replayed {
                        expected: 1,
                        found: 0
                    })
                ),
                "{err:?}"
            ),
            Tamper::Truncate => assert!(
                matches!(err, TcpError::Channel(ChannelError::Truncated(_))),
                "{err:?}"
            ),
        }
        // Bob closed the socket: Alice's side ends too.
        let e = tokio::time::timeout(Duration::from_secs(10), ch.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e, TcpError::UnexpectedEof | TcpError::Io(_)),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn a_message_above_the_bound_is_refused_before_sending_and_the_channel_stays_up() {
    let (mut a, mut b) = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    publish_tcp(&mut b, listener.local_addr().unwrap(), T0 + 2);
    a.sync_from(&b, T0 + 3);
    let b_id = b.me();
    let cfg = TcpConfig {
        max_message_len: 1000,
        ..config()
    };
    let cfg2 = cfg.clone();
    let bob = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ch = tcp::accept(stream, endpoint(&mut b), &cfg2, tcp::no_rekey())
            .await
            .unwrap();
        ch.recv().await.unwrap()
    });
    let ch = tcp::connect(endpoint(&mut a), b_id, &cfg, tcp::no_rekey())
        .await
        .unwrap();
    assert!(matches!(
        ch.send(vec![0; 1001]).await.unwrap_err(),
        TcpError::Channel(ChannelError::MessageTooLarge { max: 1000 })
    ));
    ch.send(vec![1; 1000]).await.unwrap();
    assert_eq!(bob.await.unwrap(), vec![1; 1000]);
}

/// Alice and Bob with a TCP channel between them (Alice initiates), each
/// side answering rotations from its own member through a provider.
async fn shared_channel(
    cfg: TcpConfig,
) -> (
    Arc<Mutex<Member>>,
    Arc<Mutex<Member>>,
    TcpChannel,
    TcpChannel,
) {
    shared_channel_with(cfg.clone(), cfg, true).await
}

/// The same, with a configuration per side; `bob_answers: false` gives Bob
/// no rotation material ever.
async fn shared_channel_with(
    cfg: TcpConfig,
    cfg_b: TcpConfig,
    bob_answers: bool,
) -> (
    Arc<Mutex<Member>>,
    Arc<Mutex<Member>>,
    TcpChannel,
    TcpChannel,
) {
    let (mut a, mut b) = pair();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    publish_tcp(&mut b, listener.local_addr().unwrap(), T0 + 2);
    a.sync_from(&b, T0 + 3);
    let (a_id, b_id) = (a.me(), b.me());
    let a = Arc::new(Mutex::new(a));
    let b = Arc::new(Mutex::new(b));
    let accepting = {
        let (b, cfg) = (b.clone(), cfg_b);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut m = b.lock().await;
            let rekey = if bob_answers {
                provider(b.clone(), a_id)
            } else {
                tcp::no_rekey()
            };
            tcp::accept(stream, endpoint(&mut m), &cfg, rekey)
                .await
                .unwrap()
        })
    };
    let ca = {
        let mut m = a.lock().await;
        tcp::connect(endpoint(&mut m), b_id, &cfg, provider(a.clone(), b_id))
            .await
            .unwrap()
    };
    let cb = accepting.await.unwrap();
    (a, b, ca, cb)
}

/// Alice rekeys the context to the next epoch; Bob applies it.
async fn advance_shared(a: &Mutex<Member>, b: &Mutex<Member>) {
    let (mut a, mut b) = (a.lock().await, b.lock().await);
    advance(&mut a, &mut b);
}

/// The error that ends `ch` (messages before it are skipped), within the
/// test's bound.
async fn first_error(ch: &mut TcpChannel) -> TcpError {
    within(async {
        loop {
            if let Err(e) = ch.recv().await {
                break e;
            }
        }
    })
    .await
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managers_advance_epoch_rotates_live_tcp_channels() {
    let (a, b, mut ca, mut cb) = shared_channel(config()).await;
    let (a_id, b_id, ctx) = {
        let (a, b) = (a.lock().await, b.lock().await);
        (a.me(), b.me(), a.ctx())
    };
    let mut ma: ChannelManager<tcp::TcpChannelHandle> = ChannelManager::new();
    let mut mb: ChannelManager<tcp::TcpChannelHandle> = ChannelManager::new();
    ma.register(ca.handle()).unwrap();
    mb.register(cb.handle()).unwrap();
    ca.send(b"before".to_vec()).await.unwrap();
    assert_eq!(within(cb.recv()).await.unwrap(), b"before");

    // The context moves to epoch 1; each side tells its manager, and
    // nobody calls `rotate`: the mark is what rotates the channel.
    advance_shared(&a, &b).await;
    assert_eq!(ma.advance_epoch(ctx, 1), vec![b_id]);
    assert_eq!(mb.advance_epoch(ctx, 1), vec![a_id]);
    // Traffic keeps flowing across the rotation.
    for i in 0..20u8 {
        ca.send(vec![i; 100]).await.unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(within(cb.recv()).await.unwrap(), vec![i; 100]);
    }
    assert_eq!(within(ca.wait_epoch(1)).await.unwrap(), 1);
    assert_eq!(within(cb.wait_epoch(1)).await.unwrap(), 1);
    cb.send(b"after".to_vec()).await.unwrap();
    assert_eq!(within(ca.recv()).await.unwrap(), b"after");
    assert_eq!(ma.find_by_context_peer(ctx, b_id).unwrap().epoch(), 1);
    assert_eq!(mb.find_by_context_peer(ctx, a_id).unwrap().epoch(), 1);
    assert!(
        ma.advance_epoch(ctx, 1).is_empty(),
        "nothing left to rotate at epoch 1"
    );

    // Closed channels leave the managers on prune.
    ca.close().await.unwrap();
    assert!(matches!(within(cb.recv()).await, Err(TcpError::Closed)));
    within(async {
        loop {
            ma.prune();
            mb.prune();
            if ma.is_empty() && mb.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_closes_a_channel_its_initiator_does_not_rotate() {
    let cfg = TcpConfig {
        rotation_grace: Duration::from_millis(300),
        ..config()
    };
    let (a, b, mut ca, mut cb) = shared_channel(cfg).await;
    let ctx = a.lock().await.ctx();
    let mut mb: ChannelManager<tcp::TcpChannelHandle> = ChannelManager::new();
    mb.register(cb.handle()).unwrap();
    advance_shared(&a, &b).await;
    // Only Bob (the responder) learns that epoch 0 is retired; Alice keeps
    // sending on epoch-0 keys and never rotates.
    mb.advance_epoch(ctx, 1);
    ca.send(b"still epoch 0".to_vec()).await.unwrap();
    let mut closed = None;
    within(async {
        loop {
            match cb.recv().await {
                Ok(_) => continue,
                Err(e) => {
                    closed = Some(e);
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        matches!(closed, Some(TcpError::RotationOverdue(1))),
        "{closed:?}"
    );
    // Alice's side ends too: the socket is gone.
    let end = first_error(&mut ca).await;
    assert!(!matches!(end, TcpError::RotationOverdue(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_without_the_new_epochs_keys_closes_the_channel() {
    let cfg = TcpConfig {
        handshake_timeout: Duration::from_secs(2),
        ..config()
    };
    let (_a, _b, mut ca, _cb) = shared_channel(cfg).await;
    // Marked due for epoch 1, but the context never got there: the
    // provider has no material, so the channel must not stay on old keys.
    ca.mark_rotation_due(1);
    let end = first_error(&mut ca).await;
    assert!(matches!(end, TcpError::RotationUnavailable(1)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_whose_rotation_goes_unanswered_closes_the_channel() {
    let quick = TcpConfig {
        handshake_timeout: Duration::from_secs(2),
        ..config()
    };
    // Bob never has the material, and would wait a minute for it.
    let patient = TcpConfig {
        handshake_timeout: Duration::from_secs(60),
        ..config()
    };
    let (a, b, mut ca, _cb) = shared_channel_with(quick, patient, false).await;
    advance_shared(&a, &b).await;
    let material = a.lock().await.rekey_material(b.lock().await.me());
    ca.rotate(material).await.unwrap();
    let end = first_error(&mut ca).await;
    assert!(matches!(end, TcpError::RotationTimedOut(1)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_dropped_by_its_application_closes_though_a_manager_holds_it() {
    let (_a, _b, ca, mut cb) = shared_channel(config()).await;
    let mut ma: ChannelManager<tcp::TcpChannelHandle> = ChannelManager::new();
    ma.register(ca.handle()).unwrap();
    drop(ca);
    // The manager's handle does not keep it open: Bob sees a clean close...
    assert!(matches!(within(cb.recv()).await, Err(TcpError::Closed)));
    // ...and the manager can let it go.
    within(async {
        while !ma.is_empty() {
            ma.prune();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Issue 13, item 9: the driver replaces a send key that has been in use
/// for `KEY_UPDATE_INTERVAL_MS`, without a rotation or an epoch change,
/// and the peer follows (the clock jumps instead of the test waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_updates_keys_that_have_been_in_use_for_two_minutes() {
    static JUMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    fn jumping() -> u64 {
        clock() + JUMP.load(std::sync::atomic::Ordering::SeqCst)
    }
    let cfg = TcpConfig {
        clock: jumping,
        ..config()
    };
    let (_a, _b, ca, mut cb) = shared_channel(cfg).await;
    ca.send(b"one".to_vec()).await.unwrap();
    assert_eq!(within(cb.recv()).await.unwrap(), b"one");
    assert_eq!(ca.key_generations(), (0, 0));
    JUMP.store(
        rdv_channel::channel::KEY_UPDATE_INTERVAL_MS + 1_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    ca.send(b"two".to_vec()).await.unwrap();
    assert_eq!(within(cb.recv()).await.unwrap(), b"two");
    assert_eq!(ca.key_generations().0, 1, "Alice's send key was replaced");
    assert_eq!(cb.key_generations().1, 1, "Bob follows");
    // And the channel goes on under the new keys, both ways.
    cb.send(b"three".to_vec()).await.unwrap();
    let mut ca = ca;
    assert_eq!(within(ca.recv()).await.unwrap(), b"three");
}
