//! SQLite journal store (rusqlite, bundled SQLite).
//!
//! One table of facts keyed by journal order (timestamp, id), with an
//! index by kind. Nothing else about a fact is stored in clear: every fact
//! is sealed, and the author is inside (issue 13 item 8). WAL mode
//! with `synchronous=NORMAL`: a committed batch survives a process crash;
//! the last batches before a power loss may not (the journal is a replica
//! that sync refills). A batch is one transaction with a prepared
//! statement. The ids are also held in a hash map in memory (id to
//! timestamp, about 50 bytes a fact, loaded on open), so a duplicate check
//! never touches the disk.

use std::path::Path;

use hashbrown::{HashMap, HashSet};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Filter, JournalEntry, JournalStore, OrderKey, StoreError};
use crate::facts::{FactId, RendezvousFact};
use crate::hlc::{HlcTimestamp, MAX_WALL_MS};

/// 3: every fact is sealed and names no authority in clear, so the
/// table has no authority columns and there is no table of authorities.
/// Versions 1 and 2 stored facts whose formats named authorities (clear
/// channel records, descriptor headers, revocations, rekeys) and no longer
/// decode: opening such a journal erases it ([`erase_old_journal`]). The
/// journal is a replica: members re-publish their descriptors and sync
/// brings back what other upgraded members hold.
const SCHEMA_VERSION: i64 = 3;

// The table is ordered by its primary key, which is the journal order
// (timestamp, id): local appends land at the end of the B-tree, and the
// order needs no index of its own. There is deliberately no index on the
// id alone (ids are random, so such an index costs a random B-tree insert
// per fact): the id-to-timestamp map in memory finds a row by its key.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS facts (
    wall      INTEGER NOT NULL,
    counter   INTEGER NOT NULL,
    id        BLOB    NOT NULL,
    kind      INTEGER NOT NULL,
    body      BLOB    NOT NULL,
    PRIMARY KEY (wall, counter, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS facts_kind ON facts (kind, wall, counter, id);
";

/// The step from versions 1 and 2: their facts named authorities in clear
/// (and indexed them in a table of their own). Every row goes, and the
/// bytes are overwritten (`secure_delete`), the file rebuilt (`VACUUM`)
/// and the WAL emptied, so a copy of the file afterwards holds none of
/// them.
fn erase_old_journal(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "secure_delete", true)
        .map_err(backend)?;
    conn.execute_batch("DROP TABLE IF EXISTS facts; DROP TABLE IF EXISTS authorities;")
        .map_err(backend)?;
    conn.execute_batch(SCHEMA).map_err(backend)?;
    conn.execute_batch("VACUUM").map_err(backend)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(backend)?;
    Ok(())
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A journal store in a SQLite file.
pub struct SqliteJournal {
    conn: Connection,
    /// Every id and its timestamp: the O(1) duplicate check, and how a row
    /// is found by id.
    ids: HashMap<FactId, HlcTimestamp>,
    max_entries: usize,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.conn.path())
            .field("entries", &self.ids.len())
            .finish()
    }
}

fn ts_from(wall: i64, counter: i64) -> HlcTimestamp {
    HlcTimestamp {
        wall_ms: wall as u64,
        counter: counter as u32,
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal at `path`. Refuses a file
    /// from a newer schema version or one that is not an rdv journal,
    /// without writing to it.
    pub fn open(path: impl AsRef<Path>, max_entries: usize) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Self::init(conn, max_entries)
    }

    /// A journal in memory (tests).
    pub fn open_in_memory(max_entries: usize) -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?, max_entries)
    }

    fn init(conn: Connection, max_entries: usize) -> Result<Self, StoreError> {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| StoreError::Corrupt(format!("not a SQLite database: {e}")))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "journal schema version {version} is newer than this build's {SCHEMA_VERSION}: upgrade rdv"
            )));
        }
        if version == 0 {
            let foreign: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT IN ('facts')",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if foreign > 0 {
                return Err(StoreError::Corrupt(
                    "the file holds other tables: it is not an rdv journal".into(),
                ));
            }
            // Larger pages suit rows of a few hundred bytes; only effective
            // before the first table exists.
            conn.pragma_update(None, "page_size", 8192)
                .map_err(backend)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        // 64 MiB of page cache: the B-tree interiors of millions of facts.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(backend)?;
        if version == 1 || version == 2 {
            erase_old_journal(&conn)?;
        }
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(backend)?;
        let mut ids = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT id, wall, counter FROM facts")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?)))
                .map_err(backend)?;
            for row in rows {
                let (bytes, wall, counter) = row.map_err(backend)?;
                let id: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("fact id is not 32 bytes".into()))?;
                ids.insert(FactId(id), ts_from(wall, counter));
            }
        }
        Ok(Self {
            conn,
            ids,
            max_entries,
        })
    }

    fn row_to_entry(
        id: Vec<u8>,
        wall: i64,
        counter: i64,
        body: Vec<u8>,
    ) -> Result<JournalEntry, StoreError> {
        let fact = RendezvousFact::from_bytes(&body)
            .map_err(|e| StoreError::Corrupt(format!("stored fact does not decode: {e}")))?;
        let entry = JournalEntry::new(fact, ts_from(wall, counter));
        if entry.id().0.as_slice() != id.as_slice() {
            return Err(StoreError::Corrupt(format!(
                "stored fact {} does not hash to its id",
                entry.id()
            )));
        }
        Ok(entry)
    }
}

