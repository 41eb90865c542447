//! The private side as a person runs it (issue 12): `rdv id`, `rdv context
//! create|invite|join`, `rdv agent`, `rdv pipe listen|connect`, each a real
//! process; members meet on a real `rdv point` under the blinded namespace,
//! introduce themselves, sync and pipe bytes over Noise channels, on
//! loopback. The NAT lab runs are in `natlab.rs`.

mod support;

use std::path::PathBuf;

use support::members::*;
use support::*;

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
    // Both know each other first (introductions through the point): a
    // dial the moment one side has the other's descriptor can reach a
    // peer that has not yet learnt the dialler's key, which answers
    // nothing, and the race's next transport wins; the line below names
    // the transport.
    let knows = |data: &std::path::Path, who: &str| {
        status_of(data)["contexts"][0]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["authority"] == who && m["descriptor_current"] == true)
    };
    assert!(within_40s(|| knows(&a, &bob_auth) && knows(&b, &alice_auth)));

    let bytes = random_bytes(1 << 20);
    let (got, err, sent, listened) = pipe(
        plain_side(&a, "home"),
        plain_side(&b, "family"),
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
        vec![format!("connected to {bob_auth} via quic-direct")],
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
    assert_eq!(bob.terminate(), Some(0));

    // Both agents restart on other ports: each still holds the other's old
    // descriptor (valid for hours) and would dial a dead address; the
    // point shows the new one, an introduction brings the new descriptor,
    // and the pipe goes through.
    let (_alice, _) = agent(cmd(plain, &a, &common));
    let (_bob, _) = agent(cmd(plain, &b, &common));
    let (got, err, sent, _) = pipe(
        plain_side(&a, "home"),
        plain_side(&b, "family"),
        &bob_auth,
        b"after a restart",
    );
    assert_eq!(sent, Some(0), "pipe connect after a restart: {err}");
    assert_eq!(got, b"after a restart");
}

