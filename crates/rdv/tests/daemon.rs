//! `rdv point` as an operator runs it: a state directory of its choosing,
//! SIGHUP reloading limits instead of killing the daemon, every bound in
//! the config file.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn register(dir: &std::path::Path, point: &str, ns: &str, key: &str) -> std::process::Output {
    rdv(
        dir,
        &[
            "register",
            "--point",
            point,
            "--namespace",
            ns,
            "--identity",
            key,
            "--address",
            "/ip4/127.0.0.1/tcp/7000",
        ],
    )
}

#[test]
fn data_dir_is_chosen_with_a_global_flag_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let listen = ["--listen", "/ip4/127.0.0.1/tcp/0"];
    let before = start(
        RDV,
        &[&["--data", "first", "point"][..], &listen].concat(),
        dir.path(),
        1,
    );
    let after = start(
        RDV,
        &[&["point"][..], &listen, &["--data", "second"]].concat(),
        dir.path(),
        1,
    );
    for d in ["first", "second"] {
        for f in ["identity.key", "cookie.key", "point.db"] {
            assert!(dir.path().join(d).join(f).exists(), "{d}/{f}");
        }
    }
    assert!(!dir.path().join("rdv-data").exists());
    // The client commands keep their identity there too.
    let o = rdv(
        dir.path(),
        &[
            "register",
            "--data",
            "third",
            "--point",
            before.tcp(),
            "--namespace",
            "n",
            "--address",
            "/ip4/127.0.0.1/tcp/7000",
        ],
    );
    expect_code(&o, 0);
    assert!(dir.path().join("third/client.key").exists());
    drop((before, after));
}

#[test]
fn sighup_reloads_limits_and_keeps_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("point.toml");
    std::fs::write(
        &cfg,
        "max_registrations_per_namespace = 1\nlog = \"info\"\n",
    )
    .unwrap();
    let mut point = rdv_point(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let p = point.tcp().to_string();
    expect_code(&register(dir.path(), &p, "chat", "a.key"), 0);
    let o = register(dir.path(), &p, "chat", "b.key");
    expect_code(&o, 1);
    assert!(stderr(&o).contains("E_UNAVAILABLE"), "{}", stderr(&o));

    // A file that does not validate is refused; the point keeps going.
    std::fs::write(&cfg, "max_registrations_per_namespace = 0\n").unwrap();
    let pid = point.child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    hup();
    std::fs::write(
        &cfg,
        "max_registrations_per_namespace = 5\nlog = \"debug\"\n",
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            point.child.try_wait().unwrap().is_none(),
            "the daemon died on SIGHUP"
        );
        let o = register(dir.path(), &p, "chat", "b.key");
        if o.status.code() == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "never reloaded: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_bound_is_a_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("point.toml");
    std::fs::write(
        &cfg,
        "max_registrations = 1\nmax_stored_bytes = 1000000\nmax_record_size = 2048\n\
         max_message_size = 65536\nidentify_wait_ms = 500\nstream_queue = 128\n\
         max_format_peers = 1000\nmax_verified_records = 1000\nmax_pending_per_ip = 4\n\
         ipv6_prefix = 56\nmax_streams_per_ip = 8\nmax_registrations_per_ip_namespace = 10\n\
         stream_idle_timeout = 60\nidle_timeout = 30\n",
    )
    .unwrap();
    let point = rdv_point(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let p = point.tcp().to_string();
    expect_code(&register(dir.path(), &p, "a", "a.key"), 0);
    // max_registrations = 1: a second one anywhere is refused.
    let o = register(dir.path(), &p, "b", "b.key");
    expect_code(&o, 1);
    assert!(stderr(&o).contains("E_UNAVAILABLE"), "{}", stderr(&o));
    drop(point);
    for bad in [
        "ipv6_prefix = 0",
        "max_streams_per_ip = 0",
        "stream_queue = 0",
    ] {
        std::fs::write(&cfg, bad).unwrap();
        let o = rdv(dir.path(), &["point", "--config", cfg.to_str().unwrap()]);
        expect_code(&o, 2);
        let key = bad.split(' ').next().unwrap();
        assert!(stderr(&o).contains(key), "{bad}: {}", stderr(&o));
    }
}
