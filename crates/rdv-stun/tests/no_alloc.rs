//! The server's Binding path allocates nothing per request: a counting
//! global allocator (in this test binary only) watches `StunServer::handle`.
//!
//! `unsafe` is needed to implement `GlobalAlloc`; it only forwards to the
//! system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rdv_stun::stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId,
};
use rdv_stun::{LimiterConfig, MAX_ANSWER, Outcome, ServerConfig, StunServer};

struct Counting;

thread_local! {
    // Counted per thread, so the test harness's own threads do not count.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

#[test]
fn binding_requests_allocate_nothing() {
    let max_sources = 256;
    let mut server = StunServer::new(ServerConfig {
        limiter: LimiterConfig {
            max_sources,
            ..LimiterConfig::default()
        },
    });
    // Requests prepared up front (building them allocates).
    let requests: Vec<Vec<u8>> = (0..64u128)
        .map(|id| {
            let mut w = Message::builder(
                MessageType::from_class_method(MessageClass::Request, BINDING),
                TransactionId::from(id + 1),
                MessageWriteVec::new(),
            );
            w.add_fingerprint().expect("fingerprint");
            w.finish()
        })
        .collect();
    let sources: Vec<SocketAddr> = (0..4 * max_sources as u32)
        .map(|i| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 3478)))
        .collect();
    let mut out = [0u8; MAX_ANSWER];
    let t0 = Instant::now();
    // Warm up: fill the rate-limit table once.
    for (i, from) in sources.iter().take(max_sources).enumerate() {
        let _ = server.handle(t0, *from, &requests[i % requests.len()], &mut out);
    }
    let before = allocations();
    let mut answered = 0u64;
    // New sources evicting old ones, repeat sources, IPv6 and junk: the
    // table's churn must not allocate either.
    for round in 0..20u32 {
        let now = t0 + Duration::from_millis(u64::from(round) * 100);
        for (i, from) in sources.iter().enumerate() {
            let req = &requests[i % requests.len()];
            if let Outcome::Answered(_) = server.handle(now, *from, req, &mut out) {
                answered += 1;
            }
        }
        let v6: SocketAddr = "[2001:db8::1]:9".parse().expect("addr");
        let _ = server.handle(now, v6, &requests[0], &mut out);
        let _ = server.handle(now, v6, b"junk that is not stun", &mut out);
    }
    let after = allocations();
    assert!(answered > 10_000, "answered {answered}");
    assert_eq!(after - before, 0, "allocations during {answered} answers");
}

/// The counter works: a deliberate allocation is seen (so the test above
/// cannot pass by counting nothing).
#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(allocations() > before);
    drop(v);
}
