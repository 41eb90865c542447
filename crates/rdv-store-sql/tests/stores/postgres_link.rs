//! The PostgreSQL link in production: TLS as `sslmode` asks (libpq's
//! meanings), and a statement timeout, so a database that stops answering
//! fails a request instead of holding the point thread.
//! (CI's PostgreSQL has TLS on with Debian's self-signed "snakeoil"
//! certificate.)

use std::time::Duration;

use rdv_point::Store;
use rdv_store_sql::PostgresStore;

use crate::harness::Postgres;
use crate::suite::{NO_LIMITS, at, peer, reg};

/// `url` with `params` added to its query string.
fn with(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Whether the backend of the session named `app` uses TLS.
fn session_uses_tls(pg: &Postgres, app: &str) -> bool {
    let mut c = pg.client();
    let row = c
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1 LIMIT 1",
            &[&app],
        )
        .unwrap();
    row.get(0)
}

#[test]
fn sslmode_require_encrypts_and_disable_does_not() {
    let Some(pg) = Postgres::new() else { return };
    let app = format!("rdv_tls_{}", std::process::id());
    let store = PostgresStore::connect(
        &with(&pg.url, &format!("sslmode=require&application_name={app}")),
        &pg.schema,
        1,
    )
    .unwrap();
    assert!(session_uses_tls(&pg, &app), "sslmode=require without TLS");
    drop(store);
    let plain = format!("{app}_plain");
    let store = PostgresStore::connect(
        &with(
            &pg.url,
            &format!("sslmode=disable&application_name={plain}"),
        ),
        &pg.schema,
        1,
    )
    .unwrap();
    assert!(!session_uses_tls(&pg, &plain));
    drop(store);
}

#[test]
fn sslmode_verify_full_refuses_a_certificate_nobody_vouches_for() {
    let Some(pg) = Postgres::new() else { return };
    let Err(err) = PostgresStore::connect(&with(&pg.url, "sslmode=verify-full"), &pg.schema, 1)
    else {
        panic!("a self-signed certificate was accepted under verify-full");
    };
    let text = err.to_string();
    assert!(
        text.contains("TLS") || text.contains("certificate") || text.contains("trusted root"),
        "{text}"
    );
    // A bad mode is refused before connecting, naming it.
    let err = PostgresStore::connect(&with(&pg.url, "sslmode=sometimes"), &pg.schema, 1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("sslmode"), "{err}");
}

#[test]
fn a_statement_stuck_in_the_database_fails_instead_of_holding_the_point() {
    let Some(pg) = Postgres::new() else { return };
    let mut store = pg.open(1);
    // Another session holds the registrations table locked: the store's
    // next write waits on the lock until the statement timeout ends it.
    let mut blocker = pg.client();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE \"{}\".registrations IN ACCESS EXCLUSIVE MODE",
        pg.schema
    ))
    .unwrap();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(store.write(&[reg(peer(1), "n", b"r", 7200)], &NO_LIMITS, at(0)));
    });
    // The default statement timeout is 20 s; a bound far above it, so a
    // loaded machine cannot make this flaky, and a hang still fails.
    let result = outcome
        .recv_timeout(Duration::from_secs(120))
        .expect("the write was held by the lock: no statement timeout");
    assert!(result.is_err(), "the write went through a held lock");
    tx.rollback().unwrap();
}
