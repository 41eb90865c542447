//! The reconciliation state machine of one session, sans-IO.
//!
//! The initiator sends one range, the whole key space, with its
//! fingerprint. Each side then answers every range of the message it
//! received:
//!
//! * **skip**: nothing to do;
//! * **fingerprint**: equal to ours, the range is settled (skip); else if we
//!   hold at most [`Limits::leaf_items`] items in it we send them (an item
//!   list), otherwise we split the range into [`Limits::branching`]
//!   sub-ranges of equal item counts, each with its fingerprint;
//! * **item list**: the peer's whole content of the range. We send the
//!   facts it lacks, ask for ids we lack (wants), and the range is settled.
//!   If we hold too many items in the range to send them now, we split it
//!   instead, so the peer answers smaller ranges with smaller lists.
//!
//! Wants are answered with facts. Received facts are checked and written
//! through the [`SyncStore`]. A message needs an answer if it holds a range
//! to compare or ids wanted; a side whose answer needs none sends it and is
//! done, and a side that receives a message needing no answer is done.
//! With no difference that is one round trip: the fingerprint, then an
//! empty answer.
//!
//! Budgets: an answer never exceeds [`Limits`]. A range that does not fit
//! in this answer is *deferred*: answered with our fingerprint, which the
//! peer finds different and answers again, so it is dealt with in a later
//! round. Every round settles or narrows at least the first range that
//! fits, so a session progresses until [`Limits::max_rounds`].

use rdv_context::hlc::HlcTimestamp;
use rdv_context::{FactId, JournalEntry};

use crate::fingerprint::Key;
use crate::index::SyncIndex;
use crate::message::{DecodeError, Limits, Message, Mode, Range};

/// What a session needs from the local replica.
pub trait SyncStore {
    /// The fingerprint cache of the journal.
    fn index(&mut self) -> &mut SyncIndex;
    /// The timestamp of a fact held locally.
    fn timestamp_of(&self, id: &FactId) -> Result<Option<HlcTimestamp>, SyncError>;
    /// The entry of a fact held locally.
    fn entry(&self, id: &FactId) -> Result<Option<JournalEntry>, SyncError>;
    /// Checks received entries one by one and writes the good ones (and
    /// keeps the index in step). Must write nothing it has not checked.
    fn accept(&mut self, entries: Vec<JournalEntry>, now_ms: u64) -> Result<Accepted, SyncError>;
}

/// What [`SyncStore::accept`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Entries new here (or that lowered a timestamp).
    pub written: usize,
    /// Entries that failed a check and were dropped.
    pub rejected: u32,
    /// Entries that could not be checked now and were left out without
    /// blame (a descriptor of another epoch than ours).
    pub deferred: u32,
}

/// Why a session ended early. Nothing of the offending message was
/// written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A malformed or oversized message.
    #[error("malformed sync message: {0}")]
    Decode(#[from] DecodeError),
    /// More rounds than allowed.
    #[error("more than {0} rounds")]
    TooManyRounds(u32),
    /// The session ran out of time.
    #[error("session exceeded {0} ms")]
    TimedOut(u64),
    /// The peer sent too many facts that failed their checks.
    #[error("peer sent {0} bad facts")]
    TooManyBadFacts(u32),
    /// A message after the session ended.
    #[error("message after the end of the session")]
    Ended,
    /// The local store failed.
    #[error("local store: {0}")]
    Store(String),
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this message and wait for the answer.
    Send(Vec<u8>),
    /// Send this message; the session is over.
    SendAndFinish(Vec<u8>),
    /// The session is over; send nothing.
    Finished,
}

/// Counters of one session (the benchmark reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub messages_sent: u32,
    /// Messages received.
    pub messages_received: u32,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Facts sent.
    pub facts_sent: u64,
    /// Facts written here.
    pub facts_written: u64,
    /// Facts dropped as bad.
    pub facts_rejected: u32,
}

/// One side of one session.
#[derive(Debug, Clone)]
pub struct Session {
    limits: Limits,
    started_ms: u64,
    finished: bool,
    stats: Stats,
}

