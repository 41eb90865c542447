//! The stores under test, each behind a [`Harness`] that makes a fresh one
//! and (for the durable ones) reopens it, and cleans up after itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use rdv_point::{MemoryStore, Store};
use rdv_store_sql::{PostgresStore, SqliteStore};

/// A store maker.
pub trait Harness {
    type S: Store;
    /// Whether the store survives a restart.
    const DURABLE: bool;
    /// A new, empty store with this epoch.
    fn fresh(&mut self, epoch: u64) -> Self::S;
    /// Drops `store` and opens its database again, offering `new_epoch`
    /// (which an existing store must ignore). `None`: not durable.
    fn reopen(&mut self, store: Self::S, new_epoch: u64) -> Option<Self::S>;
}

pub struct Memory;

impl Harness for Memory {
    type S = MemoryStore;
    const DURABLE: bool = false;
    fn fresh(&mut self, epoch: u64) -> MemoryStore {
        MemoryStore::new(epoch)
    }
    fn reopen(&mut self, _: MemoryStore, _: u64) -> Option<MemoryStore> {
        None
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir()
            .join("rdv-store-sql-tests")
            .join(unique("t"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SQLite files in a directory of their own: each `fresh` a new file.
pub struct Sqlite {
    pub dir: TempDir,
    files: u32,
}

impl Sqlite {
    pub fn new() -> Self {
        Self {
            dir: TempDir::new(),
            files: 0,
        }
    }
    /// The file of the latest `fresh` store.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(format!("point-{}.db", self.files))
    }
}

impl Harness for Sqlite {
    type S = SqliteStore;
    const DURABLE: bool = true;
    fn fresh(&mut self, epoch: u64) -> SqliteStore {
        self.files += 1;
        SqliteStore::open(self.path(), epoch).unwrap()
    }
    fn reopen(&mut self, store: SqliteStore, new_epoch: u64) -> Option<SqliteStore> {
        drop(store);
        Some(SqliteStore::open(self.path(), new_epoch).unwrap())
    }
}

/// The PostgreSQL URL for tests, or `None` (with one line on stderr) when
/// it is not set. Under CI it must be set.
pub fn postgres_url() -> Option<String> {
    match std::env::var("RDV_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but RDV_TEST_POSTGRES is not: PostgreSQL tests must run under CI \
                 (set RDV_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test)"
            );
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                // Straight to stderr: the test harness captures eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping PostgreSQL tests: set RDV_TEST_POSTGRES=postgres://..."
                );
            });
            None
        }
    }
}

/// Schemas of their own (each `fresh` a new one), all dropped, with
/// everything in them, when done.
pub struct Postgres {
    pub url: String,
    /// The schema of the latest `fresh` store.
    pub schema: String,
    made: Vec<String>,
}

impl Postgres {
    pub fn new() -> Option<Self> {
        let schema = unique("rdv_test");
        Some(Self {
            url: postgres_url()?,
            made: vec![schema.clone()],
            schema,
        })
    }
    /// A store in the current schema (a second one shares it).
    pub fn open(&self, epoch: u64) -> PostgresStore {
        PostgresStore::connect(&self.url, &self.schema, epoch).unwrap()
    }
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            for schema in &self.made {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
            }
        }
    }
}

impl Harness for Postgres {
    type S = PostgresStore;
    const DURABLE: bool = true;
    fn fresh(&mut self, epoch: u64) -> PostgresStore {
        self.schema = unique("rdv_test");
        self.made.push(self.schema.clone());
        self.open(epoch)
    }
    fn reopen(&mut self, store: PostgresStore, new_epoch: u64) -> Option<PostgresStore> {
        drop(store);
        Some(self.open(new_epoch))
    }
}
