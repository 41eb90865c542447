//! The `rdv` command line as a user meets it: real processes on loopback.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn peer_id_of(addr: &str) -> &str {
    addr.rsplit("/p2p/").next().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for the process to exit, up to `limit`.
fn wait_exit(d: &mut Daemon, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = d.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn point_prints_its_addresses_and_keeps_its_identity_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = rdv_point(dir.path(), &[]);
    for a in &first.addrs {
        assert!(a.starts_with("/ip4/127.0.0.1/"), "{a}");
        assert!(a.contains("/p2p/12D3KooW"), "{a}");
    }
    let id = peer_id_of(first.tcp()).to_string();
    let key = dir.path().join("rdv-data/identity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = dir.path().join("rdv-data/cookie.key");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(first);
    let second = rdv_point(dir.path(), &[]);
    assert_eq!(peer_id_of(second.tcp()), id);
}

#[test]
fn sigterm_and_sigint_stop_the_point_cleanly() {
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut point = rdv_point(dir.path(), &[]);
        signal(point.child.id(), sig);
        assert_eq!(
            wait_exit(&mut point, Duration::from_secs(10)),
            Some(0),
            "after {sig}"
        );
    }
}

#[test]
fn register_discover_unregister_over_tcp_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let over_quic = register_as(dir.path(), point.quic(), "q", "chat", "auto");
    let over_tcp = register_as(dir.path(), point.tcp(), "t", "chat", "auto");
    let o = rdv(
        dir.path(),
        &[
            "discover",
            "--point",
            point.quic(),
            "--namespace",
            "chat",
            "--json",
        ],
    );
    expect_code(&o, 0);
    let peers: Vec<String> = json_lines(&o)
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(peers, vec![over_quic.clone(), over_tcp.clone()]);
    expect_code(
        &rdv(
            dir.path(),
            &[
                "unregister",
                "--point",
                point.tcp(),
                "--namespace",
                "chat",
                "--identity",
                "q.key",
            ],
        ),
        0,
    );
    let o = rdv(
        dir.path(),
        &["discover", "--point", point.tcp(), "--namespace", "chat"],
    );
    let text = stdout(&o);
    assert!(
        text.contains(&over_tcp) && !text.contains(&over_quic),
        "{text}"
    );
}

#[test]
fn exit_codes_say_whose_fault_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    // 1: the point refused, with the status name and its text.
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point.tcp(),
            "--namespace",
            "chat",
            "--ttl",
            "5",
        ],
    );
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("E_INVALID_TTL") && stderr(&o).contains("7200s..=259200s"),
        "{}",
        stderr(&o)
    );
    // 2: usage: an address without /p2p/, a namespace that is too long, a bad flag.
    let no_id = point.tcp().rsplit_once("/p2p/").unwrap().0.to_string();
    let o = rdv(dir.path(), &["discover", "--point", &no_id]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("/p2p/<peer id>"), "{}", stderr(&o));
    let long = "x".repeat(256);
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point.tcp(),
            "--namespace",
            &long,
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("255"), "{}", stderr(&o));
    expect_code(&rdv(dir.path(), &["discover", "--no-such-flag"]), 2);
    // 3: nobody listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nowhere = format!(
        "/ip4/127.0.0.1/tcp/{closed}/p2p/{}",
        peer_id_of(point.tcp())
    );
    let o = rdv(dir.path(), &["discover", "--point", &nowhere]);
    expect_code(&o, 3);
    assert!(
        stderr(&o).contains("is `rdv point` running"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_file_sets_limits_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("point.toml");
    std::fs::write(
        &cfg,
        "min_ttl = 60\ndefault_ttl = 600\nmax_ttl = 3600\nmax_registrations_per_peer = 1\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let point = rdv_point(dir.path(), &["--config", cfg]);
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point.tcp(),
            "--namespace",
            "a",
            "--ttl",
            "60",
        ],
    );
    expect_code(&o, 0);
    assert!(stdout(&o).contains("for 60s"), "{}", stdout(&o));
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point.tcp(),
            "--namespace",
            "b",
        ],
    );
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("E_NOT_AUTHORIZED") && stderr(&o).contains("at most 1"),
        "{}",
        stderr(&o)
    );
    drop(point);
    // A flag overrides the file.
    let point = rdv_point(dir.path(), &["--config", cfg, "--min-ttl", "120"]);
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            point.tcp(),
            "--namespace",
            "a",
            "--ttl",
            "60",
        ],
    );
    expect_code(&o, 1);
    assert!(stderr(&o).contains("120s..=3600s"), "{}", stderr(&o));
}

