//! rdv against js-libp2p's `@canvas-js/libp2p-rendezvous` (interop/js), each
//! direction separately, as real processes on loopback.
//!
//! The Node packages come from `(cd interop/js && npm ci)`. Without them the
//! tests are skipped, unless `CI` is set: then they fail.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// `interop/js` when its packages are installed; `None` (after saying so)
/// when they are not and this is not CI.
fn js_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    if dir.join("node_modules").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "interop/js/node_modules is missing: run `npm ci --no-audit --no-fund` in interop/js (.ci/run does) before the tests"
        );
    }
    eprintln!("skipping: run (cd interop/js && npm ci) to enable the js interop tests");
    None
}

fn script(js: &Path, name: &str) -> String {
    js.join(name).to_str().unwrap().to_string()
}

/// `rdv discover --json` lines.
fn rdv_discover(dir: &Path, point: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["discover", "--point", point, "--json"];
    args.extend_from_slice(extra);
    let o = rdv(dir, &args);
    expect_code(&o, 0);
    json_lines(&o)
}

fn find<'a>(regs: &'a [serde_json::Value], peer: &str) -> &'a serde_json::Value {
    regs.iter()
        .find(|r| r["peer"] == peer)
        .unwrap_or_else(|| panic!("{peer} not in {regs:?}"))
}

/// `rdv register` in namespace `interop` as the identity in `key`.
fn register_in_interop(dir: &Path, point: &str, key: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "register",
        "--address",
        "/ip4/127.0.0.1/tcp/4001",
        "--point",
        point,
        "--namespace",
        "interop",
        "--identity",
        key,
    ];
    args.extend_from_slice(extra);
    rdv(dir, &args)
}

#[test]
fn canvas_client_against_the_rdv_point() {
    let Some(js) = js_dir() else { return };
    let client = script(&js, "client.mjs");
    let dir = tempfile::tempdir().unwrap();
    let point = rdv_point(dir.path(), &[]);
    let p = point.tcp().to_string();
    let standard = register_as(dir.path(), &p, "s", "interop", "standard");
    let legacy = register_as(dir.path(), &p, "l", "interop", "legacy");
    register_as(dir.path(), &p, "o", "other", "standard");

    // One canvas peer (its key kept in c.key) over two runs, each running its
    // ops on one rendezvous stream.
    let canvas = |ops: &[&str]| {
        let mut args = vec![client.as_str(), "--point", &p, "--key", "c.key"];
        for op in ops {
            args.extend(["--op", op]);
        }
        let o = run("node", &args, dir.path());
        expect_code(&o, 0);
        json_lines(&o)
    };

    let lines = canvas(&[
        "register:interop",
        "register:interop:60",
        "register:interop:10000",
        "discover:interop",
        "discover:interop:1",
    ]);
    let me = lines.last().unwrap()["me"].as_str().unwrap().to_string();
    // Canvas sends REGISTER without a `type` field, and no TTL for the default.
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[0]["ttl"], 7200);
    assert_eq!(lines[1]["error"], "E_INVALID_TTL", "{}", lines[1]);
    assert_eq!(lines[2]["ttl"], 10000, "{}", lines[2]);
    // Only the standard record: js-libp2p cannot open a legacy one and would
    // refuse the whole answer. Canvas leaves out its own registration.
    assert_eq!(discovered(&lines[3]), [standard.clone()].into());
    let s = &lines[3]["registrations"][0];
    assert!(
        s["addresses"].as_array().is_some_and(|a| !a.is_empty()),
        "{s}"
    );
    assert_eq!(discovered(&lines[4]), [standard.clone()].into(), "limit 1");

    // rdv reads the canvas peer's record (standard format) and its TTL.
    let regs = rdv_discover(dir.path(), &p, &["--namespace", "interop"]);
    assert_eq!(
        peer_set(&regs),
        [standard.clone(), legacy.clone(), me.clone()].into()
    );
    let mine = find(&regs, &me);
    let ttl = mine["ttl"].as_u64().unwrap();
    assert!((9900..=10000).contains(&ttl), "the refresh's TTL: {mine}");
    let addrs = mine["addresses"].as_array().unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/")),
        "{mine}"
    );

    // UNREGISTER has no answer; the next request on the stream follows it.
    let lines = canvas(&["unregister:interop", "discover:interop"]);
    assert_eq!(lines.last().unwrap()["me"], me.as_str());
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(discovered(&lines[1]), [standard.clone()].into());
    let regs = rdv_discover(dir.path(), &p, &["--namespace", "interop"]);
    assert_eq!(peer_set(&regs), [standard, legacy].into());
}

