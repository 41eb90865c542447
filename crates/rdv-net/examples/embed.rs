//! Embedding rdv in your own rust-libp2p application: a rendezvous point and
//! a rendezvous client in your `#[derive(NetworkBehaviour)]`, in a few lines.
//!
//! `cargo run -p rdv-net --example embed` runs both in one process: the point
//! listens on loopback and the client registers at it, then discovers.

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identify, noise, ping, tcp, yamux};
use rdv_client::Event;
use rdv_net::{PointServer, ServerConfig, client, inbound};
use rdv_point::{Config, CookieKey, MemoryStore, Point};
use rdv_wire::{Namespace, RecordFormat, sign_record};

/// Your application's behaviour, with rendezvous added.
#[derive(NetworkBehaviour)]
struct MyBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Serves `/rendezvous/1.0.0` (give it a queue only on a point).
    rendezvous_point: libp2p::swarm::behaviour::toggle::Toggle<inbound::Behaviour>,
    /// Opens streams for the rendezvous client.
    rendezvous_client: libp2p_stream::Behaviour,
}

type Built = (Swarm<MyBehaviour>, Option<inbound::Incoming>);

fn build(key: Keypair, serve: bool) -> Result<Built, Box<dyn std::error::Error>> {
    let (point, incoming) = if serve {
        let (b, rx) = inbound::Behaviour::new(1024);
        (Some(b), Some(rx))
    } else {
        (None, None)
    };
    let mut point = Some(point);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| MyBehaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/my-app/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            rendezvous_point: point.take().flatten().into(),
            rendezvous_client: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    Ok((swarm, incoming))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A point: a `Point` over a store, fed from the swarm's inbound queue.
    let (mut point_swarm, incoming) = build(Keypair::generate_ed25519(), true)?;
    point_swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let store = MemoryStore::new(42); // in a real point: a random epoch
    let point = Point::new(Config::default(), store, CookieKey::from_bytes([7; 32]))?;
    let incoming = incoming.ok_or("a point has an inbound queue")?;
    let server = PointServer::new(
        point,
        ServerConfig {
            // We feed it identify results (below): a DISCOVER arriving
            // before them waits up to this long, once per peer.
            identify_wait: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    );
    tokio::spawn(server.clone().run(incoming, std::future::pending()));
    let point_id = *point_swarm.local_peer_id();
    let point_addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = point_swarm.select_next_some().await {
            break address;
        }
    };
    tokio::spawn(async move {
        loop {
            // rust-libp2p's client reads only legacy records and refuses a
            // whole answer holding one standard record: identify tells the
            // point who is asking (rdv's client lists a marker protocol), so
            // it serves each peer what it reads.
            if let SwarmEvent::Behaviour(MyBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) = point_swarm.select_next_some().await
            {
                server.note_identify(peer_id, &info.agent_version, &info.protocols);
            }
        }
    });

    // A client: registers its own signed record (same key as its swarm).
    let key = Keypair::generate_ed25519();
    let (mut swarm, _) = build(key.clone(), false)?;
    let my_addrs: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse()?];
    let record = sign_record(&key, &my_addrs, 1, RecordFormat::Standard)?;
    // Spawned before dialing, so the first identify already says that this
    // client reads both record formats.
    let mut rendezvous = client::spawn(
        swarm.behaviour().rendezvous_client.new_control(),
        client::ClientConfig::default(),
        vec![record.into()],
    );
    swarm.dial(point_addr)?;
    while !matches!(
        swarm.select_next_some().await,
        SwarmEvent::ConnectionEstablished { .. }
    ) {}
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });

    rendezvous
        .register(point_id, Namespace::new("my-app")?, None)
        .await?;
    while let Some(event) = rendezvous.next_event().await {
        match event {
            Event::Registered { ttl, .. } => {
                println!("registered for {}s", ttl.as_secs());
                rendezvous
                    .discover(point_id, Some(Namespace::new("my-app")?), None)
                    .await?;
            }
            Event::Discovered { registrations, .. } => {
                for r in registrations {
                    println!("found {} at {:?}", r.peer, r.record.addresses);
                }
                break;
            }
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
