//! `rdv point`: the daemon. Reads the config file, lets flags override it,
//! validates everything before binding anything, then serves until SIGINT or
//! SIGTERM. SIGHUP re-reads the config file and applies what can change
//! while running (see [`reload`]); a file that does not validate is
//! refused with an error in the log, and the point keeps its settings.

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
use crate::{Failure, files, http};

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
    relay_listen: Option<SocketAddr>,
    /// Not a flag: where the relay's identity is kept. Default ./rdv-data/relay.key.
    relay_key: Option<PathBuf>,
    /// Not a flag: relay connections from one IP address at most. Default 32.
    relay_connections_per_ip: Option<u32>,
    /// Not a flag: relay connections in all at most. Default 10000.
    relay_clients: Option<usize>,
    /// Not a flag: circuits one relay connection may have. Default 64.
    relay_circuits_per_client: Option<u32>,
    /// Not a flag: bytes per second one relay connection may send. Default 16 MiB.
    relay_client_rate: Option<u64>,
    /// Not a flag: bytes per second all relay connections may send. Default 256 MiB.
    relay_total_rate: Option<u64>,
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
    /// Not a flag: registrations in total. Default 1000000.
    max_registrations: Option<usize>,
    /// Not a flag: bytes of stored records in total. Default 1 GiB.
    max_stored_bytes: Option<usize>,
    /// Not a flag: largest signed record accepted, bytes. Default 4096.
    max_record_size: Option<usize>,
    /// Not a flag: largest message, bytes. Default 1 MiB.
    max_message_size: Option<usize>,
    /// Not a flag: milliseconds a first DISCOVER waits for identify. Default 1000.
    identify_wait_ms: Option<u64>,
    /// Not a flag: inbound streams queued for the point. Default 4096.
    stream_queue: Option<usize>,
    /// Not a flag: peers remembered with the record formats they read. Default 100000.
    max_format_peers: Option<usize>,
    /// Not a flag: verified records remembered. Default 100000.
    max_verified_records: Option<usize>,
    /// Not a flag: incoming connections in their handshake from one IP. Default 16.
    max_pending_per_ip: Option<usize>,
    /// Not a flag: IPv6 prefix length counted as one address. Default 64.
    ipv6_prefix: Option<u8>,
    /// Not a flag: rendezvous streams from one IP at once. Default 128.
    max_streams_per_ip: Option<usize>,
    /// Not a flag: live registrations from one IP per namespace. Default 100.
    max_registrations_per_ip_namespace: Option<usize>,
    /// Not a flag: seconds a stream may rest between requests. Default 300.
    stream_idle_timeout: Option<u64>,
    /// Not a flag: seconds a connection with no stream stays open. Default 60.
    idle_timeout: Option<u64>,
    /// Not a flag: log filter (`RUST_LOG` syntax), e.g. "info" or
    /// "rdv_net=debug". Default: `RUST_LOG`, else "info".
    log: Option<String>,
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
    relay_listen: Option<SocketAddr>,
    relay_key: PathBuf,
    relay: rdv_net::relay::RelayConfig,
    max_connections: u32,
    max_connections_per_peer: u32,
    max_pending_connections: u32,
    max_connections_per_ip: usize,
    max_pending_per_ip: usize,
    ipv6_prefix: u8,
    idle_timeout: std::time::Duration,
    stream_queue: usize,
    server: ServerConfig,
    log: Option<String>,
}

fn read_file(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Failure::usage(format!("config file {}: {e}", path.display())))
}

