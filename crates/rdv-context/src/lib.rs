//! The context rendezvous core of rdv: private rendezvous scoped to
//! relational contexts, as a sans-IO library.
//!
//! | concept | module |
//! |---|---|
//! | authorities, contexts, epochs | [`AuthorityId`], [`ContextId`], [`Identity`], [`StaticKeyBinding`] |
//! | context secret, admins, invitations, epoch advance | [`Context`], [`Invitation`], [`EpochRekey`], [`rekey`] |
//! | persisted contexts (roster, admins, recent transitions) | `ContextStore` (feature `sqlite`) |
//! | key schedule (see `docs/KEY-SCHEDULE.md`) | [`keys`]: [`EpochKeys`], [`EpochSecret`] |
//! | descriptors, transport hints, sealing | [`RendezvousDescriptor`], [`TransportHint`], [`SealedDescriptor`] |
//! | facts and the journal | [`RendezvousFact`], [`journal`]: [`Journal`], [`MemoryJournal`], `SqliteJournal` |
//! | hybrid logical clock | [`hlc`] |
//! | guard chain, effects | [`guard`]: [`GuardSnapshot`], [`GuardOutcome`], [`EffectCommand`] |
//! | budgets, receipts | [`BudgetLedger`], [`receipt`] |
//! | the service | [`RendezvousService`] |
//! | effect interpreter | [`EffectInterpreter`], [`ReferenceInterpreter`] |
//! | sync bridge | [`RendezvousAdapter`] |
//! | secure-channel boundary | [`handshake`]: [`Handshaker`], [`HandshakeInit`], [`HandshakeComplete`] |
//!
//! No socket, no clock, no random source: time is an argument, randomness
//! is a [`CryptoRng`] passed in (or a seed drawn from one). The SQLite
//! journal (feature `sqlite`, on by default) is the only I/O.

mod adapter;
mod armor;
mod budget;
mod channel_record;
mod codec;
mod context;
#[cfg(feature = "sqlite")]
mod context_store;
mod descriptor;
mod facts;
pub mod guard;
pub mod handshake;
pub mod hlc;
mod identity;
mod ids;
mod interpreter;
mod invitation;
pub mod journal;
pub mod keys;
pub mod receipt;
mod record_seal;
pub mod rekey;
mod revocation;
mod rng;
mod seal;
mod service;

pub use adapter::{PeerInfo, RendezvousAdapter};
pub use armor::ArmorError;
pub use budget::{BudgetError, BudgetLedger};
pub use channel_record::{ChannelRecord, SEALED_CHANNEL_CIPHERTEXT_LEN, SealedChannel};
pub use codec::DecodeError;
pub use context::{Context, ContextError, REKEY_HISTORY, RekeyError, RekeyOutcome};
#[cfg(feature = "sqlite")]
pub use context_store::{ContextStore, ContextStoreError, MAX_CONTEXT_NAME};
pub use descriptor::{
    DescriptorError, DescriptorPolicy, MAX_ADDR_LEN, MAX_SEALED_DESCRIPTOR_LEN,
    MAX_TRANSPORT_HINTS, RendezvousDescriptor, SealedDescriptor, TransportHint,
};
pub use facts::{FactId, FactKind, MAX_FACT_LEN, RendezvousFact};
pub use guard::{
    Capabilities, Capability, Decision, DenyReason, EffectCommand, GuardOutcome, GuardSnapshot,
    Operation,
};
pub use handshake::{
    HandshakeComplete, HandshakeInit, HandshakeParams, Handshaker, MAC1_LEN, Responded, Route,
    mac1_key,
};
pub use identity::{Identity, STATIC_KEY_BINDING_LEN, StaticKeyBinding};
pub use ids::{AuthorityId, ContextId, Epoch};
pub use interpreter::{EffectInterpreter, InterpretError, Outbound, ReferenceInterpreter};
pub use invitation::{Invitation, InvitationError};
#[cfg(feature = "sqlite")]
pub use journal::SqliteJournal;
pub use journal::{DEFAULT_RETENTION_MS, Journal, JournalEntry, JournalError, MemoryJournal};
pub use keys::{EpochKeys, EpochSecret, Psk};
pub use record_seal::RecordError;
pub use rekey::{EpochRekey, MAX_ADMINS, MAX_MEMBERS, MAX_SEALED_REKEY_LEN, SealedRekey};
pub use revocation::{Revocation, SealedRevocation};
pub use rng::{CryptoRng, SeededRng};
pub use service::{FactApplied, RendezvousConfig, RendezvousService, ServiceError};

/// The `rand_core` this crate's [`CryptoRng`] comes from, so callers name
/// the same version.
pub use x25519_dalek::rand_core;
