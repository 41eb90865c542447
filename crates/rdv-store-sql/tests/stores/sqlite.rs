//! What is particular to SQLite: files it must refuse without touching,
//! and durability across a process killed mid-write.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use rdv_point::Store;
use rdv_point::store::{Formats, WriteOutcome};
use rdv_store_sql::{OpenError, SqliteStore};
use rusqlite::Connection;

use crate::harness::TempDir;
use crate::suite::{NO_LIMITS, at, created, ns, peer, reg, write1};

/// The file's bytes and which of its companions exist.
fn snapshot(path: &Path) -> (Vec<u8>, bool, bool) {
    let side = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        Path::new(&p).exists()
    };
    (std::fs::read(path).unwrap(), side("-wal"), side("-journal"))
}

fn refused(path: &Path) -> OpenError {
    let before = snapshot(path);
    let Err(e) = SqliteStore::open(path, 1) else {
        panic!("{} was opened", path.display());
    };
    assert_eq!(snapshot(path), before, "{} was changed", path.display());
    let message = e.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message} does not name the file"
    );
    e
}

#[test]
fn not_a_database() {
    let dir = TempDir::new();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let e = refused(&path);
    assert!(matches!(e, OpenError::NotADatabase { .. }), "{e:?}");
    assert!(e.to_string().contains("untouched"), "{e}");
}

#[test]
fn foreign_database() {
    let dir = TempDir::new();
    let path = dir.path().join("other.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER); INSERT INTO accounts VALUES (1, 100);")
        .unwrap();
    drop(c);
    let e = refused(&path);
    assert!(
        matches!(
            e,
            OpenError::ForeignSqlite {
                application_id: 0,
                objects: 1,
                ..
            }
        ),
        "{e:?}"
    );
    // Another program's application id, even with no tables yet.
    let path = dir.path().join("tagged.db");
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "application_id", 0x1234_5678)
        .unwrap();
    drop(c);
    let e = refused(&path);
    assert!(
        matches!(
            e,
            OpenError::ForeignSqlite {
                application_id: 0x1234_5678,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn newer_schema() {
    let dir = TempDir::new();
    let path = dir.path().join("point.db");
    let mut s = SqliteStore::open(&path, 1).unwrap();
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    drop(s);
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = refused(&path);
    match e {
        OpenError::NewerSchema {
            found, supported, ..
        } => {
            assert_eq!((found, supported), (99, rdv_store_sql::SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_database() {
    let dir = TempDir::new();
    let path = dir.path().join("point.db");
    let mut s = SqliteStore::open(&path, 1).unwrap();
    let batch: Vec<_> = (0..2000)
        .map(|i| reg(peer(i), "a", &[7; 200], 7200))
        .collect();
    s.write(&batch, &NO_LIMITS, at(0)).unwrap();
    s.check_integrity().unwrap();
    drop(s); // the last connection checkpoints the WAL into the file
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    assert!(len > 200_000);
    // A damaged schema page: refused at open, and left alone.
    let mut schema_damaged = bytes.clone();
    schema_damaged[100..4096].fill(0xFF);
    let damaged_path = dir.path().join("schema-damaged.db");
    std::fs::write(&damaged_path, &schema_damaged).unwrap();
    let e = refused(&damaged_path);
    assert!(
        matches!(
            e,
            OpenError::Corrupt { .. } | OpenError::NotADatabase { .. }
        ),
        "{e:?}"
    );
    // Damaged data pages: opens (checking every page would cost seconds on
    // a large store), and the integrity check finds it.
    bytes[len / 2..len / 2 + 8192].fill(0x5A);
    std::fs::write(&path, &bytes).unwrap();
    match SqliteStore::open(&path, 1) {
        Err(e) => assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}"),
        Ok(s) => {
            let e = s.check_integrity().unwrap_err();
            assert!(!e.transient);
            assert!(e.message.contains("damaged"), "{}", e.message);
        }
    }
}

#[test]
fn directories() {
    let dir = TempDir::new();
    // A missing directory is made.
    let path = dir.path().join("rdv-data").join("point.db");
    let s = SqliteStore::open(&path, 1).unwrap();
    assert_eq!(s.path(), path);
    drop(s);
    // A directory is not a file.
    let e = SqliteStore::open(dir.path(), 1).unwrap_err();
    assert!(matches!(e, OpenError::Sqlite { .. }), "{e:?}");
}

#[test]
fn an_empty_file_becomes_a_store() {
    let dir = TempDir::new();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").unwrap();
    let s = SqliteStore::open(&path, 9).unwrap();
    assert_eq!(s.epoch(), 9);
}

/// The writer of `killed_mid_write`: when `RDV_CRASH_CHILD` names a file,
/// registers batches into it for ever, printing each acknowledged position
/// after `write` returned. Otherwise a no-op test.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os("RDV_CRASH_CHILD") else {
        return;
    };
    let mut s = SqliteStore::open(&path, 1).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u32.. {
        let batch: Vec<_> = (0..4)
            .map(|j| reg(peer(i * 4 + j), "crash", &[1; 100], 7200))
            .collect();
        for o in s.write(&batch, &NO_LIMITS, at(0)).unwrap() {
            let WriteOutcome::Created(p) = o else {
                panic!("{o:?}")
            };
            writeln!(out, "ack {p}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// A writer killed with SIGKILL mid-load: every registration it
/// acknowledged is there after reopening, and the store works on.
#[test]
fn killed_mid_write() {
    let dir = TempDir::new();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RDV_CRASH_CHILD", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 400 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        if let Some(p) = line.strip_prefix("ack ") {
            acked.push(p.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no chance to close the database
    child.wait().unwrap();
    // Read on: acknowledgements printed before the kill.
    for line in lines.map_while(Result::ok) {
        if let Some(p) = line.strip_prefix("ack ") {
            acked.push(p.parse::<u64>().unwrap());
        }
    }
    let mut s = SqliteStore::open(&path, 2).unwrap();
    assert_eq!(s.epoch(), 1);
    let held: std::collections::HashSet<u64> =
        crate::suite::page_all(&s, Some("crash"), 0, 1000, Formats::ALL, at(0))
            .iter()
            .map(|r| r.position)
            .collect();
    let lost: Vec<_> = acked.iter().filter(|p| !held.contains(p)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged registrations lost: {lost:?}",
        lost.len()
    );
    s.check_integrity().unwrap();
    let p = created(write1(
        &mut s,
        reg(peer(1_000_000), "crash", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    assert!(acked.iter().all(|&a| a < p));
    assert_eq!(s.stats().registrations, held.len() + 1);
    assert!(s.record(&peer(0), &ns("crash"), at(0)).unwrap().is_some());
}
