//! Conversions shared by the SQL stores. SQL integers are signed 64-bit;
//! the store contract speaks `u64` and `usize`.

use bytes::Bytes;
use rdv_point::store::{
    Formats, Limit, Limits, Page, StoreError, StoredRegistration, WriteOutcome,
};
use rdv_wire::{Namespace, PeerId, RecordFormat, Timestamp, Ttl};

/// A `u64` as an SQL integer, saturating: timestamps and positions are far
/// below `i64::MAX`, and a saturated deadline still means "never".
pub(crate) fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `usize` limit as an SQL integer, saturating (`usize::MAX` means "no limit").
pub(crate) fn sql_limit(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An SQL integer read back as a count or timestamp (never negative when
/// written by us; clamp rather than wrap if the row was tampered with).
pub(crate) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count read back as `usize`.
pub(crate) fn count_from_sql(v: i64) -> usize {
    usize::try_from(v).unwrap_or(0)
}

/// The epoch's bits in an SQL integer (the epoch is random: any `u64`).
pub(crate) fn epoch_to_sql(epoch: u64) -> i64 {
    epoch.cast_signed()
}

/// The epoch back from its SQL integer.
pub(crate) fn epoch_from_sql(v: i64) -> u64 {
    v.cast_unsigned()
}

/// The deadline of a registration written at `now` with `ttl`.
pub(crate) fn deadline(now: Timestamp, ttl: Ttl) -> i64 {
    sql_int(now.as_millis().saturating_add(ttl.as_millis()))
}

/// A record format's code in the `format` column.
pub(crate) fn format_code(format: RecordFormat) -> i16 {
    match format {
        RecordFormat::Standard => 0,
        RecordFormat::Legacy => 1,
        RecordFormat::PeerInfo => 2,
    }
}

/// The codes a scan may return, one slot per format in
/// [`RecordFormat::ALL`] order; `-1` matches nothing (codes are 0 to 2).
/// One slot per format so that the SQL text is the same for every filter.
pub(crate) fn format_codes(formats: Formats) -> [i16; 3] {
    RecordFormat::ALL.map(|f| {
        if formats.contains(f) {
            format_code(f)
        } else {
            -1
        }
    })
}

/// Outcome codes of a write, as the PostgreSQL function returns them.
pub(crate) fn outcome(kind: i16, position: Option<i64>) -> Result<WriteOutcome, StoreError> {
    let position = || {
        position
            .map(from_sql)
            .ok_or_else(|| corrupt("a write outcome without a position"))
    };
    Ok(match kind {
        0 => WriteOutcome::Created(position()?),
        1 => WriteOutcome::Refreshed(position()?),
        2 => WriteOutcome::Refused(Limit::PerPeer),
        3 => WriteOutcome::Refused(Limit::PerNamespace),
        4 => WriteOutcome::Refused(Limit::Namespaces),
        5 => WriteOutcome::Refused(Limit::Total),
        6 => WriteOutcome::Refused(Limit::Bytes),
        other => return Err(corrupt(&format!("unknown write outcome code {other}"))),
    })
}

/// The five limits as SQL integers, in the order the checks run.
pub(crate) fn sql_limits(limits: &Limits) -> [i64; 5] {
    [
        sql_limit(limits.per_peer),
        sql_limit(limits.per_namespace),
        sql_limit(limits.namespaces),
        sql_limit(limits.total),
        sql_limit(limits.total_bytes),
    ]
}

/// A record format back from its code.
pub(crate) fn format_from_code(code: i64) -> Result<RecordFormat, StoreError> {
    match code {
        0 => Ok(RecordFormat::Standard),
        1 => Ok(RecordFormat::Legacy),
        2 => Ok(RecordFormat::PeerInfo),
        other => Err(corrupt(&format!("unknown record format code {other}"))),
    }
}

/// A peer id back from its stored bytes.
pub(crate) fn peer_from_sql(bytes: &[u8]) -> Result<PeerId, StoreError> {
    PeerId::from_bytes(bytes).map_err(|e| corrupt(&format!("a stored peer id does not parse: {e}")))
}

/// A namespace back from its stored bytes.
pub(crate) fn namespace_from_sql(bytes: &[u8]) -> Result<Namespace, StoreError> {
    Namespace::from_bytes(bytes)
        .map_err(|e| corrupt(&format!("a stored namespace does not parse: {e}")))
}

/// A record read back.
pub(crate) fn record_from_sql(bytes: Vec<u8>) -> Bytes {
    Bytes::from(bytes)
}

/// Data that cannot have been written by this crate: not transient.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError {
        transient: false,
        message: format!("the store holds data rdv did not write: {what}"),
    }
}

/// A scanned row, as both SQL stores read it, before its bytes are checked.
pub(crate) struct ScannedRow {
    pub position: i64,
    pub peer: Vec<u8>,
    pub expires_at: i64,
    pub format: i64,
    pub record: Vec<u8>,
    /// Read only when scanning all namespaces (otherwise it is the scope).
    pub namespace: Option<Vec<u8>>,
}

/// Builds a [`Page`] from the rows of a scan of `scope` and the highest
/// position in scope (`end`, 0 if none).
pub(crate) fn page_from_rows(
    rows: Vec<ScannedRow>,
    scope: Option<&Namespace>,
    after: u64,
    limit: usize,
    end: i64,
) -> Result<Page, StoreError> {
    let full = rows.len() >= limit;
    let mut page = Page {
        registrations: Vec::with_capacity(rows.len()),
        scanned_to: after,
    };
    for row in rows {
        let namespace = match (row.namespace, scope) {
            (Some(bytes), _) => namespace_from_sql(&bytes)?,
            (None, Some(ns)) => ns.clone(),
            (None, None) => return Err(corrupt("a scanned row without a namespace")),
        };
        page.registrations.push(StoredRegistration {
            peer: peer_from_sql(&row.peer)?,
            namespace,
            record: record_from_sql(row.record),
            format: format_from_code(row.format)?,
            expires_at: Timestamp::from_millis(from_sql(row.expires_at)),
            position: from_sql(row.position),
        });
    }
    // A full page stops at its last registration; a short one looked at
    // everything in scope, up to the highest position (expired rows and
    // other formats included), exactly as the in-memory store reports.
    page.scanned_to = if full {
        page.registrations.last().map_or(after, |r| r.position)
    } else {
        after.max(from_sql(end))
    };
    Ok(page)
}
