//! The command line does not mislead: it refuses what would silently do the
//! wrong thing, and never claims a success it did not have.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;
use rdv_net::io::{read_frame, write_message};
use rdv_net::node::{Node, NodeConfig, NodeEvent};
use rdv_wire::*;
use support::*;

#[test]
fn register_without_keep_needs_an_address_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let o = rdv(
        dir.path(),
        &["register", "--point", point.tcp(), "--namespace", "chat"],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("--address"), "{}", stderr(&o));
    // Nothing was registered.
    let o = rdv(
        dir.path(),
        &["discover", "--point", point.tcp(), "--namespace", "chat"],
    );
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "");
}

#[test]
fn unregister_without_an_identity_fails_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let o = rdv(
        dir.path(),
        &[
            "unregister",
            "--point",
            point.tcp(),
            "--namespace",
            "chat",
            "--identity",
            "never-made.key",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("never-made.key"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("unregistered"), "{}", stdout(&o));
    assert!(!dir.path().join("never-made.key").exists());
    // The default identity is not created either.
    let o = rdv(
        dir.path(),
        &["unregister", "--point", point.tcp(), "--namespace", "chat"],
    );
    expect_code(&o, 2);
    assert!(!dir.path().join("rdv-data/client.key").exists());
}

#[test]
fn discover_json_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let id = Keypair::generate_ed25519().public().to_peer_id();
    let nowhere = format!("/ip4/127.0.0.1/tcp/{closed}/p2p/{id}");
    let o = rdv(dir.path(), &["discover", "--point", &nowhere, "--json"]);
    expect_code(&o, 3);
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "{}", stdout(&o));
    assert_eq!(lines[0]["exit_code"], 3);
    assert!(lines[0]["error"].as_str().unwrap().contains("point"));
    // A usage error too.
    let o = rdv(
        dir.path(),
        &["discover", "--point", &nowhere, "--namespace", "", "--json"],
    );
    expect_code(&o, 2);
    assert_eq!(json_lines(&o)[0]["exit_code"], 2);
}

/// A point that answers every DISCOVER with one registration and no
/// cookie; counts the DISCOVERs.
async fn cookieless_point() -> (Node, String, Arc<AtomicUsize>) {
    let (node, mut events) = Node::start(
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NodeConfig::default()
        },
    )
    .unwrap();
    let addr = loop {
        if let Some(NodeEvent::Listening(a)) = events.recv().await {
            break a.to_string();
        }
    };
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let key = Keypair::generate_ed25519();
    let record = sign_record(
        &key,
        &["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
        1,
        RecordFormat::Standard,
    )
    .unwrap();
    let answer = Message::DiscoverResponse(DiscoverResponse {
        status: ResponseStatus::Ok,
        status_text: String::new(),
        registrations: vec![Registration {
            namespace: Namespace::new("chat").unwrap(),
            signed_peer_record: record.into(),
            ttl: Ttl::from_secs(7200),
        }],
        cookie: None,
    });
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let mut incoming = node
        .control
        .clone()
        .accept(StreamProtocol::new(PROTOCOL_ID))
        .unwrap();
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
            if let Ok(Some(_)) = read_frame(&mut s, &mut d, Duration::from_secs(10)).await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = write_message(&mut s, &answer).await;
            }
        }
    });
    (node, addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_all_stops_when_the_point_gives_no_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, asked) = cookieless_point().await;
    let child = tokio::process::Command::new(RDV)
        .args(["discover", "--point", &addr, "--all", "--json"])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("rdv discover --all never stopped")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// `rdv bench --idle`: the peers stay connected through the rest and the
/// point's process is read (memory with the peers, CPU at rest); a `--pid`
/// or `--name` list that does not match the points is refused up front.
#[test]
fn bench_idle_holds_its_peers_and_reads_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &["--store", "memory"]);
    let pid = point.child.id().to_string();
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--idle",
            "5",
            "--seconds",
            "1",
            "--point",
            point.tcp(),
        ];
        args.extend_from_slice(extra);
        rdv(dir.path(), &args)
    };
    let o = bench(&["--pid", &pid, "--pid", &pid]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("one process id per point"),
        "{}",
        stderr(&o)
    );
    let o = bench(&["--name", "a", "--name", "b"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("one name per point"), "{}", stderr(&o));

    let o = bench(&["--pid", &pid, "--name", "rdv"]);
    expect_code(&o, 0);
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with("| rdv |"))
        .unwrap_or_else(|| panic!("no row for the point: {}", stdout(&o)))
        .to_string();
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    // point, peers, set-up, connected after rest, RSS before, RSS with
    // peers, per peer, CPU, wake-ups, DISCOVER p50, p99
    assert_eq!(cells[1], "5", "{row}");
    assert_eq!(cells[3], "5", "every peer still connected: {row}");
    for (i, unit) in [(4, "MiB"), (5, "MiB"), (7, "ms/s"), (8, "/s"), (9, "ms")] {
        assert!(
            cells[i].ends_with(unit),
            "column {i} read from /proc: {row}"
        );
    }
}
