//! The embedding example (`examples/embed.rs`) runs and does what it shows:
//! registers at its point and discovers itself.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_embed_example_registers_and_discovers() {
    // `cargo test` builds the crate's examples next to the test binaries.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("embed");
    assert!(example.exists(), "{} not built", example.display());
    let mut child = Command::new(&example)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the example did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("registered for 7200s"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("found ") && l.contains("/ip4/127.0.0.1/tcp/4001")),
        "{text}"
    );
}
