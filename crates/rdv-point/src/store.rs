//! The storage behind a point.
//!
//! The registry rules (TTL bounds, signatures, cookies, message budgets) live
//! in [`crate::Point`]; a store keeps registrations and answers four kinds of
//! question, each of which a database can serve from an index:
//!
//! - **write** a batch of registrations, enforcing the count limits in the
//!   same step (a SQL store does it in one transaction, so concurrent points
//!   on one database cannot race past a limit);
//! - **scan** one namespace, or all, in position order after a position;
//! - **expire** by deadline, oldest first;
//! - **look up** one (peer, namespace).
//!
//! Positions are a store-wide sequence that only grows, even across restarts
//! and deletions: a cookie for position `p` means "everything up to `p` was
//! returned", so a position must never be handed out twice within one
//! [`Store::epoch`]. A store that cannot keep its sequence (an in-memory
//! store that restarts) starts a new epoch, and cookies of the old epoch
//! start over instead of skipping registrations.
//!
//! A refresh is a new registration that supersedes the old one (spec: "a new
//! REGISTER for the same (peer, namespace) supersedes the old one"): it gets
//! a new position, so clients polling with a cookie see the new TTL and
//! record. The old one is gone, so no registration is ever returned twice.

use bytes::Bytes;
use rdv_wire::{Namespace, PeerId, RecordFormat, Timestamp, Ttl};

/// A registration to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRegistration {
    /// The registrant (already checked to be the record's signer).
    pub peer: PeerId,
    /// The namespace.
    pub namespace: Namespace,
    /// The signed envelope, stored and served verbatim.
    pub record: Bytes,
    /// The envelope format of `record`.
    pub format: RecordFormat,
    /// The TTL granted.
    pub ttl: Ttl,
}

/// Which record formats a scan returns. rust-libp2p's client refuses a whole
/// DISCOVER_RESPONSE if any record in it is not in the legacy format, js and
/// go read only standard records, py-libp2p only unsigned `PeerInfo`s: a
/// point answering each asks for its format only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    /// Include [`RecordFormat::Standard`] records.
    pub standard: bool,
    /// Include [`RecordFormat::Legacy`] records.
    pub legacy: bool,
    /// Include [`RecordFormat::PeerInfo`] records.
    pub peer_info: bool,
}

impl Formats {
    /// Every format.
    pub const ALL: Formats = Formats {
        standard: true,
        legacy: true,
        peer_info: true,
    };

    /// No format.
    pub const NONE: Formats = Formats {
        standard: false,
        legacy: false,
        peer_info: false,
    };

    /// Only `format`.
    pub const fn only(format: RecordFormat) -> Formats {
        Formats::NONE.with(format)
    }

    /// These and `format`.
    pub const fn with(self, format: RecordFormat) -> Formats {
        let mut out = self;
        match format {
            RecordFormat::Standard => out.standard = true,
            RecordFormat::Legacy => out.legacy = true,
            RecordFormat::PeerInfo => out.peer_info = true,
        }
        out
    }

    /// Whether `format` is included.
    pub const fn contains(self, format: RecordFormat) -> bool {
        match format {
            RecordFormat::Standard => self.standard,
            RecordFormat::Legacy => self.legacy,
            RecordFormat::PeerInfo => self.peer_info,
        }
    }
}

/// The count limits a store enforces while writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per peer, across namespaces.
    pub per_peer: usize,
    /// Per namespace.
    pub per_namespace: usize,
    /// Namespaces in use.
    pub namespaces: usize,
    /// Registrations in total.
    pub total: usize,
    /// Bytes of stored records in total.
    pub total_bytes: usize,
}

/// Which limit refused a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::per_peer`].
    PerPeer,
    /// [`Limits::per_namespace`].
    PerNamespace,
    /// [`Limits::namespaces`].
    Namespaces,
    /// [`Limits::total`].
    Total,
    /// [`Limits::total_bytes`].
    Bytes,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new registration, at this position.
    Created(u64),
    /// An existing live registration was superseded by this one, at this
    /// new position.
    Refreshed(u64),
    /// Refused by a limit; nothing changed.
    Refused(Limit),
}

/// A stored registration, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRegistration {
    /// The registrant.
    pub peer: PeerId,
    /// The namespace.
    pub namespace: Namespace,
    /// The signed envelope.
    pub record: Bytes,
    /// Its envelope format.
    pub format: RecordFormat,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Its position in the store-wide sequence.
    pub position: u64,
}

/// One page of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Live registrations after the requested position, in position order.
    pub registrations: Vec<StoredRegistration>,
    /// The highest position the scan looked at (including expired ones it
    /// skipped); the requested position if it looked at none.
    pub scanned_to: u64,
}

/// A registration removed because its TTL ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredRegistration {
    /// The registrant.
    pub peer: PeerId,
    /// The namespace.
    pub namespace: Namespace,
}

/// Counts, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Registrations held (live or not yet swept).
    pub registrations: usize,
    /// Namespaces with at least one registration.
    pub namespaces: usize,
    /// Bytes of stored records.
    pub record_bytes: usize,
}

/// A store failed. The point answers `E_UNAVAILABLE` for a transient failure
/// and `E_INTERNAL_ERROR` otherwise, and keeps running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// Whether retrying later may succeed (e.g. the database is unreachable).
    pub transient: bool,
    /// What failed.
    pub message: String,
}

/// Registration storage. See the module docs for the contract.
pub trait Store {
    /// Identifies the position sequence: it changes whenever positions might
    /// be handed out again (a store that lost its state).
    fn epoch(&self) -> u64;

    /// Writes a batch atomically per entry, in order: each is created,
    /// refreshed (it supersedes a registration of the same peer and namespace
    /// that has not expired at `now`; always allowed, even at a limit), or
    /// refused by a limit. Both get a new position; an expired, unswept
    /// registration is simply replaced. Expiry is `now + ttl`.
    fn write(
        &mut self,
        batch: &[NewRegistration],
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Removes the registration of `peer` in `namespace`; `false` if there was none.
    fn remove(&mut self, peer: &PeerId, namespace: &Namespace) -> Result<bool, StoreError>;

    /// The record of a live registration and its format, if any.
    fn record(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        now: Timestamp,
    ) -> Result<Option<(Bytes, RecordFormat)>, StoreError>;

    /// Up to `limit` live registrations in `scope` (a namespace, or all when
    /// `None`) whose format is in `formats`, with positions above `after`,
    /// in position order.
    fn scan(
        &self,
        scope: Option<&Namespace>,
        after: u64,
        limit: usize,
        formats: Formats,
        now: Timestamp,
    ) -> Result<Page, StoreError>;

    /// The earliest expiry deadline held, if any.
    fn next_expiry(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Removes up to `max` registrations whose deadline is at or before
    /// `now`, earliest first, at a cost proportional to the number removed.
    fn expire(
        &mut self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredRegistration>, StoreError>;

    /// Current counts.
    fn stats(&self) -> StoreStats;
}
