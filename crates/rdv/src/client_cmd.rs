//! `rdv register`, `rdv unregister`, `rdv discover`.

use std::time::Duration;

use bytes::Bytes;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rdv_client::{CachedRegistration, Event};
use rdv_net::client::{self, Client, ClientConfig};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_wire::{Namespace, RecordFormat, Timestamp, Ttl, sign_record};

use crate::cli::{DiscoverArgs, RecordFormatArg, RegisterArgs, UnregisterArgs};
use crate::{Failure, files};

/// Splits `/ip4/.../tcp/N/p2p/<id>` into the peer id and the full address.
fn point_of(addr: &Multiaddr) -> Result<PeerId, Failure> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(Failure::usage(format!(
            "--point {addr} does not end in /p2p/<peer id>; give the full address `rdv point` printed (\"listening on ...\")"
        ))),
    }
}

fn namespace(s: &str) -> Result<Namespace, Failure> {
    Namespace::new(s).map_err(|e| Failure::usage(format!("--namespace {s:?}: {e}")))
}

/// Starts a node and connects to the point.
async fn connect(
    key: Keypair,
    point: &Multiaddr,
    listen: Vec<Multiaddr>,
) -> Result<(Node, tokio::sync::mpsc::Receiver<NodeEvent>, PeerId), Failure> {
    let point_id = point_of(point)?;
    if point_id == key.public().to_peer_id() {
        return Err(Failure::usage(format!(
            "the point {point_id} has this command's own identity; give the command another --identity"
        )));
    }
    let (node, events) = Node::start(
        key,
        NodeConfig {
            listen,
            ..NodeConfig::default()
        },
    )
    .map_err(|e| Failure::network(e.to_string()))?;
    node.add_address(point_id, point.clone()).await;
    tokio::time::timeout(Duration::from_secs(10), node.dial(point.clone()))
        .await
        .map_err(|_| {
            Failure::network(format!(
                "no connection to {point} within 10 s; is `rdv point` running there and reachable?"
            ))
        })?
        .map_err(|e| {
            Failure::network(format!(
                "cannot reach the point at {point}: {e}; is `rdv point` running there?"
            ))
        })?;
    Ok((node, events, point_id))
}

fn records_for(
    key: &Keypair,
    addresses: &[Multiaddr],
    format: RecordFormatArg,
) -> Result<Vec<Bytes>, Failure> {
    let seq = Timestamp::now().as_millis() / 1000;
    let formats: &[RecordFormat] = match format {
        RecordFormatArg::Standard => &[RecordFormat::Standard],
        RecordFormatArg::Legacy => &[RecordFormat::Legacy],
        RecordFormatArg::PeerInfo => &[RecordFormat::PeerInfo],
        RecordFormatArg::Auto => &RecordFormat::ALL,
    };
    formats
        .iter()
        .map(|f| {
            sign_record(key, addresses, seq, *f)
                .map(Bytes::from)
                .map_err(|e| Failure::usage(format!("cannot sign a peer record: {e}")))
        })
        .collect()
}

fn refused_or_network(status: Option<rdv_wire::ResponseStatus>, text: &str, what: &str) -> Failure {
    match status {
        Some(status @ rdv_wire::ResponseStatus::NotAuthorized) if what == "registration" => {
            Failure::refused(format!(
                "the point refused the {what}: {} ({text}); a point of go-libp2p-rendezvous's original schema (py-libp2p) answers this to a signed record: try --record-format peer-info or auto",
                status.name()
            ))
        }
        Some(status) if text.is_empty() => {
            Failure::refused(format!("the point refused the {what}: {}", status.name()))
        }
        Some(status) => Failure::refused(format!(
            "the point refused the {what}: {} ({text})",
            status.name()
        )),
        None if text.contains("without answering") && what == "registration" => {
            Failure::network(format!(
                "{what} failed: {text}; a rust-libp2p point does this with a record format it cannot read: try --record-format legacy or auto"
            ))
        }
        None => Failure::network(format!(
            "{what} failed: {text}; check that the point is up and reachable"
        )),
    }
}

