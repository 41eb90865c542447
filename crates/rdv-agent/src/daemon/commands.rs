//! The control socket: status and pipes for the commands.

use super::*;

pub(super) async fn serve_control(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = control_session(&shared, stream).await {
                tracing::debug!(error = %e, "control session ended");
            }
        });
    }
}

async fn control_session(
    shared: &Arc<Shared>,
    stream: UnixStream,
) -> Result<(), control::ControlError> {
    let mut stream = BufReader::new(stream);
    let request: Request = match control::read_line(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::fail(2, format!("bad request: {e}"));
            return control::write_line(&mut stream, &reply).await;
        }
    };
    match request {
        Request::Status => {
            let mut reply = Reply {
                ok: true,
                authority: shared.me.to_string(),
                ..Reply::default()
            };
            reply.status = Some(status(shared).await);
            control::write_line(&mut stream, &reply).await
        }
        Request::PipeListen { context } => pipe_listen(shared, stream, &context).await,
        Request::PipeConnect { context, peer, via } => {
            pipe_connect(shared, stream, &context, &peer, via.as_deref()).await
        }
        Request::Remove { context, member } => {
            let reply = remove(shared, &context, &member).await;
            control::write_line(&mut stream, &reply).await
        }
    }
}

/// `rdv context remove`: advances the epoch without `member` and records
/// the rekey in the journal, pushed at once to the connected members (the
/// others get it by reconciliation when they next connect); then saves
/// the context, closes the removed member's sync channel and republishes
/// this member's descriptor under the new epoch.
async fn remove(shared: &Arc<Shared>, context: &str, member: &str) -> Reply {
    let Some(m) = member_named(shared, context) else {
        return unknown_context(context);
    };
    let Ok(member) = member.parse::<AuthorityId>() else {
        return Reply::fail(
            2,
            format!(
                "{member:?} is not an authority: give the 64 hex digits `rdv context members {context}` lists"
            ),
        );
    };
    let mut rng = match os_rng() {
        Ok(r) => r,
        Err(e) => return Reply::fail(1, e.to_string()),
    };
    let (before, prepared) = {
        let mut n = m.sync.node().lock().await;
        let before = n.context.to_bytes();
        (before, n.remove_member(&member, &mut rng))
    };
    let (rekey, outcome) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let hint = match e {
                crate::sync::RemoveError::NotAMember(_) => {
                    format!("; `rdv context members {context}` lists the members")
                }
                _ => String::new(),
            };
            return Reply::fail(1, format!("cannot remove {member}: {e}{hint}"));
        }
    };
    // The context has advanced: record the rekey (pushed to every
    // connected member), then follow with keys, budgets and handshakes.
    if let Err(e) = m.sync.run_outcome(&outcome).await {
        // Not recorded, so nobody would follow: back to where it was.
        let mut n = m.sync.node().lock().await;
        if let Ok(old) = rdv_context::Context::restore(&shared.identity, &before) {
            n.context = old;
        }
        return Reply::fail(
            1,
            format!("cannot remove {member}: recording the advance failed: {e}"),
        );
    }
    m.sync.node().lock().await.entered_epoch();
    save_roster(shared, &m).await;
    after_epoch_change(shared, &m).await;
    tracing::info!(context = %m.name, %member, epoch = rekey.to_epoch, "member removed");
    Reply {
        ok: true,
        authority: shared.me.to_string(),
        epoch: Some(rekey.to_epoch),
        ..Reply::default()
    }
}

fn unknown_context(name: &str) -> Reply {
    Reply::fail(
        1,
        format!(
            "no context named {name:?} in this agent: `rdv context list` shows the names; a context created or joined just now is picked up within 5 s"
        ),
    )
}