/// The default listen addresses: TCP and QUIC on port 4001 of every IPv4
/// interface, and of every IPv6 one when `ipv6` (libp2p binds IPv6 sockets
/// IPv6-only, so both families can hold the port).
fn default_listen(ipv6: bool) -> Vec<Multiaddr> {
    let mut list = vec!["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];
    if ipv6 {
        list.extend(["/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1"]);
    }
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Whether the host has IPv6: an IPv6 socket can be bound.
fn host_has_ipv6() -> bool {
    std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok()
}

fn resolve(args: &PointArgs) -> Result<Settings, Failure> {
    let args = args.clone();
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let relay = relay_config(&file)?;
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
        default_listen(host_has_ipv6())
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
        max_registrations: positive(
            "max_registrations",
            file.max_registrations,
            defaults.max_registrations,
        )?,
        max_stored_bytes: positive(
            "max_stored_bytes",
            file.max_stored_bytes,
            defaults.max_stored_bytes,
        )?,
        max_record_size: positive(
            "max_record_size",
            file.max_record_size,
            defaults.max_record_size,
        )?,
        max_message_size: positive(
            "max_message_size",
            file.max_message_size,
            defaults.max_message_size,
        )?,
    };
    let node_defaults = NodeConfig::default();
    let server_defaults = ServerConfig::default();
    if let Some(p) = file.ipv6_prefix
        && !(1..=128).contains(&p)
    {
        return Err(Failure::usage(format!(
            "config key `ipv6_prefix` must be 1..=128 (got {p})"
        )));
    }
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
            .unwrap_or_else(|| files::data_dir().join("cookie.key")),
        point,
        metrics: args.metrics.or(file.metrics),
        stun_listen: args.stun_listen.or(file.stun_listen),
        relay_listen: args.relay_listen.or(file.relay_listen),
        relay,
        relay_key: file
            .relay_key
            .unwrap_or_else(|| files::data_dir().join("relay.key")),
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
        max_pending_per_ip: positive(
            "max_pending_per_ip",
            file.max_pending_per_ip,
            node_defaults.max_pending_per_ip,
        )?,
        ipv6_prefix: file.ipv6_prefix.unwrap_or(node_defaults.ipv6_prefix),
        idle_timeout: std::time::Duration::from_secs(positive(
            "idle_timeout",
            file.idle_timeout,
            node_defaults.idle_timeout.as_secs(),
        )?),
        stream_queue: positive("stream_queue", file.stream_queue, 4096)?,
        log: file.log,
        server: ServerConfig {
            max_streams_per_ip: positive(
                "max_streams_per_ip",
                file.max_streams_per_ip,
                server_defaults.max_streams_per_ip,
            )?,
            max_registrations_per_ip_namespace: positive(
                "max_registrations_per_ip_namespace",
                file.max_registrations_per_ip_namespace,
                server_defaults.max_registrations_per_ip_namespace,
            )?,
            ipv6_prefix: file.ipv6_prefix.unwrap_or(server_defaults.ipv6_prefix),
            stream_idle_timeout: std::time::Duration::from_secs(positive(
                "stream_idle_timeout",
                file.stream_idle_timeout,
                server_defaults.stream_idle_timeout.as_secs(),
            )?),
            max_legacy_askers: positive(
                "max_format_peers",
                file.max_format_peers,
                server_defaults.max_legacy_askers,
            )?,
            max_verified_records: positive(
                "max_verified_records",
                file.max_verified_records,
                server_defaults.max_verified_records,
            )?,
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
            identify_wait: std::time::Duration::from_millis(file.identify_wait_ms.unwrap_or(1000)),
        },
    })
}

/// The relay's bounds from the file's `relay_*` keys (each at least 1).
fn relay_config(file: &FileConfig) -> Result<rdv_net::relay::RelayConfig, Failure> {
    let d = rdv_net::relay::RelayConfig::default();
    let mut c = d.clone();
    c.limits.per_ip = positive(
        "relay_connections_per_ip",
        file.relay_connections_per_ip,
        d.limits.per_ip,
    )?;
    c.limits.clients = positive("relay_clients", file.relay_clients, d.limits.clients)?;
    c.limits.circuits_per_client = positive(
        "relay_circuits_per_client",
        file.relay_circuits_per_client,
        d.limits.circuits_per_client,
    )?;
    c.client_rate = positive("relay_client_rate", file.relay_client_rate, d.client_rate)?;
    c.client_burst = c.client_burst.min(c.client_rate).max(proto_payload());
    c.total_rate = positive("relay_total_rate", file.relay_total_rate, d.total_rate)?;
    Ok(c)
}