/// `rdv register`.
pub async fn register(args: RegisterArgs) -> Result<(), Failure> {
    let ns = namespace(&args.namespace)?;
    if args.address.is_empty() && !args.keep {
        // clap enforces this too; kept for callers that build the arguments.
        return Err(Failure::usage(
            "--address is required without --keep: this command exits once registered, and its own addresses close with it",
        ));
    }
    let key = files::load_or_create_identity(
        &args.identity.unwrap_or_else(files::default_client_identity),
    )?;
    let listen = if args.address.is_empty() {
        vec![
            "/ip4/0.0.0.0/tcp/0"
                .parse()
                .map_err(|_| Failure::usage("bad listen address"))?,
        ]
    } else {
        Vec::new()
    };
    let (node, mut node_events, point) = connect(key.clone(), &args.point, listen).await?;
    let addresses = if args.address.is_empty() {
        // Our listen addresses, as the swarm reported them.
        let mut found = Vec::new();
        let settle = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                e = node_events.recv() => match e {
                    Some(NodeEvent::Listening(a)) => found.push(strip_p2p(a)),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        found
    } else {
        args.address
    };
    let mut service = rdv_client::Config {
        auto_refresh: args.keep,
        ..rdv_client::Config::default()
    };
    service.default_ttl = args.ttl.map(Ttl::from_secs);
    let config = ClientConfig {
        service,
        seed: u64::from_le_bytes(files::random_bytes()?[..8].try_into().unwrap_or_default()),
        ..ClientConfig::default()
    };
    let mut client = client::spawn(
        node.control.clone(),
        config,
        records_for(&key, &addresses, args.record_format)?,
    );
    client
        .register(point, ns.clone(), args.ttl.map(Ttl::from_secs))
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    // Ctrl-C or SIGTERM (a service manager stopping us) unregisters.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::usage(format!("cannot watch SIGTERM: {e}")))?;
    let mut interrupted = std::pin::pin!(async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    });
    loop {
        tokio::select! {
            _ = &mut interrupted, if args.keep => {
                client.unregister(point, ns.clone()).await;
                client.shutdown().await;
                while client.next_event().await.is_some() {}
                println!("unregistered from {} at {point}", ns);
                return Ok(());
            }
            event = client.next_event() => match event {
                None => return Err(Failure::network("the client stopped")),
                Some(Event::Registered { ttl, refresh, .. }) => {
                    let what = if refresh { "refreshed" } else { "registered" };
                    println!("{what} {} as {} at {point} for {}s", ns, key.public().to_peer_id(), ttl.as_secs());
                    if !args.keep {
                        return Ok(());
                    }
                }
                Some(Event::RegisterFailed { status, text, retry_at, .. }) => {
                    if args.keep && retry_at.is_some() {
                        eprintln!("warning: registration failed ({text}); retrying");
                    } else {
                        return Err(refused_or_network(status, &text, "registration"));
                    }
                }
                Some(Event::Expired { .. }) => eprintln!("warning: the registration lapsed; still retrying"),
                Some(_) => {}
            }
        }
    }
}

fn strip_p2p(mut a: Multiaddr) -> Multiaddr {
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// `rdv unregister`.
pub async fn unregister(args: UnregisterArgs) -> Result<(), Failure> {
    let ns = namespace(&args.namespace)?;
    // Never created here: a new identity has nothing registered, and
    // "unregistered" would be a false success.
    let key = files::load_identity(&args.identity.unwrap_or_else(files::default_client_identity))?;
    let me = key.public().to_peer_id();
    let (node, _events, point) = connect(key, &args.point, Vec::new()).await?;
    // UNREGISTER has no answer: send it on its own stream and close.
    let mut control = node.control.clone();
    let mut stream = control
        .open_stream(point, libp2p::StreamProtocol::new(rdv_wire::PROTOCOL_ID))
        .await
        .map_err(|e| {
            Failure::network(format!("cannot open a rendezvous stream to {point}: {e}"))
        })?;
    let msg = rdv_wire::Message::Unregister(rdv_wire::Unregister {
        namespace: ns.clone(),
        // Deprecated, but py-libp2p's point ignores an UNREGISTER without it.
        id: Some(me),
    });
    rdv_net::io::send_and_close(&mut stream, &msg, Duration::from_secs(5))
        .await
        .map_err(|e| Failure::network(format!("cannot send UNREGISTER: {e}")))?;
    println!("unregistered from {ns} at {point}");
    Ok(())
}

/// `rdv discover`.
pub async fn discover(args: DiscoverArgs) -> Result<(), Failure> {
    let ns = args.namespace.as_deref().map(namespace).transpose()?;
    // Discovery needs no lasting identity: use a throwaway key.
    let (node, _events, point) =
        connect(Keypair::generate_ed25519(), &args.point, Vec::new()).await?;
    let config = ClientConfig {
        service: rdv_client::Config {
            max_cached_per_query: usize::MAX,
            ..rdv_client::Config::default()
        },
        ..ClientConfig::default()
    };
    let mut client: Client = client::spawn(node.control.clone(), config, Vec::new());
    loop {
        client
            .discover(point, ns.clone(), args.limit)
            .await
            .map_err(|e| Failure::usage(e.to_string()))?;
        let (page, returned, cookie) = loop {
            match client.next_event().await {
                None => return Err(Failure::network("the client stopped")),
                Some(Event::Discovered {
                    registrations,
                    returned,
                    cookie,
                    ..
                }) => break (registrations, returned, cookie),
                Some(Event::DiscoverFailed { status, text, .. }) => {
                    return Err(refused_or_network(status, &text, "discovery"));
                }
                Some(_) => {}
            }
        };
        let now = Timestamp::now();
        for r in &page {
            print_registration(r, now, args.json);
        }
        // The end is a page with nothing after the cookie; a page of
        // registrations all seen before (refreshed ones come back) or all
        // refused is not the end. A point that gives no cookie cannot go
        // on: asking again would repeat the same page forever.
        if !args.all || returned == 0 || !cookie {
            return Ok(());
        }
    }
}

fn print_registration(r: &CachedRegistration, now: Timestamp, json: bool) {
    let ttl = r.expires_at.saturating_duration_since(now).as_secs();
    let addresses: Vec<String> = r.record.addresses.iter().map(|a| a.to_string()).collect();
    if json {
        let obj = serde_json::json!({
            "peer": r.peer.to_string(),
            "namespace": r.namespace.as_str(),
            "ttl": ttl,
            "addresses": addresses,
        });
        println!("{obj}");
    } else {
        println!(
            "{} {} ttl={}s {}",
            r.peer,
            r.namespace,
            ttl,
            addresses.join(" ")
        );
    }
}
