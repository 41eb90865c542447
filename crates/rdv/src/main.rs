//! `rdv`: the rendezvous point daemon and the client commands.
//!
//! `main` only parses arguments, starts tracing (to stderr, `RUST_LOG`) and
//! hands over to the command; exit codes: 0 success, 1 the point refused,
//! 2 usage error, 3 network failure.

mod bench_cmd;
mod cli;
mod client_cmd;
mod files;
mod metrics_http;
mod point_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The daemon logs what it does; the one-shot commands only what went wrong.
    // stun_types logs a WARN for each malformed STUN datagram it parses:
    // quieted by default, or anyone could flood the point's log.
    let default_level = match args.command {
        cli::Command::Point(_) => "info,stun_types=error",
        _ => "warn,stun_types=error",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
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
            cli::Command::Point(a) => point_cmd::run(a).await,
            cli::Command::Register(a) => client_cmd::register(a).await,
            cli::Command::Unregister(a) => client_cmd::unregister(a).await,
            cli::Command::Discover(a) => client_cmd::discover(a).await,
            cli::Command::Bench(a) => bench_cmd::run(a).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
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
