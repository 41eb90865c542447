//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(
    name = "rdv",
    version,
    about = "rdv: libp2p rendezvous (run a point, register, discover) and private context rendezvous (contexts, the member agent, pipes)"
)]
pub struct Cli {
    /// Directory of the state files (keys, the point's SQLite database),
    /// before or after the subcommand.
    #[arg(long, global = true, default_value = crate::files::DATA_DIR)]
    pub data: PathBuf,
    /// Log lines on stderr as text (colours only on a terminal) or JSON
    /// (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a rendezvous point (the server).
    Point(PointArgs),
    /// Register this identity at a point.
    Register(RegisterArgs),
    /// Remove this identity's registration from a point.
    Unregister(UnregisterArgs),
    /// Ask a point who is registered.
    Discover(DiscoverArgs),
    /// Load a point (or several, one after the other) and print a table.
    Bench(BenchArgs),
    /// Print this member's card (`rdv-member-v1:...`), for `context invite --for`.
    Id,
    /// Private contexts: create, invite, join, list, members.
    Context(ContextArgs),
    /// Run the member agent (or ask it for its status).
    Agent(AgentArgs),
    /// Pipe bytes between two members of a context through the agents.
    Pipe(PipeArgs),
}

#[derive(Args)]
pub struct ContextArgs {
    #[command(subcommand)]
    pub action: ContextAction,
}