impl JournalStore for SqliteJournal {
    fn insert_batch(&mut self, entries: &[JournalEntry]) -> Result<usize, StoreError> {
        let mut fresh: HashSet<FactId> = HashSet::new();
        for e in entries {
            if e.timestamp.wall_ms > MAX_WALL_MS {
                return Err(StoreError::Backend(
                    "timestamp beyond the storable range".into(),
                ));
            }
            if !self.ids.contains_key(&e.id()) {
                fresh.insert(e.id());
            }
        }
        if self.ids.len().saturating_add(fresh.len()) > self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        // What this batch changes in memory, applied only after the commit.
        let mut timestamps: HashMap<FactId, HlcTimestamp> = HashMap::with_capacity(entries.len());
        let tx = self.conn.transaction().map_err(backend)?;
        let mut inserted = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO facts (wall, counter, id, kind, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(backend)?;
            let mut lower = tx
                .prepare_cached(
                    "UPDATE facts SET wall = ?1, counter = ?2
                     WHERE wall = ?3 AND counter = ?4 AND id = ?5",
                )
                .map_err(backend)?;
            for e in entries {
                let id = e.id();
                let wall = e.timestamp.wall_ms as i64;
                let counter = e.timestamp.counter as i64;
                let current = timestamps.get(&id).or_else(|| self.ids.get(&id)).copied();
                match current {
                    None => {
                        let fact = e.fact();
                        insert
                            .execute(params![
                                wall,
                                counter,
                                &id.0[..],
                                fact.kind().tag() as i64,
                                fact.to_bytes(),
                            ])
                            .map_err(backend)?;
                        timestamps.insert(id, e.timestamp);
                        inserted += 1;
                    }
                    Some(old) if e.timestamp < old => {
                        lower
                            .execute(params![
                                wall,
                                counter,
                                old.wall_ms as i64,
                                old.counter as i64,
                                &id.0[..]
                            ])
                            .map_err(backend)?;
                        timestamps.insert(id, e.timestamp);
                    }
                    Some(_) => {}
                }
            }
        }
        tx.commit().map_err(backend)?;
        self.ids.extend(timestamps);
        Ok(inserted)
    }

    fn contains(&self, id: &FactId) -> bool {
        self.ids.contains_key(id)
    }

