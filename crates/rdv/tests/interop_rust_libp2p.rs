//! rdv against rust-libp2p's own `libp2p-rendezvous`, each direction
//! separately, as real processes on loopback.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use support::*;

fn peers(v: &serde_json::Value) -> BTreeSet<String> {
    v["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rust_libp2p_client_against_the_rdv_point() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let legacy_a = register_as(dir.path(), point.tcp(), "a", "interop", "legacy");
    let legacy_b = register_as(dir.path(), point.tcp(), "b", "interop", "legacy");
    let standard = register_as(dir.path(), point.tcp(), "s", "interop", "standard");
    register_as(dir.path(), point.tcp(), "o", "other", "legacy");

    let o = run(
        PEER,
        &[
            "client",
            "--point",
            point.tcp(),
            "--op",
            "register:interop",
            "--op",
            "register:interop:60",
            "--op",
            "discover:interop:1",
            "--op",
            "discover-next:interop:1",
            "--op",
            "discover-next:interop:1",
            "--op",
            "discover-next:interop:1",
            "--op",
            "discover:*",
            "--op",
            "unregister:interop",
            "--op",
            "discover:interop",
        ],
        dir.path(),
    );
    expect_code(&o, 0);
    let lines = json_lines(&o);
    let me = lines.last().unwrap()["me"].as_str().unwrap().to_string();
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[0]["ttl"], 7200);
    assert_eq!(lines[1]["error"], "InvalidTtl");
    // Paging one at a time with cookies: every legacy registration once, no
    // standard one (rust-libp2p would refuse the whole answer), then nothing.
    let mut paged = Vec::new();
    for l in &lines[2..6] {
        assert_eq!(l["ok"], true, "{l}");
        assert!(l["registrations"].as_array().unwrap().len() <= 1);
        paged.extend(peers(l));
    }
    let want: BTreeSet<String> = [legacy_a.clone(), legacy_b.clone(), me.clone()].into();
    assert_eq!(paged.len(), 3, "each exactly once: {paged:?}");
    assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), want);
    assert!(!peers(&lines[2]).contains(&standard));
    // Discover-all spans namespaces.
    let namespaces: BTreeSet<_> = lines[6]["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        namespaces,
        ["interop".to_string(), "other".to_string()].into()
    );
    // After UNREGISTER it is gone.
    assert_eq!(peers(&lines[8]), [legacy_a, legacy_b].into());
    let _ = me;
}

#[test]
fn a_rust_libp2p_client_with_its_own_agent_string_gets_the_records_it_reads() {
    // An application that sets its own agent version: identify alone would
    // have the point serve it standard records, which rust-libp2p's client
    // refuses (the whole answer). Its own legacy REGISTER is the evidence.
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let legacy = register_as(dir.path(), point.tcp(), "a", "custom", "legacy");
    let standard = register_as(dir.path(), point.tcp(), "s", "custom", "standard");
    let o = run(
        PEER,
        &[
            "client",
            "--point",
            point.tcp(),
            "--agent",
            "my-app/1.0",
            "--op",
            "register:custom",
            "--op",
            "discover:custom",
        ],
        dir.path(),
    );
    expect_code(&o, 0);
    let lines = json_lines(&o);
    let me = lines.last().unwrap()["me"].as_str().unwrap().to_string();
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[1]["ok"], true, "{}", lines[1]);
    assert_eq!(peers(&lines[1]), [legacy, me].into());
    let _ = standard;
}

#[test]
fn rust_libp2p_client_cannot_register_someone_elses_record_at_the_rdv_point() {
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let o = run(
        PEER,
        &[
            "client",
            "--point",
            point.tcp(),
            "--foreign-record",
            "--op",
            "register:interop",
            "--op",
            "discover:interop",
        ],
        dir.path(),
    );
    expect_code(&o, 0);
    let lines = json_lines(&o);
    assert_eq!(lines[0]["error"], "NotAuthorized");
    assert!(peers(&lines[1]).is_empty());
}

#[test]
fn rdv_client_against_the_rust_libp2p_point() {
    let dir = tempfile::tempdir().unwrap();
    let point = start(
        PEER,
        &["server", "--listen", "/ip4/127.0.0.1/tcp/0"],
        dir.path(),
        1,
    );
    let p = point.tcp().to_string();
    // `auto` signs the standard format first; rust-libp2p drops the stream
    // on it, and the client falls back to the legacy format.
    let a = register_as(dir.path(), &p, "a", "interop", "auto");
    let b = register_as(dir.path(), &p, "b", "interop", "legacy");
    let c = register_as(dir.path(), &p, "c", "interop", "legacy");

    let bad = rdv(
        dir.path(),
        &[
            "register",
            "--address",
            "/ip4/127.0.0.1/tcp/4001",
            "--point",
            &p,
            "--namespace",
            "interop",
            "--identity",
            "d.key",
            "--ttl",
            "60",
            "--record-format",
            "legacy",
        ],
    );
    expect_code(&bad, 1);
    assert!(stderr(&bad).contains("E_INVALID_TTL"), "{}", stderr(&bad));

    let o = rdv(
        dir.path(),
        &[
            "discover",
            "--point",
            &p,
            "--namespace",
            "interop",
            "--limit",
            "1",
            "--all",
            "--json",
        ],
    );
    expect_code(&o, 0);
    let found: Vec<String> = json_lines(&o)
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(found.len(), 3, "each once across pages: {found:?}");
    assert_eq!(
        found.iter().cloned().collect::<BTreeSet<_>>(),
        [a.clone(), b.clone(), c.clone()].into()
    );
    let first = &json_lines(&o)[0];
    assert_eq!(first["namespace"], "interop");
    assert!(first["ttl"].as_u64().unwrap() > 7000);
    assert!(first["addresses"].as_array().is_some_and(|a| !a.is_empty()));

    unregister_as(dir.path(), &p, "interop", "a.key");
    let o = rdv(
        dir.path(),
        &[
            "discover",
            "--point",
            &p,
            "--namespace",
            "interop",
            "--json",
        ],
    );
    let left: BTreeSet<String> = json_lines(&o)
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [b, c].into());
}
