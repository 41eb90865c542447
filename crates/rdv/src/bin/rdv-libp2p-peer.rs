//! A peer built only from rust-libp2p's own `libp2p-rendezvous` behaviours:
//! the foreign implementation rdv's interop tests and load tool run against.
//!
//! - `rdv-libp2p-peer server --listen ADDR`: rust-libp2p's rendezvous server
//!   (the reference point), printing `listening on ADDR/p2p/ID` lines.
//! - `rdv-libp2p-peer client --point ADDR --op OP...`: rust-libp2p's
//!   rendezvous client running the operations in order, one JSON line each:
//!   `register:NS[:TTL]`, `unregister:NS`, `discover:NS|*[:LIMIT]`,
//!   `discover-next:NS|*[:LIMIT]` (with the previous answer's cookie).
//!   `--foreign-record` signs records with a key other than the connection's.

use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identify, identity::Keypair, noise, ping, rendezvous, tcp, yamux};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// rust-libp2p's rendezvous server.
    Server {
        /// Address to listen on; repeatable.
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: Vec<Multiaddr>,
        /// Seconds a connection with no stream stays open (rust-libp2p's
        /// swarm default here is 60; `rdv bench --idle` raises it).
        #[arg(long, default_value_t = 60)]
        idle_timeout: u64,
        /// Shortest TTL accepted, seconds (rust-libp2p's default is 7200).
        #[arg(long)]
        min_ttl: Option<u64>,
        /// Registrations per peer (rust-libp2p's default is 32).
        #[arg(long)]
        max_registrations_per_peer: Option<usize>,
        /// Registrations in total (rust-libp2p's default is 10000).
        #[arg(long)]
        max_registrations: Option<usize>,
    },
    /// rust-libp2p's rendezvous client, running `--op`s in order.
    Client {
        #[arg(long)]
        point: Multiaddr,
        #[arg(long = "op")]
        ops: Vec<String>,
        /// Sign records with a key other than the connection's identity.
        #[arg(long)]
        foreign_record: bool,
        /// Identify agent version to send instead of rust-libp2p's default
        /// (as an application that sets its own does).
        #[arg(long)]
        agent: Option<String>,
    },
}

mod behaviours {
    #![allow(missing_docs)]
    use super::*;

    #[derive(NetworkBehaviour)]
    pub struct ServerBehaviour {
        pub rendezvous: rendezvous::server::Behaviour,
        pub identify: identify::Behaviour,
        pub ping: ping::Behaviour,
    }

    #[derive(NetworkBehaviour)]
    pub struct ClientBehaviour {
        pub rendezvous: rendezvous::client::Behaviour,
        pub identify: identify::Behaviour,
        pub ping: ping::Behaviour,
    }
}
use behaviours::*;

fn swarm<B: NetworkBehaviour>(
    key: Keypair,
    idle_timeout: Duration,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, String> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|k| behaviour(k))
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

fn identify_config(key: &Keypair, agent: Option<&str>) -> identify::Config {
    // By default the agent version "rust-libp2p/...", as any rust-libp2p
    // app sends unless it sets its own.
    let config = identify::Config::new("/ipfs/id/1.0.0".into(), key.public());
    match agent {
        Some(a) => config.with_agent_version(a.to_string()),
        None => config,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    match Args::parse().mode {
        Mode::Server {
            listen,
            idle_timeout,
            min_ttl,
            max_registrations_per_peer,
            max_registrations,
        } => {
            server(
                listen,
                Duration::from_secs(idle_timeout),
                min_ttl,
                max_registrations_per_peer,
                max_registrations,
            )
            .await
        }
        Mode::Client {
            point,
            ops,
            foreign_record,
            agent,
        } => client(point, ops, foreign_record, agent).await,
    }
}

async fn server(
    listen: Vec<Multiaddr>,
    idle_timeout: Duration,
    min_ttl: Option<u64>,
    per_peer: Option<usize>,
    total: Option<usize>,
) -> Result<(), String> {
    let mut config = rendezvous::server::Config::default();
    if let Some(t) = min_ttl {
        config = config.with_min_ttl(t);
    }
    if let Some(n) = per_peer {
        config = config.with_max_registration_per_peer(n);
    }
    if let Some(n) = total {
        config = config.with_max_registration_total(n);
    }
    let mut swarm = swarm(Keypair::generate_ed25519(), idle_timeout, |k| {
        ServerBehaviour {
            rendezvous: rendezvous::server::Behaviour::new(config),
            identify: identify::Behaviour::new(identify_config(k, None)),
            ping: ping::Behaviour::default(),
        }
    })?;
    for addr in listen {
        swarm.listen_on(addr).map_err(|e| e.to_string())?;
    }
    let me = *swarm.local_peer_id();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            println!("listening on {}", address.with(Protocol::P2p(me)));
        }
    }
}

