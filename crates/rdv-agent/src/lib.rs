//! The member agent of rdv (tokio). Today: journal sync over secure
//! channels ([`sync`], issue 9) and the bounded TCP accept loop
//! ([`accept`], issue 13); it grows into the member agent of issue 12.
//!
//! The protocol and every check live in the sans-IO crate `rdv-sync`; this
//! crate only moves its messages over `rdv-channel`'s TCP channel, keeps
//! time, and decides when to sync.

pub mod accept;
pub mod discovery;
pub mod sync;

pub use sync::{AgentConfig, AgentError, Books, Node, PeerEnd, SyncAgent};
