//! The member agent of rdv (tokio): the data directory ([`home`]), the
//! long-running agent ([`daemon`]) with its control socket ([`control`]),
//! first contact ([`intro`]) and blinded discovery on public points
//! ([`discovery`]), journal sync over secure channels ([`sync`], issue 9)
//! and the bounded TCP accept path ([`accept`], issue 13).
//!
//! The protocol and every check live in the sans-IO crate `rdv-sync`; this
//! crate only moves its messages over `rdv-channel`'s TCP channel, keeps
//! time, and decides when to sync.

pub mod accept;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod home;
pub mod intro;
pub mod relay;
pub mod sync;

pub use sync::{AgentConfig, AgentError, Books, Node, PeerEnd, SyncAgent};
