//! STUN on the member's UDP socket (issue 10, item 2): the reflexive
//! address QUIC's own packets get from the NAT, re-queried every minute
//! (which also keeps the mapping), published as a `QuicReflexive` hint.
//! The maintenance loop republishes (and revokes the old descriptor) when
//! the address changes; until a server answers, the agent publishes
//! without the hint, so `ready` never waits for STUN.

use std::time::Instant;

use rdv_stun::{ClientConfig, Event, StunClient};

use super::*;

pub(super) async fn run(shared: Arc<Shared>, mut side: quic::StunSide) {
    if shared.options.stun.is_empty() {
        // Nobody asked: drain what strangers send (bounded queue anyway).
        while side.incoming.recv().await.is_some() {}
        return;
    }
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        tracing::warn!("no random bytes for STUN transaction ids: STUN disabled");
        return;
    }
    let config = ClientConfig {
        servers: shared.options.stun.clone(),
        // A NAT lab or a lossy path should not wait 31.5 s for the 7th
        // try: cap the retransmission interval (RFC 8489 §6.2.1 allows it).
        max_rto: Duration::from_secs(4),
        ..ClientConfig::default()
    };
    let mut client = StunClient::new(config, seed, Instant::now());
    loop {
        let now = Instant::now();
        while let Some(t) = client.poll_transmit(now) {
            if let Err(e) = side.send(t.destination, t.contents()) {
                tracing::debug!(error = %e, to = %t.destination, "stun: send failed");
            }
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Reflexive { addr, server } => {
                    let old = lock(&shared.reflexive).replace((addr, server));
                    if old.map(|(a, _)| a) != Some(addr) {
                        tracing::info!(%addr, %server, "reflexive address");
                    }
                }
                Event::Changed { old, new } => {
                    tracing::info!(%old, %new, "reflexive address changed");
                }
                Event::Failed { server } => {
                    tracing::debug!(%server, "stun: no answer");
                }
            }
        }
        let wake = client
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => client.handle_timeout(Instant::now()),
            got = side.incoming.recv() => match got {
                Some((from, bytes)) => client.handle_input(Instant::now(), from, &bytes),
                None => return,
            },
        }
    }
}