#[derive(Subcommand)]
pub enum ContextAction {
    /// Create a context; prints its id.
    Create {
        /// Local name of the context (yours only; members name it as they like).
        name: String,
    },
    /// Make an invitation; prints `rdv-invite-v1:...`.
    Invite {
        /// The context's local name.
        name: String,
        /// Seal the invitation to this member card (`rdv id` of the invitee):
        /// only that member can use it. Without it, whoever holds the text
        /// joins until it expires: send it like a password.
        #[arg(long = "for", value_name = "CARD")]
        for_card: Option<String>,
        /// Seconds until the invitation expires.
        #[arg(long, default_value_t = 86_400)]
        expires: u64,
    },
    /// Join with an invitation; prints the context id.
    Join {
        /// The `rdv-invite-v1:...` text.
        invite: String,
        /// Local name for the context.
        #[arg(long)]
        name: String,
    },
    /// The contexts of this member.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The members of a context this member knows of.
    Members {
        /// The context's local name.
        name: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Forget a context on this member: its secrets, journal and relay
    /// designation (the agent must be stopped first). The other members
    /// see this member's descriptor expire; to take a member out of
    /// everyone's context, an admin runs `rdv context remove`.
    Leave {
        /// The context's local name.
        name: String,
    },
    /// Remove a member from the context (admins only; the agent must be
    /// running): advances the epoch to a secret the member does not get,
    /// and the rekey reaches the other members through the journal.
    /// Prints the new epoch.
    Remove {
        /// The context's local name.
        name: String,
        /// The member's authority (64 hex digits, as `rdv context members`
        /// lists it).
        member: String,
    },
    /// The WebSocket relay members use when no direct path works.
    Relay {
        #[command(subcommand)]
        action: RelayAction,
    },
}

#[derive(Subcommand)]
pub enum RelayAction {
    /// Designate the relay for a context (the running agent connects
    /// within seconds, and the other members learn it from this member's
    /// descriptor); running it again replaces the designation.
    Add {
        /// The context's local name.
        name: String,
        /// The `rdv-relay-v1:...` token `rdv point --relay-listen` printed.
        relay: String,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// A public rendezvous point (ending in /p2p/<peer id>) where members
    /// find each other under a blinded namespace; repeatable.
    #[arg(long = "point")]
    pub points: Vec<Multiaddr>,
    /// A STUN server IP:PORT; repeatable. Asked, on the agent's QUIC
    /// socket, for the member's reflexive address, which the descriptor
    /// then carries as a `quic-reflexive` hint (hole punching).
    #[arg(long = "stun", value_name = "IP:PORT")]
    pub stun: Vec<std::net::SocketAddr>,
    /// Address to listen on; repeatable. TCP listens on each; the first
    /// also binds the UDP socket (QUIC and STUN). Default: every
    /// interface, ports the system picks.
    #[arg(long = "listen", value_name = "IP:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub enum AgentAction {
    /// Contexts, members, their descriptors and channels.
    Status {
        /// The status as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct PipeArgs {
    #[command(subcommand)]
    pub action: PipeAction,
}

#[derive(Subcommand)]
pub enum PipeAction {
    /// Print to stdout the bytes one member sends; exits when it closes.
    Listen {
        /// The context's local name.
        #[arg(long)]
        context: String,
    },
    /// Send stdin to a member; exits once the listener has all of it.
    Connect {
        /// The context's local name.
        #[arg(long)]
        context: String,
        /// The member's authority, as its agent printed after `ready`.
        #[arg(long)]
        peer: String,
        /// Use only this transport instead of racing them all: one of
        /// quic-direct, quic-reflexive, tcp-direct, relay (to check a path).
        #[arg(long, value_name = "TRANSPORT")]
        via: Option<String>,
    },
}

impl Command {
    /// Whether the command was asked for JSON output (its errors are then
    /// printed as a JSON line on stdout too).
    pub fn json(&self) -> bool {
        match self {
            Command::Discover(a) => a.json,
            Command::Context(ContextArgs {
                action: ContextAction::List { json } | ContextAction::Members { json, .. },
            }) => *json,
            Command::Agent(AgentArgs {
                action: Some(AgentAction::Status { json }),
                ..
            }) => *json,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Mix {
    /// A new registration each time (REGISTER, then UNREGISTER to make room).
    Register,
    /// The same registration again and again (a refresh).
    Refresh,
    /// DISCOVER with limit 100 in a namespace holding every client.
    Discover,
}

#[derive(Args)]
pub struct BenchArgs {
    /// A point to load, ending in /p2p/<peer id>; repeatable (measured in
    /// turn). Several addresses of one point, comma-separated, spread
    /// `--idle` peers over them (each address has its own ~28,000 client
    /// ports); request mixes use the first.
    #[arg(long = "point", required = true)]
    pub points: Vec<PointAddrs>,
    /// Concurrent clients, each its own peer with one persistent connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of load per point and mix.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// What the clients send; repeatable.
    #[arg(long = "mix", value_enum, default_values_t = [Mix::Register, Mix::Refresh, Mix::Discover])]
    pub mixes: Vec<Mix>,
    /// Instead of a load: hold this many idle peers on each point, one live
    /// registration each, and measure the point at rest for `--seconds`
    /// (start the points with a long idle timeout; see docs/PERFORMANCE.md).
    #[arg(long, value_name = "PEERS")]
    pub idle: Option<usize>,
    /// With `--idle`: the peers ping the point every this many seconds, as
    /// rust-libp2p peers do by default (15). Without it they do not ping,
    /// so the rest shows the point's own timer work only.
    #[arg(long, value_name = "SECS")]
    pub peer_ping: Option<u64>,
    /// Process id of each `--point`, in the same order: with `--idle`, its
    /// memory and CPU are read from /proc.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// A name for each `--point`, in the same order, shown in the table
    /// instead of its address.
    #[arg(long = "name")]
    pub names: Vec<String>,
}

/// One point's addresses (`ADDR[,ADDR...]`, all ending in the same /p2p/ID).
#[derive(Clone, Debug)]
pub struct PointAddrs(pub Vec<Multiaddr>);

impl std::str::FromStr for PointAddrs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let addrs = s
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<Multiaddr>()
                    .map_err(|e| format!("{a:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        fn last(a: &Multiaddr) -> Option<libp2p::multiaddr::Protocol<'_>> {
            a.iter().last()
        }
        match addrs.first().map(last) {
            Some(Some(libp2p::multiaddr::Protocol::P2p(_))) => {}
            _ => return Err(format!("{s:?} does not end in /p2p/<peer id>")),
        }
        if addrs.iter().any(|a| last(a) != last(&addrs[0])) {
            return Err(format!(
                "{s:?}: every address must end in the same /p2p/<peer id>"
            ));
        }
        Ok(PointAddrs(addrs))
    }
}

/// Flags of `rdv point`; each overrides the same key of the config file.
#[derive(Args, Default, Clone)]
pub struct PointArgs {
    /// TOML file whose keys mirror these flags (see docs/CONFIG.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeatable. Default: TCP and QUIC on port 4001 of every IPv4 interface, and of every IPv6 one where the host has IPv6.
    #[arg(long = "listen")]
    pub listen: Vec<Multiaddr>,
    /// Identity key file, created (mode 0600) if missing. Default DATA/identity.key.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Where registrations live: `sqlite:PATH`, `postgres://USER@HOST/DB` or `memory`. Default sqlite:DATA/point.db.
    #[arg(long)]
    pub store: Option<String>,
    /// Shortest TTL accepted, seconds. Default 7200.
    #[arg(long)]
    pub min_ttl: Option<u64>,
    /// Longest TTL accepted, seconds. Default 259200.
    #[arg(long)]
    pub max_ttl: Option<u64>,
    /// TTL when a REGISTER names none, seconds. Default 7200.
    #[arg(long)]
    pub default_ttl: Option<u64>,
    /// Registrations one peer may hold. Default 100.
    #[arg(long)]
    pub max_registrations_per_peer: Option<usize>,
    /// Registrations one namespace may hold. Default 1000.
    #[arg(long)]
    pub max_registrations_per_namespace: Option<usize>,
    /// Namespaces in use at once. Default 10000.
    #[arg(long)]
    pub max_namespaces: Option<usize>,
    /// Most registrations one DISCOVER returns. Default 1000.
    #[arg(long)]
    pub max_discover_limit: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Also serve STUN Binding requests (RFC 8489, no TURN) on this UDP
    /// address, e.g. 0.0.0.0:3478; prints `stun on IP:PORT`.
    #[arg(long, value_name = "IP:PORT")]
    pub stun_listen: Option<std::net::SocketAddr>,
    /// Also serve the WebSocket relay for private contexts on this TCP
    /// address, e.g. 0.0.0.0:4002; prints `relay on RELAY`, the token
    /// members give `rdv context relay add`.
    #[arg(long, value_name = "IP:PORT")]
    pub relay_listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum RecordFormatArg {
    /// RFC 0003 (go, js).
    Standard,
    /// rust-libp2p's rendezvous format.
    Legacy,
    /// The unsigned PeerInfo of go-libp2p-rendezvous's original schema
    /// (py-libp2p's point reads only this).
    PeerInfo,
    /// Standard, then legacy, then peer-info, each if the point refuses the
    /// one before.
    Auto,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// The point's address, ending in /p2p/<peer id> (as `rdv point` prints it).
    #[arg(long)]
    pub point: Multiaddr,
    /// Namespace to register in.
    #[arg(long)]
    pub namespace: String,
    /// Requested TTL, seconds (default: the point's).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Identity key file, created (mode 0600) if missing. Default DATA/client.key.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Address to advertise (where your service listens); repeatable.
    /// Required without --keep: the addresses of this command itself close
    /// when it exits, so a registration of them would point at nothing for
    /// its whole TTL. With --keep, default: the addresses it listens on.
    #[arg(long = "address", required_unless_present = "keep")]
    pub address: Vec<Multiaddr>,
    /// Stay up, refreshing before expiry, until Ctrl-C (then unregister).
    #[arg(long)]
    pub keep: bool,
    /// Envelope format of the signed peer record.
    #[arg(long, value_enum, default_value = "auto")]
    pub record_format: RecordFormatArg,
}

#[derive(Args)]
pub struct UnregisterArgs {
    /// The point's address, ending in /p2p/<peer id>.
    #[arg(long)]
    pub point: Multiaddr,
    /// Namespace to leave.
    #[arg(long)]
    pub namespace: String,
    /// Identity key file (the one you registered with; never created).
    /// Default DATA/client.key.
    #[arg(long)]
    pub identity: Option<PathBuf>,
}

#[derive(Args)]
pub struct DiscoverArgs {
    /// The point's address, ending in /p2p/<peer id>.
    #[arg(long)]
    pub point: Multiaddr,
    /// Namespace to ask about (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Most registrations per answer.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Follow cookies until the point has nothing more.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per registration: peer, namespace, ttl, addresses.
    #[arg(long)]
    pub json: bool,
}
