//! What is particular to PostgreSQL: several stores (points) on one
//! database behave as one, limits hold under races, paging never skips a
//! registration committed by another point, bad databases are refused,
//! a lost connection is recovered, and calls from async code do not panic.

use std::collections::HashSet;

use bytes::Bytes;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rdv_point::store::{Formats, Limit, Limits, WriteOutcome};
use rdv_point::{Config, CookieKey, Point, Store};
use rdv_store_sql::{OpenError, PostgresStore};
use rdv_wire::*;

use crate::harness::{Harness, Postgres};
use crate::suite::{NO_LIMITS, at, created, ns, page_all, peer, reg, write1};

/// Two stores on one schema, each in its own thread, race to register
/// `attempts` each (batches of one, so their transactions interleave); the
/// limit lets `cap` through in all.
fn race(
    limits: Limits,
    cap: usize,
    limit: Limit,
    make: impl Fn(u32, u32) -> rdv_point::store::NewRegistration + Send + Sync + 'static,
) {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    drop(pg.fresh(1));
    let make = Arc::new(make);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let mut store = pg.open(1);
            let (make, barrier) = (make.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut outcomes = Vec::new();
                for i in 0..cap as u32 {
                    outcomes.push(write1(&mut store, make(t, i), &limits, at(0)));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<WriteOutcome> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = outcomes
        .iter()
        .filter(|o| matches!(o, WriteOutcome::Created(_)))
        .count();
    assert_eq!(ok, cap, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, WriteOutcome::Created(_)) || *o == WriteOutcome::Refused(limit)),
        "{outcomes:?}"
    );
    let check = pg.open(1);
    assert_eq!(check.stats().registrations, cap);
    assert_eq!(
        page_all(&check, None, 0, 1000, Formats::ALL, at(0)).len(),
        cap
    );
}

#[test]
fn race_per_namespace() {
    let limits = Limits {
        per_namespace: 12,
        ..NO_LIMITS
    };
    race(limits, 12, Limit::PerNamespace, |t, i| {
        reg(peer(t * 1000 + i), "crowded", b"r", 7200)
    });
}

#[test]
fn race_per_peer() {
    let limits = Limits {
        per_peer: 12,
        ..NO_LIMITS
    };
    race(limits, 12, Limit::PerPeer, |t, i| {
        reg(peer(1), &format!("ns-{t}-{i}"), b"r", 7200)
    });
}

#[test]
fn race_total_and_namespaces() {
    let limits = Limits {
        total: 12,
        ..NO_LIMITS
    };
    race(limits, 12, Limit::Total, |t, i| {
        reg(peer(t * 1000 + i), "a", b"r", 7200)
    });
    let limits = Limits {
        namespaces: 12,
        ..NO_LIMITS
    };
    race(limits, 12, Limit::Namespaces, |t, i| {
        reg(peer(t * 1000 + i), &format!("ns-{t}-{i}"), b"r", 7200)
    });
}