    fn get(&self, id: &FactId) -> Result<Option<JournalEntry>, StoreError> {
        let Some(ts) = self.ids.get(id) else {
            return Ok(None);
        };
        let row = self
            .conn
            .prepare_cached("SELECT id, wall, counter, body FROM facts WHERE wall = ?1 AND counter = ?2 AND id = ?3")
            .map_err(backend)?
            .query_row(
                params![ts.wall_ms as i64, ts.counter as i64, &id.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(backend)?;
        match row {
            Some((i, w, c, b)) => Self::row_to_entry(i, w, c, b).map(Some),
            None => Err(StoreError::Corrupt(format!(
                "fact {id} is indexed but has no row"
            ))),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn scan(
        &self,
        filter: Filter,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let (wall, counter, id) = match after {
            Some(k) => (
                k.timestamp.wall_ms as i64,
                k.timestamp.counter as i64,
                k.id.0.to_vec(),
            ),
            None => (-1, -1, Vec::new()),
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        let cursor = "(wall, counter, id) > (?1, ?2, ?3)";
        let select = "SELECT id, wall, counter, body FROM facts";
        let order = "ORDER BY wall, counter, id LIMIT ?4";
        let (sql, key) = match filter {
            Filter::All => (format!("{select} WHERE {cursor} {order}"), None),
            Filter::Kind(k) => (
                format!("{select} WHERE kind = ?5 AND {cursor} {order}"),
                Some(k.tag() as i64),
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
        let rows: Vec<(Vec<u8>, i64, i64, Vec<u8>)> = match key {
            Some(key) => stmt
                .query_map(params![wall, counter, id, limit, key], map)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?,
            None => stmt
                .query_map(params![wall, counter, id, limit], map)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?,
        };
        rows.into_iter()
            .map(|(i, w, c, b)| Self::row_to_entry(i, w, c, b))
            .collect()
    }

    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, StoreError> {
        Ok(self.ids.get(id).copied())
    }

    fn scan_keys(
        &self,
        after: Option<OrderKey>,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError> {
        // Served by the primary key alone (journal order), no fact decoded.
        let (wall, counter, id) = match after {
            Some(k) => (
                k.timestamp.wall_ms as i64,
                k.timestamp.counter as i64,
                k.id.0.to_vec(),
            ),
            None => (-1, -1, Vec::new()),
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT wall, counter, id FROM facts WHERE (wall, counter, id) > (?1, ?2, ?3)
                 ORDER BY wall, counter, id LIMIT ?4",
            )
            .map_err(backend)?;
        let rows: Vec<(i64, i64, Vec<u8>)> = stmt
            .query_map(params![wall, counter, id, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        rows.into_iter()
            .map(|(w, c, id)| {
                let id: [u8; 32] = id
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("fact id is not 32 bytes".into()))?;
                Ok(OrderKey {
                    timestamp: ts_from(w, c),
                    id: FactId(id),
                })
            })
            .collect()
    }

    fn remove_older_than(
        &mut self,
        wall_ms: u64,
        limit: usize,
    ) -> Result<Vec<OrderKey>, StoreError> {
        let floor = wall_ms.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        let tx = self.conn.transaction().map_err(backend)?;
        let mut removed = Vec::new();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT wall, counter, id FROM facts WHERE wall < ?1
                     ORDER BY wall, counter, id LIMIT ?2",
                )
                .map_err(backend)?;
            let rows: Vec<(i64, i64, Vec<u8>)> = select
                .query_map(params![floor, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM facts WHERE wall = ?1 AND counter = ?2 AND id = ?3")
                .map_err(backend)?;
            for (w, c, id) in rows {
                delete.execute(params![w, c, &id]).map_err(backend)?;
                let id: [u8; 32] = id
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("fact id is not 32 bytes".into()))?;
                removed.push(OrderKey {
                    timestamp: ts_from(w, c),
                    id: FactId(id),
                });
            }
        }
        tx.commit().map_err(backend)?;
        for k in &removed {
            self.ids.remove(&k.id);
        }
        Ok(removed)
    }

    fn max_timestamp(&self) -> Result<Option<HlcTimestamp>, StoreError> {
        self.conn
            .query_row(
                "SELECT wall, counter FROM facts ORDER BY wall DESC, counter DESC LIMIT 1",
                [],
                |r| Ok(ts_from(r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &[u8] = b"clear-record-naming-carol";
    /// The version 1 and 2 schema, as those builds wrote it.
    const OLD_SCHEMA: &str = "
        CREATE TABLE authorities (n INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE);
        CREATE TABLE facts (wall INTEGER NOT NULL, counter INTEGER NOT NULL, id BLOB NOT NULL,
            kind INTEGER NOT NULL, authority INTEGER NOT NULL, peer INTEGER, body BLOB NOT NULL,
            PRIMARY KEY (wall, counter, id)) WITHOUT ROWID;
        CREATE INDEX facts_authority ON facts (authority, wall, counter, id);";

    /// Journals of versions 1 and 2 held facts that named authorities in
    /// clear and no longer decode: opening one erases them, their bytes
    /// included, and leaves an empty journal of this version.
    #[test]
    fn an_old_journal_is_erased_with_every_authority_it_named() {
        let carol = [0xC4u8; 32];
        for old in [1i64, 2] {
            let dir =
                std::env::temp_dir().join(format!("rdv-journal-v{old}-{}", std::process::id()));
            let _ = std::fs::remove_file(&dir);
            {
                let conn = Connection::open(&dir).unwrap();
                conn.execute_batch(OLD_SCHEMA).unwrap();
                conn.pragma_update(None, "user_version", old).unwrap();
                conn.execute(
                    "INSERT INTO authorities (n, key) VALUES (1, ?1)",
                    params![&carol[..]],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO facts VALUES (1, 0, ?1, 3, 1, NULL, ?2)",
                    params![&[1u8; 32][..], MARKER.repeat(10)],
                )
                .unwrap();
            }
            let j = SqliteJournal::open(&dir, 100).unwrap();
            assert_eq!(j.len(), 0);
            drop(j);
            for s in ["", "-wal"] {
                let bytes = std::fs::read(format!("{}{s}", dir.display())).unwrap_or_default();
                for gone in [MARKER, &carol[..]] {
                    assert!(
                        !bytes.windows(gone.len()).any(|w| w == gone),
                        "erased bytes survive in {s:?} (from version {old})"
                    );
                }
            }
            let conn = Connection::open(&dir).unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'authorities'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tables, 0);
            drop(conn);
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", dir.display()));
            }
        }
    }
}
