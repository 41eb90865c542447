//! Every store against one conformance suite, then what is particular to
//! each: SQLite's handling of bad files, PostgreSQL shared by several points.
#![allow(missing_docs, clippy::unwrap_used)]

mod harness;
mod postgres;
mod postgres_link;
mod sqlite;
mod suite;

conformance!(memory, Some(crate::harness::Memory));
conformance!(sqlite_store, Some(crate::harness::Sqlite::new()));
conformance!(postgres_store, crate::harness::Postgres::new());
