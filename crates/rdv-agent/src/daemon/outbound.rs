//! Reaching other members: discovery on points, introductions, and
//! channels raced over the transports their descriptors name.

use super::*;

/// A transport connection made by one attempt, before Noise.
enum Link {
    Quic(quic::BiStream),
    Tcp(TcpStream),
}

/// One way to reach the peer: a hint of its descriptor.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    via: &'static str,
    addr: SocketAddr,
}

/// The delay between two attempts' starts (RFC 8305 §5's "Connection
/// Attempt Delay", 250 ms recommended).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The attempts for `peer`'s descriptor, in the seed's order (§3): QUIC
/// direct, QUIC to the reflexive address, TCP direct. A transport this
/// agent does not have is skipped, never waited for.
fn attempts(shared: &Shared, hints: &[TransportHint]) -> Vec<Attempt> {
    let mut out = Vec::new();
    for rank in 0..3 {
        for h in hints {
            let (r, via) = match h {
                TransportHint::QuicDirect { .. } => (0, QUIC_DIRECT),
                TransportHint::QuicReflexive { .. } => (1, QUIC_REFLEXIVE),
                TransportHint::TcpDirect { .. } => (2, TCP_DIRECT),
                TransportHint::WebSocketRelay { .. } => continue,
            };
            if r != rank || (r < 2 && shared.quic.is_none()) {
                continue;
            }
            if let Some(addr) = h.socket_addr() {
                out.push(Attempt { via, addr });
            }
        }
    }
    out
}

/// Opens a channel to `peer` for `purpose`, racing its descriptor's
/// transports Happy-Eyeballs style (RFC 8305): a new attempt every
/// [`ATTEMPT_DELAY`] or as soon as the previous one failed; the first
/// transport connection that comes up runs the Noise handshake (charged
/// through the guard chain, without holding the member's lock while the
/// peer answers); if that fails the race goes on with the rest. The other
/// attempts are dropped (cancelled) once one channel is up. Returns the
/// channel and the name of the transport that carried it.
pub(super) async fn open_channel(
    shared: &Shared,
    m: &Member,
    peer: AuthorityId,
    purpose: u8,
) -> Result<(TcpChannel, &'static str), String> {
    let now = now_ms(shared);
    let hints: Vec<TransportHint> = {
        let n = m.sync.node().lock().await;
        n.service
            .get_cached_descriptor(m.id, peer)
            .filter(|d| d.is_valid_at(now))
            .ok_or_else(|| format!("no valid descriptor of {peer} yet"))?
            .transport_hints
            .clone()
    };
    let mut pending = attempts(shared, &hints).into_iter();
    let mut last = format!("{peer} publishes no address this agent can use");
    let mut running: tokio::task::JoinSet<(Attempt, Result<Link, String>)> =
        tokio::task::JoinSet::new();
    let mut next_start = tokio::time::Instant::now();
    let shared_quic = shared.quic.clone();
    loop {
        let more = pending.len() > 0;
        if running.is_empty() && !more {
            return Err(last);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_start), if more => {
                if let Some(a) = pending.next() {
                    let q = shared_quic.clone();
                    let s = LinkCtx { quic: q };
                    running.spawn(async move { (a, s.link(a).await) });
                }
                next_start = tokio::time::Instant::now() + ATTEMPT_DELAY;
            }
            Some(done) = running.join_next() => {
                let Ok((a, r)) = done else { continue };
                let link = match r {
                    Ok(l) => l,
                    Err(e) => {
                        last = e;
                        // A failed attempt starts the next one at once.
                        next_start = tokio::time::Instant::now();
                        continue;
                    }
                };
                match handshake(shared, m, peer, link).await {
                    Ok(ch) => {
                        ch.send(vec![purpose]).await.map_err(|e| e.to_string())?;
                        tracing::debug!(%peer, via = a.via, addr = %a.addr, "channel open");
                        return Ok((ch, a.via));
                    }
                    Err(e) => {
                        last = format!("{} {}: {e}", a.via, a.addr);
                        next_start = tokio::time::Instant::now();
                    }
                }
            }
        }
    }
}

/// What a spawned attempt needs (owned, `'static`).
struct LinkCtx {
    quic: Option<QuicEndpoint>,
}

impl LinkCtx {
    async fn link(&self, a: Attempt) -> Result<Link, String> {
        link_with(self.quic.as_ref(), a).await
    }
}

async fn link_with(quic: Option<&QuicEndpoint>, a: Attempt) -> Result<Link, String> {
    match a.via {
        TCP_DIRECT => match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(a.addr)).await {
            Ok(Ok(s)) => Ok(Link::Tcp(s)),
            Ok(Err(e)) => Err(format!("{} {}: {e}", a.via, a.addr)),
            Err(_) => Err(format!(
                "{} {}: no answer within {DIAL_TIMEOUT:?}",
                a.via, a.addr
            )),
        },
        _ => {
            let q = quic.ok_or("no QUIC endpoint")?;
            let conn = q
                .connect(a.addr, QUIC_DIAL_TIMEOUT)
                .await
                .map_err(|e| format!("{} {}: {e}", a.via, a.addr))?;
            quic::BiStream::open(conn)
                .await
                .map(Link::Quic)
                .map_err(|e| format!("{} {}: {e}", a.via, a.addr))
        }
    }
}

