//! The private side as a person runs it (issue 12): `rdv id`, `rdv context
//! create|invite|join`, `rdv agent`, `rdv pipe listen|connect`, each a real
//! process; members meet on a real `rdv point` under the blinded namespace,
//! introduce themselves, sync and pipe bytes over Noise channels. On
//! loopback, and in the NAT lab (network namespaces, nftables) where one
//! member sits behind a NAT.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// A long-running `rdv` process with its stdout and stderr lines.
struct Proc {
    child: Child,
    out: mpsc::Receiver<String>,
    /// Held so the reader thread keeps draining stderr (a full pipe would
    /// block the process on its next log line).
    _err: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
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
    fn line(&self, prefix: &str, within: Duration) -> String {
        wait_line(&self.out, prefix, within)
            .unwrap_or_else(|| panic!("no stdout line starting with {prefix:?} within {within:?}"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    fn terminate(mut self) -> Option<i32> {
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

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
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

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, within: Duration) -> Option<String> {
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
fn cmd(base: impl Fn() -> Command, data: &Path, args: &[&str]) -> Command {
    let mut c = base();
    c.arg("--data").arg(data).args(args);
    c
}

fn plain() -> Command {
    Command::new(RDV)
}

fn output(mut c: Command) -> Output {
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
fn create_and_join(base: &dyn Fn() -> Command, a: &Path, b: &Path) -> String {
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

/// Starts `rdv agent` and returns it with the authority of its `ready` line.
fn agent(c: Command) -> (Proc, String) {
    let p = Proc::spawn(c);
    let ready = p.line("ready ", Duration::from_secs(30));
    let authority = ready["ready ".len()..].trim().to_owned();
    assert_eq!(authority.len(), 64, "{ready}");
    (p, authority)
}

/// One end of a pipe: how to run `rdv` there, its data directory and its
/// name for the context.
struct Side<'a> {
    base: &'a dyn Fn() -> Command,
    data: &'a Path,
    context: &'a str,
}

/// Pipes `bytes` from `from` to `to`'s listener (authority `to_auth`);
/// returns what the listener printed, the connector's stderr and both exit
/// codes.
fn pipe(
    from: Side<'_>,
    to: Side<'_>,
    to_auth: &str,
    bytes: &[u8],
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
    let mut connect = cmd(
        base_from,
        from,
        &["pipe", "connect", "--context", from_ctx, "--peer", to_auth],
    );
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
        .recv_timeout(Duration::from_secs(60))
        .expect("pipe connect finished within 60 s")
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

fn random_bytes(n: usize) -> Vec<u8> {
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

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn two_members_on_loopback_meet_on_a_point_and_pipe_a_mebibyte() {
    let tmp = temp();
    let point = rdv_point(tmp.path(), &["--store", "memory"]);
    let (a, b): (PathBuf, PathBuf) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let id = create_and_join(&plain, &a, &b);

    let common = ["agent", "--point", point.tcp(), "--listen", "127.0.0.1:0"];
    let (alice, alice_auth) = agent(cmd(plain, &a, &common));
    let (bob, bob_auth) = agent(cmd(plain, &b, &common));
    assert_ne!(alice_auth, bob_auth);

    let bytes = random_bytes(1 << 20);
    let (got, err, sent, listened) = pipe(
        Side {
            base: &plain,
            data: &a,
            context: "home",
        },
        Side {
            base: &plain,
            data: &b,
            context: "family",
        },
        &bob_auth,
        &bytes,
    );
    assert_eq!(sent, Some(0), "pipe connect: {err}");
    assert_eq!(
        listened,
        Some(0),
        "pipe listen exits 0 when the member closes"
    );
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![format!("connected to {bob_auth} via tcp-direct")],
        "exactly one line on stderr"
    );
    assert!(
        got == bytes,
        "the listener printed {} bytes, not the 1 MiB sent",
        got.len()
    );

    // The status of each agent shows the other member, its descriptor and
    // the channel's transport.
    let st = output(cmd(plain, &b, &["agent", "status", "--json"]));
    expect_code(&st, 0);
    let doc: serde_json::Value = serde_json::from_str(stdout(&st).trim()).expect("json");
    let ctx = &doc["contexts"][0];
    assert_eq!(ctx["id"], id.as_str());
    let alice_row = ctx["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["authority"] == alice_auth.as_str())
        .expect("bob's agent knows alice");
    assert_eq!(alice_row["descriptor_current"], true);

    // The point saw only blinded namespaces.
    let seen = output(cmd(
        plain,
        &a,
        &["discover", "--point", point.tcp(), "--json"],
    ));
    for reg in json_lines(&seen) {
        let ns = reg["namespace"].as_str().unwrap_or_default();
        assert!(ns.starts_with("rdv1-") && !ns.contains(&id), "{ns}");
    }

    assert_eq!(
        alice.terminate(),
        Some(0),
        "SIGTERM stops the agent cleanly"
    );
    assert!(
        !a.join("agent.sock").exists(),
        "the control socket is removed"
    );
    drop(bob);
}

#[test]
fn member_commands_refuse_bad_input_clearly_and_write_nothing() {
    let tmp = temp();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    expect_code(&output(cmd(plain, &a, &["context", "create", "home"])), 0);

    // A context name that exists.
    let again = output(cmd(plain, &a, &["context", "create", "home"]));
    expect_code(&again, 1);
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );

    // A mistyped invitation (one character changed): usage, says so.
    let text = stdout(&output(cmd(plain, &a, &["context", "invite", "home"])))
        .trim()
        .to_owned();
    let mut typo = text.clone().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let bad = output(cmd(plain, &b, &["context", "join", &typo, "--name", "x"]));
    expect_code(&bad, 2);
    assert!(stderr(&bad).contains("mistyped"), "{}", stderr(&bad));

    // An expired one: refused.
    let old = stdout(&output(cmd(
        plain,
        &a,
        &["context", "invite", "home", "--expires", "0"],
    )))
    .trim()
    .to_owned();
    let expired = output(cmd(plain, &b, &["context", "join", &old, "--name", "x"]));
    expect_code(&expired, 1);
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    let listed = output(cmd(plain, &b, &["context", "list"]));
    assert_eq!(stdout(&listed), "", "a refused join stores nothing");

    // One sealed to another member: only that member can use it.
    let card_b = stdout(&output(cmd(plain, &b, &["id"]))).trim().to_owned();
    assert!(card_b.starts_with("rdv-member-v1:"));
    let c = tmp.path().join("c");
    let sealed = stdout(&output(cmd(
        plain,
        &a,
        &["context", "invite", "home", "--for", &card_b],
    )))
    .trim()
    .to_owned();
    let not_for_c = output(cmd(plain, &c, &["context", "join", &sealed, "--name", "x"]));
    expect_code(&not_for_c, 1);
    assert!(
        stderr(&not_for_c).contains("sealed to another"),
        "{}",
        stderr(&not_for_c)
    );
    expect_code(
        &output(cmd(plain, &b, &["context", "join", &sealed, "--name", "x"])),
        0,
    );

    // A card that does not read.
    let bad_card = format!("{}x", &card_b[..card_b.len() - 3]);
    let r = output(cmd(
        plain,
        &a,
        &["context", "invite", "home", "--for", &bad_card],
    ));
    expect_code(&r, 2);
    assert!(stderr(&r).contains("--for"), "{}", stderr(&r));

    // An unknown context.
    let r = output(cmd(plain, &a, &["context", "invite", "nope"]));
    expect_code(&r, 1);
    assert!(stderr(&r).contains("context list"), "{}", stderr(&r));

    // No agent running.
    let r = output(cmd(
        plain,
        &a,
        &[
            "pipe",
            "connect",
            "--context",
            "home",
            "--peer",
            &"ab".repeat(32),
        ],
    ));
    expect_code(&r, 3);
    assert!(stderr(&r).contains("no agent runs"), "{}", stderr(&r));
    let r = output(cmd(plain, &a, &["agent", "status"]));
    expect_code(&r, 3);

    // A data directory of another version.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(other.join("member.format"), "rdv-member-data 7\n").expect("write");
    let r = output(cmd(plain, &other, &["id"]));
    expect_code(&r, 2);
    assert!(stderr(&r).contains("another --data"), "{}", stderr(&r));
    assert!(!other.join("member.key").exists(), "nothing written");

    // With the agent running: a peer that is no member, a second agent.
    let (running, _) = agent(cmd(plain, &a, &["agent", "--listen", "127.0.0.1:0"]));
    let second = output(cmd(plain, &a, &["agent", "--listen", "127.0.0.1:0"]));
    expect_code(&second, 2);
    assert!(
        stderr(&second).contains("already runs"),
        "{}",
        stderr(&second)
    );
    let d = tmp.path().join("d");
    expect_code(&output(cmd(plain, &d, &["context", "create", "solo"])), 0);
    let members = stdout(&output(cmd(plain, &d, &["context", "members", "solo"])));
    let stranger = members
        .split_whitespace()
        .next()
        .expect("an authority")
        .to_owned();
    let r = output(cmd(
        plain,
        &a,
        &["pipe", "connect", "--context", "home", "--peer", &stranger],
    ));
    expect_code(&r, 1);
    assert!(stderr(&r).contains("not a known member"), "{}", stderr(&r));
    let r = output(cmd(
        plain,
        &a,
        &["pipe", "connect", "--context", "home", "--peer", "bob"],
    ));
    expect_code(&r, 2);
    let r = output(cmd(plain, &a, &["pipe", "listen", "--context", "nope"]));
    expect_code(&r, 1);
    drop(running);
}

/// In the NAT lab: a point and a member on the public segment, a member
/// behind a cone NAT (its published address is private). The natted
/// member reaches the public one by TCP direct; the public one cannot
/// open a channel to the natted one (no relay yet) and says so within a
/// bound instead of hanging.
#[test]
fn a_member_behind_a_nat_reaches_a_public_member_by_tcp_direct() {
    let Some(lab) = rdv_natlab::lab_or_skip() else {
        return;
    };
    let public = lab.public_host().expect("public host");
    let natted = lab
        .natted_host(rdv_natlab::NatKind::Cone)
        .expect("natted host");
    let tmp = temp();
    let (a, b) = (tmp.path().join("pub"), tmp.path().join("nat"));
    let on_public = || public.command(RDV);
    let on_natted = || natted.host.command(RDV);
    create_and_join(&on_public, &a, &b);

    let listen = format!("/ip4/{}/tcp/4001", public.ip());
    let point = Proc::spawn(cmd(
        on_public,
        &tmp.path().join("point"),
        &["point", "--listen", &listen, "--store", "memory"],
    ));
    let line = point.line("listening on ", Duration::from_secs(20));
    let point_addr = line["listening on ".len()..].trim().to_owned();

    let (pub_agent, pub_auth) = agent(cmd(on_public, &a, &["agent", "--point", &point_addr]));
    let (nat_agent, nat_auth) = agent(cmd(on_natted, &b, &["agent", "--point", &point_addr]));

    let bytes = random_bytes(256 * 1024);
    let (got, err, sent, listened) = pipe(
        Side {
            base: &on_natted,
            data: &b,
            context: "family",
        },
        Side {
            base: &on_public,
            data: &a,
            context: "home",
        },
        &pub_auth,
        &bytes,
    );
    assert_eq!(sent, Some(0), "natted to public: {err}");
    assert_eq!(listened, Some(0));
    assert!(err.contains("via tcp-direct"), "{err}");
    assert!(got == bytes, "{} bytes arrived", got.len());

    // The other way there is no path through the NAT over TCP.
    let started = Instant::now();
    let r = output(cmd(
        on_public,
        &a,
        &["pipe", "connect", "--context", "home", "--peer", &nat_auth],
    ));
    expect_code(&r, 3);
    assert!(stderr(&r).contains("no channel"), "{}", stderr(&r));
    assert!(started.elapsed() < Duration::from_secs(40));
    drop((pub_agent, nat_agent, point));
}
