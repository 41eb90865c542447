#![allow(missing_docs, clippy::unwrap_used)]
//! The daemon's HTTP server (issue 14, item 1): health and readiness, the
//! status JSON, the self-contained status page, the bounds; and the page in
//! a real headless Chromium, its figures matching `/metrics`.

mod support;

use std::process::Command;

use support::*;

fn point_with_http() -> (tempfile::TempDir, Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let point = rdv_point(dir.path(), &["--store", "memory", "--metrics", &addr]);
    (dir, point, addr)
}

#[test]
fn health_readiness_status_and_bounds() {
    let (_dir, point, addr) = point_with_http();
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));
    let (code, body) = http_get(&addr, "/status.json");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["store"], "memory");
    assert!(
        v["listen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == point.tcp()),
        "{v}"
    );
    assert_eq!(http_get(&addr, "/nothing-here").0, 404);
    let metrics = http_get(&addr, "/metrics").1;
    let build = format!(
        "rdv_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.lines().any(|l| l == build), "{metrics}");
    assert!(
        metrics.lines().any(|l| l == "rdv_store_failures_total 0"),
        "{metrics}"
    );
    // OpenMetrics, as prometheus-client encodes it: every sample belongs to
    // a family declared before it (a counter's samples end in `_total`),
    // and the exposition ends with `# EOF`.
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let mut family: Option<(String, String)> = None;
    for line in metrics.lines().filter(|l| *l != "# EOF") {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            family = Some((name.to_string(), kind.to_string()));
        } else if !line.starts_with('#') {
            let (name, kind) = family.as_ref().expect("a sample before any # TYPE");
            let sample = line.split(['{', ' ']).next().unwrap();
            let ok = match kind.as_str() {
                "counter" => sample == format!("{name}_total"),
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample == format!("{name}{s}")),
                _ => sample == name,
            };
            assert!(ok, "{line:?} is not a sample of {kind} {name}");
        }
    }

    // The page is self-contained: no script, style or image from elsewhere.
    let (code, page) = http_get(&addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>rdv point</title>"));
    for outside in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(outside), "the page loads {outside}...");
    }
}

/// Idle sockets cannot pile up: past the connection bound a connection is
/// closed at once, a client that sends no request within the header
/// timeout is cut off, and the server answers again afterwards.
#[test]
fn idle_connections_are_bounded_and_cut_off() {
    use std::io::{Read, Write};
    let (_dir, _point, addr) = point_with_http();
    // The bound is 64 (`http::MAX_CONNECTIONS`).
    let mut idle: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut over = std::net::TcpStream::connect(&addr).unwrap();
    over.set_read_timeout(Some(std::time::Duration::from_secs(4)))
        .unwrap();
    let _ = write!(over, "GET /healthz HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let n = over.read_to_string(&mut text);
    assert!(
        matches!(n, Ok(0)) || n.is_err() && text.is_empty(),
        "a connection over the bound was served: {text:?}"
    );
    assert!(text.is_empty(), "{text}");
    // The idle ones are closed by the server after the header timeout
    // (5 s); bounded wait.
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(first.read(&mut buf), Ok(0)),
        "an idle connection was not cut off"
    );
    drop(idle);
    // Then the server answers again.
    let mut ok = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(&addr).is_ok() && http_get(&addr, "/healthz").0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok);
}

/// Chromium from Debian (`.ci/run` installs it). Without it the test says
/// so and passes, unless CI is set.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: .ci/run installs it"
        );
        eprintln!("status page browser test: skipped: chromium is not installed");
    }
    found
}

fn headless(browser: &str, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_status_page_renders_the_points_figures_in_chromium() {
    let Some(browser) = chromium() else { return };
    let (dir, point, addr) = point_with_http();
    register_as(dir.path(), point.tcp(), "a", "chat", "standard");
    register_as(dir.path(), point.tcp(), "b", "talk", "standard");
    let metrics = http_get(&addr, "/metrics").1;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_string()
    };
    assert_eq!(value("rdv_registrations"), "2");

    let url = format!("http://{addr}/");
    let out = headless(browser, &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page did not load its figures:\n{dom}\n{log}"
    );
    for (id, name) in [
        ("registrations", "rdv_registrations"),
        ("namespaces", "rdv_namespaces"),
        ("relay_clients", "rdv_relay_clients"),
        ("relay_circuits", "rdv_relay_circuits"),
        ("relay_bytes", "rdv_relay_forwarded_bytes_total"),
    ] {
        let want = format!("id=\"{id}\">{}<", value(name));
        assert!(dom.contains(&want), "{want} not in\n{dom}");
    }
    assert!(dom.contains(point.tcp()), "listen address shown");
    assert!(
        dom.contains("<td>register</td><td>OK</td><td>2</td>"),
        "{dom}"
    );
    // Console errors (uncaught exceptions, failed loads) show in the log.
    for bad in ["Uncaught", "ERROR:CONSOLE", "Failed to load resource"] {
        let line = log
            .lines()
            .find(|l| l.contains(bad) && l.contains("CONSOLE"));
        assert!(line.is_none(), "console error: {line:?}");
    }

    // A screenshot for humans, under target/.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        browser,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,800",
            &url,
        ],
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