/// The Noise handshake over a transport connection, in three steps so the
/// member's lock is never held while the peer answers.
async fn handshake(
    shared: &Shared,
    m: &Member,
    peer: AuthorityId,
    link: Link,
) -> Result<TcpChannel, String> {
    let cfg = &shared.options.tcp;
    macro_rules! endpoint {
        ($n:expr) => {{
            let snapshot = accept::snapshot($n);
            Endpoint {
                service: &mut $n.service,
                handshaker: &mut $n.handshaker,
                interpreter: &mut $n.books,
                snapshot,
            }
        }};
    }
    match link {
        Link::Tcp(mut stream) => {
            let init = {
                let mut g = m.sync.node().lock().await;
                let n = &mut *g;
                tcp::begin_initiator(&mut endpoint!(n), peer, cfg).map_err(|e| e.to_string())?
            };
            let complete = tcp::exchange(&mut stream, &init, cfg)
                .await
                .map_err(|e| e.to_string())?;
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            tcp::complete_initiator(stream, endpoint!(n), peer, &complete, cfg, tcp::no_rekey())
                .map_err(|e| e.to_string())
        }
        Link::Quic(mut stream) => {
            let init = {
                let mut g = m.sync.node().lock().await;
                let n = &mut *g;
                quic::begin_initiator(&mut endpoint!(n), peer, &stream, cfg)
                    .map_err(|e| e.to_string())?
            };
            let complete = match quic::exchange(&mut stream, &init, cfg).await {
                Ok(c) => c,
                Err(e) => {
                    stream.refuse();
                    return Err(e.to_string());
                }
            };
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            quic::complete_initiator(stream, endpoint!(n), peer, &complete, cfg, tcp::no_rekey())
                .map_err(|e| e.to_string())
        }
    }
}

/// Announces on the points under the blinded namespace and introduces
/// itself to members found there whose descriptor it lacks.
pub(super) async fn discover(shared: Arc<Shared>, m: Arc<Member>) {
    use libp2p::multiaddr::Protocol;
    let addresses: Vec<Multiaddr> = shared
        .addrs
        .iter()
        .map(|a| Multiaddr::from(a.ip()).with(Protocol::Tcp(a.port())))
        .collect();
    let ttl = rdv_wire::Ttl::from_secs(7200);
    let timeout = Duration::from_secs(10);
    let mut presences: Vec<discovery::Presence> = Vec::new();
    let mut round = 0u32;
    loop {
        round += 1;
        let now = now_ms(&shared);
        let (keys, members): (rdv_context::EpochKeys, Vec<AuthorityId>) = {
            let n = m.sync.node().lock().await;
            (
                n.context.keys().clone(),
                n.context.members().map(|(a, _)| *a).collect(),
            )
        };
        let periods = discovery::periods_at(now);
        presences.retain(|p| periods.contains(&p.period()));
        for period in periods {
            if presences.iter().any(|p| p.period() == period) {
                continue;
            }
            match discovery::Presence::announce(
                &keys,
                &shared.me,
                period,
                &shared.options.points,
                &addresses,
                ttl,
                timeout,
            )
            .await
            {
                Ok(p) => presences.push(p),
                Err(e) => {
                    tracing::warn!(context = %m.name, error = %e, "announcing on the points failed")
                }
            }
        }
        let mut candidates: Vec<(Option<AuthorityId>, Vec<Multiaddr>)> = Vec::new();
        for p in &mut presences {
            let period = p.period();
            let mine = discovery::peer_id(&keys, period, &shared.me);
            match p.registrations().await {
                Ok(regs) => {
                    for (peer, addrs) in regs {
                        if peer == mine {
                            continue;
                        }
                        let who = discovery::recognise(&keys, period, members.iter(), &peer);
                        candidates.push((who, addrs));
                    }
                }
                Err(e) => tracing::debug!(context = %m.name, error = %e, "discovery failed"),
            }
        }
        for (who, addrs) in candidates {
            let known = match who {
                Some(a) => {
                    let n = m.sync.node().lock().await;
                    n.service
                        .get_cached_descriptor(m.id, a)
                        .is_some_and(|d| d.is_valid_at(now))
                }
                None => false,
            };
            if !known {
                introduce(&shared, &m, &addrs).await;
            }
        }
        let wait = if round < 15 { 2 } else { 20 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Sends our descriptor to each TCP address until one answers with theirs.
async fn introduce(shared: &Shared, m: &Member, addresses: &[Multiaddr]) {
    let Some(mine) = lock(&m.own).clone() else {
        return;
    };
    for a in addresses {
        let Some(addr) = tcp_socket_addr(a) else {
            continue;
        };
        match intro::introduce(addr, &mine, DIAL_TIMEOUT).await {
            Ok(theirs) => {
                let now = now_ms(shared);
                let r = m.sync.node().lock().await.receive(vec![theirs], now);
                match r {
                    Ok(a) if a.rejected == 0 && a.deferred == 0 => {
                        tracing::info!(context = %m.name, %addr, "introduced");
                        save_roster(shared, m).await;
                        return;
                    }
                    other => tracing::debug!(%addr, ?other, "introduction answer refused"),
                }
            }
            Err(e) => tracing::debug!(%addr, error = %e, "introduction failed"),
        }
    }
}

fn tcp_socket_addr(a: &Multiaddr) -> Option<SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut it = a.iter();
    let ip: std::net::IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}