#[test]
fn rdv_client_against_the_canvas_point() {
    let Some(js) = js_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = script(&js, "server.mjs");
    let point = start(
        "node",
        &[&server, "--listen", "/ip4/127.0.0.1/tcp/0"],
        dir.path(),
        1,
    );
    let p = point.tcp().to_string();

    // `auto` signs the standard format first, which canvas accepts.
    let a = register_as(dir.path(), &p, "a", "interop", "auto");
    let b = register_as(dir.path(), &p, "b", "interop", "standard");
    // Canvas cannot open a legacy record: it resets the stream, no status.
    let o = register_in_interop(dir.path(), &p, "l.key", &["--record-format", "legacy"]);
    expect_code(&o, 3);
    assert!(stderr(&o).contains("closed the stream"), "{}", stderr(&o));

    // Canvas has no minimum TTL and clamps to 2 h (no E_INVALID_TTL).
    let short = register_in_interop(dir.path(), &p, "c.key", &["--ttl", "60"]);
    expect_code(&short, 0);
    assert!(
        stdout(&short).trim_end().ends_with("for 60s"),
        "{}",
        stdout(&short)
    );
    let long = register_in_interop(dir.path(), &p, "d.key", &["--ttl", "100000"]);
    expect_code(&long, 0);
    assert!(
        stdout(&long).trim_end().ends_with("for 7200s"),
        "{}",
        stdout(&long)
    );
    // "registered NS as PEER at POINT for Ns"
    let [c, d] = [&short, &long].map(|o| stdout(o).split_whitespace().nth(3).unwrap().to_string());

    // Canvas sends an OK answer with no `status` field.
    let regs = rdv_discover(dir.path(), &p, &["--namespace", "interop"]);
    assert_eq!(
        peer_set(&regs),
        [a.clone(), b.clone(), c.clone(), d.clone()].into()
    );
    for r in &regs {
        assert_eq!(r["namespace"], "interop");
        assert!(
            r["addresses"].as_array().is_some_and(|a| !a.is_empty()),
            "{r}"
        );
        let ttl = r["ttl"].as_u64().unwrap();
        if r["peer"] == c.as_str() {
            assert!(ttl <= 60, "{r}");
        } else {
            assert!((7100..=7200).contains(&ttl), "remaining TTL: {r}");
        }
    }

    // Canvas serves newest first while its cookie means "ids above this
    // one", so following cookies stops early; rdv still ends, each peer once.
    let paged = rdv_discover(
        dir.path(),
        &p,
        &["--namespace", "interop", "--limit", "1", "--all"],
    );
    let once = peer_set(&paged);
    assert_eq!(once.len(), paged.len(), "each at most once: {paged:?}");
    assert!(
        !once.is_empty() && once.is_subset(&[a.clone(), b.clone(), c.clone(), d.clone()].into()),
        "{paged:?}"
    );
    // No namespace reads as the empty namespace there: no discover-all.
    assert!(rdv_discover(dir.path(), &p, &[]).is_empty());

    unregister_as(dir.path(), &p, "interop", "a.key");
    let regs = rdv_discover(dir.path(), &p, &["--namespace", "interop"]);
    assert_eq!(peer_set(&regs), [b, c, d].into());
}