/// The largest relay payload: a burst below it would stall every frame.
fn proto_payload() -> u64 {
    rdv_relay::proto::MAX_PAYLOAD as u64
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
pub async fn run(args: PointArgs, log: crate::LogControl) -> Result<(), Failure> {
    let settings = resolve(&args)?;
    if let Some(directives) = settings.log.as_deref().filter(|_| !log.from_env) {
        log.set(directives)
            .map_err(|e| Failure::usage(format!("config key `log`: {e}")))?;
    }
    let reloader = Reloader { args, log };
    let keypair = files::load_or_create_identity(&settings.identity)?;
    let cookie_key = CookieKey::from_bytes(files::load_or_create_secret(&settings.cookie_secret)?);
    // A new store's epoch: cookies issued over an earlier, lost store start over.
    let epoch = u64::from_le_bytes(files::random_bytes()?[..8].try_into().unwrap_or_default());
    let config = settings.point.clone();
    match &settings.store {
        StoreSpec::Memory => {
            let point = Point::new(config, MemoryStore::new(epoch), cookie_key);
            serve(settings.clone(), keypair, point, &reloader).await
        }
        StoreSpec::Sqlite(path) => {
            let store = rdv_store_sql::SqliteStore::open(path, epoch)
                .map_err(|e| Failure::usage(e.to_string()))?;
            tracing::info!(path = %path.display(), "registrations in SQLite");
            serve(
                settings.clone(),
                keypair,
                Point::new(config, store, cookie_key),
                &reloader,
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
                &reloader,
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
        None => Ok(StoreSpec::Sqlite(files::data_dir().join("point.db"))),
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

/// What SIGHUP needs: the command line (flags still override the file)
/// and the log filter.
struct Reloader {
    args: PointArgs,
    log: crate::LogControl,
}

/// SIGHUP: re-reads the config file and applies what can change while
/// running: the TTL bounds and registry limits (`min_ttl` .. `max_message_size`),
/// the per-address registration quota and the log filter. Listen addresses,
/// the store, keys and the connection and stream bounds need a restart.
async fn reload<S: Store + Send + 'static>(server: &PointServer<S>, reloader: &Reloader) {
    let settings = match resolve(&reloader.args) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e.message, "SIGHUP: configuration refused; keeping the current one");
            return;
        }
    };
    if let Err(e) = server
        .reconfigure(
            settings.point.clone(),
            settings.server.max_registrations_per_ip_namespace,
        )
        .await
    {
        tracing::error!(error = %e, "SIGHUP: configuration refused; keeping the current one");
        return;
    }
    if let Some(directives) = &settings.log
        && let Err(e) = reloader.log.set(directives)
    {
        tracing::error!(error = %e, "SIGHUP: log level refused");
    }
    tracing::info!("SIGHUP: configuration reloaded");
}

/// What the HTTP server reads from the running point.
struct HttpSource<S: Store + Send + 'static>(PointServer<S>);

impl<S: Store + Send + 'static> http::Source for HttpSource<S> {
    fn metrics(&self) -> String {
        self.0.render_metrics()
    }
    async fn store_ready(&self) -> Result<(), String> {
        // A round trip through the point thread that asks the store: a
        // thread stuck on a dead database link does not answer.
        self.0
            .with_point(|p| {
                let _ = p.store().stats();
            })
            .await
            .ok_or_else(|| "the point thread has stopped".to_string())
    }
}

