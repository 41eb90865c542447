//! The registry state machine.

use std::collections::VecDeque;

use rdv_wire::{
    DecodeError, Discover, DiscoverResponse, Message, MessageKind, Namespace, PeerId, RecordError,
    RecordFormat, Register, RegisterResponse, Registration, ResponseStatus, Timestamp, Ttl,
    Unregister, VerifiedRecord, registration_encoded_len, verify_record,
};

use crate::config::{Config, ConfigError};
use crate::cookie::{CookieKey, CookiePosition};
use crate::store::{Formats, Limit, Limits, NewRegistration, Store, StoreError, WriteOutcome};

/// Most events queued before the oldest are dropped (and counted).
const MAX_EVENTS: usize = 4096;

/// Something that happened at the point: past-tense facts for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer registered (or refreshed, when `refresh`).
    PeerRegistered {
        /// The registrant.
        peer: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// The TTL granted.
        ttl: Ttl,
        /// Whether it replaced a live registration of the same peer and namespace.
        refresh: bool,
    },
    /// A peer unregistered.
    PeerUnregistered {
        /// The registrant.
        peer: PeerId,
        /// The namespace.
        namespace: Namespace,
    },
    /// A registration's TTL ran out.
    RegistrationExpired {
        /// The registrant.
        peer: PeerId,
        /// The namespace.
        namespace: Namespace,
    },
    /// A DISCOVER was answered with `count` registrations.
    DiscoverServed {
        /// The asker.
        peer: PeerId,
        /// The namespace asked for, `None` for all.
        namespace: Option<Namespace>,
        /// Registrations returned.
        count: usize,
    },
    /// A request was refused with `status`.
    RequestRefused {
        /// The asker.
        peer: PeerId,
        /// The request kind.
        kind: MessageKind,
        /// The status sent.
        status: ResponseStatus,
        /// The explanation sent.
        reason: String,
    },
    /// The store failed; the request got `E_UNAVAILABLE` or `E_INTERNAL_ERROR`.
    StoreFailed {
        /// What failed.
        error: StoreError,
    },
    /// The event queue overflowed and this many events were dropped.
    EventsDropped {
        /// How many.
        count: u64,
    },
}

/// The outcome of checking a REGISTER's signed record, done by the caller
/// (possibly on another thread) or by [`Point::handle_request`].
#[derive(Debug)]
pub enum Verification {
    /// The record verified.
    Verified(VerifiedRecord),
    /// The caller skipped verification because
    /// [`Point::needs_verification`] said the same record is already stored.
    /// The point re-checks that claim and verifies if it no longer holds.
    SameAsStored,
    /// The record did not verify.
    Failed(RecordError),
}

/// A rendezvous point: the registry of `/rendezvous/1.0.0`, sans-IO.
///
/// Feed it requests with [`Point::handle_request`] (or, to verify signatures
/// elsewhere, [`Point::needs_verification`] then [`Point::handle_register`]);
/// drive expiry with [`Point::poll_timeout`] and [`Point::handle_timeout`];
/// drain [`Point::poll_event`] after each call. Every call takes `now`; the
/// point never reads a clock or a random source: the cookie key is injected.
pub struct Point<S> {
    config: Config,
    store: S,
    cookie_key: CookieKey,
    events: VecDeque<Event>,
    dropped_events: u64,
    /// The earliest expiry deadline as the last sweep read it from the
    /// store (and when), lowered by our writes since; `None`: unknown. An
    /// early value is harmless (a sweep then finds nothing and rereads it),
    /// and it spares a store round trip on every request when nothing is
    /// due. It is reread at least every [`DEADLINE_REREAD`], since other
    /// points sharing the store write deadlines we do not see.
    next_deadline: std::cell::Cell<Option<(Option<Timestamp>, Timestamp)>>,
}

