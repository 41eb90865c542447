//! Journal sync of rdv (issue 9), sans-IO: two members of one context bring
//! their journals together over a secure channel, in bytes that grow with
//! the number of differences, not with the journal size.
//!
//! | concept | module |
//! |---|---|
//! | positions (timestamp, id), additive fingerprints | [`fingerprint`]: [`Key`], [`Fingerprint`] |
//! | fingerprint cache, O(log n) range fingerprints | [`index`]: [`SyncIndex`] |
//! | message codec, hard bounds | [`message`]: [`Message`], [`Limits`] |
//! | the reconciliation state machine | [`session`]: [`Session`], [`Step`], [`SyncStore`] |
//! | checked writes into a member's journal and service | [`replica`]: [`JournalReplica`] |
//!
//! # Why not the `negentropy` crate
//!
//! The protocol is range-based set reconciliation (Meyer 2022), the design
//! Negentropy deploys, written here for three reasons found when
//! evaluating `negentropy` 0.5:
//!
//! * **Ordering.** Negentropy orders items by a `u64` timestamp then a
//!   32-byte id. The journal orders by an HLC timestamp `(wall_ms: u64,
//!   counter: u32)` then id; 96 bits do not fit in 64 without loss, and a
//!   lossy mapping would make the sync order differ from the journal
//!   order, so ranges would not be contiguous in our store.
//! * **Cost of a fingerprint.** Its vector storage sums a range item by
//!   item, O(n) for the first round over the whole journal, every session.
//!   Here [`SyncIndex`] caches sums per chunk, so a range fingerprint is
//!   O(log n) plus at most half a chunk of additions (d = 10 at
//!   n = 1,000,000 measured in `docs/PERFORMANCE.md`).
//! * **Hostile peers and checked facts.** Sync here also moves the facts
//!   and must check each before it is written, and enforce rounds, time,
//!   ids and facts per message; negentropy bounds its frame size only and
//!   leaves the rest to the caller. The state machine is small enough to
//!   own, and its bounds are in one [`Limits`].
//!
//! Timestamps are part of each item (the fingerprint mixes them in), so
//! replicas converge to the same order, not only the same set: two
//! replicas that both appended one fact under different timestamps find
//! the difference and keep the earlier, as the journal's merge law says.

pub mod fingerprint;
pub mod index;
pub mod message;
pub mod replica;
pub mod session;

pub use fingerprint::{Fingerprint, Key};
pub use index::SyncIndex;
pub use message::{DecodeError, Limits, Message, Mode, Range};
pub use replica::{FactRejected, JournalReplica, RekeyCheck, judge_rekey};
pub use session::{Accepted, Session, Stats, Step, SyncError, SyncStore};