#[test]
fn member_commands_refuse_bad_input_clearly_and_write_nothing() {
    let tmp = temp();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    expect_code(&output(cmd(plain, &a, &["context", "create", "home"])), 0);

    // Leaving: an unknown name is refused; a known one is forgotten, with
    // its journal; the name is free again.
    let unknown = output(cmd(plain, &a, &["context", "leave", "nowhere"]));
    expect_code(&unknown, 1);
    assert!(
        stderr(&unknown).contains("rdv context list"),
        "{}",
        stderr(&unknown)
    );
    expect_code(&output(cmd(plain, &a, &["context", "create", "temp"])), 0);
    let left = output(cmd(plain, &a, &["context", "leave", "temp"]));
    expect_code(&left, 0);
    let listed = stdout(&output(cmd(plain, &a, &["context", "list"])));
    assert!(
        !listed.contains("temp") && listed.contains("home"),
        "{listed}"
    );
    expect_code(&output(cmd(plain, &a, &["context", "create", "temp"])), 0);

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

/// Issue 11 on loopback: a point serving the relay; one member designates
/// it, the other adopts it from that member's descriptor; a pipe forced
/// through the relay carries the bytes intact, and the relay process (its
/// test tap sees every payload it forwards) never sees the plaintext.
#[test]
fn members_pipe_through_the_points_relay_which_forwards_only_ciphertext() {
    const MARKER: &[u8] = b"RDV-PLAINTEXT-MARKER-6b1f";
    let tmp = temp();
    let tap = tmp.path().join("relay.tap");
    let point = support::start_env(
        support::RDV,
        &[
            "point",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--store",
            "memory",
            "--relay-listen",
            "127.0.0.1:0",
        ],
        tmp.path(),
        1,
        &[("RDV_RELAY_TAP", tap.as_os_str())],
    );
    let token = point
        .said
        .iter()
        .find_map(|l| l.strip_prefix("relay on "))
        .expect("the point printed `relay on RELAY`")
        .to_owned();
    assert!(token.starts_with("rdv-relay-v1:") && !token.contains(' '));
    let (a, b): (PathBuf, PathBuf) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let id = create_and_join(&plain, &a, &b);
    // Only alice designates it; twice is not an error.
    for _ in 0..2 {
        expect_code(
            &output(cmd(plain, &a, &["context", "relay", "add", "home", &token])),
            0,
        );
    }
    let bad = output(cmd(
        plain,
        &a,
        &["context", "relay", "add", "home", "relay.example:1"],
    ));
    expect_code(&bad, 2);
    assert!(stderr(&bad).contains("rdv-relay-v1:"), "{}", stderr(&bad));

    let common = ["agent", "--point", point.tcp(), "--listen", "127.0.0.1:0"];
    let (alice, _) = agent(cmd(plain, &a, &common));
    let (_bob, bob_auth) = agent(cmd(plain, &b, &common));
    // Bob adopts the relay from alice's descriptor, connects, and his
    // descriptor (with the relay hint) reaches alice.
    assert!(
        wait_reachable_by_relay(&plain, &a, &bob_auth, std::time::Duration::from_secs(60)),
        "bob's descriptor never carried the relay hint"
    );
    let bob_status = output(cmd(plain, &b, &["agent", "status", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(stdout(&bob_status).trim()).expect("json");
    assert_eq!(
        doc["contexts"][0]["relay"]["relay"],
        token.as_str(),
        "bob adopted it"
    );

    let mut bytes = random_bytes(RELAYED_BYTES);
    for chunk in bytes.chunks_mut(4096) {
        let n = MARKER.len().min(chunk.len());
        chunk[..n].copy_from_slice(&MARKER[..n]);
    }
    let (got, err, sent, listened) = pipe_via(
        plain_side(&a, "home"),
        plain_side(&b, "family"),
        &bob_auth,
        &bytes,
        Some("relay"),
    );
    assert_eq!(sent, Some(0), "pipe connect: {err}");
    assert_eq!(listened, Some(0));
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![format!("connected to {bob_auth} via relay")]
    );
    assert!(
        got == bytes,
        "{} bytes arrived, not the {} sent",
        got.len(),
        bytes.len()
    );
    let seen = std::fs::read(&tap).expect("the relay's tap");
    assert!(
        seen.len() >= bytes.len(),
        "the relay forwarded {} bytes, fewer than the {} piped: the bytes did not go through it",
        seen.len(),
        bytes.len()
    );
    assert!(
        !seen.windows(MARKER.len()).any(|w| w == MARKER),
        "the relay saw plaintext"
    );

    // Leaving the context: refused while the agent runs, then forgets the
    // context with its journal and relay designation.
    let busy = output(cmd(plain, &a, &["context", "leave", "home"]));
    expect_code(&busy, 1);
    assert!(stderr(&busy).contains("stop it first"), "{}", stderr(&busy));
    alice.terminate();
    let journal = a.join("journals").join(format!("{id}.db"));
    assert!(journal.exists(), "alice's agent kept a journal");
    assert!(a.join("relays").join(&id).exists());
    let left = output(cmd(plain, &a, &["context", "leave", "home"]));
    expect_code(&left, 0);
    assert_eq!(stdout(&left).trim(), id);
    assert!(!journal.exists() && !a.join("journals").join(format!("{id}.db-wal")).exists());
    assert!(!a.join("relays").join(&id).exists());
    assert!(stdout(&output(cmd(plain, &a, &["context", "list"]))).is_empty());
}

/// The figure: 100 MiB (about 40 s in a debug build on 2 cores).
const RELAYED_BYTES: usize = 100 << 20;

/// `rdv agent status --json` of `data`, parsed (`Null` if it did not answer).
fn status_of(data: &std::path::Path) -> serde_json::Value {
    let st = output(cmd(plain, data, &["agent", "status", "--json"]));
    serde_json::from_str(stdout(&st).trim()).unwrap_or_default()
}

/// Polls `f` (bounded: 40 s) until it holds.
fn within_40s(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// `rdv context remove` (issue 12): the admin advances the epoch without a
/// member and the rekey reaches the others through the journal, here a
/// member whose agent was stopped meanwhile: restarted, it makes a
/// handshake under the epoch it knows (the one before is still accepted),
/// syncs, follows the rekey and pipes under the new epoch; the removed
/// member stays behind and can no longer reach anyone. Bad requests are
/// refused with the right exit code.
#[test]
fn an_admin_removes_a_member_and_the_others_follow_through_the_journal() {
    let tmp = temp();
    let point = rdv_point(tmp.path(), &["--store", "memory"]);
    let dir = |n: &str| tmp.path().join(n);
    let (a, b, c) = (dir("alice"), dir("bob"), dir("carol"));
    create_and_join(&plain, &a, &b);
    let invite = output(cmd(plain, &a, &["context", "invite", "home"]));
    let text = stdout(&invite).trim().to_owned();
    expect_code(
        &output(cmd(
            plain,
            &c,
            &["context", "join", &text, "--name", "friends"],
        )),
        0,
    );
    let common = ["agent", "--point", point.tcp(), "--listen", "127.0.0.1:0"];
    let (_alice, alice_auth) = agent(cmd(plain, &a, &common));
    let (bob, bob_auth) = agent(cmd(plain, &b, &common));
    let (_carol, carol_auth) = agent(cmd(plain, &c, &common));
    // Everyone knows everyone (descriptors through the point and sync).
    let knows = |data: &std::path::Path, who: &str| {
        status_of(data)["contexts"][0]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["authority"] == who && m["descriptor_current"] == true)
    };
    assert!(within_40s(|| knows(&a, &bob_auth) && knows(&a, &carol_auth)));
    assert!(within_40s(|| knows(&b, &alice_auth) && knows(&c, &bob_auth)));

    // Refusals, each with its code and nothing changed.
    let remove = |data: &std::path::Path, ctx: &str, who: &str| {
        output(cmd(plain, data, &["context", "remove", ctx, who]))
    };
    let o = remove(&b, "family", &carol_auth);
    expect_code(&o, 1);
    assert!(stderr(&o).contains("only an admin"), "{}", stderr(&o));
    let o = remove(&a, "home", "carol");
    expect_code(&o, 2);
    assert!(stderr(&o).contains("64 hex digits"), "{}", stderr(&o));
    let o = remove(&a, "home", &alice_auth);
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("cannot remove itself"),
        "{}",
        stderr(&o)
    );
    assert_eq!(status_of(&a)["contexts"][0]["epoch"], 0);

    // Bob is away when Alice removes Carol.
    assert_eq!(bob.terminate(), Some(0));
    let o = remove(&a, "home", &carol_auth);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "1", "the new epoch");
    let members = |data: &std::path::Path, ctx: &str| {
        stdout(&output(cmd(plain, data, &["context", "members", ctx])))
    };
    assert!(!members(&a, "home").contains(&carol_auth));

    // Back, Bob catches up from the journal.
    let (_bob, _) = agent(cmd(plain, &b, &common));
    assert!(
        within_40s(|| status_of(&b)["contexts"][0]["epoch"] == 1),
        "bob follows the rekey: {}",
        status_of(&b)
    );
    assert!(within_40s(|| !members(&b, "family").contains(&carol_auth)));
    assert!(within_40s(|| knows(&a, &bob_auth)));
    let bytes = random_bytes(64 * 1024);
    let side = |data, context| Side {
        base: &plain,
        data,
        context,
    };
    let (got, err, sent, _) = pipe(side(&a, "home"), side(&b, "family"), &bob_auth, &bytes);
    assert_eq!(sent, Some(0), "alice to bob under epoch 1: {err}");
    assert!(got == bytes);

    // Carol refused the rekey (no box for her) and reaches no one. Alice
    // still answers handshakes under epoch 0 (for members that missed the
    // advance) at the address Carol has: only the roster keeps Carol out.
    assert_eq!(status_of(&c)["contexts"][0]["epoch"], 0);
    let (_, err, sent, _) = pipe(side(&c, "friends"), side(&a, "home"), &alice_auth, b"hello");
    assert_ne!(sent, Some(0), "carol must not reach alice: {err}");
}