/// Longest a cached expiry deadline is trusted without rereading the store.
const DEADLINE_REREAD: std::time::Duration = std::time::Duration::from_secs(30);
/// Most registrations removed by one sweep; more are left to the next one,
/// so a point back from long downtime does not stall on one huge delete.
const SWEEP_CHUNK: usize = 10_000;
/// Wait before sweeping again after the store failed to expire.
const SWEEP_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl<S: Store> Point<S> {
    /// A point over `store` with a validated `config`.
    pub fn new(config: Config, store: S, cookie_key: CookieKey) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            store,
            cookie_key,
            events: VecDeque::new(),
            dropped_events: 0,
            next_deadline: std::cell::Cell::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the configuration (a daemon reloading its limits). Applies
    /// to requests from now on: registrations over a lowered limit stay
    /// until they expire or are removed. Refused, and nothing changed, if
    /// `config` cannot work.
    pub fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The store, for inspection.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back, e.g. to restart a point over it.
    pub fn into_store(self) -> S {
        self.store
    }

    fn limits(&self) -> Limits {
        Limits {
            per_peer: self.config.max_registrations_per_peer,
            per_namespace: self.config.max_registrations_per_namespace,
            namespaces: self.config.max_namespaces,
            total: self.config.max_registrations,
            total_bytes: self.config.max_stored_bytes,
        }
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.dropped_events > 0 {
            let count = std::mem::take(&mut self.dropped_events);
            return Some(Event::EventsDropped { count });
        }
        self.events.pop_front()
    }

    /// Decodes a request frame and handles it, giving the response to send
    /// (`Ok(None)`: none is due, as for UNREGISTER). A request of a known
    /// kind with a bad field is answered with its `E_*` status. `Err` means
    /// the bytes were too broken to tell what they asked: the driver should
    /// close the stream.
    pub fn handle_bytes(
        &mut self,
        remote: PeerId,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Option<Message>, DecodeError> {
        match rdv_wire::decode(bytes) {
            Ok(msg) => Ok(self.handle_request(remote, msg, now)),
            Err(e) => {
                let answer = e.error_response();
                if let DecodeError::Invalid {
                    kind,
                    status,
                    reason,
                } = &e
                {
                    self.emit(Event::RequestRefused {
                        peer: remote,
                        kind: *kind,
                        status: *status,
                        reason: reason.clone(),
                    });
                }
                match (answer, &e) {
                    (Some(answer), _) => Ok(Some(answer)),
                    // UNREGISTER with a bad namespace: no answer is due.
                    (None, DecodeError::Invalid { .. }) => Ok(None),
                    (None, _) => Err(e),
                }
            }
        }
    }

    /// Handles one decoded request from `remote`, verifying a REGISTER's
    /// record inline (unless the same record is already stored). Returns the
    /// response, if the request gets one.
    pub fn handle_request(
        &mut self,
        remote: PeerId,
        msg: Message,
        now: Timestamp,
    ) -> Option<Message> {
        match msg {
            Message::Register(r) => {
                let verification = if self.needs_verification(&remote, &r, now) {
                    match verify_record(&r.signed_peer_record) {
                        Ok(v) => Verification::Verified(v),
                        Err(e) => Verification::Failed(e),
                    }
                } else {
                    Verification::SameAsStored
                };
                Some(Message::RegisterResponse(self.handle_register(
                    remote,
                    r,
                    verification,
                    now,
                )))
            }
            Message::Unregister(u) => {
                self.handle_unregister(remote, u, now);
                None
            }
            Message::Discover(d) => Some(Message::DiscoverResponse(
                self.handle_discover(remote, d, now),
            )),
            // Responses are not requests; nothing to answer.
            Message::RegisterResponse(_)
            | Message::DiscoverResponse(_)
            | Message::DiscoverSubscribeResponse(_) => None,
        }
    }

    /// Whether a REGISTER's record must be verified: `false` when `remote`
    /// already has a live registration in the namespace with byte-identical
    /// record (a plain refresh), which saves the signature check.
    pub fn needs_verification(&self, remote: &PeerId, req: &Register, now: Timestamp) -> bool {
        self.stored_format_if_same(remote, req, now).is_none()
    }

    fn stored_format_if_same(
        &self,
        remote: &PeerId,
        req: &Register,
        now: Timestamp,
    ) -> Option<RecordFormat> {
        match self.store.record(remote, &req.namespace, now) {
            Ok(Some((stored, format))) if stored == req.signed_peer_record => Some(format),
            _ => None,
        }
    }

    /// The checks of a REGISTER that need no signature check and no store:
    /// TTL bounds and record size. A driver that verifies records elsewhere
    /// calls this first, so that hopeless requests cost no verification.
    /// [`Point::handle_register`] repeats them.
    pub fn precheck_register(
        &mut self,
        remote: PeerId,
        req: &Register,
    ) -> Result<Ttl, RegisterResponse> {
        precheck(&self.config, req)
            .map_err(|(status, reason)| self.refuse_register(remote, status, reason))
    }

    fn refuse_register(
        &mut self,
        remote: PeerId,
        status: ResponseStatus,
        reason: String,
    ) -> RegisterResponse {
        self.emit(Event::RequestRefused {
            peer: remote,
            kind: MessageKind::Register,
            status,
            reason: reason.clone(),
        });
        RegisterResponse::error(status, reason)
    }

    fn store_failed(&mut self, error: StoreError) -> (ResponseStatus, String) {
        let status = if error.transient {
            ResponseStatus::Unavailable
        } else {
            ResponseStatus::InternalError
        };
        self.emit(Event::StoreFailed { error });
        (status, "the point's storage failed; try again later".into())
    }

    /// Handles a REGISTER whose record the caller has checked.
    pub fn handle_register(
        &mut self,
        remote: PeerId,
        req: Register,
        verification: Verification,
        now: Timestamp,
    ) -> RegisterResponse {
        let mut out = self.handle_register_batch(vec![(remote, req, verification)], now);
        out.pop().unwrap_or_else(|| {
            RegisterResponse::error(ResponseStatus::InternalError, "no outcome for the request")
        })
    }

    /// Handles several REGISTERs (whose records the caller has checked) with
    /// one store write: a durable store commits them in one transaction
    /// (group commit). Answers come back in the order of `batch`; entries
    /// for the same peer and namespace apply in order.
    pub fn handle_register_batch(
        &mut self,
        batch: Vec<(PeerId, Register, Verification)>,
        now: Timestamp,
    ) -> Vec<RegisterResponse> {
        self.sweep(now);
        let mut answers: Vec<Option<RegisterResponse>> = Vec::with_capacity(batch.len());
        let mut writes = Vec::new();
        let mut written = Vec::new(); // (index in answers, ttl)
        for (remote, req, verification) in batch {
            match self.check_register(remote, &req, verification, now) {
                Err(refusal) => answers.push(Some(refusal)),
                Ok((ttl, format)) => {
                    written.push((answers.len(), ttl));
                    answers.push(None);
                    writes.push(NewRegistration {
                        peer: remote,
                        namespace: req.namespace,
                        record: req.signed_peer_record,
                        format,
                        ttl,
                    });
                }
            }
        }
        if !writes.is_empty() {
            let outcomes = self.store.write(&writes, &self.limits(), now);
            match outcomes {
                Ok(outcomes) if outcomes.len() == writes.len() => {
                    for ((slot, ttl), (outcome, write)) in
                        written.into_iter().zip(outcomes.into_iter().zip(writes))
                    {
                        answers[slot] = Some(self.answer_write(write, ttl, outcome, now));
                    }
                }
                Ok(_) => {
                    self.next_deadline.set(None);
                    for (slot, _) in written {
                        answers[slot] = Some(RegisterResponse::error(
                            ResponseStatus::InternalError,
                            "the point's storage returned the wrong number of outcomes",
                        ));
                    }
                }
                Err(e) => {
                    self.next_deadline.set(None);
                    let (status, reason) = self.store_failed(e);
                    for ((slot, _), write) in written.into_iter().zip(writes) {
                        answers[slot] =
                            Some(self.refuse_register(write.peer, status, reason.clone()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    RegisterResponse::error(ResponseStatus::InternalError, "no outcome")
                })
            })
            .collect()
    }

    /// Everything about a REGISTER but the write: TTL, size, signature and
    /// signer. Gives the TTL to grant and the record's format.
    fn check_register(
        &mut self,
        remote: PeerId,
        req: &Register,
        verification: Verification,
        now: Timestamp,
    ) -> Result<(Ttl, RecordFormat), RegisterResponse> {
        let ttl = self.precheck_register(remote, req)?;
        let verified = match verification {
            Verification::SameAsStored => match self.stored_format_if_same(&remote, req, now) {
                Some(format) => Ok((remote, format)),
                // The claim no longer holds (or never did): check for real.
                None => verify_record(&req.signed_peer_record).map(|v| (v.peer_id, v.format)),
            },
            Verification::Verified(v) => Ok((v.peer_id, v.format)),
            Verification::Failed(e) => Err(e),
        };
        match verified {
            Err(e) => Err(self.refuse_register(remote, e.status(), e.to_string())),
            Ok((signer, _)) if signer != remote => Err(self.refuse_register(
                remote,
                ResponseStatus::NotAuthorized,
                format!(
                    "the record is for {signer}, but you are {remote}: a peer may only register itself"
                ),
            )),
            Ok((_, format)) => Ok((ttl, format)),
        }
    }

    fn answer_write(
        &mut self,
        write: NewRegistration,
        ttl: Ttl,
        outcome: WriteOutcome,
        now: Timestamp,
    ) -> RegisterResponse {
        let refresh = match outcome {
            WriteOutcome::Created(_) => false,
            WriteOutcome::Refreshed(_) => true,
            WriteOutcome::Refused(limit) => {
                let c = &self.config;
                // Too many registrations of one's own is not something waiting
                // will fix (go-libp2p-rendezvous answers the same); the
                // point-wide limits may clear up, so those are E_UNAVAILABLE.
                let (status, n, what) = match limit {
                    Limit::PerPeer => (
                        ResponseStatus::NotAuthorized,
                        c.max_registrations_per_peer,
                        "registrations per peer",
                    ),
                    Limit::PerNamespace => (
                        ResponseStatus::Unavailable,
                        c.max_registrations_per_namespace,
                        "registrations in this namespace",
                    ),
                    Limit::Namespaces => {
                        (ResponseStatus::Unavailable, c.max_namespaces, "namespaces")
                    }
                    Limit::Total => (
                        ResponseStatus::Unavailable,
                        c.max_registrations,
                        "registrations",
                    ),
                    Limit::Bytes => (
                        ResponseStatus::Unavailable,
                        c.max_stored_bytes,
                        "bytes of records",
                    ),
                };
                return self.refuse_register(
                    write.peer,
                    status,
                    format!(
                        "this point holds at most {n} {what}; unregister elsewhere or try later"
                    ),
                );
            }
        };
        self.note_deadline(now + std::time::Duration::from_millis(ttl.as_millis()));
        self.emit(Event::PeerRegistered {
            peer: write.peer,
            namespace: write.namespace,
            ttl,
            refresh,
        });
        RegisterResponse::ok(ttl)
    }

    /// Handles an UNREGISTER. No response; unknown registrations are a no-op.
    pub fn handle_unregister(&mut self, remote: PeerId, req: Unregister, now: Timestamp) {
        self.sweep(now);
        match self.store.remove(&remote, &req.namespace) {
            Ok(true) => self.emit(Event::PeerUnregistered {
                peer: remote,
                namespace: req.namespace,
            }),
            Ok(false) => {}
            Err(error) => self.emit(Event::StoreFailed { error }),
        }
    }

    /// Handles a DISCOVER, returning records of every format.
    pub fn handle_discover(
        &mut self,
        remote: PeerId,
        req: Discover,
        now: Timestamp,
    ) -> DiscoverResponse {
        self.handle_discover_for(remote, req, Formats::ALL, now)
    }

    /// Handles a DISCOVER from a peer that can read only `formats` (a driver
    /// that knows it talks to rust-libp2p passes legacy only: that client
    /// refuses a whole answer with one standard record in it).
    pub fn handle_discover_for(
        &mut self,
        remote: PeerId,
        req: Discover,
        formats: Formats,
        now: Timestamp,
    ) -> DiscoverResponse {
        self.sweep(now);
        let scope = req.namespace.as_ref();
        let epoch = self.store.epoch();
        let after = match &req.cookie {
            None => 0,
            Some(c) => match self.cookie_key.open(scope, c) {
                Some(at) if at.epoch == epoch => at.position,
                // Ours, but from a store whose positions were lost (a
                // restarted in-memory point): start over rather than skip.
                Some(_) => 0,
                None => {
                    let reason = "cookie was not issued by this point for this namespace; discover again without it".to_string();
                    return self.refuse_discover(remote, ResponseStatus::InvalidCookie, reason);
                }
            },
        };
        let limit = req
            .limit
            .unwrap_or(self.config.max_discover_limit)
            .min(self.config.max_discover_limit);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = match self.store.scan(scope, after, limit, formats, now) {
            Ok(p) => p,
            Err(e) => {
                let (status, reason) = self.store_failed(e);
                return self.refuse_discover(remote, status, reason);
            }
        };
        let mut budget = self.config.response_budget();
        let mut cookie_position = page.scanned_to;
        let mut registrations = Vec::with_capacity(page.registrations.len());
        for r in page.registrations {
            let remaining = r.expires_at.as_millis().saturating_sub(now.as_millis());
            let ttl = Ttl::from_secs(remaining.div_ceil(1000));
            let size =
                registration_encoded_len(r.namespace.as_str().len(), r.record.len(), ttl.as_secs());
            if size > budget {
                if registrations.is_empty() {
                    // Larger than any answer can be (stored before the record
                    // size limit was lowered): pass over it rather than stall.
                    continue;
                }
                // Stop here; the cookie resumes right before this one.
                cookie_position = r.position.saturating_sub(1);
                break;
            }
            budget -= size;
            registrations.push(Registration {
                namespace: r.namespace,
                signed_peer_record: r.record,
                ttl,
            });
        }
        self.emit(Event::DiscoverServed {
            peer: remote,
            namespace: req.namespace.clone(),
            count: registrations.len(),
        });
        let at = CookiePosition {
            epoch,
            position: cookie_position,
        };
        DiscoverResponse {
            status: ResponseStatus::Ok,
            status_text: String::new(),
            registrations,
            cookie: Some(self.cookie_key.issue(scope, at)),
        }
    }

    fn refuse_discover(
        &mut self,
        remote: PeerId,
        status: ResponseStatus,
        reason: String,
    ) -> DiscoverResponse {
        self.emit(Event::RequestRefused {
            peer: remote,
            kind: MessageKind::Discover,
            status,
            reason: reason.clone(),
        });
        DiscoverResponse::error(status, reason)
    }

    /// When [`Point::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        // A stale cached value is reread by the next request's sweep.
        match self.next_deadline.get() {
            Some((known, _)) => known,
            None => self.store.next_expiry().ok().flatten(),
        }
    }

    /// Lowers the known next deadline to `deadline` (a write just made one).
    fn note_deadline(&self, deadline: Timestamp) {
        if let Some((known, read_at)) = self.next_deadline.get() {
            let lowered = known.map_or(deadline, |t| t.min(deadline));
            self.next_deadline.set(Some((Some(lowered), read_at)));
        }
    }

    /// Removes registrations whose TTL has run out, emitting
    /// [`Event::RegistrationExpired`] for each. Costs what it removes.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.sweep(now);
    }

    fn sweep(&mut self, now: Timestamp) {
        let fresh = |read_at: Timestamp| now < read_at + DEADLINE_REREAD;
        let known = match self.next_deadline.get() {
            Some((known, read_at)) if fresh(read_at) => known,
            _ => match self.store.next_expiry() {
                Ok(known) => {
                    self.next_deadline.set(Some((known, now)));
                    known
                }
                Err(error) => {
                    self.emit(Event::StoreFailed { error });
                    return;
                }
            },
        };
        if known.is_none_or(|t| t > now) {
            return; // nothing due
        }
        match self.store.expire(now, SWEEP_CHUNK) {
            Ok(expired) => {
                let more = expired.len() >= SWEEP_CHUNK;
                for e in expired {
                    self.emit(Event::RegistrationExpired {
                        peer: e.peer,
                        namespace: e.namespace,
                    });
                }
                // More may be due (`now`): the next call goes on; else reread.
                let next = if more {
                    Some(now)
                } else {
                    self.store.next_expiry().ok().flatten()
                };
                self.next_deadline.set(Some((next, now)));
            }
            Err(error) => {
                // Back off rather than retry at once: a store that can read
                // but not write (disk full, read-only standby) would spin.
                self.next_deadline.set(Some((Some(now + SWEEP_RETRY), now)));
                self.emit(Event::StoreFailed { error });
            }
        }
    }
}

/// The checks of a REGISTER that need nothing but the configuration: TTL
/// bounds and record size. Gives the TTL to grant, or the refusal.
pub fn precheck(config: &Config, req: &Register) -> Result<Ttl, (ResponseStatus, String)> {
    let ttl = req
        .ttl
        .unwrap_or(config.default_ttl)
        .within(config.min_ttl, config.max_ttl)
        .map_err(|e| (e.status(), e.to_string()))?;
    if req.signed_peer_record.len() > config.max_record_size {
        return Err((
            ResponseStatus::InvalidSignedPeerRecord,
            format!(
                "signed peer record is {} bytes; this point accepts at most {}",
                req.signed_peer_record.len(),
                config.max_record_size
            ),
        ));
    }
    Ok(ttl)
}
