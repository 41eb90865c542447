//! Where a member keeps its contexts: a SQLite table of named context
//! states ([`Context::to_bytes`]), so the roster, the admins and the recent
//! epoch transitions survive a restart and an advance after it still
//! reaches every member.
//!
//! Each save is one transaction with `synchronous=FULL`: a context whose
//! epoch advanced must not come back at the old epoch after a power loss
//! (it would hold a secret the others have left). The file holds epoch
//! secrets: its owner keeps it as private as the identity key.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::DecodeError;
use crate::context::Context;
use crate::identity::Identity;
use crate::ids::ContextId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    name  TEXT PRIMARY KEY,
    id    BLOB NOT NULL UNIQUE,
    state BLOB NOT NULL
);
";

/// Longest context name, in bytes.
pub const MAX_CONTEXT_NAME: usize = 64;

/// A refused store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextStoreError {
    /// SQLite failed.
    #[error("context store: {0}")]
    Backend(#[from] rusqlite::Error),
    /// A stored state does not decode (another version, corruption, or
    /// another identity's).
    #[error("stored context {name:?} does not load: {error}")]
    Corrupt {
        /// The context's name.
        name: String,
        /// Why.
        error: DecodeError,
    },
    /// The name is taken by another context.
    #[error("a context named {0:?} exists already; pick another name")]
    NameTaken(String),
    /// The context is stored under another name.
    #[error("this context is stored already, as {0:?}")]
    AlreadyStored(String),
    /// Empty, too long, or with control characters.
    #[error(
        "context name {0:?} is not usable: 1 to {MAX_CONTEXT_NAME} bytes, no control characters"
    )]
    BadName(String),
}

/// The contexts of one member, in a SQLite file.
pub struct ContextStore {
    conn: Connection,
}

impl std::fmt::Debug for ContextStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl ContextStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ContextStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// Stores a new context under `name` (refused if the name or the
    /// context is taken).
    pub fn insert(&mut self, name: &str, context: &Context) -> Result<(), ContextStoreError> {
        check_name(name)?;
        if self.load_raw(name)?.is_some() {
            return Err(ContextStoreError::NameTaken(name.to_owned()));
        }
        if let Some(other) = self.name_of(&context.id())? {
            return Err(ContextStoreError::AlreadyStored(other));
        }
        self.conn.execute(
            "INSERT INTO contexts (name, id, state) VALUES (?1, ?2, ?3)",
            params![name, &context.id().as_bytes()[..], &context.to_bytes()[..]],
        )?;
        Ok(())
    }

    /// Saves the current state of a stored context (after an advance, a new
    /// member, ...). Returns whether it was stored.
    pub fn save(&mut self, context: &Context) -> Result<bool, ContextStoreError> {
        let n = self.conn.execute(
            "UPDATE contexts SET state = ?2 WHERE id = ?1",
            params![&context.id().as_bytes()[..], &context.to_bytes()[..]],
        )?;
        Ok(n == 1)
    }

    /// Loads the context named `name` for `identity`.
    pub fn load(
        &self,
        name: &str,
        identity: &Identity,
    ) -> Result<Option<Context>, ContextStoreError> {
        let Some(bytes) = self.load_raw(name)? else {
            return Ok(None);
        };
        Context::restore(identity, &bytes)
            .map(Some)
            .map_err(|error| ContextStoreError::Corrupt {
                name: name.to_owned(),
                error,
            })
    }

    /// The stored contexts' names and ids, by name.
    pub fn list(&self) -> Result<Vec<(String, ContextId)>, ContextStoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, id FROM contexts ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            let name: String = r.get(0)?;
            let id: Vec<u8> = r.get(1)?;
            Ok((name, id))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, id) = row?;
            let id: [u8; 32] = id.try_into().map_err(|_| ContextStoreError::Corrupt {
                name: name.clone(),
                error: DecodeError::Invalid {
                    what: "context id",
                    reason: "not 32 bytes",
                },
            })?;
            out.push((name, ContextId::from_bytes(id)));
        }
        Ok(out)
    }

    /// Forgets the context named `name`. Returns whether it existed.
    pub fn remove(&mut self, name: &str) -> Result<bool, ContextStoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM contexts WHERE name = ?1", params![name])?
            == 1)
    }

    fn load_raw(&self, name: &str) -> Result<Option<Vec<u8>>, ContextStoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT state FROM contexts WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn name_of(&self, id: &ContextId) -> Result<Option<String>, ContextStoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name FROM contexts WHERE id = ?1",
                params![&id.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()?)
    }
}

fn check_name(name: &str) -> Result<(), ContextStoreError> {
    if name.is_empty() || name.len() > MAX_CONTEXT_NAME || name.chars().any(char::is_control) {
        return Err(ContextStoreError::BadName(name.to_owned()));
    }
    Ok(())
}