/// Two points writing while a third pages with cookies: the reader sees
/// every registration exactly once. With positions from a bare sequence a
/// registration committed after a higher one would be skipped.
#[test]
fn paging_while_two_points_write() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let reader = pg.fresh(1);
    let writers: Vec<_> = (0..2u32)
        .map(|t| {
            let mut store = pg.open(1);
            std::thread::spawn(move || {
                let mut positions = Vec::new();
                for i in 0..60u32 {
                    let batch: Vec<_> = (0..1 + i % 3)
                        .map(|j| reg(peer(t * 10_000 + i * 4 + j), "busy", b"r", 7200))
                        .collect();
                    for o in store.write(&batch, &NO_LIMITS, at(0)).unwrap() {
                        positions.push(created(o));
                    }
                }
                positions
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let page = reader
            .scan(Some(&ns("busy")), after, 7, Formats::ALL, at(0))
            .unwrap();
        seen.extend(page.registrations.iter().map(|r| r.position));
        after = page.scanned_to;
        if done && page.registrations.len() < 7 {
            break;
        }
    }
    let written: HashSet<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let seen_set: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        seen.len(),
        seen_set.len(),
        "a registration was returned twice"
    );
    let missed: Vec<_> = written.difference(&seen_set).collect();
    assert!(missed.is_empty(), "the cookie skipped {missed:?}");
    assert_eq!(seen_set, written);
}

/// Expiry run by two points at once reports each registration once.
#[test]
fn expiry_by_two_points() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let mut a = pg.fresh(1);
    let batch: Vec<_> = (0..200).map(|i| reg(peer(i), "a", b"r", 1)).collect();
    a.write(&batch, &NO_LIMITS, at(0)).unwrap();
    let b = pg.open(1);
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut gone = Vec::new();
                loop {
                    let got = s.expire(at(1000), 7).unwrap();
                    if got.is_empty() {
                        return gone;
                    }
                    gone.extend(got.into_iter().map(|e| e.peer));
                }
            })
        })
        .collect();
    let gone: Vec<PeerId> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(gone.len(), 200);
    assert_eq!(gone.iter().collect::<HashSet<_>>().len(), 200);
    assert_eq!(pg.open(1).stats().registrations, 0);
}

fn signed(seed: u8) -> (PeerId, Bytes) {
    let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let record = sign_record(&key, &[addr], 1, RecordFormat::Standard).unwrap();
    (key.public().to_peer_id(), Bytes::from(record))
}

/// Register through one point, discover through another, continue paging
/// on the second with a cookie issued by the first, unregister through the
/// second: the issue's "behave as one point".
#[test]
fn two_points_behave_as_one() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let key = CookieKey::from_bytes([9; 32]);
    let mut one = Point::new(Config::default(), pg.fresh(100), key.clone()).unwrap();
    let mut two = Point::new(Config::default(), pg.open(200), key).unwrap();
    assert_eq!(
        two.store().epoch(),
        100,
        "the second point shares the epoch"
    );
    let now = at(0);
    let peers: Vec<_> = (1..=4).map(signed).collect();
    for (id, record) in &peers {
        let msg = Message::Register(Register {
            namespace: ns("shared"),
            signed_peer_record: record.clone(),
            ttl: None,
        });
        match one.handle_request(*id, msg, now) {
            Some(Message::RegisterResponse(r)) => assert_eq!(r.status, ResponseStatus::Ok),
            other => panic!("{other:?}"),
        }
    }
    let discover = |cookie| {
        Message::Discover(Discover {
            namespace: Some(ns("shared")),
            limit: Some(3),
            cookie,
        })
    };
    let asker = peers[0].0;
    let Some(Message::DiscoverResponse(first)) = one.handle_request(asker, discover(None), now)
    else {
        panic!()
    };
    assert_eq!(first.registrations.len(), 3);
    let Some(Message::DiscoverResponse(rest)) =
        two.handle_request(asker, discover(first.cookie.clone()), now)
    else {
        panic!()
    };
    assert_eq!(rest.status, ResponseStatus::Ok, "{}", rest.status_text);
    assert_eq!(rest.registrations.len(), 1);
    assert_eq!(
        verify_record(&rest.registrations[0].signed_peer_record)
            .unwrap()
            .peer_id,
        peers[3].0
    );
    two.handle_request(
        peers[3].0,
        Message::Unregister(Unregister {
            namespace: ns("shared"),
            id: None,
        }),
        now,
    );
    assert_eq!(one.store().stats().registrations, 3);
    assert_eq!(
        one.store().record(&peers[3].0, &ns("shared"), now).unwrap(),
        None
    );
}