async fn pipe_listen(
    shared: &Shared,
    mut stream: BufReader<UnixStream>,
    context: &str,
) -> Result<(), control::ControlError> {
    let Some(m) = member_named(shared, context) else {
        return control::write_line(&mut stream, &unknown_context(context)).await;
    };
    let (tx, mut rx) = mpsc::channel(1);
    let taken = {
        let mut slot = lock(&m.pipe);
        let taken = slot.as_ref().is_some_and(|s| !s.is_closed());
        if !taken {
            *slot = Some(tx);
        }
        taken
    };
    if taken {
        let reply = Reply::fail(
            1,
            format!("another `rdv pipe listen` already waits in context {context:?}"),
        );
        return control::write_line(&mut stream, &reply).await;
    }
    let reply = Reply {
        ok: true,
        authority: shared.me.to_string(),
        ..Reply::default()
    };
    control::write_line(&mut stream, &reply).await?;
    // Wait for a member, or for the listener to leave.
    let mut probe = [0u8; 1];
    let mut ch = tokio::select! {
        ch = rx.recv() => match ch {
            Some(ch) => ch,
            None => return Ok(()),
        },
        _ = stream.read(&mut probe) => {
            lock(&m.pipe).take();
            return Ok(());
        }
    };
    let mut out = stream.into_inner();
    loop {
        let msg = match ch.recv().await {
            Ok(msg) => msg,
            Err(e) => {
                // Closed without an end: the listener sees the socket
                // close without its end frame and says the pipe broke.
                tracing::debug!(error = %e, "pipe broke");
                return Ok(());
            }
        };
        match msg.split_first() {
            Some((&PIPE_DATA, bytes)) => {
                for chunk in bytes.chunks(control::MAX_FRAME) {
                    control::write_frame(&mut out, chunk).await?;
                }
            }
            Some((&PIPE_END, _)) => {
                control::write_frame(&mut out, &[]).await?;
                out.flush().await?;
                let mut ack = [0u8; 1];
                out.read_exact(&mut ack).await?;
                if ack[0] == control::ACK {
                    let _ = ch.send(vec![PIPE_ACK]).await;
                }
                // Give the ack a moment to leave before the close.
                let _ = tokio::time::timeout(Duration::from_secs(5), ch.recv()).await;
                let _ = ch.close().await;
                return Ok(());
            }
            _ => {
                let _ = ch.close().await;
                return Ok(());
            }
        }
    }
}