/// How often a point asks each connected peer for identify again.
const POINT_IDENTIFY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The libp2p node a point runs, from its settings.
fn node_config(
    settings: &Settings,
    inbound_refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> NodeConfig {
    NodeConfig {
        listen: settings.listen.clone(),
        serve_queue: Some(settings.stream_queue),
        inbound_refused: Some(inbound_refused),
        max_connections: settings.max_connections,
        max_connections_per_peer: settings.max_connections_per_peer,
        max_pending_incoming: settings.max_pending_connections,
        max_connections_per_ip: settings.max_connections_per_ip,
        max_pending_per_ip: settings.max_pending_per_ip,
        ipv6_prefix: settings.ipv6_prefix,
        idle_timeout: settings.idle_timeout,
        // Next to no timer work per connection at rest: a point answers
        // pings without sending its own, and asks for identify when a peer
        // connects and then once an hour (what repairs a first identify
        // that failed, or a peer's formats forgotten by the LRU, where
        // rust-libp2p's default asks every 5 minutes). Measured in
        // docs/PERFORMANCE.md "Idle peers".
        ping_interval: None,
        identify_interval: Some(POINT_IDENTIFY_INTERVAL),
        ..NodeConfig::default()
    }
}

async fn serve<S: Store + Send + 'static>(
    settings: Settings,
    keypair: libp2p::identity::Keypair,
    point: Result<Point<S>, rdv_point::ConfigError>,
    reloader: &Reloader,
) -> Result<(), Failure> {
    let point = point.map_err(|e| Failure::usage(format!("invalid configuration: {e}")))?;
    let server = PointServer::start(point, settings.server.clone()).map_err(|e| {
        Failure::network(format!(
            "cannot start the point thread: {e}; the system is out of threads or memory"
        ))
    })?;
    let http_listener = match settings.metrics {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let info = http::Info::new(match settings.store {
        StoreSpec::Memory => "memory",
        StoreSpec::Sqlite(_) => "sqlite",
        StoreSpec::Postgres { .. } => "postgres",
    });
    let stun_socket = match settings.stun_listen {
        Some(addr) => Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|e| Failure::usage(format!("cannot bind --stun-listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let relay = match settings.relay_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::usage(format!("cannot bind --relay-listen {addr}: {e}")))?;
            let seed = files::load_or_create_secret(&settings.relay_key)?;
            Some((listener, rdv_relay::RelayIdentity::from_seed(&seed)))
        }
        None => None,
    };
    let node_config = node_config(&settings, server.metrics().inbound_refused_counter());
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
    if let Some(listener) = http_listener {
        tokio::spawn(http::serve(
            listener,
            HttpSource(server.clone()),
            info.clone(),
        ));
    }

    // Both handlers are in place before the first "listening on" line, so
    // a signal sent as soon as the point is up is never the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Failure::usage(format!("cannot watch SIGTERM: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Failure::usage(format!("cannot watch SIGINT: {e}")))?;
    let mut sighup = signal(SignalKind::hangup())
        .map_err(|e| Failure::usage(format!("cannot watch SIGHUP: {e}")))?;
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
    let (relay_stop, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some((listener, identity)) = relay {
        let bound = listener
            .local_addr()
            .map_err(|e| Failure::network(e.to_string()))?;
        let token = rdv_relay::RelayToken {
            authority: identity.authority(),
            addr: if bound.ip().is_unspecified() {
                // A wildcard bind: name the loopback address, which works
                // on this host; members elsewhere put the host's address
                // in the token (same authority).
                SocketAddr::new(
                    if bound.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    },
                    bound.port(),
                )
            } else {
                bound
            },
        };
        let mut relay_config = settings.relay.clone();
        // Test hook (docs/CONFIG.md): RDV_RELAY_TAP=FILE appends every
        // payload the relay forwards to FILE, so a test can show that
        // only ciphertext passes through the relay process.
        if let Some(path) = std::env::var_os("RDV_RELAY_TAP") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    Failure::usage(format!("RDV_RELAY_TAP {}: {e}", path.to_string_lossy()))
                })?;
            let file = std::sync::Mutex::new(file);
            relay_config.observer = Some(std::sync::Arc::new(move |payload: &[u8]| {
                use std::io::Write as _;
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(payload);
                }
            }));
        }
        tokio::spawn(rdv_net::relay::serve(
            listener,
            identity,
            relay_config,
            server.metrics().relay(),
            async {
                let _ = relay_stopped.await;
            },
        ));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "relay on {token}");
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload(&server, reloader).await,
            event = events.recv() => match event {
                None => return Err(Failure::network("the libp2p node stopped unexpectedly")),
                Some(NodeEvent::Listening(addr)) => {
                    info.listening_on(addr.to_string());
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
    let _ = relay_stop.send(());
    let _ = serving.await;
    drop(node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listen_adds_ipv6_where_the_host_has_it() {
        let v4: Vec<String> = default_listen(false)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            v4,
            ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        );
        let both: Vec<String> = default_listen(true).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            both,
            [
                "/ip4/0.0.0.0/tcp/4001",
                "/ip4/0.0.0.0/udp/4001/quic-v1",
                "/ip6/::/tcp/4001",
                "/ip6/::/udp/4001/quic-v1"
            ]
        );
    }

    /// A point holds many idle connections: it must not wake up for each
    /// of them on a short timer (rust-libp2p's defaults ping every 15 s and
    /// identify again every 5 min, per connection; docs/PERFORMANCE.md
    /// "Idle peers" measured what that costs at 10,000 peers).
    #[test]
    fn a_point_node_has_no_periodic_work_per_connection() {
        let Ok(settings) = resolve(&PointArgs::default()) else {
            panic!("the default settings resolve")
        };
        let config = node_config(&settings, Default::default());
        assert_eq!(config.ping_interval, None);
        assert_eq!(config.identify_interval, Some(POINT_IDENTIFY_INTERVAL));
        assert!(POINT_IDENTIFY_INTERVAL >= std::time::Duration::from_secs(3600));
        // while a client node keeps rust-libp2p's liveness pings
        assert!(NodeConfig::default().ping_interval.is_some());
    }
}
