//! The SQLite store: one file, durable, the default for `rdv point`.
//!
//! Durability: WAL journal. A [`Store::write`] commits with
//! `synchronous=FULL`: the WAL is fsynced before it returns, so a REGISTER
//! answered OK survives a crash or a power cut. A batch is one transaction,
//! so a caller that gathers the REGISTERs arriving together and writes them
//! as one batch pays one fsync for all of them (group commit).
//!
//! [`Store::remove`] (UNREGISTER) and [`Store::expire`] commit with
//! `synchronous=NORMAL`, without waiting for the fsync: nobody is answered
//! on the strength of them, the WAL keeps them in order (the next REGISTER's
//! fsync covers them), a killed process loses none of them, and a power cut
//! can at worst bring back a registration until its TTL runs out (an
//! expired one is never served). An fsync per UNREGISTER would cap a point
//! at a few hundred a second on ordinary disks.
//!
//! Concurrency: every write takes SQLite's write lock (`BEGIN IMMEDIATE`)
//! and reads the counters and the next position inside it, and every read
//! that needs two statements runs them in one read transaction. So nothing is
//! cached across calls except the epoch (which never changes), and two
//! processes on one file would still be correct, if slow.
//!
//! Calls block on disk I/O (an fsync per write): call from a thread that may
//! block, not from an async task.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdv_point::store::*;
use rdv_wire::{Namespace, PeerId, RecordFormat, Timestamp};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::error::OpenError;
use crate::util::*;

/// The migrations, in order: `MIGRATIONS[i]` takes a database from schema
/// version `i` to `i + 1` (`PRAGMA user_version`). Never edit a released
/// one; append.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "
    CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL,
        next_position INTEGER NOT NULL,
        registrations INTEGER NOT NULL,
        namespaces INTEGER NOT NULL,
        record_bytes INTEGER NOT NULL
    );
    CREATE TABLE peers (
        id INTEGER PRIMARY KEY,
        peer BLOB NOT NULL UNIQUE,
        count INTEGER NOT NULL
    );
    CREATE TABLE namespaces (
        id INTEGER PRIMARY KEY,
        name BLOB NOT NULL UNIQUE,
        count INTEGER NOT NULL
    );
    -- position is the rowid: the table is ordered by it, so DISCOVER of all
    -- namespaces walks the table itself.
    CREATE TABLE registrations (
        position INTEGER PRIMARY KEY,
        peer INTEGER NOT NULL,
        ns INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        format INTEGER NOT NULL,
        record BLOB NOT NULL
    );
    CREATE UNIQUE INDEX registrations_key ON registrations (peer, ns);
    CREATE INDEX registrations_ns ON registrations (ns, position);
    CREATE INDEX registrations_expiry ON registrations (expires_at, position);
    ",
    // Version 2: position indexes per record format, so that a DISCOVER for
    // one format (rust-libp2p reads only legacy records, js and go only
    // standard ones) walks only registrations of that format, in one
    // namespace or in all. The (namespace, position) index becomes
    // (namespace, format, position): a scan of both formats merges its two
    // ranges, so writes maintain one index more than before, not two.
    "
    DROP INDEX registrations_ns;
    CREATE INDEX registrations_ns_format ON registrations (ns, format, position);
    CREATE INDEX registrations_format ON registrations (format, position);
    ",
    // Version 3: rows may hold format code 2, py-libp2p's unsigned PeerInfo.
    // Nothing to change in the tables; the version says so, so a point built
    // before it refuses this database instead of failing on those rows.
    "CREATE INDEX IF NOT EXISTS registrations_format ON registrations (format, position);",
];

/// How long a statement waits for another connection's lock before failing
/// with a transient error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per store, in KiB (SQLite's default is 2 MiB). The hot part
/// of a large store is its indexes; 64 MiB keeps those of a million
/// registrations in memory.
const CACHE_KIB: i64 = 64 * 1024;

/// WAL pages between automatic checkpoints (SQLite's default: 1000). Each
/// checkpoint copies the WAL into the file and fsyncs it; with registrations
/// spread over many peers and namespaces a batch dirties hundreds of pages,
/// so the default checkpoints every few batches. 16 384 pages measured 2-3
/// times the throughput for batches of 64; the cost is a WAL of up to
/// 64 MiB, which SQLite reads back when opening after a crash.
const WAL_CHECKPOINT_PAGES: i64 = 16_384;

// The statements, named so that tests can check their query plans.

const META_GET: &str =
    "SELECT next_position, registrations, namespaces, record_bytes FROM meta WHERE id = 1";
