//! Durable [`Store`](rdv_point::Store)s for the rdv rendezvous point.
//!
//! - [`SqliteStore`]: one file, the default for `rdv point`. WAL mode,
//!   `synchronous=FULL`: a [`write`](rdv_point::Store::write) returns only
//!   once its transaction is on disk, so a REGISTER answered OK survives a
//!   crash. A batch is one transaction, so one `fsync` covers all of it
//!   (group commit): durability costs little once the caller batches.
//! - [`PostgresStore`]: a database several points share, so that they behave
//!   as one point (register through one, discover through another, limits
//!   enforced across them).
//!
//! Both keep the [`Store`](rdv_point::Store) contract exactly as
//! [`MemoryStore`](rdv_point::MemoryStore) does (one conformance suite runs
//! against all three), plus what only a durable store can: registrations,
//! the position high-water mark and the epoch survive a restart, so cookies
//! issued before it keep paging after it; expired rows are never served,
//! swept or not.
//!
//! Like the rest of rdv, the crate draws no randomness: the epoch of a
//! store created by [`SqliteStore::open`] or [`PostgresStore::connect`] is
//! an argument (pass a random `u64`; it is used only if the store is new).
//!
//! # Schema, shared by both
//!
//! - `meta`: one row: epoch, next position, and the totals the limits need
//!   (registrations, namespaces, record bytes), kept in step by every write;
//! - `peers` / `namespaces`: each distinct peer id and namespace once, with
//!   its count of registrations, so per-peer and per-namespace limits are one
//!   row read, and a peer id is stored once rather than per registration;
//! - `registrations`: keyed by position; unique (peer, namespace); indexed by
//!   (namespace, format, position) and (format, position) for DISCOVER in a
//!   namespace and in all, and by (deadline, position) for expiry. DISCOVER
//!   for one record format reads only that format's range, so its cost does
//!   not grow with the registrations of the other; DISCOVER of both formats
//!   merges a namespace's two ranges, and walks the primary key across all
//!   namespaces.
//!
//! Peer ids and namespaces are stored as bytes (a namespace may hold a NUL,
//! which PostgreSQL's `text` refuses).

mod error;
mod postgres;
mod sqlite;
pub mod tls;
mod util;

pub use error::OpenError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The schema version this build writes and reads. A database with a higher
/// one was written by a newer rdv and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 3;

#[cfg(test)]
mod tests {
    /// The daemon moves its point (and so its store) between threads.
    #[test]
    fn stores_are_send() {
        fn send<T: Send + 'static>() {}
        send::<crate::SqliteStore>();
        send::<crate::PostgresStore>();
        send::<crate::OpenError>();
    }
}
