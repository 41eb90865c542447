//! The point's cookie check never panics on a cookie a client sends, and a
//! cookie the point issued opens to its position (scope bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdv_point::{CookieKey, CookiePosition};
use rdv_wire::{Cookie, Namespace};

fuzz_target!(|data: &[u8]| {
    let key = CookieKey::from_bytes([7; 32]);
    let ns = Namespace::new("fuzz").ok();
    if let Ok(c) = Cookie::new(data.to_vec()) {
        let _ = key.open(ns.as_ref(), &c);
        let _ = key.open(None, &c);
    }
    if data.len() >= 16 {
        let at = CookiePosition {
            epoch: u64::from_le_bytes(data[..8].try_into().unwrap_or_default()),
            position: u64::from_le_bytes(data[8..16].try_into().unwrap_or_default()),
        };
        let c = key.issue(ns.as_ref(), at);
        assert_eq!(key.open(ns.as_ref(), &c), Some(at));
        assert_eq!(key.open(None, &c), None);
    }
});
