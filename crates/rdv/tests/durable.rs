//! The daemon on durable stores: restarts, SIGKILL, bad database files, and
//! two daemons on one PostgreSQL database.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn peers_in(dir: &std::path::Path, point: &str, ns: &str) -> BTreeSet<String> {
    let o = rdv(
        dir,
        &[
            "discover",
            "--point",
            point,
            "--namespace",
            ns,
            "--all",
            "--json",
        ],
    );
    expect_code(&o, 0);
    json_lines(&o)
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn registrations_identity_and_cookie_secret_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = rdv_point(dir.path(), &[]);
    let a = register_as(dir.path(), first.tcp(), "a", "kept", "standard");
    let b = register_as(dir.path(), first.tcp(), "b", "kept", "legacy");
    let id = first.tcp().rsplit("/p2p/").next().unwrap().to_string();
    let secret = std::fs::read(dir.path().join("rdv-data/cookie.key")).unwrap();
    assert!(
        dir.path().join("rdv-data/point.db").exists(),
        "SQLite is the default store"
    );
    drop(first);
    let second = rdv_point(dir.path(), &[]);
    assert!(second.tcp().ends_with(&id), "same identity");
    assert_eq!(
        std::fs::read(dir.path().join("rdv-data/cookie.key")).unwrap(),
        secret
    );
    assert_eq!(peers_in(dir.path(), second.tcp(), "kept"), [a, b].into());
}

#[test]
fn every_acknowledged_register_survives_sigkill_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut point = rdv_point(dir.path(), &[]);
    let addr = point.tcp().to_string();
    let clients: Vec<_> = (0..24)
        .map(|i| {
            Command::new(RDV)
                .args([
                    "register",
                    "--point",
                    &addr,
                    "--namespace",
                    "crash",
                    "--identity",
                    &format!("c{i}.key"),
                ])
                .current_dir(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Kill the point while registrations are in flight: once six are acknowledged.
    let mut clients = clients;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = clients
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|w| matches!(w, Ok(Some(status)) if status.success()))
            .count();
        if acked >= 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {acked} registrations acknowledged in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    point.child.kill().unwrap();
    point.child.wait().unwrap();
    let mut acknowledged = BTreeSet::new();
    for c in clients {
        let o = c.wait_with_output().unwrap();
        if o.status.code() == Some(0) {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            acknowledged.insert(text.split_whitespace().nth(3).unwrap().to_string());
        }
    }
    assert!(
        acknowledged.len() >= 6,
        "the load was under way: {}",
        acknowledged.len()
    );
    let restarted = rdv_point(dir.path(), &[]);
    let kept = peers_in(dir.path(), restarted.tcp(), "crash");
    let lost: Vec<_> = acknowledged.difference(&kept).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after SIGKILL: {lost:?}"
    );
}

#[test]
fn a_corrupt_or_foreign_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    let garbage = b"this is not a database, and must still be here afterwards".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let spec = format!("sqlite:{}", db.display());
    let o = rdv(
        dir.path(),
        &[
            "point",
            "--store",
            &spec,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("bad.db"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
    let o = rdv(
        dir.path(),
        &[
            "point",
            "--store",
            "mysql://x",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("sqlite:PATH"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_postgres_is_named_and_the_daemon_exits() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let o = rdv(
        dir.path(),
        &["point", "--store", &url, "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}

fn postgres_url() -> Option<String> {
    match std::env::var("RDV_TEST_POSTGRES") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but RDV_TEST_POSTGRES is not (set RDV_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test)"
            )
        }
        Err(_) => {
            // Straight to stderr: the test harness captures eprintln!.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping PostgreSQL tests: set RDV_TEST_POSTGRES=postgres://..."
            );
            None
        }
    }
}

#[test]
fn two_daemons_on_one_postgres_database_serve_as_one_point() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("rdv_daemon_test_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shared-cookie.key");
    let config = dir.path().join("point.toml");
    std::fs::write(
        &config,
        format!(
            "store = {url:?}\npostgres_schema = {schema:?}\ncookie_secret = {:?}\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let cfg = config.to_str().unwrap();
    let one = rdv_point(&da, &["--config", cfg]);
    let two = rdv_point(&db, &["--config", cfg]);
    let x = register_as(dir.path(), one.tcp(), "x", "shared", "standard");
    let y = register_as(dir.path(), two.tcp(), "y", "shared", "standard");
    assert_eq!(
        peers_in(dir.path(), two.tcp(), "shared"),
        [x.clone(), y.clone()].into()
    );
    assert_eq!(
        peers_in(dir.path(), one.tcp(), "shared"),
        [x.clone(), y].into()
    );
    expect_code(
        &rdv(
            dir.path(),
            &[
                "unregister",
                "--point",
                two.tcp(),
                "--namespace",
                "shared",
                "--identity",
                "x.key",
            ],
        ),
        0,
    );
    assert!(!peers_in(dir.path(), one.tcp(), "shared").contains(&x));
    drop((one, two));
    let _ = Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .status();
}
