//! Why a store could not be opened. Each message names the file or URL and
//! says what to do, because the daemon prints it and exits: an operator
//! reads it, not code. In every case nothing was written to the database.

use std::path::PathBuf;

/// A store could not be opened. The database was left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is not an SQLite database, or its header is damaged.
    #[error(
        "{}: not an SQLite database, or its header is damaged ({source}); rdv left it untouched: restore it from a backup, or move it aside to start with an empty store",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite found the database damaged.
    #[error(
        "{}: the database is damaged ({source}); rdv left it untouched: restore it from a backup, or move it aside (with its -wal and -shm files) to start with an empty store",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A valid SQLite database, but not one of rdv's point stores.
    #[error(
        "{}: an SQLite database of another program (application_id {application_id:#010x}, {objects} tables or indexes); rdv left it untouched: give the point a file of its own",
        path.display()
    )]
    ForeignSqlite {
        /// The file.
        path: PathBuf,
        /// The file's `PRAGMA application_id` (rdv's is [`crate::SqliteStore::APPLICATION_ID`]).
        application_id: i32,
        /// Tables and indexes it holds.
        objects: i64,
    },
    /// The store was written by a newer rdv, with a schema this one does not know.
    #[error(
        "{location}: store schema version {found} is newer than version {supported}, the newest this rdv knows; rdv left it untouched: run a newer rdv, or point it at another store"
    )]
    NewerSchema {
        /// The file, or the PostgreSQL URL (without password) and schema.
        location: String,
        /// The version found.
        found: i64,
        /// [`crate::SCHEMA_VERSION`].
        supported: i64,
    },
    /// Another SQLite failure while opening (permissions, a missing
    /// directory that could not be made, the file locked by another program).
    #[error("{}: cannot open the store: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file cannot hold a store as it is (e.g. SQLite cannot use WAL on it).
    #[error("{}: cannot hold the store: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory for the file could not be made.
    #[error("{}: cannot make the directory for the store: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PostgreSQL URL or schema name is not valid.
    #[error("PostgreSQL store {url}: {reason}")]
    InvalidPostgresConfig {
        /// The URL, password removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// PostgreSQL could not be reached, or refused the connection.
    #[error(
        "PostgreSQL at {url}: cannot connect ({source}); check that the server is running and that the URL's host, port, user and database are right"
    )]
    PostgresUnreachable {
        /// The URL, password removed.
        url: String,
        /// What the client said.
        #[source]
        source: postgres::Error,
    },
    /// The schema holds tables that are not an rdv point store.
    #[error(
        "PostgreSQL at {url}, schema {schema}: {detail}; rdv left it untouched: give the point a schema of its own"
    )]
    ForeignPostgres {
        /// The URL, password removed.
        url: String,
        /// The schema.
        schema: String,
        /// What was found.
        detail: String,
    },
    /// Another PostgreSQL failure while opening (permissions, ...).
    #[error("PostgreSQL at {url}, schema {schema}: cannot open the store: {source}")]
    Postgres {
        /// The URL, password removed.
        url: String,
        /// The schema.
        schema: String,
        /// What the server said.
        #[source]
        source: postgres::Error,
    },
}
