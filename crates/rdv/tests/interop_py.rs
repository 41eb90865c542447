//! rdv against py-libp2p 0.8.1's rendezvous (interop/python), each
//! direction separately, as real processes on loopback.
//!
//! py-libp2p speaks go-libp2p-rendezvous's original schema: `Register`
//! field 2 is an unsigned `PeerInfo`, not a signed envelope (docs/INTEROP.md).
//! Its virtualenv comes from `.ci/run` (`pip install libp2p==0.8.1` into
//! `interop/python/.venv`). Without it the tests are skipped, unless `CI` is
//! set: then they fail.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// The virtualenv's python when py-libp2p is installed; `None` (after
/// saying so) when it is not and this is not CI.
fn python() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/python");
    let python = dir.join(".venv/bin/python");
    if python.is_file() {
        return Some((python, dir));
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "interop/python/.venv is missing: create it and `pip install libp2p==0.8.1` (.ci/run does) before the tests"
        );
    }
    eprintln!("skipping: install py-libp2p in interop/python/.venv to enable the py interop tests");
    None
}

/// `rdv discover --json` in namespace `interop`.
fn rdv_discover(dir: &Path, point: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "discover",
        "--point",
        point,
        "--namespace",
        "interop",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = rdv(dir, &args);
    expect_code(&o, 0);
    json_lines(&o)
}

#[test]
fn py_libp2p_client_against_the_rdv_point() {
    let Some((python, py)) = python() else { return };
    let client = py.join("client.py");
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let p = point.tcp().to_string();
    let standard = register_as(dir.path(), &p, "s", "interop", "standard");
    let legacy = register_as(dir.path(), &p, "l", "interop", "legacy");

    // A py-libp2p peer with its key in `key`, running `ops` in order.
    let py_run = |key: Option<&str>, ops: &[&str]| {
        let mut args = vec![client.to_str().unwrap(), "--point", &p];
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        for op in ops {
            args.extend(["--op", op]);
        }
        let o = run(python.to_str().unwrap(), &args, dir.path());
        expect_code(&o, 0);
        let lines = json_lines(&o);
        let me = lines.last().unwrap()["me"].as_str().unwrap().to_string();
        (lines, me)
    };

    let (lines, p1) = py_run(
        Some("p1.key"),
        &[
            "register:interop",
            "register:interop:100000",
            "discover:interop",
            "subscribe:interop",
        ],
    );
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[0]["ttl"], 7200);
    assert_eq!(lines[1]["ttl"], 100000, "{}", lines[1]);
    // Only PeerInfo records: py-libp2p parses every registration as one, and
    // a signed envelope read that way fails its whole answer.
    assert_eq!(discovered(&lines[2]), [p1.clone()].into());
    let mine = &lines[2]["registrations"][0];
    assert!(
        mine["addresses"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/"))),
        "{mine}"
    );
    // A type of its schema rdv does not serve: an answer with a status, not
    // a closed stream.
    assert_eq!(lines[3]["ok"], true, "{}", lines[3]);
    assert_eq!(lines[3]["type"], "DISCOVER_SUBSCRIBE_RESPONSE");
    assert_eq!(lines[3]["status"], "E_UNAVAILABLE");

    // A second py peer; paging one registration at a time with py-libp2p's
    // own cookie handling.
    let (lines, p2) = py_run(
        Some("p2.key"),
        &["register:interop", "discover-all:interop:1"],
    );
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(discovered(&lines[1]), [p1.clone(), p2.clone()].into());
    assert!(lines[1]["pages"].as_u64().unwrap() >= 2, "{}", lines[1]);
    assert_eq!(lines[1]["registrations"].as_array().unwrap().len(), 2);

    // rdv's client reads every format, PeerInfo included, and the refresh's TTL.
    let regs = rdv_discover(dir.path(), &p, &[]);
    assert_eq!(
        peer_set(&regs),
        [standard.clone(), legacy.clone(), p1.clone(), p2.clone()].into()
    );
    let r1 = regs.iter().find(|r| r["peer"] == p1.as_str()).unwrap();
    let ttl = r1["ttl"].as_u64().unwrap();
    assert!((99_900..=100_000).contains(&ttl), "{r1}");
    assert!(!r1["addresses"].as_array().unwrap().is_empty(), "{r1}");

    // Unregister (no answer), then discover: gone for py and rdv alike. A
    // py peer that never registered is told apart by identify's agent.
    let (lines, _) = py_run(Some("p1.key"), &["unregister:interop"]);
    assert_eq!(lines[0]["ok"], true);
    let (lines, _) = py_run(None, &["discover:interop"]);
    assert_eq!(discovered(&lines[0]), [p2.clone()].into());
    let regs = rdv_discover(dir.path(), &p, &[]);
    assert_eq!(peer_set(&regs), [standard, legacy, p2].into());
}

#[test]
fn rdv_client_against_the_py_libp2p_point() {
    let Some((python, py)) = python() else { return };
    let server = py.join("server.py");
    let dir = tempfile::tempdir().unwrap();
    let point = start(
        python.to_str().unwrap(),
        &[server.to_str().unwrap(), "interop"],
        dir.path(),
        1,
    );
    let p = point.tcp().to_string();
    // "registered PEER TTL": py-libp2p's own client registered there.
    let resident = point.said[0].split_whitespace().nth(1).unwrap().to_string();

    // py-libp2p's point grants no default TTL (a REGISTER without one is
    // E_INVALID_TTL), so every registration here names one.
    let register = |key: &str, format: &str, port: &str| {
        rdv(
            dir.path(),
            &[
                "register",
                "--point",
                &p,
                "--namespace",
                "interop",
                "--address",
                &format!("/ip4/127.0.0.1/tcp/{port}"),
                "--identity",
                key,
                "--ttl",
                "7200",
                "--record-format",
                format,
            ],
        )
    };
    // A signed record is read as a PeerInfo naming someone else there.
    let o = register("s.key", "standard", "4001");
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("E_NOT_AUTHORIZED") && stderr(&o).contains("--record-format peer-info"),
        "{}",
        stderr(&o)
    );
    // `auto` moves on from the two signed formats to PeerInfo.
    let o = register("a.key", "auto", "4002");
    expect_code(&o, 0);
    let a = stdout(&o).split_whitespace().nth(3).unwrap().to_string();
    let o = register("b.key", "peer-info", "4003");
    expect_code(&o, 0);
    let b = stdout(&o).split_whitespace().nth(3).unwrap().to_string();

    // Its PeerInfo registrations read by rdv's client, one page at a time
    // (its cookies are 4-byte offsets, and the last page has none).
    let regs = rdv_discover(dir.path(), &p, &["--limit", "1", "--all"]);
    assert_eq!(
        peer_set(&regs),
        [resident.clone(), a.clone(), b.clone()].into()
    );
    assert_eq!(regs.len(), 3);
    let ra = regs.iter().find(|r| r["peer"] == a.as_str()).unwrap();
    assert_eq!(ra["addresses"][0], "/ip4/127.0.0.1/tcp/4002", "{ra}");
    let rr = regs
        .iter()
        .find(|r| r["peer"] == resident.as_str())
        .unwrap();
    assert!(rr["ttl"].as_u64().unwrap() > 7000, "{rr}");

    // rdv's UNREGISTER carries the id py-libp2p's point insists on.
    unregister_as(dir.path(), &p, "interop", "a.key");
    let regs = rdv_discover(dir.path(), &p, &[]);
    assert_eq!(peer_set(&regs), [resident, b].into());
}
