//! Running `rdv` and `rdv-libp2p-peer` as real processes on loopback.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod members;

pub const RDV: &str = env!("CARGO_BIN_EXE_rdv");
pub const PEER: &str = env!("CARGO_BIN_EXE_rdv-libp2p-peer");

/// A long-running process, killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// Its "listening on" addresses.
    pub addrs: Vec<String>,
    /// The other lines it printed before the last of those.
    pub said: Vec<String>,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn tcp(&self) -> &str {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .expect("a TCP address")
    }
    pub fn quic(&self) -> &str {
        self.addrs
            .iter()
            .find(|a| a.contains("/quic-v1/"))
            .expect("a QUIC address")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` in `dir` and waits for `want` "listening on" lines.
pub fn start(program: &str, args: &[&str], dir: &Path, want: usize) -> Daemon {
    start_env(program, args, dir, want, &[])
}

/// [`start`] with extra environment variables.
pub fn start_env(
    program: &str,
    args: &[&str],
    dir: &Path,
    want: usize,
    envs: &[(&str, &std::ffi::OsStr)],
) -> Daemon {
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addrs = Vec::new();
    let mut said = Vec::new();
    while addrs.len() < want {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{program} printed {} of {want} listen lines", addrs.len()));
        if let Some(a) = line.strip_prefix("listening on ") {
            addrs.push(a.to_string());
        } else {
            said.push(line);
        }
    }
    Daemon {
        child,
        addrs,
        said,
        dir: dir.to_path_buf(),
    }
}

/// Starts `rdv point` on loopback TCP and QUIC with extra `args`.
pub fn rdv_point(dir: &Path, args: &[&str]) -> Daemon {
    let mut all = vec![
        "point",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ];
    all.extend_from_slice(args);
    start(RDV, &all, dir, 2)
}

/// Runs a command to completion (bounded by `timeout`).
pub fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 60 s"))
        .unwrap()
}

pub fn rdv(dir: &Path, args: &[&str]) -> Output {
    run(RDV, args, dir)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
pub fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// JSON lines of an output.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The peers of JSON registrations (`rdv discover --json` lines, or a
/// foreign client's registrations array).
pub fn peer_set<'a>(
    regs: impl IntoIterator<Item = &'a serde_json::Value>,
) -> std::collections::BTreeSet<String> {
    regs.into_iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect()
}

/// The peers of a foreign client's `{"ok":true,"registrations":[...]}` line.
pub fn discovered(line: &serde_json::Value) -> std::collections::BTreeSet<String> {
    assert_eq!(line["ok"], true, "{line}");
    peer_set(line["registrations"].as_array().unwrap())
}

/// `rdv unregister` of the identity in `key` from `ns` at `point`, which
/// must succeed.
pub fn unregister_as(dir: &Path, point: &str, ns: &str, key: &str) {
    let o = rdv(
        dir,
        &[
            "unregister",
            "--point",
            point,
            "--namespace",
            ns,
            "--identity",
            key,
        ],
    );
    expect_code(&o, 0);
}

/// Registers a fresh identity `name` in `ns` at `point` in `format`; returns its peer id.
pub fn register_as(dir: &Path, point: &str, name: &str, ns: &str, format: &str) -> String {
    let key = format!("{name}.key");
    let o = rdv(
        dir,
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point,
            "--namespace",
            ns,
            "--identity",
            &key,
            "--record-format",
            format,
        ],
    );
    expect_code(&o, 0);
    // "registered NS as PEER at POINT for Ns"
    stdout(&o).split_whitespace().nth(3).unwrap().to_string()
}

/// `GET path` over HTTP/1.0 (the server closes after answering): status
/// code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A loopback TCP port free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
