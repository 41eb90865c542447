//! A namespace of the lab, and running code inside it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};

use crate::cmd::LabError;

/// A network namespace made by a [`crate::Lab`], with its main address.
///
/// A `Host` is only a name: the [`crate::Lab`] owns the namespace and
/// deletes it when dropped. Sockets made inside the namespace (for example
/// by `host.run(|| UdpSocket::bind(..))`) stay in it and can then be used
/// from any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
}

impl Host {
    /// The namespace name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address: the public one for public hosts and routers, the
    /// private one (10.k.0.2) for a host behind a NAT.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn open(&self) -> Result<File, LabError> {
        File::open(format!("/var/run/netns/{}", self.name)).map_err(|e| LabError::Enter {
            ns: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Runs `f` inside the namespace, on a fresh OS thread (`setns` changes
    /// only the calling thread), and returns its result. A panic in `f` is
    /// passed on to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let ns = self.open()?;
        let name = self.name.as_str();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("netns {name}"))
                .spawn_scoped(scope, move || {
                    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Enter {
                        ns: name.to_owned(),
                        reason: e.to_string(),
                    })?;
                    drop(ns);
                    Ok(f())
                })
                .map_err(LabError::Thread)?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` inside the namespace on a new OS thread and returns its
    /// handle. If entering the namespace fails after the thread started, the
    /// thread panics (and `join` returns the error).
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.open()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
                    panic!("cannot enter network namespace {name}: {e}");
                }
                drop(ns);
                f()
            })
            .map_err(LabError::Thread)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec NAME program`); add arguments with
    /// [`Command::arg`]. The caller bounds how long it runs.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}
