//! `rdv point`: the daemon. Reads the config file, lets flags override it,
//! validates everything before binding anything, then serves until SIGINT or
//! SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_net::{PointServer, ServerConfig};
use rdv_point::{Config, CookieKey, MemoryStore, Point, Store};
use rdv_wire::Ttl;
use serde::Deserialize;

use crate::cli::PointArgs;
use crate::{Failure, files, metrics_http};

/// The config file: every key mirrors a flag of `rdv point`; all optional.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    identity: Option<PathBuf>,
    store: Option<String>,
    min_ttl: Option<u64>,
    max_ttl: Option<u64>,
    default_ttl: Option<u64>,
    max_registrations_per_peer: Option<usize>,
    max_registrations_per_namespace: Option<usize>,
    max_namespaces: Option<usize>,
    max_discover_limit: Option<u64>,
    metrics: Option<SocketAddr>,
    stun_listen: Option<SocketAddr>,
    /// Not a flag: where the cookie secret is kept. Default ./rdv-data/cookie.key.
    cookie_secret: Option<PathBuf>,
    /// Not a flag: established connections at most. Default 4096.
    max_connections: Option<u32>,
    /// Not a flag: established connections with one peer at most. Default 8.
    max_connections_per_peer: Option<u32>,
    /// Not a flag: incoming connections in their handshake at most. Default 256.
    max_pending_connections: Option<u32>,
    /// Not a flag: established inbound connections from one IP address at most. Default 256.
    max_connections_per_ip: Option<usize>,
    /// Not a flag: rendezvous streams served at once. Default 1024.
    max_streams: Option<usize>,
    /// Not a flag: rendezvous streams one peer may have served at once. Default 16.
    max_streams_per_peer: Option<usize>,
    /// Not a flag: seconds a stream may take to deliver its next message. Default 10.
    stream_timeout: Option<u64>,
    /// Not a flag: the PostgreSQL schema holding the tables. Default `rdv`;
    /// points that serve as one use the same schema (and cookie secret).
    postgres_schema: Option<String>,
}

/// Everything `rdv point` needs, resolved and validated.
#[derive(Clone)]
struct Settings {
    store: StoreSpec,
    listen: Vec<Multiaddr>,
    identity: PathBuf,
    cookie_secret: PathBuf,
    point: Config,
    metrics: Option<SocketAddr>,
    stun_listen: Option<SocketAddr>,
    max_connections: u32,
    max_connections_per_peer: u32,
    max_pending_connections: u32,
    max_connections_per_ip: usize,
    server: ServerConfig,
}

fn read_file(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Failure::usage(format!("config file {}: {e}", path.display())))
}

