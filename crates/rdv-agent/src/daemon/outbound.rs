//! Reaching other members: discovery on points, introductions, and
//! channels raced over the transports their descriptors name.

use super::*;

/// A transport connection made by one attempt, before Noise.
enum Link {
    Quic(quic::BiStream),
    Tcp(TcpStream),
    Relay(tokio::io::DuplexStream),
}

/// One way to reach the peer: a hint of its descriptor.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    via: &'static str,
    addr: SocketAddr,
}

/// `only` value for every transport but the relay (an upgrade attempt).
pub(super) const DIRECT_ONLY: &str = "direct";

/// The delay between two attempts' starts (RFC 8305 §5's "Connection
/// Attempt Delay", 250 ms recommended).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The attempts for `peer`'s descriptor, in the seed's order (§3): QUIC
/// direct, QUIC to the reflexive address, TCP direct, the relay. A
/// transport this agent does not have is skipped, never waited for: the
/// relay only when the peer names the relay this member is connected to.
fn attempts(
    shared: &Shared,
    hints: &[TransportHint],
    relay: Option<&RelayToken>,
    only: Option<&str>,
) -> Vec<Attempt> {
    let mut out = Vec::new();
    for rank in 0..4 {
        for h in hints {
            let (r, via, addr) = match h {
                TransportHint::QuicDirect { .. } => (0, QUIC_DIRECT, h.socket_addr()),
                TransportHint::QuicReflexive { .. } => (1, QUIC_REFLEXIVE, h.socket_addr()),
                TransportHint::TcpDirect { .. } => (2, TCP_DIRECT, h.socket_addr()),
                TransportHint::WebSocketRelay {
                    relay_authority, ..
                } => match relay {
                    Some(t) if t.authority == *relay_authority => (3, RELAY, Some(t.addr)),
                    _ => continue,
                },
            };
            let excluded = match only {
                None => false,
                Some(DIRECT_ONLY) => via == RELAY,
                Some(o) => o != via,
            };
            if r != rank || (r < 2 && shared.quic.is_none()) || excluded {
                continue;
            }
            if let Some(addr) = addr {
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
    only: Option<&str>,
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
    let relay = relayed::link(m);
    let peer_handle = match &relay {
        Some(link) => {
            let n = m.sync.node().lock().await;
            Some(
                n.context
                    .keys()
                    .relay_handle(&link.token().authority, &peer),
            )
        }
        None => None,
    };
    let token = relay.as_ref().map(|l| l.token());
    let mut pending = attempts(shared, &hints, token.as_ref(), only).into_iter();
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
                    let s = LinkCtx {
                        quic: q,
                        relay: relay.clone().zip(peer_handle),
                    };
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
    /// This member's relay link and the peer's handle on it.
    relay: Option<(Arc<RelayLink>, [u8; 32])>,
}

impl LinkCtx {
    async fn link(&self, a: Attempt) -> Result<Link, String> {
        if a.via == RELAY {
            let (link, to) = self.relay.as_ref().ok_or("no relay connection")?;
            return link
                .open(*to, DIAL_TIMEOUT)
                .await
                .map(Link::Relay)
                .map_err(|e| format!("{} {}: {e}", a.via, a.addr));
        }
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
    match link {
        Link::Tcp(mut stream) => {
            let init = {
                let mut g = m.sync.node().lock().await;
                let n = &mut *g;
                tcp::begin_initiator(&mut accept::endpoint(n), peer, cfg)
                    .map_err(|e| e.to_string())?
            };
            let complete = tcp::exchange(&mut stream, &init, cfg)
                .await
                .map_err(|e| e.to_string())?;
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            tcp::complete_initiator(
                stream,
                accept::endpoint(n),
                peer,
                &complete,
                cfg,
                tcp::no_rekey(),
            )
            .map_err(|e| e.to_string())
        }
        Link::Relay(stream) => {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let init = {
                let mut g = m.sync.node().lock().await;
                let n = &mut *g;
                tcp::begin_relayed_initiator(&mut accept::endpoint(n), peer, cfg)
                    .map_err(|e| e.to_string())?
            };
            let complete = tcp::exchange_on(&mut rd, &mut wr, &init, cfg)
                .await
                .map_err(|e| e.to_string())?;
            let mut g = m.sync.node().lock().await;
            let n = &mut *g;
            tcp::complete_initiator_on(
                Box::new(rd),
                Box::new(wr),
                accept::endpoint(n),
                peer,
                &complete,
                cfg,
                tcp::no_rekey(),
            )
            .map_err(|e| e.to_string())
        }
        Link::Quic(mut stream) => {
            let init = {
                let mut g = m.sync.node().lock().await;
                let n = &mut *g;
                quic::begin_initiator(&mut accept::endpoint(n), peer, &stream, cfg)
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
            quic::complete_initiator(
                stream,
                accept::endpoint(n),
                peer,
                &complete,
                cfg,
                tcp::no_rekey(),
            )
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
            let current = match who {
                Some(a) => {
                    let connected = m.sync.is_connected(&a);
                    let n = m.sync.node().lock().await;
                    n.service
                        .get_cached_descriptor(m.id, a)
                        .is_some_and(|d| d.is_valid_at(now) && (connected || names_any(d, &addrs)))
                }
                None => false,
            };
            // No descriptor of it, or one that names none of the addresses
            // it registered while no channel connects us: it moved (an
            // agent restarted on another port holds its new descriptor in
            // its own journal only, and ours dials the old one). An
            // introduction brings the new one.
            if !current {
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
                        if save_roster(shared, m).await {
                            after_epoch_change(shared, m).await;
                        }
                        return;
                    }
                    other => tracing::debug!(%addr, ?other, "introduction answer refused"),
                }
            }
            Err(e) => tracing::debug!(%addr, error = %e, "introduction failed"),
        }
    }
}

/// Whether descriptor `d` names one of the TCP addresses `registered` on a
/// point.
fn names_any(d: &rdv_context::RendezvousDescriptor, registered: &[Multiaddr]) -> bool {
    registered
        .iter()
        .filter_map(tcp_socket_addr)
        .any(|r| d.transport_hints.iter().any(|h| h.socket_addr() == Some(r)))
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