async fn pipe_connect(
    shared: &Shared,
    mut stream: BufReader<UnixStream>,
    context: &str,
    peer: &str,
    via: Option<&str>,
) -> Result<(), control::ControlError> {
    let Some(m) = member_named(shared, context) else {
        return control::write_line(&mut stream, &unknown_context(context)).await;
    };
    let Ok(peer) = peer.parse::<AuthorityId>() else {
        let reply = Reply::fail(
            2,
            format!(
                "{peer:?} is not an authority: give the 64 hex digits the peer's agent printed after `ready`"
            ),
        );
        return control::write_line(&mut stream, &reply).await;
    };
    if peer == shared.me {
        let reply = Reply::fail(
            2,
            "that is this member itself: give another member's authority",
        );
        return control::write_line(&mut stream, &reply).await;
    }
    // The descriptor may still be on its way (sync, introduction); less
    // patience for an authority the roster does not know.
    let started = tokio::time::Instant::now();
    loop {
        let now = now_ms(shared);
        let (known, member) = {
            let n = m.sync.node().lock().await;
            (
                n.service
                    .get_cached_descriptor(m.id, peer)
                    .is_some_and(|d| d.is_valid_at(now)),
                n.context.is_member(&peer),
            )
        };
        if known {
            break;
        }
        let patience = if member { PEER_WAIT } else { STRANGER_WAIT };
        if started.elapsed() >= patience {
            let reply = if member {
                Reply::fail(
                    3,
                    format!(
                        "{peer} is a member of {context:?} but no current descriptor of it reached this agent within {patience:?}: is its agent running, and can the two agents reach each other or a common --point?"
                    ),
                )
            } else {
                Reply::fail(
                    1,
                    format!(
                        "{peer} is not a known member of {context:?}: check the authority (its agent prints it after `ready`), or wait until its agent has published"
                    ),
                )
            };
            return control::write_line(&mut stream, &reply).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut opening = std::time::Instant::now();
    let (mut ch, via) = match open_channel(shared, &m, peer, PURPOSE_PIPE, via).await {
        Ok(c) => c,
        Err(first) => {
            // Two reasons a second try can succeed, both brought by the
            // agent's own loops: behind NATs on both sides a channel needs
            // a punch, which the maintenance loop runs in rounds both
            // members keep (it brings a sync channel); and a peer that
            // restarted on another address is still known here by its old
            // descriptor until discovery's introduction brings the new one.
            // Wait (bounded) for a sync channel or a new descriptor, then
            // go again.
            let deadline = tokio::time::Instant::now() + PUNCH_WAIT;
            let seen = descriptor_nonce(&m, peer).await;
            let mut moved = false;
            let mut connected = m.sync.is_connected(&peer);
            while !connected && !moved && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                connected = m.sync.is_connected(&peer);
                moved = descriptor_nonce(&m, peer).await != seen;
            }
            let again = if connected || moved {
                opening = std::time::Instant::now();
                open_channel(shared, &m, peer, PURPOSE_PIPE, via).await
            } else {
                Err(first)
            };
            match again {
                Ok(c) => c,
                Err(e) => {
                    let reply = Reply::fail(
                        3,
                        format!(
                            "no channel to {peer} (waited up to {PUNCH_WAIT:?} for a sync channel or a newer descriptor of it): {e}"
                        ),
                    );
                    return control::write_line(&mut stream, &reply).await;
                }
            }
        }
    };
    let open_us = u64::try_from(opening.elapsed().as_micros()).unwrap_or(u64::MAX);
    let reply = Reply {
        ok: true,
        authority: shared.me.to_string(),
        via: via.to_owned(),
        open_us: Some(open_us),
        ..Reply::default()
    };
    control::write_line(&mut stream, &reply).await?;
    loop {
        let frame = control::read_frame(&mut stream).await?;
        if frame.is_empty() {
            break;
        }
        let mut msg = Vec::with_capacity(frame.len() + 1);
        msg.push(PIPE_DATA);
        msg.extend_from_slice(&frame);
        if let Err(e) = ch.send(msg).await {
            tracing::debug!(error = %e, "pipe channel failed");
            return Ok(());
        }
    }
    if ch.send(vec![PIPE_END]).await.is_err() {
        return Ok(());
    }
    let acked = matches!(
        tokio::time::timeout(ACK_WAIT, ch.recv()).await,
        Ok(Ok(m)) if m.as_slice() == [PIPE_ACK]
    );
    if acked {
        let mut out = stream.into_inner();
        out.write_all(&[control::ACK]).await?;
        out.flush().await?;
    }
    let _ = ch.close().await;
    Ok(())
}

/// The status document: contexts, members, descriptors, channels.
async fn status(shared: &Shared) -> serde_json::Value {
    let now = now_ms(shared);
    let members: Vec<Arc<Member>> = lock(&shared.members).values().cloned().collect();
    let mut contexts = Vec::new();
    for m in members {
        let n = m.sync.node().lock().await;
        let mut list = Vec::new();
        for (a, _) in n.context.members() {
            let d = n.service.get_cached_descriptor(m.id, *a);
            let hints: Vec<String> = d
                .map(|d| {
                    d.transport_hints
                        .iter()
                        .filter_map(|h| h.socket_addr().map(|s| s.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            list.push(serde_json::json!({
                "authority": a.to_string(),
                "me": *a == shared.me,
                "descriptor_valid_until_ms": d.map(|d| d.valid_until),
                "descriptor_current": d.is_some_and(|d| d.is_valid_at(now)),
                "addresses": hints,
                "reachable_by_relay": d.is_some_and(|d| d.transport_hints.iter().any(|h| !h.is_direct())),
                "connected": m.sync.is_connected(a),
                "transport": lock(&m.via).get(a).copied().filter(|_| m.sync.is_connected(a)),
            }));
        }
        contexts.push(serde_json::json!({
            "name": m.name,
            "id": m.id.to_string(),
            "epoch": n.context.epoch(),
            "relay": super::relayed::status(&m),
            "members": list,
        }));
    }
    serde_json::json!({
        "authority": shared.me.to_string(),
        "addresses": shared.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "points": shared.options.points.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "contexts": contexts,
    })
}

/// The nonce of `peer`'s cached descriptor: it changes when a new one
/// arrives.
async fn descriptor_nonce(m: &Member, peer: AuthorityId) -> Option<[u8; 32]> {
    let n = m.sync.node().lock().await;
    n.service.get_cached_descriptor(m.id, peer).map(|d| d.nonce)
}
