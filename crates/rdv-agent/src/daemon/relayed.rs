//! The relay path (issue 11): which relay a context uses, the connection
//! to it, and the channels that arrive through it.
//!
//! A context's relay is *designated* by any member (`rdv context relay
//! add`, a file in the data directory). The designation travels in the
//! relay hint of that member's descriptor: a member whose context has no
//! relay adopts the one it finds in another member's current descriptor
//! and keeps it (so it survives the designator going away). While
//! connected, the member publishes the relay hint, so others can reach it
//! through the relay; when the connection drops the hint goes (the next
//! republish), and the maintenance tick reconnects.

use super::inbound::dispatch;
use super::*;
use crate::relay::Incoming;
use rdv_context::Epoch;
use rdv_relay::GrantKey;
use zeroize::Zeroizing;

/// A failed connection is retried after this.
const RETRY: Duration = Duration::from_secs(5);

/// The member's relay, per context.
#[derive(Default)]
pub(super) struct RelayState {
    token: Option<RelayToken>,
    link: Option<Arc<RelayLink>>,
    connecting: bool,
    retry_at: Option<tokio::time::Instant>,
    /// The epoch whose grant the link proved, and that grant's seed (to
    /// retire it once the context moves on).
    epoch: Option<(Epoch, Zeroizing<[u8; 32]>)>,
    /// An earlier epoch's grant not yet retired on the relay (kept until a
    /// connection under the new grant has sent the RETIRE).
    retire: Option<Zeroizing<[u8; 32]>>,
}

/// The live relay connection of `m`'s context, if any.
pub(super) fn link(m: &Member) -> Option<Arc<RelayLink>> {
    lock(&m.relay)
        .link
        .as_ref()
        .filter(|l| !l.is_closed())
        .cloned()
}

/// The relay as `agent status` shows it: the token and whether the agent
/// is connected to it (`null` when none is designated).
pub(super) fn status(m: &Member) -> serde_json::Value {
    let st = lock(&m.relay);
    match &st.token {
        None => serde_json::Value::Null,
        Some(t) => serde_json::json!({
            "relay": t.to_string(),
            "connected": st.link.as_ref().is_some_and(|l| !l.is_closed()),
        }),
    }
}

/// The relay designated for `m`'s context: the stored one, else one a
/// member's current descriptor names (adopted and stored).
async fn designated(shared: &Shared, m: &Member) -> Option<RelayToken> {
    if let Some(t) = shared.home.relay(&m.id) {
        return Some(t);
    }
    let now = now_ms(shared);
    let found = {
        let n = m.sync.node().lock().await;
        n.service
            .cached_descriptors(m.id)
            .filter(|d| d.is_valid_at(now) && d.authority_id != shared.me)
            .flat_map(|d| d.transport_hints.iter().map(move |h| (d.authority_id, h)))
            .find_map(|(who, h)| match h {
                TransportHint::WebSocketRelay {
                    relay_authority,
                    addr,
                } => addr.parse().ok().map(|addr| {
                    (
                        who,
                        RelayToken {
                            authority: *relay_authority,
                            addr,
                        },
                    )
                }),
                _ => None,
            })
    };
    let (who, token) = found?;
    match shared.home.set_relay(&m.id, &token) {
        Ok(()) => {
            tracing::info!(context = %m.name, relay = %token, designated_by = %who, "relay adopted")
        }
        Err(e) => tracing::warn!(context = %m.name, error = %e, "cannot store the adopted relay"),
    }
    Some(token)
}