/// The answer under construction, within the budgets.
struct Builder<'l> {
    limits: &'l Limits,
    msg: Message,
    ids: usize,
    bytes: usize,
    /// Ranges of the incoming message not handled yet: each may need one
    /// range in the answer, so splits leave room for them.
    reserve: usize,
}

/// Rough bytes of a range with its bound.
const RANGE_BYTES: usize = 48;
const ITEM_BYTES: usize = 48;

impl Builder<'_> {
    fn push(&mut self, upper: Key, mode: Mode) {
        if mode == Mode::Skip
            && let Some(last) = self.msg.ranges.last_mut()
            && last.mode == Mode::Skip
        {
            last.upper = upper;
            return;
        }
        self.bytes += RANGE_BYTES;
        if let Mode::Items(items) = &mode {
            self.ids += items.len();
            self.bytes += items.len() * ITEM_BYTES;
        }
        self.msg.ranges.push(Range { upper, mode });
    }
    fn room_for_ranges(&self, n: usize) -> bool {
        // One more range kept for the final skip/defer.
        self.msg.ranges.len() + n + self.reserve <= self.limits.max_ranges
            && self.bytes + n * RANGE_BYTES < self.limits.max_message_len
    }
    /// Room to handle one more range whatever it needs: a full split, a
    /// leaf's items, a leaf's facts.
    fn room_for_work(&self) -> bool {
        let l = self.limits;
        self.room_for_ranges(l.branching.max(2))
            && self.ids + l.leaf_items <= l.max_ids
            && self.msg.facts.len() < l.max_facts
            && self.msg.wants.len() + l.leaf_items <= l.max_facts
            && self.bytes + l.branching.max(2) * RANGE_BYTES + l.leaf_items * ITEM_BYTES
                < l.max_message_len
    }
    fn room_for_ids(&self, n: usize) -> bool {
        self.ids + n <= self.limits.max_ids
            && self.bytes + n * ITEM_BYTES < self.limits.max_message_len
    }
    fn room_for_facts(&self, n: usize, bytes: usize) -> bool {
        self.msg.facts.len() + n <= self.limits.max_facts
            && self.bytes + bytes + RANGE_BYTES < self.limits.max_message_len
    }
    fn add_fact(&mut self, e: JournalEntry, len: usize) {
        self.bytes += len + 4;
        self.msg.facts.push(e);
    }
    fn finish(mut self) -> Message {
        if self.msg.ranges.iter().all(|r| r.mode == Mode::Skip) {
            self.msg.ranges.clear();
        }
        self.msg
    }
}

/// The smallest bound `b` with `prev < b <= next` (ids shortened to the
/// first differing byte).
fn bound_between(prev: &Key, next: &Key) -> Key {
    let mut b = Key {
        wall_ms: next.wall_ms,
        counter: next.counter,
        id: [0; 32],
    };
    if (prev.wall_ms, prev.counter) == (next.wall_ms, next.counter) {
        let common = prev
            .id
            .iter()
            .zip(&next.id)
            .take_while(|(a, b)| a == b)
            .count();
        let len = (common + 1).min(32);
        b.id[..len].copy_from_slice(&next.id[..len]);
    }
    b
}

impl Session {
    /// Starts a session as initiator at `now_ms`: the session and the first
    /// message (the whole key space's fingerprint).
    pub fn initiate<S: SyncStore>(store: &mut S, limits: Limits, now_ms: u64) -> (Self, Vec<u8>) {
        let (_, fp) = store.index().fingerprint(&Key::MIN, &Key::MAX);
        let msg = Message {
            ranges: vec![Range {
                upper: Key::MAX,
                mode: Mode::Fingerprint(fp),
            }],
            ..Message::default()
        };
        let mut s = Self::respond(limits, now_ms);
        let bytes = msg.encode();
        s.stats.messages_sent += 1;
        s.stats.bytes_sent += bytes.len() as u64;
        (s, bytes)
    }

