//! `rdv`: the rendezvous point daemon and the client commands.
//!
//! `main` only parses arguments, starts tracing (to stderr, `RUST_LOG`) and
//! hands over to the command; exit codes: 0 success, 1 the point refused,
//! 2 usage error, 3 network failure.

mod bench_cmd;
mod bench_idle;
mod cli;
mod client_cmd;
mod files;
mod http;
mod member_cmd;
mod point_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let json = args.command.json();
    files::set_data_dir(args.data.clone());
    // The daemon logs what it does; the one-shot commands only what went wrong.
    // stun_types logs a WARN for each malformed STUN datagram it parses:
    // quieted by default, or anyone could flood the point's log.
    let default_level = match args.command {
        cli::Command::Point(_) | cli::Command::Agent(cli::AgentArgs { action: None, .. }) => {
            "info,stun_types=error"
        }
        _ => "warn,stun_types=error",
    };
    let log = LogControl::init(default_level, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let outcome = runtime.block_on(async {
        match args.command {
            cli::Command::Point(a) => point_cmd::run(a, log).await,
            cli::Command::Register(a) => client_cmd::register(a).await,
            cli::Command::Unregister(a) => client_cmd::unregister(a).await,
            cli::Command::Discover(a) => client_cmd::discover(a).await,
            cli::Command::Bench(a) => bench_cmd::run(a).await,
            cli::Command::Id => member_cmd::id(),
            cli::Command::Context(a) => member_cmd::context(a).await,
            cli::Command::Agent(a) => member_cmd::agent(a).await,
            cli::Command::Pipe(a) => member_cmd::pipe(a).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if json {
                // A script reading JSON lines gets the error as one too.
                let obj = serde_json::json!({
                    "error": failure.message,
                    "exit_code": failure.code,
                });
                println!("{obj}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// The log filter, changeable while running (`rdv point` on SIGHUP).
pub struct LogControl {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    /// Whether `RUST_LOG` chose the filter at start.
    pub from_env: bool,
}

impl LogControl {
    /// Logs to stderr, filtered by `RUST_LOG` or else `default_level`:
    /// text with colours only when stderr is a terminal (a file or journald
    /// gets no escape codes), or one JSON object per line for collectors.
    fn init(default_level: &str, format: cli::LogFormat) -> Self {
        use std::io::IsTerminal;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let (filter, from_env) = match tracing_subscriber::EnvFilter::try_from_default_env() {
            Ok(f) => (f, true),
            Err(_) => (tracing_subscriber::EnvFilter::new(default_level), false),
        };
        let (layer, handle) = tracing_subscriber::reload::Layer::new(filter);
        let (text, json) = match format {
            cli::LogFormat::Text => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal()),
                ),
                None,
            ),
            cli::LogFormat::Json => (
                None,
                Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr),
                ),
            ),
        };
        tracing_subscriber::registry()
            .with(layer)
            .with(text)
            .with(json)
            .init();
        Self { handle, from_env }
    }

    /// Replaces the filter with `directives` (`RUST_LOG` syntax).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = tracing_subscriber::EnvFilter::try_new(directives)
            .map_err(|e| format!("log level {directives:?}: {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// A command's failure: what to print and the exit code.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The point answered with a refusal (exit 1).
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    /// The arguments or configuration are wrong (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    /// The network failed (exit 3).
    pub fn network(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            message: message.into(),
        }
    }
}
