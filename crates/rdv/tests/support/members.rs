//! Helpers for the member commands' tests: `rdv` processes (plain or
//! inside a NAT lab namespace), contexts, agents and pipes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// A long-running `rdv` process with its stdout and stderr lines.
pub struct Proc {
    pub child: Child,
    pub out: mpsc::Receiver<String>,
    /// Held so the reader thread keeps draining stderr (a full pipe would
    /// block the process on its next log line).
    _err: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start rdv");
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        Proc {
            child,
            out,
            _err: err,
        }
    }

    /// The first stdout line starting with `prefix` (bounded wait).
    pub fn line(&self, prefix: &str, within: Duration) -> String {
        wait_line(&self.out, prefix, within)
            .unwrap_or_else(|| panic!("no stdout line starting with {prefix:?} within {within:?}"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// `rdv --data DIR args...` through `base` (plain, or inside a namespace).
pub fn cmd(base: impl Fn() -> Command, data: &Path, args: &[&str]) -> Command {
    let mut c = base();
    c.arg("--data").arg(data).args(args);
    c
}

pub fn plain() -> Command {
    Command::new(RDV)
}

pub fn output(mut c: Command) -> Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rdv");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("rdv finished within 60 s")
        .expect("output")
}

/// Two members of one context: `a` created it, `b` joined with a bearer
/// invitation. Returns the context id both printed.
pub fn create_and_join(base: &dyn Fn() -> Command, a: &Path, b: &Path) -> String {
    let created = output(cmd(base, a, &["context", "create", "home"]));
    expect_code(&created, 0);
    let id = stdout(&created).trim().to_owned();
    let invite = output(cmd(base, a, &["context", "invite", "home"]));
    expect_code(&invite, 0);
    let text = stdout(&invite).trim().to_owned();
    assert!(text.starts_with("rdv-invite-v1:"), "{text}");
    let joined = output(cmd(
        base,
        b,
        &["context", "join", &text, "--name", "family"],
    ));
    expect_code(&joined, 0);
    assert_eq!(
        stdout(&joined).trim(),
        id,
        "join prints the same context id"
    );
    id
}

/// Waits (bounded) until the agent of `data` holds a descriptor of `peer`
/// that can be reached through the relay.
pub fn wait_reachable_by_relay(
    base: &dyn Fn() -> Command,
    data: &Path,
    peer: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let st = output(cmd(base, data, &["agent", "status", "--json"]));
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(stdout(&st).trim()) {
            let hit = doc["contexts"][0]["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["authority"] == peer && m["reachable_by_relay"] == true);
            if hit {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Starts `rdv agent` and returns it with the authority of its `ready` line.
pub fn agent(c: Command) -> (Proc, String) {
    let p = Proc::spawn(c);
    let ready = p.line("ready ", Duration::from_secs(30));
    let authority = ready["ready ".len()..].trim().to_owned();
    assert_eq!(authority.len(), 64, "{ready}");
    (p, authority)
}

/// One end of a pipe: how to run `rdv` there, its data directory and its
/// name for the context.
pub struct Side<'a> {
    pub base: &'a dyn Fn() -> Command,
    pub data: &'a Path,
    pub context: &'a str,
}

/// The end of a pipe run by a plain `rdv` (no namespace).
pub fn plain_side<'a>(data: &'a Path, context: &'a str) -> Side<'a> {
    Side {
        base: &plain,
        data,
        context,
    }
}

/// Pipes `bytes` from `from` to `to`'s listener (authority `to_auth`);
/// returns what the listener printed, the connector's stderr and both exit
/// codes.
pub fn pipe(
    from: Side<'_>,
    to: Side<'_>,
    to_auth: &str,
    bytes: &[u8],
) -> (Vec<u8>, String, Option<i32>, Option<i32>) {
    pipe_via(from, to, to_auth, bytes, None)
}

/// [`pipe`] with `pipe connect --via VIA` when given.
pub fn pipe_via(
    from: Side<'_>,
    to: Side<'_>,
    to_auth: &str,
    bytes: &[u8],
    via: Option<&str>,
) -> (Vec<u8>, String, Option<i32>, Option<i32>) {
    let (base_from, from, from_ctx) = (from.base, from.data, from.context);
    let (base_to, to, to_ctx) = (to.base, to.data, to.context);
    let sink = to.join("pipe.out");
    let mut listen = cmd(base_to, to, &["pipe", "listen", "--context", to_ctx]);
    let file = std::fs::File::create(&sink).expect("sink");
    let mut listener = listen
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipe listen");
    let err = lines(listener.stderr.take().expect("stderr"));
    assert!(
        wait_line(&err, "listening", Duration::from_secs(10)).is_some(),
        "pipe listen printed its `listening` line"
    );
    let mut args = vec!["pipe", "connect", "--context", from_ctx, "--peer", to_auth];
    if let Some(v) = via {
        args.extend(["--via", v]);
    }
    let mut connect = cmd(base_from, from, &args);
    let mut sender = connect
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipe connect");
    let mut stdin = sender.stdin.take().expect("stdin");
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sender.wait_with_output());
    });
    let sent = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("pipe connect finished within 180 s")
        .expect("output");
    let _ = writer.join();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut code = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = listener.try_wait() {
            code = s.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = listener.kill();
    let _ = listener.wait();
    (
        std::fs::read(&sink).unwrap_or_default(),
        String::from_utf8_lossy(&sent.stderr).into_owned(),
        sent.status.code(),
        code,
    )
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    // A keyed BLAKE3 stream would do; the test only needs bytes that a
    // truncation or reordering would change.
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