fn open_err(url: &str, schema: &str) -> OpenError {
    match PostgresStore::connect(url, schema, 1) {
        Ok(s) => panic!("opened {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_databases_are_refused() {
    let Some(pg) = Postgres::new() else {
        return;
    };
    // Unreachable: named, with the password hidden, quickly.
    let t = Instant::now();
    let e = open_err("postgres://rdv:hunter2@127.0.0.1:1/test", "rdv");
    assert!(matches!(e, OpenError::PostgresUnreachable { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("127.0.0.1:1") && !message.contains("hunter2"),
        "{message}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // Not a URL; not a schema name.
    let e = open_err("http://example.com/", "rdv");
    assert!(
        matches!(e, OpenError::InvalidPostgresConfig { .. }),
        "{e:?}"
    );
    let e = open_err(&pg.url, "Robert'); DROP TABLE students;--");
    assert!(
        matches!(e, OpenError::InvalidPostgresConfig { .. }),
        "{e:?}"
    );
    // A schema holding someone else's tables is left alone.
    let mut c = pg.client();
    c.batch_execute(&format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.accounts (id int); INSERT INTO {s}.accounts VALUES (1);",
        s = pg.schema
    ))
    .unwrap();
    let e = open_err(&pg.url, &pg.schema);
    assert!(matches!(e, OpenError::ForeignPostgres { .. }), "{e:?}");
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&pg.schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    // A meta table of another program.
    c.batch_execute(&format!(
        "CREATE TABLE {s}.meta (id smallint, application text, schema_version int); \
         INSERT INTO {s}.meta VALUES (1, 'billing', 1);",
        s = pg.schema
    ))
    .unwrap();
    let e = open_err(&pg.url, &pg.schema);
    assert!(matches!(e, OpenError::ForeignPostgres { .. }), "{e:?}");
    assert!(e.to_string().contains("billing"), "{e}");
}

#[test]
fn newer_schema_is_refused() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let mut s = pg.fresh(1);
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    drop(s);
    let mut c = pg.client();
    c.batch_execute(&format!(
        "UPDATE {}.meta SET schema_version = 99",
        pg.schema
    ))
    .unwrap();
    let e = open_err(&pg.url, &pg.schema);
    match &e {
        OpenError::NewerSchema {
            found: 99,
            location,
            ..
        } => {
            assert!(location.contains(&pg.schema), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let n: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {}.registrations", pg.schema),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing was changed");
}

/// The server drops the connection: the next call fails as transient (the
/// point answers E_UNAVAILABLE), and the store reconnects by itself.
#[test]
fn reconnects_after_losing_the_connection() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let name = pg.schema.clone();
    let sep = if pg.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}application_name={name}", pg.url);
    drop(pg.fresh(1));
    let mut s = PostgresStore::connect(&url, &pg.schema, 1).unwrap();
    created(write1(
        &mut s,
        reg(peer(1), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    let killed: i64 = pg
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    std::thread::sleep(Duration::from_millis(100));
    let mut recovered = false;
    for _ in 0..30 {
        match s.record(&peer(1), &ns("a"), at(0)) {
            Ok(found) => {
                assert!(found.is_some());
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(e.transient, "{e:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(recovered, "the store did not reconnect");
    created(write1(
        &mut s,
        reg(peer(2), "a", b"r", 7200),
        &NO_LIMITS,
        at(0),
    ));
    assert_eq!(s.stats().registrations, 2);
}

/// Called from async code (where the synchronous client would otherwise
/// panic starting its runtime inside another), on either kind of runtime.
#[test]
fn works_inside_tokio_runtimes() {
    let Some(mut pg) = Postgres::new() else {
        return;
    };
    let s = pg.fresh(1);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let s = multi.block_on(async move {
        tokio::spawn(async move {
            let mut s = s;
            created(write1(
                &mut s,
                reg(peer(1), "a", b"r", 7200),
                &NO_LIMITS,
                at(0),
            ));
            s
        })
        .await
        .unwrap()
    });
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    current.block_on(async {
        let mut s = s;
        created(write1(
            &mut s,
            reg(peer(2), "a", b"r", 7200),
            &NO_LIMITS,
            at(0),
        ));
        assert_eq!(s.stats().registrations, 2);
        drop(s); // closing the connection inside the runtime, too
    });
}