fn ns(s: &str) -> Result<rendezvous::Namespace, String> {
    rendezvous::Namespace::new(s.to_string()).map_err(|e| format!("namespace {s:?}: {e}"))
}

async fn client(
    point: Multiaddr,
    ops: Vec<String>,
    foreign_record: bool,
    agent: Option<String>,
) -> Result<(), String> {
    let Some(Protocol::P2p(point_id)) = point.iter().last() else {
        return Err("--point must end in /p2p/<peer id>".into());
    };
    let key = Keypair::generate_ed25519();
    let signer = if foreign_record {
        Keypair::generate_ed25519()
    } else {
        key.clone()
    };
    let mut swarm = swarm(key, Duration::from_secs(60), |k| ClientBehaviour {
        rendezvous: rendezvous::client::Behaviour::new(signer),
        identify: identify::Behaviour::new(identify_config(k, agent.as_deref())),
        ping: ping::Behaviour::default(),
    })?;
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().map_err(|_| "bad address")?)
        .map_err(|e| e.to_string())?;
    // A fresh port for the dial: with port reuse (rust-libp2p's default when
    // listening), the listen port an earlier peer used may still be in
    // TIME_WAIT towards the same point, and connect fails with EADDRINUSE.
    swarm
        .dial(
            libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                .address(point)
                .allocate_new_port()
                .build(),
        )
        .map_err(|e| e.to_string())?;
    // Ready when listening (the client registers its external addresses) and
    // when the point has our identify (it tells the point we are rust-libp2p).
    let (mut listening, mut identified) = (false, false);
    while !(listening && identified) {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
            Err(_) => return Err("timed out connecting to the point".into()),
            Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                swarm.add_external_address(address);
                listening = true;
            }
            Ok(SwarmEvent::Behaviour(ClientBehaviourEvent::Identify(identify::Event::Sent {
                peer_id,
                ..
            }))) if peer_id == point_id => identified = true,
            Ok(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                return Err(format!("cannot reach the point: {error}"));
            }
            Ok(_) => {}
        }
    }
    let mut cookie: Option<rendezvous::Cookie> = None;
    for op in ops {
        let parts: Vec<&str> = op.split(':').collect();
        let r = &mut swarm.behaviour_mut().rendezvous;
        match parts.as_slice() {
            ["register", n, rest @ ..] => {
                let ttl = rest
                    .first()
                    .map(|t| t.parse::<u64>())
                    .transpose()
                    .map_err(|e| e.to_string())?;
                r.register(ns(n)?, point_id, ttl)
                    .map_err(|e| e.to_string())?;
            }
            ["unregister", n] => {
                r.unregister(ns(n)?, point_id);
                println!("{}", json!({"op": op, "ok": true}));
                continue;
            }
            [kind @ ("discover" | "discover-next"), n, rest @ ..] => {
                let namespace = if *n == "*" { None } else { Some(ns(n)?) };
                let limit = rest
                    .first()
                    .map(|t| t.parse::<u64>())
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let c = if *kind == "discover-next" {
                    cookie.clone()
                } else {
                    None
                };
                r.discover(namespace, c, limit, point_id);
            }
            _ => return Err(format!("unknown op {op:?}")),
        }
        let line = loop {
            let event = tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some())
                .await
                .map_err(|_| format!("no answer to {op}"))?;
            let SwarmEvent::Behaviour(ClientBehaviourEvent::Rendezvous(e)) = event else {
                continue;
            };
            match e {
                rendezvous::client::Event::Registered { ttl, .. } => {
                    break json!({"op": op, "ok": true, "ttl": ttl});
                }
                rendezvous::client::Event::RegisterFailed { error, .. } => {
                    break json!({"op": op, "ok": false, "error": format!("{error:?}")});
                }
                rendezvous::client::Event::Discovered {
                    registrations,
                    cookie: c,
                    ..
                } => {
                    cookie = Some(c);
                    let regs: Vec<_> = registrations
                        .iter()
                        .map(|r| json!({
                            "peer": r.record.peer_id().to_string(),
                            "namespace": r.namespace.to_string(),
                            "ttl": r.ttl,
                            "addresses": r.record.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        }))
                        .collect();
                    break json!({"op": op, "ok": true, "registrations": regs});
                }
                rendezvous::client::Event::DiscoverFailed { error, .. } => {
                    break json!({"op": op, "ok": false, "error": format!("{error:?}")});
                }
                rendezvous::client::Event::Expired { .. } => {}
            }
        };
        println!("{line}");
    }
    println!("{}", json!({"me": swarm.local_peer_id().to_string()}));
    // Give a last UNREGISTER time to leave.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            swarm.select_next_some().await;
        }
    })
    .await;
    Ok(())
}
