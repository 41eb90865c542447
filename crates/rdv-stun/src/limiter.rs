//! A token bucket per source IP address, in a table of bounded size.
//!
//! Why per IP address and not per address and port: a flood from one host
//! changes its source port freely. Why a bounded table: with spoofed sources
//! every datagram could name a new address, so the table evicts instead of
//! growing. Eviction is CLOCK (second chance), an LRU approximation that
//! costs O(1) amortized per new address: a bucket used since the hand last
//! passed is skipped once. Losing a bucket only forgets how much of its burst
//! an address has spent, so the worst case of an eviction is one extra burst.
//!
//! The table is allocated once, at construction: the index map gets twice
//! the capacity it will ever hold so that removals followed by inserts
//! rehash in place rather than grow (no heap allocation per request).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// How fast one source IP address may be answered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterConfig {
    /// Answers per second in the long run, per source IP address.
    pub rate: f64,
    /// Answers a source may get at once after being idle.
    pub burst: f64,
    /// Source addresses remembered at most (the table's fixed size).
    pub max_sources: usize,
}

impl Default for LimiterConfig {
    /// 20 answers a second with bursts of 40: a client sends one Binding
    /// request per server and query (RFC 8489 §6.2.1 retransmits at 500 ms
    /// and slower), so this leaves room for a few hundred hosts behind one
    /// NAT re-querying at once, and caps what a spoofed victim receives.
    fn default() -> Self {
        Self {
            rate: 20.0,
            burst: 40.0,
            max_sources: 16_384,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: IpAddr,
    tokens: f64,
    last: Instant,
    referenced: bool,
}

/// Token buckets keyed by source IP address.
#[derive(Debug)]
pub struct RateLimiter {
    config: LimiterConfig,
    slots: Vec<Slot>,
    index: HashMap<IpAddr, usize>,
    hand: usize,
}

impl RateLimiter {
    /// A limiter with an empty table of `config.max_sources` (at least 1) places.
    pub fn new(config: LimiterConfig) -> Self {
        let max = config.max_sources.max(1);
        Self {
            config: LimiterConfig {
                max_sources: max,
                ..config
            },
            slots: Vec::with_capacity(max),
            index: HashMap::with_capacity(2 * max),
            hand: 0,
        }
    }

    /// Takes one token from `ip`'s bucket at time `now`; false when the
    /// bucket is empty (the request is to be dropped).
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let LimiterConfig { rate, burst, .. } = self.config;
        if let Some(&i) = self.index.get(&ip) {
            let slot = &mut self.slots[i];
            let elapsed = now.saturating_duration_since(slot.last).as_secs_f64();
            slot.tokens = (slot.tokens + elapsed * rate).min(burst);
            slot.last = now.max(slot.last);
            slot.referenced = true;
            if slot.tokens >= 1.0 {
                slot.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if burst < 1.0 {
            return false;
        }
        let fresh = Slot {
            ip,
            tokens: burst - 1.0,
            last: now,
            referenced: false,
        };
        if self.slots.len() < self.config.max_sources {
            self.index.insert(ip, self.slots.len());
            self.slots.push(fresh);
            return true;
        }
        // CLOCK: at most one full turn clears every bit, so this ends within
        // 2 * max_sources steps.
        for _ in 0..2 * self.slots.len() {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[i].referenced {
                self.slots[i].referenced = false;
                continue;
            }
            self.index.remove(&self.slots[i].ip);
            self.slots[i] = fresh;
            self.index.insert(ip, i);
            return true;
        }
        false
    }

    /// Source addresses currently remembered.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no source address is remembered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// An IPv4 address seen through a dual-stack socket (`::ffff:a.b.c.d`) is
/// the same source as the plain IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_source_gets_its_burst_then_the_rate() {
        let cfg = LimiterConfig {
            rate: 10.0,
            burst: 5.0,
            max_sources: 8,
        };
        let mut l = RateLimiter::new(cfg);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| l.allow(t0, ip(1))).count();
        assert_eq!(allowed, 5);
        // Another source is not affected.
        assert!(l.allow(t0, ip(2)));
        // 10 per second: after 300 ms three more (within float rounding: 2 or 3).
        let t1 = t0 + Duration::from_millis(300);
        let later = (0..20).filter(|_| l.allow(t1, ip(1))).count();
        assert!((2..=3).contains(&later), "{later}");
        // After a long idle time, the bucket is full again, no more.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| l.allow(t2, ip(1))).count(), 5);
    }

    #[test]
    fn mapped_ipv4_shares_the_ipv4_bucket() {
        let mut l = RateLimiter::new(LimiterConfig {
            rate: 0.0,
            burst: 1.0,
            max_sources: 4,
        });
        let t = Instant::now();
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        assert!(l.allow(t, IpAddr::V4(v4)));
        assert!(!l.allow(t, IpAddr::V6(v4.to_ipv6_mapped())));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_busy_sources() {
        let mut l = RateLimiter::new(LimiterConfig {
            rate: 0.0,
            burst: 3.0,
            max_sources: 16,
        });
        let t = Instant::now();
        // A busy source, seen between every new (spoofed) one.
        assert!(l.allow(t, ip(0)));
        for n in 1..10_000 {
            let _ = l.allow(t, ip(n));
            if n % 4 == 0 {
                let _ = l.allow(t, ip(0));
            }
            assert!(l.len() <= 16);
        }
        // The busy source was never evicted: its bucket (rate 0) is empty.
        assert!(!l.allow(t, ip(0)));
    }
}