const META_SET: &str = "UPDATE meta SET next_position = ?1, registrations = ?2, namespaces = ?3, record_bytes = ?4 WHERE id = 1";
const PEER_GET: &str = "SELECT id, count FROM peers WHERE peer = ?1";
const PEER_INSERT: &str = "INSERT INTO peers (peer, count) VALUES (?1, 1)";
const PEER_ADD: &str = "UPDATE peers SET count = count + ?2 WHERE id = ?1";
const PEER_DROP_IF_UNUSED: &str = "DELETE FROM peers WHERE id = ?1 AND count = 0";
const NS_GET: &str = "SELECT id, count FROM namespaces WHERE name = ?1";
const NS_INSERT: &str = "INSERT INTO namespaces (name, count) VALUES (?1, 1)";
const NS_ADD: &str = "UPDATE namespaces SET count = count + ?2 WHERE id = ?1";
const NS_DROP_IF_UNUSED: &str = "DELETE FROM namespaces WHERE id = ?1 AND count = 0";
const REG_GET: &str =
    "SELECT position, expires_at, length(record) FROM registrations WHERE peer = ?1 AND ns = ?2";
const REG_INSERT: &str = "INSERT INTO registrations (position, peer, ns, expires_at, format, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const REG_REFRESH: &str = "UPDATE registrations SET position = ?1, expires_at = ?2, format = ?3, record = ?4 WHERE position = ?5";
const REG_DELETE: &str = "DELETE FROM registrations WHERE position = ?1";
const RECORD: &str = "SELECT r.record, r.format FROM peers p CROSS JOIN registrations r ON r.peer = p.id \
     WHERE p.peer = ?1 AND r.ns = (SELECT id FROM namespaces WHERE name = ?2) AND r.expires_at > ?3";
/// A page of one namespace: the (namespace, format, position) index from
/// the cookie's position on, one range per format asked for (`?4` to `?6`:
/// codes, -1 for none), merged in position order; expired rows are passed
/// over, other formats never read.
const SCAN_NS: &str = "SELECT r.position, p.peer, r.expires_at, r.format, r.record \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer \
     WHERE r.ns = ?1 AND r.format = ?4 AND r.position > ?2 AND r.expires_at > ?3 \
     UNION ALL \
     SELECT r.position, p.peer, r.expires_at, r.format, r.record \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer \
     WHERE r.ns = ?1 AND r.format = ?5 AND r.position > ?2 AND r.expires_at > ?3 \
     UNION ALL \
     SELECT r.position, p.peer, r.expires_at, r.format, r.record \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer \
     WHERE r.ns = ?1 AND r.format = ?6 AND r.position > ?2 AND r.expires_at > ?3 \
     ORDER BY 1 LIMIT ?7";
/// The highest position in a namespace, of any format (where a short
/// page's scan ended; 0 if none): the last entry of each format's range
/// (the codes of `format_code`).
const SCAN_NS_END: &str = "SELECT max(\
     coalesce((SELECT max(position) FROM registrations WHERE ns = ?1 AND format = 0), 0), \
     coalesce((SELECT max(position) FROM registrations WHERE ns = ?1 AND format = 1), 0), \
     coalesce((SELECT max(position) FROM registrations WHERE ns = ?1 AND format = 2), 0))";
/// A page of all namespaces in every format: the table itself, in rowid
/// (position) order. (No condition on the format: one would tempt the
/// planner to read both ranges of the format index and sort them.)
const SCAN_ALL: &str = "SELECT r.position, p.peer, r.expires_at, r.format, r.record, n.name \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer CROSS JOIN namespaces n ON n.id = r.ns \
     WHERE r.position > ?1 AND r.expires_at > ?2 \
     ORDER BY r.position LIMIT ?3";
/// A page of all namespaces in one format (`?3`; -1 for none): the
/// (format, position) index, so other formats are never read.
const SCAN_ALL_FORMAT: &str = "SELECT r.position, p.peer, r.expires_at, r.format, r.record, n.name \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer CROSS JOIN namespaces n ON n.id = r.ns \
     WHERE r.format = ?3 AND r.position > ?1 AND r.expires_at > ?2 \
     ORDER BY r.position LIMIT ?4";
/// A page of all namespaces in two formats of the three (`?3`, `?4`): the
/// two ranges of the (format, position) index, merged.
const SCAN_ALL_TWO_FORMATS: &str = "SELECT * FROM (\
     SELECT r.position, p.peer, r.expires_at, r.format, r.record, n.name \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer CROSS JOIN namespaces n ON n.id = r.ns \
     WHERE r.format = ?3 AND r.position > ?1 AND r.expires_at > ?2 \
     UNION ALL \
     SELECT r.position, p.peer, r.expires_at, r.format, r.record, n.name \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer CROSS JOIN namespaces n ON n.id = r.ns \
     WHERE r.format = ?4 AND r.position > ?1 AND r.expires_at > ?2) \
     ORDER BY 1 LIMIT ?5";
const SCAN_ALL_END: &str = "SELECT max(position) FROM registrations";
const NEXT_EXPIRY: &str = "SELECT min(expires_at) FROM registrations";
const ANY_EXPIRED: &str = "SELECT 1 FROM registrations WHERE expires_at <= ?1 LIMIT 1";
const EXPIRED: &str = "SELECT r.position, r.peer, r.ns, length(r.record), p.peer, n.name \
     FROM registrations r CROSS JOIN peers p ON p.id = r.peer CROSS JOIN namespaces n ON n.id = r.ns \
     WHERE r.expires_at <= ?1 ORDER BY r.expires_at, r.position LIMIT ?2";
