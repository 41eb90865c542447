//! `decode` never panics; whatever it accepts re-encodes to bytes that decode
//! to the same message, of the length `encoded_len` announces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdv_wire::{decode, encode, encoded_len};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode(data) else {
        return;
    };
    let wire = encode(&msg);
    assert_eq!(encoded_len(&msg), wire.len());
    assert_eq!(decode(&wire), Ok(msg));
});
