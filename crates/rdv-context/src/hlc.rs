//! Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014),
//! sans-IO: physical time is an argument.
//!
//! A timestamp is (wall ms, counter). It never goes backwards, stays within
//! `max_drift_ms` of the physical clocks that fed it, and orders an event
//! after every event its author had seen, so journal order respects
//! causality. Ties between authors are broken by fact id in the journal.

/// Largest wall time accepted, in ms (fits a signed 64-bit column).
pub const MAX_WALL_MS: u64 = i64::MAX as u64;

/// A hybrid logical clock timestamp. Ordered by wall time, then counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HlcTimestamp {
    /// Milliseconds since the Unix epoch (the largest physical time seen).
    pub wall_ms: u64,
    /// Events at the same `wall_ms`.
    pub counter: u32,
}

impl HlcTimestamp {
    /// Encoded size.
    pub const LEN: usize = 12;
    /// Big-endian bytes: these sort like the timestamps.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.wall_ms.to_be_bytes());
        out[8..].copy_from_slice(&self.counter.to_be_bytes());
        out
    }
    /// From [`HlcTimestamp::to_bytes`].
    pub fn from_bytes(b: [u8; Self::LEN]) -> Self {
        let mut wall = [0; 8];
        wall.copy_from_slice(&b[..8]);
        let mut counter = [0; 4];
        counter.copy_from_slice(&b[8..]);
        Self {
            wall_ms: u64::from_be_bytes(wall),
            counter: u32::from_be_bytes(counter),
        }
    }
    /// The next timestamp after this one.
    fn successor(self) -> Self {
        match self.counter.checked_add(1) {
            Some(counter) => Self {
                wall_ms: self.wall_ms,
                counter,
            },
            // 2^32 events in one millisecond: borrow the next millisecond.
            None => Self {
                wall_ms: self.wall_ms.saturating_add(1),
                counter: 0,
            },
        }
    }
}

/// A remote timestamp too far ahead of physical time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp {remote_wall_ms} ms is more than {max_drift_ms} ms ahead of physical time {physical_ms} ms"
)]
pub struct ClockDrift {
    /// The remote wall time.
    pub remote_wall_ms: u64,
    /// Our physical time.
    pub physical_ms: u64,
    /// The drift allowed.
    pub max_drift_ms: u64,
}

/// The clock state of one journal.
#[derive(Clone, Debug)]
pub struct HybridClock {
    last: HlcTimestamp,
    max_drift_ms: u64,
}

impl HybridClock {
    /// A clock that refuses remote timestamps more than `max_drift_ms` ahead
    /// of physical time (so one peer with a wrong clock cannot drag every
    /// journal into the future).
    pub fn new(max_drift_ms: u64) -> Self {
        Self {
            last: HlcTimestamp::default(),
            max_drift_ms,
        }
    }
    /// The last timestamp issued or observed.
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }
    /// Timestamp for a local event at physical time `physical_ms`.
    pub fn tick(&mut self, physical_ms: u64) -> HlcTimestamp {
        let physical_ms = physical_ms.min(MAX_WALL_MS);
        self.last = if physical_ms > self.last.wall_ms {
            HlcTimestamp {
                wall_ms: physical_ms,
                counter: 0,
            }
        } else {
            self.last.successor()
        };
        self.last
    }
    /// Checks that `remote` is acceptable at `physical_ms` without changing
    /// the clock.
    pub fn check(&self, remote: HlcTimestamp, physical_ms: u64) -> Result<(), ClockDrift> {
        let limit = physical_ms
            .saturating_add(self.max_drift_ms)
            .min(MAX_WALL_MS);
        if remote.wall_ms > limit {
            return Err(ClockDrift {
                remote_wall_ms: remote.wall_ms,
                physical_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }
    /// Merges a remote timestamp received at `physical_ms`: later local
    /// events order after it.
    pub fn observe(&mut self, remote: HlcTimestamp, physical_ms: u64) -> Result<(), ClockDrift> {
        self.check(remote, physical_ms)?;
        let physical_ms = physical_ms.min(MAX_WALL_MS);
        let floor = self.last.max(remote);
        self.last = if physical_ms > floor.wall_ms {
            HlcTimestamp {
                wall_ms: physical_ms,
                counter: 0,
            }
        } else {
            floor.successor()
        };
        Ok(())
    }
    /// Restores the clock after a restart from the journal's largest
    /// timestamp.
    pub fn restore(&mut self, last: HlcTimestamp) {
        self.last = self.last.max(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_never_goes_backwards_when_physical_time_does() {
        let mut c = HybridClock::new(1000);
        let a = c.tick(100);
        let b = c.tick(50);
        let d = c.tick(100);
        assert!(a < b && b < d);
        assert_eq!(b.wall_ms, 100);
    }

    #[test]
    fn local_event_after_receive_orders_after_remote() {
        let mut c = HybridClock::new(1000);
        c.tick(100);
        let remote = HlcTimestamp {
            wall_ms: 500,
            counter: 7,
        };
        c.observe(remote, 200).unwrap();
        assert!(c.tick(200) > remote);
    }

    #[test]
    fn remote_timestamp_too_far_ahead_is_refused_and_changes_nothing() {
        let mut c = HybridClock::new(1000);
        let t = c.tick(100);
        let far = HlcTimestamp {
            wall_ms: 5000,
            counter: 0,
        };
        assert!(c.observe(far, 100).is_err());
        assert_eq!(c.last(), t);
    }

    #[test]
    fn counter_overflow_borrows_next_millisecond() {
        let mut c = HybridClock::new(0);
        c.restore(HlcTimestamp {
            wall_ms: 10,
            counter: u32::MAX,
        });
        assert_eq!(
            c.tick(5),
            HlcTimestamp {
                wall_ms: 11,
                counter: 0
            }
        );
    }

    #[test]
    fn timestamp_bytes_sort_like_timestamps() {
        let a = HlcTimestamp {
            wall_ms: 1,
            counter: 9,
        };
        let b = HlcTimestamp {
            wall_ms: 2,
            counter: 0,
        };
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(HlcTimestamp::from_bytes(a.to_bytes()), a);
    }
}