const STATS: &str = "SELECT registrations, namespaces, record_bytes FROM meta WHERE id = 1";

/// Registrations in an SQLite file. See the module docs.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    epoch: u64,
    /// The last counts read, for [`Store::stats`], which cannot fail.
    last_stats: Cell<StoreStats>,
    /// The connection's current `synchronous` setting.
    sync: Cell<Durability>,
}

/// How a commit waits for the disk (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// fsync at every commit: for writes that are acknowledged.
    Full,
    /// No fsync at commit: for removals nobody waits for.
    Normal,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// What the file says it is, read before anything is written to it.
struct Identity {
    application_id: i32,
    user_version: i64,
    /// Tables, indexes, views and triggers.
    objects: i64,
}

impl Identity {
    fn read(conn: &Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            application_id: conn.pragma_query_value(None, "application_id", |r| r.get(0))?,
            user_version: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
            objects: conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?,
        })
    }

    /// A new, empty file (or an empty one someone made): safe to set up.
    fn is_blank(&self) -> bool {
        self.application_id == 0 && self.user_version == 0 && self.objects == 0
    }

    /// Refuses a file that is not ours or is newer than we know.
    fn check(&self, path: &Path) -> Result<(), OpenError> {
        if self.is_blank() {
            return Ok(());
        }
        if self.application_id != SqliteStore::APPLICATION_ID {
            return Err(OpenError::ForeignSqlite {
                path: path.to_path_buf(),
                application_id: self.application_id,
                objects: self.objects,
            });
        }
        if self.user_version > crate::SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                location: path.display().to_string(),
                found: self.user_version,
                supported: crate::SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

/// An SQLite failure while opening, sorted by what the operator must do.
fn open_error(path: &Path, e: rusqlite::Error) -> OpenError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => OpenError::NotADatabase { path, source: e },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt { path, source: e },
        _ => OpenError::Sqlite { path, source: e },
    }
}

/// An SQLite failure while serving. Transient when waiting may fix it: a
/// lock held by another connection, a full disk, an I/O error.
fn store_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
        )
    );
    StoreError {
        transient,
        message: format!("SQLite store {}: {e}", path.display()),
    }
}

/// Store-wide counters, read at the start of a write transaction and
/// written back at its end.
struct Totals {
    next_position: i64,
    registrations: i64,
    namespaces: i64,
    record_bytes: i64,
}

impl Totals {
    fn read(tx: &Connection) -> rusqlite::Result<Self> {
        tx.prepare_cached(META_GET)?.query_row([], |r| {
            Ok(Self {
                next_position: r.get(0)?,
                registrations: r.get(1)?,
                namespaces: r.get(2)?,
                record_bytes: r.get(3)?,
            })
        })
    }

    fn write(&self, tx: &Connection) -> rusqlite::Result<()> {
        tx.prepare_cached(META_SET)?.execute(params![
            self.next_position,
            self.registrations,
            self.namespaces,
            self.record_bytes
        ])?;
        Ok(())
    }

    fn take_position(&mut self) -> i64 {
        let p = self.next_position;
        self.next_position += 1;
        p
    }
}

/// A row id and its count of registrations.
type Counted = (i64, i64);

