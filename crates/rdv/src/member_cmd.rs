//! The member commands (issue 12): `rdv id`, `rdv context ...`,
//! `rdv agent [status]`, `rdv pipe listen|connect`. Exit codes as for the
//! public commands: 0 ok, 1 refused, 2 usage, 3 network failure or agent
//! not running.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use rdv_agent::control::{self, Reply, Request};
use rdv_agent::daemon::{Agent, AgentOptions};
use rdv_agent::home::{Home, os_rng};
use rdv_context::{Context, ContextStoreError, Invitation, InvitationError, StaticKeyBinding};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::Failure;
use crate::cli::{
    AgentAction, AgentArgs, ContextAction, ContextArgs, PipeAction, PipeArgs, RelayAction,
};
use crate::files;

fn home() -> Result<Home, Failure> {
    Home::open(&files::data_dir()).map_err(|e| Failure::usage(e.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn store_failure(e: ContextStoreError) -> Failure {
    match e {
        ContextStoreError::NameTaken(name) => Failure::refused(format!(
            "a context named {name:?} exists already: pick another name (`rdv context list` shows them)"
        )),
        ContextStoreError::AlreadyStored(name) => Failure::refused(format!(
            "this member is in that context already, under the name {name:?}"
        )),
        other => Failure::usage(other.to_string()),
    }
}

/// `rdv id`: the member card.
pub fn id() -> Result<(), Failure> {
    let identity = home()?
        .identity()
        .map_err(|e| Failure::usage(e.to_string()))?;
    println!("{}", identity.static_key_binding());
    Ok(())
}

fn load(home: &Home, name: &str) -> Result<(rdv_context::Identity, Context), Failure> {
    let identity = home.identity().map_err(|e| Failure::usage(e.to_string()))?;
    let store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
    let context = store
        .load(name, &identity)
        .map_err(store_failure)?
        .ok_or_else(|| {
            Failure::refused(format!(
                "no context named {name:?}: `rdv context list` shows the names"
            ))
        })?;
    Ok((identity, context))
}

/// `rdv context ...`.
pub async fn context(args: ContextArgs) -> Result<(), Failure> {
    let home = home()?;
    match args.action {
        ContextAction::Remove { name, member } => {
            // Checked here first, so a mistake is told without an agent.
            let (identity, context) = load(&home, &name)?;
            let who: rdv_context::AuthorityId = member.parse().map_err(|_| {
                Failure::usage(format!(
                    "{member:?} is not an authority: give the 64 hex digits `rdv context members {name}` lists"
                ))
            })?;
            if !context.is_admin(&identity.authority()) {
                return Err(Failure::refused(format!(
                    "only an admin of {name:?} may remove members: `rdv context members {name}` shows who is"
                )));
            }
            if who == identity.authority() {
                return Err(Failure::refused(
                    "an admin cannot remove itself: another admin can, or `rdv context leave`",
                ));
            }
            let request = Request::Remove {
                context: name,
                member,
            };
            let (_, reply) = ask(&request).await?;
            println!("{}", reply.epoch.unwrap_or_default());
        }
        ContextAction::Create { name } => {
            let identity = home.identity().map_err(|e| Failure::usage(e.to_string()))?;
            let mut rng = os_rng().map_err(|e| Failure::usage(e.to_string()))?;
            let context = Context::create(&identity, &mut rng);
            let mut store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
            store.insert(&name, &context).map_err(store_failure)?;
            println!("{}", context.id());
        }
        ContextAction::Invite {
            name,
            for_card,
            expires,
        } => {
            let (identity, mut context) = load(&home, &name)?;
            let expires_at = now_ms().saturating_add(expires.saturating_mul(1000));
            let invitation = match for_card {
                None => context.invite(&identity, expires_at),
                Some(card) => {
                    let card: StaticKeyBinding = card.parse().map_err(|e| {
                        Failure::usage(format!(
                            "--for: {e} (give the line `rdv id` printed on the invitee's machine)"
                        ))
                    })?;
                    if !card.verify() {
                        return Err(Failure::refused(
                            "--for: the member card's signature does not verify: it was altered; ask for it again",
                        ));
                    }
                    let mut rng = os_rng().map_err(|e| Failure::usage(e.to_string()))?;
                    let inv = context
                        .invite_sealed(&identity, &card, expires_at, &mut rng)
                        .map_err(|e| Failure::refused(e.to_string()))?;
                    let mut store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
                    store.save(&context).map_err(store_failure)?;
                    inv
                }
            };
            println!("{invitation}");
        }
        ContextAction::Join { invite, name } => {
            let invitation: Invitation = invite.parse().map_err(|e: InvitationError| {
                Failure::usage(format!("the invitation does not read: {e}"))
            })?;
            let identity = home.identity().map_err(|e| Failure::usage(e.to_string()))?;
            let context = invitation
                .accept(&identity, now_ms())
                .map_err(|e| match e {
                    InvitationError::Text(_) => Failure::usage(e.to_string()),
                    _ => Failure::refused(e.to_string()),
                })?;
            let mut store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
            store.insert(&name, &context).map_err(store_failure)?;
            println!("{}", context.id());
        }
        ContextAction::Relay {
            action: RelayAction::Add { name, relay },
        } => {
            let token: rdv_relay::RelayToken = relay
                .parse()
                .map_err(|e: rdv_relay::token::TokenError| Failure::usage(e.to_string()))?;
            let (_, context) = load(&home, &name)?;
            home.set_relay(&context.id(), &token)
                .map_err(|e| Failure::usage(e.to_string()))?;
            println!("{token}");
        }
        ContextAction::Leave { name } => {
            if std::os::unix::net::UnixStream::connect(home.socket_path()).is_ok() {
                return Err(Failure::refused(format!(
                    "an agent runs for {}: stop it first (SIGINT or SIGTERM), then leave",
                    home.dir().display()
                )));
            }
            let (_, context) = load(&home, &name)?;
            let id = context.id();
            let mut store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
            store.remove(&name).map_err(store_failure)?;
            home.forget(&id)
                .map_err(|e| Failure::usage(e.to_string()))?;
            println!("{id}");
        }
        ContextAction::List { json } => {
            let store = home.contexts().map_err(|e| Failure::usage(e.to_string()))?;
            let list = store.list().map_err(store_failure)?;
            for (name, id) in list {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"name": name, "id": id.to_string()})
                    );
                } else {
                    println!("{name}\t{id}");
                }
            }
        }
        ContextAction::Members { name, json } => {
            let (identity, context) = load(&home, &name)?;
            let me = identity.authority();
            for (a, _) in context.members() {
                let admin = context.is_admin(a);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"authority": a.to_string(), "admin": admin, "me": *a == me})
                    );
                } else {
                    let mut tags = Vec::new();
                    if *a == me {
                        tags.push("me");
                    }
                    if admin {
                        tags.push("admin");
                    }
                    println!("{a}\t{}", tags.join(","));
                }
            }
        }
    }
    Ok(())
}

