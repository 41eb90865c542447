#![allow(missing_docs, clippy::unwrap_used)]
//! Log output (issue 14, item 2): no terminal escape codes when stderr is a
//! file, and `--log-format json` writes one JSON object per line.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::RDV;

/// Runs `rdv point` with stderr to a file until it prints its listen
/// line, stops it, and returns what it logged.
fn point_log(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut args = vec![
        "point",
        "--store",
        "memory",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(RDV)
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = (0..100).find_map(|_| {
        rx.recv_timeout(Duration::from_secs(20))
            .ok()
            .filter(|l| l.starts_with("listening on"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.is_some(), "the point did not start");
    std::fs::read_to_string(&log_path).unwrap()
}

#[test]
fn logs_to_a_file_carry_no_escape_codes() {
    let log = point_log(&[]);
    assert!(log.contains("rendezvous point starting"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = point_log(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "rendezvous point starting" && v["level"] == "INFO"),
        "{log}"
    );
}