fn resolve(args: PointArgs) -> Result<Settings, Failure> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    // Parsed even when a flag overrides it: a bad file is refused either way.
    let file_listen: Option<Vec<Multiaddr>> = file
        .listen
        .map(|list| {
            list.iter()
                .map(|s| {
                    s.parse::<Multiaddr>().map_err(|e| {
                        Failure::usage(format!(
                            "config key `listen`: {s:?} is not a multiaddr ({e})"
                        ))
                    })
                })
                .collect::<Result<_, _>>()
        })
        .transpose()?;
    let listen = if !args.listen.is_empty() {
        args.listen
    } else if let Some(list) = file_listen {
        list
    } else {
        ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let mut store = parse_store(args.store.or(file.store).as_deref())?;
    if let (StoreSpec::Postgres { schema, .. }, Some(name)) = (&mut store, file.postgres_schema) {
        *schema = name;
    }
    let defaults = Config::default();
    let ttl = |flag: Option<u64>, file: Option<u64>, default: Ttl| {
        flag.or(file).map_or(default, Ttl::from_secs)
    };
    let point = Config {
        min_ttl: ttl(args.min_ttl, file.min_ttl, defaults.min_ttl),
        max_ttl: ttl(args.max_ttl, file.max_ttl, defaults.max_ttl),
        default_ttl: ttl(args.default_ttl, file.default_ttl, defaults.default_ttl),
        max_registrations_per_peer: args
            .max_registrations_per_peer
            .or(file.max_registrations_per_peer)
            .unwrap_or(defaults.max_registrations_per_peer),
        max_registrations_per_namespace: args
            .max_registrations_per_namespace
            .or(file.max_registrations_per_namespace)
            .unwrap_or(defaults.max_registrations_per_namespace),
        max_namespaces: args
            .max_namespaces
            .or(file.max_namespaces)
            .unwrap_or(defaults.max_namespaces),
        max_discover_limit: args
            .max_discover_limit
            .or(file.max_discover_limit)
            .unwrap_or(defaults.max_discover_limit),
        ..defaults
    };
    point
        .validate()
        .map_err(|e| Failure::usage(format!("invalid configuration: {e}")))?;
    Ok(Settings {
        store,
        listen,
        identity: args
            .identity
            .or(file.identity)
            .unwrap_or_else(files::default_identity),
        cookie_secret: file
            .cookie_secret
            .unwrap_or_else(|| Path::new(files::DATA_DIR).join("cookie.key")),
        point,
        metrics: args.metrics.or(file.metrics),
        stun_listen: args.stun_listen.or(file.stun_listen),
        max_connections: positive(
            "max_connections",
            file.max_connections,
            NodeConfig::default().max_connections,
        )?,
        max_connections_per_peer: positive(
            "max_connections_per_peer",
            file.max_connections_per_peer,
            NodeConfig::default().max_connections_per_peer,
        )?,
        max_pending_connections: positive(
            "max_pending_connections",
            file.max_pending_connections,
            NodeConfig::default().max_pending_incoming,
        )?,
        max_connections_per_ip: positive(
            "max_connections_per_ip",
            file.max_connections_per_ip,
            NodeConfig::default().max_connections_per_ip,
        )?,
        server: ServerConfig {
            max_streams: positive(
                "max_streams",
                file.max_streams,
                ServerConfig::default().max_streams,
            )?,
            max_streams_per_peer: positive(
                "max_streams_per_peer",
                file.max_streams_per_peer,
                ServerConfig::default().max_streams_per_peer,
            )?,
            stream_timeout: std::time::Duration::from_secs(positive(
                "stream_timeout",
                file.stream_timeout,
                10,
            )?),
            // Identify results are fed to the server below (note_identify).
            identify_wait: std::time::Duration::from_secs(1),
            ..ServerConfig::default()
        },
    })
}