/// `rdv agent` (runs until SIGINT/SIGTERM) and `rdv agent status`.
pub async fn agent(args: AgentArgs) -> Result<(), Failure> {
    if let Some(AgentAction::Status { json }) = args.action {
        return status(json).await;
    }
    let home = home()?;
    let options = AgentOptions {
        listen: args.listen,
        points: args.points,
        stun: args.stun,
        ..AgentOptions::default()
    };
    let agent = Agent::start(home, options).await.map_err(|e| match e {
        rdv_agent::daemon::DaemonError::Io { .. } => Failure::network(e.to_string()),
        _ => Failure::usage(e.to_string()),
    })?;
    println!("ready {}", agent.authority());
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::usage(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    agent.stop();
    Ok(())
}

/// Connects to the agent of the data directory and sends `request`.
async fn ask(request: &Request) -> Result<(BufReader<UnixStream>, Reply), Failure> {
    let dir = files::data_dir();
    let path = dir.join("agent.sock");
    let stream = UnixStream::connect(&path).await.map_err(|_| {
        Failure::network(format!(
            "no agent runs for {}: start it with `rdv agent --data {}`",
            dir.display(),
            dir.display()
        ))
    })?;
    let mut stream = BufReader::new(stream);
    control::write_line(&mut stream, request)
        .await
        .map_err(|e| Failure::network(format!("agent: {e}")))?;
    let reply: Reply = control::read_line(&mut stream)
        .await
        .map_err(|e| Failure::network(format!("agent: {e}")))?;
    if !reply.ok {
        return Err(Failure {
            code: reply.code.clamp(1, 3),
            message: reply.error,
        });
    }
    Ok((stream, reply))
}

async fn status(json: bool) -> Result<(), Failure> {
    let (_, reply) = ask(&Request::Status).await?;
    let status = reply.status.unwrap_or_default();
    if json {
        println!("{status}");
        return Ok(());
    }
    println!("authority {}", reply.authority);
    if let Some(addrs) = status["addresses"].as_array() {
        for a in addrs {
            println!("listening {}", a.as_str().unwrap_or_default());
        }
    }
    for c in status["contexts"].as_array().into_iter().flatten() {
        println!(
            "context {} {} epoch {}",
            c["name"].as_str().unwrap_or_default(),
            c["id"].as_str().unwrap_or_default(),
            c["epoch"]
        );
        for m in c["members"].as_array().into_iter().flatten() {
            let who = m["authority"].as_str().unwrap_or_default();
            if m["me"].as_bool() == Some(true) {
                println!("  {who}  (this member)");
                continue;
            }
            let descriptor = if m["descriptor_current"].as_bool() == Some(true) {
                "descriptor current"
            } else if m["descriptor_valid_until_ms"].is_null() {
                "no descriptor"
            } else {
                "descriptor expired"
            };
            let channel = m["transport"]
                .as_str()
                .map_or_else(|| "no channel".to_owned(), |t| format!("channel {t}"));
            println!("  {who}  {descriptor}, {channel}");
        }
    }
    Ok(())
}

/// `rdv pipe listen|connect`.
pub async fn pipe(args: PipeArgs) -> Result<(), Failure> {
    match args.action {
        PipeAction::Listen { context } => {
            let request = Request::PipeListen {
                context: context.clone(),
            };
            let (mut stream, reply) = ask(&request).await?;
            eprintln!("listening in context {context} as {}", reply.authority);
            let mut out = tokio::io::stdout();
            loop {
                let frame = match control::read_frame(&mut stream).await {
                    Ok(f) => f,
                    Err(control::ControlError::Closed) => {
                        return Err(Failure::network(
                            "the pipe broke before the sender's end (it or its agent went away)",
                        ));
                    }
                    Err(e) => return Err(Failure::network(format!("agent: {e}"))),
                };
                if frame.is_empty() {
                    break;
                }
                out.write_all(&frame)
                    .await
                    .map_err(|e| Failure::network(format!("writing stdout: {e}")))?;
            }
            out.flush()
                .await
                .map_err(|e| Failure::network(format!("writing stdout: {e}")))?;
            let mut inner = stream.into_inner();
            inner
                .write_all(&[control::ACK])
                .await
                .map_err(|e| Failure::network(format!("agent: {e}")))?;
            let _ = inner.flush().await;
            // Wait for the agent to pass the acknowledgement on.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                inner.read_to_end(&mut rest),
            )
            .await;
            Ok(())
        }
        PipeAction::Connect { context, peer, via } => {
            const TRANSPORTS: [&str; 4] = ["quic-direct", "quic-reflexive", "tcp-direct", "relay"];
            if let Some(v) = &via
                && !TRANSPORTS.contains(&v.as_str())
            {
                return Err(Failure::usage(format!(
                    "--via {v:?} is not a transport: use one of {}",
                    TRANSPORTS.join(", ")
                )));
            }
            let request = Request::PipeConnect {
                context,
                peer: peer.clone(),
                via,
            };
            let (mut stream, reply) = ask(&request).await?;
            eprintln!("connected to {} via {}", peer.trim(), reply.via);
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; control::MAX_FRAME];
            loop {
                let n = input
                    .read(&mut buf)
                    .await
                    .map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
                control::write_frame(stream.get_mut(), &buf[..n])
                    .await
                    .map_err(|e| Failure::network(format!("agent: {e}")))?;
                if n == 0 {
                    break;
                }
            }
            stream
                .get_mut()
                .flush()
                .await
                .map_err(|e| Failure::network(format!("agent: {e}")))?;
            let mut ack = [0u8; 1];
            match stream.read_exact(&mut ack).await {
                Ok(_) if ack[0] == control::ACK => Ok(()),
                _ => Err(Failure::network(
                    "the listener did not acknowledge the bytes (it, its agent or the channel went away)",
                )),
            }
        }
    }
}