fn get_counted(tx: &Connection, sql: &str, key: &[u8]) -> rusqlite::Result<Option<Counted>> {
    tx.prepare_cached(sql)?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Deletes the registration at `position` and updates every counter.
/// Returns whether the peer row and the namespace row went with it.
fn unlink(
    tx: &Connection,
    totals: &mut Totals,
    position: i64,
    peer: i64,
    ns: i64,
    record_len: i64,
) -> rusqlite::Result<(bool, bool)> {
    tx.prepare_cached(REG_DELETE)?.execute([position])?;
    tx.prepare_cached(PEER_ADD)?.execute([peer, -1])?;
    tx.prepare_cached(NS_ADD)?.execute([ns, -1])?;
    let peer_gone = tx.prepare_cached(PEER_DROP_IF_UNUSED)?.execute([peer])? > 0;
    let ns_gone = tx.prepare_cached(NS_DROP_IF_UNUSED)?.execute([ns])? > 0;
    totals.registrations -= 1;
    totals.record_bytes -= record_len;
    if ns_gone {
        totals.namespaces -= 1;
    }
    Ok((peer_gone, ns_gone))
}

/// One entry of a batch, inside the batch's transaction. The same steps as
/// `MemoryStore::write_one`, in the same order, so the two refuse alike.
fn write_one(
    tx: &Connection,
    totals: &mut Totals,
    reg: &NewRegistration,
    limits: &[i64; 5],
    now: Timestamp,
) -> rusqlite::Result<WriteOutcome> {
    let expires_at = deadline(now, reg.ttl);
    let now = sql_int(now.as_millis());
    let peer_key = reg.peer.to_bytes();
    let ns_key = reg.namespace.as_str().as_bytes();
    let record_len = i64::try_from(reg.record.len()).unwrap_or(i64::MAX);
    let format = format_code(reg.format);
    let mut peer = get_counted(tx, PEER_GET, &peer_key)?;
    let mut ns = get_counted(tx, NS_GET, ns_key)?;
    if let (Some((p, _)), Some((n, _))) = (peer, ns) {
        let existing: Option<(i64, i64, i64)> = tx
            .prepare_cached(REG_GET)?
            .query_row([p, n], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((old_position, old_expiry, old_len)) = existing {
            if old_expiry > now {
                // Supersede: same row, new record, deadline and position.
                let position = totals.take_position();
                tx.prepare_cached(REG_REFRESH)?.execute(params![
                    position,
                    expires_at,
                    format,
                    &reg.record[..],
                    old_position
                ])?;
                totals.record_bytes += record_len - old_len;
                return Ok(WriteOutcome::Refreshed(from_sql(position)));
            }
            // Expired but not swept yet: gone as far as anyone can tell.
            let (peer_gone, ns_gone) = unlink(tx, totals, old_position, p, n, old_len)?;
            peer = if peer_gone {
                None
            } else {
                peer.map(|(id, c)| (id, c - 1))
            };
            ns = if ns_gone {
                None
            } else {
                ns.map(|(id, c)| (id, c - 1))
            };
        }
    }
    let [per_peer, per_namespace, namespaces, total, total_bytes] = *limits;
    if peer.map_or(0, |(_, c)| c) >= per_peer {
        return Ok(WriteOutcome::Refused(Limit::PerPeer));
    }
    match ns {
        Some((_, c)) if c >= per_namespace => {
            return Ok(WriteOutcome::Refused(Limit::PerNamespace));
        }
        None if totals.namespaces >= namespaces => {
            return Ok(WriteOutcome::Refused(Limit::Namespaces));
        }
        _ => {}
    }
    if totals.registrations >= total {
        return Ok(WriteOutcome::Refused(Limit::Total));
    }
    if totals.record_bytes.saturating_add(record_len) > total_bytes {
        return Ok(WriteOutcome::Refused(Limit::Bytes));
    }
    let peer_id = match peer {
        Some((id, _)) => {
            tx.prepare_cached(PEER_ADD)?.execute([id, 1])?;
            id
        }
        None => {
            tx.prepare_cached(PEER_INSERT)?.execute([&peer_key])?;
            tx.last_insert_rowid()
        }
    };
    let ns_id = match ns {
        Some((id, _)) => {
            tx.prepare_cached(NS_ADD)?.execute([id, 1])?;
            id
        }
        None => {
            tx.prepare_cached(NS_INSERT)?.execute([ns_key])?;
            totals.namespaces += 1;
            tx.last_insert_rowid()
        }
    };
    let position = totals.take_position();
    tx.prepare_cached(REG_INSERT)?.execute(params![
        position,
        peer_id,
        ns_id,
        expires_at,
        format,
        &reg.record[..]
    ])?;
    totals.registrations += 1;
    totals.record_bytes += record_len;
    Ok(WriteOutcome::Created(from_sql(position)))
}

impl SqliteStore {
    /// `PRAGMA application_id` of rdv point stores ("rdvp"), so that a file
    /// of another program is recognised and left alone.
    pub const APPLICATION_ID: i32 = 0x7264_7670;

    /// Opens the store in `path`, creating the file (and its directory) if
    /// missing, and migrating an older schema. `new_epoch` is the epoch of a
    /// store created now (pass a random value); an existing store keeps its
    /// own, so cookies issued before a restart keep working.
    ///
    /// Refuses, without writing anything, a file that is not SQLite, is
    /// damaged, belongs to another program, or has a newer schema.
    /// Integrity is not checked page by page (that costs a read of the whole
    /// file; see [`SqliteStore::check_integrity`]).
    pub fn open(path: impl AsRef<Path>, new_epoch: u64) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let err = |e| open_error(&path, e);
        let mut conn = Connection::open_with_flags(&path, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Look before writing anything: switching to WAL rewrites the
        // header, which a foreign or newer file must not see.
        Identity::read(&conn).map_err(err)?.check(&path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Unsupported {
                path: path.clone(),
                reason: format!(
                    "SQLite runs it in journal mode {mode}, not WAL; give a path to a file on a local file system"
                ),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(err)?;
        Self::migrate(&mut conn, &path, new_epoch)?;
        let epoch: i64 = conn
            .query_row("SELECT epoch FROM meta WHERE id = 1", [], |r| r.get(0))
            .map_err(err)?;
        let store = Self {
            conn,
            path,
            epoch: epoch_from_sql(epoch),
            last_stats: Cell::new(StoreStats::default()),
            sync: Cell::new(Durability::Full),
        };
        // Touch the tables a first request needs, so a damaged file fails
        // here rather than on the first request.
        for probe in [SCAN_ALL_END, NEXT_EXPIRY, STATS] {
            store
                .conn
                .query_row(probe, [], |_| Ok(()))
                .map_err(|e| open_error(&store.path, e))?;
        }
        store.stats();
        Ok(store)
    }

    /// Creates the schema in a blank file, or brings an older one up to
    /// date, in one transaction. The identity is checked again under the
    /// write lock: another process may have set the file up meanwhile.
    fn migrate(conn: &mut Connection, path: &Path, new_epoch: u64) -> Result<(), OpenError> {
        let err = |e| open_error(path, e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let identity = Identity::read(&tx).map_err(err)?;
        identity.check(path)?;
        let from = usize::try_from(identity.user_version).unwrap_or(usize::MAX);
        if from >= MIGRATIONS.len() {
            return Ok(()); // up to date; the transaction rolls back unchanged
        }
        for migration in &MIGRATIONS[from..] {
            tx.execute_batch(migration).map_err(err)?;
        }
        if identity.is_blank() {
            tx.pragma_update(None, "application_id", Self::APPLICATION_ID)
                .map_err(err)?;
            tx.execute(
                "INSERT INTO meta (id, epoch, next_position, registrations, namespaces, record_bytes) \
                 VALUES (1, ?1, 1, 0, 0, 0)",
                [epoch_to_sql(new_epoch)],
            )
            .map_err(err)?;
        }
        tx.pragma_update(None, "user_version", crate::SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every page and checks SQLite's structures (`PRAGMA
    /// quick_check`): seconds for a large store, so not done by
    /// [`SqliteStore::open`]. For an operator's "check the store" command.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let problems: Vec<String> = match self
            .conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        {
            Ok(problems) => problems,
            // So damaged that the check itself cannot run.
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
                ) =>
            {
                vec![e.to_string()]
            }
            Err(e) => return Err(self.error(e)),
        };
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError {
            transient: false,
            message: format!(
                "SQLite store {} is damaged: {}",
                self.path.display(),
                problems.join("; ")
            ),
        })
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        store_error(&self.path, e)
    }

    /// Sets how the next commits wait for the disk. Must be called outside
    /// a transaction. On failure the setting is unchanged (and known), so a
    /// write never commits with less durability than it asked for.
    fn set_sync(&self, want: Durability) -> Result<(), StoreError> {
        if self.sync.get() != want {
            let value = match want {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            };
            self.conn
                .pragma_update(None, "synchronous", value)
                .map_err(|e| self.error(e))?;
            self.sync.set(want);
        }
        Ok(())
    }

    /// Maps a data error from a row to a store error naming the file.
    fn data_error(&self, e: StoreError) -> StoreError {
        StoreError {
            transient: e.transient,
            message: format!("SQLite store {}: {}", self.path.display(), e.message),
        }
    }

    fn scan_inner(
        &self,
        scope: Option<&Namespace>,
        after: i64,
        limit: i64,
        formats: [i16; 3],
        now: i64,
    ) -> rusqlite::Result<Option<(Vec<ScannedRow>, i64)>> {
        // One read transaction: the page and the end of the scan must come
        // from the same snapshot, or a registration written between the two
        // by another process could be skipped by the cookie.
        let tx = self.conn.unchecked_transaction()?;
        let result = match scope {
            Some(ns) => {
                let Some((ns_id, _)) = get_counted(&tx, NS_GET, ns.as_str().as_bytes())? else {
                    return Ok(None);
                };
                let rows = tx
                    .prepare_cached(SCAN_NS)?
                    .query_map(
                        params![ns_id, after, now, formats[0], formats[1], formats[2], limit],
                        |r| {
                            Ok(ScannedRow {
                                position: r.get(0)?,
                                peer: r.get(1)?,
                                expires_at: r.get(2)?,
                                format: r.get(3)?,
                                record: r.get(4)?,
                                namespace: None,
                            })
                        },
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let end: i64 = tx
                    .prepare_cached(SCAN_NS_END)?
                    .query_row([ns_id], |r| r.get(0))?;
                (rows, end)
            }
            None => {
                let row = |r: &rusqlite::Row<'_>| {
                    Ok(ScannedRow {
                        position: r.get(0)?,
                        peer: r.get(1)?,
                        expires_at: r.get(2)?,
                        format: r.get(3)?,
                        record: r.get(4)?,
                        namespace: Some(r.get(5)?),
                    })
                };
                let asked: Vec<i16> = formats.into_iter().filter(|c| *c >= 0).collect();
                let rows = match asked[..] {
                    [_, _, _] => tx
                        .prepare_cached(SCAN_ALL)?
                        .query_map(params![after, now, limit], row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                    [a, b] => tx
                        .prepare_cached(SCAN_ALL_TWO_FORMATS)?
                        .query_map(params![after, now, a, b, limit], row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                    // One format (or none): only its rows are read.
                    _ => tx
                        .prepare_cached(SCAN_ALL_FORMAT)?
                        .query_map(
                            params![after, now, asked.first().copied().unwrap_or(-1), limit],
                            row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                };
                let end: Option<i64> = tx
                    .prepare_cached(SCAN_ALL_END)?
                    .query_row([], |r| r.get(0))?;
                (rows, end.unwrap_or(0))
            }
        };
        tx.finish()?;
        Ok(Some(result))
    }
}

impl Store for SqliteStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn write(
        &mut self,
        batch: &[NewRegistration],
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let limits = sql_limits(limits);
        self.set_sync(Durability::Full)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| store_error(path, e))?;
        let outcomes = (|| {
            let mut totals = Totals::read(&tx)?;
            let outcomes = batch
                .iter()
                .map(|reg| write_one(&tx, &mut totals, reg, &limits, now))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            totals.write(&tx)?;
            Ok(outcomes)
        })()
        .map_err(|e| store_error(path, e))?;
        // Durable when this returns (synchronous=FULL): only then may the
        // point answer OK.
        tx.commit().map_err(|e| store_error(path, e))?;
        Ok(outcomes)
    }

    fn remove(&mut self, peer: &PeerId, namespace: &Namespace) -> Result<bool, StoreError> {
        self.set_sync(Durability::Normal)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| store_error(path, e))?;
        let removed = (|| {
            let peer = get_counted(&tx, PEER_GET, &peer.to_bytes())?;
            let ns = get_counted(&tx, NS_GET, namespace.as_str().as_bytes())?;
            let (Some((p, _)), Some((n, _))) = (peer, ns) else {
                return Ok(false);
            };
            let existing: Option<(i64, i64)> = tx
                .prepare_cached(REG_GET)?
                .query_row([p, n], |r| Ok((r.get(0)?, r.get(2)?)))
                .optional()?;
            let Some((position, len)) = existing else {
                return Ok(false);
            };
            let mut totals = Totals::read(&tx)?;
            unlink(&tx, &mut totals, position, p, n, len)?;
            totals.write(&tx)?;
            Ok(true)
        })()
        .map_err(|e| store_error(path, e))?;
        if removed {
            tx.commit().map_err(|e| store_error(path, e))?;
        }
        Ok(removed)
    }

    fn record(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        now: Timestamp,
    ) -> Result<Option<(bytes::Bytes, RecordFormat)>, StoreError> {
        let found: Option<(Vec<u8>, i64)> = self
            .conn
            .prepare_cached(RECORD)
            .and_then(|mut s| {
                s.query_row(
                    params![
                        peer.to_bytes(),
                        namespace.as_str().as_bytes(),
                        sql_int(now.as_millis())
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(|e| self.error(e))?;
        match found {
            None => Ok(None),
            Some((record, format)) => Ok(Some((
                record_from_sql(record),
                format_from_code(format).map_err(|e| self.data_error(e))?,
            ))),
        }
    }

    fn scan(
        &self,
        scope: Option<&Namespace>,
        after: u64,
        limit: usize,
        formats: Formats,
        now: Timestamp,
    ) -> Result<Page, StoreError> {
        let found = self
            .scan_inner(
                scope,
                sql_int(after),
                sql_limit(limit),
                format_codes(formats),
                sql_int(now.as_millis()),
            )
            .map_err(|e| self.error(e))?;
        let Some((raw, end)) = found else {
            return Ok(Page {
                registrations: Vec::new(),
                scanned_to: after,
            });
        };
        page_from_rows(raw, scope, after, limit, end).map_err(|e| self.data_error(e))
    }

    fn next_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        let min: Option<i64> = self
            .conn
            .prepare_cached(NEXT_EXPIRY)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.error(e))?;
        Ok(min.map(|t| Timestamp::from_millis(from_sql(t))))
    }

    fn expire(
        &mut self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredRegistration>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = sql_int(now.as_millis());
        // The point sweeps before every request: make the common case (nothing
        // due) one index probe, without taking the write lock.
        let any: Option<i64> = self
            .conn
            .prepare_cached(ANY_EXPIRED)
            .and_then(|mut s| s.query_row([now], |r| r.get(0)).optional())
            .map_err(|e| self.error(e))?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        self.set_sync(Durability::Normal)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| store_error(path, e))?;
        let rows = (|| {
            type Row = (i64, i64, i64, i64, Vec<u8>, Vec<u8>);
            let rows = tx
                .prepare_cached(EXPIRED)?
                .query_map(params![now, sql_limit(max)], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<Row>>>()?;
            let mut totals = Totals::read(&tx)?;
            for &(position, peer, ns, len, _, _) in &rows {
                unlink(&tx, &mut totals, position, peer, ns, len)?;
            }
            totals.write(&tx)?;
            Ok(rows)
        })()
        .map_err(|e| store_error(path, e))?;
        tx.commit().map_err(|e| store_error(path, e))?;
        rows.into_iter()
            .map(|(_, _, _, _, peer, name)| {
                Ok(ExpiredRegistration {
                    peer: peer_from_sql(&peer)?,
                    namespace: namespace_from_sql(&name)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(|e| self.data_error(e))
    }

    fn stats(&self) -> StoreStats {
        let read = self.conn.prepare_cached(STATS).and_then(|mut s| {
            s.query_row([], |r| {
                Ok(StoreStats {
                    registrations: count_from_sql(r.get(0)?),
                    namespaces: count_from_sql(r.get(1)?),
                    record_bytes: count_from_sql(r.get(2)?),
                })
            })
        });
        // Counts are for metrics: on a read failure (reported by the next
        // request that fails) show the last ones rather than zeros.
        if let Ok(stats) = read {
            self.last_stats.set(stats);
        }
        self.last_stats.get()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every migration is counted in the schema version.
    #[test]
    fn schema_version_counts_the_migrations() {
        assert_eq!(MIGRATIONS.len() as i64, crate::SCHEMA_VERSION);
    }

    /// Writes always commit with FULL, whatever ran before them.
    #[test]
    fn writes_commit_with_full_sync() {
        let dir = std::env::temp_dir().join(format!("rdv-store-sql-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = SqliteStore::open(dir.join("s.db"), 1).unwrap();
        let level = |s: &SqliteStore| -> i64 {
            s.conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(level(&s), 2); // FULL
        let peer = PeerId::random();
        let ns = Namespace::new("a").unwrap();
        let reg = NewRegistration {
            peer,
            namespace: ns.clone(),
            record: bytes::Bytes::from_static(b"r"),
            format: RecordFormat::Standard,
            ttl: rdv_wire::Ttl::from_secs(1),
        };
        let limits = Limits {
            per_peer: 9,
            per_namespace: 9,
            namespaces: 9,
            total: 9,
            total_bytes: 999,
        };
        let now = Timestamp::from_millis(0);
        s.write(std::slice::from_ref(&reg), &limits, now).unwrap();
        assert!(s.remove(&peer, &ns).unwrap());
        assert_eq!(level(&s), 1); // NORMAL
        s.write(std::slice::from_ref(&reg), &limits, now).unwrap();
        assert_eq!(level(&s), 2);
        assert_eq!(s.expire(Timestamp::from_millis(1000), 9).unwrap().len(), 1);
        assert_eq!(level(&s), 1);
        s.write(std::slice::from_ref(&reg), &limits, now).unwrap();
        assert_eq!(level(&s), 2);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join(" | ")
    }

    /// DISCOVER by namespace, paging by position, expiry by deadline and the
    /// per-key lookups are index searches, never full scans or sorts.
    #[test]
    fn hot_queries_use_indexes() {
        let dir = std::env::temp_dir().join(format!("rdv-store-sql-plan-{}", std::process::id()));
        let path = dir.join("plan.db");
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = SqliteStore::open(&path, 7).unwrap();
        check_plans(&store.conn);
        // The same once ANALYZE has told the planner how few legacy records
        // there are, and how two namespaces share the positions.
        let limits = Limits {
            per_peer: usize::MAX,
            per_namespace: usize::MAX,
            namespaces: usize::MAX,
            total: usize::MAX,
            total_bytes: usize::MAX,
        };
        let batch: Vec<NewRegistration> = (0..3000)
            .map(|i| NewRegistration {
                peer: PeerId::random(),
                namespace: Namespace::new(if i % 3 == 2 { "b" } else { "a" }).unwrap(),
                record: bytes::Bytes::from_static(b"r"),
                format: if i % 1000 == 500 {
                    RecordFormat::Legacy
                } else {
                    RecordFormat::Standard
                },
                ttl: rdv_wire::Ttl::from_secs(7200),
            })
            .collect();
        store
            .write(&batch, &limits, Timestamp::from_millis(0))
            .unwrap();
        store.conn.execute_batch("ANALYZE").unwrap();
        check_plans(&store.conn);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn check_plans(c: &Connection) {
        let b: &[u8] = b"x";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "scan one namespace",
                plan(c, SCAN_NS, &[&1, &0, &0, &0, &1, &2, &10]),
                "SEARCH r USING INDEX registrations_ns_format (ns=? AND format=? AND position>?)",
            ),
            (
                "scan one namespace, merging the formats",
                plan(c, SCAN_NS, &[&1, &0, &0, &0, &1, &2, &10]),
                "MERGE (UNION ALL)",
            ),
            (
                "end of a namespace",
                plan(c, SCAN_NS_END, &[&1]),
                "SEARCH registrations USING COVERING INDEX registrations_ns_format (ns=? AND format=?)",
            ),
            (
                "scan all",
                plan(c, SCAN_ALL, &[&0, &0, &10]),
                "SEARCH r USING INTEGER PRIMARY KEY (rowid>?)",
            ),
            (
                "scan all, one format",
                plan(c, SCAN_ALL_FORMAT, &[&0, &0, &1, &10]),
                "SEARCH r USING INDEX registrations_format (format=? AND position>?)",
            ),
            (
                "scan all, two formats",
                plan(c, SCAN_ALL_TWO_FORMATS, &[&0, &0, &1, &2, &10]),
                "SEARCH r USING INDEX registrations_format (format=? AND position>?)",
            ),
            (
                "scan all, two formats, merged",
                plan(c, SCAN_ALL_TWO_FORMATS, &[&0, &0, &1, &2, &10]),
                "MERGE (UNION ALL)",
            ),
            (
                "end of all",
                plan(c, SCAN_ALL_END, &[]),
                "SEARCH registrations",
            ),
            (
                "expired",
                plan(c, EXPIRED, &[&0, &10]),
                "SEARCH r USING INDEX registrations_expiry (expires_at<?)",
            ),
            (
                "any expired",
                plan(c, ANY_EXPIRED, &[&0]),
                "SEARCH registrations USING COVERING INDEX registrations_expiry (expires_at<?)",
            ),
            (
                "next expiry",
                plan(c, NEXT_EXPIRY, &[]),
                "SEARCH registrations USING COVERING INDEX registrations_expiry",
            ),
            (
                "record",
                plan(c, RECORD, &[&b, &b, &0]),
                "SEARCH r USING INDEX registrations_key (peer=? AND ns=?)",
            ),
            (
                "registration by key",
                plan(c, REG_GET, &[&1, &1]),
                "SEARCH registrations USING INDEX registrations_key (peer=? AND ns=?)",
            ),
            (
                "peer",
                plan(c, PEER_GET, &[&b]),
                "SEARCH peers USING INDEX sqlite_autoindex_peers_1 (peer=?)",
            ),
        ];
        for (what, plan, expected) in cases {
            assert!(
                plan.contains(expected),
                "{what}: plan {plan:?} lacks {expected:?}"
            );
            // A SELECT of scalar subqueries reads its one constant row.
            let walks = plan.replace("SCAN CONSTANT ROW", "");
            assert!(
                !walks.contains("SCAN ") && !walks.contains("TEMP B-TREE"),
                "{what}: plan {plan:?} scans or sorts"
            );
        }
    }

    /// A version 1 file (one position index for all formats) is brought to
    /// version 2 on open: the per-format indexes replace the namespace
    /// index, and what it held is served as before.
    #[test]
    fn migrates_version_1() {
        let dir =
            std::env::temp_dir().join(format!("rdv-store-sql-migrate-{}", std::process::id()));
        let path = dir.join("v1.db");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "application_id", SqliteStore::APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute("INSERT INTO meta VALUES (1, 99, 11, 4, 2, 4)", [])
            .unwrap();
        c.execute_batch("INSERT INTO namespaces VALUES (1, x'61', 3), (2, x'62', 1)")
            .unwrap();
        // Positions 2, 5, 7 in "a" (standard, legacy, standard), 10 in "b".
        for (i, (position, ns, format)) in [(2, 1, 0), (5, 1, 1), (7, 1, 0), (10, 2, 1)]
            .into_iter()
            .enumerate()
        {
            c.execute(
                "INSERT INTO peers VALUES (?1, ?2, 1)",
                params![i as i64 + 1, peers[i].to_bytes()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO registrations VALUES (?1, ?2, ?3, 1000000, ?4, x'72')",
                params![position, i as i64 + 1, ns, format],
            )
            .unwrap();
        }
        drop(c);
        let store = SqliteStore::open(&path, 1).unwrap();
        assert_eq!(store.epoch(), 99);
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::SCHEMA_VERSION);
        let mut indexes: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'registrations' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        indexes.sort();
        assert_eq!(
            indexes,
            [
                "registrations_expiry",
                "registrations_format",
                "registrations_key",
                "registrations_ns_format"
            ]
        );
        let now = Timestamp::from_millis(0);
        let a = Namespace::new("a").unwrap();
        let scan = |scope: Option<&Namespace>, limit, formats| {
            let page = store.scan(scope, 0, limit, formats, now).unwrap();
            let positions: Vec<u64> = page.registrations.iter().map(|r| r.position).collect();
            (positions, page.scanned_to)
        };
        let (standard, legacy) = (
            Formats::only(RecordFormat::Standard),
            Formats::only(RecordFormat::Legacy),
        );
        assert_eq!(scan(Some(&a), 10, Formats::ALL), (vec![2, 5, 7], 7));
        assert_eq!(scan(Some(&a), 10, legacy), (vec![5], 7));
        assert_eq!(scan(Some(&a), 1, standard), (vec![2], 2));
        assert_eq!(scan(None, 10, Formats::ALL), (vec![2, 5, 7, 10], 10));
        assert_eq!(scan(None, 10, legacy), (vec![5, 10], 10));
        assert_eq!(scan(None, 10, standard), (vec![2, 7], 10));
        assert_eq!(store.stats().registrations, 4);
        drop(store);
        // Opening it again changes nothing.
        let store = SqliteStore::open(&path, 1).unwrap();
        assert_eq!(store.epoch(), 99);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
