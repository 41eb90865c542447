//! `verify_record` never panics on arbitrary envelope bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rdv_wire::verify_record(data);
});
