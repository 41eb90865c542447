//! What arrives on the member's ports: introductions and channels.

use super::*;

/// Counts a half-open refusal under the bound that refused it.
fn count_full(shared: &Shared, full: accept::Full) {
    let c = match full {
        accept::Full::PerIp => &shared.stats.refused_per_ip,
        accept::Full::Total => &shared.stats.refused_total,
    };
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub(super) async fn accept_tcp(shared: Arc<Shared>, listener: TcpListener) {
    let gate = HalfOpen::new(shared.options.accept);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proven = shared.throttle.is_proven(from.ip());
        let slot = match gate.enter(from.ip(), proven) {
            Ok(s) => s,
            Err(full) => {
                count_full(&shared, full);
                tracing::debug!(%from, ?full, "half-open bound: connection closed");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = serve_connection(&shared, stream, from.ip(), slot).await;
            if let Err(e) = r {
                tracing::debug!(%from, error = %e, "connection refused");
            }
        });
    }
}

/// Accepts QUIC connections: the same half-open bounds per source address
/// and in all as TCP, then message 1 on the first stream (no lock), the
/// mac1 pre-check, and the handshake under the member's lock, bound to the
/// connection. Refusals close the connection without a reason.
pub(super) async fn accept_quic(shared: Arc<Shared>, endpoint: QuicEndpoint) {
    let gate = HalfOpen::new(shared.options.accept);
    while let Some(incoming) = endpoint.accept().await {
        let from = incoming.remote_address();
        let proven = shared.throttle.is_proven(from.ip());
        let slot = match gate.enter(from.ip(), proven) {
            Ok(s) => s,
            Err(full) => {
                count_full(&shared, full);
                incoming.ignore();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = serve_quic(&shared, incoming, slot).await;
            if let Err(e) = r {
                tracing::debug!(%from, error = %e, "QUIC connection refused");
            }
        });
    }
}

async fn serve_quic(
    shared: &Arc<Shared>,
    incoming: quinn::Incoming,
    slot: accept::Slot,
) -> Result<(), String> {
    let from = incoming.remote_address();
    let cfg = &shared.options.tcp;
    let conn = tokio::time::timeout(cfg.handshake_timeout, incoming)
        .await
        .map_err(|_| "QUIC handshake timed out")?
        .map_err(|e| e.to_string())?;
    let mut stream = quic::BiStream::accept(conn, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let init = match quic::read_init(&mut stream, cfg).await {
        Ok(i) => i,
        Err(e) => {
            stream.refuse();
            return Err(e.to_string());
        }
    };
    let m = match member_of(shared, &init.context_id) {
        Some(m) if init.mac1_matches(&shared.mac1_key) => m,
        _ => {
            shared
                .stats
                .refused_mac1
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stream.refuse();
            return Err("unknown context or mac1".into());
        }
    };
    if let Err(t) = shared.throttle.admit(from.ip(), &shared.stats) {
        stream.refuse();
        return Err(format!("message 1 over the cryptography rate ({t:?})"));
    }
    let ch = {
        let mut g = m.sync.node().lock().await;
        let ep = accept::endpoint(&mut g);
        quic::accept_init(stream, init, ep, cfg, tcp::no_rekey())
            .await
            .map_err(|e| e.to_string())?
    };
    drop(slot);
    dispatch(m, ch, "quic", Some((shared.throttle.clone(), from.ip()))).await
}

/// Waits (bounded by the handshake timeout) for the first two bytes.
async fn peek2(stream: &TcpStream, timeout: Duration) -> Option<[u8; 2]> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 2];
    for _ in 0..100 {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(2)) => return Some(buf),
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