    /// A session answering a peer's first message, started at `now_ms`.
    /// The limits are [`Limits::normalized`].
    pub fn respond(limits: Limits, now_ms: u64) -> Self {
        Self {
            limits: limits.normalized(),
            started_ms: now_ms,
            finished: false,
            stats: Stats::default(),
        }
    }

    /// Whether the session is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
    /// Its counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the session has run past its time at `now_ms` (drivers call
    /// this while waiting for the peer).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.started_ms) > self.limits.max_session_ms
    }

    /// Handles the peer's message at `now_ms`. Any error ends the session;
    /// a malformed message writes nothing.
    pub fn receive<S: SyncStore>(
        &mut self,
        bytes: &[u8],
        store: &mut S,
        now_ms: u64,
    ) -> Result<Step, SyncError> {
        let r = self.receive_inner(bytes, store, now_ms);
        match &r {
            Ok(Step::Send(b)) => {
                self.stats.messages_sent += 1;
                self.stats.bytes_sent += b.len() as u64;
            }
            Ok(Step::SendAndFinish(b)) => {
                self.stats.messages_sent += 1;
                self.stats.bytes_sent += b.len() as u64;
                self.finished = true;
            }
            Ok(Step::Finished) | Err(_) => self.finished = true,
        }
        r
    }

    fn receive_inner<S: SyncStore>(
        &mut self,
        bytes: &[u8],
        store: &mut S,
        now_ms: u64,
    ) -> Result<Step, SyncError> {
        if self.finished {
            return Err(SyncError::Ended);
        }
        self.stats.messages_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        if self.stats.messages_received > self.limits.max_rounds {
            return Err(SyncError::TooManyRounds(self.limits.max_rounds));
        }
        if self.expired(now_ms) {
            return Err(SyncError::TimedOut(self.limits.max_session_ms));
        }
        let msg = Message::decode(bytes, &self.limits)?;
        let needs_answer = msg.needs_answer();
        let limits = self.limits;
        let mut out = Builder {
            limits: &limits,
            msg: Message::default(),
            ids: 0,
            bytes: 8,
            reserve: 0,
        };
        // Wants first: the peer asked in an earlier round.
        for id in &msg.wants {
            let Some(e) = store.entry(&FactId(*id))? else {
                continue;
            };
            let len = e.to_bytes().len();
            if !out.room_for_facts(1, len) {
                // Dropped: the next session finds the difference again.
                break;
            }
            out.add_fact(e, len);
        }
        let mut lower = Key::MIN;
        // The tail of the answer is one range: the budget check below
        // keeps room for it.
        out.reserve = 1;
        let mut worked = false;
        for range in msg.ranges {
            let upper = range.upper;
            if range.mode != Mode::Skip && worked && !out.room_for_work() {
                // Out of budget: the rest of the key space becomes one
                // range with our fingerprint, which the peer will split
                // again. The first range to work on is always handled, so
                // every round progresses.
                let (_, fp) = store.index().fingerprint(&lower, &Key::MAX);
                out.push(Key::MAX, Mode::Fingerprint(fp));
                break;
            }
            worked |= range.mode != Mode::Skip;
            match range.mode {
                Mode::Skip => out.push(upper, Mode::Skip),
                Mode::Fingerprint(theirs) => {
                    let (count, mine) = store.index().fingerprint(&lower, &upper);
                    if mine == theirs {
                        out.push(upper, Mode::Skip);
                    } else {
                        self.answer_difference(store, &mut out, lower, upper, count)?;
                    }
                }
                Mode::Items(theirs) => {
                    self.answer_items(store, &mut out, lower, upper, theirs)?;
                }
            }
            lower = upper;
        }
        // The facts last: a message is decoded whole before anything is
        // written.
        if !msg.facts.is_empty() {
            let n = msg.facts.len() as u64;
            let a = store.accept(msg.facts, now_ms)?;
            self.stats.facts_written += a.written as u64;
            self.stats.facts_rejected += a.rejected;
            let _ = n;
            if self.stats.facts_rejected > self.limits.max_bad_facts {
                return Err(SyncError::TooManyBadFacts(self.stats.facts_rejected));
            }
        }
        let answer = out.finish();
        self.stats.facts_sent += answer.facts.len() as u64;
        if !needs_answer {
            return Ok(Step::Finished);
        }
        let more = answer.needs_answer();
        let bytes = answer.encode();
        Ok(if more {
            Step::Send(bytes)
        } else {
            Step::SendAndFinish(bytes)
        })
    }

    /// Our answer to a range whose fingerprints differ.
    fn answer_difference<S: SyncStore>(
        &self,
        store: &mut S,
        out: &mut Builder<'_>,
        lower: Key,
        upper: Key,
        count: usize,
    ) -> Result<(), SyncError> {
        if count <= self.limits.leaf_items && out.room_for_ids(count) && out.room_for_ranges(1) {
            let items = store.index().keys_in(&lower, &upper, count);
            out.push(upper, Mode::Items(items));
            return Ok(());
        }
        self.split(store, out, lower, upper, count);
        Ok(())
    }

    /// Splits `[lower, upper)` into sub-ranges of equal counts with their
    /// fingerprints, or defers it (our fingerprint) without room.
    fn split<S: SyncStore>(
        &self,
        store: &mut S,
        out: &mut Builder<'_>,
        lower: Key,
        upper: Key,
        count: usize,
    ) {
        let index = store.index();
        let parts = self.limits.branching.clamp(2, count.max(2));
        if count < 2 || !out.room_for_ranges(parts) {
            let (_, fp) = index.fingerprint(&lower, &upper);
            out.push(upper, Mode::Fingerprint(fp));
            return;
        }
        let first = index.rank(&lower);
        let mut from = lower;
        for i in 1..parts {
            let r = first + i * count / parts;
            let (Some(prev), Some(next)) = (index.nth(r - 1), index.nth(r)) else {
                continue;
            };
            let b = bound_between(&prev, &next);
            if b <= from {
                continue;
            }
            let (_, fp) = index.fingerprint(&from, &b);
            out.push(b, Mode::Fingerprint(fp));
            from = b;
        }
        let (_, fp) = index.fingerprint(&from, &upper);
        out.push(upper, Mode::Fingerprint(fp));
    }

    /// Our answer to the peer's whole content of a range.
    fn answer_items<S: SyncStore>(
        &self,
        store: &mut S,
        out: &mut Builder<'_>,
        lower: Key,
        upper: Key,
        theirs: Vec<Key>,
    ) -> Result<(), SyncError> {
        let (count, _) = store.index().fingerprint(&lower, &upper);
        // Too many of ours to send in this answer: narrow the range first.
        if count > self.limits.max_facts.saturating_sub(out.msg.facts.len()) {
            self.split(store, out, lower, upper, count);
            return Ok(());
        }
        let mine = store.index().keys_in(&lower, &upper, count);
        let mut wants = Vec::new();
        for k in &theirs {
            if mine.binary_search(k).is_ok() {
                continue;
            }
            // Held under a later timestamp, or not at all: ask (the merge
            // keeps the earlier timestamp).
            match store.timestamp_of(&k.fact_id())? {
                Some(t) if t <= k.timestamp() => {}
                _ => wants.push(k.id),
            }
        }
        let mut give = Vec::new();
        let mut give_bytes = 0;
        for k in &mine {
            if theirs.binary_search(k).is_ok() {
                continue;
            }
            if let Some(e) = store.entry(&k.fact_id())? {
                give_bytes += e.to_bytes().len() + 4;
                give.push(e);
            }
        }
        let fits = out.room_for_ids(wants.len())
            && out.msg.wants.len() + wants.len() <= self.limits.max_facts
            && out.room_for_facts(give.len(), give_bytes);
        if !fits {
            // Narrow the range (or defer it without room to).
            self.split(store, out, lower, upper, count);
            return Ok(());
        }
        out.ids += wants.len();
        out.bytes += wants.len() * 32;
        out.msg.wants.extend(wants);
        for e in give {
            let len = e.to_bytes().len();
            out.add_fact(e, len);
        }
        out.push(upper, Mode::Skip);
        Ok(())
    }
}
