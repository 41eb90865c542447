//! One-shot `ip` and `nft` calls, and the lab's error type.

use std::io::Write;
use std::process::{Command, Stdio};

/// What can go wrong while building or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program could not be started (missing, or not executable).
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// Opening a namespace or entering it failed.
    #[error("cannot enter network namespace {ns}: {reason}")]
    Enter {
        /// The namespace name.
        ns: String,
        /// Why.
        reason: String,
    },
    /// The code run inside a namespace could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The public segment has no free address left.
    #[error("no public address left on the lab segment")]
    Full,
}

/// Runs `program args...` once, waits for it, and fails on a non-zero exit.
/// Only used for `ip` and `nft`, which do not block.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), LabError> {
    run_with_input(program, args, None)
}

/// As [`run`], with `input` written to the program's stdin.
pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), LabError> {
    let cmd = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // The stdin handle is dropped (closed) at the end of this block, so
        // the program sees end of input.
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| LabError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Failed {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `program args...` and returns its stdout.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<String, LabError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Failed {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