/// Keeps `m`'s context connected to its designated relay: connects when
/// there is none or it dropped or the designation or the epoch changed
/// (retiring the old epoch's grant on the relay once the new one is
/// proven). Never waits for the network: the connection is made by a
/// task of its own.
pub(super) async fn ensure(shared: &Arc<Shared>, m: &Arc<Member>) {
    let Some(token) = designated(shared, m).await else {
        return;
    };
    let (keys_epoch, grant_seed, handle) = {
        let n = m.sync.node().lock().await;
        let keys = n.context.keys();
        (
            keys.epoch(),
            keys.relay_grant_seed(&token.authority),
            keys.relay_handle(&token.authority, &shared.me),
        )
    };
    let old_grant = {
        let mut st = lock(&m.relay);
        let live = st.link.as_ref().is_some_and(|l| !l.is_closed());
        let same_epoch = st.epoch.as_ref().is_some_and(|(e, _)| *e == keys_epoch);
        if st.token == Some(token) && ((live && same_epoch) || st.connecting) {
            return;
        }
        let now = tokio::time::Instant::now();
        if st.token == Some(token) && st.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if st.token != Some(token) {
            // Another relay: the old one's grant is not ours to retire.
            st.retire = None;
        }
        st.token = Some(token);
        st.connecting = true;
        st.link = None;
        if let Some((_, seed)) = st.epoch.take().filter(|(e, _)| *e != keys_epoch) {
            st.retire = Some(seed);
        }
        st.retire.clone()
    };
    let (shared, m) = (shared.clone(), m.clone());
    tokio::spawn(async move {
        let grant = GrantKey::from_seed(&grant_seed);
        let r = RelayLink::connect(token, &grant, handle, DIAL_TIMEOUT).await;
        let mut st = lock(&m.relay);
        st.connecting = false;
        match r {
            Ok(_) if st.token != Some(token) => {
                // The designation changed while this connected: drop it;
                // the next tick connects to the new one.
            }
            Ok((link, incoming)) => {
                tracing::info!(context = %m.name, relay = %token, "connected to the relay");
                let link = Arc::new(link);
                if let Some(seed) = old_grant {
                    st.retire = None;
                    let (l, m2) = (link.clone(), m.clone());
                    tokio::spawn(async move {
                        if l.retire(&GrantKey::from_seed(&seed)).await.is_err() {
                            // Not sent: keep it for the next connection.
                            lock(&m2.relay).retire = Some(seed);
                        }
                    });
                }
                st.link = Some(link);
                st.epoch = Some((keys_epoch, grant_seed));
                st.retry_at = None;
                drop(st);
                tokio::spawn(accept_relayed(shared, m, incoming));
            }
            Err(e) => {
                tracing::warn!(context = %m.name, relay = %token, error = %e, "relay connection failed");
                st.retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    });
}

/// Answers the channels other members open through the relay: message 1
/// (no lock while it comes), the mac1 pre-check, the handshake for
/// `Route::Relay` under the member's lock, then the purpose byte.
async fn accept_relayed(
    shared: Arc<Shared>,
    m: Arc<Member>,
    mut incoming: mpsc::Receiver<Incoming>,
) {
    let gate = HalfOpen::new(shared.options.accept);
    while let Some(circuit) = incoming.recv().await {
        // The relay hides openers' addresses; their handles stand in for
        // them in the per-source bound (a handle as an IPv6 address), so
        // one member's half-open circuits cannot use up everyone's slots.
        let mut h = [0u8; 16];
        h.copy_from_slice(&circuit.from[..16]);
        let source = std::net::IpAddr::V6(std::net::Ipv6Addr::from(h));
        let Ok(slot) = gate.enter(source, false) else {
            shared
                .stats
                .refused_per_ip
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let (shared, m) = (shared.clone(), m.clone());
        tokio::spawn(async move {
            let r = serve_relayed(&shared, &m, circuit.stream, source, slot).await;
            if let Err(e) = r {
                tracing::debug!(context = %m.name, error = %e, "relayed channel refused");
            }
        });
    }
}

async fn serve_relayed(
    shared: &Arc<Shared>,
    m: &Arc<Member>,
    stream: tokio::io::DuplexStream,
    source: std::net::IpAddr,
    slot: accept::Slot,
) -> Result<(), String> {
    let cfg = &shared.options.tcp;
    let (mut rd, wr) = tokio::io::split(stream);
    let init = tcp::read_init(&mut rd, cfg)
        .await
        .map_err(|e| e.to_string())?;
    if init.context_id != m.id || !init.mac1_matches(&shared.mac1_key) {
        shared
            .stats
            .refused_mac1
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err("unknown context or mac1".into());
    }
    // The opener's handle stands in for its address here too.
    shared
        .throttle
        .admit(source, &shared.stats)
        .map_err(|t| format!("message 1 over the cryptography rate ({t:?})"))?;
    let ch = {
        let mut g = m.sync.node().lock().await;
        let ep = accept::endpoint(&mut g);
        tcp::accept_init_on(
            Box::new(rd),
            Box::new(wr),
            init,
            ep,
            cfg,
            tcp::no_rekey(),
            rdv_context::Route::Relay,
        )
        .await
        .map_err(|e| e.to_string())?
    };
    drop(slot);
    // Not proven: a relayed opener's "address" is the handle the relay
    // names, not one the network vouched for.
    dispatch(m.clone(), ch, RELAY, None).await
}