async fn serve_connection(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    from: std::net::IpAddr,
    slot: accept::Slot,
) -> Result<(), String> {
    let timeout = shared.options.tcp.handshake_timeout;
    let first = peek2(&stream, timeout).await.ok_or("nothing sent")?;
    if intro::is_intro(first) {
        let r = answer_intro(shared, &mut stream).await;
        drop(slot);
        return r;
    }
    let init = tcp::read_init(&mut stream, &shared.options.tcp)
        .await
        .map_err(|e| e.to_string())?;
    // A context this member is not in: silence, as for any refusal.
    let m = member_of(shared, &init.context_id).ok_or("unknown context")?;
    let gates = accept::Gates {
        mac1_key: &shared.mac1_key,
        throttle: &shared.throttle,
        from,
    };
    let ch = accept::answer_init(
        stream,
        init,
        m.sync.node(),
        gates,
        &shared.options.tcp,
        tcp::no_rekey(),
        &shared.stats,
    )
    .await
    .map_err(|e| e.to_string())?;
    drop(slot);
    dispatch(m, ch, TCP_DIRECT, Some((shared.throttle.clone(), from))).await
}

/// Checks an introduction like a synced fact and answers with our own
/// descriptor only if it passed.
async fn answer_intro(shared: &Shared, stream: &mut TcpStream) -> Result<(), String> {
    let timeout = shared.options.tcp.handshake_timeout;
    let entry = intro::read(stream, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let RendezvousFact::Descriptor(sealed) = entry.fact() else {
        return Err("introduction without a descriptor".into());
    };
    let m = member_of(shared, &sealed.context_id()).ok_or("unknown context")?;
    let now = now_ms(shared);
    let accepted = {
        let mut n = m.sync.node().lock().await;
        n.receive(vec![entry], now).map_err(|e| e.to_string())?
    };
    if accepted.rejected > 0 || accepted.deferred > 0 {
        return Err("introduction refused".into());
    }
    let mine = lock(&m.own).clone().ok_or("nothing published yet")?;
    intro::write(stream, &mine)
        .await
        .map_err(|e| e.to_string())?;
    if save_roster(shared, &m).await {
        after_epoch_change(shared, &m).await;
    }
    Ok(())
}

/// Routes an established channel by its first message.
/// Reads the channel's purpose byte and hands the channel on. The first
/// authenticated frame is also what proves the source address
/// (`prove`: the accept paths' [`accept::Throttle`] and address) for the
/// message-1 bound: a replayed message 1 completes no channel whose frames
/// the replayer could write.
pub(super) async fn dispatch(
    m: Arc<Member>,
    mut ch: TcpChannel,
    via: &'static str,
    prove: Option<(Arc<accept::Throttle>, std::net::IpAddr)>,
) -> Result<(), String> {
    let first = tokio::time::timeout(PURPOSE_TIMEOUT, ch.recv())
        .await
        .map_err(|_| "no purpose in time")?
        .map_err(|e| e.to_string())?;
    if let Some((throttle, ip)) = &prove {
        throttle.prove(*ip);
    }
    match first.as_slice() {
        [PURPOSE_SYNC] => {
            // A sync channel lives for hours: the address stays proven
            // while it does (and for `PROVEN_FOR` after), so a member whose
            // long-lived channel drops reconnects as a proven source.
            if let Some((throttle, ip)) = prove {
                let (m, peer) = (m.clone(), ch.remote());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(accept::PROVEN_FOR / 2).await;
                        if !m.sync.is_connected(&peer) {
                            break;
                        }
                        throttle.prove(ip);
                    }
                });
            }
            lock(&m.via).insert(ch.remote(), via);
            m.sync.attach(ch).await;
            Ok(())
        }
        [PURPOSE_PIPE] => {
            let waiting = lock(&m.pipe).take();
            match waiting {
                Some(tx) => tx.send(ch).await.map_err(|_| "the listener left".into()),
                None => {
                    let _ = ch.close().await;
                    Err("a pipe but nobody listens".into())
                }
            }
        }
        _ => {
            let _ = ch.close().await;
            Err("unknown channel purpose".into())
        }
    }
}
