//! The client state machine: [`Service`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rdv_wire::{
    Cookie, DEFAULT_TTL, Discover, DiscoverResponse, Message, Namespace, PeerId, Register,
    RegisterResponse, ResponseStatus, Timestamp, Ttl, Unregister, verify_record,
};

use crate::config::Config;
use crate::event::{CachedRegistration, Event, OwnRegistration, Stats};
use crate::rng::SplitMix64;

/// A refresh is never scheduled sooner than this after a grant, so a point
/// granting a TTL of 0 or 1 s cannot make us hammer it.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);
/// Shortest retry delay, whatever the configuration.
const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// Identifies one request (REGISTER or DISCOVER) from its [`Transmit`] to its
/// answer. Never reused within one [`Service`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id as a number, e.g. for logs.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A message for the driver to send to a rendezvous point on a new stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The rendezvous point to send to.
    pub point: PeerId,
    /// The request the answer belongs to; pass it to
    /// [`Service::handle_response`] or [`Service::handle_failure`]. `None` for
    /// UNREGISTER, which gets no answer.
    pub request: Option<RequestId>,
    /// The message.
    pub message: Message,
}

/// Why a request could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No signed peer record to register with.
    #[error("no signed peer record set; call Service::set_signed_records first")]
    NoRecord,
    /// The service was shut down.
    #[error("the rendezvous client service was shut down")]
    ShutDown,
}

type RegKey = (PeerId, Namespace);
type CacheKey = (PeerId, Option<Namespace>);
type EntryKey = (Namespace, PeerId);

/// A deadline's subject. Each is in the timer set at most once, at the time
/// its owner remembers, so it can be removed exactly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A registration's refresh or retry.
    Action(RegKey),
    /// A registration's expiry.
    Expiry(RegKey),
    /// The earliest expiry in a discovery cache.
    Cache(CacheKey),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegState {
    /// A REGISTER is queued or in flight.
    InFlight(RequestId),
    /// A REGISTER is due at `at` (timer `Action`): a refresh, or a retry.
    Waiting { at: Timestamp, retry: bool },
    /// Granted, nothing planned (auto-refresh off).
    Idle,
}

#[derive(Debug)]
struct Reg {
    /// TTL to request.
    ttl: Option<Ttl>,
    granted: Option<Ttl>,
    expires_at: Option<Timestamp>,
    state: RegState,
    /// Consecutive failures, for backoff.
    failures: u32,
    /// Consecutive `E_INTERNAL_ERROR` answers.
    internal_errors: u32,
    /// Index into the records of the one being sent.
    record_index: usize,
    /// Record indexes refused with `E_INVALID_SIGNED_PEER_RECORD` or being
    /// tried since the last success or user call.
    tried: Vec<usize>,
    /// Time of this registration's `Expiry` timer, if set.
    expiry_timer: Option<Timestamp>,
}

enum Pending {
    Register {
        key: RegKey,
        record_index: usize,
    },
    Discover {
        key: CacheKey,
        cookie: Option<Cookie>,
    },
}

#[derive(Default)]
struct Cache {
    cookie: Option<Cookie>,
    entries: BTreeMap<EntryKey, CachedRegistration>,
    by_expiry: BTreeSet<(Timestamp, EntryKey)>,
    /// Time of this cache's `Cache` timer, if set.
    timer_at: Option<Timestamp>,
}