fn positive<T: PartialEq + Default + Copy>(
    key: &str,
    value: Option<T>,
    default: T,
) -> Result<T, Failure> {
    match value {
        Some(v) if v == T::default() => Err(Failure::usage(format!(
            "config key `{key}` must be at least 1"
        ))),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(args: PointArgs) -> Result<(), Failure> {
    let settings = resolve(args)?;
    let keypair = files::load_or_create_identity(&settings.identity)?;
    let cookie_key = CookieKey::from_bytes(files::load_or_create_secret(&settings.cookie_secret)?);
    // A new store's epoch: cookies issued over an earlier, lost store start over.
    let epoch = u64::from_le_bytes(files::random_bytes()?[..8].try_into().unwrap_or_default());
    let config = settings.point.clone();
    match &settings.store {
        StoreSpec::Memory => {
            let point = Point::new(config, MemoryStore::new(epoch), cookie_key);
            serve(settings.clone(), keypair, point).await
        }
        StoreSpec::Sqlite(path) => {
            let store = rdv_store_sql::SqliteStore::open(path, epoch)
                .map_err(|e| Failure::usage(e.to_string()))?;
            tracing::info!(path = %path.display(), "registrations in SQLite");
            serve(
                settings.clone(),
                keypair,
                Point::new(config, store, cookie_key),
            )
            .await
        }
        StoreSpec::Postgres { url, schema } => {
            let (url, schema) = (url.clone(), schema.clone());
            // The sync client must not run on an async worker: connect on a
            // blocking thread (the point thread uses it afterwards).
            let store = tokio::task::spawn_blocking(move || {
                rdv_store_sql::PostgresStore::connect(&url, &schema, epoch)
            })
            .await
            .map_err(|e| Failure::network(format!("cannot connect to PostgreSQL: {e}")))?
            .map_err(|e| Failure::network(e.to_string()))?;
            tracing::info!("registrations in PostgreSQL");
            serve(
                settings.clone(),
                keypair,
                Point::new(config, store, cookie_key),
            )
            .await
        }
    }
}

/// Where registrations live, from `--store`.
#[derive(Clone, Debug)]
enum StoreSpec {
    Memory,
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

/// `memory`, `sqlite:PATH`, `postgres://...` (or `postgresql://...`).
/// Default: SQLite in `./rdv-data/point.db`.
fn parse_store(spec: Option<&str>) -> Result<StoreSpec, Failure> {
    match spec {
        None => Ok(StoreSpec::Sqlite(
            Path::new(files::DATA_DIR).join("point.db"),
        )),
        Some("memory") => Ok(StoreSpec::Memory),
        Some(s) if s.starts_with("sqlite:") && s.len() > "sqlite:".len() => {
            Ok(StoreSpec::Sqlite(PathBuf::from(&s["sqlite:".len()..])))
        }
        Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            Ok(StoreSpec::Postgres {
                url: s.to_string(),
                schema: rdv_store_sql::PostgresStore::DEFAULT_SCHEMA.to_string(),
            })
        }
        Some(other) => Err(Failure::usage(format!(
            "store {other:?} is not one of `memory`, `sqlite:PATH`, `postgres://USER@HOST/DB`"
        ))),
    }
}

async fn serve<S: Store + Send + 'static>(
    settings: Settings,
    keypair: libp2p::identity::Keypair,
    point: Result<Point<S>, rdv_point::ConfigError>,
) -> Result<(), Failure> {
    let point = point.map_err(|e| Failure::usage(format!("invalid configuration: {e}")))?;
    let server = PointServer::new(point, settings.server.clone());
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(metrics_http::bind(addr).await?),
        None => None,
    };
    let stun_socket = match settings.stun_listen {
        Some(addr) => Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|e| Failure::usage(format!("cannot bind --stun-listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let node_config = NodeConfig {
        listen: settings.listen.clone(),
        serve_queue: Some(4096),
        max_connections: settings.max_connections,
        max_connections_per_peer: settings.max_connections_per_peer,
        max_pending_incoming: settings.max_pending_connections,
        max_connections_per_ip: settings.max_connections_per_ip,
        ..NodeConfig::default()
    };
    let (mut node, mut events) = Node::start(keypair, node_config)
        .map_err(|e| Failure::usage(format!("{e}; choose another --listen address")))?;
    tracing::info!(peer = %node.peer_id, "rendezvous point starting");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = node
        .incoming
        .take()
        .ok_or_else(|| Failure::network("the node does not serve rendezvous streams"))?;
    let serving = tokio::spawn(server.clone().run(incoming, async {
        let _ = stop_rx.await;
    }));
    if let Some(listener) = metrics_listener {
        let s = server.clone();
        tokio::spawn(metrics_http::serve(listener, move || s.render_metrics()));
    }

    // Both handlers are in place before the first "listening on" line, so
    // a signal sent as soon as the point is up is never the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Failure::usage(format!("cannot watch SIGTERM: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Failure::usage(format!("cannot watch SIGINT: {e}")))?;
    let (stun_stop, stun_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(socket) = stun_socket {
        let bound = socket
            .local_addr()
            .map_err(|e| Failure::network(e.to_string()))?;
        let metrics = server.metrics().stun();
        tokio::spawn(rdv_net::stun::serve(
            socket,
            Default::default(),
            metrics,
            async {
                let _ = stun_stopped.await;
            },
        ));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "stun on {bound}");
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            event = events.recv() => match event {
                None => return Err(Failure::network("the libp2p node stopped unexpectedly")),
                Some(NodeEvent::Listening(addr)) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "listening on {addr}");
                    let _ = out.flush();
                }
                Some(NodeEvent::ListenFailed(reason)) => tracing::warn!(%reason, "listener failed"),
                Some(NodeEvent::Identified { peer, agent_version, protocols }) => server.note_identify(peer, &agent_version, &protocols),
                Some(NodeEvent::Connections(n)) => server.metrics().set_connections(n),
                Some(_) => {}
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    let _ = stun_stop.send(());
    let _ = serving.await;
    drop(node);
    Ok(())
}
