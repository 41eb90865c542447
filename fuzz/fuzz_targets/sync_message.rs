//! The sync message decoder never panics; whatever it accepts re-encodes
//! to a message that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdv_sync::{Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(msg) = Message::decode(data, &limits) else {
        return;
    };
    let wire = msg.encode();
    assert_eq!(Message::decode(&wire, &limits), Ok(msg));
});