/// The rendezvous client service: registrations, their refresh schedule and
/// retries, and the discovery cache. Sans-IO; see the [crate docs](crate) for
/// how to drive it.
///
/// Never panics on input: unknown, stale or malformed answers are ignored or
/// reported as failures.
pub struct Service {
    config: Config,
    rng: SplitMix64,
    records: Vec<Bytes>,
    /// Our own peer id, as the records name it (sent in UNREGISTER's
    /// deprecated `id` field, which py-libp2p's point requires).
    own_id: Option<PeerId>,
    /// Per point, the record index that was last accepted.
    preferred_record: HashMap<PeerId, usize>,
    next_request: u64,
    requests: HashMap<RequestId, Pending>,
    registrations: BTreeMap<RegKey, Reg>,
    caches: HashMap<CacheKey, Cache>,
    timers: BTreeSet<(Timestamp, Timer)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    dropped_unreported: u64,
    stats: Stats,
    shut_down: bool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("registrations", &self.registrations.len())
            .field("caches", &self.caches.len())
            .field("requests", &self.requests.len())
            .field("timers", &self.timers.len())
            .field("stats", &self.stats)
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with `config`, drawing backoff jitter from `seed`.
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            config,
            rng: SplitMix64::new(seed),
            records: Vec::new(),
            own_id: None,
            preferred_record: HashMap::new(),
            next_request: 0,
            requests: HashMap::new(),
            registrations: BTreeMap::new(),
            caches: HashMap::new(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dropped_unreported: 0,
            stats: Stats::default(),
            shut_down: false,
        }
    }

    /// Sets the signed envelopes to register with, most preferred first (e.g.
    /// the standard format, then rust-libp2p's legacy format, then an
    /// unsigned `PeerInfo` for points of the original go schema). Every later
    /// REGISTER, refreshes included, sends the newest records; a registration
    /// in flight keeps what it sent. Until a record has worked at a point, a
    /// point that refuses one with `E_INVALID_SIGNED_PEER_RECORD` or
    /// `E_NOT_AUTHORIZED` (what a point of the original schema answers a
    /// signed record: it reads the envelope as a `PeerInfo` naming someone
    /// else) gets the next one; the index that worked is remembered per point.
    pub fn set_signed_records(&mut self, records: Vec<Bytes>) {
        self.own_id = records
            .iter()
            .find_map(|r| verify_record(r).ok())
            .map(|v| v.peer_id);
        self.records = records;
    }

    /// Registers us in `namespace` at `point`, requesting `ttl` (or
    /// [`Config::default_ttl`]). Also used to re-register at once, e.g. with a
    /// new TTL: a REGISTER already in flight for the same key is superseded.
    ///
    /// The outcome is reported as [`Event::Registered`] or
    /// [`Event::RegisterFailed`].
    pub fn register(
        &mut self,
        point: PeerId,
        namespace: Namespace,
        ttl: Option<Ttl>,
        _now: Timestamp,
    ) -> Result<RequestId, ClientError> {
        if self.shut_down {
            return Err(ClientError::ShutDown);
        }
        if self.records.is_empty() {
            return Err(ClientError::NoRecord);
        }
        let key = (point, namespace);
        let start = self.start_index(&point);
        if let Some(state) = self.registrations.get(&key).map(|r| r.state) {
            self.leave_state(&key, state);
        }
        let reg = self.registrations.entry(key.clone()).or_insert(Reg {
            ttl: None,
            granted: None,
            expires_at: None,
            state: RegState::Idle,
            failures: 0,
            internal_errors: 0,
            record_index: 0,
            tried: Vec::new(),
            expiry_timer: None,
        });
        reg.ttl = ttl.or(self.config.default_ttl);
        reg.failures = 0;
        reg.internal_errors = 0;
        reg.tried.clear();
        reg.record_index = start;
        self.send_register(&key).ok_or(ClientError::NoRecord)
    }

    /// Leaves `namespace` at `point`: queues an UNREGISTER (the point answers
    /// none), forgets the registration and stops refreshing it. Answers to its
    /// earlier REGISTERs are ignored. Works after [`Service::shutdown`] too, so
    /// a driver can leave gracefully.
    pub fn unregister(&mut self, point: PeerId, namespace: Namespace, _now: Timestamp) {
        let key = (point, namespace);
        self.remove_registration(&key);
        self.transmits.push_back(Transmit {
            point,
            request: None,
            message: Message::Unregister(Unregister {
                namespace: key.1,
                id: self.own_id,
            }),
        });
    }

    /// Asks `point` for registrations in `namespace` (`None`: all namespaces),
    /// at most `limit` of them. Sends the cookie of the previous answer for
    /// the same (point, namespace), so only registrations not returned before
    /// come back. Reported as [`Event::Discovered`] or [`Event::DiscoverFailed`].
    pub fn discover(
        &mut self,
        point: PeerId,
        namespace: Option<Namespace>,
        limit: Option<u64>,
        _now: Timestamp,
    ) -> Result<RequestId, ClientError> {
        if self.shut_down {
            return Err(ClientError::ShutDown);
        }
        let key = (point, namespace);
        let cookie = self.caches.get(&key).and_then(|c| c.cookie.clone());
        let id = self.next_id();
        self.transmits.push_back(Transmit {
            point,
            request: Some(id),
            message: Message::Discover(Discover {
                namespace: key.1.clone(),
                limit,
                cookie: cookie.clone(),
            }),
        });
        self.requests.insert(id, Pending::Discover { key, cookie });
        Ok(id)
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Feeds the point's answer to `request`. Answers to unknown or superseded
    /// requests are ignored; an answer of the wrong kind fails the request as
    /// a network failure would.
    pub fn handle_response(&mut self, request: RequestId, message: Message, now: Timestamp) {
        if self.shut_down {
            return;
        }
        let Some(pending) = self.requests.remove(&request) else {
            return;
        };
        match pending {
            Pending::Register { key, record_index } => {
                if !self.is_in_flight(&key, request) {
                    return;
                }
                match message {
                    Message::RegisterResponse(resp) => {
                        self.on_register_response(key, record_index, resp, now);
                    }
                    other => {
                        let text = format!("answer to REGISTER is a {:?}", other.kind());
                        self.on_register_failure(key, None, text, now);
                    }
                }
            }
            Pending::Discover { key, cookie } => match message {
                Message::DiscoverResponse(resp) => {
                    self.on_discover_response(key, cookie, resp, now)
                }
                other => {
                    let text = format!("answer to DISCOVER is a {:?}", other.kind());
                    self.push_event(Event::DiscoverFailed {
                        point: key.0,
                        namespace: key.1,
                        status: None,
                        text,
                    });
                }
            },
        }
    }

    /// Reports that `request` got no answer: the connection or stream failed,
    /// the answer did not decode, or the driver's timeout ran out. A REGISTER
    /// is retried with backoff; a DISCOVER is reported failed.
    pub fn handle_failure(&mut self, request: RequestId, reason: &str, now: Timestamp) {
        if self.shut_down {
            return;
        }
        match self.requests.remove(&request) {
            Some(Pending::Register { key, .. }) if self.is_in_flight(&key, request) => {
                // rust-libp2p's point cannot parse a standard-format record
                // and drops the stream instead of answering
                // E_INVALID_SIGNED_PEER_RECORD. Until a format has worked at
                // this point, a failure also moves on to the next format.
                if self.preferred_record.contains_key(&key.0) || !self.try_next_record(&key) {
                    self.on_register_failure(key, None, reason.to_owned(), now);
                }
            }
            Some(Pending::Discover { key, .. }) => self.push_event(Event::DiscoverFailed {
                point: key.0,
                namespace: key.1,
                status: None,
                text: reason.to_owned(),
            }),
            Some(Pending::Register { .. }) | None => {}
        }
    }

    /// The earliest deadline (refresh, retry, expiry of ours or of a cached
    /// registration); call [`Service::handle_timeout`] then. `None`: nothing
    /// is scheduled.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Runs everything due at or before `now`. Its cost is proportional to
    /// what is due. Afterwards [`Service::poll_timeout`] is later than `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.shut_down {
            return;
        }
        while self.timers.first().is_some_and(|(at, _)| *at <= now) {
            let Some((at, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Action(key) => self.on_action_timer(key, at, now),
                Timer::Expiry(key) => self.on_expiry_timer(key, at, now),
                Timer::Cache(key) => self.on_cache_timer(key, at, now),
            }
        }
    }

    /// The next event, if any. After [`Event::ShutDown`] always `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.dropped_unreported > 0 {
            let count = std::mem::take(&mut self.dropped_unreported);
            return Some(Event::EventsDropped { count });
        }
        self.events.pop_front()
    }

    /// The cached registrations from DISCOVERs of `namespace` (`None`: of all
    /// namespaces) at `point` that are unexpired at `now`, ordered by
    /// (namespace, peer). The two keys are separate caches.
    pub fn cached(
        &self,
        point: &PeerId,
        namespace: Option<&Namespace>,
        now: Timestamp,
    ) -> Vec<CachedRegistration> {
        let key = (*point, namespace.cloned());
        self.caches
            .get(&key)
            .map(|c| {
                c.entries
                    .values()
                    .filter(|e| e.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Our own registrations, including ones whose first REGISTER has no
    /// answer yet (`expires_at: None`), ordered by (point, namespace).
    pub fn registrations(&self) -> impl Iterator<Item = OwnRegistration> + '_ {
        self.registrations
            .iter()
            .map(|((point, ns), r)| OwnRegistration {
                point: *point,
                namespace: ns.clone(),
                ttl: r.granted,
                expires_at: r.expires_at,
                next_attempt: match r.state {
                    RegState::Waiting { at, .. } => Some(at),
                    RegState::InFlight(_) | RegState::Idle => None,
                },
            })
    }

    /// Counters of dropped events, rejected records and cache overflow.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether [`Service::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Stops refreshes, retries and cache expiry, and queues
    /// [`Event::ShutDown`] as the last event. Afterwards `register` and
    /// `discover` fail with [`ClientError::ShutDown`], answers are ignored,
    /// queued REGISTER and DISCOVER messages are dropped (queued UNREGISTERs
    /// stay, to be sent), and [`Service::poll_event`] drains the queue, then
    /// returns `None` for good. Idempotent.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.timers.clear();
        self.requests.clear();
        self.transmits.retain(|t| t.request.is_none());
        for reg in self.registrations.values_mut() {
            reg.state = RegState::Idle;
            reg.expiry_timer = None;
        }
        for cache in self.caches.values_mut() {
            cache.timer_at = None;
        }
        self.push_event(Event::ShutDown);
        self.shut_down = true;
    }

    // ---- registrations ----

    fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        id
    }

    /// The record index to start with at `point`.
    fn start_index(&self, point: &PeerId) -> usize {
        self.preferred_record
            .get(point)
            .copied()
            .filter(|&i| i < self.records.len())
            .unwrap_or(0)
    }

    fn is_in_flight(&self, key: &RegKey, request: RequestId) -> bool {
        self.registrations
            .get(key)
            .is_some_and(|r| r.state == RegState::InFlight(request))
    }

    /// Queues a REGISTER for `key` with its current record index. `None` if
    /// there is no such registration or no record.
    fn send_register(&mut self, key: &RegKey) -> Option<RequestId> {
        let id = RequestId(self.next_request);
        let reg = self.registrations.get_mut(key)?;
        if reg.record_index >= self.records.len() {
            reg.record_index = 0;
        }
        let idx = reg.record_index;
        let record = self.records.get(idx)?.clone();
        self.next_request = self.next_request.wrapping_add(1);
        if !reg.tried.contains(&idx) {
            reg.tried.push(idx);
        }
        reg.state = RegState::InFlight(id);
        self.requests.insert(
            id,
            Pending::Register {
                key: key.clone(),
                record_index: idx,
            },
        );
        self.transmits.push_back(Transmit {
            point: key.0,
            request: Some(id),
            message: Message::Register(Register {
                namespace: key.1.clone(),
                signed_peer_record: record,
                ttl: reg.ttl,
            }),
        });
        Some(id)
    }

    /// Undoes what `state` holds: a request (and its unsent message) or a timer.
    fn leave_state(&mut self, key: &RegKey, state: RegState) {
        match state {
            RegState::InFlight(id) => {
                self.requests.remove(&id);
                self.transmits.retain(|t| t.request != Some(id));
            }
            RegState::Waiting { at, .. } => {
                self.timers.remove(&(at, Timer::Action(key.clone())));
            }
            RegState::Idle => {}
        }
    }

    fn remove_registration(&mut self, key: &RegKey) {
        if let Some(reg) = self.registrations.remove(key) {
            self.leave_state(key, reg.state);
            if let Some(at) = reg.expiry_timer {
                self.timers.remove(&(at, Timer::Expiry(key.clone())));
            }
        }
    }

    fn refresh_at(&self, now: Timestamp, ttl: Ttl) -> Timestamp {
        let ttl = Duration::from_millis(ttl.as_millis());
        let buffer = self.config.refresh_buffer;
        let delay = if ttl > buffer.saturating_mul(2) {
            ttl.saturating_sub(buffer)
        } else {
            ttl / 2
        };
        now + delay.max(MIN_REFRESH_DELAY)
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(31);
        let delay = self
            .config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max);
        // At least 1 ms, so a zero backoff cannot make handle_timeout loop forever.
        self.rng.jitter(delay).max(MIN_BACKOFF)
    }

    fn on_register_response(
        &mut self,
        key: RegKey,
        record_index: usize,
        resp: RegisterResponse,
        now: Timestamp,
    ) {
        match resp.status {
            ResponseStatus::Ok => self.on_registered(key, record_index, resp.ttl, now),
            ResponseStatus::InvalidSignedPeerRecord => {
                if !self.try_next_record(&key) {
                    self.on_permanent_failure(key, resp.status, resp.status_text);
                }
            }
            // A point of go-libp2p-rendezvous's original schema (py-libp2p)
            // reads a signed envelope as a PeerInfo whose id is not ours.
            // Only until a format has worked here: later it is a real refusal.
            ResponseStatus::NotAuthorized
                if !self.preferred_record.contains_key(&key.0) && self.try_next_record(&key) => {}
            ResponseStatus::InternalError if self.internal_error_limit(&key) => {
                self.on_permanent_failure(key, resp.status, resp.status_text)
            }
            s if s.is_transient() => self.on_register_failure(key, Some(s), resp.status_text, now),
            s => self.on_permanent_failure(key, s, resp.status_text),
        }
    }

    /// Counts an `E_INTERNAL_ERROR` for `key`; `true` once there have been
    /// [`Config::max_internal_error_retries`] in a row.
    fn internal_error_limit(&mut self, key: &RegKey) -> bool {
        let max = self.config.max_internal_error_retries.max(1);
        match self.registrations.get_mut(key) {
            Some(reg) => {
                reg.internal_errors = reg.internal_errors.saturating_add(1);
                reg.internal_errors >= max
            }
            None => false,
        }
    }

    /// Re-sends the REGISTER of `key` with the next record format not tried
    /// yet; `false` if every format has been tried.
    fn try_next_record(&mut self, key: &RegKey) -> bool {
        let n = self.records.len();
        let next = self
            .registrations
            .get(key)
            .and_then(|r| (0..n).find(|i| !r.tried.contains(i)));
        match (next, self.registrations.get_mut(key)) {
            (Some(next), Some(reg)) => {
                reg.record_index = next;
                self.send_register(key);
                true
            }
            _ => false,
        }
    }

    fn on_registered(
        &mut self,
        key: RegKey,
        record_index: usize,
        granted: Option<Ttl>,
        now: Timestamp,
    ) {
        let auto_refresh = self.config.auto_refresh;
        let Some(requested) = self.registrations.get(&key).map(|r| r.ttl) else {
            return;
        };
        let ttl = granted.or(requested).unwrap_or(DEFAULT_TTL);
        let expires_at = now + Duration::from_millis(ttl.as_millis());
        let refresh_at = self.refresh_at(now, ttl);
        self.preferred_record.insert(key.0, record_index);
        let Some(reg) = self.registrations.get_mut(&key) else {
            return;
        };
        let refresh = reg.expires_at.is_some_and(|e| e > now);
        reg.granted = Some(ttl);
        reg.expires_at = Some(expires_at);
        reg.failures = 0;
        reg.internal_errors = 0;
        reg.tried.clear();
        if let Some(old) = reg.expiry_timer.replace(expires_at) {
            self.timers.remove(&(old, Timer::Expiry(key.clone())));
        }
        self.timers.insert((expires_at, Timer::Expiry(key.clone())));
        if auto_refresh {
            reg.state = RegState::Waiting {
                at: refresh_at,
                retry: false,
            };
            self.timers.insert((refresh_at, Timer::Action(key.clone())));
        } else {
            reg.state = RegState::Idle;
        }
        self.push_event(Event::Registered {
            point: key.0,
            namespace: key.1,
            ttl,
            refresh,
        });
    }

    /// A failure worth retrying: schedule the retry with backoff.
    fn on_register_failure(
        &mut self,
        key: RegKey,
        status: Option<ResponseStatus>,
        text: String,
        now: Timestamp,
    ) {
        let Some(failures) = self.registrations.get(&key).map(|r| r.failures) else {
            return;
        };
        let at = now + self.backoff(failures);
        let Some(reg) = self.registrations.get_mut(&key) else {
            return;
        };
        reg.failures = failures.saturating_add(1);
        reg.state = RegState::Waiting { at, retry: true };
        self.timers.insert((at, Timer::Action(key.clone())));
        self.push_event(Event::RegisterFailed {
            point: key.0,
            namespace: key.1,
            status,
            text,
            retry_at: Some(at),
        });
    }

    fn on_permanent_failure(&mut self, key: RegKey, status: ResponseStatus, text: String) {
        self.remove_registration(&key);
        self.push_event(Event::RegisterFailed {
            point: key.0,
            namespace: key.1,
            status: Some(status),
            text,
            retry_at: None,
        });
    }

    fn on_action_timer(&mut self, key: RegKey, at: Timestamp, now: Timestamp) {
        let start = self.start_index(&key.0);
        let Some(reg) = self.registrations.get_mut(&key) else {
            return;
        };
        let RegState::Waiting { at: due, retry } = reg.state else {
            return;
        };
        if due != at {
            return;
        }
        if !retry {
            // A refresh starts the record negotiation afresh.
            reg.tried.clear();
            reg.record_index = start;
        }
        if self.send_register(&key).is_none() {
            let text = ClientError::NoRecord.to_string();
            self.on_register_failure(key, None, text, now);
        }
    }

    fn on_expiry_timer(&mut self, key: RegKey, at: Timestamp, now: Timestamp) {
        let Some(reg) = self.registrations.get_mut(&key) else {
            return;
        };
        if reg.expiry_timer != Some(at) {
            return;
        }
        reg.expiry_timer = None;
        // The expiry timer is set once per grant, so this reports each lapse once.
        if reg.expires_at.is_none_or(|e| e > now) {
            return;
        }
        if reg.state == RegState::Idle {
            self.registrations.remove(&key);
        }
        self.push_event(Event::Expired {
            point: key.0,
            namespace: key.1,
        });
    }

    // ---- discovery ----

    fn on_discover_response(
        &mut self,
        key: CacheKey,
        cookie_sent: Option<Cookie>,
        resp: DiscoverResponse,
        now: Timestamp,
    ) {
        if resp.status != ResponseStatus::Ok {
            if resp.status == ResponseStatus::InvalidCookie {
                // Drop the cookie unless a newer answer already replaced it.
                if let Some(cache) = self.caches.get_mut(&key) {
                    if cache.cookie == cookie_sent {
                        cache.cookie = None;
                    }
                    if cache.cookie.is_none() && cache.entries.is_empty() {
                        self.caches.remove(&key);
                    }
                }
            }
            self.push_event(Event::DiscoverFailed {
                point: key.0,
                namespace: key.1,
                status: Some(resp.status),
                text: resp.status_text,
            });
            return;
        }

        let max = self.config.max_cached_per_query;
        let cache = self.caches.entry(key.clone()).or_default();
        let cookie = resp.cookie.is_some();
        if let Some(cookie) = resp.cookie {
            cache.cookie = Some(cookie);
        }
        let mut fresh = Vec::new();
        let returned = resp.registrations.len();
        for r in resp.registrations {
            if key.1.as_ref().is_some_and(|ns| *ns != r.namespace) {
                self.stats.records_rejected += 1;
                continue;
            }
            let record = match verify_record(&r.signed_peer_record) {
                Ok(v)
                    if v.format != rdv_wire::RecordFormat::PeerInfo
                        || self.config.accept_unsigned_records =>
                {
                    v
                }
                _ => {
                    self.stats.records_rejected += 1;
                    continue;
                }
            };
            if r.ttl.as_secs() == 0 {
                continue; // already expired
            }
            let expires_at = now + Duration::from_millis(r.ttl.as_millis());
            let entry_key = (r.namespace.clone(), record.peer_id);
            let is_new = match cache.entries.get(&entry_key) {
                // An older record than the one cached: keep ours.
                Some(old) if record.seq < old.record.seq => continue,
                Some(old) => {
                    let changed = old.signed_peer_record != r.signed_peer_record;
                    cache.by_expiry.remove(&(old.expires_at, entry_key.clone()));
                    changed
                }
                None => {
                    if cache.entries.len() >= max {
                        self.stats.cache_overflow += 1;
                        match cache.by_expiry.first() {
                            Some((t, _)) if *t < expires_at => {
                                if let Some((_, victim)) = cache.by_expiry.pop_first() {
                                    cache.entries.remove(&victim);
                                }
                            }
                            _ => continue,
                        }
                    }
                    true
                }
            };
            let entry = CachedRegistration {
                peer: record.peer_id,
                namespace: r.namespace,
                record,
                signed_peer_record: r.signed_peer_record,
                expires_at,
            };
            cache.by_expiry.insert((expires_at, entry_key.clone()));
            if is_new {
                fresh.push(entry.clone());
            }
            cache.entries.insert(entry_key, entry);
        }
        reschedule_cache(&mut self.timers, &key, cache);
        self.push_event(Event::Discovered {
            point: key.0,
            namespace: key.1,
            registrations: fresh,
            returned,
            cookie,
        });
    }

    fn on_cache_timer(&mut self, key: CacheKey, at: Timestamp, now: Timestamp) {
        let Some(cache) = self.caches.get_mut(&key) else {
            return;
        };
        if cache.timer_at != Some(at) {
            return;
        }
        cache.timer_at = None;
        let mut expired = Vec::new();
        while cache.by_expiry.first().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, entry_key)) = cache.by_expiry.pop_first() {
                cache.entries.remove(&entry_key);
                expired.push(entry_key);
            }
        }
        reschedule_cache(&mut self.timers, &key, cache);
        if cache.entries.is_empty() && cache.cookie.is_none() {
            self.caches.remove(&key);
        }
        for (namespace, peer) in expired {
            self.push_event(Event::DiscoveredExpired {
                point: key.0,
                query: key.1.clone(),
                namespace,
                peer,
            });
        }
    }

    // ---- events ----

    fn push_event(&mut self, event: Event) {
        if self.shut_down {
            return;
        }
        if self.events.len() >= self.config.max_events.max(1) {
            self.events.pop_front();
            self.dropped_unreported += 1;
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

/// Puts `cache`'s timer at its earliest expiry (or removes it).
fn reschedule_cache(timers: &mut BTreeSet<(Timestamp, Timer)>, key: &CacheKey, cache: &mut Cache) {
    let next = cache.by_expiry.first().map(|(t, _)| *t);
    if next == cache.timer_at {
        return;
    }
    if let Some(old) = cache.timer_at {
        timers.remove(&(old, Timer::Cache(key.clone())));
    }
    if let Some(next) = next {
        timers.insert((next, Timer::Cache(key.clone())));
    }
    cache.timer_at = next;
}