#[test]
fn bad_configuration_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // (file, the key named, what the message says is allowed)
    let cases = [
        (
            "max_discover_limit = 0\n",
            "max_discover_limit",
            "at least 1",
        ),
        (
            "min_ttl = 100\nmax_ttl = 50\n",
            "min_ttl",
            "min_ttl (100) <= default_ttl (7200) <= max_ttl (50)",
        ),
        ("max_connections = 0\n", "max_connections", "at least 1"),
        ("max_namespace = 5\n", "max_namespace", "unknown field"),
        ("listen = [\"not an address\"]\n", "listen", "listen"),
        ("min_ttl = \"two hours\"\n", "min_ttl", "expected u64"),
        (
            "max_discover_limit = -3\n",
            "max_discover_limit",
            "expected u64",
        ),
    ];
    for (text, key, allowed) in cases {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = rdv(
            dir.path(),
            &[
                "point",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
        );
        expect_code(&o, 2);
        assert!(stderr(&o).contains(key), "{text:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(allowed), "{text:?}: {}", stderr(&o));
    }
    let o = rdv(dir.path(), &["point", "--config", "/nonexistent/rdv.toml"]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("/nonexistent/rdv.toml"),
        "{}",
        stderr(&o)
    );
    // A corrupt identity file is named and left alone.
    let id = dir.path().join("bad.key");
    std::fs::write(&id, b"garbage").unwrap();
    let o = rdv(
        dir.path(),
        &[
            "point",
            "--identity",
            id.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("bad.key"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&id).unwrap(), b"garbage");
}

#[test]
fn metrics_count_registrations_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let point = rdv_point(dir.path(), &["--metrics", &addr]);
    register_as(dir.path(), point.tcp(), "a", "chat", "standard");
    expect_code(
        &rdv(
            dir.path(),
            &[
                "register",
                "--address",
                "/ip4/127.0.0.1/tcp/4001",
                "--point",
                point.tcp(),
                "--namespace",
                "chat",
                "--ttl",
                "1",
            ],
        ),
        1,
    );
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    for line in [
        "rdv_registrations 1",
        "rdv_namespaces 1",
        "rdv_requests_total{type=\"register\",status=\"OK\"} 1",
        "rdv_requests_total{type=\"register\",status=\"E_INVALID_TTL\"} 1",
        "rdv_verification_seconds_count 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
}

#[test]
fn keep_refreshes_before_expiry_and_unregisters_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &["--min-ttl", "2", "--default-ttl", "2"]);
    // A 2 s TTL is refreshed at half its life, so a refresh comes within seconds.
    let mut keep = Command::new(RDV)
        .args([
            "register",
            "--keep",
            "--point",
            point.tcp(),
            "--namespace",
            "live",
            "--ttl",
            "2",
            "--identity",
            "k.key",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(keep.stdout.take().unwrap());
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Three refreshes at half-life: the first 2 s TTL ran out long ago.
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("refreshed"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "no refresh: {lines:?}");
        let mut l = String::new();
        if std::io::BufRead::read_line(&mut out, &mut l).unwrap() == 0 {
            panic!("register --keep exited: {lines:?}");
        }
        lines.push(l);
    }
    assert!(lines[0].starts_with("registered live"), "{lines:?}");
    // Still registered past the first TTL, thanks to the refreshes.
    let o = rdv(
        dir.path(),
        &["discover", "--point", point.tcp(), "--namespace", "live"],
    );
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    signal(keep.id(), "-INT");
    let status = keep.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let o = rdv(
        dir.path(),
        &["discover", "--point", point.tcp(), "--namespace", "live"],
    );
    assert_eq!(stdout(&o), "", "unregistered on Ctrl-C");
}

#[test]
fn limit_flags_and_addresses_given_on_the_command_line_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(
        dir.path(),
        &[
            "--max-registrations-per-namespace",
            "2",
            "--max-namespaces",
            "2",
            "--max-discover-limit",
            "1",
        ],
    );
    let p = point.tcp();
    // --address: the record carries exactly the addresses given.
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--point",
            p,
            "--namespace",
            "a",
            "--identity",
            "one.key",
            "--address",
            "/ip4/192.0.2.7/tcp/4242",
            "--address",
            "/ip4/192.0.2.8/udp/4242/quic-v1",
        ],
    );
    expect_code(&o, 0);
    register_as(dir.path(), p, "two", "a", "standard");
    let refused_unavailable = |ns: &str| {
        let o = rdv(
            dir.path(),
            &[
                "register",
                "--address",
                "/ip4/127.0.0.1/tcp/4001",
                "--point",
                p,
                "--namespace",
                ns,
                "--identity",
                "three.key",
            ],
        );
        expect_code(&o, 1);
        assert!(stderr(&o).contains("E_UNAVAILABLE"), "{ns}: {}", stderr(&o));
    };
    // --max-registrations-per-namespace 2: a third peer in "a" is refused.
    refused_unavailable("a");
    // --max-namespaces 2: "b" fits, "c" does not.
    register_as(dir.path(), p, "three", "b", "standard");
    refused_unavailable("c");
    // --max-discover-limit 1: one registration per answer, whatever asked;
    // --all pages through both.
    let o = rdv(
        dir.path(),
        &[
            "discover",
            "--point",
            p,
            "--namespace",
            "a",
            "--limit",
            "10",
            "--json",
        ],
    );
    expect_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let o = rdv(
        dir.path(),
        &[
            "discover",
            "--point",
            p,
            "--namespace",
            "a",
            "--all",
            "--json",
        ],
    );
    expect_code(&o, 0);
    let regs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(regs.len(), 2, "{}", stdout(&o));
    let given = regs
        .iter()
        .find(|r| {
            r["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "/ip4/192.0.2.7/tcp/4242")
        })
        .expect("the registration with the given addresses");
    assert_eq!(
        given["addresses"],
        serde_json::json!(["/ip4/192.0.2.7/tcp/4242", "/ip4/192.0.2.8/udp/4242/quic-v1"])
    );
}
